//! `agent-runner bench patch`: the edit engine against `git apply` and GNU `patch` on a
//! corpus generated at run time from a repository's own history.
//!
//! Every (commit, modified text file) pair yields the commit's exact diff, damaged variants
//! of it (the mistakes models make), the same change in the other reply formats, and
//! variants that must be rejected. Each case is applied to a fresh temp tree holding only
//! the pre-image of the files involved, and the tree is then compared byte for byte with the
//! expected post-image. Nothing from the history is stored: the corpus is rebuilt on every
//! run, deterministically for a given repository state and `--seed`.
//!
//! A case is *ambiguous* when some hunk's old text, modulo the damage the variant introduced,
//! occurs more than once in the pre-image: without trusting line numbers nothing can tell
//! the places apart, so the engine must refuse it. Ambiguous cases are counted but left out
//! of the target, which is about unambiguous damaged cases.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::edit::{self, PathPolicy};

#[derive(Debug, clap::Args)]
pub struct PatchBenchArgs {
    /// Repository whose history makes the corpus.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// At most this many cases.
    #[arg(long, default_value_t = 400)]
    pub max_cases: usize,
    /// Seed for the choice of files and of the damage.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: PatchBenchArgs) -> anyhow::Result<()> {
    let opts = Options {
        repo: args.repo,
        max_cases: args.max_cases,
        seed: args.seed,
    };
    let report = tokio::task::spawn_blocking(move || bench(&opts)).await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    if !report.targets.met {
        anyhow::bail!("bench patch: the engine missed its targets (see the table)");
    }
    Ok(())
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub repo: PathBuf,
    pub max_cases: usize,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {args}` in {repo} failed: {stderr}")]
    Git {
        repo: PathBuf,
        args: String,
        stderr: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Edit(#[from] edit::EditError),
    #[error(
        "no usable cases in the history of {0}: it needs commits (with a parent) that modify \
         text files"
    )]
    EmptyCorpus(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ----- kinds -----------------------------------------------------------------------------

/// One way of writing (or damaging) a commit's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The commit's diff exactly as `git diff` prints it.
    Exact,
    /// Hunk line numbers moved by 3-30 lines.
    ShiftedLines,
    /// Hunk headers reduced to a bare `@@`.
    BareAt,
    /// Wrong line counts in the hunk headers.
    WrongCounts,
    /// `--- path` / `+++ path`, no `a/` `b/`, no `diff --git` line.
    NoAbPrefix,
    /// Context and removed lines with trailing whitespace added or dropped.
    TrailingWhitespace,
    /// Every non-blank diff line indented 4 more spaces.
    Indentation,
    /// The file has CRLF line endings, the diff LF.
    CrlfFile,
    /// Hunks in reverse order.
    ReorderedHunks,
    /// The diff inside a ```` ```diff ```` fence with prose around it.
    FencedDiff,
    /// One SEARCH/REPLACE block per hunk.
    SearchReplace,
    /// A `*** Begin Patch` envelope.
    ApplyPatch,
    /// The whole new file in a fenced block under its path.
    WholeFile,
    /// Must reject: one hunk's context matches nowhere.
    RejectNoMatch,
    /// Must reject: the hunk's region is duplicated in the file.
    RejectAmbiguous,
    /// Must reject: the path is `../outside/<name>`.
    RejectPathEscape,
    /// Must reject: a correct first file, then a second file whose hunk fails.
    RejectSecondFile,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::Exact,
        Kind::ShiftedLines,
        Kind::BareAt,
        Kind::WrongCounts,
        Kind::NoAbPrefix,
        Kind::TrailingWhitespace,
        Kind::Indentation,
        Kind::CrlfFile,
        Kind::ReorderedHunks,
        Kind::FencedDiff,
        Kind::SearchReplace,
        Kind::ApplyPatch,
        Kind::WholeFile,
        Kind::RejectNoMatch,
        Kind::RejectAmbiguous,
        Kind::RejectPathEscape,
        Kind::RejectSecondFile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::ShiftedLines => "shifted_lines",
            Kind::BareAt => "bare_at",
            Kind::WrongCounts => "wrong_counts",
            Kind::NoAbPrefix => "no_ab_prefix",
            Kind::TrailingWhitespace => "trailing_whitespace",
            Kind::Indentation => "indentation",
            Kind::CrlfFile => "crlf_file",
            Kind::ReorderedHunks => "reordered_hunks",
            Kind::FencedDiff => "fenced_diff",
            Kind::SearchReplace => "search_replace",
            Kind::ApplyPatch => "apply_patch",
            Kind::WholeFile => "whole_file",
            Kind::RejectNoMatch => "reject_no_match",
            Kind::RejectAmbiguous => "reject_ambiguous",
            Kind::RejectPathEscape => "reject_path_escape",
            Kind::RejectSecondFile => "reject_second_file",
        }
    }

    pub fn must_reject(self) -> bool {
        matches!(
            self,
            Kind::RejectNoMatch
                | Kind::RejectAmbiguous
                | Kind::RejectPathEscape
                | Kind::RejectSecondFile
        )
    }

    /// Whether the reply is a unified diff, so `git apply` and `patch` can take it too.
    pub fn diff_shaped(self) -> bool {
        !matches!(
            self,
            Kind::SearchReplace | Kind::ApplyPatch | Kind::WholeFile
        )
    }
}

// ----- report ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// The tree is exactly the expected post-image.
    pub correct: usize,
    /// The tree changed and is not the expected post-image (for must-reject cases: the
    /// tree changed at all).
    pub wrong: usize,
    /// The tree is untouched.
    pub rejected: usize,
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Correct => self.correct += 1,
            Outcome::Wrong => self.wrong += 1,
            Outcome::Rejected => self.rejected += 1,
        }
    }

    fn sum(&mut self, o: &Counts) {
        self.correct += o.correct;
        self.wrong += o.wrong;
        self.rejected += o.rejected;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kind: Kind,
    pub must_reject: bool,
    pub cases: usize,
    /// Cases whose hunks are ambiguous modulo the damage (see the module docs).
    pub ambiguous: usize,
    pub ours: Counts,
    /// Time ours spent on this kind (apply, including feedback on refusals).
    pub ours_ms: u128,
    /// `None` when the kind is not a diff or the tool is not installed.
    pub git_apply: Option<Counts>,
    pub patch: Option<Counts>,
}

/// A case the engine did not get right (or an ambiguous one it applied).
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub kind: Kind,
    pub commit: String,
    pub path: String,
    pub ambiguous: bool,
    pub outcome: Outcome,
    /// The engine's feedback, shortened.
    pub feedback: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    /// Unambiguous cases of every kind that should apply, except `exact`.
    pub damaged_unambiguous: usize,
    pub damaged_correct: usize,
    pub damaged_rate: f64,
    pub must_reject: usize,
    /// Rejected with every file of the tree untouched.
    pub must_reject_untouched: usize,
    pub ours_wrong: usize,
    /// rate >= 98 %, every must-reject case rejected untouched, zero wrong.
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub corpus_ms: u128,
    pub ours_ms: u128,
    pub git_apply_ms: u128,
    pub patch_ms: u128,
    pub total_ms: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub repo: PathBuf,
    pub seed: u64,
    pub max_cases: usize,
    pub commits: usize,
    pub files: usize,
    pub cases: usize,
    /// `git --version`, or `None` if git apply could not run.
    pub git_version: Option<String>,
    /// `patch --version` (first line), or `None` if `patch` is not installed.
    pub patch_version: Option<String>,
    pub rows: Vec<Row>,
    /// Over the diff-shaped kinds, where all three tools ran.
    pub total_diff_shaped: ToolTotals,
    /// Ours over every kind.
    pub total_ours: Counts,
    pub targets: Targets,
    pub misses: Vec<Miss>,
    pub timings: Timings,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolTotals {
    pub cases: usize,
    pub ours: Counts,
    pub git_apply: Option<Counts>,
    pub patch: Option<Counts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Correct,
    Wrong,
    Rejected,
}

// ----- corpus ----------------------------------------------------------------------------

/// A hunk of `git diff` output.
#[derive(Debug, Clone)]
struct GitHunk {
    old_start: usize,
    old_count: usize,
    new_start: usize,
    new_count: usize,
    /// What follows the second `@@` (git's function context), with its leading space.
    section: String,
    /// Body lines with their ` `/`-`/`+`/`\` prefix.
    body: Vec<String>,
}

impl GitHunk {
    fn header(&self) -> String {
        format!(
            "@@ -{},{} +{},{} @@{}",
            self.old_start, self.old_count, self.new_start, self.new_count, self.section
        )
    }

    fn side(&self, keep: char) -> Vec<&str> {
        self.body
            .iter()
            .filter(|l| l.starts_with(' ') || l.starts_with(keep))
            .map(|l| &l[1..])
            .collect()
    }

    fn old_lines(&self) -> Vec<&str> {
        self.side('-')
    }

    fn new_lines(&self) -> Vec<&str> {
        self.side('+')
    }

    /// Whether the old side reaches the last line of a file of `len` lines.
    fn at_eof(&self, len: usize) -> bool {
        self.old_start.saturating_sub(1) + self.old_count >= len
    }
}

/// One modified text file of one commit.
#[derive(Debug, Clone)]
struct FileRev {
    commit: String,
    path: String,
    pre: String,
    post: String,
    /// `git diff` output for this file alone.
    raw: String,
    /// Lines between `diff --git` and `---` (`index ...`).
    extra_header: Vec<String>,
    hunks: Vec<GitHunk>,
}

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, BenchError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        // The user's configuration must not change what a diff looks like.
        .args([
            "-c",
            "core.quotepath=false",
            "-c",
            "diff.noprefix=false",
            "-c",
            "diff.mnemonicPrefix=false",
            "-c",
            "diff.relative=false",
            "-c",
            "core.autocrlf=false",
            "--literal-pathspecs",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            program: "git",
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::Git {
            repo: repo.to_path_buf(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// `(commit, path)` of every text-looking file modified by a non-merge commit that has a
/// parent, newest commit first. Paths git would quote are left out.
fn modified_files(repo: &Path) -> Result<Vec<(String, String)>, BenchError> {
    let revs =
        String::from_utf8_lossy(&git(repo, &["rev-list", "--no-merges", "HEAD"])?).into_owned();
    let mut out = Vec::new();
    for c in revs.split_whitespace() {
        // Without `--root`, a root commit lists nothing: it has no pre-image.
        let raw = git(
            repo,
            &[
                "diff-tree",
                "-r",
                "--no-renames",
                "--no-commit-id",
                "--name-status",
                "-z",
                c,
            ],
        )?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let mut it = raw.split('\0');
        while let (Some(status), Some(path)) = (it.next(), it.next()) {
            let plain = path
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-/+@".contains(ch));
            if status == "M" && plain && !path.is_empty() {
                out.push((c.to_string(), path.to_string()));
            }
        }
    }
    Ok(out)
}

/// Reads one pair; `None` when the file is not usable text (binary, not UTF-8, CR bytes,
/// too big) or the diff has no hunks (mode change only).
fn load(repo: &Path, commit: &str, path: &str) -> Result<Option<FileRev>, BenchError> {
    const MAX: usize = 512 * 1024;
    let text = |spec: String| -> Result<Option<String>, BenchError> {
        let b = git(repo, &["cat-file", "blob", &spec])?;
        if b.len() > MAX || b.contains(&0) || b.contains(&b'\r') {
            return Ok(None);
        }
        Ok(String::from_utf8(b).ok())
    };
    let Some(pre) = text(format!("{commit}^:{path}"))? else {
        return Ok(None);
    };
    let Some(post) = text(format!("{commit}:{path}"))? else {
        return Ok(None);
    };
    let parent = format!("{commit}^");
    let raw = git(
        repo,
        &[
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "-U3",
            "--inter-hunk-context=0",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            &parent,
            commit,
            "--",
            path,
        ],
    )?;
    let Ok(raw) = String::from_utf8(raw) else {
        return Ok(None);
    };
    let Some((extra_header, hunks)) = parse_git_diff(&raw) else {
        return Ok(None);
    };
    Ok(Some(FileRev {
        commit: commit.chars().take(7).collect(),
        path: path.to_string(),
        pre,
        post,
        raw,
        extra_header,
        hunks,
    }))
}

fn parse_git_diff(raw: &str) -> Option<(Vec<String>, Vec<GitHunk>)> {
    let mut lines = raw.lines().peekable();
    if !lines.next()?.starts_with("diff --git ") {
        return None;
    }
    let mut extra = Vec::new();
    while let Some(l) = lines.next_if(|l| !l.starts_with("--- ")) {
        extra.push(l.to_string());
    }
    lines.next()?; // ---
    if !lines.next()?.starts_with("+++ ") {
        return None;
    }
    let mut hunks: Vec<GitHunk> = Vec::new();
    for l in lines {
        if l.starts_with("@@ ") {
            hunks.push(parse_hunk_header(l)?);
        } else if let Some(h) = hunks.last_mut() {
            h.body.push(l.to_string());
        } else {
            return None;
        }
    }
    (!hunks.is_empty()).then_some((extra, hunks))
}

fn parse_hunk_header(l: &str) -> Option<GitHunk> {
    let rest = l.strip_prefix("@@ -")?;
    let (ranges, section) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |s: &str| -> Option<(usize, usize)> {
        match s.split_once(',') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => Some((s.parse().ok()?, 1)),
        }
    };
    let (old_start, old_count) = range(old)?;
    let (new_start, new_count) = range(new)?;
    Some(GitHunk {
        old_start,
        old_count,
        new_start,
        new_count,
        section: section.to_string(),
        body: Vec::new(),
    })
}

/// splitmix64: deterministic and good enough to pick files and damage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

// ----- cases -----------------------------------------------------------------------------

/// Files of a case, keyed by their path in the case directory: `root/<path>` inside the
/// worktree, `outside/<name>` next to it.
type Tree = BTreeMap<String, Vec<u8>>;

struct Case {
    kind: Kind,
    commit: String,
    path: String,
    tree: Tree,
    reply: String,
    /// `None`: must be rejected with the tree untouched.
    expect: Option<Tree>,
    ambiguous: bool,
}

fn tree(files: &[(&str, &str)]) -> Tree {
    files
        .iter()
        .map(|(p, c)| (format!("root/{p}"), c.as_bytes().to_vec()))
        .collect()
}

fn ident(s: &str) -> &str {
    s
}

fn trim_end_ws(s: &str) -> &str {
    s.trim_end_matches([' ', '\t'])
}

fn trim_ws(s: &str) -> &str {
    s.trim()
}

/// How often `needle` occurs in `hay`, both normalised with `norm`.
fn occurrences(hay: &[&str], needle: &[&str], norm: fn(&str) -> &str) -> usize {
    if needle.is_empty() {
        // A hunk with nothing to find is placed only in an empty file.
        return if hay.is_empty() { 1 } else { 2 };
    }
    if hay.len() < needle.len() {
        return 0;
    }
    (0..=hay.len() - needle.len())
        .filter(|&s| {
            hay[s..s + needle.len()]
                .iter()
                .zip(needle)
                .all(|(a, b)| norm(a) == norm(b))
        })
        .count()
}

fn any_ambiguous(f: &FileRev, hunks: &[GitHunk], norm: fn(&str) -> &str) -> bool {
    let hay: Vec<&str> = f.pre.lines().collect();
    hunks
        .iter()
        .any(|h| occurrences(&hay, &h.old_lines(), norm) != 1)
}

fn render_diff(old: &str, new: &str, git_header: Option<&[String]>, hunks: &[GitHunk]) -> String {
    let mut s = String::new();
    if let Some(extra) = git_header {
        let _ = writeln!(s, "diff --git {old} {new}");
        for l in extra {
            let _ = writeln!(s, "{l}");
        }
    }
    let _ = writeln!(s, "--- {old}\n+++ {new}");
    for h in hunks {
        let _ = writeln!(s, "{}", h.header());
        for l in &h.body {
            let _ = writeln!(s, "{l}");
        }
    }
    s
}

fn git_diff(f: &FileRev, hunks: &[GitHunk]) -> String {
    render_diff(
        &format!("a/{}", f.path),
        &format!("b/{}", f.path),
        Some(&f.extra_header),
        hunks,
    )
}

/// Rewrites the ` ` and `-` lines of hunks (the text that must be found in the file).
fn map_old(hunks: &[GitHunk], f: impl Fn(&str) -> String) -> Vec<GitHunk> {
    map_lines(hunks, |prefix, body| match prefix {
        ' ' | '-' => Some(f(body)),
        _ => None,
    })
}

fn map_lines(hunks: &[GitHunk], f: impl Fn(char, &str) -> Option<String>) -> Vec<GitHunk> {
    hunks
        .iter()
        .map(|h| GitHunk {
            body: h
                .body
                .iter()
                .map(|l| {
                    let mut cs = l.chars();
                    let p = cs.next().unwrap_or(' ');
                    match p {
                        ' ' | '-' | '+' => match f(p, cs.as_str()) {
                            Some(b) => format!("{p}{b}"),
                            None => l.clone(),
                        },
                        _ => l.clone(),
                    }
                })
                .collect(),
            ..h.clone()
        })
        .collect()
}

/// Lines a reply format reserves for itself; a file containing them cannot be written in
/// SEARCH/REPLACE or whole-file form without being read as markers.
fn has_marker_lines<'a>(mut lines: impl Iterator<Item = &'a str>) -> bool {
    lines.any(|l| {
        let t = l.trim_start();
        [
            "<<<<<<<",
            "=======",
            ">>>>>>>",
            "*** ",
            "@@",
            "diff --git ",
            "--- ",
            "+++ ",
        ]
        .iter()
        .any(|m| t.starts_with(m))
    })
}

fn fence_lang(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("rs") => "rust",
        Some("md") => "markdown",
        Some("sh") => "bash",
        Some("py") => "python",
        Some("toml") => "toml",
        Some("yml" | "yaml") => "yaml",
        Some("json" | "jsonl") => "json",
        _ => "",
    }
}

/// A fence longer than any backtick run opening a line of `text`.
fn fence_for(text: &str) -> String {
    let longest = text
        .lines()
        .map(|l| l.trim_start().chars().take_while(|&c| c == '`').count())
        .max()
        .unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

fn stale(s: &str) -> String {
    format!("{s} /*stale*/")
}

/// Every case made from one file revision. `partner` is another file (for the two-file
/// reply).
fn cases_for(f: &FileRev, partner: Option<&FileRev>, rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    let p = f.path.as_str();
    let pre_tree = tree(&[(p, &f.pre)]);
    let post_tree = tree(&[(p, &f.post)]);
    let amb_exact = any_ambiguous(f, &f.hunks, ident);
    let mut push = |kind: Kind, tree: Tree, reply: String, expect: Option<Tree>, amb: bool| {
        out.push(Case {
            kind,
            commit: f.commit.clone(),
            path: f.path.clone(),
            tree,
            reply,
            expect,
            ambiguous: amb && !kind.must_reject(),
        });
    };
    let apply = |push: &mut dyn FnMut(Kind, Tree, String, Option<Tree>, bool),
                 kind: Kind,
                 reply: String,
                 amb: bool| {
        push(kind, pre_tree.clone(), reply, Some(post_tree.clone()), amb);
    };
    let pre_empty = f.pre.is_empty();
    let same_eol_state = f.pre.ends_with('\n') == f.post.ends_with('\n');

    apply(&mut push, Kind::Exact, f.raw.clone(), amb_exact);

    if !pre_empty {
        let k = 3 + rng.below(28);
        let down = rng.below(2) == 0 && f.hunks.iter().all(|h| h.old_start > k + 1);
        let shift = |n: usize| if down { n - k } else { n + k };
        let hunks: Vec<GitHunk> = f
            .hunks
            .iter()
            .map(|h| GitHunk {
                old_start: shift(h.old_start),
                new_start: if down {
                    h.new_start.saturating_sub(k).max(1)
                } else {
                    h.new_start + k
                },
                ..h.clone()
            })
            .collect();
        apply(
            &mut push,
            Kind::ShiftedLines,
            git_diff(f, &hunks),
            amb_exact,
        );
    }

    {
        let mut s = format!("--- a/{p}\n+++ b/{p}\n");
        for h in &f.hunks {
            s.push_str("@@\n");
            for l in &h.body {
                s.push_str(l);
                s.push('\n');
            }
        }
        apply(&mut push, Kind::BareAt, s, amb_exact);
    }

    {
        let hunks: Vec<GitHunk> = f
            .hunks
            .iter()
            .map(|h| GitHunk {
                old_count: h.old_count + 1 + rng.below(3),
                new_count: if h.new_count > 1 {
                    h.new_count - 1
                } else {
                    h.new_count + 2
                },
                ..h.clone()
            })
            .collect();
        apply(&mut push, Kind::WrongCounts, git_diff(f, &hunks), amb_exact);
    }

    apply(
        &mut push,
        Kind::NoAbPrefix,
        render_diff(p, p, None, &f.hunks),
        amb_exact,
    );

    {
        let hunks = map_old(&f.hunks, |b| {
            if b.ends_with([' ', '\t']) {
                trim_end_ws(b).to_string()
            } else {
                format!("{b} ")
            }
        });
        let amb = any_ambiguous(f, &f.hunks, trim_end_ws);
        apply(
            &mut push,
            Kind::TrailingWhitespace,
            git_diff(f, &hunks),
            amb,
        );
    }

    {
        let hunks = map_lines(&f.hunks, |_, b| {
            (!b.trim().is_empty()).then(|| format!("    {b}"))
        });
        let amb = any_ambiguous(f, &f.hunks, trim_ws);
        apply(&mut push, Kind::Indentation, git_diff(f, &hunks), amb);
    }

    if !pre_empty {
        push(
            Kind::CrlfFile,
            tree(&[(p, &crlf(&f.pre))]),
            f.raw.clone(),
            Some(tree(&[(p, &crlf(&f.post))])),
            amb_exact,
        );
    }

    if f.hunks.len() >= 2 {
        let mut hunks = f.hunks.clone();
        hunks.reverse();
        apply(
            &mut push,
            Kind::ReorderedHunks,
            git_diff(f, &hunks),
            amb_exact,
        );
    }

    apply(
        &mut push,
        Kind::FencedDiff,
        format!(
            "Here is the change:\n\n```diff\n{}```\n\nThis keeps the rest of the file as it is.\n",
            f.raw
        ),
        amb_exact,
    );

    let sr_ok = same_eol_state
        && !f.hunks.iter().any(|h| {
            h.old_lines().iter().all(|l| l.trim().is_empty())
                || has_marker_lines(h.old_lines().into_iter().chain(h.new_lines()))
        });
    if sr_ok {
        let mut s = String::from("I will make these changes.\n\n");
        for h in &f.hunks {
            let body =
                |lines: Vec<&str>| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            let (old, new) = (body(h.old_lines()), body(h.new_lines()));
            let fence = fence_for(&format!("{old}{new}"));
            let _ = write!(
                s,
                "{p}\n{fence}{}\n<<<<<<< SEARCH\n{old}=======\n{new}>>>>>>> REPLACE\n{fence}\n\n",
                fence_lang(p)
            );
        }
        apply(&mut push, Kind::SearchReplace, s, amb_exact);
    }

    if same_eol_state {
        let len = f.pre.lines().count();
        let mut s = format!("*** Begin Patch\n*** Update File: {p}\n");
        for h in &f.hunks {
            s.push_str("@@\n");
            for l in h.body.iter().filter(|l| !l.starts_with('\\')) {
                s.push_str(l);
                s.push('\n');
            }
            if h.at_eof(len) {
                s.push_str("*** End of File\n");
            }
        }
        s.push_str("*** End Patch\n");
        apply(&mut push, Kind::ApplyPatch, s, amb_exact);
    }

    if same_eol_state && !f.post.trim().is_empty() && !has_marker_lines(f.post.lines()) {
        let fence = fence_for(&f.post);
        let mut body = f.post.clone();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        let s = format!(
            "The complete new file:\n\n{p}\n{fence}{}\n{body}{fence}\n",
            fence_lang(p)
        );
        apply(&mut push, Kind::WholeFile, s, false);
    }

    // ----- must reject -----

    let i = rng.below(f.hunks.len());
    if !f.hunks[i].old_lines().is_empty() {
        let mut hunks = f.hunks.clone();
        let has_context = hunks[i].body.iter().any(|l| l.starts_with(' '));
        hunks[i] = map_lines(&hunks[i..=i], |prefix, b| {
            (prefix == ' ' || (!has_context && prefix == '-')).then(|| stale(b))
        })
        .remove(0);
        push(
            Kind::RejectNoMatch,
            pre_tree.clone(),
            git_diff(f, &hunks),
            None,
            false,
        );
    }

    if f.pre.ends_with('\n') {
        let h = &f.hunks[rng.below(f.hunks.len())];
        let old = h.old_lines();
        if !old.is_empty() {
            let mut dup = f.pre.clone();
            for l in old {
                dup.push_str(l);
                dup.push('\n');
            }
            push(
                Kind::RejectAmbiguous,
                tree(&[(p, &dup)]),
                f.raw.clone(),
                None,
                false,
            );
        }
    }

    {
        let name = p.rsplit('/').next().unwrap_or(p);
        let mut t = pre_tree.clone();
        t.insert(format!("outside/{name}"), f.pre.as_bytes().to_vec());
        let reply = render_diff(
            &format!("a/../outside/{name}"),
            &format!("b/../outside/{name}"),
            Some(&f.extra_header),
            &f.hunks,
        );
        push(Kind::RejectPathEscape, t, reply, None, false);
    }

    let partner = partner.filter(|q| q.path != f.path && !q.hunks[0].old_lines().is_empty());
    if let Some(q) = partner {
        let mut hunks = q.hunks.clone();
        hunks[0] = map_old(&hunks[..1], stale).remove(0);
        let reply = format!("{}{}", f.raw, git_diff(q, &hunks));
        push(
            Kind::RejectSecondFile,
            tree(&[(p, &f.pre), (&q.path, &q.pre)]),
            reply,
            None,
            false,
        );
    }
    out
}

// ----- running ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ours,
    GitApply,
    Patch,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "ours",
            Tool::GitApply => "git",
            Tool::Patch => "patch",
        }
    }
}

fn materialise(dir: &Path, t: &Tree) -> Result<(), BenchError> {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    for (rel, bytes) in t {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    Ok(())
}

/// Every file under `dir`, so that stray `.orig`/`.rej` files count as changes too.
fn snapshot(dir: &Path) -> Result<Tree, BenchError> {
    fn walk(base: &Path, d: &Path, out: &mut Tree) -> Result<(), BenchError> {
        for e in std::fs::read_dir(d).map_err(io_err(d))? {
            let e = e.map_err(io_err(d))?;
            let path = e.path();
            let ft = e.file_type().map_err(io_err(&path))?;
            if ft.is_dir() {
                walk(base, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&path).map_err(io_err(&path))?);
            }
        }
        Ok(())
    }
    let mut out = Tree::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Runs an external tool with the reply on stdin in `root`; its verdict is read from the
/// tree afterwards, so only a failure to start it matters here.
fn run_external(mut cmd: Command, program: &'static str, reply: &str) -> Result<(), BenchError> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| BenchError::Spawn { program, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that stops reading early (it gave up) closes the pipe: not our error.
        let _ = stdin.write_all(reply.as_bytes());
    }
    child
        .wait()
        .map_err(|source| BenchError::Spawn { program, source })?;
    Ok(())
}

fn run_tool(dir: &Path, case: &Case, tool: Tool) -> Result<Option<String>, BenchError> {
    let root = dir.join("root");
    match tool {
        Tool::Ours => {
            // The bench measures patching, not the workflow-protection policy.
            let policy = PathPolicy {
                protect_workflows: false,
            };
            let r = edit::apply(&root, &case.reply, &policy, false)?;
            Ok((!r.applied).then(|| r.feedback()))
        }
        Tool::GitApply => {
            let mut cmd = Command::new("git");
            cmd.args(["apply", "--whitespace=nowarn"])
                .current_dir(&root)
                // Outside any repository, with no user configuration in play.
                .env("GIT_CEILING_DIRECTORIES", dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null");
            run_external(cmd, "git", &case.reply)?;
            Ok(None)
        }
        Tool::Patch => {
            let mut cmd = Command::new("patch");
            // `--no-backup-if-mismatch` and `-r -` only keep `.orig`/`.rej` litter out.
            cmd.args([
                "-p1",
                "--fuzz=3",
                "--batch",
                "--forward",
                "--no-backup-if-mismatch",
                "-r",
                "-",
            ])
            .current_dir(&root);
            run_external(cmd, "patch", &case.reply)?;
            Ok(None)
        }
    }
}

fn run_case(
    work: &Path,
    n: usize,
    case: &Case,
    tool: Tool,
) -> Result<(Outcome, Option<String>), BenchError> {
    let dir = work.join(format!("{n}-{}", tool.name()));
    materialise(&dir, &case.tree)?;
    let feedback = run_tool(&dir, case, tool)?;
    let after = snapshot(&dir)?;
    std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    let outcome = if after == case.tree {
        Outcome::Rejected
    } else if case.expect.as_ref() == Some(&after) {
        Outcome::Correct
    } else {
        Outcome::Wrong
    };
    Ok((outcome, feedback))
}

fn version(program: &str) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn shorten(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// Builds the corpus from `opts.repo`'s history and runs every case with every tool.
pub fn bench(opts: &Options) -> Result<Report, BenchError> {
    let started = Instant::now();
    let mut pairs = modified_files(&opts.repo)?;
    let mut rng = Rng(opts.seed);
    rng.shuffle(&mut pairs);
    let mut cases: Vec<Case> = Vec::new();
    let mut loaded: Vec<FileRev> = Vec::new();
    for (commit, path) in &pairs {
        if cases.len() >= opts.max_cases {
            break;
        }
        let Some(f) = load(&opts.repo, commit, path)? else {
            continue;
        };
        let partner = loaded.iter().rev().find(|q| q.path != f.path);
        let mut new = cases_for(&f, partner, &mut rng);
        new.truncate(opts.max_cases - cases.len());
        cases.extend(new);
        loaded.push(f);
    }
    if cases.is_empty() {
        return Err(BenchError::EmptyCorpus(opts.repo.clone()));
    }
    let corpus_time = started.elapsed();
    let mut commits: Vec<&str> = loaded.iter().map(|f| f.commit.as_str()).collect();
    commits.sort_unstable();
    commits.dedup();

    let git_version = version("git");
    let patch_version = version("patch");
    let work = tempfile::Builder::new()
        .prefix("bench-patch-")
        .tempdir()
        .map_err(io_err(&std::env::temp_dir()))?;
    let mut spent = [Duration::ZERO; 3];
    let mut rows: BTreeMap<Kind, Row> = Kind::ALL
        .iter()
        .map(|&k| {
            let external = k.diff_shaped().then(Counts::default);
            (
                k,
                Row {
                    kind: k,
                    must_reject: k.must_reject(),
                    cases: 0,
                    ambiguous: 0,
                    ours: Counts::default(),
                    ours_ms: 0,
                    git_apply: external.filter(|_| git_version.is_some()),
                    patch: external.filter(|_| patch_version.is_some()),
                },
            )
        })
        .collect();
    let mut misses = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let Some(row) = rows.get_mut(&case.kind) else {
            continue;
        };
        row.cases += 1;
        row.ambiguous += usize::from(case.ambiguous);
        let t = Instant::now();
        let (o, feedback) = run_case(work.path(), n, case, Tool::Ours)?;
        spent[0] += t.elapsed();
        row.ours_ms += t.elapsed().as_millis();
        row.ours.add(o);
        let expected = if case.kind.must_reject() {
            Outcome::Rejected
        } else {
            Outcome::Correct
        };
        // Ambiguous cases should be refused; refusing them is not a miss.
        let fine = o == expected || (case.ambiguous && o == Outcome::Rejected);
        if !fine {
            misses.push(Miss {
                kind: case.kind,
                commit: case.commit.clone(),
                path: case.path.clone(),
                ambiguous: case.ambiguous,
                outcome: o,
                feedback: shorten(feedback.as_deref().unwrap_or("(applied)"), 300),
            });
        }
        for (slot, tool) in [(1, Tool::GitApply), (2, Tool::Patch)] {
            let counts = match tool {
                Tool::GitApply => row.git_apply.as_mut(),
                _ => row.patch.as_mut(),
            };
            if let Some(c) = counts {
                let t = Instant::now();
                let (o, _) = run_case(work.path(), n, case, tool)?;
                spent[slot] += t.elapsed();
                c.add(o);
            }
        }
    }
    let rows: Vec<Row> = rows.into_values().collect();

    let mut total_diff = ToolTotals {
        git_apply: git_version.as_ref().map(|_| Counts::default()),
        patch: patch_version.as_ref().map(|_| Counts::default()),
        ..ToolTotals::default()
    };
    let mut total_ours = Counts::default();
    for r in &rows {
        total_ours.sum(&r.ours);
        if r.kind.diff_shaped() {
            total_diff.cases += r.cases;
            total_diff.ours.sum(&r.ours);
            if let (Some(t), Some(c)) = (total_diff.git_apply.as_mut(), &r.git_apply) {
                t.sum(c);
            }
            if let (Some(t), Some(c)) = (total_diff.patch.as_mut(), &r.patch) {
                t.sum(c);
            }
        }
    }

    let damaged: Vec<&Case> = cases
        .iter()
        .filter(|c| !c.kind.must_reject() && c.kind != Kind::Exact && !c.ambiguous)
        .collect();
    let damaged_missed = misses
        .iter()
        .filter(|m| !m.kind.must_reject() && m.kind != Kind::Exact && !m.ambiguous)
        .count();
    let damaged_correct = damaged.len() - damaged_missed;
    let must_reject = cases.iter().filter(|c| c.kind.must_reject()).count();
    let must_reject_untouched: usize = rows
        .iter()
        .filter(|r| r.must_reject)
        .map(|r| r.ours.rejected)
        .sum();
    let damaged_rate = if damaged.is_empty() {
        1.0
    } else {
        damaged_correct as f64 / damaged.len() as f64
    };
    let targets = Targets {
        damaged_unambiguous: damaged.len(),
        damaged_correct,
        damaged_rate,
        must_reject,
        must_reject_untouched,
        ours_wrong: total_ours.wrong,
        met: damaged_rate >= 0.98 && must_reject_untouched == must_reject && total_ours.wrong == 0,
    };
    Ok(Report {
        repo: opts.repo.clone(),
        seed: opts.seed,
        max_cases: opts.max_cases,
        commits: commits.len(),
        files: loaded.len(),
        cases: cases.len(),
        git_version,
        patch_version,
        rows,
        total_diff_shaped: total_diff,
        total_ours,
        targets,
        misses,
        timings: Timings {
            corpus_ms: corpus_time.as_millis(),
            ours_ms: spent[0].as_millis(),
            git_apply_ms: spent[1].as_millis(),
            patch_ms: spent[2].as_millis(),
            total_ms: started.elapsed().as_millis(),
        },
    })
}

// ----- output ----------------------------------------------------------------------------

fn cells(c: Option<&Counts>) -> String {
    match c {
        Some(c) => format!("{:>4} {:>5} {:>4}", c.correct, c.wrong, c.rejected),
        None => format!("{:>4} {:>5} {:>4}", "-", "-", "-"),
    }
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "n/a".to_string()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

/// The human-readable report.
pub fn render_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "bench patch: {} cases from {} files in {} commits of {} (seed {}, max {})",
        r.cases,
        r.files,
        r.commits,
        r.repo.display(),
        r.seed,
        r.max_cases
    );
    let _ = writeln!(
        s,
        "git apply: {}   patch -p1 --fuzz=3 --batch --forward: {}",
        r.git_version.as_deref().unwrap_or("NOT AVAILABLE"),
        r.patch_version
            .as_deref()
            .unwrap_or("NOT INSTALLED (apt-get install patch)")
    );
    let _ = writeln!(
        s,
        "columns per tool: ok = tree is the expected post-image, wrong = tree changed \
         otherwise, rej = tree untouched"
    );
    let _ = writeln!(
        s,
        "amb = cases whose old text occurs more than once modulo the damage: ours refuses \
         them rather than guess (unless the format settles it, e.g. `*** End of File`)\n"
    );
    let head = format!(
        "{:<20} {:>4} {:>4} | {:>4} {:>5} {:>4} | {:>4} {:>5} {:>4} | {:>4} {:>5} {:>4}",
        "kind", "n", "amb", "ours", "wrong", "rej", "git", "wrong", "rej", "patch", "wrong", "rej"
    );
    let rule = "-".repeat(head.chars().count());
    let _ = writeln!(s, "{head}\n{rule}");
    let mut rejecting = false;
    for row in &r.rows {
        if row.must_reject && !rejecting {
            rejecting = true;
            let _ = writeln!(
                s,
                "{rule}\nmust reject (success = rej; wrong = the tree changed)"
            );
        }
        let amb = if row.must_reject {
            "-".to_string()
        } else {
            row.ambiguous.to_string()
        };
        let _ = writeln!(
            s,
            "{:<20} {:>4} {:>4} | {} | {} | {}",
            row.kind.name(),
            row.cases,
            amb,
            cells(Some(&row.ours)),
            cells(row.git_apply.as_ref()),
            cells(row.patch.as_ref())
        );
    }
    let t = &r.total_diff_shaped;
    let _ = writeln!(
        s,
        "{rule}\n{:<20} {:>4} {:>4} | {} | {} | {}",
        "total diff-shaped",
        t.cases,
        "",
        cells(Some(&t.ours)),
        cells(t.git_apply.as_ref()),
        cells(t.patch.as_ref())
    );
    let _ = writeln!(
        s,
        "{:<20} {:>4} {:>4} | {} |",
        "total all kinds",
        r.cases,
        "",
        cells(Some(&r.total_ours))
    );
    let g = &r.targets;
    let mark = |ok: bool| if ok { "met" } else { "MISSED" };
    let _ = writeln!(
        s,
        "\ntargets (ours):\n  unambiguous damaged cases applied correctly: {}/{} = {} (>= 98%: {})\n  \
         must-reject cases rejected, tree untouched: {}/{} ({})\n  wrong applications: {} ({})",
        g.damaged_correct,
        g.damaged_unambiguous,
        pct(g.damaged_correct, g.damaged_unambiguous),
        mark(g.damaged_rate >= 0.98),
        g.must_reject_untouched,
        g.must_reject,
        mark(g.must_reject_untouched == g.must_reject),
        g.ours_wrong,
        mark(g.ours_wrong == 0)
    );
    if !r.misses.is_empty() {
        let _ = writeln!(s, "\nours, not as expected:");
        for m in r.misses.iter().take(25) {
            let _ = writeln!(
                s,
                "  {} {} {}{}: {:?}: {}",
                m.kind.name(),
                m.commit,
                m.path,
                if m.ambiguous { " (ambiguous)" } else { "" },
                m.outcome,
                m.feedback
            );
        }
        if r.misses.len() > 25 {
            let _ = writeln!(s, "  ... and {} more (see --json)", r.misses.len() - 25);
        }
    }
    let tm = &r.timings;
    let _ = writeln!(
        s,
        "\ntime: corpus {} ms, ours {} ms, git apply {} ms, patch {} ms, total {} ms",
        tm.corpus_ms, tm.ours_ms, tm.git_apply_ms, tm.patch_ms, tm.total_ms
    );
    s
}

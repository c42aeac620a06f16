//! Bare-repository fixtures and inspection, via the `git` CLI (no global git config assumed).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git` in `dir` with a fixed identity; returns stdout if it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Fixture",
            "-c",
            "user.email=fixture@example.com",
        ])
        .args(["-c", "safe.directory=*", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    output.status.success().then_some(output.stdout)
}

fn git_text(dir: &Path, args: &[&str]) -> Option<String> {
    git(dir, args).map(|out| String::from_utf8_lossy(&out).trim_end().to_string())
}

/// Creates a bare repository at `dir` (created if missing) whose `branch` (also HEAD)
/// has one commit containing `files` (`(path, content)`; paths may contain `/`).
/// Returns `dir`.
pub fn make_bare_repo(dir: &Path, files: &[(&str, &str)], branch: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create bare dir");
    let work = tempfile::tempdir().expect("tempdir");
    let work = work.path();
    write_files(work, files);
    let run = |cwd: &Path, args: &[&str]| {
        git(cwd, args).unwrap_or_else(|| panic!("git {args:?} failed in {}", cwd.display()));
    };
    let bare = dir.to_str().expect("utf-8 path");
    run(work, &["init", "-q", "-b", branch]);
    run(work, &["add", "-A"]);
    run(
        work,
        &["commit", "-q", "--allow-empty", "-m", "Initial commit"],
    );
    run(dir, &["init", "-q", "--bare", "-b", branch]);
    run(
        work,
        &["push", "-q", bare, &format!("HEAD:refs/heads/{branch}")],
    );
    dir.to_path_buf()
}

/// Commits `files` (written over a checkout of branch `from`) with `message` and pushes
/// the commit to `branch` (created or fast-forwarded) in `bare`. Simulates someone else's push.
pub fn push_commit(bare: &Path, from: &str, branch: &str, files: &[(&str, &str)], message: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let work = work.path();
    let run = |cwd: &Path, args: &[&str]| {
        git(cwd, args).unwrap_or_else(|| panic!("git {args:?} failed in {}", cwd.display()));
    };
    let bare = bare.to_str().expect("utf-8 path");
    run(work, &["clone", "-q", "--branch", from, bare, "."]);
    write_files(work, files);
    run(work, &["add", "-A"]);
    run(work, &["commit", "-q", "--allow-empty", "-m", message]);
    run(
        work,
        &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")],
    );
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("create dirs");
        std::fs::write(&file, content).expect("write fixture file");
    }
}

/// Commit sha of `branch` in `bare`, if the branch exists.
pub(super) fn rev_parse(bare: &Path, branch: &str) -> Option<String> {
    let spec = format!("refs/heads/{branch}^{{commit}}");
    git_text(bare, &["rev-parse", "--verify", "--quiet", &spec])
}

/// Number of commits on `head` that are not on `base`.
pub(super) fn commits_between(bare: &Path, base: &str, head: &str) -> usize {
    let range = format!("refs/heads/{base}..refs/heads/{head}");
    git_text(bare, &["rev-list", "--count", &range])
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `(commits, additions, deletions, changed_files)` of `head` against its merge base with `base`.
pub(super) fn diff_stats(bare: &Path, base: &str, head: &str) -> (usize, usize, usize, usize) {
    let range = format!("refs/heads/{base}...refs/heads/{head}");
    let numstat = git_text(bare, &["diff", "--numstat", &range]).unwrap_or_default();
    let (mut additions, mut deletions, mut files) = (0, 0, 0);
    for line in numstat.lines() {
        let mut fields = line.split('\t');
        additions += fields
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        deletions += fields
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        files += 1;
    }
    (
        commits_between(bare, base, head),
        additions,
        deletions,
        files,
    )
}

/// Branch names in `bare`, sorted.
pub fn branch_names(bare: &Path) -> Vec<String> {
    git_text(
        bare,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
    )
    .map(|out| out.lines().map(str::to_string).collect())
    .unwrap_or_default()
}

/// `(path, content)` of every file on `branch`, sorted by path; `None` if no such branch.
/// Content is lossy UTF-8.
pub fn branch_files(bare: &Path, branch: &str) -> Option<Vec<(String, String)>> {
    let sha = rev_parse(bare, branch)?;
    let listing = git(bare, &["ls-tree", "-r", "-z", "--name-only", &sha])?;
    let mut files = Vec::new();
    for path in listing.split(|&b| b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(path).into_owned();
        let content = git(bare, &["cat-file", "blob", &format!("{sha}:{path}")])?;
        files.push((path, String::from_utf8_lossy(&content).into_owned()));
    }
    files.sort();
    Some(files)
}

/// Full message of the tip commit of `branch` (trailing newlines trimmed).
pub fn branch_commit_message(bare: &Path, branch: &str) -> Option<String> {
    let sha = rev_parse(bare, branch)?;
    git_text(bare, &["log", "-1", "--format=%B", &sha])
}

/// Serves the bundled example `examples/calculator` as `acme/calculator` (with issue #1,
/// `target_issue_body`, the one dispatch tasks refer to) and an empty `acme/dispatch` on
/// `gh`, their bare repositories under `dir`; returns the target's bare repository.
pub fn serve_calculator(gh: &super::FakeGitHub, dir: &Path, target_issue_body: &str) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/calculator");
    let files: Vec<(String, String)> = ["Makefile", "calc.py", "test_calc.py"]
        .iter()
        .map(|name| {
            let content = std::fs::read_to_string(example.join(name)).expect("example file");
            (name.to_string(), content)
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let target = make_bare_repo(&dir.join("calculator.git"), &refs, "main");
    gh.add_repo("acme/calculator", "main", &target);
    let dispatch = make_bare_repo(
        &dir.join("dispatch.git"),
        &[("README.md", "dispatch\n")],
        "main",
    );
    gh.add_repo("acme/dispatch", "main", &dispatch);
    gh.add_issue(
        "acme/calculator",
        "add() is wrong",
        target_issue_body,
        &[],
        "alice",
        "OWNER",
    );
    target
}

/// A dispatch issue body exactly as the HandsFree backend writes it, targeting
/// `acme/calculator#1` (or nothing), from the runner's own builder, which its unit tests
/// hold to the protocol's layout.
pub fn dispatch_body(task_id: &str, target: Option<&str>, instruction: &str) -> String {
    use agent_runner::dispatch::{TargetKind, dispatch_issue};
    dispatch_issue(
        task_id,
        "user-42",
        target.map(|t| (TargetKind::Issue, t)),
        instruction,
    )
    .1
}

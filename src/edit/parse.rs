//! Finds every edit block in a model reply.
//!
//! The scan is marker driven: SEARCH/REPLACE markers, `*** Begin Patch`,
//! `diff --git` / `---`+`+++` headers and `@@` hunk headers are recognised
//! wherever they are, fenced or not; fence lines around them are noise. A
//! fenced code block without any of those markers is a whole-file edit only
//! when a path is clearly attached to it (the line just before the fence, or
//! the fence's info string); any other code block is skipped.

use super::Format;
use super::text::strip_cr;

/// One line of a hunk body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HunkLine {
    Context(String),
    Del(String),
    Add(String),
}

/// A hunk: old lines (context + deleted) to find, replaced by the new lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hunk {
    pub lines: Vec<HunkLine>,
    /// The `@@` line as written (empty for SEARCH/REPLACE).
    pub header: String,
    /// 1-based old start line from a numeric `@@ -a,b +c,d @@` header.
    pub old_start: Option<usize>,
    pub new_start: Option<usize>,
    /// apply_patch `@@ <anchor>` lines, outermost first.
    pub anchors: Vec<String>,
    /// apply_patch `*** End of File`: the hunk is at the end of the file.
    pub eof: bool,
    /// `\ No newline at end of file` after the last old-side line.
    pub old_no_eol: bool,
    /// `\ No newline at end of file` after the last new-side line.
    pub new_no_eol: bool,
}

impl Hunk {
    pub(crate) fn old_lines(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(s) | HunkLine::Del(s) => Some(s.clone()),
                HunkLine::Add(_) => None,
            })
            .collect()
    }

    pub(crate) fn new_lines(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                HunkLine::Context(s) | HunkLine::Add(s) => Some(s.clone()),
                HunkLine::Del(_) => None,
            })
            .collect()
    }

    /// Builds a hunk from a SEARCH/REPLACE pair; unchanged lines become
    /// context so that they keep the file's exact text when matched loosely.
    pub(crate) fn from_search_replace(search: &[String], replace: &[String]) -> Hunk {
        let s_key: Vec<&str> = search.iter().map(|l| strip_cr(l)).collect();
        let r_key: Vec<&str> = replace.iter().map(|l| strip_cr(l)).collect();
        let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &s_key, &r_key);
        let mut lines = Vec::new();
        for op in ops {
            let (tag, old, new) = op.as_tag_tuple();
            match tag {
                similar::DiffTag::Equal => {
                    lines.extend(old.map(|i| HunkLine::Context(search[i].clone())));
                }
                similar::DiffTag::Delete => {
                    lines.extend(old.map(|i| HunkLine::Del(search[i].clone())));
                }
                similar::DiffTag::Insert => {
                    lines.extend(new.map(|i| HunkLine::Add(replace[i].clone())));
                }
                similar::DiffTag::Replace => {
                    lines.extend(old.map(|i| HunkLine::Del(search[i].clone())));
                    lines.extend(new.map(|i| HunkLine::Add(replace[i].clone())));
                }
            }
        }
        Hunk {
            lines,
            ..Hunk::default()
        }
    }
}

/// What a block asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Patch an existing file, optionally moving it afterwards.
    Hunks {
        hunks: Vec<Hunk>,
        move_to: Option<String>,
    },
    /// Create a file (also accepted on an existing empty file).
    Create {
        lines: Vec<String>,
        final_newline: bool,
        executable: bool,
    },
    /// Replace the whole content (or create).
    Replace {
        lines: Vec<String>,
    },
    Delete,
    /// Recognised as an edit but unusable; the reason is for the model.
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub format: Format,
    /// Path candidates, preferred first (e.g. `x` then `a/x` for `--- a/x`).
    pub paths: Vec<String>,
    pub kind: Kind,
}

impl Block {
    pub(crate) fn display_path(&self) -> String {
        self.paths.first().cloned().unwrap_or_default()
    }
}

pub(crate) fn parse_reply(reply: &str) -> Vec<Block> {
    let lines: Vec<&str> = reply.split('\n').collect();
    let mut s = Scanner {
        lines,
        blocks: Vec::new(),
        fence_path: None,
        in_fence: false,
        last_sr_path: None,
    };
    s.run();
    s.blocks
}

struct Scanner<'a> {
    lines: Vec<&'a str>,
    blocks: Vec<Block>,
    /// Path attached to the edit fence we are inside, if any.
    fence_path: Option<String>,
    in_fence: bool,
    last_sr_path: Option<String>,
}

impl<'a> Scanner<'a> {
    fn t(&self, i: usize) -> &'a str {
        self.lines.get(i).map(|l| strip_cr(l)).unwrap_or("")
    }

    fn run(&mut self) {
        let n = self.lines.len();
        let mut i = 0;
        while i < n {
            let t = self.t(i);
            if let Some(f) = fence_open(t) {
                if self.in_fence && f.info.is_empty() {
                    self.in_fence = false;
                    self.fence_path = None;
                    i += 1;
                    continue;
                }
                i = self.open_fence(i, &f);
                continue;
            }
            let tt = t.trim();
            if tt == "*** Begin Patch" {
                i = self.apply_patch(i + 1);
            } else if t.starts_with("*** Update File:")
                || t.starts_with("*** Add File:")
                || t.starts_with("*** Delete File:")
            {
                // Tolerated: an envelope whose `*** Begin Patch` was left out.
                i = self.apply_patch(i);
            } else if is_sr_start(t) {
                i = self.search_replace(i);
            } else if t.starts_with("diff --git ")
                || (t.starts_with("--- ") && self.t(i + 1).starts_with("+++ "))
            {
                i = self.unified_diff(i);
            } else if is_hunk_header(t) {
                i = self.headerless_hunks(i);
            } else {
                i += 1;
            }
        }
    }

    /// Handles a fence opening line; returns the next line to scan.
    fn open_fence(&mut self, i: usize, f: &Fence<'_>) -> usize {
        let attached = path_from_info(f.info).or_else(|| {
            if i > 0 {
                path_from_line(self.t(i - 1), true)
            } else {
                None
            }
        });
        let simple_end = self.fence_end(i, f, false);
        let content_end = simple_end.unwrap_or(self.lines.len());
        let info_word = f.info.split_whitespace().next().unwrap_or("");
        let diff_info = matches!(
            info_word.to_ascii_lowercase().as_str(),
            "diff" | "patch" | "udiff"
        );
        if diff_info || self.has_markers(i + 1, content_end) {
            // An edit fence: step inside; the markers drive the parse.
            self.in_fence = true;
            self.fence_path = attached;
            return i + 1;
        }
        let attached = attached.filter(|p| !is_shell_session(info_word, p));
        let Some(path) = attached else {
            // A plain code block: not an edit.
            return simple_end.map_or(self.lines.len(), |e| e + 1);
        };
        let end = self.fence_end(i, f, true).or(simple_end);
        let Some(end) = end else {
            self.blocks.push(Block {
                format: Format::WholeFile,
                paths: vec![path],
                kind: Kind::Malformed(
                    "the code block is never closed (reply truncated?); nothing taken from it"
                        .into(),
                ),
            });
            return self.lines.len();
        };
        let content: Vec<String> = (i + 1..end).map(|j| self.t(j).to_string()).collect();
        self.blocks.push(Block {
            format: Format::WholeFile,
            paths: vec![path],
            kind: Kind::Replace { lines: content },
        });
        end + 1
    }

    /// Index of the closing fence line. With `nested`, fence lines carrying
    /// an info string open nested blocks (markdown files containing code).
    fn fence_end(&self, open: usize, f: &Fence<'_>, nested: bool) -> Option<usize> {
        let mut depth = 0usize;
        for j in open + 1..self.lines.len() {
            let Some(g) = fence_open(self.t(j)) else {
                continue;
            };
            if g.ch != f.ch {
                continue;
            }
            if g.info.is_empty() && g.len >= f.len {
                if depth == 0 {
                    return Some(j);
                }
                depth -= 1;
            } else if nested && !g.info.is_empty() {
                depth += 1;
            }
        }
        None
    }

    fn has_markers(&self, from: usize, to: usize) -> bool {
        (from..to).any(|j| {
            let t = self.t(j);
            is_sr_start(t)
                || t.trim() == "*** Begin Patch"
                || t.starts_with("diff --git ")
                || (t.starts_with("--- ") && self.t(j + 1).starts_with("+++ "))
                || is_hunk_header(t)
        })
    }

    // ----- SEARCH/REPLACE -------------------------------------------------

    fn search_replace(&mut self, i: usize) -> usize {
        let path = match self.sr_path_before(i) {
            Lookback::Found(p) => Some(p),
            Lookback::Previous => self.last_sr_path.clone().or(self.fence_path.clone()),
            Lookback::Nothing => self.fence_path.clone(),
        };
        let n = self.lines.len();
        let mut j = i + 1;
        let mut search = Vec::new();
        let mut replace = Vec::new();
        let mut divider = false;
        let mut end = None;
        while j < n {
            let t = self.t(j);
            if !divider && is_sr_divider(t) {
                divider = true;
            } else if divider && is_sr_end(t) {
                end = Some(j);
                break;
            } else if is_sr_start(t) {
                break;
            } else if divider {
                replace.push(self.lines[j].to_string());
            } else {
                search.push(self.lines[j].to_string());
            }
            j += 1;
        }
        let paths: Vec<String> = path.iter().cloned().collect();
        if path.is_some() {
            self.last_sr_path = path;
        }
        let kind = if end.is_none() {
            Kind::Malformed(if divider {
                "the block has no `>>>>>>> REPLACE` line; nothing taken from it".into()
            } else {
                "the block has no `=======` divider and no `>>>>>>> REPLACE` line".into()
            })
        } else if paths.is_empty() {
            Kind::Malformed(
                "no file path before this block: put the path alone on the line before the \
                 opening fence (or before `<<<<<<< SEARCH`)"
                    .into(),
            )
        } else if search.iter().all(|l| l.trim().is_empty()) {
            Kind::Create {
                lines: replace.iter().map(|l| strip_cr(l).to_string()).collect(),
                final_newline: true,
                executable: false,
            }
        } else {
            Kind::Hunks {
                hunks: vec![Hunk::from_search_replace(&search, &replace)],
                move_to: None,
            }
        };
        self.blocks.push(Block {
            format: Format::SearchReplace,
            paths,
            kind,
        });
        match end {
            Some(e) => e + 1,
            None => j,
        }
    }

    fn sr_path_before(&self, i: usize) -> Lookback {
        let mut j = i;
        let mut steps = 0;
        while j > 0 && steps < 4 {
            j -= 1;
            steps += 1;
            let t = self.t(j).trim();
            if t.is_empty() {
                continue;
            }
            if let Some(f) = fence_open(t) {
                if let Some(p) = path_from_info(f.info) {
                    return Lookback::Found(p);
                }
                continue;
            }
            if is_sr_end(t) {
                return Lookback::Previous;
            }
            return match path_from_line(t, true).or_else(|| bare_token_path(t)) {
                Some(p) => Lookback::Found(p),
                None => Lookback::Nothing,
            };
        }
        Lookback::Nothing
    }

    // ----- unified diff -----------------------------------------------------

    fn unified_diff(&mut self, start: usize) -> usize {
        let n = self.lines.len();
        let mut i = start;
        let mut git_paths: Option<(String, String)> = None;
        let mut new_file = false;
        let mut deleted_file = false;
        let mut executable = false;
        let mut rename_from = None;
        let mut rename_to = None;
        let mut binary = false;
        if let Some(rest) = self.t(i).strip_prefix("diff --git ") {
            git_paths = split_git_header(rest);
            i += 1;
            while i < n {
                let t = self.t(i);
                if let Some(m) = t.strip_prefix("new file mode ") {
                    new_file = true;
                    executable = m.trim().ends_with("755");
                } else if t.starts_with("deleted file mode ") {
                    deleted_file = true;
                } else if let Some(p) = t.strip_prefix("rename from ") {
                    rename_from = Some(unquote(p.trim()).to_string());
                } else if let Some(p) = t.strip_prefix("rename to ") {
                    rename_to = Some(unquote(p.trim()).to_string());
                } else if t.starts_with("GIT binary patch") || t.starts_with("Binary files ") {
                    binary = true;
                } else if !(t.starts_with("index ")
                    || t.starts_with("old mode ")
                    || t.starts_with("new mode ")
                    || t.starts_with("similarity index ")
                    || t.starts_with("dissimilarity index ")
                    || t.starts_with("copy from ")
                    || t.starts_with("copy to "))
                {
                    break;
                }
                i += 1;
            }
        }
        let mut old = None;
        let mut new = None;
        if let (Some(o), Some(nw)) = (
            self.t(i).strip_prefix("--- "),
            self.t(i + 1).strip_prefix("+++ "),
        ) {
            old = Some(header_path(o));
            new = Some(header_path(nw));
            i += 2;
        }
        let (hunks, next) = self.hunks(i);
        i = next;

        let old = old.or_else(|| git_paths.as_ref().map(|(a, _)| Some(a.clone())));
        let new = new.or_else(|| git_paths.as_ref().map(|(_, b)| Some(b.clone())));
        let old_null = matches!(old, Some(None));
        let new_null = matches!(new, Some(None));
        let old_p = old.flatten();
        let new_p = new.flatten();

        let mut paths = Vec::new();
        let mut push = |p: String| {
            if !p.is_empty() && !paths.contains(&p) {
                paths.push(p);
            }
        };
        let is_new = old_null || new_file;
        let is_del = new_null || deleted_file;
        if is_new {
            if let Some(p) = &new_p {
                push(strip_ab(p).to_string());
            }
        } else if is_del {
            if let Some(p) = &old_p {
                push(strip_ab(p).to_string());
                push(p.clone());
            }
        } else if let Some(from) = &rename_from {
            push(from.clone());
        } else {
            for p in new_p.iter().chain(old_p.iter()) {
                push(strip_ab(p).to_string());
            }
            for p in new_p.iter().chain(old_p.iter()) {
                push(p.clone());
            }
        }

        let kind = if binary {
            Kind::Malformed("binary patches are not supported".into())
        } else if paths.is_empty() {
            Kind::Malformed("the diff names no file (`--- a/path` / `+++ b/path`)".into())
        } else if is_new && is_del {
            Kind::Malformed("the diff both creates and deletes the file".into())
        } else if is_new {
            if hunks
                .iter()
                .any(|h| h.lines.iter().any(|l| matches!(l, HunkLine::Del(_))))
            {
                Kind::Malformed(
                    "the diff creates the file (`--- /dev/null`) but has `-` lines; to change \
                     an existing file use `--- a/path`"
                        .into(),
                )
            } else {
                let lines = hunks
                    .iter()
                    .flat_map(|h| h.new_lines())
                    .map(|l| strip_cr(&l).to_string())
                    .collect();
                Kind::Create {
                    lines,
                    final_newline: !hunks.last().is_some_and(|h| h.new_no_eol),
                    executable,
                }
            }
        } else if is_del {
            Kind::Delete
        } else if hunks.is_empty() && rename_to.is_none() {
            Kind::Malformed("the diff for this file has no hunks (`@@ ... @@` sections)".into())
        } else {
            Kind::Hunks {
                hunks,
                move_to: rename_to,
            }
        };
        self.blocks.push(Block {
            format: Format::UnifiedDiff,
            paths,
            kind,
        });
        i.max(start + 1)
    }

    /// Hunks that appear without `---`/`+++` headers: usable only in a fence
    /// with an attached path.
    fn headerless_hunks(&mut self, start: usize) -> usize {
        let (hunks, next) = self.hunks(start);
        let next = next.max(start + 1);
        let (paths, kind) = match &self.fence_path {
            Some(p) if !hunks.is_empty() => (
                vec![p.clone()],
                Kind::Hunks {
                    hunks,
                    move_to: None,
                },
            ),
            Some(_) => return next,
            None => (
                Vec::new(),
                Kind::Malformed(
                    "diff hunk without file header lines: start the diff with `--- a/path` and \
                     `+++ b/path`"
                        .into(),
                ),
            ),
        };
        self.blocks.push(Block {
            format: Format::UnifiedDiff,
            paths,
            kind,
        });
        next
    }

    /// Parses consecutive hunks starting at `i`.
    fn hunks(&self, mut i: usize) -> (Vec<Hunk>, usize) {
        let mut out = Vec::new();
        while i < self.lines.len() && is_hunk_header(self.t(i)) {
            let (h, next) = self.hunk(i);
            if !h.lines.is_empty() {
                out.push(h);
            }
            i = next;
        }
        (out, i)
    }

    fn hunk(&self, start: usize) -> (Hunk, usize) {
        let header = self.t(start).trim_end().to_string();
        let counts = parse_hunk_numbers(&header);
        let mut h = Hunk {
            header: header.clone(),
            old_start: counts.map(|c| c.0),
            new_start: counts.map(|c| c.2),
            ..Hunk::default()
        };
        let (mut old_seen, mut new_seen) = (0usize, 0usize);
        let mut bare = Vec::new(); // whether each line was a bare empty line
        let n = self.lines.len();
        let mut i = start + 1;
        while i < n {
            let raw = self.lines[i];
            let t = strip_cr(raw);
            let done = counts.is_some_and(|(_, oc, _, nc)| old_seen >= oc && new_seen >= nc);
            if t.starts_with("@@") || t.starts_with("diff --git ") {
                break;
            }
            if t.starts_with("```") || t.starts_with("~~~") {
                break;
            }
            if t.starts_with("--- ")
                && self.t(i + 1).starts_with("+++ ")
                && (counts.is_none() || done || is_hunk_header(self.t(i + 2)))
            {
                break;
            }
            let Some(first) = t.chars().next() else {
                if done {
                    break;
                }
                h.lines.push(HunkLine::Context(String::new()));
                bare.push(true);
                old_seen += 1;
                new_seen += 1;
                i += 1;
                continue;
            };
            let body = || raw[1..].to_string();
            match first {
                ' ' => {
                    h.lines.push(HunkLine::Context(body()));
                    old_seen += 1;
                    new_seen += 1;
                }
                '-' => {
                    h.lines.push(HunkLine::Del(body()));
                    old_seen += 1;
                }
                '+' => {
                    h.lines.push(HunkLine::Add(body()));
                    new_seen += 1;
                }
                '\\' => {
                    match h.lines.last() {
                        Some(HunkLine::Context(_)) => {
                            h.old_no_eol = true;
                            h.new_no_eol = true;
                        }
                        Some(HunkLine::Del(_)) => h.old_no_eol = true,
                        Some(HunkLine::Add(_)) => h.new_no_eol = true,
                        None => {}
                    }
                    i += 1;
                    continue;
                }
                _ => break,
            }
            bare.push(false);
            i += 1;
        }
        // Trailing bare empty lines are usually separators, not context; keep
        // them only when the header's counts say they belong to the hunk.
        let trailing = bare.iter().rev().take_while(|b| **b).count();
        if trailing > 0 {
            let keep = counts.is_some_and(|(_, oc, _, nc)| old_seen == oc && new_seen == nc);
            if !keep {
                h.lines.truncate(h.lines.len() - trailing);
            }
        }
        (h, i)
    }

    // ----- apply_patch envelope ---------------------------------------------

    /// Parses envelope content from line `start` (after `*** Begin Patch`).
    fn apply_patch(&mut self, start: usize) -> usize {
        let n = self.lines.len();
        let mut i = start;
        while i < n {
            let t = self.t(i).trim_end();
            if t.trim() == "*** End Patch" {
                return i + 1;
            }
            if t.starts_with("```") || t.starts_with("~~~") {
                return i;
            }
            if let Some(p) = t.strip_prefix("*** Add File:") {
                let path = p.trim().to_string();
                i += 1;
                let mut content = Vec::new();
                while i < n && !is_patch_directive(self.t(i)) && !is_fence_line(self.t(i)) {
                    let l = self.t(i);
                    content.push(l.strip_prefix('+').unwrap_or(l).to_string());
                    i += 1;
                }
                while content.last().is_some_and(|l| l.is_empty()) {
                    content.pop();
                }
                self.blocks.push(Block {
                    format: Format::ApplyPatch,
                    paths: vec![path],
                    kind: Kind::Create {
                        lines: content,
                        final_newline: true,
                        executable: false,
                    },
                });
            } else if let Some(p) = t.strip_prefix("*** Delete File:") {
                self.blocks.push(Block {
                    format: Format::ApplyPatch,
                    paths: vec![p.trim().to_string()],
                    kind: Kind::Delete,
                });
                i += 1;
            } else if let Some(p) = t.strip_prefix("*** Update File:") {
                i = self.patch_update(i, p.trim().to_string());
            } else {
                i += 1;
            }
        }
        i
    }

    fn patch_update(&mut self, start: usize, path: String) -> usize {
        let n = self.lines.len();
        let mut i = start + 1;
        let mut move_to = None;
        if let Some(p) = self.t(i).strip_prefix("*** Move to:") {
            move_to = Some(p.trim().to_string());
            i += 1;
        }
        let mut hunks: Vec<Hunk> = Vec::new();
        let mut cur = Hunk::default();
        let flush = |cur: &mut Hunk, hunks: &mut Vec<Hunk>| {
            while matches!(cur.lines.last(), Some(HunkLine::Context(s)) if s.is_empty()) {
                cur.lines.pop();
            }
            let h = std::mem::take(cur);
            if !h.lines.is_empty() || !h.anchors.is_empty() {
                hunks.push(h);
            }
        };
        while i < n {
            let raw = self.lines[i];
            let t = strip_cr(raw);
            if is_patch_directive(t) || is_fence_line(t) {
                break;
            }
            if t.trim_end() == "*** End of File" {
                cur.eof = true;
                i += 1;
                continue;
            }
            if t == "@@" || t.starts_with("@@ ") {
                if !cur.lines.is_empty() || cur.eof {
                    flush(&mut cur, &mut hunks);
                }
                let anchor = t[2..].trim();
                if cur.header.is_empty() {
                    cur.header = t.to_string();
                }
                if !anchor.is_empty() {
                    cur.anchors.push(anchor.to_string());
                }
                i += 1;
                continue;
            }
            let line = match t.chars().next() {
                Some('-') => HunkLine::Del(raw[1..].to_string()),
                Some('+') => HunkLine::Add(raw[1..].to_string()),
                Some(' ') => HunkLine::Context(raw[1..].to_string()),
                // Tolerated: a context line whose leading space was lost.
                _ => HunkLine::Context(raw.to_string()),
            };
            cur.lines.push(line);
            i += 1;
        }
        flush(&mut cur, &mut hunks);
        let kind = if hunks.is_empty() && move_to.is_none() {
            Kind::Malformed("`*** Update File` has no changes (`@@` sections)".into())
        } else if hunks
            .iter()
            .any(|h| !h.lines.iter().any(|l| !matches!(l, HunkLine::Context(_))))
        {
            Kind::Malformed(
                "a `@@` section of this update has no `-` or `+` lines; each section must change \
                 something"
                    .into(),
            )
        } else {
            Kind::Hunks { hunks, move_to }
        };
        self.blocks.push(Block {
            format: Format::ApplyPatch,
            paths: vec![path],
            kind,
        });
        i
    }
}

enum Lookback {
    Found(String),
    /// The previous SEARCH/REPLACE block ends right before: same file.
    Previous,
    Nothing,
}

/// A ```` ```bash ```` block under `setup.py` shows commands, not the file.
fn is_shell_session(info_word: &str, path: &str) -> bool {
    let lang = info_word.to_ascii_lowercase();
    let shell = matches!(
        lang.as_str(),
        "bash"
            | "sh"
            | "shell"
            | "console"
            | "zsh"
            | "terminal"
            | "shell-session"
            | "powershell"
            | "cmd"
    );
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    let script = matches!(
        ext.as_deref(),
        None | Some("sh" | "bash" | "zsh" | "ps1" | "cmd" | "bat" | "env" | "bashrc" | "zshrc")
    );
    shell && !script
}

struct Fence<'a> {
    ch: char,
    len: usize,
    info: &'a str,
}

fn fence_open(t: &str) -> Option<Fence<'_>> {
    let s = t.trim_start_matches(' ');
    if t.len() - s.len() > 3 {
        return None;
    }
    let ch = s.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let len = s.chars().take_while(|&c| c == ch).count();
    if len < 3 {
        return None;
    }
    let info = s[len..].trim();
    if ch == '`' && info.contains('`') {
        return None;
    }
    Some(Fence { ch, len, info })
}

fn is_fence_line(t: &str) -> bool {
    t.starts_with("```") || t.starts_with("~~~")
}

fn is_patch_directive(t: &str) -> bool {
    let t = t.trim_end();
    t == "*** End Patch"
        || t.starts_with("*** Add File:")
        || t.starts_with("*** Delete File:")
        || t.starts_with("*** Update File:")
        || t == "*** Begin Patch"
}

fn marker(t: &str, ch: char, words: &[&str]) -> bool {
    let s = t.trim();
    let n = s.chars().take_while(|&c| c == ch).count();
    if !(5..=9).contains(&n) {
        return false;
    }
    let rest = s[n..].trim();
    words.iter().any(|w| rest.eq_ignore_ascii_case(w))
}

pub(crate) fn is_sr_start(t: &str) -> bool {
    marker(t, '<', &["SEARCH", "ORIGINAL"])
}

fn is_sr_divider(t: &str) -> bool {
    let s = t.trim();
    (5..=9).contains(&s.len()) && s.chars().all(|c| c == '=')
}

fn is_sr_end(t: &str) -> bool {
    marker(t, '>', &["REPLACE", "UPDATED"])
}

fn is_hunk_header(t: &str) -> bool {
    let t = t.trim_end();
    t == "@@" || (t.starts_with("@@ ") && !t.starts_with("@@@"))
}

/// `(old_start, old_count, new_start, new_count)` from `@@ -a,b +c,d @@`.
fn parse_hunk_numbers(h: &str) -> Option<(usize, usize, usize, usize)> {
    let rest = h.strip_prefix("@@")?.trim_start();
    let mut it = rest.split_whitespace();
    let old = it.next()?.strip_prefix('-')?;
    let new = it.next()?.strip_prefix('+')?;
    let range = |s: &str| -> Option<(usize, usize)> {
        match s.split_once(',') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => Some((s.parse().ok()?, 1)),
        }
    };
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Some((a, b, c, d))
}

/// `Some(path)` or `None` for `/dev/null`.
fn header_path(s: &str) -> Option<String> {
    let s = s.split('\t').next().unwrap_or("").trim();
    let s = unquote(s);
    if s == "/dev/null" {
        None
    } else {
        Some(s.to_string())
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
}

fn strip_ab(p: &str) -> &str {
    p.strip_prefix("a/")
        .or_else(|| p.strip_prefix("b/"))
        .unwrap_or(p)
}

fn split_git_header(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim();
    if let Some(pos) = rest.find(" b/") {
        let (a, b) = rest.split_at(pos);
        return Some((unquote(a).to_string(), unquote(b.trim()).to_string()));
    }
    let mut it = rest.split_whitespace();
    Some((
        unquote(it.next()?).to_string(),
        unquote(it.next()?).to_string(),
    ))
}

const BARE_NAMES: &[&str] = &[
    "Makefile",
    "makefile",
    "GNUmakefile",
    "Dockerfile",
    "Containerfile",
    "Justfile",
    "justfile",
    "Rakefile",
    "Gemfile",
    "Procfile",
    "Vagrantfile",
    "Jenkinsfile",
    "LICENSE",
    "README",
    "CODEOWNERS",
    "BUILD",
    "WORKSPACE",
];

/// Does `s` look like a relative or absolute file path (not prose, not a
/// language name)?
pub(crate) fn looks_like_path(s: &str, allow_bare_names: bool) -> bool {
    if s.is_empty() || s.len() > 4096 || s.starts_with('-') {
        return false;
    }
    if s.ends_with('.') || s.ends_with('/') || s.ends_with('\\') {
        return false;
    }
    let ok_char = |c: char| c.is_alphanumeric() || "._-/+@~=,%\\".contains(c);
    if !s.chars().all(ok_char) || !s.chars().any(|c| c.is_alphabetic()) {
        return false;
    }
    if s.contains('/') || s.contains('\\') {
        return true;
    }
    if let Some((stem, ext)) = s.rsplit_once('.') {
        let ext_ok = !ext.is_empty() && ext.len() <= 12 && ext.chars().all(char::is_alphanumeric);
        return ext_ok && (!stem.is_empty() || s.starts_with('.'));
    }
    allow_bare_names && BARE_NAMES.contains(&s)
}

/// A path alone on a line, possibly decorated: `` `p` ``, `**p**`, `### p`,
/// `File: p`, `p:`.
pub(crate) fn path_from_line(t: &str, allow_bare_names: bool) -> Option<String> {
    let mut s = t.trim();
    if s.starts_with('#') {
        let h = s.trim_start_matches('#');
        if h.starts_with(' ') {
            s = h.trim();
        }
    }
    for prefix in ["file:", "filename:", "path:", "file path:"] {
        // `get`, not indexing: the line is arbitrary text and the cut may fall
        // inside a multi-byte character.
        if let (Some(head), Some(rest)) = (s.get(..prefix.len()), s.get(prefix.len()..))
            && !rest.is_empty()
            && head.eq_ignore_ascii_case(prefix)
        {
            s = rest.trim();
            break;
        }
    }
    for _ in 0..3 {
        s = s.strip_suffix(':').unwrap_or(s).trim();
        for w in ["**", "__", "`", "*", "'", "\""] {
            if let Some(x) = s.strip_prefix(w).and_then(|x| x.strip_suffix(w)) {
                s = x.trim();
            }
        }
    }
    looks_like_path(s, allow_bare_names).then(|| s.to_string())
}

/// Right before a SEARCH block the position says "path": accept any single
/// token made of path characters (e.g. `Makefile`, `f`).
fn bare_token_path(t: &str) -> Option<String> {
    let s = t
        .trim()
        .trim_end_matches(':')
        .trim_matches('`')
        .trim_matches('*');
    let ok = !s.is_empty()
        && !s.starts_with('-')
        && s.chars().any(char::is_alphabetic)
        && s.chars()
            .all(|c| c.is_alphanumeric() || "._-/+@~=,%\\".contains(c));
    ok.then(|| s.to_string())
}

/// A path in a fence info string: ```` ```python path/to/x.py ````,
/// ```` ```path/to/x.py ````, ```` ```rust:src/main.rs ````,
/// ```` ```py title="x.py" ````.
fn path_from_info(info: &str) -> Option<String> {
    for tok in info.split_whitespace() {
        let tok = tok.rsplit_once(':').map_or(tok, |(_, b)| b);
        let tok = tok.rsplit_once('=').map_or(tok, |(_, b)| b);
        let tok = unquote(tok.trim_matches('\''));
        if looks_like_path(tok, false) {
            return Some(tok.to_string());
        }
    }
    None
}

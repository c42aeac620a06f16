//! Edit engine: finds every edit in a model's reply, applies them tolerantly
//! and atomically to one worktree directory, and reports precise feedback.
//!
//! # Formats (auto-detected, may be mixed in one reply)
//! * Unified diff: git style and model style (wrong or missing line numbers
//!   and counts, bare `@@`, no `a/` `b/` prefixes, fenced or not).
//!   `--- /dev/null` creates, `+++ /dev/null` deletes, `rename from/to`
//!   moves. Hunks without `---`/`+++` are accepted inside a fence whose path
//!   is attached (path line before the fence, or in its info string).
//! * SEARCH/REPLACE blocks (aider): path line, `<<<<<<< SEARCH`, `=======`,
//!   `>>>>>>> REPLACE`. An empty SEARCH creates a file (or fills an empty
//!   one); on a non-empty existing file it is an error. Blocks for the same
//!   file apply one after the other.
//! * apply_patch envelopes (codex): Add / Update (+ Move to) / Delete File,
//!   `@@ anchor` lines (nested anchors allowed), `*** End of File`.
//! * Whole files: a fenced block with a path clearly attached. A code block
//!   without a path is not an edit; a block that contains edit markers is
//!   parsed as those edits, never as a whole file. An elision line such as
//!   `// ... rest unchanged` (a comment, or a line opening with the dots)
//!   that is not in the current file is refused.
//!
//! # Matching
//! Each hunk's old lines (context + removed) are searched in the whole file
//! through a cascade of levels: [`MatchLevel::Exact`],
//! [`MatchLevel::TrailingWhitespace`], [`MatchLevel::LineEndings`],
//! [`MatchLevel::Indentation`] (added lines re-indented by the delta between
//! the hunk's first non-blank old line and the file line it matched),
//! [`MatchLevel::UnicodeLookalikes`]. The first level with any match decides:
//! exactly one match is used, two or more are an ambiguity error naming the
//! candidate lines. Line numbers never choose between matches; when an exact
//! match is not where the header's line number says, the hunk's level is
//! reported as [`MatchLevel::AnyLine`]. They may refuse one: when the only
//! match is elsewhere than the header's line while that line holds the text
//! at a looser level (say, re-indented), the hunk is ambiguous. A block's level is its loosest
//! hunk's (Exact < AnyLine < TrailingWhitespace < ... < UnicodeLookalikes).
//! All hunks of a block are located in the file as it was before the block,
//! so they may come in any order; overlapping hunks are an error.
//!
//! A hunk with no old lines: in an empty file it goes at the start; in
//! apply_patch it goes after its `@@` anchor line, or at the end of the file
//! (the format's definition); in a unified diff only a header saying start
//! (`-0,0`, or `-1,0 +1,..`) or end (`-N,0` with N >= the line count) places
//! it; anything else is ambiguous and rejected.
//!
//! Re-sent edits are refused as "already applied" instead of corrupting the
//! file: a hunk whose old text lies inside an occurrence of its own new
//! text, or a unified diff whose every hunk's new text sits exactly at the
//! header's new-side line while its old text is not at the old-side line
//! (GNU patch's test; line numbers only ever refuse, never pick). A block
//! repeated verbatim in one reply is applied once.
//!
//! # Safety
//! Everything is staged in memory; nothing is written unless every block
//! applies. Writes are temp file + rename in the target's directory; if a
//! rename fails midway, the files already renamed are restored from the
//! staged originals. Paths are resolved inside the root (no absolute paths,
//! no `..`, no symlink leading out, nothing in `.git/`, nor in
//! `.github/workflows/` when protected). Binary files are never edited.
//! Line endings, final-newline state, BOM and file mode of existing files
//! are kept (a unified diff's explicit `\ No newline at end of file` is
//! honoured); new files get LF and a final newline.

mod apply;
mod canonical;
mod feedback;
mod matching;
mod parse;
mod patch;
mod path;
mod text;
mod vfs;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use canonical::{canonical_diff, canonical_file_diff};

/// Which paths an edit may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathPolicy {
    /// Refuse edits under `.github/workflows/`.
    pub protect_workflows: bool,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            protect_workflows: true,
        }
    }
}

/// The format an edit block was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    UnifiedDiff,
    SearchReplace,
    ApplyPatch,
    WholeFile,
}

/// How loosely a block's text had to be matched (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchLevel {
    Exact,
    TrailingWhitespace,
    LineEndings,
    Indentation,
    UnicodeLookalikes,
    /// Exact text, but not at the line the diff header named.
    AnyLine,
}

/// A file written or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// Relative to the worktree, `/`-separated, symlinks resolved.
    pub path: PathBuf,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
}

/// The result of one edit block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockOutcome {
    /// 0-based position in the reply.
    pub index: usize,
    pub format: Format,
    /// The resolved relative path, or the path as written if it was refused.
    pub path: String,
    /// The block matched and could be applied. It took effect only if
    /// [`ApplyReport::applied`] is true.
    pub applied: bool,
    /// Loosest match level of its hunks; `None` for creations, deletions,
    /// whole files and failures.
    pub level: Option<MatchLevel>,
    /// What happened, or exactly why not (for the model).
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// True only if every block applied and something was written (or would
    /// be, on dry run).
    pub applied: bool,
    /// One per edit block found in the reply, in reply order.
    pub blocks: Vec<BlockOutcome>,
    /// Files written/deleted (empty when rejected).
    pub changes: Vec<FileChange>,
    /// Canonical unified diff of the whole change; empty when rejected.
    pub diff: String,
}

/// I/O failures of the worktree itself. A rejected edit is not an error:
/// it is `applied == false` with feedback.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("worktree root {path} is not an accessible directory: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path} failed: {source}; {rollback}")]
    Commit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        /// What the rollback achieved.
        rollback: String,
    },
}

/// Finds every edit in `reply` and applies them all to the worktree at
/// `root`, or none of them. With `dry_run`, nothing is written but the
/// report is the same.
pub fn apply(
    root: &Path,
    reply: &str,
    policy: &PathPolicy,
    dry_run: bool,
) -> Result<ApplyReport, EditError> {
    apply::run(root, reply, policy, dry_run)
}

//! Running exploration actions. Listing, reading and searching read the host's work tree
//! (the source of truth, and no container round trip); `run` executes in the sandbox as a
//! user that cannot change the tree. Paths stay inside the tree: no absolute paths, no
//! `..`, no `.git`, and no symlinks followed, so nothing of the host leaks into a prompt.

use std::path::{Component, Path, PathBuf};

use super::actions::{Action, ActionError};
use super::context::{cap_middle, repo_files};
use crate::sandbox::{Sandbox, SandboxError};

/// Entries of one directory listing, and matches of one search, shown at most.
const MAX_ENTRIES: usize = 200;
const MAX_MATCHES: usize = 60;
/// Files larger than this are not searched or read whole.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What one action produced, for the model and the transcript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionResult {
    pub request: String,
    pub ok: bool,
    pub output: String,
}

impl ActionResult {
    fn failed(request: String, message: impl Into<String>) -> ActionResult {
        ActionResult {
            request,
            ok: false,
            output: format!("error: {}", message.into()),
        }
    }

    /// The result as a block of a feedback prompt.
    pub fn render(&self) -> String {
        let fence = crate::dispatch::fence_for(&self.output);
        format!(
            "### {}\n{fence}\n{}\n{fence}\n",
            self.request,
            self.output.trim_end()
        )
    }
}

impl From<ActionError> for ActionResult {
    fn from(e: ActionError) -> ActionResult {
        ActionResult::failed(e.request, e.message)
    }
}

/// Runs one action; `max_bytes` caps its output (the middle is cut, and the cut says so).
pub async fn run(
    action: &Action,
    worktree: &Path,
    sandbox: &Sandbox,
    max_bytes: usize,
) -> Result<ActionResult, SandboxError> {
    let request = action.describe();
    let result = match action {
        Action::ListDir { path } => list_dir(worktree, path),
        Action::ReadFile { path, start, end } => read_file(worktree, path, *start, *end),
        Action::Search { pattern, path } => search(worktree, pattern, path.as_deref()),
        Action::Run { command } => {
            let outcome = sandbox.exec_read_only(command).await?;
            Ok(format!("{}\n{}", outcome.summary(), outcome.output))
        }
    };
    Ok(match result {
        Ok(output) => ActionResult {
            request,
            ok: true,
            output: cap_middle(&output, max_bytes),
        },
        Err(message) => ActionResult::failed(request, message),
    })
}

/// A path the model named, checked to stay in the tree and to follow no symlink.
fn resolve(worktree: &Path, path: &str) -> Result<PathBuf, String> {
    let relative = Path::new(path.trim());
    let mut out = worktree.to_path_buf();
    for component in relative.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(name) if name == ".git" => {
                return Err(format!("`{path}`: .git is not part of the task's files"));
            }
            Component::Normal(name) => {
                out.push(name);
                if out
                    .symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    return Err(format!(
                        "`{path}` goes through a symlink, which is not followed"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "`{path}` leaves the repository; use a path relative to its root"
                ));
            }
        }
    }
    Ok(out)
}

fn list_dir(worktree: &Path, path: &str) -> Result<String, String> {
    let dir = resolve(worktree, path)?;
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list `{path}`: {e}"))?;
    let mut lines: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_name() != ".git")
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type() {
                Ok(t) if t.is_dir() => format!("{name}/"),
                Ok(t) if t.is_symlink() => format!("{name} (symlink)"),
                _ => {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    format!("{name} ({size} bytes)")
                }
            }
        })
        .collect();
    lines.sort();
    let total = lines.len();
    lines.truncate(MAX_ENTRIES);
    if total > MAX_ENTRIES {
        lines.push(format!("[{} more entries not shown]", total - MAX_ENTRIES));
    }
    if lines.is_empty() {
        return Ok("(empty directory)".into());
    }
    Ok(lines.join("\n"))
}

fn read_text(file: &Path, shown: &str) -> Result<String, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if meta.is_dir() {
        return Err(format!("`{shown}` is a directory; use list_dir"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "`{shown}` is {} bytes; read a line range of it instead",
            meta.len()
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
    if bytes.contains(&0) {
        return Err(format!("`{shown}` is a binary file"));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn read_file(
    worktree: &Path,
    path: &str,
    start: Option<usize>,
    end: Option<usize>,
) -> Result<String, String> {
    let text = read_text(&resolve(worktree, path)?, path)?;
    if start.is_none() && end.is_none() {
        return Ok(text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let first = start.unwrap_or(1);
    let last = end.unwrap_or(lines.len()).min(lines.len());
    if first > lines.len() {
        return Err(format!("`{path}` has only {} lines", lines.len()));
    }
    Ok(format!(
        "[lines {first}-{last} of {}]\n{}",
        lines.len(),
        lines[first - 1..last].join("\n")
    ))
}

fn search(worktree: &Path, pattern: &str, path: Option<&str>) -> Result<String, String> {
    let scope = resolve(worktree, path.unwrap_or("."))?;
    let files: Vec<PathBuf> = if scope.is_file() {
        vec![scope]
    } else {
        repo_files(&scope)
            .into_iter()
            .filter(|f| f.size <= MAX_FILE_BYTES)
            .map(|f| scope.join(f.path))
            .collect()
    };
    let mut matches = Vec::new();
    let mut total = 0usize;
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        if bytes.contains(&0) {
            continue;
        }
        let shown = file
            .strip_prefix(worktree)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
            if line.contains(pattern) {
                total += 1;
                if matches.len() < MAX_MATCHES {
                    let line: String = line.trim_end().chars().take(200).collect();
                    matches.push(format!("{shown}:{}: {line}", i + 1));
                }
            }
        }
    }
    if total == 0 {
        return Ok(format!("no line contains `{pattern}`"));
    }
    if total > matches.len() {
        matches.push(format!(
            "[{} more matches not shown; narrow the search with a path]",
            total - matches.len()
        ));
    }
    Ok(matches.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("src/calc.py"),
            "def add(a, b):\n    return a - b\n\ndef sub(a, b):\n    return a - b\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "calc: add and sub\n").unwrap();
        std::fs::write(dir.path().join("blob.bin"), [0u8, 1, 2]).unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/config"), "token").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        dir
    }

    #[test]
    fn lists_without_git_and_marks_kinds() {
        let dir = tree();
        let listing = list_dir(dir.path(), ".").unwrap();
        assert_eq!(
            listing,
            "README.md (18 bytes)\nblob.bin (3 bytes)\netc (symlink)\nsrc/"
        );
        assert_eq!(list_dir(dir.path(), "src").unwrap(), "calc.py (65 bytes)");
    }

    #[test]
    fn reads_files_and_ranges() {
        let dir = tree();
        assert!(
            read_file(dir.path(), "src/calc.py", None, None)
                .unwrap()
                .starts_with("def add")
        );
        assert_eq!(
            read_file(dir.path(), "./src/calc.py", Some(4), Some(9)).unwrap(),
            "[lines 4-5 of 5]\ndef sub(a, b):\n    return a - b"
        );
        assert!(
            read_file(dir.path(), "src/calc.py", Some(9), None)
                .unwrap_err()
                .contains("only 5 lines")
        );
        assert!(
            read_file(dir.path(), "blob.bin", None, None)
                .unwrap_err()
                .contains("binary")
        );
        assert!(
            read_file(dir.path(), "src", None, None)
                .unwrap_err()
                .contains("use list_dir")
        );
    }

    #[test]
    fn never_leaves_the_tree() {
        let dir = tree();
        for path in ["../x", "/etc/passwd", "src/../../x"] {
            assert!(
                read_file(dir.path(), path, None, None)
                    .unwrap_err()
                    .contains("leaves the repository"),
                "{path}"
            );
        }
        assert!(
            read_file(dir.path(), ".git/config", None, None)
                .unwrap_err()
                .contains(".git")
        );
        assert!(
            read_file(dir.path(), "etc/passwd", None, None)
                .unwrap_err()
                .contains("symlink")
        );
        assert!(list_dir(dir.path(), "etc").unwrap_err().contains("symlink"));
        assert!(
            search(dir.path(), "root", Some("etc"))
                .unwrap_err()
                .contains("symlink")
        );
    }

    #[test]
    fn search_names_file_and_line() {
        let dir = tree();
        assert_eq!(
            search(dir.path(), "return a - b", None).unwrap(),
            "src/calc.py:2:     return a - b\nsrc/calc.py:5:     return a - b"
        );
        assert_eq!(
            search(dir.path(), "add", Some("README.md")).unwrap(),
            "README.md:1: calc: add and sub"
        );
        assert!(
            search(dir.path(), "token", None)
                .unwrap()
                .starts_with("no line contains")
        );
    }
}

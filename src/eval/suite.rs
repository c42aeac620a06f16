//! Loading an eval suite: a folder with one folder per task.
//!
//! ```text
//! <suite>/<task>/task.toml   instruction, test_cmd, hidden_test_cmd (+ description, kind, language)
//! <suite>/<task>/repo/       the files the model sees, visible tests included
//! <suite>/<task>/hidden/     copied over the final tree before hidden_test_cmd runs
//! ```
//!
//! A folder without `task.toml` and without `repo/` (such as `models/`) is not a task.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file that makes a folder a task.
pub const TASK_FILE: &str = "task.toml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    pub dir: PathBuf,
    /// Sorted by name.
    pub tasks: Vec<SuiteTask>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteTask {
    /// The task folder's name: `[A-Za-z0-9._-]+`.
    pub name: String,
    pub dir: PathBuf,
    pub repo: PathBuf,
    pub hidden: PathBuf,
    pub instruction: String,
    /// What the model is told and what the agent loop runs.
    pub test_cmd: String,
    /// Decides success: runs in a fresh sandbox on the final tree with `hidden/` on top.
    pub hidden_test_cmd: String,
    pub description: Option<String>,
    /// `bug fix`, `feature`, `refactor`, ...
    pub kind: Option<String>,
    pub language: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("the suite {path} is not a directory: pass --suite <dir> with one folder per task")]
    NotADirectory { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the suite {path} has no tasks: each task is a folder with task.toml, repo/ and hidden/"
    )]
    Empty { path: PathBuf },
    #[error("task {task}: {message} ({path})")]
    Task {
        task: String,
        path: PathBuf,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    instruction: String,
    test_cmd: String,
    hidden_test_cmd: String,
    description: Option<String>,
    kind: Option<String>,
    language: Option<String>,
}

/// Loads every task of the suite at `dir`, or says exactly what is wrong with the first
/// malformed one.
pub fn load(dir: &Path) -> Result<Suite, SuiteError> {
    if !dir.is_dir() {
        return Err(SuiteError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SuiteError::Io { path, source }
    };
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if path.is_dir() && (path.join(TASK_FILE).exists() || path.join("repo").exists()) {
            folders.push(path);
        }
    }
    folders.sort();
    if folders.is_empty() {
        return Err(SuiteError::Empty {
            path: dir.to_path_buf(),
        });
    }
    let tasks = folders
        .iter()
        .map(|folder| load_task(folder))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Suite {
        dir: dir.to_path_buf(),
        tasks,
    })
}

fn load_task(dir: &Path) -> Result<SuiteTask, SuiteError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |path: &Path, message: String| SuiteError::Task {
        task: name.clone(),
        path: path.to_path_buf(),
        message,
    };
    if !valid_name(&name) {
        return Err(fail(
            dir,
            "a task folder's name may hold only letters, digits, `.`, `_` and `-`".into(),
        ));
    }
    let file = dir.join(TASK_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        fail(
            &file,
            format!(
                "cannot read {TASK_FILE} ({e}); it needs `instruction`, `test_cmd` and `hidden_test_cmd`"
            ),
        )
    })?;
    let parsed: TaskFile = toml::from_str(&text).map_err(|e| {
        fail(
            &file,
            format!("{TASK_FILE} is not valid: {}", e.message().trim()),
        )
    })?;
    for (field, value) in [
        ("instruction", &parsed.instruction),
        ("test_cmd", &parsed.test_cmd),
        ("hidden_test_cmd", &parsed.hidden_test_cmd),
    ] {
        if value.trim().is_empty() {
            return Err(fail(&file, format!("`{field}` is empty")));
        }
    }
    let repo = dir.join("repo");
    if !repo.is_dir() {
        return Err(fail(
            &repo,
            "no repo/ folder: it holds the files the model sees".into(),
        ));
    }
    let hidden = dir.join("hidden");
    let hidden_files = if hidden.is_dir() {
        files_under(&hidden).map_err(|e| fail(&hidden, format!("cannot list it: {e}")))?
    } else {
        Vec::new()
    };
    if hidden_files.is_empty() {
        return Err(fail(
            &hidden,
            "no hidden tests: hidden/ holds the files copied over the final tree before hidden_test_cmd runs".into(),
        ));
    }
    let optional = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    Ok(SuiteTask {
        name,
        dir: dir.to_path_buf(),
        repo,
        hidden,
        instruction: parsed.instruction.trim().to_string(),
        test_cmd: parsed.test_cmd.trim().to_string(),
        hidden_test_cmd: parsed.hidden_test_cmd.trim().to_string(),
        description: optional(parsed.description),
        kind: optional(parsed.kind),
        language: optional(parsed.language),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Every file and symlink below `root`, relative to it, sorted.
pub fn files_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(root.join(rel))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "instruction = \"Fix it.\"\ntest_cmd = \"make test\"\nhidden_test_cmd = \"make hidden\"\nkind = \"bug fix\"\n";

    fn task(root: &Path, name: &str, toml: Option<&str>, repo: bool, hidden: bool) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(toml) = toml {
            std::fs::write(dir.join(TASK_FILE), toml).unwrap();
        }
        if repo {
            std::fs::create_dir_all(dir.join("repo")).unwrap();
            std::fs::write(dir.join("repo/main.c"), "int main(void) { return 1; }\n").unwrap();
        }
        if hidden {
            std::fs::create_dir_all(dir.join("hidden/tests")).unwrap();
            std::fs::write(dir.join("hidden/tests/t.sh"), "exit 0\n").unwrap();
        }
    }

    fn error(root: &Path) -> String {
        load(root).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn loads_tasks_sorted_and_skips_other_folders() {
        let tmp = tempfile::tempdir().unwrap();
        task(tmp.path(), "b-task", Some(GOOD), true, true);
        task(tmp.path(), "a-task", Some(GOOD), true, true);
        std::fs::create_dir_all(tmp.path().join("models/replay")).unwrap();
        std::fs::write(tmp.path().join("README.md"), "hi").unwrap();
        let suite = load(tmp.path()).unwrap();
        let names: Vec<&str> = suite.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a-task", "b-task"]);
        let t = &suite.tasks[0];
        assert_eq!(
            (
                t.instruction.as_str(),
                t.test_cmd.as_str(),
                t.hidden_test_cmd.as_str()
            ),
            ("Fix it.", "make test", "make hidden")
        );
        assert_eq!(t.kind.as_deref(), Some("bug fix"));
        assert_eq!(t.language, None);
        assert_eq!(
            files_under(&t.hidden).unwrap(),
            [PathBuf::from("tests/t.sh")]
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        task(
            tmp.path(),
            "t",
            Some("instruction = \"x\"\ntest_cmd = \"y\"\n"),
            true,
            true,
        );
        let e = error(tmp.path());
        assert!(
            e.starts_with("task t: task.toml is not valid: missing field `hidden_test_cmd`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_and_empty_fields_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        task(
            tmp.path(),
            "t",
            Some(&format!("{GOOD}hiden = \"typo\"\n")),
            true,
            true,
        );
        assert!(error(tmp.path()).contains("unknown field `hiden`"));
        task(
            tmp.path(),
            "t",
            Some("instruction = \" \"\ntest_cmd = \"y\"\nhidden_test_cmd = \"z\"\n"),
            true,
            true,
        );
        assert!(error(tmp.path()).contains("`instruction` is empty"));
    }

    #[test]
    fn missing_parts_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        task(tmp.path(), "no-toml", None, true, true);
        assert!(
            error(tmp.path()).starts_with("task no-toml: cannot read task.toml"),
            "{}",
            error(tmp.path())
        );

        let tmp = tempfile::tempdir().unwrap();
        task(tmp.path(), "no-repo", Some(GOOD), false, true);
        assert!(error(tmp.path()).contains("no repo/ folder"));

        let tmp = tempfile::tempdir().unwrap();
        task(tmp.path(), "no-hidden", Some(GOOD), true, false);
        assert!(error(tmp.path()).contains("no hidden tests"));

        let tmp = tempfile::tempdir().unwrap();
        assert!(error(tmp.path()).contains("has no tasks"));
        assert!(error(&tmp.path().join("nope")).contains("is not a directory"));
    }

    #[test]
    fn odd_task_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        task(tmp.path(), "two words", Some(GOOD), true, true);
        assert!(error(tmp.path()).contains("may hold only letters"));
    }
}

//! The agent loop: a baseline test run, then model reply → edits applied on the host →
//! changed files synced into the sandbox → tests → feedback, until the tests pass or a
//! budget runs out. Success is decided by the test command, never by the model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::edit::{self, PathPolicy};
use crate::llm::{ChatModel, Message, Usage};
use crate::sandbox::{ExecOutcome, Sandbox, SandboxError};

const SYSTEM_PROMPT: &str = include_str!("../prompts/system.md");
const TASK_PROMPT: &str = include_str!("../prompts/task.md");
const EDIT_REJECTED_PROMPT: &str = include_str!("../prompts/edit_rejected.md");
const NO_EDITS_PROMPT: &str = include_str!("../prompts/no_edits.md");
const TESTS_FAILED_PROMPT: &str = include_str!("../prompts/tests_failed.md");

/// Lines of test output the model and the failure comment see.
const TEST_TAIL_LINES: usize = 60;
/// Files larger than this are listed in the map but never inlined.
const MAX_INLINE_FILE_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Budget {
    pub max_iterations: u32,
    pub max_wall: Duration,
    pub max_context_bytes: usize,
}

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum StopReason {
    Success,
    /// Every allowed model reply was used.
    BudgetIterations,
    Timeout,
    ModelError(String),
}

impl StopReason {
    pub fn describe(&self, budget: &Budget) -> String {
        match self {
            StopReason::Success => "the tests pass".into(),
            StopReason::BudgetIterations => format!(
                "the tests still fail after {} model replies (the iteration budget)",
                budget.max_iterations
            ),
            StopReason::Timeout => format!(
                "the task ran out of its {} s wall-clock budget",
                budget.max_wall.as_secs()
            ),
            StopReason::ModelError(e) => format!("the model failed: {e}"),
        }
    }
}

/// What the loop did, for the summary, the PR body and the failure comment.
#[derive(Debug, Clone)]
pub struct AgentOutcome {
    pub stop: StopReason,
    pub baseline: ExecOutcome,
    pub last_test: Option<ExecOutcome>,
    pub iterations: u32,
    pub usage: Usage,
    pub llm_time: Duration,
    pub test_times: Vec<Duration>,
    pub edits_applied: u32,
    pub edits_rejected: u32,
}

impl AgentOutcome {
    pub fn succeeded(&self) -> bool {
        self.stop == StopReason::Success
    }

    /// The most recent test result (the baseline when nothing got as far as a test run).
    pub fn final_test(&self) -> &ExecOutcome {
        self.last_test.as_ref().unwrap_or(&self.baseline)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("the edit engine failed on the work tree: {0}")]
    Edit(#[from] edit::EditError),
    #[error("cannot write the transcript {path}: {source}")]
    Transcript {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct AgentRun<'a> {
    pub model: &'a dyn ChatModel,
    pub sandbox: &'a Sandbox,
    pub worktree: &'a Path,
    pub instruction: &'a str,
    /// The target issue or pull request, already sanitised.
    pub target_context: Option<&'a str>,
    pub test_cmd: &'a str,
    pub budget: &'a Budget,
    pub policy: &'a PathPolicy,
    pub transcript: &'a Path,
}

impl AgentRun<'_> {
    pub async fn run(&self) -> Result<AgentOutcome, AgentError> {
        let started = Instant::now();
        let mut transcript = Transcript::create(self.transcript)?;
        let baseline = self.sandbox.exec(self.test_cmd).await?;
        transcript.event("baseline_test", &test_record(&baseline))?;
        tracing::info!(result = %baseline.summary(), "baseline test run");

        let mut outcome = AgentOutcome {
            stop: StopReason::BudgetIterations,
            baseline: baseline.clone(),
            last_test: None,
            iterations: 0,
            usage: Usage::default(),
            llm_time: Duration::ZERO,
            test_times: vec![baseline.duration],
            edits_applied: 0,
            edits_rejected: 0,
        };
        let first_prompt = task_prompt(
            self.instruction,
            self.target_context,
            self.worktree,
            self.test_cmd,
            &baseline,
            self.budget.max_context_bytes,
        );
        let mut messages = vec![Message::system(SYSTEM_PROMPT), Message::user(first_prompt)];

        while outcome.iterations < self.budget.max_iterations {
            let Some(remaining) = self.budget.max_wall.checked_sub(started.elapsed()) else {
                outcome.stop = StopReason::Timeout;
                break;
            };
            outcome.iterations += 1;
            transcript.event("prompt", &messages.last())?;
            let asked = Instant::now();
            let reply = match tokio::time::timeout(remaining, self.model.complete(&messages)).await
            {
                Err(_) => {
                    outcome.stop = StopReason::Timeout;
                    break;
                }
                Ok(Err(e)) => {
                    outcome.stop = StopReason::ModelError(e.to_string());
                    transcript.event("model_error", &e.to_string())?;
                    break;
                }
                Ok(Ok(reply)) => reply,
            };
            outcome.llm_time += asked.elapsed();
            outcome.usage.prompt_tokens += reply.usage.prompt_tokens;
            outcome.usage.completion_tokens += reply.usage.completion_tokens;
            transcript.event("reply", &serde_json::json!({"content": reply.content, "usage": reply.usage, "seconds": asked.elapsed().as_secs_f64()}))?;
            messages.push(Message::assistant(reply.content.clone()));

            let report = edit::apply(self.worktree, &reply.content, self.policy, false)?;
            transcript.event("edit", &report)?;
            if report.found_no_edits() {
                outcome.edits_rejected += 1;
                messages.push(Message::user(NO_EDITS_PROMPT));
                continue;
            }
            if !report.applied {
                outcome.edits_rejected += 1;
                tracing::info!(iteration = outcome.iterations, "edits rejected");
                messages.push(Message::user(render(
                    EDIT_REJECTED_PROMPT,
                    &[("feedback", &report.feedback())],
                )));
                continue;
            }
            outcome.edits_applied += 1;
            let changed: Vec<PathBuf> = report.changes.iter().map(|c| c.path.clone()).collect();
            self.sandbox.sync(self.worktree, &changed).await?;
            let test = self.sandbox.exec(self.test_cmd).await?;
            transcript.event("test", &test_record(&test))?;
            tracing::info!(iteration = outcome.iterations, result = %test.summary(), "test run");
            outcome.test_times.push(test.duration);
            let passed = test.passed();
            outcome.last_test = Some(test.clone());
            if passed {
                outcome.stop = StopReason::Success;
                break;
            }
            let applied: String = report
                .changes
                .iter()
                .map(|c| format!("- {}\n", c.path.display()))
                .collect();
            messages.push(Message::user(render(
                TESTS_FAILED_PROMPT,
                &[
                    ("applied", &applied),
                    ("summary", &test.summary()),
                    ("tail", &test.tail(TEST_TAIL_LINES)),
                    ("diff", &cap_text(&report.diff, 8000)),
                ],
            )));
        }
        transcript.event("stop", &outcome.stop)?;
        Ok(outcome)
    }
}

fn test_record(test: &ExecOutcome) -> serde_json::Value {
    serde_json::json!({
        "summary": test.summary(),
        "exit_code": test.exit_code,
        "timed_out": test.timed_out,
        "oom_killed": test.oom_killed,
        "seconds": test.duration.as_secs_f64(),
        "tail": test.tail(TEST_TAIL_LINES),
    })
}

/// One JSON object per line: what was asked, answered, applied and tested.
struct Transcript {
    path: PathBuf,
    file: std::fs::File,
    started: Instant,
}

impl Transcript {
    fn create(path: &Path) -> Result<Transcript, AgentError> {
        let fail = |source| AgentError::Transcript {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        Ok(Transcript {
            path: path.to_path_buf(),
            file,
            started: Instant::now(),
        })
    }

    fn event(&mut self, kind: &str, data: &impl Serialize) -> Result<(), AgentError> {
        let line = serde_json::json!({
            "at": chrono::Utc::now().to_rfc3339(),
            "t": self.started.elapsed().as_secs_f64(),
            "kind": kind,
            "data": data,
        });
        writeln!(self.file, "{line}").map_err(|source| AgentError::Transcript {
            path: self.path.clone(),
            source,
        })
    }
}

/// Fills `{{name}}` placeholders in one pass, so text inserted (an instruction, a file)
/// is never itself searched for placeholders. Unknown names are left as they are.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after.find("}}").and_then(|end| {
            values
                .iter()
                .find(|(name, _)| *name == &after[..end])
                .map(|(_, v)| (end, *v))
        });
        match value {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn cap_text(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[... {} more bytes not shown]",
        &text[..end],
        text.len() - end
    )
}

fn task_prompt(
    instruction: &str,
    target_context: Option<&str>,
    worktree: &Path,
    test_cmd: &str,
    baseline: &ExecOutcome,
    max_context_bytes: usize,
) -> String {
    let files = repo_files(worktree);
    let map: String = files
        .iter()
        .map(|f| format!("{} ({})\n", f.path, f.size))
        .collect();
    let inlined = pack_files(worktree, &files, instruction, max_context_bytes);
    let context = target_context
        .map(|c| format!("\n## Context from the target issue\n\n{c}\n"))
        .unwrap_or_default();
    render(
        TASK_PROMPT,
        &[
            ("fence", &crate::dispatch::fence_for(instruction)),
            ("instruction", instruction),
            ("target_context", &context),
            ("repo_map", map.trim_end()),
            ("files", &inlined),
            ("test_cmd", test_cmd),
            ("baseline_summary", &baseline.summary()),
            ("baseline_tail", &baseline.tail(TEST_TAIL_LINES)),
        ],
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RepoFile {
    path: String,
    size: u64,
}

/// Regular files of the work tree, without `.git`; symlinks are never followed, so a link
/// to a host file cannot pull its content into a prompt.
fn repo_files(root: &Path) -> Vec<RepoFile> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if entry.file_name() == ".git" {
                continue;
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && let (Ok(rel), Ok(meta)) = (path.strip_prefix(root), entry.metadata())
            {
                files.push(RepoFile {
                    path: rel.to_string_lossy().into_owned(),
                    size: meta.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// Inlines the files most likely to matter (named in the instruction first, then the
/// smallest) up to the byte budget, and says which were left out.
fn pack_files(root: &Path, files: &[RepoFile], instruction: &str, max_bytes: usize) -> String {
    let mut order: Vec<&RepoFile> = files.iter().collect();
    order.sort_by_key(|f| {
        let name = Path::new(&f.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (!instruction.contains(&name), f.size)
    });
    let mut out = String::new();
    let mut left_out = Vec::new();
    let mut used = 0usize;
    for file in order {
        let content = (file.size <= MAX_INLINE_FILE_BYTES)
            .then(|| std::fs::read(root.join(&file.path)).ok())
            .flatten()
            .filter(|bytes| !bytes.contains(&0))
            .and_then(|bytes| String::from_utf8(bytes).ok());
        match content {
            Some(text) if used + text.len() <= max_bytes => {
                used += text.len();
                let fence = crate::dispatch::fence_for(&text);
                out.push_str(&format!("{}\n{fence}\n{}", file.path, text));
                if !text.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!("{fence}\n\n"));
            }
            _ => left_out.push(file.path.as_str()),
        }
    }
    if !left_out.is_empty() {
        out.push_str(&format!(
            "Not shown (too large, binary, or over the context budget): {}\n",
            left_out.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_every_placeholder() {
        assert_eq!(
            render("a {{x}} b {{y}} {{x}}", &[("x", "1"), ("y", "2")]),
            "a 1 b 2 1"
        );
    }

    #[test]
    fn packing_prefers_named_files_and_reports_what_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("calc.py"),
            "def add(a, b):\n    return a - b\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("big.txt"), "x".repeat(500)).unwrap();
        std::fs::write(dir.path().join("bin.dat"), [0u8, 1, 2]).unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/config"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let files = repo_files(dir.path());
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["big.txt", "bin.dat", "calc.py"]);
        let packed = pack_files(dir.path(), &files, "fix calc.py", 100);
        assert!(packed.starts_with("calc.py\n```\ndef add"), "{packed}");
        assert!(
            packed.contains(
                "Not shown (too large, binary, or over the context budget): bin.dat, big.txt"
            ),
            "{packed}"
        );
        assert!(
            !packed.contains("root:"),
            "symlinked host files never reach the prompt"
        );
    }

    #[test]
    fn cap_text_marks_the_cut() {
        assert_eq!(cap_text("abc", 10), "abc");
        assert!(cap_text("abcdef", 3).starts_with("abc\n[... 3 more bytes"));
    }
}

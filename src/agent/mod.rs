//! The agent loop: a baseline test run, then model reply → edits applied on the host →
//! changed files synced into the sandbox → tests → feedback, until the tests pass or a
//! budget runs out. Success is decided by the test command, never by the model.

mod rules;
mod transcript;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use rules::{Budget, FailureSignature, Repetition, StopReason, failing_tests};
pub use transcript::render as render_transcript;

use rules::{LoopDetector, Verdict};
use transcript::Transcript;

use crate::edit::{self, PathPolicy};
use crate::llm::{ChatModel, Message, Usage};
use crate::sandbox::{ExecOutcome, Sandbox, SandboxError};

const SYSTEM_PROMPT: &str = include_str!("../../prompts/system.md");
const TASK_PROMPT: &str = include_str!("../../prompts/task.md");
const EDIT_REJECTED_PROMPT: &str = include_str!("../../prompts/edit_rejected.md");
const NO_EDITS_PROMPT: &str = include_str!("../../prompts/no_edits.md");
const TESTS_FAILED_PROMPT: &str = include_str!("../../prompts/tests_failed.md");
const LOOP_NUDGE_PROMPT: &str = include_str!("../../prompts/loop_nudge.md");

/// Lines of test output the model and the failure comment see.
const TEST_TAIL_LINES: usize = 60;
/// Files larger than this are listed in the map but never inlined.
const MAX_INLINE_FILE_BYTES: u64 = 64 * 1024;
/// How much of the diff so far goes into a feedback prompt.
const MAX_DIFF_BYTES: usize = 8000;

/// What the loop did, for the summary, the PR body and the failure comment.
#[derive(Debug, Clone)]
pub struct AgentOutcome {
    pub stop: StopReason,
    pub baseline: ExecOutcome,
    pub last_test: Option<ExecOutcome>,
    /// Model calls made.
    pub iterations: u32,
    pub usage: Usage,
    pub llm_time: Duration,
    /// Every test run's duration, the baseline first.
    pub test_times: Vec<Duration>,
    /// Test runs after edits (the baseline not counted).
    pub test_runs: u32,
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
        let mut transcript = Transcript::create(self.transcript)?;
        let result = self.run_logged(&mut transcript).await;
        if let Err(e) = &result {
            // Best effort: the error itself is returned either way, and a transcript
            // that cannot be written is one of the errors this may be reporting.
            let _ = transcript.event("error", &e.to_string());
        }
        result
    }

    async fn run_logged(&self, transcript: &mut Transcript) -> Result<AgentOutcome, AgentError> {
        let started = Instant::now();
        let budget = self.budget;
        transcript.event(
            "start",
            &serde_json::json!({
                "model": self.model.describe(),
                "instruction": self.instruction,
                "test_cmd": self.test_cmd,
                "budget": budget,
            }),
        )?;
        let baseline = self.sandbox.exec(self.test_cmd).await?;
        let mut detector = LoopDetector::new(budget);
        let baseline_failure = (!baseline.passed()).then(|| signature(&baseline));
        transcript.event(
            "baseline_test",
            &test_record(&baseline, baseline_failure.as_ref()),
        )?;
        if let Some(signature) = baseline_failure {
            detector.failure(signature);
        }
        tracing::info!(result = %baseline.summary(), "baseline test run");

        let mut outcome = AgentOutcome {
            stop: StopReason::BudgetCalls,
            baseline: baseline.clone(),
            last_test: None,
            iterations: 0,
            usage: Usage::default(),
            llm_time: Duration::ZERO,
            test_times: vec![baseline.duration],
            test_runs: 0,
            edits_applied: 0,
            edits_rejected: 0,
        };
        let first_prompt = task_prompt(
            self.instruction,
            self.target_context,
            self.worktree,
            self.test_cmd,
            &baseline,
            budget.max_context_bytes,
        );
        let mut messages = vec![Message::system(SYSTEM_PROMPT), Message::user(first_prompt)];
        let mut logged = 0;
        // Each touched file as it was before this task first changed it (`None`: absent),
        // for the diff so far and for telling an undo from a new state.
        let mut originals: BTreeMap<PathBuf, Option<Vec<u8>>> = BTreeMap::new();

        outcome.stop = loop {
            if rules::calls_exhausted(outcome.iterations, budget) {
                break StopReason::BudgetCalls;
            }
            if let Some(stop) = rules::tokens_exhausted(&outcome.usage, budget) {
                break stop;
            }
            let Some(remaining) = budget.max_wall.checked_sub(started.elapsed()) else {
                break StopReason::Timeout;
            };
            outcome.iterations += 1;
            let turn = outcome.iterations;
            transcript.event(
                "prompt",
                &serde_json::json!({"turn": turn, "messages": &messages[logged..]}),
            )?;
            logged = messages.len() + 1;
            let asked = Instant::now();
            let reply =
                match tokio::time::timeout(remaining, self.model.complete(&messages, &[])).await {
                    Err(_) => break StopReason::Timeout,
                    Ok(Err(e)) => {
                        transcript.event(
                            "model_error",
                            &serde_json::json!({"turn": turn, "error": e.to_string()}),
                        )?;
                        break StopReason::ModelError(e.to_string());
                    }
                    Ok(Ok(reply)) => reply,
                };
            let took = asked.elapsed();
            outcome.llm_time += took;
            outcome.usage.prompt_tokens += reply.usage.prompt_tokens;
            outcome.usage.completion_tokens += reply.usage.completion_tokens;
            transcript.event(
                "reply",
                &serde_json::json!({
                    "turn": turn,
                    "content": reply.content,
                    "usage": reply.usage,
                    "seconds": took.as_secs_f64(),
                }),
            )?;
            messages.push(Message::assistant(reply.content.clone()));
            detector.proposal(turn, &reply.content);

            // A dry run first names the files the edit would touch, so their content
            // before this task changed them can be kept.
            let dry = edit::apply(self.worktree, &reply.content, self.policy, true)?;
            let report = if dry.applied {
                for change in &dry.changes {
                    originals
                        .entry(change.path.clone())
                        .or_insert_with(|| read_file(self.worktree, &change.path));
                }
                edit::apply(self.worktree, &reply.content, self.policy, false)?
            } else {
                dry
            };
            let mut test_budget_spent = false;
            let mut next = if !report.applied {
                outcome.edits_rejected += 1;
                detector.idle();
                transcript.event("edit", &serde_json::json!({"turn": turn, "report": report}))?;
                if report.found_no_edits() {
                    NO_EDITS_PROMPT.to_string()
                } else {
                    tracing::info!(iteration = turn, "edits rejected");
                    render(EDIT_REJECTED_PROMPT, &[("feedback", &report.feedback())])
                }
            } else {
                outcome.edits_applied += 1;
                let tree = detector.tree.record(report.changes.iter().map(|c| {
                    let original = originals.get(&c.path).cloned().flatten();
                    let now = read_file(self.worktree, &c.path);
                    (
                        c.path.clone(),
                        original.as_deref().map(rules::digest),
                        now.as_deref().map(rules::digest),
                    )
                }));
                detector.tree_changed(tree);
                transcript.event(
                    "edit",
                    &serde_json::json!({"turn": turn, "report": report, "tree": tree}),
                )?;
                let changed: Vec<PathBuf> = report.changes.iter().map(|c| c.path.clone()).collect();
                self.sandbox.sync(self.worktree, &changed).await?;
                let test = self.sandbox.exec(self.test_cmd).await?;
                outcome.test_runs += 1;
                outcome.test_times.push(test.duration);
                let passed = test.passed();
                let failure = (!passed).then(|| signature(&test));
                transcript.event(
                    "test",
                    &serde_json::json!({"turn": turn, "result": test_record(&test, failure.as_ref())}),
                )?;
                tracing::info!(iteration = turn, result = %test.summary(), "test run");
                outcome.last_test = Some(test.clone());
                let Some(failure) = failure else {
                    detector.passed();
                    break StopReason::Success;
                };
                detector.failure(failure.clone());
                test_budget_spent = rules::test_runs_exhausted(outcome.test_runs, budget);
                let applied: String = report
                    .changes
                    .iter()
                    .map(|c| format!("- {}\n", c.path.display()))
                    .collect();
                let failing = match &failure {
                    FailureSignature::Tests(names) => {
                        format!("\nFailing tests: {}\n", names.join(", "))
                    }
                    FailureSignature::Tail(_) => String::new(),
                };
                render(
                    TESTS_FAILED_PROMPT,
                    &[
                        ("applied", &applied),
                        ("summary", &test.summary()),
                        ("failing", &failing),
                        ("tail", &test.tail(TEST_TAIL_LINES)),
                        (
                            "diff",
                            &cap_text(&diff_so_far(self.worktree, &originals), MAX_DIFF_BYTES),
                        ),
                    ],
                )
            };
            match detector.verdict() {
                Verdict::Continue => {}
                Verdict::Nudge(repetitions) => {
                    let list: String = repetitions
                        .iter()
                        .map(|r| format!("- {}\n", r.describe()))
                        .collect();
                    tracing::info!(iteration = turn, repeats = %list.trim_end(), "nudging the model");
                    transcript.event(
                        "nudge",
                        &serde_json::json!({"turn": turn, "repetitions": repetitions}),
                    )?;
                    next.push_str("\n\n");
                    next.push_str(&render(LOOP_NUDGE_PROMPT, &[("repetitions", &list)]));
                }
                Verdict::Stop(stop) => break stop,
            }
            if test_budget_spent {
                break StopReason::BudgetTestRuns;
            }
            messages.push(Message::user(next));
        };
        transcript.event(
            "stop",
            &serde_json::json!({
                "reason": outcome.stop.code(),
                "stop": outcome.stop,
                "description": outcome.stop.describe(budget),
                "calls": outcome.iterations,
                "tokens_in": outcome.usage.prompt_tokens,
                "tokens_out": outcome.usage.completion_tokens,
                "test_runs": outcome.test_runs,
                "edits_applied": outcome.edits_applied,
                "edits_rejected": outcome.edits_rejected,
                "llm_seconds": outcome.llm_time.as_secs_f64(),
                "seconds": started.elapsed().as_secs_f64(),
            }),
        )?;
        Ok(outcome)
    }
}

fn signature(test: &ExecOutcome) -> FailureSignature {
    FailureSignature::of(&test.output, &test.tail(TEST_TAIL_LINES))
}

fn test_record(test: &ExecOutcome, failure: Option<&FailureSignature>) -> serde_json::Value {
    serde_json::json!({
        "summary": test.summary(),
        "passed": test.passed(),
        "exit_code": test.exit_code,
        "timed_out": test.timed_out,
        "oom_killed": test.oom_killed,
        "seconds": test.duration.as_secs_f64(),
        "signature": failure,
        "tail": test.tail(TEST_TAIL_LINES),
    })
}

/// A work-tree file's bytes; `None` when it does not exist (or cannot be read, which the
/// edit engine, having just written it, would have reported).
fn read_file(worktree: &Path, path: &Path) -> Option<Vec<u8>> {
    std::fs::read(worktree.join(path)).ok()
}

/// Every change of this task so far, against the files as they were before it.
fn diff_so_far(worktree: &Path, originals: &BTreeMap<PathBuf, Option<Vec<u8>>>) -> String {
    let text = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    originals
        .iter()
        .filter_map(|(path, original)| {
            let now = read_file(worktree, path);
            (now != *original).then_some((path, original, now))
        })
        .map(|(path, original, now)| {
            edit::canonical_file_diff(
                &path.to_string_lossy(),
                text(original).as_deref(),
                text(&now).as_deref(),
            )
        })
        .collect()
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

//! The agent loop: a baseline test run, then model reply → exploration actions answered
//! and edits applied on the host → changed files synced into the sandbox → tests →
//! feedback, until the tests pass or a budget runs out. Success is decided by the test
//! command, never by the model.

mod actions;
mod context;
mod explore;
mod rules;
mod transcript;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use actions::{Action, ActionError};
pub use rules::{
    Budget, FailureSignature, Repetition, StopReason, daily_tokens_key, failing_tests,
    until_next_utc_day,
};
pub use transcript::render as render_transcript;

use explore::ActionResult;
use rules::{LoopDetector, Verdict};
use transcript::Transcript;

use crate::edit::{self, PathPolicy};
use crate::llm::{BYTES_PER_TOKEN, ChatModel, Completion, Message, ToolSpec, Usage};
use crate::sandbox::{ExecOutcome, Sandbox, SandboxError};
use crate::store::{Store, StoreError};

const SYSTEM_PROMPT: &str = include_str!("../../prompts/system.md");
const ACTIONS_TEXT_PROMPT: &str = include_str!("../../prompts/actions_text.md");
const ACTIONS_NATIVE_PROMPT: &str = include_str!("../../prompts/actions_native.md");
const TASK_PROMPT: &str = include_str!("../../prompts/task.md");
const EDIT_REJECTED_PROMPT: &str = include_str!("../../prompts/edit_rejected.md");
const NO_EDITS_PROMPT: &str = include_str!("../../prompts/no_edits.md");
const TESTS_FAILED_PROMPT: &str = include_str!("../../prompts/tests_failed.md");
const LOOP_NUDGE_PROMPT: &str = include_str!("../../prompts/loop_nudge.md");
const ACTION_RESULTS_PROMPT: &str = include_str!("../../prompts/action_results.md");

/// Lines of test output the model and the failure comment see.
const TEST_TAIL_LINES: usize = 60;
/// How much of the diff so far goes into a feedback prompt.
const MAX_DIFF_BYTES: usize = 8000;
/// The repository map's share of the first prompt when the window is unknown.
const MAX_MAP_BYTES: usize = 16_000;
/// One action's output, at most (less when the model's window is small).
const MAX_ACTION_OUTPUT_BYTES: usize = 12_000;
/// Actions answered per reply; more are answered with an error.
const MAX_ACTIONS_PER_TURN: usize = 8;

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
    /// Replies with neither an edit nor an action.
    pub replies_without_edits: u32,
    /// Exploration actions answered (both protocols).
    pub actions: u32,
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
    #[error("cannot count the day's tokens in the journal: {0}")]
    Journal(#[from] StoreError),
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
    /// Where the day's tokens of every task are counted, for `budget.max_tokens_per_day`.
    pub journal: Option<&'a Store>,
}

/// The journal key of today's (UTC) tokens.
fn today_tokens_key() -> String {
    daily_tokens_key(chrono::Utc::now().date_naive())
}

/// How the model asks to look around, decided once per task by the preflight probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Native tool calls (the probe saw the model make one, or the config forces them).
    Native,
    /// ```action blocks in the reply text: works with any model.
    Text,
}

impl Protocol {
    /// As the transcript records it.
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Text => "text",
        }
    }
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
        let capabilities = self.model.probe().await;
        let protocol = if capabilities.native_tools == Some(true) {
            Protocol::Native
        } else {
            Protocol::Text
        };
        let window =
            context::input_tokens(capabilities.context_tokens, budget.reserve_output_tokens);
        transcript.event(
            "probe",
            &serde_json::json!({
                "native_tools": capabilities.native_tools,
                "context_tokens": capabilities.context_tokens,
                "protocol": protocol.as_str(),
                "input_tokens": window,
            }),
        )?;
        tracing::info!(?protocol, context_tokens = ?capabilities.context_tokens, "exploration protocol");
        let tools: Vec<ToolSpec> = match protocol {
            Protocol::Native => actions::tool_specs(),
            Protocol::Text => Vec::new(),
        };
        let action_output_bytes = window
            .map(|w| (w * BYTES_PER_TOKEN / 4).clamp(1000, MAX_ACTION_OUTPUT_BYTES))
            .unwrap_or(MAX_ACTION_OUTPUT_BYTES);

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
            replies_without_edits: 0,
            actions: 0,
        };
        let system = format!(
            "{SYSTEM_PROMPT}{}",
            match protocol {
                Protocol::Native => ACTIONS_NATIVE_PROMPT,
                Protocol::Text => ACTIONS_TEXT_PROMPT,
            }
        );
        let first_prompt = task_prompt(
            &TaskContext {
                instruction: self.instruction,
                target_context: self.target_context,
                worktree: self.worktree,
                test_cmd: self.test_cmd,
                baseline: &baseline,
            },
            prompt_bytes(window, budget.max_context_bytes, system.len()),
        );
        let mut messages = vec![Message::system(system), Message::user(first_prompt)];
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
            if let Some(journal) = self.journal.filter(|_| budget.max_tokens_per_day > 0) {
                let used_today = journal.counter(&today_tokens_key()).await?;
                if let Some(stop) = rules::daily_tokens_exhausted(used_today, budget) {
                    break stop;
                }
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
            let fitted = window.and_then(|w| context::fit_history(&messages, w));
            if let Some((_, left_out)) = &fitted {
                transcript.event(
                    "context_fit",
                    &serde_json::json!({"turn": turn, "left_out_messages": left_out, "input_tokens": window}),
                )?;
            }
            let sent: &[Message] = fitted.as_ref().map_or(&messages, |(m, _)| m);
            let asked = Instant::now();
            let reply =
                match tokio::time::timeout(remaining, self.model.complete(sent, &tools)).await {
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
            if let Some(journal) = self.journal.filter(|_| budget.max_tokens_per_day > 0) {
                journal
                    .add_to_counter(
                        &today_tokens_key(),
                        reply.usage.prompt_tokens + reply.usage.completion_tokens,
                    )
                    .await?;
            }
            transcript.event(
                "reply",
                &serde_json::json!({
                    "turn": turn,
                    "content": reply.content,
                    "tool_calls": reply.tool_calls,
                    "usage": reply.usage,
                    "seconds": took.as_secs_f64(),
                }),
            )?;
            messages.push(Message::assistant_with_tools(
                reply.content.clone(),
                reply.tool_calls.clone(),
            ));
            detector.proposal(turn, &reply.content);

            // Looking first: native calls are answered with tool messages, text actions
            // with a block of the next prompt.
            let (tool_answers, text_results) =
                self.answer_actions(&reply, action_output_bytes).await?;
            let looked: Vec<&ActionResult> = tool_answers
                .iter()
                .map(|(_, r)| r)
                .chain(text_results.iter())
                .collect();
            outcome.actions += looked.len() as u32;
            if !looked.is_empty() {
                transcript.event(
                    "actions",
                    &serde_json::json!({"turn": turn, "results": looked}),
                )?;
            }
            let explored: String = looked.iter().map(|r| format!("{}\n", r.request)).collect();
            for (id, result) in &tool_answers {
                messages.push(Message::tool_result(id.clone(), result.output.clone()));
            }
            let results_block = (!text_results.is_empty()).then(|| {
                render(
                    ACTION_RESULTS_PROMPT,
                    &[(
                        "results",
                        &text_results
                            .iter()
                            .map(ActionResult::render)
                            .collect::<String>(),
                    )],
                )
            });

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
            let feedback: Option<String> = if report.found_no_edits() && !explored.is_empty() {
                detector.explored(turn, &explored);
                results_block.clone()
            } else if !report.applied {
                if report.found_no_edits() {
                    outcome.replies_without_edits += 1;
                } else {
                    outcome.edits_rejected += 1;
                }
                detector.idle();
                transcript.event("edit", &serde_json::json!({"turn": turn, "report": report}))?;
                Some(if report.found_no_edits() {
                    NO_EDITS_PROMPT.to_string()
                } else {
                    tracing::info!(iteration = turn, "edits rejected");
                    render(EDIT_REJECTED_PROMPT, &[("feedback", &report.feedback())])
                })
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
                Some(tests_failed_feedback(
                    &report,
                    &test,
                    &failure,
                    &diff_so_far(self.worktree, &originals),
                ))
            };
            // Results of text actions come first when the reply also had edits.
            let mut next = match (&results_block, feedback) {
                (Some(results), Some(feedback)) if !report.found_no_edits() => {
                    Some(format!("{results}\n{feedback}"))
                }
                (_, feedback) => feedback,
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
                    let nudge = render(LOOP_NUDGE_PROMPT, &[("repetitions", &list)]);
                    next = Some(match next {
                        Some(text) => format!("{text}\n\n{nudge}"),
                        None => nudge,
                    });
                }
                Verdict::Stop(stop) => break stop,
            }
            if test_budget_spent {
                break StopReason::BudgetTestRuns;
            }
            // Native calls alone need no user turn: the tool results are the next input.
            if let Some(next) = next {
                messages.push(Message::user(next));
            }
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
                "replies_without_edits": outcome.replies_without_edits,
                "actions": outcome.actions,
                "protocol": protocol.as_str(),
                "llm_seconds": outcome.llm_time.as_secs_f64(),
                "seconds": started.elapsed().as_secs_f64(),
            }),
        )?;
        Ok(outcome)
    }

    /// Runs what the reply asked to look at: its native tool calls (each answered by id)
    /// and its ```action lines. Past [`MAX_ACTIONS_PER_TURN`], requests get an error.
    async fn answer_actions(
        &self,
        reply: &Completion,
        max_bytes: usize,
    ) -> Result<(Vec<(String, ActionResult)>, Vec<ActionResult>), SandboxError> {
        let mut count = 0usize;
        let mut answer = async |request: Result<Action, ActionError>| {
            count += 1;
            if count > MAX_ACTIONS_PER_TURN {
                let request = match &request {
                    Ok(action) => action.describe(),
                    Err(e) => e.request.clone(),
                };
                return Ok(ActionResult::from(ActionError {
                    request,
                    message: format!(
                        "at most {MAX_ACTIONS_PER_TURN} actions are answered per reply; ask again for what you still need"
                    ),
                }));
            }
            match request {
                Ok(action) => explore::run(&action, self.worktree, self.sandbox, max_bytes).await,
                Err(e) => Ok(ActionResult::from(e)),
            }
        };
        let mut tool_answers = Vec::new();
        for call in &reply.tool_calls {
            let result = answer(actions::from_tool_call(call)).await?;
            tool_answers.push((call.id.clone(), result));
        }
        let mut text_results = Vec::new();
        for request in actions::parse_text(&reply.content) {
            text_results.push(answer(request).await?);
        }
        Ok((tool_answers, text_results))
    }
}

fn tests_failed_feedback(
    report: &edit::ApplyReport,
    test: &ExecOutcome,
    failure: &FailureSignature,
    diff: &str,
) -> String {
    let applied: String = report
        .changes
        .iter()
        .map(|c| format!("- {}\n", c.path.display()))
        .collect();
    let failing = match failure {
        FailureSignature::Tests(names) => format!("\nFailing tests: {}\n", names.join(", ")),
        FailureSignature::Tail(_) => String::new(),
    };
    render(
        TESTS_FAILED_PROMPT,
        &[
            ("applied", &applied),
            ("summary", &test.summary()),
            ("failing", &failing),
            ("tail", &test.tail(TEST_TAIL_LINES)),
            ("diff", &context::cap_middle(diff, MAX_DIFF_BYTES)),
        ],
    )
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

struct TaskContext<'a> {
    instruction: &'a str,
    target_context: Option<&'a str>,
    worktree: &'a Path,
    test_cmd: &'a str,
    baseline: &'a ExecOutcome,
}

/// Bytes of map and files the first prompt may carry: half the model's input window
/// (the rest is for the turns that follow) less the system prompt, and never more than
/// `agent.max_context_bytes` of files plus the map's share.
fn prompt_bytes(window: Option<usize>, max_context_bytes: usize, system_bytes: usize) -> usize {
    let configured = max_context_bytes + MAX_MAP_BYTES;
    match window {
        Some(tokens) => (tokens * BYTES_PER_TOKEN / 2)
            .saturating_sub(system_bytes)
            .min(configured),
        None => configured,
    }
}

/// The first prompt: the task, then the map and the files in what `max_bytes` leaves
/// after the fixed parts (the map gets at most a quarter), then the baseline test run.
fn task_prompt(task: &TaskContext, max_bytes: usize) -> String {
    let context = task
        .target_context
        .map(|c| format!("\n## Context from the target issue\n\n{c}\n"))
        .unwrap_or_default();
    let fence = crate::dispatch::fence_for(task.instruction);
    let baseline_summary = task.baseline.summary();
    let baseline_tail = task.baseline.tail(TEST_TAIL_LINES);
    let fill = |map: &str, files: &str| {
        render(
            TASK_PROMPT,
            &[
                ("fence", &fence),
                ("instruction", task.instruction),
                ("target_context", &context),
                ("repo_map", map.trim_end()),
                ("files", files),
                ("test_cmd", task.test_cmd),
                ("baseline_summary", &baseline_summary),
                ("baseline_tail", &baseline_tail),
            ],
        )
    };
    let room = max_bytes.saturating_sub(fill("", "").len());
    let files = context::repo_files(task.worktree);
    let map = context::repo_map(task.worktree, &files, (room / 4).min(MAX_MAP_BYTES));
    let inlined = context::pack_files(
        task.worktree,
        &files,
        task.instruction,
        room.saturating_sub(map.len()),
    );
    fill(&map, &inlined)
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
    fn the_first_prompt_fits_the_window() {
        assert_eq!(prompt_bytes(None, 60_000, 2000), 76_000);
        // A 4096-token window with 512 kept for the reply: half of 3584 tokens, in bytes,
        // less the system prompt.
        assert_eq!(prompt_bytes(Some(3584), 60_000, 2000), 3584 * 3 / 2 - 2000);
        assert_eq!(prompt_bytes(Some(1_000_000), 60_000, 2000), 76_000);
    }

    fn passing_baseline() -> ExecOutcome {
        ExecOutcome {
            exit_code: Some(1),
            output: "FAILED test_calc.py::test_add\n".into(),
            timed_out: false,
            oom_killed: false,
            truncated_bytes: 0,
            duration: Duration::from_millis(10),
            timeout: Duration::from_secs(60),
            container_killed: false,
        }
    }

    #[test]
    fn a_small_window_gets_a_short_map_and_a_notice_of_what_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("calc.py"),
            "def add(a, b):\n    return a - b\n",
        )
        .unwrap();
        for i in 0..200 {
            std::fs::write(dir.path().join(format!("data{i:03}.txt")), "x".repeat(100)).unwrap();
        }
        let baseline = passing_baseline();
        let task = TaskContext {
            instruction: "fix add in calc.py",
            target_context: None,
            worktree: dir.path(),
            test_cmd: "pytest",
            baseline: &baseline,
        };
        let small = task_prompt(&task, 4000);
        assert!(small.len() <= 4000 + 200, "{} bytes", small.len());
        assert!(small.contains("calc.py (32 bytes): add"), "{small}");
        assert!(
            small.contains("more files not listed to fit the context window"),
            "{small}"
        );
        assert!(
            small.contains("calc.py\n```\ndef add"),
            "the named file is inlined first: {small}"
        );
        assert!(
            small.contains("Not shown (too large, binary, or over the context budget"),
            "{small}"
        );
        let large = task_prompt(&task, 200_000);
        assert!(!large.contains("not listed"), "everything fits");
        assert!(!large.contains("Not shown"), "everything fits");
    }
}

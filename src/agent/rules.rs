//! Budget and loop rules of the agent loop: pure functions and small state machines, no
//! I/O, so every rule is unit-tested here and the loop in `mod.rs` only wires them up.
//!
//! Budgets have no prices: a task may use so many model calls, tokens in and out, test runs
//! and seconds. Loop detection looks at artifacts, never at what the model says about
//! itself: the edits it proposes, the state of the tree, and which tests fail.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::AgentConfig;
use crate::llm::Usage;

/// What one task may spend.
#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// Model calls (each call is one reply).
    pub max_iterations: u32,
    /// Prompt tokens summed over all calls.
    pub max_tokens_in: u64,
    /// Completion tokens summed over all calls.
    pub max_tokens_out: u64,
    /// Test runs after edits; the baseline run is not counted.
    pub max_test_runs: u32,
    pub max_wall: Duration,
    pub max_context_bytes: usize,
    /// The same failing-test signature this many times in a row (the baseline included)
    /// is a loop.
    pub same_failure_limit: u32,
    /// This many model replies in a row that change nothing in the tree is no progress.
    pub no_change_limit: u32,
    /// Tokens all tasks sharing the journal may use per UTC day; 0: no cap.
    pub max_tokens_per_day: u64,
    /// Tokens of the window kept free for the model's reply (its max output tokens).
    pub reserve_output_tokens: u64,
}

impl Budget {
    pub fn from_config(agent: &AgentConfig) -> Budget {
        Budget {
            max_iterations: agent.max_iterations,
            max_tokens_in: agent.max_tokens_in,
            max_tokens_out: agent.max_tokens_out,
            max_test_runs: agent.max_test_runs,
            max_wall: Duration::from_secs(agent.max_wall_secs),
            max_context_bytes: agent.max_context_bytes,
            same_failure_limit: agent.same_failure_limit,
            no_change_limit: agent.no_change_limit,
            max_tokens_per_day: agent.max_tokens_per_day,
            reserve_output_tokens: u64::from(crate::config::LlmConfig::default().max_output_tokens),
        }
    }
}

/// Why the loop stopped. The serialised `reason` is the stable code the transcript and
/// the journal carry (`success`, `budget_calls`, ...); `detail` says what exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum StopReason {
    Success,
    /// Every allowed model call was used.
    BudgetCalls,
    /// Tokens in or out reached their cap; the detail says which.
    BudgetTokens(String),
    /// The day's token cap, shared by every task of the runner, is used up.
    BudgetDailyTokens(String),
    /// Every allowed test run was used and the last one failed.
    BudgetTestRuns,
    Timeout,
    /// The model repeats itself after it was told so; the detail says what repeats.
    Loop(String),
    /// The model's replies stopped changing the tree after it was told so.
    NoProgress(String),
    ModelError(String),
}

impl StopReason {
    /// The stable code, as in the transcript.
    pub fn code(&self) -> &'static str {
        match self {
            StopReason::Success => "success",
            StopReason::BudgetCalls => "budget_calls",
            StopReason::BudgetTokens(_) => "budget_tokens",
            StopReason::BudgetDailyTokens(_) => "budget_daily_tokens",
            StopReason::BudgetTestRuns => "budget_test_runs",
            StopReason::Timeout => "timeout",
            StopReason::Loop(_) => "loop",
            StopReason::NoProgress(_) => "no_progress",
            StopReason::ModelError(_) => "model_error",
        }
    }

    pub fn describe(&self, budget: &Budget) -> String {
        match self {
            StopReason::Success => "the tests pass".into(),
            StopReason::BudgetCalls => format!(
                "the tests still fail after {} model replies (the model-call budget)",
                budget.max_iterations
            ),
            StopReason::BudgetTokens(detail) => {
                format!("the tests still fail and the token budget is used up: {detail}")
            }
            StopReason::BudgetDailyTokens(detail) => {
                format!(
                    "the runner's daily token cap is used up ({detail}); the task can be retried tomorrow or with a higher agent.max_tokens_per_day"
                )
            }
            StopReason::BudgetTestRuns => format!(
                "the tests still fail after {} test runs (the test-run budget)",
                budget.max_test_runs
            ),
            StopReason::Timeout => format!(
                "the task ran out of its {} s wall-clock budget",
                budget.max_wall.as_secs()
            ),
            StopReason::Loop(detail) => {
                format!("the model went in circles even after a nudge: {detail}")
            }
            StopReason::NoProgress(detail) => {
                format!("no progress even after a nudge: {detail}")
            }
            StopReason::ModelError(e) => format!("the model failed: {e}"),
        }
    }
}

/// Checked before each model call: the call that crosses a cap still completes (its cost
/// is known only afterwards), but no call starts once a cap is reached.
pub fn tokens_exhausted(used: &Usage, budget: &Budget) -> Option<StopReason> {
    if used.prompt_tokens >= budget.max_tokens_in {
        return Some(StopReason::BudgetTokens(format!(
            "{} tokens in of {} allowed",
            used.prompt_tokens, budget.max_tokens_in
        )));
    }
    if used.completion_tokens >= budget.max_tokens_out {
        return Some(StopReason::BudgetTokens(format!(
            "{} tokens out of {} allowed",
            used.completion_tokens, budget.max_tokens_out
        )));
    }
    None
}

/// The journal key under which the tokens of one UTC day are counted.
pub fn daily_tokens_key(day: chrono::NaiveDate) -> String {
    format!("tokens_used:{}", day.format("%Y-%m-%d"))
}

/// How long until the next UTC day begins (and a spent daily cap with it).
pub fn until_next_utc_day(now: chrono::DateTime<chrono::Utc>) -> Duration {
    let midnight = now
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    midnight
        .and_then(|m| (m - now).to_std().ok())
        .unwrap_or(Duration::from_secs(3600))
}

/// Checked before each model call, with the day's total of every task sharing the journal.
pub fn daily_tokens_exhausted(used_today: u64, budget: &Budget) -> Option<StopReason> {
    (budget.max_tokens_per_day > 0 && used_today >= budget.max_tokens_per_day).then(|| {
        StopReason::BudgetDailyTokens(format!(
            "{used_today} tokens used today (UTC) of {} allowed",
            budget.max_tokens_per_day
        ))
    })
}

/// Checked after a failing test run: asking the model again is pointless when its answer
/// could not be tested.
pub fn test_runs_exhausted(test_runs: u32, budget: &Budget) -> bool {
    test_runs >= budget.max_test_runs
}

/// Checked before each model call.
pub fn calls_exhausted(calls: u32, budget: &Budget) -> bool {
    calls >= budget.max_iterations
}

/// A content hash (SHA-256), for files and proposals.
pub type Digest = [u8; 32];

pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

pub fn short_hex(d: &Digest) -> String {
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The edits of a reply without the prose around them, so that the same edits wrapped in
/// different words compare equal: from the line before the first edit marker (the path
/// line of a search/replace block) to the last line that belongs to an edit, with
/// trailing whitespace and blank lines dropped. `None` when the reply has no edit marker.
pub fn normalise_proposal(reply: &str) -> Option<String> {
    let lines: Vec<&str> = reply.lines().map(str::trim_end).collect();
    let is_start = |l: &str| {
        l.starts_with("<<<<<<<")
            || l.starts_with("--- ")
            || l.starts_with("*** Begin Patch")
            || l.starts_with("diff --git ")
    };
    let is_edit_line = |l: &str| {
        l.starts_with(">>>>>>>")
            || l.starts_with("*** End Patch")
            || l.starts_with('+')
            || l.starts_with('-')
            || l.starts_with("@@")
    };
    let first = lines.iter().position(|l| is_start(l))?;
    let from = first.saturating_sub(1);
    let to = lines.iter().rposition(|l| is_edit_line(l))?.max(first);
    let kept: Vec<&str> = lines[from..=to]
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    Some(kept.join("\n"))
}

/// Which tests fail, read from the output of the common runners (pytest, unittest,
/// cargo test and nextest, go test). Sorted and without duplicates; empty when none of
/// the formats is recognised.
pub fn failing_tests(output: &str) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for raw in output.lines() {
        let line = raw.trim_end();
        // unittest -v: `test_add (test_calc.CalcTest.test_add) ... FAIL`
        if let Some(head) = line
            .strip_suffix(" ... FAIL")
            .or_else(|| line.strip_suffix(" ... ERROR"))
        {
            // cargo test: `test tests::x ... FAILED` ends differently, handled below.
            names.insert(unittest_name(head));
            continue;
        }
        // unittest summary: `FAIL: test_add (test_calc.CalcTest.test_add)`
        if let Some(rest) = line
            .strip_prefix("FAIL: ")
            .or_else(|| line.strip_prefix("ERROR: "))
        {
            names.insert(unittest_name(rest));
            continue;
        }
        // pytest short summary: `FAILED test_calc.py::test_add - assert ...`
        if let Some(rest) = line
            .strip_prefix("FAILED ")
            .or_else(|| line.strip_prefix("ERROR "))
            && let Some(id) = rest.split(" - ").next()
            && id.contains("::")
        {
            names.insert(id.trim().to_string());
            continue;
        }
        // pytest -v: `test_calc.py::test_add FAILED [ 25%]`
        if let Some((id, _)) = line
            .split_once(" FAILED")
            .or_else(|| line.split_once(" ERROR"))
            && id.contains("::")
            && !id.contains(' ')
        {
            names.insert(id.to_string());
            continue;
        }
        // cargo test: `test tests::adds ... FAILED`
        if let Some(rest) = line.strip_prefix("test ")
            && let Some(name) = rest.strip_suffix(" ... FAILED")
        {
            names.insert(name.trim().to_string());
            continue;
        }
        // nextest: `        FAIL [   0.003s] crate::bin tests::adds`
        if let Some(rest) = line.trim_start().strip_prefix("FAIL [")
            && let Some((_, after)) = rest.split_once(']')
            && let Some(name) = after.split_whitespace().last()
        {
            names.insert(name.to_string());
            continue;
        }
        // go test: `--- FAIL: TestAdd (0.00s)`
        if let Some(rest) = line.trim_start().strip_prefix("--- FAIL: ")
            && let Some(name) = rest.split_whitespace().next()
        {
            names.insert(name.to_string());
        }
    }
    names.into_iter().collect()
}

/// `test_add (test_calc.CalcTest.test_add)` → `test_calc.CalcTest.test_add`; the dotted
/// name is unique where the method name alone is not.
fn unittest_name(head: &str) -> String {
    let head = head.trim();
    match (head.find(" ("), head.ends_with(')')) {
        (Some(open), true) => {
            let (method, class) = (&head[..open], &head[open + 2..head.len() - 1]);
            // Before Python 3.11 the parentheses name only the class.
            if class.ends_with(&format!(".{method}")) {
                class.to_string()
            } else {
                format!("{class}.{method}")
            }
        }
        _ => head.to_string(),
    }
}

/// What identifies a failure across runs: the failing test names when the output says
/// them, else a hash of the output's tail with what changes from run to run (durations,
/// addresses, counts of seconds) taken out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum FailureSignature {
    Tests(Vec<String>),
    Tail(String),
}

impl FailureSignature {
    pub fn of(output: &str, tail: &str) -> FailureSignature {
        let tests = failing_tests(output);
        if tests.is_empty() {
            FailureSignature::Tail(short_hex(&digest(normalise_tail(tail).as_bytes())))
        } else {
            FailureSignature::Tests(tests)
        }
    }

    pub fn describe(&self) -> String {
        match self {
            FailureSignature::Tests(names) => format!("failing: {}", names.join(", ")),
            FailureSignature::Tail(hash) => format!("the same test output (hash {hash})"),
        }
    }
}

/// Durations, hex addresses and timestamps vary between identical failures.
pub fn normalise_tail(tail: &str) -> String {
    static PATTERNS: std::sync::OnceLock<Vec<regex::Regex>> = std::sync::OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            r"0x[0-9a-fA-F]+",
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?\S*",
            r"\d+(\.\d+)?\s*(ms|s|sec|seconds)\b",
        ]
        .iter()
        .filter_map(|p| regex::Regex::new(p).ok())
        .collect()
    });
    let mut text = tail.to_string();
    for re in patterns {
        text = re.replace_all(&text, "#").into_owned();
    }
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The states the tree went through, as content hashes of the files edits touched
/// (`None`: the file does not exist). State 0 is the tree before any edit; a file's
/// original hash is recorded the first time an edit touches it, so earlier states, which
/// did not list it, still compare correctly.
#[derive(Debug, Default)]
pub struct TreeHistory {
    originals: BTreeMap<PathBuf, Option<Digest>>,
    /// After each applied edit: the touched files' hashes at that point.
    states: Vec<BTreeMap<PathBuf, Option<Digest>>>,
}

/// Where an applied edit left the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "state")]
pub enum TreeChange {
    /// A state the tree has not been in before; its number (1 = after the first edit).
    New(usize),
    /// Nothing changed.
    Same,
    /// Back to an earlier state: 0 = the original tree, n = after the n-th edit.
    Back(usize),
}

impl TreeHistory {
    /// Records the tree after an applied edit: per changed file its hash before this task
    /// touched it (used only the first time) and its hash now.
    pub fn record(
        &mut self,
        changed: impl IntoIterator<Item = (PathBuf, Option<Digest>, Option<Digest>)>,
    ) -> TreeChange {
        let mut now = self.states.last().cloned().unwrap_or_default();
        for (path, original, current) in changed {
            self.originals.entry(path.clone()).or_insert(original);
            now.insert(path, current);
        }
        let at = |state: &BTreeMap<PathBuf, Option<Digest>>, path: &PathBuf| {
            state
                .get(path)
                .copied()
                .unwrap_or_else(|| self.originals.get(path).copied().flatten())
        };
        let equal = |state: &BTreeMap<PathBuf, Option<Digest>>| {
            self.originals.keys().all(|p| at(state, p) == at(&now, p))
        };
        let empty = BTreeMap::new();
        // Newest first: the most recent equal state is the one the model went back to.
        let mut earlier: Vec<&BTreeMap<PathBuf, Option<Digest>>> = vec![&empty];
        earlier.extend(self.states.iter());
        let found = earlier.iter().rposition(|s| equal(s));
        let previous = self.states.len();
        self.states.push(now);
        match found {
            Some(i) if i == previous => TreeChange::Same,
            Some(i) => TreeChange::Back(i),
            None => TreeChange::New(self.states.len()),
        }
    }
}

/// One thing the model repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Repetition {
    /// The same edits as in an earlier reply.
    SameProposal { first_turn: u32 },
    /// The same tests fail (or the same output) this many runs in a row.
    SameFailure {
        count: u32,
        signature: FailureSignature,
    },
    /// The edit put the tree back the way it was (0 = before any edit).
    Undo { back_to: usize },
    /// This many replies in a row changed nothing.
    NoChange { turns: u32 },
    /// The same exploration actions as in an earlier reply.
    SameExploration { first_turn: u32 },
}

impl Repetition {
    /// For the model and for people.
    pub fn describe(&self) -> String {
        match self {
            Repetition::SameProposal { first_turn } => {
                format!("the same edits were already proposed in reply {first_turn}")
            }
            Repetition::SameFailure { count, signature } => format!(
                "{count} test runs in a row failed the same way ({})",
                signature.describe()
            ),
            Repetition::Undo { back_to: 0 } => {
                "the last edit put the files back the way they were before any edit".into()
            }
            Repetition::Undo { back_to } => format!(
                "the last edit put the files back the way they were after edit {back_to}, undoing what came since"
            ),
            Repetition::NoChange { turns } => {
                format!("{turns} replies in a row changed no file")
            }
            Repetition::SameExploration { first_turn } => {
                format!(
                    "the same look at the files was already asked for in reply {first_turn}; its result is above"
                )
            }
        }
    }
}

/// What to do after a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// Tell the model what repeats, once per task.
    Nudge(Vec<Repetition>),
    /// It repeated again after the nudge.
    Stop(StopReason),
}

/// Watches the artifacts of each turn. One nudge per task: after it, the next repetition
/// of any kind stops the task, as `no_progress` when nothing but idle turns repeat and
/// as `loop` otherwise.
#[derive(Debug)]
pub struct LoopDetector {
    same_failure_limit: u32,
    no_change_limit: u32,
    nudged: bool,
    proposals: HashMap<Digest, u32>,
    last_failure: Option<(FailureSignature, u32)>,
    no_change_streak: u32,
    explorations: HashMap<Digest, u32>,
    explore_streak: u32,
    pub tree: TreeHistory,
    found: Vec<Repetition>,
}

/// Replies that only explore may run this many times longer than idle replies before
/// they count as no progress: looking is useful, but not forever.
const EXPLORE_TURNS_PER_IDLE_TURN: u32 = 3;

impl LoopDetector {
    pub fn new(budget: &Budget) -> LoopDetector {
        LoopDetector {
            same_failure_limit: budget.same_failure_limit.max(2),
            no_change_limit: budget.no_change_limit.max(1),
            nudged: false,
            proposals: HashMap::new(),
            last_failure: None,
            no_change_streak: 0,
            explorations: HashMap::new(),
            explore_streak: 0,
            tree: TreeHistory::default(),
            found: Vec::new(),
        }
    }

    /// The edits of reply `turn`, if it had any.
    pub fn proposal(&mut self, turn: u32, reply: &str) {
        let Some(normalised) = normalise_proposal(reply) else {
            return;
        };
        let key = digest(normalised.as_bytes());
        match self.proposals.get(&key) {
            Some(&first_turn) => self.found.push(Repetition::SameProposal { first_turn }),
            None => {
                self.proposals.insert(key, turn);
            }
        }
    }

    /// A reply that only explored (no edits), with its actions as a canonical text.
    pub fn explored(&mut self, turn: u32, actions: &str) {
        let key = digest(actions.as_bytes());
        match self.explorations.get(&key) {
            Some(&first_turn) => self.found.push(Repetition::SameExploration { first_turn }),
            None => {
                self.explorations.insert(key, turn);
            }
        }
        self.explore_streak += 1;
        let limit = self.no_change_limit * EXPLORE_TURNS_PER_IDLE_TURN;
        if self.explore_streak >= limit {
            self.found.push(Repetition::NoChange {
                turns: self.explore_streak,
            });
        }
    }

    /// An applied edit and where it left the tree.
    pub fn tree_changed(&mut self, change: TreeChange) {
        self.explore_streak = 0;
        match change {
            TreeChange::New(_) => self.no_change_streak = 0,
            TreeChange::Same => self.idle(),
            TreeChange::Back(back_to) => {
                self.no_change_streak = 0;
                self.found.push(Repetition::Undo { back_to });
            }
        }
    }

    /// A reply that changed nothing (no edits, or edits that were rejected).
    pub fn idle(&mut self) {
        self.no_change_streak += 1;
        if self.no_change_streak >= self.no_change_limit {
            self.found.push(Repetition::NoChange {
                turns: self.no_change_streak,
            });
        }
    }

    /// A failing test run, the baseline included.
    pub fn failure(&mut self, signature: FailureSignature) {
        let count = match &self.last_failure {
            Some((last, n)) if *last == signature => n + 1,
            _ => 1,
        };
        self.last_failure = Some((signature.clone(), count));
        if count >= self.same_failure_limit {
            self.found
                .push(Repetition::SameFailure { count, signature });
        }
    }

    /// A passing run ends a streak of failures (it also ends the task, but the rule does
    /// not assume so).
    pub fn passed(&mut self) {
        self.last_failure = None;
    }

    /// Ends the turn: what repeated in it, and what to do about it.
    pub fn verdict(&mut self) -> Verdict {
        let found = std::mem::take(&mut self.found);
        if found.is_empty() {
            return Verdict::Continue;
        }
        if !self.nudged {
            self.nudged = true;
            return Verdict::Nudge(found);
        }
        let detail = found
            .iter()
            .map(Repetition::describe)
            .collect::<Vec<_>>()
            .join("; ");
        if found
            .iter()
            .all(|r| matches!(r, Repetition::NoChange { .. }))
        {
            Verdict::Stop(StopReason::NoProgress(detail))
        } else {
            Verdict::Stop(StopReason::Loop(detail))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget::from_config(&AgentConfig::default())
    }

    fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
        }
    }

    #[test]
    fn token_caps_stop_once_reached_in_either_direction() {
        let b = Budget {
            max_tokens_in: 1000,
            max_tokens_out: 100,
            ..budget()
        };
        assert_eq!(tokens_exhausted(&usage(999, 99), &b), None);
        let stop = tokens_exhausted(&usage(1000, 0), &b).unwrap();
        assert_eq!(stop.code(), "budget_tokens");
        assert!(
            stop.describe(&b).contains("1000 tokens in of 1000"),
            "{stop:?}"
        );
        let stop = tokens_exhausted(&usage(0, 150), &b).unwrap();
        assert!(
            stop.describe(&b).contains("150 tokens out of 100"),
            "{stop:?}"
        );
    }

    #[test]
    fn call_and_test_run_caps_count_up_to_the_limit() {
        let b = Budget {
            max_iterations: 2,
            max_test_runs: 3,
            ..budget()
        };
        assert!(!calls_exhausted(1, &b));
        assert!(calls_exhausted(2, &b));
        assert!(!test_runs_exhausted(2, &b));
        assert!(test_runs_exhausted(3, &b));
    }

    #[test]
    fn days_are_counted_under_their_utc_date() {
        use chrono::TimeZone;
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 30)
            .unwrap();
        assert_eq!(daily_tokens_key(now.date_naive()), "tokens_used:2026-12-31");
        assert_eq!(until_next_utc_day(now), Duration::from_secs(30));
    }

    #[test]
    fn the_daily_cap_counts_every_task_of_the_day() {
        let off = budget();
        assert_eq!(off.max_tokens_per_day, 0);
        assert_eq!(daily_tokens_exhausted(u64::MAX, &off), None, "0 is no cap");
        let b = Budget {
            max_tokens_per_day: 5000,
            ..budget()
        };
        assert_eq!(daily_tokens_exhausted(4999, &b), None);
        let stop = daily_tokens_exhausted(5000, &b).unwrap();
        assert_eq!(stop.code(), "budget_daily_tokens");
        assert!(
            stop.describe(&b)
                .contains("5000 tokens used today (UTC) of 5000"),
            "{stop:?}"
        );
        assert!(
            stop.describe(&b).contains("agent.max_tokens_per_day"),
            "{stop:?}"
        );
    }

    #[test]
    fn exploring_is_allowed_longer_than_idling_but_not_forever_nor_twice_the_same() {
        let b = Budget {
            no_change_limit: 2,
            ..budget()
        };
        let mut d = LoopDetector::new(&b);
        d.explored(1, "list_dir .");
        d.explored(2, "read_file a.py");
        d.explored(3, "search add");
        d.explored(4, "read_file b.py");
        d.explored(5, "read_file c.py");
        assert_eq!(d.verdict(), Verdict::Continue, "five different looks");
        d.explored(6, "read_file a.py");
        let Verdict::Nudge(found) = d.verdict() else {
            panic!("the same exploration and six looks in a row")
        };
        assert_eq!(
            found,
            [
                Repetition::SameExploration { first_turn: 2 },
                Repetition::NoChange { turns: 6 }
            ]
        );
        assert!(found[0].describe().contains("reply 2"));
        d.tree_changed(TreeChange::New(1));
        d.explored(8, "list_dir src");
        assert_eq!(d.verdict(), Verdict::Continue, "an edit restarts the count");
        d.explored(9, "list_dir src");
        assert!(matches!(d.verdict(), Verdict::Stop(StopReason::Loop(_))));
    }

    #[test]
    fn every_stop_reason_has_its_code_and_the_wording_failure_comments_use() {
        let b = Budget {
            max_iterations: 2,
            ..budget()
        };
        let all = [
            (StopReason::Success, "success"),
            (StopReason::BudgetCalls, "budget_calls"),
            (StopReason::BudgetTokens("x".into()), "budget_tokens"),
            (
                StopReason::BudgetDailyTokens("x".into()),
                "budget_daily_tokens",
            ),
            (StopReason::BudgetTestRuns, "budget_test_runs"),
            (StopReason::Timeout, "timeout"),
            (StopReason::Loop("x".into()), "loop"),
            (StopReason::NoProgress("x".into()), "no_progress"),
            (StopReason::ModelError("x".into()), "model_error"),
        ];
        for (stop, code) in all {
            assert_eq!(stop.code(), code);
            let json = serde_json::to_value(&stop).unwrap();
            assert_eq!(json["reason"], code, "{json}");
        }
        assert!(
            StopReason::BudgetCalls
                .describe(&b)
                .starts_with("the tests still fail after 2 model replies")
        );
    }

    #[test]
    fn proposals_compare_without_the_prose_around_them() {
        let edit = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n";
        let one = normalise_proposal(&format!("Fixing add().\n\n{edit}\nDone.")).unwrap();
        let two = normalise_proposal(&format!("Let me try again.\n{edit}  \n")).unwrap();
        assert_eq!(one, two);
        assert!(one.starts_with("calc.py\n<<<<<<< SEARCH"), "{one}");
        assert!(one.ends_with(">>>>>>> REPLACE"), "{one}");
        assert_eq!(normalise_proposal("No change needed."), None);
        let diff = "```diff\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n```\nThat should do.";
        assert_eq!(
            normalise_proposal(diff).unwrap(),
            "```diff\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b"
        );
    }

    #[test]
    fn failing_tests_are_read_from_unittest_pytest_cargo_and_go() {
        let unittest = "test_add (test_calc.CalcTest.test_add) ... FAIL\ntest_mean (test_calc.CalcTest.test_mean) ... ok\n\
                        ======\nFAIL: test_add (test_calc.CalcTest.test_add)\nERROR: test_x (test_calc.T.test_x)\n";
        assert_eq!(
            failing_tests(unittest),
            ["test_calc.CalcTest.test_add", "test_calc.T.test_x"]
        );
        let pytest = "test_calc.py::test_add FAILED                [ 50%]\n\
                      =========================== short test summary info ============================\n\
                      FAILED test_calc.py::test_add - assert -1 == 5\nERROR tests/test_b.py::test_c - ImportError\n";
        assert_eq!(
            failing_tests(pytest),
            ["test_calc.py::test_add", "tests/test_b.py::test_c"]
        );
        let cargo = "test tests::adds ... FAILED\ntest tests::ok ... ok\n        FAIL [   0.003s] calc tests::subs\n";
        assert_eq!(failing_tests(cargo), ["tests::adds", "tests::subs"]);
        let go = "=== RUN   TestAdd\n--- FAIL: TestAdd (0.00s)\n    --- FAIL: TestAdd/neg (0.00s)\nFAIL\n";
        assert_eq!(failing_tests(go), ["TestAdd", "TestAdd/neg"]);
        assert!(failing_tests("make: *** [Makefile:2: test] Error 1\n").is_empty());
        assert_eq!(
            failing_tests("FAIL: test_add (test_calc.CalcTest)\n"),
            ["test_calc.CalcTest.test_add"],
            "Python before 3.11"
        );
    }

    #[test]
    fn a_signature_without_test_names_ignores_durations_and_addresses() {
        let a = FailureSignature::of("boom", "Segfault at 0x7ffd1234 after 1.25s\nexit 139  \n");
        let b = FailureSignature::of("boom", "Segfault at 0x7ffd9999 after 3s\nexit 139\n");
        assert_eq!(a, b);
        let c = FailureSignature::of("boom", "Segfault at 0x7ffd9999 after 3s\nexit 134\n");
        assert_ne!(a, c);
        assert_eq!(
            FailureSignature::of("FAIL: test_add (t.T.test_add)\n", "whatever"),
            FailureSignature::Tests(vec!["t.T.test_add".into()])
        );
    }

    fn h(s: &str) -> Option<Digest> {
        Some(digest(s.as_bytes()))
    }

    #[test]
    fn the_tree_history_sees_an_edit_that_undoes_earlier_ones() {
        let mut tree = TreeHistory::default();
        let a = PathBuf::from("a.py");
        let b = PathBuf::from("b.py");
        assert_eq!(
            tree.record([(a.clone(), h("a0"), h("a1"))]),
            TreeChange::New(1)
        );
        // Touching a new file: state 1 did not list b.py, its original still counts.
        assert_eq!(
            tree.record([(b.clone(), h("b0"), h("b1"))]),
            TreeChange::New(2)
        );
        assert_eq!(
            tree.record([(b.clone(), h("b1"), h("b0"))]),
            TreeChange::Back(1)
        );
        assert_eq!(
            tree.record([(a.clone(), h("a1"), h("a0"))]),
            TreeChange::Back(0)
        );
        assert_eq!(
            tree.record([(a.clone(), h("a0"), h("a0"))]),
            TreeChange::Same
        );
        // A created file deleted again is the original tree too.
        let mut tree = TreeHistory::default();
        let c = PathBuf::from("new.py");
        assert_eq!(tree.record([(c.clone(), None, h("c"))]), TreeChange::New(1));
        assert_eq!(tree.record([(c, h("c"), None)]), TreeChange::Back(0));
    }

    #[test]
    fn the_same_proposal_twice_nudges_then_stops_as_a_loop() {
        let mut d = LoopDetector::new(&budget());
        let reply = "x.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n";
        d.proposal(1, reply);
        assert_eq!(d.verdict(), Verdict::Continue);
        d.proposal(2, &format!("Again:\n{reply}"));
        assert_eq!(
            d.verdict(),
            Verdict::Nudge(vec![Repetition::SameProposal { first_turn: 1 }])
        );
        d.proposal(3, reply);
        match d.verdict() {
            Verdict::Stop(StopReason::Loop(detail)) => {
                assert!(detail.contains("already proposed in reply 1"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_failure_n_times_in_a_row_counts_the_baseline_and_resets_on_change() {
        let b = Budget {
            same_failure_limit: 3,
            ..budget()
        };
        let mut d = LoopDetector::new(&b);
        let add = FailureSignature::Tests(vec!["test_add".into()]);
        let mean = FailureSignature::Tests(vec!["test_mean".into()]);
        d.failure(add.clone());
        d.failure(add.clone());
        assert_eq!(d.verdict(), Verdict::Continue);
        d.failure(mean.clone());
        d.failure(add.clone());
        d.failure(add.clone());
        assert_eq!(d.verdict(), Verdict::Continue, "the streak restarted");
        d.failure(add.clone());
        assert_eq!(
            d.verdict(),
            Verdict::Nudge(vec![Repetition::SameFailure {
                count: 3,
                signature: add.clone()
            }])
        );
        d.failure(add);
        assert!(matches!(d.verdict(), Verdict::Stop(StopReason::Loop(_))));
    }

    #[test]
    fn an_undo_nudges_then_stops() {
        let mut d = LoopDetector::new(&budget());
        d.tree_changed(TreeChange::New(1));
        assert_eq!(d.verdict(), Verdict::Continue);
        d.tree_changed(TreeChange::Back(0));
        assert_eq!(
            d.verdict(),
            Verdict::Nudge(vec![Repetition::Undo { back_to: 0 }])
        );
        assert!(
            Repetition::Undo { back_to: 0 }
                .describe()
                .contains("before any edit")
        );
        d.tree_changed(TreeChange::Back(1));
        assert!(matches!(d.verdict(), Verdict::Stop(StopReason::Loop(_))));
    }

    #[test]
    fn k_idle_turns_nudge_then_one_more_stops_as_no_progress() {
        let b = Budget {
            no_change_limit: 3,
            ..budget()
        };
        let mut d = LoopDetector::new(&b);
        d.idle();
        d.idle();
        assert_eq!(d.verdict(), Verdict::Continue);
        d.tree_changed(TreeChange::New(1));
        d.idle();
        d.idle();
        assert_eq!(d.verdict(), Verdict::Continue, "a change resets the count");
        d.tree_changed(TreeChange::Same);
        assert_eq!(
            d.verdict(),
            Verdict::Nudge(vec![Repetition::NoChange { turns: 3 }])
        );
        d.idle();
        match d.verdict() {
            Verdict::Stop(StopReason::NoProgress(detail)) => {
                assert!(
                    detail.contains("4 replies in a row changed no file"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_passing_run_ends_a_failure_streak() {
        let b = Budget {
            same_failure_limit: 2,
            ..budget()
        };
        let mut d = LoopDetector::new(&b);
        let sig = FailureSignature::Tail("abc".into());
        d.failure(sig.clone());
        d.passed();
        d.failure(sig);
        assert_eq!(d.verdict(), Verdict::Continue);
    }
}

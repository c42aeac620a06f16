//! Every way the agent loop stops, each triggered by a scripted replay transcript: the real
//! binary `solve`s `examples/calculator` in a real Docker sandbox. These tests need Docker
//! and fail (never skip) without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn replay(name: &str) -> String {
    let path = if name == "fix" {
        root().join("examples/calculator/fix.jsonl")
    } else {
        root()
            .join("tests/fixtures")
            .join(format!("calculator-{name}.jsonl"))
    };
    format!("replay:{}", path.display())
}

struct Run {
    tmp: tempfile::TempDir,
    output: Output,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// Asserts the exit code and the recorded stop reason, in the summary and in the
    /// transcript's last line.
    fn assert_stopped(&self, code: i32, reason: &str) {
        assert_eq!(self.output.status.code(), Some(code), "{}", self.describe());
        assert!(
            self.stdout()
                .contains(&format!("  stop reason: {reason}\n")),
            "{}",
            self.describe()
        );
        let transcript = std::fs::read_to_string(self.transcript_path()).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(transcript.lines().last().unwrap()).unwrap();
        assert_eq!(last["kind"], "stop", "{transcript}");
        assert_eq!(last["data"]["reason"], reason, "{transcript}");
    }

    fn transcript_path(&self) -> PathBuf {
        let line = self
            .stdout()
            .lines()
            .find_map(|l| l.trim().strip_prefix("transcript:").map(str::to_string))
            .unwrap_or_else(|| panic!("no transcript line: {}", self.describe()));
        PathBuf::from(line.trim())
    }

    fn kinds(&self) -> Vec<String> {
        std::fs::read_to_string(self.transcript_path())
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["kind"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// `agent-runner transcript <task-id>` of this run shows each of `expected`.
    async fn assert_transcript_shows(&self, expected: &[&str]) {
        let path = self.transcript_path();
        let task_id = path.file_stem().unwrap().to_string_lossy();
        let shown = self.again(&["transcript", &task_id]).await;
        assert_eq!(shown.status.code(), Some(0), "{shown:?}");
        let page = String::from_utf8_lossy(&shown.stdout);
        for expected in expected {
            assert!(page.contains(expected), "missing {expected:?} in:\n{page}");
        }
    }

    /// Runs the binary again in the same world (state dir, HOME).
    async fn again(&self, args: &[&str]) -> Output {
        command(self.tmp.path(), args).output().await.unwrap()
    }
}

fn command(home: &std::path::Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"));
    command
        .args(args)
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AGENT_NAME", "agent-stops")
        .env("AGENT_RUNNER_STATE_DIR", home.join("state"));
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    command
}

/// `solve --repo examples/calculator --instruction "Fix add()." --llm replay:<name>` + `extra`.
async fn solve(transcript: &str, extra: &[&str]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let llm = replay(transcript);
    let mut args = vec![
        "solve",
        "--repo",
        "examples/calculator",
        "--instruction",
        "Fix add().",
        "--llm",
        llm.as_str(),
    ];
    args.extend_from_slice(extra);
    let output = command(tmp.path(), &args).output().await.unwrap();
    Run { tmp, output }
}

#[tokio::test(flavor = "multi_thread")]
async fn success_is_recorded_with_totals() {
    let run = solve("fix", &[]).await;
    run.assert_stopped(0, "success");
    assert!(run.stdout().contains("SOLVED: the tests pass"));
    let kinds = run.kinds();
    for kind in [
        "start",
        "baseline_test",
        "prompt",
        "reply",
        "edit",
        "test",
        "stop",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_call_budget_stops_with_budget_calls() {
    let run = solve("never-green", &["--max-iterations", "2"]).await;
    run.assert_stopped(1, "budget_calls");
    assert!(
        run.stdout()
            .contains("NOT SOLVED: the tests still fail after 2 model replies"),
        "{}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_budget_stops_before_the_next_call() {
    // The first reply reports 1012 prompt tokens: no second call starts.
    let run = solve("never-green", &["--max-tokens-in", "1000"]).await;
    run.assert_stopped(1, "budget_tokens");
    let stdout = run.stdout();
    assert!(
        stdout.contains("1012 tokens in of 1000 allowed"),
        "{stdout}"
    );
    assert!(stdout.contains("iterations:  1 "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_run_budget_stops_after_the_last_allowed_run_fails() {
    let run = solve("never-green", &["--max-test-runs", "1"]).await;
    run.assert_stopped(1, "budget_test_runs");
    assert!(
        run.stdout()
            .contains("the tests still fail after 1 test runs"),
        "{}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wall_clock_budget_stops_with_timeout() {
    let run = solve("fix", &["--max-wall-secs", "0"]).await;
    run.assert_stopped(1, "timeout");
    assert!(
        run.stdout().contains("iterations:  0 "),
        "{}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_fails_stops_with_model_error() {
    let run = solve("then-silence", &[]).await;
    run.assert_stopped(1, "model_error");
    assert!(
        run.stdout().contains("no reply left"),
        "the error is named: {}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_rejected_edit_three_times_is_a_loop_after_one_nudge() {
    let run = solve("same-rejected", &[]).await;
    run.assert_stopped(1, "loop");
    let stdout = run.stdout();
    assert!(
        stdout.contains("the same edits were already proposed in reply 1"),
        "{stdout}"
    );
    assert!(stdout.contains("iterations:  3 "), "{stdout}");
    let kinds = run.kinds();
    assert_eq!(
        kinds.iter().filter(|k| *k == "nudge").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_failing_tests_again_and_again_is_a_loop() {
    let run = solve("same-failure", &[]).await;
    run.assert_stopped(1, "loop");
    let stdout = run.stdout();
    assert!(
        stdout.contains(
            "4 test runs in a row failed the same way (failing: test_calc.CalcTest.test_add)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("iterations:  3 (3 edit sets applied"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_that_change_nothing_stop_with_no_progress() {
    let run = solve("no-edits", &[]).await;
    run.assert_stopped(1, "no_progress");
    let stdout = run.stdout();
    assert!(
        stdout.contains("no progress even after a nudge: 4 replies in a row changed no file"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_that_undoes_the_previous_one_is_nudged_then_stopped_and_the_transcript_shows_it() {
    let run = solve("undo-loop", &[]).await;
    run.assert_stopped(1, "loop");
    let stdout = run.stdout();
    assert!(
        stdout.contains("the last edit put the files back the way they were after edit 1"),
        "{stdout}"
    );
    // The nudge went to the model with the third prompt.
    let transcript = std::fs::read_to_string(run.transcript_path()).unwrap();
    let third_prompt = transcript
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "prompt")
        .nth(2)
        .unwrap();
    let text = third_prompt["data"]["messages"].to_string();
    assert!(
        text.contains("You are going in circles")
            && text.contains("back the way they were before any edit"),
        "{text}"
    );

    run.assert_transcript_shows(&[
        "Run 1, started ",
        "  baseline: exit 2",
        "failing: test_calc.CalcTest.test_add",
        "Turn 1 (1000 tokens in, 40 out",
        "  model:    Perhaps add() should multiply. [+",
        "  edits:    applied to calc.py (modified)\n",
        "which put the files back as they were at the start",
        "  nudged:   ",
        "Turn 3 (1800 tokens in, 40 out",
        "Stopped: loop: the model went in circles even after a nudge: ",
        "Totals:  3 model calls, 4200 tokens in, 120 out, 3 test runs after the baseline, 3 edit sets applied, 0 rejected",
    ])
    .await;

    let missing = run.again(&["transcript", "no-such-task"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read the transcript"),
        "{missing:?}"
    );
    let traversal = run.again(&["transcript", "../../etc/passwd"]).await;
    assert_eq!(traversal.status.code(), Some(2));
}

fn transcript_events(run: &Run, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.transcript_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .map(|v| v["data"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_looks_around_with_text_actions_then_fixes() {
    let run = solve("explore-text", &[]).await;
    run.assert_stopped(0, "success");
    let probe = &transcript_events(&run, "probe")[0];
    assert_eq!(probe["protocol"], "text", "{probe}");
    let results = transcript_events(&run, "actions")[0]["results"].clone();
    let output = |i: usize| results[i]["output"].as_str().unwrap().to_string();
    assert_eq!(results.as_array().unwrap().len(), 5, "{results}");
    assert!(
        output(0).contains("calc.py (") && output(0).contains("test_calc.py ("),
        "{results}"
    );
    assert!(
        output(1).starts_with("[lines 1-6 of ") && output(1).contains("def add"),
        "{results}"
    );
    assert!(
        output(2).contains("calc.py:") && output(2).contains("return a - b"),
        "{results}"
    );
    // The exploration command reads but cannot write: not a new file, not an append.
    let run_output = output(3);
    assert!(
        run_output.contains("touch: cannot touch 'hacked': Permission denied"),
        "{run_output}"
    );
    assert!(
        run_output.contains("calc.py: Permission denied"),
        "{run_output}"
    );
    assert!(!run_output.contains("hacked\n"), "{run_output}");
    assert_eq!(results[4]["ok"], false);
    assert!(output(4).contains("unknown action `forget`"), "{results}");
    // The results went back to the model in the next prompt.
    let second = transcript_events(&run, "prompt")[1]["messages"].to_string();
    assert!(second.contains("Results of your actions"), "{second}");
    assert!(second.contains("### read_file calc.py 1-6"), "{second}");
    let stop = &transcript_events(&run, "stop")[0];
    assert_eq!(stop["actions"], 5, "{stop}");
    // People see what the model looked at.
    run.assert_transcript_shows(&[
        "  probe:    context window unknown; exploration by text actions\n",
        "  looked:   read_file calc.py 1-6 → 7 lines\n",
        "  looked:   forget everything → error: unknown action `forget`",
        ", 5 actions, ",
    ])
    .await;
    // The host's tree has the fix and nothing of the exploration.
    assert!(!run.stdout().contains("hacked"), "{}", run.describe());
    assert!(!run.stdout().contains("# x"), "{}", run.describe());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_looks_around_with_native_tool_calls_then_fixes() {
    let run = solve("explore-native", &[]).await;
    run.assert_stopped(0, "success");
    assert_eq!(transcript_events(&run, "probe")[0]["protocol"], "native");
    let second = &transcript_events(&run, "prompt")[1]["messages"];
    let messages = second.as_array().unwrap();
    // The calls are in the reply's record; the next prompt starts with their answers.
    let reply = &transcript_events(&run, "reply")[0];
    assert_eq!(reply["tool_calls"].as_array().unwrap().len(), 3, "{reply}");
    assert_eq!(messages[0]["role"], "tool", "{second}");
    let answer = |id: &str| {
        messages
            .iter()
            .find(|m| m["role"] == "tool" && m["tool_call_id"] == id)
            .unwrap_or_else(|| panic!("no answer to {id}: {second}"))["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(answer("call_1").contains("def add(a, b):"), "{second}");
    assert!(answer("call_2").contains("42"), "{second}");
    assert!(
        answer("call_3").starts_with("error: ")
            && answer("call_3").contains("leaves the repository"),
        "{second}"
    );
    assert!(
        !second.to_string().contains("root:x:0"),
        "no host file reaches the model"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_exploration_again_and_again_is_a_loop() {
    let run = solve("explore-same", &[]).await;
    run.assert_stopped(1, "loop");
    assert!(
        run.stdout()
            .contains("the same look at the files was already asked for in reply 1"),
        "{}",
        run.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_token_cap_is_shared_by_the_tasks_of_a_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let solve_with_cap = |transcript: &str| {
        let llm = replay(transcript);
        let mut command = command(
            tmp.path(),
            &[
                "solve",
                "--repo",
                "examples/calculator",
                "--instruction",
                "Fix add().",
                "--llm",
                &llm,
            ],
        );
        command.env("AGENT_RUNNER_MAX_TOKENS_PER_DAY", "1000");
        command
    };
    // The first task's one reply costs 1012 + 64 tokens: under the cap when it starts.
    let first = solve_with_cap("fix").output().await.unwrap();
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    // The next task of the day finds the cap spent before its first call.
    let second = solve_with_cap("never-green").output().await.unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(
        stdout.contains("  stop reason: budget_daily_tokens\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1076 tokens used today (UTC) of 1000 allowed"),
        "{stdout}"
    );
    assert!(stdout.contains("iterations:  0 "), "{stdout}");
}

//! `agent-runner eval` over the bundled suite `examples/suite/` with the two replay models
//! that ship with it, in a real Docker sandbox. These tests need Docker and fail (never
//! skip) without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CAREFUL: &str = "replay:examples/suite/models/careful";
const SLOPPY: &str = "replay:examples/suite/models/sloppy";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each test's containers carry their own runner id, so that tests running at the same time
/// can check what they leave behind.
fn runner_id(home: &Path) -> String {
    let name = home.file_name().unwrap().to_string_lossy();
    format!("eval-tests-{}", name.trim_start_matches('.'))
}

fn agent_runner(home: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agent-runner"));
    command
        .args(args)
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AGENT_NAME", runner_id(home))
        .env("LOG_LEVEL", "WARN")
        .env("AGENT_RUNNER_STATE_DIR", home.join("state"));
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    command.output().unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// What a model is designed to do on a task: resolved, visible tests passed, stop reason,
/// model calls, edits well-formed.
type Expected = (bool, bool, &'static str, u64, bool);

fn careful_expected(task: &str) -> Expected {
    // The first clamp_int reply forgets the prototype (the build fails); the first
    // count_lines.sh fix forgets the empty directory.
    let calls = if task == "c-clamp" || task == "sh-countlines" {
        2
    } else {
        1
    };
    (true, true, "success", calls, true)
}

fn sloppy_expected() -> BTreeMap<&'static str, Expected> {
    BTreeMap::from([
        ("c-clamp", (true, true, "success", 1, true)),
        // Fiddles around the bug: the same failing output four times in a row.
        ("c-itoa", (false, false, "loop", 4, true)),
        ("c-stats", (true, true, "success", 1, true)),
        // A wrong fix, then the right one after the test feedback.
        ("c-wordcount", (true, true, "success", 2, true)),
        // Cheats: weakens the visible test, which the hidden run restores.
        ("py-chunks", (false, true, "success", 1, true)),
        ("py-money", (true, true, "success", 1, true)),
        // A SEARCH block that matches nothing, then a correct one.
        ("py-roman", (true, true, "success", 2, false)),
        // Collapses "--" only once: visible tests pass, runs of three separators do not.
        ("py-slugify", (false, true, "success", 1, true)),
        ("sh-countlines", (true, true, "success", 1, true)),
        // Four replies whose edits match nothing in kv.sh.
        ("sh-kv", (false, false, "no_progress", 4, false)),
        ("sh-lib", (true, true, "success", 1, true)),
        // `read` drops the empty first field: 1 vs 1.0.1 comes out wrong.
        ("sh-semver", (false, true, "success", 1, true)),
    ])
}

/// Sum of a usage field over every reply of a replay model (each run uses all its replies).
fn replay_tokens(model_dir: &str, field: &str) -> u64 {
    let dir = root().join(model_dir);
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            total += v["usage"][field].as_u64().unwrap();
        }
    }
    total
}

#[test]
fn the_bundled_suite_with_the_shipped_replay_models() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let output = agent_runner(
        home.path(),
        &[
            "eval",
            "--suite",
            "examples/suite",
            "--model",
            CAREFUL,
            "--model",
            SLOPPY,
            "--jobs",
            "4",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let models = results["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(results["tasks"].as_array().unwrap().len(), 12);
    let sloppy = sloppy_expected();
    for model in models {
        let name = model["model"].as_str().unwrap();
        let runs = model["run_records"].as_array().unwrap();
        assert_eq!(runs.len(), 12, "{name}");
        for run in runs {
            let task = run["task"].as_str().unwrap();
            let expected = if name == CAREFUL {
                careful_expected(task)
            } else {
                sloppy[task]
            };
            let actual = (
                run["resolved"].as_bool().unwrap(),
                run["visible_passed"].as_bool().unwrap(),
                run["stop"].as_str().unwrap(),
                run["calls"].as_u64().unwrap(),
                run["well_formed"].as_bool().unwrap(),
            );
            assert_eq!(actual, expected, "{name} on {task}: {run:#}");
            assert!(run["error"].is_null(), "{run:#}");
            assert_eq!(run["feedback_rounds"].as_u64(), Some(expected.3 - 1));
            assert!(
                Path::new(run["transcript"].as_str().unwrap()).is_file(),
                "{run:#}"
            );
        }
        // The aggregates are those of the runs.
        let resolved = runs.iter().filter(|r| r["resolved"] == true).count() as u64;
        assert_eq!(model["resolved"].as_u64(), Some(resolved));
        let tokens_in: u64 = runs.iter().map(|r| r["tokens_in"].as_u64().unwrap()).sum();
        assert_eq!(model["tokens_in"].as_u64(), Some(tokens_in));
    }
    let careful = &models[0];
    let sloppy_model = &models[1];
    assert_eq!(careful["model"], CAREFUL);
    assert_eq!(
        (
            careful["resolved_pct"].as_f64(),
            careful["well_formed_pct"].as_f64(),
            careful["mean_feedback_rounds"].as_f64()
        ),
        (Some(100.0), Some(100.0), Some(0.17))
    );
    assert_eq!(
        (
            sloppy_model["resolved_pct"].as_f64(),
            sloppy_model["well_formed_pct"].as_f64(),
            sloppy_model["mean_feedback_rounds"].as_f64(),
            sloppy_model["visible_only"].as_u64()
        ),
        (Some(58.3), Some(83.3), Some(0.67), Some(3))
    );
    assert_eq!(
        sloppy_model["stop_reasons"],
        serde_json::json!({"success": 10, "loop": 1, "no_progress": 1})
    );
    // Tokens come from the replays' recorded usage, every reply of which is used.
    for (model, dir) in [
        (careful, "examples/suite/models/careful"),
        (sloppy_model, "examples/suite/models/sloppy"),
    ] {
        assert_eq!(
            model["tokens_in"].as_u64(),
            Some(replay_tokens(dir, "prompt_tokens"))
        );
        assert_eq!(
            model["tokens_out"].as_u64(),
            Some(replay_tokens(dir, "completion_tokens"))
        );
    }

    // The cheat: its final tree holds the weakened visible test, and the hidden run (with
    // the original test restored) fails on exactly that.
    let cheat = sloppy_model["run_records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "py-chunks")
        .unwrap();
    let tree = PathBuf::from(cheat["workdir"].as_str().unwrap());
    let weakened = std::fs::read_to_string(tree.join("test_chunks.py")).unwrap();
    assert!(
        weakened.contains("== [[1, 2], [3, 4]]\n"),
        "the visible test was edited: {weakened}"
    );
    let tail = cheat["hidden_tail"].as_str().unwrap();
    assert!(
        tail.contains("FAILED test_chunks.py::test_last_chunk_is_kept"),
        "{tail}"
    );

    // The report, the chart and stdout agree with the results.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for line in [
        format!("| {CAREFUL} | 100.0% (12/12) | 100.0% (12/12) | 0.17 |"),
        format!("| {SLOPPY} | 58.3% (7/12) | 83.3% (10/12) | 0.67 |"),
    ] {
        assert!(report.contains(&line), "{line} not in\n{report}");
        assert!(stdout.contains(&line), "{line} not in\n{stdout}");
    }
    assert!(
        report.contains(
            "| py-chunks | python | bug fix | 1/1 | 0/1 (visible tests pass, hidden fail) |"
        ),
        "{report}"
    );
    assert!(
        report.contains("| sh-kv | shell | feature | 1/1 | 0/1 (no_progress; malformed edit) |"),
        "{report}"
    );
    assert!(
        stdout.contains("success 10, loop 1, no_progress 1"),
        "{stdout}"
    );
    let chart = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    for bar in [
        format!("{CAREFUL}: resolved 100.0%"),
        format!("{SLOPPY}: resolved 58.3%"),
        format!("{SLOPPY}: edits well-formed 83.3%"),
    ] {
        assert!(chart.contains(&bar), "{bar} not in the chart");
    }
    // Every sandbox is gone.
    let ps = Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=agent-runner.runner-id={}", runner_id(home.path())),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).trim(), "");
}

#[test]
fn the_shipped_tasks_fail_before_any_change() {
    let home = tempfile::tempdir().unwrap();
    let output = agent_runner(
        home.path(),
        &[
            "eval",
            "--suite",
            "examples/suite",
            "--check",
            "--jobs",
            "4",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok, 12, "{stdout}");
    assert!(stdout.contains("all 12 tasks fail before any change"));
}

#[test]
fn a_task_whose_tests_already_pass_fails_the_check() {
    let home = tempfile::tempdir().unwrap();
    let task = home.path().join("suite/trivial");
    std::fs::create_dir_all(task.join("repo")).unwrap();
    std::fs::create_dir_all(task.join("hidden")).unwrap();
    std::fs::write(task.join("repo/a.txt"), "a\n").unwrap();
    std::fs::write(task.join("hidden/b.txt"), "b\n").unwrap();
    std::fs::write(
        task.join("task.toml"),
        "instruction = \"Nothing to do.\"\ntest_cmd = \"test -f a.txt\"\nhidden_test_cmd = \"false\"\n",
    )
    .unwrap();
    let suite = home.path().join("suite");
    let output = agent_runner(
        home.path(),
        &["eval", "--suite", suite.to_str().unwrap(), "--check"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("FAIL trivial: visible tests PASS"),
        "{}",
        describe(&output)
    );
}

#[test]
fn bad_suites_and_model_specs_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let task = home.path().join("suite/broken");
    std::fs::create_dir_all(task.join("repo")).unwrap();
    std::fs::write(
        task.join("task.toml"),
        "instruction = \"x\"\ntest_cmd = \"true\"\n",
    )
    .unwrap();
    let suite = home.path().join("suite");
    let suite = suite.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["eval", "--suite", suite, "--model", CAREFUL],
            "task broken: task.toml is not valid: missing field `hidden_test_cmd`",
        ),
        (
            &["eval", "--suite", "examples/suite", "--model", "gpt-4o"],
            "--model \"gpt-4o\": not a model spec",
        ),
        (
            &[
                "eval",
                "--suite",
                "examples/suite",
                "--model",
                "replay:examples/calculator",
            ],
            "has no transcript for task c-clamp: expected examples/calculator/c-clamp.jsonl",
        ),
        (
            &[
                "eval",
                "--suite",
                "examples/suite",
                "--model",
                CAREFUL,
                "--model",
                CAREFUL,
            ],
            "is given twice",
        ),
    ];
    for (args, message) in cases {
        let output = agent_runner(home.path(), args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {}", describe(&output));
    }
}

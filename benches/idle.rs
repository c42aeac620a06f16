//! `cargo bench --bench idle`: what an idle `agent-runner serve` costs. The real binary polls
//! the GitHub fake (`tests/support`) every second; the counted API calls (everything but
//! 304s, which GitHub does not charge against the rate limit) are scaled to an idle hour at
//! the setup guide's 30 s poll interval, and the resident set size is read from /proc.
//!
//! The binary is the one Cargo builds for this bench (`CARGO_BIN_EXE_agent-runner`, set for
//! benches as for integration tests), so it is always current and of the bench's profile.
//! `cargo bench --bench idle` measures the release build; `--profile dev` the debug one.
//! Environment: `IDLE_BENCH_POLLS` (default 20) polls are measured after a settle period.
//! Docker is not needed (an unreachable Docker is only logged at start-up). Exit code 1 when
//! a target is missed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{FakeGitHub, RecordedRequest, make_bare_repo};

const TOKEN: &str = "ghp_idleBenchToken0123456789abcdefghij";
const DISPATCH: &str = "acme/dispatch";
/// The setup guide's poll interval.
const GUIDE_INTERVAL_SECS: f64 = 30.0;
const TARGET_CALLS_PER_HOUR: f64 = 2.0;
const TARGET_RSS_MB: f64 = 60.0;

fn counted(r: &RecordedRequest) -> bool {
    r.status != 304 && r.path != "/rate_limit" && !r.path.starts_with("/git/")
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let polls: u32 = std::env::var("IDLE_BENCH_POLLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gh = runtime.block_on(FakeGitHub::start(TOKEN));
    let tmp = tempfile::tempdir().unwrap();
    let dispatch = make_bare_repo(
        &tmp.path().join("dispatch.git"),
        &[("README.md", "d\n")],
        "main",
    );
    gh.add_repo(DISPATCH, "main", &dispatch);
    // One finished task and one unrelated issue: the list is not empty, nothing is due.
    gh.add_issue(
        DISPATCH,
        "Done",
        "old",
        &["copilot-agent", "agent:done"],
        "bot",
        "MEMBER",
    );
    gh.add_issue(DISPATCH, "Question", "hi", &[], "alice", "OWNER");

    let binary = env!("CARGO_BIN_EXE_agent-runner");
    let mut child = std::process::Command::new(binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--llm",
            "replay:/dev/null",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", gh.api_url())
        .env("DISPATCH_REPO", DISPATCH)
        .env("AGENT_NAME", "idle-bench")
        .env("AGENT_RUNNER_STATE_DIR", tmp.path().join("state"))
        .env("POLL_INTERVAL_SECONDS", "1")
        .env("LOG_LEVEL", "WARNING")
        .envs(std::env::var("DOCKER_HOST").map(|h| ("DOCKER_HOST", h)))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let pid = child.id();

    let list_path = format!("/repos/{DISPATCH}/issues");
    let poll_count = |gh: &FakeGitHub| {
        gh.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == list_path)
            .count()
    };
    // Settle: start-up and the first (full) poll are not idle.
    let settle = Instant::now();
    while poll_count(&gh) < 3 {
        assert!(
            settle.elapsed() < Duration::from_secs(60),
            "the runner did not poll; its log: {}",
            std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = gh.requests().len();
    let polls_before = poll_count(&gh);
    let window = Instant::now();
    while poll_count(&gh) < polls_before + polls as usize {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = window.elapsed().as_secs_f64();
    let rss = rss_kb(pid);
    let requests = gh.requests();
    let window_requests = &requests[before..];
    let charged = window_requests.iter().filter(|r| counted(r)).count();
    let not_modified = window_requests.iter().filter(|r| r.status == 304).count();
    let _ = child.kill();
    let _ = child.wait();

    let measured_polls = f64::from(polls);
    let per_hour = charged as f64 / measured_polls * (3600.0 / GUIDE_INTERVAL_SECS);
    let rss_mb = rss.map(|kb| kb as f64 / 1024.0);
    let calls_ok = per_hour <= TARGET_CALLS_PER_HOUR;
    let rss_ok = rss_mb.is_some_and(|mb| mb <= TARGET_RSS_MB);
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!("bench idle: {polls} polls in {elapsed:.1}s at a 1 s interval ({binary})");
    println!(
        "  requests in the window: {} ({not_modified} answered 304)",
        window_requests.len()
    );
    println!("{:<44} {:>10} {:>10}  ", "measure", "value", "target");
    println!(
        "{:<44} {:>10.1} {:>10}  {}",
        "counted API calls per idle hour (30 s poll)",
        per_hour,
        format!("<= {TARGET_CALLS_PER_HOUR}"),
        verdict(calls_ok)
    );
    println!(
        "{:<44} {:>10} {:>10}  {}",
        "idle RSS (MB)",
        rss_mb.map_or("n/a".to_string(), |mb| format!("{mb:.1}")),
        format!("<= {TARGET_RSS_MB}"),
        verdict(rss_ok)
    );
    if !(calls_ok && rss_ok) {
        std::process::exit(1);
    }
}

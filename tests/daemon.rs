//! `agent-runner serve` against the GitHub fake: the real binary, real Docker (for the tests
//! that run a task), the replay model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::{FakeGitHub, serve_calculator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "ghp_daemonSecretToken0123456789abcd";
const WEBHOOK_SECRET: &str = "whsec-daemon-test-0123";
const TASK_ID: &str = "5d1f0a4e-7c2b-4e8a-9f60-3b7c2d9e8a10";
const DISPATCH: &str = "acme/dispatch";
const TARGET: &str = "acme/calculator";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dispatch_body(task_id: &str) -> String {
    support::dispatch_body(
        task_id,
        Some("acme/calculator#1"),
        "Fix add(): it subtracts.",
    )
}

struct World {
    gh: FakeGitHub,
    tmp: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let gh = FakeGitHub::start(TOKEN).await;
        let tmp = tempfile::tempdir().unwrap();
        serve_calculator(&gh, tmp.path(), "2 + 3 gives -1.");
        World { gh, tmp }
    }

    fn dispatch_issue(&self, body: &str) -> u64 {
        self.gh.add_issue(
            DISPATCH,
            "Fix add()",
            body,
            &["copilot-agent"],
            "handsfree-bot",
            "MEMBER",
        )
    }

    /// Starts `serve` as `agent` with its own state directory; returns it and its address.
    fn serve(&self, agent: &str, extra_env: &[(&str, &str)]) -> Runner {
        let addr = free_addr();
        let state = self.tmp.path().join(format!("state-{agent}"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"));
        command
            .args(["serve", "--listen", &addr, "--llm"])
            .arg(format!(
                "replay:{}",
                root().join("examples/calculator/fix.jsonl").display()
            ))
            .current_dir(root())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("GITHUB_TOKEN", TOKEN)
            .env("GITHUB_API_URL", self.gh.api_url())
            .env("DISPATCH_REPO", DISPATCH)
            .env("AGENT_NAME", agent)
            .env("AGENT_RUNNER_STATE_DIR", &state)
            .env("GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("POLL_INTERVAL_SECONDS", "1")
            .env("LOG_LEVEL", "DEBUG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.tmp.path().join(format!("{agent}.log"))).unwrap())
            .kill_on_drop(true);
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            command.env("DOCKER_HOST", host);
        }
        command.envs(extra_env.iter().copied());
        Runner {
            child: command.spawn().unwrap(),
            addr,
            log: self.tmp.path().join(format!("{agent}.log")),
        }
    }

    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&FakeGitHub) -> bool,
    ) {
        let start = Instant::now();
        while !done(&self.gh) {
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; logs in {}",
                self.tmp.path().display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self, agent: &str) -> String {
        std::fs::read_to_string(self.tmp.path().join(format!("{agent}.log"))).unwrap_or_default()
    }
}

struct Runner {
    child: tokio::process::Child,
    addr: String,
    #[allow(dead_code)]
    log: PathBuf,
}

impl Runner {
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A minimal HTTP/1.1 exchange; returns the status code and body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let start = Instant::now();
    let mut stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot reach the runner at {addr}: {e}"),
        }
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn issues_event(number: u64, body: &str) -> Vec<u8> {
    serde_json::json!({
        "action": "opened",
        "issue": {"number": number, "title": "Fix add()", "body": body, "state": "open",
                  "labels": [{"name": "copilot-agent"}], "user": {"login": "handsfree-bot"},
                  "author_association": "MEMBER"},
        "repository": {"full_name": DISPATCH}
    })
    .to_string()
    .into_bytes()
}

fn list_polls(gh: &FakeGitHub) -> Vec<u16> {
    gh.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == format!("/repos/{DISPATCH}/issues"))
        .map(|r| r.status)
        .collect()
}

fn journal(state: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(state.join("journal.sqlite3")).unwrap();
    let mut stmt = conn
        .prepare("SELECT task_id, state FROM tasks ORDER BY issue")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// No Docker needed: an issue without a task id is rejected once, whatever the number of
/// polls and webhook deliveries; bad signatures queue nothing; an idle poll is a 304.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_signatures_and_polling_see_an_issue_once() {
    let world = World::new().await;
    let runner = world.serve("runner-a", &[]);
    let (status, body) = http(&runner.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    // Before any issue exists: bad signatures are refused and queue nothing.
    let event = issues_event(1, "no metadata here");
    let event_header = ("x-github-event", "issues".to_string());
    let (status, _) = http(
        &runner.addr,
        "POST",
        "/webhook",
        std::slice::from_ref(&event_header),
        &event,
    )
    .await;
    assert_eq!(status, 401);
    let bad = ("x-hub-signature-256", "sha256=00ff".to_string());
    let (status, _) = http(
        &runner.addr,
        "POST",
        "/webhook",
        &[event_header.clone(), bad],
        &event,
    )
    .await;
    assert_eq!(status, 401);

    let n = world.dispatch_issue("no metadata here");
    let good = ("x-hub-signature-256", sign(&event));
    let (status, _) = http(
        &runner.addr,
        "POST",
        "/webhook",
        &[event_header, good],
        &event,
    )
    .await;
    assert_eq!(status, 202);
    world
        .wait_for("the failed label", Duration::from_secs(60), |gh| {
            gh.labels_of(DISPATCH, n)
                .contains(&"agent:failed".to_string())
        })
        .await;
    // Several more poll intervals: nothing new happens, and the polls are 304s.
    let comments = world.gh.comments(DISPATCH, n).len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        world.gh.comments(DISPATCH, n).len(),
        comments,
        "processed twice"
    );
    assert!(comments <= 1);
    let polls = list_polls(&world.gh);
    assert!(polls.len() >= 4, "polls: {polls:?}");
    assert_eq!(
        polls[polls.len() - 3..],
        [304, 304, 304],
        "idle polls are conditional: {polls:?}"
    );
    let (status, metrics) = http(&runner.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("agent_tasks_processed_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("github_api_rate_limit_remaining"));
    runner.stop().await;
    let rows = journal(&world.tmp.path().join("state-runner-a"));
    assert_eq!(
        rows,
        [(format!("issue-{n}"), "failed".to_string())],
        "{}",
        world.log("runner-a")
    );
}

/// A whole task under 5xx, a secondary rate limit and an exhausted rate limit: it still
/// finishes, with one PR, and the runner waited for the reset.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_finishes_through_rate_limits_and_server_errors() {
    let world = World::new().await;
    let n = world.dispatch_issue(&dispatch_body(TASK_ID));
    let gh = &world.gh;
    gh.fail_next("GET", &format!("/repos/{DISPATCH}/issues"), 502, &[]);
    gh.fail_next(
        "POST",
        &format!("/repos/{DISPATCH}/issues/{n}/labels"),
        429,
        &[("retry-after", "1")],
    );
    gh.fail_next(
        "GET",
        &format!("/repos/{DISPATCH}/issues/{n}/comments"),
        403,
        &[("retry-after", "1")],
    );
    let reset = (chrono::Utc::now().timestamp() + 3).to_string();
    gh.fail_next(
        "GET",
        &format!("/repos/{TARGET}"),
        403,
        &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", reset.as_str()),
        ],
    );
    gh.fail_next("GET", &format!("/repos/{TARGET}/pulls"), 503, &[]);
    let started = Instant::now();
    let runner = world.serve("runner-a", &[]);
    world
        .wait_for("the done label", Duration::from_secs(300), |gh| {
            let labels = gh.labels_of(DISPATCH, n);
            labels.contains(&"agent:done".to_string())
                || labels.contains(&"agent:failed".to_string())
        })
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "did not wait for the reset"
    );
    runner.stop().await;
    let labels = gh.labels_of(DISPATCH, n);
    assert!(
        labels.contains(&"agent:done".to_string()),
        "{labels:?}\n{}",
        world.log("runner-a")
    );
    assert!(!labels.contains(&"agent:in-progress".to_string()));
    assert_eq!(gh.pulls(TARGET).len(), 1);
    // Failures the runner rode out are warnings: an ERROR line would page an operator for
    // nothing.
    let log = world.log("runner-a");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let rows = journal(&world.tmp.path().join("state-runner-a"));
    assert_eq!(rows, [(TASK_ID.to_string(), "done".to_string())]);
}

/// Two runners on one dispatch repository: one task, one worker, one PR.
#[tokio::test(flavor = "multi_thread")]
async fn two_runners_never_both_work_one_task() {
    let world = World::new().await;
    let n = world.dispatch_issue(&dispatch_body(TASK_ID));
    let a = world.serve("runner-a", &[]);
    let b = world.serve("runner-b", &[]);
    world
        .wait_for("the done label", Duration::from_secs(300), |gh| {
            gh.labels_of(DISPATCH, n)
                .contains(&"agent:done".to_string())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.stop().await;
    b.stop().await;
    assert_eq!(world.gh.pulls(TARGET).len(), 1);
    let comments = world.gh.comments(DISPATCH, n);
    let completed: Vec<&String> = comments.iter().filter(|c| c.starts_with('✅')).collect();
    assert_eq!(completed.len(), 1, "{comments:#?}");
    let cloned = [("runner-a"), ("runner-b")]
        .iter()
        .filter(|agent| {
            let state = world.tmp.path().join(format!("state-{agent}"));
            journal(&state).iter().any(|(_, s)| s == "done")
        })
        .count();
    assert_eq!(cloned, 1, "exactly one runner did the task");
}

/// A spent daily token cap holds queued tasks back instead of failing them one by one; with
/// tokens left (a raised cap here, the next UTC day in life) the same task runs to its PR.
#[tokio::test(flavor = "multi_thread")]
async fn a_spent_daily_token_cap_holds_tasks_until_there_are_tokens_again() {
    let world = World::new().await;
    let state = world.tmp.path().join("state-capped");
    let today = agent_runner::agent::daily_tokens_key(chrono::Utc::now().date_naive());
    let store = agent_runner::store::Store::open(&state).await.unwrap();
    store.add_to_counter(&today, 5000).await.unwrap();
    drop(store);

    let n = world.dispatch_issue(&dispatch_body(TASK_ID));
    let runner = world.serve("capped", &[("AGENT_RUNNER_MAX_TOKENS_PER_DAY", "5000")]);
    let started = Instant::now();
    while !world.log("capped").contains("the daily token cap") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no word of the cap:\n{}",
            world.log("capped")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few polls later: still queued, nothing started, nothing failed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    runner.stop().await;
    assert_eq!(
        journal(&state),
        [(TASK_ID.to_string(), "queued".to_string())]
    );
    let labels = world.gh.labels_of(DISPATCH, n);
    assert!(
        !labels.iter().any(|l| l.starts_with("agent:")),
        "{labels:?}"
    );
    assert!(world.gh.pulls(TARGET).is_empty());

    let runner = world.serve("capped", &[("AGENT_RUNNER_MAX_TOKENS_PER_DAY", "1000000")]);
    world
        .wait_for("the done label", Duration::from_secs(300), |gh| {
            gh.labels_of(DISPATCH, n)
                .iter()
                .any(|l| l == "agent:done" || l == "agent:failed")
        })
        .await;
    runner.stop().await;
    assert!(
        world
            .gh
            .labels_of(DISPATCH, n)
            .contains(&"agent:done".to_string()),
        "{}",
        world.log("capped")
    );
    let store = agent_runner::store::Store::open(&state).await.unwrap();
    assert_eq!(
        store.counter(&today).await.unwrap(),
        5000 + 1012 + 64,
        "the task's tokens are counted"
    );
}

//! `agent-runner serve` killed with SIGKILL at many points of a task and restarted each time:
//! the journal resumes it, and in the end every task is done or failed once, with one PR,
//! one "completed" comment and no container left behind.
//!
//! Kill points are deterministic. Request triggers fire inside the GitHub fake's handling of
//! the request ([`HookPoint::After`]: the effect happened, the runner never sees the answer).
//! Journal and transcript triggers are polled, and also checked when any request arrives
//! ([`HookPoint::Before`]), so no GitHub side effect slips past the kill.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{FakeGitHub, HookPoint, RecordedRequest, serve_calculator};

const TOKEN: &str = "ghp_crashTestToken0123456789abcdefgh";
const TASK_1: &str = "7a3e9c10-5b2d-4f8e-a1c4-2e9d8b7f6a01";
const TASK_2: &str = "7a3e9c10-5b2d-4f8e-a1c4-2e9d8b7f6a02";
const DISPATCH: &str = "acme/dispatch";
const TARGET: &str = "acme/calculator";

/// Unique per test process: other runs of this test may share the Docker daemon, and the
/// container check is by runner id.
fn agent() -> String {
    format!("crash-runner-{}", std::process::id())
}

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

type RequestMatch = Box<dyn Fn(&RecordedRequest) -> bool + Send + Sync>;

/// Where one cycle kills the runner.
enum Trigger {
    /// Right after the fake applied a matching request, before the runner sees the answer.
    Request(RequestMatch),
    /// As soon as the journal has this event for task 1 (logged before its side effect).
    Journal(&'static str),
    /// As soon as task 1's agent transcript has this event (the agent phase).
    Transcript(&'static str),
}

struct KillPoint {
    name: &'static str,
    trigger: Trigger,
}

fn request(method: &'static str, path: String, body_has: Option<&'static str>) -> RequestMatch {
    Box::new(move |r: &RecordedRequest| {
        r.method == method
            && r.path.starts_with(&path)
            && body_has.is_none_or(|needle| r.body.contains(needle))
    })
}

/// The kill points, in the order a task reaches them. Issue 1 carries task 1.
fn kill_points() -> Vec<KillPoint> {
    let issue = format!("/repos/{DISPATCH}/issues/1");
    let git = format!("/git/{TARGET}.git");
    let point = |name, trigger| KillPoint { name, trigger };
    use Trigger::{Journal, Request, Transcript};
    vec![
        point("leased", Journal("leased")),
        point("claiming", Journal("claiming")),
        point(
            "in-progress label added",
            Request(request("POST", format!("{issue}/labels"), None)),
        ),
        point(
            "started comment posted",
            Request(request(
                "POST",
                format!("{issue}/comments"),
                Some("started processing"),
            )),
        ),
        point("claimed", Journal("claimed")),
        point(
            "target repository read",
            Request(Box::new(|r: &RecordedRequest| {
                r.method == "GET" && r.path == format!("/repos/{TARGET}")
            })),
        ),
        point("cloning", Journal("cloning")),
        point(
            "clone: refs advertised",
            Request(request("GET", format!("{git}/info/refs"), None)),
        ),
        point(
            "clone: pack fetched",
            Request(request("POST", format!("{git}/git-upload-pack"), None)),
        ),
        point("agent phase entered", Journal("agent")),
        point("baseline test run", Transcript("baseline_test")),
        point("model replied", Transcript("reply")),
        point("edit applied", Transcript("edit")),
        point("test after the edit", Transcript("test")),
        point("agent stopped", Transcript("stop")),
        point("pushing", Journal("pushing")),
        point(
            "push: pack sent",
            Request(request("POST", format!("{git}/git-receive-pack"), None)),
        ),
        point("opening_pr", Journal("opening_pr")),
        point(
            "open PRs listed",
            Request(request("GET", format!("/repos/{TARGET}/pulls"), None)),
        ),
        point(
            "PR opened or updated",
            Request(Box::new(|r: &RecordedRequest| {
                (r.method == "POST" || r.method == "PATCH")
                    && r.path.starts_with(&format!("/repos/{TARGET}/pulls"))
            })),
        ),
        point("PR number journalled", Journal("pr")),
        point("commenting", Journal("commenting")),
        point(
            "completed comment posted",
            Request(request("POST", format!("{issue}/comments"), Some("✅"))),
        ),
        point("labelling", Journal("labelling")),
        point(
            "done label added",
            Request(request(
                "POST",
                format!("{issue}/labels"),
                Some("agent:done"),
            )),
        ),
        point(
            "in-progress label removed",
            Request(request(
                "DELETE",
                format!("{issue}/labels/agent%3Ain-progress"),
                None,
            )),
        ),
    ]
}

/// What the current cycle is waiting for, shared with the fake's hook.
struct Cycle {
    pid: Option<u32>,
    point: Option<usize>,
    killed: bool,
    /// Journal events with a larger id belong to this cycle.
    events_after: i64,
}

struct Watch {
    points: Vec<KillPoint>,
    cycle: Mutex<Cycle>,
    state: PathBuf,
}

impl Watch {
    fn journal_has(&self, kind: &str, after: i64) -> bool {
        let path = self.state.join("journal.sqlite3");
        if !path.exists() {
            return false;
        }
        let Ok(conn) = rusqlite::Connection::open(&path) else {
            return false;
        };
        conn.query_row(
            "SELECT COUNT(*) FROM events WHERE task_id = ?1 AND kind = ?2 AND id > ?3",
            rusqlite::params![TASK_1, kind, after],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n > 0)
    }

    fn transcript_has(&self, kind: &str) -> bool {
        let path = self
            .state
            .join("transcripts")
            .join(format!("{TASK_1}.jsonl"));
        let needle = format!("\"kind\":\"{kind}\"");
        std::fs::read_to_string(path).is_ok_and(|t| t.contains(&needle))
    }

    /// Whether a journal or transcript trigger of the current cycle has been reached.
    fn state_reached(&self, cycle: &Cycle) -> bool {
        match cycle.point.map(|i| &self.points[i].trigger) {
            Some(Trigger::Journal(kind)) => self.journal_has(kind, cycle.events_after),
            Some(Trigger::Transcript(kind)) => self.transcript_has(kind),
            _ => false,
        }
    }

    /// Kills the runner if the current cycle's trigger fired; returns whether a request may
    /// go ahead (a dead runner's leftovers are dropped).
    fn check(&self, point: Option<(HookPoint, &RecordedRequest)>) -> bool {
        let mut cycle = self.cycle.lock().unwrap();
        let Some(pid) = cycle.pid else {
            return true;
        };
        if cycle.killed {
            return false;
        }
        let fire = match (cycle.point.map(|i| &self.points[i].trigger), point) {
            (Some(Trigger::Request(matches)), Some((HookPoint::After, r))) => matches(r),
            (Some(Trigger::Request(_)), _) => false,
            (_, Some((HookPoint::After, _))) => false,
            _ => self.state_reached(&cycle),
        };
        if fire {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kill -KILL {pid} failed");
            cycle.killed = true;
            // A request that arrived after the trigger is the runner's next side effect:
            // it must not happen.
            return !matches!(point, Some((HookPoint::Before, _)));
        }
        true
    }
}

fn max_event_id(state: &Path) -> i64 {
    let path = state.join("journal.sqlite3");
    if !path.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
        .unwrap()
}

fn journal(state: &Path) -> Vec<(String, String, Option<i64>)> {
    let conn = rusqlite::Connection::open(state.join("journal.sqlite3")).unwrap();
    let mut stmt = conn
        .prepare("SELECT task_id, state, pr_number FROM tasks ORDER BY issue")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn spawn(gh: &FakeGitHub, tmp: &Path, state: &Path, run: usize) -> std::process::Child {
    let log = std::fs::File::create(tmp.join(format!("run-{run:02}.log"))).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--llm"])
        .arg(format!(
            "replay:{}",
            root().join("examples/calculator/fix.jsonl").display()
        ))
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tmp)
        .env("GITHUB_TOKEN", TOKEN)
        .env("GITHUB_API_URL", gh.api_url())
        .env("DISPATCH_REPO", DISPATCH)
        .env("AGENT_NAME", agent())
        .env("AGENT_RUNNER_STATE_DIR", state)
        .env("POLL_INTERVAL_SECONDS", "1")
        .env("MAX_CONCURRENT_TASKS", "1")
        .env("LOG_LEVEL", "DEBUG")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        command.env("DOCKER_HOST", host);
    }
    command.spawn().unwrap()
}

fn containers() -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=agent-runner.runner-id={}", agent()),
        ])
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker ps failed: Docker must be reachable for this test"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_every_step_loses_nothing_and_duplicates_nothing() {
    let started = Instant::now();
    assert_eq!(
        containers(),
        "",
        "containers of {} exist before the test",
        agent()
    );
    let gh = FakeGitHub::start(TOKEN).await;
    // Kept on failure for its logs; removed at the end of a passing run.
    let tmp = tempfile::tempdir().unwrap().keep();
    serve_calculator(&gh, tmp.as_path(), "2 + 3 gives -1.");
    let issues: Vec<u64> = [TASK_1, TASK_2]
        .iter()
        .map(|task| {
            gh.add_issue(
                DISPATCH,
                "Fix add()",
                &dispatch_body(task),
                &["copilot-agent"],
                "handsfree-bot",
                "MEMBER",
            )
        })
        .collect();
    assert_eq!(issues, [1, 2], "the kill points name issue 1");

    let state = tmp.as_path().join("state");
    let watch = Arc::new(Watch {
        points: kill_points(),
        cycle: Mutex::new(Cycle {
            pid: None,
            point: None,
            killed: false,
            events_after: 0,
        }),
        state: state.clone(),
    });
    assert!(watch.points.len() >= 20);
    {
        let watch = watch.clone();
        gh.set_hook(move |point, r| watch.check(Some((point, r))));
    }

    let logs = tmp.clone();
    let fail = |what: String| -> ! { panic!("{what}; runner logs in {}", logs.display()) };
    let mut timeline = Vec::new();
    for i in 0..watch.points.len() {
        // A transcript left by the previous cycle must not fire this cycle's trigger.
        let _ = std::fs::remove_file(state.join("transcripts").join(format!("{TASK_1}.jsonl")));
        let mut child;
        {
            let mut cycle = watch.cycle.lock().unwrap();
            cycle.point = Some(i);
            cycle.killed = false;
            cycle.events_after = max_event_id(&state);
            child = spawn(&gh, &logs, &state, i);
            cycle.pid = Some(child.id());
        }
        let cycle_start = Instant::now();
        loop {
            watch.check(None);
            if watch.cycle.lock().unwrap().killed {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                fail(format!(
                    "the runner exited ({status}) before kill point {i} `{}`",
                    watch.points[i].name
                ));
            }
            if cycle_start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                fail(format!(
                    "kill point {i} `{}` was never reached",
                    watch.points[i].name
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.wait().unwrap();
        watch.cycle.lock().unwrap().pid = None;
        timeline.push(format!(
            "{i:2} {:<28} after {:.1}s",
            watch.points[i].name,
            cycle_start.elapsed().as_secs_f64()
        ));
    }

    // The last start runs everything to the end.
    watch.cycle.lock().unwrap().point = None;
    let mut child = spawn(&gh, &logs, &state, watch.points.len());
    let finished = |gh: &FakeGitHub| {
        issues.iter().all(|&n| {
            let labels = gh.labels_of(DISPATCH, n);
            labels
                .iter()
                .any(|l| l == "agent:done" || l == "agent:failed")
                && !labels.iter().any(|l| l == "agent:in-progress")
        }) && journal(&state)
            .iter()
            .all(|(_, s, _)| s == "done" || s == "failed")
    };
    let last = Instant::now();
    while !finished(&gh) {
        if last.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            fail("the tasks did not finish after the last restart".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    eprintln!(
        "kill points:\n{}\ntotal {:.1}s",
        timeline.join("\n"),
        started.elapsed().as_secs_f64()
    );

    let rows = journal(&state);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let pulls = gh.pulls(TARGET);
    for ((task, state, pr), &n) in rows.iter().zip(&issues) {
        let labels = gh.labels_of(DISPATCH, n);
        let comments = gh.comments(DISPATCH, n);
        let completed = comments.iter().filter(|c| c.starts_with('✅')).count();
        let failed = comments.iter().filter(|c| c.starts_with('❌')).count();
        let announced = comments.iter().filter(|c| c.starts_with("🤖")).count();
        let prs: Vec<u64> = pulls
            .iter()
            .filter(|p| p.body.contains(task.as_str()))
            .map(|p| p.number)
            .collect();
        let context =
            format!("task {task} (#{n}): {state}, labels {labels:?}, comments {comments:#?}");
        assert_eq!(state, "done", "{context}");
        assert!(labels.contains(&"agent:done".to_string()), "{context}");
        assert!(!labels.contains(&"agent:failed".to_string()), "{context}");
        assert_eq!(completed, 1, "exactly one completed comment: {context}");
        assert_eq!(failed, 0, "{context}");
        assert_eq!(announced, 1, "exactly one started comment: {context}");
        assert_eq!(prs.len(), 1, "exactly one PR: {context}");
        assert_eq!(*pr, Some(prs[0] as i64), "{context}");
    }
    assert_eq!(pulls.len(), 2, "{pulls:#?}");
    assert_eq!(containers(), "", "containers left behind");
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "the crash test took {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

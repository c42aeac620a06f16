//! The real binary, a real Docker Engine: a `solve` killed with SIGKILL leaves its sandbox
//! container behind, and the next run of the same runner removes it; SIGINT and SIGTERM
//! remove the container before the process exits (`solve` and `run-issue` opt in to that
//! with `sandbox::stop_tasks_on_signals`; the daemon drains instead). These tests FAIL (not skip) when Docker
//! is unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_runner::sandbox;
use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;

/// A transcript whose only reply makes no edit.
const NO_EDIT_REPLY: &str = r#"{"reply": "There is nothing to change.", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}"#;

async fn docker() -> Docker {
    sandbox::connect()
        .await
        .unwrap_or_else(|e| panic!("the sandbox crash tests need a running Docker Engine: {e}"))
}

/// One test's scratch space and runner id; removes whatever its containers are on the way
/// out, pass or fail.
struct World {
    tmp: tempfile::TempDir,
    agent: String,
}

impl World {
    fn new(name: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("replay.jsonl"),
            format!("{NO_EDIT_REPLY}\n"),
        )
        .unwrap();
        World {
            tmp,
            agent: format!("sandbox-{name}-test-{}", std::process::id()),
        }
    }

    /// `solve` on the example repository with `test_cmd`, output into files (a pipe nobody
    /// reads could block the child).
    fn spawn(&self, run: &str, test_cmd: &str) -> tokio::process::Child {
        self.spawn_with(run, test_cmd, &[])
    }

    fn spawn_with(&self, run: &str, test_cmd: &str, extra: &[&str]) -> tokio::process::Child {
        let replay = format!("replay:{}", self.tmp.path().join("replay.jsonl").display());
        let log = |suffix: &str| {
            std::fs::File::create(self.tmp.path().join(format!("{run}.{suffix}"))).unwrap()
        };
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"));
        command
            .args([
                "solve",
                "--repo",
                "examples/calculator",
                "--instruction",
                "x",
                "--llm",
                &replay,
                "--test-cmd",
                test_cmd,
                "--max-iterations",
                "1",
            ])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("AGENT_RUNNER_STATE_DIR", self.tmp.path().join("state"))
            .env("AGENT_NAME", &self.agent)
            .env("LOG_LEVEL", "INFO")
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"))
            .kill_on_drop(true);
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            command.env("DOCKER_HOST", host);
        }
        command.spawn().unwrap()
    }

    fn output(&self, run: &str) -> String {
        let read = |suffix: &str| {
            std::fs::read_to_string(self.tmp.path().join(format!("{run}.{suffix}")))
                .unwrap_or_default()
        };
        format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
    }

    /// Containers of this world's runner id whose owner label names process `pid`.
    async fn containers_of(&self, docker: &Docker, pid: u32) -> Vec<String> {
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{}={}", sandbox::LABEL_RUNNER_ID, self.agent)],
        )]);
        docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap()
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(sandbox::LABEL_OWNER))
                    .and_then(|owner| owner.split(':').nth(1))
                    == Some(pid.to_string().as_str())
            })
            .filter_map(|c| c.id)
            .collect()
    }

    /// Waits until process `child` has a sandbox container running its (slow) baseline test.
    async fn wait_for_container(
        &self,
        docker: &Docker,
        child: &mut tokio::process::Child,
        run: &str,
    ) -> String {
        let pid = child.id().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the run ended ({status}) before its sandbox appeared\n{}",
                    self.output(run)
                );
            }
            if let [id] = self.containers_of(docker, pid).await.as_slice()
                && is_running_a_command(docker, id).await
            {
                return id.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "no sandbox container of pid {pid} after 180 s\n{}",
                self.output(run)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Synchronous on purpose: this may run while a panic unwinds out of the runtime.
        let label = format!("label={}={}", sandbox::LABEL_RUNNER_ID, self.agent);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-fv"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// Whether the container has an exec running (the baseline test), i.e. the run is past
/// starting the sandbox and copying the work tree.
async fn is_running_a_command(docker: &Docker, id: &str) -> bool {
    match docker.inspect_container(id, None).await {
        Ok(info) => {
            info.state.and_then(|s| s.running) == Some(true)
                && info.exec_ids.is_some_and(|e| !e.is_empty())
        }
        Err(_) => false,
    }
}

async fn exists(docker: &Docker, id: &str) -> bool {
    docker.inspect_container(id, None).await.is_ok()
}

async fn wait_with_limit(
    child: &mut tokio::process::Child,
    limit: Duration,
    world: &World,
    run: &str,
) -> std::process::ExitStatus {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => panic!(
            "the run did not end within {limit:?}\n{}",
            world.output(run)
        ),
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_leaves_its_container_and_the_next_run_removes_it() {
    let started = Instant::now();
    let docker = docker().await;
    assert!(root().join("examples/calculator").is_dir());
    let world = World::new("crash");

    let mut first = world.spawn("first", "sleep 60");
    let killed_pid = first.id().unwrap();
    let container = world.wait_for_container(&docker, &mut first, "first").await;
    first.start_kill().unwrap(); // SIGKILL: no handler, no drop, no cleanup
    let status = wait_with_limit(&mut first, Duration::from_secs(10), &world, "first").await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    // The crash left the container (still running its `sleep infinity`).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        exists(&docker, &container).await,
        "the killed run's container vanished by itself"
    );

    let mut second = world.spawn("second", "true");
    let status = wait_with_limit(&mut second, Duration::from_secs(180), &world, "second").await;
    let output = world.output("second");
    // One reply without an edit: NOT SOLVED (1). Anything else means it never got that far.
    assert!(matches!(status.code(), Some(0 | 1)), "{status}\n{output}");
    assert!(output.contains("tests before: exit 0"), "{output}");
    assert!(
        output.contains("removed sandbox containers left behind by crashed runs")
            && output.contains("removed=1"),
        "{output}"
    );
    assert!(!exists(&docker, &container).await);
    assert_eq!(
        world.containers_of(&docker, killed_pid).await,
        Vec::<String>::new()
    );
    // The second run cleaned up after itself too.
    let second_pid = second.id().unwrap_or(0);
    assert!(world.containers_of(&docker, second_pid).await.is_empty());
    eprintln!("TIMING crash test: {:.2}s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_sigterm_remove_the_container_before_exit() {
    let started = Instant::now();
    let docker = docker().await;
    let world = World::new("signal");
    for (run, signal) in [("int", "-INT"), ("term", "-TERM")] {
        let mut child = world.spawn(run, "sleep 60");
        let pid = child.id().unwrap();
        let container = world.wait_for_container(&docker, &mut child, run).await;
        let kill = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let interrupted = Instant::now();
        let status = wait_with_limit(&mut child, Duration::from_secs(20), &world, run).await;
        let output = world.output(run);
        // Exited by itself (not killed by the signal), promptly, after removing the sandbox.
        assert_eq!(status.code(), Some(1), "{output}");
        assert!(
            output.contains(&format!("interrupted by SIG{}", &signal[1..])),
            "{output}"
        );
        assert!(interrupted.elapsed() < Duration::from_secs(10));
        assert!(!exists(&docker, &container).await, "{output}");
        assert!(world.containers_of(&docker, pid).await.is_empty());
    }
    eprintln!(
        "TIMING signal test: {:.2}s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_command_has_network_and_the_tests_have_none() {
    let started = Instant::now();
    let docker = docker().await;
    let world = World::new("setup");
    let config = world.tmp.path().join("agent-runner.toml");
    // The setup records the interfaces it saw; nothing is contacted.
    std::fs::write(
        &config,
        "[sandbox]\nsetup_cmd = \"ls /sys/class/net > .net-during-setup\"\n",
    )
    .unwrap();
    let test_cmd = "grep -qx eth0 .net-during-setup && test \"$(ls /sys/class/net)\" = lo";
    let mut child = world.spawn_with("setup", test_cmd, &["--config", config.to_str().unwrap()]);
    let pid = child.id().unwrap();
    let status = wait_with_limit(&mut child, Duration::from_secs(180), &world, "setup").await;
    let output = world.output("setup");
    assert!(matches!(status.code(), Some(0 | 1)), "{status}\n{output}");
    assert!(output.contains("setup phase done"), "{output}");
    assert!(output.contains("tests before: exit 0"), "{output}");
    assert!(world.containers_of(&docker, pid).await.is_empty());
    eprintln!("TIMING setup test: {:.2}s", started.elapsed().as_secs_f64());
}

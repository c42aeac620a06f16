//! The Docker Compose deployment (`docker-compose.agent-runner.yml` + `Dockerfile`): the
//! stack is configured, built from this build's binary on the offline base image, brought up
//! against the GitHub fake, answers `/healthz`, becomes `healthy`, and turns one dispatch
//! issue into a pull request with sandboxes it starts through the mounted Docker socket.
//! Needs Docker Engine and `docker compose` or `docker-compose`; fails without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{FakeGitHub, serve_calculator};
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE_FILE: &str = "docker-compose.agent-runner.yml";
const SERVICE: &str = "agent-runner";
const DISPATCH: &str = "acme/dispatch";
const TARGET: &str = "acme/calculator";
const TASK_ID: &str = "0c6f3e52-9a41-4d8b-b7e2-5a1d3c9f7e64";
/// Where the image keeps the example's recorded model reply (see `Dockerfile`).
const REPLAY_IN_IMAGE: &str = "/usr/local/share/agent-runner/examples/calculator/fix.jsonl";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => PathBuf::from(
            host.strip_prefix("unix://")
                .unwrap_or_else(|| panic!("this test needs a unix socket DOCKER_HOST, not {host}")),
        ),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// `docker compose` (v2) if the plugin is there, else `docker-compose` (v1).
fn compose_program() -> Vec<String> {
    let works = |program: &[&str]| {
        Command::new(program[0])
            .args(&program[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    for program in [&["docker", "compose"][..], &["docker-compose"][..]] {
        if works(program) {
            return program.iter().map(|s| s.to_string()).collect();
        }
    }
    panic!(
        "neither `docker compose` nor `docker-compose` works; install one (Debian: apt-get install docker-compose) to test the compose deployment"
    );
}

/// The binary under test as a path inside the build context (the repository).
fn binary_in_context() -> String {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_agent-runner"));
    if let Ok(relative) = binary.strip_prefix(root())
        && relative.starts_with("target")
    {
        return relative.to_str().unwrap().to_string();
    }
    // A target directory elsewhere (CARGO_TARGET_DIR): copy it where .dockerignore lets it in.
    let copy = root().join("target/compose/agent-runner");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&binary, &copy).unwrap();
    "target/compose/agent-runner".to_string()
}

/// One compose project; `down -v` (and the removal of its image and of any sandbox its
/// runner left) when dropped, whatever happened.
struct Stack {
    program: Vec<String>,
    project: String,
    image: String,
    agent: String,
    env_file: PathBuf,
    env: Vec<(String, String)>,
}

impl Stack {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            // An empty env file: a developer's `.env` must not change what is tested.
            .arg("--env-file")
            .arg(&self.env_file)
            .args(["-f", COMPOSE_FILE, "-p", &self.project])
            .args(args)
            .current_dir(root())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_else(|_| "/".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            command.env("DOCKER_HOST", host);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "compose {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        let out = self.run(&["logs", "--no-color", "--tail", "200", SERVICE]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn container_id(&self) -> String {
        self.ok(&["ps", "-q", SERVICE]).trim().to_string()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- runner logs ---\n{}", self.logs());
        }
        let down = self.run(&["down", "-v", "--remove-orphans", "-t", "10"]);
        if !down.status.success() {
            eprintln!(
                "compose down failed: {}",
                String::from_utf8_lossy(&down.stderr)
            );
        }
        // Sandboxes the runner left (e.g. killed mid-task by `down`).
        let label = format!(
            "label={}={}",
            agent_runner::sandbox::LABEL_RUNNER_ID,
            self.agent
        );
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        // The image; its parent layers stay as build cache for the next run.
        let _ = Command::new("docker")
            .args(["rmi", "--no-prune", &self.image])
            .output();
    }
}

/// What a killed earlier run of this test left: containers, volume, network and image of
/// every `arcompose<pid>x<random>` project whose pid is no longer running.
fn remove_stacks_of_dead_runs() {
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let projects = docker(&[
        "ps",
        "-a",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ]);
    let mut dead: Vec<&str> = projects
        .lines()
        .filter(|p| {
            p.strip_prefix("arcompose")
                .and_then(|rest| rest.split_once('x'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    dead.sort();
    dead.dedup();
    for project in dead {
        eprintln!("removing the compose stack {project} of a killed earlier run");
        let label = format!("label=com.docker.compose.project={project}");
        for id in docker(&["ps", "-aq", "--filter", &label]).split_whitespace() {
            docker(&["rm", "-f", "-v", id]);
        }
        docker(&["volume", "rm", &format!("{project}_agent-runner-state")]);
        docker(&["network", "rm", &format!("{project}_default")]);
        let suffix = project.trim_start_matches("arcompose");
        docker(&[
            "rmi",
            "--no-prune",
            &format!("agent-runner-compose-test:{suffix}"),
        ]);
    }
}

fn docker_inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `GET path` on `addr`: status and body, or `None` if nothing answers.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The YAML node as text, for "mentions" checks that hold for v1's and v2's `config` output.
fn text(yaml: &Yaml) -> String {
    format!("{yaml:?}")
}

/// `docker compose config`'s view of the file: what the deployment promises.
fn check_config(config: &str, binary: &str) {
    let docs = YamlLoader::load_from_str(config).unwrap();
    let service = &docs[0]["services"][SERVICE];
    assert!(!service.is_badvalue(), "no {SERVICE} service:\n{config}");
    assert_eq!(service["restart"].as_str(), Some("unless-stopped"));
    let test = text(&service["healthcheck"]["test"]);
    assert!(test.contains("http://127.0.0.1:8080/healthz"), "{test}");
    for key in ["mem_limit", "cpus", "pids_limit"] {
        assert!(!service[key].is_badvalue(), "no {key}:\n{config}");
    }
    let volumes = text(&service["volumes"]);
    assert!(
        volumes.contains("agent-runner-state") && volumes.contains("/var/lib/agent-runner"),
        "{volumes}"
    );
    assert!(volumes.contains("/var/run/docker.sock"), "{volumes}");
    assert!(!docs[0]["volumes"]["agent-runner-state"].is_badvalue());
    assert_eq!(service["build"]["args"]["BINARY"].as_str(), Some(binary));
    assert!(text(&service["extra_hosts"]).contains("host.docker.internal"));
    let env = text(&service["environment"]);
    for name in [
        "GITHUB_TOKEN",
        "DISPATCH_REPO",
        "POLL_INTERVAL_SECONDS",
        "LLM_PROVIDER",
    ] {
        assert!(env.contains(name), "{name} not passed: {env}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_stack_serves_healthz_and_completes_a_task() {
    let docker = agent_runner::sandbox::connect()
        .await
        .unwrap_or_else(|e| panic!("the compose deployment test needs Docker: {e}"));
    let program = compose_program();

    // What a user runs first: the sandbox image, and its base tagged for the Dockerfile.
    let build = Command::new(env!("CARGO_BIN_EXE_agent-runner"))
        .args(["sandbox", "build"])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(build.status.success(), "agent-runner sandbox build failed");
    assert_eq!(
        String::from_utf8_lossy(&build.stdout).trim(),
        agent_runner::sandbox::default_image_tag()
    );
    let latest = docker
        .inspect_image(agent_runner::sandbox::BASE_IMAGE_LATEST)
        .await
        .unwrap();
    let base = docker
        .inspect_image(&agent_runner::sandbox::base_image_tag())
        .await
        .unwrap();
    assert_eq!(latest.id, base.id, "sandbox build tags its base image");

    // The fake, reachable from containers as host.docker.internal (extra_hosts).
    // The test's pid names its stack, so a later run can tell a stack whose test was killed
    // (and so never ran `down`) from one still in use by a run in progress.
    remove_stacks_of_dead_runs();
    let suffix = format!(
        "{}x{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let token = format!("ghp_compose{}", uuid::Uuid::new_v4().simple());
    let gh = FakeGitHub::start_on(
        &token,
        std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        "host.docker.internal",
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    serve_calculator(&gh, tmp.path(), "2 + 3 gives -1.");
    let body = support::dispatch_body(
        TASK_ID,
        Some("acme/calculator#1"),
        "Fix add(): it subtracts.",
    );
    let issue = gh.add_issue(
        DISPATCH,
        "Fix add()",
        &body,
        &["copilot-agent"],
        "handsfree-bot",
        "MEMBER",
    );

    let socket = docker_socket();
    let gid = std::fs::metadata(&socket)
        .unwrap_or_else(|e| panic!("cannot stat the Docker socket {}: {e}", socket.display()))
        .gid();
    let port = free_port();
    let binary = binary_in_context();
    let env_file = tmp.path().join("empty.env");
    std::fs::write(&env_file, "").unwrap();
    let (project, image, agent) = (
        format!("arcompose{suffix}"),
        format!("agent-runner-compose-test:{suffix}"),
        format!("compose-{suffix}"),
    );
    let env = [
        ("DOCKER_GID", gid.to_string()),
        ("DOCKER_SOCKET", socket.display().to_string()),
        ("AGENT_RUNNER_IMAGE", image.clone()),
        ("AGENT_RUNNER_BINARY", binary.clone()),
        (
            "AGENT_RUNNER_BASE_IMAGE",
            agent_runner::sandbox::base_image_tag(),
        ),
        ("AGENT_RUNNER_PUBLISH", format!("127.0.0.1:{port}")),
        ("AGENT_RUNNER_HEALTH_INTERVAL", "1s".to_string()),
        ("AGENT_RUNNER_GITHUB_TOKEN", token.clone()),
        ("GITHUB_API_URL", gh.api_url()),
        ("HANDSFREE_AGENT_DISPATCH_REPO", DISPATCH.to_string()),
        ("AGENT_POLL_INTERVAL", "1".to_string()),
        ("AGENT_NAME", agent.clone()),
        ("LLM_PROVIDER", "replay".to_string()),
        ("LLM_REPLAY_FILE", REPLAY_IN_IMAGE.to_string()),
        ("LOG_LEVEL", "DEBUG".to_string()),
    ];
    let stack = Stack {
        program,
        project,
        image,
        agent,
        env_file,
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };

    check_config(&stack.ok(&["config"]), &binary);

    let started = Instant::now();
    stack.ok(&["up", "-d", "--build"]);
    eprintln!(
        "compose up --build took {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Healthy by the compose health check, and /healthz answers on the published port.
    let id = stack.container_id();
    assert!(!id.is_empty(), "no {SERVICE} container");
    let up = Instant::now();
    loop {
        let health = docker_inspect(&id, "{{.State.Status}} {{.State.Health.Status}}");
        if health == "running healthy" {
            break;
        }
        assert!(
            up.elapsed() < Duration::from_secs(60) && !health.starts_with("exited"),
            "the runner did not become healthy: {health}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let addr = format!("127.0.0.1:{port}");
    let (status, body) = http_get(&addr, "/healthz").expect("/healthz answers");
    assert_eq!((status, body.trim()), (200, "ok"));
    eprintln!("healthy after {:.1}s", up.elapsed().as_secs_f64());

    // The container is what the file says: limits, restart policy, read-only, not root.
    let container = docker.inspect_container(&id, None).await.unwrap();
    let host = container.host_config.unwrap();
    assert_eq!(host.memory, Some(1 << 30));
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.pids_limit, Some(512));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(
        host.restart_policy
            .and_then(|p| p.name)
            .map(|n| n.to_string()),
        Some("unless-stopped".to_string())
    );
    assert_eq!(host.group_add, Some(vec![gid.to_string()]));
    let user = container.config.unwrap().user.unwrap_or_default();
    assert_eq!(user, "10000:10000");

    // One task, end to end: PR opened, completion comment, done label.
    let task = Instant::now();
    loop {
        let comments = gh.comments(DISPATCH, issue);
        let done = comments.iter().any(|c| c.starts_with('✅'));
        if done && !gh.pulls(TARGET).is_empty() {
            break;
        }
        assert!(
            !comments.iter().any(|c| c.starts_with('❌')),
            "the task failed: {comments:#?}"
        );
        assert!(
            task.elapsed() < Duration::from_secs(120),
            "no completed task after 120 s; comments: {comments:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "task completed {:.1}s after `up` returned",
        started.elapsed().as_secs_f64()
    );
    let pulls = gh.pulls(TARGET);
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    assert!(pulls[0].body.contains(TASK_ID), "{}", pulls[0].body);
    assert!(
        gh.labels_of(DISPATCH, issue)
            .contains(&"agent:done".to_string())
    );
    let (status, metrics) = http_get(&addr, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("agent_tasks_processed_total{outcome=\"done\"} 1"),
        "{metrics}"
    );

    // Down leaves nothing running: neither the runner nor a sandbox.
    let project = stack.project.clone();
    let agent = stack.agent.clone();
    drop(stack);
    let left = |filter: String| {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        left(format!("label=com.docker.compose.project={project}")),
        ""
    );
    assert_eq!(
        left(format!(
            "label={}={agent}",
            agent_runner::sandbox::LABEL_RUNNER_ID
        )),
        ""
    );
}

//! The locked-down Docker sandbox in which a task's tests run.
//!
//! The model edits the worktree on the host; the sandbox only ever receives copies
//! (never a bind mount), runs `sh -c <command>` in `/workspace` as an unprivileged user
//! and reports exit code, capped output, timeouts and OOM kills.
//!
//! * [`connect`]: reach the Docker Engine (honours `DOCKER_HOST`, negotiates the API version).
//! * [`ensure_default_image`]: the default image, built offline from Debian packages
//!   (recipe in `sandbox/` of the repository, embedded in the binary).
//! * [`Sandbox`]: one long-lived container per task (`start`, `setup`, `exec`, `sync`,
//!   `remove`).
//! * [`supervise`]: runs a task's sandbox work so that its container is removed on every
//!   way out (error, wall clock, SIGINT/SIGTERM, panic).
//! * [`remove_orphans`]: at start-up, remove what a crashed process left behind;
//!   [`remove_own`]: what this process still has; [`remove_stale`]: the containers of tasks
//!   that are no longer live.

mod container;
mod exec;
mod files;
mod image;
mod network;
mod owner;
mod reap;
mod supervise;

use std::time::Duration;

pub use container::Sandbox;
pub use exec::ExecOutcome;
pub use image::{
    BASE_IMAGE_LATEST, Pruned, base_image_tag, default_image_tag, ensure_default_image,
    prune_images, recipe_hash, superseded_images, superseded_tags, tag_base_image_latest,
};
pub use reap::{remove_orphans, remove_own, remove_stale};
pub use supervise::{Supervision, stop_tasks_on_signals, supervise, tasks_stop_on_signals};

/// Label that carries the runner id on every container we create.
pub const LABEL_RUNNER_ID: &str = "agent-runner.runner-id";
/// Label that carries the task id on every container we create.
pub const LABEL_TASK_ID: &str = "agent-runner.task-id";
/// Label that names the process that created the container:
/// `<hostname>:<pid>:<process start time>:<boot id>` (see [`remove_orphans`]).
pub const LABEL_OWNER: &str = "agent-runner.owner";

/// Uid and gid of the unprivileged `sandbox` user of the image (see `sandbox/Dockerfile`).
pub const SANDBOX_UID: u32 = 10001;

/// Resource limits of one sandbox container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes; swap is not allowed (memory+swap = memory).
    pub memory_bytes: i64,
    /// CPU quota in units of 1e-9 CPUs (1_000_000_000 = one CPU).
    pub nano_cpus: i64,
    /// Maximum number of processes/threads in the container.
    pub pids: i64,
    /// Open files limit (soft = hard).
    pub nofile: i64,
    /// Size of the `/workspace` file system (tmpfs-style size: "1g", "512m").
    pub workspace_size: String,
    /// Size of the `/tmp` tmpfs ("512m").
    pub tmp_size: String,
    /// Maximum bytes of output kept per command (head and tail are kept).
    pub output_cap_bytes: usize,
    /// Default wall-clock limit of one command.
    pub command_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 2 * 1024 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids: 256,
            nofile: 1024,
            workspace_size: "1g".to_string(),
            tmp_size: "512m".to_string(),
            output_cap_bytes: 1024 * 1024,
            command_timeout: Duration::from_secs(600),
        }
    }
}

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxSpec {
    /// Image to run; `None` = the default image, built on demand. A custom image needs
    /// `sh`, coreutils `timeout`, `kill`, `rm` and `cat`; commands run as uid 10001.
    pub image: Option<String>,
    pub limits: Limits,
    /// `false` (default) = no network at all (`network_mode: none`). `true` = the default
    /// `bridge` network, for a setup phase only: [`Sandbox::setup`] cuts it off.
    pub network: bool,
    /// OCI runtime, e.g. `Some("runsc")` for gVisor; `None` = the engine's default.
    pub runtime: Option<String>,
    pub runner_id: String,
    pub task_id: String,
}

/// Everything that can go wrong in the sandbox layer.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("Docker is unreachable at {at}: {reason}. Start the Docker Engine or set DOCKER_HOST.")]
    Unreachable { at: String, reason: String },
    #[error(
        "building the sandbox image failed: {0}. Fix the cause and run again (the build resumes), \
         or configure a prebuilt image."
    )]
    ImageBuild(String),
    #[error("Docker API error: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("refusing to copy {path:?} into the sandbox: {reason}")]
    InvalidPath {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("invalid sandbox limit: {0}")]
    InvalidLimit(String),
    #[error(
        "command could not be run in the sandbox: {0}. The container may be gone; start a new sandbox."
    )]
    Exec(String),
    #[error(
        "the setup command `{command}` failed: {summary}. The agent phase was not started; fix \
         the setup command (sandbox.setup_cmd). Last output:\n{tail}"
    )]
    Setup {
        command: String,
        summary: String,
        tail: String,
    },
    #[error(
        "the sandbox could not be cut off from the network after the setup phase: {0}. The \
         task was stopped rather than run with network access; check the Docker Engine's \
         networks, or run without sandbox.setup_cmd."
    )]
    NetworkCut(String),
    #[error(
        "the task ran into its wall-clock limit of {}s and was stopped; its sandbox was \
         removed. Raise agent.max_wall_secs or sandbox.command_timeout_secs if it needs longer.",
        limit.as_secs()
    )]
    WallClock { limit: Duration },
    #[error("interrupted by {signal}; the sandbox was removed. Run the task again to redo it.")]
    Interrupted { signal: &'static str },
}

/// Connects to the Docker Engine named by `DOCKER_HOST` (default: the local unix socket),
/// checks that it answers and negotiates the API version (the engine may be older than
/// the client library's default).
pub async fn connect() -> Result<bollard::Docker, SandboxError> {
    let at = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
    connect_to(&at).await
}

/// [`connect`] to an explicit address (`unix:///path`, `tcp://host:port`).
pub async fn connect_to(at: &str) -> Result<bollard::Docker, SandboxError> {
    let unreachable = |reason: String| SandboxError::Unreachable {
        at: at.to_string(),
        reason,
    };
    let docker = bollard::Docker::connect_with_host(at).map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(Duration::from_secs(15), docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(error_chain(&e))),
        Err(_) => return Err(unreachable("no answer to ping within 15 s".to_string())),
    }
    docker.negotiate_version().await.map_err(|e| {
        unreachable(format!(
            "API version negotiation failed: {}",
            error_chain(&e)
        ))
    })
}

/// `e` followed by its sources (hyper's errors hide the useful part in the chain).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let msg = src.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_match_the_documented_values() {
        let l = Limits::default();
        assert_eq!(l.memory_bytes, 2 << 30);
        assert_eq!(l.nano_cpus, 1_000_000_000);
        assert_eq!(l.pids, 256);
        assert_eq!(l.nofile, 1024);
        assert_eq!(l.tmp_size, "512m");
        assert_eq!(l.output_cap_bytes, 1 << 20);
        assert_eq!(l.command_timeout, Duration::from_secs(600));
        assert!(!SandboxSpec::default().network);
    }

    #[tokio::test]
    async fn missing_socket_is_reported_clearly() {
        let err = connect_to("unix:///nonexistent/docker.sock").await.err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with("Docker is unreachable at unix:///nonexistent/docker.sock: ")
                && msg.ends_with("Start the Docker Engine or set DOCKER_HOST."),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn silent_daemon_is_reported_clearly() {
        // A port nobody listens on.
        let err = connect_to("tcp://127.0.0.1:9").await.err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with("Docker is unreachable at tcp://127.0.0.1:9: "),
            "{msg}"
        );
    }

    /// Callers spawn these futures on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(
        docker: &bollard::Docker,
        sandbox: &Sandbox,
        spec: &SandboxSpec,
        path: &std::path::Path,
    ) {
        fn send<T: Send>(_: T) {}
        send(connect());
        send(ensure_default_image(docker, &mut |_: &str| {}));
        send(Sandbox::start(docker, spec, path));
        send(sandbox.exec("true"));
        send(sandbox.sync(path, &[]));
        send(remove_stale(docker, "runner", &[]));
        send(remove_orphans(docker, "runner"));
        send(remove_own(docker, None));
        send(sandbox.setup("true", Duration::from_secs(1)));
        let rules = Supervision {
            wall_clock: None,
            stop_on_signals: true,
        };
        send(supervise(
            docker,
            "task",
            rules,
            Sandbox::start(docker, spec, path),
        ));
    }

    #[test]
    fn unreachable_message_says_what_to_do() {
        let e = SandboxError::Unreachable {
            at: "unix:///nope.sock".into(),
            reason: "Socket not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "Docker is unreachable at unix:///nope.sock: Socket not found. Start the Docker Engine or set DOCKER_HOST."
        );
    }
}

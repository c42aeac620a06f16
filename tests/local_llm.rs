//! The OpenAI-compatible client and the whole runner against a real local model server:
//! llama.cpp's `llama-server` serving SmolLM2-135M-Instruct (see `support::LlamaServer`).
//! Chat completion, streaming with usage, token accounting against the server's own counts,
//! the preflight probe's verdicts, and a full `solve` that ends cleanly and is recorded into
//! a replay fixture that ends the same way.
//!
//! Each test starts its own server. They fail, never skip, without the server binary and
//! the model (`scripts/llama-server.sh` builds and fetches them; the first build takes about
//! 11 minutes) or, for `solve`, without Docker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_runner::config::{LlmConfig, ToolProtocol};
use agent_runner::llm::{self, Capabilities, ChatModel, Completion, Message, OpenAiModel};
use serde_json::{Value, json};
use support::LlamaServer;
use support::llama::http_client;

const SYSTEM: &str = "You are a helpful assistant.";
const USER: &str = "Say hello";
const MAX_TOKENS: u32 = 32;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn messages() -> Vec<Message> {
    vec![Message::system(SYSTEM), Message::user(USER)]
}

/// The client's configuration for `base_url`: the tests' model, deterministic and short.
fn config(base_url: &str, stream: bool) -> LlmConfig {
    LlmConfig {
        provider: "openai".into(),
        base_url: base_url.to_string(),
        model: LlamaServer::MODEL.into(),
        max_output_tokens: MAX_TOKENS,
        temperature: 0.0,
        request_timeout_secs: 120,
        stream,
        ..LlmConfig::default()
    }
}

/// A pass-through in front of the real server that keeps what went by: the request bodies
/// the client sent and the response bodies the server returned, byte for byte.
struct Tap {
    base_url: String,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Exchange {
    path: String,
    request: Value,
    content_type: String,
    response: String,
}

impl Tap {
    async fn start(upstream: String) -> Tap {
        let exchanges: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let seen = exchanges.clone();
        let client = http_client();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (seen, client, upstream) = (seen.clone(), client.clone(), upstream.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let path = parts.uri.path().to_string();
                let mut forward = client
                    .request(parts.method, format!("{upstream}{}", parts.uri))
                    .body(body.clone());
                if let Some(ct) = parts.headers.get("content-type") {
                    forward = forward.header("content-type", ct);
                }
                let answer = forward.send().await.unwrap();
                let status = answer.status();
                let content_type = answer
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let response = answer.text().await.unwrap();
                seen.lock().unwrap().push(Exchange {
                    path,
                    request: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    content_type: content_type.clone(),
                    response: response.clone(),
                });
                (
                    status,
                    [(axum::http::header::CONTENT_TYPE, content_type)],
                    response,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Tap {
            base_url: format!("http://{addr}/v1"),
            exchanges,
            task,
        }
    }

    /// The paths of the requests that went through, in order.
    fn paths(&self) -> Vec<String> {
        let seen = self.exchanges.lock().unwrap();
        seen.iter().map(|e| e.path.clone()).collect()
    }

    /// The one chat-completions exchange that went through.
    fn completion_exchange(&self) -> Exchange {
        let seen = self.exchanges.lock().unwrap();
        let chats: Vec<&Exchange> = seen
            .iter()
            .filter(|e| e.path.ends_with("/chat/completions"))
            .collect();
        assert_eq!(chats.len(), 1, "one chat completion request went through");
        chats[0].clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `POST /v1/chat/completions` with reqwest alone; returns the status and the body text.
async fn raw_chat(server: &LlamaServer, stream: bool) -> (reqwest::StatusCode, String, String) {
    let mut body = json!({
        "model": LlamaServer::MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER},
        ],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let response = http_client()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Read chunk by chunk, as an SSE client does, until the server ends the response.
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    (status, content_type, String::from_utf8(bytes).unwrap())
}

/// `(prompt_tokens, completion_tokens)` of a usage object.
fn usage_of(usage: &Value) -> (u64, u64) {
    let n = |key: &str| {
        usage[key]
            .as_u64()
            .unwrap_or_else(|| panic!("usage has no {key}: {usage}"))
    };
    (n("prompt_tokens"), n("completion_tokens"))
}

/// A server-sent-events body: the `data:` payloads in order.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

/// What a streamed response says: the content deltas joined, and the usage of the chunk
/// that carries it. Checks the stream's shape: JSON chunks, then one usage chunk with no
/// choices, then `[DONE]` last.
fn read_stream(body: &str) -> (String, Value) {
    let data = sse_data(body);
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "[DONE] ends the stream: {body}"
    );
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{body}"
    );
    let last = chunks.last().expect("the stream has chunks");
    assert!(
        last["usage"].is_object(),
        "the final chunk carries usage: {last}"
    );
    assert_eq!(
        last["choices"].as_array().map(Vec::len),
        Some(0),
        "the usage chunk has no choices: {last}"
    );
    let with_usage = chunks.iter().filter(|c| c["usage"].is_object()).count();
    assert_eq!(with_usage, 1, "exactly one chunk carries usage: {body}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"].is_string()),
        "a chunk says why generation finished: {body}"
    );
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (content, last["usage"].clone())
}

fn assert_plausible(completion: &Completion) {
    assert!(
        !completion.content.trim().is_empty(),
        "the model said something: {completion:?}"
    );
    assert!(
        completion.usage.prompt_tokens > 0,
        "prompt tokens are counted: {completion:?}"
    );
    assert!(
        (1..=u64::from(MAX_TOKENS)).contains(&completion.usage.completion_tokens),
        "completion tokens within max_output_tokens: {completion:?}"
    );
    assert!(completion.tool_calls.is_empty(), "{completion:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_completion_through_the_client_counts_tokens_as_the_server_does() {
    let server = LlamaServer::start().await;
    let tap = Tap::start(server.root_url()).await;
    let model = OpenAiModel::new(&config(&tap.base_url, false));

    let started = Instant::now();
    let completion = model.complete(&messages(), &[]).await.unwrap();
    eprintln!(
        "non-streaming completion in {:.2} s: {completion:?}",
        started.elapsed().as_secs_f64()
    );
    assert_plausible(&completion);

    // What the client sent, and exactly what the server answered to it.
    let exchange = tap.completion_exchange();
    assert_ne!(
        exchange.request["stream"], true,
        "stream is off: {}",
        exchange.request
    );
    assert!(
        exchange.request.get("tools").is_none(),
        "no tools offered: {}",
        exchange.request
    );
    let answer: Value = serde_json::from_str(&exchange.response).unwrap();
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"], completion.content,
        "{answer}"
    );
    assert_eq!(
        usage_of(&answer["usage"]),
        (
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens
        ),
        "the client reports the server's usage: {answer}"
    );

    // The same request without the client: the server counts the same prompt tokens.
    let (status, _, body) = raw_chat(&server, false).await;
    assert!(status.is_success(), "{status}: {body}");
    let raw: Value = serde_json::from_str(&body).unwrap();
    let (raw_prompt, raw_completion) = usage_of(&raw["usage"]);
    eprintln!(
        "raw request: prompt_tokens {raw_prompt}, completion_tokens {raw_completion}, content {:?}",
        raw["choices"][0]["message"]["content"]
    );
    assert_eq!(raw_prompt, completion.usage.prompt_tokens, "{raw}");
    assert!(
        (1..=u64::from(MAX_TOKENS)).contains(&raw_completion),
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_through_the_client_reports_the_usage_of_the_final_chunk() {
    let server = LlamaServer::start().await;

    // The server's side first: an SSE stream whose final chunk carries usage, then [DONE].
    let (status, content_type, body) = raw_chat(&server, true).await;
    assert!(status.is_success(), "{status}: {body}");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let (raw_content, raw_usage) = read_stream(&body);
    let (raw_prompt, raw_completion) = usage_of(&raw_usage);
    eprintln!(
        "raw stream: {} data events, content {raw_content:?}, usage {raw_usage}",
        sse_data(&body).len()
    );
    assert!(!raw_content.trim().is_empty(), "{body}");
    assert!(
        (1..=u64::from(MAX_TOKENS)).contains(&raw_completion),
        "{body}"
    );

    // The client, streaming, through a tap that keeps the stream it was sent.
    let tap = Tap::start(server.root_url()).await;
    let model = OpenAiModel::new(&config(&tap.base_url, true));
    let started = Instant::now();
    let completion = model.complete(&messages(), &[]).await.unwrap();
    eprintln!(
        "streaming completion in {:.2} s: {completion:?}",
        started.elapsed().as_secs_f64()
    );
    assert_plausible(&completion);

    let exchange = tap.completion_exchange();
    assert_eq!(
        exchange.request["stream"], true,
        "the client streams: {}",
        exchange.request
    );
    assert_eq!(
        exchange.request["stream_options"]["include_usage"], true,
        "the client asks for usage at the end of the stream: {}",
        exchange.request
    );
    assert!(
        exchange.content_type.starts_with("text/event-stream"),
        "{}",
        exchange.content_type
    );
    let (streamed_content, streamed_usage) = read_stream(&exchange.response);
    assert_eq!(
        completion.content, streamed_content,
        "the client joins the deltas"
    );
    assert_eq!(
        usage_of(&streamed_usage),
        (
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens
        ),
        "the client reports the usage chunk, not an estimate"
    );
    assert_eq!(
        completion.usage.prompt_tokens, raw_prompt,
        "the server counts the same prompt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_reads_the_context_size_and_sees_no_native_tool_calls() {
    let server = LlamaServer::start().await;
    let tap = Tap::start(server.root_url()).await;
    let model = OpenAiModel::new(&config(&tap.base_url, false));
    let started = Instant::now();
    let found = model.probe().await;
    eprintln!(
        "probe in {:.2} s: {found:?}; it asked: {:?}",
        started.elapsed().as_secs_f64(),
        tap.paths()
    );
    // llama.cpp reports its n_ctx (-c 4096); SmolLM2's built-in template does not put tools
    // into the prompt, so the model answers in text.
    assert_eq!(
        found,
        Capabilities {
            native_tools: Some(false),
            context_tokens: Some(LlamaServer::CONTEXT_TOKENS),
        },
        "the probe asked {:?}; server log:\n{}",
        tap.paths(),
        server.log_tail(20)
    );

    // The same through from_config, as the runner builds it.
    let boxed = llm::from_config(&config(&server.base_url(), false)).unwrap();
    assert_eq!(boxed.probe().await, found);

    // What the configuration forces is reported as is, against what the server would say,
    // and without asking the server anything.
    let forced_tap = Tap::start(server.root_url()).await;
    let forced = LlmConfig {
        tool_protocol: ToolProtocol::Native,
        context_tokens: Some(2048),
        ..config(&forced_tap.base_url, false)
    };
    assert_eq!(
        OpenAiModel::new(&forced).probe().await,
        Capabilities {
            native_tools: Some(true),
            context_tokens: Some(2048),
        }
    );
    assert_eq!(
        forced_tap.paths(),
        Vec::<String>::new(),
        "a forced configuration asks nothing"
    );
}

/// The stop reasons of a run that ended by itself: a budget or a rule, not a crash.
const CLEAN_STOPS: &[&str] = &[
    "budget_calls",
    "budget_tokens",
    "budget_test_runs",
    "timeout",
    "loop",
    "no_progress",
];

/// A world for `agent-runner solve`: a HOME, a state dir and a config file in a tempdir.
struct SolveWorld {
    tmp: tempfile::TempDir,
}

struct SolveRun {
    output: Output,
    secs: f64,
}

impl SolveRun {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn describe(&self) -> String {
        let stderr = String::from_utf8_lossy(&self.output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        format!(
            "exit {:?} after {:.0} s\nstdout:\n{}\nstderr (tail):\n{}",
            self.output.status.code(),
            self.secs,
            self.stdout(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    fn field(&self, name: &str) -> String {
        self.stdout()
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|r| r.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no `{name}:` line\n{}", self.describe()))
    }

    /// Checks that the run ended cleanly without solving the task, and returns its stop reason.
    fn assert_ended_cleanly(&self, state_dir: &Path) -> String {
        assert_eq!(self.output.status.code(), Some(1), "{}", self.describe());
        assert!(
            self.stdout().contains("NOT SOLVED: "),
            "{}",
            self.describe()
        );
        let reason = self.field("stop reason");
        assert!(
            CLEAN_STOPS.contains(&reason.as_str()),
            "stop reason {reason:?} is one of {CLEAN_STOPS:?}\n{}",
            self.describe()
        );
        let transcript = PathBuf::from(self.field("transcript"));
        assert!(
            transcript.starts_with(state_dir),
            "the transcript {} is in the state dir",
            transcript.display()
        );
        let text = std::fs::read_to_string(&transcript).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let last = events.last().unwrap();
        assert_eq!(last["kind"], "stop", "{text}");
        assert_eq!(last["data"]["reason"], reason.as_str(), "{text}");
        for kind in ["start", "baseline_test", "prompt", "reply"] {
            assert!(
                events.iter().any(|e| e["kind"] == kind),
                "no {kind} event in {text}"
            );
        }
        reason
    }
}

impl SolveWorld {
    fn new() -> SolveWorld {
        let tmp = tempfile::tempdir().unwrap();
        // Short replies and a short loop: a 135M model will not fix the bug.
        std::fs::write(
            tmp.path().join("agent-runner.toml"),
            "[llm]\nmax_output_tokens = 96\nrequest_timeout_secs = 120\n\n[agent]\nmax_iterations = 3\n",
        )
        .unwrap();
        SolveWorld { tmp }
    }

    fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// A fresh copy of `examples/calculator` (without its recorded fix).
    fn repo(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["Makefile", "calc.py", "test_calc.py"] {
            std::fs::copy(
                root().join("examples/calculator").join(file),
                dir.join(file),
            )
            .unwrap();
        }
        dir
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"));
        command
            .args(args)
            .current_dir(root())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("AGENT_NAME", "local-llm")
            .env("AGENT_RUNNER_STATE_DIR", self.state_dir())
            .env(
                "AGENT_RUNNER_CONFIG",
                self.tmp.path().join("agent-runner.toml"),
            )
            .envs(env.iter().copied())
            .kill_on_drop(true);
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            command.env("DOCKER_HOST", host);
        }
        command
    }

    /// `solve --repo <fresh copy> --instruction ... --max-iterations 3` plus `extra`, killed
    /// after `limit`.
    async fn solve(
        &self,
        repo: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> SolveRun {
        let repo = self.repo(repo);
        let mut args = vec![
            "solve",
            "--repo",
            repo.to_str().unwrap(),
            "--instruction",
            "add() in calc.py returns the difference of its arguments; make it return their sum",
            "--max-iterations",
            "3",
            // The loop ends by itself well before the guard below.
            "--max-wall-secs",
            "200",
        ];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let output = tokio::time::timeout(limit, self.command(&args, env).output())
            .await
            .unwrap_or_else(|_| panic!("solve did not end within {} s", limit.as_secs()))
            .unwrap();
        SolveRun {
            output,
            secs: started.elapsed().as_secs_f64(),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn solve_with_the_local_model_ends_cleanly_and_replays_from_its_recording() {
    let server = LlamaServer::start().await;
    let world = SolveWorld::new();

    // The sandbox image, built once when missing (minutes), outside the solve's time limit.
    let built = world
        .command(&["sandbox", "build"], &[])
        .output()
        .await
        .unwrap();
    assert!(
        built.status.success(),
        "sandbox build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let record = world.tmp.path().join("rec.jsonl");
    let base_url = server.base_url();
    let live = world
        .solve(
            "repo-live",
            &["--record", record.to_str().unwrap()],
            &[
                ("LLM_PROVIDER", "openai"),
                ("LLM_BASE_URL", base_url.as_str()),
                ("LLM_MODEL", LlamaServer::MODEL),
            ],
            Duration::from_secs(300),
        )
        .await;
    eprintln!("live run:\n{}", live.describe());
    let reason = live.assert_ended_cleanly(&world.state_dir());
    assert!(
        live.field("model").contains(LlamaServer::MODEL),
        "{}",
        live.describe()
    );
    let iterations = live.field("iterations");

    // The recording: one replayable line per model call, with the server's usage.
    let recorded = std::fs::read_to_string(&record).unwrap();
    let entries: Vec<Value> = recorded
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!entries.is_empty(), "the run was recorded");
    assert!(
        iterations.starts_with(&format!("{} ", entries.len())),
        "{} recorded replies, iterations: {iterations}",
        entries.len()
    );
    let (mut tokens_in, mut tokens_out) = (0, 0);
    for entry in &entries {
        assert!(entry["reply"].is_string(), "{entry}");
        let (prompt, completion) = usage_of(&entry["usage"]);
        assert!(prompt > 0 && completion <= 96, "{entry}");
        tokens_in += prompt;
        tokens_out += completion;
    }
    assert_eq!(
        live.field("tokens"),
        format!("{tokens_in} in, {tokens_out} out"),
        "the run's totals are the sum of the server's counts"
    );
    eprintln!(
        "first recorded reply: {}",
        entries[0]["reply"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect::<String>()
    );

    // The recording replays without the server, on a fresh copy, to the same end.
    drop(server);
    let llm = format!("replay:{}", record.display());
    let replayed = world
        .solve(
            "repo-replay",
            &["--llm", llm.as_str()],
            &[],
            Duration::from_secs(300),
        )
        .await;
    eprintln!("replayed run:\n{}", replayed.describe());
    assert_eq!(
        replayed.assert_ended_cleanly(&world.state_dir()),
        reason,
        "{}",
        replayed.describe()
    );
    assert_eq!(replayed.field("iterations"), iterations);
    assert_eq!(replayed.field("tokens"), live.field("tokens"));
}

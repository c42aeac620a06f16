//! The OpenAI-compatible client against a local server that answers like the chat
//! completions API (as OpenAI, llama.cpp, vLLM and Ollama do, streaming included), the
//! preflight probe against each kind of server, and `--record` turning a real run into a
//! replay fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_runner::config::{LlmConfig, Secret, ToolProtocol};
use agent_runner::llm::{
    self, Capabilities, ChatModel, LlmError, Message, OpenAiModel, ReplayModel, ToolCall, ToolSpec,
};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk-test-key-123456";
const MODEL: &str = "smollm2-135m-instruct";

/// Which server the fake answers like, beyond the chat-completions API they all speak.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flavour {
    /// Only `/v1/chat/completions` and a `/v1/models` without context sizes.
    OpenAi,
    /// `/props` with `default_generation_settings.n_ctx`; also an Ollama-style `/api/show`.
    LlamaCpp,
    /// `/v1/models` with `max_model_len`; tools without `--enable-auto-tool-choice` are a 400.
    Vllm,
    /// `/api/show` with `parameters`; tool calls arrive whole, in one chunk.
    Ollama,
}

/// One request the fake received.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    auth: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct Fake {
    flavour: Flavour,
    /// The status of chat completions; errors carry `model not loaded`.
    status: u16,
    /// Answer a request that offers tools with a call to the first one.
    calls_tools: bool,
    /// Send the usage chunk when the request asks for it.
    stream_usage: bool,
    /// llama.cpp's n_ctx, vLLM's max_model_len, Ollama's num_ctx (none: not set).
    context: Option<u64>,
    /// Stop sending, mid-stream, for a minute.
    stall: bool,
    /// Send an error object as a stream event after the first content.
    stream_error: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn new(flavour: Flavour) -> Fake {
        Fake {
            flavour,
            status: 200,
            calls_tools: false,
            stream_usage: true,
            context: None,
            stall: false,
            stream_error: false,
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn chats(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.path == "/v1/chat/completions")
            .map(|s| s.body)
            .collect()
    }

    async fn start(self) -> String {
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .fallback(other)
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/v1")
    }
}

fn record(fake: &Fake, method: Method, uri: &Uri, headers: &HeaderMap, body: Value) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    fake.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_string(),
        auth,
        body,
    });
}

/// Everything but chat completions: the endpoints the probe asks about context sizes.
async fn other(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&fake, method.clone(), &uri, &headers, body.clone());
    let not_found = || (StatusCode::NOT_FOUND, "404 page not found").into_response();
    match (fake.flavour, method.as_str(), uri.path()) {
        (Flavour::LlamaCpp, "GET", "/props") => Json(json!({
            "default_generation_settings": {"n_ctx": fake.context, "params": {"temperature": 0.8}},
            "total_slots": 1,
            "model_path": "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            "chat_template": "{{ messages }}",
            "build_info": "b1-abc"
        }))
        .into_response(),
        // Recent llama.cpp answers Ollama's /api/show too, without a num_ctx: /props wins.
        (Flavour::LlamaCpp, "POST", "/api/show") => Json(json!({
            "template": "{{ messages }}", "modelfile": "", "parameters": "",
            "model_info": {"llama.context_length": 8192}, "capabilities": ["completion"]
        }))
        .into_response(),
        (Flavour::LlamaCpp, "GET", "/v1/models") => Json(json!({"object": "list", "data": [
            {"id": MODEL, "object": "model", "created": 1, "owned_by": "llamacpp", "meta": {"n_ctx_train": 8192}}
        ]}))
        .into_response(),
        (Flavour::Vllm, "GET", "/v1/models") => Json(json!({"object": "list", "data": [
            {"id": "other-model", "object": "model", "created": 1, "owned_by": "vllm", "root": "other", "parent": null, "max_model_len": 1024},
            {"id": MODEL, "object": "model", "created": 1, "owned_by": "vllm", "root": "/models/x", "parent": null, "max_model_len": fake.context, "permission": []}
        ]}))
        .into_response(),
        (Flavour::Ollama | Flavour::OpenAi, "GET", "/v1/models") => {
            Json(json!({"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 1, "owned_by": "library"}
            ]}))
            .into_response()
        }
        (Flavour::Ollama, "POST", "/api/show") if body["model"] == MODEL => {
            let mut parameters = "stop                           \"<|im_end|>\"".to_string();
            if let Some(n) = fake.context {
                parameters.push_str(&format!("\nnum_ctx                        {n}"));
            }
            Json(json!({
                "license": "Apache-2.0",
                "modelfile": "# Modelfile generated by \"ollama show\"\nFROM /root/.ollama/models/blobs/sha256-x\n",
                "parameters": parameters,
                "template": "{{ .Prompt }}",
                "details": {"parent_model": "", "format": "gguf", "family": "llama", "parameter_size": "134.52M", "quantization_level": "Q4_1"},
                "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                "capabilities": ["completion", "tools"],
                "modified_at": "2026-11-25T10:00:00Z"
            }))
            .into_response()
        }
        (Flavour::Ollama, "POST", "/api/show") => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("model '{}' not found", body["model"])})),
        )
            .into_response(),
        _ => not_found(),
    }
}

/// What the model says: a call to the first offered tool, or an echo of the last message.
enum Answer {
    Call { name: String, arguments: String },
    Text(String),
}

fn answer(fake: &Fake, body: &Value) -> Answer {
    let offered = body["tools"][0]["function"]["name"].as_str();
    match offered {
        Some(name) if fake.calls_tools => Answer::Call {
            name: name.to_string(),
            arguments: "{\"path\": \".\"}".into(),
        },
        _ => {
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .unwrap_or_default();
            Answer::Text(format!("echo: {}", last["content"].as_str().unwrap_or("")))
        }
    }
}

async fn chat(
    State(fake): State<Fake>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record(&fake, Method::POST, &uri, &headers, body.clone());
    if fake.status != 200 {
        return (
            StatusCode::from_u16(fake.status).unwrap(),
            Json(json!({"error": {"message": "model not loaded", "type": "invalid_request_error", "param": null, "code": null}})),
        )
            .into_response();
    }
    if fake.flavour == Flavour::Vllm && body.get("tools").is_some() && !fake.calls_tools {
        // vLLM started without --enable-auto-tool-choice (its older, unwrapped error shape).
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"object": "error", "message": "\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set", "type": "BadRequestError", "param": null, "code": 400})),
        )
            .into_response();
    }
    let answer = answer(&fake, &body);
    if body["stream"] == true {
        return streamed(&fake, &body, answer);
    }
    let message = match &answer {
        Answer::Call { name, arguments } => json!({
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_x1", "type": "function", "function": {"name": name, "arguments": arguments}}]
        }),
        Answer::Text(text) => json!({"role": "assistant", "content": text}),
    };
    Json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_764_000_000u32,
        "model": body["model"],
        "system_fingerprint": "b1",
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": if matches!(answer, Answer::Call { .. }) { "tool_calls" } else { "stop" }
        }],
        "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
        "timings": {"prompt_ms": 1.0}
    }))
    .into_response()
}

/// An SSE stream of `chat.completion.chunk`s as the servers send it, cut into 7-byte pieces
/// so that events straddle network reads.
fn streamed(fake: &Fake, body: &Value, answer: Answer) -> Response {
    let chunk = |choices: Value| {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_764_000_000u32,
            "model": body["model"], "system_fingerprint": "b1", "choices": choices
        })
    };
    let delta = |delta: Value| chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]));
    let mut events = vec![delta(json!({"role": "assistant", "content": null}))];
    let finish = match answer {
        Answer::Text(text) => {
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(3) {
                events.push(delta(json!({"content": piece.iter().collect::<String>()})));
            }
            "stop"
        }
        Answer::Call { name, arguments } if fake.flavour == Flavour::Ollama => {
            events.push(delta(json!({"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_ol1", "index": 0, "type": "function", "function": {"name": name, "arguments": arguments}}
            ]})));
            "tool_calls"
        }
        Answer::Call { name, arguments } => {
            events.push(delta(json!({"tool_calls": [
                {"index": 0, "id": "call_x1", "type": "function", "function": {"name": name, "arguments": ""}}
            ]})));
            let chars: Vec<char> = arguments.chars().collect();
            for piece in chars.chunks(4) {
                events.push(delta(json!({"tool_calls": [
                    {"index": 0, "function": {"arguments": piece.iter().collect::<String>()}}
                ]})));
            }
            "tool_calls"
        }
    };
    if fake.stream_error {
        events.truncate(2);
        events.push(json!({"error": {"code": 500, "message": "the request exceeds the available context size, try increasing it", "type": "exceed_context_size_error"}}));
    }
    events.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
    ));
    if fake.stream_usage && body["stream_options"]["include_usage"] == true {
        let mut usage = chunk(json!([]));
        usage["usage"] = json!({"prompt_tokens": 33, "completion_tokens": 9, "total_tokens": 42});
        events.push(usage);
    }
    let mut text = String::new();
    for event in &events {
        text.push_str(&format!("data: {event}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    let pieces: Vec<Result<Bytes, Infallible>> = text
        .as_bytes()
        .chunks(7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = if fake.stall {
        let head: Vec<_> = pieces.into_iter().take(20).collect();
        futures_util::stream::iter(head)
            .chain(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Bytes::new())
            }))
            .boxed()
    } else {
        futures_util::stream::iter(pieces).boxed()
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn config(base_url: String) -> LlmConfig {
    LlmConfig {
        provider: "openai".into(),
        api_key: Some(Secret::new(KEY)),
        model: MODEL.into(),
        base_url,
        request_timeout_secs: 10,
        max_output_tokens: 64,
        ..LlmConfig::default()
    }
}

fn read_file_tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Read a file of the repository.".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
    }
}

#[tokio::test]
async fn talks_to_any_openai_compatible_server_and_records_a_replayable_transcript() {
    let fake = Fake::new(Flavour::LlamaCpp);
    let base = fake.clone().start().await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("run.jsonl");
    for stream in [true, false] {
        let mut cfg = config(base.clone());
        cfg.stream = stream;
        cfg.record_file = Some(record.clone());
        let model = llm::from_config(&cfg).unwrap();
        assert!(model.describe().contains(MODEL));

        let reply = model
            .complete(&[Message::system("be brief"), Message::user("hello")], &[])
            .await
            .unwrap();
        assert_eq!(reply.content, "echo: hello");
        let usage = if stream { (33, 9) } else { (21, 7) };
        assert_eq!(
            (reply.usage.prompt_tokens, reply.usage.completion_tokens),
            usage
        );
        assert!(reply.tool_calls.is_empty());

        let seen = fake.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.auth.as_deref(), Some(&*format!("Bearer {KEY}")));
        let body = &last.body;
        assert_eq!(body["model"], MODEL);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "hello");
        // Every local server reads one of the two limits (Ollama only max_tokens).
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["max_completion_tokens"], 64);
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
        if stream {
            assert_eq!(body["stream"], true, "{body}");
            assert_eq!(body["stream_options"]["include_usage"], true, "{body}");
        } else {
            assert_ne!(body["stream"], true, "{body}");
            assert!(body.get("stream_options").is_none(), "{body}");
        }

        let transcript = std::fs::read_to_string(&record).unwrap();
        assert!(!transcript.contains(KEY), "the key is not recorded");
        let replay = ReplayModel::load(&record).unwrap();
        let again = replay.complete(&[], &[]).await.unwrap();
        assert_eq!(again.content, "echo: hello");
        assert_eq!(again.usage.prompt_tokens, usage.0);
    }
}

#[tokio::test]
async fn a_stream_without_usage_is_estimated() {
    let fake = Fake {
        stream_usage: false,
        ..Fake::new(Flavour::Ollama)
    };
    let model = OpenAiModel::new(&config(fake.clone().start().await));
    let reply = model
        .complete(&[Message::user("0123456789abcdef")], &[])
        .await
        .unwrap();
    assert_eq!(reply.content, "echo: 0123456789abcdef");
    // About four characters a token: 16 characters asked, 22 answered.
    assert_eq!(
        (reply.usage.prompt_tokens, reply.usage.completion_tokens),
        (4, 6)
    );
}

#[tokio::test]
async fn native_tools_go_out_as_function_tools_and_come_back_as_tool_calls() {
    for (flavour, stream, id) in [
        (Flavour::LlamaCpp, true, "call_x1"),
        (Flavour::Ollama, true, "call_ol1"),
        (Flavour::Vllm, false, "call_x1"),
    ] {
        let fake = Fake {
            calls_tools: true,
            ..Fake::new(flavour)
        };
        let mut cfg = config(fake.clone().start().await);
        cfg.stream = stream;
        let model = OpenAiModel::new(&cfg);
        let earlier = ToolCall {
            id: "call_0".into(),
            name: "read_file".into(),
            arguments: "{\"path\":\"Cargo.toml\"}".into(),
        };
        let messages = [
            Message::user("fix the bug"),
            Message::assistant_with_tools("", vec![earlier]),
            Message::tool_result("call_0", "[package]\nname = \"x\"\n"),
        ];
        let reply = model
            .complete(&messages, &[read_file_tool()])
            .await
            .unwrap();
        assert_eq!(
            reply.tool_calls,
            vec![ToolCall {
                id: id.into(),
                name: "read_file".into(),
                arguments: "{\"path\": \".\"}".into()
            }],
            "{flavour:?}, stream {stream}"
        );
        assert_eq!(reply.content, "");

        let body = fake.chats().pop().unwrap();
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {
                "name": "read_file",
                "description": "Read a file of the repository.",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
            }}])
        );
        assert_eq!(body["tool_choice"], "auto");
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"Cargo.toml\"}"}}
            ]})
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "tool", "tool_call_id": "call_0", "content": "[package]\nname = \"x\"\n"})
        );
    }
}

#[tokio::test]
async fn server_errors_name_the_server() {
    for stream in [true, false] {
        let base = Fake {
            status: 404,
            ..Fake::new(Flavour::OpenAi)
        }
        .start()
        .await;
        let mut cfg = config(base.clone());
        cfg.stream = stream;
        let model = llm::from_config(&cfg).unwrap();
        let err = model
            .complete(&[Message::user("hi")], &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&base) && err.contains("model not loaded"),
            "{err}"
        );
        assert!(!err.contains(KEY));
    }
}

#[tokio::test]
async fn an_error_in_the_stream_is_reported_with_its_message() {
    let fake = Fake {
        stream_error: true,
        ..Fake::new(Flavour::LlamaCpp)
    };
    let base = fake.start().await;
    let model = OpenAiModel::new(&config(base.clone()));
    let err = model
        .complete(&[Message::user("a very long prompt")], &[])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LlmError::Request { .. }), "{err:?}");
    assert!(
        text.contains(&base) && text.contains("exceeds the available context size"),
        "{text}"
    );
    assert!(!text.contains(KEY));
}

#[tokio::test]
async fn a_stalled_stream_times_out_within_the_request_timeout() {
    let fake = Fake {
        stall: true,
        ..Fake::new(Flavour::Vllm)
    };
    let base = fake.start().await;
    let mut cfg = config(base.clone());
    cfg.request_timeout_secs = 1;
    let model = OpenAiModel::new(&cfg);
    let started = Instant::now();
    let err = model
        .complete(&[Message::user("a long answer, please")], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LlmError::Timeout { base_url, secs: 1 } if *base_url == base),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// What the client logs while a test runs on this thread. One global subscriber writes
/// each thread's lines into that thread's buffer (scoped subscribers race with tracing's
/// callsite cache when tests run in parallel). `#[tokio::test]` runs a test's tasks on its
/// own thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(logs) = &*c.borrow() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Starts capturing this thread's log lines (INFO and up).
    fn capture() -> Logs {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            tracing_subscriber::fmt()
                .with_writer(|| ThreadWriter)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .init();
        });
        let logs = Logs::default();
        CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn the_probe_reads_llama_cpp_props_and_sees_tool_calls_once() {
    let fake = Fake {
        calls_tools: true,
        context: Some(4096),
        ..Fake::new(Flavour::LlamaCpp)
    };
    let model = OpenAiModel::new(&config(fake.clone().start().await));
    let logs = Logs::capture();
    let expected = Capabilities {
        native_tools: Some(true),
        context_tokens: Some(4096),
    };
    assert_eq!(model.probe().await, expected);
    let asked = fake.seen().len();
    // Asked once: a second probe answers from what the first learned, and logs nothing.
    assert_eq!(model.probe().await, expected);
    assert_eq!(fake.seen().len(), asked);

    let text = logs.text();
    assert_eq!(text.matches("model probe").count(), 1, "{text}");
    assert!(
        text.contains("INFO")
            && text.contains("context_tokens=4096")
            && text.contains("native_tools=true"),
        "{text}"
    );
    assert!(
        !text.contains("num_ctx"),
        "llama.cpp is not taken for Ollama: {text}"
    );
    assert!(!text.contains(KEY));

    // The tool probe: one tool, list_dir(path), asked to be called on ".", short and cold.
    let chats = fake.chats();
    assert_eq!(chats.len(), 1);
    let probe = &chats[0];
    assert_eq!(probe["tools"].as_array().unwrap().len(), 1);
    assert_eq!(probe["tools"][0]["function"]["name"], "list_dir");
    assert_eq!(
        probe["tools"][0]["function"]["parameters"]["properties"]["path"]["type"],
        "string"
    );
    assert_eq!(probe["tool_choice"], "auto");
    assert_eq!(probe["max_tokens"], 32);
    assert_eq!(probe["temperature"], 0.0);
    let asked_to = probe["messages"][0]["content"].as_str().unwrap();
    assert!(
        asked_to.contains("list_dir") && asked_to.contains("\".\""),
        "{asked_to}"
    );
    // The context questions carry the key, as a server started with one wants it.
    let props = fake
        .seen()
        .into_iter()
        .find(|s| s.path == "/props")
        .unwrap();
    assert_eq!(props.method, Method::GET);
    assert_eq!(props.auth.as_deref(), Some(&*format!("Bearer {KEY}")));
}

#[tokio::test]
async fn the_probe_reads_vllm_max_model_len_and_a_tool_refusal_means_text() {
    let fake = Fake {
        context: Some(32768),
        ..Fake::new(Flavour::Vllm)
    };
    let model = OpenAiModel::new(&config(fake.clone().start().await));
    assert_eq!(
        model.probe().await,
        Capabilities {
            native_tools: Some(false),
            context_tokens: Some(32768),
        }
    );
    assert!(!llm::tool_protocol_is_native(
        ToolProtocol::Auto,
        &model.probe().await
    ));
}

#[tokio::test]
async fn the_probe_reads_ollama_num_ctx_and_warns_about_its_default() {
    // A model with `PARAMETER num_ctx 8192`; it answers the tool offer in text.
    let fake = Fake {
        context: Some(8192),
        ..Fake::new(Flavour::Ollama)
    };
    let mut cfg = config(fake.clone().start().await);
    cfg.stream = false;
    assert_eq!(
        OpenAiModel::new(&cfg).probe().await,
        Capabilities {
            native_tools: Some(false),
            context_tokens: Some(8192),
        }
    );
    let show = fake
        .seen()
        .into_iter()
        .find(|s| s.path == "/api/show")
        .unwrap();
    assert_eq!(show.method, Method::POST);
    assert_eq!(show.body, json!({"model": MODEL}));

    // Without num_ctx Ollama serves its default window and cuts longer prompts silently.
    let fake = Fake {
        calls_tools: true,
        ..Fake::new(Flavour::Ollama)
    };
    let model = OpenAiModel::new(&config(fake.start().await));
    let logs = Logs::capture();
    assert_eq!(
        model.probe().await,
        Capabilities {
            native_tools: Some(true),
            context_tokens: Some(2048),
        }
    );
    let text = logs.text();
    let warning = text
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning: {text}"));
    assert!(
        warning.contains("num_ctx") && warning.contains("LLM_CONTEXT_TOKENS"),
        "{warning}"
    );
}

#[tokio::test]
async fn the_probe_of_a_server_that_reports_no_context_size() {
    let fake = Fake::new(Flavour::OpenAi);
    let model = OpenAiModel::new(&config(fake.clone().start().await));
    assert_eq!(
        model.probe().await,
        Capabilities {
            native_tools: Some(false),
            context_tokens: None,
        }
    );
    let paths: Vec<String> = fake.seen().into_iter().map(|s| s.path).collect();
    for path in ["/props", "/v1/models", "/api/show", "/v1/chat/completions"] {
        assert!(
            paths.iter().any(|p| p == path),
            "{path} not asked: {paths:?}"
        );
    }
}

#[tokio::test]
async fn the_configuration_forces_the_verdict_without_asking() {
    let fake = Fake {
        calls_tools: true,
        context: Some(4096),
        ..Fake::new(Flavour::LlamaCpp)
    };
    let base = fake.clone().start().await;
    for (protocol, native) in [(ToolProtocol::Native, true), (ToolProtocol::Text, false)] {
        let cfg = LlmConfig {
            tool_protocol: protocol,
            context_tokens: Some(100_000),
            ..config(base.clone())
        };
        let found = llm::from_config(&cfg).unwrap().probe().await;
        assert_eq!(
            found,
            Capabilities {
                native_tools: Some(native),
                context_tokens: Some(100_000),
            }
        );
        assert_eq!(llm::tool_protocol_is_native(protocol, &found), native);
    }
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());

    // Only the tool protocol configured: the context size is still asked, the tools are not.
    let cfg = LlmConfig {
        tool_protocol: ToolProtocol::Text,
        ..config(base)
    };
    assert_eq!(
        OpenAiModel::new(&cfg).probe().await,
        Capabilities {
            native_tools: Some(false),
            context_tokens: Some(4096),
        }
    );
    assert!(fake.chats().is_empty());
}

#[tokio::test]
async fn the_probe_of_an_unreachable_server_cannot_tell() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let model = OpenAiModel::new(&config(format!("http://127.0.0.1:{port}/v1")));
    let started = Instant::now();
    assert_eq!(model.probe().await, Capabilities::default());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!llm::tool_protocol_is_native(
        ToolProtocol::Auto,
        &Capabilities::default()
    ));
}

//! The OpenAI-compatible client against a local server that answers like the chat
//! completions API (as llama.cpp, vLLM and Ollama do), and `--record` turning a real run
//! into a replay fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use agent_runner::config::{LlmConfig, Secret};
use agent_runner::llm::{self, Message, ReplayModel};
use axum::Json;
use axum::http::HeaderMap;
use serde_json::{Value, json};

/// The `Authorization` header and JSON body of one request.
type SeenRequest = (Option<String>, Value);

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<SeenRequest>>>,
}

async fn start_server(seen: Seen, status: u16) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap, Json(body): Json<Value>| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                seen.requests.lock().unwrap().push((auth, body.clone()));
                if status != 200 {
                    return (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        Json(json!({"error": {"message": "model not loaded", "type": "invalid_request_error", "param": null, "code": null}})),
                    );
                }
                let last = body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
                (
                    axum::http::StatusCode::OK,
                    Json(json!({
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 1_764_000_000u32,
                        "model": body["model"],
                        "system_fingerprint": "b1",
                        "choices": [{
                            "index": 0,
                            "message": {"role": "assistant", "content": format!("echo: {}", last["content"].as_str().unwrap_or(""))},
                            "finish_reason": "stop"
                        }],
                        "usage": {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28},
                        "timings": {"prompt_ms": 1.0}
                    })),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

fn config(base_url: String) -> LlmConfig {
    LlmConfig {
        provider: "openai".into(),
        api_key: Some(Secret::new("sk-test-key-123456")),
        model: "smollm2-135m-instruct".into(),
        base_url,
        request_timeout_secs: 10,
        max_output_tokens: 64,
        ..LlmConfig::default()
    }
}

#[tokio::test]
async fn talks_to_any_openai_compatible_server_and_records_a_replayable_transcript() {
    let seen = Seen::default();
    let base = start_server(seen.clone(), 200).await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("run.jsonl");
    let mut cfg = config(base);
    cfg.record_file = Some(record.clone());
    let model = llm::from_config(&cfg).unwrap();
    assert!(model.describe().contains("smollm2-135m-instruct"));

    let reply = model
        .complete(&[Message::system("be brief"), Message::user("hello")], &[])
        .await
        .unwrap();
    assert_eq!(reply.content, "echo: hello");
    assert_eq!(
        (reply.usage.prompt_tokens, reply.usage.completion_tokens),
        (21, 7)
    );

    let requests = seen.requests.lock().unwrap().clone();
    let (auth, body) = &requests[0];
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-key-123456"));
    assert_eq!(body["model"], "smollm2-135m-instruct");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["content"], "hello");

    let transcript = std::fs::read_to_string(&record).unwrap();
    assert!(
        !transcript.contains("sk-test-key-123456"),
        "the key is not recorded"
    );
    let replay = ReplayModel::load(&record).unwrap();
    let again = llm::ChatModel::complete(&replay, &[], &[]).await.unwrap();
    assert_eq!(again.content, "echo: hello");
    assert_eq!(again.usage.prompt_tokens, 21);
}

#[tokio::test]
async fn server_errors_name_the_server() {
    let base = start_server(Seen::default(), 404).await;
    let model = llm::from_config(&config(base.clone())).unwrap();
    let err = model
        .complete(&[Message::user("hi")], &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&base) && err.contains("model not loaded"),
        "{err}"
    );
    assert!(!err.contains("sk-test-key-123456"));
}

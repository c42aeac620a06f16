//! The preflight probe's questions to a model server: how large its context window is, and
//! whether the model answers with native tool calls.
//!
//! Context window, the first that answers (asked at once, each with a short timeout):
//! llama.cpp `GET <root>/props` → `default_generation_settings.n_ctx` (the per-slot
//! window); vLLM `GET <base_url>/models` → the served model's `max_model_len`; Ollama
//! `POST <root>/api/show` → `num_ctx` among its `parameters`, else Ollama's serving default.
//! `<root>` is the base URL without its trailing `/v1`. Nothing here is ever an error: a
//! question no server answers gives `None`.

use std::time::Duration;

use serde_json::{Value, json};

use super::openai::CallError;
use super::{Completion, Message, ToolSpec};
use crate::config::Secret;

/// Each context-window question waits this long at most.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Ollama's context window when a model sets no `num_ctx`. Newer Ollama versions (or
/// `OLLAMA_CONTEXT_LENGTH` on the server) may serve more; assuming the smaller window is the
/// safe side, as a prompt larger than the real window is cut without an error.
pub(crate) const OLLAMA_DEFAULT_NUM_CTX: u64 = 2048;

/// The server root: the base URL without a trailing `/v1` (and slash).
pub(super) fn server_root(base_url: &str) -> &str {
    let trimmed = base_url.trim_end_matches('/');
    trimmed.strip_suffix("/v1").unwrap_or(trimmed)
}

/// The model's context window as the server reports it, or `None` when no server answers.
pub(super) async fn context_window(
    http: &reqwest::Client,
    base_url: &str,
    model: &str,
    api_key: Option<&Secret>,
) -> Option<u64> {
    let root = server_root(base_url);
    let api = base_url.trim_end_matches('/');
    let ask = |request: reqwest::RequestBuilder| {
        let request = request.timeout(PROBE_TIMEOUT);
        match api_key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    };
    let show_body = json!({ "model": model }).to_string();
    let (props, models, show) = tokio::join!(
        fetch_json(ask(http.get(format!("{root}/props")))),
        fetch_json(ask(http.get(format!("{api}/models")))),
        fetch_json(ask(http
            .post(format!("{root}/api/show"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(show_body))),
    );
    if let Some(n) = props.as_ref().and_then(llama_cpp_context) {
        return Some(n);
    }
    if let Some(n) = models.as_ref().and_then(|m| vllm_context(m, model)) {
        return Some(n);
    }
    match show.as_ref().and_then(ollama_context)? {
        OllamaContext::NumCtx(n) => Some(n),
        OllamaContext::ServingDefault => {
            tracing::warn!(
                model,
                base_url,
                context_tokens = OLLAMA_DEFAULT_NUM_CTX,
                "Ollama serves this model without a num_ctx, so with its default context window (assumed {OLLAMA_DEFAULT_NUM_CTX} tokens), and silently cuts longer prompts: set `PARAMETER num_ctx N` in the model's Modelfile (or OLLAMA_CONTEXT_LENGTH on the Ollama server), and LLM_CONTEXT_TOKENS=N here"
            );
            Some(OLLAMA_DEFAULT_NUM_CTX)
        }
    }
}

/// A JSON reply to a successful request, else `None` (why goes to the debug log).
async fn fetch_json(request: reqwest::RequestBuilder) -> Option<Value> {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %crate::sandbox::error_chain(&e), "context-window probe got no answer");
            return None;
        }
    };
    let url = response.url().to_string();
    if !response.status().is_success() {
        tracing::debug!(%url, status = response.status().as_u16(), "context-window probe refused");
        return None;
    }
    let bytes = response.bytes().await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn positive(value: &Value) -> Option<u64> {
    value.as_u64().filter(|n| *n > 0)
}

/// llama.cpp's `/props`: `default_generation_settings.n_ctx`, the window of one slot.
pub(super) fn llama_cpp_context(props: &Value) -> Option<u64> {
    positive(props.get("default_generation_settings")?.get("n_ctx")?)
}

/// vLLM's `/v1/models`: `max_model_len` of the entry whose `id` is the model.
pub(super) fn vllm_context(models: &Value, model: &str) -> Option<u64> {
    models
        .get("data")?
        .as_array()?
        .iter()
        .find(|m| m.get("id").and_then(Value::as_str) == Some(model))?
        .get("max_model_len")
        .and_then(positive)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OllamaContext {
    /// The model's `num_ctx` parameter.
    NumCtx(u64),
    /// The model sets none: Ollama serves its default window.
    ServingDefault,
}

/// Ollama's `/api/show`: `parameters` is text, one `name value` a line (`num_ctx 8192`).
pub(super) fn ollama_context(show: &Value) -> Option<OllamaContext> {
    let object = show.as_object()?;
    let is_show_reply = ["modelfile", "parameters", "details", "model_info"]
        .iter()
        .any(|k| object.contains_key(*k));
    if !is_show_reply {
        return None;
    }
    let num_ctx = object
        .get("parameters")
        .and_then(Value::as_str)
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("num_ctx"), Some(n)) => n.parse::<u64>().ok().filter(|n| *n > 0),
                    _ => None,
                }
            })
        });
    Some(match num_ctx {
        Some(n) => OllamaContext::NumCtx(n),
        None => OllamaContext::ServingDefault,
    })
}

/// The one request the tool-call probe sends: a single `list_dir` tool, and a user message
/// asking to call it on `.`.
pub(super) fn tool_probe_request() -> (Vec<Message>, Vec<ToolSpec>) {
    let tool = ToolSpec {
        name: "list_dir".into(),
        description: "List the entries of a directory of the repository.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "The directory, relative to the repository root."}
            },
            "required": ["path"]
        }),
    };
    let messages = vec![Message::user(
        "Call the list_dir tool with path \".\" to list the repository's top directory.",
    )];
    (messages, vec![tool])
}

/// What the tool-call probe's outcome says: a reply with tool calls → `Some(true)`; a plain
/// text reply, a refusal (4xx, e.g. "this model does not support tools") or a reply that is
/// not a chat completion → `Some(false)`; no answer (connection error, timeout, 5xx,
/// 408/429) → `None`, "could not tell".
pub(super) fn native_tools_verdict(result: &Result<Completion, CallError>) -> Option<bool> {
    match result {
        Ok(completion) => Some(!completion.tool_calls.is_empty()),
        Err(CallError::Status { status, .. }) => {
            ((400..500).contains(status) && !matches!(status, 408 | 429)).then_some(false)
        }
        Err(CallError::Other(_)) => Some(false),
        Err(CallError::Timeout | CallError::Transport(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ToolCall, Usage};

    #[test]
    fn the_root_drops_a_trailing_v1() {
        assert_eq!(
            server_root("http://localhost:8080/v1"),
            "http://localhost:8080"
        );
        assert_eq!(
            server_root("http://localhost:8080/v1/"),
            "http://localhost:8080"
        );
        assert_eq!(
            server_root("http://gpu:11434/ollama"),
            "http://gpu:11434/ollama"
        );
        assert_eq!(server_root("http://h/v1beta"), "http://h/v1beta");
    }

    #[test]
    fn llama_cpp_props() {
        let props = json!({
            "default_generation_settings": {"n_ctx": 4096, "params": {"temperature": 0.8}},
            "total_slots": 1,
            "model_path": "m.gguf"
        });
        assert_eq!(llama_cpp_context(&props), Some(4096));
        assert_eq!(llama_cpp_context(&json!({"total_slots": 1})), None);
        assert_eq!(
            llama_cpp_context(&json!({"default_generation_settings": {"n_ctx": 0}})),
            None
        );
    }

    #[test]
    fn vllm_models() {
        let models = json!({"object": "list", "data": [
            {"id": "other", "object": "model", "max_model_len": 1024},
            {"id": "Qwen/Qwen2.5-Coder-7B-Instruct", "object": "model", "owned_by": "vllm", "max_model_len": 32768}
        ]});
        assert_eq!(
            vllm_context(&models, "Qwen/Qwen2.5-Coder-7B-Instruct"),
            Some(32768)
        );
        assert_eq!(vllm_context(&models, "missing"), None);
        // Ollama's and OpenAI's model lists carry no window.
        let plain = json!({"object": "list", "data": [{"id": "qwen2.5-coder:7b", "object": "model", "owned_by": "library"}]});
        assert_eq!(vllm_context(&plain, "qwen2.5-coder:7b"), None);
    }

    #[test]
    fn ollama_show() {
        let with = json!({
            "modelfile": "FROM x\nPARAMETER num_ctx 16384\n",
            "parameters": "stop                           \"<|im_end|>\"\nnum_ctx                        16384\ntemperature                    0.2",
            "details": {"format": "gguf", "family": "qwen2"}
        });
        assert_eq!(ollama_context(&with), Some(OllamaContext::NumCtx(16384)));
        let without = json!({
            "parameters": "stop \"<|im_end|>\"",
            "details": {"format": "gguf"}
        });
        assert_eq!(
            ollama_context(&without),
            Some(OllamaContext::ServingDefault)
        );
        let no_parameters = json!({"modelfile": "FROM x", "details": {}});
        assert_eq!(
            ollama_context(&no_parameters),
            Some(OllamaContext::ServingDefault)
        );
        assert_eq!(ollama_context(&json!({"status": "ok"})), None);
        assert_eq!(ollama_context(&json!("text")), None);
    }

    fn completion(tool_calls: Vec<ToolCall>) -> Result<Completion, CallError> {
        Ok(Completion {
            content: String::new(),
            usage: Usage::default(),
            tool_calls,
        })
    }

    #[test]
    fn verdicts() {
        let call = ToolCall {
            id: "c".into(),
            name: "list_dir".into(),
            arguments: "{\"path\":\".\"}".into(),
        };
        assert_eq!(native_tools_verdict(&completion(vec![call])), Some(true));
        assert_eq!(native_tools_verdict(&completion(vec![])), Some(false));
        let status = |status| {
            Err(CallError::Status {
                status,
                message: "m".into(),
            })
        };
        assert_eq!(native_tools_verdict(&status(400)), Some(false));
        assert_eq!(native_tools_verdict(&status(404)), Some(false));
        assert_eq!(native_tools_verdict(&status(429)), None);
        assert_eq!(native_tools_verdict(&status(503)), None);
        assert_eq!(
            native_tools_verdict(&Err(CallError::Other("not a completion".into()))),
            Some(false)
        );
        assert_eq!(native_tools_verdict(&Err(CallError::Timeout)), None);
        assert_eq!(
            native_tools_verdict(&Err(CallError::Transport("refused".into()))),
            None
        );
    }

    #[test]
    fn the_probe_request_offers_one_tool() {
        let (messages, tools) = tool_probe_request();
        assert_eq!(messages.len(), 1);
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].name, "list_dir");
        assert_eq!(tools[0].parameters["required"], json!(["path"]));
    }
}

//! Any server that speaks OpenAI's chat-completions API: OpenAI, vLLM, Ollama, llama.cpp.
//!
//! Native tools go out as `tools` (function tools, `tool_choice: auto`) and come back as
//! [`ToolCall`]s; replies stream by default (`LlmConfig::stream`) with token usage from the
//! final usage chunk, estimated when a server sends none.

use std::collections::BTreeMap;
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessageArgs, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestToolMessageArgs,
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, ChatCompletionTool,
    ChatCompletionToolChoiceOption, ChatCompletionTools, CompletionUsage,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs, CreateChatCompletionResponse,
    CreateChatCompletionStreamResponse, FunctionCall, FunctionObject, ToolChoiceOptions,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

use super::probe;
use super::{
    Capabilities, ChatModel, Completion, LlmError, Message, Role, ToolCall, ToolSpec, Usage,
    estimate_usage,
};
use crate::config::{LlmConfig, Secret, ToolProtocol};

/// The tool-call probe never waits longer than this, whatever `request_timeout_secs` says.
const TOOL_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Completion tokens the tool-call probe allows: enough for one short call.
const TOOL_PROBE_MAX_TOKENS: u32 = 32;

/// Any server that speaks OpenAI's chat-completions API: OpenAI, vLLM, Ollama, llama.cpp.
pub struct OpenAiModel {
    client: async_openai::Client<OpenAIConfig>,
    /// For the probe's requests outside the chat-completions API.
    http: reqwest::Client,
    api_key: Option<Secret>,
    base_url: String,
    model: String,
    max_output_tokens: u32,
    temperature: f32,
    timeout: Duration,
    stream: bool,
    /// Which field limits the reply: OpenAI's own API wants `max_completion_tokens` (its
    /// reasoning models refuse `max_tokens`); Ollama reads only `max_tokens`.
    token_limit: TokenLimitField,
    context_tokens: Option<u64>,
    tool_protocol: ToolProtocol,
    probed: OnceCell<Capabilities>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenLimitField {
    /// `max_completion_tokens` only.
    Completion,
    /// Both `max_tokens` and `max_completion_tokens`: every local server reads one of them.
    Both,
}

impl TokenLimitField {
    fn for_base_url(base_url: &str) -> TokenLimitField {
        let host = reqwest::Url::parse(base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        if host == "openai.com" || host.ends_with(".openai.com") || host.ends_with(".azure.com") {
            TokenLimitField::Completion
        } else {
            TokenLimitField::Both
        }
    }
}

/// What one request may do.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_tokens: u32,
    temperature: f32,
    timeout: Duration,
}

/// Why a request failed, kept apart so the probe can tell "answered no" from "no answer".
#[derive(Debug)]
pub(super) enum CallError {
    /// No complete answer within the time allowed.
    Timeout,
    /// The server answered with an HTTP error status.
    Status { status: u16, message: String },
    /// The server could not be reached, or the connection broke.
    Transport(String),
    /// Anything else: a request that could not be built, a reply that could not be read.
    Other(String),
}

impl CallError {
    fn from_openai(e: OpenAIError) -> CallError {
        match e {
            OpenAIError::ApiError(api) => CallError::Status {
                status: api.status_code.as_u16(),
                message: api.to_string(),
            },
            OpenAIError::Reqwest(e) if e.is_timeout() => CallError::Timeout,
            OpenAIError::Reqwest(e) => match e.status() {
                Some(status) => CallError::Status {
                    status: status.as_u16(),
                    message: crate::sandbox::error_chain(&e),
                },
                None => CallError::Transport(crate::sandbox::error_chain(&e)),
            },
            OpenAIError::StreamError(e) => {
                CallError::Transport(format!("the reply stream broke: {e}"))
            }
            OpenAIError::JSONDeserialize(e, content) => {
                CallError::Other(match server_error_message(&content) {
                    Some(message) => message,
                    None => format!(
                        "its reply is not an OpenAI chat completion ({e}): {}",
                        truncate(&content, 500)
                    ),
                })
            }
            other => CallError::Other(other.to_string()),
        }
    }
}

/// The message of an error object some servers send where a reply (or a stream chunk)
/// belongs: `{"error": {"message": ...}}`, `{"error": "..."}`, `{"message": ...}`, `{"detail": ...}`.
fn server_error_message(content: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(content).ok()?;
    let error = value.get("error");
    error
        .and_then(|e| e.get("message"))
        .or(error.filter(|e| e.is_string()))
        .or_else(|| value.get("message"))
        .or_else(|| value.get("detail"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

impl OpenAiModel {
    pub fn new(config: &LlmConfig) -> OpenAiModel {
        let mut openai = OpenAIConfig::new().with_api_base(config.base_url.trim_end_matches('/'));
        // Local servers need no key; sending a placeholder keeps strict proxies happy.
        let key = config
            .api_key
            .as_ref()
            .map(|k| k.expose())
            .unwrap_or("none");
        openai = openai.with_api_key(key);
        // Whole requests are bounded by `tokio::time::timeout`. The client's own limits stop
        // a dead host from holding a connection attempt for the whole request time, and end
        // the reading of a stream that was given up on but that the server never finishes.
        let timeout = Duration::from_secs(config.request_timeout_secs);
        let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if !timeout.is_zero() {
            http = http.timeout(timeout);
        }
        let http = http.build();
        let (client, http) = match http {
            Ok(http) => (async_openai::Client::build(http.clone(), openai), http),
            // Only a broken TLS backend fails here; the defaults fail the same way, later.
            Err(_) => (
                async_openai::Client::with_config(openai),
                reqwest::Client::new(),
            ),
        };
        OpenAiModel {
            client,
            http,
            api_key: config.api_key.clone(),
            base_url: config.base_url.clone(),
            model: config.model.clone(),
            max_output_tokens: config.max_output_tokens,
            temperature: config.temperature,
            timeout,
            stream: config.stream,
            token_limit: TokenLimitField::for_base_url(&config.base_url),
            context_tokens: config.context_tokens,
            tool_protocol: config.tool_protocol,
            probed: OnceCell::new(),
        }
    }

    fn to_llm_error(&self, e: CallError, timeout: Duration) -> LlmError {
        let message = match e {
            CallError::Timeout => {
                return LlmError::Timeout {
                    base_url: self.base_url.clone(),
                    secs: timeout.as_secs(),
                };
            }
            CallError::Status { message, .. }
            | CallError::Transport(message)
            | CallError::Other(message) => message,
        };
        LlmError::Request {
            base_url: self.base_url.clone(),
            message,
        }
    }

    fn build_request(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        limits: Limits,
    ) -> Result<CreateChatCompletionRequest, CallError> {
        let other = |e: OpenAIError| CallError::Other(e.to_string());
        let request_messages = messages
            .iter()
            .map(to_openai_message)
            .collect::<Result<Vec<_>, _>>()
            .map_err(other)?;
        let mut args = CreateChatCompletionRequestArgs::default();
        args.model(&self.model)
            .messages(request_messages)
            .max_completion_tokens(limits.max_tokens)
            .temperature(limits.temperature);
        if !tools.is_empty() {
            args.tools(tools.iter().map(to_openai_tool).collect::<Vec<_>>())
                .tool_choice(ChatCompletionToolChoiceOption::Mode(
                    ToolChoiceOptions::Auto,
                ));
        }
        let mut request = args.build().map_err(other)?;
        if self.token_limit == TokenLimitField::Both {
            // Deprecated by OpenAI, and still the only limit Ollama reads.
            #[allow(deprecated)]
            {
                request.max_tokens = Some(limits.max_tokens);
            }
        }
        if self.stream {
            request.stream_options = Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            });
        }
        Ok(request)
    }

    /// One request, streamed or not, all of it (connecting, retries, the whole stream)
    /// within `limits.timeout`.
    async fn request(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        limits: Limits,
    ) -> Result<Completion, CallError> {
        let request = self.build_request(messages, tools, limits)?;
        let work = async {
            if self.stream {
                let mut stream = self
                    .client
                    .chat()
                    .create_stream(request)
                    .await
                    .map_err(CallError::from_openai)?;
                let mut reply = StreamedReply::default();
                while let Some(chunk) = stream.next().await {
                    reply.push(chunk.map_err(CallError::from_openai)?);
                }
                Ok(reply.finish())
            } else {
                let response = self
                    .client
                    .chat()
                    .create(request)
                    .await
                    .map_err(CallError::from_openai)?;
                Ok(whole_reply(response))
            }
        };
        let (content, tool_calls, usage) = tokio::time::timeout(limits.timeout, work)
            .await
            .map_err(|_| CallError::Timeout)??;
        let usage = usage.unwrap_or_else(|| {
            let mut reply = content.clone();
            for call in &tool_calls {
                reply.push_str(&call.name);
                reply.push_str(&call.arguments);
            }
            estimate_usage(messages, &reply)
        });
        Ok(Completion {
            content,
            usage,
            tool_calls,
        })
    }

    async fn call(&self, messages: &[Message], tools: &[ToolSpec]) -> Result<Completion, LlmError> {
        let context_tokens = self.probed.get().and_then(|c| c.context_tokens);
        let limits = Limits {
            max_tokens: fit_max_tokens(
                self.max_output_tokens,
                context_tokens,
                prompt_estimate(messages, tools),
            ),
            temperature: self.temperature,
            timeout: self.timeout,
        };
        self.request(messages, tools, limits)
            .await
            .map_err(|e| self.to_llm_error(e, limits.timeout))
    }

    /// Whether the model answers a request that offers one tool with a native call to it.
    async fn probe_native_tools(&self) -> Option<bool> {
        let limits = Limits {
            max_tokens: TOOL_PROBE_MAX_TOKENS,
            temperature: 0.0,
            timeout: self.timeout.min(TOOL_PROBE_TIMEOUT),
        };
        let (messages, tools) = probe::tool_probe_request();
        let result = self.request(&messages, &tools, limits).await;
        if let Err(e) = &result {
            tracing::debug!(base_url = %self.base_url, error = ?e, "tool-call probe failed");
        }
        probe::native_tools_verdict(&result)
    }

    async fn run_probe(&self) -> Capabilities {
        let context = async {
            match self.context_tokens {
                Some(n) => Some(n),
                None => {
                    probe::context_window(
                        &self.http,
                        &self.base_url,
                        &self.model,
                        self.api_key.as_ref(),
                    )
                    .await
                }
            }
        };
        let native = async {
            match self.tool_protocol {
                ToolProtocol::Native => Some(true),
                ToolProtocol::Text => Some(false),
                ToolProtocol::Auto => self.probe_native_tools().await,
            }
        };
        let (context_tokens, native_tools) = tokio::join!(context, native);
        tracing::info!(
            model = %self.model,
            base_url = %self.base_url,
            context_tokens,
            native_tools,
            "model probe"
        );
        Capabilities {
            native_tools,
            context_tokens,
        }
    }
}

/// Prompt tokens, over- rather than underestimated: the messages and the tools' schemas.
fn prompt_estimate(messages: &[Message], tools: &[ToolSpec]) -> u64 {
    let tools: usize = tools
        .iter()
        .map(|t| t.description.len() + t.parameters.to_string().len())
        .sum();
    let messages: usize = messages.iter().map(super::estimate_message_tokens).sum();
    (messages + tools.div_ceil(super::BYTES_PER_TOKEN)) as u64
}

/// The completion limit of one request: the configured one, lowered so prompt and reply
/// fit the window when it is known (vLLM refuses a request whose sum does not fit;
/// llama.cpp would stop at the window's end anyway). Never below a useful minimum.
fn fit_max_tokens(configured: u32, context_tokens: Option<u64>, prompt: u64) -> u32 {
    const MIN_REPLY_TOKENS: u64 = 256;
    match context_tokens {
        Some(ctx) => {
            let room = ctx.saturating_sub(prompt).max(MIN_REPLY_TOKENS);
            u32::try_from(room).unwrap_or(u32::MAX).min(configured)
        }
        None => configured,
    }
}

fn to_openai_tool(spec: &ToolSpec) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: spec.name.clone(),
            description: Some(spec.description.clone()),
            parameters: Some(spec.parameters.clone()),
            strict: None,
        },
    })
}

fn to_openai_message(m: &Message) -> Result<ChatCompletionRequestMessage, OpenAIError> {
    Ok(match m.role {
        Role::System => ChatCompletionRequestSystemMessageArgs::default()
            .content(m.content.as_str())
            .build()?
            .into(),
        Role::User => ChatCompletionRequestUserMessageArgs::default()
            .content(m.content.as_str())
            .build()?
            .into(),
        Role::Assistant => {
            let mut args = ChatCompletionRequestAssistantMessageArgs::default();
            // `content` may be left out only when the turn carries tool calls.
            if !m.content.is_empty() || m.tool_calls.is_empty() {
                args.content(m.content.as_str());
            }
            if !m.tool_calls.is_empty() {
                args.tool_calls(
                    m.tool_calls
                        .iter()
                        .map(|call| {
                            ChatCompletionMessageToolCalls::Function(
                                ChatCompletionMessageToolCall {
                                    id: call.id.clone(),
                                    function: FunctionCall {
                                        name: call.name.clone(),
                                        arguments: call.arguments.clone(),
                                    },
                                },
                            )
                        })
                        .collect::<Vec<_>>(),
                );
            }
            args.build()?.into()
        }
        Role::Tool => match &m.tool_call_id {
            Some(id) => ChatCompletionRequestToolMessageArgs::default()
                .tool_call_id(id.as_str())
                .content(m.content.as_str())
                .build()?
                .into(),
            // A tool result that answers no call can only go back as text.
            None => ChatCompletionRequestUserMessageArgs::default()
                .content(m.content.as_str())
                .build()?
                .into(),
        },
    })
}

fn to_usage(u: CompletionUsage) -> Usage {
    Usage {
        prompt_tokens: u64::from(u.prompt_tokens),
        completion_tokens: u64::from(u.completion_tokens),
    }
}

/// A call id for servers that send none, so that the tool result can still name its call.
fn fallback_id(index: usize) -> String {
    format!("call_{index}")
}

type Reply = (String, Vec<ToolCall>, Option<Usage>);

fn whole_reply(response: CreateChatCompletionResponse) -> Reply {
    let usage = response.usage.map(to_usage);
    let Some(choice) = response.choices.into_iter().next() else {
        return (String::new(), Vec::new(), usage);
    };
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .filter_map(|call| match call {
            ChatCompletionMessageToolCalls::Function(f) => Some(f),
            // Custom (free-form) tools are never offered.
            ChatCompletionMessageToolCalls::Custom(_) => None,
        })
        .enumerate()
        .map(|(i, f)| ToolCall {
            id: if f.id.is_empty() {
                fallback_id(i)
            } else {
                f.id
            },
            name: f.function.name,
            arguments: f.function.arguments,
        })
        .collect();
    (
        choice.message.content.unwrap_or_default(),
        tool_calls,
        usage,
    )
}

/// A streamed reply put back together: content deltas appended; tool-call chunks grouped by
/// their `index`, the id and name taken from the first chunk that has them and the argument
/// pieces concatenated; usage from the (final) chunk that carries it.
#[derive(Debug, Default)]
pub(super) struct StreamedReply {
    content: String,
    calls: BTreeMap<u32, ToolCall>,
    usage: Option<Usage>,
}

impl StreamedReply {
    pub(super) fn push(&mut self, chunk: CreateChatCompletionStreamResponse) {
        if let Some(usage) = chunk.usage {
            self.usage = Some(to_usage(usage));
        }
        // Only one choice is asked for (n = 1).
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content {
                self.content.push_str(&text);
            }
            for piece in choice.delta.tool_calls.into_iter().flatten() {
                let call = self.calls.entry(piece.index).or_insert_with(|| ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                if let Some(id) = piece.id.filter(|id| !id.is_empty())
                    && call.id.is_empty()
                {
                    call.id = id;
                }
                if let Some(function) = piece.function {
                    if let Some(name) = function.name.filter(|n| !n.is_empty())
                        && call.name.is_empty()
                    {
                        call.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        call.arguments.push_str(&arguments);
                    }
                }
            }
        }
    }

    pub(super) fn finish(self) -> Reply {
        let calls = self
            .calls
            .into_values()
            .enumerate()
            .map(|(i, mut call)| {
                if call.id.is_empty() {
                    call.id = fallback_id(i);
                }
                call
            })
            .collect();
        (self.content, calls, self.usage)
    }
}

impl ChatModel for OpenAiModel {
    fn describe(&self) -> String {
        format!("{} at {}", self.model, self.base_url)
    }
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        tools: &'a [ToolSpec],
    ) -> BoxFuture<'a, Result<Completion, LlmError>> {
        Box::pin(self.call(messages, tools))
    }
    /// Asked once per model: later calls return the first answer.
    fn probe(&self) -> BoxFuture<'_, Capabilities> {
        Box::pin(async move { self.probed.get_or_init(|| self.run_probe()).await.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(value: serde_json::Value) -> CreateChatCompletionStreamResponse {
        let mut full = json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_764_000_000u32,
            "model": "m",
        });
        for (k, v) in value.as_object().unwrap() {
            full[k] = v.clone();
        }
        serde_json::from_value(full).unwrap()
    }

    fn delta(delta: serde_json::Value) -> CreateChatCompletionStreamResponse {
        chunk(json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]}))
    }

    #[test]
    fn streamed_content_and_usage_are_put_back_together() {
        let mut reply = StreamedReply::default();
        reply.push(delta(json!({"role": "assistant", "content": null})));
        reply.push(delta(json!({"content": "Hel"})));
        reply.push(delta(json!({"content": "lo"})));
        reply.push(chunk(
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ));
        reply.push(chunk(
            json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}),
        ));
        let (content, calls, usage) = reply.finish();
        assert_eq!(content, "Hello");
        assert!(calls.is_empty());
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            })
        );
    }

    #[test]
    fn streamed_tool_calls_are_grouped_by_index() {
        let mut reply = StreamedReply::default();
        // OpenAI/vLLM style: id and name first, then argument pieces; two calls interleaved.
        reply.push(delta(json!({"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": ""}}
        ]})));
        reply.push(delta(json!({"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"path\":"}}
        ]})));
        reply.push(delta(json!({"tool_calls": [
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "run_tests", "arguments": "{}"}}
        ]})));
        // Some servers repeat the id (and even the name) on later chunks: the first one wins.
        reply.push(delta(json!({"tool_calls": [
            {"index": 0, "id": "call_a", "function": {"name": "read_file", "arguments": " \"a.rs\"}"}}
        ]})));
        let (content, calls, usage) = reply.finish();
        assert_eq!(content, "");
        assert_eq!(usage, None);
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "read_file".into(),
                    arguments: "{\"path\": \"a.rs\"}".into()
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "run_tests".into(),
                    arguments: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn calls_without_ids_get_one() {
        let mut reply = StreamedReply::default();
        reply.push(delta(json!({"tool_calls": [
            {"index": 0, "function": {"name": "list_dir", "arguments": "{\"path\":\".\"}"}}
        ]})));
        let (_, calls, _) = reply.finish();
        assert_eq!(calls[0].id, "call_0");

        let response: CreateChatCompletionResponse = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1u32, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "", "type": "function", "function": {"name": "list_dir", "arguments": "{}"}}]
            }}]
        }))
        .unwrap();
        let (content, calls, usage) = whole_reply(response);
        assert_eq!((content.as_str(), usage), ("", None));
        assert_eq!(
            calls,
            vec![ToolCall {
                id: "call_0".into(),
                name: "list_dir".into(),
                arguments: "{}".into()
            }]
        );
    }

    #[test]
    fn messages_carry_tool_calls_and_results() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "read_file".into(),
            arguments: "{\"path\":\"a.rs\"}".into(),
        };
        let messages = [
            Message::assistant_with_tools("", vec![call]),
            Message::tool_result("call_1", "fn main() {}"),
            Message {
                tool_call_id: None,
                ..Message::tool_result("x", "orphan")
            },
            Message::assistant("plain"),
        ];
        let sent: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::to_value(to_openai_message(m).unwrap()).unwrap())
            .collect();
        assert_eq!(
            sent[0],
            json!({"role": "assistant", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"a.rs\"}"}}
            ]})
        );
        assert_eq!(
            sent[1],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "fn main() {}"})
        );
        assert_eq!(sent[2], json!({"role": "user", "content": "orphan"}));
        assert_eq!(sent[3], json!({"role": "assistant", "content": "plain"}));
    }

    #[test]
    fn the_completion_limit_fits_the_window() {
        assert_eq!(fit_max_tokens(4096, None, 3000), 4096);
        assert_eq!(fit_max_tokens(4096, Some(4096), 1000), 3096);
        assert_eq!(fit_max_tokens(512, Some(4096), 1000), 512);
        assert_eq!(
            fit_max_tokens(4096, Some(4096), 4000),
            256,
            "a minimum is kept"
        );
        assert_eq!(fit_max_tokens(100, Some(4096), 4000), 100);
        let prompt = prompt_estimate(&[Message::user("x".repeat(300))], &[]);
        assert_eq!(prompt, 108);
    }

    #[test]
    fn openai_itself_gets_max_completion_tokens_only() {
        for (url, field) in [
            ("https://api.openai.com/v1", TokenLimitField::Completion),
            (
                "https://x.openai.azure.com/openai/deployments/d",
                TokenLimitField::Completion,
            ),
            ("http://localhost:11434/v1", TokenLimitField::Both),
            ("http://vllm:8000/v1", TokenLimitField::Both),
            ("not a url", TokenLimitField::Both),
        ] {
            assert_eq!(TokenLimitField::for_base_url(url), field, "{url}");
        }
    }

    #[test]
    fn error_objects_in_place_of_a_reply_give_their_message() {
        for body in [
            r#"{"error": {"message": "context too long", "type": "x"}}"#,
            r#"{"error": "context too long"}"#,
            r#"{"object": "error", "message": "context too long", "code": 400}"#,
            r#"{"detail": "context too long"}"#,
        ] {
            assert_eq!(
                server_error_message(body).as_deref(),
                Some("context too long")
            );
        }
        assert_eq!(server_error_message("404 page not found"), None);
        assert_eq!(truncate("héllo", 2), "hé");
    }
}

//! Chat models: any OpenAI-compatible server, a replay model that answers from a recorded
//! JSONL transcript (tests, demos), and a recorder that writes such transcripts.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::LlmConfig;
pub use crate::config::ToolProtocol;

mod openai;
mod probe;

pub use openai::OpenAiModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a native tool call, answering the assistant message that asked for it.
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Native tool calls the assistant asked for (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Which call a `Role::Tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
    /// An assistant turn that asked for native tool calls.
    pub fn assistant_with_tools(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls,
            ..Message::new(Role::Assistant, content)
        }
    }
    /// The answer to one native tool call.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(tool_call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// A native (OpenAI-style function) tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: JSON text, not yet validated.
    pub arguments: String,
}

/// A tool offered to the model: a name, what it does, and a JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// What a preflight probe learned about a model; `None` is "could not tell".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Whether the server returns native tool calls when offered tools.
    pub native_tools: Option<bool>,
    /// The context window in tokens, prompt and completion together.
    pub context_tokens: Option<u64>,
}

/// Whether the agent asks this model for actions with native tool calls.
///
/// The rule: native only when the configuration forces it (`tool_protocol = "native"`), or
/// when it is `auto` and the preflight probe saw the model make a tool call
/// (`native_tools == Some(true)`). Otherwise (`text`, a model that answered in prose or
/// refused the tools, or a probe that could not tell) the plain-text action protocol,
/// which works with any model.
pub fn tool_protocol_is_native(configured: ToolProtocol, probed: &Capabilities) -> bool {
    match configured {
        ToolProtocol::Native => true,
        ToolProtocol::Text => false,
        ToolProtocol::Auto => probed.native_tools == Some(true),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    pub usage: Usage,
    /// Native tool calls in the reply (only when tools were offered).
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model server at {base_url} failed: {message}")]
    Request { base_url: String, message: String },
    #[error("the model server at {base_url} did not answer within {secs} s")]
    Timeout { base_url: String, secs: u64 },
    #[error(
        "the replay transcript {path} has no reply left (it holds {count}); record a longer one or raise nothing else"
    )]
    ReplayExhausted { path: PathBuf, count: usize },
    #[error("the replay transcript {path} is not valid at line {line}: {message}")]
    ReplayFormat {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// A chat model. Implementations are cheap to share between tasks.
pub trait ChatModel: Send + Sync {
    /// What the model is, for summaries and transcripts (never holds a key).
    fn describe(&self) -> String;
    /// One chat completion. `tools` is empty unless the agent uses native tool calls.
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        tools: &'a [ToolSpec],
    ) -> BoxFuture<'a, Result<Completion, LlmError>>;
    /// The preflight probe: what the model can do, asked once before a task starts.
    fn probe(&self) -> BoxFuture<'_, Capabilities> {
        Box::pin(std::future::ready(Capabilities::default()))
    }
}

/// Builds the model the configuration names, wrapped in a recorder when asked.
pub fn from_config(config: &LlmConfig) -> Result<Box<dyn ChatModel>, LlmError> {
    let model: Box<dyn ChatModel> = match config.provider.as_str() {
        "replay" => {
            let path = config.replay_file.as_ref().ok_or_else(|| {
                LlmError::Config(
                    "LLM_PROVIDER=replay needs a transcript: pass --llm replay:<file> or set LLM_REPLAY_FILE".into(),
                )
            })?;
            Box::new(ReplayModel::load(path)?)
        }
        "openai" => Box::new(OpenAiModel::new(config)),
        other => {
            return Err(LlmError::Config(format!(
                "unknown LLM provider `{other}`: use `openai` (any OpenAI-compatible server) or `replay`"
            )));
        }
    };
    match &config.record_file {
        Some(path) => Ok(Box::new(Recorder::create(model, path)?)),
        None => Ok(model),
    }
}

/// Bytes per token assumed when sizing text for a window: code tokenises denser than
/// prose, so this over- rather than underestimates.
pub const BYTES_PER_TOKEN: usize = 3;

/// The tokens a message takes in a prompt, estimated on the high side: its text, its tool
/// calls, and a few for the role markers and the template's framing.
pub fn estimate_message_tokens(m: &Message) -> usize {
    let tokens = |text: &str| text.len().div_ceil(BYTES_PER_TOKEN);
    tokens(&m.content)
        + m.tool_calls
            .iter()
            .map(|c| tokens(&c.arguments) + tokens(&c.name))
            .sum::<usize>()
        + 8
}

/// When a server reports no usage: about four characters a token.
fn estimate_usage(messages: &[Message], reply: &str) -> Usage {
    let prompt: usize = messages.iter().map(|m| m.content.len()).sum();
    Usage {
        prompt_tokens: prompt.div_ceil(4) as u64,
        completion_tokens: reply.len().div_ceil(4) as u64,
    }
}

/// One exchange of a transcript: what was asked (optional for replay) and what came back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscriptEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    pub reply: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// Answers from a JSONL transcript, one line per reply, in order.
pub struct ReplayModel {
    path: PathBuf,
    count: usize,
    /// A transcript recorded with native tool calls replays as a model that makes them.
    native_tools: bool,
    replies: Mutex<VecDeque<TranscriptEntry>>,
}

impl ReplayModel {
    pub fn load(path: &Path) -> Result<ReplayModel, LlmError> {
        let text = std::fs::read_to_string(path).map_err(|source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut replies = VecDeque::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: TranscriptEntry = serde_json::from_str(line).map_err(|e| LlmError::ReplayFormat {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("{e} (each line is {{\"reply\": \"...\"}}, optionally with \"messages\" and \"usage\")"),
            })?;
            replies.push_back(entry);
        }
        Ok(ReplayModel {
            path: path.to_path_buf(),
            count: replies.len(),
            native_tools: replies.iter().any(|r| !r.tool_calls.is_empty()),
            replies: Mutex::new(replies),
        })
    }

    fn next(&self, messages: &[Message]) -> Result<Completion, LlmError> {
        let entry = self
            .replies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop_front()
            .ok_or_else(|| LlmError::ReplayExhausted {
                path: self.path.clone(),
                count: self.count,
            })?;
        let usage = entry
            .usage
            .unwrap_or_else(|| estimate_usage(messages, &entry.reply));
        Ok(Completion {
            content: entry.reply,
            usage,
            tool_calls: entry.tool_calls,
        })
    }
}

impl ChatModel for ReplayModel {
    fn describe(&self) -> String {
        format!("replay of {}", self.path.display())
    }
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        _tools: &'a [ToolSpec],
    ) -> BoxFuture<'a, Result<Completion, LlmError>> {
        Box::pin(std::future::ready(self.next(messages)))
    }
    fn probe(&self) -> BoxFuture<'_, Capabilities> {
        Box::pin(std::future::ready(Capabilities {
            native_tools: Some(self.native_tools),
            context_tokens: None,
        }))
    }
}

/// Writes every exchange of the wrapped model as a transcript line a [`ReplayModel`] can replay.
pub struct Recorder {
    inner: Box<dyn ChatModel>,
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Recorder {
    pub fn create(inner: Box<dyn ChatModel>, path: &Path) -> Result<Recorder, LlmError> {
        let io = |source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::File::create(path).map_err(io)?;
        Ok(Recorder {
            inner,
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    fn write(&self, entry: &TranscriptEntry) -> Result<(), LlmError> {
        let mut line = serde_json::to_string(entry).map_err(|e| LlmError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|source| LlmError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

impl ChatModel for Recorder {
    fn describe(&self) -> String {
        format!(
            "{} (recording to {})",
            self.inner.describe(),
            self.path.display()
        )
    }
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        tools: &'a [ToolSpec],
    ) -> BoxFuture<'a, Result<Completion, LlmError>> {
        Box::pin(async move {
            let completion = self.inner.complete(messages, tools).await?;
            self.write(&TranscriptEntry {
                messages: messages.to_vec(),
                reply: completion.content.clone(),
                usage: Some(completion.usage.clone()),
                tool_calls: completion.tool_calls.clone(),
            })?;
            Ok(completion)
        })
    }
    fn probe(&self) -> BoxFuture<'_, Capabilities> {
        self.inner.probe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replay_answers_in_order_then_says_it_is_exhausted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(
            &path,
            "{\"reply\": \"one\", \"usage\": {\"prompt_tokens\": 10, \"completion_tokens\": 2}}\n\n{\"reply\": \"two\"}\n",
        )
        .unwrap();
        let model = ReplayModel::load(&path).unwrap();
        let asked = [Message::user("12345678")];
        let first = model.complete(&asked, &[]).await.unwrap();
        assert_eq!(
            (first.content.as_str(), first.usage.prompt_tokens),
            ("one", 10)
        );
        let second = model.complete(&asked, &[]).await.unwrap();
        assert_eq!(
            (second.content.as_str(), second.usage.prompt_tokens),
            ("two", 2)
        );
        let err = model.complete(&asked, &[]).await.unwrap_err();
        assert!(err.to_string().contains("no reply left"), "{err}");
    }

    #[test]
    fn bad_transcript_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{\"reply\": \"ok\"}\nnot json\n").unwrap();
        let err = ReplayModel::load(&path).err().unwrap();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn native_tools_only_when_forced_or_probed_yes() {
        let probed = |native_tools| Capabilities {
            native_tools,
            context_tokens: None,
        };
        for native_tools in [None, Some(false), Some(true)] {
            let caps = probed(native_tools);
            assert!(tool_protocol_is_native(ToolProtocol::Native, &caps));
            assert!(!tool_protocol_is_native(ToolProtocol::Text, &caps));
            assert_eq!(
                tool_protocol_is_native(ToolProtocol::Auto, &caps),
                native_tools == Some(true)
            );
        }
    }

    #[tokio::test]
    async fn recorder_output_replays() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.jsonl");
        std::fs::write(&source, "{\"reply\": \"hello\"}\n").unwrap();
        let recorded = dir.path().join("rec/out.jsonl");
        let recorder =
            Recorder::create(Box::new(ReplayModel::load(&source).unwrap()), &recorded).unwrap();
        recorder
            .complete(&[Message::user("hi")], &[])
            .await
            .unwrap();
        let replay = ReplayModel::load(&recorded).unwrap();
        assert_eq!(replay.complete(&[], &[]).await.unwrap().content, "hello");
        let line = std::fs::read_to_string(&recorded).unwrap();
        assert!(line.contains("\"role\":\"user\""), "{line}");
    }
}

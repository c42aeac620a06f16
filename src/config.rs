//! One `Config`: `agent-runner.toml` < environment (the setup guide's names) < CLI flags.
//! Secrets are [`Secret`]s, which never print.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dispatch::{IntakeRules, RepoName};
use crate::github::{AppCredentials, Credentials};

/// A value that must never appear in logs, errors, comments, PR bodies or commits.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Serialises as `"***"`: a serialised `Config` (e.g. to list its keys) never holds a secret.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{name}={value:?} is not valid: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error("{0}")]
    Missing(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// GitHub token (`AGENT_RUNNER_GITHUB_TOKEN` or `GITHUB_TOKEN`).
    pub github_token: Option<Secret>,
    /// GitHub App authentication instead of a token (`GITHUB_APP_ID`): set all three of
    /// the App id, installation id and private key, or none. When set, the App wins over
    /// `github_token`.
    pub github_app_id: Option<u64>,
    /// `GITHUB_APP_INSTALLATION_ID`: the App's installation on the dispatch/target owner.
    pub github_app_installation_id: Option<u64>,
    /// `GITHUB_APP_PRIVATE_KEY_PATH`: the `.pem` downloaded from the App's settings.
    pub github_app_private_key_path: Option<PathBuf>,
    /// `GITHUB_APP_PRIVATE_KEY`: the PEM itself, for deployments that pass secrets as
    /// variables; wins over the path.
    pub github_app_private_key: Option<Secret>,
    /// REST API root (`GITHUB_API_URL`); GitHub Enterprise: `https://HOST/api/v3`.
    pub github_api_url: String,
    /// `owner/repo` of the dispatch repository (`DISPATCH_REPO` or `HANDSFREE_AGENT_DISPATCH_REPO`).
    pub dispatch_repo: String,
    /// Target used when an issue names none (`AGENT_RUNNER_DEFAULT_TARGET`).
    pub default_target: Option<String>,
    /// Target repositories tasks may name: `owner/repo` or `owner/*`
    /// (`AGENT_RUNNER_ALLOWED_TARGETS`, comma-separated). Empty: the dispatch repository's
    /// owner's repositories and the default target.
    pub allowed_targets: Vec<String>,
    /// Logins whose tasks are taken besides the repository's owners, members and
    /// collaborators (`AGENT_RUNNER_ALLOWED_AUTHORS`, comma-separated).
    pub allowed_authors: Vec<String>,
    /// Name used in comments (`AGENT_NAME`).
    pub agent_name: String,
    /// `LOG_LEVEL`: ERROR, WARN, INFO, DEBUG or TRACE.
    pub log_level: String,
    /// `POLL_INTERVAL_SECONDS`.
    pub poll_interval_seconds: u64,
    /// Journal, transcripts and work trees (`AGENT_RUNNER_STATE_DIR`).
    pub state_dir: PathBuf,
    pub git_author_name: String,
    pub git_author_email: String,
    pub llm: LlmConfig,
    pub agent: AgentConfig,
    pub sandbox: SandboxConfig,
    /// Per target repository settings, keyed by `owner/repo`.
    pub targets: BTreeMap<String, TargetConfig>,
    /// `serve`: HTTP address for `/webhook`, `/metrics`, `/healthz` (`AGENT_RUNNER_LISTEN`).
    pub listen: String,
    /// `serve`: HMAC key of webhook deliveries (`GITHUB_WEBHOOK_SECRET`); unset: webhooks off.
    pub webhook_secret: Option<Secret>,
    /// `serve`: tasks worked on at once (`MAX_CONCURRENT_TASKS`).
    pub max_concurrent_tasks: usize,
    /// `serve`: attempts per task when failures are transient (GitHub, network).
    pub max_task_attempts: u32,
    /// `serve`: first retry delay of a transiently failed task, doubled per attempt.
    pub task_retry_secs: u64,
    /// `serve`: how long running tasks may finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    pub labels: LabelConfig,
}

/// Labels on dispatch issues.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelConfig {
    /// What marks a dispatch issue (the protocol's `copilot-agent`).
    pub dispatch: String,
    pub in_progress: String,
    pub done: String,
    pub failed: String,
}

impl Default for LabelConfig {
    fn default() -> LabelConfig {
        LabelConfig {
            dispatch: "copilot-agent".into(),
            in_progress: "agent:in-progress".into(),
            done: "agent:done".into(),
            failed: "agent:failed".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// `openai` (any OpenAI-compatible server) or `replay` (`LLM_PROVIDER`).
    pub provider: String,
    /// `LLM_API_KEY`.
    pub api_key: Option<Secret>,
    /// `LLM_MODEL`.
    pub model: String,
    /// `LLM_BASE_URL`: OpenAI, vLLM, Ollama (`http://localhost:11434/v1`), llama.cpp ...
    pub base_url: String,
    /// JSONL transcript the replay provider answers from (`LLM_REPLAY_FILE`).
    pub replay_file: Option<PathBuf>,
    /// Write every exchange with a real model to this JSONL file (a replay fixture).
    pub record_file: Option<PathBuf>,
    pub request_timeout_secs: u64,
    pub max_output_tokens: u32,
    pub temperature: f32,
    /// Stream replies (`LLM_STREAM`): tokens arrive as they are made, with usage from the
    /// final chunk; `false` asks for the whole reply at once.
    pub stream: bool,
    /// The model's context window in tokens (`LLM_CONTEXT_TOKENS`). Unset: the preflight
    /// probe asks the server (llama.cpp `/props`, vLLM `/v1/models`, Ollama `/api/show`).
    pub context_tokens: Option<u64>,
    /// How the model asks for actions (`LLM_TOOL_PROTOCOL`): `auto` probes the server for
    /// native tool calls, `native` uses them without asking, `text` never does.
    pub tool_protocol: ToolProtocol,
}

/// How the model asks for actions: native (OpenAI-style function) tool calls, or the
/// plain-text action protocol that works with any model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolProtocol {
    /// Native tool calls when the preflight probe sees the model make one.
    #[default]
    Auto,
    /// Native tool calls, without probing.
    Native,
    /// The plain-text action protocol, without probing.
    Text,
}

impl ToolProtocol {
    pub const ALLOWED: &'static str = "`auto`, `native` or `text`";

    pub fn as_str(self) -> &'static str {
        match self {
            ToolProtocol::Auto => "auto",
            ToolProtocol::Native => "native",
            ToolProtocol::Text => "text",
        }
    }
}

impl fmt::Display for ToolProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ToolProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<ToolProtocol, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(ToolProtocol::Auto),
            "native" => Ok(ToolProtocol::Native),
            "text" => Ok(ToolProtocol::Text),
            _ => Err(format!("expected {}", ToolProtocol::ALLOWED)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Model replies per task.
    pub max_iterations: u32,
    /// Prompt tokens per task, summed over its model calls.
    pub max_tokens_in: u64,
    /// Completion tokens per task, summed over its model calls.
    pub max_tokens_out: u64,
    /// Test runs per task after edits (the baseline run is not counted).
    pub max_test_runs: u32,
    /// Wall-clock budget of the agent loop, in seconds.
    pub max_wall_secs: u64,
    /// The same failing tests this many runs in a row (baseline included) is a loop.
    pub same_failure_limit: u32,
    /// This many replies in a row that change no file is no progress.
    pub no_change_limit: u32,
    /// How much file content goes into the first prompt.
    pub max_context_bytes: usize,
    /// Refuse edits under `.github/workflows/`.
    pub protect_workflows: bool,
    /// Tokens (in and out) all tasks of this state directory may use per UTC day; 0: no cap.
    /// `AGENT_RUNNER_MAX_TOKENS_PER_DAY`.
    pub max_tokens_per_day: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// A local image to use instead of the default one (built offline on demand).
    pub image: Option<String>,
    pub memory_mb: i64,
    pub cpus: f64,
    pub pids: i64,
    pub command_timeout_secs: u64,
    /// A container runtime such as `runsc` (gVisor).
    pub runtime: Option<String>,
    /// Command run in the sandbox before the baseline test (e.g. a dependency install),
    /// under `command_timeout_secs`; the task fails if it fails.
    pub setup_cmd: Option<String>,
    /// Whether `setup_cmd` runs with network (Docker's default `bridge` network). The
    /// network is cut off, and checked gone, before the agent phase; without `setup_cmd`
    /// the sandbox never has network.
    pub setup_network: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    pub test_cmd: Option<String>,
    pub image: Option<String>,
    /// Replaces `sandbox.setup_cmd` for this target.
    pub setup_cmd: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            github_token: None,
            github_app_id: None,
            github_app_installation_id: None,
            github_app_private_key_path: None,
            github_app_private_key: None,
            github_api_url: "https://api.github.com".into(),
            dispatch_repo: "endomorphosis/lift_coding_dispatch".into(),
            default_target: None,
            allowed_targets: Vec::new(),
            allowed_authors: Vec::new(),
            agent_name: "custom-agent".into(),
            log_level: "INFO".into(),
            poll_interval_seconds: 30,
            state_dir: default_state_dir(),
            git_author_name: "Agent Runner Bot".into(),
            git_author_email: "agent-runner@example.com".into(),
            llm: LlmConfig::default(),
            agent: AgentConfig::default(),
            sandbox: SandboxConfig::default(),
            targets: BTreeMap::new(),
            listen: "127.0.0.1:8080".into(),
            webhook_secret: None,
            max_concurrent_tasks: 2,
            max_task_attempts: 4,
            task_retry_secs: 30,
            shutdown_grace_secs: 60,
            labels: LabelConfig::default(),
        }
    }
}

impl Default for LlmConfig {
    fn default() -> LlmConfig {
        LlmConfig {
            provider: "openai".into(),
            api_key: None,
            model: "gpt-4".into(),
            base_url: "https://api.openai.com/v1".into(),
            replay_file: None,
            record_file: None,
            request_timeout_secs: 300,
            max_output_tokens: 4096,
            temperature: 0.0,
            stream: true,
            context_tokens: None,
            tool_protocol: ToolProtocol::Auto,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig {
            max_iterations: 6,
            max_tokens_in: 1_000_000,
            max_tokens_out: 100_000,
            max_test_runs: 12,
            max_wall_secs: 1800,
            same_failure_limit: 3,
            no_change_limit: 3,
            max_context_bytes: 60_000,
            protect_workflows: true,
            max_tokens_per_day: 0,
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            image: None,
            memory_mb: 2048,
            cpus: 1.0,
            pids: 256,
            command_timeout_secs: 600,
            runtime: None,
            setup_cmd: None,
            setup_network: true,
        }
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("agent-runner");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/agent-runner");
    }
    PathBuf::from(".agent-runner-state")
}

/// The config file used when none is named: `./agent-runner.toml` if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "agent-runner.toml";

impl Config {
    /// Reads the file (if any) and then the environment, as seen through `env`.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let named = file
            .map(Path::to_path_buf)
            .or_else(|| env("AGENT_RUNNER_CONFIG").map(PathBuf::from));
        let mut config = match named {
            Some(path) => Config::from_file(&path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |names: &[&str]| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()));
        if let Some(v) = get(&["AGENT_RUNNER_GITHUB_TOKEN", "GITHUB_TOKEN"]) {
            self.github_token = Some(Secret::new(v));
        }
        for (name, field) in [
            ("GITHUB_APP_ID", &mut self.github_app_id),
            (
                "GITHUB_APP_INSTALLATION_ID",
                &mut self.github_app_installation_id,
            ),
        ] {
            if let Some(v) = get(&[name]) {
                *field = Some(v.trim().parse().map_err(|_| ConfigError::Invalid {
                    name,
                    value: v.clone(),
                    why: "expected the App's numeric id, as shown on its settings page".into(),
                })?);
            }
        }
        if let Some(v) = get(&["GITHUB_APP_PRIVATE_KEY_PATH"]) {
            self.github_app_private_key_path = Some(PathBuf::from(v));
        }
        if let Some(v) = get(&["GITHUB_APP_PRIVATE_KEY"]) {
            self.github_app_private_key = Some(Secret::new(v));
        }
        if let Some(v) = get(&["GITHUB_API_URL"]) {
            self.github_api_url = v;
        }
        if let Some(v) = get(&["DISPATCH_REPO", "HANDSFREE_AGENT_DISPATCH_REPO"]) {
            self.dispatch_repo = v;
        }
        if let Some(v) = get(&["AGENT_RUNNER_DEFAULT_TARGET"]) {
            self.default_target = Some(v);
        }
        if let Some(v) = get(&["AGENT_RUNNER_ALLOWED_TARGETS"]) {
            self.allowed_targets = comma_list(&v);
        }
        if let Some(v) = get(&["AGENT_RUNNER_ALLOWED_AUTHORS"]) {
            self.allowed_authors = comma_list(&v);
        }
        if let Some(v) = get(&["AGENT_NAME"]) {
            self.agent_name = v;
        }
        if let Some(v) = get(&["LOG_LEVEL"]) {
            self.log_level = v;
        }
        if let Some(v) = get(&["POLL_INTERVAL_SECONDS"]) {
            self.poll_interval_seconds = v.parse().map_err(|_| ConfigError::Invalid {
                name: "POLL_INTERVAL_SECONDS",
                value: v.clone(),
                why: "expected a whole number of seconds".into(),
            })?;
        }
        if let Some(v) = get(&["AGENT_RUNNER_MAX_TOKENS_PER_DAY"]) {
            self.agent.max_tokens_per_day = v.parse().map_err(|_| ConfigError::Invalid {
                name: "AGENT_RUNNER_MAX_TOKENS_PER_DAY",
                value: v.clone(),
                why: "expected a whole number of tokens (0: no cap)".into(),
            })?;
        }
        if let Some(v) = get(&["AGENT_RUNNER_STATE_DIR"]) {
            self.state_dir = PathBuf::from(v);
        }
        if let Some(v) = get(&["LLM_PROVIDER"]) {
            self.llm.provider = v;
        }
        if let Some(v) = get(&["LLM_API_KEY"]) {
            self.llm.api_key = Some(Secret::new(v));
        }
        if let Some(v) = get(&["LLM_MODEL"]) {
            self.llm.model = v;
        }
        if let Some(v) = get(&["LLM_BASE_URL"]) {
            self.llm.base_url = v;
        }
        if let Some(v) = get(&["LLM_STREAM"]) {
            self.llm.stream = parse_bool(&v).ok_or_else(|| ConfigError::Invalid {
                name: "LLM_STREAM",
                value: v.clone(),
                why: "expected `true` or `false`".into(),
            })?;
        }
        if let Some(v) = get(&["LLM_CONTEXT_TOKENS"]) {
            self.llm.context_tokens = Some(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "LLM_CONTEXT_TOKENS",
                        value: v.clone(),
                        why: "expected the model's context window as a positive whole number of tokens, e.g. 32768".into(),
                    })?,
            );
        }
        if let Some(v) = get(&["LLM_TOOL_PROTOCOL"]) {
            self.llm.tool_protocol = v.parse().map_err(|why| ConfigError::Invalid {
                name: "LLM_TOOL_PROTOCOL",
                value: v.clone(),
                why,
            })?;
        }
        if let Some(v) = get(&["AGENT_RUNNER_LISTEN"]) {
            self.listen = v;
        }
        if let Some(v) = get(&["GITHUB_WEBHOOK_SECRET"]) {
            self.webhook_secret = Some(Secret::new(v));
        }
        if let Some(v) = get(&["MAX_CONCURRENT_TASKS"]) {
            self.max_concurrent_tasks = v.parse().map_err(|_| ConfigError::Invalid {
                name: "MAX_CONCURRENT_TASKS",
                value: v.clone(),
                why: "expected a whole number".into(),
            })?;
        }
        if let Some(v) = get(&["LLM_REPLAY_FILE"]) {
            self.llm.replay_file = Some(PathBuf::from(v));
        }
        Ok(())
    }

    /// Checks what every command needs; command-specific needs are checked where used.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.intake_rules()?;
        self.github_app_parts()?;
        if crate::logging::level_filter(&self.log_level).is_none() {
            return Err(ConfigError::Invalid {
                name: "LOG_LEVEL",
                value: self.log_level.clone(),
                why: "expected ERROR, WARN, INFO, DEBUG or TRACE".into(),
            });
        }
        if !matches!(self.llm.provider.as_str(), "openai" | "replay") {
            return Err(ConfigError::Invalid {
                name: "LLM_PROVIDER",
                value: self.llm.provider.clone(),
                why: "expected `openai` (any OpenAI-compatible server) or `replay`".into(),
            });
        }
        if self.llm.context_tokens == Some(0) {
            return Err(ConfigError::Invalid {
                name: "llm.context_tokens",
                value: "0".into(),
                why: "expected the model's context window as a positive whole number of tokens, or leave it unset to ask the server".into(),
            });
        }
        for name in self.targets.keys() {
            if RepoName::parse(name).is_none() {
                return Err(ConfigError::Invalid {
                    name: "targets",
                    value: name.clone(),
                    why: "target keys are `owner/repo`".into(),
                });
            }
        }
        Ok(())
    }

    pub fn dispatch_repo(&self) -> Result<RepoName, ConfigError> {
        RepoName::parse(&self.dispatch_repo).ok_or_else(|| ConfigError::Invalid {
            name: "DISPATCH_REPO",
            value: self.dispatch_repo.clone(),
            why: "expected `owner/repo`".into(),
        })
    }

    pub fn default_target(&self) -> Result<Option<RepoName>, ConfigError> {
        self.default_target
            .as_deref()
            .map(|t| {
                RepoName::parse(t).ok_or_else(|| ConfigError::Invalid {
                    name: "AGENT_RUNNER_DEFAULT_TARGET",
                    value: t.to_string(),
                    why: "expected `owner/repo`".into(),
                })
            })
            .transpose()
    }

    /// The intake rules every way of taking a task goes through.
    pub fn intake_rules(&self) -> Result<IntakeRules, ConfigError> {
        for pattern in &self.allowed_targets {
            let valid = match pattern.split_once('/') {
                Some((owner, "*")) => RepoName::parse(&format!("{owner}/x")).is_some(),
                _ => RepoName::parse(pattern).is_some(),
            };
            if !valid {
                return Err(ConfigError::Invalid {
                    name: "allowed_targets",
                    value: pattern.clone(),
                    why: "expected `owner/repo` or `owner/*`".into(),
                });
            }
        }
        let mut rules = IntakeRules::new(self.dispatch_repo()?);
        rules.default_target = self.default_target()?;
        rules.allowed_targets = self.allowed_targets.clone();
        rules.allowed_authors = self.allowed_authors.clone();
        Ok(rules)
    }

    pub fn github_token(&self) -> Result<&Secret, ConfigError> {
        self.github_token.as_ref().ok_or_else(|| {
            ConfigError::Missing(
                "no GitHub token: set GITHUB_TOKEN (or AGENT_RUNNER_GITHUB_TOKEN) to a token with issues, contents and pull-requests write access".into(),
            )
        })
    }

    /// The GitHub App settings when any is set: all three or an error naming what is missing.
    pub(crate) fn github_app_parts(&self) -> Result<Option<(u64, u64)>, ConfigError> {
        let has_key =
            self.github_app_private_key.is_some() || self.github_app_private_key_path.is_some();
        match (self.github_app_id, self.github_app_installation_id, has_key) {
            (None, None, false) => Ok(None),
            (Some(app), Some(installation), true) => Ok(Some((app, installation))),
            (app, installation, key) => {
                let missing: Vec<&str> = [
                    (app.is_none(), "GITHUB_APP_ID"),
                    (installation.is_none(), "GITHUB_APP_INSTALLATION_ID"),
                    (
                        !key,
                        "GITHUB_APP_PRIVATE_KEY_PATH (or GITHUB_APP_PRIVATE_KEY)",
                    ),
                ]
                .into_iter()
                .filter_map(|(m, name)| m.then_some(name))
                .collect();
                Err(ConfigError::Missing(format!(
                    "GitHub App authentication is half configured: set {} too, or unset the GITHUB_APP_* settings to use GITHUB_TOKEN",
                    missing.join(" and ")
                )))
            }
        }
    }

    /// How to authenticate to GitHub: the App if configured (it wins over a token; a warning
    /// says so when both are set), else the token. Reads the App's key file.
    pub fn github_credentials(&self) -> Result<Credentials, ConfigError> {
        let Some((app_id, installation_id)) = self.github_app_parts()? else {
            return Ok(Credentials::Token(self.github_token()?.clone()));
        };
        if self.github_token.is_some() {
            tracing::warn!(
                "both GITHUB_TOKEN and a GitHub App are configured; using the GitHub App (unset one to silence this)"
            );
        }
        let private_key = match (
            &self.github_app_private_key,
            &self.github_app_private_key_path,
        ) {
            (Some(pem), _) => pem.clone(),
            (None, Some(path)) => {
                Secret::new(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            // github_app_parts checked that one of the two is set.
            (None, None) => {
                return Err(ConfigError::Missing(
                    "GitHub App authentication needs GITHUB_APP_PRIVATE_KEY_PATH".into(),
                ));
            }
        };
        Ok(Credentials::App(AppCredentials {
            app_id,
            installation_id,
            private_key,
        }))
    }

    pub fn target(&self, repo: &str) -> TargetConfig {
        self.targets.get(repo).cloned().unwrap_or_default()
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.sandbox.command_timeout_secs)
    }

    /// Everything secret this runner holds.
    pub fn secret_values(&self) -> Vec<&str> {
        [
            &self.github_token,
            &self.llm.api_key,
            &self.webhook_secret,
            &self.github_app_private_key,
        ]
        .into_iter()
        .flatten()
        .map(Secret::expose)
        .collect()
    }

    /// Redaction of everything secret this runner holds.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secret_values().into_iter().map(str::to_string))
    }
}

/// Replaces the runner's own secrets in any text that leaves the process.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        // Very short values would redact ordinary words; no real token is that short.
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 6).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn guide_names_work_and_file_is_overridden_by_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent-runner.toml");
        std::fs::write(
            &file,
            "agent_name = \"from-file\"\ndispatch_repo = \"file/dispatch\"\n[llm]\nmodel = \"file-model\"\n[targets.\"acme/w\"]\ntest_cmd = \"make test\"\n",
        )
        .unwrap();
        let env = env_of(&[
            ("GITHUB_TOKEN", "ghp_secretvalue"),
            ("HANDSFREE_AGENT_DISPATCH_REPO", "acme/dispatch"),
            ("LLM_MODEL", "qwen"),
            ("POLL_INTERVAL_SECONDS", "5"),
        ]);
        let config = Config::load(Some(&file), &env).unwrap();
        assert_eq!(config.agent_name, "from-file");
        assert_eq!(config.dispatch_repo, "acme/dispatch");
        assert_eq!(config.llm.model, "qwen");
        assert_eq!(config.poll_interval_seconds, 5);
        assert_eq!(config.github_token().unwrap().expose(), "ghp_secretvalue");
        assert_eq!(
            config.target("acme/w").test_cmd.as_deref(),
            Some("make test")
        );
        config.validate().unwrap();
    }

    #[test]
    fn specific_names_win() {
        let env = env_of(&[
            ("GITHUB_TOKEN", "generic-token"),
            ("AGENT_RUNNER_GITHUB_TOKEN", "runner-token"),
            ("DISPATCH_REPO", "a/one"),
            ("HANDSFREE_AGENT_DISPATCH_REPO", "b/two"),
        ]);
        let config = Config::load(None, &env).unwrap();
        assert_eq!(config.github_token().unwrap().expose(), "runner-token");
        assert_eq!(config.dispatch_repo, "a/one");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::load(None, &env_of(&[("POLL_INTERVAL_SECONDS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("POLL_INTERVAL_SECONDS"));
        let config = Config::load(None, &env_of(&[("DISPATCH_REPO", "nope")])).unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("DISPATCH_REPO")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        assert!(
            Config::from_file(&file)
                .unwrap_err()
                .to_string()
                .contains("unknown_key")
        );
    }

    #[test]
    fn github_app_is_all_or_nothing_and_wins_over_a_token() {
        let half = Config::load(None, &env_of(&[("GITHUB_APP_ID", "12")])).unwrap();
        let err = half.validate().unwrap_err().to_string();
        assert!(
            err.contains("GITHUB_APP_INSTALLATION_ID") && err.contains("GITHUB_APP_PRIVATE_KEY"),
            "{err}"
        );
        assert!(half.github_credentials().is_err());
        let err = Config::load(None, &env_of(&[("GITHUB_APP_ID", "my-app")])).unwrap_err();
        assert!(err.to_string().contains("GITHUB_APP_ID"), "{err}");

        let pem = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let both = Config::load(
            None,
            &env_of(&[
                ("GITHUB_TOKEN", "ghp_secretvalue"),
                ("GITHUB_APP_ID", "12"),
                ("GITHUB_APP_INSTALLATION_ID", "34"),
                ("GITHUB_APP_PRIVATE_KEY", pem),
            ]),
        )
        .unwrap();
        both.validate().unwrap();
        match both.github_credentials().unwrap() {
            Credentials::App(app) => {
                assert_eq!((app.app_id, app.installation_id), (12, 34));
                assert_eq!(app.private_key.expose(), pem);
            }
            Credentials::Token(_) => panic!("the token won over the App"),
        }
        assert!(!format!("{both:?}").contains("AAAA"));
        assert_eq!(both.redactor().redact(pem), "***");

        let missing_file = Config::load(
            None,
            &env_of(&[
                ("GITHUB_APP_ID", "12"),
                ("GITHUB_APP_INSTALLATION_ID", "34"),
                ("GITHUB_APP_PRIVATE_KEY_PATH", "/nonexistent/app.pem"),
            ]),
        )
        .unwrap();
        let err = missing_file.github_credentials().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/app.pem"), "{err}");

        let token_only = Config::load(None, &env_of(&[("GITHUB_TOKEN", "ghp_x123456")])).unwrap();
        assert!(matches!(
            token_only.github_credentials().unwrap(),
            Credentials::Token(t) if t.expose() == "ghp_x123456"
        ));
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::load(
            None,
            &env_of(&[
                ("GITHUB_TOKEN", "ghp_abcdef123456"),
                ("LLM_API_KEY", "sk-live-987654"),
            ]),
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("ghp_abcdef123456") && !debug.contains("sk-live-987654"));
        let r = config.redactor();
        assert_eq!(
            r.redact("token ghp_abcdef123456 and sk-live-987654"),
            "token *** and ***"
        );
    }

    #[test]
    fn llm_stream_context_and_tool_protocol_from_file_and_env() {
        let defaults = Config::load(None, &env_of(&[])).unwrap();
        assert!(defaults.llm.stream);
        assert_eq!(defaults.llm.context_tokens, None);
        assert_eq!(defaults.llm.tool_protocol, ToolProtocol::Auto);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent-runner.toml");
        std::fs::write(
            &file,
            "[llm]\nstream = false\ncontext_tokens = 8192\ntool_protocol = \"native\"\n",
        )
        .unwrap();
        let from_file = Config::load(Some(&file), &env_of(&[])).unwrap();
        assert!(!from_file.llm.stream);
        assert_eq!(from_file.llm.context_tokens, Some(8192));
        assert_eq!(from_file.llm.tool_protocol, ToolProtocol::Native);
        from_file.validate().unwrap();

        let env = env_of(&[
            ("LLM_STREAM", "true"),
            ("LLM_CONTEXT_TOKENS", "32768"),
            ("LLM_TOOL_PROTOCOL", "Text"),
        ]);
        let from_env = Config::load(Some(&file), &env).unwrap();
        assert!(from_env.llm.stream);
        assert_eq!(from_env.llm.context_tokens, Some(32768));
        assert_eq!(from_env.llm.tool_protocol, ToolProtocol::Text);
    }

    #[test]
    fn bad_llm_values_name_the_setting_and_what_is_allowed() {
        let err = Config::load(None, &env_of(&[("LLM_TOOL_PROTOCOL", "json")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LLM_TOOL_PROTOCOL")
                && err.contains("`auto`")
                && err.contains("`native`")
                && err.contains("`text`"),
            "{err}"
        );
        let err = Config::load(None, &env_of(&[("LLM_STREAM", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LLM_STREAM"), "{err}");
        for bad in ["0", "-1", "lots"] {
            let err = Config::load(None, &env_of(&[("LLM_CONTEXT_TOKENS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("LLM_CONTEXT_TOKENS"), "{err}");
        }

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[llm]\ntool_protocol = \"json\"\n").unwrap();
        let err = Config::from_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("tool_protocol") && err.contains("auto") && err.contains("text"),
            "{err}"
        );
        std::fs::write(&file, "[llm]\ncontext_tokens = 0\n").unwrap();
        let err = Config::from_file(&file)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("context_tokens"), "{err}");
    }
}

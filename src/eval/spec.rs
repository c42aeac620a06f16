//! Model specs of `eval --model`: which model answers, and how it is named in the report.
//!
//! ```text
//! replay:<dir>[,name=<name>]
//!     replays <dir>/<task>.jsonl for each task (the JSONL format of `--record`)
//! openai:<model>[@<base_url>][,name=<name>][,temperature=<t>][,max_output_tokens=<n>]
//!       [,timeout=<secs>][,key_env=<VAR>][,context_tokens=<n>][,tools=auto|native|text]
//!     any OpenAI-compatible server; without @<base_url>, LLM_BASE_URL / llm.base_url;
//!     the key from the environment variable VAR, else LLM_API_KEY / llm.api_key
//! ```

use std::path::{Path, PathBuf};

use crate::config::{LlmConfig, Secret, ToolProtocol};

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// How the report names the model: `name=`, else the spec as written without options.
    pub name: String,
    pub kind: ModelKind,
    pub temperature: Option<f32>,
    pub max_output_tokens: Option<u32>,
    pub timeout_secs: Option<u64>,
    /// The environment variable that holds this model's API key.
    pub key_env: Option<String>,
    /// The context window, instead of the probe's answer.
    pub context_tokens: Option<u64>,
    /// How the model explores, instead of the probe's verdict.
    pub tool_protocol: Option<ToolProtocol>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// One recorded transcript per task: `<dir>/<task>.jsonl`.
    Replay { dir: PathBuf },
    OpenAi {
        model: String,
        base_url: Option<String>,
    },
}

pub const SPEC_HELP: &str = "use `replay:<dir>` (one <task>.jsonl per task) or `openai:<model>[@<base_url>]`, optionally followed by `,name=<name>`, and for openai `,temperature=<t>`, `,max_output_tokens=<n>`, `,timeout=<secs>`, `,key_env=<VAR>`, `,context_tokens=<n>`, `,tools=auto|native|text`";

/// A number above zero, or `None`.
fn positive<T: std::str::FromStr + PartialOrd + Default>(value: &str) -> Option<T> {
    value.parse().ok().filter(|n| *n > T::default())
}

#[derive(Debug, thiserror::Error)]
#[error("--model {spec:?}: {message}")]
pub struct SpecError {
    pub spec: String,
    pub message: String,
}

impl ModelSpec {
    pub fn parse(spec: &str) -> Result<ModelSpec, SpecError> {
        let fail = |message: String| SpecError {
            spec: spec.to_string(),
            message,
        };
        let mut parts = spec.split(',');
        let head = parts.next().unwrap_or_default().trim();
        let (kind, name) = match head.split_once(':') {
            Some(("replay", dir)) if !dir.trim().is_empty() => (
                ModelKind::Replay {
                    dir: PathBuf::from(dir.trim()),
                },
                head.to_string(),
            ),
            Some(("openai", rest)) if !rest.trim().is_empty() => {
                let (model, base_url) = match rest.split_once('@') {
                    Some((model, url)) => (model.trim(), Some(url.trim())),
                    None => (rest.trim(), None),
                };
                if model.is_empty() || base_url.is_some_and(str::is_empty) {
                    return Err(fail(format!(
                        "`openai:` needs a model name before `@` and a base URL after it; {SPEC_HELP}"
                    )));
                }
                if let Some(url) = base_url
                    && !(url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Err(fail(format!(
                        "the base URL {url:?} must start with http:// or https://"
                    )));
                }
                (
                    ModelKind::OpenAi {
                        model: model.to_string(),
                        base_url: base_url.map(str::to_string),
                    },
                    head.to_string(),
                )
            }
            _ => return Err(fail(format!("not a model spec: {SPEC_HELP}"))),
        };
        let mut out = ModelSpec {
            name,
            kind,
            temperature: None,
            max_output_tokens: None,
            timeout_secs: None,
            key_env: None,
            context_tokens: None,
            tool_protocol: None,
        };
        let is_replay = matches!(out.kind, ModelKind::Replay { .. });
        for option in parts {
            let Some((key, value)) = option.split_once('=') else {
                return Err(fail(format!(
                    "option {option:?} is not `key=value`; {SPEC_HELP}"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            let bad = |what: &str| fail(format!("`{key}` must be {what}, not {value:?}"));
            match key {
                "name" if !value.is_empty() => out.name = value.to_string(),
                "name" => return Err(bad("a non-empty name")),
                _ if is_replay => {
                    return Err(fail(format!(
                        "a replay model takes only `name=`, not `{key}=`"
                    )));
                }
                "temperature" => {
                    out.temperature = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|t: &f32| (0.0..=2.0).contains(t))
                            .ok_or_else(|| bad("a number from 0 to 2"))?,
                    )
                }
                "max_output_tokens" => {
                    out.max_output_tokens =
                        Some(positive(value).ok_or_else(|| bad("a positive whole number"))?)
                }
                "timeout" => {
                    out.timeout_secs =
                        Some(positive(value).ok_or_else(|| bad("a positive number of seconds"))?)
                }
                "context_tokens" => {
                    out.context_tokens = Some(
                        positive(value).ok_or_else(|| bad("a positive whole number of tokens"))?,
                    )
                }
                "tools" => {
                    out.tool_protocol = Some(
                        value
                            .parse()
                            .map_err(|_| bad(&format!("one of {}", ToolProtocol::ALLOWED)))?,
                    )
                }
                "key_env" if !value.is_empty() => out.key_env = Some(value.to_string()),
                "key_env" => return Err(bad("the name of an environment variable")),
                other => {
                    return Err(fail(format!("unknown option `{other}`; {SPEC_HELP}")));
                }
            }
        }
        Ok(out)
    }

    /// The replay transcript of `task`, for a replay model.
    pub fn replay_file(&self, task: &str) -> Option<PathBuf> {
        match &self.kind {
            ModelKind::Replay { dir } => Some(dir.join(format!("{task}.jsonl"))),
            ModelKind::OpenAi { .. } => None,
        }
    }

    /// Sets up `llm` (a copy of the configured one) to be this model for `task`;
    /// `record` is where an OpenAI-compatible model's exchanges are written.
    pub fn configure(
        &self,
        llm: &mut LlmConfig,
        task: &str,
        record: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), SpecError> {
        llm.record_file = None;
        match &self.kind {
            ModelKind::Replay { .. } => {
                llm.provider = "replay".into();
                llm.replay_file = self.replay_file(task);
            }
            ModelKind::OpenAi { model, base_url } => {
                llm.provider = "openai".into();
                llm.model = model.clone();
                if let Some(url) = base_url {
                    llm.base_url = url.clone();
                }
                if let Some(t) = self.temperature {
                    llm.temperature = t;
                }
                if let Some(n) = self.max_output_tokens {
                    llm.max_output_tokens = n;
                }
                if let Some(secs) = self.timeout_secs {
                    llm.request_timeout_secs = secs;
                }
                if let Some(n) = self.context_tokens {
                    llm.context_tokens = Some(n);
                }
                if let Some(protocol) = self.tool_protocol {
                    llm.tool_protocol = protocol;
                }
                if let Some(var) = &self.key_env {
                    let key = env(var)
                        .filter(|k| !k.is_empty())
                        .ok_or_else(|| SpecError {
                            spec: self.name.clone(),
                            message: format!(
                                "key_env={var}, but the environment variable {var} is not set"
                            ),
                        })?;
                    llm.api_key = Some(Secret::new(key));
                }
                llm.record_file = record.map(Path::to_path_buf);
            }
        }
        Ok(())
    }
}

/// A file-name-safe form of a model name.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() { "model".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        ModelSpec::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn replay_specs() {
        let s = ModelSpec::parse("replay:examples/suite/models/careful").unwrap();
        assert_eq!(s.name, "replay:examples/suite/models/careful");
        assert_eq!(
            s.replay_file("t"),
            Some(PathBuf::from("examples/suite/models/careful/t.jsonl"))
        );
        let s = ModelSpec::parse("replay:dir,name=careful").unwrap();
        assert_eq!(s.name, "careful");
        assert!(err("replay:dir,temperature=1").contains("takes only `name=`"));
        assert!(err("replay:").contains("not a model spec"));
    }

    #[test]
    fn openai_specs() {
        let s = ModelSpec::parse(
            "openai:qwen2.5-coder:7b@http://localhost:11434/v1,temperature=0.2,max_output_tokens=2048,timeout=60,name=qwen",
        )
        .unwrap();
        assert_eq!(
            s.kind,
            ModelKind::OpenAi {
                model: "qwen2.5-coder:7b".into(),
                base_url: Some("http://localhost:11434/v1".into())
            }
        );
        assert_eq!(
            (
                s.name.as_str(),
                s.temperature,
                s.max_output_tokens,
                s.timeout_secs
            ),
            ("qwen", Some(0.2), Some(2048), Some(60))
        );
        let s = ModelSpec::parse(
            "openai:smollm2@http://127.0.0.1:8080/v1,context_tokens=4096,tools=text",
        )
        .unwrap();
        assert_eq!(
            (s.context_tokens, s.tool_protocol),
            (Some(4096), Some(ToolProtocol::Text))
        );
        let mut llm = LlmConfig::default();
        s.configure(&mut llm, "t", None, &|_| None).unwrap();
        assert_eq!(
            (llm.context_tokens, llm.tool_protocol),
            (Some(4096), ToolProtocol::Text)
        );
        let bad = ModelSpec::parse("openai:m,tools=sometimes")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("`tools` must be one of `auto`, `native` or `text`"),
            "{bad}"
        );
        let s = ModelSpec::parse("openai:gpt-4o").unwrap();
        assert_eq!(s.name, "openai:gpt-4o");
        assert_eq!(
            s.kind,
            ModelKind::OpenAi {
                model: "gpt-4o".into(),
                base_url: None
            }
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert!(err("gpt-4o").contains("not a model spec: use `replay:<dir>`"));
        assert!(err("openai:@http://x").contains("needs a model name"));
        assert!(err("openai:m@localhost:8000").contains("must start with http://"));
        assert!(err("openai:m,temperature=hot").contains("`temperature` must be a number"));
        assert!(err("openai:m,max_output_tokens=0").contains("positive whole number"));
        assert!(err("openai:m,colour=blue").contains("unknown option `colour`"));
        assert!(err("openai:m,verbose").contains("is not `key=value`"));
        assert!(err("openai:m,name=").contains("non-empty name"));
    }

    #[test]
    fn configure_sets_the_llm_config() {
        let mut llm = LlmConfig::default();
        let none = |_: &str| None;
        let s = ModelSpec::parse("replay:d").unwrap();
        s.configure(&mut llm, "task-a", Some(Path::new("r.jsonl")), &none)
            .unwrap();
        assert_eq!(llm.provider, "replay");
        assert_eq!(llm.replay_file, Some(PathBuf::from("d/task-a.jsonl")));
        assert_eq!(llm.record_file, None, "replays are not recorded again");

        let s = ModelSpec::parse("openai:m@http://h/v1,temperature=0.5,key_env=MY_KEY").unwrap();
        let e = s
            .configure(&mut llm, "t", None, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MY_KEY is not set"), "{e}");
        let env = |name: &str| (name == "MY_KEY").then(|| "sk-test".to_string());
        s.configure(&mut llm, "t", Some(Path::new("r.jsonl")), &env)
            .unwrap();
        assert_eq!(
            (
                llm.provider.as_str(),
                llm.model.as_str(),
                llm.base_url.as_str()
            ),
            ("openai", "m", "http://h/v1")
        );
        assert_eq!(llm.temperature, 0.5);
        assert_eq!(llm.api_key.as_ref().map(|k| k.expose()), Some("sk-test"));
        assert_eq!(llm.record_file, Some(PathBuf::from("r.jsonl")));
    }

    #[test]
    fn slugs_are_file_names() {
        assert_eq!(
            slug("replay:examples/suite/models/careful"),
            "replay_examples_suite_models_careful"
        );
        assert_eq!(
            slug("openai:qwen2.5@http://h:1/v1"),
            "openai_qwen2.5_http_h_1_v1"
        );
        assert_eq!(slug("///"), "model");
    }
}

//! Exploration actions: what the model may ask to look at before it edits. Two ways to ask,
//! one meaning: native tool calls (when the preflight probe says the model makes them) and
//! a plain-text protocol small local models can follow: a fenced block tagged `action`,
//! one action per line. Parsing only; running them is `explore`.

use serde::Serialize;
use serde_json::json;

use crate::llm::{ToolCall, ToolSpec};

/// One look at the work tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// The entries of a directory (`.` for the top).
    ListDir { path: String },
    /// A file, or lines `start..=end` of it (1-based).
    ReadFile {
        path: String,
        start: Option<usize>,
        end: Option<usize>,
    },
    /// Lines containing `pattern` (plain text, case-sensitive), under `path` or everywhere.
    Search {
        pattern: String,
        path: Option<String>,
    },
    /// A command in the sandbox that can read the tree but not change it.
    Run { command: String },
}

impl Action {
    /// One line, as the text protocol would write it: for logs, transcripts and the
    /// headers of results.
    pub fn describe(&self) -> String {
        match self {
            Action::ListDir { path } => format!("list_dir {path}"),
            Action::ReadFile { path, start, end } => match (start, end) {
                (Some(s), Some(e)) => format!("read_file {path} {s}-{e}"),
                (Some(s), None) => format!("read_file {path} {s}-"),
                _ => format!("read_file {path}"),
            },
            Action::Search {
                pattern,
                path: Some(path),
            } => format!("search \"{pattern}\" {path}"),
            Action::Search {
                pattern,
                path: None,
            } => format!("search \"{pattern}\""),
            Action::Run { command } => format!("run {command}"),
        }
    }
}

/// An action the model asked for that cannot be understood; the message goes back to it
/// verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionError {
    pub request: String,
    pub message: String,
}

const VERBS: &str =
    "list_dir <path>, read_file <path> [<first>-<last>], search <text> [<path>], run <command>";

/// Every ```action block of a reply, parsed line by line (blank lines and `#` comments
/// skipped). A reply without such a block asks for nothing.
pub fn parse_text(reply: &str) -> Vec<Result<Action, ActionError>> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for line in reply.lines() {
        let trimmed = line.trim();
        match &fence {
            None => {
                let ticks = trimmed.chars().take_while(|&c| c == '`').count();
                if ticks >= 3 && trimmed[ticks..].trim().eq_ignore_ascii_case("action") {
                    fence = Some("`".repeat(ticks));
                }
            }
            Some(close) => {
                if trimmed.starts_with(close.as_str()) && trimmed.trim_matches('`').is_empty() {
                    fence = None;
                } else if !trimmed.is_empty() && !trimmed.starts_with('#') {
                    out.push(parse_line(trimmed));
                }
            }
        }
    }
    out
}

fn parse_line(line: &str) -> Result<Action, ActionError> {
    let error = |message: String| ActionError {
        request: line.to_string(),
        message,
    };
    let (verb, rest) = line
        .split_once(char::is_whitespace)
        .map(|(v, r)| (v, r.trim()))
        .unwrap_or((line, ""));
    match verb {
        "list_dir" | "ls" => Ok(Action::ListDir {
            path: if rest.is_empty() { "." } else { rest }.to_string(),
        }),
        "read_file" | "cat" => {
            let (path, range) = match rest.rsplit_once(char::is_whitespace) {
                Some((path, range)) if looks_like_range(range) => (path.trim(), Some(range)),
                _ => (rest, None),
            };
            if path.is_empty() {
                return Err(error(
                    "read_file needs a path, e.g. `read_file src/lib.rs 1-80`".into(),
                ));
            }
            let (start, end) = match range {
                Some(range) => parse_range(range).map_err(error)?,
                None => (None, None),
            };
            Ok(Action::ReadFile {
                path: path.to_string(),
                start,
                end,
            })
        }
        "search" | "grep" => {
            let (pattern, path) = split_pattern(rest).map_err(error)?;
            Ok(Action::Search { pattern, path })
        }
        "run" => {
            if rest.is_empty() {
                return Err(error("run needs a command, e.g. `run ls -la`".into()));
            }
            Ok(Action::Run {
                command: rest.to_string(),
            })
        }
        other => Err(error(format!(
            "unknown action `{other}`; the actions are: {VERBS}"
        ))),
    }
}

fn looks_like_range(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ':')
}

/// `12-40`, `12:40`, `12-` or `12` → 1-based inclusive bounds.
fn parse_range(range: &str) -> Result<(Option<usize>, Option<usize>), String> {
    let bad = || format!("`{range}` is not a line range; write <first>-<last>, e.g. 10-60");
    let (first, last) = match range.split_once(['-', ':']) {
        Some((a, b)) => (a, Some(b)),
        None => (range, None),
    };
    let first: usize = first.parse().map_err(|_| bad())?;
    let last = match last {
        None => Some(first),
        Some("") => None,
        Some(b) => Some(b.parse::<usize>().map_err(|_| bad())?),
    };
    check_range(Some(first), last)?;
    Ok((Some(first), last))
}

fn check_range(start: Option<usize>, end: Option<usize>) -> Result<(), String> {
    if start == Some(0) {
        return Err("line numbers start at 1".into());
    }
    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        return Err(format!("the range {s}-{e} ends before it starts"));
    }
    Ok(())
}

/// `"two words" dir` → ("two words", Some("dir")); `word dir` → ("word", Some("dir")).
fn split_pattern(rest: &str) -> Result<(String, Option<String>), String> {
    let (pattern, after) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let body = &rest[1..];
            let end = body
                .find(q)
                .ok_or_else(|| format!("the search text has no closing {q}"))?;
            (&body[..end], body[end + 1..].trim())
        }
        _ => rest
            .split_once(char::is_whitespace)
            .map(|(p, a)| (p, a.trim()))
            .unwrap_or((rest, "")),
    };
    if pattern.is_empty() {
        return Err("search needs some text to look for, e.g. `search \"def add\" src`".into());
    }
    Ok((
        pattern.to_string(),
        (!after.is_empty()).then(|| after.to_string()),
    ))
}

/// The same actions as native tools.
pub fn tool_specs() -> Vec<ToolSpec> {
    let spec = |name: &str, description: &str, parameters: serde_json::Value| ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters,
    };
    vec![
        spec(
            "list_dir",
            "List the files and directories of a directory of the repository.",
            json!({"type": "object", "properties": {"path": {"type": "string", "description": "a directory relative to the repository root; \".\" for the top"}}, "required": ["path"]}),
        ),
        spec(
            "read_file",
            "Read a file of the repository, or a range of its lines.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"},
                "start_line": {"type": "integer", "minimum": 1, "description": "first line (1-based), optional"},
                "end_line": {"type": "integer", "minimum": 1, "description": "last line, optional"}
            }, "required": ["path"]}),
        ),
        spec(
            "search",
            "Find the lines of the repository's text files that contain a text (case-sensitive).",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string"},
                "path": {"type": "string", "description": "a file or directory to search in, optional"}
            }, "required": ["pattern"]}),
        ),
        spec(
            "run",
            "Run a shell command in the sandbox, without network, that can read the repository but not change it (e.g. the tests, grep, python -c).",
            json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        ),
    ]
}

/// A native tool call as an action; a bad call gets a message the model can act on.
pub fn from_tool_call(call: &ToolCall) -> Result<Action, ActionError> {
    let error = |message: String| ActionError {
        request: format!("{}({})", call.name, call.arguments),
        message,
    };
    let args: serde_json::Value = if call.arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&call.arguments)
            .map_err(|e| error(format!("the arguments are not valid JSON: {e}")))?
    };
    let text = |key: &str| args.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let number = |key: &str| -> Result<Option<usize>, ActionError> {
        match args.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .map(|n| Some(n as usize))
                .ok_or_else(|| error(format!("`{key}` must be a line number"))),
        }
    };
    let required = |key: &str| text(key).ok_or_else(|| error(format!("`{key}` is required")));
    match call.name.as_str() {
        "list_dir" => Ok(Action::ListDir {
            path: text("path").unwrap_or_else(|| ".".into()),
        }),
        "read_file" => {
            let (start, end) = (number("start_line")?, number("end_line")?);
            check_range(start, end).map_err(error)?;
            Ok(Action::ReadFile {
                path: required("path")?,
                start,
                end,
            })
        }
        "search" => Ok(Action::Search {
            pattern: required("pattern")?,
            path: text("path").filter(|p| !p.is_empty()),
        }),
        "run" => Ok(Action::Run {
            command: required("command")?,
        }),
        other => Err(error(format!(
            "there is no tool `{other}`; the tools are list_dir, read_file, search and run"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &str, start: Option<usize>, end: Option<usize>) -> Action {
        Action::ReadFile {
            path: path.into(),
            start,
            end,
        }
    }

    #[test]
    fn text_protocol_reads_every_action_block() {
        let reply = "Let me look first.\n```action\nlist_dir src\nread_file src/calc.py 10-40\n# a comment\n\nsearch \"def add\" src\nrun python3 -m pytest -q\n```\nand\n```ACTION\ncat README.md\nls\n```\n";
        let actions: Vec<Action> = parse_text(reply).into_iter().map(Result::unwrap).collect();
        assert_eq!(
            actions,
            [
                Action::ListDir { path: "src".into() },
                read("src/calc.py", Some(10), Some(40)),
                Action::Search {
                    pattern: "def add".into(),
                    path: Some("src".into())
                },
                Action::Run {
                    command: "python3 -m pytest -q".into()
                },
                read("README.md", None, None),
                Action::ListDir { path: ".".into() },
            ]
        );
    }

    #[test]
    fn text_protocol_ignores_other_blocks_and_prose() {
        assert!(parse_text("read_file a.py\n```python\nlist_dir x\n```\n").is_empty());
        assert!(parse_text("no actions here").is_empty());
    }

    #[test]
    fn text_protocol_ranges() {
        let one = |line: &str| parse_line(line);
        assert_eq!(one("read_file a.py 7"), Ok(read("a.py", Some(7), Some(7))));
        assert_eq!(one("read_file a.py 7-"), Ok(read("a.py", Some(7), None)));
        assert_eq!(
            one("read_file a.py 3:9"),
            Ok(read("a.py", Some(3), Some(9)))
        );
        assert_eq!(
            one("read_file my file.py"),
            Ok(read("my file.py", None, None))
        );
        assert!(
            one("read_file a.py 9-3")
                .unwrap_err()
                .message
                .contains("ends before")
        );
        assert!(
            one("read_file a.py 0-3")
                .unwrap_err()
                .message
                .contains("start at 1")
        );
        assert!(
            one("read_file")
                .unwrap_err()
                .message
                .contains("needs a path")
        );
    }

    #[test]
    fn text_protocol_errors_say_what_is_allowed() {
        let err = parse_line("delete everything").unwrap_err();
        assert_eq!(err.request, "delete everything");
        assert!(
            err.message.contains("unknown action `delete`"),
            "{}",
            err.message
        );
        assert!(err.message.contains("read_file <path>"), "{}", err.message);
        assert!(
            parse_line("search \"open")
                .unwrap_err()
                .message
                .contains("closing")
        );
        assert!(
            parse_line("run")
                .unwrap_err()
                .message
                .contains("needs a command")
        );
        assert_eq!(
            parse_line("search needle"),
            Ok(Action::Search {
                pattern: "needle".into(),
                path: None
            })
        );
    }

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: "call_1".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn native_calls_parse_to_the_same_actions() {
        assert_eq!(
            from_tool_call(&call(
                "read_file",
                r#"{"path":"a.py","start_line":2,"end_line":"5"}"#
            )),
            Ok(read("a.py", Some(2), Some(5)))
        );
        assert_eq!(
            from_tool_call(&call("list_dir", "")),
            Ok(Action::ListDir { path: ".".into() })
        );
        assert_eq!(
            from_tool_call(&call("search", r#"{"pattern":"x","path":""}"#)),
            Ok(Action::Search {
                pattern: "x".into(),
                path: None
            })
        );
        assert_eq!(
            from_tool_call(&call("run", r#"{"command":"ls"}"#)),
            Ok(Action::Run {
                command: "ls".into()
            })
        );
        // What a native call parses to, the text protocol writes the same way.
        let action = from_tool_call(&call(
            "read_file",
            r#"{"path":"a.py","start_line":2,"end_line":5}"#,
        ))
        .unwrap();
        assert_eq!(parse_line(&action.describe()), Ok(action));
    }

    #[test]
    fn bad_native_calls_explain_themselves() {
        let err = from_tool_call(&call("read_file", "{not json")).unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        assert!(
            from_tool_call(&call("read_file", "{}"))
                .unwrap_err()
                .message
                .contains("`path` is required")
        );
        assert!(
            from_tool_call(&call("rm", "{}"))
                .unwrap_err()
                .message
                .contains("no tool `rm`")
        );
        assert!(
            from_tool_call(&call("read_file", r#"{"path":"a","start_line":"x"}"#))
                .unwrap_err()
                .message
                .contains("line number")
        );
    }

    #[test]
    fn every_tool_has_a_schema_naming_its_required_arguments() {
        let specs = tool_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["list_dir", "read_file", "search", "run"]);
        for spec in &specs {
            assert_eq!(spec.parameters["type"], "object", "{}", spec.name);
            assert!(spec.parameters["required"].is_array(), "{}", spec.name);
        }
    }
}

//! The task transcript: one JSON object per line (`at`, `t` seconds since the run
//! started, `kind`, `data`) with everything asked, answered, applied and tested, and why
//! the run stopped. Re-runs of a task append to the same file, each starting with a
//! `start` event. [`render`] turns one into a page a person reads.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::AgentError;

pub(super) struct Transcript {
    path: PathBuf,
    file: std::fs::File,
    started: Instant,
}

impl Transcript {
    pub(super) fn create(path: &Path) -> Result<Transcript, AgentError> {
        let fail = |source| AgentError::Transcript {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        Ok(Transcript {
            path: path.to_path_buf(),
            file,
            started: Instant::now(),
        })
    }

    pub(super) fn event(&mut self, kind: &str, data: &impl Serialize) -> Result<(), AgentError> {
        let line = serde_json::json!({
            "at": chrono::Utc::now().to_rfc3339(),
            "t": self.started.elapsed().as_secs_f64(),
            "kind": kind,
            "data": data,
        });
        writeln!(self.file, "{line}").map_err(|source| AgentError::Transcript {
            path: self.path.clone(),
            source,
        })
    }
}

/// Characters of the model's prose shown per reply.
const PROSE_CHARS: usize = 300;

/// A transcript for a person: per run its turns (what the model said, abridged; what was
/// applied; how the tests went), nudges, the stop reason and totals.
pub fn render(jsonl: &str) -> String {
    let mut out = String::new();
    let mut runs = 0;
    for (i, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            out.push_str(&format!("(line {} is not JSON; skipped)\n", i + 1));
            continue;
        };
        let data = &event["data"];
        let turn = data["turn"].as_u64();
        match event["kind"].as_str().unwrap_or("") {
            "start" => {
                runs += 1;
                if runs > 1 {
                    out.push('\n');
                }
                out.push_str(&format!("Run {runs}, started {}\n", str_of(&event["at"])));
                out.push_str(&format!("  model:    {}\n", str_of(&data["model"])));
                out.push_str(&format!(
                    "  task:     {}\n",
                    abridge(str_of(&data["instruction"]), 160)
                ));
                out.push_str(&format!("  tests:    `{}`\n", str_of(&data["test_cmd"])));
            }
            "baseline_test" => {
                out.push_str(&format!("  baseline: {}\n", test_line(data)));
            }
            "prompt" => {}
            "probe" => {
                let tokens = data["context_tokens"]
                    .as_u64()
                    .map_or("unknown".into(), |t| format!("{t} tokens"));
                out.push_str(&format!(
                    "  probe:    context window {tokens}; exploration by {} actions\n",
                    if data["protocol"] == "native" {
                        "native tool-call"
                    } else {
                        "text"
                    }
                ));
            }
            "context_fit" => {
                out.push_str(&format!(
                    "  context:  {} earlier messages left out to fit the window\n",
                    data["left_out_messages"].as_u64().unwrap_or(0)
                ));
            }
            "actions" => {
                for result in data["results"].as_array().into_iter().flatten() {
                    let output = str_of(&result["output"]);
                    let lines = output.lines().count();
                    let verdict = if result["ok"] == false {
                        abridge(output, 120)
                    } else {
                        format!("{lines} lines")
                    };
                    out.push_str(&format!(
                        "  looked:   {} → {verdict}\n",
                        abridge(str_of(&result["request"]), 100)
                    ));
                }
            }
            "reply" => {
                out.push_str(&format!(
                    "\nTurn {} ({} tokens in, {} out, {:.1} s)\n",
                    turn.map_or("?".into(), |t| t.to_string()),
                    data["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
                    data["usage"]["completion_tokens"].as_u64().unwrap_or(0),
                    data["seconds"].as_f64().unwrap_or(0.0),
                ));
                out.push_str(&format!(
                    "  model:    {}\n",
                    prose(str_of(&data["content"]))
                ));
            }
            "edit" => {
                // Transcripts from before turns were numbered hold the report itself.
                let report = if data.get("report").is_some() {
                    &data["report"]
                } else {
                    data
                };
                out.push_str(&format!(
                    "  edits:    {}\n",
                    edit_line(report, &data["tree"])
                ));
            }
            "test" => {
                let result = data.get("result").unwrap_or(data);
                out.push_str(&format!("  tests:    {}\n", test_line(result)));
            }
            "nudge" => {
                let what: Vec<String> = data["repetitions"]
                    .as_array()
                    .map(|reps| reps.iter().map(repetition_line).collect())
                    .unwrap_or_default();
                out.push_str(&format!("  nudged:   {}\n", what.join("; ")));
            }
            "model_error" => {
                let error = data.get("error").unwrap_or(data);
                out.push_str(&format!("  model error: {}\n", str_of(error)));
            }
            "error" => out.push_str(&format!("\nFailed: {}\n", str_of(data))),
            "stop" => {
                let reason = data["reason"].as_str().unwrap_or("?");
                match data["description"].as_str() {
                    Some(description) => {
                        out.push_str(&format!("\nStopped: {reason}: {description}\n"))
                    }
                    None => out.push_str(&format!("\nStopped: {reason}\n")),
                }
                if data.get("calls").is_some() {
                    out.push_str(&format!(
                        "Totals:  {} model calls, {} tokens in, {} out, {} test runs after the baseline, {} edit sets applied, {} rejected, {} actions, {:.1} s ({:.1} s waiting for the model)\n",
                        data["calls"].as_u64().unwrap_or(0),
                        data["tokens_in"].as_u64().unwrap_or(0),
                        data["tokens_out"].as_u64().unwrap_or(0),
                        data["test_runs"].as_u64().unwrap_or(0),
                        data["edits_applied"].as_u64().unwrap_or(0),
                        data["edits_rejected"].as_u64().unwrap_or(0),
                        data["actions"].as_u64().unwrap_or(0),
                        data["seconds"].as_f64().unwrap_or(0.0),
                        data["llm_seconds"].as_f64().unwrap_or(0.0),
                    ));
                }
            }
            other => out.push_str(&format!("  ({other})\n")),
        }
    }
    out
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn abridge(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let mut short: String = flat.chars().take(max_chars).collect();
    short.push('…');
    short
}

/// What the model wrote around its edits, abridged; the edits show up as what was applied.
fn prose(reply: &str) -> String {
    let mut said = Vec::new();
    let mut in_edit = false;
    let mut edit_lines = 0;
    let lines: Vec<&str> = reply.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).copied().unwrap_or("");
        let starts_edit = line.starts_with("```")
            || line.starts_with("<<<<<<<")
            || line.starts_with("*** Begin Patch")
            || line.starts_with("--- ")
            || next.starts_with("<<<<<<<");
        if !in_edit && starts_edit {
            in_edit = true;
        }
        if in_edit {
            edit_lines += 1;
            if line.starts_with(">>>>>>>")
                || line.starts_with("*** End Patch")
                || (line.trim() == "```" && edit_lines > 1)
            {
                in_edit = false;
            }
            continue;
        }
        said.push(*line);
    }
    let text = abridge(&said.join(" "), PROSE_CHARS);
    match (text.is_empty(), edit_lines) {
        (true, 0) => "(an empty reply)".into(),
        (true, n) => format!("(edits only, {n} lines)"),
        (false, 0) => text,
        (false, n) => format!("{text} [+{n} lines of edits]"),
    }
}

fn edit_line(report: &Value, tree: &Value) -> String {
    let blocks = report["blocks"].as_array().cloned().unwrap_or_default();
    if blocks.is_empty() {
        return "none found in the reply".into();
    }
    if report["applied"].as_bool() == Some(true) {
        let changes: Vec<String> = report["changes"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| format!("{} ({})", str_of(&c["path"]), str_of(&c["kind"])))
                    .collect()
            })
            .unwrap_or_default();
        let tree_note = match (tree["kind"].as_str(), tree["state"].as_u64()) {
            (Some("back"), Some(0)) => {
                ", which put the files back as they were at the start".to_string()
            }
            (Some("back"), Some(n)) => {
                format!(", which put the files back as they were after edit {n}")
            }
            (Some("same"), _) => ", which changed nothing".to_string(),
            _ => String::new(),
        };
        return format!("applied to {}{tree_note}", changes.join(", "));
    }
    let failed: Vec<String> = blocks
        .iter()
        .filter(|b| b["applied"].as_bool() != Some(true))
        .map(|b| {
            format!(
                "{}: {}",
                str_of(&b["path"]),
                abridge(str_of(&b["message"]).lines().next().unwrap_or(""), 160)
            )
        })
        .collect();
    format!("rejected ({})", failed.join("; "))
}

fn test_line(result: &Value) -> String {
    let summary = str_of(&result["summary"]);
    let signature = &result["signature"];
    let passed = result["passed"].as_bool().unwrap_or(false)
        || (signature.is_null() && result["exit_code"].as_i64() == Some(0));
    if passed {
        return format!("{summary}, pass");
    }
    match (signature["kind"].as_str(), &signature["value"]) {
        (Some("tests"), Value::Array(names)) => {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            format!("{summary}, failing: {}", names.join(", "))
        }
        _ => format!("{summary}, fail"),
    }
}

fn repetition_line(rep: &Value) -> String {
    match rep["kind"].as_str() {
        Some("same_proposal") => format!(
            "the same edits as reply {}",
            rep["first_turn"].as_u64().unwrap_or(0)
        ),
        Some("same_failure") => format!(
            "the same failure {} times in a row",
            rep["count"].as_u64().unwrap_or(0)
        ),
        Some("undo") => match rep["back_to"].as_u64() {
            Some(0) => "an edit back to the original files".into(),
            Some(n) => format!("an edit back to the files after edit {n}"),
            None => "an undo".into(),
        },
        Some("no_change") => format!(
            "{} replies in a row changed nothing",
            rep["turns"].as_u64().unwrap_or(0)
        ),
        _ => rep.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: &str, data: Value) -> String {
        serde_json::json!({"at": "2025-01-01T00:00:00Z", "t": 0.0, "kind": kind, "data": data})
            .to_string()
    }

    #[test]
    fn a_transcript_renders_turns_nudges_and_the_stop() {
        let reply = "Fixing add().\n\ncalc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n";
        let lines = [
            line(
                "start",
                serde_json::json!({"model": "replay of f.jsonl", "instruction": "Fix add().", "test_cmd": "make test", "budget": {}}),
            ),
            line(
                "baseline_test",
                serde_json::json!({"summary": "exit 2 in 0.1s", "passed": false, "exit_code": 2,
                    "signature": {"kind": "tests", "value": ["t.T.test_add"]}}),
            ),
            line("prompt", serde_json::json!({"turn": 1, "messages": []})),
            line(
                "reply",
                serde_json::json!({"turn": 1, "content": reply, "usage": {"prompt_tokens": 1012, "completion_tokens": 64}, "seconds": 0.25}),
            ),
            line(
                "edit",
                serde_json::json!({"turn": 1, "tree": {"kind": "back", "state": 0}, "report": {"applied": true,
                    "blocks": [{"path": "calc.py", "applied": true, "message": "ok"}],
                    "changes": [{"path": "calc.py", "kind": "modified"}]}}),
            ),
            line(
                "test",
                serde_json::json!({"turn": 1, "result": {"summary": "exit 0 in 0.1s", "passed": true, "exit_code": 0, "signature": null}}),
            ),
            line(
                "nudge",
                serde_json::json!({"turn": 1, "repetitions": [{"kind": "same_proposal", "first_turn": 1}]}),
            ),
            "not json".to_string(),
            line(
                "stop",
                serde_json::json!({"reason": "success", "description": "the tests pass", "calls": 1,
                    "tokens_in": 1012, "tokens_out": 64, "test_runs": 1, "edits_applied": 1,
                    "edits_rejected": 0, "seconds": 2.0, "llm_seconds": 0.25}),
            ),
        ];
        let page = render(&lines.join("\n"));
        for expected in [
            "Run 1, started 2025-01-01T00:00:00Z",
            "  model:    replay of f.jsonl",
            "  baseline: exit 2 in 0.1s, failing: t.T.test_add",
            "Turn 1 (1012 tokens in, 64 out, 0.2 s)",
            "  model:    Fixing add(). [+6 lines of edits]",
            "  edits:    applied to calc.py (modified), which put the files back as they were at the start",
            "  tests:    exit 0 in 0.1s, pass",
            "  nudged:   the same edits as reply 1",
            "(line 8 is not JSON; skipped)",
            "Stopped: success: the tests pass",
            "Totals:  1 model calls, 1012 tokens in, 64 out, 1 test runs after the baseline",
        ] {
            assert!(page.contains(expected), "missing {expected:?} in:\n{page}");
        }
    }

    #[test]
    fn rejected_and_missing_edits_say_why() {
        let report = serde_json::json!({"applied": false, "blocks": [
            {"path": "calc.py", "applied": false, "message": "SEARCH text not found\nclosest: ..."}]});
        assert_eq!(
            edit_line(&report, &Value::Null),
            "rejected (calc.py: SEARCH text not found)"
        );
        let none = serde_json::json!({"applied": false, "blocks": []});
        assert_eq!(edit_line(&none, &Value::Null), "none found in the reply");
        assert_eq!(
            prose("I think the code is fine."),
            "I think the code is fine."
        );
        assert_eq!(
            prose("```diff\n--- a/x\n+++ b/x\n```\n"),
            "(edits only, 4 lines)"
        );
    }

    #[test]
    fn abridging_cuts_long_prose_on_a_character_boundary() {
        let long = "é".repeat(400);
        let short = abridge(&long, 10);
        assert_eq!(short.chars().count(), 11);
        assert!(short.ends_with('…'));
    }
}

//! What an eval found, and how it is shown: per-model aggregates, the Markdown report and
//! the SVG chart. Pure: no I/O, so every number and every rendering is unit-tested here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One (model, task, repeat) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub model: String,
    pub task: String,
    /// 1-based.
    pub repeat: u32,
    /// The hidden tests passed on the final tree.
    pub resolved: bool,
    /// The visible tests passed at the end of the agent loop (its stop reason is `success`).
    pub visible_passed: bool,
    /// The agent's stop reason code (`success`, `loop`, ...), or `error` when the run
    /// failed outside the agent loop (see `error`).
    pub stop: String,
    pub error: Option<String>,
    /// Model calls.
    pub calls: u32,
    /// Model calls after the first.
    pub feedback_rounds: u32,
    /// Replies whose edits the edit engine rejected as malformed (a block that did not
    /// parse or did not match); replies without any edit are not counted.
    pub malformed_replies: u32,
    /// No reply of the run had a malformed edit (Aider's "percent cases well formed").
    pub well_formed: bool,
    pub edits_applied: u32,
    /// Exploration actions answered (list, read, search, run).
    #[serde(default)]
    pub actions: u32,
    pub test_runs: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub wall_secs: f64,
    /// The hidden test run: `exit 0 in 0.4s`, ...
    pub hidden_summary: Option<String>,
    /// The end of the hidden test output, when it failed.
    pub hidden_tail: Option<String>,
    pub transcript: Option<String>,
    /// The final work tree.
    pub workdir: Option<String>,
}

/// The aggregates of one model over all its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model: String,
    pub runs: u32,
    pub resolved: u32,
    pub resolved_pct: f64,
    pub well_formed: u32,
    pub well_formed_pct: f64,
    pub mean_feedback_rounds: f64,
    /// Exploration actions per run.
    #[serde(default)]
    pub mean_actions: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Summed over the runs (they may have overlapped).
    pub wall_secs: f64,
    pub mean_wall_secs: f64,
    /// Stop reason code → runs.
    pub stop_reasons: BTreeMap<String, u32>,
    /// Runs whose visible tests passed but whose hidden tests failed.
    pub visible_only: u32,
    pub errors: u32,
}

/// A model's aggregates and its runs, as `results.json` holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResults {
    #[serde(flatten)]
    pub summary: ModelSummary,
    pub run_records: Vec<RunRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: String,
    pub language: Option<String>,
    pub kind: Option<String>,
    pub description: Option<String>,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub suite: String,
    pub started_at: String,
    pub repeat: u32,
    pub jobs: usize,
    /// The whole eval, start to end.
    pub wall_secs: f64,
    pub tasks: Vec<TaskInfo>,
    pub models: Vec<ModelResults>,
}

fn pct(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        // One decimal, so that the JSON and the table agree.
        (1000.0 * f64::from(part) / f64::from(whole)).round() / 10.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The aggregates of `model` over `runs` (only its own runs are counted).
pub fn summarize(model: &str, runs: &[RunRecord]) -> ModelSummary {
    let mine: Vec<&RunRecord> = runs.iter().filter(|r| r.model == model).collect();
    let n = mine.len() as u32;
    let count = |f: &dyn Fn(&RunRecord) -> bool| mine.iter().filter(|r| f(r)).count() as u32;
    let resolved = count(&|r| r.resolved);
    let well_formed = count(&|r| r.well_formed);
    let mut stop_reasons = BTreeMap::new();
    for r in &mine {
        *stop_reasons.entry(r.stop.clone()).or_insert(0) += 1;
    }
    let wall_secs: f64 = mine.iter().map(|r| r.wall_secs).sum();
    let feedback: u32 = mine.iter().map(|r| r.feedback_rounds).sum();
    let actions: u32 = mine.iter().map(|r| r.actions).sum();
    let mean = |total: u32| {
        if n == 0 {
            0.0
        } else {
            round2(f64::from(total) / f64::from(n))
        }
    };
    ModelSummary {
        model: model.to_string(),
        runs: n,
        resolved,
        resolved_pct: pct(resolved, n),
        well_formed,
        well_formed_pct: pct(well_formed, n),
        mean_feedback_rounds: mean(feedback),
        mean_actions: mean(actions),
        tokens_in: mine.iter().map(|r| r.tokens_in).sum(),
        tokens_out: mine.iter().map(|r| r.tokens_out).sum(),
        wall_secs: round2(wall_secs),
        mean_wall_secs: if n == 0 {
            0.0
        } else {
            round2(wall_secs / f64::from(n))
        },
        stop_reasons,
        visible_only: count(&|r| r.visible_passed && !r.resolved),
        errors: count(&|r| r.error.is_some()),
    }
}

/// Replies of a transcript (JSONL, as the agent writes it) whose edits were rejected as
/// malformed: an `edit` event that applied nothing although the reply held edit blocks.
pub fn malformed_replies(transcript: &str) -> u32 {
    transcript
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["kind"] == "edit")
        .filter(|event| {
            let data = &event["data"];
            let report = data.get("report").unwrap_or(data);
            let blocks = report["blocks"].as_array();
            report["applied"] == false
                && blocks.is_some_and(|b| b.iter().any(|block| block["applied"] == false))
        })
        .count() as u32
}

/// `success 10, loop 1`: most frequent first.
pub fn stop_reasons_text(reasons: &BTreeMap<String, u32>) -> String {
    let mut list: Vec<(&String, &u32)> = reasons.iter().collect();
    list.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    list.iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Markdown table cell: no line breaks, no column separators.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// One row per model.
pub fn markdown_table(models: &[ModelSummary]) -> String {
    let mut out = String::from(
        "| model | resolved | edits well-formed | mean feedback rounds | mean actions | tokens in | tokens out | wall time | stop reasons |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for m in models {
        let _ = writeln!(
            out,
            "| {} | {:.1}% ({}/{}) | {:.1}% ({}/{}) | {:.2} | {:.2} | {} | {} | {:.1} s ({:.1} s/run) | {} |",
            cell(&m.model),
            m.resolved_pct,
            m.resolved,
            m.runs,
            m.well_formed_pct,
            m.well_formed,
            m.runs,
            m.mean_feedback_rounds,
            m.mean_actions,
            m.tokens_in,
            m.tokens_out,
            m.wall_secs,
            m.mean_wall_secs,
            cell(&stop_reasons_text(&m.stop_reasons)),
        );
    }
    out
}

/// What one model did on one task, over its repeats: `1/1`, or `0/1` with why.
fn matrix_cell(runs: &[&RunRecord]) -> String {
    if runs.is_empty() {
        return "–".into();
    }
    let resolved = runs.iter().filter(|r| r.resolved).count();
    let mut text = format!("{resolved}/{}", runs.len());
    let mut notes: Vec<String> = Vec::new();
    let mut note = |s: String| {
        if !notes.contains(&s) {
            notes.push(s);
        }
    };
    for r in runs {
        if r.visible_passed && !r.resolved {
            note("visible tests pass, hidden fail".into());
        } else if !r.resolved {
            note(r.stop.clone());
        }
        if !r.well_formed {
            note("malformed edit".into());
        }
        if r.feedback_rounds > 0 && r.resolved {
            note(format!(
                "{} feedback round{}",
                r.feedback_rounds,
                if r.feedback_rounds == 1 { "" } else { "s" }
            ));
        }
    }
    if !notes.is_empty() {
        let _ = write!(text, " ({})", notes.join("; "));
    }
    text
}

/// One row per task, one column per model.
pub fn task_matrix(tasks: &[TaskInfo], models: &[ModelResults]) -> String {
    let mut out = String::from("| task | language | kind |");
    let mut rule = String::from("|---|---|---|");
    for m in models {
        let _ = write!(out, " {} |", cell(&m.summary.model));
        rule.push_str("---|");
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for task in tasks {
        let _ = write!(
            out,
            "| {} | {} | {} |",
            cell(&task.name),
            cell(task.language.as_deref().unwrap_or("")),
            cell(task.kind.as_deref().unwrap_or(""))
        );
        for m in models {
            let runs: Vec<&RunRecord> = m
                .run_records
                .iter()
                .filter(|r| r.task == task.name)
                .collect();
            let _ = write!(out, " {} |", cell(&matrix_cell(&runs)));
        }
        out.push('\n');
    }
    out
}

/// `report.md`.
pub fn render_markdown(results: &Results) -> String {
    let summaries: Vec<ModelSummary> = results.models.iter().map(|m| m.summary.clone()).collect();
    let mut out = format!(
        "# Eval of {}\n\n{} tasks × {} models × {} repeat{}, {} at a time, started {}, took {:.1} s.\n\n",
        results.suite,
        results.tasks.len(),
        results.models.len(),
        results.repeat,
        if results.repeat == 1 { "" } else { "s" },
        results.jobs,
        results.started_at,
        results.wall_secs
    );
    out.push_str(&markdown_table(&summaries));
    out.push_str(
        "\n*Resolved*: the hidden tests pass on the final tree (they run in a fresh sandbox with \
         the task's `hidden/` files copied over it, so editing the visible tests does not help). \
         *Edits well-formed*: runs in which no reply had an edit the edit engine rejected as \
         malformed (Aider's \"percent cases well formed\"). *Feedback rounds*: model calls after \
         the first. *Actions*: looks at the repository (list, read, search, run) per run. Wall time is summed over runs, which may overlap.\n\n## Per task\n\n",
    );
    out.push_str(&task_matrix(&results.tasks, &results.models));
    let errors: Vec<&RunRecord> = results
        .models
        .iter()
        .flat_map(|m| &m.run_records)
        .filter(|r| r.error.is_some())
        .collect();
    if !errors.is_empty() {
        out.push_str("\n## Runs that failed outside the agent loop\n\n");
        for r in errors {
            let _ = writeln!(
                out,
                "- {} / {} (repeat {}): {}",
                r.model,
                r.task,
                r.repeat,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    out
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Model names in the chart are cut to their last this many characters (the full name is
/// the label's tooltip).
const CHART_LABEL_CHARS: usize = 28;

/// A grouped bar chart: per model, resolved % and edits well-formed %.
pub fn render_svg(models: &[ModelSummary]) -> String {
    const GROUP: f64 = 200.0;
    const BAR: f64 = 56.0;
    const LEFT: f64 = 60.0;
    const TOP: f64 = 50.0;
    const PLOT_H: f64 = 240.0;
    const BOTTOM: f64 = 60.0;
    let series = [("resolved", "#2b7bb9"), ("edits well-formed", "#f0a030")];
    let width = LEFT + GROUP * models.len().max(1) as f64 + 20.0;
    let height = TOP + PLOT_H + BOTTOM;
    let y = |value: f64| TOP + PLOT_H * (1.0 - value.clamp(0.0, 100.0) / 100.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>Resolved and well-formed edits per model</title>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for tick in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{tick:.0}%</text>",
            y = y(tick),
            x2 = width - 20.0,
            tx = LEFT - 6.0,
            ty = y(tick) + 4.0,
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#333\"/>",
        bottom = TOP + PLOT_H
    );
    for (i, (label, colour)) in series.iter().enumerate() {
        let x = LEFT + 150.0 * i as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"16\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{tx}\" y=\"26\">{label}</text>",
            tx = x + 18.0
        );
    }
    for (g, m) in models.iter().enumerate() {
        let group_x = LEFT + GROUP * g as f64 + (GROUP - 2.0 * BAR - 8.0) / 2.0;
        for (s, (label, colour)) in series.iter().enumerate() {
            let value = if s == 0 {
                m.resolved_pct
            } else {
                m.well_formed_pct
            };
            let x = group_x + (BAR + 8.0) * s as f64;
            let top = y(value);
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{BAR}\" height=\"{h:.1}\" fill=\"{colour}\">\
                 <title>{name}: {label} {value:.1}%</title></rect>\
                 <text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{value:.1}%</text>",
                h = TOP + PLOT_H - top,
                name = xml_escape(&m.model),
                cx = x + BAR / 2.0,
                ly = top - 4.0,
            );
        }
        // Names often share a prefix (`replay:examples/suite/models/...`): keep the end.
        let chars = m.model.chars().count();
        let short: String = if chars > CHART_LABEL_CHARS {
            let tail: String = m
                .model
                .chars()
                .skip(chars - CHART_LABEL_CHARS + 1)
                .collect();
            format!("…{tail}")
        } else {
            m.model.clone()
        };
        let _ = writeln!(
            out,
            "<text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\"><title>{full}</title>{label}</text>",
            cx = LEFT + GROUP * g as f64 + GROUP / 2.0,
            ly = TOP + PLOT_H + 20.0,
            full = xml_escape(&m.model),
            label = xml_escape(&short),
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(model: &str, task: &str) -> RunRecord {
        RunRecord {
            model: model.into(),
            task: task.into(),
            repeat: 1,
            resolved: true,
            visible_passed: true,
            stop: "success".into(),
            error: None,
            calls: 1,
            feedback_rounds: 0,
            malformed_replies: 0,
            well_formed: true,
            edits_applied: 1,
            actions: 0,
            test_runs: 1,
            tokens_in: 1000,
            tokens_out: 100,
            wall_secs: 1.5,
            hidden_summary: Some("exit 0 in 0.1s".into()),
            hidden_tail: None,
            transcript: None,
            workdir: None,
        }
    }

    fn runs() -> Vec<RunRecord> {
        let mut cheat = run("m", "b");
        cheat.resolved = false;
        let mut looped = run("m", "c");
        looped.resolved = false;
        looped.visible_passed = false;
        looped.stop = "loop".into();
        looped.calls = 4;
        looped.feedback_rounds = 3;
        looped.malformed_replies = 1;
        looped.well_formed = false;
        looped.actions = 6;
        vec![run("m", "a"), cheat, looped, run("other", "a")]
    }

    #[test]
    fn summary_counts_only_the_models_runs() {
        let s = summarize("m", &runs());
        assert_eq!((s.runs, s.resolved, s.well_formed), (3, 1, 2));
        assert_eq!((s.resolved_pct, s.well_formed_pct), (33.3, 66.7));
        assert_eq!((s.mean_feedback_rounds, s.mean_actions), (1.0, 2.0));
        assert_eq!((s.tokens_in, s.tokens_out), (3000, 300));
        assert_eq!((s.wall_secs, s.mean_wall_secs), (4.5, 1.5));
        assert_eq!(s.visible_only, 1);
        assert_eq!(
            s.stop_reasons,
            BTreeMap::from([("loop".to_string(), 1), ("success".to_string(), 2)])
        );
        assert_eq!(stop_reasons_text(&s.stop_reasons), "success 2, loop 1");
        let empty = summarize("nobody", &runs());
        assert_eq!((empty.runs, empty.resolved_pct), (0, 0.0));
    }

    #[test]
    fn malformed_replies_are_edits_that_did_not_apply() {
        let transcript = [
            r#"{"kind":"reply","data":{"turn":1}}"#,
            // A block that did not match: malformed.
            r#"{"kind":"edit","data":{"turn":1,"report":{"applied":false,"blocks":[{"applied":false}]}}}"#,
            // No edits at all: not malformed.
            r#"{"kind":"edit","data":{"turn":2,"report":{"applied":false,"blocks":[]}}}"#,
            // Applied.
            r#"{"kind":"edit","data":{"turn":3,"report":{"applied":true,"blocks":[{"applied":true}]}}}"#,
            // Every block matched but nothing changed: not malformed.
            r#"{"kind":"edit","data":{"turn":4,"report":{"applied":false,"blocks":[{"applied":true}]}}}"#,
            // Older transcripts: the report itself.
            r#"{"kind":"edit","data":{"applied":false,"blocks":[{"applied":true},{"applied":false}]}}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(malformed_replies(&transcript), 2);
    }

    #[test]
    fn markdown_table_has_a_row_per_model() {
        let s = summarize("m|x", &[run("m|x", "a")]);
        let table = markdown_table(&[s]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("| model | resolved | edits well-formed |"));
        assert_eq!(
            lines[2],
            "| m\\|x | 100.0% (1/1) | 100.0% (1/1) | 0.00 | 0.00 | 1000 | 100 | 1.5 s (1.5 s/run) | success 1 |"
        );
    }

    #[test]
    fn the_matrix_says_why_a_task_was_not_resolved() {
        let all = runs();
        let models = vec![ModelResults {
            summary: summarize("m", &all),
            run_records: all.iter().filter(|r| r.model == "m").cloned().collect(),
        }];
        let tasks: Vec<TaskInfo> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| TaskInfo {
                name: n.to_string(),
                language: Some("python".into()),
                kind: Some("bug fix".into()),
                description: None,
            })
            .collect();
        let matrix = task_matrix(&tasks, &models);
        let lines: Vec<&str> = matrix.lines().collect();
        assert_eq!(lines[0], "| task | language | kind | m |");
        assert_eq!(lines[2], "| a | python | bug fix | 1/1 |");
        assert_eq!(
            lines[3],
            "| b | python | bug fix | 0/1 (visible tests pass, hidden fail) |"
        );
        assert_eq!(
            lines[4],
            "| c | python | bug fix | 0/1 (loop; malformed edit) |"
        );
        assert_eq!(lines[5], "| d | python | bug fix | – |");
        let results = Results {
            suite: "s".into(),
            started_at: "now".into(),
            repeat: 1,
            jobs: 2,
            wall_secs: 3.0,
            tasks,
            models,
        };
        let md = render_markdown(&results);
        assert!(md.starts_with("# Eval of s\n\n4 tasks × 1 models × 1 repeat, 2 at a time"));
        assert!(md.contains("## Per task") && !md.contains("failed outside"));
        let json = serde_json::to_string(&results).unwrap();
        let back: Results = serde_json::from_str(&json).unwrap();
        assert_eq!(back, results);
        assert!(json.contains("\"resolved_pct\":33.3") && json.contains("\"run_records\""));
    }

    #[test]
    fn the_chart_has_two_bars_per_model_and_escapes_names() {
        let a = summarize("a<b>", &[run("a<b>", "t")]);
        let mut failing = run("c", "t");
        failing.resolved = false;
        failing.well_formed = false;
        let c = summarize("c", &[failing]);
        let svg = render_svg(&[a, c]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=").count(), 2 + 4, "legend + bars");
        assert!(svg.contains("a&lt;b&gt;: resolved 100.0%"));
        assert!(svg.contains("c: edits well-formed 0.0%"));
        assert!(!svg.contains("a<b>"));
        let long = summarize(
            "replay:examples/suite/models/careful",
            &[run("replay:examples/suite/models/careful", "t")],
        );
        assert!(render_svg(&[long]).contains(">…amples/suite/models/careful</text>"));
        // A 0% bar has no height; a 100% bar reaches the top of the plot.
        assert!(svg.contains("height=\"0.0\""));
        assert!(svg.contains("y=\"50.0\" width=\"56\" height=\"240.0\""));
    }
}

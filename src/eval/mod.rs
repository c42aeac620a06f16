//! `agent-runner eval`: runs every task of a suite with several models, each run the way
//! `solve` runs a task (its own work tree and sandbox), then decides success with the
//! task's hidden tests in a fresh sandbox, and reports a comparison.
//!
//! * [`suite`]: loading a suite folder, with clear errors for malformed tasks.
//! * [`spec`]: the `--model` specs (`replay:<dir>`, `openai:<model>@<url>,...`).
//! * [`report`]: aggregation and rendering (pure).

pub mod report;
pub mod spec;
pub mod suite;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use spec::{ModelKind, ModelSpec};
pub use suite::{Suite, SuiteTask};

use report::{ModelResults, Results, RunRecord, TaskInfo};

use crate::config::Config;
use crate::runner::{self, RunError, SolveRequest};
use crate::sandbox::{self, ExecOutcome, Sandbox, SandboxError, SandboxSpec};

/// Lines of a failed hidden test run kept in the results.
const HIDDEN_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Suite(#[from] suite::SuiteError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad arguments: what was wrong and what to do.
    #[error("{0}")]
    Usage(String),
}

impl EvalError {
    /// Whether the user's input was at fault (exit code 2) rather than the run.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EvalError::Suite(_) | EvalError::Spec(_) | EvalError::Usage(_)
        )
    }
}

pub struct EvalRequest {
    pub suite: PathBuf,
    pub models: Vec<ModelSpec>,
    /// Runs per (model, task).
    pub repeat: u32,
    /// Runs at a time, each in its own sandbox.
    pub jobs: usize,
    /// Where results, reports, transcripts and work trees go.
    pub out: PathBuf,
}

pub struct EvalReport {
    pub results: Results,
    pub out: PathBuf,
    pub results_json: PathBuf,
    pub report_md: PathBuf,
    pub chart_svg: PathBuf,
}

impl EvalReport {
    /// Runs that failed outside the agent loop (the sandbox, the work tree): their numbers
    /// say nothing about the model.
    pub fn errors(&self) -> usize {
        self.results
            .models
            .iter()
            .map(|m| m.summary.errors as usize)
            .sum()
    }
}

/// `<state dir>/eval/<UTC time>`.
pub fn default_out_dir(config: &Config) -> PathBuf {
    config
        .state_dir
        .join("eval")
        .join(chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string())
}

/// Runs the eval and writes `results.json`, `report.md` and `chart.svg` to `request.out`.
/// `progress` gets one line per finished run.
pub async fn run(
    config: &Config,
    request: EvalRequest,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<EvalReport, EvalError> {
    if request.models.is_empty() {
        return Err(EvalError::Usage(
            "no model to evaluate: pass --model at least once".into(),
        ));
    }
    if request.repeat == 0 || request.jobs == 0 {
        return Err(EvalError::Usage(
            "--repeat and --jobs must be at least 1".into(),
        ));
    }
    for (i, model) in request.models.iter().enumerate() {
        if request.models[..i].iter().any(|m| m.name == model.name) {
            return Err(EvalError::Usage(format!(
                "the model {:?} is given twice; add `,name=<name>` to one of them to tell them apart",
                model.name
            )));
        }
    }
    let suite = suite::load(&request.suite)?;
    check_models(&request.models, &suite)?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let started = Instant::now();
    create_dir(&request.out)?;
    let out = request.out.canonicalize().map_err(|source| EvalError::Io {
        path: request.out.clone(),
        source,
    })?;
    let mut config = prepare(config).await?;
    // Work trees and transcripts of the runs stay with their results.
    config.state_dir = out.clone();

    let mut plan = Vec::new();
    for repeat in 1..=request.repeat {
        for task in &suite.tasks {
            for model in &request.models {
                plan.push((model, task, repeat));
            }
        }
    }
    let total = plan.len();
    let permits = tokio::sync::Semaphore::new(request.jobs);
    let done = AtomicUsize::new(0);
    let interrupted = AtomicBool::new(false);
    let runs = futures_util::future::join_all(plan.into_iter().map(|(model, task, repeat)| {
        let (config, permits, done, interrupted, out) =
            (&config, &permits, &done, &interrupted, &out);
        async move {
            let Ok(_permit) = permits.acquire().await else {
                // Impossible: the semaphore is never closed.
                return skipped(model, task, repeat, "the run queue was closed");
            };
            if interrupted.load(Ordering::SeqCst) {
                return skipped(model, task, repeat, "not run: the eval was interrupted");
            }
            let span = tracing::info_span!("eval", model = %model.name, task = %task.name, repeat);
            let record = tracing::Instrument::instrument(
                run_one(config, model, task, repeat, out, interrupted),
                span,
            )
            .await;
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            progress(&progress_line(n, total, &record));
            record
        }
    }))
    .await;

    let results = Results {
        suite: request.suite.display().to_string(),
        started_at,
        repeat: request.repeat,
        jobs: request.jobs,
        wall_secs: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        tasks: suite
            .tasks
            .iter()
            .map(|t| TaskInfo {
                name: t.name.clone(),
                language: t.language.clone(),
                kind: t.kind.clone(),
                description: t.description.clone(),
            })
            .collect(),
        models: request
            .models
            .iter()
            .map(|m| {
                let mut run_records: Vec<RunRecord> =
                    runs.iter().filter(|r| r.model == m.name).cloned().collect();
                let order = |task: &str| suite.tasks.iter().position(|t| t.name == task);
                run_records.sort_by_key(|r| (order(&r.task), r.repeat));
                ModelResults {
                    summary: report::summarize(&m.name, &run_records),
                    run_records,
                }
            })
            .collect(),
    };
    let summaries: Vec<_> = results.models.iter().map(|m| m.summary.clone()).collect();
    let json = serde_json::to_string_pretty(&results).map_err(|e| EvalError::Io {
        path: out.join("results.json"),
        source: std::io::Error::other(e),
    })?;
    let results_json = write(&out, "results.json", &(json + "\n"))?;
    let report_md = write(&out, "report.md", &report::render_markdown(&results))?;
    let chart_svg = write(&out, "chart.svg", &report::render_svg(&summaries))?;
    Ok(EvalReport {
        results,
        out,
        results_json,
        report_md,
        chart_svg,
    })
}

/// Every replay model has a readable transcript for every task; an environment variable
/// a model's key is to come from is set.
fn check_models(models: &[ModelSpec], suite: &Suite) -> Result<(), EvalError> {
    for model in models {
        if let ModelKind::Replay { dir } = &model.kind {
            if !dir.is_dir() {
                return Err(EvalError::Usage(format!(
                    "the replay model {} names {}, which is not a directory; it holds one <task>.jsonl per task",
                    model.name,
                    dir.display()
                )));
            }
            for task in &suite.tasks {
                let Some(file) = model.replay_file(&task.name) else {
                    continue;
                };
                if !file.is_file() {
                    return Err(EvalError::Usage(format!(
                        "the replay model {} has no transcript for task {}: expected {}",
                        model.name,
                        task.name,
                        file.display()
                    )));
                }
                crate::llm::ReplayModel::load(&file)
                    .map_err(|e| EvalError::Usage(format!("replay model {}: {e}", model.name)))?;
            }
        }
        let mut llm = crate::config::LlmConfig::default();
        model.configure(&mut llm, "check", None, &|name| std::env::var(name).ok())?;
    }
    Ok(())
}

/// The configuration every run starts from: the sandbox image resolved (built once, here,
/// when it is missing) so that runs do not each look for it.
async fn prepare(config: &Config) -> Result<Config, EvalError> {
    let mut config = config.clone();
    let docker = sandbox::connect().await?;
    if config.sandbox.image.is_none() {
        let tag = sandbox::ensure_default_image(&docker, &mut |line: &str| {
            eprintln!("sandbox image: {line}")
        })
        .await?;
        config.sandbox.image = Some(tag);
    }
    Ok(config)
}

fn skipped(model: &ModelSpec, task: &SuiteTask, repeat: u32, why: &str) -> RunRecord {
    let mut record = empty_record(model, task, repeat);
    record.error = Some(why.to_string());
    record
}

fn empty_record(model: &ModelSpec, task: &SuiteTask, repeat: u32) -> RunRecord {
    RunRecord {
        model: model.name.clone(),
        task: task.name.clone(),
        repeat,
        resolved: false,
        visible_passed: false,
        stop: "error".into(),
        error: None,
        calls: 0,
        feedback_rounds: 0,
        actions: 0,
        malformed_replies: 0,
        well_formed: true,
        edits_applied: 0,
        test_runs: 0,
        tokens_in: 0,
        tokens_out: 0,
        wall_secs: 0.0,
        hidden_summary: None,
        hidden_tail: None,
        transcript: None,
        workdir: None,
    }
}

/// One (model, task, repeat): `solve` on a copy of the task's repo, then the hidden tests.
async fn run_one(
    config: &Config,
    model: &ModelSpec,
    task: &SuiteTask,
    repeat: u32,
    out: &Path,
    interrupted: &AtomicBool,
) -> RunRecord {
    let started = Instant::now();
    let mut record = empty_record(model, task, repeat);
    let redactor = config.redactor();
    let mut config = config.clone();
    let recording = matches!(model.kind, ModelKind::OpenAi { .. }).then(|| {
        let file = if repeat == 1 {
            format!("{}.jsonl", task.name)
        } else {
            format!("{}.{repeat}.jsonl", task.name)
        };
        out.join("recorded")
            .join(spec::slug(&model.name))
            .join(file)
    });
    if let Err(e) = model.configure(&mut config.llm, &task.name, recording.as_deref(), &|name| {
        std::env::var(name).ok()
    }) {
        record.error = Some(e.to_string());
        return record;
    }
    let request = SolveRequest {
        repo: task.repo.to_string_lossy().into_owned(),
        instruction: task.instruction.clone(),
        test_cmd: Some(task.test_cmd.clone()),
        push: false,
    };
    match runner::solve(&config, request).await {
        Err(e) => {
            if matches!(e, RunError::Sandbox(SandboxError::Interrupted { .. })) {
                interrupted.store(true, Ordering::SeqCst);
            }
            record.error = Some(redactor.redact(&e.to_string()));
        }
        Ok(solved) => {
            let outcome = &solved.outcome;
            record.visible_passed = outcome.succeeded();
            record.stop = outcome.stop.code().to_string();
            record.calls = outcome.iterations;
            record.feedback_rounds = outcome.iterations.saturating_sub(1);
            record.actions = outcome.actions;
            record.edits_applied = outcome.edits_applied;
            record.test_runs = outcome.test_runs;
            record.tokens_in = outcome.usage.prompt_tokens;
            record.tokens_out = outcome.usage.completion_tokens;
            record.malformed_replies = match std::fs::read_to_string(&solved.transcript) {
                Ok(text) => report::malformed_replies(&text),
                // Without the transcript, every rejected reply counts (replies without
                // edits included).
                Err(_) => outcome.edits_rejected,
            };
            record.well_formed = record.malformed_replies == 0;
            record.transcript = Some(solved.transcript.display().to_string());
            record.workdir = Some(solved.workdir.display().to_string());
            let label = format!("{}-hidden", solved.task_id);
            match test_in_fresh_sandbox(
                &config,
                &solved.workdir,
                Some(&task.hidden),
                &task.hidden_test_cmd,
                &label,
            )
            .await
            {
                Ok(hidden) => {
                    record.resolved = hidden.passed();
                    record.hidden_summary = Some(hidden.summary());
                    if !hidden.passed() {
                        record.hidden_tail = Some(hidden.tail(HIDDEN_TAIL_LINES));
                    }
                }
                Err(e) => {
                    if matches!(e, EvalError::Sandbox(SandboxError::Interrupted { .. })) {
                        interrupted.store(true, Ordering::SeqCst);
                    }
                    record.error = Some(format!(
                        "the hidden tests could not be run: {}",
                        redactor.redact(&e.to_string())
                    ));
                }
            }
        }
    }
    record.wall_secs = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    record
}

fn progress_line(n: usize, total: usize, r: &RunRecord) -> String {
    let verdict = match (&r.error, r.resolved) {
        (Some(e), _) => format!("error: {e}"),
        (None, true) => "resolved".into(),
        (None, false) if r.visible_passed => {
            "NOT resolved (visible tests pass, hidden tests fail)".into()
        }
        (None, false) => format!("NOT resolved ({})", r.stop),
    };
    format!(
        "[{n}/{total}] {} / {} #{}: {verdict}; {} call{}, {:.1} s",
        r.model,
        r.task,
        r.repeat,
        r.calls,
        if r.calls == 1 { "" } else { "s" },
        r.wall_secs
    )
}

/// Runs `command` in a new sandbox (no network) that holds `tree` with the files of
/// `overlay` copied over it, and removes the sandbox afterwards. `label` names the
/// sandbox's task.
pub async fn test_in_fresh_sandbox(
    config: &Config,
    tree: &Path,
    overlay: Option<&Path>,
    command: &str,
    label: &str,
) -> Result<ExecOutcome, EvalError> {
    let docker = sandbox::connect().await?;
    let spec = SandboxSpec {
        image: config.sandbox.image.clone(),
        limits: runner::limits(config),
        network: false,
        runtime: config.sandbox.runtime.clone(),
        runner_id: runner::runner_id(config),
        task_id: label.to_string(),
    };
    let files = match overlay {
        Some(dir) => suite::files_under(dir).map_err(|source| EvalError::Io {
            path: dir.to_path_buf(),
            source,
        })?,
        None => Vec::new(),
    };
    let rules = sandbox::Supervision {
        // A backstop for hangs: the command has its own timeout.
        wall_clock: Some(config.command_timeout() + Duration::from_secs(300)),
        stop_on_signals: sandbox::tasks_stop_on_signals(),
    };
    let work = async {
        let container = Sandbox::start(&docker, &spec, tree).await?;
        if let Some(dir) = overlay {
            container.sync(dir, &files).await?;
        }
        let result = container.exec(command).await;
        if let Err(e) = container.remove().await {
            tracing::warn!(error = %e, "could not remove the sandbox container; it is removed at the next start");
        }
        result
    };
    Ok(sandbox::supervise(&docker, label, rules, work).await??)
}

/// How one task of a suite behaves before any change: both its visible and its hidden
/// tests must fail, or the task measures nothing.
pub struct TaskCheck {
    pub task: String,
    pub visible: ExecOutcome,
    pub hidden: ExecOutcome,
}

impl TaskCheck {
    pub fn sound(&self) -> bool {
        !self.visible.passed() && !self.hidden.passed()
    }
}

/// Runs every task's visible and hidden tests on its unmodified repo.
pub async fn check_suite(
    config: &Config,
    suite_dir: &Path,
    jobs: usize,
) -> Result<Vec<TaskCheck>, EvalError> {
    let suite = suite::load(suite_dir)?;
    let config = prepare(config).await?;
    let permits = tokio::sync::Semaphore::new(jobs.max(1));
    let checks = futures_util::future::join_all(suite.tasks.iter().map(|task| {
        let (config, permits) = (&config, &permits);
        async move {
            let _permit = permits.acquire().await;
            let label = format!(
                "check-{}-{}",
                task.name,
                &uuid::Uuid::new_v4().to_string()[..8]
            );
            let visible =
                test_in_fresh_sandbox(config, &task.repo, None, &task.test_cmd, &label).await?;
            let hidden = test_in_fresh_sandbox(
                config,
                &task.repo,
                Some(&task.hidden),
                &task.hidden_test_cmd,
                &label,
            )
            .await?;
            Ok::<_, EvalError>(TaskCheck {
                task: task.name.clone(),
                visible,
                hidden,
            })
        }
    }))
    .await;
    checks.into_iter().collect()
}

fn create_dir(path: &Path) -> Result<(), EvalError> {
    std::fs::create_dir_all(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, EvalError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| EvalError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

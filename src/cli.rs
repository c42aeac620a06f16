//! Commands, flags, exit codes and human output. Exit codes: 0 done, 1 the task (or patch)
//! failed or was rejected, 2 bad usage or configuration.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::runner::{self, RunError, SolveRequest};

#[derive(Debug, Parser)]
#[command(
    name = "agent-runner",
    version,
    about = "Turns a coding task into a tested pull request, with the model's edits confined to a locked-down Docker sandbox."
)]
pub struct Cli {
    /// Config file (default: ./agent-runner.toml if present; env AGENT_RUNNER_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log verbosity (ERROR, WARN, INFO, DEBUG, TRACE); overrides LOG_LEVEL.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where journals, transcripts and work trees live; overrides AGENT_RUNNER_STATE_DIR.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Solve a task on a local repository (path or clone URL) and leave the result as a branch.
    Solve(SolveArgs),
    /// Process one dispatch issue of DISPATCH_REPO into a pull request.
    RunIssue(RunIssueArgs),
    /// Run as a daemon: webhook and polling intake, journal, concurrency, metrics.
    Serve(ServeArgs),
    /// Open a dispatch issue in the HandsFree format (`--target`, `--instruction`), or check
    /// one offline against the runner's intake rules (`dispatch check`).
    Dispatch(DispatchArgs),
    /// Apply a model's edits to a directory.
    #[command(subcommand)]
    Patch(PatchCommand),
    /// Manage the sandbox image.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Measure against a baseline taken in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Compare models on a suite of tasks: resolved (hidden tests pass), well-formed edits,
    /// feedback rounds, tokens, time and stop reasons, as Markdown, JSON and an SVG chart.
    Eval(EvalArgs),
    /// Check what a deployment needs (Docker, sandbox image, GitHub token and dispatch
    /// repository, model server, journal directory), each problem with its fix: exit 0 when
    /// nothing failed, 1 otherwise.
    Doctor(DoctorArgs),
    /// Show a task's transcript for a person: turns, edits, test results, stop reason.
    Transcript {
        /// The task id (as in the summary or the failure comment), or a transcript file.
        task_id: String,
        /// Print the raw JSONL instead.
        #[arg(long)]
        raw: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The edit engine against `git apply` and `patch` on damaged real diffs.
    Patch(crate::bench::patch::PatchBenchArgs),
    /// Sandbox start and exec latency against raw `docker run` and `docker exec`.
    Sandbox(crate::bench::sandbox::SandboxBenchArgs),
    /// The model client against raw HTTP on a real OpenAI-compatible server (plain and
    /// streamed), and its token accounting against the server's own counts.
    Llm(crate::bench::llm::LlmBenchArgs),
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The suite: one folder per task with task.toml (instruction, test_cmd,
    /// hidden_test_cmd), repo/ (what the model sees) and hidden/ (the tests that decide).
    #[arg(long)]
    pub suite: PathBuf,
    /// A model to evaluate; repeat for several. `replay:<dir>` replays <dir>/<task>.jsonl;
    /// `openai:<model>[@<base_url>]` is any OpenAI-compatible server (default base URL:
    /// LLM_BASE_URL). Options follow with commas: `,name=<name>` (its name in the report;
    /// default: the spec), and for openai `,temperature=<t>`, `,max_output_tokens=<n>`,
    /// `,timeout=<secs>`, `,key_env=<VAR>` (the API key's variable; default LLM_API_KEY),
    /// `,context_tokens=<n>` (instead of the probed window), `,tools=auto|native|text`.
    /// E.g. `openai:qwen2.5-coder:7b@http://localhost:11434/v1,temperature=0.2,name=qwen`.
    #[arg(long = "model", value_name = "SPEC", required_unless_present = "check")]
    pub models: Vec<String>,
    /// Runs per model and task.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Runs at a time, each in its own sandbox.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Where results.json, report.md, chart.svg, transcripts and work trees go
    /// (default: <state dir>/eval/<time>). An openai model's replies are recorded under
    /// recorded/<model>/, which `--model replay:<that dir>` replays.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Check the suite instead: every task's visible and hidden tests must fail on its
    /// unmodified repo (exit 1 if one passes).
    #[arg(long, conflicts_with_all = ["models", "repeat", "out"])]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The model: `replay:<transcript.jsonl>`, or `openai` (any OpenAI-compatible server, see --model and --base-url).
    #[arg(long)]
    pub llm: Option<String>,
    /// Model name (LLM_MODEL).
    #[arg(long)]
    pub model: Option<String>,
    /// OpenAI-compatible API root, e.g. http://localhost:11434/v1 (LLM_BASE_URL).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Write every exchange with the model to this JSONL file (replayable with --llm replay:<file>).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Model calls (replies) allowed per task.
    #[arg(long)]
    pub max_iterations: Option<u32>,
    /// Prompt tokens allowed per task, summed over its model calls.
    #[arg(long)]
    pub max_tokens_in: Option<u64>,
    /// Completion tokens allowed per task, summed over its model calls.
    #[arg(long)]
    pub max_tokens_out: Option<u64>,
    /// Test runs allowed per task after edits (the baseline run is not counted).
    #[arg(long)]
    pub max_test_runs: Option<u32>,
    /// Wall-clock seconds allowed for a task's agent loop.
    #[arg(long)]
    pub max_wall_secs: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SolveArgs {
    /// A local repository or directory, or a clone URL.
    #[arg(long)]
    pub repo: String,
    /// What to do, in plain words.
    #[arg(long)]
    pub instruction: String,
    /// The command that runs the tests (default: detected from the repository).
    #[arg(long)]
    pub test_cmd: Option<String>,
    /// Push the result branch to the repository's remote.
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct RunIssueArgs {
    /// The dispatch issue number.
    #[arg(long)]
    pub issue: u64,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTP address for /webhook, /metrics and /healthz (AGENT_RUNNER_LISTEN; default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// Tasks worked on at once (MAX_CONCURRENT_TASKS; default 2).
    #[arg(long)]
    pub max_concurrent_tasks: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Subcommand)]
pub enum PatchCommand {
    /// Apply the edits in a file (or - for stdin): exit 0 applied, 1 rejected (tree untouched).
    Apply {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        patch: String,
        #[arg(long)]
        dry_run: bool,
        /// Print the full report as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Allow edits under .github/workflows/.
        #[arg(long)]
        allow_workflows: bool,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DispatchArgs {
    #[command(subcommand)]
    pub command: Option<DispatchCommand>,
    /// What the task is about: `owner/repo#N` (an issue or pull request of the target
    /// repository) or `#N` (in the runner's default target).
    #[arg(long, required = true)]
    pub target: Option<String>,
    /// Whether `--target` names an issue or a pull request.
    #[arg(long, value_enum, default_value_t = TargetTypeArg::Issue)]
    pub target_type: TargetTypeArg,
    /// The task, in plain words.
    #[arg(long, required = true)]
    pub instruction: Option<String>,
    /// The user id the issue carries (the backend's user; any string).
    #[arg(long, default_value = "agent-runner-cli")]
    pub user_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetTypeArg {
    Issue,
    Pr,
}

#[derive(Debug, Subcommand)]
pub enum DispatchCommand {
    /// Run the runner's exact intake rules on a GitHub issue object (JSON) and print the
    /// verdict as JSON: exit 0 accepted, 1 rejected.
    Check {
        #[arg(long)]
        issue_file: PathBuf,
        /// Target for issues that name none (overrides AGENT_RUNNER_DEFAULT_TARGET).
        #[arg(long)]
        default_target: Option<String>,
        /// `owner/repo` or `owner/*`; repeatable (replaces the configured allowlist).
        #[arg(long = "allow-target")]
        allow_targets: Vec<String>,
        /// A login whose tasks are taken whatever its association; repeatable.
        #[arg(long = "allow-author")]
        allow_authors: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Build the default sandbox image from Debian packages (no registry needed); its base
    /// image is also tagged agent-runner-base:latest, the runner image's starting point.
    Build,
    /// Remove the sandbox and base images of other recipes (never the current ones, nor
    /// images a container still uses).
    Prune,
}

/// A failure the user must act on, with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl ToString) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
    fn task(message: impl ToString) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        match e {
            RunError::Config(_) | RunError::Llm(crate::llm::LlmError::Config(_)) => {
                Failure::usage(e)
            }
            other => Failure::task(other),
        }
    }
}

pub async fn main(cli: Cli) -> ExitCode {
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(failure) => return report(failure, None),
    };
    // `eval` prints a line per run; the runs' own INFO logs would bury them, so it logs
    // warnings only unless a level was asked for.
    let quiet_eval = matches!(cli.command, Command::Eval(_))
        && cli.log_level.is_none()
        && std::env::var_os("LOG_LEVEL").is_none()
        && std::env::var_os("RUST_LOG").is_none();
    let level = if quiet_eval {
        "warn"
    } else {
        &config.log_level
    };
    crate::logging::init(level, cli.log_format == LogFormat::Json);
    let redactor = config.redactor();
    let result = match cli.command {
        Command::Solve(args) => solve(config, args).await,
        Command::RunIssue(args) => run_issue(config, args).await,
        Command::Serve(_) => serve(config).await,
        Command::Patch(PatchCommand::Apply {
            dir,
            patch,
            dry_run,
            json,
            allow_workflows,
        }) => patch_apply(dir, &patch, dry_run, json, allow_workflows),
        Command::Sandbox(SandboxCommand::Build) => sandbox_build().await,
        Command::Sandbox(SandboxCommand::Prune) => sandbox_prune().await,
        Command::Dispatch(DispatchArgs {
            command: Some(DispatchCommand::Check { issue_file, .. }),
            ..
        }) => dispatch_check(&config, &issue_file),
        Command::Dispatch(args) => dispatch_create(&config, args).await,
        Command::Bench(BenchCommand::Patch(args)) => bench(crate::bench::patch::run(args).await),
        Command::Bench(BenchCommand::Sandbox(args)) => {
            bench(crate::bench::sandbox::run(args).await)
        }
        Command::Bench(BenchCommand::Llm(args)) => bench(crate::bench::llm::run(args).await),
        Command::Eval(args) => eval(&config, args).await,
        Command::Transcript { task_id, raw } => transcript(&config, &task_id, raw),
        Command::Doctor(_) => doctor(&config).await,
    };
    match result {
        Ok(code) => code,
        Err(failure) => report(failure, Some(&redactor)),
    }
}

fn report(failure: Failure, redactor: Option<&crate::config::Redactor>) -> ExitCode {
    let message = redactor.map_or(failure.message.clone(), |r| r.redact(&failure.message));
    eprintln!("error: {message}");
    ExitCode::from(failure.code)
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let mut config = Config::load(cli.config.as_deref(), &|name| std::env::var(name).ok())
        .map_err(Failure::usage)?;
    if let Some(level) = &cli.log_level {
        config.log_level = level.clone();
    }
    if let Some(dir) = &cli.state_dir {
        config.state_dir = dir.clone();
    }
    if let Command::Solve(SolveArgs { model, .. })
    | Command::RunIssue(RunIssueArgs { model, .. })
    | Command::Serve(ServeArgs { model, .. })
    | Command::Doctor(DoctorArgs { model }) = &cli.command
    {
        apply_model_args(&mut config, model)?;
    }
    if let Command::Serve(args) = &cli.command {
        if let Some(listen) = &args.listen {
            config.listen = listen.clone();
        }
        if let Some(n) = args.max_concurrent_tasks {
            config.max_concurrent_tasks = n;
        }
    }
    if let Command::Dispatch(DispatchArgs {
        command:
            Some(DispatchCommand::Check {
                default_target,
                allow_targets,
                allow_authors,
                ..
            }),
        ..
    }) = &cli.command
    {
        if default_target.is_some() {
            config.default_target = default_target.clone();
        }
        if !allow_targets.is_empty() {
            config.allowed_targets = allow_targets.clone();
        }
        config.allowed_authors.extend(allow_authors.iter().cloned());
    }
    config.validate().map_err(Failure::usage)?;
    Ok(config)
}

fn apply_model_args(config: &mut Config, args: &ModelArgs) -> Result<(), Failure> {
    if let Some(spec) = &args.llm {
        match spec.split_once(':') {
            Some(("replay", file)) if !file.is_empty() => {
                config.llm.provider = "replay".into();
                config.llm.replay_file = Some(PathBuf::from(file));
            }
            None if spec == "openai" => config.llm.provider = "openai".into(),
            _ => {
                return Err(Failure::usage(format!(
                    "--llm {spec:?} is not a model spec: use `replay:<transcript.jsonl>` or `openai`"
                )));
            }
        }
    }
    if let Some(model) = &args.model {
        config.llm.model = model.clone();
    }
    if let Some(url) = &args.base_url {
        config.llm.base_url = url.clone();
    }
    if let Some(path) = &args.record {
        config.llm.record_file = Some(path.clone());
    }
    if let Some(n) = args.max_iterations {
        config.agent.max_iterations = n;
    }
    if let Some(n) = args.max_tokens_in {
        config.agent.max_tokens_in = n;
    }
    if let Some(n) = args.max_tokens_out {
        config.agent.max_tokens_out = n;
    }
    if let Some(n) = args.max_test_runs {
        config.agent.max_test_runs = n;
    }
    if let Some(n) = args.max_wall_secs {
        config.agent.max_wall_secs = n;
    }
    Ok(())
}

async fn solve(config: Config, args: SolveArgs) -> Result<ExitCode, Failure> {
    // One task, then exit: Ctrl-C/SIGTERM stop it after removing its sandbox.
    crate::sandbox::stop_tasks_on_signals();
    let report = runner::solve(
        &config,
        SolveRequest {
            repo: args.repo,
            instruction: args.instruction,
            test_cmd: args.test_cmd,
            push: args.push,
        },
    )
    .await?;
    let outcome = &report.outcome;
    if !report.diff.is_empty() {
        println!("{}", report.diff.trim_end());
        println!();
    }
    let budget = crate::agent::Budget::from_config(&config.agent);
    let verdict = if outcome.succeeded() {
        "SOLVED"
    } else {
        "NOT SOLVED"
    };
    println!("{verdict}: {}", outcome.stop.describe(&budget));
    println!("  stop reason: {}", outcome.stop.code());
    println!("  model:       {}", report.model);
    println!("  tests before: {}", outcome.baseline.summary());
    println!("  tests after:  {}", outcome.final_test().summary());
    println!(
        "  iterations:  {} ({} edit sets applied, {} rejected{})",
        outcome.iterations,
        outcome.edits_applied,
        outcome.edits_rejected,
        [
            (outcome.replies_without_edits, "replies without edits"),
            (outcome.actions, "exploration actions"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("; {n} {what}"))
        .collect::<String>()
    );
    println!(
        "  tokens:      {} in, {} out",
        outcome.usage.prompt_tokens, outcome.usage.completion_tokens
    );
    println!("  time:        {}", report.timings.describe());
    if report.diff.is_empty() {
        println!("  result:      no change was made");
    } else {
        println!(
            "  result:      branch {} in {}",
            report.branch,
            report.workdir.display()
        );
        if let Some(place) = &report.branch_in {
            println!("               and in {place}");
        }
    }
    println!("  transcript:  {}", report.transcript.display());
    Ok(if outcome.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_issue(config: Config, args: RunIssueArgs) -> Result<ExitCode, Failure> {
    crate::sandbox::stop_tasks_on_signals();
    let report = runner::run_issue(&config, args.issue).await?;
    let verb = if report.pr_created {
        "opened"
    } else {
        "updated"
    };
    println!(
        "issue #{} (task {}): {verb} pull request {}",
        report.task.issue_number, report.task.task_id, report.pr_url
    );
    println!("  tests before: {}", report.outcome.baseline.summary());
    println!("  tests after:  {}", report.outcome.final_test().summary());
    println!(
        "  tokens:      {} in, {} out",
        report.outcome.usage.prompt_tokens, report.outcome.usage.completion_tokens
    );
    println!("  time:        {}", report.timings.describe());
    Ok(ExitCode::SUCCESS)
}

async fn dispatch_create(config: &Config, args: DispatchArgs) -> Result<ExitCode, Failure> {
    let (Some(target), Some(instruction)) = (args.target, args.instruction) else {
        return Err(Failure::usage(
            "dispatch needs --target and --instruction (or the `check` subcommand)",
        ));
    };
    let valid = match target.rsplit_once('#') {
        Some((repo, number)) => {
            number.parse::<u64>().is_ok()
                && (repo.is_empty() || crate::dispatch::RepoName::parse(repo).is_some())
        }
        None => false,
    };
    if !valid {
        return Err(Failure::usage(format!(
            "--target {target:?} must be `owner/repo#N` or `#N`: the HandsFree format names a target by an issue or pull request number (for a whole repository, set the runner's default target and leave --target as `#N` of an issue there)"
        )));
    }
    let kind = match args.target_type {
        TargetTypeArg::Issue => crate::dispatch::TargetKind::Issue,
        TargetTypeArg::Pr => crate::dispatch::TargetKind::Pr,
    };
    let task_id = uuid::Uuid::new_v4().to_string();
    let (title, body) = crate::dispatch::dispatch_issue(
        &task_id,
        &args.user_id,
        Some((kind, &target)),
        instruction.trim(),
    );
    let credentials = config.github_credentials().map_err(Failure::usage)?;
    let dispatch_repo = config.dispatch_repo().map_err(Failure::usage)?;
    let github = crate::github::GitHub::with_credentials(&config.github_api_url, &credentials)
        .map_err(Failure::usage)?;
    let number = github
        .create_issue(
            &dispatch_repo,
            &title,
            &body,
            &[crate::dispatch::DISPATCH_LABEL],
        )
        .await
        .map_err(Failure::task)?;
    println!("{dispatch_repo}#{number} task {task_id}");
    Ok(ExitCode::SUCCESS)
}

async fn eval(config: &Config, args: EvalArgs) -> Result<ExitCode, Failure> {
    // Ctrl-C/SIGTERM stop the runs after removing their sandboxes.
    crate::sandbox::stop_tasks_on_signals();
    let failure = |e: crate::eval::EvalError| {
        if e.is_usage() {
            Failure::usage(e)
        } else {
            Failure::task(e)
        }
    };
    if args.check {
        let checks = crate::eval::check_suite(config, &args.suite, args.jobs)
            .await
            .map_err(failure)?;
        for c in &checks {
            println!(
                "{} {}: visible tests {} ({}), hidden tests {} ({})",
                if c.sound() { "ok  " } else { "FAIL" },
                c.task,
                if c.visible.passed() { "PASS" } else { "fail" },
                c.visible.summary(),
                if c.hidden.passed() { "PASS" } else { "fail" },
                c.hidden.summary(),
            );
        }
        let unsound = checks.iter().filter(|c| !c.sound()).count();
        if unsound > 0 {
            eprintln!(
                "{unsound} of {} tasks pass a test command without any change: such a task measures nothing",
                checks.len()
            );
            return Ok(ExitCode::from(1));
        }
        println!("all {} tasks fail before any change", checks.len());
        return Ok(ExitCode::SUCCESS);
    }
    let models = args
        .models
        .iter()
        .map(|spec| crate::eval::ModelSpec::parse(spec))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    let out = args
        .out
        .unwrap_or_else(|| crate::eval::default_out_dir(config));
    let request = crate::eval::EvalRequest {
        suite: args.suite,
        models,
        repeat: args.repeat,
        jobs: args.jobs,
        out,
    };
    let report = crate::eval::run(config, request, &|line: &str| eprintln!("{line}"))
        .await
        .map_err(failure)?;
    let results = &report.results;
    let summaries: Vec<_> = results.models.iter().map(|m| m.summary.clone()).collect();
    println!("{}", crate::eval::report::markdown_table(&summaries));
    println!(
        "{}",
        crate::eval::report::task_matrix(&results.tasks, &results.models)
    );
    println!("took {:.1} s", results.wall_secs);
    println!("  results: {}", report.results_json.display());
    println!("  report:  {}", report.report_md.display());
    println!("  chart:   {}", report.chart_svg.display());
    let errors = report.errors();
    if errors > 0 {
        eprintln!(
            "{errors} runs failed outside the agent loop (see report.md); their numbers say nothing about the model"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn transcript(config: &Config, task_id: &str, raw: bool) -> Result<ExitCode, Failure> {
    let as_file = std::path::Path::new(task_id);
    let path = if task_id.ends_with(".jsonl") && as_file.is_file() {
        as_file.to_path_buf()
    } else if !task_id.is_empty()
        && task_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        runner::transcript_path(config, task_id)
    } else {
        return Err(Failure::usage(format!(
            "{task_id:?} is neither a task id nor a transcript file (.jsonl)"
        )));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Failure::usage(format!(
            "cannot read the transcript {}: {e}. Transcripts live in <state dir>/transcripts/; pass --state-dir if the task ran with another one",
            path.display()
        ))
    })?;
    if raw {
        print!("{text}");
    } else {
        println!("Transcript {}\n", path.display());
        print!("{}", crate::agent::render_transcript(&text));
    }
    Ok(ExitCode::SUCCESS)
}

fn dispatch_check(config: &Config, issue_file: &std::path::Path) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(issue_file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", issue_file.display())))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure::usage(format!("{} is not JSON: {e}", issue_file.display())))?;
    let issue = crate::dispatch::IssueInput::from_github_json(&value)
        .map_err(|e| Failure::usage(format!("{}: {e}", issue_file.display())))?;
    let rules = config.intake_rules().map_err(Failure::usage)?;
    let (verdict, code) = match crate::dispatch::check_issue(&issue, &rules) {
        Ok(task) => (
            serde_json::json!({
                "accepted": true,
                "task_id": task.task_id,
                "instruction": task.instruction,
                "target_repo": task.target_repo,
                "target_ref": task.target_ref,
            }),
            ExitCode::SUCCESS,
        ),
        Err(rejection) => (
            serde_json::json!({
                "accepted": false,
                "reason": rejection.reason,
                "message": rejection.message,
            }),
            ExitCode::from(1),
        ),
    };
    println!("{verdict}");
    Ok(code)
}

async fn serve(config: Config) -> Result<ExitCode, Failure> {
    config.github_credentials().map_err(Failure::usage)?;
    crate::daemon::serve(config, shutdown_signal())
        .await
        .map_err(|e| match e {
            crate::daemon::DaemonError::Config(_) | crate::daemon::DaemonError::Server(_) => {
                Failure::usage(e)
            }
            other => Failure::task(other),
        })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C stops the daemon.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn patch_apply(
    dir: PathBuf,
    patch: &str,
    dry_run: bool,
    json: bool,
    allow_workflows: bool,
) -> Result<ExitCode, Failure> {
    let text = if patch == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::usage(format!("cannot read the patch from stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(patch)
            .map_err(|e| Failure::usage(format!("cannot read the patch {patch}: {e}")))?
    };
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "--dir {} is not a directory",
            dir.display()
        )));
    }
    let policy = crate::edit::PathPolicy {
        protect_workflows: !allow_workflows,
    };
    let report = crate::edit::apply(&dir, &text, &policy, dry_run).map_err(Failure::task)?;
    if json {
        let out = serde_json::to_string_pretty(&report).map_err(Failure::task)?;
        println!("{out}");
    } else if report.applied {
        print!("{}", report.diff);
    }
    if report.applied {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}", report.feedback());
        Ok(ExitCode::from(1))
    }
}

fn bench(result: anyhow::Result<()>) -> Result<ExitCode, Failure> {
    result
        .map(|()| ExitCode::SUCCESS)
        .map_err(|e| Failure::task(format!("{e:#}")))
}

async fn doctor(config: &Config) -> Result<ExitCode, Failure> {
    let checks = crate::doctor::run(config).await;
    print!("{}", crate::doctor::render(&checks));
    Ok(if crate::doctor::has_failure(&checks) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn sandbox_prune() -> Result<ExitCode, Failure> {
    let docker = crate::sandbox::connect().await.map_err(Failure::task)?;
    let pruned = crate::sandbox::prune_images(&docker)
        .await
        .map_err(Failure::task)?;
    for (tag, bytes) in &pruned.removed {
        println!("removed {tag} ({} MB)", bytes / 1_000_000);
    }
    for (tag, why) in &pruned.kept {
        println!("kept {tag}: {why}");
    }
    let freed: i64 = pruned.removed.iter().map(|(_, b)| b).sum();
    println!(
        "{} images removed (up to {} MB; layers shared with kept images stay), {} kept; current: {}",
        pruned.removed.len(),
        freed / 1_000_000,
        pruned.kept.len(),
        crate::sandbox::default_image_tag()
    );
    Ok(ExitCode::SUCCESS)
}

async fn sandbox_build() -> Result<ExitCode, Failure> {
    let docker = crate::sandbox::connect().await.map_err(Failure::task)?;
    let tag = crate::sandbox::ensure_default_image(&docker, &mut |line: &str| eprintln!("{line}"))
        .await
        .map_err(Failure::task)?;
    // The runner's own image (top-level `Dockerfile`) starts from the base image by a
    // stable name, so a deployment need not know the recipe hash.
    let base = crate::sandbox::tag_base_image_latest(&docker)
        .await
        .map_err(Failure::task)?;
    eprintln!(
        "base image {base} is also tagged {} (the runner image's BASE_IMAGE)",
        crate::sandbox::BASE_IMAGE_LATEST
    );
    if let Ok(old) = crate::sandbox::superseded_images(&docker).await
        && !old.is_empty()
    {
        eprintln!(
            "{} images of other recipes (other agent-runner versions) remain ({}); `agent-runner sandbox prune` removes them",
            old.len(),
            old.join(", ")
        );
    }
    println!("{tag}");
    Ok(ExitCode::SUCCESS)
}

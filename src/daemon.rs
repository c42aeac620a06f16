//! `agent-runner serve`: webhook and ETag polling feed one journal-backed queue; up to
//! `max_concurrent_tasks` tasks run at once through [`runner::run_issue_with`]; every state
//! change is journalled before the side effect it announces; SIGTERM/SIGINT drain.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::dispatch::{self, IssueInput, RepoName, Task};
use crate::github::{CommentInfo, GitHub, Polled};
use crate::runner::{self, IssueHooks, RunError};
use crate::server::{self, AppState, Metrics};
use crate::store::{Store, StoreError, TaskState};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
}

/// Leases outlive any task: the lease only says which runner's restart resumes it.
const LEASE_SECS: i64 = 24 * 3600;

struct Daemon {
    config: Config,
    store: Store,
    github: GitHub,
    dispatch_repo: RepoName,
    metrics: Arc<Metrics>,
    wake: Notify,
    running: Mutex<HashSet<String>>,
}

/// Runs until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let credentials = config.github_credentials()?;
    let dispatch_repo = config.dispatch_repo()?;
    let store = Store::open(&config.state_dir).await?;
    let recovered = store.recover(&config.agent_name).await?;
    for row in &recovered {
        tracing::info!(task_id = %row.task_id, issue = row.issue, was = row.state.as_str(), "resuming a task left in flight");
    }
    remove_leftover_containers(&config.agent_name).await;
    let listener = server::bind(&config.listen).await?;
    let daemon = Arc::new(Daemon {
        // With a GitHub App this client renews its installation token by itself (on the
        // first call within 5 minutes of expiry), so it outlives any one token.
        github: GitHub::with_credentials(&config.github_api_url, &credentials)?,
        store,
        dispatch_repo,
        metrics: Arc::new(Metrics::default()),
        wake: Notify::new(),
        running: Mutex::new(HashSet::new()),
        config,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (intake_tx, intake_rx) = mpsc::channel::<IssueInput>(256);
    let state = AppState {
        metrics: daemon.metrics.clone(),
        webhook_secret: daemon.config.webhook_secret.clone(),
        dispatch_repo: daemon.dispatch_repo.to_string(),
        dispatch_label: daemon.config.labels.dispatch.clone(),
        intake: intake_tx.clone(),
    };
    tracing::info!(listen = %daemon.config.listen, agent = %daemon.config.agent_name, "runner started");
    let server_stop = until_stopped(stop_rx.clone());
    let server = tokio::spawn(server::serve(listener, state, server_stop));
    let poller = tokio::spawn(poll_loop(daemon.clone(), intake_tx, stop_rx.clone()));
    let intake = tokio::spawn(intake_loop(daemon.clone(), intake_rx));
    let scheduler = tokio::spawn(schedule(daemon.clone(), stop_rx.clone()));
    shutdown.await;
    tracing::info!("shutting down: intake stopped, letting running tasks finish");
    let _ = stop_tx.send(true);
    poller.abort();
    intake.abort();
    if let Ok(Err(e)) = scheduler
        .await
        .map_err(|e| tracing::error!(error = %e, "scheduler crashed"))
    {
        tracing::error!(error = %e, "scheduler failed");
    }
    match server.await {
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
        Err(e) => tracing::error!(error = %e, "HTTP server crashed"),
        Ok(Ok(())) => {}
    }
    Ok(())
}

async fn until_stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn remove_leftover_containers(runner_id: &str) {
    match crate::sandbox::connect().await {
        Ok(docker) => match crate::sandbox::remove_orphans(&docker, runner_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed containers left by an earlier run"),
            Err(e) => tracing::warn!(error = %e, "could not look for leftover containers"),
        },
        Err(e) => {
            tracing::warn!(error = %e, "Docker unreachable at start-up; leftover containers are removed when it is back")
        }
    }
}

// ---- intake -------------------------------------------------------------------------

fn etag_key(repo: &RepoName, label: &str) -> String {
    format!("poll_etag:{repo}:{label}")
}

async fn poll_loop(
    daemon: Arc<Daemon>,
    intake: mpsc::Sender<IssueInput>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(daemon.config.poll_interval_seconds.max(1));
    loop {
        if let Err(e) = poll_once(&daemon, &intake).await {
            Metrics::count(&daemon.metrics.polls, "error");
            tracing::warn!(error = %e, "polling the dispatch repository failed; trying again at the next interval");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn poll_once(daemon: &Daemon, intake: &mpsc::Sender<IssueInput>) -> Result<(), DaemonError> {
    let key = etag_key(&daemon.dispatch_repo, &daemon.config.labels.dispatch);
    let etag = daemon.store.get_kv(&key).await?;
    let polled = daemon
        .github
        .list_labelled_issues(
            &daemon.dispatch_repo,
            &daemon.config.labels.dispatch,
            etag.as_deref(),
        )
        .await?;
    update_rate_gauge(daemon);
    match polled {
        Polled::NotModified => Metrics::count(&daemon.metrics.polls, "not_modified"),
        Polled::Issues { issues, etag } => {
            Metrics::count(&daemon.metrics.polls, "changed");
            for issue in issues {
                // Enqueued (journalled) before the ETag moves on: a crash in between only
                // re-reads the list.
                accept(daemon, issue).await?;
            }
            if let Some(tag) = etag {
                daemon.store.set_kv(&key, &tag).await?;
            }
        }
    }
    // Keep the sender alive for the webhook; polling journals directly.
    let _ = intake;
    Ok(())
}

async fn intake_loop(daemon: Arc<Daemon>, mut rx: mpsc::Receiver<IssueInput>) {
    while let Some(issue) = rx.recv().await {
        if let Err(e) = accept(&daemon, issue).await {
            tracing::error!(error = %e, "could not journal a webhook delivery; polling will pick it up");
        }
    }
}

/// One issue seen by webhook or poll: journalled as queued unless it is finished, claimed
/// by another runner, or already known (duplicates are dropped by task id).
async fn accept(daemon: &Daemon, issue: IssueInput) -> Result<(), DaemonError> {
    let labels = &daemon.config.labels;
    if issue.is_pull_request
        || !issue.labels.contains(&labels.dispatch)
        || issue.labels.contains(&labels.done)
        || issue.labels.contains(&labels.failed)
    {
        return Ok(());
    }
    // Rejected issues still go through `run_issue` once, which explains the rejection.
    let (task_id, target) = match daemon
        .config
        .intake_rules()
        .ok()
        .and_then(|rules| dispatch::check_issue(&issue, &rules).ok())
    {
        Some(task) => (task.task_id, Some(task.target_repo.to_string())),
        None => (format!("issue-{}", issue.number), None),
    };
    let known = daemon.store.task(&task_id).await?.is_some();
    if !known && issue.labels.contains(&labels.in_progress) {
        tracing::debug!(
            issue = issue.number,
            "claimed by another runner; left alone"
        );
        return Ok(());
    }
    if daemon
        .store
        .enqueue(&task_id, issue.number, target.as_deref())
        .await?
    {
        tracing::info!(task_id, issue = issue.number, "task queued");
        daemon.wake.notify_one();
    }
    Ok(())
}

// ---- scheduling ---------------------------------------------------------------------

async fn schedule(daemon: Arc<Daemon>, mut stop: watch::Receiver<bool>) -> Result<(), DaemonError> {
    let slots = Arc::new(Semaphore::new(daemon.config.max_concurrent_tasks.max(1)));
    let mut workers: JoinSet<()> = JoinSet::new();
    let mut cap_announced = None;
    loop {
        while workers.try_join_next().is_some() {}
        let cap_wait = daily_cap_spent(&daemon).await?;
        match cap_wait {
            None => start_due(&daemon, &slots, &mut workers).await?,
            Some(wait) => {
                let today = chrono::Utc::now().date_naive();
                if cap_announced != Some(today) {
                    cap_announced = Some(today);
                    tracing::warn!(
                        cap = daemon.config.agent.max_tokens_per_day,
                        resume_in_secs = wait.as_secs(),
                        "the daily token cap (agent.max_tokens_per_day) is used up: queued tasks wait for the next UTC day"
                    );
                }
            }
        }
        let mut nap = match daemon.store.next_due_in().await? {
            Some(secs) if secs > 0 => Duration::from_secs(secs as u64),
            // Something is due but no slot is free: a finishing worker wakes us.
            Some(_) => Duration::from_secs(5),
            None => Duration::from_secs(3600),
        };
        if let Some(wait) = cap_wait {
            // Checked again now and then: another runner sharing the journal, or a new
            // day, may change it.
            nap = nap
                .max(Duration::from_secs(5))
                .min(wait)
                .min(Duration::from_secs(60));
        }
        tokio::select! {
            _ = daemon.wake.notified() => {}
            _ = tokio::time::sleep(nap) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drain(&daemon, workers).await
}

/// When today's tokens reached `agent.max_tokens_per_day`: how long until the next UTC
/// day. New tasks do not start meanwhile (each would stop at once, as failed); running
/// ones stop by themselves before their next model call.
async fn daily_cap_spent(daemon: &Daemon) -> Result<Option<Duration>, DaemonError> {
    let cap = daemon.config.agent.max_tokens_per_day;
    if cap == 0 {
        return Ok(None);
    }
    let now = chrono::Utc::now();
    let used = daemon
        .store
        .counter(&crate::agent::daily_tokens_key(now.date_naive()))
        .await?;
    Ok((used >= cap).then(|| crate::agent::until_next_utc_day(now)))
}

async fn start_due(
    daemon: &Arc<Daemon>,
    slots: &Arc<Semaphore>,
    workers: &mut JoinSet<()>,
) -> Result<(), DaemonError> {
    let due = daemon.store.due().await?;
    daemon.metrics.queue_depth.set(due.len() as i64);
    for row in due {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            break;
        };
        if !daemon
            .store
            .lease(&row.task_id, &daemon.config.agent_name, LEASE_SECS)
            .await?
        {
            continue;
        }
        lock(&daemon.running).insert(row.task_id.clone());
        daemon.metrics.running_tasks.inc();
        let daemon = daemon.clone();
        workers.spawn(async move {
            work(&daemon, &row.task_id, row.issue, row.attempts + 1).await;
            lock(&daemon.running).remove(&row.task_id);
            daemon.metrics.running_tasks.dec();
            drop(permit);
            daemon.wake.notify_one();
        });
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// After a stop: running tasks get the grace period, then are recorded as interrupted.
async fn drain(daemon: &Daemon, mut workers: JoinSet<()>) -> Result<(), DaemonError> {
    let grace = Duration::from_secs(daemon.config.shutdown_grace_secs);
    let finished = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        workers.abort_all();
        while workers.join_next().await.is_some() {}
        // Aborted tasks drop their sandboxes, whose removal may not finish before exit.
        if let Ok(docker) = crate::sandbox::connect().await
            && let Err(e) = crate::sandbox::remove_own(&docker, None).await
        {
            tracing::warn!(error = %e, "could not remove the sandboxes of interrupted tasks; the next start removes them");
        }
        let left: Vec<String> = lock(&daemon.running).drain().collect();
        for task_id in left {
            tracing::warn!(
                task_id,
                "not finished within the grace period; resumed at the next start"
            );
            daemon
                .store
                .transition(&task_id, TaskState::Interrupted, "interrupted", None)
                .await?;
        }
    }
    Ok(())
}

/// One attempt at one task, and what it leaves in the journal and on GitHub.
async fn work(daemon: &Daemon, task_id: &str, issue: u64, attempt: u32) {
    let started = Instant::now();
    if attempt > 1 {
        // An earlier attempt may have been killed after its final comment: the task is
        // then finished on GitHub and only its labels and journal entry are missing.
        // Running it again would post a second "completed" comment.
        let finished = match ended_on_github(daemon, task_id, issue).await {
            Ok(Some(ending)) => match settle_ended(daemon, task_id, issue, ending).await {
                // Only labels are missing: try again later rather than run the task again.
                Err(DaemonError::GitHub(e)) => {
                    let delay = daemon
                        .config
                        .task_retry_secs
                        .saturating_mul(1 << attempt.min(10));
                    tracing::warn!(task_id, delay, error = %e, "could not label a finished task; trying again later");
                    daemon
                        .store
                        .requeue(task_id, crate::store::now() + delay as i64, &e.to_string())
                        .await
                        .map(|()| true)
                        .map_err(DaemonError::from)
                }
                other => other,
            },
            Ok(None) => Ok(false),
            Err(e) => settle(daemon, task_id, issue, attempt, Err(e.into()))
                .await
                .map(|()| true),
        };
        match finished {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::error!(task_id, error = %e, "could not record the task's outcome");
                return;
            }
        }
    }
    let hooks = JournalHooks { daemon, task_id };
    let result = runner::run_issue_with(&daemon.config, issue, &hooks).await;
    daemon
        .metrics
        .task_duration
        .observe(started.elapsed().as_secs_f64());
    update_rate_gauge(daemon);
    if let Err(e) = settle(daemon, task_id, issue, attempt, result).await {
        // The journal still says running: the next start resumes the task.
        tracing::error!(task_id, error = %e, "could not record the task's outcome");
    }
}

/// How an earlier attempt ended the task on GitHub.
enum Ending {
    /// Its "completed" comment is posted; the PR URL from it.
    Done(String),
    /// Its "failed" comment is posted.
    Failed,
}

/// This runner's final comment on the issue since it last started the task, if any.
async fn ended_on_github(
    daemon: &Daemon,
    task_id: &str,
    issue: u64,
) -> Result<Option<Ending>, crate::github::GitHubError> {
    let me = &daemon.config.agent_name;
    let comments = daemon.github.comments(&daemon.dispatch_repo, issue).await?;
    let started = format!("🤖 {me} started processing this task");
    let Some(last_start) = comments.iter().rposition(|c| c.body.starts_with(&started)) else {
        return Ok(None);
    };
    let (done, failed) = (
        format!("✅ {me} completed processing this task"),
        format!("❌ {me} failed to process this task"),
    );
    Ok(comments[last_start..].iter().find_map(|c| {
        if c.body.starts_with(&done) && c.body.contains(task_id) {
            // The URL is only for the journal; a comment without one still ends the task.
            let url = c
                .body
                .split_once("pull request ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(|u| u.trim_end_matches('.').to_string())
                .unwrap_or_default();
            Some(Ending::Done(url))
        } else if c.body.starts_with(&failed) {
            Some(Ending::Failed)
        } else {
            None
        }
    }))
}

/// Labels and journals a task an earlier attempt ended on GitHub. Returns true.
/// The last steps of a finished task: the outcome label replaces the in-progress one on the
/// issue, then the journal records the final state (journalled first, so a restart redoes
/// only the labelling).
async fn label_and_record(
    daemon: &Daemon,
    task_id: &str,
    issue: u64,
    label: &str,
    state: TaskState,
    kind: &str,
    detail: &str,
) -> Result<(), DaemonError> {
    let repo = &daemon.dispatch_repo;
    daemon.store.log(task_id, "labelling", Some(label)).await?;
    daemon.github.add_labels(repo, issue, &[label]).await?;
    daemon
        .github
        .remove_label(repo, issue, &daemon.config.labels.in_progress)
        .await?;
    daemon
        .store
        .transition(task_id, state, kind, Some(detail))
        .await?;
    Ok(())
}

async fn settle_ended(
    daemon: &Daemon,
    task_id: &str,
    issue: u64,
    ending: Ending,
) -> Result<bool, DaemonError> {
    let labels = &daemon.config.labels;
    let (label, state, kind, detail, outcome) = match &ending {
        Ending::Done(url) => (&labels.done, TaskState::Done, "done", url.as_str(), "done"),
        Ending::Failed => (
            &labels.failed,
            TaskState::Failed,
            "failed",
            "the failure was reported before a restart",
            "failed",
        ),
    };
    tracing::info!(
        task_id,
        outcome,
        "the task was finished before a restart; only labelling it"
    );
    label_and_record(daemon, task_id, issue, label, state, kind, detail).await?;
    Metrics::count(&daemon.metrics.tasks_processed, outcome);
    Ok(true)
}

async fn settle(
    daemon: &Daemon,
    task_id: &str,
    issue: u64,
    attempt: u32,
    result: Result<runner::IssueReport, RunError>,
) -> Result<(), DaemonError> {
    let labels = &daemon.config.labels;
    let repo = &daemon.dispatch_repo;
    let outcome = match result {
        Ok(report) => {
            record_usage(daemon, &report.outcome);
            let (label, url) = (&labels.done, &report.pr_url);
            label_and_record(daemon, task_id, issue, label, TaskState::Done, "done", url).await?;
            "done"
        }
        Err(RunError::NotClaimed { holder, .. }) => {
            daemon
                .store
                .transition(task_id, TaskState::Skipped, "not_claimed", Some(&holder))
                .await?;
            "skipped"
        }
        Err(e) if e.is_transient() && attempt < daemon.config.max_task_attempts => {
            let delay = daemon
                .config
                .task_retry_secs
                .saturating_mul(1 << attempt.min(10));
            tracing::warn!(task_id, attempt, delay, error = %e, "transient failure; the task will be retried");
            daemon
                .store
                .requeue(task_id, crate::store::now() + delay as i64, &e.to_string())
                .await?;
            "retry"
        }
        Err(e) => {
            tracing::warn!(task_id, error = %e, "task failed");
            if e.is_transient() {
                // Its comment was held back for the retries; this was the last attempt.
                let comment =
                    dispatch::failed_comment(&daemon.config.agent_name, &e.to_string(), None);
                daemon
                    .github
                    .comment(
                        repo,
                        issue,
                        &daemon.github.redactor(&daemon.config).redact(&comment),
                    )
                    .await?;
            }
            let (label, why) = (&labels.failed, e.to_string());
            label_and_record(
                daemon,
                task_id,
                issue,
                label,
                TaskState::Failed,
                "failed",
                &why,
            )
            .await?;
            "failed"
        }
    };
    Metrics::count(&daemon.metrics.tasks_processed, outcome);
    Ok(())
}

fn record_usage(daemon: &Daemon, outcome: &crate::agent::AgentOutcome) {
    let m = &daemon.metrics;
    m.llm_calls.inc_by(u64::from(outcome.iterations));
    for (kind, n) in [
        ("prompt", outcome.usage.prompt_tokens),
        ("completion", outcome.usage.completion_tokens),
    ] {
        m.llm_tokens
            .get_or_create(&server::KindLabel { kind: kind.into() })
            .inc_by(n);
    }
    for t in &outcome.test_times {
        m.sandbox_exec_seconds.observe(t.as_secs_f64());
    }
    for (result, n) in [
        ("applied", outcome.edits_applied),
        ("rejected", outcome.edits_rejected),
    ] {
        m.patch_outcomes
            .get_or_create(&server::PatchLabel {
                format: "any".into(),
                outcome: result.into(),
            })
            .inc_by(u64::from(n));
    }
}

fn update_rate_gauge(daemon: &Daemon) {
    if let Some(r) = daemon.github.rate_limit_remaining() {
        daemon.metrics.rate_limit_remaining.set(r);
    }
}

// ---- claim and journal hooks --------------------------------------------------------

struct JournalHooks<'a> {
    daemon: &'a Daemon,
    task_id: &'a str,
}

fn journal(e: StoreError) -> RunError {
    RunError::Task(format!("the journal failed: {e}"))
}

impl IssueHooks for JournalHooks<'_> {
    /// Label, then "started" comment, then the tie-break: of the runners that commented
    /// since the issue last finished, the first one owns it. A resumed task that already
    /// announced itself does not comment again.
    async fn claim(&self, github: &GitHub, task: &Task) -> Result<bool, RunError> {
        let d = self.daemon;
        let me = &d.config.agent_name;
        let repo = &d.dispatch_repo;
        d.store
            .log(self.task_id, "claiming", Some(me))
            .await
            .map_err(journal)?;
        let comments = github.comments(repo, task.issue_number).await?;
        match active_claimant(&comments) {
            Some(holder) if holder != *me => {
                return Err(RunError::NotClaimed {
                    issue: task.issue_number,
                    holder,
                });
            }
            Some(_) => {}
            None => {
                github
                    .add_labels(repo, task.issue_number, &[&d.config.labels.in_progress])
                    .await?;
                let started = dispatch::started_comment(me, chrono::Utc::now());
                github
                    .comment(
                        repo,
                        task.issue_number,
                        &d.github.redactor(&d.config).redact(&started),
                    )
                    .await?;
                let comments = github.comments(repo, task.issue_number).await?;
                if let Some(holder) = active_claimant(&comments).filter(|h| h != me) {
                    return Err(RunError::NotClaimed {
                        issue: task.issue_number,
                        holder,
                    });
                }
            }
        }
        d.store
            .transition(self.task_id, TaskState::Running, "claimed", None)
            .await
            .map_err(journal)?;
        Ok(false)
    }

    async fn phase(
        &self,
        _task: &Task,
        phase: &'static str,
        pr: Option<u64>,
    ) -> Result<(), RunError> {
        let store = &self.daemon.store;
        match pr {
            Some(n) => store.set_pr(self.task_id, n).await,
            None => store.log(self.task_id, phase, None).await,
        }
        .map_err(journal)
    }

    fn report_failure(&self, transient: bool) -> bool {
        !transient
    }
}

/// The runner named by the first "started" comment after the last "completed"/"failed"
/// one, if any.
fn active_claimant(comments: &[CommentInfo]) -> Option<String> {
    let since_last_end = comments
        .iter()
        .rposition(|c| c.body.starts_with('✅') || c.body.starts_with('❌'))
        .map_or(0, |i| i + 1);
    comments[since_last_end..].iter().find_map(|c| {
        c.body
            .strip_prefix("🤖 ")?
            .split_once(" started processing this task")
            .map(|(name, _)| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(body: &str) -> CommentInfo {
        CommentInfo {
            id: 0,
            author: "bot".into(),
            body: body.into(),
        }
    }

    #[test]
    fn first_starter_since_last_end_owns_the_issue() {
        let started = |n: &str| c(&dispatch::started_comment(n, chrono::Utc::now()));
        assert_eq!(active_claimant(&[]), None);
        assert_eq!(
            active_claimant(&[started("a"), started("b")]).as_deref(),
            Some("a")
        );
        assert_eq!(
            active_claimant(&[started("a"), c("❌ a failed to process this task: x")]),
            None
        );
        assert_eq!(
            active_claimant(&[started("a"), c("✅ a completed"), c("hi"), started("b")]).as_deref(),
            Some("b")
        );
    }
}

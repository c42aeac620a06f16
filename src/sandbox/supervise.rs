//! Running a task's sandbox work so that its container is removed on every way out:
//! success, error, wall-clock limit, SIGINT/SIGTERM and panic.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bollard::Docker;
use futures_util::FutureExt;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::SandboxError;
use super::reap::remove_own;

/// Set by [`stop_tasks_on_signals`].
static STOP_TASKS_ON_SIGNALS: AtomicBool = AtomicBool::new(false);

/// Declares that in this process SIGINT/SIGTERM end a running task, after removing its
/// sandbox: for a command that runs one task and exits (`solve`, `run-issue`). Off by
/// default, because a process that owns its shutdown (the daemon lets running tasks finish
/// within a grace period) must not have its tasks stopped by the same signal. Whether the
/// runner passes `stop_on_signals` to [`supervise`] follows this.
pub fn stop_tasks_on_signals() {
    STOP_TASKS_ON_SIGNALS.store(true, Ordering::SeqCst);
}

/// Whether [`stop_tasks_on_signals`] was called in this process.
pub fn tasks_stop_on_signals() -> bool {
    STOP_TASKS_ON_SIGNALS.load(Ordering::SeqCst)
}

/// How [`supervise`] bounds a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    /// Hard limit on the whole work; `None` = none.
    pub wall_clock: Option<Duration>,
    /// Stop the work on SIGINT (Ctrl-C) or SIGTERM. Once a listener is installed the
    /// process no longer dies of these signals by default (tokio keeps its handler), so
    /// the caller must end the process itself after an [`SandboxError::Interrupted`].
    pub stop_on_signals: bool,
}

/// SIGINT and SIGTERM listeners.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Some(Signals {
                interrupt,
                terminate,
            }),
            (Err(e), _) | (_, Err(e)) => {
                // Without listeners the signals keep their default action: the process
                // dies and the next start's `remove_orphans` removes the container.
                tracing::warn!("cannot listen for SIGINT/SIGTERM: {e}");
                None
            }
        }
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

enum Ended<T> {
    Done(T),
    Panicked(Box<dyn std::any::Any + Send>),
    WallClock(Duration),
    Signal(&'static str),
}

/// Runs `work` (which starts and uses the sandbox of `task_id`) until it ends, its wall
/// clock runs out or (with `stop_on_signals`) SIGINT/SIGTERM arrives. Whatever happened,
/// every container this process created for `task_id` is removed before this returns —
/// including after a panic in `work`, which is then resumed. A stopped `work` is dropped
/// at its current await point.
///
/// Errors: [`SandboxError::WallClock`], [`SandboxError::Interrupted`]; the work's own
/// result is returned as it is.
pub async fn supervise<T>(
    docker: &Docker,
    task_id: &str,
    rules: Supervision,
    work: impl Future<Output = T>,
) -> Result<T, SandboxError> {
    let mut signals = if rules.stop_on_signals {
        Signals::install()
    } else {
        None
    };
    let ended = {
        let work = AssertUnwindSafe(work).catch_unwind();
        let deadline = async {
            match rules.wall_clock {
                Some(limit) => {
                    tokio::time::sleep(limit).await;
                    limit
                }
                None => std::future::pending().await,
            }
        };
        let signal = async {
            match &mut signals {
                Some(signals) => signals.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = work => match result {
                Ok(value) => Ended::Done(value),
                Err(panic) => Ended::Panicked(panic),
            },
            limit = deadline => Ended::WallClock(limit),
            name = signal => Ended::Signal(name),
        }
        // `work` is dropped here if it was stopped: a `Sandbox` in it starts its own
        // removal, which the sweep below waits for.
    };
    match &ended {
        Ended::Done(_) => {}
        Ended::Panicked(_) => {
            tracing::error!(task_id, "the sandbox work panicked; removing its container")
        }
        Ended::WallClock(limit) => tracing::warn!(
            task_id,
            "wall-clock limit of {}s reached; removing the sandbox",
            limit.as_secs()
        ),
        Ended::Signal(name) => tracing::warn!(task_id, "{name} received; removing the sandbox"),
    }
    match remove_own(docker, Some(task_id)).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            task_id,
            removed = n,
            "removed the task's remaining sandbox containers"
        ),
        Err(e) => {
            tracing::warn!(task_id, error = %e, "could not remove the task's sandbox; the next start removes it")
        }
    }
    match ended {
        Ended::Done(value) => Ok(value),
        Ended::Panicked(panic) => std::panic::resume_unwind(panic),
        Ended::WallClock(limit) => Err(SandboxError::WallClock { limit }),
        Ended::Signal(signal) => Err(SandboxError::Interrupted { signal }),
    }
}

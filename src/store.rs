//! The journal: an embedded SQLite database (WAL) in the state directory. One row per task,
//! an append-only event log, and small key/value entries (the poller's ETag). Every state
//! change is committed here before the side effect it announces, so a runner killed at any
//! instant finds on restart what it was doing.
//!
//! SQLite calls block; every public method runs them on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

/// Schema versions, applied in order; `PRAGMA user_version` says how many are in.
const MIGRATIONS: &[&str] = &[
    // 1: tasks, events, kv
    "CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        issue INTEGER NOT NULL,
        target TEXT,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires INTEGER,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        pr_number INTEGER,
        error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX tasks_state ON tasks(state, next_attempt_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_task ON events(task_id, id);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the journal {path} cannot be used: {message}. Check that the state directory is writable and not shared with another runner"
    )]
    Open { path: PathBuf, message: String },
    #[error("the journal failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a journal operation crashed: {0}")]
    Crashed(String),
    #[error("the journal has no task {0}")]
    NoTask(String),
}

/// Where a task is. Terminal: `Done`, `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Seen, waiting to be claimed (also after a transient failure, until `next_attempt_at`).
    Queued,
    /// Claim in progress on GitHub (label, started comment).
    Claiming,
    /// Claimed; the per-issue work runs. The phase is in the event log.
    Running,
    /// Shutdown cut it short; resumed at the next start.
    Interrupted,
    Done,
    Failed,
    /// Another runner holds the issue; left alone.
    Skipped,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Claiming => "claiming",
            TaskState::Running => "running",
            TaskState::Interrupted => "interrupted",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> TaskState {
        match s {
            "claiming" => TaskState::Claiming,
            "running" => TaskState::Running,
            "interrupted" => TaskState::Interrupted,
            "done" => TaskState::Done,
            "failed" => TaskState::Failed,
            "skipped" => TaskState::Skipped,
            _ => TaskState::Queued,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Done | TaskState::Failed | TaskState::Skipped
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub task_id: String,
    pub issue: u64,
    pub target: Option<String>,
    pub state: TaskState,
    pub attempts: u32,
    pub lease_owner: Option<String>,
    pub lease_expires: Option<i64>,
    pub next_attempt_at: i64,
    pub pr_number: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: i64,
    pub kind: String,
    pub detail: Option<String>,
}

/// The journal handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/journal.sqlite3` and migrates it.
    pub async fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join("journal.sqlite3");
        tokio::task::spawn_blocking(move || Store::open_blocking(&path))
            .await
            .map_err(|e| StoreError::Crashed(e.to_string()))?
    }

    fn open_blocking(path: &Path) -> Result<Store, StoreError> {
        let open_error = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        }
        let mut conn = Connection::open(path).map_err(|e| open_error(e.to_string()))?;
        // WAL: readers never block the writer, and a commit is one fsync'd append.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL (not NORMAL) so a committed state change survives power loss, not only kill -9.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: SQLite rolls an
            // unfinished transaction back, so the poisoned guard is safe to take.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Crashed(e.to_string()))?
    }

    /// Records a newly seen task as queued. Returns false if the task id was already known
    /// (whatever its state): duplicates from webhook and polling are dropped here.
    pub async fn enqueue(
        &self,
        task_id: &str,
        issue: u64,
        target: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (task_id, target) = (task_id.to_string(), target.map(str::to_string));
        self.with(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO tasks (task_id, issue, target, state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?4)",
                params![task_id, issue as i64, target, t],
            )? == 1;
            if inserted {
                event(&tx, &task_id, "queued", Some(&format!("issue #{issue}")))?;
            }
            tx.commit()?;
            Ok(inserted)
        })
        .await
    }

    /// Takes the lease on a queued (or interrupted) task that is due. Returns false if it
    /// is not claimable (already running, terminal, or not due).
    pub async fn lease(
        &self,
        task_id: &str,
        owner: &str,
        ttl_secs: i64,
    ) -> Result<bool, StoreError> {
        let (task_id, owner) = (task_id.to_string(), owner.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            let t = now();
            let changed = tx.execute(
                "UPDATE tasks SET state = 'claiming', lease_owner = ?2, lease_expires = ?3,
                        attempts = attempts + 1, updated_at = ?4
                 WHERE task_id = ?1 AND state IN ('queued', 'interrupted') AND next_attempt_at <= ?4",
                params![task_id, owner, t + ttl_secs, t],
            )? == 1;
            if changed {
                event(&tx, &task_id, "leased", Some(&owner))?;
            }
            tx.commit()?;
            Ok(changed)
        })
        .await
    }

    /// Moves a task to `state`, logging `kind` (and `detail`) in the same transaction.
    pub async fn transition(
        &self,
        task_id: &str,
        state: TaskState,
        kind: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let (task_id, kind, detail) = (
            task_id.to_string(),
            kind.to_string(),
            detail.map(str::to_string),
        );
        self.with(move |c| {
            let tx = c.transaction()?;
            let release = state.is_terminal() || state == TaskState::Queued;
            let changed = tx.execute(
                "UPDATE tasks SET state = ?2, updated_at = ?3,
                        error = CASE WHEN ?2 IN ('failed', 'queued', 'skipped') THEN ?4 ELSE error END,
                        lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END,
                        lease_expires = CASE WHEN ?5 THEN NULL ELSE lease_expires END
                 WHERE task_id = ?1",
                params![task_id, state.as_str(), now(), detail, release],
            )?;
            if changed == 0 {
                return Err(StoreError::NoTask(task_id));
            }
            event(&tx, &task_id, &kind, detail.as_deref())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Appends an event (a phase of the work) without changing the state.
    pub async fn log(
        &self,
        task_id: &str,
        kind: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let (task_id, kind, detail) = (
            task_id.to_string(),
            kind.to_string(),
            detail.map(str::to_string),
        );
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE tasks SET updated_at = ?2 WHERE task_id = ?1",
                params![task_id, now()],
            )?;
            event(&tx, &task_id, &kind, detail.as_deref())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn set_pr(&self, task_id: &str, pr_number: u64) -> Result<(), StoreError> {
        let task_id = task_id.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE tasks SET pr_number = ?2, updated_at = ?3 WHERE task_id = ?1",
                params![task_id, pr_number as i64, now()],
            )?;
            event(&tx, &task_id, "pr", Some(&format!("#{pr_number}")))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Puts a task back in the queue, due at `next_attempt_at` (a transient failure).
    pub async fn requeue(
        &self,
        task_id: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let (task_id, error) = (task_id.to_string(), error.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE tasks SET state = 'queued', next_attempt_at = ?2, error = ?3,
                        lease_owner = NULL, lease_expires = NULL, updated_at = ?4
                 WHERE task_id = ?1",
                params![task_id, next_attempt_at, error, now()],
            )?;
            event(&tx, &task_id, "retry", Some(&error))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// At start-up: tasks this runner (`owner`) left claiming/running/interrupted go back to
    /// the queue, due now. Returns them.
    pub async fn recover(&self, owner: &str) -> Result<Vec<TaskRow>, StoreError> {
        let owner = owner.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let rows = select(
                &tx,
                "WHERE state IN ('claiming', 'running', 'interrupted')
                   AND (lease_owner = ?1 OR lease_owner IS NULL)",
                params![owner],
            )?;
            for row in &rows {
                tx.execute(
                    "UPDATE tasks SET state = 'queued', next_attempt_at = 0, lease_owner = NULL,
                            lease_expires = NULL, updated_at = ?2 WHERE task_id = ?1",
                    params![row.task_id, now()],
                )?;
                event(&tx, &row.task_id, "resumed", Some(row.state.as_str()))?;
            }
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    /// Queued tasks that are due, oldest issue first.
    pub async fn due(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.with(|c| {
            select(
                c,
                "WHERE state = 'queued' AND next_attempt_at <= ?1 ORDER BY issue",
                params![now()],
            )
        })
        .await
    }

    /// Seconds until the next queued task is due (None: nothing queued).
    pub async fn next_due_in(&self) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            let next: Option<i64> = c.query_row(
                "SELECT MIN(next_attempt_at) FROM tasks WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )?;
            Ok(next.map(|n| (n - now()).max(0)))
        })
        .await
    }

    pub async fn task(&self, task_id: &str) -> Result<Option<TaskRow>, StoreError> {
        let task_id = task_id.to_string();
        self.with(move |c| Ok(select(c, "WHERE task_id = ?1", params![task_id])?.pop()))
            .await
    }

    pub async fn tasks(&self) -> Result<Vec<TaskRow>, StoreError> {
        self.with(|c| select(c, "ORDER BY issue", params![])).await
    }

    pub async fn events(&self, task_id: &str) -> Result<Vec<Event>, StoreError> {
        let task_id = task_id.to_string();
        self.with(move |c| {
            let mut stmt =
                c.prepare("SELECT at, kind, detail FROM events WHERE task_id = ?1 ORDER BY id")?;
            let rows = stmt.query_map(params![task_id], |r| {
                Ok(Event {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn get_kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.with(move |c| {
            Ok(
                c.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
        .await
    }

    pub async fn set_kv(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }
}

impl Store {
    /// Adds `tokens` to the count kept under `key` (one atomic statement, so concurrent
    /// tasks and processes sharing the journal never lose an addition); returns the new total.
    pub async fn add_to_counter(&self, key: &str, tokens: u64) -> Result<u64, StoreError> {
        let key = key.to_string();
        self.with(move |c| {
            let total: String = c.query_row(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + ?2 AS TEXT)
                 RETURNING value",
                params![key, tokens.to_string()],
                |r| r.get(0),
            )?;
            Ok(total.parse().unwrap_or(0))
        })
        .await
    }

    /// The count kept under `key` (0 when there is none).
    pub async fn counter(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self
            .get_kv(key)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        // user_version cannot be bound as a parameter; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

fn event(
    c: &Connection,
    task_id: &str,
    kind: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO events (task_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![task_id, now(), kind, detail],
    )?;
    Ok(())
}

fn select(
    c: &Connection,
    clause: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<TaskRow>, StoreError> {
    let sql = format!(
        "SELECT task_id, issue, target, state, attempts, lease_owner, lease_expires,
                next_attempt_at, pr_number, error FROM tasks {clause}"
    );
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(TaskRow {
            task_id: r.get(0)?,
            issue: r.get::<_, i64>(1)? as u64,
            target: r.get(2)?,
            state: TaskState::parse(&r.get::<_, String>(3)?),
            attempts: r.get::<_, i64>(4)? as u32,
            lease_owner: r.get(5)?,
            lease_expires: r.get(6)?,
            next_attempt_at: r.get(7)?,
            pr_number: r.get::<_, Option<i64>>(8)?.map(|n| n as u64),
            error: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrates_once_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (mode, version) = store
            .with(|c| {
                let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                Ok((mode, version))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(store);
        // Reopening does not re-run migrations (they would fail on existing tables).
        Store::open(dir.path()).await.unwrap();
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_leases_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert!(store.enqueue("t1", 7, Some("a/b")).await.unwrap());
        assert!(!store.enqueue("t1", 7, Some("a/b")).await.unwrap());
        assert!(store.lease("t1", "r1", 60).await.unwrap());
        assert!(!store.lease("t1", "r1", 60).await.unwrap());
        let row = store.task("t1").await.unwrap().unwrap();
        assert_eq!(row.state, TaskState::Claiming);
        assert_eq!(row.attempts, 1);
        assert_eq!(row.lease_owner.as_deref(), Some("r1"));
        store
            .transition("t1", TaskState::Done, "done", None)
            .await
            .unwrap();
        let row = store.task("t1").await.unwrap().unwrap();
        assert_eq!((row.state, row.lease_owner), (TaskState::Done, None));
        // A finished task is never queued again.
        assert!(!store.enqueue("t1", 7, None).await.unwrap());
        let kinds: Vec<String> = store
            .events("t1")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["queued", "leased", "done"]);
    }

    #[tokio::test]
    async fn in_flight_tasks_are_recovered_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).await.unwrap();
            store.enqueue("t1", 1, None).await.unwrap();
            store.enqueue("t2", 2, None).await.unwrap();
            store.lease("t1", "me", 60).await.unwrap();
            store
                .transition("t1", TaskState::Running, "cloning", None)
                .await
                .unwrap();
            store.set_pr("t1", 5).await.unwrap();
        }
        let store = Store::open(dir.path()).await.unwrap();
        assert!(store.recover("someone-else").await.unwrap().is_empty());
        let recovered = store.recover("me").await.unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].state, TaskState::Running);
        let due: Vec<String> = store
            .due()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        assert_eq!(due, ["t1", "t2"]);
        assert_eq!(store.task("t1").await.unwrap().unwrap().pr_number, Some(5));
    }

    #[tokio::test]
    async fn counters_add_up_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.counter("tokens").await.unwrap(), 0);
        let other = Store::open(dir.path()).await.unwrap();
        let adds = (0..10).map(|i| {
            let s = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { s.add_to_counter("tokens", 7).await.unwrap() })
        });
        for add in adds {
            add.await.unwrap();
        }
        assert_eq!(store.counter("tokens").await.unwrap(), 70);
        assert_eq!(store.add_to_counter("tokens", 0).await.unwrap(), 70);
    }

    #[tokio::test]
    async fn retries_wait_until_due_and_kv_persists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store.enqueue("t1", 1, None).await.unwrap();
        store.lease("t1", "me", 60).await.unwrap();
        store.requeue("t1", now() + 100, "502").await.unwrap();
        assert!(store.due().await.unwrap().is_empty());
        assert!(!store.lease("t1", "me", 60).await.unwrap());
        assert!(store.next_due_in().await.unwrap().unwrap() > 90);
        assert_eq!(store.get_kv("etag").await.unwrap(), None);
        store.set_kv("etag", "W/\"1\"").await.unwrap();
        store.set_kv("etag", "W/\"2\"").await.unwrap();
        assert_eq!(
            store.get_kv("etag").await.unwrap().as_deref(),
            Some("W/\"2\"")
        );
    }
}

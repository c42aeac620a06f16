//! Running one command in a sandbox: timeout, process-tree kill, capped output, OOM.

use std::collections::VecDeque;
use std::pin::pin;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::KillContainerOptionsBuilder;
use futures_util::{Stream, StreamExt};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::SandboxError;
use super::container::Sandbox;

/// The user commands run as (the image's `sandbox` user).
pub(crate) const EXEC_USER: &str = "10001:10001";

/// The user exploration commands run as: not the owner of any workspace file and not
/// PID 1's uid, so it can read the tree but not change it, and `kill -9 -1` as this user
/// touches nothing else.
pub(crate) const READ_ONLY_USER: &str = "10002:10002";

/// How much longer than the in-container `timeout` the host waits for the output stream
/// to close before it kills the process tree itself.
const HOST_GRACE: Duration = Duration::from_secs(3);

/// `$1` = seconds, `$2` = the command. (dash's `kill` takes no `--`.) `timeout` puts itself
/// and the command into a new process group (pgid = its pid) and at the deadline SIGKILLs
/// the whole group. When the command ends earlier, whatever it left running in that group
/// is killed too (`kill` and `wait` are shell builtins: this works even when a fork bomb has
/// used up the pids limit). The command's stderr is merged into its stdout so the
/// interleaving is exact; the wrapper's own stderr carries only the pgid, for the host's
/// fallback kill (a file for it would cost one more process per command: `rm`).
const WRAPPER: &str = r#"timeout -s KILL "$1" sh -c "$2" </dev/null 2>&1 & p=$!
echo "$p" >&2
wait "$p"; rc=$?
kill -9 "-$p" 2>/dev/null
exit "$rc""#;

/// The process group id the wrapper reports on its stderr (first line), as it arrives.
#[derive(Debug, Default)]
pub(crate) struct PgidReport {
    seen: Mutex<Vec<u8>>,
    pgid: AtomicU32,
}

impl PgidReport {
    fn push(&self, data: &[u8]) {
        if self.pgid().is_some() {
            tracing::debug!(stderr = %String::from_utf8_lossy(data), "unexpected output of the exec wrapper");
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // A pgid is a handful of digits: anything long is not one.
        if seen.len() < 64 {
            seen.extend_from_slice(&data[..data.len().min(64)]);
        }
        if let Some(pgid) = parse_pgid(&seen) {
            self.pgid.store(pgid, Ordering::SeqCst);
        }
    }

    fn pgid(&self) -> Option<u32> {
        Some(self.pgid.load(Ordering::SeqCst)).filter(|&p| p > 1)
    }
}

/// `"1234\n..."` → 1234: a complete first line of digits, never 0 or 1.
pub(crate) fn parse_pgid(stderr: &[u8]) -> Option<u32> {
    let end = stderr.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&stderr[..end]).ok()?;
    line.trim().parse().ok().filter(|&p: &u32| p > 1)
}

/// What one command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit code of `sh -c command` (137 = SIGKILL); `None` if Docker did not report one.
    pub exit_code: Option<i64>,
    /// stdout and stderr interleaved, capped: the head and the tail are kept, with a marker
    /// line in between saying how many bytes were cut.
    pub output: String,
    /// The command ran into its timeout and its process tree was killed.
    pub timed_out: bool,
    /// The kernel's OOM killer killed a process of the command (memory limit reached).
    pub oom_killed: bool,
    /// Bytes of output that were not kept.
    pub truncated_bytes: u64,
    /// Wall-clock time from start to end of the command.
    pub duration: Duration,
    /// The time limit the command ran under.
    pub timeout: Duration,
    /// The processes could not be killed from inside, so the whole container was killed;
    /// the sandbox is unusable afterwards.
    pub container_killed: bool,
}

impl ExecOutcome {
    /// Exit code 0, no timeout, no OOM kill.
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.oom_killed
    }

    /// One line for humans and the model, e.g. `exit 1 in 2.3s`,
    /// `timed out after 600s (process tree killed)`, `killed: out of memory after 3.1s`.
    pub fn summary(&self) -> String {
        let secs = self.duration.as_secs_f64();
        let limit = format_limit(self.timeout);
        let mut s = if self.timed_out {
            if self.container_killed {
                format!("timed out after {limit} (container killed)")
            } else {
                format!("timed out after {limit} (process tree killed)")
            }
        } else if self.oom_killed {
            match self.exit_code {
                Some(137) | None => format!("killed: out of memory after {secs:.1}s"),
                Some(code) => {
                    format!("exit {code} in {secs:.1}s; a process was killed: out of memory")
                }
            }
        } else {
            match self.exit_code {
                Some(137) => format!("killed (SIGKILL, exit 137) in {secs:.1}s"),
                Some(code) => format!("exit {code} in {secs:.1}s"),
                None => format!("no exit code after {secs:.1}s"),
            }
        };
        if self.truncated_bytes > 0 {
            s.push_str(&format!(" (output cut: {} bytes)", self.truncated_bytes));
        }
        s
    }

    /// The last `max_lines` lines of the output.
    pub fn tail(&self, max_lines: usize) -> String {
        if max_lines == 0 {
            return String::new();
        }
        let trimmed = self.output.strip_suffix('\n').unwrap_or(&self.output);
        let mut start = 0;
        for (seen, (i, _)) in trimmed.rmatch_indices('\n').enumerate() {
            if seen + 1 == max_lines {
                start = i + 1;
                break;
            }
        }
        self.output[start..].to_string()
    }
}

/// `600s`, `2.5s`.
fn format_limit(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs:.0}s")
    } else {
        format!("{secs:.1}s")
    }
}

/// Keeps the first half of the cap and a ring of the last half; never holds more.
#[derive(Debug)]
pub(crate) struct OutputCapture {
    head: Vec<u8>,
    head_cap: usize,
    tail: VecDeque<u8>,
    tail_cap: usize,
    total: u64,
}

impl OutputCapture {
    pub(crate) fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        OutputCapture {
            head: Vec::with_capacity(head_cap.min(64 * 1024)),
            head_cap,
            tail: VecDeque::new(),
            tail_cap: cap - head_cap,
            total: 0,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let mut rest = data;
        if self.head.len() < self.head_cap {
            let n = (self.head_cap - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        if rest.is_empty() || self.tail_cap == 0 {
            return;
        }
        if rest.len() >= self.tail_cap {
            self.tail.clear();
            self.tail.extend(&rest[rest.len() - self.tail_cap..]);
        } else {
            let overflow = (self.tail.len() + rest.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(rest);
        }
    }

    /// (text, bytes cut)
    pub(crate) fn finish(self) -> (String, u64) {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let cut = self.total - kept;
        let mut bytes = self.head;
        if cut > 0 {
            if !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(
                format!("[agent-runner: {cut} bytes of output cut here]\n").as_bytes(),
            );
        }
        bytes.extend(self.tail);
        (String::from_utf8_lossy(&bytes).into_owned(), cut)
    }
}

/// Counts a running exec of a sandbox until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads an exec's output into `capture`; with `pgid`, stderr is the wrapper's report
/// instead of output.
async fn drain<S>(
    output: &mut S,
    capture: &mut OutputCapture,
    pgid: Option<&PgidReport>,
) -> Result<(), bollard::errors::Error>
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
{
    while let Some(item) = output.next().await {
        match (item?, pgid) {
            (LogOutput::StdErr { message }, Some(report)) => report.push(&message),
            (
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message },
                _,
            ) => capture.push(&message),
            (LogOutput::StdIn { .. }, _) => {}
        }
    }
    Ok(())
}

/// Parses `oom_kill N` from cgroup v2 `memory.events` or v1 `memory.oom_control`.
pub(crate) fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .max()
}

impl Sandbox {
    /// Runs `sh -c command` in `/workspace` as the sandbox user under
    /// `limits.command_timeout` (see [`Sandbox::exec_with_timeout`]).
    pub async fn exec(&self, command: &str) -> Result<ExecOutcome, SandboxError> {
        self.exec_with_timeout(command, self.limits.command_timeout)
            .await
    }

    /// Like [`Sandbox::exec`] with an explicit timeout. On expiry the whole process tree of
    /// the command is killed (SIGKILL to its process group inside the container; if the
    /// output does not end, every process of the sandbox user; if that fails too, the
    /// container). Background processes the command leaves in its process group are killed
    /// when it ends: nothing outlives its command unless it escaped with `setsid`.
    pub async fn exec_with_timeout(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, SandboxError> {
        self.exec_as(command, timeout, EXEC_USER).await
    }

    /// Runs a command that can read the workspace but not change it (another uid than the
    /// files' owner), under the same timeout, kill and output rules as [`Sandbox::exec`]:
    /// the model's exploration commands, which must not make the container's tree differ
    /// from the host's.
    pub async fn exec_read_only(&self, command: &str) -> Result<ExecOutcome, SandboxError> {
        self.exec_as(command, self.limits.command_timeout, READ_ONLY_USER)
            .await
    }

    async fn exec_as(
        &self,
        command: &str,
        timeout: Duration,
        user: &str,
    ) -> Result<ExecOutcome, SandboxError> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.in_flight);
        let secs = format!("{:.3}", timeout.as_secs_f64().max(0.001));
        let cmd = vec![
            "sh",
            "-c",
            WRAPPER,
            "agent-runner-exec",
            secs.as_str(),
            command,
        ];
        let started = Instant::now();
        let exec = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd),
                    user: Some(user),
                    working_dir: Some("/workspace"),
                    ..Default::default()
                },
            )
            .await?;
        let start = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    output_capacity: Some(64 * 1024),
                    ..Default::default()
                }),
            )
            .await?;
        let StartExecResults::Attached { mut output, .. } = start else {
            return Err(SandboxError::Exec(
                "Docker started the exec detached".into(),
            ));
        };
        let mut capture = OutputCapture::new(self.limits.output_cap_bytes);
        let mut timed_out = false;
        let mut container_killed = false;
        let report = PgidReport::default();
        {
            let mut reading = pin!(drain(&mut output, &mut capture, Some(&report)));
            match tokio::time::timeout(timeout + HOST_GRACE, &mut reading).await {
                Ok(r) => r?,
                Err(_) => {
                    timed_out = true;
                    tracing::warn!(container = %self.id, "command outlived its timeout; killing its process group");
                    if let Some(pgid) = report.pgid() {
                        let pgid = pgid.to_string();
                        let kill = ["sh", "-c", r#"kill -9 "-$1""#, "kill", pgid.as_str()];
                        let _ = self.run_internal(&kill, user).await;
                    }
                    if tokio::time::timeout(Duration::from_secs(1), &mut reading)
                        .await
                        .is_err()
                    {
                        tracing::warn!(container = %self.id, "output still open; killing every process of the sandbox user");
                        // PID 1 (docker-init + sleep) runs as another uid, so it survives.
                        let _ = self.run_internal(&["kill", "-9", "-1"], user).await;
                        if tokio::time::timeout(Duration::from_secs(3), &mut reading)
                            .await
                            .is_err()
                        {
                            tracing::warn!(container = %self.id, "processes survive; killing the container");
                            let _ = self
                                .docker
                                .kill_container(
                                    &self.id,
                                    Some(
                                        KillContainerOptionsBuilder::default()
                                            .signal("SIGKILL")
                                            .build(),
                                    ),
                                )
                                .await;
                            container_killed = true;
                        }
                    }
                }
            }
        }
        drop(output);
        let duration = started.elapsed();

        let mut exit_code = None;
        if !container_killed {
            for _ in 0..40 {
                let info = self.docker.inspect_exec(&exec.id).await?;
                exit_code = info.exit_code;
                if info.running != Some(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }

        // A non-zero exit may hide an OOM kill of a child (e.g. `make` exits 2 when the
        // compiler it ran was killed): check the cgroup counter then too.
        let killed = exit_code == Some(137) || timed_out;
        let oom_killed =
            exit_code != Some(0) && !container_killed && self.check_oom(killed, user).await;
        if !timed_out && exit_code == Some(137) && !oom_killed {
            // `timeout -s KILL` dies of its own SIGKILL at the deadline: exit 137.
            timed_out = duration + Duration::from_millis(50) >= timeout;
        }
        let (output, truncated_bytes) = capture.finish();
        Ok(ExecOutcome {
            exit_code,
            output,
            timed_out,
            oom_killed,
            truncated_bytes,
            duration,
            timeout,
            container_killed,
        })
    }

    /// Reads the cgroup's OOM-kill counter; returns whether the OOM killer struck since the
    /// last check. With `sweep` (after a SIGKILL: timeout or OOM), and unless another command
    /// is running, also kills every leftover process of the sandbox user (e.g. one that
    /// escaped the process group with `setsid`); PID 1 runs as another uid and survives.
    async fn check_oom(&self, sweep: bool, user: &str) -> bool {
        let sweep = if sweep && self.in_flight.load(Ordering::SeqCst) <= 1 {
            "; kill -9 -1 2>/dev/null"
        } else {
            ""
        };
        let script = format!(
            "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null{sweep}; true"
        );
        if let Ok((_, text)) = self.run_internal(&["sh", "-c", &script], user).await
            && let Some(count) = parse_oom_kills(&text)
        {
            let mut seen = self
                .oom_kills_seen
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let new = count > *seen;
            *seen = count;
            if new {
                return true;
            }
        }
        match self.docker.inspect_container(&self.id, None).await {
            Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Runs a short internal command (no wrapper, 10 s limit) and returns (exit code, output).
    pub(crate) async fn run_internal(
        &self,
        cmd: &[&str],
        user: &str,
    ) -> Result<(Option<i64>, String), SandboxError> {
        let work = async {
            let exec = self
                .docker
                .create_exec(
                    &self.id,
                    CreateExecOptions {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(cmd.to_vec()),
                        user: Some(user),
                        working_dir: Some("/workspace"),
                        ..Default::default()
                    },
                )
                .await?;
            let mut capture = OutputCapture::new(64 * 1024);
            if let StartExecResults::Attached { mut output, .. } =
                self.docker.start_exec(&exec.id, None).await?
            {
                drain(&mut output, &mut capture, None).await?;
            }
            let mut code = None;
            for _ in 0..40 {
                let info = self.docker.inspect_exec(&exec.id).await?;
                code = info.exit_code;
                if info.running != Some(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok::<_, SandboxError>((code, capture.finish().0))
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .map_err(|_| SandboxError::Exec(format!("internal command {cmd:?} hung")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(exit: Option<i64>, output: &str) -> ExecOutcome {
        ExecOutcome {
            exit_code: exit,
            output: output.to_string(),
            timed_out: false,
            oom_killed: false,
            truncated_bytes: 0,
            duration: Duration::from_millis(2300),
            timeout: Duration::from_secs(600),
            container_killed: false,
        }
    }

    #[test]
    fn capture_keeps_everything_under_the_cap() {
        let mut c = OutputCapture::new(10);
        c.push(b"abc");
        c.push(b"def");
        assert_eq!(c.finish(), ("abcdef".to_string(), 0));
    }

    #[test]
    fn capture_keeps_head_and_tail_and_counts_the_cut() {
        let mut c = OutputCapture::new(8);
        for chunk in [&b"0123"[..], b"45", b"6789abcdef", b"XY"] {
            c.push(chunk);
        }
        let (text, cut) = c.finish();
        assert_eq!(cut, 18 - 8);
        assert_eq!(
            text,
            "0123\n[agent-runner: 10 bytes of output cut here]\nefXY"
        );
    }

    #[test]
    fn capture_never_holds_more_than_the_cap() {
        let mut c = OutputCapture::new(1000);
        let chunk = vec![b'y'; 4096];
        for _ in 0..1000 {
            c.push(&chunk);
        }
        assert_eq!(c.head.len(), 500);
        assert_eq!(c.tail.len(), 500);
        assert!(c.tail.capacity() < 8192);
        let (_, cut) = c.finish();
        assert_eq!(cut, 4096 * 1000 - 1000);
    }

    #[test]
    fn summaries() {
        assert_eq!(outcome(Some(1), "").summary(), "exit 1 in 2.3s");
        assert!(outcome(Some(0), "").passed());
        assert!(!outcome(Some(1), "").passed());
        let mut t = outcome(Some(137), "");
        t.timed_out = true;
        t.duration = Duration::from_secs(601);
        assert_eq!(t.summary(), "timed out after 600s (process tree killed)");
        t.timeout = Duration::from_millis(2500);
        t.container_killed = true;
        assert_eq!(t.summary(), "timed out after 2.5s (container killed)");
        assert!(!t.passed());
        let mut o = outcome(Some(137), "");
        o.oom_killed = true;
        o.truncated_bytes = 5;
        assert_eq!(
            o.summary(),
            "killed: out of memory after 2.3s (output cut: 5 bytes)"
        );
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let o = outcome(Some(0), "a\nb\nc\n");
        assert_eq!(o.tail(2), "b\nc\n");
        assert_eq!(o.tail(5), "a\nb\nc\n");
        assert_eq!(o.tail(0), "");
        assert_eq!(outcome(Some(0), "x\ny").tail(1), "y");
    }

    #[test]
    fn pgid_report_parsing() {
        assert_eq!(parse_pgid(b"1234\n"), Some(1234));
        assert_eq!(parse_pgid(b"1234"), None, "incomplete line");
        assert_eq!(parse_pgid(b"1\n"), None, "never the init process");
        assert_eq!(parse_pgid(b"sh: oops\n1234\n"), None);
        let report = PgidReport::default();
        report.push(b"12");
        assert_eq!(report.pgid(), None);
        report.push(b"34\n");
        assert_eq!(report.pgid(), Some(1234));
        report.push(b"99\n");
        assert_eq!(report.pgid(), Some(1234));
    }

    #[test]
    fn oom_counter_parsing() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(parse_oom_kills(""), None);
    }
}

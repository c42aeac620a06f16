//! Which process owns a container, and whether that process is still alive.
//!
//! Every container carries `agent-runner.owner = <host>:<pid>:<start>:<boot id>`, where
//! `start` is field 22 of `/proc/<pid>/stat` (clock ticks after boot). A pid alone is not
//! enough: pids are recycled, and a recycled pid has another start time. The boot id tells
//! a process of an earlier boot (all of them are dead) from a live one with an equal start.
//! Only owners on this host (same hostname) are judged; a container of another host (a
//! second runner sharing the Docker Engine from another machine or container) is never
//! touched.

use std::sync::OnceLock;

/// The owner label of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) boot_id: String,
}

impl Owner {
    pub(crate) fn label(&self) -> String {
        format!("{}:{}:{}:{}", self.host, self.pid, self.start, self.boot_id)
    }

    /// Parses a label written by [`Owner::label`]. Hostnames and boot ids contain no `:`.
    pub(crate) fn parse(label: &str) -> Option<Owner> {
        let mut parts = label.split(':');
        let host = parts.next().filter(|h| !h.is_empty())?;
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let boot_id = parts.next().filter(|b| !b.is_empty())?;
        if parts.next().is_some() {
            return None;
        }
        Some(Owner {
            host: host.to_string(),
            pid,
            start,
            boot_id: boot_id.to_string(),
        })
    }
}

/// What [`liveness`] concluded about a container's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    Alive,
    /// Gone, or its pid now belongs to another process, or it ran before the last boot.
    Dead,
    /// Another host: not ours to judge.
    OtherHost,
    /// No owner label, or one we cannot read: left alone.
    Unknown,
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and `)`, so fields are counted after the last `)`.
pub(crate) fn stat_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After `)` come field 3 (state), 4, ...: field 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Judges `label` from the point of view of `me` (this process). `read_stat(pid)` returns
/// the contents of `/proc/<pid>/stat`, or `None` if there is no such process.
pub(crate) fn liveness(
    label: Option<&str>,
    me: &Owner,
    read_stat: &dyn Fn(u32) -> Option<String>,
) -> Liveness {
    let Some(owner) = label.and_then(Owner::parse) else {
        return Liveness::Unknown;
    };
    if owner.host != me.host {
        return Liveness::OtherHost;
    }
    if owner.boot_id != me.boot_id {
        return Liveness::Dead;
    }
    match read_stat(owner.pid).as_deref().map(stat_start_time) {
        None => Liveness::Dead,
        Some(Some(start)) if start == owner.start => Liveness::Alive,
        Some(Some(_)) => Liveness::Dead,
        // The process exists but its stat cannot be parsed: do not guess.
        Some(None) => Liveness::Unknown,
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(':'))
}

pub(crate) fn read_stat(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

fn current_uncached() -> Option<Owner> {
    let pid = std::process::id();
    Some(Owner {
        host: read_trimmed("/proc/sys/kernel/hostname")?,
        pid,
        start: stat_start_time(&read_stat(pid)?)?,
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id")?,
    })
}

/// This process as an owner; `None` where `/proc` does not tell (not Linux), in which case
/// containers get no owner label and only [`super::remove_stale`] can clean them up.
pub(crate) fn current() -> Option<&'static Owner> {
    static CURRENT: OnceLock<Option<Owner>> = OnceLock::new();
    CURRENT
        .get_or_init(|| {
            let owner = current_uncached();
            if owner.is_none() {
                tracing::warn!(
                    "cannot identify this process from /proc: sandbox containers get no owner \
                     label, and a crash leaves them for `remove_stale`"
                );
            }
            owner
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Owner {
        Owner {
            host: "box".into(),
            pid: 100,
            start: 5000,
            boot_id: "b00t".into(),
        }
    }

    fn stat(pid: u32, start: u64) -> String {
        // A command name with spaces and a `)` must not shift the fields.
        format!(
            "{pid} (evil) name) S 1 {pid} {pid} 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 {start} 3133440 379 18446744073709551615"
        )
    }

    #[test]
    fn start_time_is_field_22() {
        let real = "14306 (cat) R 14298 14298 9455 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 236235 3133440 379";
        assert_eq!(stat_start_time(real), Some(236235));
        assert_eq!(stat_start_time(&stat(7, 42)), Some(42));
        assert_eq!(stat_start_time("7 (x) S 1 2"), None);
        assert_eq!(stat_start_time("garbage"), None);
    }

    #[test]
    fn labels_round_trip_and_bad_ones_are_rejected() {
        assert_eq!(Owner::parse(&me().label()), Some(me()));
        assert_eq!(me().label(), "box:100:5000:b00t");
        for bad in [
            "",
            "box:100:5000",
            "box:x:5000:b",
            ":1:2:b",
            "box:1:2:b:extra",
            "box:1:2:",
        ] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn liveness_rules() {
        let me = me();
        let procs = |pid: u32| match pid {
            200 => Some(stat(200, 7000)),
            300 => Some("300 (broken".to_string()),
            _ => None,
        };
        let judge = |label: &str| liveness(Some(label), &me, &procs);
        assert_eq!(judge("box:200:7000:b00t"), Liveness::Alive);
        // Recycled pid: same number, another process.
        assert_eq!(judge("box:200:6999:b00t"), Liveness::Dead);
        assert_eq!(judge("box:201:7000:b00t"), Liveness::Dead);
        // An earlier boot: dead even if pid and start time match a live process.
        assert_eq!(judge("box:200:7000:older"), Liveness::Dead);
        assert_eq!(judge("other:201:7000:b00t"), Liveness::OtherHost);
        assert_eq!(judge("box:300:1:b00t"), Liveness::Unknown);
        assert_eq!(judge("nonsense"), Liveness::Unknown);
        assert_eq!(liveness(None, &me, &procs), Liveness::Unknown);
    }

    #[test]
    fn this_process_is_alive_by_its_own_rules() {
        let me = current().cloned();
        let Some(me) = me else {
            panic!("/proc must identify the test process on Linux");
        };
        assert_eq!(me.pid, std::process::id());
        assert_eq!(
            liveness(Some(&me.label()), &me, &read_stat),
            Liveness::Alive
        );
    }
}

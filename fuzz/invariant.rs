//! The property both fuzz drivers check (the cargo-fuzz target `fuzz_targets/parse.rs` and
//! the stable-toolchain `tests/edit_fuzz.rs`): whatever the reply, `edit::apply` does not
//! panic; a reply it refuses (or an I/O error) leaves every file byte for byte as it was;
//! an applied reply changes exactly the files it reports, all inside the worktree, and
//! leaves no temp files behind.

use std::collections::BTreeMap;
use std::path::Path;

use agent_runner::edit::{self, ChangeKind, PathPolicy};

/// The worktree every reply is applied to.
pub const FILES: &[(&str, &str)] = &[
    ("a.txt", "alpha\nbeta\ngamma\n\ndelta\n"),
    (
        "src/lib.rs",
        "fn add(a: u8, b: u8) -> u8 {\n    a - b\n}\n\nfn main() {\n    println!(\"{}\", add(1, 2));\n}\n",
    ),
    ("crlf.txt", "one\r\ntwo\r\nthree\r\n"),
    ("empty.txt", ""),
    (".github/workflows/ci.yml", "on: push\n"),
];

/// A file next to the worktree that no reply may reach.
pub const OUTSIDE: (&str, &str) = ("outside.txt", "alpha\nbeta\ngamma\n");

type Snapshot = BTreeMap<String, Vec<u8>>;

fn snapshot(dir: &Path) -> Result<Snapshot, String> {
    fn walk(base: &Path, d: &Path, out: &mut Snapshot) -> Result<(), String> {
        let entries = std::fs::read_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries {
            let e = e.map_err(|e| e.to_string())?;
            let path = e.path();
            let ft = e.file_type().map_err(|e| e.to_string())?;
            let rel = path
                .strip_prefix(base)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                walk(base, &path, out)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| e.to_string())?;
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else {
                let bytes = std::fs::read(&path).map_err(|e| format!("{rel}: {e}"))?;
                out.insert(rel, bytes);
            }
        }
        Ok(())
    }
    let mut out = Snapshot::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn setup(dir: &Path) -> Result<(), String> {
    let root = dir.join("root");
    for (rel, content) in FILES {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&p, content).map_err(|e| e.to_string())?;
    }
    std::fs::write(dir.join(OUTSIDE.0), OUTSIDE.1).map_err(|e| e.to_string())?;
    // A symlink leading out of the worktree: edits through it must be refused.
    #[cfg(unix)]
    std::os::unix::fs::symlink(format!("../{}", OUTSIDE.0), root.join("link.txt"))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A worktree holding [`FILES`] and the file [`OUTSIDE`] it, reused from one reply to the
/// next and rebuilt only after a reply changed it (most replies are refused, and building
/// it is what costs).
pub struct Fixture {
    dir: tempfile::TempDir,
    baseline: Snapshot,
}

impl Fixture {
    pub fn new() -> Result<Fixture, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        setup(dir.path())?;
        let baseline = snapshot(dir.path())?;
        Ok(Fixture { dir, baseline })
    }

    /// Applies `reply` to the worktree; `Err` describes a broken invariant.
    pub fn check(&mut self, reply: &str, dry_run: bool) -> Result<(), String> {
        let root = self.dir.path().join("root");
        let result = edit::apply(&root, reply, &PathPolicy::default(), dry_run);
        let after = snapshot(self.dir.path())?;
        let verdict = judge(&self.baseline, &after, result, dry_run);
        if after != self.baseline {
            self.reset(&after)?;
        }
        verdict
    }

    /// Puts back what a reply changed: a fresh build would redo every file.
    fn reset(&mut self, after: &Snapshot) -> Result<(), String> {
        let base = self.dir.path();
        let err = |e: std::io::Error| e.to_string();
        for rel in after.keys() {
            if !self.baseline.contains_key(rel) {
                std::fs::remove_file(base.join(rel)).map_err(err)?;
            }
        }
        for (rel, bytes) in &self.baseline {
            if after.get(rel) == Some(bytes) {
                continue;
            }
            let p = base.join(rel);
            if rel == "root/link.txt" {
                // Only a symlink in the fixture; rebuilding it is simplest.
                let _ = std::fs::remove_file(&p);
                std::fs::remove_dir_all(base.join("root")).map_err(err)?;
                std::fs::remove_file(base.join(OUTSIDE.0)).map_err(err)?;
                setup(base)?;
                return self.check_reset();
            }
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            std::fs::write(&p, bytes).map_err(err)?;
        }
        remove_new_dirs(&base.join("root"), &self.baseline, base)?;
        self.check_reset()
    }

    fn check_reset(&self) -> Result<(), String> {
        if snapshot(self.dir.path())? == self.baseline {
            Ok(())
        } else {
            Err("the fixture could not be restored".into())
        }
    }
}

/// Removes directories a reply created (those holding no baseline file).
fn remove_new_dirs(d: &Path, baseline: &Snapshot, base: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(d).map_err(|e| e.to_string())?;
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        if !e.file_type().map_err(|e| e.to_string())?.is_dir() {
            continue;
        }
        let path = e.path();
        let rel = path
            .strip_prefix(base)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let prefix = format!("{rel}/");
        if baseline.keys().any(|k| k.starts_with(&prefix)) {
            remove_new_dirs(&path, baseline, base)?;
        } else {
            std::fs::remove_dir_all(&path).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn judge(
    before: &Snapshot,
    after: &Snapshot,
    result: Result<edit::ApplyReport, edit::EditError>,
    dry_run: bool,
) -> Result<(), String> {
    let report = match result {
        Err(e) if before != after => {
            return Err(format!("the error `{e}` left changed files behind"));
        }
        Err(_) => return Ok(()),
        Ok(r) => r,
    };
    if !report.applied {
        if before != after {
            return Err(format!(
                "a refused reply changed files: {:#?}",
                report.blocks
            ));
        }
        if !report.changes.is_empty() || !report.diff.is_empty() {
            return Err("a refused reply reports changes".into());
        }
        return Ok(());
    }
    if dry_run {
        return if before == after {
            Ok(())
        } else {
            Err("a dry run changed files".into())
        };
    }
    let reported: BTreeMap<String, ChangeKind> = report
        .changes
        .iter()
        .map(|c| (format!("root/{}", c.path.to_string_lossy()), c.kind))
        .collect();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for k in keys {
        let (b, a) = (before.get(k), after.get(k));
        if b == a {
            continue;
        }
        let kind = reported
            .get(k)
            .ok_or_else(|| format!("`{k}` changed but the report does not say so"))?;
        let consistent = match kind {
            ChangeKind::Created => b.is_none() && a.is_some(),
            ChangeKind::Modified => b.is_some() && a.is_some(),
            ChangeKind::Deleted => b.is_some() && a.is_none(),
        };
        if !consistent {
            return Err(format!(
                "`{k}` is reported {kind:?}, which is not what happened"
            ));
        }
    }
    for k in reported.keys() {
        if before.get(k) == after.get(k) {
            return Err(format!("`{k}` is reported changed but is not"));
        }
    }
    Ok(())
}

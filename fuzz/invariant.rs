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

/// Applies `reply` to a fresh copy of [`FILES`]; `Err` describes a broken invariant.
pub fn check(reply: &str, dry_run: bool) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    setup(dir.path())?;
    let before = snapshot(dir.path())?;
    let result = edit::apply(&dir.path().join("root"), reply, &PathPolicy::default(), dry_run);
    let after = snapshot(dir.path())?;
    let report = match result {
        Err(e) if before != after => {
            return Err(format!("the error `{e}` left changed files behind"));
        }
        Err(_) => return Ok(()),
        Ok(r) => r,
    };
    if !report.applied {
        if before != after {
            return Err(format!("a refused reply changed files: {:#?}", report.blocks));
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
            return Err(format!("`{k}` is reported {kind:?}, which is not what happened"));
        }
    }
    for k in reported.keys() {
        if before.get(k) == after.get(k) {
            return Err(format!("`{k}` is reported changed but is not"));
        }
    }
    Ok(())
}

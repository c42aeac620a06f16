//! In-memory staging of the worktree's files and the all-or-nothing commit.
//!
//! Files are read once, edited in memory, and written only when every block
//! applied: first every new content goes to a temp file in its target's
//! directory, then the temp files are renamed over their targets (and
//! deletions done). If a step of that second phase fails, the steps already
//! done are undone from the staged original bytes.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::path::{self, Resolved};
use super::{ChangeKind, EditError, PathPolicy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    Missing,
    Binary,
    Text(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub rel: String,
    pub abs: PathBuf,
    pub orig: Content,
    orig_bytes: Vec<u8>,
    pub orig_mode: Option<u32>,
    pub cur: Content,
    /// Mode for a file this edit creates.
    pub new_mode: Option<u32>,
}

impl Entry {
    pub(crate) fn change(&self) -> Option<ChangeKind> {
        match (&self.orig, &self.cur) {
            (Content::Missing, Content::Missing) => None,
            (Content::Missing, _) => Some(ChangeKind::Created),
            (_, Content::Missing) => Some(ChangeKind::Deleted),
            (a, b) if a == b => None,
            _ => Some(ChangeKind::Modified),
        }
    }

    pub(crate) fn orig_text(&self) -> Option<&str> {
        match &self.orig {
            Content::Text(s) => Some(s),
            _ => None,
        }
    }

    fn new_bytes(&self) -> &[u8] {
        match &self.cur {
            Content::Text(s) => s.as_bytes(),
            _ => &[],
        }
    }

    fn write_mode(&self) -> u32 {
        match self.orig {
            Content::Missing => self.new_mode.unwrap_or(0o644),
            _ => self.orig_mode.unwrap_or(0o644),
        }
    }
}

/// A block-level problem (reported to the model) or a worktree I/O failure.
#[derive(Debug)]
pub(crate) enum StageErr {
    Block(String),
    Io(EditError),
}

impl From<EditError> for StageErr {
    fn from(e: EditError) -> Self {
        StageErr::Io(e)
    }
}

impl From<String> for StageErr {
    fn from(e: String) -> Self {
        StageErr::Block(e)
    }
}

pub(crate) struct Vfs {
    pub root: PathBuf,
    policy: PathPolicy,
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

fn io(path: &Path, source: std::io::Error) -> EditError {
    EditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8192)].contains(&0) || std::str::from_utf8(bytes).is_err()
}

#[cfg(unix)]
fn mode_of(md: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(md.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn mode_of(_md: &fs::Metadata) -> Option<u32> {
    None
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Test hook: make the n-th commit step (0-based) fail.
    pub(crate) static FAIL_STEP: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

fn injected_failure(_step: usize) -> std::io::Result<()> {
    #[cfg(test)]
    if FAIL_STEP.with(|f| f.get()) == Some(_step) {
        return Err(std::io::Error::other("injected failure"));
    }
    Ok(())
}

impl Vfs {
    pub(crate) fn new(root: &Path, policy: &PathPolicy) -> Result<Vfs, EditError> {
        let canon = fs::canonicalize(root).map_err(|source| EditError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        if !canon.is_dir() {
            return Err(EditError::Root {
                path: root.to_path_buf(),
                source: std::io::Error::new(ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(Vfs {
            root: canon,
            policy: policy.clone(),
            entries: Vec::new(),
            index: HashMap::new(),
        })
    }

    pub(crate) fn resolve(&self, raw: &str) -> Result<Resolved, String> {
        path::resolve(&self.root, raw, &self.policy)
    }

    /// The entry for a resolved path, read from disk on first use.
    pub(crate) fn load(&mut self, r: &Resolved) -> Result<usize, StageErr> {
        if let Some(&i) = self.index.get(&r.rel) {
            return Ok(i);
        }
        let (orig, bytes, mode) = match fs::symlink_metadata(&r.abs) {
            Err(e) if e.kind() == ErrorKind::NotFound => (Content::Missing, Vec::new(), None),
            Err(e) => return Err(io(&r.abs, e).into()),
            Ok(md) if md.is_dir() => {
                return Err(StageErr::Block(format!("`{}` is a directory", r.rel)));
            }
            Ok(md) if !md.is_file() => {
                return Err(StageErr::Block(format!(
                    "`{}` is not a regular file",
                    r.rel
                )));
            }
            Ok(md) => {
                let bytes = fs::read(&r.abs).map_err(|e| io(&r.abs, e))?;
                let content = if is_binary(&bytes) {
                    Content::Binary
                } else {
                    Content::Text(String::from_utf8_lossy(&bytes).into_owned())
                };
                (content, bytes, mode_of(&md))
            }
        };
        let i = self.entries.len();
        self.entries.push(Entry {
            rel: r.rel.clone(),
            abs: r.abs.clone(),
            cur: orig.clone(),
            orig,
            orig_bytes: bytes,
            orig_mode: mode,
            new_mode: None,
        });
        self.index.insert(r.rel.clone(), i);
        Ok(i)
    }

    pub(crate) fn get(&self, i: usize) -> &Entry {
        &self.entries[i]
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> &mut Entry {
        &mut self.entries[i]
    }

    /// Changed entries, in first-touch order.
    pub(crate) fn changed(&self) -> Vec<(&Entry, ChangeKind)> {
        self.entries
            .iter()
            .filter_map(|e| e.change().map(|k| (e, k)))
            .collect()
    }

    /// Whether a parent of `r` exists as a non-directory (in the staged
    /// state), which would make creating `r` impossible.
    pub(crate) fn parent_blocked(&self, r: &Resolved) -> Option<String> {
        let comps: Vec<&str> = r.rel.split('/').collect();
        for k in 1..comps.len() {
            let prefix = comps[..k].join("/");
            if let Some(&i) = self.index.get(&prefix) {
                // A file there now, or one that is only deleted at commit.
                let e = &self.entries[i];
                if e.cur != Content::Missing || e.orig != Content::Missing {
                    return Some(prefix);
                }
                continue;
            }
            let p = self.root.join(&prefix);
            if let Ok(md) = fs::symlink_metadata(&p)
                && !md.is_dir()
            {
                return Some(prefix);
            }
        }
        None
    }

    /// Up to 5 existing files with the same file name as `rel`.
    pub(crate) fn same_name_files(&self, rel: &str) -> Vec<String> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let mut found = Vec::new();
        let mut stack = vec![self.root.clone()];
        let mut budget = 20_000usize;
        while let Some(dir) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else {
                continue;
            };
            for ent in rd.flatten() {
                budget = budget.saturating_sub(1);
                if budget == 0 || found.len() >= 5 {
                    return found;
                }
                let fname = ent.file_name();
                let fname = fname.to_string_lossy();
                let Ok(ft) = ent.file_type() else { continue };
                if ft.is_dir() {
                    if !matches!(fname.as_ref(), ".git" | "node_modules" | "target") {
                        stack.push(ent.path());
                    }
                } else if fname == name
                    && let Ok(r) = ent.path().strip_prefix(&self.root)
                {
                    let r = r.to_string_lossy().replace('\\', "/");
                    if r != rel {
                        found.push(r);
                    }
                }
            }
        }
        found.sort();
        found
    }

    /// Writes every change, all or nothing.
    pub(crate) fn commit(&self) -> Result<(), EditError> {
        let changed = self.changed();
        let mut made_dirs: Vec<PathBuf> = Vec::new();
        let mut staged: Vec<(&Entry, ChangeKind, Option<tempfile::NamedTempFile>)> = Vec::new();
        // Phase 1: nothing visible yet.
        for (e, kind) in &changed {
            if *kind == ChangeKind::Deleted {
                staged.push((e, *kind, None));
                continue;
            }
            let prepared = self.prepare(e, &mut made_dirs);
            match prepared {
                Ok(t) => staged.push((e, *kind, Some(t))),
                Err(err) => {
                    drop(staged);
                    remove_dirs(&made_dirs);
                    return Err(err);
                }
            }
        }
        // Phase 2: renames and deletions, undone on failure.
        let mut done: Vec<(&Entry, ChangeKind)> = Vec::new();
        let mut pending = staged.into_iter();
        let mut step = 0usize;
        while let Some((e, kind, tmp)) = pending.next() {
            let r = injected_failure(step).and_then(|()| match tmp {
                Some(t) => t.persist(&e.abs).map(|_| ()).map_err(|pe| pe.error),
                None => fs::remove_file(&e.abs),
            });
            step += 1;
            if let Err(source) = r {
                // Remove the temp files not yet renamed before their dirs.
                drop(pending);
                let failed = self.rollback(&done);
                remove_dirs(&made_dirs);
                let rollback = if failed.is_empty() {
                    "every file already written was restored".to_string()
                } else {
                    format!("restoring these files also failed: {}", failed.join(", "))
                };
                return Err(EditError::Commit {
                    path: e.abs.clone(),
                    source,
                    rollback,
                });
            }
            done.push((e, kind));
        }
        Ok(())
    }

    fn prepare(
        &self,
        e: &Entry,
        made_dirs: &mut Vec<PathBuf>,
    ) -> Result<tempfile::NamedTempFile, EditError> {
        let parent = e.abs.parent().unwrap_or(&self.root).to_path_buf();
        make_dirs(&parent, made_dirs)?;
        let mut t = tempfile::Builder::new()
            .prefix(".agent-edit-")
            .tempfile_in(&parent)
            .map_err(|err| io(&parent, err))?;
        t.write_all(e.new_bytes())
            .and_then(|()| t.flush())
            .map_err(|err| io(t.path(), err))?;
        set_mode(t.path(), e.write_mode()).map_err(|err| io(t.path(), err))?;
        Ok(t)
    }

    /// Undoes finished steps from the staged originals; returns the paths
    /// that could not be restored.
    fn rollback(&self, done: &[(&Entry, ChangeKind)]) -> Vec<String> {
        let mut failed = Vec::new();
        for (e, kind) in done.iter().rev() {
            let r = match kind {
                ChangeKind::Created => fs::remove_file(&e.abs),
                ChangeKind::Modified | ChangeKind::Deleted => restore(e),
            };
            if r.is_err() {
                failed.push(e.rel.clone());
            }
        }
        failed
    }
}

fn restore(e: &Entry) -> std::io::Result<()> {
    let parent = e.abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut t = tempfile::Builder::new()
        .prefix(".agent-edit-")
        .tempfile_in(&parent)?;
    t.write_all(&e.orig_bytes)?;
    t.flush()?;
    if let Some(m) = e.orig_mode {
        set_mode(t.path(), m)?;
    }
    t.persist(&e.abs).map(|_| ()).map_err(|pe| pe.error)
}

/// Creates `dir` and its missing ancestors, recording each one created.
fn make_dirs(dir: &Path, made: &mut Vec<PathBuf>) -> Result<(), EditError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(&d) {
            Ok(()) => made.push(d),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(io(&d, e)),
        }
    }
    Ok(())
}

fn remove_dirs(made: &[PathBuf]) {
    for d in made.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

//! Tar archives of worktree files for upload into `/workspace`.
//!
//! Rules: `.git` (at any depth) is never copied; symlinks are archived as symlinks and
//! never followed on the host; a path whose ancestor is a symlink is synced as that
//! symlink; special files (fifos, sockets, devices) are skipped; every entry belongs to
//! the sandbox user; permission bits are kept (minus setuid/setgid/sticky).

use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{SANDBOX_UID, SandboxError};

/// Chunks of the tar on their way to Docker.
pub(crate) type Chunk = Result<Bytes, io::Error>;

const CHUNK: usize = 256 * 1024;

/// An `io::Write` that hands fixed-size chunks to an async receiver (bounded channel, so a
/// big worktree never sits in memory).
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Chunk>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload to Docker ended"))
    }

    /// Reports a failure to the receiving side, which then aborts the upload.
    pub(crate) fn fail(&self, message: String) {
        let _ = self.tx.blocking_send(Err(io::Error::other(message)));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// What `sync` must do for one changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SyncAction {
    /// Upload this (normalised) path, recursively if it is a directory.
    Upload(PathBuf),
    /// Gone on the host: delete in the container.
    Delete(PathBuf),
    /// Not synced (e.g. inside `.git`).
    Skip,
}

/// Normalises a caller-supplied relative path: no absolute paths, no `..`, no empty path.
pub(crate) fn normalise(rel: &Path) -> Result<PathBuf, SandboxError> {
    let invalid = |reason: &str| SandboxError::InvalidPath {
        path: rel.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("`..` is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid("paths must be relative to the worktree"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(invalid("empty path (the worktree itself)"));
    }
    Ok(out)
}

fn is_git(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == ".git")
}

/// Decides what to do for `rel` (already normalised) without following any symlink.
pub(crate) fn sync_action(root: &Path, rel: &Path) -> SyncAction {
    if is_git(rel) {
        return SyncAction::Skip;
    }
    let mut prefix = PathBuf::new();
    let count = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        prefix.push(c);
        match std::fs::symlink_metadata(root.join(&prefix)) {
            Ok(meta) if meta.file_type().is_symlink() => return SyncAction::Upload(prefix),
            Ok(meta) if i + 1 < count && !meta.is_dir() => return SyncAction::Delete(rel.into()),
            Ok(_) => {}
            Err(_) => return SyncAction::Delete(rel.into()),
        }
    }
    SyncAction::Upload(prefix)
}

/// Writes a tar of `paths` (relative to `root`, normalised, no symlinked ancestors) to
/// `out`, with directory entries for their ancestors. An empty `paths` = the whole tree.
pub(crate) fn write_tar<W: Write>(
    root: &Path,
    paths: &[PathBuf],
    out: W,
) -> Result<W, SandboxError> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    builder.follow_symlinks(false);
    if paths.is_empty() {
        append_children(&mut builder, root, Path::new(""))?;
    } else {
        let mut dirs_done = std::collections::HashSet::new();
        for rel in paths {
            let mut ancestor = PathBuf::new();
            let parents: Vec<_> = rel
                .parent()
                .map(|p| p.components().collect())
                .unwrap_or_default();
            for c in parents {
                ancestor.push(c);
                if dirs_done.insert(ancestor.clone()) {
                    let meta = std::fs::symlink_metadata(root.join(&ancestor))?;
                    if !meta.is_dir() {
                        return Err(SandboxError::InvalidPath {
                            path: rel.clone(),
                            reason: format!("{} is not a directory", ancestor.display()),
                        });
                    }
                    append_one(&mut builder, root, &ancestor, &meta)?;
                }
            }
            append_tree(&mut builder, root, rel)?;
        }
    }
    Ok(builder.into_inner()?)
}

/// Appends `rel` and, if it is a real directory, everything below it.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> Result<(), SandboxError> {
    if is_git(rel) {
        return Ok(());
    }
    let meta = match std::fs::symlink_metadata(root.join(rel)) {
        Ok(m) => m,
        // Vanished while we walked: nothing to copy.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    append_one(builder, root, rel, &meta)?;
    if meta.is_dir() {
        append_children(builder, root, rel)?;
    }
    Ok(())
}

fn append_children<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> Result<(), SandboxError> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        if name == ".git" {
            continue;
        }
        append_tree(builder, root, &rel.join(name))?;
    }
    Ok(())
}

fn header_for(meta: &Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_uid(u64::from(SANDBOX_UID));
    h.set_gid(u64::from(SANDBOX_UID));
    h.set_mode(meta.mode() & 0o777);
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(0);
    h
}

/// A PAX record (`"<len> key=value\n"`, where `len` counts the whole record, itself included).
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len != body.len() + len.to_string().len() {
        len = body.len() + len.to_string().len();
    }
    format!("{len}{body}")
}

/// The tar header holds whole seconds only. A file copied with its mtime cut to the second
/// can look older than what `make` built from it in that same second, so make would skip
/// the rebuild and test a stale binary: a PAX header carries the nanoseconds too.
fn append_precise_mtime<W: Write>(
    builder: &mut tar::Builder<W>,
    meta: &Metadata,
) -> Result<(), SandboxError> {
    let record = pax_record(
        "mtime",
        &format!("{}.{:09}", meta.mtime(), meta.mtime_nsec()),
    );
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(record.len() as u64);
    builder.append_data(&mut h, "././@PaxHeader", record.as_bytes())?;
    Ok(())
}

/// Appends one entry (not recursive). `meta` comes from `symlink_metadata`.
fn append_one<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    meta: &Metadata,
) -> Result<(), SandboxError> {
    let full = root.join(rel);
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(&full)?;
        let mut h = header_for(meta, tar::EntryType::Symlink);
        h.set_mode(0o777);
        builder.append_link(&mut h, rel, &target)?;
    } else if ft.is_dir() {
        let mut h = header_for(meta, tar::EntryType::Directory);
        builder.append_data(&mut h, rel, io::empty())?;
    } else if ft.is_file() {
        let file = match File::open(&full) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // The path may have been swapped for a symlink between lstat and open: only copy
        // what we opened if it is the very file we looked at.
        let opened = file.metadata()?;
        if opened.dev() != meta.dev() || opened.ino() != meta.ino() || !opened.is_file() {
            return Err(SandboxError::InvalidPath {
                path: rel.to_path_buf(),
                reason: "the file changed while it was being copied".into(),
            });
        }
        let size = opened.len();
        append_precise_mtime(builder, &opened)?;
        let mut h = header_for(&opened, tar::EntryType::Regular);
        h.set_size(size);
        // Pad with zeros if the file shrinks meanwhile, so the archive stays well-formed.
        let data = file.take(size).chain(io::repeat(0)).take(size);
        builder.append_data(&mut h, rel, data)?;
    } else {
        tracing::debug!(path = %rel.display(), "skipping special file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record("mtime", "1.5"), "13 mtime=1.5\n");
        let r = pax_record("mtime", "1764000000.123456789");
        assert_eq!(r, "30 mtime=1764000000.123456789\n");
        assert_eq!(r.len(), 30);
        // Where the length gains a digit.
        let r = pax_record("k", &"v".repeat(93));
        assert_eq!(r.len().to_string(), r.split(' ').next().unwrap());
    }

    fn entries(bytes: &[u8]) -> Vec<(String, tar::EntryType, u64, Option<String>)> {
        let mut out = Vec::new();
        let mut ar = tar::Archive::new(bytes);
        for e in ar.entries().into_iter().flatten().flatten() {
            let h = e.header();
            let link = e
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.display().to_string());
            out.push((
                e.path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                h.entry_type(),
                h.uid().unwrap_or(0),
                link,
            ));
        }
        out
    }

    #[test]
    fn whole_tree_skips_git_and_keeps_symlinks() -> Result<(), SandboxError> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git/objects"))?;
        std::fs::write(root.join(".git/config"), "secret")?;
        std::fs::create_dir_all(root.join("src/sub/.git"))?;
        std::fs::write(root.join("src/a.py"), "print(1)")?;
        symlink("/etc/hostname", root.join("link"))?;
        let bytes = write_tar(root, &[], Vec::new())?;
        let got = entries(&bytes);
        let names: Vec<_> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, vec!["link", "src", "src/a.py", "src/sub"]);
        assert!(got.iter().all(|e| e.2 == 10001));
        assert_eq!(got[0].1, tar::EntryType::Symlink);
        assert_eq!(got[0].3.as_deref(), Some("/etc/hostname"));
        Ok(())
    }

    #[test]
    fn sync_actions_never_follow_symlinks() -> Result<(), SandboxError> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::create_dir_all(root.join("d"))?;
        std::fs::write(root.join("d/f"), "x")?;
        symlink("/etc", root.join("etc-link"))?;
        assert_eq!(
            sync_action(root, Path::new("d/f")),
            SyncAction::Upload("d/f".into())
        );
        assert_eq!(
            sync_action(root, Path::new("etc-link/passwd")),
            SyncAction::Upload("etc-link".into())
        );
        assert_eq!(
            sync_action(root, Path::new("gone")),
            SyncAction::Delete("gone".into())
        );
        assert_eq!(
            sync_action(root, Path::new("d/f/below-a-file")),
            SyncAction::Delete("d/f/below-a-file".into())
        );
        assert_eq!(
            sync_action(root, Path::new(".git/config")),
            SyncAction::Skip
        );
        let bytes = write_tar(root, &["d/f".into(), "etc-link".into()], Vec::new())?;
        let names: Vec<_> = entries(&bytes).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec!["d", "d/f", "etc-link"]);
        Ok(())
    }

    #[test]
    fn normalise_rejects_escapes() {
        assert!(normalise(Path::new("../x")).is_err());
        assert!(normalise(Path::new("/etc/passwd")).is_err());
        assert!(normalise(Path::new(".")).is_err());
        assert_eq!(
            normalise(Path::new("./a/./b")).ok(),
            Some(PathBuf::from("a/b"))
        );
    }
}

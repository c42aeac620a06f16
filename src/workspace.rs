//! The host's git work: clone, branch, commit with the task trailer, push with the token
//! supplied through a credential callback (never written into a URL or `.git/config`).
//! git2 is blocking: call these from `spawn_blocking`.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use git2::{
    Cred, CredentialType, Diff, DiffFormat, DiffOptions, FetchOptions, IndexAddOption, PushOptions,
    RemoteCallbacks, Repository, Signature, build::RepoBuilder,
};

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("git failed to {action}: {message}")]
    Git { action: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the push of {branch} was refused by the remote: {message}")]
    PushRejected { branch: String, message: String },
}

fn git_error(action: impl Into<String>) -> impl FnOnce(git2::Error) -> WorkspaceError {
    let action = action.into();
    move |e| WorkspaceError::Git {
        action,
        message: e.message().to_string(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError + '_ {
    move |source| WorkspaceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A clone on the host, where edits are applied and from which the branch is pushed.
pub struct Workspace {
    repo: Repository,
    dir: PathBuf,
}

/// Credentials for HTTPS remotes: the token as the password of `x-access-token`, offered
/// once per operation (libgit2 asks again after every 401, which would loop on a bad token).
fn callbacks(token: Option<&Secret>) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    let offered = Cell::new(false);
    callbacks.credentials(move |_url, _user, allowed| match token {
        Some(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !offered.get() => {
            offered.set(true);
            Cred::userpass_plaintext("x-access-token", token.expose())
        }
        Some(_) => Err(git2::Error::from_str(
            "the remote refused the token: check it is valid and may read and write this repository",
        )),
        None => Err(git2::Error::from_str(
            "the remote asks for credentials and no GitHub token is configured",
        )),
    });
    callbacks
}

impl Workspace {
    /// Clones one branch of `url` into `dest` (which must not exist).
    pub fn clone(
        url: &str,
        branch: &str,
        dest: &Path,
        token: Option<&Secret>,
    ) -> Result<Workspace, WorkspaceError> {
        Workspace::clone_branch(url, Some(branch), dest, token)
    }

    /// Clones `url` at the branch its HEAD names.
    pub fn clone_default(
        url: &str,
        dest: &Path,
        token: Option<&Secret>,
    ) -> Result<Workspace, WorkspaceError> {
        Workspace::clone_branch(url, None, dest, token)
    }

    fn clone_branch(
        url: &str,
        branch: Option<&str>,
        dest: &Path,
        token: Option<&Secret>,
    ) -> Result<Workspace, WorkspaceError> {
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(callbacks(token));
        let mut builder = RepoBuilder::new();
        builder.fetch_options(fetch);
        if let Some(branch) = branch {
            builder.branch(branch);
        }
        let repo = builder.clone(url, dest).map_err(git_error(format!(
            "clone {url} (branch {})",
            branch.unwrap_or("HEAD")
        )))?;
        Ok(Workspace {
            repo,
            dir: dest.to_path_buf(),
        })
    }

    /// Makes a repository of a plain directory: its files (without `.git`, symlinks kept as
    /// symlinks) committed as the baseline on `main`.
    pub fn from_plain_dir(
        source: &Path,
        dest: &Path,
        author: (&str, &str),
    ) -> Result<Workspace, WorkspaceError> {
        copy_tree(source, dest)?;
        let repo = Repository::init(dest).map_err(git_error("initialise the work repository"))?;
        repo.set_head("refs/heads/main")
            .map_err(git_error("name the branch main"))?;
        let workspace = Workspace {
            repo,
            dir: dest.to_path_buf(),
        };
        workspace.commit_all("Baseline", author)?;
        Ok(workspace)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates `name` at HEAD (replacing an older branch of that name) and checks it out.
    pub fn create_branch(&self, name: &str) -> Result<(), WorkspaceError> {
        let head = self
            .repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(git_error("read HEAD"))?;
        self.repo
            .branch(name, &head, true)
            .map_err(git_error(format!("create branch {name}")))?;
        self.repo
            .set_head(&format!("refs/heads/{name}"))
            .map_err(git_error(format!("check out {name}")))?;
        Ok(())
    }

    /// The unified diff of the work tree (untracked files included) against HEAD.
    pub fn diff(&self) -> Result<String, WorkspaceError> {
        let diff = self.diff_to_head()?;
        let mut text = String::new();
        diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
            if matches!(line.origin(), '+' | '-' | ' ') {
                text.push(line.origin());
            }
            text.push_str(&String::from_utf8_lossy(line.content()));
            true
        })
        .map_err(git_error("render the diff"))?;
        Ok(text)
    }

    /// Paths (relative) that differ from HEAD.
    pub fn changed_files(&self) -> Result<Vec<String>, WorkspaceError> {
        let diff = self.diff_to_head()?;
        Ok(diff
            .deltas()
            .filter_map(|d| d.new_file().path().or_else(|| d.old_file().path()))
            .map(|p| p.to_string_lossy().into_owned())
            .collect())
    }

    fn diff_to_head(&self) -> Result<Diff<'_>, WorkspaceError> {
        let tree = self
            .repo
            .head()
            .and_then(|h| h.peel_to_tree())
            .map_err(git_error("read HEAD"))?;
        let mut options = DiffOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .show_untracked_content(true);
        self.repo
            .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut options))
            .map_err(git_error("compare the work tree with HEAD"))
    }

    /// Commits every change of the work tree; returns the commit id.
    pub fn commit_all(
        &self,
        message: &str,
        author: (&str, &str),
    ) -> Result<git2::Oid, WorkspaceError> {
        let mut index = self.repo.index().map_err(git_error("open the index"))?;
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .map_err(git_error("stage the changes"))?;
        index
            .update_all(["*"], None)
            .map_err(git_error("stage deletions"))?;
        index.write().map_err(git_error("write the index"))?;
        let tree_id = index.write_tree().map_err(git_error("write the tree"))?;
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(git_error("read the tree"))?;
        let signature =
            Signature::now(author.0, author.1).map_err(git_error("build the author"))?;
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .map_err(git_error("commit"))
    }

    pub fn head_message(&self) -> Result<String, WorkspaceError> {
        let commit = self
            .repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(git_error("read HEAD"))?;
        Ok(commit.message().unwrap_or_default().to_string())
    }

    /// Pushes the local `branch` to `url` under the same name, replacing what is there (a
    /// re-run of a task rebuilds its branch from the default branch).
    pub fn push(
        &self,
        url: &str,
        branch: &str,
        token: Option<&Secret>,
    ) -> Result<(), WorkspaceError> {
        self.push_as(url, branch, branch, token)
    }

    pub fn push_as(
        &self,
        url: &str,
        branch: &str,
        remote_branch: &str,
        token: Option<&Secret>,
    ) -> Result<(), WorkspaceError> {
        let mut remote = self
            .repo
            .remote_anonymous(url)
            .map_err(git_error(format!("open the remote for {branch}")))?;
        let rejection: std::rc::Rc<std::cell::RefCell<Option<String>>> = Default::default();
        let mut cbs = callbacks(token);
        let seen = rejection.clone();
        cbs.push_update_reference(move |_reference, status| {
            if let Some(message) = status {
                *seen.borrow_mut() = Some(message.to_string());
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(cbs);
        let refspec = format!("+refs/heads/{branch}:refs/heads/{remote_branch}");
        remote
            .push(&[refspec.as_str()], Some(&mut options))
            .map_err(git_error(format!("push {branch}")))?;
        if let Some(message) = rejection.borrow_mut().take() {
            return Err(WorkspaceError::PushRejected {
                branch: remote_branch.to_string(),
                message,
            });
        }
        Ok(())
    }
}

impl Workspace {
    /// Copies the local `branch` into the repository at `dest` (which may have a work tree:
    /// libgit2 cannot push into those, so `dest` fetches it).
    pub fn fetch_into(&self, dest: &Path, branch: &str) -> Result<(), WorkspaceError> {
        let target =
            Repository::open(dest).map_err(git_error(format!("open {}", dest.display())))?;
        let mut remote = target
            .remote_anonymous(&self.dir.to_string_lossy())
            .map_err(git_error(format!("read {branch} from the work repository")))?;
        let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
        remote
            .fetch(&[refspec.as_str()], None, None)
            .map_err(git_error(format!("copy {branch} into {}", dest.display())))
    }
}

/// Whether `path` is the top of a git repository (a work tree or a bare one).
pub fn is_repository(path: &Path) -> bool {
    Repository::open(path).is_ok_and(|r| r.workdir().is_none_or(|w| same_dir(w, path)))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The URL of the `origin` remote of a local repository, if it has one.
pub fn origin_url(path: &Path) -> Option<String> {
    let repo = Repository::open(path).ok()?;
    let remote = repo.find_remote("origin").ok()?;
    remote.url().ok().map(str::to_string)
}

/// The branch HEAD of a local repository points at.
pub fn head_branch(path: &Path) -> Result<String, WorkspaceError> {
    let repo = Repository::open(path).map_err(git_error(format!("open {}", path.display())))?;
    let head = repo.head().map_err(git_error("read HEAD"))?;
    Ok(head.shorthand().unwrap_or("main").to_string())
}

/// Copies a directory tree without `.git`; symlinks are recreated, never followed.
fn copy_tree(source: &Path, dest: &Path) -> Result<(), WorkspaceError> {
    std::fs::create_dir_all(dest).map_err(io_error(dest))?;
    for entry in std::fs::read_dir(source).map_err(io_error(source))? {
        let entry = entry.map_err(io_error(source))?;
        if entry.file_name() == ".git" {
            continue;
        }
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let kind = entry.file_type().map_err(io_error(&from))?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(io_error(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(io_error(&to))?;
        } else if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to).map_err(io_error(&from))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHOR: (&str, &str) = ("Agent Runner Bot", "agent-runner@example.com");

    #[test]
    fn plain_dir_becomes_a_repo_and_changes_commit_and_push() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("src");
        std::fs::create_dir_all(source.join("pkg")).unwrap();
        std::fs::write(source.join("pkg/a.txt"), "one\n").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", source.join("link")).unwrap();
        let work = Workspace::from_plain_dir(&source, &tmp.path().join("work"), AUTHOR).unwrap();
        assert_eq!(
            std::fs::read_link(work.dir().join("link")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert!(work.diff().unwrap().is_empty());

        work.create_branch("agent/x").unwrap();
        std::fs::write(work.dir().join("pkg/a.txt"), "two\n").unwrap();
        std::fs::write(work.dir().join("new.txt"), "new\n").unwrap();
        let diff = work.diff().unwrap();
        assert!(
            diff.contains("-one") && diff.contains("+two") && diff.contains("+new"),
            "{diff}"
        );
        let mut changed = work.changed_files().unwrap();
        changed.sort();
        assert_eq!(changed, ["new.txt", "pkg/a.txt"]);

        work.commit_all("Change\n\nTask-Id: abc\n", AUTHOR).unwrap();
        assert!(work.diff().unwrap().is_empty());
        assert!(work.head_message().unwrap().contains("Task-Id: abc"));

        let bare = tmp.path().join("bare.git");
        Repository::init_bare(&bare).unwrap();
        work.push(bare.to_str().unwrap(), "agent/x", None).unwrap();
        let pushed = Repository::open_bare(&bare).unwrap();
        assert!(
            pushed
                .find_branch("agent/x", git2::BranchType::Local)
                .is_ok()
        );
        assert!(is_repository(&bare));
        assert!(!is_repository(&source));
    }
}

//! The long-lived sandbox container of one task.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions,
    MountVolumeOptionsDriverConfig, ResourcesUlimits,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::exec::EXEC_USER;
use super::files::{self, ChannelWriter, SyncAction};
use super::owner::{self, Owner};
use super::reap::remove_container;
use super::{LABEL_OWNER, LABEL_RUNNER_ID, LABEL_TASK_ID, SANDBOX_UID, SandboxError, SandboxSpec};

/// PID 1 (`docker-init` + `sleep infinity`) runs as `nobody`, not as the sandbox user, so
/// `kill -9 -1` by the sandbox user can clean up every command without stopping the container.
const PID1_USER: &str = "65534:65534";

/// The environment of every command: nothing from the runner's host.
const ENV: [&str; 3] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/tmp",
    "LANG=C.UTF-8",
];

/// A running sandbox container. Remove it with [`Sandbox::remove`]. A `Sandbox` dropped
/// without `remove` (an early return, a panic, a cancelled future) is removed in the
/// background; [`super::supervise`] also waits for that removal, and what a killed process
/// leaves behind is removed by [`super::remove_orphans`] at the next start.
#[derive(Debug)]
pub struct Sandbox {
    pub(crate) docker: Docker,
    pub(crate) id: String,
    pub(crate) limits: super::Limits,
    pub(crate) in_flight: std::sync::atomic::AtomicUsize,
    pub(crate) oom_kills_seen: Mutex<u64>,
    removed: bool,
}

/// A tmpfs-style size ("512m", "1g", "1048576"): digits and an optional unit only, since
/// it ends up in a comma-separated mount option string.
fn check_size(what: &str, size: &str) -> Result<(), SandboxError> {
    let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    let unit_len = size.len() - digits.len();
    if digits.is_empty() || unit_len > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SandboxError::InvalidLimit(format!(
            "{what} {size:?} is not a size like \"512m\" or \"1g\""
        )));
    }
    Ok(())
}

/// Docker container names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn name_part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if cleaned.is_empty() {
        "x".to_string()
    } else {
        cleaned
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(now.to_le_bytes());
    h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn container_config(
    spec: &SandboxSpec,
    image: &str,
    owner: Option<&Owner>,
) -> Result<ContainerCreateBody, SandboxError> {
    let l = &spec.limits;
    check_size("workspace_size", &l.workspace_size)?;
    check_size("tmp_size", &l.tmp_size)?;
    for (what, v) in [
        ("memory_bytes", l.memory_bytes),
        ("nano_cpus", l.nano_cpus),
        ("pids", l.pids),
        ("nofile", l.nofile),
    ] {
        if v <= 0 {
            return Err(SandboxError::InvalidLimit(format!(
                "{what} must be positive, got {v}"
            )));
        }
    }
    let mut labels = HashMap::from([
        (LABEL_RUNNER_ID.to_string(), spec.runner_id.clone()),
        (LABEL_TASK_ID.to_string(), spec.task_id.clone()),
    ]);
    if let Some(owner) = owner {
        labels.insert(LABEL_OWNER.to_string(), owner.label());
    }
    // /workspace: an anonymous volume backed by a size-limited tmpfs. Docker's archive API
    // (used to copy files in) can write into volumes even with a read-only rootfs, but not
    // into `--tmpfs` mounts. Anonymous volumes go away with `remove(v=true)`.
    let workspace = Mount {
        target: Some("/workspace".to_string()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            labels: Some(labels.clone()),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".to_string()),
                options: Some(HashMap::from([
                    ("type".to_string(), "tmpfs".to_string()),
                    ("device".to_string(), "tmpfs".to_string()),
                    (
                        "o".to_string(),
                        format!(
                            "size={},uid={SANDBOX_UID},gid={SANDBOX_UID},mode=0755,nosuid,nodev",
                            l.workspace_size
                        ),
                    ),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let host_config = HostConfig {
        network_mode: Some(if spec.network { "bridge" } else { "none" }.to_string()),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        pids_limit: Some(l.pids),
        memory: Some(l.memory_bytes),
        memory_swap: Some(l.memory_bytes),
        nano_cpus: Some(l.nano_cpus),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".to_string()),
            soft: Some(l.nofile),
            hard: Some(l.nofile),
        }]),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,exec,nosuid,nodev,size={},mode=1777", l.tmp_size),
        )])),
        mounts: Some(vec![workspace]),
        init: Some(true),
        ipc_mode: Some("private".to_string()),
        runtime: spec.runtime.clone(),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sleep".to_string(), "infinity".to_string()]),
        entrypoint: Some(vec![]),
        user: Some(PID1_USER.to_string()),
        working_dir: Some("/workspace".to_string()),
        env: Some(ENV.iter().map(|s| s.to_string()).collect()),
        network_disabled: Some(!spec.network),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    })
}

impl Sandbox {
    /// Creates and starts the container of `spec` and copies `worktree` into `/workspace`
    /// (without `.git`; symlinks as symlinks; files owned by the sandbox user).
    pub async fn start(
        docker: &Docker,
        spec: &SandboxSpec,
        worktree: &Path,
    ) -> Result<Sandbox, SandboxError> {
        let image = match &spec.image {
            Some(image) => image.clone(),
            None => super::ensure_default_image(
                docker,
                &mut |line: &str| tracing::info!(target: "agent_runner::sandbox::image", "{line}"),
            )
            .await?,
        };
        let config = container_config(spec, &image, owner::current())?;
        let name = format!(
            "agent-runner-{}-{}-{}",
            name_part(&spec.runner_id),
            name_part(&spec.task_id),
            unique_suffix()
        );
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                config,
            )
            .await?;
        let sandbox = Sandbox {
            docker: docker.clone(),
            id: created.id,
            limits: spec.limits.clone(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            oom_kills_seen: Mutex::new(0),
            removed: false,
        };
        // On error `sandbox` is dropped, which removes the container.
        docker.start_container(&sandbox.id, None).await?;
        sandbox.upload(worktree, Vec::new()).await?;
        tracing::debug!(container = %sandbox.id, %name, %image, "sandbox started");
        Ok(sandbox)
    }

    /// The Docker container id.
    pub fn container_id(&self) -> &str {
        &self.id
    }

    /// Brings `/workspace` up to date for `changed` paths (relative to `worktree`): each is
    /// replaced by the host's current version (a symlink stays a symlink; a directory is
    /// copied recursively) or deleted if it is gone on the host. Paths inside `.git` are
    /// ignored; a path below a symlink syncs the symlink itself.
    pub async fn sync(&self, worktree: &Path, changed: &[PathBuf]) -> Result<(), SandboxError> {
        let mut uploads = Vec::new();
        let mut removals = Vec::new();
        for rel in changed {
            let rel = files::normalise(rel)?;
            match files::sync_action(worktree, &rel) {
                SyncAction::Upload(p) => {
                    removals.push(p.clone());
                    uploads.push(p);
                }
                SyncAction::Delete(p) => removals.push(p),
                SyncAction::Skip => {}
            }
        }
        uploads.sort();
        uploads.dedup();
        removals.sort();
        removals.dedup();
        // Delete first, so a file can become a directory or a symlink and vice versa.
        for batch in removals.chunks(500) {
            let mut cmd = vec!["rm".to_string(), "-rf".to_string(), "--".to_string()];
            cmd.extend(
                batch
                    .iter()
                    .map(|p| format!("/workspace/{}", p.to_string_lossy())),
            );
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let (code, out) = self.run_internal(&args, EXEC_USER).await?;
            if code != Some(0) {
                return Err(SandboxError::Exec(format!(
                    "deleting changed paths failed ({code:?}): {}",
                    out.trim()
                )));
            }
        }
        if !uploads.is_empty() {
            self.upload(worktree, uploads).await?;
        }
        Ok(())
    }

    /// Streams a tar of `paths` (all of `worktree` if empty) into `/workspace`.
    async fn upload(&self, worktree: &Path, paths: Vec<PathBuf>) -> Result<(), SandboxError> {
        let (tx, mut rx) = mpsc::channel::<files::Chunk>(8);
        let root = worktree.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = ChannelWriter::new(tx);
            let result = files::write_tar(&root, &paths, &mut w).and_then(|w| Ok(w.flush()?));
            if let Err(e) = &result {
                w.fail(e.to_string());
            }
            result
        });
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        // The answer comes only after the whole archive is in: allow big worktrees.
        let docker = self
            .docker
            .clone()
            .with_timeout(std::time::Duration::from_secs(1800));
        let upload = docker.upload_to_container(
            &self.id,
            Some(
                UploadToContainerOptionsBuilder::default()
                    .path("/workspace")
                    .build(),
            ),
            bollard::body_try_stream(body),
        );
        let (uploaded, written) = tokio::join!(upload, writer);
        let written = written.map_err(|e| SandboxError::Exec(format!("tar task failed: {e}")))?;
        match (uploaded, written) {
            (Ok(()), Ok(())) => Ok(()),
            // The archive could not be made: that error explains the failed upload.
            (_, Err(e @ SandboxError::InvalidPath { .. })) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), Err(e)) => Err(e),
        }
    }

    /// Force-removes the container and its anonymous volumes.
    pub async fn remove(mut self) -> Result<(), SandboxError> {
        self.removed = true;
        remove_container(&self.docker, &self.id).await
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        tracing::debug!(container = %id, "sandbox dropped without remove(); removing it");
        let removal = async move {
            if let Err(e) = remove_container(&docker, &id).await {
                tracing::warn!(container = %id, "removing a dropped sandbox failed: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(removal);
            }
            // Dropped outside any runtime (e.g. at the end of a synchronous test): a thread
            // of its own, since blocking here could stall whatever is dropping us.
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("sandbox-removal".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt.block_on(removal),
                            Err(e) => tracing::warn!("cannot remove a dropped sandbox: {e}"),
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot remove a dropped sandbox: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Limits;

    #[test]
    fn hardening_defaults() -> Result<(), SandboxError> {
        let spec = SandboxSpec {
            runner_id: "r".into(),
            task_id: "t".into(),
            ..Default::default()
        };
        let c = container_config(&spec, "img", None)?;
        let h = c.host_config.clone().unwrap_or_default();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(c.network_disabled, Some(true));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            h.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(h.memory, h.memory_swap);
        assert_eq!(h.pids_limit, Some(256));
        assert_eq!(h.init, Some(true));
        assert_eq!(c.env.as_ref().map(Vec::len), Some(3));
        assert!(
            h.tmpfs
                .unwrap_or_default()
                .get("/tmp")
                .is_some_and(|o| o.contains("size=512m"))
        );
        Ok(())
    }

    #[test]
    fn sizes_cannot_inject_mount_options() {
        let mut spec = SandboxSpec {
            limits: Limits {
                workspace_size: "1g,exec".into(),
                ..Limits::default()
            },
            ..SandboxSpec::default()
        };
        assert!(container_config(&spec, "img", None).is_err());
        spec.limits.workspace_size = "100m".into();
        spec.limits.tmp_size = "".into();
        assert!(container_config(&spec, "img", None).is_err());
        spec.limits.tmp_size = "1048576".into();
        assert!(container_config(&spec, "img", None).is_ok());
    }

    #[test]
    fn names_are_docker_safe() {
        assert_eq!(name_part("owner/repo#12"), "owner-repo-12");
        assert_eq!(name_part(""), "x");
        assert_eq!(unique_suffix().len(), 8);
    }
}

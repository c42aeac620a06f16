//! The default sandbox image: built offline (no registry) from Debian packages.
//!
//! 1. `sandbox/build-rootfs.sh` runs `debootstrap` into a temporary directory;
//! 2. the rootfs is streamed through `tar --numeric-owner` into `POST /images/create?fromSrc=-`
//!    (= `docker import`) as `agent-runner-base:<hash12>`;
//! 3. `sandbox/Dockerfile` adds the unprivileged user: `agent-runner-sandbox:<hash12>`.
//!
//! `hash` is the sha256 of the recipe files, which are embedded in the binary, so a new
//! recipe gets a new tag and the binary never depends on its working directory.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;

use bollard::Docker;
use bollard::models::ImageSummary;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::SandboxError;

const BUILD_ROOTFS_SH: &str = include_str!("../../sandbox/build-rootfs.sh");
const DOCKERFILE: &str = include_str!("../../sandbox/Dockerfile");

/// Repository of the final image.
pub const IMAGE_REPO: &str = "agent-runner-sandbox";
/// Repository of the imported Debian rootfs (the final image's parent).
pub const BASE_REPO: &str = "agent-runner-base";
/// Label on both images: the full recipe hash.
const LABEL_RECIPE: &str = "agent-runner.recipe";
/// Dockerfile instructions applied by `docker import` (cheaper than Dockerfile steps, each
/// of which commits a container). HOME is on the /tmp tmpfs: the rootfs is read-only.
const IMPORT_CHANGES: [&str; 2] = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8",
    r#"CMD ["/bin/sh"]"#,
];

/// sha256 (hex) of the embedded recipe files.
pub fn recipe_hash() -> String {
    let mut h = Sha256::new();
    let changes = IMPORT_CHANGES.join("\n");
    for (name, content) in [
        ("build-rootfs.sh", BUILD_ROOTFS_SH),
        ("Dockerfile", DOCKERFILE),
        ("import-changes", changes.as_str()),
    ] {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(content.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn hash12() -> String {
    recipe_hash()[..12].to_string()
}

/// `agent-runner-sandbox:<hash12>`.
pub fn default_image_tag() -> String {
    format!("{IMAGE_REPO}:{}", hash12())
}

/// `agent-runner-base:<hash12>`: the imported Debian rootfs the default image is built on.
pub fn base_image_tag() -> String {
    format!("{BASE_REPO}:{}", hash12())
}

/// A stable local name for the base image, for images built on it without knowing the
/// recipe hash (the runner's own top-level `Dockerfile`); `agent-runner sandbox build`
/// sets it to this binary's base image.
pub const BASE_IMAGE_LATEST: &str = "agent-runner-base:latest";

/// Tags this binary's base image ([`base_image_tag`]) also as [`BASE_IMAGE_LATEST`];
/// returns the base image's tag. Call after [`ensure_default_image`].
pub async fn tag_base_image_latest(docker: &Docker) -> Result<String, SandboxError> {
    let base = base_image_tag();
    if !image_exists(docker, &base).await? {
        return Err(SandboxError::ImageBuild(format!(
            "the base image {base} is missing although {} exists; remove {} and build again",
            default_image_tag(),
            default_image_tag()
        )));
    }
    let (repo, tag) = BASE_IMAGE_LATEST
        .split_once(':')
        .unwrap_or((BASE_IMAGE_LATEST, "latest"));
    let options = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    docker.tag_image(&base, Some(options)).await?;
    Ok(base)
}

/// Tags of sandbox and base images this binary does not use: built from other recipes.
pub fn superseded_tags(tags: &[String]) -> Vec<String> {
    let current = [
        default_image_tag(),
        base_image_tag(),
        BASE_IMAGE_LATEST.to_string(),
    ];
    tags.iter()
        .filter(|t| {
            (t.starts_with(&format!("{IMAGE_REPO}:")) || t.starts_with(&format!("{BASE_REPO}:")))
                && !current.contains(t)
        })
        .cloned()
        .collect()
}

/// The sandbox and base images the engine holds, current or not.
async fn own_images(docker: &Docker) -> Result<Vec<ImageSummary>, SandboxError> {
    let filters = HashMap::from([(
        "reference".to_string(),
        vec![IMAGE_REPO.to_string(), BASE_REPO.to_string()],
    )]);
    Ok(docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?)
}

/// Tags of the images of other recipes the engine holds, for [`prune_images`] to remove.
pub async fn superseded_images(docker: &Docker) -> Result<Vec<String>, SandboxError> {
    let tags: Vec<String> = own_images(docker)
        .await?
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    Ok(superseded_tags(&tags))
}

/// What [`prune_images`] did: tags removed (with the bytes they held), and tags kept with why.
#[derive(Debug, Default)]
pub struct Pruned {
    pub removed: Vec<(String, i64)>,
    pub kept: Vec<(String, String)>,
}

/// Removes the sandbox and base images of other recipes (each recipe change builds new
/// ones, and the old never go by themselves). The current images stay, and so does any
/// image a container still uses or another image is built on: Docker refuses those.
/// Sandbox images go first, so the base images they were built on can go after them.
pub async fn prune_images(docker: &Docker) -> Result<Pruned, SandboxError> {
    let images = own_images(docker).await?;
    let size_of = |tag: &str| {
        images
            .iter()
            .find(|i| i.repo_tags.iter().any(|t| t == tag))
            .map_or(0, |i| i.size)
    };
    let all: Vec<String> = images.iter().flat_map(|i| i.repo_tags.clone()).collect();
    let mut stale = superseded_tags(&all);
    stale.sort_by_key(|t| t.starts_with(&format!("{BASE_REPO}:")));
    let mut pruned = Pruned::default();
    for tag in stale {
        let options = RemoveImageOptionsBuilder::default().build();
        match docker.remove_image(&tag, Some(options), None).await {
            Ok(_) => pruned.removed.push((tag.clone(), size_of(&tag))),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                pruned.kept.push((tag, message))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pruned)
}

async fn image_exists(docker: &Docker, tag: &str) -> Result<bool, SandboxError> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Returns the tag of the default image, building it first if the engine lacks it.
///
/// Builds are serialised across processes with a file lock in the temp directory, so
/// parallel test binaries or runners build once. Progress lines (debootstrap, import,
/// Dockerfile steps) go to `progress`.
pub async fn ensure_default_image(
    docker: &Docker,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, SandboxError> {
    let tag = default_image_tag();
    if image_exists(docker, &tag).await? {
        return Ok(tag);
    }
    let lock_path = std::env::temp_dir().join(format!("agent-runner-image-{}.lock", hash12()));
    progress(&format!(
        "sandbox image {tag} is missing; waiting for the build lock {}",
        lock_path.display()
    ));
    let _lock = lock_file(lock_path).await?;
    if image_exists(docker, &tag).await? {
        progress(&format!("sandbox image {tag} was built by another process"));
        return Ok(tag);
    }
    let started = std::time::Instant::now();
    build(docker, &tag, progress).await?;
    progress(&format!(
        "sandbox image {tag} built in {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(tag)
}

/// Takes an exclusive lock on `path` (blocking in a worker thread); released on drop.
async fn lock_file(path: PathBuf) -> Result<File, SandboxError> {
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        f.lock()?;
        Ok(f)
    })
    .await
    .map_err(|e| SandboxError::ImageBuild(format!("lock task failed: {e}")))??;
    Ok(file)
}

async fn build(
    docker: &Docker,
    tag: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    // bollard's request timeout (2 min) covers the wait for response headers, which for an
    // import only come once the whole rootfs has been read.
    let docker = &docker
        .clone()
        .with_timeout(std::time::Duration::from_secs(3600));
    let base = base_image_tag();
    if image_exists(docker, &base).await? {
        progress(&format!("base image {base} exists; skipping debootstrap"));
    } else {
        let work = tempfile::Builder::new()
            .prefix("agent-runner-rootfs-")
            .tempdir()?;
        let result = build_base(docker, &base, work.path(), progress).await;
        progress("removing the temporary rootfs");
        // Removing a whole Debian tree takes a moment: keep it off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(work)).await;
        result?;
    }
    build_final(docker, &base, tag, progress).await
}

async fn build_base(
    docker: &Docker,
    base: &str,
    work: &std::path::Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    let script = work.join("build-rootfs.sh");
    std::fs::write(&script, BUILD_ROOTFS_SH)?;
    let rootfs = work.join("rootfs");

    // debootstrap needs the host's tools but none of the runner's secrets.
    let mut cmd = Command::new("sh");
    cmd.arg(&script).arg(&rootfs).env_clear();
    for var in [
        "PATH",
        "AGENT_RUNNER_DEBIAN_MIRROR",
        "AGENT_RUNNER_DEBOOTSTRAP_CACHE",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    cmd.env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive");
    progress(
        "building the Debian rootfs with debootstrap (needs root and a Debian mirror; a few minutes)",
    );
    let (status, last_lines) = run_with_progress(cmd, progress).await?;
    if !status.success() {
        return Err(SandboxError::ImageBuild(format!(
            "build-rootfs.sh exited with {status}; last output:\n{}",
            last_lines.join("\n")
        )));
    }

    progress(&format!("importing the rootfs as {base}"));
    let mut tar = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg("-")
        .arg(".")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SandboxError::ImageBuild(format!("cannot run `tar`: {e}")))?;
    let stdout = tar
        .stdout
        .take()
        .ok_or_else(|| SandboxError::ImageBuild("tar has no stdout".into()))?;
    let mut stderr = tar
        .stderr
        .take()
        .ok_or_else(|| SandboxError::ImageBuild("tar has no stderr".into()))?;
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let (repo, version) = base.split_once(':').unwrap_or((base, "latest"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(
            IMPORT_CHANGES
                .iter()
                .map(|c| c.to_string())
                .chain([format!("LABEL {LABEL_RECIPE}={}", recipe_hash())])
                .collect(),
        )
        .build();
    let mut stream = docker.create_image(
        Some(options),
        Some(bollard::body_try_stream(reader_stream(stdout))),
        None,
    );
    let mut import_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(status) = info.status.filter(|s| !s.trim().is_empty()) {
                    progress(&format!("import: {}", status.trim()));
                }
            }
            Err(e) => {
                import_error = Some(e);
                break;
            }
        }
    }
    drop(stream);
    let tar_status = tar.wait().await?;
    let tar_stderr = stderr_task.await.unwrap_or_default();
    if let Some(e) = import_error {
        return Err(SandboxError::ImageBuild(format!(
            "docker import of the rootfs failed: {e}"
        )));
    }
    if !tar_status.success() {
        return Err(SandboxError::ImageBuild(format!(
            "tar of the rootfs failed ({tar_status}): {}",
            tar_stderr.trim()
        )));
    }
    if !image_exists(docker, base).await? {
        return Err(SandboxError::ImageBuild(format!(
            "docker import reported no error but {base} does not exist"
        )));
    }
    Ok(())
}

async fn build_final(
    docker: &Docker,
    base: &str,
    tag: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), SandboxError> {
    progress(&format!(
        "building {tag} from {base} with sandbox/Dockerfile"
    ));
    let context = dockerfile_context()?;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .networkmode("none")
        .buildargs(&HashMap::from([(
            "BASE_IMAGE".to_string(),
            base.to_string(),
        )]))
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context)));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| SandboxError::ImageBuild(format!("docker build: {e}")))?;
        if let Some(detail) = info.error_detail {
            return Err(SandboxError::ImageBuild(format!(
                "docker build: {}",
                detail.message.unwrap_or_default()
            )));
        }
        if let Some(s) = info.stream {
            for line in s.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                progress(&format!("build: {line}"));
            }
        }
    }
    if !image_exists(docker, tag).await? {
        return Err(SandboxError::ImageBuild(format!(
            "docker build reported no error but {tag} does not exist"
        )));
    }
    Ok(())
}

/// A tar holding only the embedded Dockerfile.
fn dockerfile_context() -> Result<Bytes, SandboxError> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(DOCKERFILE.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, "Dockerfile", DOCKERFILE.as_bytes())?;
    Ok(Bytes::from(builder.into_inner()?))
}

/// Streams an `AsyncRead` as `Bytes` chunks.
fn reader_stream<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::try_unfold(reader, |mut r| async move {
        let mut buf = BytesMut::with_capacity(256 * 1024);
        let n = r.read_buf(&mut buf).await?;
        if n == 0 {
            Ok(None)
        } else {
            Ok(Some((buf.freeze(), r)))
        }
    })
}

/// Runs `cmd`, forwarding each line of stdout and stderr to `progress`; returns the exit
/// status and the last lines (for error messages).
async fn run_with_progress(
    mut cmd: Command,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(std::process::ExitStatus, Vec<String>), SandboxError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            SandboxError::ImageBuild(format!("cannot run the rootfs build script: {e}"))
        })?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, tx.clone()));
    }
    drop(tx);
    let mut last = std::collections::VecDeque::new();
    while let Some(line) = rx.recv().await {
        progress(&line);
        if last.len() == 30 {
            last.pop_front();
        }
        last.push_back(line);
    }
    let status = child.wait().await?;
    Ok((status, last.into()))
}

async fn forward_lines<R: AsyncRead + Unpin>(r: R, tx: tokio::sync::mpsc::UnboundedSender<String>) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_images_of_other_recipes_are_superseded() {
        let tags: Vec<String> = [
            default_image_tag(),
            base_image_tag(),
            BASE_IMAGE_LATEST.to_string(),
            "agent-runner-sandbox:0123456789ab".into(),
            "agent-runner-base:0123456789ab".into(),
            "agent-runner:local".into(),
            "python:3.12".into(),
        ]
        .to_vec();
        assert_eq!(
            superseded_tags(&tags),
            [
                "agent-runner-sandbox:0123456789ab",
                "agent-runner-base:0123456789ab"
            ]
        );
    }

    #[test]
    fn tag_is_derived_from_the_embedded_recipe() {
        let tag = default_image_tag();
        assert!(tag.starts_with("agent-runner-sandbox:"));
        assert_eq!(tag.len(), "agent-runner-sandbox:".len() + 12);
        assert_eq!(recipe_hash().len(), 64);
        assert_eq!(recipe_hash(), recipe_hash());
        assert!(BUILD_ROOTFS_SH.contains("debootstrap"));
        assert!(DOCKERFILE.contains("USER 10001"));
    }

    #[test]
    fn dockerfile_context_is_a_tar_with_the_dockerfile() {
        let bytes = dockerfile_context().unwrap_or_default();
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = ar
            .entries()
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.path().ok().map(|p| p.display().to_string()))
            .collect();
        assert_eq!(names, vec!["Dockerfile".to_string()]);
    }
}

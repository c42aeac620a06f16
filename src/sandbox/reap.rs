//! Finding and removing sandbox containers by their labels: what a crashed process left
//! behind ([`remove_orphans`]), what this process still has ([`remove_own`]), and what the
//! daemon's journal no longer knows ([`remove_stale`]).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

use super::owner::{self, Liveness};
use super::{LABEL_OWNER, LABEL_RUNNER_ID, LABEL_TASK_ID, SandboxError};

/// Force-removes a container and its anonymous volumes. Returns once it is gone: when
/// another removal is already under way (409), waits for that one.
pub(crate) async fn remove_container(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => wait_until_gone(docker, id).await,
        Err(e) => Err(e.into()),
    }
}

async fn wait_until_gone(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    for _ in 0..200 {
        match docker.inspect_container(id, None).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Err(SandboxError::Exec(format!(
        "container {id} is still being removed after 10 s"
    )))
}

/// All containers (running or not) that carry every one of `labels` (`key=value`).
async fn list_labelled(
    docker: &Docker,
    labels: Vec<String>,
) -> Result<Vec<ContainerSummary>, SandboxError> {
    let filters = HashMap::from([("label".to_string(), labels)]);
    Ok(docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?)
}

/// Removes every container labelled with `runner_id` whose task id is not in
/// `live_task_ids` (with its anonymous volumes); returns how many were removed.
pub async fn remove_stale(
    docker: &Docker,
    runner_id: &str,
    live_task_ids: &[String],
) -> Result<usize, SandboxError> {
    let list = list_labelled(docker, vec![format!("{LABEL_RUNNER_ID}={runner_id}")]).await?;
    let mut removed = 0;
    for c in list {
        let labels = c.labels.unwrap_or_default();
        if labels.get(LABEL_RUNNER_ID).map(String::as_str) != Some(runner_id) {
            continue;
        }
        let task = labels.get(LABEL_TASK_ID).cloned().unwrap_or_default();
        if live_task_ids.contains(&task) {
            continue;
        }
        if let Some(id) = c.id {
            tracing::info!(container = %id, task = %task, "removing stale sandbox");
            remove_container(docker, &id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the containers of `runner_id` whose owning process is dead: it exited without
/// removing them (SIGKILL, OOM kill, power loss), or the host rebooted since. Containers of
/// live processes, of other hosts and without an owner label are left alone, so several
/// runner processes with the same runner id can start concurrently. Returns how many were
/// removed.
pub async fn remove_orphans(docker: &Docker, runner_id: &str) -> Result<usize, SandboxError> {
    let Some(me) = owner::current() else {
        return Ok(0);
    };
    let list = list_labelled(docker, vec![format!("{LABEL_RUNNER_ID}={runner_id}")]).await?;
    let mut removed = 0;
    for c in list {
        let labels = c.labels.unwrap_or_default();
        let label = labels.get(LABEL_OWNER).map(String::as_str);
        if owner::liveness(label, me, &owner::read_stat) != Liveness::Dead {
            continue;
        }
        if let Some(id) = c.id {
            let task = labels.get(LABEL_TASK_ID).map(String::as_str).unwrap_or("");
            tracing::info!(container = %id, task, owner = label.unwrap_or(""), "removing the sandbox of a dead process");
            remove_container(docker, &id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the containers this process created (of every runner id) that still exist, or
/// only those of `task_id`. For shutdown paths: a signal handler calls it before the process
/// exits, since a `Sandbox` dropped then is not removed (its background removal needs a
/// runtime that is going away). Returns how many were removed.
pub async fn remove_own(docker: &Docker, task_id: Option<&str>) -> Result<usize, SandboxError> {
    let Some(me) = owner::current() else {
        return Ok(0);
    };
    let mut labels = vec![format!("{LABEL_OWNER}={}", me.label())];
    if let Some(task) = task_id {
        labels.push(format!("{LABEL_TASK_ID}={task}"));
    }
    let mut removed = 0;
    for c in list_labelled(docker, labels).await? {
        if let Some(id) = c.id {
            remove_container(docker, &id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

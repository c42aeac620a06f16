//! The optional setup phase: a sandbox started with network (`SandboxSpec::network`) runs
//! one command (typically a dependency install) and is then cut off from every network for
//! good, before any model-written code runs in it.

use std::time::Duration;

use bollard::models::NetworkDisconnectRequest;

use super::exec::EXEC_USER;
use super::{ExecOutcome, Sandbox, SandboxError};

/// Network names that are a mode rather than an attachment: nothing to disconnect.
const NO_NETWORK: &str = "none";

/// Checks an `ls /sys/class/net` listing from inside the container: loopback only.
pub(crate) fn only_loopback(listing: &str) -> Result<(), String> {
    let interfaces: Vec<&str> = listing.split_whitespace().collect();
    if interfaces == ["lo"] {
        Ok(())
    } else {
        Err(format!(
            "the container still has the network interfaces {interfaces:?} (expected only \"lo\")"
        ))
    }
}

impl Sandbox {
    /// Runs the setup `command` under `timeout` like [`Sandbox::exec_with_timeout`], then
    /// kills every process it left behind and cuts the container off from every network
    /// ([`Sandbox::cut_network`]), whether or not the command succeeded.
    ///
    /// Errors: [`SandboxError::Setup`] if the command did not pass (the agent phase should
    /// not start on a half-installed tree), [`SandboxError::NetworkCut`] if the network
    /// could not be cut (the sandbox must then be removed, never used).
    pub async fn setup(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<ExecOutcome, SandboxError> {
        let outcome = self.exec_with_timeout(command, timeout).await;
        // Daemons the setup started (escaped from its process group) must not live on into
        // the agent phase holding what they fetched. PID 1 runs as another uid and survives.
        let _ = self.run_internal(&["kill", "-9", "-1"], EXEC_USER).await;
        let cut = self.cut_network().await;
        let outcome = outcome?;
        cut?;
        if !outcome.passed() {
            return Err(SandboxError::Setup {
                command: command.to_string(),
                summary: outcome.summary(),
                tail: outcome.tail(20),
            });
        }
        Ok(outcome)
    }

    /// Disconnects the container from every network it is attached to, then checks from
    /// inside that only the loopback interface is left. Idempotent; cheap when there was no
    /// network. On error the caller must remove the sandbox.
    pub async fn cut_network(&self) -> Result<(), SandboxError> {
        let cut_failed = |why: String| SandboxError::NetworkCut(why);
        for network in self.networks().await? {
            if network == NO_NETWORK {
                continue;
            }
            self.docker
                .disconnect_network(
                    &network,
                    NetworkDisconnectRequest {
                        container: self.id.clone(),
                        force: Some(true),
                    },
                )
                .await
                .map_err(|e| cut_failed(format!("disconnecting from {network:?}: {e}")))?;
            tracing::debug!(container = %self.id, %network, "disconnected");
        }
        let left: Vec<String> = self
            .networks()
            .await?
            .into_iter()
            .filter(|n| n != NO_NETWORK)
            .collect();
        if !left.is_empty() {
            return Err(cut_failed(format!(
                "Docker still lists the networks {left:?}"
            )));
        }
        let (code, listing) = self
            .run_internal(&["ls", "/sys/class/net"], EXEC_USER)
            .await
            .map_err(|e| cut_failed(format!("cannot list the interfaces: {e}")))?;
        if code != Some(0) {
            return Err(cut_failed(format!(
                "listing the interfaces failed ({code:?}): {}",
                listing.trim()
            )));
        }
        only_loopback(&listing).map_err(cut_failed)
    }

    /// Names of the networks Docker has the container attached to.
    async fn networks(&self) -> Result<Vec<String>, SandboxError> {
        let info = self
            .docker
            .inspect_container(&self.id, None)
            .await
            .map_err(|e| SandboxError::NetworkCut(format!("cannot inspect the container: {e}")))?;
        Ok(info
            .network_settings
            .and_then(|s| s.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert_eq!(only_loopback("lo\n"), Ok(()));
        assert!(only_loopback("eth0\nlo\n").is_err_and(|e| e.contains("eth0")));
        assert!(only_loopback("").is_err());
        assert!(only_loopback("lo\nlo0\n").is_err());
    }
}

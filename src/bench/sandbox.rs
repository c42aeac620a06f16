//! `agent-runner bench sandbox`: our sandbox against raw `docker run` / `docker exec`.

#[derive(Debug, clap::Args)]
pub struct SandboxBenchArgs {}

pub async fn run(_args: SandboxBenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench sandbox: in progress")
}

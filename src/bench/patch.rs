//! `agent-runner bench patch`: the edit engine against `git apply` and `patch` on a corpus
//! generated at run time from this repository's own history.

#[derive(Debug, clap::Args)]
pub struct PatchBenchArgs {}

pub async fn run(_args: PatchBenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench patch: in progress")
}

//! `agent-runner bench sandbox`: our sandbox against raw `docker run` / `docker exec`.
//!
//! Both sides run in the same process, interleaved iteration by iteration, so a busy host
//! slows them alike. The baselines go through the `docker` CLI, as a person would measure.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Comparison, percentiles};
use crate::sandbox::{self, Limits, Sandbox, SandboxSpec, Supervision};

/// Targets of the project: ours / raw at p50 and p95.
const START_TARGET: f64 = 1.3;
const EXEC_TARGET: f64 = 1.1;

#[derive(Debug, clap::Args)]
pub struct SandboxBenchArgs {
    /// Measured iterations of each operation (after one warm-up).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// Image to measure with (default: the default sandbox image, built if missing).
    #[arg(long)]
    pub image: Option<String>,
}

fn render_table(iterations: u32, image: &str, rows: &[Comparison], removal: &[Duration]) -> String {
    let mut out = format!(
        "sandbox latency, {iterations} iterations each (after 1 warm-up), image {image}\n\n{:<22}{:<34}{:>9}{:>9}\n",
        "", "", "p50 ms", "p95 ms"
    );
    for row in rows {
        out.push_str(&row.render());
    }
    let (d50, d95) = percentiles(removal);
    out.push_str(&format!(
        "{:<22}{:<34}{d50:>9.1}{d95:>9.1}\n",
        "(not compared)", "Sandbox::remove"
    ));
    out
}

async fn docker_cli(args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot run the `docker` CLI for the baseline; is it installed and on PATH?")?;
    let took = started.elapsed();
    if !output.status.success() {
        bail!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(took)
}

pub async fn run(args: SandboxBenchArgs) -> anyhow::Result<()> {
    let docker = sandbox::connect().await?;
    let image = match args.image {
        Some(image) => image,
        None => {
            sandbox::ensure_default_image(&docker, &mut |l: &str| eprintln!("sandbox image: {l}"))
                .await?
        }
    };
    let worktree = tempfile::tempdir()?;
    std::fs::write(
        worktree.path().join("test_bench.py"),
        "def test_ok():\n    assert True\n",
    )?;
    let task_id = format!("bench-{}", std::process::id());
    let spec = SandboxSpec {
        image: Some(image.clone()),
        limits: Limits::default(),
        network: false,
        runtime: None,
        runner_id: "agent-runner-bench".into(),
        task_id: task_id.clone(),
    };
    let rules = Supervision {
        wall_clock: None,
        stop_on_signals: true,
    };
    let n = args.iterations as usize;
    let measure = async {
        let (mut start_ours, mut start_raw, mut removal) = (vec![], vec![], vec![]);
        for i in 0..=n {
            let t = Instant::now();
            let sb = Sandbox::start(&docker, &spec, worktree.path()).await?;
            let first = sb.exec("true").await?;
            let ours = t.elapsed();
            if !first.passed() {
                bail!("`true` failed in the sandbox: {}", first.summary());
            }
            let t = Instant::now();
            sb.remove().await?;
            let removed = t.elapsed();
            let raw = docker_cli(&["run", "--rm", "--network", "none", &image, "true"]).await?;
            if i > 0 {
                start_ours.push(ours);
                removal.push(removed);
                start_raw.push(raw);
            }
        }
        let sb = Sandbox::start(&docker, &spec, worktree.path()).await?;
        let (mut exec_ours, mut exec_raw) = (vec![], vec![]);
        for i in 0..=n {
            let t = Instant::now();
            let o = sb.exec("true").await?;
            let ours = t.elapsed();
            if !o.passed() {
                bail!("`true` failed in the sandbox: {}", o.summary());
            }
            let raw = docker_cli(&["exec", sb.container_id(), "true"]).await?;
            if i > 0 {
                exec_ours.push(ours);
                exec_raw.push(raw);
            }
        }
        sb.remove().await?;
        Ok((start_ours, start_raw, removal, exec_ours, exec_raw))
    };
    let (start_ours, start_raw, removal, exec_ours, exec_raw) =
        sandbox::supervise(&docker, &task_id, rules, measure).await??;
    let rows = [
        Comparison {
            what: "start + first exec",
            ours_label: "Sandbox::start + exec(\"true\")",
            ours: start_ours,
            raw_label: "docker run --rm <image> true",
            raw: start_raw,
            target: START_TARGET,
        },
        Comparison {
            what: "exec",
            ours_label: "Sandbox::exec(\"true\")",
            ours: exec_ours,
            raw_label: "docker exec <ctr> true",
            raw: exec_raw,
            target: EXEC_TARGET,
        },
    ];
    print!("{}", render_table(args.iterations, &image, &rows, &removal));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples = ms(&(1..=20).rev().collect::<Vec<_>>());
        assert_eq!(percentiles(&samples), (10.0, 19.0));
        assert_eq!(percentiles(&ms(&[7])), (7.0, 7.0));
        assert!(percentiles(&[]).0.is_nan());
    }

    #[test]
    fn table_shows_ratios_and_verdicts() {
        let row = Comparison {
            what: "exec",
            ours_label: "ours",
            ours: ms(&[110, 120]),
            raw_label: "raw",
            raw: ms(&[100, 100]),
            target: 1.1,
        };
        let text = render_table(2, "img", &[row], &ms(&[5]));
        assert!(text.contains("1.10x"), "{text}");
        assert!(text.contains("1.20x"), "{text}");
        assert!(text.contains("MISSED"), "{text}");
    }
}

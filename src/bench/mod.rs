//! Benchmarks that print ratios against a baseline measured in the same run.

pub mod llm;
pub mod patch;
pub mod sandbox;

use std::time::Duration;

/// p50 and p95 in milliseconds (nearest rank).
pub(crate) fn percentiles(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len().max(1)) - 1;
        ms.get(i).copied().unwrap_or(f64::NAN)
    };
    (rank(0.50), rank(0.95))
}

/// One row pair and its ratio line, e.g. for start+first exec.
pub(crate) struct Comparison<'a> {
    pub(crate) what: &'a str,
    pub(crate) ours_label: &'a str,
    pub(crate) ours: Vec<Duration>,
    pub(crate) raw_label: &'a str,
    pub(crate) raw: Vec<Duration>,
    pub(crate) target: f64,
}

impl Comparison<'_> {
    pub(crate) fn ratios(&self) -> (f64, f64) {
        let (o50, o95) = percentiles(&self.ours);
        let (r50, r95) = percentiles(&self.raw);
        (o50 / r50, o95 / r95)
    }

    pub(crate) fn render(&self) -> String {
        let (o50, o95) = percentiles(&self.ours);
        let (r50, r95) = percentiles(&self.raw);
        let (q50, q95) = self.ratios();
        let met = if q50 <= self.target && q95 <= self.target {
            "met"
        } else {
            "MISSED"
        };
        format!(
            "{:<22}{:<34}{o50:>9.1}{o95:>9.1}\n{:<22}{:<34}{r50:>9.1}{r95:>9.1}\n{:<22}{:<34}{q50:>8.2}x{q95:>8.2}x   target <= {:.1}x: {met}\n",
            self.what, self.ours_label, "", self.raw_label, "", "ratio ours/raw", self.target
        )
    }
}

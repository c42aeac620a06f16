//! Benchmarks that print ratios against a baseline measured in the same run.

pub mod patch;
pub mod sandbox;

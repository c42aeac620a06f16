//! agent-runner: a coding task written as a GitHub issue becomes a tested pull request. The
//! model's edits are applied on the host; the code only runs inside a locked-down sandbox.

pub mod agent;
pub mod bench;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod doctor;
pub mod edit;
pub mod eval;
pub mod github;
pub mod llm;
pub mod logging;
pub mod runner;
pub mod sandbox;
pub mod secret_scan;
pub mod server;
pub mod store;
pub mod workspace;

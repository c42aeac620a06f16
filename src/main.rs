use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    agent_runner::cli::main(agent_runner::cli::Cli::parse()).await
}

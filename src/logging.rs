//! Log output: `tracing` to stderr, human-readable or one JSON object per line.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// `LOG_LEVEL` as the setup guide spells it (Python's level names), any case.
pub fn level_filter(level: &str) -> Option<LevelFilter> {
    match level.trim().to_ascii_uppercase().as_str() {
        "ERROR" | "CRITICAL" => Some(LevelFilter::ERROR),
        "WARN" | "WARNING" => Some(LevelFilter::WARN),
        "INFO" => Some(LevelFilter::INFO),
        "DEBUG" => Some(LevelFilter::DEBUG),
        "TRACE" => Some(LevelFilter::TRACE),
        "OFF" => Some(LevelFilter::OFF),
        _ => None,
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `LOG_LEVEL`.
pub fn init(level: &str, json: bool) {
    let level = level_filter(level).unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Dependencies are chatty at debug; our own crate gets the asked level.
        EnvFilter::new(format!("warn,agent_runner={level}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
}

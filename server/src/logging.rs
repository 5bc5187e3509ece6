//! Structured logs with `tracing`: human-readable lines or one JSON object per line, on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `filter` is a `tracing` filter such as `info` or
/// `bigpeer=debug,sqlx=warn` (checked by the configuration already). Does nothing when a
/// subscriber is already installed (tests start several servers in one process).
pub fn init(format: LogFormat, filter: &str) {
    // Postgres notices such as "relation already exists, skipping" are noise unless asked for.
    let directives = if filter.contains("sqlx") {
        filter.to_string()
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    };
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // An error only means that a subscriber is installed already.
    drop(result);
}

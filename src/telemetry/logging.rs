//! tracing subscriber: readable text in development, JSON lines in production.

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global subscriber; later calls are ignored (tests start several servers).
pub fn init(settings: &LoggingSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

//! tracing subscriber: readable text in development, JSON lines in production.

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global subscriber; later calls are ignored (tests start several servers).
pub fn init(settings: &LoggingSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        // ort logs every graph transformer at info; keep its chatter to warnings unless asked.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("ort=warn,{}", settings.level))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

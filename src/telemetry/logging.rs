//! tracing subscriber: readable text in development, JSON lines in production.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{LogFormat, LoggingSettings};

/// `logging.log_prompts`, set once by [`init`]; read where a log line could carry request text.
static LOG_PROMPTS: AtomicBool = AtomicBool::new(false);

/// Whether request text (prompts, and upstream messages that may quote them) may be logged.
pub fn log_prompts() -> bool {
    LOG_PROMPTS.load(Ordering::Relaxed)
}

/// Installs the global subscriber; later calls are ignored (tests start several servers).
pub fn init(settings: &LoggingSettings) {
    LOG_PROMPTS.store(settings.log_prompts, Ordering::Relaxed);
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

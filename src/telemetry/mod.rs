//! Metrics (names, descriptions, recorder) and logging setup.

pub mod logging;
pub mod metrics;

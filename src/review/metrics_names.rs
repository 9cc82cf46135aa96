//! Metrics of the human-review queue: names, help text and the one setter the store uses, so a
//! name is spelled once. Kept here until `telemetry::metrics` absorbs it.

use metrics::{describe_gauge, gauge, Unit};

/// Reviews waiting for a reviewer (state `pending`).
pub const REVIEW_QUEUE_DEPTH: &str = "edge_gateway_review_queue_depth";

/// Registers units and help text; call once after installing the recorder.
pub fn describe() {
    describe_gauge!(
        REVIEW_QUEUE_DEPTH,
        Unit::Count,
        "Requests held for human review and not yet approved or rejected"
    );
}

pub(crate) fn set_queue_depth(pending: u64) {
    // Gauges are f64, which holds every count below 2^53 exactly.
    gauge!(REVIEW_QUEUE_DEPTH).set(pending as f64);
}

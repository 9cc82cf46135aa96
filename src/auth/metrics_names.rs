//! Metrics of API-key checks: names, help text and the recording helper, so a name is spelled
//! once. Kept here until `telemetry::metrics` absorbs it.

use metrics::{counter, describe_counter, Unit};

/// Requests refused by authentication, by `reason` (`missing_key`, `invalid_key`, `forbidden`,
/// `rate_limited`).
pub const AUTH_REJECTIONS_TOTAL: &str = "edge_gateway_auth_rejections_total";

/// Registers units and help text; call once after installing the recorder.
pub fn describe() {
    describe_counter!(
        AUTH_REJECTIONS_TOTAL,
        Unit::Count,
        "Requests refused by API-key authentication, by reason"
    );
}

pub(crate) fn record_rejection(reason: &'static str) {
    counter!(AUTH_REJECTIONS_TOTAL, "reason" => reason).increment(1);
}

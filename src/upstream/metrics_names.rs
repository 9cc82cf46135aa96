//! Metrics of cloud upstream calls: names, help text, buckets and the recording helpers the
//! client uses, so a name is spelled once. Kept here until `telemetry::metrics` absorbs it.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

use super::circuit::CircuitState;

/// HTTP attempts sent to an upstream, by `upstream` and `status` (HTTP code, or `error` when
/// no response arrived).
pub const REQUESTS_TOTAL: &str = "edge_gateway_upstream_requests_total";
/// One call (all attempts; for streams, until the stream ends), by `upstream`.
pub const REQUEST_DURATION_SECONDS: &str = "edge_gateway_upstream_request_duration_seconds";
/// Failed calls and broken streams, by `upstream` and `kind` ([`super::UpstreamError::kind`]).
pub const ERRORS_TOTAL: &str = "edge_gateway_upstream_errors_total";
/// Attempts beyond the first, by `upstream`.
pub const RETRIES_TOTAL: &str = "edge_gateway_upstream_retries_total";
/// Breaker state by `upstream`: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "edge_gateway_upstream_circuit_state";

/// Buckets for [`REQUEST_DURATION_SECONDS`]: cloud calls run from sub-second to minutes, and an
/// upstream on the site network answers in milliseconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Registers units and help text; call once after installing the recorder.
pub fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "HTTP attempts sent to cloud upstreams by status code (or error)"
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Cloud upstream call latency including retries; streams until their end"
    );
    describe_counter!(
        ERRORS_TOTAL,
        Unit::Count,
        "Failed cloud upstream calls and broken streams by kind"
    );
    describe_counter!(
        RETRIES_TOTAL,
        Unit::Count,
        "Retried cloud upstream attempts"
    );
    describe_gauge!(
        CIRCUIT_STATE,
        Unit::Count,
        "Cloud upstream circuit breaker state: 0 closed, 1 half-open, 2 open"
    );
}

pub(crate) fn record_attempt(upstream: &Arc<str>, status: Option<u16>) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
    counter!(REQUESTS_TOTAL, "upstream" => Arc::clone(upstream), "status" => status).increment(1);
}

pub(crate) fn record_duration(upstream: &Arc<str>, elapsed: Duration) {
    histogram!(REQUEST_DURATION_SECONDS, "upstream" => Arc::clone(upstream))
        .record(elapsed.as_secs_f64());
}

pub(crate) fn record_error(upstream: &Arc<str>, kind: &'static str) {
    counter!(ERRORS_TOTAL, "upstream" => Arc::clone(upstream), "kind" => kind).increment(1);
}

pub(crate) fn record_retry(upstream: &Arc<str>) {
    counter!(RETRIES_TOTAL, "upstream" => Arc::clone(upstream)).increment(1);
}

pub(crate) fn set_circuit_state(upstream: &Arc<str>, state: CircuitState) {
    gauge!(CIRCUIT_STATE, "upstream" => Arc::clone(upstream)).set(state.gauge_value());
}

//! Metrics of the routing layer: names, help text and recording helpers, so a name is spelled
//! once. Kept here until `telemetry::metrics` absorbs it.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};

use super::pii::PiiFindings;
use super::policy::Decision;

/// Policy reload attempts by `outcome` (`ok`, `failed`). A failed reload keeps the old policy.
pub const POLICY_RELOADS_TOTAL: &str = "edge_gateway_policy_reloads_total";
/// Routing decisions by `route` (edge, cloud, human_review, reject), `rule` (rule id or
/// `default`) and `reason` (matched, fallback, no_route, restricted_guard,
/// restricted_edge_unavailable).
pub const ROUTING_DECISIONS_TOTAL: &str = "edge_gateway_routing_decisions_total";

/// Time spent computing a request's routing signals (embedding + scorers + PII detector), by
/// `scorer` (semantic, heuristic): the latency the scorers add to routing.
pub const SIGNAL_SCORING_DURATION_SECONDS: &str = "edge_gateway_signal_scoring_duration_seconds";
/// Requests whose user text held a structured personal identifier, by `kind`.
pub const PII_DETECTIONS_TOTAL: &str = "edge_gateway_pii_detections_total";
/// Requests scored by the heuristics because the semantic scorers could not take them.
pub const SCORER_FALLBACKS_TOTAL: &str = "edge_gateway_scorer_fallbacks_total";

/// Buckets of [`SIGNAL_SCORING_DURATION_SECONDS`]: scoring takes well under a second.
pub const SCORING_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// `outcome` label of [`POLICY_RELOADS_TOTAL`] for a reload that took effect (or found the
/// file unchanged).
pub const OUTCOME_OK: &str = "ok";
/// `outcome` label of [`POLICY_RELOADS_TOTAL`] for a reload that was refused.
pub const OUTCOME_FAILED: &str = "failed";

/// Registers units and help text; call once after installing the recorder.
pub fn describe() {
    describe_counter!(
        POLICY_RELOADS_TOTAL,
        Unit::Count,
        "Routing policy reload attempts by outcome; a failed reload keeps the previous policy"
    );
    describe_counter!(
        ROUTING_DECISIONS_TOTAL,
        Unit::Count,
        "Routing decisions by route, rule id and reason"
    );
    describe_histogram!(
        SIGNAL_SCORING_DURATION_SECONDS,
        Unit::Seconds,
        "Time to compute a request's routing signals, by scorer"
    );
    describe_counter!(
        PII_DETECTIONS_TOTAL,
        Unit::Count,
        "Requests holding a structured personal identifier, by kind"
    );
    describe_counter!(
        SCORER_FALLBACKS_TOTAL,
        Unit::Count,
        "Requests scored by the heuristics because the semantic scorers could not take them"
    );
}

/// Records the scoring time and what the PII detector found.
pub fn record_scoring(scorer: &'static str, took: Duration, pii: &PiiFindings) {
    histogram!(SIGNAL_SCORING_DURATION_SECONDS, "scorer" => scorer).record(took.as_secs_f64());
    for (kind, _) in &pii.counts {
        counter!(PII_DETECTIONS_TOTAL, "kind" => kind.as_str()).increment(1);
    }
}

/// Counts a request that fell back to the heuristics.
pub fn record_scorer_fallback() {
    counter!(SCORER_FALLBACKS_TOTAL).increment(1);
}

/// Counts one decision. Rule ids come from the policy file, so the label set stays bounded.
pub fn record_decision(decision: &Decision) {
    counter!(
        ROUTING_DECISIONS_TOTAL,
        "route" => decision.route.kind(),
        "rule" => std::sync::Arc::clone(&decision.rule_id),
        "reason" => decision.reason.label()
    )
    .increment(1);
}

pub(crate) fn record_reload(outcome: &'static str) {
    counter!(POLICY_RELOADS_TOTAL, "outcome" => outcome).increment(1);
}

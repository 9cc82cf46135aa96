//! Metrics of the routing layer: names, help text and recording helpers, so a name is spelled
//! once. Kept here until `telemetry::metrics` absorbs it.

use metrics::{counter, describe_counter, Unit};

use super::policy::Decision;

/// Policy reload attempts by `outcome` (`ok`, `failed`). A failed reload keeps the old policy.
pub const POLICY_RELOADS_TOTAL: &str = "edge_gateway_policy_reloads_total";
/// Routing decisions by `route` (edge, cloud, human_review, reject), `rule` (rule id or
/// `default`) and `reason` (matched, fallback, no_route, restricted_guard,
/// restricted_edge_unavailable).
pub const ROUTING_DECISIONS_TOTAL: &str = "edge_gateway_routing_decisions_total";

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

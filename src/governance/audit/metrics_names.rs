//! Metrics of the audit log: names, help text and units, spelled once.

use metrics::{describe_counter, describe_gauge, Unit};

/// Records appended to the log, by `kind`.
pub const AUDIT_RECORDS_TOTAL: &str = "edge_gateway_audit_records_total";
/// Seq of the last record fsynced to disk.
pub const AUDIT_COMMITTED_SEQ: &str = "edge_gateway_audit_committed_seq";
/// Failed appends or fsyncs (disk full, read-only); the batch is kept and retried.
pub const AUDIT_WRITE_ERRORS_TOTAL: &str = "edge_gateway_audit_write_errors_total";
/// 1 while the log is writable, 0 while writes fail.
pub const AUDIT_HEALTHY: &str = "edge_gateway_audit_healthy";
/// Records refused because the queue was full (requests answered 503 when `fail_closed`).
pub const AUDIT_REJECTED_TOTAL: &str = "edge_gateway_audit_rejected_total";
/// Incomplete last lines dropped at startup (left by a crash mid-write).
pub const AUDIT_REPAIRS_TOTAL: &str = "edge_gateway_audit_repairs_total";
/// Seq of the last record the telemetry sink acknowledged.
pub const AUDIT_SINK_SHIPPED_SEQ: &str = "edge_gateway_audit_sink_shipped_seq";
/// Committed records not yet acknowledged by the sink (buffered on disk).
pub const AUDIT_SINK_LAG_RECORDS: &str = "edge_gateway_audit_sink_lag_records";
/// Failed deliveries to the sink.
pub const AUDIT_SINK_ERRORS_TOTAL: &str = "edge_gateway_audit_sink_errors_total";

/// Registers units and help text; call once after installing the recorder.
pub fn describe() {
    describe_counter!(
        AUDIT_RECORDS_TOTAL,
        Unit::Count,
        "Audit records appended, by kind."
    );
    describe_gauge!(
        AUDIT_COMMITTED_SEQ,
        Unit::Count,
        "Sequence number of the last audit record fsynced to disk."
    );
    describe_counter!(
        AUDIT_WRITE_ERRORS_TOTAL,
        Unit::Count,
        "Failed audit log writes (the batch is kept in memory and retried)."
    );
    describe_gauge!(
        AUDIT_HEALTHY,
        Unit::Count,
        "1 while the audit log is writable, 0 while writes fail."
    );
    describe_counter!(
        AUDIT_REJECTED_TOTAL,
        Unit::Count,
        "Audit records refused because the queue was full, by kind."
    );
    describe_counter!(
        AUDIT_REPAIRS_TOTAL,
        Unit::Count,
        "Incomplete last audit lines dropped at startup after a crash."
    );
    describe_gauge!(
        AUDIT_SINK_SHIPPED_SEQ,
        Unit::Count,
        "Sequence number of the last audit record acknowledged by the telemetry sink."
    );
    describe_gauge!(
        AUDIT_SINK_LAG_RECORDS,
        Unit::Count,
        "Committed audit records not yet acknowledged by the telemetry sink."
    );
    describe_counter!(
        AUDIT_SINK_ERRORS_TOTAL,
        Unit::Count,
        "Failed deliveries of audit records to the telemetry sink."
    );
}

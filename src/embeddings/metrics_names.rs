//! Metrics of the embedding encoder: names, help text and recording helpers, so a name is
//! spelled once.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

/// Inputs embedded by the model (cache misses), and their tokens.
pub const EMBEDDING_INPUTS_TOTAL: &str = "edge_gateway_embedding_inputs_total";
pub const EMBEDDING_TOKENS_TOTAL: &str = "edge_gateway_embedding_tokens_total";
/// Cache lookups and hits.
pub const EMBEDDING_CACHE_LOOKUPS_TOTAL: &str = "edge_gateway_embedding_cache_lookups_total";
pub const EMBEDDING_CACHE_HITS_TOTAL: &str = "edge_gateway_embedding_cache_hits_total";
/// Duration of one ONNX Runtime run of the encoder, and how many sequences it held.
pub const EMBEDDING_RUN_DURATION_SECONDS: &str = "edge_gateway_embedding_run_duration_seconds";
pub const EMBEDDING_RUN_SEQUENCES: &str = "edge_gateway_embedding_run_sequences";
/// Time a request waited for an embedding worker, and how many wait now.
pub const EMBEDDING_QUEUE_WAIT_SECONDS: &str = "edge_gateway_embedding_queue_wait_seconds";
pub const EMBEDDING_QUEUE_DEPTH: &str = "edge_gateway_embedding_queue_depth";

/// Buckets of the encoder's duration histograms (runs take milliseconds to a second).
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets of the run-size histogram.
pub const RUN_SEQUENCE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Registers units and help text; call once after installing the recorder.
pub fn describe() {
    describe_counter!(
        EMBEDDING_INPUTS_TOTAL,
        Unit::Count,
        "Inputs run through the embedding model (cache misses)"
    );
    describe_counter!(
        EMBEDDING_TOKENS_TOTAL,
        Unit::Count,
        "Tokens run through the embedding model"
    );
    describe_counter!(
        EMBEDDING_CACHE_LOOKUPS_TOTAL,
        Unit::Count,
        "Embedding cache lookups"
    );
    describe_counter!(
        EMBEDDING_CACHE_HITS_TOTAL,
        Unit::Count,
        "Embedding cache hits"
    );
    describe_histogram!(
        EMBEDDING_RUN_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one encoder run"
    );
    describe_histogram!(
        EMBEDDING_RUN_SEQUENCES,
        Unit::Count,
        "Sequences per encoder run"
    );
    describe_histogram!(
        EMBEDDING_QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time an embedding request waited for a worker"
    );
    describe_gauge!(
        EMBEDDING_QUEUE_DEPTH,
        Unit::Count,
        "Embedding requests waiting for a worker"
    );
}

pub(crate) fn set_queue_depth(depth: usize) {
    gauge!(EMBEDDING_QUEUE_DEPTH).set(depth as f64);
}

pub(crate) fn record_queue_wait(wait: Duration) {
    histogram!(EMBEDDING_QUEUE_WAIT_SECONDS).record(wait.as_secs_f64());
}

pub(crate) fn record_cache_lookup(enabled: bool) {
    if enabled {
        counter!(EMBEDDING_CACHE_LOOKUPS_TOTAL).increment(1);
    }
}

pub(crate) fn record_cache_hit() {
    counter!(EMBEDDING_CACHE_HITS_TOTAL).increment(1);
}

pub(crate) fn record_run(sequences: usize, tokens: usize, took: Duration) {
    counter!(EMBEDDING_INPUTS_TOTAL).increment(sequences as u64);
    counter!(EMBEDDING_TOKENS_TOTAL).increment(tokens as u64);
    histogram!(EMBEDDING_RUN_SEQUENCES).record(sequences as f64);
    histogram!(EMBEDDING_RUN_DURATION_SECONDS).record(took.as_secs_f64());
}

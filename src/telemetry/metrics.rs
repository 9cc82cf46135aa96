//! Every metric the gateway exports: names (`edge_gateway_*`), help text, buckets, and small
//! helpers so call sites cannot misspell a name or forget a unit.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_TOTAL: &str = "edge_gateway_requests_total";
pub const REQUESTS_IN_FLIGHT: &str = "edge_gateway_requests_in_flight";
pub const REQUEST_DURATION_SECONDS: &str = "edge_gateway_request_duration_seconds";
pub const TIME_TO_FIRST_TOKEN_SECONDS: &str = "edge_gateway_time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY_SECONDS: &str = "edge_gateway_inter_token_latency_seconds";
pub const QUEUE_WAIT_SECONDS: &str = "edge_gateway_queue_wait_seconds";
pub const QUEUE_DEPTH: &str = "edge_gateway_queue_depth";
pub const RUNNING_SEQUENCES: &str = "edge_gateway_running_sequences";
pub const PROMPT_TOKENS_TOTAL: &str = "edge_gateway_prompt_tokens_total";
pub const GENERATED_TOKENS_TOTAL: &str = "edge_gateway_generated_tokens_total";
pub const GENERATIONS_TOTAL: &str = "edge_gateway_generations_total";
pub const ERRORS_TOTAL: &str = "edge_gateway_errors_total";
pub const PROMPT_TOKENS_CACHED_TOTAL: &str = "edge_gateway_prompt_tokens_cached_total";
pub const PREFIX_CACHE_LOOKUPS_TOTAL: &str = "edge_gateway_prefix_cache_lookups_total";
pub const PREFIX_CACHE_HITS_TOTAL: &str = "edge_gateway_prefix_cache_hits_total";
pub const PREFIX_CACHE_HIT_TOKENS_TOTAL: &str = "edge_gateway_prefix_cache_hit_tokens_total";
pub const PREFIX_CACHE_BYTES: &str = "edge_gateway_prefix_cache_bytes";
pub const PREFIX_CACHE_PINNED_BYTES: &str = "edge_gateway_prefix_cache_pinned_bytes";
pub const PREFIX_CACHE_EVICTIONS_TOTAL: &str = "edge_gateway_prefix_cache_evictions_total";
pub const MODEL_INFO: &str = "edge_gateway_model_info";
pub const BATCH_SIZE: &str = "edge_gateway_batch_size";
pub const KV_CACHE_BYTES: &str = "edge_gateway_kv_cache_bytes";
pub const KV_RESERVED_BYTES: &str = "edge_gateway_kv_reserved_bytes";
pub const KV_BUDGET_BYTES: &str = "edge_gateway_kv_budget_bytes";
pub const MEMORY_PRESSURE_RATIO: &str = "edge_gateway_memory_pressure_ratio";
pub const PROCESS_RSS_BYTES: &str = "edge_gateway_process_resident_memory_bytes";
pub const MEMORY_LIMIT_BYTES: &str = "edge_gateway_memory_limit_bytes";
pub const EFFECTIVE_CONTEXT_TOKENS: &str = "edge_gateway_effective_context_tokens";

/// From 0.5 ms: a request relayed to a fast upstream finishes in about a millisecond, and the
/// gateway's own share of that is what an operator needs to see.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
const TOKEN_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns the render handle.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION_SECONDS.into()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(TIME_TO_FIRST_TOKEN_SECONDS.into()),
                LATENCY_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(QUEUE_WAIT_SECONDS.into()), LATENCY_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(INTER_TOKEN_LATENCY_SECONDS.into()),
                TOKEN_LATENCY_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_SIZE_BUCKETS)
        })
        .and_then(|b| {
            use crate::embeddings::metrics_names as e;
            b.set_buckets_for_metric(
                Matcher::Full(e::EMBEDDING_RUN_DURATION_SECONDS.into()),
                e::DURATION_BUCKETS,
            )?
            .set_buckets_for_metric(
                Matcher::Full(e::EMBEDDING_QUEUE_WAIT_SECONDS.into()),
                e::DURATION_BUCKETS,
            )?
            .set_buckets_for_metric(
                Matcher::Full(e::EMBEDDING_RUN_SEQUENCES.into()),
                e::RUN_SEQUENCE_BUCKETS,
            )
        })
        .and_then(|b| {
            // Without buckets the exporter renders a summary, which cannot be summed across
            // replicas.
            use crate::upstream::metrics_names as u;
            b.set_buckets_for_metric(
                Matcher::Full(u::REQUEST_DURATION_SECONDS.into()),
                u::DURATION_BUCKETS,
            )
        })
        .and_then(|b| {
            use crate::routing::metrics_names as r;
            b.set_buckets_for_metric(
                Matcher::Full(r::SIGNAL_SCORING_DURATION_SECONDS.into()),
                r::SCORING_BUCKETS,
            )
        })
        .map_err(|e| e.to_string())?;
    let handle = builder.install_recorder().map_err(|e| e.to_string())?;
    describe();
    crate::upstream::metrics_names::describe();
    crate::cpu_pool::describe();
    crate::routing::metrics_names::describe();
    crate::embeddings::metrics_names::describe();
    crate::review::metrics_names::describe();
    crate::auth::metrics_names::describe();
    crate::governance::audit::metrics_names::describe();
    crate::models::registry::describe();
    describe_counter!(
        crate::api::routing::SERVED_VERSION_REQUESTS_TOTAL,
        Unit::Count,
        "Requests answered by the edge, by model, version, role (stable, candidate) and prompt"
    );
    describe_counter!(
        crate::api::routing::FALLBACKS_TOTAL,
        Unit::Count,
        "Routing fallbacks taken, by failed route and reason"
    );
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "HTTP API requests by endpoint and status code"
    );
    describe_gauge!(
        REQUESTS_IN_FLIGHT,
        Unit::Count,
        "API requests currently being served"
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "End-to-end API request latency"
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN_SECONDS,
        Unit::Seconds,
        "Time from start of prefill to the first generated token"
    );
    describe_histogram!(
        INTER_TOKEN_LATENCY_SECONDS,
        Unit::Seconds,
        "Time between consecutive generated tokens"
    );
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time a request waited for a worker"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Generation requests waiting for a worker"
    );
    describe_gauge!(RUNNING_SEQUENCES, Unit::Count, "Sequences being generated");
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Sequences decoded together per ONNX Runtime decode call"
    );
    describe_counter!(
        PROMPT_TOKENS_CACHED_TOTAL,
        Unit::Count,
        "Prompt tokens whose KV came from the prefix cache instead of prefill"
    );
    describe_counter!(
        PREFIX_CACHE_LOOKUPS_TOTAL,
        Unit::Count,
        "Prefix cache lookups (one per cacheable request)"
    );
    describe_counter!(
        PREFIX_CACHE_HITS_TOTAL,
        Unit::Count,
        "Prefix cache lookups that restored at least one block"
    );
    describe_counter!(
        PREFIX_CACHE_HIT_TOKENS_TOTAL,
        Unit::Count,
        "Prompt tokens restored from the prefix cache"
    );
    describe_gauge!(
        PREFIX_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of KV blocks held by the prefix cache"
    );
    describe_gauge!(
        PREFIX_CACHE_PINNED_BYTES,
        Unit::Bytes,
        "Bytes of pinned system-prompt KV blocks (never evicted)"
    );
    describe_counter!(
        PREFIX_CACHE_EVICTIONS_TOTAL,
        Unit::Count,
        "KV blocks evicted from the prefix cache"
    );
    describe_gauge!(
        KV_RESERVED_BYTES,
        Unit::Bytes,
        "KV cache bytes reserved by admitted sequences (prompt plus max_tokens each)"
    );
    describe_gauge!(
        KV_BUDGET_BYTES,
        Unit::Bytes,
        "KV cache budget: memory budget minus weights, runtime overhead and prefix cache"
    );
    describe_gauge!(
        MEMORY_PRESSURE_RATIO,
        Unit::Count,
        "Reserved share of the KV budget (0-1); the memory_pressure routing signal"
    );
    describe_gauge!(
        PROCESS_RSS_BYTES,
        Unit::Bytes,
        "Resident set size of the gateway process"
    );
    describe_gauge!(
        MEMORY_LIMIT_BYTES,
        Unit::Bytes,
        "Memory budget of the process (configured, cgroup limit or RAM)"
    );
    describe_gauge!(
        EFFECTIVE_CONTEXT_TOKENS,
        Unit::Count,
        "Longest prompt plus completion a new request can get now (shrinks as KV is reserved)"
    );
    describe_gauge!(
        KV_CACHE_BYTES,
        Unit::Bytes,
        "KV cache bytes holding positions of running sequences"
    );
    describe_counter!(
        PROMPT_TOKENS_TOTAL,
        Unit::Count,
        "Prompt tokens processed by the local engine"
    );
    describe_counter!(
        GENERATED_TOKENS_TOTAL,
        Unit::Count,
        "Tokens generated by the local engine"
    );
    describe_counter!(
        GENERATIONS_TOTAL,
        Unit::Count,
        "Local generations by outcome (stop, length, cancelled, error)"
    );
    describe_counter!(ERRORS_TOTAL, Unit::Count, "Errors by type");
    describe_gauge!(
        MODEL_INFO,
        Unit::Count,
        "Served model, layout and execution provider (value 1)"
    );
}

/// Publishes KV reservations against the budget.
pub fn set_kv_reserved(reserved: usize, budget: usize) {
    gauge!(KV_RESERVED_BYTES).set(reserved as f64);
    gauge!(KV_BUDGET_BYTES).set(budget as f64);
    let ratio = if budget == 0 {
        1.0
    } else {
        (reserved as f64 / budget as f64).min(1.0)
    };
    gauge!(MEMORY_PRESSURE_RATIO).set(ratio);
}

/// Publishes process memory (sampled when metrics are scraped).
pub fn set_process_memory(rss: usize, limit: usize) {
    gauge!(PROCESS_RSS_BYTES).set(rss as f64);
    gauge!(MEMORY_LIMIT_BYTES).set(limit as f64);
}

/// Publishes the context a new request can get now.
pub fn set_effective_context(tokens: usize) {
    gauge!(EFFECTIVE_CONTEXT_TOKENS).set(tokens as f64);
}

/// Records the number of sequences in one decode call.
pub fn record_batch_size(sequences: usize) {
    histogram!(BATCH_SIZE).record(sequences as f64);
}

/// Sets the KV bytes in use by running sequences (one worker; summed across workers would need
/// a label, and the default is one worker).
pub fn set_batch_kv_bytes(bytes: usize) {
    gauge!(KV_CACHE_BYTES).set(bytes as f64);
}

/// Records a finished API request.
pub fn record_request(endpoint: &'static str, status: u16, elapsed: Duration) {
    counter!(REQUESTS_TOTAL, "endpoint" => endpoint, "status" => status.to_string()).increment(1);
    histogram!(REQUEST_DURATION_SECONDS, "endpoint" => endpoint).record(elapsed.as_secs_f64());
}

/// Time to first token of one generation.
pub fn record_ttft(elapsed: Duration) {
    histogram!(TIME_TO_FIRST_TOKEN_SECONDS).record(elapsed.as_secs_f64());
}

/// Gap between two generated tokens.
pub fn record_inter_token(elapsed: Duration) {
    histogram!(INTER_TOKEN_LATENCY_SECONDS).record(elapsed.as_secs_f64());
}

/// Time a request spent queued.
pub fn record_queue_wait(elapsed: Duration) {
    histogram!(QUEUE_WAIT_SECONDS).record(elapsed.as_secs_f64());
}

/// Current queue depth.
pub fn set_queue_depth(depth: usize) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
}

/// Outcome and token counts of one generation, including cancelled ones.
pub fn record_generation(outcome: &'static str, prompt: usize, generated: usize) {
    counter!(GENERATIONS_TOTAL, "outcome" => outcome).increment(1);
    counter!(PROMPT_TOKENS_TOTAL).increment(prompt as u64);
    counter!(GENERATED_TOKENS_TOTAL).increment(generated as u64);
}

/// Prompt tokens of one request restored from the prefix cache (0 on a miss).
pub fn record_cached_prompt_tokens(tokens: usize) {
    counter!(PROMPT_TOKENS_CACHED_TOTAL).increment(tokens as u64);
}

/// One error of the given low-cardinality type.
pub fn record_error(kind: &'static str) {
    counter!(ERRORS_TOTAL, "type" => kind).increment(1);
}

/// Publishes the served model's identity.
pub fn set_model_info(model: &str, layout: &str, provider: &str) {
    gauge!(MODEL_INFO, "model" => model.to_string(), "layout" => layout.to_string(), "execution_provider" => provider.to_string()).set(1.0);
}

/// Counts a running sequence for as long as it lives, even on early return or panic.
pub struct RunningGuard;

impl RunningGuard {
    /// Increments the running-sequences gauge.
    pub fn new() -> Self {
        gauge!(RUNNING_SEQUENCES).increment(1.0);
        RunningGuard
    }
}

impl Default for RunningGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        gauge!(RUNNING_SEQUENCES).decrement(1.0);
    }
}

/// Counts an in-flight API request for as long as it lives.
pub struct InFlightGuard;

impl InFlightGuard {
    /// Increments the in-flight gauge.
    pub fn new() -> Self {
        gauge!(REQUESTS_IN_FLIGHT).increment(1.0);
        InFlightGuard
    }
}

impl Default for InFlightGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        gauge!(REQUESTS_IN_FLIGHT).decrement(1.0);
    }
}

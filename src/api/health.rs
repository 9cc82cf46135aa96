//! Liveness (`/healthz`), readiness (`/readyz`) and the Prometheus endpoint (`/metrics`).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The model is loaded and warmed; 503 until then.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.engine() {
        Ok(engine) if engine.is_ready() => HttpResponse::Ok().json(json!({
            "status": "ready",
            "model": engine.package().id,
            "execution_provider": engine.execution_provider(),
            "queue_depth": engine.queue_depth(),
            "context_length": engine.context_length(),
            "effective_context": engine.effective_context(),
            "memory_pressure": engine.memory_pressure(),
            "kv_budget_bytes": engine.kv_budget_bytes(),
        })),
        _ => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "loading"})),
    }
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Sampled per scrape: cheap (one small /proc read) and as fresh as the scrape interval.
    if let Ok(engine) = state.engine() {
        let rss = crate::engine::budget::process_rss_bytes().unwrap_or(0);
        crate::telemetry::metrics::set_process_memory(rss, engine.memory_limit());
        crate::telemetry::metrics::set_effective_context(engine.effective_context());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

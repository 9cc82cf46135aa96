//! Liveness (`/healthz`), readiness (`/readyz`) and the Prometheus endpoint (`/metrics`).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Every served model is loaded and warmed; 503 until then. The top-level fields describe the
/// primary model's stable version; `models` lists every served id and version.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (Some(primary), Some(states), true) = (
        state.models.primary(),
        state.models.states(),
        state.models.is_ready(),
    ) else {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "loading"}));
    };
    let engine = &primary.engine;
    let models: Vec<_> = states
        .iter()
        .map(|(id, s)| {
            json!({
                "id": id,
                "version": s.stable.version,
                "execution_provider": s.stable.engine.execution_provider(),
                "candidate": s.candidate.as_ref().map(|c| json!({"version": c.model.version, "canary_percent": c.percent})),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "status": "ready",
        "model": engine.package().id,
        "version": primary.version,
        "execution_provider": engine.execution_provider(),
        "queue_depth": engine.queue_depth(),
        "context_length": engine.context_length(),
        "effective_context": engine.effective_context(),
        "memory_pressure": engine.memory_pressure(),
        "kv_budget_bytes": engine.kv_budget_bytes(),
        "audit": state.audit.as_ref().map(|a| json!({"healthy": a.is_healthy(), "committed_seq": a.committed_seq()})),
        "models": models,
    }))
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Sampled per scrape: cheap (one small /proc read) and as fresh as the scrape interval.
    if let Ok(model) = state.primary_model() {
        let engine = &model.engine;
        let rss = crate::engine::budget::process_rss_bytes().unwrap_or(0);
        crate::telemetry::metrics::set_process_memory(rss, engine.memory_limit());
        crate::telemetry::metrics::set_effective_context(engine.effective_context());
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

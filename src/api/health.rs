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
            "execution_provider": state.execution_provider,
            "queue_depth": engine.queue_depth(),
        })),
        _ => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({"status": "loading"})),
    }
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

//! Admin endpoints (scope `admin`) for the model lifecycle — list versions, stage a candidate
//! with a canary share, change the share, promote, roll back — and for versioned prompts
//! (list, reload). Handlers only parse and map; the registry does the work.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::governance::prompts::PromptRegistry;

/// Body of `POST /admin/models/{id}/candidate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageBody {
    /// Package directory of the new version (on the gateway's filesystem).
    path: String,
    /// Share of the model's traffic the candidate takes once loaded (default 0: shadow).
    #[serde(default)]
    canary_percent: u8,
}

/// Body of `POST /admin/models/{id}/canary`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryBody {
    canary_percent: u64,
}

/// Runs a blocking registry call off the executor.
async fn blocking(
    f: impl FnOnce() -> Result<(), crate::models::RegistryError> + Send + 'static,
) -> Result<(), ApiError> {
    web::block(f)
        .await
        .map_err(|e| ApiError::Internal(format!("model task failed: {e}")))?
        .map_err(ApiError::from)
}

fn snapshot_of(state: &AppState, id: &str) -> serde_json::Value {
    let all = state.models.snapshot();
    all["data"]
        .as_array()
        .and_then(|d| d.iter().find(|m| m["id"] == id).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// `GET /admin/models`.
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.models.snapshot())
}

/// `POST /admin/models/{id}/candidate`: starts loading a new version in the background; 202.
pub async fn stage(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<StageBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.path.trim().is_empty() {
        return Err(ApiError::invalid(
            "path",
            "must name a model package directory",
        ));
    }
    if body.canary_percent > 100 {
        return Err(ApiError::from(
            crate::models::RegistryError::InvalidPercent(u64::from(body.canary_percent)),
        ));
    }
    state
        .models
        .stage_candidate(&id, PathBuf::from(body.path), body.canary_percent)?;
    Ok(HttpResponse::Accepted().json(json!({
        "object": "model.operation",
        "operation": "stage_candidate",
        "status": "loading",
        "model": snapshot_of(&state, &id),
    })))
}

/// `POST /admin/models/{id}/canary`.
pub async fn canary(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<CanaryBody>,
) -> Result<HttpResponse, ApiError> {
    let models = Arc::clone(&state.models);
    let (model, percent) = (id.to_string(), body.canary_percent);
    blocking(move || models.set_canary(&model, percent)).await?;
    Ok(done(&state, &id, "set_canary"))
}

/// `POST /admin/models/{id}/promote`: the candidate becomes stable (quality gate applies).
pub async fn promote(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let models = Arc::clone(&state.models);
    let model = id.to_string();
    blocking(move || models.promote(&model)).await?;
    Ok(done(&state, &id, "promote"))
}

/// `POST /admin/models/{id}/rollback`: drops the candidate, else returns to the previous version.
pub async fn rollback(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let models = Arc::clone(&state.models);
    let model = id.to_string();
    blocking(move || models.rollback(&model)).await?;
    Ok(done(&state, &id, "rollback"))
}

fn done(state: &AppState, id: &str, operation: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "object": "model.operation",
        "operation": operation,
        "status": "done",
        "model": snapshot_of(state, id),
    }))
}

/// `GET /admin/prompts`: every prompt version with its digest.
pub async fn list_prompts(state: web::Data<AppState>) -> HttpResponse {
    let prompts = state.prompts.load();
    let data: Vec<_> = prompts
        .all()
        .map(|p| {
            json!({
                "name": p.name,
                "version": p.version,
                "description": p.description,
                "variables": p.variables,
                "sha256": p.sha256,
                "file": p.file.display().to_string(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

/// `POST /admin/prompts/reload`: reads the prompts directory again; a broken file keeps the
/// running set (400 naming the file).
pub async fn reload_prompts(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let settings = state.settings.prompts.clone();
    let loaded = web::block(move || PromptRegistry::load(&settings.dir, &settings.defaults))
        .await
        .map_err(|e| ApiError::Internal(format!("prompt reload task failed: {e}")))?
        .map_err(|e| ApiError::invalid("prompts", e.to_string()))?;
    let labels = loaded.labels();
    if let Some(audit) = &state.audit {
        audit
            .record(
                "prompt_change",
                json!({
                    "operation": "reload",
                    "by": super::auth::principal_name(&req).as_deref(),
                    "prompts": loaded.all().map(|p| json!({"prompt": p.label(), "sha256": p.sha256})).collect::<Vec<_>>(),
                }),
            )
            .map_err(ApiError::AuditUnavailable)?;
    }
    state.prompts.store(Arc::new(loaded));
    tracing::info!(prompts = ?labels, "prompts reloaded");
    Ok(HttpResponse::Ok().json(json!({"object": "prompts.reload", "prompts": labels})))
}

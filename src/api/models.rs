//! `GET /v1/models` and `GET /v1/models/{id}`: the generation model and, when enabled and
//! loaded, the embedding model.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::types::{ModelCard, ModelList};
use super::AppState;

/// Cards of every served generation model (its stable version; the candidate in metadata).
fn cards(state: &AppState) -> Result<Vec<ModelCard>, ApiError> {
    let states = state.models.states().ok_or(ApiError::NotReady {
        retry_after_secs: state.settings.engine.retry_after_secs,
    })?;
    Ok(states
        .into_iter()
        .map(|(id, s)| {
            let engine = &s.stable.engine;
            let package = engine.package();
            ModelCard {
                id,
                object: "model",
                created: s.stable.loaded_unix,
                owned_by: "edge-gateway",
                metadata: json!({
                    "layout": package.layout_name(),
                    "context_length": engine.context_length(),
                    "execution_provider": engine.execution_provider(),
                    "path": package.dir.display().to_string(),
                    "version": s.stable.version,
                    "candidate": s.candidate.as_ref().map(|c| json!({
                        "version": c.model.version,
                        "canary_percent": c.percent,
                        "execution_provider": c.model.engine.execution_provider(),
                    })),
                }),
            }
        })
        .collect())
}

fn embedding_card(state: &AppState) -> Option<ModelCard> {
    let encoder = state.loaded_encoder()?;
    let p = encoder.package();
    Some(ModelCard {
        id: p.id.clone(),
        object: "model",
        created: state.started_unix,
        owned_by: "edge-gateway",
        metadata: json!({
            "type": "embedding",
            "dimensions": p.dimensions,
            "max_input_tokens": encoder.max_input_tokens(),
            "pooling": format!("{:?}", p.pooling).to_lowercase(),
            "normalized": p.normalize,
            "license": p.license,
            "execution_provider": "cpu",
            "path": p.dir.display().to_string(),
        }),
    })
}

/// Lists the served models.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let data = cards(&state)?
        .into_iter()
        .chain(embedding_card(&state))
        .collect();
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data,
    }))
}

/// Describes one model by id.
pub async fn retrieve(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if let Some(card) = cards(&state)?.into_iter().find(|c| c.id == *id) {
        return Ok(HttpResponse::Ok().json(card));
    }
    match embedding_card(&state) {
        Some(e) if e.id == *id => Ok(HttpResponse::Ok().json(e)),
        _ => Err(ApiError::ModelNotFound(id.into_inner())),
    }
}

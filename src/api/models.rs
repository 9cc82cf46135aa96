//! `GET /v1/models` and `GET /v1/models/{id}`: the generation model and, when enabled and
//! loaded, the embedding model.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::types::{ModelCard, ModelList};
use super::AppState;

fn card(state: &AppState) -> Result<ModelCard, ApiError> {
    let engine = state.engine()?;
    let package = engine.package();
    Ok(ModelCard {
        id: package.id.clone(),
        object: "model",
        created: state.started_unix,
        owned_by: "edge-gateway",
        metadata: json!({
            "layout": package.layout_name(),
            "context_length": engine.context_length(),
            "execution_provider": engine.execution_provider(),
            "path": package.dir.display().to_string(),
        }),
    })
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
    let card = card(&state)?;
    let data = std::iter::once(card)
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
    let card = card(&state)?;
    if card.id == *id {
        return Ok(HttpResponse::Ok().json(card));
    }
    match embedding_card(&state) {
        Some(e) if e.id == *id => Ok(HttpResponse::Ok().json(e)),
        _ => Err(ApiError::ModelNotFound(id.into_inner())),
    }
}

//! `GET /v1/models` and `GET /v1/models/{id}`.

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

/// Lists the served model.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let card = card(&state)?;
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data: vec![card],
    }))
}

/// Describes one model by id.
pub async fn retrieve(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let card = card(&state)?;
    if card.id != *id {
        return Err(ApiError::ModelNotFound(id.into_inner()));
    }
    Ok(HttpResponse::Ok().json(card))
}

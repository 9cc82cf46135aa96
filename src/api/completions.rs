//! `POST /v1/completions`.

use actix_web::{web, HttpResponse};

use super::generation::{serve, Surface};
use super::types::CompletionRequest;
use super::validate::{completion_spec, read_json};
use super::AppState;

/// Handler: read, validate, hand to the shared generation path.
pub async fn completions(state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let spec = read_json::<CompletionRequest>(payload, state.settings.server.max_body_bytes)
        .await
        .and_then(|req| completion_spec(req, &state.settings.engine));
    serve(state, spec, Surface::Completion).await
}

//! `POST /v1/chat/completions`.

use actix_web::{web, HttpResponse};

use super::generation::{serve, Surface};
use super::types::ChatCompletionRequest;
use super::validate::{chat_spec, read_json};
use super::AppState;

/// Handler: read, validate, hand to the shared generation path.
pub async fn chat_completions(state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let spec = read_json::<ChatCompletionRequest>(payload, state.settings.server.max_body_bytes)
        .await
        .and_then(|req| chat_spec(req, &state.settings.engine));
    serve(state, spec, Surface::Chat).await
}

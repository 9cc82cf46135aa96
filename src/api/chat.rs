//! `POST /v1/chat/completions`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::generation::{serve, Surface};
use super::types::ChatCompletionRequest;
use super::validate::{apply_cache_header, chat_spec, read_json};
use super::AppState;

/// Handler: read, validate, hand to the shared generation path.
pub async fn chat_completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let spec = read_json::<ChatCompletionRequest>(payload, &state.settings.server)
        .await
        .and_then(|(body, raw)| chat_spec(body, raw, &state.settings.engine))
        .and_then(|mut spec| {
            apply_cache_header(&mut spec, req.headers());
            super::prompts::apply_requested(&state, &mut spec)?;
            Ok(spec)
        });
    serve(state, req, spec, Surface::Chat).await
}

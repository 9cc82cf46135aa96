//! Bearer API keys on the HTTP surface: every `/v1` request needs the `inference` scope, `/admin` needs
//! `admin`. The authenticated principal is stored in the request's
//! extensions so routing can use the key's name as a signal.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};

use super::error::ApiError;
use super::AppState;
use crate::auth::{Principal, Scope};

/// Middleware for the OpenAI surface.
pub async fn require_inference<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    require(Scope::Inference, req, next).await
}

/// Middleware for `/admin`.
pub async fn require_admin<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    require(Scope::Admin, req, next).await
}

async fn require<B: MessageBody>(
    scope: Scope,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        let err = ApiError::Internal("application state missing".into());
        return Ok(req
            .into_response(err.error_response())
            .map_into_right_body());
    };
    // A header that is not valid text is an invalid key, not a missing one.
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    match state.auth.authorize(header, scope) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(e) => {
            crate::auth::metrics_names::record_rejection(e.reason());
            let response = ApiError::Auth(e).error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// The authenticated key name of a request (set by the middleware).
pub fn principal_name(req: &actix_web::HttpRequest) -> Option<std::sync::Arc<str>> {
    req.extensions()
        .get::<Principal>()
        .map(|p| std::sync::Arc::clone(&p.key_name))
}

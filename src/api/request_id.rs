//! Request ids: every request gets one — the caller's `x-request-id` when it is a sane token,
//! else a fresh UUID — echoed in the response header, kept in the request's extensions (canary
//! assignment and the audit log use it) and attached to a tracing span around the handler.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use tracing::Instrument;

/// Header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest caller-supplied id kept; longer ones are replaced (they reach logs and headers).
const MAX_LEN: usize = 128;

/// The id of the current request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// True for ids safe to log and echo: visible ASCII without spaces or quotes.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

/// Middleware: assigns the id, runs the handler inside a `request` span, echoes the header.
pub async fn assign<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let id: Arc<str> = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(
            || Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            Arc::from,
        );
    req.extensions_mut().insert(RequestId(Arc::clone(&id)));
    let span = tracing::info_span!("request", id = %id);
    let mut response = next.call(req).instrument(span).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(response)
}

/// The id the middleware assigned (a fresh one if it did not run, e.g. in a bare test app).
pub fn of(req: &actix_web::HttpRequest) -> Arc<str> {
    req.extensions().get::<RequestId>().map_or_else(
        || Arc::from(uuid::Uuid::new_v4().simple().to_string()),
        |r| Arc::clone(&r.0),
    )
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(acceptable("b7f3c2a0-1d2e-4f5a-9b8c-7d6e5f4a3b2c"));
        assert!(acceptable("svc:orders/42.retry_1"));
        for bad in ["", "a b", "a\"b", "é", "a\nb", &"x".repeat(129)] {
            assert!(!acceptable(bad), "{bad:?}");
        }
    }
}

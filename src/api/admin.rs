//! Admin endpoints (scope `admin`): reviewers list, approve and reject requests held for human
//! review — an approved request then runs on its approved route and its answer is stored with
//! the review — and operators reload the routing policy.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::generation::{prepare, run_edge, RequestGuard, Surface};
use super::types::{ChatCompletionRequest, CompletionRequest};
use super::validate::{chat_spec, completion_spec, parse_json_with_raw, GenerationSpec};
use super::AppState;
use crate::review::{ApprovedRoute, Review, ReviewState, MAX_LIST_LIMIT};
use crate::upstream::UpstreamResponse;

/// Query of `GET /admin/reviews`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// Body of approve / reject.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `edge` or `cloud:<upstream>`; approve only.
    route: Option<String>,
    note: Option<String>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::review::ReviewError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|e| ApiError::Internal(format!("review task failed: {e}")))?
        .map_err(ApiError::from)
}

fn reviewer(req: &HttpRequest) -> String {
    super::auth::principal_name(req).map_or_else(|| "anonymous".to_string(), |n| n.to_string())
}

/// `GET /admin/reviews?state=pending&limit=50`.
pub async fn list(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = match query.state.as_deref() {
        None => None,
        Some("pending") => Some(ReviewState::Pending),
        Some("approved") => Some(ReviewState::Approved),
        Some("rejected") => Some(ReviewState::Rejected),
        Some("completed") => Some(ReviewState::Completed),
        Some("failed") => Some(ReviewState::Failed),
        Some(other) => {
            return Err(ApiError::invalid(
                "state",
                format!("unknown review state '{other}'"),
            ))
        }
    };
    let limit = query.limit.unwrap_or(100).min(MAX_LIST_LIMIT);
    let store = Arc::clone(&state.reviews);
    let reviews = blocking(move || store.list(filter, limit)).await?;
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": reviews})))
}

/// `POST /admin/reviews/{id}/reject`.
pub async fn reject(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let store = Arc::clone(&state.reviews);
    let who = reviewer(&req);
    let note = body.into_inner().note;
    let review = blocking(move || store.reject(&id, &who, note.as_deref())).await?;
    audit_review(&state, &review.id, "reject", &req, None);
    Ok(HttpResponse::Ok().json(review))
}

/// Records a reviewer's decision. The decision is already durable in the review store, so a
/// full audit queue is logged (and counted) rather than turned into an error.
fn audit_review(
    state: &AppState,
    id: &str,
    decision: &str,
    req: &HttpRequest,
    route: Option<&str>,
) {
    let Some(audit) = &state.audit else { return };
    let record = json!({"review": id, "decision": decision, "route": route, "by": reviewer(req)});
    if audit.record("review_decision", record).is_err() {
        tracing::error!(
            review = id,
            "audit log full; review decision not recorded there"
        );
    }
}

/// `POST /admin/reviews/{id}/approve`: approves, runs the request on the approved route
/// (non-streaming) and stores its answer with the review.
pub async fn approve(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let route_text = body
        .route
        .ok_or_else(|| ApiError::invalid("route", "route is required: edge or cloud:<upstream>"))?;
    let route =
        ApprovedRoute::parse(&route_text).map_err(|e| ApiError::invalid("route", e.to_string()))?;
    if let ApprovedRoute::Cloud(name) = &route {
        if !state.upstreams.contains_key(name) {
            return Err(ApiError::invalid(
                "route",
                format!("no upstream named '{name}' is configured"),
            ));
        }
    }
    let store = Arc::clone(&state.reviews);
    let (id, who, note, approved) = (id.into_inner(), reviewer(&req), body.note, route.clone());
    let review = blocking(move || store.approve(&id, &who, &approved, note.as_deref())).await?;
    audit_review(
        &state,
        &review.id,
        "approve",
        &req,
        Some(&route.to_string()),
    );
    let store = Arc::clone(&state.reviews);
    let review_id = review.id.clone();
    let finished = match run_approved(&state, &review, &route).await {
        Ok(result) => blocking(move || store.complete(&review_id, &result)).await?,
        Err(e) => {
            let message = e.to_string();
            // The message may be an upstream's, quoting the held prompt; the code says enough.
            let code = e.detail().code.unwrap_or("-").to_string();
            if crate::telemetry::logging::log_prompts() {
                tracing::warn!(review = %review.id, %code, error = %message, "approved request failed");
            } else {
                tracing::warn!(review = %review.id, %code, status = e.status_code().as_u16(), "approved request failed");
            }
            blocking(move || store.fail(&review_id, &message)).await?
        }
    };
    Ok(HttpResponse::Ok().json(finished))
}

/// Replays the stored request on `route` and returns the OpenAI response body.
async fn run_approved(
    state: &AppState,
    review: &Review,
    route: &ApprovedRoute,
) -> Result<Value, ApiError> {
    let mut raw = review.request_json.clone();
    // The reviewer gets one stored answer, so streaming is switched off for the replay.
    raw["stream"] = json!(false);
    if let Some(obj) = raw.as_object_mut() {
        obj.remove("stream_options");
    }
    let surface = if review.endpoint == Surface::Completion.endpoint() {
        Surface::Completion
    } else {
        Surface::Chat
    };
    match route {
        ApprovedRoute::Cloud(name) => {
            let client = state
                .upstreams
                .get(name)
                .ok_or_else(|| ApiError::invalid("route", format!("no upstream named '{name}'")))?;
            let response = match surface {
                Surface::Chat => client.chat_completions(raw, false).await?,
                Surface::Completion => client.completions(raw, false).await?,
            };
            match response {
                UpstreamResponse::Json {
                    status: 200, body, ..
                } => Ok(body),
                UpstreamResponse::Json { status, .. } => {
                    Err(ApiError::Internal(format!("upstream answered {status}")))
                }
                UpstreamResponse::Stream(_) => Err(ApiError::Internal(
                    "upstream streamed a non-streaming request".into(),
                )),
            }
        }
        ApprovedRoute::Edge => {
            let bytes = serde_json::to_vec(&raw).map_err(|e| ApiError::Internal(e.to_string()))?;
            let spec: GenerationSpec = match surface {
                Surface::Chat => {
                    let (body, raw) = parse_json_with_raw::<ChatCompletionRequest>(&bytes)?;
                    chat_spec(body, raw, &state.settings.engine)?
                }
                Surface::Completion => {
                    let (body, raw) = parse_json_with_raw::<CompletionRequest>(&bytes)?;
                    completion_spec(body, raw, &state.settings.engine)?
                }
            };
            // Keyed by the review id: a replay lands on the same version however often it runs.
            let prepared = prepare(state, spec, &review.id).await?;
            let response = run_edge(state, prepared, surface, RequestGuard::new("review_replay"))
                .await
                .map_err(|(e, _)| e)?;
            let body = actix_web::body::to_bytes(response.into_body())
                .await
                .map_err(|_| ApiError::Internal("could not read the edge answer".into()))?;
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::Internal(format!("edge answer is not JSON: {e}")))
        }
    }
}

/// `POST /admin/policies/reload`: reloads the policy file now; a broken file keeps the
/// previous policy and answers 400 with the diagnostics.
pub async fn reload_policy(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let policy = Arc::clone(&state.policy);
    let result = web::block(move || policy.reload())
        .await
        .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))?;
    match result {
        Ok(version) => {
            if let Some(audit) = &state.audit {
                let record =
                    json!({"operation": "reload", "version": version, "by": reviewer(&req)});
                if audit.record("policy_change", record).is_err() {
                    tracing::error!("audit log full; policy reload not recorded there");
                }
            }
            Ok(HttpResponse::Ok().json(json!({"status": "reloaded", "version": version})))
        }
        Err(e) => Err(ApiError::invalid(
            "policy",
            format!(
                "policy not reloaded (version {} stays active): {e}",
                state.policy.version()
            ),
        )),
    }
}

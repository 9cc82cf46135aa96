//! HTTP glue of the routing policy: reads a request's signals, asks the policy for a decision
//! and carries it out — the local engine, a cloud upstream (relayed as is), the human-review
//! queue, or a rejection — plus `POST /v1/route/explain`, which shows the decision without
//! running anything.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::error::ApiError;
use super::generation::{prepare_with, run_edge, Prepared, RequestGuard, Surface};
use super::server_timing::ServerTiming;
use super::types::ChatCompletionRequest;
use super::validate::{chat_spec, read_json, GenerationSpec};
use super::{sse, AppState};
use crate::embeddings::EmbedInput;
use crate::governance::config::CanaryKey;
use crate::review::NewReview;
use crate::routing::{
    metrics_names as routing_metrics, Decision, EdgeHealth, Extraction, OwnedHeaders, Reason,
    RejectKind, Route, SignalError, Signals, UpstreamCircuit,
};
use crate::upstream::{UpstreamError, UpstreamResponse};

/// Who is asking: the request id and the API key's name (open mode: none).
#[derive(Debug, Clone)]
pub struct Caller {
    pub request_id: Arc<str>,
    pub api_key: Option<Arc<str>>,
}

impl Caller {
    /// The caller of an HTTP request (after the request-id and auth middleware ran).
    pub fn of(req: &HttpRequest) -> Self {
        Self {
            request_id: super::request_id::of(req),
            api_key: super::auth::principal_name(req),
        }
    }

    /// What places this request in or out of a model's canary.
    fn canary_key(&self, mode: CanaryKey) -> &str {
        match (mode, &self.api_key) {
            (CanaryKey::ApiKey, Some(key)) => key,
            (CanaryKey::ApiKey, None) | (CanaryKey::RequestId, _) => &self.request_id,
        }
    }
}

/// A request with its decision, ready to dispatch.
struct Routed {
    decision: Decision,
    signals: Signals,
    /// How the scores were obtained (scorer, PII findings), for explain and review records.
    extraction: Extraction,
    policy_version: String,
    prepared: Prepared,
    raw: Value,
    stream: bool,
}

/// Signals → decision for one request. Tokenizes on the blocking pool (the token estimate is
/// exact), never runs inference.
async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    spec: GenerationSpec,
) -> Result<Routed, ApiError> {
    // One policy for the whole decision, including a prompt its rule may apply.
    let policy = state.policy.current();
    // Kept only when a rule could still add a prompt (the request chose none): applying one
    // re-tokenizes the conversation.
    let unprompted = (spec.system_prompt.is_none()
        && matches!(spec.prompt, super::validate::PromptInput::Chat(_))
        && policy.rule_prompts().next().is_some())
    .then(|| spec.clone());
    let mut raw = spec.raw.clone();
    let stream = spec.stream;
    let requested_max = spec
        .max_tokens
        .unwrap_or(state.settings.engine.default_max_tokens);
    let model = spec.model.clone();
    let metadata = spec.metadata.clone();
    let user_text = spec.user_text.clone();
    if crate::telemetry::logging::log_prompts() {
        // Opt-in only (`logging.log_prompts`): prompts often hold personal or confidential data.
        tracing::info!(prompt = %user_text.join("\n"), "request prompt");
    }
    // The embedding (async: cache or encoder worker) comes first; signal extraction and
    // tokenization are then one blocking-pool task.
    let started = Instant::now();
    let extract = score_signals(state, metadata, headers, user_text).await;
    let canary_key = caller.canary_key(state.settings.governance.canary_key);
    let (mut prepared, extraction) = prepare_with(state, spec, canary_key, extract).await?;
    let extraction = extraction.map_err(|e| ApiError::invalid(e.param, e.message))?;
    routing_metrics::record_scoring(scorer_name(&extraction), started.elapsed(), &extraction.pii);
    let scores = extraction.scores;
    let engine = &prepared.engine;
    let estimated = prepared.prompt_ids.len().saturating_add(requested_max);
    let edge = EdgeHealth {
        // A full queue is not "unavailable": it answers 429, or a fallback takes the request.
        available: engine.is_ready(),
        queue_depth: engine.queue_depth() as u64,
        memory_pressure: engine.memory_pressure(),
        context_limit: engine.context_length() as u64,
    };
    let mut signals = Signals::new(&scores, estimated as u64, model, edge);
    signals.api_key = caller.api_key.clone();
    signals.upstreams = state
        .upstreams
        .iter()
        .map(|(name, client)| UpstreamCircuit {
            name: Arc::from(name.as_str()),
            state: client.circuit_state(),
        })
        .collect();
    let decision = policy.decide(&signals);
    routing_metrics::record_decision(&decision);
    if let (Some(mut spec), Some(prompt)) = (unprompted, policy.prompt_of(&decision.rule_id)) {
        let variables = spec
            .metadata
            .as_ref()
            .and_then(|m| m.get("prompt_variables"))
            .cloned();
        // The policy names the prompt, not the client: a prompt it cannot apply (unknown since
        // a reload, or needing variables the request lacks) is the operator's error, a 500.
        super::prompts::apply(state, &mut spec, prompt, variables.as_ref()).map_err(|e| {
            tracing::error!(rule = %decision.rule_id, %prompt, error = %e, "the policy's prompt cannot be applied");
            ApiError::Internal(format!(
                "routing rule {} applies prompt {prompt}, which cannot be applied: {e}",
                decision.rule_id
            ))
        })?;
        raw = spec.raw.clone();
        prepared = super::generation::prepare(state, spec, canary_key).await?;
    }
    if let Reason::Fallback { unavailable } = &decision.reason {
        // Known unavailable before trying (open circuit, edge down): counted with the
        // fallbacks taken after a failed attempt, so one metric shows every degradation.
        metrics::counter!(FALLBACKS_TOTAL, "from" => unavailable.route_kind(), "reason" => unavailable.label())
            .increment(1);
    }
    // One line per decision; never prompt text.
    tracing::info!(
        route = %decision.route,
        rule = %decision.rule_id,
        reason = %decision.reason,
        policy_version = %policy.version,
        classification = %signals.data_classification,
        risk = signals.risk_score,
        complexity = signals.complexity_score,
        estimated_tokens = signals.estimated_tokens,
        scorer = scorer_name(&extraction),
        pii = !extraction.pii.is_empty(),
        model_version = %prepared.served.model.version,
        model_role = prepared.served.role.label(),
        prompt = prepared.system_prompt.as_deref().unwrap_or("none"),
        "routing decision"
    );
    Ok(Routed {
        decision,
        signals,
        extraction,
        policy_version: policy.version.clone(),
        prepared,
        raw,
        stream,
    })
}

/// Reads the request's scores: explicit headers and `metadata` first, then — for what is
/// missing — the semantic scorers over the embedding of the user text (computed on the encoder
/// workers; cached for repeated prompts), else the keyword heuristics; the PII detector raises
/// the classification. The CPU part runs on the blocking pool. If the encoder cannot take the
/// request (queue full), routing falls back to the heuristics rather than failing.
async fn score_signals(
    state: &AppState,
    metadata: Option<Value>,
    headers: &HeaderMap,
    user_text: Vec<String>,
) -> impl FnOnce() -> Result<Extraction, SignalError> + Send + 'static {
    let mut embedded = None;
    if let Some((encoder, scorer)) = state.semantic().filter(|_| !user_text.is_empty()) {
        match encoder
            .embed(vec![EmbedInput::Text(user_text.join("\n"))], true)
            .await
        {
            Ok(mut v) => embedded = v.pop().map(|e| (scorer, e.vector)),
            Err(e) => {
                tracing::warn!(error = %e, "semantic scorers unavailable for this request; using the heuristics");
                routing_metrics::record_scorer_fallback();
            }
        }
    }
    let extractor = state.signals.clone();
    let headers = OwnedHeaders::from_lookup(headers);
    move || {
        let semantic = embedded.map(|(scorer, vector)| scorer.score(&vector));
        let prompt: Vec<&str> = user_text.iter().map(String::as_str).collect();
        extractor.extract_with(metadata.as_ref(), &headers, &prompt, semantic.as_ref())
    }
}

/// Which scorer produced this request's content scores.
fn scorer_name(e: &Extraction) -> &'static str {
    if e.semantic.is_some() {
        "semantic"
    } else {
        "heuristic"
    }
}

/// Routes and serves one chat or completion request.
pub(super) async fn dispatch(
    state: &AppState,
    headers: &HeaderMap,
    caller: &Caller,
    spec: GenerationSpec,
    surface: Surface,
    guard: RequestGuard,
) -> Result<HttpResponse, (ApiError, RequestGuard)> {
    let mut timing = ServerTiming::new(guard.started());
    let routed = match decide(state, headers, caller, spec).await {
        Ok(r) => r,
        Err(e) => return Err((e, guard)),
    };
    // Audited before anything runs: with `audit.fail_closed`, a decision the log cannot take
    // is not carried out.
    if let Err(e) = audit_decision(state, caller, &routed, surface) {
        return Err((e, guard));
    }
    timing.set_route(guard.started().elapsed());
    let provenance = Provenance::of(&routed);
    let mut result = carry_out(state, routed, surface, guard, &mut timing).await;
    if let Ok((response, route)) = &mut result {
        provenance.stamp(response, route);
        timing.stamp(response);
    }
    result.map(|(r, _)| r)
}

/// Which route answered, for the response headers.
enum Answered {
    Edge,
    Cloud(Arc<str>),
    Review,
}

/// Model and prompt versions of a request, stamped on its response headers.
struct Provenance {
    model: String,
    version: String,
    role: &'static str,
    prompt: Option<String>,
}

/// Response headers naming what answered.
pub const ROUTE_HEADER: &str = "x-edge-route";
pub const MODEL_VERSION_HEADER: &str = "x-edge-model-version";
pub const PROMPT_VERSION_HEADER: &str = "x-edge-prompt-version";

impl Provenance {
    fn of(routed: &Routed) -> Self {
        Self {
            model: routed.prepared.model.clone(),
            version: routed.prepared.served.model.version.clone(),
            role: routed.prepared.served.role.label(),
            prompt: routed.prepared.system_prompt.clone(),
        }
    }

    fn stamp(&self, response: &mut HttpResponse, route: &Answered) {
        use actix_web::http::header::{HeaderName, HeaderValue};
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), v);
            }
        };
        match route {
            Answered::Edge => {
                set(ROUTE_HEADER, "edge");
                set(
                    MODEL_VERSION_HEADER,
                    &format!("{}@{}", self.model, self.version),
                );
                metrics::counter!(
                    SERVED_VERSION_REQUESTS_TOTAL,
                    "model" => self.model.clone(),
                    "version" => self.version.clone(),
                    "role" => self.role,
                    "prompt" => self.prompt.clone().unwrap_or_else(|| "none".into())
                )
                .increment(1);
            }
            Answered::Cloud(name) => set(ROUTE_HEADER, &format!("cloud:{name}")),
            Answered::Review => set(ROUTE_HEADER, "human_review"),
        }
        if let Some(p) = &self.prompt {
            set(PROMPT_VERSION_HEADER, p);
        }
    }
}

/// Requests answered by the edge, by model, version, role (stable, candidate) and prompt.
pub const SERVED_VERSION_REQUESTS_TOTAL: &str = "edge_gateway_served_version_requests_total";

/// Appends the decision to the audit log (never prompt text).
fn audit_decision(
    state: &AppState,
    caller: &Caller,
    routed: &Routed,
    surface: Surface,
) -> Result<(), ApiError> {
    let Some(audit) = &state.audit else {
        return Ok(());
    };
    let s = &routed.signals;
    let record = json!({
        "request_id": &*caller.request_id,
        "api_key": caller.api_key.as_deref(),
        "endpoint": surface.endpoint(),
        "route": routed.decision.route.to_string(),
        "rule_id": routed.decision.rule_id.as_ref(),
        "reason": routed.decision.reason.to_string(),
        "policy_version": routed.policy_version,
        "model": routed.prepared.model,
        "model_version": routed.prepared.served.model.version,
        "model_role": routed.prepared.served.role.label(),
        "prompt": routed.prepared.system_prompt,
        "data_classification": s.data_classification.as_str(),
        "risk_score": s.risk_score,
        "complexity_score": s.complexity_score,
        "estimated_tokens": s.estimated_tokens,
        "scorer": scorer_name(&routed.extraction),
        "pii_kinds": routed.extraction.pii.counts.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
    });
    audit
        .record("routing_decision", record)
        .map_err(ApiError::AuditUnavailable)
}

/// Tries the decided route, then its fallbacks.
async fn carry_out(
    state: &AppState,
    routed: Routed,
    surface: Surface,
    mut guard: RequestGuard,
    timing: &mut ServerTiming,
) -> Result<(HttpResponse, Answered), (ApiError, RequestGuard)> {
    // Restricted data never has cloud targets here: the policy's guard removed them.
    let targets: Vec<Route> = std::iter::once(routed.decision.route.clone())
        .chain(routed.decision.fallbacks.iter().cloned())
        .collect();
    let mut last_error = None;
    // The edge was full and the request was shed: if the fallback fails too, the client gets
    // the edge's retryable 429 rather than the fallback's failure.
    let mut edge_busy = None;
    let mut targets = targets.into_iter().peekable();
    while let Some(target) = targets.next() {
        match target {
            Route::Edge => {
                if targets.peek().is_none() {
                    return run_edge(state, routed.prepared, surface, guard)
                        .await
                        .map(|r| (r, Answered::Edge));
                }
                // Another route follows: shed to it when the edge is full right now.
                match run_edge(state, routed.prepared.clone(), surface, guard).await {
                    Err((e @ (ApiError::QueueFull { .. } | ApiError::MemoryFull { .. }), g)) => {
                        let reason = match e {
                            ApiError::MemoryFull { .. } => "kv_budget_full",
                            _ => "queue_full",
                        };
                        tracing::info!(reason, "edge is full; shedding to the policy's fallback");
                        metrics::counter!(FALLBACKS_TOTAL, "from" => "edge", "reason" => reason)
                            .increment(1);
                        guard = g;
                        edge_busy = Some(e);
                    }
                    other => return other.map(|r| (r, Answered::Edge)),
                }
            }
            Route::Cloud(name) => {
                let asked = Instant::now();
                let relayed = relay(state, &name, &routed.raw, routed.stream, surface).await;
                timing.add_upstream(asked.elapsed());
                match relayed {
                    Ok(response) => return Ok((response, Answered::Cloud(name))),
                    Err(e) => {
                        // Only a fallback actually taken counts; without one the client gets
                        // the upstream's failure.
                        if targets.peek().is_some() {
                            tracing::warn!(upstream = %name, error = %e.for_log(), "cloud route failed; trying the policy's fallback");
                            metrics::counter!(FALLBACKS_TOTAL, "from" => "cloud", "reason" => e.kind())
                                .increment(1);
                        }
                        last_error = Some(ApiError::from(e));
                    }
                }
            }
            Route::HumanReview => {
                return submit_review(state, &routed, surface)
                    .await
                    .map(|r| (r, Answered::Review))
                    .map_err(|e| (e, guard));
            }
            Route::Reject(message) => {
                return Err((reject_error(&routed.decision, &message), guard))
            }
        }
    }
    Err((
        edge_busy
            .or(last_error)
            .unwrap_or_else(|| ApiError::Internal("no route could serve the request".into())),
        guard,
    ))
}

/// Fallbacks taken, by the failed route and why.
pub const FALLBACKS_TOTAL: &str = "edge_gateway_routing_fallbacks_total";

fn reject_error(decision: &Decision, message: &str) -> ApiError {
    match decision.reject_kind() {
        Some(RejectKind::TooLongForEdge) => ApiError::ContextLengthExceeded(message.to_string()),
        Some(RejectKind::Unavailable) => ApiError::RouteUnavailable(message.to_string()),
        Some(RejectKind::Policy) | None => ApiError::PolicyRejected {
            rule_id: decision.rule_id.to_string(),
            message: message.to_string(),
        },
    }
}

/// Sends the request body unchanged (model mapped by the client) to upstream `name` and relays
/// the answer; a stream is relayed chunk by chunk.
async fn relay(
    state: &AppState,
    name: &str,
    raw: &Value,
    stream: bool,
    surface: Surface,
) -> Result<HttpResponse, UpstreamError> {
    let Some(client) = state.upstreams.get(name) else {
        // The policy compiler checks upstream names against the config, so this is a bug.
        return Err(UpstreamError::InvalidRequest {
            upstream: Arc::from(name),
            param: None,
            message: "upstream is not configured".into(),
        });
    };
    let response = match surface {
        Surface::Chat => client.chat_completions(raw.clone(), stream).await?,
        Surface::Completion => client.completions(raw.clone(), stream).await?,
    };
    Ok(match response {
        UpstreamResponse::Json { status, body, .. } => {
            HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK)).json(body)
        }
        UpstreamResponse::Stream(s) => {
            sse::response(s.into_sse_body().map(Ok::<_, actix_web::Error>))
        }
    })
}

/// Stores the request durably for a reviewer and answers 202 with the review id.
async fn submit_review(
    state: &AppState,
    routed: &Routed,
    surface: Surface,
) -> Result<HttpResponse, ApiError> {
    let store = Arc::clone(&state.reviews);
    let new = NewReview {
        endpoint: surface.endpoint().to_string(),
        request_json: routed.raw.clone(),
        signals_json: signals_json(&routed.signals, &routed.extraction),
        rule_id: Some(routed.decision.rule_id.to_string()),
    };
    let review = web::block(move || store.submit(new))
        .await
        .map_err(|e| ApiError::Internal(format!("review task failed: {e}")))?
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/reviews/{}", review.id)))
        .json(json!({
            "id": review.id,
            "object": "review",
            "state": review.state,
            "rule_id": routed.decision.rule_id.as_ref(),
            "message": "The request needs human review before it runs. Poll the review for its state.",
        })))
}

fn signals_json(s: &Signals, e: &Extraction) -> Value {
    let sc = &e.scores;
    let semantic = e.semantic.as_ref().map(|m| {
        json!({
            "complexity": class_json(&m.complexity),
            "risk": class_json(&m.risk),
            "personal_data": class_json(&m.personal_data),
        })
    });
    json!({
        "scorer": scorer_name(e),
        "sources": {
            "data_classification": sc.data_classification_source.as_str(),
            "risk_score": sc.risk_score_source.as_str(),
            "complexity_score": sc.complexity_score_source.as_str(),
        },
        // Kinds and counts only: the matched text never leaves the detector.
        "pii": e.pii.counts.iter().map(|(k, n)| (k.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "semantic": semantic,
        "data_classification": s.data_classification.as_str(),
        "risk_score": s.risk_score,
        "complexity_score": s.complexity_score,
        "estimated_tokens": s.estimated_tokens,
        "model": s.model,
        "edge": {
            "available": s.edge.available,
            "queue_depth": s.edge.queue_depth,
            "memory_pressure": s.edge.memory_pressure,
            "context_limit": s.edge.context_limit,
        },
        "upstreams": s.upstreams.iter().map(|u| (u.name.to_string(), json!(format!("{:?}", u.state).to_lowercase()))).collect::<serde_json::Map<_, _>>(),
    })
}

fn class_json(c: &crate::routing::semantic::ClassScore) -> Value {
    json!({
        "score": c.score,
        "label": &*c.label,
        "probability": c.probability,
        "nearest_exemplar_group": &*c.nearest,
        "nearest_similarity": c.similarity,
    })
}

/// `POST /v1/route/explain`: the decision for a chat request, without running it.
pub async fn explain(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (body, raw) = read_json::<ChatCompletionRequest>(payload, &state.settings.server).await?;
    let mut spec = chat_spec(body, raw, &state.settings.engine)?;
    super::prompts::apply_requested(&state, &mut spec)?;
    let routed = decide(&state, req.headers(), &Caller::of(&req), spec).await?;
    Ok(HttpResponse::Ok().json(json!({
        "object": "route.decision",
        "route": routed.decision.route.to_string(),
        "rule_id": routed.decision.rule_id.as_ref(),
        "reason": routed.decision.reason.to_string(),
        "fallbacks": routed.decision.fallbacks.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "signals": signals_json(&routed.signals, &routed.extraction),
        "policy_version": routed.policy_version,
        "model": {
            "id": routed.prepared.model,
            "version": routed.prepared.served.model.version,
            "role": routed.prepared.served.role.label(),
        },
        "prompt": routed.prepared.system_prompt,
    })))
}

/// `GET /v1/reviews/{id}`: state of a request held for human review.
pub async fn review_status(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let store = Arc::clone(&state.reviews);
    let review = web::block(move || store.get(&id))
        .await
        .map_err(|e| ApiError::Internal(format!("review task failed: {e}")))?
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(json!({
        "id": review.id,
        "object": "review",
        "state": review.state,
        "created_at": review.created_at,
        "updated_at": review.updated_at,
        "rule_id": review.rule_id,
        "approved_route": review.approved_route.map(|r| r.to_string()),
        "result": review.result_json,
    })))
}

//! HTTP surface only: routing, extraction, validation and mapping results to OpenAI shapes.
//! All inference work lives in `engine`.

pub mod admin;
pub mod admin_models;
pub mod auth;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod generation;
pub mod health;
pub mod models;
pub mod prompts;
pub mod request_id;
pub mod routing;
pub mod server_timing;
pub mod sse;
pub mod types;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::cpu_pool::CpuPool;
use crate::embeddings::Encoder;
use crate::governance::audit::AuditLog;
use crate::governance::prompts::PromptRegistry;
use crate::models::{LoadedModel, ModelRegistry};
use crate::review::ReviewStore;
use crate::routing::{PolicyStore, SemanticScorer, SignalExtractor};
use crate::upstream::{UpstreamClient, UpstreamConfigError};
use error::ApiError;

/// The governance parts of the state: served model versions, prompts, the audit log.
pub struct Governed {
    pub models: Arc<ModelRegistry>,
    pub prompts: Arc<PromptRegistry>,
    pub audit: Option<AuditLog>,
}

/// State shared by all handlers. Models load in the background after the HTTP server (and
/// `/healthz`) came up; until then generation answers 503.
pub struct AppState {
    /// Served models and their versions (stable, canary candidate, previous).
    pub models: Arc<ModelRegistry>,
    /// Versioned system prompts (replaced whole on reload).
    pub prompts: arc_swap::ArcSwap<PromptRegistry>,
    /// Tamper-evident log of decisions and changes; `None` when disabled.
    pub audit: Option<AuditLog>,
    /// The sentence-embedding encoder, once loaded (never when `embeddings.enabled` is false).
    encoder: OnceLock<Arc<Encoder>>,
    /// Exemplar scorers over the encoder, when `routing.scorer` allows them.
    semantic: OnceLock<Arc<SemanticScorer>>,
    pub settings: Arc<Settings>,
    /// Cloud upstream clients by name (connection pools and circuit breakers live here).
    pub upstreams: BTreeMap<String, UpstreamClient>,
    /// The active routing policy (hot-reloadable).
    pub policy: Arc<PolicyStore>,
    /// Reads routing signals from metadata, headers and prompt text.
    pub signals: SignalExtractor,
    /// Durable queue of requests held for human review.
    pub reviews: Arc<ReviewStore>,
    /// API keys, scopes and per-key rate limits.
    pub auth: Authenticator,
    pub metrics: PrometheusHandle,
    /// Dedicated threads for each request's template rendering, tokenization and scoring.
    pub prepare: CpuPool,
    pub started_unix: u64,
}

impl AppState {
    /// State with no engine yet; builds the upstream clients.
    pub fn new(
        settings: Arc<Settings>,
        metrics: PrometheusHandle,
        policy: Arc<PolicyStore>,
        signals: SignalExtractor,
        reviews: Arc<ReviewStore>,
        governed: Governed,
        prepare: CpuPool,
    ) -> Result<Self, UpstreamConfigError> {
        let auth = Authenticator::new(settings.auth.keys.clone());
        let upstreams = settings
            .upstreams
            .iter()
            .map(|u| Ok((u.name.clone(), UpstreamClient::new(u.clone())?)))
            .collect::<Result<_, UpstreamConfigError>>()?;
        Ok(Self {
            models: governed.models,
            prompts: arc_swap::ArcSwap::new(governed.prompts),
            audit: governed.audit,
            encoder: OnceLock::new(),
            semantic: OnceLock::new(),
            settings,
            upstreams,
            policy,
            signals,
            reviews,
            auth,
            metrics,
            prepare,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// Publishes the loaded encoder and, if enabled, the semantic scorers built on it; later
    /// calls are ignored.
    pub fn set_embeddings(&self, encoder: Arc<Encoder>, semantic: Option<Arc<SemanticScorer>>) {
        let _ = self.encoder.set(encoder);
        if let Some(s) = semantic {
            let _ = self.semantic.set(s);
        }
    }

    /// The encoder: 404 for any model when embeddings are disabled, 503 while loading.
    pub fn encoder(&self, model: &str) -> Result<Arc<Encoder>, ApiError> {
        if !self.settings.embeddings.enabled {
            return Err(ApiError::ModelNotFound(model.to_string()));
        }
        self.encoder.get().cloned().ok_or(ApiError::NotReady {
            retry_after_secs: self.settings.engine.retry_after_secs,
        })
    }

    /// The loaded encoder, if any (for `/v1/models`).
    pub fn loaded_encoder(&self) -> Option<&Arc<Encoder>> {
        self.encoder.get()
    }

    /// Encoder and semantic scorers, when both are loaded and enabled.
    pub fn semantic(&self) -> Option<(Arc<Encoder>, Arc<SemanticScorer>)> {
        Some((
            Arc::clone(self.encoder.get()?),
            Arc::clone(self.semantic.get()?),
        ))
    }

    /// The primary model's stable version, or 503 while it is still loading.
    pub fn primary_model(&self) -> Result<Arc<LoadedModel>, ApiError> {
        self.models.primary().ok_or(ApiError::NotReady {
            retry_after_secs: self.settings.engine.retry_after_secs,
        })
    }
}

/// Registers every route; used by `main` and by in-process tests.
/// Wrap the `App` with [`request_id::assign`] (`App::new().wrap(from_fn(request_id::assign))`)
/// so every response carries `x-request-id`.
pub fn configure_app(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    cfg.app_data(state)
        // Admin bodies and queries use actix's extractors; their errors get the OpenAI shape too.
        .app_data(
            web::JsonConfig::default()
                .limit(64 * 1024)
                .error_handler(|e, _| {
                    ApiError::MalformedJson(format!("invalid JSON body: {e}")).into()
                }),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::invalid("query", e.to_string()).into()),
        )
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/v1")
                .wrap(actix_web::middleware::from_fn(auth::require_inference))
                .route("/chat/completions", web::post().to(chat::chat_completions))
                .route("/completions", web::post().to(completions::completions))
                .route("/embeddings", web::post().to(embeddings::embeddings))
                .route("/models", web::get().to(models::list))
                .route("/models/{id}", web::get().to(models::retrieve))
                .route("/route/explain", web::post().to(routing::explain))
                .route("/reviews/{id}", web::get().to(routing::review_status)),
        )
        .service(
            web::scope("/admin")
                .wrap(actix_web::middleware::from_fn(auth::require_admin))
                .route("/reviews", web::get().to(admin::list))
                .route("/reviews/{id}/approve", web::post().to(admin::approve))
                .route("/reviews/{id}/reject", web::post().to(admin::reject))
                .route("/policies/reload", web::post().to(admin::reload_policy))
                .route("/models", web::get().to(admin_models::list))
                .route(
                    "/models/{id}/candidate",
                    web::post().to(admin_models::stage),
                )
                .route("/models/{id}/canary", web::post().to(admin_models::canary))
                .route(
                    "/models/{id}/promote",
                    web::post().to(admin_models::promote),
                )
                .route(
                    "/models/{id}/rollback",
                    web::post().to(admin_models::rollback),
                )
                .route("/prompts", web::get().to(admin_models::list_prompts))
                .route(
                    "/prompts/reload",
                    web::post().to(admin_models::reload_prompts),
                ),
        )
        .default_service(web::to(not_found));
}

/// Unknown paths and wrong methods also answer in OpenAI's error shape.
async fn not_found(req: HttpRequest) -> HttpResponse {
    const KNOWN: &[&str] = &[
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
    ];
    let path = req.path().to_string();
    let err = if KNOWN.contains(&path.as_str()) || path.starts_with("/v1/models/") {
        ApiError::MethodNotAllowed(req.method().to_string())
    } else {
        ApiError::RouteNotFound {
            method: req.method().to_string(),
            path,
        }
    };
    err.error_response()
}

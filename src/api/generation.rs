//! Shared path of chat and text completions: model check, tokenization on the blocking pool,
//! context-length check, queueing, and turning engine events into a response or an SSE stream.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::sse;
use super::types::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionResponse,
    ChatDelta, CompletionChoice, CompletionResponse, Usage,
};
use super::validate::{GenerationSpec, PromptInput};
use super::AppState;
use crate::cpu_pool::CpuPoolError;
use crate::engine::{
    Engine, GenerationEvent, GenerationParams, GenerationRequest, InferenceError, SubmitError,
};
use crate::models::Served;
use crate::telemetry::metrics;

/// Per-request event buffer between worker and HTTP task.
const EVENT_CHANNEL_CAPACITY: usize = 64;

/// Which OpenAI surface a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Chat,
    Completion,
}

impl Surface {
    pub(super) fn endpoint(self) -> &'static str {
        match self {
            Surface::Chat => "chat_completions",
            Surface::Completion => "completions",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Surface::Chat => "chatcmpl-",
            Surface::Completion => "cmpl-",
        }
    }
}

/// Records request count and latency when dropped, whatever path the request took.
pub struct RequestGuard {
    endpoint: &'static str,
    started: Instant,
    status: StatusCode,
    _in_flight: metrics::InFlightGuard,
}

impl RequestGuard {
    /// Starts timing a request to `endpoint`.
    pub fn new(endpoint: &'static str) -> Self {
        Self {
            endpoint,
            started: Instant::now(),
            status: StatusCode::OK,
            _in_flight: metrics::InFlightGuard::new(),
        }
    }

    /// When the request was taken.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Sets the status that will be recorded.
    pub fn set_status(&mut self, status: StatusCode) {
        self.status = status;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        metrics::record_request(self.endpoint, self.status.as_u16(), self.started.elapsed());
    }
}

/// Serves a validated spec; errors are recorded on the guard and returned in OpenAI shape.
pub async fn serve(
    state: web::Data<AppState>,
    req: HttpRequest,
    spec: Result<GenerationSpec, ApiError>,
    surface: Surface,
) -> HttpResponse {
    let mut guard = RequestGuard::new(surface.endpoint());
    let result = match spec {
        Ok(spec) => {
            super::routing::dispatch(
                &state,
                req.headers(),
                &super::routing::Caller::of(&req),
                spec,
                surface,
                guard,
            )
            .await
        }
        Err(e) => Err((e, guard)),
    };
    match result {
        Ok(response) => response,
        Err((e, g)) => {
            guard = g;
            guard.set_status(e.status_code());
            if matches!(e, ApiError::Internal(_)) {
                tracing::error!(error = %e, "request failed");
            }
            e.error_response()
        }
    }
}

/// Runs a prepared request on the local engine (the `edge` route).
pub(super) async fn run_edge(
    state: &AppState,
    prepared: Prepared,
    surface: Surface,
    guard: RequestGuard,
) -> Result<HttpResponse, (ApiError, RequestGuard)> {
    if let Err(e) = check_context(&prepared) {
        return Err((e, guard));
    }
    let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let request = GenerationRequest {
        prompt_ids: prepared.prompt_ids.clone(),
        params: prepared.params.clone(),
        events: tx,
        enqueued_at: Instant::now(),
        reservation: None,
    };
    if let Err(e) = prepared.engine.submit(request) {
        let err = match e {
            SubmitError::QueueFull => ApiError::QueueFull {
                retry_after_secs: state.settings.engine.retry_after_secs,
            },
            SubmitError::MemoryFull => ApiError::MemoryFull {
                retry_after_secs: state.settings.engine.retry_after_secs,
            },
            SubmitError::Stopped => ApiError::NotReady {
                retry_after_secs: state.settings.engine.retry_after_secs,
            },
        };
        metrics::record_error(match err {
            ApiError::MemoryFull { .. } => "kv_budget_full",
            _ => "queue_full",
        });
        return Err((err, guard));
    }
    let response = Response {
        id: format!("{}{}", surface.id_prefix(), uuid::Uuid::new_v4().simple()),
        created: unix_now(),
        model: prepared.model,
        surface,
        include_usage: prepared.include_usage,
        return_token_ids: prepared.return_token_ids,
        prompt_ids: prepared.prompt_ids,
    };
    if prepared.stream {
        Ok(stream_response(response, rx, guard))
    } else {
        collect_response(response, rx).await.map_err(|e| (e, guard))
    }
}

/// A tokenized request, ready for routing and then the edge.
#[derive(Clone)]
pub(super) struct Prepared {
    pub engine: Arc<Engine>,
    /// The model version chosen for the request (stable or canary candidate).
    pub served: Served,
    /// `name@version` of the applied system prompt.
    pub system_prompt: Option<String>,
    pub model: String,
    pub prompt_ids: Vec<u32>,
    pub params: GenerationParams,
    stream: bool,
    include_usage: bool,
    return_token_ids: bool,
}

/// Checks the model, renders and tokenizes the prompt (on the blocking pool) and resolves
/// `max_tokens`; the context-length check is left to the edge route, since the routing policy
/// may send an over-long request to the cloud instead.
pub(super) async fn prepare(
    state: &AppState,
    spec: GenerationSpec,
    canary_key: &str,
) -> Result<Prepared, ApiError> {
    prepare_with(state, spec, canary_key, || ())
        .await
        .map(|(p, ())| p)
}

/// [`prepare`], running `extra` (other CPU work of the same request, e.g. signal extraction) in
/// the same blocking-pool task: one pool round trip instead of two. `canary_key` decides
/// whether a model's candidate version serves the request.
pub(super) async fn prepare_with<T: Send + 'static>(
    state: &AppState,
    spec: GenerationSpec,
    canary_key: &str,
    extra: impl FnOnce() -> T + Send + 'static,
) -> Result<(Prepared, T), ApiError> {
    let served = state
        .models
        .resolve(&spec.model, canary_key)
        .map_err(|e| match e {
            crate::models::RegistryError::Loading(_) => ApiError::NotReady {
                retry_after_secs: state.settings.engine.retry_after_secs,
            },
            other => ApiError::from(other),
        })?;
    let engine = Arc::clone(&served.model.engine);
    let system_prompt = spec.system_prompt.clone();
    let vocab = engine.vocab_size();
    let prompt = spec.prompt;
    let tokenizer_engine = Arc::clone(&engine);
    // Template rendering and tokenization are CPU work: keep them off the async executor.
    let (encoded, extra) = state
        .prepare
        .run(move || {
            let extra = extra();
            let encoded = match prompt {
                PromptInput::Chat(messages) => tokenizer_engine.encode_chat(&messages),
                PromptInput::Text(text) => tokenizer_engine.encode_prompt(&text),
                PromptInput::Tokens(ids) => Ok(ids),
            };
            (encoded, extra)
        })
        .await
        .map_err(|e| match e {
            CpuPoolError::Busy(_) => ApiError::QueueFull {
                retry_after_secs: state.settings.engine.retry_after_secs,
            },
            other => ApiError::Internal(format!("tokenizer task failed: {other}")),
        })?;
    let prompt_ids = encoded.map_err(|e| match e {
        InferenceError::Template(m) => ApiError::invalid("messages", m),
        other => ApiError::Internal(other.to_string()),
    })?;
    if let Some(bad) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::invalid(
            "prompt",
            format!("token id {bad} is outside the vocabulary (size {vocab})"),
        ));
    }
    let context = engine.context_length();
    let prompt_len = prompt_ids.len();
    let max_tokens = match spec.max_tokens {
        Some(m) => m,
        None => state
            .settings
            .engine
            .default_max_tokens
            .min(context.saturating_sub(prompt_len)),
    };
    Ok((
        Prepared {
            model: engine.package().id.clone(),
            engine,
            served,
            system_prompt,
            prompt_ids,
            params: GenerationParams {
                max_tokens,
                sampling: spec.sampling,
                stop: spec.stop,
                ignore_eos: spec.ignore_eos,
                use_cache: spec.use_cache,
                pin_prefix: false,
            },
            stream: spec.stream,
            include_usage: spec.include_usage,
            return_token_ids: spec.return_token_ids,
        },
        extra,
    ))
}

/// Prompt plus completion must fit the edge model's context window.
fn check_context(p: &Prepared) -> Result<(), ApiError> {
    let context = p.engine.context_length();
    let prompt_len = p.prompt_ids.len();
    let max_tokens = p.params.max_tokens;
    if prompt_len >= context || max_tokens == 0 || prompt_len.saturating_add(max_tokens) > context {
        return Err(ApiError::ContextLengthExceeded(format!(
            "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt_len} in the prompt, {max_tokens} for the completion). Please reduce the prompt or max_tokens.",
            prompt_len.saturating_add(max_tokens)
        )));
    }
    Ok(())
}

/// Identity of one response, shared by every chunk.
struct Response {
    id: String,
    created: u64,
    model: String,
    surface: Surface,
    include_usage: bool,
    return_token_ids: bool,
    prompt_ids: Vec<u32>,
}

impl Response {
    fn token_ids(&self, ids: Vec<u32>) -> Option<Vec<u32>> {
        self.return_token_ids.then_some(ids)
    }

    /// A streamed chunk carrying `text` (and optionally the finish reason).
    fn chunk(
        &self,
        text: Option<String>,
        ids: Vec<u32>,
        finish: Option<&'static str>,
        role: bool,
    ) -> String {
        // With include_usage, every chunk carries "usage": null until the final usage chunk.
        let usage = self.include_usage.then_some(None);
        let token_ids = self.token_ids(ids);
        let json = match self.surface {
            Surface::Chat => serde_json::to_string(&ChatCompletionChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: vec![ChatChunkChoice {
                    index: 0,
                    delta: ChatDelta {
                        role: role.then_some("assistant"),
                        content: text,
                    },
                    logprobs: None,
                    finish_reason: finish,
                    token_ids,
                }],
                usage,
            }),
            Surface::Completion => serde_json::to_string(&CompletionResponse {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                choices: vec![CompletionChoice {
                    index: 0,
                    text: text.unwrap_or_default(),
                    logprobs: None,
                    finish_reason: finish,
                    token_ids,
                }],
                usage,
                prompt_token_ids: None,
            }),
        };
        json.unwrap_or_default()
    }

    fn usage_chunk(&self, usage: Usage) -> String {
        let json = match self.surface {
            Surface::Chat => serde_json::to_string(&ChatCompletionChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: Vec::new(),
                usage: Some(Some(usage)),
            }),
            Surface::Completion => serde_json::to_string(&CompletionResponse {
                id: &self.id,
                object: "text_completion",
                created: self.created,
                model: &self.model,
                choices: Vec::new(),
                usage: Some(Some(usage)),
                prompt_token_ids: None,
            }),
        };
        json.unwrap_or_default()
    }
}

async fn collect_response(
    response: Response,
    mut rx: mpsc::Receiver<GenerationEvent>,
) -> Result<HttpResponse, ApiError> {
    let mut text = String::new();
    let mut ids = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenerationEvent::Delta { text: t, token_ids } => {
                text.push_str(&t);
                ids.extend(token_ids);
            }
            GenerationEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            } => {
                let usage = Usage::new(prompt_tokens, completion_tokens);
                let token_ids = response.token_ids(ids);
                let prompt_token_ids = response
                    .return_token_ids
                    .then(|| response.prompt_ids.clone());
                let body = match response.surface {
                    Surface::Chat => serde_json::to_string(&ChatCompletionResponse {
                        id: response.id.clone(),
                        object: "chat.completion",
                        created: response.created,
                        model: response.model.clone(),
                        choices: vec![ChatChoice {
                            index: 0,
                            message: AssistantMessage {
                                role: "assistant",
                                content: text,
                            },
                            logprobs: None,
                            finish_reason: finish_reason.as_str(),
                            token_ids,
                        }],
                        usage,
                        prompt_token_ids,
                    }),
                    Surface::Completion => serde_json::to_string(&CompletionResponse {
                        id: &response.id,
                        object: "text_completion",
                        created: response.created,
                        model: &response.model,
                        choices: vec![CompletionChoice {
                            index: 0,
                            text,
                            logprobs: None,
                            finish_reason: Some(finish_reason.as_str()),
                            token_ids,
                        }],
                        usage: Some(Some(usage)),
                        prompt_token_ids,
                    }),
                }
                .map_err(|e| ApiError::Internal(format!("response encoding failed: {e}")))?;
                return Ok(HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body));
            }
            GenerationEvent::Error(e) => {
                tracing::error!(error = %e, "generation failed");
                return Err(ApiError::Internal(
                    "the local model failed while generating".into(),
                ));
            }
        }
    }
    Err(ApiError::Internal(
        "generation ended without a result".into(),
    ))
}

struct StreamState {
    response: Response,
    rx: mpsc::Receiver<GenerationEvent>,
    sent_role: bool,
    finished: bool,
    _guard: RequestGuard,
}

fn stream_response(
    response: Response,
    rx: mpsc::Receiver<GenerationEvent>,
    guard: RequestGuard,
) -> HttpResponse {
    let state = StreamState {
        response,
        rx,
        sent_role: false,
        finished: false,
        _guard: guard,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        let mut out = String::new();
        if !st.sent_role {
            st.sent_role = true;
            if st.response.surface == Surface::Chat {
                // OpenAI opens every chat stream with the role and empty content.
                sse::push_event(
                    &mut out,
                    &st.response
                        .chunk(Some(String::new()), Vec::new(), None, true),
                );
                return Some((Ok::<_, actix_web::Error>(Bytes::from(out)), st));
            }
        }
        match st.rx.recv().await {
            Some(GenerationEvent::Delta { text, token_ids }) => {
                sse::push_event(
                    &mut out,
                    &st.response.chunk(Some(text), token_ids, None, false),
                );
            }
            Some(GenerationEvent::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            }) => {
                let text = (st.response.surface == Surface::Completion).then(String::new);
                sse::push_event(
                    &mut out,
                    &st.response
                        .chunk(text, Vec::new(), Some(finish_reason.as_str()), false),
                );
                if st.response.include_usage {
                    sse::push_event(
                        &mut out,
                        &st.response
                            .usage_chunk(Usage::new(prompt_tokens, completion_tokens)),
                    );
                }
                sse::push_done(&mut out);
                st.finished = true;
            }
            Some(GenerationEvent::Error(e)) => {
                tracing::error!(error = %e, "generation failed mid-stream");
                let err = ApiError::Internal("the local model failed while generating".into());
                sse::push_event(&mut out, &err.to_json());
                sse::push_done(&mut out);
                st._guard.set_status(err.status_code());
                st.finished = true;
            }
            None => {
                let err = ApiError::Internal("generation ended without a result".into());
                sse::push_event(&mut out, &err.to_json());
                sse::push_done(&mut out);
                st._guard.set_status(err.status_code());
                st.finished = true;
            }
        }
        Some((Ok(Bytes::from(out)), st))
    });
    sse::response(body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(surface: Surface) -> Response {
        Response {
            id: "chatcmpl-test".into(),
            created: 1,
            model: "m".into(),
            surface,
            include_usage: false,
            return_token_ids: false,
            prompt_ids: vec![1, 2],
        }
    }

    async fn body_of(resp: HttpResponse) -> String {
        let bytes = actix_web::body::to_bytes(resp.into_body())
            .await
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf8")
    }

    #[actix_web::test]
    async fn error_after_stream_started_is_an_error_event_then_done() {
        let (tx, rx) = mpsc::channel(8);
        tx.send(GenerationEvent::Delta {
            text: "partial".into(),
            token_ids: vec![5],
        })
        .await
        .expect("send");
        tx.send(GenerationEvent::Error(InferenceError::Runtime(
            "boom".into(),
        )))
        .await
        .expect("send");
        drop(tx);
        let body = body_of(stream_response(
            response(Surface::Chat),
            rx,
            RequestGuard::new("test"),
        ))
        .await;
        let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 4, "{body}");
        assert!(events[1].contains("\"content\":\"partial\""), "{body}");
        let err: serde_json::Value =
            serde_json::from_str(events[2].trim_start_matches("data: ")).expect("json");
        assert_eq!(err["error"]["type"], "server_error");
        assert!(
            !err["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("boom"),
            "internal detail leaked"
        );
        assert_eq!(events[3], "data: [DONE]");
    }

    #[actix_web::test]
    async fn worker_vanishing_mid_stream_still_ends_with_done() {
        let (tx, rx) = mpsc::channel::<GenerationEvent>(1);
        drop(tx);
        let body = body_of(stream_response(
            response(Surface::Completion),
            rx,
            RequestGuard::new("test"),
        ))
        .await;
        assert!(body.contains("\"error\""), "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
}

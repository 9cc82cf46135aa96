//! Reads request bodies within the size limit and turns OpenAI request types into a validated
//! generation spec; every rejection names the offending parameter.

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::types::{
    ChatCompletionRequest, CompletionRequest, MessageContent, PromptSpec, SamplingFields, StopSpec,
};
use crate::config::{EngineSettings, ServerSettings};
use crate::engine::chat_template::TemplateMessage;
use crate::engine::sampling::SamplingParams;

/// Longest accepted stop sequence, in bytes.
const MAX_STOP_BYTES: usize = 256;

/// What the engine is asked to do, after validation.
#[derive(Debug, Clone)]
pub struct GenerationSpec {
    pub model: String,
    pub prompt: PromptInput,
    /// `None`: fill the context up to the configured default.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
    pub return_token_ids: bool,
    /// False when the request opted out of the prefix cache.
    pub use_cache: bool,
    /// The body's `metadata` object (routing signals may come from it).
    pub metadata: Option<serde_json::Value>,
    /// User-authored text, for the built-in risk and complexity scorers.
    pub user_text: Vec<String>,
    /// The request body as received, relayed unchanged when the request goes to the cloud.
    pub raw: serde_json::Value,
    /// `name@version` of the versioned system prompt applied to it, if any.
    pub system_prompt: Option<String>,
}

/// Header that lets a caller opt out of the prefix cache (`off`, `false` or `no-store`).
pub const CACHE_HEADER: &str = "x-edge-cache";

/// True when `value` (from `metadata.cache` or the header) switches the cache off.
fn is_cache_off(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "off" | "false" | "no-store" | "0"
    )
}

/// Applies the `x-edge-cache` header to a validated spec.
pub fn apply_cache_header(spec: &mut GenerationSpec, headers: &actix_web::http::header::HeaderMap) {
    if let Some(v) = headers.get(CACHE_HEADER).and_then(|v| v.to_str().ok()) {
        if is_cache_off(v) {
            spec.use_cache = false;
        }
    }
}

/// The prompt in one of its accepted forms.
#[derive(Debug, Clone)]
pub enum PromptInput {
    Chat(Vec<TemplateMessage>),
    Text(String),
    Tokens(Vec<u32>),
}

/// A request type whose shared sampling fields are parsed from the same JSON object.
pub trait WithSampling: DeserializeOwned {
    /// Stores the separately parsed sampling fields.
    fn set_sampling(&mut self, sampling: SamplingFields);
}

impl WithSampling for ChatCompletionRequest {
    fn set_sampling(&mut self, sampling: SamplingFields) {
        self.sampling = sampling;
    }
}

impl WithSampling for CompletionRequest {
    fn set_sampling(&mut self, sampling: SamplingFields) {
        self.sampling = sampling;
    }
}

/// Reads the whole body, refusing more than `server.max_body_bytes` bytes or taking longer than
/// `server.client_body_timeout_ms`, and parses it into `T`.
pub async fn read_json<T: WithSampling>(
    payload: web::Payload,
    server: &ServerSettings,
) -> Result<(T, serde_json::Value), ApiError> {
    // actix times out only the request head; without this a client trickling its body a byte
    // at a time would hold the connection and its buffer for as long as it likes.
    let body = read_body(payload, server).await?;
    parse_json_with_raw(&body)
}

/// Reads the whole body within `server.client_body_timeout`, refusing more than
/// `server.max_body_bytes`.
pub async fn read_body(
    payload: web::Payload,
    server: &ServerSettings,
) -> Result<web::BytesMut, ApiError> {
    let limit = server.max_body_bytes;
    tokio::time::timeout(
        server.client_body_timeout,
        read_body_unbounded_time(payload, limit),
    )
    .await
    .map_err(|_| ApiError::RequestTimeout {
        after_ms: u64::try_from(server.client_body_timeout.as_millis()).unwrap_or(u64::MAX),
    })?
}

async fn read_body_unbounded_time(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            // actix reports a Content-Length above its own payload limit this way.
            actix_web::error::PayloadError::Overflow => ApiError::PayloadTooLarge { limit },
            other => ApiError::MalformedJson(format!("could not read request body: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a request body: the surface-specific fields and the shared sampling fields.
pub fn parse_json<T: WithSampling>(body: &[u8]) -> Result<T, ApiError> {
    parse_json_with_raw(body).map(|(request, _)| request)
}

/// Like [`parse_json`], also returning the body as a JSON value.
pub fn parse_json_with_raw<T: WithSampling>(
    body: &[u8],
) -> Result<(T, serde_json::Value), ApiError> {
    if body.is_empty() {
        return Err(ApiError::MalformedJson(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::MalformedJson(
            "request body must be a JSON object".into(),
        ));
    }
    let sampling: SamplingFields = from_value(&value)?;
    let mut request: T = from_value(&value)?;
    request.set_sampling(sampling);
    Ok((request, value))
}

/// Deserializes with the failing field's path as the error's `param`.
fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let param = if path == "." {
            missing_field_name(&inner).unwrap_or_default()
        } else {
            path
        };
        ApiError::invalid(param.clone(), format!("invalid request: {param}: {inner}"))
    })
}

/// serde reports a missing top-level field at the root path; pull its name out of the message.
fn missing_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Validates a chat request.
pub fn chat_spec(
    req: ChatCompletionRequest,
    raw: serde_json::Value,
    limits: &EngineSettings,
) -> Result<GenerationSpec, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages must contain at least one message",
        ));
    }
    if req.logprobs == Some(true) || req.top_logprobs.is_some() {
        return Err(ApiError::unsupported(
            "logprobs",
            "logprobs are not supported by this gateway",
        ));
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported(
            "tools",
            "tool calling is not supported by the local model",
        ));
    }
    if let Some(format) = &req.response_format {
        if format.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(ApiError::unsupported(
                "response_format",
                "only response_format {\"type\": \"text\"} is supported",
            ));
        }
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        let content = match m.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t,
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.into_iter().enumerate() {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        ("text", None) => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content[{j}].text"),
                                "text part without text",
                            ))
                        }
                        (other, _) => {
                            return Err(ApiError::unsupported(
                                format!("messages[{i}].content[{j}].type"),
                                format!(
                                    "content part type '{other}' is not supported; only 'text'"
                                ),
                            ))
                        }
                    }
                }
                text
            }
        };
        let role = match m.role.as_str() {
            "system" | "user" | "assistant" => m.role,
            // OpenAI's newer name for system instructions.
            "developer" => "system".to_string(),
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!(
                        "role '{other}' is not supported; use system, developer, user or assistant"
                    ),
                ))
            }
        };
        messages.push(TemplateMessage { role, content });
    }
    let max_tokens = req.max_completion_tokens.or(req.sampling.max_tokens);
    let param = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let user_text = messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| m.content.clone())
        .collect();
    common_spec(
        req.model,
        PromptInput::Chat(messages),
        max_tokens,
        param,
        req.sampling,
        limits,
        user_text,
        raw,
    )
}

/// Validates a text-completion request.
pub fn completion_spec(
    req: CompletionRequest,
    raw: serde_json::Value,
    limits: &EngineSettings,
) -> Result<GenerationSpec, ApiError> {
    if req.echo == Some(true) {
        return Err(ApiError::unsupported("echo", "echo is not supported"));
    }
    if req.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported("suffix", "suffix is not supported"));
    }
    if req.logprobs.is_some_and(|l| l > 0) {
        return Err(ApiError::unsupported(
            "logprobs",
            "logprobs are not supported by this gateway",
        ));
    }
    if req.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::unsupported(
            "best_of",
            "only best_of = 1 is supported",
        ));
    }
    let one_prompt =
        || ApiError::unsupported("prompt", "exactly one prompt per request is supported");
    let prompt = match req.prompt {
        PromptSpec::Text(t) => PromptInput::Text(t),
        PromptSpec::Texts(mut v) if v.len() == 1 => PromptInput::Text(v.remove(0)),
        PromptSpec::Tokens(ids) => PromptInput::Tokens(ids),
        PromptSpec::TokenLists(mut v) if v.len() == 1 => PromptInput::Tokens(v.remove(0)),
        PromptSpec::Texts(_) | PromptSpec::TokenLists(_) => return Err(one_prompt()),
    };
    match &prompt {
        PromptInput::Text(t) if t.is_empty() => {
            return Err(ApiError::invalid("prompt", "prompt must not be empty"))
        }
        PromptInput::Tokens(ids) if ids.is_empty() => {
            return Err(ApiError::invalid("prompt", "prompt must not be empty"))
        }
        _ => {}
    }
    let max_tokens = req.sampling.max_tokens;
    let user_text = match &prompt {
        PromptInput::Text(t) => vec![t.clone()],
        PromptInput::Tokens(_) | PromptInput::Chat(_) => Vec::new(),
    };
    common_spec(
        req.model,
        prompt,
        max_tokens,
        "max_tokens",
        req.sampling,
        limits,
        user_text,
        raw,
    )
}

#[expect(
    clippy::too_many_arguments,
    reason = "assembles the spec from both surfaces' parts"
)]
fn common_spec(
    model: String,
    prompt: PromptInput,
    max_tokens: Option<u64>,
    max_tokens_param: &str,
    s: SamplingFields,
    limits: &EngineSettings,
    user_text: Vec<String>,
    raw: serde_json::Value,
) -> Result<GenerationSpec, ApiError> {
    if let Some(n) = s.n {
        if n != 1 {
            return Err(ApiError::unsupported(
                "n",
                format!("n = {n} is not supported; only n = 1"),
            ));
        }
    }
    let max_tokens = match max_tokens {
        Some(0) => {
            return Err(ApiError::invalid(
                max_tokens_param,
                format!("{max_tokens_param} must be at least 1"),
            ))
        }
        Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        None => None,
    };
    let temperature = s.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            "temperature must be between 0 and 2",
        ));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            "top_p must be greater than 0 and at most 1",
        ));
    }
    let top_k = match s.top_k {
        None | Some(-1) => 0,
        Some(k) if k >= 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(_) => {
            return Err(ApiError::invalid(
                "top_k",
                "top_k must be 0 (off), -1 (off) or positive",
            ))
        }
    };
    for (param, value) in [
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
    ] {
        match value {
            None => {}
            Some(0.0) => {}
            Some(v) if !(-2.0..=2.0).contains(&v) => {
                return Err(ApiError::invalid(
                    param,
                    format!("{param} must be between -2 and 2"),
                ))
            }
            Some(_) => {
                return Err(ApiError::unsupported(
                    param,
                    format!("{param} is not supported; send 0 or omit it"),
                ))
            }
        }
    }
    let stop = match s.stop {
        None => Vec::new(),
        Some(StopSpec::One(s)) => vec![s],
        Some(StopSpec::Many(v)) => v,
    };
    if stop.len() > limits.max_stop_sequences {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "at most {} stop sequences are allowed",
                limits.max_stop_sequences
            ),
        ));
    }
    if stop
        .iter()
        .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::invalid(
            "stop",
            format!("stop sequences must be 1..={MAX_STOP_BYTES} bytes"),
        ));
    }
    let use_cache = match s.metadata.as_ref().and_then(|m| m.get("cache")) {
        None => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(v)) => !is_cache_off(v),
        Some(_) => {
            return Err(ApiError::invalid(
                "metadata.cache",
                "metadata.cache must be a boolean or \"off\"",
            ))
        }
    };
    if s.stream_options.is_some() && !s.stream {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options is only allowed when stream is true",
        ));
    }
    Ok(GenerationSpec {
        model,
        prompt,
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_k,
            top_p: top_p as f32,
            // Any i64 is a valid seed; reinterpret the bits.
            seed: s.seed.map(|v| v as u64),
        },
        stop,
        ignore_eos: s.ignore_eos,
        stream: s.stream,
        include_usage: s.stream_options.is_some_and(|o| o.include_usage),
        return_token_ids: s.return_token_ids,
        use_cache,
        metadata: s.metadata,
        user_text,
        raw,
        system_prompt: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn limits() -> EngineSettings {
        Settings::load_with_env(None, false)
            .expect("defaults")
            .engine
    }

    fn chat(body: &str) -> Result<GenerationSpec, ApiError> {
        let (req, raw): (ChatCompletionRequest, _) = parse_json_with_raw(body.as_bytes())?;
        chat_spec(req, raw, &limits())
    }

    fn param_of(e: ApiError) -> String {
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).expect("json");
        v["error"]["param"].as_str().unwrap_or("").to_string()
    }

    #[test]
    fn missing_messages_names_the_param() {
        let e = chat(r#"{"model":"m"}"#).expect_err("must fail");
        assert_eq!(param_of(e), "messages");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let e =
            chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#)
                .expect_err("must fail");
        assert_eq!(param_of(e), "temperature");
    }

    #[test]
    fn n_above_one_is_rejected() {
        let e = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#)
            .expect_err("must fail");
        assert_eq!(param_of(e), "n");
    }

    #[test]
    fn temperature_out_of_range_rejected() {
        let e = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#)
            .expect_err("must fail");
        assert_eq!(param_of(e), "temperature");
    }

    #[test]
    fn content_parts_are_joined_and_developer_maps_to_system() {
        let spec = chat(r#"{"model":"m","messages":[{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#)
            .expect("valid");
        let PromptInput::Chat(msgs) = spec.prompt else {
            panic!("chat prompt expected")
        };
        assert_eq!(msgs[0].role, "system");
        assert_eq!(msgs[0].content, "ab");
    }

    #[test]
    fn image_parts_are_unsupported() {
        let e = chat(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#)
            .expect_err("must fail");
        assert_eq!(param_of(e), "messages[0].content[0].type");
    }

    #[test]
    fn malformed_json_is_its_own_error() {
        let e = parse_json::<ChatCompletionRequest>(b"{not json").expect_err("must fail");
        assert!(matches!(e, ApiError::MalformedJson(_)));
    }

    #[test]
    fn too_many_stops_rejected() {
        let e = chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#).expect_err("must fail");
        assert_eq!(param_of(e), "stop");
    }
}

//! `POST /v1/embeddings`: OpenAI's embeddings API over the local encoder. `input` is a string,
//! a list of strings, a list of token ids or a list of token-id lists; `encoding_format` is
//! `float` or `base64` (little-endian f32, as OpenAI); `dimensions` is accepted only when it
//! equals the model's size (the model is not trained to be shortened). Inputs longer than
//! `embeddings.max_input_tokens` are refused, never silently truncated.

use actix_web::{web, HttpResponse, ResponseError};
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

use super::error::ApiError;
use super::generation::RequestGuard;
use super::validate::read_body;
use super::AppState;
use crate::embeddings::{EmbedError, EmbedInput};
use crate::telemetry::metrics;

/// How vectors are written in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// A validated embeddings request.
#[derive(Debug)]
pub struct EmbeddingSpec {
    model: String,
    inputs: Vec<EmbedInput>,
    /// `input` was one string or one token list: errors name `input`, not `input[0]`.
    single: bool,
    format: EncodingFormat,
    dimensions: Option<u64>,
}

/// A vector as floats (serialized as f32, so the shortest round-tripping decimal of each) or as
/// base64 of its little-endian bytes.
#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct EmbeddingResponse {
    object: &'static str,
    data: Vec<EmbeddingObject>,
    model: String,
    usage: EmbeddingUsage,
}

/// Handler: read, validate, embed on the encoder workers, answer in OpenAI's shape.
pub async fn embeddings(state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let mut guard = RequestGuard::new("embeddings");
    match serve(&state, payload).await {
        Ok(response) => response,
        Err(e) => {
            guard.set_status(e.status_code());
            if matches!(e, ApiError::Internal(_)) {
                tracing::error!(error = %e, "embeddings request failed");
            }
            metrics::record_error("embeddings");
            e.error_response()
        }
    }
}

async fn serve(state: &AppState, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload, &state.settings.server).await?;
    let spec = parse_request(&body)?;
    let encoder = state.encoder(&spec.model)?;
    let package = encoder.package();
    if spec.model != package.id {
        return Err(ApiError::ModelNotFound(spec.model));
    }
    let max_batch = state.settings.embeddings.max_batch;
    if spec.inputs.len() > max_batch {
        return Err(ApiError::invalid(
            "input",
            format!(
                "{} inputs in one request; the limit is {max_batch}",
                spec.inputs.len()
            ),
        ));
    }
    if let Some(d) = spec.dimensions {
        if d != package.dimensions as u64 {
            return Err(ApiError::unsupported(
                "dimensions",
                format!(
                    "model '{}' produces {}-dimensional embeddings and cannot shorten them; omit dimensions or send {}",
                    package.id, package.dimensions, package.dimensions
                ),
            ));
        }
    }
    let single = spec.single;
    let embedded = encoder
        .embed(spec.inputs, false)
        .await
        .map_err(|e| embed_error(e, single, state.settings.engine.retry_after_secs))?;
    let mut data = Vec::with_capacity(embedded.len());
    let mut tokens = 0usize;
    for (index, e) in embedded.iter().enumerate() {
        tokens += e.tokens;
        let embedding = match spec.format {
            EncodingFormat::Float => EmbeddingData::Float(e.vector.to_vec()),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingData::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        };
        data.push(EmbeddingObject {
            object: "embedding",
            index,
            embedding,
        });
    }
    Ok(HttpResponse::Ok().json(EmbeddingResponse {
        object: "list",
        data,
        model: package.id.clone(),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

fn input_param(single: bool, index: usize) -> String {
    if single {
        "input".to_string()
    } else {
        format!("input[{index}]")
    }
}

fn embed_error(e: EmbedError, single: bool, retry_after_secs: u64) -> ApiError {
    match e {
        EmbedError::TooLong {
            index,
            tokens,
            limit,
        } => ApiError::InputTooLong {
            param: input_param(single, index),
            message: format!(
                "This model's maximum input length is {limit} tokens, however {} has {tokens} tokens. Shorten or split the input.",
                input_param(single, index)
            ),
        },
        EmbedError::Empty { index } => {
            ApiError::invalid(input_param(single, index), "input must not be empty")
        }
        EmbedError::InvalidToken { index, id, vocab } => ApiError::invalid(
            input_param(single, index),
            format!("token id {id} is outside the vocabulary (size {vocab})"),
        ),
        EmbedError::QueueFull => ApiError::QueueFull { retry_after_secs },
        EmbedError::Stopped => ApiError::NotReady { retry_after_secs },
        EmbedError::Inference(message) => {
            tracing::error!(error = %message, "embedding failed");
            ApiError::Internal("the embedding model failed on this request".into())
        }
    }
}

const INPUT_SHAPES: &str =
    "input must be a string, an array of strings, an array of token ids, or an array of token-id arrays";

/// Validates the body; every rejection names its parameter. Pure (the handler reads the body
/// and calls it), so it can be fuzzed.
pub fn parse_request(body: &[u8]) -> Result<EmbeddingSpec, ApiError> {
    if body.is_empty() {
        return Err(ApiError::MalformedJson(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::MalformedJson(
            "request body must be a JSON object".into(),
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "model",
                "model must be a non-empty string",
            ))
        }
        None => return Err(ApiError::invalid("model", "missing field `model`")),
    };
    let (inputs, single) = match obj.get("input") {
        None => return Err(ApiError::invalid("input", "missing field `input`")),
        Some(v) => parse_input(v)?,
    };
    let format = match obj.get("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(f)) if f == "float" => EncodingFormat::Float,
        Some(Value::String(f)) if f == "base64" => EncodingFormat::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format must be 'float' or 'base64', got {other}"),
            ))
        }
    };
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(d) if d > 0 => Some(d),
            _ => {
                return Err(ApiError::invalid(
                    "dimensions",
                    "dimensions must be a positive integer",
                ))
            }
        },
    };
    if obj
        .get("user")
        .is_some_and(|u| !u.is_string() && !u.is_null())
    {
        return Err(ApiError::invalid("user", "user must be a string"));
    }
    Ok(EmbeddingSpec {
        model,
        inputs,
        single,
        format,
        dimensions,
    })
}

fn parse_input(v: &Value) -> Result<(Vec<EmbedInput>, bool), ApiError> {
    match v {
        Value::String(s) => Ok((vec![EmbedInput::Text(s.clone())], true)),
        Value::Array(items) if items.is_empty() => Err(ApiError::invalid(
            "input",
            "input must not be an empty array",
        )),
        Value::Array(items) => match &items[0] {
            Value::String(_) => items
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::String(s) => Ok(EmbedInput::Text(s.clone())),
                    _ => Err(ApiError::invalid(format!("input[{i}]"), INPUT_SHAPES)),
                })
                .collect::<Result<_, _>>()
                .map(|v| (v, false)),
            Value::Number(_) => {
                token_ids(items, "input").map(|ids| (vec![EmbedInput::Tokens(ids)], true))
            }
            Value::Array(_) => items
                .iter()
                .enumerate()
                .map(|(i, x)| match x {
                    Value::Array(ids) => {
                        token_ids(ids, &format!("input[{i}]")).map(EmbedInput::Tokens)
                    }
                    _ => Err(ApiError::invalid(format!("input[{i}]"), INPUT_SHAPES)),
                })
                .collect::<Result<_, _>>()
                .map(|v| (v, false)),
            _ => Err(ApiError::invalid("input", INPUT_SHAPES)),
        },
        _ => Err(ApiError::invalid("input", INPUT_SHAPES)),
    }
}

fn token_ids(items: &[Value], param: &str) -> Result<Vec<u64>, ApiError> {
    items
        .iter()
        .map(|x| {
            x.as_u64()
                .ok_or_else(|| ApiError::invalid(param, "token ids must be non-negative integers"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(body: &str) -> String {
        match parse_request(body.as_bytes()) {
            Err(ApiError::InvalidField { param, .. }) => param,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn accepts_every_openai_input_shape() {
        let one = parse_request(br#"{"model":"m","input":"hi"}"#).expect("string");
        assert!(one.single && one.inputs == vec![EmbedInput::Text("hi".into())]);
        let many = parse_request(br#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#)
            .expect("strings");
        assert_eq!(many.inputs.len(), 2);
        assert_eq!(many.format, EncodingFormat::Base64);
        let ids = parse_request(br#"{"model":"m","input":[1,2,3]}"#).expect("ids");
        assert_eq!(ids.inputs, vec![EmbedInput::Tokens(vec![1, 2, 3])]);
        let nested = parse_request(br#"{"model":"m","input":[[1],[2,3]],"dimensions":384}"#)
            .expect("nested");
        assert_eq!(nested.inputs.len(), 2);
        assert_eq!(nested.dimensions, Some(384));
    }

    #[test]
    fn bad_requests_name_the_parameter() {
        assert_eq!(param(r#"{"input":"x"}"#), "model");
        assert_eq!(param(r#"{"model":"m"}"#), "input");
        assert_eq!(param(r#"{"model":"m","input":[]}"#), "input");
        assert_eq!(param(r#"{"model":"m","input":{"a":1}}"#), "input");
        assert_eq!(param(r#"{"model":"m","input":["a",2]}"#), "input[1]");
        assert_eq!(param(r#"{"model":"m","input":[1,-2]}"#), "input");
        assert_eq!(param(r#"{"model":"m","input":[[1],[-2]]}"#), "input[1]");
        assert_eq!(
            param(r#"{"model":"m","input":"x","encoding_format":"int8"}"#),
            "encoding_format"
        );
        assert_eq!(
            param(r#"{"model":"m","input":"x","dimensions":0}"#),
            "dimensions"
        );
        assert!(matches!(
            parse_request(b"[1]"),
            Err(ApiError::MalformedJson(_))
        ));
    }
}

//! Applies a versioned system prompt to a chat request: `metadata.prompt` (`name` or
//! `name@version`) selects it, `metadata.prompt_variables` fills it, and the rendered text is
//! put first as a system message — in the local prompt and in the body relayed to a cloud
//! upstream alike, so both routes answer the same conversation.

use serde_json::{json, Value};

use super::error::ApiError;
use super::validate::{GenerationSpec, PromptInput};
use super::AppState;
use crate::engine::chat_template::TemplateMessage;

/// Applies the prompt `spec.metadata` asks for, if any; records its `name@version` on the spec.
pub fn apply_requested(state: &AppState, spec: &mut GenerationSpec) -> Result<(), ApiError> {
    let Some(selector) = spec.metadata.as_ref().and_then(|m| m.get("prompt")) else {
        return Ok(());
    };
    let Some(selector) = selector.as_str().map(str::to_string) else {
        return Err(ApiError::invalid(
            "metadata.prompt",
            "must be a prompt name or name@version",
        ));
    };
    let variables = spec
        .metadata
        .as_ref()
        .and_then(|m| m.get("prompt_variables"))
        .cloned();
    apply(state, spec, &selector, variables.as_ref())
}

/// Renders prompt `selector` and puts it first in `spec`'s messages.
pub fn apply(
    state: &AppState,
    spec: &mut GenerationSpec,
    selector: &str,
    variables: Option<&Value>,
) -> Result<(), ApiError> {
    let PromptInput::Chat(messages) = &mut spec.prompt else {
        return Err(ApiError::unsupported(
            "metadata.prompt",
            "versioned prompts apply to /v1/chat/completions only",
        ));
    };
    let registry = state.prompts.load();
    let prompt = registry
        .resolve(selector)
        .map_err(|e| ApiError::invalid(e.param, e.message))?;
    let text = registry
        .render(prompt, variables)
        .map_err(|e| ApiError::invalid(e.param, e.message))?;
    messages.insert(
        0,
        TemplateMessage {
            role: "system".into(),
            content: text.clone(),
        },
    );
    if let Some(list) = spec.raw.get_mut("messages").and_then(Value::as_array_mut) {
        list.insert(0, json!({"role": "system", "content": text}));
    }
    // The upstream gets the rendered prompt, not the selector: a gateway upstream would apply
    // it a second time (or not know it).
    if let Some(meta) = spec.raw.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("prompt");
        meta.remove("prompt_variables");
        if meta.is_empty() {
            if let Some(body) = spec.raw.as_object_mut() {
                body.remove("metadata");
            }
        }
    }
    spec.system_prompt = Some(prompt.label());
    Ok(())
}

//! `POST /v1/chat/completions` (and `/v1/route/explain`, same body): bytes → parsed request →
//! validated spec → the model's chat template, the path the handlers take.
#![no_main]

#[path = "common.rs"]
mod common;

use edge_gateway::api::types::ChatCompletionRequest;
use edge_gateway::api::validate::{chat_spec, parse_json_with_raw, PromptInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((request, raw)) = parse_json_with_raw::<ChatCompletionRequest>(data) else {
        return;
    };
    let Ok(spec) = chat_spec(request, raw, &common::LIMITS) else {
        return;
    };
    if let PromptInput::Chat(messages) = &spec.prompt {
        common::render(messages);
    }
});

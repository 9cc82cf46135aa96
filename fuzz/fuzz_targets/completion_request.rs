//! `POST /v1/completions`: bytes → parsed request → validated spec, as the handler does.
#![no_main]

#[path = "common.rs"]
mod common;

use edge_gateway::api::types::CompletionRequest;
use edge_gateway::api::validate::{completion_spec, parse_json_with_raw};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((request, raw)) = parse_json_with_raw::<CompletionRequest>(data) {
        let _ = completion_spec(request, raw, &common::LIMITS);
    }
});

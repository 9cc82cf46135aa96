//! `POST /v1/embeddings`: bytes → validated spec (`api::embeddings::parse_request`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edge_gateway::api::embeddings::parse_request(data);
});

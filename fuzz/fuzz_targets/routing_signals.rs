//! Routing-signal extraction from the body's `metadata` and the `x-data-classification`,
//! `x-risk-score`, `x-complexity-score` headers, plus the PII detector and heuristic scorers
//! over the user text: the handler path (`HeaderMap` → `OwnedHeaders` → `extract_with`).
//! Input: metadata JSON, the three header values and the prompt, separated by NUL bytes.
#![no_main]

use std::sync::LazyLock;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use edge_gateway::routing::signals::{
    COMPLEXITY_SCORE_HEADER, DATA_CLASSIFICATION_HEADER, RISK_SCORE_HEADER,
};
use edge_gateway::routing::{OwnedHeaders, SignalExtractor};
use libfuzzer_sys::fuzz_target;

static EXTRACTOR: LazyLock<SignalExtractor> =
    LazyLock::new(|| SignalExtractor::new().expect("built-in scorers build"));

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(5, |&b| b == 0);
    let metadata = fields
        .next()
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(m).ok());
    let mut headers = HeaderMap::new();
    for name in [
        DATA_CLASSIFICATION_HEADER,
        RISK_SCORE_HEADER,
        COMPLEXITY_SCORE_HEADER,
    ] {
        let Some(bytes) = fields.next() else { break };
        // What actix would not accept from the wire cannot reach the extractor either.
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let prompt = fields
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let owned = OwnedHeaders::from_lookup(&headers);
    let _ = EXTRACTOR.extract_with(metadata.as_ref(), &owned, &[prompt.as_ref()], None);
});

//! The cloud relay's SSE parser (`upstream::sse`). Besides "no panic", checks two properties:
//! the events do not depend on how the network splits the bytes, and every event survives
//! `encode_data` followed by parsing again (what our clients see is what the upstream sent).
#![no_main]

use edge_gateway::upstream::sse::{SseEvent, SseParser};
use libfuzzer_sys::fuzz_target;

/// Small, so the size limit is reached often enough to be exercised.
const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    let mut one = SseParser::with_limit(LIMIT);
    let whole_result = one.push(stream, &mut whole);

    let mut parts = Vec::new();
    let mut many = SseParser::with_limit(LIMIT);
    let mut parts_result = Ok(());
    let mut rest = stream;
    let mut step = u32::from(seed);
    while !rest.is_empty() && parts_result.is_ok() {
        let n = (step as usize % 9).min(rest.len());
        step = step.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 3;
        let (chunk, tail) = rest.split_at(n);
        // Empty chunks happen on real connections too.
        parts_result = many.push(chunk, &mut parts);
        rest = tail;
    }
    assert_eq!(
        whole_result.is_ok(),
        parts_result.is_ok(),
        "split changed the outcome"
    );
    if whole_result.is_err() {
        return;
    }
    assert_eq!(whole, parts, "split changed the events");
    assert_eq!(one.has_partial_event(), many.has_partial_event());

    for event in &whole {
        let mut encoded = String::new();
        event.encode_data(&mut encoded);
        let mut again = Vec::new();
        SseParser::new()
            .push(encoded.as_bytes(), &mut again)
            .expect("re-encoded event parses");
        let expected = SseEvent {
            event: None,
            data: event.data.clone(),
        };
        assert_eq!(again, vec![expected], "encode_data round trip");
    }
});

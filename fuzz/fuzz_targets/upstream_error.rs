//! A cloud upstream's error answer (status + body, any bytes) → our `UpstreamError` and the
//! client-facing error built from it.
#![no_main]

use edge_gateway::upstream::UpstreamError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_at_checked(2) else {
        return;
    };
    let code = 400 + u16::from_le_bytes([status[0], status[1]]) % 200;
    let text = String::from_utf8_lossy(body);
    let error = UpstreamError::from_status("cloud".into(), code, &text, None);
    let client = error.to_client();
    let json: serde_json::Value =
        serde_json::from_str(&client.to_json_string()).expect("client error is JSON");
    assert!(json["error"]["message"].is_string());
    let _ = error.to_string();
});

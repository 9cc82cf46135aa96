//! API keys on the HTTP surface: bearer keys from env vars, OpenAI-shaped 401 and 429 with
//! Retry-After, and open mode refusing a non-loopback listen address.

mod common;

use common::{Gateway, GENAI_MODEL};
use serde_json::Value;

const KEY: &str = "edge-test-key-0123456789abcdef";

#[tokio::test]
async fn bearer_keys_are_required_and_rate_limited() {
    let config = "auth:\n  keys:\n    - name: ci\n      key_env: EDGE_TEST_KEY\n      scopes: [inference]\n      requests_per_minute: 3\n";
    let gw = Gateway::start_with_config(GENAI_MODEL, Some(config), &[("EDGE_TEST_KEY", KEY)]).await;
    let models = gw.url("/v1/models");

    let r = gw.client.get(&models).send().await.expect("request");
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "missing_api_key");

    let r = gw
        .client
        .get(&models)
        .bearer_auth("wrong-key-wrong-key-wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key");

    for _ in 0..3 {
        let r = gw
            .client
            .get(&models)
            .bearer_auth(KEY)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
    }
    let r = gw
        .client
        .get(&models)
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Health endpoints stay open for probes.
    assert_eq!(
        gw.client
            .get(gw.url("/readyz"))
            .send()
            .await
            .expect("r")
            .status(),
        200
    );
}

#[test]
fn open_mode_refuses_a_non_loopback_listen_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check-config")
        .env("EDGE_GATEWAY__SERVER__LISTEN", "0.0.0.0:8080")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");
}

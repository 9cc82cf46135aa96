//! Secrets and prompts stay out of what the gateway writes: the real binary runs with API keys
//! and an upstream key set and logging at `trace`, against a hostile cloud upstream that echoes
//! the key it received and the request body in its error messages. Auth failures, cloud
//! failures (5xx with fallback, 4xx passed to the client), a human review approved onto the
//! failing cloud, admin calls, embeddings and explain are exercised; then stdout + stderr,
//! `/metrics`, every response body and `check-config`'s output are searched for the key strings
//! and the prompt text. With `logging.log_prompts: true` the prompt does reach the log (and the
//! keys still do not).

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{Gateway, Launch, GENAI_MODEL};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const INFERENCE_KEY: &str = "sk-inference-7f3a9c2e51d04b8a9e6f";
const ADMIN_KEY: &str = "sk-admin-41b7d09ce2aa4f36b1c5";
const UPSTREAM_KEY: &str = "sk-upstream-9d2e6a18f0c34b7ea4d1";
const PROMPT: &str = "PROMPT-MARKER-c0ffee-4d2b what is the weather on line three";

const CONFIG: &str = r#"
auth:
  keys:
    - {name: line-3, key_env: SECRETS_TEST_INFERENCE_KEY, scopes: [inference]}
    - {name: reviewer, key_env: SECRETS_TEST_ADMIN_KEY, scopes: [inference, admin]}
upstreams:
  cloud:
    base_url: "BASE"
    api_key_env: SECRETS_TEST_UPSTREAM_KEY
    max_retries: 0
"#;

/// A cloud upstream that answers every request with an error quoting the `authorization`
/// header it got and the whole request body: 500 (a fault: fallback) unless the body asks
/// for `"temperature": 0.5`, which gets 400 (the client's mistake: passed on).
struct EchoingCloud {
    base: String,
    authorizations: Arc<Mutex<Vec<String>>>,
}

impl EchoingCloud {
    async fn start() -> EchoingCloud {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&authorizations);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(echo(sock, Arc::clone(&seen)));
            }
        });
        EchoingCloud {
            base,
            authorizations,
        }
    }
}

async fn echo(mut sock: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..pos]).to_string();
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < pos + 4 + length {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        break (
            head,
            String::from_utf8_lossy(&buf[pos + 4..pos + 4 + length]).to_string(),
        );
    };
    let authorization = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    seen.lock().expect("lock").push(authorization.clone());
    let client_mistake =
        serde_json::from_str::<Value>(&body).is_ok_and(|b| b["temperature"] == json!(0.5));
    let (status, kind) = if client_mistake {
        ("400 Bad Request", "invalid_request_error")
    } else {
        ("500 Internal Server Error", "server_error")
    };
    let message = format!("rejected {body} sent with {authorization}");
    let error = json!({"error": {"message": message, "type": kind, "param": null, "code": "echo"}})
        .to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{error}",
        error.len()
    );
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Collects every response body the test saw.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        self.0.push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": "edge-tiny-genai", "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": PROMPT}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// A chat request with the bearer `auth` and explicit scores (so the route is the test's).
fn scored_chat(
    c: &reqwest::Client,
    url: &str,
    auth: &str,
    risk: &str,
    complexity: &str,
    extra: Value,
) -> reqwest::RequestBuilder {
    c.post(url)
        .header("authorization", auth)
        .header("x-risk-score", risk)
        .header("x-complexity-score", complexity)
        .json(&chat(extra))
}

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "edge-gateway-secrets-{name}-{}.log",
        std::process::id()
    ))
}

async fn start(cloud: &EchoingCloud, log: &Path, extra_env: &[(&str, &str)]) -> Gateway {
    let config = CONFIG.replace("BASE", &cloud.base);
    let mut env = vec![
        ("SECRETS_TEST_INFERENCE_KEY", INFERENCE_KEY),
        ("SECRETS_TEST_ADMIN_KEY", ADMIN_KEY),
        ("SECRETS_TEST_UPSTREAM_KEY", UPSTREAM_KEY),
        // Everything at trace (HTTP server and client included); ONNX Runtime's own graph
        // optimizer chatter at info, as it never sees request text or headers.
        ("RUST_LOG", "trace,ort=info"),
    ];
    env.extend_from_slice(extra_env);
    Gateway::launch(
        GENAI_MODEL,
        Some(&config),
        &env,
        Launch {
            output: Some(log.to_path_buf()),
            ..Launch::default()
        },
    )
    .await
}

/// Drives every path that touches keys or prompts; returns the bodies seen and `/metrics`.
async fn exercise(gw: &Gateway) -> (Seen, String) {
    let mut seen = Seen::default();
    let c = &gw.client;
    let chat_url = gw.url("/v1/chat/completions");
    let bearer = |key: &str| format!("Bearer {key}");

    // Auth failures: none, a near miss of a real key, a real key without the admin scope.
    let (s, _) = seen.send(c.post(&chat_url).json(&chat(json!({})))).await;
    assert_eq!(s, 401);
    let near_miss = format!("{INFERENCE_KEY}x");
    let (s, _) = seen
        .send(
            c.post(&chat_url)
                .header("authorization", bearer(&near_miss))
                .json(&chat(json!({}))),
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = seen
        .send(
            c.get(gw.url("/admin/reviews"))
                .header("authorization", bearer(INFERENCE_KEY)),
        )
        .await;
    assert_eq!(s, 403);

    // Edge, cloud 5xx with the edge as fallback, cloud 4xx passed on to the client (a request
    // too long for the edge: the cloud rule without fallback).
    let auth = bearer(INFERENCE_KEY);
    let (s, b) = seen
        .send(scored_chat(c, &chat_url, &auth, "0", "0.1", json!({})))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = seen
        .send(scored_chat(c, &chat_url, &auth, "0", "0.9", json!({})))
        .await;
    assert_eq!(s, 200, "the edge fallback answers: {b}");
    let (s, b) = seen
        .send(scored_chat(
            c,
            &chat_url,
            &auth,
            "0",
            "0.9",
            json!({"temperature": 0.5, "max_tokens": 100_000}),
        ))
        .await;
    assert_eq!(s, 400, "{b}");
    let message = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("[REDACTED]"),
        "the echoed key is scrubbed: {b}"
    );

    // Explain, embeddings.
    let (s, _) = seen
        .send(
            c.post(gw.url("/v1/route/explain"))
                .header("authorization", &auth)
                .json(&chat(json!({}))),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = seen
        .send(
            c.post(gw.url("/v1/embeddings"))
                .header("authorization", &auth)
                .json(&json!({"model": "all-minilm-l6-v2-int8", "input": PROMPT})),
        )
        .await;
    assert_eq!(s, 200);

    // Human review, approved onto the failing cloud by an admin.
    let (s, b) = seen
        .send(scored_chat(c, &chat_url, &auth, "95", "0.1", json!({})))
        .await;
    assert_eq!(s, 202, "{b}");
    let id = b["id"].as_str().expect("review id").to_string();
    let admin = bearer(ADMIN_KEY);
    let (s, _) = seen
        .send(
            c.get(gw.url("/admin/reviews?state=pending"))
                .header("authorization", &admin),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = seen
        .send(
            c.post(gw.url(&format!("/admin/reviews/{id}/approve")))
                .header("authorization", &admin)
                .json(&json!({"route": "cloud:cloud", "note": "ok"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "failed", "{b}");
    let (s, _) = seen
        .send(
            c.get(gw.url(&format!("/v1/reviews/{id}")))
                .header("authorization", &auth),
        )
        .await;
    assert_eq!(s, 200);

    let metrics = gw.metrics_text().await.expect("metrics");
    (seen, metrics)
}

fn assert_absent(what: &str, text: &str, needles: &[&str]) {
    for needle in needles {
        if let Some(at) = text.find(needle) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            panic!(
                "{what} contains {needle:?}: ...{}",
                &text[start..(at + needle.len())]
            );
        }
    }
}

const KEYS: [&str; 3] = [INFERENCE_KEY, ADMIN_KEY, UPSTREAM_KEY];

#[tokio::test]
async fn keys_and_prompts_never_reach_logs_metrics_or_error_bodies() {
    let cloud = EchoingCloud::start().await;
    let log = log_path("default");
    let gw = start(&cloud, &log, &[]).await;
    let (seen, metrics) = exercise(&gw).await;
    drop(gw);

    // The upstream key really was in play: the upstream received it.
    let auths = cloud.authorizations.lock().expect("lock").clone();
    assert!(
        auths.len() >= 3 && auths.iter().all(|a| a == &format!("Bearer {UPSTREAM_KEY}")),
        "{auths:?}"
    );
    let logs = std::fs::read_to_string(&log).expect("log file");
    let _ = std::fs::remove_file(&log);
    // The log really covers these paths (so an absence means something).
    for line in [
        "upstream call failed",
        "approved request failed",
        "routing decision",
    ] {
        assert!(logs.contains(line), "log has no {line:?} line");
    }
    assert!(logs.lines().count() > 100, "trace logging was on");

    assert_absent("the log", &logs, &KEYS);
    assert_absent("the log", &logs, &[PROMPT]);
    assert_absent("/metrics", &metrics, &KEYS);
    assert_absent("/metrics", &metrics, &[PROMPT]);
    for body in &seen.0 {
        assert_absent("a response body", body, &KEYS);
    }

    // check-config with the same keys prints none of them.
    let config =
        std::env::temp_dir().join(format!("edge-gateway-secrets-{}.yaml", std::process::id()));
    std::fs::write(&config, CONFIG.replace("BASE", &cloud.base)).expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("SECRETS_TEST_INFERENCE_KEY", INFERENCE_KEY)
        .env("SECRETS_TEST_ADMIN_KEY", ADMIN_KEY)
        .env("SECRETS_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
        .env("RUST_LOG", "trace")
        .output()
        .expect("check-config");
    let _ = std::fs::remove_file(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_absent("check-config output", &printed, &KEYS);
}

#[tokio::test]
async fn log_prompts_true_logs_the_prompt_but_still_no_key() {
    let cloud = EchoingCloud::start().await;
    let log = log_path("prompts");
    let gw = start(
        &cloud,
        &log,
        &[("EDGE_GATEWAY__LOGGING__LOG_PROMPTS", "true")],
    )
    .await;
    let (_seen, _metrics) = exercise(&gw).await;
    drop(gw);
    let logs = std::fs::read_to_string(&log).expect("log file");
    let _ = std::fs::remove_file(&log);
    assert!(
        logs.lines()
            .any(|l| l.contains("request prompt") && l.contains(PROMPT)),
        "the prompt is logged when asked for"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("upstream call failed") && l.contains(PROMPT)),
        "upstream messages are logged when asked for"
    );
    assert_absent("the log", &logs, &KEYS);
}

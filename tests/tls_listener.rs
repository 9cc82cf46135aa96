//! HTTPS on the listener (`server.tls`): a self-signed certificate made at test time, the real
//! binary serving a chat completion over TLS to a client that trusts only that certificate,
//! plain HTTP to the TLS port failing cleanly without hurting the server, and broken TLS
//! settings stopping `check-config` with the key and file named.

#![expect(
    clippy::expect_used,
    reason = "tests fail loudly on unexpected responses"
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Gateway, Launch, GENAI_MODEL};
use serde_json::json;

/// A certificate for 127.0.0.1 and its key, written as PEM files in a fresh directory.
struct TestCert {
    dir: PathBuf,
    cert_pem: String,
}

impl TestCert {
    fn new(name: &str) -> TestCert {
        let dir =
            std::env::temp_dir().join(format!("edge-gateway-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("self-signed certificate");
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).expect("write cert");
        std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).expect("write key");
        TestCert { dir, cert_pem }
    }

    fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.dir.join("key.pem").display().to_string()
    }

    /// A client that trusts this certificate and nothing else.
    fn client(&self) -> reqwest::Client {
        let cert =
            reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("certificate parses");
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("https client")
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn https_listener_serves_a_chat_completion_and_refuses_plain_http() {
    let cert = TestCert::new("serve");
    let (cert_file, key_file) = (cert.cert(), cert.key());
    let gw = Gateway::launch(
        GENAI_MODEL,
        None,
        &[
            ("EDGE_GATEWAY__SERVER__TLS__CERT_FILE", cert_file.as_str()),
            ("EDGE_GATEWAY__SERVER__TLS__KEY_FILE", key_file.as_str()),
        ],
        Launch {
            https_client: Some(cert.client()),
            ..Launch::default()
        },
    )
    .await;
    assert!(gw.base.starts_with("https://"), "{}", gw.base);

    let (status, body) = gw
        .post_json(
            "/v1/chat/completions",
            &json!({"model": gw.model_id().await,
                    "messages": [{"role": "user", "content": "What happened on line 3?"}],
                    "max_tokens": 8, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );

    // Plain HTTP to the TLS port: the handshake fails and the connection closes; no HTTP answer.
    let plain = gw.base.replacen("https://", "http://", 1);
    let result = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    let err = result.expect_err("plain HTTP must not get an answer from the TLS port");
    assert!(!err.is_timeout(), "closed promptly, not hung: {err}");

    // A client that does not trust the certificate is refused by its own TLS layer.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    assert!(untrusting
        .get(gw.url("/healthz"))
        .send()
        .await
        .is_err_and(|e| !e.is_timeout()));

    // The server is still fine.
    let (status, health) = gw.get_json("/readyz").await;
    assert_eq!(status, 200, "{health}");
}

/// Runs `check-config` with TLS files and returns (success, stderr).
fn check_config(cert_file: &str, key_file: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-gateway"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check-config")
        .env("EDGE_GATEWAY__SERVER__TLS__CERT_FILE", cert_file)
        .env("EDGE_GATEWAY__SERVER__TLS__KEY_FILE", key_file)
        .output()
        .expect("run check-config");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_tls_settings_stop_check_config_naming_key_and_file() {
    let cert = TestCert::new("check");
    let (ok, stderr) = check_config(&cert.cert(), &cert.key());
    assert!(ok, "a valid pair passes: {stderr}");

    let missing = cert.dir.join("missing-key.pem").display().to_string();
    let (ok, stderr) = check_config(&cert.cert(), &missing);
    assert!(!ok);
    assert!(
        stderr.contains("server.tls.key_file") && stderr.contains(&missing),
        "{stderr}"
    );

    let garbage = cert.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").expect("write");
    let garbage = garbage.display().to_string();
    let (ok, stderr) = check_config(&cert.cert(), &garbage);
    assert!(!ok);
    assert!(
        stderr.contains("server.tls.key_file") && stderr.contains(&garbage),
        "{stderr}"
    );

    // A key that belongs to another certificate.
    let other = TestCert::new("other");
    let (ok, stderr) = check_config(&cert.cert(), &other.key());
    assert!(!ok, "mismatched key accepted");
    assert!(stderr.contains("server.tls.key_file"), "{stderr}");

    // The certificate file given as key and the key as certificate.
    let (ok, stderr) = check_config(&cert.key(), &cert.cert());
    assert!(!ok);
    assert!(stderr.contains("server.tls."), "{stderr}");
    assert!(
        !stderr.contains("PRIVATE KEY-----"),
        "no key material in messages: {stderr}"
    );
}

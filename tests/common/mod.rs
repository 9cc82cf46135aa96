//! Test harness: starts the real `edge-gateway` binary on a free 127.0.0.1 port with a committed
//! model and waits until `/readyz` says ready.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]
#![expect(
    clippy::expect_used,
    reason = "a broken harness should fail the test loudly"
)]

pub mod fake_cloud;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const GENAI_MODEL: &str = "onnx/models/edge-tiny-genai";
pub const OPTIMUM_MODEL: &str = "onnx/models/edge-tiny-optimum";
/// The float16 build of the genai model (KV cache, activations and logits in float16).
pub const GENAI_FP16_MODEL: &str = "onnx/models/edge-tiny-genai-fp16";

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
}

/// Absolute path of a repository file.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Gateway {
    /// Starts the gateway on `model` with extra `EDGE_GATEWAY__...` settings.
    pub async fn start(model: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_with_config(model, None, env).await
    }

    /// Like [`Gateway::start`], with a YAML configuration file written from `config_yaml`.
    pub async fn start_with_config(
        model: &str,
        config_yaml: Option<&str>,
        env: &[(&str, &str)],
    ) -> Gateway {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg("serve");
        if let Some(yaml) = config_yaml {
            let path = std::env::temp_dir().join(format!("edge-gateway-test-{port}.yaml"));
            std::fs::write(&path, yaml).expect("write test config");
            cmd.arg("--config").arg(path);
        }
        cmd.arg("--model")
            .arg(repo_path(model))
            .env("EDGE_GATEWAY__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("EDGE_GATEWAY__LOGGING__LEVEL", "warn")
            .env("EDGE_GATEWAY__RUNTIME__INTRA_THREADS", "1")
            .env(
                "EDGE_GATEWAY__REVIEW__DB_PATH",
                std::env::temp_dir().join(format!("edge-gateway-test-{port}/reviews.db")),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn edge-gateway");
        let mut gateway = Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        gateway.wait_ready().await;
        gateway
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited during startup with {status}");
            }
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway at {} not ready within 60 s", self.base);
    }

    /// Process id of the gateway.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs JSON and returns (status, parsed body).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
        (status, json)
    }

    /// GETs `path` and returns (status, parsed body).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
        (status, json)
    }

    /// Current value of a metric line that starts with `prefix` (name plus optional labels).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The served model id.
    pub async fn model_id(&self) -> String {
        let v: serde_json::Value = self
            .client
            .get(self.url("/v1/models"))
            .send()
            .await
            .expect("models")
            .json()
            .await
            .expect("json");
        v["data"][0]["id"].as_str().expect("id").to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

//! Test harness: starts the real `edge-gateway` binary on a free 127.0.0.1 port with a committed
//! model and waits until `/readyz` says ready.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]
#![expect(
    clippy::expect_used,
    reason = "a broken harness should fail the test loudly"
)]

pub mod fake_cloud;
pub mod recorder;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const GENAI_MODEL: &str = "onnx/models/edge-tiny-genai";
pub const OPTIMUM_MODEL: &str = "onnx/models/edge-tiny-optimum";
/// The float16 build of the genai model (KV cache, activations and logits in float16).
pub const GENAI_FP16_MODEL: &str = "onnx/models/edge-tiny-genai-fp16";
/// The genai model rewritten by `onnx/requantize_dynamic.py` to dynamic int8 with per-row
/// activation scales on `MatMulInteger`: the graph format of the benchmark model.
pub const GENAI_DQ_MODEL: &str = "onnx/models/edge-tiny-genai-dq";

/// `engine.memory_budget_bytes` that holds the tiny genai model's weights once plus exactly
/// `kv_tokens` positions of its (f32) KV cache, with no runtime overhead or prefix cache.
pub fn tiny_memory_budget(kv_tokens: u64) -> String {
    let dir = repo_path(GENAI_MODEL);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("genai_config.json")).expect("genai_config.json"),
    )
    .expect("json");
    let d = &config["model"]["decoder"];
    let per_token = 2
        * d["num_hidden_layers"].as_u64().expect("layers")
        * d["num_key_value_heads"].as_u64().expect("kv heads")
        * d["head_size"].as_u64().expect("head size")
        * 4;
    let weights: u64 = ["model.onnx", "model.onnx.data"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).expect("model file").len())
        .sum();
    (weights + kv_tokens * per_token).to_string()
}

/// How [`Gateway::launch`] starts the process.
#[derive(Default)]
pub struct Launch {
    /// Talk HTTPS through this client (one that trusts the test certificate).
    pub https_client: Option<reqwest::Client>,
    /// Write stdout and stderr to this file instead of discarding stdout and passing stderr on.
    pub output: Option<PathBuf>,
    /// Collect stdout and stderr through pipes ([`Gateway::output`]); unlike a file, a pipe is
    /// not subject to a file-size limit set on the process.
    pub pipe_output: bool,
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
    output: Arc<Mutex<String>>,
    /// Temp files and dirs of this launch (config, default review store), removed on drop so
    /// repeated suite runs do not pile them up in the temp dir.
    scratch: Vec<PathBuf>,
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
        Self::launch(model, config_yaml, env, Launch::default()).await
    }

    /// Like [`Gateway::start_with_config`], with the options in `launch`.
    pub async fn launch(
        model: &str,
        config_yaml: Option<&str>,
        env: &[(&str, &str)],
        launch: Launch,
    ) -> Gateway {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-gateway"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR")).arg("serve");
        let review_dir = std::env::temp_dir().join(format!("edge-gateway-test-{port}"));
        let mut scratch = vec![review_dir.clone()];
        if let Some(yaml) = config_yaml {
            let path = std::env::temp_dir().join(format!("edge-gateway-test-{port}.yaml"));
            std::fs::write(&path, yaml).expect("write test config");
            cmd.arg("--config").arg(&path);
            scratch.push(path);
        }
        cmd.arg("--model")
            .arg(repo_path(model))
            .env("EDGE_GATEWAY__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("EDGE_GATEWAY__LOGGING__LEVEL", "warn")
            .env("EDGE_GATEWAY__RUNTIME__INTRA_THREADS", "1")
            .env(
                "EDGE_GATEWAY__REVIEW__DB_PATH",
                review_dir.join("reviews.db"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(path) = &launch.output {
            let file = std::fs::File::create(path).expect("create output file");
            cmd.stdout(file.try_clone().expect("clone output file"))
                .stderr(file);
        }
        if launch.pipe_output {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn edge-gateway");
        let output = Arc::new(Mutex::new(String::new()));
        if launch.pipe_output {
            let stdout = child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>);
            let stderr = child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>);
            for stream in [stdout, stderr].into_iter().flatten() {
                let sink = Arc::clone(&output);
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        let mut text = sink.lock().expect("output lock");
                        text.push_str(&line);
                        text.push('\n');
                    }
                });
            }
        }
        let (scheme, client) = match launch.https_client {
            Some(client) => ("https", client),
            None => ("http", reqwest::Client::new()),
        };
        let mut gateway = Gateway {
            child,
            base: format!("{scheme}://127.0.0.1:{port}"),
            client,
            output,
            scratch,
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

    /// What the process wrote so far, with [`Launch::pipe_output`].
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
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

    /// POSTs JSON and returns the response as it is.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// The `/metrics` exposition text.
    pub async fn metrics_text(&self) -> Option<String> {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    }

    /// Current value of a metric line that starts with `prefix` (name plus optional labels).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self.metrics_text().await?;
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Value of the series of metric `name` whose labels include every pair of `labels`
    /// (whatever their order in the exposition).
    pub async fn labelled_metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let series = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&series))
            .find(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
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
        for path in &self.scratch {
            remove_path(path);
        }
    }
}

/// Removes a temp file or dir if it is there.
pub fn remove_path(path: &std::path::Path) {
    let _ = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

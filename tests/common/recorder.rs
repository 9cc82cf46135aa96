//! A real HTTP server on 127.0.0.1 that records every request (path and body) and answers as
//! an OpenAI-compatible upstream (chat completions, JSON or SSE) or, on any other path, as a
//! telemetry sink. Its status can be switched while the gateway runs (e.g. 503: unreachable).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub body: Vec<u8>,
    /// Status the recorder answered with.
    pub status: u16,
}

pub struct Recorder {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    status: Arc<AtomicU16>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (r, s) = (Arc::clone(&requests), Arc::clone(&status));
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, Arc::clone(&r), Arc::clone(&s)));
            }
        });
        Recorder {
            base,
            requests,
            status,
        }
    }

    /// Base URL of the OpenAI-compatible API.
    pub fn v1(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// Answer every later request with `status` (200: normal answers).
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Bodies of the recorded requests, parsed as JSON (upstream calls).
    pub fn received(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }
}

async fn read_request(sock: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length, path) = loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let length = head
                .to_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(str::to_string))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (pos + 4, length, path);
        }
    };
    while buf.len() < head_end + length {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((path, buf[head_end..head_end + length].to_vec()))
}

async fn serve(mut sock: TcpStream, requests: Arc<Mutex<Vec<Recorded>>>, status: Arc<AtomicU16>) {
    let Some((path, body)) = read_request(&mut sock).await else {
        return;
    };
    let status = status.load(Ordering::SeqCst);
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    requests.lock().expect("lock").push(Recorded {
        path: path.clone(),
        body,
        status,
    });
    let response = if status != 200 {
        let body = json!({"error": {"message": "unavailable", "type": "server_error", "param": null, "code": null}}).to_string();
        format!("HTTP/1.1 {status} Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
    } else if path.ends_with("/completions") && json_body["stream"] == json!(true) {
        let events = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"cloud-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"from \"},\"finish_reason\":null}]}\n\n\
                      data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"cloud-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"the cloud\"},\"finish_reason\":\"stop\"}]}\n\n\
                      data: [DONE]\n\n";
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{events}", events.len())
    } else if path.ends_with("/completions") {
        let body = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "cloud-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "from the cloud"}, "text": "from the cloud", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})
        .to_string();
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
    } else {
        let body = json!({"ok": true}).to_string();
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
    };
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

//! A fake OpenAI-compatible cloud upstream: a real HTTP server on 127.0.0.1 whose behaviour a
//! test switches while the gateway runs, counting every request that reaches it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// A normal chat completion (JSON or SSE).
    Ok,
    /// The normal JSON completion, after a pause.
    Slow(Duration),
    /// `500` with an OpenAI-shaped error body.
    ServerError,
    /// Reads the request and never answers.
    Hang,
    /// Sends the SSE headers and one event, then resets the connection.
    ResetMidStream,
}

/// Counts every request that reached it; behaviour switchable while the gateway runs.
pub struct FaultyCloud {
    pub base: String,
    mode: Arc<Mutex<Mode>>,
    hits: Arc<AtomicUsize>,
}

impl FaultyCloud {
    pub async fn start(mode: Mode) -> FaultyCloud {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(AtomicUsize::new(0));
        let (m, h) = (Arc::clone(&mode), Arc::clone(&hits));
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (m, h) = (Arc::clone(&m), Arc::clone(&h));
                tokio::spawn(serve(sock, m, h));
            }
        });
        FaultyCloud { base, mode, hits }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads one request (head + content-length body); `None` when the peer went away.
async fn read_request(sock: &mut TcpStream) -> Option<Value> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < pos + 4 + length {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return serde_json::from_slice(&buf[pos + 4..pos + 4 + length]).ok();
    }
}

const CHUNK: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"cloud-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"from the cloud\"},\"finish_reason\":null}]}\n\n";

async fn serve(mut sock: TcpStream, mode: Arc<Mutex<Mode>>, hits: Arc<AtomicUsize>) {
    let Some(body) = read_request(&mut sock).await else {
        return;
    };
    hits.fetch_add(1, Ordering::SeqCst);
    let mode = *mode.lock().expect("lock");
    if let Mode::Slow(pause) = mode {
        tokio::time::sleep(pause).await;
    }
    let stream = body["stream"] == json!(true);
    let response = match mode {
        Mode::Ok | Mode::Slow(_) if stream => {
            let events = format!("{CHUNK}data: [DONE]\n\n");
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{events}", events.len())
        }
        Mode::Ok | Mode::Slow(_) => {
            let body = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "cloud-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "from the cloud"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}})
            .to_string();
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
        }
        Mode::ServerError => {
            let body = json!({"error": {"message": "upstream exploded", "type": "server_error", "param": null, "code": null}}).to_string();
            format!("HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        Mode::ResetMidStream => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let first = format!("{:x}\r\n{CHUNK}\r\n", CHUNK.len());
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(first.as_bytes()).await;
            let _ = sock.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            // SO_LINGER 0: closing sends RST instead of FIN.
            #[expect(
                deprecated,
                reason = "linger blocks drop only with a non-zero timeout; zero is how a test forces an RST"
            )]
            let _ = sock.set_linger(Some(Duration::ZERO));
            drop(sock);
            return;
        }
    };
    let _ = sock.write_all(response.as_bytes()).await;
    let _ = sock.shutdown().await;
}

//! `edge-gateway loadtest`: drives any OpenAI-compatible server with N concurrent streaming
//! requests and reports time to first token, inter-token latency, per-stream and aggregate
//! tokens/s and errors, as text and as JSON for trend tracking.
//!
//! Prompts of an exact token length are sent to `/completions` as token-id arrays (accepted by
//! OpenAI-compatible servers including this gateway and llama.cpp); `--endpoint chat` sends
//! word prompts of about that length to `/chat/completions` instead. A `--shared-prefix-ratio`
//! share of requests starts with the same first half of the prompt, which is what a shared
//! system prompt looks like to a prefix cache.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// What to send and for how long.
#[derive(Debug, Clone)]
pub struct LoadTestOptions {
    /// Base URL ending in `/v1`.
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub concurrency: usize,
    /// Total requests; `None` runs for `duration`.
    pub requests: Option<usize>,
    pub duration: Duration,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    /// Share (0–1) of requests whose first half is a prompt shared by all of them.
    pub shared_prefix_ratio: f64,
    pub chat: bool,
    /// Ask the server to ignore EOS so every request generates `max_tokens`.
    pub ignore_eos: bool,
    /// Token ids for generated prompts are drawn from `[id_floor, id_ceiling)`.
    pub id_floor: u32,
    pub id_ceiling: u32,
    pub seed: u64,
    pub progress: bool,
}

/// One finished request.
#[derive(Debug, Clone, Default)]
struct Sample {
    ttft: Option<f64>,
    gaps: Vec<f64>,
    tokens: usize,
    elapsed: f64,
    error: Option<String>,
}

/// Summary statistics of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadTestReport {
    pub concurrency: usize,
    pub requests: usize,
    pub errors: usize,
    pub error_kinds: std::collections::BTreeMap<String, usize>,
    pub wall_s: f64,
    pub generated_tokens: usize,
    pub aggregate_tok_s: f64,
    pub ttft_s: Percentiles,
    pub inter_token_s: Percentiles,
    pub per_stream_tok_s: Percentiles,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
}

/// p50 / p95 / p99 (and mean) of a sample set.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            mean: values.iter().sum::<f64>() / values.len() as f64,
        }
    }
}

impl std::fmt::Display for LoadTestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "concurrency {}: {} requests ({} errors) in {:.1} s, {} tokens generated",
            self.concurrency, self.requests, self.errors, self.wall_s, self.generated_tokens
        )?;
        writeln!(
            f,
            "  aggregate {:.1} tok/s | per stream p50 {:.1} tok/s",
            self.aggregate_tok_s, self.per_stream_tok_s.p50
        )?;
        writeln!(
            f,
            "  TTFT p50 {:.3} s  p95 {:.3} s  p99 {:.3} s",
            self.ttft_s.p50, self.ttft_s.p95, self.ttft_s.p99
        )?;
        write!(
            f,
            "  inter-token p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
            self.inter_token_s.p50 * 1e3,
            self.inter_token_s.p95 * 1e3,
            self.inter_token_s.p99 * 1e3
        )?;
        for (kind, n) in &self.error_kinds {
            write!(f, "\n  error {kind}: {n}")?;
        }
        Ok(())
    }
}

/// Runs the load test.
pub async fn run(options: LoadTestOptions) -> anyhow::Result<LoadTestReport> {
    anyhow::ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(options.max_tokens > 0, "--max-tokens must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&options.shared_prefix_ratio),
        "--shared-prefix-ratio must be within 0..=1"
    );
    anyhow::ensure!(
        options.id_ceiling > options.id_floor,
        "--token-id-range is empty"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let endpoint = format!(
        "{}/{}",
        options.url.trim_end_matches('/'),
        if options.chat {
            "chat/completions"
        } else {
            "completions"
        }
    );
    let options = Arc::new(options);
    let shared = Arc::new(prompt_ids(
        &mut rand::rngs::StdRng::seed_from_u64(options.seed),
        options.prompt_tokens / 2,
        &options,
    ));
    let issued = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut workers = Vec::with_capacity(options.concurrency);
    for worker in 0..options.concurrency {
        let (client, endpoint, options, shared, issued, samples) = (
            client.clone(),
            endpoint.clone(),
            Arc::clone(&options),
            Arc::clone(&shared),
            Arc::clone(&issued),
            Arc::clone(&samples),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed + 1 + worker as u64);
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                let more = match options.requests {
                    Some(total) => n < total,
                    None => Instant::now() < deadline,
                };
                if !more {
                    break;
                }
                let body = request_body(&options, &shared, &mut rng);
                let sample = one_request(&client, &endpoint, &options, body).await;
                if let Ok(mut s) = samples.lock() {
                    s.push(sample);
                }
            }
        }));
    }
    let progress = options.progress.then(|| {
        let (samples, options) = (Arc::clone(&samples), Arc::clone(&options));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let done = samples.lock().map_or(0, |s| s.len());
                draw_progress(&options, done, started.elapsed());
            }
        })
    });
    for w in workers {
        w.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(summarise(&options, &samples, wall))
}

fn draw_progress(options: &LoadTestOptions, done: usize, elapsed: Duration) {
    const WIDTH: usize = 30;
    let fraction = match options.requests {
        Some(total) => done as f64 / total.max(1) as f64,
        None => elapsed.as_secs_f64() / options.duration.as_secs_f64().max(1e-9),
    }
    .min(1.0);
    let filled = (fraction * WIDTH as f64) as usize;
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{}{}] {:>3.0}%  {done} requests  {:.1} s",
        "=".repeat(filled),
        " ".repeat(WIDTH - filled),
        fraction * 100.0,
        elapsed.as_secs_f64()
    );
    let _ = err.flush();
}

fn prompt_ids(rng: &mut impl Rng, len: usize, options: &LoadTestOptions) -> Vec<u32> {
    (0..len)
        .map(|_| rng.random_range(options.id_floor..options.id_ceiling))
        .collect()
}

const WORDS: [&str; 16] = [
    "line", "pump", "shift", "report", "valve", "sensor", "quality", "order", "part", "batch",
    "crew", "check", "motor", "safety", "zone", "stock",
];

fn request_body(options: &LoadTestOptions, shared: &[u32], rng: &mut impl Rng) -> Value {
    let share = rng.random_bool(options.shared_prefix_ratio);
    let mut body = if options.chat {
        let words = |rng: &mut dyn rand::RngCore, n: usize| -> Vec<&str> {
            (0..n)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect()
        };
        let own = words(rng, options.prompt_tokens.div_ceil(2)).join(" ");
        let mut messages = Vec::new();
        if share {
            let system: Vec<String> = shared
                .iter()
                .map(|id| WORDS[*id as usize % 16].to_string())
                .collect();
            messages.push(json!({"role": "system", "content": system.join(" ")}));
        } else {
            let filler = words(rng, options.prompt_tokens / 2).join(" ");
            messages.push(json!({"role": "system", "content": filler}));
        }
        messages.push(json!({"role": "user", "content": own}));
        json!({"model": options.model, "messages": messages})
    } else {
        let mut ids = if share {
            shared.to_vec()
        } else {
            prompt_ids(rng, shared.len(), options)
        };
        ids.extend(prompt_ids(rng, options.prompt_tokens - ids.len(), options));
        json!({"model": options.model, "prompt": ids})
    };
    body["max_tokens"] = json!(options.max_tokens);
    body["temperature"] = json!(0);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    if options.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    body
}

async fn one_request(
    client: &reqwest::Client,
    endpoint: &str,
    options: &LoadTestOptions,
    body: Value,
) -> Sample {
    let mut started = Instant::now();
    let mut sample = Sample::default();
    let request = || {
        let r = client.post(endpoint).json(&body);
        match &options.api_key {
            Some(key) => r.bearer_auth(key),
            None => r,
        }
    };
    let mut sent = request().send().await;
    if matches!(&sent, Err(e) if e.is_request() && !e.is_connect() && !e.is_timeout()) {
        // A pooled keep-alive connection the server had already closed (llama.cpp's server
        // does between requests) fails before anything is sent: retry once on a fresh one, as
        // HTTP clients do for idempotent requests, and time the request from the retry.
        started = Instant::now();
        sent = request().send().await;
    }
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            sample.error = Some(
                if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                }
                .into(),
            );
            return sample;
        }
    };
    if !response.status().is_success() {
        sample.error = Some(format!("http_{}", response.status().as_u16()));
        return sample;
    }
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut last: Option<Instant> = None;
    let mut usage_tokens = None;
    let mut content_events = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            sample.error = Some("stream_broken".into());
            break;
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = find_event_end(&buffer) {
            let event: Vec<u8> = buffer.drain(..end).collect();
            let text = String::from_utf8_lossy(&event);
            for data in text.lines().filter_map(|l| l.strip_prefix("data:")) {
                let data = data.trim();
                if data == "[DONE]" {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    sample.error = Some("bad_event".into());
                    continue;
                };
                if v.get("error").is_some() {
                    sample.error = Some("error_event".into());
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    usage_tokens = Some(n as usize);
                }
                let choice = &v["choices"][0];
                let has_content = choice["text"].as_str().is_some_and(|t| !t.is_empty())
                    || choice["delta"]["content"]
                        .as_str()
                        .is_some_and(|t| !t.is_empty());
                if has_content {
                    let now = Instant::now();
                    match last {
                        None => sample.ttft = Some(now.duration_since(started).as_secs_f64()),
                        Some(prev) => sample.gaps.push(now.duration_since(prev).as_secs_f64()),
                    }
                    last = Some(now);
                    content_events += 1;
                }
            }
        }
    }
    sample.tokens = usage_tokens.unwrap_or(content_events);
    sample.elapsed = started.elapsed().as_secs_f64();
    sample
}

/// Length of the first complete SSE event (through its blank line), if there is one.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn summarise(options: &LoadTestOptions, samples: &[Sample], wall: f64) -> LoadTestReport {
    let mut error_kinds = std::collections::BTreeMap::new();
    for e in samples.iter().filter_map(|s| s.error.as_ref()) {
        *error_kinds.entry(e.clone()).or_insert(0) += 1;
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let generated: usize = ok.iter().map(|s| s.tokens).sum();
    let per_stream = ok
        .iter()
        .filter_map(|s| {
            let decode = s.elapsed - s.ttft?;
            (s.tokens > 1 && decode > 0.0).then(|| (s.tokens - 1) as f64 / decode)
        })
        .collect();
    LoadTestReport {
        concurrency: options.concurrency,
        requests: samples.len(),
        errors: samples.len() - ok.len(),
        error_kinds,
        wall_s: wall,
        generated_tokens: generated,
        aggregate_tok_s: generated as f64 / wall.max(1e-9),
        ttft_s: Percentiles::of(ok.iter().filter_map(|s| s.ttft).collect()),
        inter_token_s: Percentiles::of(ok.iter().flat_map(|s| s.gaps.iter().copied()).collect()),
        per_stream_tok_s: Percentiles::of(per_stream),
        prompt_tokens: options.prompt_tokens,
        max_tokens: options.max_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranked_values() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!(p.p50, 51.0);
        assert_eq!(p.p95, 95.0);
        assert_eq!(p.p99, 99.0);
        assert!((p.mean - 50.5).abs() < 1e-9);
    }

    /// A real server on loopback that answers the first request of each connection with a
    /// two-token stream and keeps the connection open, then reads the next request on it and
    /// hangs up without answering: what a server closing idle keep-alive connections looks like
    /// to a client that reuses one at that moment.
    fn drops_reused_connections() -> (String, Arc<AtomicUsize>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut writer = stream;
                    for served in 0.. {
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        if served > 0 {
                            counter.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        let events = concat!(
                            "data: {\"choices\":[{\"text\":\"a\"}]}\n\n",
                            "data: {\"choices\":[{\"text\":\"b\"}]}\n\n",
                            "data: {\"choices\":[],\"usage\":{\"completion_tokens\":2}}\n\n",
                            "data: [DONE]\n\n"
                        );
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                            events.len()
                        );
                        if writer.write_all(head.as_bytes()).is_err()
                            || writer.write_all(events.as_bytes()).is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (url, dropped)
    }

    #[test]
    fn a_connection_the_server_dropped_is_retried_not_counted_as_an_error() {
        let (url, dropped) = drops_reused_connections();
        let options = LoadTestOptions {
            url,
            model: "m".into(),
            api_key: None,
            concurrency: 1,
            requests: Some(4),
            duration: Duration::from_secs(30),
            prompt_tokens: 8,
            max_tokens: 2,
            shared_prefix_ratio: 0.0,
            chat: false,
            ignore_eos: true,
            id_floor: 100,
            id_ceiling: 200,
            seed: 1,
            progress: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let report = runtime.block_on(run(options)).expect("load test runs");
        assert!(
            dropped.load(Ordering::SeqCst) > 0,
            "the client never reused a connection, so nothing was tested"
        );
        assert_eq!(report.requests, 4);
        assert_eq!(report.errors, 0, "{report:?}");
        assert_eq!(report.generated_tokens, 8);
    }

    #[test]
    fn sse_events_end_at_a_blank_line_in_either_line_ending() {
        assert_eq!(find_event_end(b"data: 1\n\ndata: 2"), Some(9));
        assert_eq!(find_event_end(b"data: 1\r\n\r\n"), Some(11));
        assert_eq!(find_event_end(b"data: 1\n"), None);
    }
}

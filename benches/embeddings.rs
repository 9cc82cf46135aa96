//! Embedding throughput and the latency the routing scorers add, in-process on the committed
//! INT8 model. Prints human-readable figures and one JSON line.
//!
//! ```text
//! cargo bench --bench embeddings -- [--seconds 5] [--threads N] [--routing-requests 300]
//! ```
//!
//! - embeddings/s at batch 1 and batch 32, for short inputs (the evaluation sentences, ~16
//!   tokens) and 128-token inputs; the cache is off, so every input runs through the model.
//! - scorer latency: what `api::routing` adds to a request before the policy decides —
//!   embedding the user text on the encoder worker, the three classifier heads and the PII
//!   detector — for new prompts (cache miss) and repeated ones (cache hit), next to the keyword
//!   heuristics it replaces. p50 / p95 / p99 over `--routing-requests` chat prompts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edge_gateway::embeddings::{EmbedInput, EmbeddingPackage, Encoder, EncoderOptions};
use edge_gateway::engine::runtime;
use edge_gateway::routing::{ExemplarFiles, SignalExtractor};

struct Args {
    seconds: f64,
    threads: usize,
    routing_requests: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 5.0,
        threads: 0,
        routing_requests: 300,
    };
    // `cargo test --all-targets` runs this without `--bench`: a quick smoke run instead.
    if !std::env::args().any(|a| a == "--bench") {
        args.seconds = 0.05;
        args.routing_requests = 5;
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--threads" => {
                args.threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("--threads: {e}"))?
            }
            "--routing-requests" => {
                args.routing_requests = value("--routing-requests")?
                    .parse()
                    .map_err(|e| format!("--routing-requests: {e}"))?
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The evaluation sentences: realistic, varied chat prompts.
fn sentences() -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(repo("policies/eval/signals.jsonl")).map_err(|e| e.to_string())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).map_err(|e| e.to_string())?;
            v["text"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "eval line without text".to_string())
        })
        .collect()
}

fn start_encoder(threads: usize, cache_max_bytes: u64) -> Result<std::sync::Arc<Encoder>, String> {
    let env = runtime::environment(None).map_err(|e| e.to_string())?;
    let package = EmbeddingPackage::load(&repo("onnx/models/all-minilm-l6-v2-int8"), None)
        .map_err(|e| e.to_string())?;
    Encoder::start(
        env,
        package,
        &EncoderOptions {
            workers: 1,
            max_queue: 64,
            run_batch: 32,
            max_input_tokens: 256,
            cache_max_bytes,
            intra_threads: threads,
        },
    )
    .map_err(|e| e.to_string())
}

/// Embeds batches of `batch` inputs drawn from `texts` for about `seconds`; inputs per second.
fn throughput(enc: &Encoder, texts: &[String], batch: usize, seconds: f64) -> Result<f64, String> {
    let mut done = 0usize;
    let mut at = 0usize;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds || done == 0 {
        let inputs: Vec<EmbedInput> = (0..batch)
            .map(|i| EmbedInput::Text(texts[(at + i) % texts.len()].clone()))
            .collect();
        at += batch;
        enc.embed_blocking(inputs, true)
            .map_err(|e| e.to_string())?;
        done += batch;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn summary(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort();
    (
        percentile(&d, 0.50),
        percentile(&d, 0.95),
        percentile(&d, 0.99),
    )
}

fn main() {
    if let Err(e) = run() {
        eprintln!("embeddings bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let short = sentences()?;
    let long: Vec<String> = short
        .iter()
        .map(|s| {
            // About 128 tokens: the sentence, then filler from the same domain.
            let mut t = s.clone();
            while t.split_whitespace().count() < 100 {
                t.push_str(
                    " The shift report lists machines, pallets, orders and maintenance notes.",
                );
            }
            t
        })
        .collect();

    let threads_label = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.threads
    };
    let enc = start_encoder(args.threads, 0)?;
    let mut figures = serde_json::Map::new();
    println!("embeddings: all-minilm-l6-v2-int8, {threads_label} ORT thread(s), cache off");
    for (name, texts) in [("short", &short), ("128tok", &long)] {
        let tokens = enc
            .embed_blocking(vec![EmbedInput::Text(texts[0].clone())], true)
            .map_err(|e| e.to_string())?[0]
            .tokens;
        for batch in [1usize, 32] {
            let rate = throughput(&enc, texts, batch, args.seconds)?;
            println!(
                "  {name:>6} inputs (~{tokens} tokens), batch {batch:>2}: {rate:8.1} embeddings/s"
            );
            figures.insert(format!("embeddings_per_s_{name}_batch{batch}"), rate.into());
        }
    }
    drop(enc);

    // Routing: the same steps as api::routing::score_signals, without the HTTP layer.
    let enc = start_encoder(args.threads, 32 << 20)?;
    let scorer = ExemplarFiles::load(&repo("policies/exemplars"))
        .and_then(|f| f.embed(&enc))
        .map_err(|e| e.to_string())?;
    let extractor = SignalExtractor::new().map_err(|e| e.to_string())?;
    let no_headers: &[(&str, &str)] = &[];
    let prompts: Vec<String> = (0..args.routing_requests)
        .map(|i| format!("{} (request {i})", short[i % short.len()]))
        .collect();
    let mut semantic_miss = Vec::new();
    let mut semantic_hit = Vec::new();
    let mut heuristic = Vec::new();
    for round in 0..2 {
        for p in &prompts {
            let started = Instant::now();
            let v = enc
                .embed_blocking(vec![EmbedInput::Text(p.clone())], true)
                .map_err(|e| e.to_string())?;
            let scores = scorer.score(&v[0].vector);
            let _ = extractor
                .extract_with(None, no_headers, &[p.as_str()], Some(&scores))
                .map_err(|e| e.to_string())?;
            if round == 0 {
                semantic_miss.push(started.elapsed());
            } else {
                semantic_hit.push(started.elapsed());
            }
        }
    }
    for p in &prompts {
        let started = Instant::now();
        let _ = extractor
            .extract_with(None, no_headers, &[p.as_str()], None)
            .map_err(|e| e.to_string())?;
        heuristic.push(started.elapsed());
    }
    println!(
        "routing signal latency over {} chat prompts (ms, p50 / p95 / p99):",
        prompts.len()
    );
    for (name, key, d) in [
        ("semantic, new prompt", "semantic_miss", semantic_miss),
        ("semantic, repeated prompt", "semantic_hit", semantic_hit),
        ("heuristic (before)", "heuristic", heuristic),
    ] {
        let (p50, p95, p99) = summary(d);
        println!("  {name:<26} {p50:7.3} / {p95:7.3} / {p99:7.3}");
        figures.insert(format!("scoring_ms_p50_{key}"), p50.into());
        figures.insert(format!("scoring_ms_p95_{key}"), p95.into());
    }
    println!("{}", serde_json::Value::Object(figures));
    Ok(())
}

//! End-to-end engine benchmark: TTFT for a long prompt and steady-state decode tokens/s on a
//! model directory given on the command line. Prints human-readable figures and one JSON line.
//!
//! ```text
//! cargo bench --bench generation -- [--model DIR] [--prompt-tokens 512] [--decode-tokens 128] [--runs 3] [--threads N]
//!     [--providers cuda,cpu [--require-accelerator]] [--no-fuse]
//! ```
//!
//! `--no-fuse` runs the graph's per-row int8 matmul chains on ONNX Runtime's own ops instead of
//! the fused AVX-512 VNNI operator the gateway uses by default (`runtime.fused_int8_matmul`).
//!
//! The prompt is built from token ids exactly as `benches/genai_baseline.py` builds it, so both
//! engines see the same input: BOS, then the tokenizer's ids for [`PROMPT_SENTENCE`] (no special
//! tokens) repeated and cut so the prompt is exactly `prompt-tokens` long. Both default to one
//! intra-op thread per logical CPU.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edge_gateway::cache::{PrefixCache, PrefixCacheSettings};

use edge_gateway::engine::kv::KvData;
use edge_gateway::engine::package::ModelPackage;
use edge_gateway::engine::providers::{validate_list, ProviderSettings};
use edge_gateway::engine::runner::{Runner, RunnerOptions};
use edge_gateway::engine::runtime;
use edge_gateway::engine::sampling::argmax;
use edge_gateway::engine::slots::SlotPool;
use edge_gateway::engine::tokenizer::TextTokenizer;

/// Sentence whose token ids are repeated to build the benchmark prompt.
const PROMPT_SENTENCE: &str =
    "The machine on line 3 was checked by the technician on Monday, and the weather in Berlin is sunny today.";

struct Args {
    model: PathBuf,
    prompt_tokens: usize,
    decode_tokens: usize,
    runs: usize,
    threads: usize,
    /// When set: TTFT of a request whose system prompt of this many tokens is cached vs cold.
    cached_prefix: Option<usize>,
    /// When set: decode this many sequences together through the batched slot path.
    batch: Option<usize>,
    /// Execution providers by kind, default options (`--providers cuda,cpu`); empty = cpu.
    providers: Vec<ProviderSettings>,
    require_accelerator: bool,
    /// Keep the chains as ONNX Runtime ops (`--no-fuse`).
    no_fuse: bool,
}

/// `cuda,cpu` → the providers with their default options, validated like the config's list.
fn parse_providers(list: &str) -> Result<Vec<ProviderSettings>, String> {
    let providers = list
        .split(',')
        .map(|kind| {
            serde_json::from_value(serde_json::json!({ "kind": kind.trim() }))
                .map_err(|e| format!("--providers: {e}"))
        })
        .collect::<Result<Vec<ProviderSettings>, String>>()?;
    validate_list(&providers).map_err(|e| format!("--providers: {e}"))?;
    Ok(providers)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model: PathBuf::from(edge_gateway::config::DEFAULT_MODEL_DIR),
        prompt_tokens: 512,
        decode_tokens: 128,
        runs: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cached_prefix: None,
        batch: None,
        providers: Vec::new(),
        require_accelerator: false,
        no_fuse: false,
    };
    // `cargo test --all-targets` runs this without `--bench`: do a quick smoke run instead.
    if !std::env::args().any(|a| a == "--bench") {
        args.prompt_tokens = 32;
        args.decode_tokens = 8;
        args.runs = 1;
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--model" => args.model = PathBuf::from(value("--model")?),
            "--prompt-tokens" => {
                args.prompt_tokens = value("--prompt-tokens")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--decode-tokens" => {
                args.decode_tokens = value("--decode-tokens")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "--runs" => args.runs = value("--runs")?.parse().map_err(|e| format!("{e}"))?,
            "--threads" => {
                args.threads = value("--threads")?.parse().map_err(|e| format!("{e}"))?
            }
            "--cached-prefix" => {
                args.cached_prefix = Some(
                    value("--cached-prefix")?
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                )
            }
            "--batch" => args.batch = Some(value("--batch")?.parse().map_err(|e| format!("{e}"))?),
            "--providers" => args.providers = parse_providers(&value("--providers")?)?,
            "--require-accelerator" => args.require_accelerator = true,
            "--no-fuse" => args.no_fuse = true,
            // cargo bench passes --bench to harness=false targets.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.model.as_os_str().is_empty() {
        return Err(
            "usage: generation --model DIR [--prompt-tokens N] [--decode-tokens N] [--runs N]"
                .into(),
        );
    }
    Ok(args)
}

/// BOS followed by `sentence` repeated, cut to `len` tokens.
fn prompt_source(bos: u32, sentence: &[u32], len: usize) -> Vec<u32> {
    let mut prompt = vec![bos];
    while prompt.len() < len {
        prompt.extend_from_slice(sentence);
    }
    prompt.truncate(len);
    prompt
}

/// TTFT of `prompt` cold vs with its first `prefix` tokens restored from the prefix cache, using
/// the same lookup/import/prefill steps as the serving path.
fn prefix_cache_ttft(
    runner: &mut Runner,
    package: &ModelPackage,
    prompt: &[u32],
    prefix: usize,
    args: &Args,
) -> Result<(), String> {
    let cache = PrefixCache::new(
        PrefixCacheSettings {
            enabled: true,
            block_tokens: 16,
            max_bytes: 1 << 30,
            ttl: Duration::from_secs(3600),
            idle: Duration::from_secs(3600),
        },
        &package.version_key(),
    );
    let e = |e: edge_gateway::engine::InferenceError| e.to_string();
    let mut logits = Vec::new();
    // Prime the cache with the system prompt alone, as a pinned prompt would be.
    let mut state = runner.new_state(prefix).map_err(e)?;
    runner
        .forward(&mut state, &prompt[..prefix], &mut logits)
        .map_err(e)?;
    let bt = cache.block_tokens();
    let blocks = prefix / bt;
    let data = runner.export_blocks(&state, 0, blocks, bt).map_err(e)?;
    cache.insert(&prompt[..blocks * bt], 0, data, true);

    let capacity = prompt.len() + 1;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for run in 0..=args.runs {
        let t0 = Instant::now();
        let mut state = runner.new_state(capacity).map_err(e)?;
        runner.forward(&mut state, prompt, &mut logits).map_err(e)?;
        let cold_token = argmax(&logits);
        let cold_s = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut state = runner.new_state(capacity).map_err(e)?;
        let hit = cache.lookup(prompt);
        let slices: Vec<&KvData> = hit.blocks.iter().map(|b| b.data()).collect();
        runner.import_blocks(&mut state, &slices, bt).map_err(e)?;
        runner
            .forward(&mut state, &prompt[hit.tokens..], &mut logits)
            .map_err(e)?;
        let warm_token = argmax(&logits);
        let warm_s = t1.elapsed().as_secs_f64();
        if cold_token != warm_token {
            return Err(format!(
                "cached first token {warm_token} differs from cold {cold_token}"
            ));
        }
        if run > 0 {
            println!("run {run}: cold TTFT {cold_s:.3} s, cached TTFT {warm_s:.4} s ({} of {} tokens restored)", hit.tokens, prompt.len());
            cold.push(cold_s);
            warm.push(warm_s);
        }
    }
    let (cold, warm) = (median(cold), median(warm));
    println!(
        "prefix cache, {} ({}), {} threads: {prefix}-token cached system prompt + {} new tokens: cold TTFT {cold:.3} s, cached TTFT {warm:.4} s, ratio {:.3}",
        package.id,
        package.layout_name(),
        args.threads,
        prompt.len() - prefix,
        warm / cold
    );
    println!("{{\"engine\":\"edge-gateway\",\"cold_ttft_s\":{cold:.4},\"cached_ttft_s\":{warm:.4},\"ratio\":{:.4}}}", warm / cold);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Decode throughput of `batch` sequences stepped together through the slot pool (the path
/// the scheduler uses for shared-buffer models), without HTTP or scheduling around it.
fn batched_decode(
    runner: &mut Runner,
    prompt: &[u32],
    batch: usize,
    args: &Args,
) -> Result<(), String> {
    let e = |e: edge_gateway::engine::InferenceError| e.to_string();
    let capacity = prompt.len() + args.decode_tokens + 1;
    let mut pool = SlotPool::new(runner.layout(), batch, capacity);
    let mut logits = Vec::new();
    let mut rates = Vec::new();
    for run in 0..=args.runs {
        let mut tokens = Vec::with_capacity(batch);
        for slot in 0..batch {
            pool.reset(slot);
            runner
                .prefill_slot(&mut pool, slot, prompt, &mut logits)
                .map_err(e)?;
            tokens.push(argmax(&logits));
        }
        let t = Instant::now();
        for _ in 1..args.decode_tokens {
            runner
                .decode_slots(&mut pool, &tokens, &mut logits)
                .map_err(e)?;
            let vocab = logits.len() / batch;
            for (i, token) in tokens.iter_mut().enumerate() {
                *token = argmax(&logits[i * vocab..(i + 1) * vocab]);
            }
        }
        let rate = (batch * (args.decode_tokens - 1)) as f64 / t.elapsed().as_secs_f64();
        if run > 0 {
            println!("run {run}: batch {batch}: {rate:.1} tok/s aggregate");
            rates.push(rate);
        }
    }
    let rate = median(rates);
    println!(
        "batch {batch}, prompt {} tokens, decode {} tokens, median of {} runs: {rate:.1} tok/s aggregate",
        args.prompt_tokens, args.decode_tokens, args.runs
    );
    println!(
        "{}",
        serde_json::json!({"batch": batch, "aggregate_decode_tok_s": rate})
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("generation bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let env = runtime::environment(None).map_err(|e| e.to_string())?;
    let package = ModelPackage::load(&args.model, None).map_err(|e| e.to_string())?;
    let tokenizer = TextTokenizer::load(&package.tokenizer_file).map_err(|e| e.to_string())?;
    let mut runner = Runner::load(
        env,
        &package,
        &RunnerOptions {
            intra_threads: args.threads,
            optimized_graph_dir: None,
            providers: args.providers.clone(),
            require_accelerator: args.require_accelerator,
            max_batch: args.batch.unwrap_or(1),
            fuse_int8_matmul: !args.no_fuse,
            ..RunnerOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    println!(
        "execution provider: {}, KV {}, logits {}",
        runner.execution_provider(),
        runner.layout().kv_type.name(),
        runner.layout().logits_type.name()
    );

    let sentence = tokenizer
        .encode(PROMPT_SENTENCE, false)
        .map_err(|e| e.to_string())?;
    let bos = package
        .bos_token_id
        .ok_or("the model config has no bos_token_id")?;
    let mut prompt = vec![bos];
    while prompt.len() < args.prompt_tokens {
        prompt.extend_from_slice(&sentence);
    }
    prompt.truncate(args.prompt_tokens);
    if let Some(prefix) = args.cached_prefix {
        return prefix_cache_ttft(
            &mut runner,
            &package,
            &prompt_source(bos, &sentence, prefix + 24),
            prefix,
            &args,
        );
    }
    let capacity = prompt.len() + args.decode_tokens;
    if let Some(batch) = args.batch {
        return batched_decode(&mut runner, &prompt, batch, &args);
    }

    let mut logits = Vec::new();
    let mut ttfts = Vec::new();
    let mut rates = Vec::new();
    // One untimed run warms the session (allocator arenas, kernel selection).
    for run in 0..=args.runs {
        let mut state = runner.new_state(capacity).map_err(|e| e.to_string())?;
        let mut detok = tokenizer.stream();
        let t0 = Instant::now();
        runner
            .forward(&mut state, &prompt, &mut logits)
            .map_err(|e| e.to_string())?;
        let mut token = argmax(&logits);
        let _ = detok.step(token);
        let ttft = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut in_forward = Duration::ZERO;
        for _ in 1..args.decode_tokens {
            let tf = Instant::now();
            runner
                .forward(&mut state, &[token], &mut logits)
                .map_err(|e| e.to_string())?;
            in_forward += tf.elapsed();
            token = argmax(&logits);
            let _ = detok.step(token);
        }
        let rate = (args.decode_tokens - 1) as f64 / t1.elapsed().as_secs_f64();
        if run > 0 {
            println!(
                "run {run}: ttft {ttft:.3} s, decode {rate:.1} tok/s ({:.1}% of decode time inside forward)",
                100.0 * in_forward.as_secs_f64() / t1.elapsed().as_secs_f64()
            );
            ttfts.push(ttft);
            rates.push(rate);
        }
    }
    let (ttft, rate) = (median(ttfts), median(rates));
    println!(
        "edge-gateway {} ({}), {} threads: prompt {} tokens, decode {} tokens, median of {} runs: TTFT {:.3} s, decode {:.1} tok/s",
        package.id,
        package.layout_name(),
        args.threads,
        args.prompt_tokens,
        args.decode_tokens,
        args.runs,
        ttft,
        rate
    );
    println!("{{\"engine\":\"edge-gateway\",\"ttft_s\":{ttft:.4},\"decode_tok_s\":{rate:.2}}}");
    Ok(())
}

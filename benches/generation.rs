//! End-to-end engine benchmark: TTFT for a long prompt and steady-state decode tokens/s on a
//! model directory given on the command line. Prints human-readable figures and one JSON line.
//!
//! ```text
//! cargo bench --bench generation -- [--model DIR] [--prompt-tokens 512] [--decode-tokens 128] [--runs 3] [--threads N]
//! ```
//!
//! The prompt is built from token ids exactly as `benches/genai_baseline.py` builds it, so both
//! engines see the same input: BOS, then the tokenizer's ids for [`PROMPT_SENTENCE`] (no special
//! tokens) repeated and cut so the prompt is exactly `prompt-tokens` long. Both default to one
//! intra-op thread per logical CPU.

use std::path::PathBuf;
use std::time::Instant;

use edge_gateway::engine::package::ModelPackage;
use edge_gateway::engine::runner::{Runner, RunnerOptions};
use edge_gateway::engine::runtime;
use edge_gateway::engine::sampling::argmax;
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
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model: PathBuf::from(edge_gateway::config::DEFAULT_MODEL_DIR),
        prompt_tokens: 512,
        decode_tokens: 128,
        runs: 3,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
        },
    )
    .map_err(|e| e.to_string())?;

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
    let capacity = prompt.len() + args.decode_tokens;

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
        for _ in 1..args.decode_tokens {
            runner
                .forward(&mut state, &[token], &mut logits)
                .map_err(|e| e.to_string())?;
            token = argmax(&logits);
            let _ = detok.step(token);
        }
        let rate = (args.decode_tokens - 1) as f64 / t1.elapsed().as_secs_f64();
        if run > 0 {
            println!("run {run}: ttft {ttft:.3} s, decode {rate:.1} tok/s");
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

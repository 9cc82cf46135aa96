//! `edge-gateway` binary: parses the CLI, loads config, starts telemetry, loads the model and
//! serves the OpenAI-compatible API. Everything else lives in the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use clap::{Parser, Subcommand};

use edge_gateway::api::{configure_app, request_id, AppState, Governed};
use edge_gateway::config::Settings;
use edge_gateway::cpu_pool::CpuPool;
use edge_gateway::embeddings::{EmbeddingPackage, Encoder, EncoderOptions};
use edge_gateway::engine::{runtime, EngineOptions};
use edge_gateway::governance::audit;
use edge_gateway::governance::commands::{self, EvalRequest};
use edge_gateway::governance::package::{verify_package, SignOptions};
use edge_gateway::governance::prompts::PromptRegistry;
use edge_gateway::governance::signing::KeySource;
use edge_gateway::models::{ModelLoader, ModelRegistry, RegistrySettings};
use edge_gateway::review::ReviewStore;
use edge_gateway::routing::{
    self, ExemplarFiles, PolicySet, PolicyStore, ScorerMode, SignalExtractor,
};
use edge_gateway::telemetry::{logging, metrics};

// Per request on the cloud path the gateway makes hundreds of small allocations (JSON values,
// headers, strings); glibc malloc spent about 5% of the gateway's CPU there at 1000 rps, much
// of it consolidating fastbins. ONNX Runtime keeps its own allocator inside its library.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "edge-gateway",
    version,
    about = "OpenAI-compatible edge LLM gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API.
    Serve {
        /// YAML configuration file (defaults + this file + EDGE_GATEWAY__* environment).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Model package directory; overrides model.path.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Validate the configuration (and the routing policy it names) and exit.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Routing policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Drive an OpenAI-compatible server with concurrent streaming requests and report TTFT,
    /// inter-token latency and tokens/s.
    Loadtest(LoadtestArgs),
    /// Model package tools: keys, signing, verification.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Run an evaluation set (JSONL) against a model package and record its quality score.
    Eval(EvalArgs),
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write a new ed25519 key pair: PREFIX.key (private, mode 0600) and PREFIX.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write DIR/manifest.json (digests of every file) and DIR/manifest.sig.
    Sign {
        /// Private key file (PKCS#8 PEM or 64 hex digits).
        #[arg(long, conflicts_with = "key_env", required_unless_present = "key_env")]
        key: Option<PathBuf>,
        /// Environment variable holding the private key instead.
        #[arg(long)]
        key_env: Option<String>,
        /// Package version (required the first time; then kept from the manifest).
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Overrides what the graph's operators show.
        #[arg(long)]
        quantization: Option<String>,
        dir: PathBuf,
    },
    /// Check DIR's signature and every file's digest; non-zero exit naming the first problem.
    Verify {
        /// Public key file(s) (SPKI PEM or 64 hex digits).
        #[arg(long, required_unless_present = "pubkey_env")]
        pubkey: Vec<PathBuf>,
        #[arg(long)]
        pubkey_env: Option<String>,
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Model package directory.
    #[arg(long)]
    model: PathBuf,
    /// Evaluation set (JSON lines).
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also run the set against this configured upstream, for comparison.
    #[arg(long)]
    upstream: Option<String>,
    /// Print the scores without writing them into the manifest.
    #[arg(long)]
    no_write: bool,
    /// Version for a package without a manifest yet.
    #[arg(long)]
    version: Option<String>,
    /// Also print every item's output.
    #[arg(long)]
    verbose: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of every audit segment; non-zero exit naming the first bad line.
    Verify {
        /// Audit directory (default: audit.dir from the configuration).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct LoadtestArgs {
    /// Base URL of the API, ending in /v1.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    url: String,
    /// Model name to request.
    #[arg(long, default_value = "edge-tiny-genai")]
    model: String,
    /// Bearer key; defaults to the EDGE_GATEWAY_LOADTEST_API_KEY environment variable.
    #[arg(long, env = "EDGE_GATEWAY_LOADTEST_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Concurrent streams.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Total requests (default: run for --duration).
    #[arg(long)]
    requests: Option<usize>,
    /// Seconds to run when --requests is not given.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Prompt length in tokens (sent as token ids to /completions; about that many words for chat).
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens to generate per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Share (0-1) of requests that start with the same half-prompt (a shared system prompt).
    #[arg(long, default_value_t = 0.0)]
    shared_prefix_ratio: f64,
    /// Use /chat/completions with word prompts instead of token ids to /completions.
    #[arg(long)]
    chat: bool,
    /// Let the model stop at EOS (by default every request generates --max-tokens).
    #[arg(long)]
    allow_eos: bool,
    /// Token ids for generated prompts are drawn from this half-open range.
    #[arg(long, default_value = "100..1000")]
    token_id_range: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the YAML test cases in DIR/tests against the policies in DIR; non-zero exit on a mismatch.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("edge-gateway: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::CheckConfig { config } => {
            let settings = Settings::load(config.as_deref())?;
            let policy = PolicySet::load(&settings.routing.policy, &settings.upstream_names())?;
            for warning in &policy.warnings {
                println!("warning: {warning}");
            }
            let prompts = PromptRegistry::load(&settings.prompts.dir, &settings.prompts.defaults)?;
            check_policy_prompts(&policy, &prompts)?;
            println!(
                "prompts OK: {} version(s) in {}",
                prompts.labels().len(),
                settings.prompts.dir.display()
            );
            for m in settings.served_models() {
                if let Some(v) = verify_package(&m.path, &settings.governance.trust)? {
                    println!(
                        "model {} OK: version {}, {} files match the manifest",
                        m.id,
                        v.manifest.version,
                        v.manifest.files.len()
                    );
                }
            }
            if let Some(files) = exemplar_files(&settings)? {
                println!(
                    "exemplars OK: {} ({} complexity, {} risk, {} personal-data texts)",
                    settings.routing.exemplars.display(),
                    count_texts(&files.complexity),
                    count_texts(&files.risk),
                    count_texts(&files.pii)
                );
            }
            println!(
                "configuration OK: listen {}, model {}, policy {} (version {})",
                settings.server.listen,
                settings.model.path.display(),
                settings.routing.policy.display(),
                policy.version
            );
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Test { dir, config },
        } => {
            let settings = Settings::load(config.as_deref())?;
            let report = routing::run_policy_tests(&dir, &settings.upstream_names())?;
            anyhow::ensure!(
                report.success(),
                "{} policy test case(s) failed",
                report.failed
            );
            Ok(())
        }
        Command::Loadtest(args) => loadtest(args),
        Command::Model { command } => model_command(command),
        Command::Eval(args) => eval_command(args),
        Command::Audit {
            command: AuditCommand::Verify { dir, config },
        } => audit_verify(dir, config),
        Command::Serve { config, model } => {
            let mut settings = Settings::load(config.as_deref())?;
            if let Some(dir) = model {
                settings.model.path = dir;
            }
            serve(settings)
        }
    }
}

/// The exemplar files the semantic scorers will use, validated; `None` when they are not used
/// (embeddings disabled or `routing.scorer: heuristic`).
fn exemplar_files(settings: &Settings) -> anyhow::Result<Option<ExemplarFiles>> {
    if !settings.embeddings.enabled || settings.routing.scorer == ScorerMode::Heuristic {
        return Ok(None);
    }
    Ok(Some(ExemplarFiles::load(&settings.routing.exemplars)?))
}

/// Every prompt a policy rule names must exist (later reloads are checked per request).
fn check_policy_prompts(policy: &PolicySet, prompts: &PromptRegistry) -> anyhow::Result<()> {
    for (rule, prompt) in policy.rule_prompts() {
        prompts.resolve(prompt).map_err(|e| {
            anyhow::anyhow!(
                "{}: rule {rule}: prompt {prompt}: {}",
                policy.source_path.display(),
                e.message
            )
        })?;
    }
    Ok(())
}

fn count_texts(set: &routing::semantic::ExemplarSet) -> usize {
    set.groups.iter().map(|g| g.texts.len()).sum()
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    logging::init(&settings.logging);
    // SIGXFSZ's default action kills the process when a write passes RLIMIT_FSIZE (a
    // container's or ulimit's file-size limit). With a handler the write fails with EFBIG
    // instead, and the review store (or audit log) answers that failure without dying.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .context("installing the SIGXFSZ handler")?;
    // Fail fast, before binding, on what an operator must fix: the runtime library, the
    // packages and their signatures, prompts, exemplars, the audit log.
    let env = runtime::environment(settings.runtime.ort_dylib_path.as_deref())?;
    for m in settings.served_models() {
        verify_package(&m.path, &settings.governance.trust)?;
    }
    let embedding_package = settings
        .embeddings
        .enabled
        .then(|| {
            EmbeddingPackage::load(&settings.embeddings.path, settings.embeddings.id.as_deref())
        })
        .transpose()?;
    let exemplars = exemplar_files(&settings)?;
    let prompts = Arc::new(PromptRegistry::load(
        &settings.prompts.dir,
        &settings.prompts.defaults,
    )?);
    let handle = metrics::install()
        .map_err(anyhow::Error::msg)
        .context("metrics recorder")?;
    let audit_log = settings.audit.as_ref().map(audit::start).transpose()?;
    let policy = Arc::new(PolicyStore::load(
        &settings.routing.policy,
        &settings.upstream_names(),
    )?);
    for warning in &policy.current().warnings {
        tracing::warn!(%warning, "routing policy warning");
    }
    check_policy_prompts(&policy.current(), &prompts)?;
    tracing::info!(policy = %settings.routing.policy.display(), version = %policy.version(), "routing policy loaded");
    if let Some(log) = &audit_log {
        tracing::info!(dir = %log.dir().display(), committed_seq = log.committed_seq(), "audit log open");
        let record = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "policy_version": policy.version(),
            "prompts": prompts.all().map(|p| serde_json::json!({"prompt": p.label(), "sha256": p.sha256})).collect::<Vec<_>>(),
        });
        log.record("startup", record)
            .map_err(|e| anyhow::anyhow!("audit log: {e}"))?;
        policy.set_audit(log.clone());
    }
    // Kept alive for the life of the server; dropping it stops the watcher.
    let _policy_watcher = settings
        .routing
        .reload_interval
        .map(|i| policy.watch(i))
        .transpose()?;
    let settings = Arc::new(settings);
    let registry = Arc::new(ModelRegistry::new(
        settings.served_models(),
        RegistrySettings {
            min_quality_score: settings.governance.min_quality_score,
            state_file: Some(settings.governance.model_state_path.clone()),
        },
        audit_log.clone(),
    ));
    let state = web::Data::new(AppState::new(
        Arc::clone(&settings),
        handle,
        policy,
        SignalExtractor::new()?,
        Arc::new(ReviewStore::open(&settings.review_db_path)?),
        Governed {
            models: Arc::clone(&registry),
            prompts,
            audit: audit_log,
        },
        CpuPool::new(
            "request-prep",
            settings.server.prepare_threads,
            settings.server.prepare_queue,
        )?,
    )?);
    if state.auth.is_open() {
        tracing::warn!(listen = %settings.server.listen, "no API keys configured: running open, loopback only");
    } else {
        tracing::info!(keys = settings.auth.keys.len(), "API keys required on /v1");
    }
    for (name, client) in &state.upstreams {
        let s = client.settings();
        tracing::info!(upstream = %name, base_url = %s.base_url, key = s.api_key.is_some(), "cloud upstream configured");
    }

    let loader = Arc::new(ModelLoader::new(
        env,
        EngineOptions::from_settings(&settings),
        settings.governance.trust.clone(),
    )?);
    let encoder_options = EncoderOptions::from_settings(&settings);
    let loader_state = state.clone();
    // Sessions load in the background so /healthz answers while /readyz reports loading. The
    // encoder and its exemplars load first, so a ready gateway always routes with them.
    std::thread::Builder::new()
        .name("model-loader".into())
        .spawn(move || {
            if let Some(p) = embedding_package {
                if let Err(e) =
                    start_embeddings(env, p, &encoder_options, exemplars.as_ref(), &loader_state)
                {
                    tracing::error!(error = %e, "embedding model failed to load");
                    eprintln!("edge-gateway: {e:#}");
                    std::process::exit(1);
                }
            }
            if let Err(e) = registry.load_all(loader) {
                tracing::error!(error = %e, "model failed to load");
                eprintln!("edge-gateway: {e}");
                std::process::exit(1);
            }
            for (id, s) in registry.states().unwrap_or_default() {
                let engine = &s.stable.engine;
                let p = engine.package();
                tracing::info!(
                    model = %id,
                    version = %s.stable.version,
                    candidate = s.candidate.as_ref().map(|c| c.model.version.as_str()),
                    layout = p.layout_name(),
                    context_length = engine.context_length(),
                    execution_provider = engine.execution_provider(),
                    ready_after_ms = started.elapsed().as_millis() as u64,
                    "model loaded and warmed; ready"
                );
            }
        })
        .context("spawning the model loader")?;

    let server_settings = settings.server.clone();
    // Built here, from the files checked at load, so key material never sits in `Settings`.
    let tls = server_settings
        .tls
        .as_ref()
        .map(|t| t.server_config())
        .transpose()?;
    tracing::info!(listen = %server_settings.listen, tls = tls.is_some(), "starting HTTP server");
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(request_id::assign))
                .configure(|cfg| configure_app(cfg, state.clone()))
        })
        .workers(server_settings.http_workers)
        // Without it Nagle holds a response's later writes (a streamed body's chunks, SSE
        // events) until the client ACKs the first, and delayed ACKs make that tens of ms.
        .tcp_nodelay(true)
        .client_request_timeout(Duration::from_millis(
            server_settings.client_request_timeout_ms,
        ))
        .keep_alive(Duration::from_secs(server_settings.keep_alive_secs))
        // Bounds a connection that is closing but whose client stops reading (0 = no limit).
        .client_disconnect_timeout(Duration::from_millis(
            server_settings.client_disconnect_timeout_ms,
        ))
        // actix handles SIGTERM/SIGINT: stop accepting, wait this long for in-flight
        // requests (streams included), then drop them, which cancels their generations.
        .shutdown_timeout(server_settings.shutdown_timeout_secs);
        let server = match tls {
            Some(config) => server.bind_rustls_0_23(server_settings.listen, config),
            None => server.bind(server_settings.listen),
        };
        server
            .with_context(|| format!("cannot listen on {}", server_settings.listen))?
            .run()
            .await
            .context("HTTP server")?;
        tracing::info!("HTTP server stopped; in-flight requests finished or cancelled");
        Ok(())
    })
}

fn model_command(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Keygen { out } => {
            let (private, public, fingerprint) = commands::keygen(&out)?;
            println!(
                "wrote {} (private; keep it off the gateway) and {} (public), key {fingerprint}",
                private.display(),
                public.display()
            );
        }
        ModelCommand::Sign {
            key,
            key_env,
            version,
            name,
            quantization,
            dir,
        } => {
            let source = match (key, key_env) {
                (Some(path), _) => KeySource::File(path),
                (None, Some(var)) => KeySource::Env(var),
                (None, None) => anyhow::bail!("give --key FILE or --key-env VAR"),
            };
            let options = SignOptions {
                name,
                version,
                quantization,
            };
            let (m, fingerprint) = commands::sign(&dir, &source, &options)?;
            println!(
                "signed {} version {} ({} files, {}, {}) with key {fingerprint}{}",
                m.name,
                m.version,
                m.files.len(),
                m.layout,
                m.quantization,
                m.quality
                    .as_ref()
                    .map(|q| format!("; quality {:.3}", q.score))
                    .unwrap_or_default()
            );
        }
        ModelCommand::Verify {
            pubkey,
            pubkey_env,
            dir,
        } => {
            let sources: Vec<KeySource> = pubkey
                .into_iter()
                .map(KeySource::File)
                .chain(pubkey_env.map(KeySource::Env))
                .collect();
            let v = commands::verify(&dir, &sources)?;
            let by = match &v.signature {
                edge_gateway::governance::package::SignatureStatus::Valid(k) => k.as_str(),
                _ => "?",
            };
            println!(
                "OK: {} version {}, {} files match, signed by key {by}",
                v.manifest.name,
                v.manifest.version,
                v.manifest.files.len()
            );
        }
    }
    Ok(())
}

fn eval_command(args: EvalArgs) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.config.as_deref())?;
    settings.logging.level = "warn".into();
    logging::init(&settings.logging);
    let request = EvalRequest {
        model_dir: args.model,
        data: args.data,
        upstream: args.upstream,
        write_manifest: !args.no_write,
        version: args.version,
    };
    let summary = commands::evaluate(&settings, &request)?;
    for (i, item) in summary.edge.items.iter().enumerate() {
        let cloud = summary
            .cloud
            .as_ref()
            .and_then(|(_, run)| run.items.get(i))
            .map(|c| {
                if c.passed {
                    "  cloud: pass"
                } else {
                    "  cloud: FAIL"
                }
            })
            .unwrap_or_default();
        println!(
            "{:<4} {:<24} {:<10}{cloud}",
            if item.passed { "pass" } else { "FAIL" },
            item.id,
            item.check
        );
        if args.verbose {
            match &item.output {
                Ok(text) => println!("       output: {text:?}"),
                Err(e) => println!("       error: {e}"),
            }
        }
    }
    let r = &summary.report;
    println!(
        "edge: {}/{} passed, score {:.3} ({}, sha256 {})",
        r.passed,
        r.total,
        r.score,
        r.data,
        r.data_sha256.get(..12).unwrap_or_default()
    );
    for (kind, s) in &r.by_check {
        println!("  {kind}: {}/{}", s.passed, s.total);
    }
    if let Some(c) = &r.cloud {
        println!(
            "cloud {} (model {}): {}/{} passed, score {:.3}",
            c.upstream, c.model, c.passed, c.total, c.score
        );
    }
    if let Some(path) = summary.manifest {
        println!(
            "scores written to {}; sign the package again (`edge-gateway model sign`) so the signature covers them",
            path.display()
        );
    }
    Ok(())
}

fn audit_verify(dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    let key = settings.audit.as_ref().and_then(|a| a.key.clone());
    let dir = match (dir, &settings.audit) {
        (Some(d), _) => d,
        (None, Some(a)) => a.dir.clone(),
        (None, None) => anyhow::bail!("audit is disabled in the configuration; pass --dir"),
    };
    let report = audit::verify_dir(&dir, key.as_ref())?;
    println!(
        "audit log OK: {} records in {} segment(s), last seq {}, head {}{}",
        report.records,
        report.segments,
        report.head.seq,
        report.head.hash,
        if key.is_some() { " (keyed)" } else { "" }
    );
    if report.incomplete_tail_bytes > 0 {
        println!(
            "note: the last {} bytes are an incomplete line (a crash during a write); the gateway drops them at its next start",
            report.incomplete_tail_bytes
        );
    }
    Ok(())
}

fn loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    let (floor, ceiling) = args
        .token_id_range
        .split_once("..")
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--token-id-range must look like 100..1000"))?;
    anyhow::ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be positive"
    );
    let options = edge_gateway::loadtest::LoadTestOptions {
        url: args.url,
        model: args.model,
        api_key: args.api_key,
        concurrency: args.concurrency,
        requests: args.requests,
        duration: std::time::Duration::from_secs_f64(args.duration),
        prompt_tokens: args.prompt_tokens,
        max_tokens: args.max_tokens,
        shared_prefix_ratio: args.shared_prefix_ratio,
        chat: args.chat,
        ignore_eos: !args.allow_eos,
        id_floor: floor,
        id_ceiling: ceiling,
        seed: args.seed,
        progress: !args.quiet,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(edge_gateway::loadtest::run(options))?;
    println!("{report}");
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Starts the encoder, embeds the exemplars (when the semantic scorers are on) and publishes
/// both to the handlers.
fn start_embeddings(
    env: &'static ort::environment::Environment,
    package: EmbeddingPackage,
    options: &EncoderOptions,
    exemplars: Option<&ExemplarFiles>,
    state: &AppState,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let encoder = Encoder::start(env, package, options)?;
    let cache = state.settings.routing.exemplar_cache_dir.as_deref();
    let semantic = exemplars
        .map(|files| files.embed_cached(&encoder, cache).map(Arc::new))
        .transpose()?;
    let p = encoder.package();
    tracing::info!(
        model = %p.id,
        dimensions = p.dimensions,
        semantic_scorers = semantic.is_some(),
        ready_after_ms = started.elapsed().as_millis() as u64,
        "embedding model loaded"
    );
    state.set_embeddings(encoder, semantic);
    Ok(())
}

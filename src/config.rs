//! Typed settings: defaults + optional YAML file + `EDGE_GATEWAY__SECTION__KEY` environment
//! overrides, validated once at load into [`Settings`] so the rest of the code never re-checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::upstream::{RawUpstream, UpstreamConfigError, UpstreamSettings};

/// Environment variable prefix for overrides (`EDGE_GATEWAY__SERVER__LISTEN=...`).
pub const ENV_PREFIX: &str = "EDGE_GATEWAY";
/// Model served when neither config nor CLI names one: the tiny model committed in the repo.
pub const DEFAULT_MODEL_DIR: &str = "onnx/models/edge-tiny-genai";

/// Why the configuration could not be loaded; messages name the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {source}")]
    File {
        path: String,
        source: config::ConfigError,
    },
    #[error("configuration: {0}")]
    Parse(config::ConfigError),
    #[error("configuration key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
    #[error(transparent)]
    Routing(#[from] crate::routing::RoutingConfigError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    #[error(transparent)]
    Governance(#[from] crate::governance::config::GovernanceConfigError),
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: RawServer,
    runtime: RawRuntime,
    model: RawModel,
    engine: RawEngine,
    cache: RawCache,
    embeddings: RawEmbeddings,
    upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    routing: crate::routing::RawRouting,
    review: RawReview,
    #[serde(default)]
    auth: crate::auth::RawAuth,
    logging: RawLogging,
    governance: crate::governance::config::RawGovernance,
    prompts: crate::governance::config::RawPrompts,
    audit: crate::governance::config::RawAudit,
    #[serde(default)]
    models: Vec<crate::governance::config::RawExtraModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    max_body_bytes: usize,
    http_workers: usize,
    client_request_timeout_ms: u64,
    client_body_timeout_ms: u64,
    client_disconnect_timeout_ms: u64,
    keep_alive_secs: u64,
    shutdown_timeout_secs: u64,
    prepare_threads: usize,
    prepare_queue: usize,
    #[serde(default)]
    tls: Option<RawTls>,
}

/// `server.tls`: PEM files for HTTPS on the listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    ort_dylib_path: Option<String>,
    intra_threads: usize,
    fused_int8_matmul: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: String,
    id: Option<String>,
    context_length: Option<usize>,
    #[serde(default)]
    execution_providers: Option<Vec<RawProvider>>,
    #[serde(default)]
    require_accelerator: bool,
}

/// `- cuda` or `- {kind: cuda, device_id: 0}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawProvider {
    Name(String),
    Full(serde_json::Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    workers: usize,
    max_queue: usize,
    max_concurrent_sequences: usize,
    prefill_chunk_tokens: usize,
    memory_budget_bytes: u64,
    runtime_overhead_bytes: u64,
    default_max_tokens: usize,
    max_stop_sequences: usize,
    retry_after_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    enabled: bool,
    block_tokens: usize,
    max_bytes: u64,
    ttl_secs: u64,
    idle_secs: u64,
    pinned_system_prompts: Vec<String>,
    optimized_graph_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbeddings {
    enabled: bool,
    path: String,
    id: Option<String>,
    workers: usize,
    max_queue: usize,
    max_batch: usize,
    run_batch: usize,
    max_input_tokens: usize,
    cache_max_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReview {
    db_path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    format: String,
    level: String,
    #[serde(default)]
    log_prompts: bool,
}

const DEFAULTS: &str = r#"
server:
  listen: "127.0.0.1:8080"
  max_body_bytes: 1048576
  http_workers: 2
  client_request_timeout_ms: 10000
  client_body_timeout_ms: 30000
  client_disconnect_timeout_ms: 5000
  keep_alive_secs: 30
  shutdown_timeout_secs: 30
  prepare_threads: 0
  prepare_queue: 4096
runtime:
  intra_threads: 0
  fused_int8_matmul: true
model:
  path: "onnx/models/edge-tiny-genai"
engine:
  workers: 1
  max_queue: 64
  max_concurrent_sequences: 8
  prefill_chunk_tokens: 128
  # 0: the cgroup memory limit, else physical RAM.
  memory_budget_bytes: 0
  runtime_overhead_bytes: 536870912
  default_max_tokens: 256
  max_stop_sequences: 4
  retry_after_secs: 1
cache:
  enabled: true
  block_tokens: 16
  max_bytes: 268435456
  ttl_secs: 3600
  idle_secs: 900
  pinned_system_prompts: []
  optimized_graph_dir: ".cache/ort-optimized"
embeddings:
  enabled: true
  path: "onnx/models/all-minilm-l6-v2-int8"
  workers: 1
  max_queue: 64
  max_batch: 256
  run_batch: 32
  max_input_tokens: 256
  cache_max_bytes: 33554432
upstreams:
  cloud:
    base_url: "http://127.0.0.1:9000/v1"
    api_key_env: EDGE_GATEWAY_CLOUD_API_KEY
review:
  db_path: "data/reviews.db"
logging:
  format: text
  level: info
  log_prompts: false
governance:
  require_signed: false
  trusted_keys: []
  min_quality_score: 0.0
  canary_key: request_id
prompts:
  dir: prompts
audit:
  enabled: true
  queue_capacity: 65536
  segment_max_bytes: 67108864
  commit_interval_ms: 5
  fail_closed: true
  key_env: EDGE_GATEWAY_AUDIT_KEY
"#;

/// Validated settings: every field is usable as is.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub runtime: RuntimeSettings,
    pub model: ModelSettings,
    pub engine: EngineSettings,
    pub cache: CacheSettings,
    /// Local sentence-embedding model (`/v1/embeddings` and the semantic routing scorers).
    pub embeddings: EmbeddingsSettings,
    /// Named cloud upstreams, in name order.
    pub upstreams: Vec<UpstreamSettings>,
    /// Policy file and hot-reload interval.
    pub routing: crate::routing::RoutingSettings,
    /// SQLite file holding requests routed to human review.
    pub review_db_path: PathBuf,
    /// API keys; empty means open mode (loopback only).
    pub auth: crate::auth::AuthSettings,
    pub logging: LoggingSettings,
    /// Package signatures, the promotion gate, canary assignment, saved model state.
    pub governance: crate::governance::config::GovernanceSettings,
    /// Versioned system prompts.
    pub prompts: crate::governance::config::PromptSettings,
    /// The tamper-evident audit log; `None` when disabled.
    pub audit: Option<crate::governance::audit::AuditSettings>,
    /// Models served beside `model`.
    pub extra_models: Vec<crate::governance::config::ExtraModelSettings>,
}

/// HTTP listener settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub http_workers: usize,
    pub client_request_timeout_ms: u64,
    /// Time a client has to send its whole body once the head arrived (chat, completions,
    /// route explain); slower bodies get 408.
    pub client_body_timeout: std::time::Duration,
    /// Time allowed for a clean connection shutdown once it has started.
    pub client_disconnect_timeout_ms: u64,
    pub keep_alive_secs: u64,
    /// On SIGTERM/SIGINT: stop accepting, let in-flight requests and streams finish for this
    /// long, then cancel what is left.
    pub shutdown_timeout_secs: u64,
    /// Threads rendering templates, tokenizing and scoring requests (0 = one per logical CPU).
    pub prepare_threads: usize,
    /// Requests waiting for those threads before new ones get 429.
    pub prepare_queue: usize,
    /// HTTPS on the listener; `None` serves plain HTTP.
    pub tls: Option<crate::tls::TlsSettings>,
}

/// Where ONNX Runtime comes from and how it threads.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub ort_dylib_path: Option<PathBuf>,
    /// 0 = one thread per logical CPU.
    pub intra_threads: usize,
    /// Fuse per-row int8 matmul chains into the AVX-512 VNNI operator on CPUs that have it.
    pub fused_int8_matmul: bool,
}

/// The model package to serve.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub path: PathBuf,
    pub id: Option<String>,
    pub context_length: Option<usize>,
    /// Providers in order of preference; the first that attaches runs the model.
    pub execution_providers: Vec<crate::engine::providers::ProviderSettings>,
    /// Fail startup when the first provider does not attach (instead of falling back).
    pub require_accelerator: bool,
}

/// Generation worker pool and request limits.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub workers: usize,
    pub max_queue: usize,
    /// Sequences one worker runs at once (decoded together in one batch where the model
    /// allows it).
    pub max_concurrent_sequences: usize,
    /// Longest prompt slice prefilled between two decode steps while other sequences run.
    pub prefill_chunk_tokens: usize,
    /// Memory the gateway may use; `None` means the detected limit (cgroup, else RAM).
    pub memory_budget_bytes: Option<u64>,
    /// Reserved for ONNX Runtime arenas, HTTP buffers and the rest of the process.
    pub runtime_overhead_bytes: u64,
    pub default_max_tokens: usize,
    pub max_stop_sequences: usize,
    pub retry_after_secs: u64,
}

/// Prefix KV cache and optimized-graph cache.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub block_tokens: usize,
    pub max_bytes: u64,
    pub ttl_secs: u64,
    pub idle_secs: u64,
    pub pinned_system_prompts: Vec<String>,
    /// Where ORT's optimized graph is saved and reused; `None` disables.
    pub optimized_graph_dir: Option<PathBuf>,
}

/// The sentence-embedding model and its limits.
#[derive(Debug, Clone)]
pub struct EmbeddingsSettings {
    /// Off: `/v1/embeddings` answers 404 and routing uses the keyword heuristics.
    pub enabled: bool,
    pub path: PathBuf,
    /// Id clients send as `model`; `None` = from the package.
    pub id: Option<String>,
    pub workers: usize,
    /// Requests waiting for a worker before 429.
    pub max_queue: usize,
    /// Most inputs in one request.
    pub max_batch: usize,
    /// Most sequences in one ONNX Runtime run (queued requests are coalesced up to this).
    pub run_batch: usize,
    /// Longest input accepted by `/v1/embeddings`, in tokens (special tokens included).
    pub max_input_tokens: usize,
    /// Byte budget of the embedding cache; 0 disables it.
    pub cache_max_bytes: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LoggingSettings {
    pub format: LogFormat,
    pub level: String,
    /// Log each request's user text (at info). Off by default: prompts often hold personal
    /// or confidential data, and logs travel further than the review database.
    pub log_prompts: bool,
}

impl Settings {
    /// Every served model (`model` first, then `models`), with its id: the configured one, else
    /// the package directory's name.
    pub fn served_models(&self) -> Vec<crate::models::ServedModelSpec> {
        let spec = |path: &Path, id: Option<&str>, context_length| crate::models::ServedModelSpec {
            id: id.map_or_else(|| dir_name(path), str::to_string),
            path: path.to_path_buf(),
            context_length,
        };
        std::iter::once(spec(
            &self.model.path,
            self.model.id.as_deref(),
            self.model.context_length,
        ))
        .chain(
            self.extra_models
                .iter()
                .map(|m| spec(&m.path, m.id.as_deref(), m.context_length)),
        )
        .collect()
    }

    /// Names of the configured cloud upstreams (what policies may route to).
    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.name.clone()).collect()
    }

    /// Loads defaults, then `file` (if any), then the environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, true)
    }

    /// Like [`Settings::load`]; `use_env: false` ignores the process environment (for tests).
    pub fn load_with_env(file: Option<&Path>, use_env: bool) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Yaml));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    source: config::ConfigError::Message("file not found".into()),
                });
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf()).format(config::FileFormat::Yaml),
            );
        }
        if use_env {
            builder = builder.add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        let built = builder.build().map_err(|source| match file {
            Some(path) => ConfigError::File {
                path: path.display().to_string(),
                source,
            },
            None => ConfigError::Parse(source),
        })?;
        Self::from_built(built)
    }

    /// Validates the YAML text `yaml` layered over the defaults, ignoring the environment: the
    /// pure entry point of configuration parsing (fuzzed in `fuzz/`, used by tests).
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ConfigError> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Yaml))
            .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
            .build()
            .map_err(ConfigError::Parse)?;
        Self::from_built(built)
    }

    fn from_built(built: config::Config) -> Result<Self, ConfigError> {
        let raw: RawSettings = built.try_deserialize().map_err(ConfigError::Parse)?;
        raw.validate()
    }
}

impl RawSettings {
    fn validate(mut self) -> Result<Settings, ConfigError> {
        let listen = self.server.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "server.listen",
                format!("'{}' is not host:port ({e})", self.server.listen),
            )
        })?;
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.http_workers == 0 {
            return Err(invalid("server.http_workers", "must be at least 1"));
        }
        if self.server.prepare_queue == 0 {
            return Err(invalid("server.prepare_queue", "must be at least 1"));
        }
        if self.server.client_request_timeout_ms == 0 {
            return Err(invalid(
                "server.client_request_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.server.client_body_timeout_ms == 0 {
            return Err(invalid(
                "server.client_body_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.engine.workers == 0 || self.engine.workers > 64 {
            return Err(invalid("engine.workers", "must be 1..=64"));
        }
        if self.engine.max_queue == 0 {
            return Err(invalid("engine.max_queue", "must be at least 1"));
        }
        if self.engine.max_concurrent_sequences == 0 || self.engine.max_concurrent_sequences > 256 {
            return Err(invalid(
                "engine.max_concurrent_sequences",
                "must be 1..=256",
            ));
        }
        if self.engine.prefill_chunk_tokens < 16 {
            return Err(invalid(
                "engine.prefill_chunk_tokens",
                "must be at least 16",
            ));
        }
        if self.engine.default_max_tokens == 0 {
            return Err(invalid("engine.default_max_tokens", "must be at least 1"));
        }
        if self.model.path.trim().is_empty() {
            return Err(invalid("model.path", "must not be empty"));
        }
        let execution_providers = parse_providers(self.model.execution_providers.take())?;
        if self.model.require_accelerator && !execution_providers[0].is_accelerator() {
            return Err(invalid(
                "model.require_accelerator",
                "the first of model.execution_providers must be an accelerator (cuda, tensorrt, openvino)",
            ));
        }
        if let Some(id) = &self.model.id {
            if id.trim().is_empty() {
                return Err(invalid("model.id", "must not be empty when set"));
            }
        }
        if self.model.context_length == Some(0) {
            return Err(invalid("model.context_length", "must be at least 1"));
        }
        if !(1..=1024).contains(&self.cache.block_tokens) {
            return Err(invalid("cache.block_tokens", "must be 1..=1024"));
        }
        if self.cache.ttl_secs == 0 || self.cache.idle_secs == 0 {
            return Err(invalid(
                "cache.ttl_secs",
                "ttl_secs and idle_secs must be greater than 0",
            ));
        }
        if let Some(i) = self
            .cache
            .pinned_system_prompts
            .iter()
            .position(|p| p.trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "cache.pinned_system_prompts",
                message: format!("entry {i} is empty"),
            });
        }
        let tls = self
            .server
            .tls
            .map(|t| crate::tls::TlsSettings::validate(&t.cert_file, &t.key_file))
            .transpose()
            .map_err(|e| invalid(e.key, e.message))?;
        let embeddings = self.embeddings.validate()?;
        let upstreams = crate::upstream::validate_upstreams(self.upstreams)?;
        let routing = self.routing.validate()?;
        let auth = self.auth.validate()?;
        crate::auth::check_open_mode_bind(listen, !auth.keys.is_empty())
            .map_err(|m| invalid("server.listen", m))?;
        if self.review.db_path.trim().is_empty() || self.review.db_path == ":memory:" {
            return Err(invalid(
                "review.db_path",
                "must name a file (reviews must survive restarts)",
            ));
        }
        // Governance state lives beside the review database unless configured elsewhere.
        let review_db_path = PathBuf::from(&self.review.db_path);
        let state_dir = review_db_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let governance = self.governance.validate(&state_dir)?;
        let prompts = self.prompts.validate()?;
        let audit = self.audit.validate(&state_dir)?;
        let extra_models = crate::governance::config::validate_extra_models(self.models)?;
        let format = match self.logging.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "logging.format",
                    format!("'{other}' is not one of text, json"),
                ))
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err() {
            return Err(invalid(
                "logging.level",
                format!("'{}' is not a valid filter", self.logging.level),
            ));
        }
        Settings {
            server: ServerSettings {
                listen,
                max_body_bytes: self.server.max_body_bytes,
                http_workers: self.server.http_workers,
                client_request_timeout_ms: self.server.client_request_timeout_ms,
                client_body_timeout: std::time::Duration::from_millis(
                    self.server.client_body_timeout_ms,
                ),
                client_disconnect_timeout_ms: self.server.client_disconnect_timeout_ms,
                keep_alive_secs: self.server.keep_alive_secs,
                prepare_threads: match self.server.prepare_threads {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                },
                prepare_queue: self.server.prepare_queue,
                shutdown_timeout_secs: self.server.shutdown_timeout_secs,
                tls,
            },
            runtime: RuntimeSettings {
                ort_dylib_path: self
                    .runtime
                    .ort_dylib_path
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
                intra_threads: self.runtime.intra_threads,
                fused_int8_matmul: self.runtime.fused_int8_matmul,
            },
            model: ModelSettings {
                path: PathBuf::from(self.model.path),
                id: self.model.id,
                context_length: self.model.context_length,
                execution_providers,
                require_accelerator: self.model.require_accelerator,
            },
            engine: EngineSettings {
                workers: self.engine.workers,
                max_queue: self.engine.max_queue,
                max_concurrent_sequences: self.engine.max_concurrent_sequences,
                prefill_chunk_tokens: self.engine.prefill_chunk_tokens,
                memory_budget_bytes: (self.engine.memory_budget_bytes > 0)
                    .then_some(self.engine.memory_budget_bytes),
                runtime_overhead_bytes: self.engine.runtime_overhead_bytes,
                default_max_tokens: self.engine.default_max_tokens,
                max_stop_sequences: self.engine.max_stop_sequences,
                retry_after_secs: self.engine.retry_after_secs,
            },
            cache: CacheSettings {
                enabled: self.cache.enabled,
                block_tokens: self.cache.block_tokens,
                max_bytes: self.cache.max_bytes,
                ttl_secs: self.cache.ttl_secs,
                idle_secs: self.cache.idle_secs,
                pinned_system_prompts: self.cache.pinned_system_prompts,
                optimized_graph_dir: self
                    .cache
                    .optimized_graph_dir
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from),
            },
            embeddings,
            upstreams,
            routing,
            review_db_path,
            auth,
            logging: LoggingSettings {
                format,
                level: self.logging.level,
                log_prompts: self.logging.log_prompts,
            },
            governance,
            prompts,
            audit,
            extra_models,
        }
        .check_served_ids()
    }
}

fn dir_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "local-model".to_string())
}

impl Settings {
    /// Two served models must not share an id (requests could not name one of them).
    fn check_served_ids(self) -> Result<Self, ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for m in self.served_models() {
            if !seen.insert(m.id.clone()) {
                return Err(ConfigError::Invalid {
                    key: "models",
                    message: format!(
                        "model id '{}' is served twice; give one of them another id",
                        m.id
                    ),
                });
            }
        }
        Ok(self)
    }
}

/// `model.execution_providers`: names or option maps, checked as a list.
fn parse_providers(
    raw: Option<Vec<RawProvider>>,
) -> Result<Vec<crate::engine::providers::ProviderSettings>, ConfigError> {
    use crate::engine::providers::{validate_list, ProviderSettings};
    let Some(raw) = raw else {
        return Ok(vec![ProviderSettings::default()]);
    };
    let mut list = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let value = match entry {
            RawProvider::Name(name) => serde_json::json!({ "kind": name }),
            RawProvider::Full(value) => value,
        };
        let provider: ProviderSettings = serde_json::from_value(value).map_err(|e| {
            invalid(
                "model.execution_providers",
                format!("[{i}]: {e} (kinds: cpu, cuda, tensorrt, openvino)"),
            )
        })?;
        list.push(provider);
    }
    validate_list(&list).map_err(|e| invalid("model.execution_providers", e))?;
    Ok(list)
}

impl RawEmbeddings {
    fn validate(self) -> Result<EmbeddingsSettings, ConfigError> {
        if self.path.trim().is_empty() {
            return Err(invalid("embeddings.path", "must not be empty"));
        }
        if let Some(id) = &self.id {
            if id.trim().is_empty() {
                return Err(invalid("embeddings.id", "must not be empty when set"));
            }
        }
        if !(1..=16).contains(&self.workers) {
            return Err(invalid("embeddings.workers", "must be 1..=16"));
        }
        if self.max_queue == 0 {
            return Err(invalid("embeddings.max_queue", "must be at least 1"));
        }
        // OpenAI's own limit on inputs per request.
        if !(1..=2048).contains(&self.max_batch) {
            return Err(invalid("embeddings.max_batch", "must be 1..=2048"));
        }
        if !(1..=256).contains(&self.run_batch) {
            return Err(invalid("embeddings.run_batch", "must be 1..=256"));
        }
        // The model's own maximum is checked when it loads (it is in the package).
        if self.max_input_tokens < 2 {
            return Err(invalid(
                "embeddings.max_input_tokens",
                "must be at least 2 (the special tokens)",
            ));
        }
        Ok(EmbeddingsSettings {
            enabled: self.enabled,
            path: PathBuf::from(self.path),
            id: self.id,
            workers: self.workers,
            max_queue: self.max_queue,
            max_batch: self.max_batch,
            run_batch: self.run_batch,
            max_input_tokens: self.max_input_tokens,
            cache_max_bytes: self.cache_max_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_temp(contents: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::new(contents)
    }

    /// Minimal temp-file helper so config tests need no extra crate.
    mod tempfile_path {
        use std::path::PathBuf;
        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn new(contents: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "edge-gateway-config-{}-{}.yaml",
                    std::process::id(),
                    uuid::Uuid::new_v4()
                ));
                let mut f = std::fs::File::create(&path).expect("create temp config");
                super::Write::write_all(&mut f, contents.as_bytes()).expect("write temp config");
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::load_with_env(None, false).expect("defaults load");
        assert_eq!(s.server.listen.port(), 8080);
        assert_eq!(s.model.path, PathBuf::from(DEFAULT_MODEL_DIR));
        assert_eq!(s.logging.format, LogFormat::Text);
    }

    #[test]
    fn governance_settings_are_validated_naming_the_key() {
        for (yaml, key) in [
            ("models:\n  - path: a/edge-tiny-genai\n", "served twice"),
            ("models:\n  - path: ''\n", "models[0].path"),
            (
                "governance:\n  require_signed: true\n",
                "governance.require_signed",
            ),
            (
                "governance:\n  min_quality_score: 1.5\n",
                "governance.min_quality_score",
            ),
            (
                "governance:\n  canary_key: tenant\n",
                "governance.canary_key",
            ),
            (
                "governance:\n  trusted_keys: [/nonexistent.pub]\n",
                "governance.trusted_keys[0]",
            ),
            ("audit:\n  queue_capacity: 1\n", "audit.queue_capacity"),
            ("audit:\n  sink:\n    url: 'ftp://x'\n", "audit.sink.url"),
            (
                "prompts:\n  dir: p\n  defaults: {'a b': '1'}\n",
                "prompts.defaults",
            ),
        ] {
            let err = Settings::from_yaml_str(yaml).expect_err(yaml).to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
        let s =
            Settings::from_yaml_str("review:\n  db_path: /var/lib/eg/reviews.db\n").expect("ok");
        let audit = s.audit.expect("audit on by default");
        assert_eq!(audit.dir, PathBuf::from("/var/lib/eg/audit"));
        assert_eq!(
            s.governance.model_state_path,
            PathBuf::from("/var/lib/eg/model-state.json")
        );
        let ids: Vec<String> = Settings::from_yaml_str("models:\n  - {path: x/other, id: b}\n")
            .expect("ok")
            .served_models()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["edge-tiny-genai", "b"]);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let f = write_temp("server:\n  listne: \"127.0.0.1:1\"\n");
        let err = Settings::load_with_env(Some(&f.0), false).expect_err("must fail");
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn invalid_listen_names_the_key() {
        let f = write_temp("server:\n  listen: \"nonsense\"\n");
        let err = Settings::load_with_env(Some(&f.0), false).expect_err("must fail");
        assert!(err.to_string().contains("server.listen"), "{err}");
    }

    #[test]
    fn zero_workers_rejected() {
        let f = write_temp("engine:\n  workers: 0\n");
        let err = Settings::load_with_env(Some(&f.0), false).expect_err("must fail");
        assert!(err.to_string().contains("engine.workers"), "{err}");
    }

    #[test]
    fn file_values_override_defaults() {
        let f = write_temp("engine:\n  max_queue: 3\nlogging:\n  format: json\n");
        let s = Settings::load_with_env(Some(&f.0), false).expect("valid");
        assert_eq!(s.engine.max_queue, 3);
        assert_eq!(s.logging.format, LogFormat::Json);
    }

    #[test]
    fn default_cloud_upstream_url_is_overridable() {
        let f = write_temp("upstreams:\n  cloud:\n    base_url: \"http://10.0.0.5:8000/v1\"\n");
        let s = Settings::load_with_env(Some(&f.0), false).expect("valid");
        assert_eq!(s.upstreams.len(), 1);
        assert_eq!(s.upstreams[0].name, "cloud");
        assert_eq!(s.upstreams[0].base_url.as_str(), "http://10.0.0.5:8000/v1");
    }

    #[test]
    fn bad_upstream_url_names_the_key() {
        let f = write_temp("upstreams:\n  cloud:\n    base_url: \"ftp://x\"\n");
        let err = Settings::load_with_env(Some(&f.0), false).expect_err("must fail");
        assert!(
            err.to_string().contains("upstreams.cloud.base_url"),
            "{err}"
        );
    }

    #[test]
    fn embeddings_defaults_and_limits_are_validated() {
        let s = Settings::load_with_env(None, false).expect("defaults load");
        assert!(s.embeddings.enabled);
        assert_eq!(s.embeddings.max_input_tokens, 256);
        let f = write_temp("embeddings:\n  max_batch: 0\n");
        let err = Settings::load_with_env(Some(&f.0), false).expect_err("must fail");
        assert!(err.to_string().contains("embeddings.max_batch"), "{err}");
        let f = write_temp("embeddings:\n  run_batch: 1000\n");
        let err = Settings::load_with_env(Some(&f.0), false).expect_err("must fail");
        assert!(err.to_string().contains("embeddings.run_batch"), "{err}");
    }

    #[test]
    fn debug_output_of_settings_holds_no_secret() {
        // Unique names: the process environment is shared by all tests.
        std::env::set_var("CONFIG_DEBUG_TEST_KEY", "sk-config-debug-inference-5e1f");
        std::env::set_var("CONFIG_DEBUG_TEST_CLOUD", "sk-config-debug-upstream-9a7c");
        let s = Settings::from_yaml_str(
            "auth:\n  keys:\n    - {name: a, key_env: CONFIG_DEBUG_TEST_KEY, scopes: [inference]}\n\
             upstreams:\n  cloud:\n    base_url: http://127.0.0.1:9/v1\n    api_key_env: CONFIG_DEBUG_TEST_CLOUD\n",
        )
        .expect("valid");
        assert!(s.upstreams[0].api_key.is_some());
        let debug = format!("{s:?} {s:#?}");
        assert!(!debug.contains("sk-config-debug"), "{debug}");
    }

    #[test]
    fn log_prompts_defaults_off() {
        let s = Settings::load_with_env(None, false).expect("defaults load");
        assert!(!s.logging.log_prompts);
        assert!(s.server.tls.is_none());
        let s = Settings::from_yaml_str("logging:\n  log_prompts: true\n").expect("valid");
        assert!(s.logging.log_prompts);
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Settings::load_with_env(Some(Path::new("/nonexistent/x.yaml")), false)
            .expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/x.yaml"), "{err}");
    }
}

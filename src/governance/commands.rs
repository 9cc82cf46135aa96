//! The work behind the governance subcommands (`model keygen|sign|verify`, `eval`,
//! `audit verify`), kept in the library so `main` only parses arguments and prints.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::error::GovernanceError;
use super::eval::{self, EvalInput, EvalItem, EvalRun, EvalSet};
use super::manifest::{CloudScore, Manifest, QualityReport, MANIFEST_FILE};
use super::package::{
    build_manifest, sign_package, verify_package, SignOptions, Trust, VerifiedPackage,
};
use super::prompts::PromptRegistry;
use super::signing::{KeySource, PublicKey, SecretKey};
use crate::config::Settings;
use crate::engine::chat_template::TemplateMessage;
use crate::engine::package::ModelPackage;
use crate::engine::{runtime, Engine, EngineOptions, GenerationParams, ModelError};
use crate::upstream::{UpstreamClient, UpstreamConfigError, UpstreamResponse};

/// A governance command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
    #[error("{0}")]
    Usage(String),
}

/// Writes a new key pair: `PREFIX.key` (PKCS#8 PEM, mode 0600) and `PREFIX.pub` (SPKI PEM).
/// Refuses to overwrite either. Returns both paths and the key's fingerprint.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf, String), CommandError> {
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    for p in [&private, &public] {
        if p.exists() {
            return Err(CommandError::Usage(format!(
                "{} exists; refusing to overwrite a key",
                p.display()
            )));
        }
    }
    let key = SecretKey::generate();
    write_private(&private, key.to_pem()?.as_bytes())?;
    std::fs::write(&public, key.public().to_pem()?).map_err(|e| GovernanceError::io(&public, e))?;
    Ok((private, public, key.public().fingerprint()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), GovernanceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| GovernanceError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| GovernanceError::io(path, e))
}

/// `model sign`: digests, manifest and signature for the package in `dir`.
pub fn sign(
    dir: &Path,
    key: &KeySource,
    options: &SignOptions,
) -> Result<(Manifest, String), CommandError> {
    let key = SecretKey::load(key)?;
    let manifest = sign_package(dir, &key, options)?;
    Ok((manifest, key.public().fingerprint()))
}

/// `model verify`: the package must carry a valid signature by one of `keys`.
pub fn verify(dir: &Path, keys: &[KeySource]) -> Result<VerifiedPackage, CommandError> {
    let mut trusted = Vec::new();
    for k in keys {
        trusted.extend(PublicKey::load_all(k)?);
    }
    if trusted.is_empty() {
        return Err(CommandError::Usage(
            "give --pubkey FILE or --pubkey-env VAR".into(),
        ));
    }
    let trust = Trust {
        keys: trusted,
        require_signed: true,
    };
    verify_package(dir, &trust)?
        .ok_or_else(|| CommandError::Usage(format!("{}: no {MANIFEST_FILE}", dir.display())))
}

/// What `eval` is asked to do.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub model_dir: PathBuf,
    pub data: PathBuf,
    /// Also run the set against this configured upstream, for comparison.
    pub upstream: Option<String>,
    /// Record the scores in the package's manifest.
    pub write_manifest: bool,
    /// Version for a package that has no manifest yet.
    pub version: Option<String>,
}

/// Result of `eval`.
pub struct EvalSummary {
    pub set: EvalSet,
    pub edge: EvalRun,
    pub cloud: Option<(String, EvalRun)>,
    pub report: QualityReport,
    /// The manifest written, when asked to.
    pub manifest: Option<PathBuf>,
}

/// Runs the evaluation set on the package (greedy, in process) and optionally on an upstream.
pub fn evaluate(settings: &Settings, request: &EvalRequest) -> Result<EvalSummary, CommandError> {
    let prompts = PromptRegistry::load(&settings.prompts.dir, &settings.prompts.defaults)?;
    let set = EvalSet::load(&request.data, &prompts)?;
    let env = runtime::environment(settings.runtime.ort_dylib_path.as_deref())?;
    let package = ModelPackage::load(&request.model_dir, None)?;
    let model_id = package.id.clone();
    let mut options = EngineOptions::from_settings(settings);
    options.pinned_system_prompts.clear();
    options.prefix_cache = None;
    let engine = Engine::start(env, package, &options)?;
    let edge = eval::run(&set, |item| run_on_edge(&engine, item, &prompts));
    let cloud = match &request.upstream {
        None => None,
        Some(name) => Some((
            name.clone(),
            run_on_cloud(settings, name, &model_id, &set, &prompts)?,
        )),
    };
    let mut report = edge.report(&set);
    if let Some((name, run)) = &cloud {
        let upstream_model = settings
            .upstreams
            .iter()
            .find(|u| &u.name == name)
            .and_then(|u| {
                u.model_map
                    .get(&model_id)
                    .or_else(|| u.model_map.get(crate::upstream::config::WILDCARD_MODEL))
            })
            .cloned()
            .unwrap_or_else(|| model_id.clone());
        report.cloud = Some(CloudScore {
            upstream: name.clone(),
            model: upstream_model,
            score: run.score(),
            passed: run.passed,
            total: run.total,
        });
    }
    let manifest = if request.write_manifest {
        let mut m = match Manifest::read(&request.model_dir)? {
            Some((m, _)) => m,
            None => build_manifest(
                &request.model_dir,
                &SignOptions {
                    version: request.version.clone(),
                    ..SignOptions::default()
                },
            )?,
        };
        m.quality = Some(report.clone());
        m.prompts = eval::prompts_used(&set, &prompts);
        m.write(&request.model_dir)?;
        Some(request.model_dir.join(MANIFEST_FILE))
    } else {
        None
    };
    Ok(EvalSummary {
        set,
        edge,
        cloud,
        report,
        manifest,
    })
}

fn run_on_edge(
    engine: &Engine,
    item: &EvalItem,
    prompts: &PromptRegistry,
) -> Result<String, String> {
    let ids = match &item.input {
        EvalInput::Chat(messages) => {
            let messages: Vec<TemplateMessage> = eval::chat_messages(item, messages, prompts)?
                .into_iter()
                .map(|m| TemplateMessage {
                    role: m.role,
                    content: m.content,
                })
                .collect();
            engine.encode_chat(&messages)
        }
        EvalInput::Text(text) => engine.encode_prompt(text),
    }
    .map_err(|e| e.to_string())?;
    let max_tokens = item
        .max_tokens
        .min(engine.context_length().saturating_sub(ids.len() + 1));
    if max_tokens == 0 {
        return Err("the prompt fills the model's context".into());
    }
    engine
        .generate_blocking(ids, GenerationParams::greedy(max_tokens, false))
        .map(|g| g.text)
        .map_err(|e| e.to_string())
}

fn run_on_cloud(
    settings: &Settings,
    name: &str,
    model_id: &str,
    set: &EvalSet,
    prompts: &PromptRegistry,
) -> Result<EvalRun, CommandError> {
    let upstream = settings
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| {
            CommandError::Usage(format!(
                "no upstream named '{name}' (configured: {})",
                settings.upstream_names().join(", ")
            ))
        })?;
    let client = UpstreamClient::new(upstream.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(format!("cannot start a runtime: {e}")))?;
    Ok(eval::run(set, |item| {
        let body = cloud_body(item, model_id, prompts)?;
        let chat = matches!(item.input, EvalInput::Chat(_));
        rt.block_on(async {
            let response = if chat {
                client.chat_completions(body, false).await
            } else {
                client.completions(body, false).await
            };
            match response.map_err(|e| e.to_string())? {
                UpstreamResponse::Json { body, .. } => answer_text(&body, chat),
                UpstreamResponse::Stream(_) => Err("the upstream streamed".into()),
            }
        })
    }))
}

fn cloud_body(item: &EvalItem, model_id: &str, prompts: &PromptRegistry) -> Result<Value, String> {
    Ok(match &item.input {
        EvalInput::Chat(messages) => json!({
            "model": model_id,
            "messages": eval::chat_messages(item, messages, prompts)?
                .into_iter()
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect::<Vec<_>>(),
            "max_tokens": item.max_tokens,
            "temperature": 0,
        }),
        EvalInput::Text(text) => json!({
            "model": model_id,
            "prompt": text,
            "max_tokens": item.max_tokens,
            "temperature": 0,
        }),
    })
}

fn answer_text(body: &Value, chat: bool) -> Result<String, String> {
    let choice = &body["choices"][0];
    let text = if chat {
        choice["message"]["content"].as_str()
    } else {
        choice["text"].as_str()
    };
    text.map(str::to_string)
        .ok_or_else(|| "the upstream answer has no text".into())
}

//! The registry of served models. Each id has a slot whose state — stable version, optional
//! candidate with a canary share, optional previous version — is one immutable value swapped
//! atomically: a request reads it once and keeps the version it got (its `Arc`), so a swap
//! never touches in-flight work, and an old engine stops once its last request finishes.
//! Changes (stage, canary, promote, rollback) are serialized per slot, audited, and persisted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwapOption;
use serde_json::{json, Value};

use super::canary;
use super::loader::{LoadError, LoadedModel, ModelLoader};
use super::state_file::{CandidateRecord, ModelStateFile, SlotRecord};
use crate::governance::audit::{AuditLog, AuditUnavailable};
use crate::governance::package::SignatureStatus;

/// Gauge set to 1 for each (model, version, role) being served; 0 once it no longer is.
pub const MODEL_VERSION_INFO: &str = "edge_gateway_model_version_info";
/// Model lifecycle operations by `model`, `operation` and `outcome`.
pub const MODEL_OPERATIONS_TOTAL: &str = "edge_gateway_model_operations_total";

/// Registers help text of the registry's metrics; call once after installing the recorder.
pub fn describe() {
    metrics::describe_gauge!(
        MODEL_VERSION_INFO,
        metrics::Unit::Count,
        "1 for each model version being served, by model, version and role (stable, candidate)"
    );
    metrics::describe_counter!(
        MODEL_OPERATIONS_TOTAL,
        metrics::Unit::Count,
        "Model lifecycle operations (stage_candidate, set_canary, promote, rollback) by outcome"
    );
}

/// A model the config serves: its id, the package path and an optional context cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModelSpec {
    pub id: String,
    pub path: PathBuf,
    pub context_length: Option<usize>,
}

/// Registry-wide settings.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Promotion refuses a candidate whose evaluated score is below this (0 = no gate).
    pub min_quality_score: f64,
    /// Where stable/candidate/previous choices are saved; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
}

/// Which version of a slot answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Stable,
    Candidate,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Candidate => "candidate",
        }
    }
}

/// The version chosen for one request.
#[derive(Clone)]
pub struct Served {
    pub model: Arc<LoadedModel>,
    pub role: Role,
}

/// A candidate and the share of traffic it takes.
#[derive(Clone)]
pub struct Canary {
    pub model: Arc<LoadedModel>,
    pub percent: u8,
}

/// The version a rollback returns to: still loaded (instant) or, after a restart, a path.
#[derive(Clone)]
pub enum Previous {
    Loaded(Arc<LoadedModel>),
    Path(PathBuf),
}

impl Previous {
    fn path(&self) -> &Path {
        match self {
            Previous::Loaded(m) => &m.path,
            Previous::Path(p) => p,
        }
    }
}

/// What a slot serves now.
#[derive(Clone)]
pub struct SlotState {
    pub stable: Arc<LoadedModel>,
    pub candidate: Option<Canary>,
    pub previous: Option<Previous>,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("model '{0}' is not served here")]
    UnknownModel(String),
    #[error("model '{0}' is still loading")]
    Loading(String),
    #[error(
        "model '{id}' is already loading {path}; wait until GET /admin/models shows it finished"
    )]
    Busy { id: String, path: String },
    #[error(
        "model '{0}' has no candidate version (stage one with POST /admin/models/{0}/candidate)"
    )]
    NoCandidate(String),
    #[error("model '{0}' has no candidate or previous version to roll back to")]
    NothingToRollBack(String),
    #[error("candidate version {version} of model '{id}' {why}; promotion requires a quality score of at least {threshold} (governance.min_quality_score); run `edge-gateway eval` on the package and sign it again")]
    QualityGate {
        id: String,
        version: String,
        why: String,
        threshold: f64,
    },
    #[error("canary percent must be 0-100, got {0}")]
    InvalidPercent(u64),
    #[error("loading {path}: {source}")]
    Load { path: String, source: LoadError },
    #[error(transparent)]
    Audit(#[from] AuditUnavailable),
}

#[derive(Default)]
struct Ops {
    loading: Option<PathBuf>,
    last_error: Option<String>,
}

struct Slot {
    spec: ServedModelSpec,
    current: ArcSwapOption<SlotState>,
    ops: Mutex<Ops>,
}

impl Slot {
    fn ops(&self) -> MutexGuard<'_, Ops> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// All served models.
pub struct ModelRegistry {
    slots: Vec<Slot>,
    loader: OnceLock<Arc<ModelLoader>>,
    settings: RegistrySettings,
    audit: Option<AuditLog>,
    persist_lock: Mutex<()>,
}

impl ModelRegistry {
    /// Slots for `specs` (the first is the primary model), nothing loaded yet.
    pub fn new(
        specs: Vec<ServedModelSpec>,
        settings: RegistrySettings,
        audit: Option<AuditLog>,
    ) -> Self {
        Self {
            slots: specs
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    current: ArcSwapOption::empty(),
                    ops: Mutex::new(Ops::default()),
                })
                .collect(),
            loader: OnceLock::new(),
            settings,
            audit,
            persist_lock: Mutex::new(()),
        }
    }

    fn slot(&self, id: &str) -> Result<&Slot, RegistryError> {
        self.slots
            .iter()
            .find(|s| s.spec.id == id)
            .ok_or_else(|| RegistryError::UnknownModel(id.to_string()))
    }

    fn loader(&self) -> Result<&Arc<ModelLoader>, RegistryError> {
        self.loader
            .get()
            .ok_or_else(|| RegistryError::Loading("(registry)".into()))
    }

    /// Ids served, primary first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.spec.id.as_str())
    }

    /// The version that serves a request for `id` whose canary key is `key`.
    pub fn resolve(&self, id: &str, key: &str) -> Result<Served, RegistryError> {
        let slot = self.slot(id)?;
        let state = slot
            .current
            .load_full()
            .ok_or_else(|| RegistryError::Loading(id.to_string()))?;
        if let Some(c) = &state.candidate {
            if canary::takes_candidate(key, c.percent) {
                return Ok(Served {
                    model: Arc::clone(&c.model),
                    role: Role::Candidate,
                });
            }
        }
        Ok(Served {
            model: Arc::clone(&state.stable),
            role: Role::Stable,
        })
    }

    /// The primary model's stable version, once loaded.
    pub fn primary(&self) -> Option<Arc<LoadedModel>> {
        let state = self.slots.first()?.current.load_full()?;
        Some(Arc::clone(&state.stable))
    }

    /// Every slot's state, once all have loaded.
    pub fn states(&self) -> Option<Vec<(String, Arc<SlotState>)>> {
        self.slots
            .iter()
            .map(|s| Some((s.spec.id.clone(), s.current.load_full()?)))
            .collect()
    }

    /// True when every served model's stable version is loaded and warmed.
    pub fn is_ready(&self) -> bool {
        self.slots.iter().all(|s| {
            s.current
                .load()
                .as_ref()
                .is_some_and(|st| st.stable.engine.is_ready())
        })
    }

    /// Loads every slot (from the saved state when it still matches the config, else from the
    /// config) and keeps `loader` for later versions. Blocking; fails on the first stable
    /// version that cannot load.
    pub fn load_all(&self, loader: Arc<ModelLoader>) -> Result<(), RegistryError> {
        let saved = self
            .settings
            .state_file
            .as_deref()
            .map(ModelStateFile::read)
            .unwrap_or_default();
        for slot in &self.slots {
            let record = saved
                .models
                .get(&slot.spec.id)
                .filter(|r| r.config_path == slot.spec.path);
            let state = self.load_slot(&loader, slot, record)?;
            publish_labels(&slot.spec.id, None, Some(&state));
            // Before the slot is stored, which makes /readyz answer ready: a scrape right
            // after readiness must already see which model and provider serve.
            let engine = &state.stable.engine;
            crate::telemetry::metrics::set_model_info(
                &slot.spec.id,
                engine.package().layout_name(),
                engine.execution_provider(),
            );
            self.audit_event(
                "model_change",
                json!({"model": slot.spec.id, "operation": "startup_load", "outcome": "ok", "after": state_json(&state)}),
            );
            slot.current.store(Some(Arc::new(state)));
        }
        let _ = self.loader.set(loader);
        self.persist();
        Ok(())
    }

    fn load_slot(
        &self,
        loader: &ModelLoader,
        slot: &Slot,
        record: Option<&SlotRecord>,
    ) -> Result<SlotState, RegistryError> {
        let spec = &slot.spec;
        let load = |path: &Path| {
            loader
                .load(&spec.id, path, spec.context_length)
                .map(Arc::new)
                .map_err(|source| RegistryError::Load {
                    path: path.display().to_string(),
                    source,
                })
        };
        let Some(record) = record else {
            return Ok(SlotState {
                stable: load(&spec.path)?,
                candidate: None,
                previous: None,
            });
        };
        // A saved choice that no longer loads (package removed, signature now refused) falls
        // back to the config's package, loudly, rather than keeping the gateway down.
        let stable = match load(&record.stable) {
            Ok(m) => m,
            Err(e) if record.stable != spec.path => {
                tracing::error!(model = %spec.id, error = %e, "saved stable version does not load; serving the configured package");
                load(&spec.path)?
            }
            Err(e) => return Err(e),
        };
        let candidate = record.candidate.as_ref().and_then(|c| match load(&c.path) {
            Ok(model) => Some(Canary {
                model,
                percent: c.percent,
            }),
            Err(e) => {
                tracing::error!(model = %spec.id, error = %e, "saved candidate does not load; serving without it");
                slot.ops().last_error = Some(e.to_string());
                None
            }
        });
        Ok(SlotState {
            stable,
            candidate,
            previous: record.previous.clone().map(Previous::Path),
        })
    }

    /// Starts loading the package at `path` as the candidate of `id`, taking `percent` of its
    /// traffic once loaded. Returns at once; `GET /admin/models` shows progress and errors.
    pub fn stage_candidate(
        self: &Arc<Self>,
        id: &str,
        path: PathBuf,
        percent: u8,
    ) -> Result<(), RegistryError> {
        check_percent(u64::from(percent))?;
        let slot = self.slot(id)?;
        let loader = Arc::clone(self.loader()?);
        {
            let mut ops = slot.ops();
            if let Some(p) = &ops.loading {
                return Err(RegistryError::Busy {
                    id: id.to_string(),
                    path: p.display().to_string(),
                });
            }
            ops.loading = Some(path.clone());
            ops.last_error = None;
        }
        let registry = Arc::clone(self);
        let id = id.to_string();
        std::thread::Builder::new()
            .name("model-candidate-loader".into())
            .spawn(move || registry.finish_candidate(&loader, &id, &path, percent))
            .map_err(|e| RegistryError::Load {
                path: String::new(),
                source: LoadError::Model(crate::engine::ModelError::Package {
                    dir: PathBuf::new(),
                    message: format!("cannot spawn the loader thread: {e}"),
                }),
            })?;
        Ok(())
    }

    fn finish_candidate(&self, loader: &ModelLoader, id: &str, path: &Path, percent: u8) {
        let Ok(slot) = self.slot(id) else { return };
        let result = loader.load(id, path, slot.spec.context_length);
        let mut ops = slot.ops();
        ops.loading = None;
        match result {
            Ok(model) => {
                let version = model.version.clone();
                let model = Arc::new(model);
                let outcome = self.change(slot, "stage_candidate", |s| {
                    Ok(SlotState {
                        stable: Arc::clone(&s.stable),
                        candidate: Some(Canary {
                            model: Arc::clone(&model),
                            percent,
                        }),
                        previous: s.previous.clone(),
                    })
                });
                if let Err(e) = outcome {
                    ops.last_error = Some(e.to_string());
                } else {
                    tracing::info!(model = id, version = %version, canary_percent = percent, path = %path.display(), "candidate loaded");
                }
            }
            Err(e) => {
                let message = format!("loading {}: {e}", path.display());
                tracing::error!(model = id, error = %message, "candidate failed to load");
                self.audit_event(
                    "model_change",
                    json!({"model": id, "operation": "stage_candidate", "outcome": "failed", "path": path.display().to_string(), "error": message}),
                );
                metrics::counter!(MODEL_OPERATIONS_TOTAL, "model" => id.to_string(), "operation" => "stage_candidate", "outcome" => "failed").increment(1);
                ops.last_error = Some(message);
            }
        }
    }

    /// Sets the candidate's share of `id`'s traffic.
    pub fn set_canary(&self, id: &str, percent: u64) -> Result<(), RegistryError> {
        let percent = check_percent(percent)?;
        let slot = self.slot(id)?;
        let _ops = slot.ops();
        self.change(slot, "set_canary", |s| {
            let c = s
                .candidate
                .as_ref()
                .ok_or_else(|| RegistryError::NoCandidate(id.to_string()))?;
            Ok(SlotState {
                stable: Arc::clone(&s.stable),
                candidate: Some(Canary {
                    model: Arc::clone(&c.model),
                    percent,
                }),
                previous: s.previous.clone(),
            })
        })
    }

    /// Makes the candidate of `id` its stable version (all traffic), keeping the old stable
    /// loaded as the previous version. Refused below the quality threshold.
    pub fn promote(&self, id: &str) -> Result<(), RegistryError> {
        let slot = self.slot(id)?;
        let _ops = slot.ops();
        let threshold = self.settings.min_quality_score;
        self.change(slot, "promote", |s| {
            let c = s
                .candidate
                .as_ref()
                .ok_or_else(|| RegistryError::NoCandidate(id.to_string()))?;
            if threshold > 0.0 {
                let why = match c.model.quality_score() {
                    None => Some("has no evaluated quality score".to_string()),
                    Some(score) if score < threshold => {
                        Some(format!("scored {score:.3}, below the threshold"))
                    }
                    Some(_) => None,
                };
                if let Some(why) = why {
                    return Err(RegistryError::QualityGate {
                        id: id.to_string(),
                        version: c.model.version.clone(),
                        why,
                        threshold,
                    });
                }
            }
            Ok(SlotState {
                stable: Arc::clone(&c.model),
                candidate: None,
                previous: Some(Previous::Loaded(Arc::clone(&s.stable))),
            })
        })
    }

    /// Undoes the last step of `id`: drops a candidate (its canary traffic returns to the
    /// stable version), else returns to the previous version. Blocking when the previous
    /// version has to be loaded again (after a restart).
    pub fn rollback(&self, id: &str) -> Result<(), RegistryError> {
        let slot = self.slot(id)?;
        let _ops = slot.ops();
        let current = slot
            .current
            .load_full()
            .ok_or_else(|| RegistryError::Loading(id.to_string()))?;
        // Load outside the swap so requests keep flowing on the current version meanwhile.
        let reloaded = match (&current.candidate, &current.previous) {
            (None, Some(Previous::Path(p))) => Some(Arc::new(
                self.loader()?
                    .load(id, p, slot.spec.context_length)
                    .map_err(|source| RegistryError::Load {
                        path: p.display().to_string(),
                        source,
                    })?,
            )),
            _ => None,
        };
        self.change(slot, "rollback", |s| {
            if s.candidate.is_some() {
                return Ok(SlotState {
                    stable: Arc::clone(&s.stable),
                    candidate: None,
                    previous: s.previous.clone(),
                });
            }
            let stable = match (&s.previous, &reloaded) {
                (Some(Previous::Loaded(m)), _) => Arc::clone(m),
                (Some(Previous::Path(_)), Some(m)) => Arc::clone(m),
                _ => return Err(RegistryError::NothingToRollBack(id.to_string())),
            };
            Ok(SlotState {
                stable,
                candidate: None,
                previous: None,
            })
        })
    }

    /// Applies `f` to the slot's state, audits, swaps, persists. Callers hold the slot's ops
    /// lock, so changes of one slot never interleave.
    fn change(
        &self,
        slot: &Slot,
        operation: &'static str,
        f: impl FnOnce(&SlotState) -> Result<SlotState, RegistryError>,
    ) -> Result<(), RegistryError> {
        let id = slot.spec.id.as_str();
        let current = slot
            .current
            .load_full()
            .ok_or_else(|| RegistryError::Loading(id.to_string()))?;
        let next = match f(&current) {
            Ok(n) => n,
            Err(e) => {
                metrics::counter!(MODEL_OPERATIONS_TOTAL, "model" => id.to_string(), "operation" => operation, "outcome" => "refused").increment(1);
                return Err(e);
            }
        };
        // Audited before it takes effect: a change the log cannot hold does not happen.
        if let Some(audit) = &self.audit {
            audit.record(
                "model_change",
                json!({
                    "model": id,
                    "operation": operation,
                    "outcome": "ok",
                    "before": state_json(&current),
                    "after": state_json(&next),
                }),
            )?;
        }
        publish_labels(id, Some(&current), Some(&next));
        slot.current.store(Some(Arc::new(next)));
        metrics::counter!(MODEL_OPERATIONS_TOTAL, "model" => id.to_string(), "operation" => operation, "outcome" => "ok").increment(1);
        tracing::info!(model = id, operation, "model versions changed");
        self.persist();
        Ok(())
    }

    fn audit_event(&self, kind: &'static str, data: Value) {
        if let Some(audit) = &self.audit {
            if audit.record(kind, data).is_err() {
                tracing::error!(kind, "audit log full; model event not recorded");
            }
        }
    }

    /// Saves every slot's choices (best effort: the in-memory state stands either way).
    fn persist(&self) {
        let Some(path) = &self.settings.state_file else {
            return;
        };
        let _guard = self.persist_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = ModelStateFile::default();
        for slot in &self.slots {
            let Some(s) = slot.current.load_full() else {
                continue;
            };
            file.models.insert(
                slot.spec.id.clone(),
                SlotRecord {
                    config_path: slot.spec.path.clone(),
                    stable: s.stable.path.clone(),
                    candidate: s.candidate.as_ref().map(|c| CandidateRecord {
                        path: c.model.path.clone(),
                        percent: c.percent,
                    }),
                    previous: s.previous.as_ref().map(|p| p.path().to_path_buf()),
                },
            );
        }
        if let Err(e) = file.write(path) {
            tracing::error!(error = %e, "cannot save the model state; it will not survive a restart");
        }
    }

    /// `GET /admin/models`: every slot's versions, loading progress and last error.
    pub fn snapshot(&self) -> Value {
        let data: Vec<Value> = self
            .slots
            .iter()
            .map(|slot| {
                let ops = slot.ops();
                let state = slot.current.load_full();
                json!({
                    "id": slot.spec.id,
                    "config_path": slot.spec.path.display().to_string(),
                    "state": state.as_deref().map(state_json),
                    "loading": ops.loading.as_ref().map(|p| p.display().to_string()),
                    "last_error": ops.last_error,
                })
            })
            .collect();
        json!({"object": "list", "data": data})
    }
}

fn check_percent(p: u64) -> Result<u8, RegistryError> {
    u8::try_from(p)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or(RegistryError::InvalidPercent(p))
}

/// JSON description of one loaded version.
pub fn version_json(m: &LoadedModel) -> Value {
    json!({
        "version": m.version,
        "path": m.path.display().to_string(),
        "signature": match &m.signature {
            SignatureStatus::Valid(k) => json!({"status": "valid", "key": k}),
            SignatureStatus::Unchecked => json!({"status": "unchecked"}),
            SignatureStatus::Unsigned => json!({"status": "unsigned"}),
        },
        "quality_score": m.quality_score(),
        "execution_provider": m.engine.execution_provider(),
        "loaded_at": m.loaded_unix,
    })
}

fn state_json(s: &SlotState) -> Value {
    json!({
        "stable": version_json(&s.stable),
        "candidate": s.candidate.as_ref().map(|c| {
            let mut v = version_json(&c.model);
            v["canary_percent"] = json!(c.percent);
            v
        }),
        "previous": s.previous.as_ref().map(|p| match p {
            Previous::Loaded(m) => version_json(m),
            Previous::Path(path) => json!({"path": path.display().to_string(), "loaded": false}),
        }),
    })
}

/// Moves the version-info gauge from `before`'s versions to `after`'s.
fn publish_labels(id: &str, before: Option<&SlotState>, after: Option<&SlotState>) {
    let labels = |s: &SlotState| {
        let mut v = vec![(s.stable.version.clone(), Role::Stable.label())];
        if let Some(c) = &s.candidate {
            v.push((c.model.version.clone(), Role::Candidate.label()));
        }
        v
    };
    for (version, role) in before.map(labels).unwrap_or_default() {
        metrics::gauge!(MODEL_VERSION_INFO, "model" => id.to_string(), "version" => version, "role" => role).set(0.0);
    }
    for (version, role) in after.map(labels).unwrap_or_default() {
        metrics::gauge!(MODEL_VERSION_INFO, "model" => id.to_string(), "version" => version, "role" => role).set(1.0);
    }
}

//! Loads one version of a model package for serving: checks its manifest and signature under
//! the configured trust, reads the package, starts an engine on it. Blocking (seconds to
//! minutes): call from a dedicated thread, never the async executor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::package::ModelPackage;
use crate::engine::{Engine, EngineOptions, ModelError};
use crate::governance::manifest::Manifest;
use crate::governance::package::{verify_package, SignatureStatus, Trust};
use crate::governance::GovernanceError;

/// Version label of a package without a manifest.
pub const UNVERSIONED: &str = "unversioned";

/// Why a version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A loaded, verified, warmed version of a model.
pub struct LoadedModel {
    pub engine: Arc<Engine>,
    /// The manifest's version, or [`UNVERSIONED`].
    pub version: String,
    pub manifest: Option<Manifest>,
    pub signature: SignatureStatus,
    pub path: PathBuf,
    pub loaded_unix: u64,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// The evaluated quality score, when the manifest carries one.
    pub fn quality_score(&self) -> Option<f64> {
        self.manifest
            .as_ref()
            .and_then(|m| m.quality.as_ref())
            .map(|q| q.score)
    }
}

/// Everything needed to load versions of the served models.
pub struct ModelLoader {
    env: &'static ort::environment::Environment,
    options: EngineOptions,
    trust: Trust,
}

impl ModelLoader {
    /// A loader whose versions all draw from one memory pool (made from `options` unless
    /// it names one), so a candidate beside its stable version is admitted only if both fit.
    pub fn new(
        env: &'static ort::environment::Environment,
        mut options: EngineOptions,
        trust: Trust,
    ) -> Result<Self, ModelError> {
        if options.memory_pool.is_none() {
            let pool = options.new_memory_pool().map_err(ModelError::Memory)?;
            options.memory_pool = Some(pool);
        }
        Ok(Self {
            env,
            options,
            trust,
        })
    }

    /// Verifies and loads the package in `dir`, served as `id`. Blocking.
    pub fn load(
        &self,
        id: &str,
        dir: &Path,
        context_length: Option<usize>,
    ) -> Result<LoadedModel, LoadError> {
        let verified = verify_package(dir, &self.trust)?;
        let package = ModelPackage::load(dir, Some(id))?;
        let mut options = self.options.clone();
        if context_length.is_some() {
            options.context_length = context_length;
        }
        let engine = Engine::start(self.env, package, &options)?;
        let (version, manifest, signature) = match verified {
            Some(v) => (v.manifest.version.clone(), Some(v.manifest), v.signature),
            None => (UNVERSIONED.to_string(), None, SignatureStatus::Unsigned),
        };
        Ok(LoadedModel {
            engine,
            version,
            manifest,
            signature,
            path: dir.to_path_buf(),
            loaded_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }
}

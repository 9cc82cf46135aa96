//! Error types of the local inference layer.

use std::path::PathBuf;

/// A model package or the runtime could not be loaded. Messages name the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("ONNX Runtime library not found at {path}: {reason}. Run `make ort` to provision it into .ort/lib, or set ORT_DYLIB_PATH (or runtime.ort_dylib_path) to libonnxruntime.so from the onnxruntime==1.31.1 wheel")]
    RuntimeMissing { path: PathBuf, reason: String },
    #[error("ONNX Runtime could not be initialised from {path}: {reason}")]
    RuntimeInit { path: PathBuf, reason: String },
    #[error("model package {dir}: {message}")]
    Package { dir: PathBuf, message: String },
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{file}: ONNX Runtime could not load the model: {message}")]
    Session { file: PathBuf, message: String },
    /// The memory budget cannot be determined or cannot hold what is asked of it.
    #[error("memory budget: {0}")]
    Memory(String),
    /// A package file was replaced or modified between reading the package and finishing the
    /// load, so what was loaded may mix two versions.
    #[error("{file}: changed while the model was loading ({what}); the load was abandoned. Restart once the new file is completely in place (copy it beside the old one, then rename it over)")]
    ChangedWhileLoading { file: PathBuf, what: String },
    #[error("execution provider {provider} is required (model.require_accelerator: true) but did not attach: {reason}")]
    ProviderRequired {
        provider: &'static str,
        reason: String,
    },
}

/// A generation failed after the model was loaded.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("ONNX Runtime run failed: {0}")]
    Runtime(String),
    #[error("model output: {0}")]
    Output(String),
}

impl From<ort::Error> for InferenceError {
    fn from(e: ort::Error) -> Self {
        InferenceError::Runtime(e.to_string())
    }
}

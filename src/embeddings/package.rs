//! Reads an encoder (sentence-embedding) package directory: `model.onnx`, `tokenizer.json` and
//! `embedding_config.json` (dimensions, maximum sequence length, pooling). Parsed once at load;
//! errors name the file and the problem.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::package::file_err;
use crate::engine::ModelError;

/// How token vectors become one sentence vector when the graph returns `last_hidden_state`
/// (graphs that already pool are used as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the tokens the attention mask keeps (sentence-transformers' default).
    Mean,
    /// The first token (`[CLS]`).
    Cls,
}

/// `embedding_config.json`, written by `onnx/build_embedding_model.py`.
#[derive(Debug, Deserialize)]
struct RawEmbeddingConfig {
    id: Option<String>,
    dimensions: usize,
    max_seq_length: usize,
    #[serde(default = "default_pooling")]
    pooling: Pooling,
    #[serde(default = "default_normalize")]
    normalize: bool,
    license: Option<String>,
}

fn default_pooling() -> Pooling {
    Pooling::Mean
}

fn default_normalize() -> bool {
    true
}

/// Everything the encoder needs to know before opening a session.
#[derive(Debug, Clone)]
pub struct EmbeddingPackage {
    pub dir: PathBuf,
    /// Id clients send as `model`.
    pub id: String,
    pub onnx_file: PathBuf,
    pub tokenizer_file: PathBuf,
    /// Length of every embedding.
    pub dimensions: usize,
    /// Longest input the model was trained for, in tokens (special tokens included).
    pub max_seq_length: usize,
    pub pooling: Pooling,
    /// L2-normalise the output (cosine similarity becomes a dot product).
    pub normalize: bool,
    /// Licence of the weights, shown in `/v1/models`.
    pub license: Option<String>,
}

impl EmbeddingPackage {
    /// Identifies the weights for caches: id plus the model file's size and mtime, so a replaced
    /// file never reuses vectors computed with the old one.
    pub fn version_key(&self) -> String {
        let meta = std::fs::metadata(&self.onnx_file).ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("{}:{size}:{mtime}", self.id)
    }

    /// Reads `dir`; `id` overrides the id from the config (else the directory name).
    pub fn load(dir: &Path, id: Option<&str>) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::Package {
                dir: dir.to_path_buf(),
                message: "is not a directory (embeddings.path)".into(),
            });
        }
        let onnx_file = dir.join("model.onnx");
        let tokenizer_file = dir.join("tokenizer.json");
        for file in [&onnx_file, &tokenizer_file] {
            if !file.is_file() {
                return Err(file_err(file, "missing from the embedding model package"));
            }
        }
        let config_file = dir.join("embedding_config.json");
        let text = std::fs::read_to_string(&config_file)
            .map_err(|e| file_err(&config_file, format!("cannot read: {e}")))?;
        let raw: RawEmbeddingConfig = serde_json::from_str(&text)
            .map_err(|e| file_err(&config_file, format!("invalid: {e}")))?;
        if raw.dimensions == 0 {
            return Err(file_err(&config_file, "dimensions must be at least 1"));
        }
        if raw.max_seq_length < 2 {
            return Err(file_err(&config_file, "max_seq_length must be at least 2"));
        }
        let dir_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "embeddings".into());
        let id = id.map(str::to_owned).or(raw.id).unwrap_or(dir_name);
        Ok(Self {
            dir: dir.to_path_buf(),
            id,
            onnx_file,
            tokenizer_file,
            dimensions: raw.dimensions,
            max_seq_length: raw.max_seq_length,
            pooling: raw.pooling,
            normalize: raw.normalize,
            license: raw.license,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_package_loads() {
        let p = EmbeddingPackage::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("onnx/models/all-minilm-l6-v2-int8"),
            None,
        )
        .expect("package");
        assert_eq!(p.id, "all-minilm-l6-v2-int8");
        assert_eq!(p.dimensions, 384);
        assert_eq!(p.max_seq_length, 256);
        assert_eq!(p.pooling, Pooling::Mean);
        assert_eq!(p.license.as_deref(), Some("Apache-2.0"));
    }

    #[test]
    fn missing_directory_names_the_key() {
        let err = EmbeddingPackage::load(Path::new("/nonexistent/enc"), None).expect_err("fails");
        assert!(err.to_string().contains("embeddings.path"), "{err}");
    }
}

//! Reads a model package directory: `model.onnx`, tokenizer files and either an
//! onnxruntime-genai `genai_config.json` or an Optimum `config.json` (+ `generation_config.json`).
//! Everything is parsed once here; errors name the file and the problem.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::ModelError;

/// Which exporter produced the package, with what that implies for the KV cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageFormat {
    /// onnxruntime-genai builder output; `share_buffer` means past and present KV are one
    /// buffer sized to the maximum length, written in place by GroupQueryAttention.
    Genai {
        share_buffer: bool,
        past_key_template: String,
        past_value_template: String,
        present_key_template: String,
        present_value_template: String,
    },
    /// Hugging Face Optimum export: present = past concatenated with the new positions.
    Optimum,
}

/// Everything the engine needs to know about a package before opening a session.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    pub dir: PathBuf,
    pub id: String,
    pub onnx_file: PathBuf,
    pub tokenizer_file: PathBuf,
    pub format: PackageFormat,
    pub context_length: usize,
    pub vocab_size: usize,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_size: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl ModelPackage {
    /// Name of the layout, for logs and `/v1/models` metadata.
    pub fn layout_name(&self) -> &'static str {
        match self.format {
            PackageFormat::Genai {
                share_buffer: true, ..
            } => "onnxruntime-genai (shared KV buffer)",
            PackageFormat::Genai { .. } => "onnxruntime-genai",
            PackageFormat::Optimum => "optimum",
        }
    }

    /// Identifies the weights for cache keys: id plus the model file's size and mtime, so a
    /// replaced file never reuses KV or optimized graphs computed from the old one.
    pub fn version_key(&self) -> String {
        let meta = std::fs::metadata(&self.onnx_file).ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("{}:{size}:{mtime}", self.id)
    }

    /// Reads and checks the package in `dir`. `id` defaults to the directory name.
    pub fn load(dir: &Path, id: Option<&str>) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(package_err(dir, "directory does not exist"));
        }
        let tokenizer_file = dir.join("tokenizer.json");
        if !tokenizer_file.is_file() {
            return Err(file_err(
                &tokenizer_file,
                "missing (every package needs the Hugging Face tokenizer)",
            ));
        }
        let tok_cfg = read_tokenizer_config(dir)?;
        let id = match id {
            Some(id) => id.to_string(),
            None => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "local-model".to_string()),
        };
        let genai = dir.join("genai_config.json");
        let mut package = if genai.is_file() {
            Self::from_genai(dir, &genai, id, tokenizer_file)?
        } else if dir.join("config.json").is_file() {
            Self::from_optimum(dir, id, tokenizer_file)?
        } else {
            return Err(package_err(
                dir,
                "neither genai_config.json (onnxruntime-genai layout) nor config.json (Optimum layout) found",
            ));
        };
        package.chat_template = tok_cfg.chat_template;
        package.bos_token = tok_cfg.bos_token;
        package.eos_token = tok_cfg.eos_token;
        if !package.onnx_file.is_file() {
            return Err(file_err(&package.onnx_file, "model file missing"));
        }
        if package.eos_token_ids.is_empty() {
            return Err(package_err(dir, "no eos_token_id in the model config"));
        }
        Ok(package)
    }

    fn from_genai(
        dir: &Path,
        file: &Path,
        id: String,
        tokenizer_file: PathBuf,
    ) -> Result<Self, ModelError> {
        let root = read_json(file)?;
        let model = root
            .get("model")
            .ok_or_else(|| file_err(file, "missing 'model' object"))?;
        let decoder = model
            .get("decoder")
            .ok_or_else(|| file_err(file, "missing 'model.decoder' object"))?;
        let filename = str_at(decoder, "filename").unwrap_or("model.onnx");
        let share_buffer = root
            .get("search")
            .and_then(|s| s.get("past_present_share_buffer"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let inputs = decoder.get("inputs");
        let outputs = decoder.get("outputs");
        let name = |obj: Option<&Value>, key: &str, default: &str| {
            obj.and_then(|o| str_at(o, key))
                .unwrap_or(default)
                .to_string()
        };
        let format = PackageFormat::Genai {
            share_buffer,
            past_key_template: name(inputs, "past_key_names", "past_key_values.%d.key"),
            past_value_template: name(inputs, "past_value_names", "past_key_values.%d.value"),
            present_key_template: name(outputs, "present_key_names", "present.%d.key"),
            present_value_template: name(outputs, "present_value_names", "present.%d.value"),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            id,
            onnx_file: dir.join(filename),
            tokenizer_file,
            format,
            context_length: usize_at(model, "context_length")
                .ok_or_else(|| file_err(file, "missing model.context_length"))?,
            vocab_size: usize_at(model, "vocab_size")
                .ok_or_else(|| file_err(file, "missing model.vocab_size"))?,
            num_layers: usize_at(decoder, "num_hidden_layers")
                .ok_or_else(|| file_err(file, "missing model.decoder.num_hidden_layers"))?,
            num_kv_heads: usize_at(decoder, "num_key_value_heads")
                .ok_or_else(|| file_err(file, "missing model.decoder.num_key_value_heads"))?,
            head_size: usize_at(decoder, "head_size")
                .ok_or_else(|| file_err(file, "missing model.decoder.head_size"))?,
            bos_token_id: token_ids(model.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(model.get("eos_token_id")),
            chat_template: None,
            bos_token: None,
            eos_token: None,
        })
    }

    fn from_optimum(dir: &Path, id: String, tokenizer_file: PathBuf) -> Result<Self, ModelError> {
        let file = dir.join("config.json");
        let cfg = read_json(&file)?;
        let heads = usize_at(&cfg, "num_attention_heads")
            .ok_or_else(|| file_err(&file, "missing num_attention_heads"))?;
        let hidden =
            usize_at(&cfg, "hidden_size").ok_or_else(|| file_err(&file, "missing hidden_size"))?;
        if heads == 0 {
            return Err(file_err(&file, "num_attention_heads is 0"));
        }
        let head_size = usize_at(&cfg, "head_dim").unwrap_or(hidden / heads);
        let mut eos = token_ids(cfg.get("eos_token_id"));
        let gen_file = dir.join("generation_config.json");
        if gen_file.is_file() {
            let gen = read_json(&gen_file)?;
            let gen_eos = token_ids(gen.get("eos_token_id"));
            if !gen_eos.is_empty() {
                eos = gen_eos;
            }
        }
        let onnx_file = [
            "model.onnx",
            "decoder_model_merged.onnx",
            "decoder_with_past_model.onnx",
        ]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join("model.onnx"));
        Ok(Self {
            dir: dir.to_path_buf(),
            id,
            onnx_file,
            tokenizer_file,
            format: PackageFormat::Optimum,
            context_length: usize_at(&cfg, "max_position_embeddings")
                .ok_or_else(|| file_err(&file, "missing max_position_embeddings"))?,
            vocab_size: usize_at(&cfg, "vocab_size")
                .ok_or_else(|| file_err(&file, "missing vocab_size"))?,
            num_layers: usize_at(&cfg, "num_hidden_layers")
                .ok_or_else(|| file_err(&file, "missing num_hidden_layers"))?,
            num_kv_heads: usize_at(&cfg, "num_key_value_heads").unwrap_or(heads),
            head_size,
            bos_token_id: token_ids(cfg.get("bos_token_id")).first().copied(),
            eos_token_ids: eos,
            chat_template: None,
            bos_token: None,
            eos_token: None,
        })
    }
}

struct TokenizerConfig {
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

fn read_tokenizer_config(dir: &Path) -> Result<TokenizerConfig, ModelError> {
    let file = dir.join("tokenizer_config.json");
    let mut cfg = TokenizerConfig {
        chat_template: None,
        bos_token: None,
        eos_token: None,
    };
    if file.is_file() {
        let json = read_json(&file)?;
        cfg.chat_template = match json.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // Newer tokenizers store named templates; "default" is the one chat uses.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| str_at(t, "template"))
                .map(str::to_string),
            Some(Value::Null) | None => None,
            Some(_) => {
                return Err(file_err(
                    &file,
                    "chat_template must be a string or a list of named templates",
                ))
            }
        };
        cfg.bos_token = special_token(json.get("bos_token"));
        cfg.eos_token = special_token(json.get("eos_token"));
    }
    // transformers >= 4.43 may keep the template in its own file.
    let jinja = dir.join("chat_template.jinja");
    if cfg.chat_template.is_none() && jinja.is_file() {
        cfg.chat_template = Some(
            std::fs::read_to_string(&jinja)
                .map_err(|e| file_err(&jinja, format!("unreadable: {e}")))?,
        );
    }
    Ok(cfg)
}

fn special_token(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn read_json(file: &Path) -> Result<Value, ModelError> {
    let text =
        std::fs::read_to_string(file).map_err(|e| file_err(file, format!("unreadable: {e}")))?;
    serde_json::from_str(&text).map_err(|e| file_err(file, format!("invalid JSON: {e}")))
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn usize_at(v: &Value, key: &str) -> Option<usize> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

/// eos/bos ids appear as a number or a list of numbers depending on the exporter.
fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .filter_map(|n| u32::try_from(n).ok())
            .collect(),
        _ => Vec::new(),
    }
}

fn package_err(dir: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Package {
        dir: dir.to_path_buf(),
        message: message.into(),
    }
}

pub(crate) fn file_err(file: &Path, message: impl Into<String>) -> ModelError {
    ModelError::File {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_ids_accepts_number_and_list() {
        assert_eq!(token_ids(Some(&json!(7))), vec![7]);
        assert_eq!(token_ids(Some(&json!([7, 9]))), vec![7, 9]);
        assert!(token_ids(Some(&json!("x"))).is_empty());
        assert!(token_ids(None).is_empty());
    }

    #[test]
    fn special_token_reads_string_or_added_token_object() {
        assert_eq!(special_token(Some(&json!("<s>"))).as_deref(), Some("<s>"));
        assert_eq!(
            special_token(Some(&json!({"content": "</s>"}))).as_deref(),
            Some("</s>")
        );
    }

    #[test]
    fn missing_directory_names_it() {
        let err = ModelPackage::load(Path::new("/nonexistent/model"), None).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    }
}

//! Reads a model package directory: `model.onnx`, tokenizer files and either an
//! onnxruntime-genai `genai_config.json` or an Optimum `config.json` (+ `generation_config.json`).
//! Everything is parsed once here; errors name the file and the problem.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::ModelError;

/// Upper bounds for the sizes a package declares (see `check_dimensions`); generous for real
/// models (the largest open models use about 2^20 context, 256k vocabularies, 128 layers).
const MAX_CONTEXT_LENGTH: usize = 1 << 24;
const MAX_VOCAB_SIZE: usize = 1 << 24;
const MAX_LAYERS: usize = 1024;
const MAX_HEADS: usize = 1024;
const MAX_HEAD_SIZE: usize = 1 << 16;

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
        /// `model.decoder.inputs.position_ids` is declared (GroupQueryAttention graphs derive
        /// positions from the mask and have none).
        position_ids: bool,
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
    /// The package's files as [`ModelPackage::load`] found them, checked again once the
    /// sessions are built (`Engine::start`) so a file replaced mid-load fails the load.
    pub files: PackageFiles,
}

/// Size, modification time and inode of each regular file of a package directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageFiles(Vec<FileStamp>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl PackageFiles {
    /// Stamps every regular file directly in `dir` (symlinks followed), sorted by name.
    pub fn snapshot(dir: &Path) -> Result<Self, ModelError> {
        use std::os::unix::fs::MetadataExt as _;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| package_err(dir, format!("cannot list the directory: {e}")))?;
        let mut stamps = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| package_err(dir, format!("cannot list: {e}")))?;
            let path = entry.path();
            // A file vanishing now is caught by `check_unchanged` if it mattered.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() {
                stamps.push(FileStamp {
                    path,
                    len: meta.len(),
                    modified: meta.modified().ok(),
                    inode: meta.ino(),
                });
            }
        }
        stamps.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self(stamps))
    }

    /// Fails naming the first file that differs from this snapshot: replaced (new inode),
    /// resized, rewritten (new mtime), removed or added.
    pub fn check_unchanged(&self, dir: &Path) -> Result<(), ModelError> {
        let now = Self::snapshot(dir)?;
        let changed = |file: &Path, what: String| ModelError::ChangedWhileLoading {
            file: file.to_path_buf(),
            what,
        };
        for before in &self.0 {
            let Some(after) = now.0.iter().find(|s| s.path == before.path) else {
                return Err(changed(&before.path, "removed".into()));
            };
            if after.inode != before.inode {
                return Err(changed(&before.path, "replaced by another file".into()));
            }
            if after.len != before.len {
                return Err(changed(
                    &before.path,
                    format!("size {} -> {} bytes", before.len, after.len),
                ));
            }
            if after.modified != before.modified {
                return Err(changed(&before.path, "rewritten in place".into()));
            }
        }
        if let Some(added) = now
            .0
            .iter()
            .find(|s| !self.0.iter().any(|b| b.path == s.path))
        {
            return Err(changed(&added.path, "added".into()));
        }
        Ok(())
    }
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
        // Before anything is read, so a change to any file from here to the end of the load
        // is caught.
        let files = PackageFiles::snapshot(dir)?;
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
        let config = dir.join("config.json");
        let mut package = if genai.is_file() {
            Self::from_genai_json(dir, &read_text(&genai)?, id)?
        } else if config.is_file() {
            let gen_file = dir.join("generation_config.json");
            let gen_text = if gen_file.is_file() {
                Some(read_text(&gen_file)?)
            } else {
                None
            };
            Self::from_optimum_json(dir, &read_text(&config)?, gen_text.as_deref(), id)?
        } else {
            return Err(package_err(
                dir,
                "neither genai_config.json (onnxruntime-genai layout) nor config.json (Optimum layout) found",
            ));
        };
        package.files = files;
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

    /// Parses the text of an onnxruntime-genai `genai_config.json` belonging to package `dir`.
    /// Pure apart from naming files in `dir`, so it can be fuzzed; [`ModelPackage::load`] reads
    /// the file and calls it.
    pub fn from_genai_json(dir: &Path, text: &str, id: String) -> Result<Self, ModelError> {
        let file = dir.join("genai_config.json");
        let root = parse_json(&file, text)?;
        let package = Self::from_genai(dir, &file, &root, id, dir.join("tokenizer.json"))?;
        package.check_dimensions(&file)?;
        Ok(package)
    }

    /// Parses the texts of an Optimum `config.json` and, when present,
    /// `generation_config.json` belonging to package `dir` (pure, like
    /// [`ModelPackage::from_genai_json`]).
    pub fn from_optimum_json(
        dir: &Path,
        config: &str,
        generation_config: Option<&str>,
        id: String,
    ) -> Result<Self, ModelError> {
        let file = dir.join("config.json");
        let cfg = parse_json(&file, config)?;
        let gen = generation_config
            .map(|text| parse_json(&dir.join("generation_config.json"), text))
            .transpose()?;
        let package = Self::from_optimum(
            dir,
            &file,
            &cfg,
            gen.as_ref(),
            id,
            dir.join("tokenizer.json"),
        )?;
        package.check_dimensions(&file)?;
        Ok(package)
    }

    /// Refuses sizes no real model has. They come from a hand-editable file and feed buffer
    /// sizes and arithmetic later (KV bytes per token, context budgets), where zero or absurd
    /// values would divide by zero, overflow or ask for impossible allocations.
    fn check_dimensions(&self, file: &Path) -> Result<(), ModelError> {
        for (name, value, max) in [
            ("context_length", self.context_length, MAX_CONTEXT_LENGTH),
            ("vocab_size", self.vocab_size, MAX_VOCAB_SIZE),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_key_value_heads", self.num_kv_heads, MAX_HEADS),
            ("head_size", self.head_size, MAX_HEAD_SIZE),
        ] {
            if value == 0 || value > max {
                return Err(file_err(
                    file,
                    format!("{name} is {value}; it must be 1..={max}"),
                ));
            }
        }
        Ok(())
    }

    fn from_genai(
        dir: &Path,
        file: &Path,
        root: &Value,
        id: String,
        tokenizer_file: PathBuf,
    ) -> Result<Self, ModelError> {
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
            position_ids: inputs.and_then(|i| i.get("position_ids")).is_some(),
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
            files: PackageFiles::default(),
        })
    }

    fn from_optimum(
        dir: &Path,
        file: &Path,
        cfg: &Value,
        gen: Option<&Value>,
        id: String,
        tokenizer_file: PathBuf,
    ) -> Result<Self, ModelError> {
        let heads = usize_at(cfg, "num_attention_heads")
            .ok_or_else(|| file_err(file, "missing num_attention_heads"))?;
        let hidden =
            usize_at(cfg, "hidden_size").ok_or_else(|| file_err(file, "missing hidden_size"))?;
        if heads == 0 {
            return Err(file_err(file, "num_attention_heads is 0"));
        }
        let head_size = usize_at(cfg, "head_dim").unwrap_or(hidden / heads);
        let mut eos = token_ids(cfg.get("eos_token_id"));
        if let Some(gen) = gen {
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
            context_length: usize_at(cfg, "max_position_embeddings")
                .ok_or_else(|| file_err(file, "missing max_position_embeddings"))?,
            vocab_size: usize_at(cfg, "vocab_size")
                .ok_or_else(|| file_err(file, "missing vocab_size"))?,
            num_layers: usize_at(cfg, "num_hidden_layers")
                .ok_or_else(|| file_err(file, "missing num_hidden_layers"))?,
            num_kv_heads: usize_at(cfg, "num_key_value_heads").unwrap_or(heads),
            head_size,
            bos_token_id: token_ids(cfg.get("bos_token_id")).first().copied(),
            eos_token_ids: eos,
            chat_template: None,
            bos_token: None,
            eos_token: None,
            files: PackageFiles::default(),
        })
    }
}

/// What the gateway takes from `tokenizer_config.json`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TokenizerConfig {
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl TokenizerConfig {
    /// Parses the text of `file` (a `tokenizer_config.json`); pure, so it can be fuzzed.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ModelError> {
        let json = parse_json(file, text)?;
        let chat_template = match json.get("chat_template") {
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
                    file,
                    "chat_template must be a string or a list of named templates",
                ))
            }
        };
        Ok(Self {
            chat_template,
            bos_token: special_token(json.get("bos_token")),
            eos_token: special_token(json.get("eos_token")),
        })
    }
}

fn read_tokenizer_config(dir: &Path) -> Result<TokenizerConfig, ModelError> {
    let file = dir.join("tokenizer_config.json");
    let mut cfg = if file.is_file() {
        TokenizerConfig::parse(&file, &read_text(&file)?)?
    } else {
        TokenizerConfig::default()
    };
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

fn read_text(file: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(file).map_err(|e| file_err(file, format!("unreadable: {e}")))
}

fn parse_json(file: &Path, text: &str) -> Result<Value, ModelError> {
    serde_json::from_str(text).map_err(|e| file_err(file, format!("invalid JSON: {e}")))
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

/// The bytes of a graph file, searched for operator names: they appear as plain strings in the
/// protobuf, and the packages read here keep their weights in external data, so the file is
/// small. Used where a graph's form matters (quantization, batching) without parsing it.
pub struct GraphOps(Vec<u8>);

impl GraphOps {
    pub fn read(model_onnx: &Path) -> std::io::Result<Self> {
        std::fs::read(model_onnx).map(Self)
    }

    /// Whether the graph names operator `op` anywhere.
    pub fn uses(&self, op: &str) -> bool {
        let op = op.as_bytes();
        self.0.windows(op.len()).any(|w| w == op)
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

    const GENAI: &str = r#"{"model": {"context_length": 512, "vocab_size": 4096, "eos_token_id": [7, 1],
        "decoder": {"num_hidden_layers": 4, "num_key_value_heads": 2, "head_size": 32}}}"#;

    #[test]
    fn genai_config_text_parses() {
        let p = ModelPackage::from_genai_json(Path::new("/m"), GENAI, "m".into()).expect("valid");
        assert_eq!(
            (p.context_length, p.vocab_size, p.num_layers),
            (512, 4096, 4)
        );
        assert_eq!(p.eos_token_ids, vec![7, 1]);
    }

    #[test]
    fn zero_or_absurd_dimensions_are_rejected_naming_the_field() {
        for (from, to, field) in [
            (
                "\"context_length\": 512",
                "\"context_length\": 0",
                "context_length",
            ),
            (
                "\"head_size\": 32",
                "\"head_size\": 18446744073709551615",
                "head_size",
            ),
            (
                "\"vocab_size\": 4096",
                "\"vocab_size\": 1099511627776",
                "vocab_size",
            ),
        ] {
            let text = GENAI.replace(from, to);
            let err = ModelPackage::from_genai_json(Path::new("/m"), &text, "m".into())
                .expect_err("must fail");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn optimum_head_size_rounding_to_zero_is_rejected() {
        // hidden_size / num_attention_heads = 0: an error, not a zero-sized KV layout.
        let cfg = r#"{"num_attention_heads": 64, "hidden_size": 8, "max_position_embeddings": 64,
            "vocab_size": 10, "num_hidden_layers": 1, "eos_token_id": 2}"#;
        let err = ModelPackage::from_optimum_json(Path::new("/m"), cfg, None, "m".into())
            .expect_err("must fail");
        assert!(err.to_string().contains("head_size"), "{err}");
        let gen = r#"{"eos_token_id": [5, 6]}"#;
        let ok = cfg.replace("\"hidden_size\": 8", "\"hidden_size\": 256");
        let p = ModelPackage::from_optimum_json(Path::new("/m"), &ok, Some(gen), "m".into())
            .expect("valid");
        assert_eq!(p.eos_token_ids, vec![5, 6]);
    }

    #[test]
    fn tokenizer_config_accepts_named_templates_and_rejects_other_types() {
        let file = Path::new("tokenizer_config.json");
        let cfg = TokenizerConfig::parse(
            file,
            r#"{"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}],
                "bos_token": {"content": "<s>"}}"#,
        )
        .expect("valid");
        assert_eq!(cfg.chat_template.as_deref(), Some("d"));
        assert_eq!(cfg.bos_token.as_deref(), Some("<s>"));
        assert!(TokenizerConfig::parse(file, r#"{"chat_template": 5}"#).is_err());
        assert!(TokenizerConfig::parse(file, "[").is_err());
    }

    #[test]
    fn missing_directory_names_it() {
        let err = ModelPackage::load(Path::new("/nonexistent/model"), None).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/model"), "{err}");
    }
}

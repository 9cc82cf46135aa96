//! Discovers how a decoder graph wants to be fed — input/output names, KV shapes and mode,
//! integer widths — from the session's declared inputs, cross-checked against the package config.

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use super::error::ModelError;
use super::package::{file_err, ModelPackage, PackageFormat};

/// How past and present KV relate between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvMode {
    /// `present` = `past` ++ new positions; the output becomes the next step's input.
    Concatenate,
    /// One buffer of `capacity` positions bound as both past and present, written in place.
    SharedBuffer,
}

/// Integer width of an index-like input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexType {
    I64,
    I32,
}

/// The names and shapes a decoder step needs.
#[derive(Debug, Clone)]
pub struct ModelLayout {
    pub input_ids: String,
    pub input_ids_type: IndexType,
    pub attention_mask: Option<String>,
    pub attention_mask_type: IndexType,
    pub position_ids: Option<String>,
    pub position_ids_type: IndexType,
    /// (key, value) input names per layer.
    pub past: Vec<(String, String)>,
    /// (key, value) output names per layer.
    pub present: Vec<(String, String)>,
    pub logits: String,
    pub num_kv_heads: usize,
    pub head_size: usize,
    pub kv_mode: KvMode,
}

impl ModelLayout {
    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.past.len()
    }

    /// Bytes of KV state per token position (keys and values, all layers, f32).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.num_layers() * self.num_kv_heads * self.head_size * std::mem::size_of::<f32>()
    }

    /// Reads the session's inputs and outputs and checks them against the package.
    pub fn discover(session: &Session, package: &ModelPackage) -> Result<Self, ModelError> {
        let file = &package.onnx_file;
        let input_names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let output_names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let (pk, pv, ok, ov) = match &package.format {
            PackageFormat::Genai {
                past_key_template,
                past_value_template,
                present_key_template,
                present_value_template,
                ..
            } => (
                past_key_template.clone(),
                past_value_template.clone(),
                present_key_template.clone(),
                present_value_template.clone(),
            ),
            PackageFormat::Optimum => (
                "past_key_values.%d.key".to_string(),
                "past_key_values.%d.value".to_string(),
                "present.%d.key".to_string(),
                "present.%d.value".to_string(),
            ),
        };
        let mut past = Vec::new();
        let mut present = Vec::new();
        for layer in 0.. {
            let name = |t: &str| t.replace("%d", &layer.to_string());
            let (k, v) = (name(&pk), name(&pv));
            if !input_names.contains(&k.as_str()) {
                break;
            }
            if !input_names.contains(&v.as_str()) {
                return Err(file_err(file, format!("input {k} has no matching {v}")));
            }
            let (okn, ovn) = (name(&ok), name(&ov));
            for out in [&okn, &ovn] {
                if !output_names.contains(&out.as_str()) {
                    return Err(file_err(
                        file,
                        format!("output {out} missing (needed to carry the KV cache)"),
                    ));
                }
            }
            past.push((k, v));
            present.push((okn, ovn));
        }
        if past.is_empty() {
            return Err(file_err(
                file,
                format!("no KV cache inputs named like '{pk}': export the model with past key values (text-generation-with-past)"),
            ));
        }
        if past.len() != package.num_layers {
            return Err(file_err(
                file,
                format!(
                    "graph has {} KV layers but the config says num_hidden_layers = {}",
                    past.len(),
                    package.num_layers
                ),
            ));
        }
        let (kv_type, shape) = tensor_info(session, &past[0].0)
            .ok_or_else(|| file_err(file, format!("input {} is not a tensor", past[0].0)))?;
        if kv_type != TensorElementType::Float32 {
            return Err(file_err(
                file,
                format!("KV cache element type {kv_type:?} is not supported on this build (float32 only)"),
            ));
        }
        if shape.len() != 4 {
            return Err(file_err(
                file,
                format!(
                    "KV input {} has rank {}, expected 4",
                    past[0].0,
                    shape.len()
                ),
            ));
        }
        let num_kv_heads = dim_or(shape[1], package.num_kv_heads);
        let head_size = dim_or(shape[3], package.head_size);
        if num_kv_heads != package.num_kv_heads || head_size != package.head_size {
            return Err(file_err(
                file,
                format!(
                    "KV shape [_, {num_kv_heads}, _, {head_size}] disagrees with the config (kv heads {}, head size {})",
                    package.num_kv_heads, package.head_size
                ),
            ));
        }
        let logits = ["logits"]
            .into_iter()
            .find(|n| output_names.contains(n))
            .ok_or_else(|| file_err(file, "no 'logits' output"))?
            .to_string();
        if !input_names.contains(&"input_ids") {
            return Err(file_err(file, "no 'input_ids' input"));
        }
        let known: Vec<&str> = past
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()])
            .chain(["input_ids", "attention_mask", "position_ids"])
            .collect();
        if let Some(extra) = input_names.iter().find(|n| !known.contains(n)) {
            return Err(file_err(file, format!("unsupported model input '{extra}'")));
        }
        let index_type = |name: &str| -> Result<IndexType, ModelError> {
            match tensor_info(session, name).map(|(t, _)| t) {
                Some(TensorElementType::Int64) | None => Ok(IndexType::I64),
                Some(TensorElementType::Int32) => Ok(IndexType::I32),
                Some(other) => Err(file_err(
                    file,
                    format!("input {name} has unsupported type {other:?}"),
                )),
            }
        };
        let has = |name: &str| input_names.contains(&name).then(|| name.to_string());
        let kv_mode = match package.format {
            PackageFormat::Genai {
                share_buffer: true, ..
            } => KvMode::SharedBuffer,
            _ => KvMode::Concatenate,
        };
        Ok(Self {
            input_ids_type: index_type("input_ids")?,
            input_ids: "input_ids".to_string(),
            attention_mask_type: index_type("attention_mask")?,
            attention_mask: has("attention_mask"),
            position_ids_type: index_type("position_ids")?,
            position_ids: has("position_ids"),
            past,
            present,
            logits,
            num_kv_heads,
            head_size,
            kv_mode,
        })
    }
}

fn tensor_info(session: &Session, name: &str) -> Option<(TensorElementType, Vec<i64>)> {
    let input = session.inputs().iter().find(|i| i.name() == name)?;
    match input.dtype() {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

/// Symbolic dimensions come back as -1; fall back to the config's value for those.
fn dim_or(dim: i64, fallback: usize) -> usize {
    usize::try_from(dim)
        .ok()
        .filter(|d| *d > 0)
        .unwrap_or(fallback)
}

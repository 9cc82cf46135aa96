//! Discovers how a decoder graph wants to be fed — input/output names, KV shapes, mode and
//! element type, logits type, integer widths — from the session's declared inputs and outputs,
//! cross-checked against the package config.

use std::path::Path;

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use super::error::ModelError;
use super::kv::FloatType;
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
    /// Element type of every `past_*` input and `present_*` output.
    pub kv_type: FloatType,
    /// Element type of the logits output (converted to float32 for sampling).
    pub logits_type: FloatType,
}

/// One declared graph input or output: name, element type (`None` for non-tensors) and shape
/// (symbolic dimensions as -1).
#[derive(Debug, Clone, PartialEq)]
pub struct IoInfo {
    pub name: String,
    pub ty: Option<TensorElementType>,
    pub shape: Vec<i64>,
}

impl IoInfo {
    fn of(name: &str, dtype: &ValueType) -> Self {
        let (ty, shape) = match dtype {
            ValueType::Tensor { ty, shape, .. } => (Some(*ty), shape.iter().copied().collect()),
            _ => (None, Vec::new()),
        };
        Self {
            name: name.to_string(),
            ty,
            shape,
        }
    }
}

impl ModelLayout {
    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.past.len()
    }

    /// Bytes of KV state per token position (keys and values, all layers, in the KV type).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.num_layers() * self.num_kv_heads * self.head_size * self.kv_type.size()
    }

    /// Reads the session's inputs and outputs and checks them against the package.
    pub fn discover(session: &Session, package: &ModelPackage) -> Result<Self, ModelError> {
        let inputs: Vec<IoInfo> = session
            .inputs()
            .iter()
            .map(|i| IoInfo::of(i.name(), i.dtype()))
            .collect();
        let outputs: Vec<IoInfo> = session
            .outputs()
            .iter()
            .map(|o| IoInfo::of(o.name(), o.dtype()))
            .collect();
        Self::from_io(&inputs, &outputs, package)
    }

    /// [`ModelLayout::discover`] on declared inputs and outputs (pure, for tests).
    pub fn from_io(
        inputs: &[IoInfo],
        outputs: &[IoInfo],
        package: &ModelPackage,
    ) -> Result<Self, ModelError> {
        let file = &package.onnx_file;
        let input_names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        let output_names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        let [pk, pv, ok, ov] = kv_templates(package);
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
        let kv_type = kv_element_type(file, inputs, outputs, &past, &present)?;
        let shape = find(inputs, &past[0].0).map_or(&[][..], |i| &i.shape[..]);
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
        let logits_type = float_type_of(file, "output", find(outputs, &logits))?;
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
            match find(inputs, name).and_then(|i| i.ty) {
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
            kv_type,
            logits_type,
        })
    }
}

/// Name templates (`%d` = layer) of past key, past value, present key, present value.
fn kv_templates(package: &ModelPackage) -> [String; 4] {
    match &package.format {
        PackageFormat::Genai {
            past_key_template,
            past_value_template,
            present_key_template,
            present_value_template,
            ..
        } => [
            past_key_template.clone(),
            past_value_template.clone(),
            present_key_template.clone(),
            present_value_template.clone(),
        ],
        PackageFormat::Optimum => [
            "past_key_values.%d.key".to_string(),
            "past_key_values.%d.value".to_string(),
            "present.%d.key".to_string(),
            "present.%d.value".to_string(),
        ],
    }
}

/// The decoder inputs a package's config promises, known before any session exists: TensorRT
/// takes its shape profiles when the session is created, before the graph can be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredInputs {
    pub input_ids: String,
    pub attention_mask: Option<String>,
    pub position_ids: Option<String>,
    /// (key, value) input names per layer.
    pub past: Vec<(String, String)>,
    pub num_kv_heads: usize,
    pub head_size: usize,
    pub kv_mode: KvMode,
}

impl DeclaredInputs {
    /// What `package` declares: genai configs name `position_ids` when the graph has it;
    /// Optimum decoder exports (Llama, Mistral, Qwen, Phi, GPT-2 families) always have it.
    pub fn from_package(package: &ModelPackage) -> Self {
        let [pk, pv, ..] = kv_templates(package);
        let (position_ids, kv_mode) = match package.format {
            PackageFormat::Genai {
                position_ids,
                share_buffer,
                ..
            } => (
                position_ids,
                if share_buffer {
                    KvMode::SharedBuffer
                } else {
                    KvMode::Concatenate
                },
            ),
            PackageFormat::Optimum => (true, KvMode::Concatenate),
        };
        Self {
            input_ids: "input_ids".into(),
            attention_mask: Some("attention_mask".into()),
            position_ids: position_ids.then(|| "position_ids".into()),
            past: (0..package.num_layers)
                .map(|l| {
                    let layer = l.to_string();
                    (pk.replace("%d", &layer), pv.replace("%d", &layer))
                })
                .collect(),
            num_kv_heads: package.num_kv_heads,
            head_size: package.head_size,
            kv_mode,
        }
    }

    /// The same view of a discovered layout, to check a prediction against the graph.
    pub fn of_layout(layout: &ModelLayout) -> Self {
        Self {
            input_ids: layout.input_ids.clone(),
            attention_mask: layout.attention_mask.clone(),
            position_ids: layout.position_ids.clone(),
            past: layout.past.clone(),
            num_kv_heads: layout.num_kv_heads,
            head_size: layout.head_size,
            kv_mode: layout.kv_mode,
        }
    }
}

fn find<'a>(list: &'a [IoInfo], name: &str) -> Option<&'a IoInfo> {
    list.iter().find(|i| i.name == name)
}

/// The element type of one float tensor, or a load error naming it and its type.
fn float_type_of(file: &Path, what: &str, io: Option<&IoInfo>) -> Result<FloatType, ModelError> {
    let Some(io) = io else {
        return Err(file_err(file, format!("{what} missing")));
    };
    let Some(ty) = io.ty else {
        return Err(file_err(
            file,
            format!("{what} {} is not a tensor", io.name),
        ));
    };
    FloatType::from_onnx(ty).ok_or_else(|| {
        file_err(
            file,
            format!(
                "{what} {} has element type {ty:?}; supported: float32, float16",
                io.name
            ),
        )
    })
}

/// The one element type shared by every KV input and output (they are copied between each
/// other and into one cache, so a mixture is refused).
fn kv_element_type(
    file: &Path,
    inputs: &[IoInfo],
    outputs: &[IoInfo],
    past: &[(String, String)],
    present: &[(String, String)],
) -> Result<FloatType, ModelError> {
    let first = float_type_of(file, "input", find(inputs, &past[0].0))?;
    let all = past
        .iter()
        .flat_map(|(k, v)| [k, v])
        .map(|n| ("input", find(inputs, n)))
        .chain(
            present
                .iter()
                .flat_map(|(k, v)| [k, v])
                .map(|n| ("output", find(outputs, n))),
        );
    for (what, io) in all {
        let ty = float_type_of(file, what, io)?;
        if ty != first {
            let name = io.map_or("?", |i| i.name.as_str());
            return Err(file_err(
                file,
                format!(
                    "{what} {name} is {} but {} is {}: every KV tensor must have one element type",
                    ty.name(),
                    past[0].0,
                    first.name()
                ),
            ));
        }
    }
    Ok(first)
}

/// Symbolic dimensions come back as -1; fall back to the config's value for those.
fn dim_or(dim: i64, fallback: usize) -> usize {
    usize::try_from(dim)
        .ok()
        .filter(|d| *d > 0)
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn package(share_buffer: bool) -> ModelPackage {
        ModelPackage {
            dir: PathBuf::from("/m"),
            id: "m".into(),
            onnx_file: PathBuf::from("/m/model.onnx"),
            tokenizer_file: PathBuf::from("/m/tokenizer.json"),
            format: PackageFormat::Genai {
                share_buffer,
                past_key_template: "past_key_values.%d.key".into(),
                past_value_template: "past_key_values.%d.value".into(),
                present_key_template: "present.%d.key".into(),
                present_value_template: "present.%d.value".into(),
                position_ids: false,
            },
            context_length: 512,
            vocab_size: 4096,
            num_layers: 2,
            num_kv_heads: 2,
            head_size: 32,
            bos_token_id: Some(0),
            eos_token_ids: vec![7],
            chat_template: None,
            bos_token: None,
            eos_token: None,
            files: crate::engine::package::PackageFiles::default(),
        }
    }

    fn io(name: &str, ty: TensorElementType, shape: &[i64]) -> IoInfo {
        IoInfo {
            name: name.into(),
            ty: Some(ty),
            shape: shape.to_vec(),
        }
    }

    /// A genai-like graph whose KV and logits have the given types.
    fn graph(kv: TensorElementType, logits: TensorElementType) -> (Vec<IoInfo>, Vec<IoInfo>) {
        let mut inputs = vec![
            io("input_ids", TensorElementType::Int64, &[-1, -1]),
            io("attention_mask", TensorElementType::Int64, &[-1, -1]),
        ];
        let mut outputs = vec![io("logits", logits, &[-1, -1, 4096])];
        for l in 0..2 {
            for part in ["key", "value"] {
                inputs.push(io(
                    &format!("past_key_values.{l}.{part}"),
                    kv,
                    &[-1, 2, -1, 32],
                ));
                outputs.push(io(&format!("present.{l}.{part}"), kv, &[-1, 2, -1, 32]));
            }
        }
        (inputs, outputs)
    }

    #[test]
    fn float16_kv_and_logits_are_discovered_and_sized() {
        let (i, o) = graph(TensorElementType::Float16, TensorElementType::Float16);
        let layout = ModelLayout::from_io(&i, &o, &package(true)).expect("fp16 layout");
        assert_eq!(layout.kv_type, FloatType::F16);
        assert_eq!(layout.logits_type, FloatType::F16);
        // 2 (k, v) * 2 layers * 2 heads * 32 * 2 bytes
        assert_eq!(layout.kv_bytes_per_token(), 512);
        let (i, o) = graph(TensorElementType::Float32, TensorElementType::Float32);
        let layout = ModelLayout::from_io(&i, &o, &package(true)).expect("fp32 layout");
        assert_eq!(layout.kv_bytes_per_token(), 1024);
        // fp16 KV with fp32 logits (some builder outputs) is fine too.
        let (i, o) = graph(TensorElementType::Float16, TensorElementType::Float32);
        let layout = ModelLayout::from_io(&i, &o, &package(true)).expect("mixed layout");
        assert_eq!(
            (layout.kv_type, layout.logits_type),
            (FloatType::F16, FloatType::F32)
        );
    }

    /// The load error for a graph, as text.
    fn refusal(inputs: &[IoInfo], outputs: &[IoInfo]) -> String {
        ModelLayout::from_io(inputs, outputs, &package(true))
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn unsupported_kv_or_logits_types_are_refused_naming_the_tensor() {
        let (i, o) = graph(TensorElementType::Bfloat16, TensorElementType::Float32);
        let err = refusal(&i, &o);
        assert!(
            err.contains("past_key_values.0.key") && err.contains("Bfloat16"),
            "{err}"
        );
        let (i, o) = graph(TensorElementType::Float32, TensorElementType::Float64);
        let err = refusal(&i, &o);
        assert!(
            err.contains("output logits") && err.contains("Float64"),
            "{err}"
        );
        // One layer's present in another type than the past: refused, naming it.
        let (i, mut o) = graph(TensorElementType::Float16, TensorElementType::Float16);
        o[3].ty = Some(TensorElementType::Float32);
        let err = refusal(&i, &o);
        assert!(
            err.contains(&o[3].name) && err.contains("one element type"),
            "{err}"
        );
    }

    #[test]
    fn declared_inputs_match_what_discovery_finds() {
        let p = package(true);
        let (i, o) = graph(TensorElementType::Float16, TensorElementType::Float16);
        let layout = ModelLayout::from_io(&i, &o, &p).expect("layout");
        assert_eq!(
            DeclaredInputs::from_package(&p),
            DeclaredInputs::of_layout(&layout)
        );
    }
}

//! Execution providers: the operator's ordered preference (`model.execution_providers`), their
//! options, and attaching the first one that works to a session.
//!
//! ONNX Runtime silently runs a graph on CPU when an accelerator cannot be registered, so every
//! choice is made explicitly here: a provider missing from the loaded ONNX Runtime library
//! (e.g. CUDA in the CPU-only wheel) or failing to register or to build the session is skipped
//! with a loud log line, and with `require_accelerator: true` a failing first choice stops
//! startup with the provider and the reason. The provider that actually runs is reported.

use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use serde::Deserialize;

use super::layout::{DeclaredInputs, KvMode};

/// One entry of `model.execution_providers`, with its options.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderSettings {
    Cpu {
        /// ORT's memory arena (faster allocation, memory is kept once grown).
        #[serde(default = "yes")]
        arena: bool,
        /// Intra-op worker threads spin briefly before sleeping (lower latency, more CPU).
        #[serde(default = "yes")]
        spinning: bool,
        /// Inter-op threads; 0 lets ORT decide (graphs here run sequentially).
        #[serde(default)]
        inter_threads: usize,
    },
    Cuda {
        #[serde(default)]
        device_id: i32,
        /// GPU memory arena limit in bytes; 0 = no limit.
        #[serde(default)]
        memory_limit_bytes: usize,
        /// Capture decode steps in CUDA graphs (needs static shapes; off by default).
        #[serde(default)]
        cuda_graphs: bool,
    },
    Tensorrt {
        #[serde(default)]
        device_id: i32,
        #[serde(default)]
        fp16: bool,
        #[serde(default)]
        int8: bool,
        /// Built engines are stored here, so each device builds them once, not per start.
        #[serde(default)]
        engine_cache_dir: Option<String>,
        #[serde(default)]
        timing_cache_dir: Option<String>,
        /// Builder workspace in bytes; 0 = TensorRT's default.
        #[serde(default)]
        max_workspace_bytes: usize,
    },
    Openvino {
        /// `CPU`, `GPU`, `NPU`, `GPU.0`, `AUTO:GPU,CPU`, `HETERO:…`, `MULTI:…`.
        #[serde(default = "openvino_cpu")]
        device_type: String,
        /// Compiled blobs are stored here and reused on later starts.
        #[serde(default)]
        cache_dir: Option<String>,
        /// `FP32`, `FP16` or `ACCURACY`; unset = the device default.
        #[serde(default)]
        precision: Option<String>,
    },
}

fn yes() -> bool {
    true
}

fn openvino_cpu() -> String {
    "CPU".into()
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings::Cpu {
            arena: true,
            spinning: true,
            inter_threads: 0,
        }
    }
}

impl ProviderSettings {
    /// The name used in config, logs, `/readyz`, `/v1/models` and the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderSettings::Cpu { .. } => "cpu",
            ProviderSettings::Cuda { .. } => "cuda",
            ProviderSettings::Tensorrt { .. } => "tensorrt",
            ProviderSettings::Openvino { .. } => "openvino",
        }
    }

    /// True for everything but the CPU provider.
    pub fn is_accelerator(&self) -> bool {
        !matches!(self, ProviderSettings::Cpu { .. })
    }

    /// Checks the options; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ProviderSettings::Cpu { .. } => Ok(()),
            ProviderSettings::Cuda { device_id, .. } => non_negative(*device_id),
            ProviderSettings::Tensorrt {
                device_id,
                engine_cache_dir,
                timing_cache_dir,
                ..
            } => {
                non_negative(*device_id)?;
                for (field, dir) in [
                    ("engine_cache_dir", engine_cache_dir),
                    ("timing_cache_dir", timing_cache_dir),
                ] {
                    if dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
                        return Err(format!("{field}: must not be empty when set"));
                    }
                }
                Ok(())
            }
            ProviderSettings::Openvino {
                device_type,
                cache_dir,
                precision,
            } => {
                let base = device_type
                    .split([':', '.'])
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if !["CPU", "GPU", "NPU", "AUTO", "HETERO", "MULTI"].contains(&base.as_str()) {
                    return Err(format!(
                        "device_type: '{device_type}' is not CPU, GPU, NPU, AUTO, HETERO or MULTI"
                    ));
                }
                if let Some(p) = precision {
                    if !["FP32", "FP16", "ACCURACY"].contains(&p.to_ascii_uppercase().as_str()) {
                        return Err(format!("precision: '{p}' is not FP32, FP16 or ACCURACY"));
                    }
                }
                if cache_dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
                    return Err("cache_dir: must not be empty when set".into());
                }
                Ok(())
            }
        }
    }

    /// Whether the loaded ONNX Runtime library contains this provider at all.
    pub fn is_compiled_in(&self) -> Result<bool, String> {
        let result = match self {
            ProviderSettings::Cpu { .. } => return Ok(true),
            ProviderSettings::Cuda { .. } => ep::CUDA::is_available(),
            ProviderSettings::Tensorrt { .. } => ep::TensorRT::is_available(),
            ProviderSettings::Openvino { .. } => ep::OpenVINO::is_available(),
        };
        result.map_err(|e| e.to_string())
    }

    /// The ORT registration for an accelerator; `None` for the CPU provider (configured through
    /// session options instead). `profiles` are TensorRT shape profiles (min, opt, max).
    pub fn dispatch(&self, profiles: Option<&TrtProfiles>) -> Option<ExecutionProviderDispatch> {
        Some(match self {
            ProviderSettings::Cpu { .. } => return None,
            ProviderSettings::Cuda {
                device_id,
                memory_limit_bytes,
                cuda_graphs,
            } => {
                let mut cuda = ep::CUDA::default()
                    .with_device_id(*device_id)
                    .with_cuda_graph(*cuda_graphs);
                if *memory_limit_bytes > 0 {
                    cuda = cuda.with_memory_limit(*memory_limit_bytes);
                }
                cuda.build().error_on_failure()
            }
            ProviderSettings::Tensorrt { .. } => {
                self.tensorrt(profiles)?.build().error_on_failure()
            }
            ProviderSettings::Openvino {
                device_type,
                cache_dir,
                precision,
            } => {
                let mut ov = ep::OpenVINO::default().with_device_type(device_type);
                if let Some(dir) = cache_dir {
                    ov = ov.with_cache_dir(dir);
                }
                if let Some(p) = precision {
                    ov = ov.with_precision(p.to_ascii_uppercase());
                }
                ov.build().error_on_failure()
            }
        })
    }
}

impl ProviderSettings {
    /// The TensorRT registration with its options; `None` for other kinds. Engines and timing
    /// caches are stored when their directories are set, and ORT compares the profile with the
    /// one saved beside a cached engine, so a stable profile means engines are built once.
    pub fn tensorrt(&self, profiles: Option<&TrtProfiles>) -> Option<ep::TensorRT> {
        let ProviderSettings::Tensorrt {
            device_id,
            fp16,
            int8,
            engine_cache_dir,
            timing_cache_dir,
            max_workspace_bytes,
        } = self
        else {
            return None;
        };
        let mut trt = ep::TensorRT::default()
            .with_device_id(*device_id)
            .with_fp16(*fp16)
            .with_int8(*int8);
        if let Some(dir) = engine_cache_dir {
            trt = trt.with_engine_cache(true).with_engine_cache_path(dir);
        }
        if let Some(dir) = timing_cache_dir {
            trt = trt.with_timing_cache(true).with_timing_cache_path(dir);
        }
        if *max_workspace_bytes > 0 {
            trt = trt.with_max_workspace_size(*max_workspace_bytes);
        }
        if let Some(p) = profiles {
            trt = trt
                .with_profile_min_shapes(&p.min)
                .with_profile_opt_shapes(&p.opt)
                .with_profile_max_shapes(&p.max);
        }
        Some(trt)
    }
}

fn non_negative(device_id: i32) -> Result<(), String> {
    if device_id < 0 {
        return Err(format!("device_id: {device_id} is negative"));
    }
    Ok(())
}

/// Checks a whole provider list: not empty, no kind twice, CPU (if listed) last.
pub fn validate_list(list: &[ProviderSettings]) -> Result<(), String> {
    if list.is_empty() {
        return Err("list at least one provider (e.g. [cpu])".into());
    }
    for (i, p) in list.iter().enumerate() {
        p.validate()
            .map_err(|e| format!("[{i}] ({}): {e}", p.kind()))?;
        if list[..i].iter().any(|q| q.kind() == p.kind()) {
            return Err(format!("[{i}]: {} is listed twice", p.kind()));
        }
        if !p.is_accelerator() && i + 1 < list.len() {
            return Err(format!(
                "[{i}]: cpu always works, so providers after it would never be tried; put it last"
            ));
        }
    }
    Ok(())
}

/// TensorRT optimization-profile shapes (`name:AxBxC,name:…`, as ORT's `trt_profile_*_shapes`
/// take them) for min, opt and max.
#[derive(Debug, Clone, PartialEq)]
pub struct TrtProfiles {
    pub min: String,
    pub opt: String,
    pub max: String,
}

/// The part of TensorRT's error when explicit profiles miss an input (ORT's TensorRT EP names
/// the inputs after it). It happens when the graph is split between TensorRT and other
/// providers: the TensorRT subgraphs' own dynamic inputs need profiles too.
const PARTIAL_PROFILE_ERROR: &str = "no associated shape profiles";

impl TrtProfiles {
    /// One profile covering every shape the engine feeds `inputs`, so TensorRT builds its
    /// engines once for the real range instead of again whenever a longer sequence arrives:
    /// batch 1 to `max_batch` (concatenating models are run one sequence per call, so 1),
    /// sequences up to `context` positions, optimized for decoding (one new token) at half the
    /// context. KV inputs: concatenating models see 0 to `context - 1` past positions;
    /// shared-buffer models see a buffer of up to `context` positions.
    pub fn for_inputs(inputs: &DeclaredInputs, max_batch: usize, context: usize) -> Self {
        let c = context.max(1);
        let half = (c / 2).max(1);
        let (b_opt, b_max) = match inputs.kv_mode {
            KvMode::SharedBuffer => (max_batch.max(1), max_batch.max(1)),
            KvMode::Concatenate => (1, 1),
        };
        let (h, d) = (inputs.num_kv_heads, inputs.head_size);
        // (min, opt, max) positions of the KV inputs and width of the attention mask.
        let (past, mask) = match inputs.kv_mode {
            KvMode::Concatenate => {
                let opt = half.min(c - 1);
                ([0, opt, c - 1], [1, opt + 1, c])
            }
            KvMode::SharedBuffer => ([1, c, c], [1, half, c]),
        };
        let tokens = [vec![1, 1], vec![b_opt, 1], vec![b_max, c]];
        let mut entries: Vec<(&str, [Vec<usize>; 3])> = vec![(&inputs.input_ids, tokens.clone())];
        if let Some(name) = &inputs.position_ids {
            entries.push((name, tokens));
        }
        if let Some(name) = &inputs.attention_mask {
            entries.push((
                name,
                [vec![1, mask[0]], vec![b_opt, mask[1]], vec![b_max, mask[2]]],
            ));
        }
        for name in inputs.past.iter().flat_map(|(k, v)| [k, v]) {
            entries.push((
                name,
                [
                    vec![1, h, past[0], d],
                    vec![b_opt, h, past[1], d],
                    vec![b_max, h, past[2], d],
                ],
            ));
        }
        let join = |which: usize| {
            entries
                .iter()
                .map(|(name, dims)| {
                    let dims: Vec<String> = dims[which].iter().map(usize::to_string).collect();
                    format!("{name}:{}", dims.join("x"))
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        Self {
            min: join(0),
            opt: join(1),
            max: join(2),
        }
    }

    /// Whether a TensorRT failure is the one explicit profiles cause on a partitioned graph.
    pub fn is_partial_coverage_error(reason: &str) -> bool {
        reason.contains(PARTIAL_PROFILE_ERROR)
    }
}

/// Why a provider was not used.
#[derive(Debug, Clone)]
pub struct ProviderFailure {
    pub provider: &'static str,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<ProviderSettings>, String> {
        let list: Vec<ProviderSettings> =
            serde_yaml_ng_free::from_str(yaml).map_err(|e| e.to_string())?;
        validate_list(&list)?;
        Ok(list)
    }

    // Parsed through serde_json here (the config crate feeds the same serde derive).
    mod serde_yaml_ng_free {
        pub fn from_str<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
            serde_json::from_str(s)
        }
    }

    #[test]
    fn ordered_list_with_options_parses() {
        let list = parse(
            r#"[{"kind":"tensorrt","fp16":true,"engine_cache_dir":"/var/cache/trt"},
                {"kind":"cuda","device_id":1,"memory_limit_bytes":1000},
                {"kind":"cpu","spinning":false}]"#,
        )
        .expect("valid");
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].kind(), "tensorrt");
        assert_eq!(
            list[1],
            ProviderSettings::Cuda {
                device_id: 1,
                memory_limit_bytes: 1000,
                cuda_graphs: false
            }
        );
        assert_eq!(
            list[2],
            ProviderSettings::Cpu {
                arena: true,
                spinning: false,
                inter_threads: 0
            }
        );
    }

    #[test]
    fn bad_lists_and_options_name_the_problem() {
        let cases = [
            (r#"[]"#, "at least one"),
            (r#"[{"kind":"cpu"},{"kind":"cuda"}]"#, "put it last"),
            (r#"[{"kind":"cuda"},{"kind":"cuda"}]"#, "listed twice"),
            (r#"[{"kind":"cuda","device_id":-1}]"#, "device_id"),
            (
                r#"[{"kind":"openvino","device_type":"TPU"}]"#,
                "device_type",
            ),
            (r#"[{"kind":"openvino","precision":"INT3"}]"#, "precision"),
            (
                r#"[{"kind":"tensorrt","engine_cache_dir":" "}]"#,
                "engine_cache_dir",
            ),
            (r#"[{"kind":"tensorrt","fp32":true}]"#, "fp32"),
            (r#"[{"kind":"cuda","fp16":true}]"#, "fp16"),
            (r#"[{"kind":"tpu"}]"#, "tpu"),
        ];
        for (yaml, needle) in cases {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn openvino_device_variants_are_accepted() {
        for device in ["CPU", "GPU.0", "NPU", "AUTO:GPU,CPU", "HETERO:GPU,CPU"] {
            let p = ProviderSettings::Openvino {
                device_type: device.into(),
                cache_dir: None,
                precision: Some("fp16".into()),
            };
            assert!(p.validate().is_ok(), "{device}");
        }
    }

    fn declared(kv_mode: KvMode, position_ids: bool) -> DeclaredInputs {
        DeclaredInputs {
            input_ids: "input_ids".into(),
            attention_mask: Some("attention_mask".into()),
            position_ids: position_ids.then(|| "position_ids".into()),
            past: (0..2)
                .map(|l| {
                    (
                        format!("past_key_values.{l}.key"),
                        format!("past_key_values.{l}.value"),
                    )
                })
                .collect(),
            num_kv_heads: 4,
            head_size: 64,
            kv_mode,
        }
    }

    #[test]
    fn shared_buffer_profile_covers_the_batch_and_the_context() {
        let p = TrtProfiles::for_inputs(&declared(KvMode::SharedBuffer, false), 8, 2048);
        let kv = |l: usize, part: &str, dims: &str| format!("past_key_values.{l}.{part}:{dims}");
        let expect = |ids: &str, mask: &str, kv_dims: &str| {
            let mut v = vec![format!("input_ids:{ids}"), format!("attention_mask:{mask}")];
            for l in 0..2 {
                v.push(kv(l, "key", kv_dims));
                v.push(kv(l, "value", kv_dims));
            }
            v.join(",")
        };
        assert_eq!(p.min, expect("1x1", "1x1", "1x4x1x64"));
        assert_eq!(p.opt, expect("8x1", "8x1024", "8x4x2048x64"));
        assert_eq!(p.max, expect("8x2048", "8x2048", "8x4x2048x64"));
    }

    #[test]
    fn concatenating_profile_is_one_sequence_with_growing_past() {
        let p = TrtProfiles::for_inputs(&declared(KvMode::Concatenate, true), 8, 512);
        assert!(
            p.min.starts_with(
                "input_ids:1x1,position_ids:1x1,attention_mask:1x1,past_key_values.0.key:1x4x0x64,"
            ),
            "{}",
            p.min
        );
        assert!(
            p.opt.starts_with(
                "input_ids:1x1,position_ids:1x1,attention_mask:1x257,past_key_values.0.key:1x4x256x64,"
            ),
            "{}",
            p.opt
        );
        assert!(
            p.max.starts_with(
                "input_ids:1x512,position_ids:1x512,attention_mask:1x512,past_key_values.0.key:1x4x511x64,"
            ),
            "{}",
            p.max
        );
        assert!(
            p.max.ends_with("past_key_values.1.value:1x4x511x64"),
            "{}",
            p.max
        );
        // Every KV input has an entry in each of the three.
        for shapes in [&p.min, &p.opt, &p.max] {
            assert_eq!(shapes.split(',').count(), 3 + 4, "{shapes}");
        }
    }

    #[test]
    fn tiny_contexts_keep_min_opt_max_ordered() {
        for mode in [KvMode::Concatenate, KvMode::SharedBuffer] {
            for context in [0, 1, 2, 3] {
                let p = TrtProfiles::for_inputs(&declared(mode, true), 0, context);
                let dims = |s: &str| -> Vec<Vec<usize>> {
                    s.split(',')
                        .map(|e| {
                            let (_, d) = e.split_once(':').expect("name:dims");
                            d.split('x').map(|x| x.parse().expect("number")).collect()
                        })
                        .collect()
                };
                let (min, opt, max) = (dims(&p.min), dims(&p.opt), dims(&p.max));
                for ((a, b), c) in min.iter().zip(&opt).zip(&max) {
                    for ((x, y), z) in a.iter().zip(b).zip(c) {
                        assert!(x <= y && y <= z, "{mode:?} context {context}: {p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn tensorrt_options_carry_caches_and_profiles() {
        let settings = ProviderSettings::Tensorrt {
            device_id: 1,
            fp16: true,
            int8: false,
            engine_cache_dir: Some("/var/cache/trt-engines".into()),
            timing_cache_dir: Some("/var/cache/trt-timing".into()),
            max_workspace_bytes: 1 << 30,
        };
        let profiles = TrtProfiles::for_inputs(&declared(KvMode::SharedBuffer, false), 4, 256);
        let trt = settings.tensorrt(Some(&profiles)).expect("tensorrt");
        let options = format!("{trt:?}");
        for (key, value) in [
            ("trt_engine_cache_enable", "true"),
            ("trt_engine_cache_path", "/var/cache/trt-engines"),
            ("trt_timing_cache_enable", "true"),
            ("trt_timing_cache_path", "/var/cache/trt-timing"),
            ("trt_fp16_enable", "true"),
            ("trt_max_workspace_size", "1073741824"),
            ("device_id", "1"),
            ("trt_profile_min_shapes", profiles.min.as_str()),
            ("trt_profile_opt_shapes", profiles.opt.as_str()),
            ("trt_profile_max_shapes", profiles.max.as_str()),
        ] {
            assert!(
                options.contains(&format!("{key:?}: {value:?}")),
                "{key}={value} missing from {options}"
            );
        }
        let bare = ProviderSettings::Tensorrt {
            device_id: 0,
            fp16: false,
            int8: false,
            engine_cache_dir: None,
            timing_cache_dir: None,
            max_workspace_bytes: 0,
        }
        .tensorrt(None)
        .expect("tensorrt");
        let options = format!("{bare:?}");
        assert!(!options.contains("trt_engine_cache_path"), "{options}");
        assert!(!options.contains("trt_profile_min_shapes"), "{options}");
        assert!(ProviderSettings::default().tensorrt(None).is_none());
    }

    #[test]
    fn partial_profile_errors_are_recognised() {
        assert!(TrtProfiles::is_partial_coverage_error(
            "EP_FAIL : User needs to provide all the dynamic shape inputs with associated profiles if they want to explicitly set profiles through provider options. Following input(s) has no associated shape profiles provided: /model/layers.0/attn/GroupQueryAttention_output_0"
        ));
        assert!(!TrtProfiles::is_partial_coverage_error(
            "libnvinfer.so.10: cannot open shared object file"
        ));
    }
}

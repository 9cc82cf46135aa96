//! The package manifest (`manifest.json` in a model directory): what the package is (name,
//! version, layout, quantization, context length), the SHA-256 of every file, the prompt
//! versions it was evaluated with and its quality scores. The signature covers its exact bytes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::GovernanceError;
use super::files::{self, FileFacts};
use crate::engine::package::GraphOps;

/// File name of the manifest inside a package directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the detached ed25519 signature over the manifest's bytes.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// Files of a package directory that the manifest does not list (it cannot list itself).
pub const UNLISTED: &[&str] = &[MANIFEST_FILE, SIGNATURE_FILE];
/// Manifest format this gateway writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Longest accepted `name` / `version` (they become headers and metric labels).
const MAX_LABEL_LEN: usize = 64;

/// A model package's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    /// Model name (what operators call it; the served id comes from config or the directory).
    pub name: String,
    /// Version of this package, e.g. `1.2.0`; shown in response headers and metrics.
    pub version: String,
    /// Exporter layout (`onnxruntime-genai`, `optimum`).
    pub layout: String,
    /// How the weights are quantized (detected from the graph's operators unless given).
    pub quantization: String,
    pub context_length: usize,
    /// Every file of the package but the manifest and signature, by relative path.
    pub files: BTreeMap<String, FileEntry>,
    /// Prompt versions the quality scores were measured with.
    #[serde(default)]
    pub prompts: Vec<PromptRef>,
    /// Result of the last `edge-gateway eval` on this package, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityReport>,
}

/// Size and digest of one file, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// A prompt version (`prompts/<name>/<version>.yaml`) and the digest of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// Scores of one evaluation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityReport {
    /// Share of items passed, 0–1.
    pub score: f64,
    pub passed: usize,
    pub total: usize,
    /// Evaluation set file name and digest, so a score names exactly what it measured.
    pub data: String,
    pub data_sha256: String,
    /// Passed / total per check kind (`exact`, `contains`, `json_valid`, `regex`).
    pub by_check: BTreeMap<String, CheckScore>,
    /// RFC 3339 UTC time of the run.
    pub evaluated_at: String,
    /// The same set against a cloud upstream, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudScore>,
}

/// Passed / total for one check kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckScore {
    pub passed: usize,
    pub total: usize,
}

/// The evaluation set's score on a cloud upstream, for comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudScore {
    pub upstream: String,
    pub model: String,
    pub score: f64,
    pub passed: usize,
    pub total: usize,
}

impl Manifest {
    /// Parses and checks manifest text; `path` names it in errors. Pure: the fuzzers' entry.
    pub fn from_json(path: &Path, text: &str) -> Result<Self, GovernanceError> {
        let manifest: Manifest = serde_json::from_str(text)
            .map_err(|e| GovernanceError::manifest(path, format!("invalid manifest: {e}")))?;
        manifest.check(path)?;
        Ok(manifest)
    }

    /// Reads `dir/manifest.json`: `None` when the package has none.
    pub fn read(dir: &Path) -> Result<Option<(Self, Vec<u8>)>, GovernanceError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(GovernanceError::io(&path, e)),
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| GovernanceError::manifest(&path, "not UTF-8"))?;
        Ok(Some((Self::from_json(&path, text)?, bytes)))
    }

    /// The bytes written to disk (and signed): pretty JSON, fields in a fixed order, files
    /// sorted, trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<Vec<u8>, GovernanceError> {
        let bytes = self.to_bytes();
        files::write_atomic(&dir.join(MANIFEST_FILE), &bytes)?;
        Ok(bytes)
    }

    fn check(&self, path: &Path) -> Result<(), GovernanceError> {
        let bad = |m: String| Err(GovernanceError::manifest(path, m));
        if self.schema_version != SCHEMA_VERSION {
            return bad(format!(
                "schema_version {} is not supported (this gateway reads {SCHEMA_VERSION})",
                self.schema_version
            ));
        }
        for (field, value) in [("name", &self.name), ("version", &self.version)] {
            if !is_label(value) {
                return bad(format!(
                    "{field} '{value}' must be 1-{MAX_LABEL_LEN} characters of A-Z a-z 0-9 . _ - +"
                ));
            }
        }
        if self.files.is_empty() {
            return bad("files: the manifest lists no files".into());
        }
        for (name, entry) in &self.files {
            if files::resolve_in(Path::new("."), name).is_none()
                || UNLISTED.contains(&name.as_str())
            {
                return bad(format!(
                    "files: '{name}' is not a relative path inside the package"
                ));
            }
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!("files.{name}.sha256: not a hex SHA-256"));
            }
        }
        if let Some(q) = &self.quality {
            if !(0.0..=1.0).contains(&q.score) || q.passed > q.total {
                return bad(format!(
                    "quality: score {} / passed {} of {} is inconsistent",
                    q.score, q.passed, q.total
                ));
            }
        }
        Ok(())
    }

    /// Checks every file of `dir` against the manifest: listed files exist with the recorded
    /// size and digest, and no file is unlisted. The first difference names its file.
    pub fn check_files(&self, dir: &Path) -> Result<(), GovernanceError> {
        let present = files::package_files(dir, UNLISTED)?;
        for name in &present {
            if !self.files.contains_key(name) {
                return Err(GovernanceError::UnlistedFile {
                    file: dir.join(name),
                });
            }
        }
        for (name, entry) in &self.files {
            let file = files::resolve_in(dir, name)
                .ok_or_else(|| GovernanceError::manifest(dir.join(MANIFEST_FILE), "bad path"))?;
            if !present.contains(name) {
                return Err(GovernanceError::MissingFile { file });
            }
            // Size first: cheap, and catches truncation without hashing gigabytes.
            let size = std::fs::metadata(&file)
                .map_err(|e| GovernanceError::io(&file, e))?
                .len();
            if size != entry.bytes {
                return Err(GovernanceError::SizeMismatch {
                    file,
                    expected: entry.bytes,
                    actual: size,
                });
            }
            let FileFacts { sha256, .. } = files::sha256_file(&file)?;
            if !sha256.eq_ignore_ascii_case(&entry.sha256) {
                return Err(GovernanceError::DigestMismatch {
                    file,
                    expected: entry.sha256.clone(),
                    actual: sha256,
                });
            }
        }
        Ok(())
    }
}

/// True for names usable as header values and metric labels.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// Quantization of a graph, read from the operator names in `model.onnx` (they appear as
/// plain strings in the protobuf): what the exporters in `onnx/` produce.
pub fn detect_quantization(model_onnx: &Path) -> Result<String, GovernanceError> {
    let graph = GraphOps::read(model_onnx).map_err(|e| GovernanceError::io(model_onnx, e))?;
    let has = |op: &str| graph.uses(op);
    Ok(if has("MatMulNBits") {
        "weight-only n-bit (MatMulNBits)".to_string()
    } else if has("DynamicQuantizeMatMul") {
        // ONNX Runtime's fused dynamic int8 op (`requantize_dynamic.py --activations per-tensor`).
        "int8 dynamic (DynamicQuantizeMatMul)".to_string()
    } else if has("MatMulInteger") || has("DynamicQuantizeLinear") {
        "int8 dynamic (MatMulInteger)".to_string()
    } else if has("QLinearMatMul") {
        "int8 static (QLinearMatMul)".to_string()
    } else {
        "none detected".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_read_from_the_committed_graphs() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let detect = |dir: &str| {
            detect_quantization(&repo.join("onnx/models").join(dir).join("model.onnx"))
                .expect("readable graph")
        };
        assert_eq!(detect("edge-tiny-genai"), "weight-only n-bit (MatMulNBits)");
        assert_eq!(detect("edge-tiny-genai-dq"), "int8 dynamic (MatMulInteger)");
    }

    fn sample() -> Manifest {
        Manifest {
            schema_version: 1,
            name: "edge-tiny".into(),
            version: "1.0.0".into(),
            layout: "onnxruntime-genai".into(),
            quantization: "int8".into(),
            context_length: 512,
            files: BTreeMap::from([(
                "model.onnx".into(),
                FileEntry {
                    bytes: 3,
                    sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                        .into(),
                },
            )]),
            prompts: vec![],
            quality: None,
        }
    }

    #[test]
    fn round_trips_through_its_bytes() {
        let m = sample();
        let bytes = m.to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(Manifest::from_json(Path::new("m.json"), text).unwrap(), m);
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|m| m.schema_version = 2), "schema_version"),
            (Box::new(|m| m.version = "1 0".into()), "version"),
            (Box::new(|m| m.name = String::new()), "name"),
            (Box::new(|m| m.files.clear()), "no files"),
            (
                Box::new(|m| {
                    let e = m.files.remove("model.onnx").unwrap();
                    m.files.insert("../model.onnx".into(), e);
                }),
                "relative path",
            ),
            (
                Box::new(|m| m.files.get_mut("model.onnx").unwrap().sha256 = "zz".into()),
                "sha256",
            ),
        ];
        for (edit, needle) in cases {
            let mut m = sample();
            edit(&mut m);
            let text = String::from_utf8(m.to_bytes()).unwrap();
            let err = Manifest::from_json(Path::new("m.json"), &text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
        let err = Manifest::from_json(Path::new("m.json"), r#"{"schema_version":1,"extra":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.json"), "{err}");
    }

    #[test]
    fn labels_are_header_safe() {
        assert!(is_label("1.2.0-rc.1+build5"));
        for bad in ["", "a b", "a\nb", "é", &"x".repeat(65)] {
            assert!(!is_label(bad), "{bad:?}");
        }
    }
}

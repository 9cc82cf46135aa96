//! Signing and verifying a model package directory: build its manifest from the package and
//! its files, sign the manifest's bytes, and — before a package loads — check the signature
//! and every file's digest.

use std::path::Path;

use super::error::GovernanceError;
use super::files;
use super::manifest::{
    detect_quantization, FileEntry, Manifest, MANIFEST_FILE, SCHEMA_VERSION, SIGNATURE_FILE,
    UNLISTED,
};
use super::signing::{PublicKey, SecretKey, SignatureFile};
use crate::engine::package::ModelPackage;

/// What packages must prove before they load.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Public keys whose signatures are accepted.
    pub keys: Vec<PublicKey>,
    /// Refuse packages without a valid signature by one of `keys`.
    pub require_signed: bool,
}

/// How a package's signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Valid, by the key with this fingerprint.
    Valid(String),
    /// Signed, but no trusted keys are configured to check it against.
    Unchecked,
    /// No `manifest.sig`.
    Unsigned,
}

/// A package whose manifest matched its files.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    pub manifest: Manifest,
    pub signature: SignatureStatus,
}

/// What `model sign` records beyond what it can read from the package.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// Defaults to the existing manifest's name, else the directory name.
    pub name: Option<String>,
    /// Defaults to the existing manifest's version; required for a first signature.
    pub version: Option<String>,
    /// Defaults to what the graph's operators show.
    pub quantization: Option<String>,
}

/// Checks the package in `dir` against its manifest and signature under `trust`. `Ok(None)`:
/// the package has no manifest and none is required.
pub fn verify_package(
    dir: &Path,
    trust: &Trust,
) -> Result<Option<VerifiedPackage>, GovernanceError> {
    let Some((manifest, bytes)) = Manifest::read(dir)? else {
        if trust.require_signed {
            return Err(GovernanceError::Unsigned {
                dir: dir.to_path_buf(),
                message: format!("{MANIFEST_FILE} is missing"),
            });
        }
        return Ok(None);
    };
    let sig_path = dir.join(SIGNATURE_FILE);
    let signature = match std::fs::read_to_string(&sig_path) {
        Ok(text) => {
            let sig = SignatureFile::from_json(&sig_path, &text)?;
            if trust.keys.is_empty() {
                SignatureStatus::Unchecked
            } else {
                SignatureStatus::Valid(sig.verify(&sig_path, &bytes, &trust.keys)?)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SignatureStatus::Unsigned,
        Err(e) => return Err(GovernanceError::io(&sig_path, e)),
    };
    if trust.require_signed && !matches!(signature, SignatureStatus::Valid(_)) {
        return Err(GovernanceError::Unsigned {
            dir: dir.to_path_buf(),
            message: format!("{SIGNATURE_FILE} is missing"),
        });
    }
    // Digests after the signature: a manifest edited to match tampered files is reported as
    // a bad signature, not as a file the attacker chose.
    manifest.check_files(dir)?;
    Ok(Some(VerifiedPackage {
        manifest,
        signature,
    }))
}

/// Writes `dir/manifest.json` (digests of every file; name, version, layout, quantization and
/// context length from the package; prompts and quality kept from the existing manifest) and
/// `dir/manifest.sig` signed by `key`. Prompts and quality survive only if no file changed.
pub fn sign_package(
    dir: &Path,
    key: &SecretKey,
    options: &SignOptions,
) -> Result<Manifest, GovernanceError> {
    let manifest = build_manifest(dir, options)?;
    let bytes = manifest.write(dir)?;
    files::write_atomic(&dir.join(SIGNATURE_FILE), &key.sign(&bytes).to_bytes())?;
    Ok(manifest)
}

/// The manifest `sign_package` would write, without writing it (also what `eval` updates).
pub fn build_manifest(dir: &Path, options: &SignOptions) -> Result<Manifest, GovernanceError> {
    let package =
        ModelPackage::load(dir, None).map_err(|e| GovernanceError::manifest(dir, e.to_string()))?;
    // A broken existing manifest must not be silently replaced: the operator fixes or removes it.
    let existing = Manifest::read(dir)?.map(|(m, _)| m);
    let name = options
        .name
        .clone()
        .or_else(|| existing.as_ref().map(|m| m.name.clone()))
        .unwrap_or_else(|| package.id.clone());
    let version = options
        .version
        .clone()
        .or_else(|| existing.as_ref().map(|m| m.version.clone()))
        .ok_or_else(|| {
            GovernanceError::manifest(
                dir.join(MANIFEST_FILE),
                "no version yet: pass --version for the first signature",
            )
        })?;
    let quantization = match options.quantization.clone() {
        Some(q) => q,
        None => detect_quantization(&package.onnx_file)?,
    };
    let files: std::collections::BTreeMap<_, _> = files::digest_package(dir, UNLISTED)?
        .into_iter()
        .map(|(name, f)| {
            (
                name,
                FileEntry {
                    bytes: f.bytes,
                    sha256: f.sha256,
                },
            )
        })
        .collect();
    // Scores measured on other files do not describe these: they are dropped when any file
    // changed since the last evaluation.
    let (prompts, quality) = match existing {
        Some(m) if m.files == files => (m.prompts, m.quality),
        _ => (Vec::new(), None),
    };
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        name,
        version,
        layout: layout_label(&package).to_string(),
        quantization,
        context_length: package.context_length,
        files,
        prompts,
        quality,
    };
    // The same checks a reader applies, so sign never writes what load would refuse.
    let text = String::from_utf8(manifest.to_bytes()).unwrap_or_default();
    Manifest::from_json(&dir.join(MANIFEST_FILE), &text)
}

fn layout_label(package: &ModelPackage) -> &'static str {
    match package.format {
        crate::engine::package::PackageFormat::Genai { .. } => "onnxruntime-genai",
        crate::engine::package::PackageFormat::Optimum => "optimum",
    }
}

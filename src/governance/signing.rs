//! ed25519 keys and detached signatures over a package's `manifest.json` bytes. Keys come from
//! files or environment variables (PEM as `openssl genpkey -algorithm ed25519` writes it, or
//! 64 hex digits); private keys never reach logs or `Debug` output.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::error::GovernanceError;
use super::files::sha256_hex;

/// Where a key is read from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    /// Name of an environment variable holding the key text.
    Env(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl KeySource {
    /// The key text (never logged).
    fn read(&self) -> Result<String, GovernanceError> {
        match self {
            KeySource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| GovernanceError::io(path, e))
            }
            KeySource::Env(var) => std::env::var(var).map_err(|_| GovernanceError::Key {
                origin: self.to_string(),
                message: "is not set or not UTF-8".into(),
            }),
        }
    }
}

fn key_err(origin: &KeySource, message: impl Into<String>) -> GovernanceError {
    GovernanceError::Key {
        origin: origin.to_string(),
        message: message.into(),
    }
}

/// An ed25519 private key. `Debug` shows only the public fingerprint.
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public().fingerprint())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        Self(SigningKey::from_bytes(&seed))
    }

    /// Reads a private key: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) or a 64-hex-digit seed.
    pub fn load(source: &KeySource) -> Result<Self, GovernanceError> {
        let text = source.read()?;
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return SigningKey::from_pkcs8_pem(text)
                .map(Self)
                .map_err(|e| key_err(source, format!("not an ed25519 PKCS#8 private key: {e}")));
        }
        let seed = parse_hex32(text)
            .ok_or_else(|| key_err(source, "expected a PKCS#8 PEM private key or 64 hex digits"))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// PKCS#8 PEM text of the key.
    pub fn to_pem(&self) -> Result<String, GovernanceError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| GovernanceError::Key {
                origin: "generated key".into(),
                message: e.to_string(),
            })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `bytes` (the manifest file's exact contents).
    pub fn sign(&self, bytes: &[u8]) -> SignatureFile {
        SignatureFile {
            algorithm: ALGORITHM.into(),
            key: self.public().fingerprint(),
            signature: base64::engine::general_purpose::STANDARD
                .encode(self.0.sign(bytes).to_bytes()),
        }
    }
}

/// An ed25519 public key trusted to sign packages.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// Reads one or more public keys: SPKI PEM blocks (`-----BEGIN PUBLIC KEY-----`) or
    /// 64-hex-digit keys separated by commas or whitespace.
    pub fn load_all(source: &KeySource) -> Result<Vec<Self>, GovernanceError> {
        Self::parse_all(&source.read()?, source)
    }

    /// Parses the key text read from `origin`.
    pub fn parse_all(text: &str, origin: &KeySource) -> Result<Vec<Self>, GovernanceError> {
        const END: &str = "-----END PUBLIC KEY-----";
        let mut keys = Vec::new();
        if text.contains("-----BEGIN") {
            for block in text.split_inclusive(END) {
                let block = block.trim();
                if block.is_empty() {
                    continue;
                }
                let key = VerifyingKey::from_public_key_pem(block)
                    .map_err(|e| key_err(origin, format!("not an ed25519 SPKI public key: {e}")))?;
                keys.push(Self(key));
            }
        } else {
            for word in text.split(|c: char| c == ',' || c.is_whitespace()) {
                if word.is_empty() {
                    continue;
                }
                let bytes = parse_hex32(word).ok_or_else(|| {
                    key_err(
                        origin,
                        "expected SPKI PEM public keys or 64 hex digits each",
                    )
                })?;
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| key_err(origin, format!("not an ed25519 public key: {e}")))?;
                keys.push(Self(key));
            }
        }
        if keys.is_empty() {
            return Err(key_err(origin, "holds no public key"));
        }
        Ok(keys)
    }

    /// First 16 hex digits of the SHA-256 of the raw key: names the key in signatures and logs.
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.0.as_bytes())
            .get(..16)
            .unwrap_or_default()
            .to_string()
    }

    /// SPKI PEM text of the key.
    pub fn to_pem(&self) -> Result<String, GovernanceError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| GovernanceError::Key {
                origin: "public key".into(),
                message: e.to_string(),
            })
    }
}

const ALGORITHM: &str = "ed25519";

/// The detached signature file (`manifest.sig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub algorithm: String,
    /// Fingerprint of the signing key (see [`PublicKey::fingerprint`]).
    pub key: String,
    /// Base64 of the 64-byte signature.
    pub signature: String,
}

impl SignatureFile {
    /// Parses `manifest.sig` text (`path` names it in errors).
    pub fn from_json(path: &Path, text: &str) -> Result<Self, GovernanceError> {
        serde_json::from_str(text).map_err(|e| GovernanceError::Signature {
            file: path.to_path_buf(),
            message: format!("invalid signature file: {e}"),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Checks the signature over `manifest` with the trusted key it names; returns that key's
    /// fingerprint.
    pub fn verify(
        &self,
        path: &Path,
        manifest: &[u8],
        trusted: &[PublicKey],
    ) -> Result<String, GovernanceError> {
        let fail = |message: String| GovernanceError::Signature {
            file: path.to_path_buf(),
            message,
        };
        if self.algorithm != ALGORITHM {
            return Err(fail(format!(
                "algorithm '{}' is not supported (only ed25519)",
                self.algorithm
            )));
        }
        let key = trusted
            .iter()
            .find(|k| k.fingerprint() == self.key)
            .ok_or_else(|| {
                fail(format!(
                    "signed by key {}, which is not among the trusted keys ({})",
                    self.key,
                    trusted
                        .iter()
                        .map(PublicKey::fingerprint)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|e| fail(format!("signature is not base64: {e}")))?;
        let sig = Signature::from_slice(&raw)
            .map_err(|e| fail(format!("signature is malformed: {e}")))?;
        key.0.verify_strict(manifest, &sig).map_err(|_| {
            fail("signature does not match manifest.json (the manifest was modified after signing, or signed by another key)".into())
        })?;
        Ok(key.fingerprint())
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip_and_reject_edits() {
        let key = SecretKey::generate();
        let sig = key.sign(b"manifest bytes");
        let trusted = [key.public()];
        let p = Path::new("manifest.sig");
        assert_eq!(
            sig.verify(p, b"manifest bytes", &trusted).unwrap(),
            key.public().fingerprint()
        );
        let err = sig.verify(p, b"manifest bytez", &trusted).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        let other = [SecretKey::generate().public()];
        let err = sig.verify(p, b"manifest bytes", &other).unwrap_err();
        assert!(
            err.to_string().contains("not among the trusted keys"),
            "{err}"
        );
    }

    #[test]
    fn keys_round_trip_through_pem_and_hex() {
        let key = SecretKey::generate();
        let origin = KeySource::Env("TEST".into());
        let pem = key.public().to_pem().unwrap();
        let two = format!("{pem}\n{pem}");
        let parsed = PublicKey::parse_all(&two, &origin).unwrap();
        assert_eq!(parsed, vec![key.public(), key.public()]);
        let hex_key = hex::encode(key.public().0.as_bytes());
        let parsed = PublicKey::parse_all(&format!("{hex_key}, {hex_key}"), &origin).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(PublicKey::parse_all("nonsense", &origin).is_err());
        assert!(PublicKey::parse_all("", &origin).is_err());
    }

    #[test]
    fn secret_key_debug_hides_the_key() {
        let key = SecretKey::generate();
        let pem = key.to_pem().unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.public().fingerprint()));
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!debug.contains(&body));
    }
}

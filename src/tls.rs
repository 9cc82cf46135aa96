//! HTTPS on the listener (`server.tls`): the certificate chain and private key are read from PEM
//! files and checked when the configuration loads, so `check-config` and startup name the file
//! that is wrong instead of the first handshake failing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the listener's certificate and key live. Holds paths only: key material is read when
/// the server starts and never kept in settings, so no `Debug` of the settings can show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
}

/// A TLS setting that cannot be used; `key` is the configuration key, the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsConfigError {
    pub key: &'static str,
    pub message: String,
}

const CERT_KEY: &str = "server.tls.cert_file";
const KEY_KEY: &str = "server.tls.key_file";

impl TlsSettings {
    /// Checks that both files exist, parse and belong together.
    pub fn validate(cert_file: &str, key_file: &str) -> Result<Self, TlsConfigError> {
        for (key, value) in [(CERT_KEY, cert_file), (KEY_KEY, key_file)] {
            if value.trim().is_empty() {
                return Err(TlsConfigError {
                    key,
                    message: "must name a PEM file".into(),
                });
            }
        }
        let settings = TlsSettings {
            cert_file: PathBuf::from(cert_file),
            key_file: PathBuf::from(key_file),
        };
        settings.server_config()?;
        Ok(settings)
    }

    /// Reads the files and builds the rustls server configuration (ring provider, TLS 1.2 and
    /// 1.3, no client certificates).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsConfigError> {
        let certs = read_certs(&self.cert_file)?;
        let key = read_key(&self.key_file)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError {
                key: CERT_KEY,
                message: format!("TLS setup: {e}"),
            })?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsConfigError {
                key: KEY_KEY,
                message: format!(
                    "{}: unusable with the certificate in {}: {e}",
                    self.key_file.display(),
                    self.cert_file.display()
                ),
            })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let err = |message: String| TlsConfigError {
        key: CERT_KEY,
        message: format!("{}: {message}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("unreadable: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let err = |message: String| TlsConfigError {
        key: KEY_KEY,
        message: format!("{}: {message}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("unreadable: {e}")))?;
    // The parser's error says what it found, never the key bytes.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        err(format!(
            "no usable private key ({e}); expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).expect("write");
        std::fs::write(&key, c.key_pair.serialize_pem()).expect("write");
        (cert.display().to_string(), key.display().to_string())
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "edge-gateway-tls-unit-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn matching_pem_files_validate() {
        let dir = temp_dir("ok");
        let (cert, key) = write_pair(&dir);
        let s = TlsSettings::validate(&cert, &key).expect("valid pair");
        assert_eq!(s.key_file, PathBuf::from(&key));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let dir = temp_dir("bad");
        let (cert, key) = write_pair(&dir);
        let e = TlsSettings::validate(&cert, "/nonexistent/key.pem").expect_err("missing");
        assert_eq!(e.key, "server.tls.key_file");
        assert!(e.message.contains("/nonexistent/key.pem"), "{e}");
        let e = TlsSettings::validate(&key, &key).expect_err("key as cert");
        assert_eq!(e.key, "server.tls.cert_file");
        let e = TlsSettings::validate(&cert, &cert).expect_err("cert as key");
        assert_eq!(e.key, "server.tls.key_file");
        let e = TlsSettings::validate("", &key).expect_err("empty");
        assert_eq!(e.key, "server.tls.cert_file");
        let other = temp_dir("other");
        let (_, other_key) = write_pair(&other);
        let e = TlsSettings::validate(&cert, &other_key).expect_err("mismatch");
        assert_eq!(e.key, "server.tls.key_file");
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(other);
    }
}

//! A model package's `manifest.json` and `manifest.sig` → the parsed manifest and signature,
//! and the signature checked over the manifest bytes (what loading a governed package does
//! before it reads any file).
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use edge_gateway::governance::manifest::Manifest;
use edge_gateway::governance::signing::{KeySource, PublicKey, SignatureFile};
use libfuzzer_sys::fuzz_target;

static TRUSTED: LazyLock<Vec<PublicKey>> = LazyLock::new(|| {
    PublicKey::parse_all(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        &KeySource::Env("FUZZ".into()),
    )
    .expect("a valid ed25519 public key")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The manifest and the signature file are both JSON; the same bytes exercise both.
    let _ = Manifest::from_json(Path::new("manifest.json"), text);
    if let Ok(sig) = SignatureFile::from_json(Path::new("manifest.sig"), text) {
        let _ = sig.verify(Path::new("manifest.sig"), data, &TRUSTED);
    }
    let _ = PublicKey::parse_all(text, &KeySource::Env("FUZZ".into()));
});

//! The audit log's line format and hash chain. Each line is one JSON object
//! `{"seq":…,"ts":…,"kind":…,"data":…,"prev":"<hash of the previous line>","hash":"<hash>"}`
//! where `hash` is SHA-256 (or HMAC-SHA-256 with the audit key) of the line's exact bytes up to
//! `,"hash"` followed by `}`. Editing, removing or reordering a line breaks the chain at that
//! line; without the key, rewriting the whole tail consistently is possible, so the key (and
//! the copy at the telemetry sink) is what anchors it.

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// `,"hash":"` + 64 hex digits + `"}`: the fixed-length end of every line.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// The secret that keys the chain (HMAC); `Debug` never shows it.
#[derive(Clone)]
pub struct ChainKey(Vec<u8>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(<redacted>)")
    }
}

impl ChainKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(secret.to_vec())
    }
}

/// Body fields, serialized in this order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts: &'a str,
    kind: &'a str,
    data: &'a Value,
    prev: &'a str,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    pub kind: String,
    pub data: Value,
    pub prev: String,
    pub hash: String,
}

fn digest(key: Option<&ChainKey>, body: &[u8]) -> String {
    match key.and_then(|k| hmac::Hmac::<Sha256>::new_from_slice(&k.0).ok()) {
        Some(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        None => hex::encode(Sha256::digest(body)),
    }
}

/// Serializes a record chained after `prev`; returns the line (with `\n`) and its hash.
pub fn encode(
    key: Option<&ChainKey>,
    seq: u64,
    ts: &str,
    kind: &str,
    data: &Value,
    prev: &str,
) -> (Vec<u8>, String) {
    let mut line = serde_json::to_vec(&Body {
        seq,
        ts,
        kind,
        data,
        prev,
    })
    .unwrap_or_default();
    let hash = digest(key, &line);
    // Replace the closing brace with the hash field.
    line.pop();
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    (line, hash)
}

/// Why a line does not continue the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("not a valid audit record: {0}")]
    Malformed(String),
    #[error("seq {found} follows seq {expected_after}: a record was removed or reordered")]
    Sequence { expected_after: u64, found: u64 },
    #[error("prev does not match the hash of the previous record: a record before it was edited or removed")]
    Link,
    #[error("hash does not match the record's contents: the record was edited")]
    Hash,
}

/// Checks one line (without its `\n`) against the previous record's seq and hash; returns the
/// parsed record.
pub fn check_line(
    key: Option<&ChainKey>,
    line: &[u8],
    prev_seq: Option<u64>,
    prev_hash: &str,
) -> Result<Record, ChainError> {
    let record: Record =
        serde_json::from_slice(line).map_err(|e| ChainError::Malformed(e.to_string()))?;
    if line.len() <= HASH_SUFFIX_LEN || !line.ends_with(b"\"}") {
        return Err(ChainError::Malformed("unexpected layout".into()));
    }
    let cut = line.len() - HASH_SUFFIX_LEN;
    if line.get(cut..cut + 9) != Some(b",\"hash\":\"".as_slice()) {
        return Err(ChainError::Malformed("hash is not the last field".into()));
    }
    if let Some(p) = prev_seq {
        if record.seq != p + 1 {
            return Err(ChainError::Sequence {
                expected_after: p,
                found: record.seq,
            });
        }
    }
    if record.prev != prev_hash {
        return Err(ChainError::Link);
    }
    let mut body = line.get(..cut).unwrap_or_default().to_vec();
    body.push(b'}');
    if digest(key, &body) != record.hash {
        return Err(ChainError::Hash);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(key: Option<&ChainKey>, n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let (line, hash) = encode(
                    key,
                    seq,
                    "2026-12-01T00:00:00Z",
                    "routing_decision",
                    &json!({"route": "edge", "n": seq}),
                    &prev,
                );
                prev = hash;
                line
            })
            .collect()
    }

    fn verify(key: Option<&ChainKey>, lines: &[Vec<u8>]) -> Result<(), (usize, ChainError)> {
        let mut prev = GENESIS.to_string();
        let mut seq = None;
        for (i, line) in lines.iter().enumerate() {
            let r = check_line(key, line.strip_suffix(b"\n").unwrap(), seq, &prev)
                .map_err(|e| (i, e))?;
            prev = r.hash;
            seq = Some(r.seq);
        }
        Ok(())
    }

    #[test]
    fn intact_chain_verifies_and_edits_are_located() {
        let key = ChainKey::new(b"secret");
        for k in [None, Some(&key)] {
            let lines = chain(k, 5);
            assert_eq!(verify(k, &lines), Ok(()));

            let mut edited = lines.clone();
            let text = String::from_utf8(edited[2].clone())
                .unwrap()
                .replace("edge", "clud");
            edited[2] = text.into_bytes();
            assert_eq!(verify(k, &edited), Err((2, ChainError::Hash)));

            let mut removed = lines.clone();
            removed.remove(1);
            assert!(matches!(
                verify(k, &removed),
                Err((1, ChainError::Sequence { .. }))
            ));
        }
        // A chain written with the key does not verify without it, and vice versa.
        assert_eq!(
            verify(None, &chain(Some(&key), 2)),
            Err((0, ChainError::Hash))
        );
    }

    #[test]
    fn rehashed_edit_breaks_the_next_link() {
        let lines = chain(None, 3);
        // Edit line 1 and recompute its own hash: line 2's prev no longer matches.
        let r: Record = serde_json::from_slice(&lines[1]).unwrap();
        let (forged, _) = encode(
            None,
            r.seq,
            &r.ts,
            &r.kind,
            &json!({"route": "cloud"}),
            &r.prev,
        );
        let mut edited = lines.clone();
        edited[1] = forged;
        assert_eq!(verify(None, &edited), Err((2, ChainError::Link)));
    }
}

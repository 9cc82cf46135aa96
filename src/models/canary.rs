//! Canary assignment: a request goes to the candidate version when its key (request id or API
//! key) hashes into the first `percent` of 100 buckets. SHA-256 keeps the split the same
//! across restarts and gateway versions, so a client keyed by API key stays on one version.

use sha2::{Digest, Sha256};

/// Bucket 0–99 of `key`.
pub fn bucket(key: &str) -> u8 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    (u64::from_be_bytes(first) % 100) as u8
}

/// True when `key` falls in the candidate's share.
pub fn takes_candidate(key: &str, percent: u8) -> bool {
    bucket(key) < percent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_the_percentage_and_is_stable() {
        for percent in [0u8, 5, 10, 50, 100] {
            let hits = (0..10_000)
                .filter(|i| takes_candidate(&format!("req-{i}"), percent))
                .count();
            let expected = 100 * usize::from(percent);
            assert!(
                hits.abs_diff(expected) <= 250,
                "{percent}%: {hits} of 10000"
            );
        }
        assert_eq!(bucket("tenant-a"), bucket("tenant-a"));
        assert!(!takes_candidate("anything", 0));
        assert!(takes_candidate("anything", 100));
    }
}

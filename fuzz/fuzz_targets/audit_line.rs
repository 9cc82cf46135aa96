//! An audit log line → checked against the chain (what `audit verify` and the gateway's
//! startup recovery read back from disk, where anything may have been written).
#![no_main]

use edge_gateway::governance::audit::chain::{check_line, ChainKey, GENESIS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ChainKey::new(b"fuzzing key, 16+ bytes");
    let _ = check_line(None, data, None, GENESIS);
    let _ = check_line(Some(&key), data, Some(0), GENESIS);
});

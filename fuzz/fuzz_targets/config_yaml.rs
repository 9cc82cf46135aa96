//! The configuration file: YAML over the built-in defaults → validated `Settings`
//! (`Settings::from_yaml_str`, the same layering and validation as `Settings::load`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = edge_gateway::config::Settings::from_yaml_str(text);
    }
});

//! Optimum `config.json` + `generation_config.json` → `ModelPackage`. The input is the first
//! file, optionally followed by a NUL byte and the second.
#![no_main]

use std::path::Path;

use edge_gateway::engine::package::ModelPackage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, generation) = match text.split_once('\0') {
        Some((c, g)) => (c, Some(g)),
        None => (text, None),
    };
    let _ = ModelPackage::from_optimum_json(
        Path::new("/nonexistent/fuzz"),
        config,
        generation,
        "m".into(),
    );
});

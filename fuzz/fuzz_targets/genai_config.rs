//! onnxruntime-genai `genai_config.json` → `ModelPackage` (what `ModelPackage::load` reads).
#![no_main]

use std::path::Path;

use edge_gateway::engine::package::ModelPackage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelPackage::from_genai_json(Path::new("/nonexistent/fuzz"), text, "m".into());
    }
});

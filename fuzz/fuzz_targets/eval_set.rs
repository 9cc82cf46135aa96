//! An evaluation set (JSON lines) → items with compiled checks, each check run on the input
//! text as a model output (what `edge-gateway eval` reads and scores).
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use edge_gateway::governance::eval::EvalSet;
use edge_gateway::governance::prompts::PromptRegistry;
use libfuzzer_sys::fuzz_target;

static PROMPTS: LazyLock<PromptRegistry> = LazyLock::new(PromptRegistry::empty);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = EvalSet::from_text(Path::new("set.jsonl"), text, &PROMPTS) {
        for item in &set.items {
            let _ = item.check.passes(text);
        }
    }
});

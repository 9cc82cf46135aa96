//! A versioned prompt file (`prompts/<name>/<version>.yaml`) → parsed, its template compiled
//! and rendered with request variables, as loading the prompts and a chat request do.
#![no_main]

use std::sync::LazyLock;

use edge_gateway::governance::prompts::check_prompt_text;
use libfuzzer_sys::fuzz_target;

static VARIABLES: LazyLock<serde_json::Value> =
    LazyLock::new(|| serde_json::json!({"site": "plant 2", "line": 3, "urgent": true}));

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = check_prompt_text(text, Some(&VARIABLES));
        let _ = check_prompt_text(text, None);
    }
});

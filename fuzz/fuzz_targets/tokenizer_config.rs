//! `tokenizer_config.json` → its chat template compiled and rendered (with the fuel and output
//! bounds the engine uses) over a small conversation, as a model load and a chat request do.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::sync::LazyLock;

use edge_gateway::engine::chat_template::{ChatTemplate, TemplateMessage};
use edge_gateway::engine::package::TokenizerConfig;
use libfuzzer_sys::fuzz_target;

static CONVERSATION: LazyLock<Vec<TemplateMessage>> = LazyLock::new(|| {
    [
        ("system", "You are a maintenance assistant."),
        ("user", "What happened on line 3?"),
        ("assistant", "The press stopped."),
        ("user", "Why?"),
    ]
    .into_iter()
    .map(|(role, content)| TemplateMessage {
        role: role.into(),
        content: content.into(),
    })
    .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = TokenizerConfig::parse(Path::new("tokenizer_config.json"), text) else {
        return;
    };
    let Some(source) = cfg.chat_template else {
        return;
    };
    let Ok(template) =
        ChatTemplate::compile(&source, cfg.bos_token.as_deref(), cfg.eos_token.as_deref())
    else {
        return;
    };
    common::panics_inside_render_are_handled();
    let _ = template.render(&CONVERSATION, true);
});

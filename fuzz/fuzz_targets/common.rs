//! Shared by the fuzz targets: the default engine limits and the committed tiny model's chat
//! template, built once per process exactly as the gateway builds them at startup.

// Each target uses a different subset of these.
#![allow(dead_code)]

use std::path::Path;
use std::sync::LazyLock;

use edge_gateway::config::{EngineSettings, Settings};
use edge_gateway::engine::chat_template::{ChatTemplate, TemplateMessage};
use edge_gateway::engine::package::TokenizerConfig;

/// The engine limits of the default configuration (what the handlers validate against).
pub static LIMITS: LazyLock<EngineSettings> = LazyLock::new(|| {
    Settings::load_with_env(None, false)
        .expect("the built-in defaults are valid")
        .engine
});

/// The chat template of the committed default model, compiled as the engine compiles it.
pub static TEMPLATE: LazyLock<ChatTemplate> = LazyLock::new(|| {
    let text = include_str!("../../onnx/models/edge-tiny-genai/tokenizer_config.json");
    let cfg = TokenizerConfig::parse(Path::new("tokenizer_config.json"), text)
        .expect("the committed tokenizer_config.json parses");
    let source = cfg
        .chat_template
        .expect("the committed model has a chat template");
    ChatTemplate::compile(&source, cfg.bos_token.as_deref(), cfg.eos_token.as_deref())
        .expect("the committed chat template compiles")
});

/// Renders `messages` the way a chat request is turned into a prompt; errors are answers too.
pub fn render(messages: &[TemplateMessage]) {
    panics_inside_render_are_handled();
    let _ = TEMPLATE.render(messages, true);
}

/// libfuzzer-sys installs a panic hook that aborts on every panic, even one the code under test
/// catches. `ChatTemplate::render` catches the template engine's panics and fails that render
/// (the gateway's behaviour); with the default hook back, those are answers, while a panic that
/// escapes the target still aborts (libfuzzer-sys catches it and aborts itself).
pub fn panics_inside_render_are_handled() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

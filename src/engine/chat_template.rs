//! Renders the package's Jinja chat template (from `tokenizer_config.json`) with minijinja, the
//! way `transformers`' `apply_chat_template` does, so prompts match what the model was trained on.

use minijinja::value::{ArgType, Kwargs, StringInput, Value};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use super::error::InferenceError;

const TEMPLATE_NAME: &str = "chat";

/// Instructions one render may execute (minijinja "fuel"). A template runs a few dozen per
/// message, so this passes any conversation that fits a request body many times over, while a
/// template that loops without end (nested `range` loops, recursive macros) stops in well under
/// a second instead of holding a tokenizer thread.
const RENDER_FUEL: u64 = 20_000_000;

/// Rendered output allowed beyond twice the messages' own bytes: room for the template's text
/// and special tokens (some templates add a long default system prompt), but not for a template
/// that multiplies strings into gigabytes.
const OUTPUT_SLACK_BYTES: usize = 1 << 20;

/// Widest `indent` a template may ask for. minijinja builds the indentation string before it
/// looks at the text, so `indent(10000000000)` would try to allocate 10 GB (found while probing
/// what the `tokenizer_config` fuzz target exercises, fuzz/README.md); real templates indent by
/// a few spaces.
const MAX_INDENT: usize = 4096;

/// One chat message as the template sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TemplateMessage {
    pub role: String,
    pub content: String,
}

/// A compiled chat template plus the special tokens it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source` once at load time.
    pub fn compile(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        // HF templates call Python string methods (.strip(), .startswith(), ...).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_filter("indent", bounded_indent);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| e.to_string())?;
        Ok(Self {
            env,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
        })
    }

    /// Renders the conversation; `add_generation_prompt` appends the assistant turn opener.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, InferenceError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| InferenceError::Template(e.to_string()))?;
        let limit = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum::<usize>()
            .saturating_mul(2)
            .saturating_add(OUTPUT_SLACK_BYTES);
        let mut out = CappedWriter {
            buf: Vec::new(),
            limit,
        };
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        // minijinja can panic on hostile templates (`messages * 18446744073709551615`
        // overflows a length multiplication: found by the tokenizer_config fuzz target). The
        // render touches only this call's state, so a panic fails this render alone.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            template.render_captured_to(ctx, &mut out)
        }))
        .map_err(|_| {
            tracing::error!("the chat template engine panicked; failing this render");
            InferenceError::Template("the chat template failed while rendering".into())
        })?;
        rendered.map_err(|e| match e.kind() {
            ErrorKind::WriteFailure => {
                InferenceError::Template(format!("the rendered prompt exceeds {limit} bytes"))
            }
            _ => InferenceError::Template(e.to_string()),
        })?;
        String::from_utf8(out.buf)
            .map_err(|_| InferenceError::Template("template produced invalid UTF-8".into()))
    }
}

/// minijinja's `indent`, refusing widths over [`MAX_INDENT`] instead of allocating them.
fn bounded_indent(
    value: Value,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let width = match width {
        Some(w) => w,
        None => kwargs.get::<Option<usize>>("width")?.unwrap_or(4),
    };
    if width > MAX_INDENT {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("indent width {width} is over the limit of {MAX_INDENT}"),
        ));
    }
    let text = StringInput::from_value(Some(&value))?;
    minijinja::filters::indent(text, Some(width), first, blank, kwargs)
}

/// Collects rendered output and fails the render once it passes `limit` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            return Err(std::io::Error::other("rendered prompt too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['system','user','assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}{{ '<|' + m['role'] + '|>\\n' + m['content'].strip() + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn renders_hf_style_template_with_python_methods() {
        let t = ChatTemplate::compile(TEMPLATE, Some("<s>"), Some("<|end|>")).expect("compiles");
        let out = t
            .render(&[msg("system", " Be brief. "), msg("user", "Hi")], true)
            .expect("renders");
        assert_eq!(
            out,
            "<s><|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
        );
    }

    #[test]
    fn raise_exception_surfaces_as_template_error() {
        let t = ChatTemplate::compile(TEMPLATE, Some("<s>"), None).expect("compiles");
        let err = t.render(&[msg("tool", "x")], true).expect_err("must fail");
        assert!(err.to_string().contains("bad role tool"), "{err}");
    }

    #[test]
    fn endless_template_loops_run_out_of_fuel() {
        let t = ChatTemplate::compile(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            None,
            None,
        )
        .expect("compiles");
        // The fuel error is the proof that rendering stopped; no wall-clock bound (a loaded CI
        // machine takes minutes in a debug build, and speed is measured, not asserted).
        let err = t.render(&[msg("user", "x")], true).expect_err("must stop");
        assert!(err.to_string().contains("fuel"), "{err}");
    }

    #[test]
    fn recursive_macros_hit_the_recursion_limit() {
        let t = ChatTemplate::compile(
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            None,
            None,
        )
        .expect("compiles");
        assert!(t.render(&[msg("user", "x")], true).is_err());
    }

    #[test]
    fn output_far_beyond_the_input_is_refused() {
        let t = ChatTemplate::compile(
            "{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}",
            None,
            None,
        )
        .expect("compiles");
        let err = t.render(&[msg("user", "x")], true).expect_err("too large");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn many_messages_fit_the_fuel_budget() {
        // About what a 1 MiB body can hold: fuel must scale to real conversations.
        let t = ChatTemplate::compile(TEMPLATE, Some("<s>"), None).expect("compiles");
        let messages: Vec<_> = (0..50_000).map(|_| msg("user", "hi")).collect();
        let out = t.render(&messages, true).expect("renders");
        assert!(out.len() > 50_000 * 4);
    }

    #[test]
    fn broken_template_fails_at_compile() {
        assert!(ChatTemplate::compile("{% for %}", None, None).is_err());
    }

    #[test]
    fn indent_is_bounded_and_still_indents() {
        let t = ChatTemplate::compile(
            "{{ 'a\nb'|indent(2) }}|{{ 'a\nb'|indent(width=1, first=true) }}",
            None,
            None,
        )
        .expect("compiles");
        assert_eq!(t.render(&[], false).expect("renders"), "a\n  b| a\n b");
        let huge =
            ChatTemplate::compile("{{ 'a'|indent(10000000000) }}", None, None).expect("compiles");
        let started = std::time::Instant::now();
        let err = huge.render(&[], false).expect_err("refused");
        assert!(err.to_string().contains("indent width"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_panic_inside_the_template_engine_fails_only_the_render() {
        // Overflows minijinja's `len * n` (a panic where overflow checks are on, as in tests).
        let t = ChatTemplate::compile(
            "{% for m in messages * 18446744073709551615 %}{{ m.content }}{% endfor %}",
            None,
            None,
        )
        .expect("compiles");
        assert!(t
            .render(&[msg("user", "x"), msg("user", "y")], true)
            .is_err());
        let ok = ChatTemplate::compile(TEMPLATE, None, None).expect("compiles");
        assert!(ok.render(&[msg("user", "x")], true).is_ok(), "still usable");
    }
}

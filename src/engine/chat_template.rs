//! Renders the package's Jinja chat template (from `tokenizer_config.json`) with minijinja, the
//! way `transformers`' `apply_chat_template` does, so prompts match what the model was trained on.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use super::error::InferenceError;

const TEMPLATE_NAME: &str = "chat";

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
        // HF templates call Python string methods (.strip(), .startswith(), ...).
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
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
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| InferenceError::Template(e.to_string()))
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
    fn broken_template_fails_at_compile() {
        assert!(ChatTemplate::compile("{% for %}", None, None).is_err());
    }
}

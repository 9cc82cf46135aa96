//! The package's Hugging Face tokenizer: encoding prompts and incremental detokenization that
//! never emits half of a UTF-8 character.

use std::path::Path;

use tokenizers::Tokenizer;

use super::error::{InferenceError, ModelError};
use super::package::file_err;

/// Thread-safe tokenizer shared by handlers (via the blocking pool) and workers.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// `Tokenizer::get_vocab_size` builds a map of the whole vocabulary on every call, so it is
    /// computed once here (it was the largest cost of a cloud-routed request).
    vocab_size: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn load(file: &Path) -> Result<Self, ModelError> {
        let inner = Tokenizer::from_file(file)
            .map_err(|e| file_err(file, format!("cannot load tokenizer: {e}")))?;
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self { inner, vocab_size })
    }

    /// Encodes `text`; `add_special_tokens` applies the post-processor (e.g. prepends BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, InferenceError> {
        self.inner
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    /// Decodes a whole sequence, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, InferenceError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Id of a token string such as `<|end|>`, if it exists.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Starts incremental decoding for one generated sequence.
    pub fn stream(&self) -> TokenStream<'_> {
        TokenStream {
            inner: self.inner.decode_stream(true),
        }
    }
}

/// Incremental detokenizer: each step returns only text that is complete.
pub struct TokenStream<'t> {
    inner: tokenizers::tokenizer::DecodeStream<
        't,
        tokenizers::ModelWrapper,
        tokenizers::NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        tokenizers::DecoderWrapper,
    >,
}

impl TokenStream<'_> {
    /// Feeds one token; returns the new text it completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>, InferenceError> {
        self.inner
            .step(id)
            .map_err(|e| InferenceError::Tokenizer(e.to_string()))
    }
}

//! Errors of the embedding encoder: what a caller sent wrong (mapped to 400s by the API) and
//! what went wrong on our side.

/// Why an embedding request could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// Input `index` has more tokens than allowed and truncation was not requested.
    #[error("input[{index}] has {tokens} tokens; the limit is {limit}")]
    TooLong {
        index: usize,
        tokens: usize,
        limit: usize,
    },
    /// Input `index` is empty (no text or no tokens).
    #[error("input[{index}] is empty")]
    Empty { index: usize },
    /// Input `index` holds a token id outside the vocabulary.
    #[error("input[{index}] holds token id {id}, outside the vocabulary (size {vocab})")]
    InvalidToken { index: usize, id: u64, vocab: usize },
    /// The bounded queue in front of the encoder workers is full.
    #[error("the embedding queue is full")]
    QueueFull,
    /// The workers have stopped.
    #[error("the embedding workers have stopped")]
    Stopped,
    /// Tokenizer or ONNX Runtime failure.
    #[error("embedding failed: {0}")]
    Inference(String),
}

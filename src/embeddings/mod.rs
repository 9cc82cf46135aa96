//! Local sentence embeddings: an encoder package (ONNX graph + tokenizer + config), its ONNX
//! Runtime session, and the worker pool with a bounded queue, cross-request batching and a moka
//! cache of repeated inputs. Serves `POST /v1/embeddings` and the routing scorers
//! (`routing::semantic`), so document text never leaves the box.

pub mod error;
pub mod metrics_names;
pub mod package;
pub mod session;
pub mod worker;

pub use error::EmbedError;
pub use package::{EmbeddingPackage, Pooling};
pub use worker::{EmbedInput, Embedding, Encoder, EncoderOptions};

/// Cosine similarity of two vectors (a dot product when both are normalised).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

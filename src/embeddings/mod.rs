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
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot(a, b) / (na * nb)
}

/// Dot product over the common length. Eight independent partial sums: a plain `.sum()` is
/// one serial chain of float additions the compiler may not reorder, which made the routing
/// scorers' scan over every exemplar the largest CPU cost of a cloud-routed request.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_serial_sum_for_every_tail_length() {
        for n in [0usize, 1, 7, 8, 9, 383, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let serial: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - serial).abs() < 1e-4, "n = {n}");
        }
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}

//! One ONNX Runtime session of an encoder: feeds a padded batch of token sequences and turns
//! the graph's output into one sentence vector per sequence (pooling in Rust when the graph
//! stops at `last_hidden_state`, L2 normalisation when the package asks for it).

use std::borrow::Cow;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::package::{EmbeddingPackage, Pooling};
use crate::engine::package::file_err;
use crate::engine::runner::{open_session, RunnerOptions};
use crate::engine::{InferenceError, ModelError};

/// What the graph returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    /// `[batch, dimensions]`: already pooled.
    Pooled,
    /// `[batch, sequence, dimensions]`: token vectors, pooled here.
    TokenVectors,
}

/// A loaded encoder session and the names it is fed by.
pub struct EncoderSession {
    session: Session,
    input_ids: String,
    attention_mask: Option<String>,
    token_type_ids: Option<String>,
    output: String,
    output_kind: OutputKind,
    dimensions: usize,
    pooling: Pooling,
    normalize: bool,
}

impl EncoderSession {
    /// Opens the package's graph and checks its inputs and output against the package config.
    pub fn load(
        env: &ort::environment::Environment,
        package: &EmbeddingPackage,
        intra_threads: usize,
    ) -> Result<Self, ModelError> {
        // The encoder is small and runs on CPU whatever the decoder's providers are.
        let options = RunnerOptions {
            intra_threads,
            optimized_graph_dir: None,
            ..RunnerOptions::default()
        };
        let session = open_session(
            env,
            &package.onnx_file,
            &options,
            GraphOptimizationLevel::All,
            None,
        )?
        .session;
        let file = &package.onnx_file;
        let mut input_ids = None;
        let mut attention_mask = None;
        let mut token_type_ids = None;
        for input in session.inputs() {
            if !is_int64(input.dtype()) {
                return Err(file_err(
                    file,
                    format!("input `{}` must be int64", input.name()),
                ));
            }
            match input.name() {
                "input_ids" => input_ids = Some(input.name().to_string()),
                "attention_mask" => attention_mask = Some(input.name().to_string()),
                "token_type_ids" => token_type_ids = Some(input.name().to_string()),
                other => {
                    return Err(file_err(
                        file,
                        format!("unexpected encoder input `{other}` (expected input_ids, attention_mask, token_type_ids)"),
                    ))
                }
            }
        }
        let input_ids =
            input_ids.ok_or_else(|| file_err(file, "the graph has no `input_ids` input"))?;
        let first = session
            .outputs()
            .first()
            .ok_or_else(|| file_err(file, "the graph has no outputs"))?;
        let rank = first.dtype().tensor_shape().map(|s| s.len());
        let output_kind = match rank {
            Some(2) => OutputKind::Pooled,
            Some(3) => OutputKind::TokenVectors,
            _ => {
                return Err(file_err(
                    file,
                    format!(
                        "output `{}` must be [batch, dims] or [batch, sequence, dims]",
                        first.name()
                    ),
                ))
            }
        };
        if output_kind == OutputKind::TokenVectors && attention_mask.is_none() {
            return Err(file_err(
                file,
                "pooling token vectors needs an `attention_mask` input",
            ));
        }
        let output = first.name().to_string();
        Ok(Self {
            session,
            input_ids,
            attention_mask,
            token_type_ids,
            output,
            output_kind,
            dimensions: package.dimensions,
            pooling: package.pooling,
            normalize: package.normalize,
        })
    }

    /// Encodes `batch` (token ids with special tokens, each non-empty) in one run, padding to
    /// the longest; returns one vector per sequence, in order. Padding is masked, so a
    /// sequence's vector does not depend on what it was batched with.
    pub fn encode(&mut self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, InferenceError> {
        let rows = batch.len();
        let width = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if rows == 0 || width == 0 {
            return Err(InferenceError::Output("empty encoder batch".into()));
        }
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        for (r, seq) in batch.iter().enumerate() {
            for (c, &id) in seq.iter().enumerate() {
                ids[r * width + c] = i64::from(id);
                mask[r * width + c] = 1;
            }
        }
        let shape = [rows, width];
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(3);
        if let Some(name) = &self.token_type_ids {
            let types = Tensor::from_array((shape, vec![0i64; rows * width]))?;
            inputs.push((Cow::Borrowed(name.as_str()), types.into()));
        }
        if let Some(name) = &self.attention_mask {
            let m = Tensor::from_array((shape, mask.clone()))?;
            inputs.push((Cow::Borrowed(name.as_str()), m.into()));
        }
        inputs.push((
            Cow::Borrowed(self.input_ids.as_str()),
            Tensor::from_array((shape, ids))?.into(),
        ));
        let outputs = self.session.run(inputs)?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| InferenceError::Output(format!("no `{}` output", self.output)))?;
        let (out_shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| InferenceError::Output(format!("embeddings are not float32: {e}")))?;
        let dims = self.dimensions;
        let mut vectors = match self.output_kind {
            OutputKind::Pooled => {
                if out_shape.len() != 2 || data.len() != rows * dims {
                    return Err(InferenceError::Output(format!(
                        "expected [{rows}, {dims}] embeddings, got {out_shape:?}"
                    )));
                }
                data.chunks_exact(dims).map(<[f32]>::to_vec).collect()
            }
            OutputKind::TokenVectors => {
                if data.len() != rows * width * dims {
                    return Err(InferenceError::Output(format!(
                        "expected [{rows}, {width}, {dims}] token vectors, got {out_shape:?}"
                    )));
                }
                (0..rows)
                    .map(|r| {
                        pool(
                            &data[r * width * dims..(r + 1) * width * dims],
                            &mask[r * width..(r + 1) * width],
                            dims,
                            self.pooling,
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        if self.normalize {
            vectors.iter_mut().for_each(|v| normalize(v));
        }
        Ok(vectors)
    }
}

fn is_int64(ty: &ValueType) -> bool {
    matches!(
        ty,
        ValueType::Tensor {
            ty: TensorElementType::Int64,
            ..
        }
    )
}

/// Pools one sequence's `[width, dims]` token vectors.
fn pool(tokens: &[f32], mask: &[i64], dims: usize, pooling: Pooling) -> Vec<f32> {
    let mut out = vec![0f32; dims];
    match pooling {
        Pooling::Cls => out.copy_from_slice(&tokens[..dims]),
        Pooling::Mean => {
            let mut kept = 0f32;
            for (row, &m) in tokens.chunks_exact(dims).zip(mask) {
                if m != 0 {
                    kept += 1.0;
                    out.iter_mut().zip(row).for_each(|(o, x)| *o += x);
                }
            }
            let kept = kept.max(1.0);
            out.iter_mut().for_each(|o| *o /= kept);
        }
    }
    out
}

/// Scales `v` to unit length (left as is when it is all zeros).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_skips_masked_tokens() {
        let tokens = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let v = pool(&tokens, &[1, 1, 0], 2, Pooling::Mean);
        assert_eq!(v, vec![2.0, 3.0]);
        assert_eq!(pool(&tokens, &[1, 1, 0], 2, Pooling::Cls), vec![1.0, 2.0]);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}

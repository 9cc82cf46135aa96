//! Element types of the KV cache and the logits (float32 or float16) and the typed KV data the
//! prefix cache keeps. CPU builds of a model keep both in float32; GPU builds (onnxruntime-genai
//! `-p fp16`, or `-p int4 -e cuda`) keep KV and usually logits in float16. The engine allocates,
//! copies and caches KV in whatever type the graph declares, and converts logits to float32 once
//! per step for sampling.

use half::f16;
use half::slice::HalfFloatSliceExt;
use half::vec::HalfBitsVecExt;
use ort::value::{DynValue, PrimitiveTensorElementType, TensorElementType, ValueType};

use super::error::InferenceError;

/// A floating-point element type the engine handles in KV tensors and logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    F32,
    F16,
}

impl FloatType {
    /// The engine's type for an ONNX element type; `None` for anything it does not handle.
    pub fn from_onnx(ty: TensorElementType) -> Option<Self> {
        match ty {
            TensorElementType::Float32 => Some(FloatType::F32),
            TensorElementType::Float16 => Some(FloatType::F16),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatType::F32 => std::mem::size_of::<f32>(),
            FloatType::F16 => std::mem::size_of::<f16>(),
        }
    }

    /// ONNX's name for the type, for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "float32",
            FloatType::F16 => "float16",
        }
    }
}

/// Runs `$body` with `$t` bound to the Rust element type of a [`FloatType`], so one generic
/// body serves float32 and float16 KV.
macro_rules! with_float_type {
    ($ty:expr, $t:ident => $body:expr) => {
        match $ty {
            $crate::engine::kv::FloatType::F32 => {
                type $t = f32;
                $body
            }
            $crate::engine::kv::FloatType::F16 => {
                type $t = half::f16;
                $body
            }
        }
    };
}
pub(crate) use with_float_type;

/// A KV element: `f32` or `half::f16`.
pub trait KvElement:
    PrimitiveTensorElementType + Copy + Default + std::fmt::Debug + Send + Sync + 'static
{
    /// The matching [`FloatType`].
    const TYPE: FloatType;

    /// `len` zeros from the allocator's zeroed memory (calloc): pages of a large KV reservation
    /// are only committed once positions are written.
    fn zeroed(len: usize) -> Vec<Self>;

    /// The elements of `data` when it holds this type.
    fn view(data: &KvData) -> Option<&[Self]>;

    /// Wraps elements of this type as [`KvData`].
    fn wrap(data: Vec<Self>) -> KvData;
}

impl KvElement for f32 {
    const TYPE: FloatType = FloatType::F32;

    fn zeroed(len: usize) -> Vec<Self> {
        // `vec![0.0; n]` of a primitive is specialised to a zeroed allocation.
        vec![0.0f32; len]
    }

    fn view(data: &KvData) -> Option<&[Self]> {
        match data {
            KvData::F32(v) => Some(v),
            KvData::F16(_) => None,
        }
    }

    fn wrap(data: Vec<Self>) -> KvData {
        KvData::F32(data)
    }
}

impl KvElement for f16 {
    const TYPE: FloatType = FloatType::F16;

    fn zeroed(len: usize) -> Vec<Self> {
        // `vec![f16::ZERO; n]` would write every element (and commit every page); zeroed u16s
        // are the same bits and come from calloc.
        vec![0u16; len].reinterpret_into()
    }

    fn view(data: &KvData) -> Option<&[Self]> {
        match data {
            KvData::F16(v) => Some(v),
            KvData::F32(_) => None,
        }
    }

    fn wrap(data: Vec<Self>) -> KvData {
        KvData::F16(data)
    }
}

/// KV elements copied out of a sequence (one prefix-cache block), in the model's own type.
#[derive(Debug, Clone, PartialEq)]
pub enum KvData {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvData {
    /// The element type.
    pub fn float_type(&self) -> FloatType {
        match self {
            KvData::F32(_) => FloatType::F32,
            KvData::F16(_) => FloatType::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(v) => v.len(),
            KvData::F16(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements occupy.
    pub fn bytes(&self) -> usize {
        self.len() * self.float_type().size()
    }
}

/// Views cached blocks as slices of `T`; a block of another type (which a cache keyed by the
/// model's weights never holds) is an error rather than a reinterpretation.
pub fn typed_blocks<'a, T: KvElement>(
    blocks: &[&'a KvData],
) -> Result<Vec<&'a [T]>, InferenceError> {
    blocks
        .iter()
        .map(|b| {
            T::view(b).ok_or_else(|| {
                InferenceError::Output(format!(
                    "cached KV block is {}, the model's KV is {}",
                    b.float_type().name(),
                    T::TYPE.name()
                ))
            })
        })
        .collect()
}

/// A logits output, borrowed in its own element type.
enum Logits<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl Logits<'_> {
    fn len(&self) -> usize {
        match self {
            Logits::F32(v) => v.len(),
            Logits::F16(v) => v.len(),
        }
    }

    /// Replaces `out` with elements `range` as float32. `out` keeps its capacity, so steady
    /// decoding allocates nothing here; float16 goes through `half`'s vectorised conversion.
    fn copy_to(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        out.clear();
        match self {
            Logits::F32(v) => out.extend_from_slice(&v[range]),
            Logits::F16(v) => {
                let src = &v[range];
                out.resize(src.len(), 0.0);
                src.convert_to_f32_slice(out);
            }
        }
    }
}

/// Borrows a logits tensor and the size of its last (vocabulary) dimension.
fn logits_of(value: Option<&DynValue>) -> Result<(Logits<'_>, usize), InferenceError> {
    let value = value.ok_or_else(|| InferenceError::Output("no logits output".into()))?;
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(InferenceError::Output(format!(
                "logits are not a tensor: {other:?}"
            )))
        }
    };
    let (shape, logits) = match FloatType::from_onnx(ty) {
        Some(FloatType::F32) => {
            let (shape, data) = value.try_extract_tensor::<f32>()?;
            (shape, Logits::F32(data))
        }
        Some(FloatType::F16) => {
            let (shape, data) = value.try_extract_tensor::<f16>()?;
            (shape, Logits::F16(data))
        }
        None => {
            return Err(InferenceError::Output(format!(
                "logits have element type {ty:?}; float32 or float16 expected"
            )))
        }
    };
    let vocab = shape
        .last()
        .copied()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| InferenceError::Output("logits have no vocabulary dimension".into()))?;
    Ok((logits, vocab))
}

/// Copies, as float32, the last position's logits of a `[batch, seq, vocab]` output.
pub(super) fn copy_last_logits(
    value: Option<&DynValue>,
    out: &mut Vec<f32>,
) -> Result<(), InferenceError> {
    let (logits, vocab) = logits_of(value)?;
    let len = logits.len();
    if len < vocab {
        return Err(InferenceError::Output("logits tensor is empty".into()));
    }
    logits.copy_to(len - vocab..len, out);
    Ok(())
}

/// Copies, as float32, logits of a `[rows, seq, vocab]` output: with `last_only` (one row) the
/// last position's, otherwise everything, one position per row (decode), row after row.
pub(super) fn copy_rows_logits(
    value: Option<&DynValue>,
    rows: usize,
    last_only: bool,
    out: &mut Vec<f32>,
) -> Result<(), InferenceError> {
    if last_only {
        return copy_last_logits(value, out);
    }
    let (logits, _) = logits_of(value)?;
    let len = logits.len();
    if rows == 0 || len == 0 || len % rows != 0 {
        return Err(InferenceError::Output(format!(
            "logits of {len} elements do not split into {rows} rows"
        )));
    }
    logits.copy_to(0..len, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_sizes_and_names() {
        assert_eq!(FloatType::F32.size(), 4);
        assert_eq!(FloatType::F16.size(), 2);
        assert_eq!(
            FloatType::from_onnx(TensorElementType::Float16),
            Some(FloatType::F16)
        );
        assert_eq!(FloatType::from_onnx(TensorElementType::Bfloat16), None);
        assert_eq!(FloatType::from_onnx(TensorElementType::Float64), None);
    }

    #[test]
    fn zeroed_f16_buffers_are_zero_and_sized() {
        let v = <f16 as KvElement>::zeroed(1000);
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|x| x.to_bits() == 0));
        let data = f16::wrap(v);
        assert_eq!(data.bytes(), 2000);
        assert_eq!(data.float_type(), FloatType::F16);
    }

    #[test]
    fn blocks_of_another_type_are_refused() {
        let a = KvData::F32(vec![1.0; 4]);
        let b = KvData::F16(vec![f16::ONE; 4]);
        assert_eq!(typed_blocks::<f32>(&[&a]).map(|v| v.len()).ok(), Some(1));
        let err = typed_blocks::<f32>(&[&a, &b]).expect_err("mixed types");
        assert!(err.to_string().contains("float16"), "{err}");
    }

    #[test]
    fn f16_logits_convert_into_the_reused_buffer() {
        let values: Vec<f16> = (0..8)
            .map(|i| f16::from_f32(i as f32 * 0.5 - 1.0))
            .collect();
        let logits = Logits::F16(&values);
        let mut out = Vec::with_capacity(16);
        let before = out.as_ptr();
        logits.copy_to(4..8, &mut out);
        assert_eq!(out, vec![1.0, 1.5, 2.0, 2.5]);
        logits.copy_to(0..4, &mut out);
        assert_eq!(out, vec![-1.0, -0.5, 0.0, 0.5]);
        assert_eq!(out.as_ptr(), before, "the logits buffer was reallocated");
    }
}

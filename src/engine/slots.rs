//! KV storage for continuous batching in shared-buffer (GroupQueryAttention) models: one buffer
//! per layer and key/value shaped `[slots, kv_heads, capacity, head_size]`, one slot per running
//! sequence. Running sequences occupy slots `0..n`, so a decode step binds the first `n` slots as
//! one `[n, …]` tensor (batch rows are the outermost dimension, hence contiguous) and GQA writes
//! each row's new position in place, at that row's own length (right padding, which is what GQA
//! expects). A prefill binds a single slot the same way. When a sequence leaves, the last slot is
//! moved into its place so the running slots stay contiguous. Buffers hold the model's KV
//! element type (float32, or float16 for GPU-built models).
//!
//! The buffers are zero-initialised by the allocator (calloc), so pages are only committed as
//! positions are written: reserving `slots × capacity` costs address space, not memory.

use std::ffi::CStr;
use std::ptr::NonNull;

use half::f16;
use ort::memory::{Allocator, MemoryInfo};
use ort::value::{DynTensor, Tensor};
use ort::AsPointer;

use super::error::InferenceError;
use super::kv::{copy_rows_logits, typed_blocks, FloatType, KvData, KvElement};
use super::layout::ModelLayout;
use super::runner::{index_tensor_2d, Runner};

/// Per layer: key buffer, then value buffer, in the model's KV element type.
enum Buffers {
    F32(Vec<Vec<f32>>),
    F16(Vec<Vec<f16>>),
}

/// Runs `$body` with `$b` bound to the typed buffer list (`&Vec<Vec<T>>` or `&mut …`).
macro_rules! with_buffers {
    ($buffers:expr, $b:ident => $body:expr) => {
        match $buffers {
            Buffers::F32($b) => $body,
            Buffers::F16($b) => $body,
        }
    };
}

/// The batched KV buffers of one worker.
pub struct SlotPool {
    buffers: Buffers,
    /// Key and value buffers over all layers.
    tensors: usize,
    slots: usize,
    capacity: usize,
    heads: usize,
    head_size: usize,
    /// Bytes per KV element.
    element_bytes: usize,
    /// Positions cached per slot.
    lens: Vec<usize>,
}

impl SlotPool {
    /// Reserves `slots` sequences of up to `capacity` positions each, in the layout's KV type.
    pub fn new(layout: &ModelLayout, slots: usize, capacity: usize) -> Self {
        let per_buffer = slots * layout.num_kv_heads * capacity * layout.head_size;
        let tensors = 2 * layout.num_layers();
        fn zeroed<T: KvElement>(tensors: usize, len: usize) -> Vec<Vec<T>> {
            (0..tensors).map(|_| T::zeroed(len)).collect()
        }
        let buffers = match layout.kv_type {
            FloatType::F32 => Buffers::F32(zeroed(tensors, per_buffer)),
            FloatType::F16 => Buffers::F16(zeroed(tensors, per_buffer)),
        };
        Self {
            buffers,
            tensors,
            slots,
            capacity,
            heads: layout.num_kv_heads,
            head_size: layout.head_size,
            element_bytes: layout.kv_type.size(),
            lens: vec![0; slots],
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Positions each slot can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions cached in `slot`.
    pub fn len(&self, slot: usize) -> usize {
        self.lens.get(slot).copied().unwrap_or(0)
    }

    /// Elements of one slot in one buffer.
    fn slot_elements(&self) -> usize {
        self.heads * self.capacity * self.head_size
    }

    /// Restores `slot`'s length after a step that must not count for it.
    pub fn set_len(&mut self, slot: usize, len: usize) {
        if let Some(l) = self.lens.get_mut(slot) {
            *l = len.min(self.capacity);
        }
    }

    /// Empties `slot` for a new sequence (stale positions beyond the length are never read:
    /// GQA only attends to each row's own length).
    pub fn reset(&mut self, slot: usize) {
        if let Some(l) = self.lens.get_mut(slot) {
            *l = 0;
        }
    }

    /// Moves the sequence in slot `from` to slot `to` (copying only its cached positions).
    pub fn move_slot(&mut self, from: usize, to: usize) {
        if from == to || from >= self.slots || to >= self.slots {
            return;
        }
        let len = self.lens[from];
        let (cap, dim, span, heads) = (
            self.capacity,
            self.head_size,
            self.slot_elements(),
            self.heads,
        );
        with_buffers!(&mut self.buffers, buffers => {
            for buffer in buffers.iter_mut() {
                for head in 0..heads {
                    let src = from * span + head * cap * dim;
                    let dst = to * span + head * cap * dim;
                    buffer.copy_within(src..src + len * dim, dst);
                }
            }
        });
        self.lens[to] = len;
        self.lens[from] = 0;
    }

    /// Copies positions `[start, start + count * block_tokens)` of `slot` out, one block each
    /// in the model's KV type, in the prefix cache's layout
    /// `[layer][key|value][head][position][head_size]`.
    pub fn export_blocks(
        &self,
        slot: usize,
        start: usize,
        count: usize,
        block_tokens: usize,
    ) -> Result<Vec<KvData>, InferenceError> {
        if slot >= self.slots || start + count * block_tokens > self.lens[slot] {
            return Err(InferenceError::Output(
                "export beyond the cached positions".into(),
            ));
        }
        Ok(with_buffers!(&self.buffers, buffers => {
            self.export_typed(buffers, slot, start, count, block_tokens)
        }))
    }

    fn export_typed<T: KvElement>(
        &self,
        buffers: &[Vec<T>],
        slot: usize,
        start: usize,
        count: usize,
        block_tokens: usize,
    ) -> Vec<KvData> {
        let (cap, dim) = (self.capacity, self.head_size);
        let span = block_tokens * dim;
        let base = slot * self.slot_elements();
        (0..count)
            .map(|b| {
                let first = start + b * block_tokens;
                let mut out = Vec::with_capacity(buffers.len() * self.heads * span);
                for buffer in buffers {
                    for head in 0..self.heads {
                        let at = base + (head * cap + first) * dim;
                        out.extend_from_slice(&buffer[at..at + span]);
                    }
                }
                T::wrap(out)
            })
            .collect()
    }

    /// Fills an empty `slot` with cached blocks covering `[0, blocks * block_tokens)`.
    pub fn import_blocks(
        &mut self,
        slot: usize,
        blocks: &[&KvData],
        block_tokens: usize,
    ) -> Result<(), InferenceError> {
        let len = blocks.len() * block_tokens;
        let block_elements = self.tensors * self.heads * block_tokens * self.head_size;
        if slot >= self.slots || self.lens[slot] != 0 || len > self.capacity {
            return Err(InferenceError::Output(
                "cached prefix does not fit the slot".into(),
            ));
        }
        if blocks.iter().any(|b| b.len() != block_elements) {
            return Err(InferenceError::Output(
                "cached block has the wrong size".into(),
            ));
        }
        let (cap, dim, heads) = (self.capacity, self.head_size, self.heads);
        let base = slot * self.slot_elements();
        with_buffers!(&mut self.buffers, buffers => {
            import_typed(buffers, &typed_blocks(blocks)?, base, cap, dim, heads, block_tokens)
        });
        self.lens[slot] = len;
        Ok(())
    }

    /// KV bytes of the positions actually cached in the first `running` slots.
    pub fn bytes_in_use(&self, running: usize) -> usize {
        let per_position = self.tensors * self.heads * self.head_size * self.element_bytes;
        self.lens.iter().take(running).sum::<usize>() * per_position
    }
}

/// Copies `blocks` into one slot (starting at element `base` of every buffer).
fn import_typed<T: KvElement>(
    buffers: &mut [Vec<T>],
    blocks: &[&[T]],
    base: usize,
    cap: usize,
    dim: usize,
    heads: usize,
    block_tokens: usize,
) {
    let span = block_tokens * dim;
    for (t, buffer) in buffers.iter_mut().enumerate() {
        for (b, block) in blocks.iter().enumerate() {
            for head in 0..heads {
                let src = (t * heads + head) * span;
                let dst = base + (head * cap + b * block_tokens) * dim;
                buffer[dst..dst + span].copy_from_slice(&block[src..src + span]);
            }
        }
    }
}

impl Runner {
    /// Runs `tokens` of the sequence in `slot` (after its cached positions) and writes the
    /// logits of the last position to `logits_out`.
    pub fn prefill_slot(
        &mut self,
        pool: &mut SlotPool,
        slot: usize,
        tokens: &[u32],
        logits_out: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        if slot >= pool.slots || tokens.is_empty() {
            return Err(InferenceError::Output("bad prefill request".into()));
        }
        let past = pool.lens[slot];
        let total = past + tokens.len();
        if total > pool.capacity {
            return Err(InferenceError::Output(format!(
                "sequence of {total} positions exceeds the KV capacity {}",
                pool.capacity
            )));
        }
        let rows = [(tokens, past)];
        self.run_slots(pool, slot, &rows, tokens.len(), logits_out, true)?;
        pool.lens[slot] = total;
        Ok(())
    }

    /// One decode step for the sequences in slots `0..tokens.len()`: row `i` feeds `tokens[i]`
    /// after slot `i`'s cached positions. `logits_out` receives one row of logits per slot.
    pub fn decode_slots(
        &mut self,
        pool: &mut SlotPool,
        tokens: &[u32],
        logits_out: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        let n = tokens.len();
        if n == 0 || n > pool.slots {
            return Err(InferenceError::Output("bad decode batch".into()));
        }
        if let Some(i) = (0..n).find(|&i| pool.lens[i] + 1 > pool.capacity) {
            return Err(InferenceError::Output(format!(
                "slot {i} is full ({} positions)",
                pool.capacity
            )));
        }
        let rows: Vec<(&[u32], usize)> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (std::slice::from_ref(t), pool.lens[i]))
            .collect();
        self.run_slots(pool, 0, &rows, 1, logits_out, false)?;
        for len in pool.lens.iter_mut().take(n) {
            *len += 1;
        }
        Ok(())
    }

    /// Binds slots `first..first + rows.len()` as one batch and runs it. Every row has
    /// `seq_len` new tokens; the attention mask is right-padded to the longest row.
    fn run_slots(
        &mut self,
        pool: &mut SlotPool,
        first: usize,
        rows: &[(&[u32], usize)],
        seq_len: usize,
        logits_out: &mut Vec<f32>,
        last_only: bool,
    ) -> Result<(), InferenceError> {
        let l = &self.layout;
        let n = rows.len();
        let width = rows
            .iter()
            .map(|(t, past)| past + t.len())
            .max()
            .unwrap_or(0);
        let ids = index_tensor_2d(
            l.input_ids_type,
            rows.iter()
                .flat_map(|(t, _)| t.iter().map(|&id| i64::from(id))),
            n,
            seq_len,
        )?;
        let mask = match &l.attention_mask {
            Some(_) => Some(index_tensor_2d(
                l.attention_mask_type,
                rows.iter().flat_map(|(t, past)| {
                    let ones = past + t.len();
                    (0..width).map(move |c| i64::from(c < ones))
                }),
                n,
                width,
            )?),
            None => None,
        };
        let positions = match &l.position_ids {
            Some(_) => Some(index_tensor_2d(
                l.position_ids_type,
                rows.iter()
                    .flat_map(|(t, past)| (*past..past + t.len()).map(|p| p as i64)),
                n,
                seq_len,
            )?),
            None => None,
        };
        let span = pool.slot_elements();
        let shape = [n, pool.heads, pool.capacity, pool.head_size];
        let mut binding = self.session.create_binding()?;
        binding.bind_input(l.input_ids.as_str(), &ids)?;
        if let (Some(name), Some(mask)) = (&l.attention_mask, &mask) {
            binding.bind_input(name.as_str(), mask)?;
        }
        if let (Some(name), Some(pos)) = (&l.position_ids, &positions) {
            binding.bind_input(name.as_str(), pos)?;
        }
        let names = l
            .past
            .iter()
            .zip(&l.present)
            .flat_map(|(past, present)| [(&past.0, &present.0), (&past.1, &present.1)]);
        let allocator = self.session.allocator();
        let mut views: Vec<DynTensor> = Vec::with_capacity(pool.tensors);
        let regions = with_buffers!(&mut pool.buffers, buffers => {
            buffers.iter_mut().map(|buffer| {
                let region = &mut buffer[first * span..(first + n) * span];
                // SAFETY: `pool` is borrowed mutably for this whole function, so the buffers
                // can neither move nor be touched elsewhere; the views and the binding that
                // holds them are dropped below, before the borrow ends.
                unsafe { alias_tensor(region, shape, &self.cpu_input, allocator) }
            }).collect::<Result<Vec<DynTensor>, InferenceError>>()?
        });
        for ((input, output), mut view) in names.zip(regions) {
            binding.bind_input(input.as_str(), &view)?;
            binding.bind_output(output.as_str(), &mut view)?;
            views.push(view);
        }
        binding.bind_output_to_device(l.logits.as_str(), &self.cpu_output)?;
        let outputs = self.session.run_binding(&binding)?;
        copy_rows_logits(outputs.get(l.logits.as_str()), n, last_only, logits_out)?;
        drop(outputs);
        drop(binding);
        drop(views);
        Ok(())
    }
}

/// An ORT tensor of `shape` over `data` that ORT treats like an owned value.
///
/// Why not `TensorRefMut`: IoBinding copies borrowed inputs (to guard against aliasing) and
/// refuses borrowed outputs, and copying the KV cache every step is what batching must avoid;
/// here past and present are meant to alias.
///
/// # Safety
/// `data` must stay alive, unmoved and otherwise untouched until the returned value and every
/// binding it was bound to have been dropped.
unsafe fn alias_tensor<T: KvElement>(
    data: &mut [T],
    shape: [usize; 4],
    info: &MemoryInfo,
    allocator: &Allocator,
) -> Result<DynTensor, InferenceError> {
    let elements: usize = shape.iter().product();
    if elements > data.len() {
        return Err(InferenceError::Output(
            "KV view larger than its buffer".into(),
        ));
    }
    let dims = shape.map(|d| d as i64);
    let api = ort::api();
    let mut value: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; ORT keeps `data` by reference (the caller's
    // contract) and copies `dims`. The byte length and element type are those of `T`.
    let status = unsafe {
        (api.CreateTensorWithDataAsOrtValue)(
            info.ptr(),
            data.as_mut_ptr().cast(),
            elements * std::mem::size_of::<T>(),
            dims.as_ptr(),
            dims.len(),
            T::into_tensor_element_type().into(),
            &mut value,
        )
    };
    if !status.0.is_null() {
        // SAFETY: a non-null status is a valid OrtStatus that we own and release once.
        let message = unsafe {
            let m = CStr::from_ptr((api.GetErrorMessage)(status.0))
                .to_string_lossy()
                .into_owned();
            (api.ReleaseStatus)(status.0);
            m
        };
        return Err(InferenceError::Output(format!(
            "cannot create a KV view: {message}"
        )));
    }
    let value = NonNull::new(value)
        .ok_or_else(|| InferenceError::Output("ORT returned no KV view".into()))?;
    // SAFETY: `value` is a valid tensor OrtValue of element type `T` just created; the
    // allocator is only kept alive by the wrapper (the data is not ORT's to free).
    Ok(unsafe { Tensor::<T>::from_ptr(value, Some(allocator)) }.upcast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::{IndexType, KvMode};

    fn layout(kv_type: FloatType) -> ModelLayout {
        ModelLayout {
            input_ids: "input_ids".into(),
            input_ids_type: IndexType::I64,
            attention_mask: Some("attention_mask".into()),
            attention_mask_type: IndexType::I64,
            position_ids: None,
            position_ids_type: IndexType::I64,
            past: vec![("past.0.key".into(), "past.0.value".into())],
            present: vec![("present.0.key".into(), "present.0.value".into())],
            logits: "logits".into(),
            num_kv_heads: 2,
            head_size: 4,
            kv_mode: KvMode::SharedBuffer,
            kv_type,
            logits_type: kv_type,
        }
    }

    #[test]
    fn float16_slots_copy_blocks_and_move_in_their_own_type() {
        let mut pool = SlotPool::new(&layout(FloatType::F16), 2, 8);
        let Buffers::F16(buffers) = &mut pool.buffers else {
            panic!("float16 layout gave float32 buffers");
        };
        // Distinct, exactly representable values in every element of slot 0 (and slot 1).
        for (t, buffer) in buffers.iter_mut().enumerate() {
            for (i, x) in buffer.iter_mut().enumerate() {
                *x = f16::from_f32((t * 1000 + i) as f32);
            }
        }
        pool.set_len(0, 8);
        let blocks = pool.export_blocks(0, 0, 2, 4).expect("export");
        assert_eq!(blocks.len(), 2);
        // 2 tensors x 2 heads x 4 positions x 4 dims, float16.
        assert!(blocks
            .iter()
            .all(|b| b.float_type() == FloatType::F16 && b.len() == 64 && b.bytes() == 128));
        let refs: Vec<&KvData> = blocks.iter().collect();
        pool.import_blocks(1, &refs, 4).expect("import");
        assert_eq!(pool.export_blocks(1, 0, 2, 4).expect("export"), blocks);
        // 2 slots x 8 positions x (2 tensors x 2 heads x 4 dims x 2 bytes).
        assert_eq!(pool.bytes_in_use(2), 2 * 8 * 32);
        pool.reset(0);
        pool.move_slot(1, 0);
        assert_eq!(pool.len(0), 8);
        assert_eq!(pool.export_blocks(0, 0, 2, 4).expect("export"), blocks);
        let wrong = KvData::F32(vec![0.0; 64]);
        pool.reset(1);
        let err = pool
            .import_blocks(1, &[&wrong], 4)
            .expect_err("float32 block");
        assert!(err.to_string().contains("float32"), "{err}");
    }

    #[test]
    fn float32_pool_counts_four_bytes_per_element() {
        let mut pool = SlotPool::new(&layout(FloatType::F32), 1, 8);
        pool.set_len(0, 3);
        assert_eq!(pool.bytes_in_use(1), 3 * 2 * 2 * 4 * 4);
    }
}

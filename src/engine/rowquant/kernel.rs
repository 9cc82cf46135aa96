//! The arithmetic of the fused per-row int8 matmul, bit for bit what the exporter's node chain
//! computes (`onnx/requantize_dynamic.py`, `per_row_matmul`):
//!
//! ```text
//! scale[m] = max(max_k |a[m,k]|, 1e-30) / 127
//! q[m,k]   = round_half_even(a[m,k] / scale[m]) + 128          (uint8)
//! acc[m,n] = Σ_k (q[m,k] - 128) · w[k,n]                       (exact int32)
//! y[m,n]   = (f32(acc[m,n]) · scale[m]) · w_scale[n]
//! ```
//!
//! Every step is an exactly rounded IEEE operation or exact integer arithmetic, done in the
//! chain's order, so the result does not depend on how the work is split or vectorised. The
//! AVX-512 VNNI kernel streams weights packed at load ([`PackedWeights`]) in the
//! four-bytes-per-column groups `vpdpbusd` multiplies; the unsigned activations' offset of 128
//! is taken out afterwards with per-column weight sums.

/// Columns one kernel call produces: four 512-bit accumulators of 16 int32 lanes.
pub const BLOCK_COLS: usize = 64;

/// The smallest row maximum the exporter's `Max` admits, so an all-zero row does not divide by 0.
const TINY: f32 = 1e-30;

/// Rows whose accumulators stay in registers at once (6 rows × 4 accumulators + 8 temporaries
/// fit the 32 vector registers).
const MAX_TILE_ROWS: usize = 6;

/// Whether this CPU runs the vector kernel; the graph rewrite only applies when it does, since
/// ONNX Runtime's own kernels beat the scalar reference everywhere.
pub fn vector_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `k` rounded up to the 4-byte groups the kernel consumes; quantized rows are stored with this
/// stride and padded with 0 (which contributes nothing, unlike the offset value 128).
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(4) * 4
}

/// Quantizes one row into `q` (`q.len() >= a.len()`, the rest is zeroed) and returns its scale.
pub fn quantize_row(a: &[f32], q: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { quantize_row_avx512(a, q) };
    }
    quantize_row_portable(a, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512(a: &[f32], q: &mut [u8]) -> f32 {
    // Same code, compiled with AVX-512 so the divisions and `round_ties_even` vectorise.
    quantize_row_portable(a, q)
}

#[inline(always)]
fn quantize_row_portable(a: &[f32], q: &mut [u8]) -> f32 {
    let max = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = max.max(TINY) / 127.0;
    let (head, tail) = q.split_at_mut(a.len());
    for (q, x) in head.iter_mut().zip(a) {
        // In [1, 255]: |x / scale| <= 127 up to rounding, which round-half-even keeps at 127.
        *q = ((x / scale).round_ties_even() + 128.0) as u8;
    }
    tail.fill(0);
    scale
}

/// Weights repacked for the kernel: per 64-column block, per group of four rows, the four
/// weights of each column side by side (`[n/64][k/4][64][4]`), so one block is one contiguous
/// run of memory the kernel streams with no shuffles. Padding (rows past `k`, columns past `n`)
/// is 0. Plus the per-column sums that take out the activations' offset of 128.
pub struct PackedWeights {
    pub k: usize,
    pub n: usize,
    data: Vec<i8>,
    col_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `w`, `[k, n]` row-major int8.
    pub fn pack(w: &[i8], k: usize, n: usize) -> Self {
        let groups = padded_k(k) / 4;
        let blocks = n.div_ceil(BLOCK_COLS);
        let mut data = vec![0i8; blocks * groups * BLOCK_COLS * 4];
        let mut col_sums = vec![0i32; n];
        for (kk, row) in w.chunks_exact(n).take(k).enumerate() {
            let (g, i) = (kk / 4, kk % 4);
            for (c, &v) in row.iter().enumerate() {
                let (b, lane) = (c / BLOCK_COLS, c % BLOCK_COLS);
                data[((b * groups + g) * BLOCK_COLS + lane) * 4 + i] = v;
                col_sums[c] += i32::from(v);
            }
        }
        Self {
            k,
            n,
            data,
            col_sums,
        }
    }

    /// Bytes held (what packing adds to the process; the graph's copy is dropped).
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.col_sums.len()
    }

    fn block(&self, b: usize) -> &[i8] {
        let len = padded_k(self.k) / 4 * BLOCK_COLS * 4;
        &self.data[b * len..][..len]
    }
}

/// The operands of one call, shared by every column block.
pub struct Operands<'a> {
    /// Quantized activations, one row per scale, rows of stride [`padded_k`]`(k)`.
    pub q: &'a [u8],
    /// Each row's scale.
    pub scales: &'a [f32],
    pub w: &'a PackedWeights,
    pub w_scale: &'a [f32],
}

/// Computes columns `block * 64 ..` (up to 64 of them) of every row of `y` (`rows × n`,
/// row-major). Blocks write disjoint columns, so they may run on different threads.
///
/// # Safety
/// `y` must point to `rows × n` writable floats that no one else writes in this block's columns
/// while the call runs.
pub unsafe fn matmul_block(ops: &Operands, block: usize, y: *mut f32, vector: bool) {
    let n = ops.w.n;
    let n0 = block * BLOCK_COLS;
    let cols = BLOCK_COLS.min(n - n0);
    let rows = ops.scales.len();
    let mut acc = [[0i32; BLOCK_COLS]; MAX_TILE_ROWS];
    let mut m0 = 0;
    while m0 < rows {
        let tile = MAX_TILE_ROWS.min(rows - m0);
        integer_tile(ops, m0, tile, block, &mut acc, vector);
        for (r, acc) in acc.iter().take(tile).enumerate() {
            let m = m0 + r;
            // SAFETY: row m, columns n0..n0+cols lie inside `y` and belong to this block.
            let out = unsafe { std::slice::from_raw_parts_mut(y.add(m * n + n0), cols) };
            let scale = ops.scales[m];
            let sums = &ops.w.col_sums[n0..][..cols];
            let w_scale = &ops.w_scale[n0..][..cols];
            for (((o, &a), &sum), &ws) in out.iter_mut().zip(acc.iter()).zip(sums).zip(w_scale) {
                *o = ((a - 128 * sum) as f32 * scale) * ws;
            }
        }
        m0 += tile;
    }
}

/// `acc[r][c] = Σ_k q[m0 + r, k] · w[k, 64·block + c]` for `tile` rows (unsigned activations,
/// offset not yet removed).
fn integer_tile(
    ops: &Operands,
    m0: usize,
    tile: usize,
    block: usize,
    acc: &mut [[i32; BLOCK_COLS]; MAX_TILE_ROWS],
    vector: bool,
) {
    let stride = padded_k(ops.w.k);
    let w = ops.w.block(block);
    let q = &ops.q[m0 * stride..][..tile * stride];
    #[cfg(target_arch = "x86_64")]
    if vector {
        // SAFETY: callers pass `vector` only when `vector_kernel_available()`; `q` holds
        // `tile` rows of `stride` bytes and `w` one packed block of `stride / 4` groups.
        unsafe {
            match tile {
                1 => avx512::tile::<1>(q, w, stride, acc),
                2 => avx512::tile::<2>(q, w, stride, acc),
                3 => avx512::tile::<3>(q, w, stride, acc),
                4 => avx512::tile::<4>(q, w, stride, acc),
                5 => avx512::tile::<5>(q, w, stride, acc),
                _ => avx512::tile::<6>(q, w, stride, acc),
            }
        }
        return;
    }
    let _ = vector;
    for (r, acc) in acc.iter_mut().take(tile).enumerate() {
        let q = &q[r * stride..][..stride];
        acc.fill(0);
        for (qg, wg) in q.chunks_exact(4).zip(w.chunks_exact(BLOCK_COLS * 4)) {
            for (a, wc) in acc.iter_mut().zip(wg.chunks_exact(4)) {
                *a += qg
                    .iter()
                    .zip(wc)
                    .map(|(&x, &v)| i32::from(x) * i32::from(v))
                    .sum::<i32>();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BLOCK_COLS, MAX_TILE_ROWS};

    /// One tile of `R` rows × 64 columns over one packed block: per group of four rows, four
    /// 64-byte loads (16 columns × 4 weights each) and one `vpdpbusd` per row and load.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const R: usize>(
        q: &[u8],
        w: &[i8],
        stride: usize,
        out: &mut [[i32; BLOCK_COLS]; MAX_TILE_ROWS],
    ) {
        let (q, w) = (q.as_ptr(), w.as_ptr());
        let mut acc = [[_mm512_setzero_si512(); 4]; R];
        let mut kk = 0;
        while kk < stride {
            let group = w.add(kk * BLOCK_COLS);
            let b = [
                _mm512_loadu_si512(group.cast()),
                _mm512_loadu_si512(group.add(64).cast()),
                _mm512_loadu_si512(group.add(128).cast()),
                _mm512_loadu_si512(group.add(192).cast()),
            ];
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_epi32(q.add(r * stride + kk).cast::<i32>().read_unaligned());
                for (acc, b) in acc.iter_mut().zip(b) {
                    *acc = _mm512_dpbusd_epi32(*acc, a, b);
                }
            }
            kk += 4;
        }
        for (out, acc) in out.iter_mut().zip(acc.iter()) {
            for (j, acc) in acc.iter().enumerate() {
                _mm512_storeu_si512(out[16 * j..].as_mut_ptr().cast(), *acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exporter's chain, op by op, in plain f32/i32 arithmetic.
    fn chain(a: &[f32], rows: usize, w: &[i8], w_scale: &[f32], k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * n];
        for m in 0..rows {
            let row = &a[m * k..][..k];
            let max = row.iter().map(|x| x.abs()).fold(0f32, f32::max);
            let scale = max.max(1e-30) / 127.0;
            let q: Vec<i32> = row
                .iter()
                .map(|x| ((x / scale).round_ties_even() + 128.0) as u8 as i32 - 128)
                .collect();
            for c in 0..n {
                let acc: i32 = (0..k).map(|kk| q[kk] * i32::from(w[kk * n + c])).sum();
                y[m * n + c] = (acc as f32 * scale) * w_scale[c];
            }
        }
        y
    }

    fn run(
        a: &[f32],
        rows: usize,
        w: &[i8],
        w_scale: &[f32],
        k: usize,
        n: usize,
        vector: bool,
    ) -> Vec<f32> {
        let stride = padded_k(k);
        let mut q = vec![0u8; rows * stride];
        let scales: Vec<f32> = (0..rows)
            .map(|m| quantize_row(&a[m * k..][..k], &mut q[m * stride..][..stride]))
            .collect();
        let packed = PackedWeights::pack(w, k, n);
        let ops = Operands {
            q: &q,
            scales: &scales,
            w: &packed,
            w_scale,
        };
        let mut y = vec![f32::NAN; rows * n];
        for block in 0..n.div_ceil(BLOCK_COLS) {
            // SAFETY: y holds rows × n floats; blocks run one after another.
            unsafe { matmul_block(&ops, block, y.as_mut_ptr(), vector) };
        }
        y
    }

    /// Deterministic pseudo-random values (xorshift), so a failure reproduces.
    fn values(seed: u64, len: usize) -> impl Iterator<Item = u64> {
        let mut s = seed | 1;
        (0..len).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        })
    }

    fn case(rows: usize, k: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<i8>, Vec<f32>) {
        let a = values(seed, rows * k)
            .map(|v| ((v % 20_001) as f32 - 10_000.0) / 997.0)
            .collect();
        let w = values(seed + 1, k * n)
            .map(|v| ((v % 255) as i32 - 127) as i8)
            .collect();
        let s = values(seed + 2, n)
            .map(|v| (v % 1000 + 1) as f32 * 1e-5)
            .collect();
        (a, w, s)
    }

    #[test]
    fn scalar_and_vector_kernels_equal_the_exporters_chain_bit_for_bit() {
        // Odd shapes on purpose: k not a multiple of 4, n not of 64, row counts around the
        // 6-row tile, and a row that is all zeros (the 1e-30 floor).
        for (rows, k, n, seed) in [
            (1, 64, 64, 1),
            (1, 37, 70, 2),
            (7, 130, 200, 3),
            (13, 256, 129, 4),
            (6, 4, 1, 5),
        ] {
            let (mut a, w, s) = case(rows, k, n, seed);
            if rows > 1 {
                a[k..2 * k].fill(0.0);
            }
            let expected = chain(&a, rows, &w, &s, k, n);
            let scalar = run(&a, rows, &w, &s, k, n, false);
            assert_eq!(
                scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "scalar {rows}x{k}x{n}"
            );
            if vector_kernel_available() {
                let vector = run(&a, rows, &w, &s, k, n, true);
                assert_eq!(
                    vector.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "vector {rows}x{k}x{n}"
                );
            }
        }
    }

    #[test]
    fn quantized_rows_use_the_whole_uint8_range_and_zero_padding() {
        let mut q = [7u8; 8];
        // scale 1: halves round to even (0.5 -> 0, 1.5 -> 2)
        let scale = quantize_row(&[-127.0, 1.0, 127.0, 0.5, 1.5], &mut q);
        assert_eq!(scale, 1.0);
        assert_eq!(q, [1, 129, 255, 128, 130, 0, 0, 0]);
        let scale = quantize_row(&[0.0, 0.0], &mut q[..4]);
        assert_eq!(scale, 1e-30 / 127.0);
        assert_eq!(&q[..4], &[128, 128, 0, 0]);
    }
}

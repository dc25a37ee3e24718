//! Our own CPU matmul for the quantized weight types of the bundled models: Q4_1, Q5_0,
//! Q8_0, Q4_K and Q6_K.
//!
//! candle 0.11 has no x86 SIMD path for some of these (Q4_1, Q5_0), computes each activation
//! row on its own, and for others picks kernels whose rounding depends on the number of rows.
//! This kernel instead:
//! - quantises each 32-value block of activations to 8 bits (one f32 scale per block, and the
//!   block's scaled sum), as llama.cpp does; for the K-quants eight blocks (a weight
//!   super-block) share one scale, as in llama.cpp's Q8_K;
//! - computes each block's dot product exactly, in integers (AVX2 `maddubs`, with a scalar
//!   fallback), and scales it once: an output element is
//!   `Σ_blocks P · (scale · d) + Σ_blocks bias · s`, the first sum taken eight blocks at a
//!   time in a fixed tree, the second in eight lanes, whatever the number of rows, so a
//!   sequence's result never depends on the other rows of its batch or prompt chunk. For the
//!   K-quants, whose eight blocks share both scales (the sub-block scales are integers,
//!   applied in the integer products), the eight `P` are summed in integers first and scaled
//!   once: a third of the work per block, measured on Qwen2.5-Coder 1.5B as prompts 1.2-1.3×
//!   faster;
//! - decodes one row (single-sequence decoding) by streaming each weight row once, read in
//!   place, one column at a time (a single sequential stream per thread is what keeps
//!   memory bandwidth up), eight blocks' integer products reduced together;
//! - for several rows, multiplies register tiles of up to eight output elements, one per lane
//!   of a single accumulator (4 rows × 2 columns, and 3 × 2, 2 × 4 or 1 × 8 for the last
//!   rows), so that a block costs one conversion and two multiplications per eight
//!   elements, where each element had taken a conversion, a multiplication and an FMA;
//!   when more than one tile of rows will read a task's weight columns, they are first
//!   unpacked once into bytes, except Q8_0, whose bytes are read in place;
//! - runs on candle's own thread pool, columns split across threads, and on the calling
//!   thread alone while another process holds a core ([`super::parallel`]).
//!
//! The scalar fallback (CPUs without AVX2, FMA and F16C) sums the same products in a plainer
//! order: it agrees with the AVX2 path to rounding, and is itself independent of the batch.
//!
//! A weight block of 32 values is `value_j = scale · h_j · w_j + bias`, with `w_j` bytes
//! (signed for Q8_0 and Q6_K, unsigned otherwise: Q5_0's offset of 16 goes into the bias)
//! and `h_j` an integer scale per 16 values (Q6_K's and Q4_K's sub-block scales, else 1). With an
//! activation block `x_j ≈ d · q_j` and its sum `s = d · Σ q_j`, the dot product is
//! `P · (scale · d) + bias · s`, where `P = Σ h_j w_j q_j` is exact in 32-bit integers
//! (and in f32: `|P| < 2²⁴`). A K-quant super-block's `P` (eight blocks, `|P| < 2²⁸`) is
//! exact in integers and rounded once when converted, the same way on every path.

use super::parallel::SendPtr;
use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Each thread's working memory for the AVX2 kernel, kept from one call to the next.
    static SCRATCH: std::cell::Cell<avx2::Scratch> = std::cell::Cell::new(avx2::Scratch::default());
}

/// Values per activation block (and per weight sub-block).
const QK: usize = 32;
/// Weight rows (output features) per parallel work item.
const COLS_PER_TASK: usize = 32;
/// Activation rows multiplied together against one weight block (the scalar fallback).
const ROW_GROUP: usize = 16;

/// A weight type this kernel handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl Kind {
    fn of(t: GgmlDType) -> Option<Self> {
        Some(match t {
            GgmlDType::Q4_1 => Kind::Q4_1,
            GgmlDType::Q5_0 => Kind::Q5_0,
            GgmlDType::Q8_0 => Kind::Q8_0,
            GgmlDType::Q4K => Kind::Q4K,
            GgmlDType::Q6K => Kind::Q6K,
            _ => return None,
        })
    }

    /// Activation blocks that share one scale: the eight blocks of a K-quant super-block
    /// (as llama.cpp's Q8_K), so that a super-block's integer products add up exactly before
    /// one conversion; one block for the other kinds.
    fn span(self) -> usize {
        match self {
            Kind::Q4K | Kind::Q6K => 8,
            _ => 1,
        }
    }

    /// (bytes, values) of one block.
    fn block(self) -> (usize, usize) {
        match self {
            Kind::Q4_1 => (20, 32),
            Kind::Q5_0 => (22, 32),
            Kind::Q8_0 => (34, 32),
            Kind::Q4K => (144, 256),
            Kind::Q6K => (210, 256),
        }
    }
}

/// Quantized weights `(n, k)` in GGUF's own block layout, read in place from candle's
/// tensor (no copy: a tied embedding and output layer share their bytes).
#[derive(Debug)]
pub(crate) struct QMatrix {
    kind: Kind,
    n: usize,
    k: usize,
    tensor: std::sync::Arc<QTensor>,
}

/// One unpacked 32-value weight sub-block.
#[derive(Clone, Copy, Debug)]
struct Unpacked {
    w: [i8; QK],
    lo: f32,
    hi: f32,
    bias: f32,
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K super-block.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

impl QMatrix {
    /// A supported 2-D tensor on the CPU; `None` for any other type, shape or device.
    pub(crate) fn from_qtensor(t: std::sync::Arc<QTensor>) -> Result<Option<Self>> {
        let Some(kind) = Kind::of(t.dtype()) else {
            return Ok(None);
        };
        if !t.device().is_cpu() {
            return Ok(None);
        }
        let [n, k] = t.shape().dims() else {
            return Ok(None);
        };
        let (n, k) = (*n, *k);
        let (bytes, values) = kind.block();
        if k % values != 0 {
            return Ok(None);
        }
        let len = t.data()?.len();
        if len != n * k / values * bytes {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "{kind:?} tensor ({n}, {k}) has {len} bytes, expected {}",
                n * k / values * bytes
            ))));
        }
        Ok(Some(Self {
            kind,
            n,
            k,
            tensor: t,
        }))
    }

    /// Output features.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Bytes of one weight row.
    fn row_bytes(&self) -> usize {
        let (bytes, values) = self.kind.block();
        self.k / values * bytes
    }

    /// Sub-block `sb` (32 values) of weight row `w`, unpacked (scalar).
    fn unpack(&self, w: &[u8], sb: usize) -> Unpacked {
        let mut u = Unpacked {
            w: [0; QK],
            lo: 0.0,
            hi: 0.0,
            bias: 0.0,
        };
        match self.kind {
            Kind::Q4_1 => {
                let b = &w[sb * 20..(sb + 1) * 20];
                for j in 0..16 {
                    u.w[j] = (b[4 + j] & 0x0F) as i8;
                    u.w[j + 16] = (b[4 + j] >> 4) as i8;
                }
                u.lo = f16_at(b, 0);
                u.hi = u.lo;
                u.bias = f16_at(b, 2);
            }
            Kind::Q5_0 => {
                let b = &w[sb * 22..(sb + 1) * 22];
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let h0 = ((qh >> j) & 1) as u8;
                    let h1 = ((qh >> (j + 16)) & 1) as u8;
                    u.w[j] = ((b[6 + j] & 0x0F) | (h0 << 4)) as i8 - 16;
                    u.w[j + 16] = ((b[6 + j] >> 4) | (h1 << 4)) as i8 - 16;
                }
                u.lo = f16_at(b, 0);
                u.hi = u.lo;
            }
            Kind::Q8_0 => {
                let b = &w[sb * 34..(sb + 1) * 34];
                for j in 0..QK {
                    u.w[j] = b[2 + j] as i8;
                }
                u.lo = f16_at(b, 0);
                u.hi = u.lo;
            }
            Kind::Q4K => {
                let s = &w[(sb / 8) * 144..(sb / 8 + 1) * 144];
                let j = sb % 8;
                let (d, dmin) = (f16_at(s, 0), f16_at(s, 2));
                let (sc, m) = scale_min_k4(j, &s[4..16]);
                let q = &s[16 + (j / 2) * 32..16 + (j / 2) * 32 + 32];
                for (l, v) in q.iter().enumerate() {
                    u.w[l] = if j.is_multiple_of(2) {
                        v & 0x0F
                    } else {
                        v >> 4
                    } as i8;
                }
                u.lo = d * sc as f32;
                u.hi = u.lo;
                u.bias = -dmin * m as f32;
            }
            Kind::Q6K => {
                let s = &w[(sb / 8) * 210..(sb / 8 + 1) * 210];
                let (c, g) = ((sb % 8) / 4, sb % 4);
                let ql = &s[64 * c..64 * c + 64];
                let qh = &s[128 + 32 * c..128 + 32 * c + 32];
                let sc = &s[192 + 8 * c..192 + 8 * c + 8];
                let d = f16_at(s, 208);
                for l in 0..QK {
                    let low = match g {
                        0 => ql[l] & 0x0F,
                        1 => ql[l + 32] & 0x0F,
                        2 => ql[l] >> 4,
                        _ => ql[l + 32] >> 4,
                    };
                    let high = (qh[l] >> (2 * g)) & 3;
                    u.w[l] = (low | (high << 4)) as i8 - 32;
                }
                u.lo = d * sc[2 * g] as i8 as f32;
                u.hi = d * sc[2 * g + 1] as i8 as f32;
            }
        }
        u
    }

    /// `y = x · Wᵀ` for `m` rows of `x` (`m × k`, row-major); returns `m × n`.
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let data = self.tensor.data()?;
        let (n, k) = (self.n, self.k);
        if x.len() != m * k {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "quantized matmul: {} activations for {m} rows of {k}",
                x.len()
            ))));
        }
        let nb = k / QK;
        let act = QuantizedRows::new(x, self.kind.span());
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
        let simd = simd_available();
        let rb = self.row_bytes();
        // Left unset here: the tasks below write every element (each task all rows of its
        // columns, and the tasks cover every column), so zeroing it first would only cost
        // a pass over `m × n` values (16 MB for the output layer of a batch of 16).
        let mut y: Vec<f32> = Vec::with_capacity(m * n);
        let y_ptr = SendPtr(y.as_mut_ptr());
        #[cfg(target_arch = "x86_64")]
        let dt = if simd && m > 1 {
            act.scales_by_block(m, nb)
        } else {
            Vec::new()
        };
        // candle's own thread pool (so our kernel and candle's never compete for the cores),
        // or this thread alone while another process holds a core.
        super::parallel::for_each_chunk(n.div_ceil(COLS_PER_TASK), |tasks| {
            let y_ptr = &y_ptr;
            #[cfg(target_arch = "x86_64")]
            let mut buf = SCRATCH.take();
            let mut dst = [0f32; ROW_GROUP];
            for t in tasks {
                let c0 = t * COLS_PER_TASK;
                let c1 = n.min(c0 + COLS_PER_TASK);
                #[cfg(target_arch = "x86_64")]
                if simd {
                    let io = avx2::Io {
                        x: &act,
                        dt: &dt,
                        mp: m + 3,
                        nb,
                        y: y_ptr.0,
                        n,
                    };
                    let cols = avx2::Columns {
                        data: &data,
                        rb,
                        c0,
                        c1,
                        m,
                    };
                    // SAFETY: AVX2, FMA and F16C were detected at run time; `data` holds `n`
                    // rows of `rb` bytes (checked in `from_qtensor`), `y` is `m × n`, and
                    // every column belongs to exactly one task.
                    unsafe { avx2::columns(self.kind, &cols, &io, &mut buf) };
                    continue;
                }
                // Row groups outside, columns inside: a group's activations stay in cache
                // while the task's weight rows stream past them.
                for r0 in (0..m).step_by(ROW_GROUP) {
                    let r1 = m.min(r0 + ROW_GROUP);
                    let rows = act.rows(r0, r1, nb);
                    let dst = &mut dst[..r1 - r0];
                    for col in c0..c1 {
                        let w = &data[col * rb..(col + 1) * rb];
                        self.scalar_dot_rows(w, &rows, nb, dst);
                        for (i, v) in dst.iter().enumerate() {
                            // SAFETY: (row, col) lies inside `y`, and every column belongs to
                            // exactly one task, so no two writers touch the same element.
                            unsafe { *y_ptr.0.add((r0 + i) * n + col) = *v };
                        }
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SCRATCH.set(buf);
        });
        // SAFETY: every element of the `m × n` output has been written (see above).
        unsafe { y.set_len(m * n) };
        Ok(y)
    }

    /// One weight row against every activation row of `x`, in plain Rust.
    fn scalar_dot_rows(&self, w: &[u8], x: &Rows<'_>, nb: usize, dst: &mut [f32]) {
        dst.fill(0.0);
        let mut bias = vec![0f32; dst.len()];
        for sb in 0..nb {
            let u = self.unpack(w, sb);
            for (r, (d, b)) in dst.iter_mut().zip(bias.iter_mut()).enumerate() {
                let at = r * nb + sb;
                let xq = &x.q[at * QK..(at + 1) * QK];
                let (mut lo, mut hi) = (0i32, 0i32);
                for j in 0..16 {
                    lo += u.w[j] as i32 * xq[j] as i32;
                    hi += u.w[j + 16] as i32 * xq[j + 16] as i32;
                }
                *d += x.d[at] * (u.lo * lo as f32 + u.hi * hi as f32);
                *b += u.bias * x.s[at];
            }
        }
        for (d, b) in dst.iter_mut().zip(bias) {
            *d += b;
        }
    }
}

/// Activations quantised per 32-value block: `q ≈ x / d`, and `s = d · Σ q` per block.
struct QuantizedRows {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// A slice of [`QuantizedRows`] (some consecutive rows).
struct Rows<'a> {
    q: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
}

/// Activation blocks per parallel work item when quantising.
const BLOCKS_PER_ITEM: usize = 512;

impl QuantizedRows {
    /// Quantises `x` block by block, `span` consecutive blocks (within a row: rows are whole
    /// spans) sharing the scale of their largest value: on candle's thread pool for long
    /// inputs, with AVX2 where the CPU has it. Both paths give the same bits (ties round to
    /// even in both).
    fn new(x: &[f32], span: usize) -> Self {
        let blocks = x.len() / QK;
        let (mut q, mut d, mut s) = (vec![0i8; x.len()], vec![0f32; blocks], vec![0f32; blocks]);
        let ptrs = (
            SendPtr(q.as_mut_ptr()),
            SendPtr(d.as_mut_ptr()),
            SendPtr(s.as_mut_ptr()),
        );
        let simd = simd_available();
        // Work items hold whole spans (`BLOCKS_PER_ITEM` is a multiple of every span).
        debug_assert!(BLOCKS_PER_ITEM.is_multiple_of(span) && blocks.is_multiple_of(span));
        super::parallel::for_each_chunk(blocks.div_ceil(BLOCKS_PER_ITEM), |items| {
            let (qp, dp, sp) = (&ptrs.0, &ptrs.1, &ptrs.2);
            for item in items {
                let (b0, b1) = (
                    item * BLOCKS_PER_ITEM,
                    blocks.min((item + 1) * BLOCKS_PER_ITEM),
                );
                for g in (b0..b1).step_by(span) {
                    let xs = &x[g * QK..(g + span) * QK];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX2, FMA and F16C were detected at run time.
                    let amax = if simd {
                        unsafe { avx2::amax(xs) }
                    } else {
                        amax(xs)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    let amax = {
                        let _ = simd;
                        amax(xs)
                    };
                    for b in g..g + span {
                        let xs = &x[b * QK..(b + 1) * QK];
                        // SAFETY: work items cover disjoint blocks, and the vectors outlive
                        // the call.
                        let qs = unsafe { std::slice::from_raw_parts_mut(qp.0.add(b * QK), QK) };
                        #[cfg(target_arch = "x86_64")]
                        let (scale, sum) = if simd {
                            // SAFETY: AVX2, FMA and F16C were detected at run time.
                            unsafe { avx2::quantize_block(xs, amax, qs) }
                        } else {
                            quantize_block(xs, amax, qs)
                        };
                        #[cfg(not(target_arch = "x86_64"))]
                        let (scale, sum) = quantize_block(xs, amax, qs);
                        // SAFETY: as above.
                        unsafe {
                            *dp.0.add(b) = scale;
                            *sp.0.add(b) = scale * sum as f32;
                        }
                    }
                }
            }
        });
        Self { q, d, s }
    }

    /// The block scales by block, then row (`nb` groups of `m + 3` values, zero-padded): the
    /// scales of four consecutive rows in one load.
    #[cfg(target_arch = "x86_64")]
    fn scales_by_block(&self, m: usize, nb: usize) -> Vec<f32> {
        let mp = m + 3;
        let mut t = vec![0f32; nb * mp];
        for r in 0..m {
            for sb in 0..nb {
                t[sb * mp + r] = self.d[r * nb + sb];
            }
        }
        t
    }

    fn rows(&self, r0: usize, r1: usize, nb: usize) -> Rows<'_> {
        Rows {
            q: &self.q[r0 * nb * QK..r1 * nb * QK],
            d: &self.d[r0 * nb..r1 * nb],
            s: &self.s[r0 * nb..r1 * nb],
        }
    }
}

/// The largest magnitude in `xs`, NaN skipped (as `f32::max` does).
fn amax(xs: &[f32]) -> f32 {
    xs.iter().fold(0f32, |a, v| a.max(v.abs()))
}

/// One block of 32 activations as 8-bit values `q ≈ x / scale`, `scale = amax / 127`
/// (`amax`: the largest magnitude in the block, or in the span of blocks that shares its
/// scale; ties round to even); returns the scale and `Σ q`.
fn quantize_block(xs: &[f32], amax: f32, q: &mut [i8]) -> (f32, i32) {
    let scale = amax / 127.0;
    // A scale so small that its inverse overflows quantises the block to zeros.
    let inv = if scale > 0.0 && (1.0 / scale).is_finite() {
        1.0 / scale
    } else {
        0.0
    };
    let mut sum = 0i32;
    for (o, v) in q.iter_mut().zip(xs) {
        let qi = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        *o = qi;
        sum += qi as i32;
    }
    (scale, sum)
}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2 kernel. A register tile holds up to eight output elements (row, column
    //! pairs), one per lane of a single accumulator. For each block the tile computes every
    //! pair's integer dot product `P` (exact, in 32-bit lanes), reduces the eight pairs' lanes
    //! into one vector, converts it (exactly: `|P| < 2²⁴`) and multiplies it by the scale
    //! products: `t = P · (scale · d)`, `scale` the weight block's scale and `d` the
    //! activation block's (for the K-quants, one `t` per super-block of eight blocks, from
    //! their `P` summed in integers). Eight blocks' `t` are summed in a fixed tree,
    //! `((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))` (zeros standing in past the last
    //! block), and the groups one after the other; the bias term is added at the end. Every
    //! path below (decoding, tiles of any shape, weights read in place or unpacked first)
    //! does exactly these operations per element, so the result never depends on the batch.
    use super::{Kind, QuantizedRows, QK};
    use std::arch::x86_64::*;

    /// The kinds as numbers, for const generics.
    const Q4_1: u8 = 0;
    const Q5_0: u8 = 1;
    const Q8_0: u8 = 2;
    const Q4K: u8 = 3;
    const Q6K: u8 = 4;

    /// Weights with a sign (maddubs needs an unsigned operand: |w|, the sign moved onto x).
    /// Q5_0 is read unsigned (0..31, its offset of 16 moved into the bias).
    const fn signed(k: u8) -> bool {
        matches!(k, Q8_0 | Q6K)
    }
    /// K-quants: super-blocks of eight sub-blocks with one float scale, each sub-block's own
    /// scale an integer. A tile's eight sub-blocks (its group) are one super-block, and their
    /// activations share one scale ([`Kind::span`]), so their integer products are summed
    /// before one conversion and one multiplication.
    const fn superblocks(k: u8) -> bool {
        matches!(k, Q4K | Q6K)
    }
    /// Weights with an offset (a per-block minimum, or Q5_0's 16).
    const fn biased(k: u8) -> bool {
        matches!(k, Q4_1 | Q5_0 | Q4K)
    }

    /// Output elements per tile: the lanes of one accumulator.
    const LANES: usize = 8;
    /// Blocks summed together before they join an element's running sum.
    const GROUP: usize = 8;

    /// One unpacked 32-value weight sub-block, as the multi-row tiles read it.
    #[repr(C, align(32))]
    #[derive(Clone, Copy)]
    pub(super) struct Packed {
        q: [i8; QK],
        scale: f32,
        halves: [i16; 2],
    }

    impl Packed {
        /// An all-zero block, to size a buffer before unpacking into it.
        pub(super) const ZERO: Packed = Packed {
            q: [0; QK],
            scale: 0.0,
            halves: [0; 2],
        };
    }

    /// A weight sub-block: `value_j = scale · halves[j / 16] · q_j + bias`.
    struct Sub {
        /// The 32 weights as bytes (signed, or unsigned for the kinds with a bias).
        q: __m256i,
        /// The block's scale.
        scale: f32,
        /// Integer scales of the two 16-value halves (Q6_K's sub-block scales; 1 and 1
        /// otherwise), applied exactly in the integer products.
        halves: [i16; 2],
        /// The offset of every value.
        bias: f32,
    }

    /// Horizontal sum of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The little-endian f16 at `p`, as f32 (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16(p: *const u8) -> f32 {
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// 16 bytes of nibbles as 32 bytes: the low nibbles first, then the high ones.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles_16(p: *const u8) -> __m256i {
        let mask = _mm_set1_epi8(0x0F);
        let qs = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(qs, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// Bit `j` of `bits` as byte `j` (0xFF when set).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bytes_from_bits(bits: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
        let m = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(bytes, m), m)
    }

    /// The 6-bit scale and min of sub-block `j` of a Q4_K super-block (`s`: its 12 scale
    /// bytes).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scale_min_k4(j: usize, s: *const u8) -> (u8, u8) {
        if j < 4 {
            (*s.add(j) & 63, *s.add(j + 4) & 63)
        } else {
            (
                (*s.add(j + 4) & 0x0F) | ((*s.add(j - 4) >> 6) << 4),
                (*s.add(j + 4) >> 4) | ((*s.add(j) >> 6) << 4),
            )
        }
    }

    /// Sub-block `sb` of the weight row at `w`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack<const K: u8>(w: *const u8, sb: usize) -> Sub {
        let unit = [1, 1];
        match K {
            Q4_1 => {
                let b = w.add(sb * 20);
                Sub {
                    q: nibbles_16(b.add(4)),
                    scale: f16(b),
                    halves: unit,
                    bias: f16(b.add(2)),
                }
            }
            Q5_0 => {
                let b = w.add(sb * 22);
                let d = f16(b);
                let qh = (b.add(2) as *const u32).read_unaligned();
                // The fifth bit adds 16: values 0..31, and the offset of -16 is the bias.
                let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
                Sub {
                    q: _mm256_or_si256(nibbles_16(b.add(6)), high),
                    scale: d,
                    halves: unit,
                    bias: -16.0 * d,
                }
            }
            Q8_0 => {
                let b = w.add(sb * 34);
                Sub {
                    q: _mm256_loadu_si256(b.add(2) as *const __m256i),
                    scale: f16(b),
                    halves: unit,
                    bias: 0.0,
                }
            }
            Q4K => {
                let s = w.add((sb / 8) * 144);
                let j = sb % 8;
                let (d, dmin) = (f16(s), f16(s.add(2)));
                let (sc, m) = scale_min_k4(j, s.add(4));
                let q = _mm256_loadu_si256(s.add(16 + (j / 2) * 32) as *const __m256i);
                let q = if j.is_multiple_of(2) {
                    q
                } else {
                    _mm256_srli_epi16(q, 4)
                };
                // The 6-bit sub-block scale is applied exactly, in the integer products; the
                // super-block's `d` is the scale of all eight.
                Sub {
                    q: _mm256_and_si256(q, _mm256_set1_epi8(0x0F)),
                    scale: d,
                    halves: [sc as i16, sc as i16],
                    bias: -dmin * m as f32,
                }
            }
            _ => {
                let s = w.add((sb / 8) * 210);
                let (c, g) = ((sb % 8) / 4, sb % 4);
                let ql = s.add(64 * c + if g % 2 == 1 { 32 } else { 0 });
                let low = _mm256_loadu_si256(ql as *const __m256i);
                let low = if g >= 2 {
                    _mm256_srli_epi16(low, 4)
                } else {
                    low
                };
                let low = _mm256_and_si256(low, _mm256_set1_epi8(0x0F));
                let qh = _mm256_loadu_si256(s.add(128 + 32 * c) as *const __m256i);
                let high = _mm256_and_si256(
                    _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32)),
                    _mm256_set1_epi8(3),
                );
                let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                let sc = s.add(192 + 8 * c + 2 * g) as *const i8;
                Sub {
                    q: _mm256_sub_epi8(q, _mm256_set1_epi8(32)),
                    scale: f16(s.add(208)),
                    halves: [*sc as i16, *sc.add(1) as i16],
                    bias: 0.0,
                }
            }
        }
    }

    /// Sub-block `sb` of column `w`: read in place (`PACKED` false: `w` is the GGUF row) or
    /// from unpacked [`Packed`] blocks (whose bias is not kept: the tiles take the biases
    /// from [`biases`]).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fetch<const K: u8, const PACKED: bool>(w: *const u8, sb: usize) -> Sub {
        if PACKED {
            let p = (w as *const Packed).add(sb);
            Sub {
                q: _mm256_load_si256((*p).q.as_ptr() as *const __m256i),
                scale: (*p).scale,
                halves: (*p).halves,
                bias: 0.0,
            }
        } else {
            unpack::<K>(w, sb)
        }
    }

    /// A weight sub-block ready to multiply activation blocks ([`products`]).
    #[derive(Clone, Copy)]
    struct Operands {
        /// The bytes themselves (for their signs).
        wq: __m256i,
        /// The bytes made unsigned.
        aw: __m256i,
        /// The halves' integer scales, as `madd`'s 16-bit multipliers.
        mv: __m256i,
    }

    /// The operands of sub-block `u`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn operands<const K: u8>(u: &Sub) -> Operands {
        Operands {
            wq: u.q,
            aw: if signed(K) { _mm256_abs_epi8(u.q) } else { u.q },
            mv: if K == Q6K {
                _mm256_set_m128i(_mm_set1_epi16(u.halves[1]), _mm_set1_epi16(u.halves[0]))
            } else if K == Q4K {
                _mm256_set1_epi16(u.halves[0])
            } else {
                _mm256_set1_epi16(1)
            },
        }
    }

    /// The integer products of one weight sub-block with one activation block, as eight
    /// 32-bit lanes of four products each, times the halves' integer scales.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn products<const K: u8>(o: &Operands, x: __m256i) -> __m256i {
        let x = if signed(K) {
            _mm256_sign_epi8(x, o.wq)
        } else {
            x
        };
        _mm256_madd_epi16(_mm256_maddubs_epi16(o.aw, x), o.mv)
    }

    /// Sums of the lanes of eight vectors: lane `j` of the result is the sum of `v[j]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn reduce8(v: [__m256i; LANES]) -> __m256i {
        let h0 = _mm256_hadd_epi32(v[0], v[1]);
        let h1 = _mm256_hadd_epi32(v[2], v[3]);
        let h2 = _mm256_hadd_epi32(v[4], v[5]);
        let h3 = _mm256_hadd_epi32(v[6], v[7]);
        let g0 = _mm256_hadd_epi32(h0, h1);
        let g1 = _mm256_hadd_epi32(h2, h3);
        _mm256_add_epi32(
            _mm256_permute2x128_si256(g0, g1, 0x20),
            _mm256_permute2x128_si256(g0, g1, 0x31),
        )
    }

    /// [`super::amax`] with AVX2 (`xs`: a multiple of 8 values): the same maximum, NaN
    /// skipped.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available. (The length is checked.)
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn amax(xs: &[f32]) -> f32 {
        assert!(xs.len().is_multiple_of(8), "amax: whole vectors");
        let sign = _mm256_set1_ps(-0.0);
        // `max_ps` returns its second operand when either is NaN: keeping the running maximum
        // second skips NaN, as `f32::max` does.
        let m = xs.chunks_exact(8).fold(_mm256_setzero_ps(), |m, c| {
            _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr())), m)
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)))
    }

    /// [`super::quantize_block`] with AVX2: the same operations on 8 lanes, so the same bits
    /// (NaN quantised to 0, as there).
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available. (Both slices must hold 32 values; that is checked.)
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_block(xs: &[f32], amax: f32, q: &mut [i8]) -> (f32, i32) {
        assert!(xs.len() == QK && q.len() == QK, "quantize_block: 32 values");
        let p = xs.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let scale = amax / 127.0;
        let inv = _mm256_set1_ps(if scale > 0.0 && (1.0 / scale).is_finite() {
            1.0 / scale
        } else {
            0.0
        });
        let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
        let i = v.map(|x| {
            let r = _mm256_round_ps(
                _mm256_mul_ps(x, inv),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            );
            // NaN lanes become 0 (the scalar `NaN as i8`), before the clamp would keep them.
            let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
            _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01));
        // Pack 32 i32 to 32 i8; the packs work within 128-bit lanes, the permute restores the
        // order.
        let w = _mm256_packs_epi32(i[0], i[1]);
        let z = _mm256_packs_epi32(i[2], i[3]);
        let b = _mm256_packs_epi16(w, z);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, b);
        (scale, _mm_cvtsi128_si32(sum))
    }

    /// Where the kernel reads activations and writes results.
    pub(super) struct Io<'a> {
        /// The quantised activations (rows of `nb` blocks).
        pub(super) x: &'a QuantizedRows,
        /// Their scales by block ([`QuantizedRows::scales_by_block`]; empty for one row).
        pub(super) dt: &'a [f32],
        /// Values per block in `dt`.
        pub(super) mp: usize,
        /// Blocks of 32 values per row.
        pub(super) nb: usize,
        /// The output, rows of `n`.
        pub(super) y: *mut f32,
        /// Output columns (weight rows).
        pub(super) n: usize,
    }

    /// `Σ b[i] · s[i]` for `i < nb`, in eight lanes (`i mod 8`) that take the blocks in order,
    /// then a horizontal sum: a weight column's biases against an activation row's block sums.
    /// Every path computes the bias term this way, so it never depends on the batch.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bias_dot(b: *const f32, s: *const f32, nb: usize) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= nb {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(b.add(i)), _mm256_loadu_ps(s.add(i)), acc);
            i += 8;
        }
        if i < nb {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((nb - i) as i32), lanes);
            let (x, y) = (
                _mm256_maskload_ps(b.add(i), mask),
                _mm256_maskload_ps(s.add(i), mask),
            );
            acc = _mm256_fmadd_ps(x, y, acc);
        }
        hsum(acc)
    }

    /// The columns' scales in the lanes of a tile of `R` rows: lane `j` holds `s[j / R]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn lanes<const R: usize, const C: usize>(s: [f32; C]) -> __m256 {
        let at = |j: usize| s[(j / R).min(C - 1)];
        match (R, C) {
            (_, 1) => _mm256_set1_ps(s[0]),
            (4, 2) => _mm256_set_m128(_mm_set1_ps(s[C - 1]), _mm_set1_ps(s[0])),
            _ => _mm256_setr_ps(at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)),
        }
    }

    /// Rows `r0..r0 + R` against the `C` weight columns at `w` (the first is column `col`);
    /// lane `j` of the accumulator is row `r0 + j % R`, column `col + j / R`. Writes the
    /// `R × C` results. `bias` points at each column's `nb` block biases (used only for the
    /// kinds with a bias).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const K: u8, const PACKED: bool, const R: usize, const C: usize>(
        w: [*const u8; C],
        bias: [*const f32; C],
        io: &Io<'_>,
        r0: usize,
        col: usize,
    ) {
        const { assert!(R >= 1 && R <= 4 && C >= 1 && R * C <= LANES) };
        let nb = io.nb;
        let full = nb - nb % GROUP;
        let mut acc = _mm256_setzero_ps();
        for g in (0..full).step_by(GROUP) {
            acc = _mm256_add_ps(acc, tile_group::<K, PACKED, R, C, true>(&w, io, r0, g));
        }
        if full < nb {
            acc = _mm256_add_ps(acc, tile_group::<K, PACKED, R, C, false>(&w, io, r0, full));
        }
        let mut out = [0f32; LANES];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        let xs = io.x.s.as_ptr();
        for c in 0..C {
            for r in 0..R {
                let b = if biased(K) {
                    bias_dot(bias[c], xs.add((r0 + r) * nb), nb)
                } else {
                    0.0
                };
                *io.y.add((r0 + r) * io.n + col + c) = out[c * R + r] + b;
            }
        }
    }

    /// Blocks `g..g + 8` of a tile (`FULL`; else `g..nb`, zeros standing in for the missing
    /// blocks): each block's products times its scale products, `P · (scale · d)`, summed
    /// in a fixed tree, `((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_group<
        const K: u8,
        const PACKED: bool,
        const R: usize,
        const C: usize,
        const FULL: bool,
    >(
        w: &[*const u8; C],
        io: &Io<'_>,
        r0: usize,
        g: usize,
    ) -> __m256 {
        let (xq, xd, nb) = (io.x.q.as_ptr(), io.x.d.as_ptr(), io.nb);
        // The activation scales of the tile's rows for block `sb`, in its lanes.
        let scales = |sb: usize| -> __m256 {
            match R {
                1 => _mm256_set1_ps(*xd.add(r0 * nb + sb)),
                4 => {
                    let d4 = _mm_loadu_ps(io.dt.as_ptr().add(sb * io.mp + r0));
                    _mm256_set_m128(d4, d4)
                }
                _ => {
                    let rows: [i32; LANES] = std::array::from_fn(|j| (j % R) as i32);
                    let rows = _mm256_loadu_si256(rows.as_ptr() as *const __m256i);
                    let d4 = _mm_loadu_ps(io.dt.as_ptr().add(sb * io.mp + r0));
                    _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d4), rows)
                }
            }
        };
        if superblocks(K) {
            // One super-block (groups of K-quants are always full): the integer products of
            // its eight sub-blocks summed lane by lane, then reduced, converted and scaled
            // once.
            let mut acc = [_mm256_setzero_si256(); LANES];
            let mut scale = [0f32; C];
            for i in 0..GROUP {
                let sb = g + i;
                let subs: [Sub; C] = std::array::from_fn(|c| fetch::<K, PACKED>(w[c], sb));
                if i == 0 {
                    scale = subs.each_ref().map(|u| u.scale);
                }
                let ops = subs.each_ref().map(|u| operands::<K>(u));
                for r in 0..R {
                    let x = _mm256_loadu_si256(xq.add(((r0 + r) * nb + sb) * QK) as *const __m256i);
                    for (c, o) in ops.iter().enumerate() {
                        let j = c * R + r;
                        acc[j] = _mm256_add_epi32(acc[j], products::<K>(o, x));
                    }
                }
            }
            let p = _mm256_cvtepi32_ps(reduce8(acc));
            return _mm256_mul_ps(p, _mm256_mul_ps(lanes::<R, C>(scale), scales(g)));
        }
        let block = |sb: usize| -> __m256 {
            if !FULL && sb >= nb {
                return _mm256_setzero_ps();
            }
            let subs: [Sub; C] = std::array::from_fn(|c| fetch::<K, PACKED>(w[c], sb));
            let ops = subs.each_ref().map(|u| operands::<K>(u));
            let scale = subs.each_ref().map(|u| u.scale);
            let mut v = [_mm256_setzero_si256(); LANES];
            for r in 0..R {
                let x = _mm256_loadu_si256(xq.add(((r0 + r) * nb + sb) * QK) as *const __m256i);
                for c in 0..C {
                    v[c * R + r] = products::<K>(&ops[c], x);
                }
            }
            let p = _mm256_cvtepi32_ps(reduce8(v));
            _mm256_mul_ps(p, _mm256_mul_ps(lanes::<R, C>(scale), scales(sb)))
        };
        let a = _mm256_add_ps(block(g), block(g + 1));
        let b = _mm256_add_ps(block(g + 2), block(g + 3));
        let c = _mm256_add_ps(block(g + 4), block(g + 5));
        let d = _mm256_add_ps(block(g + 6), block(g + 7));
        _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d))
    }

    /// One weight column (the GGUF row at `w`) against one activation row (decoding),
    /// reading the weights once, in place: per element the same operations as a tile's lane,
    /// and the bias term as [`bias_dot`] computes it.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn column<const K: u8>(w: *const u8, io: &Io<'_>, col: usize) {
        let nb = io.nb;
        let full = nb - nb % GROUP;
        let mut acc = _mm_setzero_ps();
        let mut bias = _mm256_setzero_ps();
        for g in (0..full).step_by(GROUP) {
            acc = _mm_add_ss(acc, column_group::<K, true>(w, io, g, &mut bias));
        }
        if full < nb {
            acc = _mm_add_ss(acc, column_group::<K, false>(w, io, full, &mut bias));
        }
        let b = if biased(K) { hsum(bias) } else { 0.0 };
        *io.y.add(col) = _mm_cvtss_f32(acc) + b;
    }

    /// Blocks `g..g + 8` of a column (`FULL`; else `g..nb`), in the lanes of one vector:
    /// their integer products reduced together, times the scale products, then summed in
    /// [`tile_group`]'s tree. Their biases times the activations' block sums join `bias`,
    /// lane `sb mod 8`, as in [`bias_dot`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn column_group<const K: u8, const FULL: bool>(
        w: *const u8,
        io: &Io<'_>,
        g: usize,
        bias: &mut __m256,
    ) -> __m128 {
        let (xq, xd, xs, nb) = (io.x.q.as_ptr(), io.x.d.as_ptr(), io.x.s.as_ptr(), io.nb);
        if superblocks(K) {
            // One super-block, as [`tile_group`] computes it: the integer products summed,
            // converted once and scaled once.
            let mut acc = _mm256_setzero_si256();
            let mut b = [0f32; LANES];
            let mut scale = 0f32;
            for (i, b) in b.iter_mut().enumerate() {
                let sb = g + i;
                let u = unpack::<K>(w, sb);
                if i == 0 {
                    scale = u.scale;
                }
                let x = _mm256_loadu_si256(xq.add(sb * QK) as *const __m256i);
                acc = _mm256_add_epi32(acc, products::<K>(&operands::<K>(&u), x));
                *b = u.bias;
            }
            if biased(K) {
                let b = _mm256_loadu_ps(b.as_ptr());
                *bias = _mm256_fmadd_ps(b, _mm256_loadu_ps(xs.add(g)), *bias);
            }
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256(acc, 1),
            );
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            let p = _mm_cvtsi128_si32(s) as f32;
            return _mm_set_ss(p * (scale * *xd.add(g)));
        }
        let count = if FULL { GROUP } else { nb - g };
        let mut v = [_mm256_setzero_si256(); LANES];
        let mut s = [0f32; LANES];
        let mut b = [0f32; LANES];
        let mut a = [0f32; LANES];
        for i in 0..GROUP {
            if !FULL && i >= count {
                break;
            }
            let sb = g + i;
            let u = unpack::<K>(w, sb);
            let x = _mm256_loadu_si256(xq.add(sb * QK) as *const __m256i);
            v[i] = products::<K>(&operands::<K>(&u), x);
            s[i] = u.scale * *xd.add(sb);
            if biased(K) {
                b[i] = u.bias;
                if !FULL {
                    a[i] = *xs.add(sb);
                }
            }
        }
        if biased(K) {
            let a = if FULL {
                _mm256_loadu_ps(xs.add(g))
            } else {
                _mm256_setr_ps(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7])
            };
            let b = _mm256_setr_ps(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
            *bias = _mm256_fmadd_ps(b, a, *bias);
        }
        let p = _mm256_cvtepi32_ps(reduce8(v));
        let t = _mm256_mul_ps(
            p,
            _mm256_setr_ps(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        );
        // The tree: lanes (0 + 1) and (2 + 3), then their sum; likewise lanes 4..8.
        let u = _mm256_add_ps(t, _mm256_permute_ps(t, 0b10_11_00_01));
        let q = _mm256_add_ps(u, _mm256_permute_ps(u, 0b01_00_11_10));
        _mm_add_ss(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1))
    }

    /// Unpacks the `nb` sub-blocks of the weight row at `w` into `dst`, and their biases
    /// into `bias` (for the kinds with one).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack<const K: u8>(w: *const u8, nb: usize, dst: *mut Packed, bias: *mut f32) {
        for sb in 0..nb {
            let u = unpack::<K>(w, sb);
            let p = dst.add(sb);
            _mm256_store_si256((*p).q.as_mut_ptr() as *mut __m256i, u.q);
            (*p).scale = u.scale;
            (*p).halves = u.halves;
            if biased(K) {
                *bias.add(sb) = u.bias;
            }
        }
    }

    /// The `nb` block biases of the weight row at `w`, into `dst`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn biases<const K: u8>(w: *const u8, nb: usize, dst: *mut f32) {
        for sb in 0..nb {
            // Only the bias is used: the compiler drops the rest of the unpacking.
            *dst.add(sb) = unpack::<K>(w, sb).bias;
        }
    }

    /// The weight columns one task multiplies: `c0..c1` of `data` (rows of `rb` bytes),
    /// against `m` activation rows.
    pub(super) struct Columns<'a> {
        /// The GGUF bytes of the whole matrix.
        pub(super) data: &'a [u8],
        /// Bytes per weight row.
        pub(super) rb: usize,
        /// The first column.
        pub(super) c0: usize,
        /// One past the last column.
        pub(super) c1: usize,
        /// Activation rows.
        pub(super) m: usize,
    }

    /// A task's working memory, kept from one task to the next.
    #[derive(Default)]
    pub(super) struct Scratch {
        /// Unpacked weight blocks, column after column.
        packed: Vec<Packed>,
        /// Block biases, column after column.
        bias: Vec<f32>,
    }

    /// The task's columns against every activation row.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; `cols.data` holds at least `c1` rows of `rb` bytes
    /// of `kind`, each `io.nb` sub-blocks long; `io.y` has room for `m` rows times `io.n`,
    /// `io.dt` holds the scales by block when `m > 1`, and no one else writes columns
    /// `c0..c1`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns(kind: Kind, cols: &Columns<'_>, io: &Io<'_>, buf: &mut Scratch) {
        match kind {
            Kind::Q4_1 => columns_t::<Q4_1>(cols, io, buf),
            Kind::Q5_0 => columns_t::<Q5_0>(cols, io, buf),
            Kind::Q8_0 => columns_t::<Q8_0>(cols, io, buf),
            Kind::Q4K => columns_t::<Q4K>(cols, io, buf),
            Kind::Q6K => columns_t::<Q6K>(cols, io, buf),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns_t<const K: u8>(cols: &Columns<'_>, io: &Io<'_>, buf: &mut Scratch) {
        let Columns {
            data,
            rb,
            c0,
            c1,
            m,
        } = *cols;
        let nb = io.nb;
        let weights = Weights {
            base: data.as_ptr(),
            stride: rb,
            first: 0,
        };
        if m == 1 {
            // Decoding: the weights stream past once, read in place, one column after the
            // other (measured: reading two, four or eight columns side by side, as several
            // streams, decodes 20-50 % slower).
            for c in c0..c1 {
                column::<K>(weights.of(c), io, c);
            }
            return;
        }
        // The buffers only grow: every value a tile reads is written first, for this task.
        if biased(K) && buf.bias.len() < (c1 - c0) * nb {
            buf.bias.resize((c1 - c0) * nb, 0.0);
        }
        let bias = Biases {
            base: buf.bias.as_mut_ptr(),
            c0,
            nb,
        };
        // Several rows: unpack the columns once first when more than one tile of rows will
        // read them (Q8_0 needs no unpacking: its bytes are read in place). Either way each
        // column's biases are read once, for every tile.
        if K == Q8_0 || m <= 4 {
            if biased(K) {
                for c in c0..c1 {
                    biases::<K>(weights.of(c), nb, bias.of(c));
                }
            }
            return run_tiles::<K, false>(&weights, &bias, io, m, c1);
        }
        if buf.packed.len() < (c1 - c0) * nb {
            buf.packed.resize((c1 - c0) * nb, Packed::ZERO);
        }
        for c in c0..c1 {
            let dst = buf.packed.as_mut_ptr().add((c - c0) * nb);
            pack::<K>(weights.of(c), nb, dst, bias.of(c));
        }
        let packed = Weights {
            base: buf.packed.as_ptr() as *const u8,
            stride: nb * std::mem::size_of::<Packed>(),
            first: c0,
        };
        run_tiles::<K, true>(&packed, &bias, io, m, c1);
    }

    /// Where a task's weight columns lie: column `c` at `base + (c - first) · stride` (a
    /// GGUF row, or its [`Packed`] blocks).
    struct Weights {
        base: *const u8,
        stride: usize,
        first: usize,
    }

    impl Weights {
        fn of(&self, c: usize) -> *const u8 {
            self.base.wrapping_add((c - self.first) * self.stride)
        }
    }

    /// Where a task's block biases lie: column `c` at `base + (c - c0) · nb`.
    struct Biases {
        base: *mut f32,
        c0: usize,
        nb: usize,
    }

    impl Biases {
        /// Column `c`'s biases (a pointer that is used only for the kinds with a bias).
        fn of(&self, c: usize) -> *mut f32 {
            self.base.wrapping_add((c - self.c0) * self.nb)
        }
    }

    /// Every row of `io` (`m` of them) against columns `bias.c0..c1`, in tiles of four rows
    /// (two columns), then the remaining rows: three (two columns), two (four) or one
    /// (eight).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_tiles<const K: u8, const PACKED: bool>(
        w: &Weights,
        bias: &Biases,
        io: &Io<'_>,
        m: usize,
        c1: usize,
    ) {
        let mut r = 0;
        while r + 4 <= m {
            run_rows::<K, PACKED, 4, 2>(w, bias, io, r, c1);
            r += 4;
        }
        match m - r {
            3 => run_rows::<K, PACKED, 3, 2>(w, bias, io, r, c1),
            2 => run_rows::<K, PACKED, 2, 4>(w, bias, io, r, c1),
            1 => run_rows::<K, PACKED, 1, LANES>(w, bias, io, r, c1),
            _ => {}
        }
    }

    /// Rows `r..r + R` against columns `bias.c0..c1`, `C` columns at a time, then one at a
    /// time.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_rows<const K: u8, const PACKED: bool, const R: usize, const C: usize>(
        w: &Weights,
        bias: &Biases,
        io: &Io<'_>,
        r: usize,
        c1: usize,
    ) {
        let mut c = bias.c0;
        while c + C <= c1 {
            let ws: [*const u8; C] = std::array::from_fn(|i| w.of(c + i));
            let bs: [*const f32; C] = std::array::from_fn(|i| bias.of(c + i) as *const f32);
            tile::<K, PACKED, R, C>(ws, bs, io, r, c);
            c += C;
        }
        for c in c..c1 {
            tile::<K, PACKED, R, 1>([w.of(c)], [bias.of(c) as *const f32], io, r, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn check(dtype: GgmlDType, n: usize, k: usize, m: usize) {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0 + ((i * 7) % 13) as f32 * 0.01)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, dtype).unwrap();
        let deq: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mat = QMatrix::from_qtensor(std::sync::Arc::new(q))
            .unwrap()
            .unwrap();
        let data = mat.tensor.data().unwrap().into_owned();
        // The unpacked sub-blocks reproduce candle's dequantisation exactly.
        let rb = mat.row_bytes();
        for col in [0, n / 2, n - 1] {
            for sb in 0..k / QK {
                let u = mat.unpack(&data[col * rb..(col + 1) * rb], sb);
                for j in 0..QK {
                    let s = if j < 16 { u.lo } else { u.hi };
                    let v = s * u.w[j] as f32 + u.bias;
                    let want = deq[col * k + sb * QK + j];
                    assert!(
                        (v - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "{dtype:?} {col} {sb} {j}: {v} vs {want}"
                    );
                }
            }
        }
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let y = mat.matmul(&x, m).unwrap();
        // Activations are quantised to 8 bits per block, as llama.cpp does: the kernel must
        // equal the f32 product of the dequantised weights and the dequantised activations,
        // and stay close to the unquantised product.
        let act = QuantizedRows::new(&x, mat.kind.span());
        let xq: Vec<f32> = (0..m * k)
            .map(|i| act.q[i] as f32 * act.d[i / QK])
            .collect();
        for r in 0..m {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| xq[r * k + i] * deq[c * k + i]).sum();
                let exact: f32 = (0..k).map(|i| x[r * k + i] * deq[c * k + i]).sum();
                let got = y[r * n + c];
                assert!(
                    (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{dtype:?} {r},{c}: {got} vs {want}"
                );
                assert!(
                    (got - exact).abs() < 0.1 * (1.0 + exact.abs()),
                    "{dtype:?} {r},{c}: {got} vs {exact}"
                );
            }
            // The same row alone gives bit-identical results.
            let alone = mat.matmul(&x[r * k..(r + 1) * k], 1).unwrap();
            assert_eq!(alone[..], y[r * n..(r + 1) * n], "{dtype:?}");
        }
        // The scalar path agrees with the SIMD path to rounding.
        let nb = k / QK;
        let mut s = vec![0f32; m];
        mat.scalar_dot_rows(&data[..rb], &act.rows(0, m, nb), nb, &mut s);
        for r in 0..m {
            assert!(
                (s[r] - y[r * n]).abs() < 1e-3 * (1.0 + s[r].abs()),
                "{dtype:?}: {} vs {}",
                s[r],
                y[r * n]
            );
        }
    }

    #[test]
    fn every_kind_matches_dequantized_weights_and_is_independent_of_the_batch() {
        // Every tile shape (4 × 2, 3 × 2, 2 × 4 and 1 × 8, and one column at a time for the
        // last columns), weights unpacked (more than 4 rows) and read in place (up to 4, and
        // Q8_0 always), blocks in full groups of eight and in a last partial group (K-quants
        // come in super-blocks of eight blocks, so their groups are always full). Each row is
        // also decoded alone, in `check`.
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            check(dtype, 70, 128, 5);
            check(dtype, 45, 320, 6);
            check(dtype, 45, 320, 3);
            check(dtype, 19, 320, 2);
        }
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            check(dtype, 37, 512, 19);
            check(dtype, 37, 512, 5);
            check(dtype, 21, 768, 2);
            check(dtype, 21, 256, 4);
            check(dtype, 21, 256, 3);
        }
    }

    #[test]
    fn activations_quantise_to_the_same_bits_with_and_without_simd() {
        if !simd_available() {
            return;
        }
        let mut x: Vec<f32> = (0..QK * 64)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 37.0)
            .collect();
        // Exact ties (x / scale = n + 0.5) and an all-zero block.
        x[5] = 127.0;
        x[6] = 0.5;
        x[7] = -2.5;
        for v in &mut x[QK..2 * QK] {
            *v = 0.0;
        }
        // A block so small that 1 / scale overflows, and blocks with NaN and infinity.
        x[2 * QK] = 1e-38;
        x[3 * QK + 3] = f32::NAN;
        x[4 * QK] = f32::NAN;
        x[4 * QK + 9] = f32::NAN;
        x[5 * QK + 1] = f32::INFINITY;
        for (b, xs) in x.chunks_exact(QK).enumerate() {
            let (mut a, mut c) = ([0i8; QK], [0i8; QK]);
            // SAFETY: checked above.
            assert_eq!(amax(xs).to_bits(), unsafe { avx2::amax(xs) }.to_bits());
            let want = quantize_block(xs, amax(xs), &mut a);
            // SAFETY: checked above.
            let got = unsafe { avx2::quantize_block(xs, amax(xs), &mut c) };
            assert_eq!(
                (want.0.to_bits(), want.1),
                (got.0.to_bits(), got.1),
                "block {b}"
            );
            assert_eq!(a, c, "block {b}");
        }
        // One scale per block, or per span of eight blocks (K-quants): each block quantised
        // with the largest magnitude of its span.
        for span in [1, 8] {
            let rows = QuantizedRows::new(&x, span);
            for (b, xs) in x.chunks_exact(QK).enumerate() {
                let g = b - b % span;
                let m = amax(&x[g * QK..(g + span) * QK]);
                let mut a = [0i8; QK];
                let (scale, _) = quantize_block(xs, m, &mut a);
                assert_eq!(rows.q[b * QK..(b + 1) * QK], a, "span {span}, block {b}");
                assert_eq!(
                    rows.d[b].to_bits(),
                    scale.to_bits(),
                    "span {span}, block {b}"
                );
            }
        }
        // A span shares one scale: a block of small values next to a large one keeps fewer
        // levels than it would alone.
        let rows = QuantizedRows::new(&x[..8 * QK], 8);
        assert!(rows.d[..8].iter().all(|d| *d == rows.d[0]));
        assert_ne!(rows.d[1], QuantizedRows::new(&x[..8 * QK], 1).d[1]);
    }

    #[test]
    fn other_types_are_left_to_candle() {
        let wt = Tensor::zeros((32, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_0).unwrap();
        assert!(QMatrix::from_qtensor(std::sync::Arc::new(q))
            .unwrap()
            .is_none());
    }
}

//! Our own CPU matmul for the quantized weight types of the bundled models: Q4_1, Q5_0,
//! Q8_0, Q4_K and Q6_K.
//!
//! candle 0.11 has no x86 SIMD path for some of these (Q4_1, Q5_0), computes each activation
//! row on its own, and for others picks kernels whose rounding depends on the number of rows.
//! This kernel instead:
//! - quantises each 32-value block of activations to 8 bits (one f32 scale per block, and the
//!   block's scaled sum), as llama.cpp does;
//! - decodes one row (single-sequence decoding) by streaming each weight row once, read in
//!   place, one column at a time: a single sequential stream per thread is what keeps
//!   memory bandwidth up;
//! - for several rows, multiplies register tiles of 4 rows × 2 columns with AVX2 `maddubs`
//!   (with a scalar fallback); when more than one tile of rows will read a task's weight
//!   columns, they are first unpacked once into bytes (signed, or unsigned nibbles for Q4_1
//!   and Q4_K) with a scale per 16 values and a bias, except Q8_0, whose bytes are read in
//!   place;
//! - sums every output element in the same order whatever the number of rows, so a sequence's
//!   result never depends on the other rows of its batch or prompt chunk;
//! - runs on candle's own thread pool, columns split across threads, and on the calling
//!   thread alone while another process holds a core ([`super::parallel`]).
//!
//! A weight block of 32 values becomes `w_j` (signed bytes) with `value_j = scale_j · w_j +
//! bias`, where `scale_j` is `lo` for the first 16 values and `hi` for the last 16. The dot
//! product with an activation block `x_j ≈ d · q_j` is then
//! `d · (lo · Σ_{j<16} w_j q_j + hi · Σ_{j≥16} w_j q_j) + bias · d · Σ q_j`.

use super::parallel::SendPtr;
use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};

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
        let act = QuantizedRows::new(x);
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
        let simd = simd_available();
        let rb = self.row_bytes();
        let mut y = vec![0f32; m * n];
        let y_ptr = SendPtr(y.as_mut_ptr());
        // candle's own thread pool (so our kernel and candle's never compete for the cores),
        // or this thread alone while another process holds a core.
        super::parallel::for_each_chunk(n.div_ceil(COLS_PER_TASK), |tasks| {
            let y_ptr = &y_ptr;
            #[cfg(target_arch = "x86_64")]
            let mut buf = Vec::new();
            let mut dst = [0f32; ROW_GROUP];
            for t in tasks {
                let c0 = t * COLS_PER_TASK;
                let c1 = n.min(c0 + COLS_PER_TASK);
                #[cfg(target_arch = "x86_64")]
                if simd {
                    let io = avx2::Io {
                        x: &act,
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
        });
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
    /// Quantises `x` block by block: on candle's thread pool for long inputs, with AVX2 where
    /// the CPU has it. Both paths give the same bits (ties round to even in both).
    fn new(x: &[f32]) -> Self {
        let blocks = x.len() / QK;
        let (mut q, mut d, mut s) = (vec![0i8; x.len()], vec![0f32; blocks], vec![0f32; blocks]);
        let ptrs = (
            SendPtr(q.as_mut_ptr()),
            SendPtr(d.as_mut_ptr()),
            SendPtr(s.as_mut_ptr()),
        );
        let simd = simd_available();
        super::parallel::for_each_chunk(blocks.div_ceil(BLOCKS_PER_ITEM), |items| {
            let (qp, dp, sp) = (&ptrs.0, &ptrs.1, &ptrs.2);
            for item in items {
                let (b0, b1) = (
                    item * BLOCKS_PER_ITEM,
                    blocks.min((item + 1) * BLOCKS_PER_ITEM),
                );
                for b in b0..b1 {
                    let xs = &x[b * QK..(b + 1) * QK];
                    // SAFETY: work items cover disjoint blocks, and the vectors outlive the
                    // call.
                    let qs = unsafe { std::slice::from_raw_parts_mut(qp.0.add(b * QK), QK) };
                    #[cfg(target_arch = "x86_64")]
                    let (scale, sum) = if simd {
                        // SAFETY: AVX2, FMA and F16C were detected at run time.
                        unsafe { avx2::quantize_block(xs, qs) }
                    } else {
                        quantize_block(xs, qs)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    let (scale, sum) = {
                        let _ = simd;
                        quantize_block(xs, qs)
                    };
                    // SAFETY: as above.
                    unsafe {
                        *dp.0.add(b) = scale;
                        *sp.0.add(b) = scale * sum as f32;
                    }
                }
            }
        });
        Self { q, d, s }
    }

    fn rows(&self, r0: usize, r1: usize, nb: usize) -> Rows<'_> {
        Rows {
            q: &self.q[r0 * nb * QK..r1 * nb * QK],
            d: &self.d[r0 * nb..r1 * nb],
            s: &self.s[r0 * nb..r1 * nb],
        }
    }
}

/// One block of 32 activations as 8-bit values `q ≈ x / scale`, `scale = max |x| / 127`
/// (ties round to even); returns the scale and `Σ q`.
fn quantize_block(xs: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
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
    //! The AVX2 kernel. Each output element is one accumulator that takes the blocks in
    //! order, `acc = fma(scale, Σ w·q, acc)`, then a horizontal sum plus the bias; every path
    //! below (one row or many, weights read in place or unpacked first) does exactly these
    //! operations per element, so the result never depends on the batch.
    use super::{Kind, QuantizedRows, QK};
    use std::arch::x86_64::*;

    /// The kinds as numbers, for const generics.
    const Q4_1: u8 = 0;
    const Q5_0: u8 = 1;
    const Q8_0: u8 = 2;
    const Q4K: u8 = 3;
    const Q6K: u8 = 4;

    /// Weights with a sign (maddubs needs an unsigned operand: |w|, the sign moved onto x).
    const fn signed(k: u8) -> bool {
        matches!(k, Q5_0 | Q8_0 | Q6K)
    }
    /// Weights whose two half-blocks have their own scales.
    const fn split(k: u8) -> bool {
        k == Q6K
    }
    /// Weights with an offset (a per-block minimum).
    const fn biased(k: u8) -> bool {
        matches!(k, Q4_1 | Q4K)
    }

    /// Output rows and columns of the register tiles.
    const TILE_ROWS: usize = 4;
    const TILE_COLS: usize = 2;

    /// One unpacked 32-value weight sub-block, as the multi-row tiles read it.
    #[repr(C, align(32))]
    #[derive(Clone, Copy)]
    pub(super) struct Packed {
        q: [i8; QK],
        lo: f32,
        hi: f32,
        bias: f32,
    }

    impl Packed {
        /// An all-zero block, to size a buffer before unpacking into it.
        pub(super) const ZERO: Packed = Packed {
            q: [0; QK],
            lo: 0.0,
            hi: 0.0,
            bias: 0.0,
        };
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

    /// Sub-block `sb` of the weight row at `w` as 32 bytes (signed, or unsigned nibbles), with
    /// its two half scales and its bias.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack<const K: u8>(w: *const u8, sb: usize) -> (__m256i, f32, f32, f32) {
        match K {
            Q4_1 => {
                let b = w.add(sb * 20);
                let d = f16(b);
                (nibbles_16(b.add(4)), d, d, f16(b.add(2)))
            }
            Q5_0 => {
                let b = w.add(sb * 22);
                let d = f16(b);
                let qh = (b.add(2) as *const u32).read_unaligned();
                // A set fifth bit keeps the nibble (n + 16 - 16); a clear one makes it
                // n - 16, which as a signed byte is n | 0xF0.
                let high = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
                (_mm256_or_si256(nibbles_16(b.add(6)), high), d, d, 0.0)
            }
            Q8_0 => {
                let b = w.add(sb * 34);
                let d = f16(b);
                (_mm256_loadu_si256(b.add(2) as *const __m256i), d, d, 0.0)
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
                let q = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
                let ds = d * sc as f32;
                (q, ds, ds, -dmin * m as f32)
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
                let q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
                let d = f16(s.add(208));
                let sc = s.add(192 + 8 * c + 2 * g) as *const i8;
                (q, d * *sc as f32, d * *sc.add(1) as f32, 0.0)
            }
        }
    }

    /// Sub-block `sb` of column `w`: read in place (`PACKED` false: `w` is the GGUF row) or
    /// from unpacked [`Packed`] blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fetch<const K: u8, const PACKED: bool>(
        w: *const u8,
        sb: usize,
    ) -> (__m256i, f32, f32, f32) {
        if PACKED {
            let p = (w as *const Packed).add(sb);
            (
                _mm256_load_si256((*p).q.as_ptr() as *const __m256i),
                (*p).lo,
                (*p).hi,
                (*p).bias,
            )
        } else {
            unpack::<K>(w, sb)
        }
    }

    /// One weight sub-block against one activation block: `fma(ws · d, Σ w·q, acc)`, where
    /// `ws` holds the weight scales (`lo` in the low four lanes, `hi` in the high four) and
    /// `d` the activation block's scale, both broadcast. `ws · d` rounds as the scalar
    /// product `lo · d` does, so every path gets the same bits.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn step<const K: u8>(
        acc: __m256,
        wq: __m256i,
        aw: __m256i,
        ws: __m256,
        xq: *const i8,
        d: __m256,
    ) -> __m256 {
        let q = _mm256_loadu_si256(xq as *const __m256i);
        let q = if signed(K) {
            _mm256_sign_epi8(q, wq)
        } else {
            q
        };
        let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(
            _mm256_maddubs_epi16(aw, q),
            _mm256_set1_epi16(1),
        ));
        _mm256_fmadd_ps(_mm256_mul_ps(ws, d), p, acc)
    }

    /// [`super::quantize_block`] with AVX2: the same operations on 8 lanes, so the same bits
    /// (NaN skipped by the maximum and quantised to 0, as there).
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available. (Both slices must hold 32 values; that is checked.)
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_block(xs: &[f32], q: &mut [i8]) -> (f32, i32) {
        assert!(xs.len() == QK && q.len() == QK, "quantize_block: 32 values");
        let p = xs.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let a = v.map(|x| _mm256_andnot_ps(sign, x));
        // `max_ps` returns its second operand when either is NaN: keeping the running maximum
        // second skips NaN, as `f32::max` does.
        let m = a
            .iter()
            .fold(_mm256_setzero_ps(), |m, x| _mm256_max_ps(*x, m));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
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
        /// Blocks of 32 values per row.
        pub(super) nb: usize,
        /// The output, rows of `n`.
        pub(super) y: *mut f32,
        /// Output columns (weight rows).
        pub(super) n: usize,
    }

    /// Rows `r0..r0 + R` against the `C` weight columns at `w` (the first is column `col`),
    /// accumulated in registers; writes the `R × C` results.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const K: u8, const PACKED: bool, const R: usize, const C: usize>(
        w: [*const u8; C],
        io: &Io<'_>,
        r0: usize,
        col: usize,
    ) {
        let (xq, xd, xs) = (io.x.q.as_ptr(), io.x.d.as_ptr(), io.x.s.as_ptr());
        let nb = io.nb;
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut bias = [[0f32; C]; R];
        for sb in 0..nb {
            let mut wq = [_mm256_setzero_si256(); C];
            let mut aw = [_mm256_setzero_si256(); C];
            let mut ws = [_mm256_setzero_ps(); C];
            let mut b = [0f32; C];
            for c in 0..C {
                let (q, lo, hi, bb) = fetch::<K, PACKED>(w[c], sb);
                wq[c] = q;
                aw[c] = if signed(K) { _mm256_sign_epi8(q, q) } else { q };
                ws[c] = if split(K) {
                    _mm256_set_ps(hi, hi, hi, hi, lo, lo, lo, lo)
                } else {
                    _mm256_set1_ps(lo)
                };
                b[c] = bb;
            }
            for r in 0..R {
                let at = (r0 + r) * nb + sb;
                let (xp, d) = (xq.add(at * QK), _mm256_set1_ps(*xd.add(at)));
                for c in 0..C {
                    acc[r][c] = step::<K>(acc[r][c], wq[c], aw[c], ws[c], xp, d);
                    if biased(K) {
                        bias[r][c] += b[c] * *xs.add(at);
                    }
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                *io.y.add((r0 + r) * io.n + col + c) = hsum(acc[r][c]) + bias[r][c];
            }
        }
    }

    /// A tile of `rows` (at most [`TILE_ROWS`]) rows from `r` against `C` columns.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_tile<const K: u8, const PACKED: bool, const C: usize>(
        w: [*const u8; C],
        io: &Io<'_>,
        r: usize,
        rows: usize,
        col: usize,
    ) {
        match rows {
            4 => tile::<K, PACKED, 4, C>(w, io, r, col),
            3 => tile::<K, PACKED, 3, C>(w, io, r, col),
            2 => tile::<K, PACKED, 2, C>(w, io, r, col),
            _ => tile::<K, PACKED, 1, C>(w, io, r, col),
        }
    }

    /// Unpacks the `nb` sub-blocks of the weight row at `w` into `dst`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack<const K: u8>(w: *const u8, nb: usize, dst: *mut Packed) {
        for sb in 0..nb {
            let (q, lo, hi, bias) = unpack::<K>(w, sb);
            let p = dst.add(sb);
            _mm256_store_si256((*p).q.as_mut_ptr() as *mut __m256i, q);
            (*p).lo = lo;
            (*p).hi = hi;
            (*p).bias = bias;
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

    /// The task's columns against every activation row.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; `cols.data` holds at least `c1` rows of `rb` bytes
    /// of `kind`, each `io.nb` sub-blocks long; `io.y` has room for `m` rows times `io.n`,
    /// and no one else writes columns `c0..c1`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn columns(
        kind: Kind,
        cols: &Columns<'_>,
        io: &Io<'_>,
        buf: &mut Vec<Packed>,
    ) {
        match kind {
            Kind::Q4_1 => columns_t::<Q4_1>(cols, io, buf),
            Kind::Q5_0 => columns_t::<Q5_0>(cols, io, buf),
            Kind::Q8_0 => columns_t::<Q8_0>(cols, io, buf),
            Kind::Q4K => columns_t::<Q4K>(cols, io, buf),
            Kind::Q6K => columns_t::<Q6K>(cols, io, buf),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn columns_t<const K: u8>(cols: &Columns<'_>, io: &Io<'_>, buf: &mut Vec<Packed>) {
        let Columns {
            data,
            rb,
            c0,
            c1,
            m,
        } = *cols;
        let base = data.as_ptr();
        let row = |c: usize| base.add(c * rb);
        if m == 1 {
            // Decoding: the weights stream past once, read in place, one column after the
            // other (measured: two or four columns at a time, as several streams, decode
            // 20-35 % slower).
            for c in c0..c1 {
                tile::<K, false, 1, 1>([row(c)], io, 0, c);
            }
            return;
        }
        // Several rows: register tiles of rows × columns. Unpack the columns once first when
        // more than one tile of rows will read them (Q8_0 needs no unpacking: its bytes are
        // read in place).
        let nb = io.nb;
        if K == Q8_0 || m <= TILE_ROWS {
            return run_tiles::<K, false>(base, rb, 0, c0, c1, m, io);
        }
        buf.clear();
        buf.resize((c1 - c0) * nb, Packed::ZERO);
        for c in c0..c1 {
            pack::<K>(row(c), nb, buf.as_mut_ptr().add((c - c0) * nb));
        }
        let stride = nb * std::mem::size_of::<Packed>();
        run_tiles::<K, true>(buf.as_ptr() as *const u8, stride, c0, c0, c1, m, io);
    }

    /// Every row of `io` against columns `c0..c1`, in register tiles; column `c` starts at
    /// `base + (c - first) · stride` (a GGUF row, or its [`Packed`] blocks).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_tiles<const K: u8, const PACKED: bool>(
        base: *const u8,
        stride: usize,
        first: usize,
        c0: usize,
        c1: usize,
        m: usize,
        io: &Io<'_>,
    ) {
        let col = |c: usize| base.add((c - first) * stride);
        let mut r = 0;
        while r < m {
            let rows = (m - r).min(TILE_ROWS);
            let mut c = c0;
            while c + TILE_COLS <= c1 {
                let w: [*const u8; TILE_COLS] = std::array::from_fn(|i| col(c + i));
                rows_tile::<K, PACKED, TILE_COLS>(w, io, r, rows, c);
                c += TILE_COLS;
            }
            for c in c..c1 {
                rows_tile::<K, PACKED, 1>([col(c)], io, r, rows, c);
            }
            r += rows;
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
        let act = QuantizedRows::new(&x);
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
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            check(dtype, 70, 128, 5);
        }
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            check(dtype, 37, 512, 19);
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
            let want = quantize_block(xs, &mut a);
            // SAFETY: checked above.
            let got = unsafe { avx2::quantize_block(xs, &mut c) };
            assert_eq!(
                (want.0.to_bits(), want.1),
                (got.0.to_bits(), got.1),
                "block {b}"
            );
            assert_eq!(a, c, "block {b}");
        }
        assert_eq!(QuantizedRows::new(&x).q[..QK], {
            let mut a = [0i8; QK];
            quantize_block(&x[..QK], &mut a);
            a
        });
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

//! Our own CPU matmul for the quantized weight types of the bundled models: Q4_1, Q5_0,
//! Q8_0, Q4_K and Q6_K.
//!
//! candle 0.11 has no x86 SIMD path for some of these (Q4_1, Q5_0), computes each activation
//! row on its own, and for others picks kernels whose rounding depends on the number of rows.
//! This kernel instead:
//! - quantises each 32-value block of activations to 8 bits (one f32 scale per block, and the
//!   block's scaled sum), as llama.cpp does;
//! - unpacks each 32-value block of weights once into signed bytes with a scale per 16 values
//!   and a bias, and multiplies it into up to 16 activation rows with AVX2 `maddubs` (with a
//!   scalar fallback);
//! - sums every output element in the same order whatever the number of rows, so a sequence's
//!   result never depends on the other rows of its batch or prompt chunk;
//! - runs on candle's own thread pool, columns split across threads, and on the calling
//!   thread alone while another process holds a core ([`super::parallel`]).
//!
//! A weight block of 32 values becomes `w_j` (signed bytes) with `value_j = scale_j · w_j +
//! bias`, where `scale_j` is `lo` for the first 16 values and `hi` for the last 16. The dot
//! product with an activation block `x_j ≈ d · q_j` is then
//! `d · (lo · Σ_{j<16} w_j q_j + hi · Σ_{j≥16} w_j q_j) + bias · d · Σ q_j`.

use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};

/// Values per activation block (and per weight sub-block).
const QK: usize = 32;
/// Weight rows (output features) per parallel work item.
const COLS_PER_TASK: usize = 32;
/// Activation rows multiplied together against one weight block.
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
        debug_assert_eq!(x.len(), m * k);
        let nb = k / QK;
        let act = QuantizedRows::new(x);
        let simd = simd_available();
        let rb = self.row_bytes();
        let mut y = vec![0f32; m * n];
        let y_ptr = SendPtr(y.as_mut_ptr());
        // candle's own thread pool (so our kernel and candle's never compete for the cores),
        // or this thread alone while another process holds a core.
        super::parallel::for_each_chunk(n.div_ceil(COLS_PER_TASK), |tasks| {
            let y_ptr = &y_ptr;
            let mut dst = [0f32; ROW_GROUP];
            for t in tasks {
                let c0 = t * COLS_PER_TASK;
                let c1 = n.min(c0 + COLS_PER_TASK);
                // Row groups outside, columns inside: a group's activations stay in cache
                // while the task's weight rows stream past them.
                for r0 in (0..m).step_by(ROW_GROUP) {
                    let r1 = m.min(r0 + ROW_GROUP);
                    let rows = act.rows(r0, r1, nb);
                    let dst = &mut dst[..r1 - r0];
                    for col in c0..c1 {
                        let w = &data[col * rb..(col + 1) * rb];
                        if simd {
                            // SAFETY: AVX2 and FMA were detected at run time.
                            unsafe { avx2::dot_rows(self.kind, w, &rows, nb, dst) }
                        } else {
                            self.scalar_dot_rows(w, &rows, nb, dst)
                        }
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

impl QuantizedRows {
    fn new(x: &[f32]) -> Self {
        let blocks = x.len() / QK;
        let (mut q, mut d, mut s) = (
            vec![0i8; x.len()],
            Vec::with_capacity(blocks),
            Vec::with_capacity(blocks),
        );
        for (b, xs) in x.chunks_exact(QK).enumerate() {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (j, v) in xs.iter().enumerate() {
                let qi = (v * inv).round().clamp(-127.0, 127.0) as i8;
                q[b * QK + j] = qi;
                sum += qi as i32;
            }
            d.push(scale);
            s.push(scale * sum as f32);
        }
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

/// A raw pointer that may cross to the pool's threads (they write disjoint elements).
struct SendPtr(*mut f32);
// SAFETY: the pointer is only used for writes to disjoint elements while `y` is alive.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{f16_at, scale_min_k4, Kind, Rows, QK};
    use std::arch::x86_64::*;

    /// Horizontal sum of 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// 16 bytes of nibbles as 32 bytes: the low nibbles first, then the high ones.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nibbles_16(p: *const u8) -> __m256i {
        let mask = _mm_set1_epi8(0x0F);
        let qs = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(qs, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// Bit `j` of `bits` as byte `j` (0xFF when set).
    #[target_feature(enable = "avx2,fma")]
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

    /// The kinds as numbers, for const generics.
    const Q4_1: u8 = 0;
    const Q5_0: u8 = 1;
    const Q8_0: u8 = 2;
    const Q4K: u8 = 3;
    const Q6K: u8 = 4;

    fn kind_of(k: u8) -> Kind {
        match k {
            Q4_1 => Kind::Q4_1,
            Q5_0 => Kind::Q5_0,
            Q8_0 => Kind::Q8_0,
            Q4K => Kind::Q4K,
            _ => Kind::Q6K,
        }
    }

    /// Sub-block `sb` of weight row `w` as 32 signed bytes, with its two half scales and bias.
    /// Generic over the kind so that each copy is small enough to inline into its loop.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn unpack<const K: u8>(w: &[u8], sb: usize) -> (__m256i, f32, f32, f32) {
        let p = w.as_ptr();
        match kind_of(K) {
            Kind::Q4_1 => {
                let b = sb * 20;
                let d = f16_at(w, b);
                (nibbles_16(p.add(b + 4)), d, d, f16_at(w, b + 2))
            }
            Kind::Q5_0 => {
                let b = sb * 22;
                let d = f16_at(w, b);
                let qh = u32::from_le_bytes([w[b + 2], w[b + 3], w[b + 4], w[b + 5]]);
                // A set fifth bit keeps the nibble (n + 16 - 16); a clear one makes it
                // n - 16, which as a signed byte is n | 0xF0.
                let high = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
                (_mm256_or_si256(nibbles_16(p.add(b + 6)), high), d, d, 0.0)
            }
            Kind::Q8_0 => {
                let b = sb * 34;
                let d = f16_at(w, b);
                (
                    _mm256_loadu_si256(p.add(b + 2) as *const __m256i),
                    d,
                    d,
                    0.0,
                )
            }
            Kind::Q4K => {
                let s = (sb / 8) * 144;
                let j = sb % 8;
                let (d, dmin) = (f16_at(w, s), f16_at(w, s + 2));
                let (sc, m) = scale_min_k4(j, &w[s + 4..s + 16]);
                let q = _mm256_loadu_si256(p.add(s + 16 + (j / 2) * 32) as *const __m256i);
                let q = if j.is_multiple_of(2) {
                    q
                } else {
                    _mm256_srli_epi16(q, 4)
                };
                let q = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
                let ds = d * sc as f32;
                (q, ds, ds, -dmin * m as f32)
            }
            Kind::Q6K => {
                let s = (sb / 8) * 210;
                let (c, g) = ((sb % 8) / 4, sb % 4);
                let ql = p.add(s + 64 * c + if g % 2 == 1 { 32 } else { 0 });
                let low = _mm256_loadu_si256(ql as *const __m256i);
                let low = if g >= 2 {
                    _mm256_srli_epi16(low, 4)
                } else {
                    low
                };
                let low = _mm256_and_si256(low, _mm256_set1_epi8(0x0F));
                let qh = _mm256_loadu_si256(p.add(s + 128 + 32 * c) as *const __m256i);
                let high = _mm256_and_si256(
                    _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32)),
                    _mm256_set1_epi8(3),
                );
                let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                let q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
                let d = f16_at(w, s + 208);
                let sc = s + 192 + 8 * c + 2 * g;
                (q, d * w[sc] as i8 as f32, d * w[sc + 1] as i8 as f32, 0.0)
            }
        }
    }

    /// One weight row (`nb` sub-blocks) against every activation row of `x` (at most
    /// [`super::ROW_GROUP`] rows).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows(kind: Kind, w: &[u8], x: &Rows<'_>, nb: usize, dst: &mut [f32]) {
        // Nibble types have unsigned weights and need no sign shuffle; only Q6_K scales its
        // two halves apart.
        match kind {
            Kind::Q4_1 => dot_rows_t::<Q4_1, false, false>(w, x, nb, dst),
            Kind::Q4K => dot_rows_t::<Q4K, false, false>(w, x, nb, dst),
            Kind::Q5_0 => dot_rows_t::<Q5_0, true, false>(w, x, nb, dst),
            Kind::Q8_0 => dot_rows_t::<Q8_0, true, false>(w, x, nb, dst),
            Kind::Q6K => dot_rows_t::<Q6K, true, true>(w, x, nb, dst),
        }
    }

    /// `Σ_j w_j q_j` of one 32-value block, per 8 lanes, as f32, with the block's scale(s)
    /// times the activation scale `d` applied.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_dot<const SIGNED: bool, const SPLIT: bool>(
        wq: __m256i,
        aw: __m256i,
        xq: *const i8,
        lo: f32,
        hi: f32,
        d: f32,
    ) -> (__m256, __m256) {
        let q = _mm256_loadu_si256(xq as *const __m256i);
        let q = if SIGNED { _mm256_sign_epi8(q, wq) } else { q };
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, q), _mm256_set1_epi16(1));
        let s = if SPLIT {
            _mm256_mul_ps(
                _mm256_set_ps(hi, hi, hi, hi, lo, lo, lo, lo),
                _mm256_set1_ps(d),
            )
        } else {
            _mm256_set1_ps(lo * d)
        };
        (s, _mm256_cvtepi32_ps(p))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_rows_t<const K: u8, const SIGNED: bool, const SPLIT: bool>(
        w: &[u8],
        x: &Rows<'_>,
        nb: usize,
        dst: &mut [f32],
    ) {
        let (xq, xd, xs) = (x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
        if dst.len() == 1 {
            // One row (single-sequence decoding): two accumulators in registers, so that
            // consecutive blocks do not wait on each other's multiply-add.
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut bias = 0f32;
            let mut sb = 0;
            while sb + 1 < nb {
                let (wq, lo, hi, b) = unpack::<K>(w, sb);
                let aw = if SIGNED { _mm256_sign_epi8(wq, wq) } else { wq };
                let (s, p) =
                    block_dot::<SIGNED, SPLIT>(wq, aw, xq.add(sb * QK), lo, hi, *xd.add(sb));
                a0 = _mm256_fmadd_ps(s, p, a0);
                bias += b * *xs.add(sb);
                let (wq, lo, hi, b) = unpack::<K>(w, sb + 1);
                let aw = if SIGNED { _mm256_sign_epi8(wq, wq) } else { wq };
                let (s, p) = block_dot::<SIGNED, SPLIT>(
                    wq,
                    aw,
                    xq.add((sb + 1) * QK),
                    lo,
                    hi,
                    *xd.add(sb + 1),
                );
                a1 = _mm256_fmadd_ps(s, p, a1);
                bias += b * *xs.add(sb + 1);
                sb += 2;
            }
            if sb < nb {
                let (wq, lo, hi, b) = unpack::<K>(w, sb);
                let aw = if SIGNED { _mm256_sign_epi8(wq, wq) } else { wq };
                let (s, p) =
                    block_dot::<SIGNED, SPLIT>(wq, aw, xq.add(sb * QK), lo, hi, *xd.add(sb));
                a0 = _mm256_fmadd_ps(s, p, a0);
                bias += b * *xs.add(sb);
            }
            dst[0] = hsum(_mm256_add_ps(a0, a1)) + bias;
            return;
        }
        // Several rows: the same sums in the same order as one row (even and odd blocks in
        // their own accumulators), so a row's result does not depend on its company.
        let rows = dst.len();
        let mut acc = [[_mm256_setzero_ps(); 2]; super::ROW_GROUP];
        let mut bias = [0f32; super::ROW_GROUP];
        for sb in 0..nb {
            let (wq, lo, hi, b) = unpack::<K>(w, sb);
            // maddubs needs an unsigned operand: |w|, with the sign of w moved onto x.
            let aw = if SIGNED { _mm256_sign_epi8(wq, wq) } else { wq };
            let parity = sb % 2;
            for i in 0..rows {
                let at = i * nb + sb;
                let (s, p) =
                    block_dot::<SIGNED, SPLIT>(wq, aw, xq.add(at * QK), lo, hi, *xd.add(at));
                acc[i][parity] = _mm256_fmadd_ps(s, p, acc[i][parity]);
                bias[i] += b * *xs.add(at);
            }
        }
        for i in 0..rows {
            dst[i] = hsum(_mm256_add_ps(acc[i][0], acc[i][1])) + bias[i];
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
    fn other_types_are_left_to_candle() {
        let wt = Tensor::zeros((32, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_0).unwrap();
        assert!(QMatrix::from_qtensor(std::sync::Arc::new(q))
            .unwrap()
            .is_none());
    }
}

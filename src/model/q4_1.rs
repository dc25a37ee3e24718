//! Our own CPU matmul for Q4_1 weights.
//!
//! candle 0.11's Q4_1 dot product has no x86 SIMD path and computes each activation row on
//! its own, so decoding several sequences together costs as much as decoding them one after
//! another. This kernel reads each weight block once for up to 16 rows. Like llama.cpp, it
//! quantises each 32-value block of activations to 8 bits (one f32 scale per block) and takes
//! integer dot products with the 4-bit weights (AVX2 `maddubs`), with a scalar fallback. Each
//! output element is summed in the same order whatever the number of rows, so a sequence's
//! result never depends on the other rows of its batch.

use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};

/// Bytes of one Q4_1 block: f16 scale, f16 minimum, 16 bytes of nibbles (32 values).
const BLOCK_BYTES: usize = 20;
/// Values per block.
const QK: usize = 32;
/// Weight rows (output features) per parallel work item.
const COLS_PER_TASK: usize = 32;
/// Activation rows multiplied together against one weight block.
const ROW_GROUP: usize = 16;

/// Q4_1 weights `(n, k)` in GGUF's own block layout.
#[derive(Debug)]
pub(crate) struct Q41Matrix {
    n: usize,
    k: usize,
    data: Vec<u8>,
}

impl Q41Matrix {
    /// Copies the blocks of a Q4_1 tensor; `None` for any other type or shape.
    pub(crate) fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        if t.dtype() != GgmlDType::Q4_1 {
            return Ok(None);
        }
        let dims = t.shape().dims();
        let [n, k] = dims else {
            return Ok(None);
        };
        let (n, k) = (*n, *k);
        if k % QK != 0 {
            return Ok(None);
        }
        let data = t.data()?.into_owned();
        if data.len() != n * k / QK * BLOCK_BYTES {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "Q4_1 tensor ({n}, {k}) has {} bytes, expected {}",
                data.len(),
                n * k / QK * BLOCK_BYTES
            ))));
        }
        Ok(Some(Self { n, k, data }))
    }

    /// Output features.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// `y = x · Wᵀ` for `m` rows of `x` (`m × k`, row-major); returns `m × n`.
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        debug_assert_eq!(x.len(), m * k);
        let nb = k / QK;
        let act = QuantizedRows::new(x);
        let simd = simd_available();
        let mut y = vec![0f32; m * n];
        let y_ptr = SendPtr(y.as_mut_ptr());
        // candle's own thread pool, so our kernel and candle's never compete for the cores.
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(COLS_PER_TASK), |tasks| {
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
                        let w = &self.data[col * nb * BLOCK_BYTES..(col + 1) * nb * BLOCK_BYTES];
                        if simd {
                            // SAFETY: AVX2 and FMA were detected at run time.
                            unsafe { avx2::dot_rows(w, &rows, k, dst) }
                        } else {
                            scalar_dot_rows(w, &rows, k, dst)
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
        y
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

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// One weight row against every activation row, in plain Rust.
fn scalar_dot_rows(w: &[u8], x: &Rows<'_>, k: usize, dst: &mut [f32]) {
    let nb = k / QK;
    for (r, d) in dst.iter_mut().enumerate() {
        let mut acc = 0f32;
        for b in 0..nb {
            let blk = &w[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
            let (scale, min) = (f16_at(blk, 0), f16_at(blk, 2));
            let xq = &x.q[(r * nb + b) * QK..(r * nb + b + 1) * QK];
            let mut dot = 0i32;
            for (j, q) in blk[4..].iter().enumerate() {
                dot += (q & 0x0F) as i32 * xq[j] as i32 + (q >> 4) as i32 * xq[j + 16] as i32;
            }
            acc += scale * x.d[r * nb + b] * dot as f32 + min * x.s[r * nb + b];
        }
        *d = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{f16_at, Rows, BLOCK_BYTES, QK};
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

    /// One weight row (`k / 32` blocks) against every activation row of `x` (at most
    /// [`super::ROW_GROUP`] rows).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows(w: &[u8], x: &Rows<'_>, k: usize, dst: &mut [f32]) {
        let nb = k / QK;
        let rows = dst.len();
        let mut acc = [_mm256_setzero_ps(); super::ROW_GROUP];
        let mut mins = [0f32; super::ROW_GROUP];
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        for b in 0..nb {
            let blk = w.as_ptr().add(b * BLOCK_BYTES);
            let scale = f16_at(w, b * BLOCK_BYTES);
            let min = f16_at(w, b * BLOCK_BYTES + 2);
            let qs = _mm_loadu_si128(blk.add(4) as *const __m128i);
            let lo = _mm_and_si128(qs, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
            // The block's 32 weights as unsigned bytes, in element order.
            let wq = _mm256_set_m128i(hi, lo);
            for i in 0..rows {
                let at = i * nb + b;
                let xq = _mm256_loadu_si256(x.q.as_ptr().add(at * QK) as *const __m256i);
                let p16 = _mm256_maddubs_epi16(wq, xq);
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(scale * x.d[at]), p, acc[i]);
                mins[i] += min * x.s[at];
            }
        }
        for i in 0..rows {
            dst[i] = hsum(acc[i]) + mins[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_dequantized_weights_and_is_independent_of_the_batch() {
        let (n, k, m) = (70, 128, 5);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q4_1).unwrap();
        let deq: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mat = Q41Matrix::from_qtensor(&q).unwrap().unwrap();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let y = mat.matmul(&x, m);
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
                    "{r},{c}: {got} vs {want}"
                );
                assert!((got - exact).abs() < 0.1, "{r},{c}: {got} vs {exact}");
            }
            // The same row alone gives bit-identical results.
            let alone = mat.matmul(&x[r * k..(r + 1) * k], 1);
            assert_eq!(alone[..], y[r * n..(r + 1) * n]);
        }
        // The scalar path agrees with the SIMD path to rounding.
        let nb = k / QK;
        let mut s = vec![0f32; m];
        scalar_dot_rows(
            &mat.data[..nb * BLOCK_BYTES],
            &act.rows(0, m, nb),
            k,
            &mut s,
        );
        for r in 0..m {
            assert!((s[r] - y[r * n]).abs() < 1e-3 * (1.0 + s[r].abs()));
        }
    }

    #[test]
    fn other_types_are_left_to_candle() {
        let wt = Tensor::zeros((32, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
        assert!(Q41Matrix::from_qtensor(&q).unwrap().is_none());
    }
}

//! Our own CPU matmul for Q4_1 weights.
//!
//! candle 0.11's Q4_1 dot product has no x86 SIMD path and computes each activation row on
//! its own, so decoding several sequences together costs as much as decoding them one after
//! another. This kernel reads each weight block once for up to 16 rows: it widens the
//! block's 32 4-bit values to f32 once and multiplies them into every row (AVX2 + FMA, with
//! a scalar fallback). Activations stay f32 (no 8-bit quantisation), and each output element is
//! summed in the same order whatever the number of rows, so a sequence's result never
//! depends on the other rows of its batch.

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
        // Per row and block: the sum of the activations, for the blocks' minimum term.
        let sums: Vec<f32> = x
            .chunks_exact(QK)
            .map(|c| c.iter().sum::<f32>())
            .collect();
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
                    let (xs, ss) = (&x[r0 * k..r1 * k], &sums[r0 * nb..r1 * nb]);
                    let dst = &mut dst[..r1 - r0];
                    for col in c0..c1 {
                        let w = &self.data[col * nb * BLOCK_BYTES..(col + 1) * nb * BLOCK_BYTES];
                        if simd {
                            // SAFETY: AVX2 and FMA were detected at run time.
                            unsafe { avx2::dot_rows(w, xs, ss, k, dst) }
                        } else {
                            scalar_dot_rows(w, xs, ss, k, dst)
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
fn scalar_dot_rows(w: &[u8], x: &[f32], sums: &[f32], k: usize, dst: &mut [f32]) {
    let nb = k / QK;
    for (r, d) in dst.iter_mut().enumerate() {
        let xr = &x[r * k..(r + 1) * k];
        let mut acc = 0f32;
        for b in 0..nb {
            let blk = &w[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
            let (scale, min) = (f16_at(blk, 0), f16_at(blk, 2));
            let xs = &xr[b * QK..(b + 1) * QK];
            let mut dot = 0f32;
            for (j, q) in blk[4..].iter().enumerate() {
                dot += (q & 0x0F) as f32 * xs[j] + (q >> 4) as f32 * xs[j + 16];
            }
            acc += scale * dot + min * sums[r * nb + b];
        }
        *d = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{f16_at, BLOCK_BYTES, QK};
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

    /// One weight row (`k / 32` blocks) against every activation row of `x`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_rows(w: &[u8], x: &[f32], sums: &[f32], k: usize, dst: &mut [f32]) {
        let nb = k / QK;
        let m = dst.len();
        const MAX_ROWS: usize = super::ROW_GROUP;
        // Rows in groups of up to 16, each with a vector and a scalar accumulator.
        for r0 in (0..m).step_by(MAX_ROWS) {
            let rows = MAX_ROWS.min(m - r0);
            let mut acc = [_mm256_setzero_ps(); MAX_ROWS];
            let mut mins = [0f32; MAX_ROWS];
            let mask = _mm_set1_epi8(0x0F);
            for b in 0..nb {
                let blk = w.as_ptr().add(b * BLOCK_BYTES);
                let scale = _mm256_set1_ps(f16_at(w, b * BLOCK_BYTES));
                let min = f16_at(w, b * BLOCK_BYTES + 2);
                let qs = _mm_loadu_si128(blk.add(4) as *const __m128i);
                let lo = _mm_and_si128(qs, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
                let q = [
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
                    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))),
                ];
                for i in 0..rows {
                    let r = r0 + i;
                    let xp = x.as_ptr().add(r * k + b * QK);
                    let mut v = _mm256_mul_ps(q[0], _mm256_loadu_ps(xp));
                    v = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xp.add(8)), v);
                    v = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xp.add(16)), v);
                    v = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xp.add(24)), v);
                    acc[i] = _mm256_fmadd_ps(scale, v, acc[i]);
                    mins[i] += min * sums[r * nb + b];
                }
            }
            for i in 0..rows {
                dst[r0 + i] = hsum(acc[i]) + mins[i];
            }
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
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
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
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0).collect();
        let y = mat.matmul(&x, m);
        for r in 0..m {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * deq[c * k + i]).sum();
                let got = y[r * n + c];
                assert!((got - want).abs() < 1e-3 * (1.0 + want.abs()), "{r},{c}: {got} vs {want}");
            }
            // The same row alone gives bit-identical results.
            let alone = mat.matmul(&x[r * k..(r + 1) * k], 1);
            assert_eq!(alone[..], y[r * n..(r + 1) * n]);
        }
        // The scalar path agrees with the SIMD path to rounding.
        let nb = k / QK;
        let sums: Vec<f32> = x.chunks_exact(QK).map(|c| c.iter().sum()).collect();
        let mut s = vec![0f32; m];
        scalar_dot_rows(&mat.data[..nb * BLOCK_BYTES], &x, &sums, k, &mut s);
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

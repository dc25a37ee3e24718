//! Activations quantised to 8 bits per 32-value block (one scale per block, or per span of
//! blocks), as the kernels read them.

use super::{simd_available, QK};
use crate::model::parallel::{self, SendPtr};

/// Activations quantised per 32-value block: `q ≈ x / d`, and `s = d · Σ q` per block.
pub(super) struct QuantizedRows {
    pub(super) q: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) s: Vec<f32>,
}

/// A slice of [`QuantizedRows`] (some consecutive rows).
pub(super) struct Rows<'a> {
    pub(super) q: &'a [i8],
    pub(super) d: &'a [f32],
    pub(super) s: &'a [f32],
}

/// Activation blocks per parallel work item when quantising.
const BLOCKS_PER_ITEM: usize = 512;

impl QuantizedRows {
    /// Quantises `x` block by block, `span` consecutive blocks (within a row: rows are whole
    /// spans) sharing the scale of their largest value: on the kernels' pool for long
    /// inputs, with AVX2 where the CPU has it. Both paths give the same bits (ties round to
    /// even in both).
    pub(super) fn new(x: &[f32], span: usize) -> Self {
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
        parallel::for_each_chunk(blocks.div_ceil(BLOCKS_PER_ITEM), |items| {
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
                        unsafe { super::avx2::amax(xs) }
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
                            unsafe { super::avx2::quantize_block(xs, amax, qs) }
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
    pub(super) fn scales_by_block(&self, m: usize, nb: usize) -> Vec<f32> {
        let mp = m + 3;
        let mut t = vec![0f32; nb * mp];
        for r in 0..m {
            for sb in 0..nb {
                t[sb * mp + r] = self.d[r * nb + sb];
            }
        }
        t
    }

    /// `-32 ·` the sum of each 16-value group of the quantised values, in order (per row and
    /// super-block, sixteen): what Q6_K's offset of 32 takes off a super-block's integer
    /// product, computed once per call instead of once per weight column.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn group_offsets(&self) -> Vec<i32> {
        self.q
            .chunks_exact(16)
            .map(|g| -32 * g.iter().map(|&x| x as i32).sum::<i32>())
            .collect()
    }

    pub(super) fn rows(&self, r0: usize, r1: usize, nb: usize) -> Rows<'_> {
        Rows {
            q: &self.q[r0 * nb * QK..r1 * nb * QK],
            d: &self.d[r0 * nb..r1 * nb],
            s: &self.s[r0 * nb..r1 * nb],
        }
    }
}

/// The largest magnitude in `xs`, NaN skipped (as `f32::max` does).
pub(super) fn amax(xs: &[f32]) -> f32 {
    xs.iter().fold(0f32, |a, v| a.max(v.abs()))
}

/// One block of 32 activations as 8-bit values `q ≈ x / scale`, `scale = amax / 127`
/// (`amax`: the largest magnitude in the block, or in the span of blocks that shares its
/// scale; ties round to even); returns the scale and `Σ q`.
pub(super) fn quantize_block(xs: &[f32], amax: f32, q: &mut [i8]) -> (f32, i32) {
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

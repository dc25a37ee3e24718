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
//!   memory bandwidth up), eight blocks' integer products reduced together; Q4_K with two
//!   sub-blocks per 512-bit `vpdpbusd` where the CPU has AVX-512 VNNI (the same integers);
//! - for several rows, multiplies register tiles of up to eight output elements, one per lane
//!   of a single accumulator (4 rows × 2 columns, and 3 × 2, 2 × 4 or 1 × 8 for the last
//!   rows), so that a block costs one conversion and two multiplications per eight
//!   elements, where each element had taken a conversion, a multiplication and an FMA;
//!   when more than one tile of rows will read a task's weight columns, they are first
//!   unpacked once into bytes, except Q8_0, whose bytes are read in place (outside the
//!   VNNI tiles below);
//! - for the K-quants against several rows, on CPUs with AVX-512 VNNI, lays a super-block out
//!   so that each lane of a vector holds one scale group, and sums each group's products
//!   with `vpdpbusd` on 512-bit vectors (`avx2/vnni.rs`): nine or ten multiplications per
//!   256 products instead of sixteen, the same integers and float operations, so the same
//!   bits; the block kinds (Q4_1, Q5_0, Q8_0) likewise, eight blocks side by side with one
//!   block per lane, so a block costs no reduction of its own (`avx2/vnni_blocks.rs`);
//!   `LLM_JUDGE_NO_VNNI=1` turns these and Q4_K's VNNI decoding off;
//! - runs on our kernels' pool, columns split across threads, and on the calling thread
//!   alone while another process holds a core ([`super::parallel`]).
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
use quantize::QuantizedRows;

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

    /// Where this matrix's bytes lie in memory: `(start, len)`.
    pub(crate) fn region(&self) -> Result<(usize, usize)> {
        let data = self.tensor.data()?;
        Ok((data.as_ptr() as usize, data.len()))
    }

    /// Bytes of one weight row.
    fn row_bytes(&self) -> usize {
        let (bytes, values) = self.kind.block();
        self.k / values * bytes
    }

    /// `y = x · Wᵀ` for `m` rows of `x` (`m × k`, row-major); returns `m × n`. (The model
    /// calls [`QMatrix::matmul_many`], with one matrix or several.)
    #[cfg(test)]
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let mut ys = Self::matmul_many(&[self], x, m)?;
        Ok(ys.pop().unwrap_or_default())
    }

    /// [`QMatrix::matmul`] of one input by several matrices of its width (a layer's query,
    /// key and value projections, or its gate and up projections), in one call on the pool:
    /// the activations are quantised once per span of blocks sharing a scale (one for the
    /// K-quants, one for the block kinds), and the threads meet once instead of once per
    /// matrix, which a decoding step pays a few microseconds for each time. Each output has
    /// the bits [`QMatrix::matmul`] gives for its matrix alone.
    pub(crate) fn matmul_many(ms: &[&QMatrix], x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        #[cfg(target_arch = "x86_64")]
        let vnni = avx2::vnni_available();
        #[cfg(not(target_arch = "x86_64"))]
        let vnni = false;
        Self::matmul_many_with(ms, x, m, simd_available(), vnni, None)
    }

    /// [`QMatrix::matmul`], with the VNNI tiles (`vnni`, where the CPU has them) or not, and
    /// the prefetch distance fixed (`Some`, in bytes) or chosen by [`prefetch`].
    #[cfg(test)]
    fn matmul_with(
        &self,
        x: &[f32],
        m: usize,
        vnni: bool,
        fixed_prefetch: Option<usize>,
    ) -> Result<Vec<f32>> {
        let mut ys = Self::matmul_many_with(&[self], x, m, simd_available(), vnni, fixed_prefetch)?;
        Ok(ys.pop().unwrap_or_default())
    }

    /// [`QMatrix::matmul_many`], on the SIMD kernels (`simd`: only where
    /// [`simd_available`]) or the scalar fallback, with the VNNI tiles (`vnni`, where the
    /// CPU has them) or not, and the prefetch distance fixed (`Some`, in bytes) or chosen
    /// by [`prefetch`].
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn matmul_many_with(
        ms: &[&QMatrix],
        x: &[f32],
        m: usize,
        simd: bool,
        vnni: bool,
        fixed_prefetch: Option<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        let simd = simd && simd_available();
        #[cfg(target_arch = "x86_64")]
        let vnni = vnni && avx2::vnni_supported();
        let Some(first) = ms.first() else {
            return Ok(Vec::new());
        };
        let k = first.k;
        if let Some(w) = ms.iter().find(|w| w.k != k) {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "quantized matmul: matrices of {k} and {} inputs in one call",
                w.k
            ))));
        }
        if x.len() != m * k {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "quantized matmul: {} activations for {m} rows of {k}",
                x.len()
            ))));
        }
        let nb = k / QK;
        // The activations, quantised once for each span of blocks sharing a scale.
        let mut acts: Vec<(usize, QuantizedRows)> = Vec::with_capacity(2);
        for w in ms {
            let span = w.kind.span();
            if !acts.iter().any(|(s, _)| *s == span) {
                acts.push((span, QuantizedRows::new(x, span)));
            }
        }
        let mut plans = Vec::with_capacity(ms.len());
        let mut first_task = 0;
        for w in ms {
            let act = &acts
                .iter()
                .find(|(s, _)| *s == w.kind.span())
                .expect("quantised above for every span")
                .1;
            plans.push(Plan::new(w, act, m, nb, simd, vnni, first_task)?);
            first_task += w.n.div_ceil(COLS_PER_TASK);
        }
        // Decoding one sequence or several (SIMD): the prefetch distance of this call (one
        // for all its matrices, taken in turn by the first), chosen by measuring
        // ([`prefetch`]); it changes no result.
        #[cfg(target_arch = "x86_64")]
        let (prefetch, timed) = match (fixed_prefetch, prefetch::Calls::of(m)) {
            _ if !simd => (0, None),
            (Some(d), _) => (d, None),
            (None, None) => (0, None),
            (None, Some(calls)) => {
                let bytes: u64 = plans.iter().map(|p| (p.w.n * p.rb) as u64).sum();
                (
                    prefetch::pick(calls, plans[0].data.as_ptr() as usize, m),
                    Some((calls, bytes, std::time::Instant::now())),
                )
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = fixed_prefetch;
        let starts: Vec<usize> = plans.iter().map(|p| p.first_task).collect();
        // The kernels' pool, or this thread alone while another process holds a core.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
        let pooled = super::parallel::for_each_chunk(first_task, |tasks| {
            #[cfg(target_arch = "x86_64")]
            let mut buf = SCRATCH.take();
            let mut dst = [0f32; ROW_GROUP];
            for t in tasks {
                let plan = &plans[starts.partition_point(|&s| s <= t) - 1];
                let (w, n, rb) = (plan.w, plan.w.n, plan.rb);
                let c0 = (t - plan.first_task) * COLS_PER_TASK;
                let c1 = n.min(c0 + COLS_PER_TASK);
                #[cfg(target_arch = "x86_64")]
                if simd {
                    let io = avx2::Io {
                        x: plan.act,
                        xi: &plan.xi,
                        offsets: &plan.offsets,
                        dt: &plan.dt,
                        mp: m + 3,
                        nb,
                        y: plan.y.0,
                        n,
                        prefetch,
                        vnni,
                    };
                    let cols = avx2::Columns {
                        data: &plan.data,
                        rb,
                        c0,
                        c1,
                        m,
                    };
                    // SAFETY: AVX2, FMA and F16C were detected at run time (and AVX-512 VNNI
                    // wherever `xi` is made or `vnni` set); `data` holds `n` rows of `rb`
                    // bytes (checked in `from_qtensor`), `y` is `m × n`, `xi` is interleaved
                    // for this kind and `offsets` is there wherever Q6_K or Q8_0 reads it
                    // ([`Plan::new`]), and every column of every matrix belongs to exactly
                    // one task.
                    unsafe { avx2::columns(w.kind, &cols, &io, &mut buf) };
                    continue;
                }
                // Row groups outside, columns inside: a group's activations stay in cache
                // while the task's weight rows stream past them.
                for r0 in (0..m).step_by(ROW_GROUP) {
                    let r1 = m.min(r0 + ROW_GROUP);
                    let rows = plan.act.rows(r0, r1, nb);
                    let dst = &mut dst[..r1 - r0];
                    for col in c0..c1 {
                        let wr = &plan.data[col * rb..(col + 1) * rb];
                        w.scalar_dot_rows(wr, &rows, nb, dst);
                        for (i, v) in dst.iter().enumerate() {
                            // SAFETY: (row, col) lies inside this matrix's `y`, and every
                            // column belongs to exactly one task, so no two writers touch
                            // the same element.
                            unsafe { *plan.y.0.add((r0 + i) * n + col) = *v };
                        }
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            SCRATCH.set(buf);
        });
        #[cfg(target_arch = "x86_64")]
        if let Some((calls, bytes, t)) = timed {
            prefetch::record(calls, prefetch, bytes, m, pooled, t.elapsed());
        }
        Ok(plans
            .into_iter()
            .map(|p| {
                let mut y = p.out;
                // SAFETY: every element of the `m × n` output has been written (see above).
                unsafe { y.set_len(m * p.w.n) };
                y
            })
            .collect())
    }
}

/// One matrix of a [`QMatrix::matmul_many`] call: its weights, the activations in the
/// layouts its kernels read, and its output.
struct Plan<'a> {
    /// The matrix.
    w: &'a QMatrix,
    /// Its weight bytes, `n` rows of `rb`.
    data: std::borrow::Cow<'a, [u8]>,
    /// Bytes of one weight row.
    rb: usize,
    /// The activations, quantised for its kind's span (shared with the call's other
    /// matrices of that span).
    act: &'a QuantizedRows,
    /// The activations' scales by block, for several rows (SIMD); else empty.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    dt: Vec<f32>,
    /// The activations interleaved for its kind's VNNI tiles, where they run; else empty.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    xi: Vec<i8>,
    /// Q6_K's group offsets or Q8_0's block offsets, where its kernels read them.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    offsets: Vec<i32>,
    /// Left unset: the tasks write every element (each task all rows of its columns, and
    /// the tasks cover every column), so zeroing it first would only cost a pass over
    /// `m × n` values (16 MB for the output layer of a batch of 16).
    out: Vec<f32>,
    /// Where the tasks write `out`'s `m × n` elements.
    y: SendPtr<f32>,
    /// The call's first task of this matrix.
    first_task: usize,
}

impl<'a> Plan<'a> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn new(
        w: &'a QMatrix,
        act: &'a QuantizedRows,
        m: usize,
        nb: usize,
        simd: bool,
        vnni: bool,
        first_task: usize,
    ) -> Result<Self> {
        let data = w.tensor.data()?;
        let mut out: Vec<f32> = Vec::with_capacity(m * w.n);
        // SAFETY (of the writes through it): `out`'s buffer is allocated here and stays
        // where it is while `out` moves into the plan and the plan into the call's list
        // (moving a Vec moves its pointer, not its buffer; the list is never grown after),
        // and nothing reads or reallocates `out` until every task has written.
        let y = SendPtr(out.as_mut_ptr());
        #[cfg(target_arch = "x86_64")]
        let dt = if simd && m > 1 {
            act.scales_by_block(m, nb)
        } else {
            Vec::new()
        };
        // Two rows or more: the VNNI tiles, where the CPU has them (every kind), read the
        // activations interleaved (the same bits as the AVX2 tiles).
        #[cfg(target_arch = "x86_64")]
        let xi = match w.kind {
            _ if !(simd && vnni && m > 1) => Vec::new(),
            Kind::Q4K | Kind::Q6K => avx2::interleave(w.kind, &act.q, m, nb),
            Kind::Q4_1 | Kind::Q5_0 | Kind::Q8_0 => avx2::interleave_blocks(&act.q, m, nb),
        };
        // Q6_K's VNNI tiles and its decoding read the activations' group sums, and Q8_0's
        // VNNI tiles their block sums, once per call.
        #[cfg(target_arch = "x86_64")]
        let offsets = match w.kind {
            Kind::Q6K if !xi.is_empty() || (simd && m == 1) => act.group_offsets(),
            Kind::Q8_0 if !xi.is_empty() => avx2::block_offsets(&act.q, m, nb),
            _ => Vec::new(),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (dt, xi, offsets) = (Vec::new(), Vec::new(), Vec::new());
        Ok(Self {
            w,
            data,
            rb: w.row_bytes(),
            act,
            dt,
            xi,
            offsets,
            out,
            y,
            first_task,
        })
    }
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
mod avx2;
pub mod prefetch;
mod quantize;
mod scalar;

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
            // With or without the AVX-512 VNNI decoding kernel (Q4_K, where the CPU has it).
            let plain = mat
                .matmul_with(&x[r * k..(r + 1) * k], 1, false, None)
                .unwrap();
            assert_eq!(plain, alone, "{dtype:?}, without VNNI");
            // Whichever prefetch distance decoding uses (past the matrix's end included).
            for d in prefetch::DISTANCES.into_iter().chain([64, 1 << 20]) {
                let fixed = mat
                    .matmul_with(&x[r * k..(r + 1) * k], 1, true, Some(d))
                    .unwrap();
                assert_eq!(fixed, alone, "{dtype:?}, prefetch {d}");
            }
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
        // Q8_0 outside the VNNI tiles), blocks in full groups of eight and in a last partial group (K-quants
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

    fn matrix(dtype: GgmlDType, n: usize, k: usize, seed: usize) -> QMatrix {
        let w: Vec<f32> = (0..n * k)
            .map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, dtype).unwrap();
        QMatrix::from_qtensor(std::sync::Arc::new(q))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn several_matrices_in_one_call_give_each_ones_bits_alone() {
        // A layer's projections: all five kinds, with one scale per block and per
        // super-block, side by side; widths that do and do not fill a last task; and each
        // kind of call (none, decoding one row, batched decoding, a prompt's chunk).
        let k = 512;
        let mats = [
            matrix(GgmlDType::Q4K, 96, k, 1),
            matrix(GgmlDType::Q6K, 40, k, 2),
            matrix(GgmlDType::Q8_0, 33, k, 3),
            matrix(GgmlDType::Q4K, 64, k, 4),
            matrix(GgmlDType::Q4_1, 7, k, 5),
            matrix(GgmlDType::Q5_0, 11, k, 6),
        ];
        let refs: Vec<&QMatrix> = mats.iter().collect();
        // On this CPU's kernels with and without the VNNI ones, and on the scalar fallback
        // (where a CPU has the SIMD kernels, they are the path taken; the fallback is
        // checked here on every machine).
        for (simd, vnni) in [(true, true), (true, false), (false, false)] {
            for m in [0, 1, 3, 8, 17] {
                // Blocks of different magnitudes, so that a block quantised with its own
                // scale differs from one sharing its super-block's.
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0 * (1 + i / QK % 5) as f32)
                    .collect();
                let many = QMatrix::matmul_many_with(&refs, &x, m, simd, vnni, None).unwrap();
                assert_eq!(many.len(), mats.len());
                for (w, y) in mats.iter().zip(&many) {
                    let alone = QMatrix::matmul_many_with(&[w], &x, m, simd, vnni, None)
                        .unwrap()
                        .pop()
                        .unwrap();
                    assert_eq!(y.len(), m * w.n());
                    let same = alone.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{:?}, {m} rows, simd {simd}, vnni {vnni}", w.kind);
                }
                if simd && vnni {
                    // The path a model takes.
                    for (w, y) in mats.iter().zip(&many) {
                        assert_eq!(&w.matmul(&x, m).unwrap(), y, "{:?}", w.kind);
                    }
                }
            }
        }
        // Matrices of different widths cannot share an input; none is no call.
        let narrow = matrix(GgmlDType::Q4K, 8, 256, 7);
        let e = QMatrix::matmul_many(&[&mats[0], &narrow], &[0.0; 512], 1).unwrap_err();
        assert!(e.to_string().contains("512 and 256 inputs"), "{e}");
        assert!(QMatrix::matmul_many(&[], &[], 1).unwrap().is_empty());
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn activations_quantise_to_the_same_bits_with_and_without_simd() {
        use super::quantize::{amax, quantize_block};
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
        // levels than it would alone. (The first span above holds an infinity; this one is
        // finite.)
        let finite: Vec<f32> = (0..8 * QK)
            .map(|i| {
                if i < QK {
                    0.01 * i as f32
                } else {
                    (i % 97) as f32 - 48.0
                }
            })
            .collect();
        let shared = QuantizedRows::new(&finite, 8);
        let alone = QuantizedRows::new(&finite, 1);
        assert!(shared
            .d
            .iter()
            .all(|d| *d == shared.d[0] && d.is_finite() && *d > 0.0));
        assert!(
            alone.d[0] < shared.d[0],
            "{} vs {}",
            alone.d[0],
            shared.d[0]
        );
        let levels = |r: &QuantizedRows| {
            let mut q: Vec<i8> = r.q[..QK].to_vec();
            q.sort();
            q.dedup();
            q.len()
        };
        assert!(levels(&shared) < levels(&alone));
    }

    #[test]
    fn the_vnni_tiles_give_the_avx2_tiles_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            // Whatever `LLM_JUDGE_NO_VNNI` says: the test asks for each path itself.
            if !(simd_available() && avx2::vnni_supported()) {
                eprintln!("no AVX-512 VNNI on this CPU: only the AVX2 tiles run here");
                return;
            }
            let n = 47;
            // Every tile shape: 4 × 2 (and two side by side for Q4_K), the last rows (3 × 2,
            // 2 × 4, 1 × 8), the last columns one at a time. The K-quants with one, two and
            // three super-blocks (pairs full and half empty); the block kinds also with rows of
            // 28 blocks (the 0.5B's 896 values) and of 4, whose last group of eight is partial.
            let kinds = [
                (GgmlDType::Q4K, 256),
                (GgmlDType::Q4K, 512),
                (GgmlDType::Q4K, 768),
                (GgmlDType::Q6K, 256),
                (GgmlDType::Q6K, 512),
                (GgmlDType::Q6K, 768),
                (GgmlDType::Q4_1, 768),
                (GgmlDType::Q4_1, 896),
                (GgmlDType::Q5_0, 128),
                (GgmlDType::Q5_0, 768),
                (GgmlDType::Q5_0, 896),
                (GgmlDType::Q8_0, 768),
                (GgmlDType::Q8_0, 896),
            ];
            for (dtype, k, m) in kinds
                .into_iter()
                .flat_map(|(d, k)| [2, 3, 4, 5, 6, 7, 8, 19].map(|m| (d, k, m)))
            {
                let w: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 53 % 211) as f32 - 105.0) / 70.0)
                    .collect();
                let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&wt, dtype).unwrap();
                let mat = QMatrix::from_qtensor(std::sync::Arc::new(q))
                    .unwrap()
                    .unwrap();
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
                    .collect();
                let with = mat.matmul_with(&x, m, true, None).unwrap();
                let without = mat.matmul_with(&x, m, false, None).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&with), bits(&without), "{dtype:?}, {m} rows of {k}");
                assert!(with.iter().any(|v| *v != 0.0));
                // Whichever distance the unpacking asks ahead (past the matrix's end
                // included), on either path.
                for (d, vnni) in [(64, true), (8192, true), (1 << 20, true), (8192, false)] {
                    let fixed = mat.matmul_with(&x, m, vnni, Some(d)).unwrap();
                    assert_eq!(
                        bits(&fixed),
                        bits(&without),
                        "{dtype:?}, {m} rows of {k}, prefetch {d}, VNNI {vnni}"
                    );
                }
            }
        }
    }

    #[test]
    fn decoding_calls_one_sequence_or_several_are_timed_for_the_prefetch() {
        let wt = Tensor::from_vec(
            (0..64 * 256)
                .map(|i| (i % 17) as f32 - 8.0)
                .collect::<Vec<f32>>(),
            (64, 256),
            &Device::Cpu,
        )
        .unwrap();
        let mat = QMatrix::from_qtensor(std::sync::Arc::new(
            QTensor::quantize(&wt, GgmlDType::Q4K).unwrap(),
        ))
        .unwrap()
        .unwrap();
        let x: Vec<f32> = (0..256).map(|i| (i % 5) as f32).collect();
        // Other tests decode at the same time: the counts only grow, by at least ours.
        let (decode, batch) = (prefetch::Calls::Decode, prefetch::Calls::Batch);
        let before = [prefetch::recorded(decode), prefetch::recorded(batch)];
        for _ in 0..10 {
            mat.matmul(&x, 1).unwrap();
        }
        let timed = prefetch::recorded(decode) - before[0];
        // Four rows are batched decoding; a prompt's 64 are neither.
        let x4: Vec<f32> = x.iter().cycle().take(4 * 256).copied().collect();
        let x64: Vec<f32> = x.iter().cycle().take(64 * 256).copied().collect();
        for _ in 0..10 {
            mat.matmul(&x4, 4).unwrap();
            mat.matmul(&x64, 64).unwrap();
        }
        let batched = prefetch::recorded(batch) - before[1];
        if cfg!(target_arch = "x86_64") && simd_available() {
            assert!(timed >= 10, "{timed} decoding calls recorded");
            assert!(batched >= 10, "{batched} batched decoding calls recorded");
        } else {
            // No SIMD column kernel, no prefetch to choose.
            assert_eq!((timed, batched), (0, 0));
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

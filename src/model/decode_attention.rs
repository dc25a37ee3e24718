//! Attention of a single new position against its cache, on the CPU, in plain loops.
//!
//! A decoding step attends one query per head to a few hundred cached keys. Through candle
//! that is a chain of small tensor operations (two matmuls with their packing, the scale,
//! the softmax, the reshapes), each with its own allocation and dispatch, once per sequence
//! and layer: 12-22 % of a batched decoding step on the bundled models. Here it is one pass
//! per head over the cache, read in place: `softmax(q·kᵀ / √d) · v`, with the query heads of
//! each key/value head sharing it (grouped-query attention). The sums run in a fixed order
//! that depends only on the cache length, so a sequence's step does not depend on its
//! batch.

use crate::error::Result;
use candle_core::{DType, Device, Storage, Tensor};

/// `softmax(q·kᵀ / √d) · v` for one position: `q` is `(1, nh, 1, d)`, `k` and `v` are
/// `(1, nkv, len, d)` (views of a cache are fine) with `nh = nkv · rep`. Returns `(1, 1, nh ·
/// d)`, or `None` when the tensors are not f32 on the CPU in a layout read here (the caller
/// then uses candle's operations).
pub(crate) fn single_position(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rep: usize,
) -> Result<Option<Tensor>> {
    if !matches!(q.device(), Device::Cpu)
        || [q, k, v].iter().any(|t| t.dtype() != DType::F32)
        || !q.is_contiguous()
    {
        return Ok(None);
    }
    let (b, nh, seq, d) = q.dims4()?;
    let (kb, nkv, len, kd) = k.dims4()?;
    if b != 1
        || seq != 1
        || kb != 1
        || kd != d
        || rep == 0
        || nkv == 0
        || nkv * rep != nh
        || len == 0
    {
        return Ok(None);
    }
    if v.dims4()? != (1, nkv, len, d) {
        return Ok(None);
    }
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Storage::Cpu(qs), Storage::Cpu(ks), Storage::Cpu(vs)) = (&*qs, &*ks, &*vs) else {
        return Ok(None);
    };
    let (ksd, vsd) = (kl.stride(), vl.stride());
    if ksd[3] != 1 || vsd[3] != 1 {
        return Ok(None);
    }
    let q = &qs.as_slice::<f32>()?[ql.start_offset()..ql.start_offset() + nh * d];
    let (kall, vall) = (ks.as_slice::<f32>()?, vs.as_slice::<f32>()?);
    // The last element either view reads must lie inside its storage.
    let end = |off: usize, st: &[usize]| off + (nkv - 1) * st[1] + (len - 1) * st[2] + d;
    if end(kl.start_offset(), ksd) > kall.len() || end(vl.start_offset(), vsd) > vall.len() {
        return Ok(None);
    }
    let cache = Cache {
        k: kall,
        v: vall,
        k_at: (kl.start_offset(), ksd[1], ksd[2]),
        v_at: (vl.start_offset(), vsd[1], vsd[2]),
        len,
        d,
    };
    let mut out = vec![0f32; nh * d];
    let mut scores = vec![0f32; len];
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    for h in 0..nh {
        let g = h / rep;
        head(
            &cache,
            g,
            &q[h * d..(h + 1) * d],
            scale,
            &mut scores,
            &mut out[h * d..(h + 1) * d],
        );
    }
    Ok(Some(Tensor::from_vec(out, (1, 1, nh * d), &Device::Cpu)?))
}

/// A cache's keys and values as slices, with (offset, head stride, position stride).
struct Cache<'a> {
    k: &'a [f32],
    v: &'a [f32],
    k_at: (usize, usize, usize),
    v_at: (usize, usize, usize),
    len: usize,
    d: usize,
}

/// One query head against key/value head `g`: writes `softmax(q·kᵀ · scale) · v` to `out`.
fn head(c: &Cache<'_>, g: usize, q: &[f32], scale: f32, scores: &mut [f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected at run time.
        unsafe { head_avx2(c, g, q, scale, scores, out) };
        return;
    }
    head_body(c, g, q, scale, scores, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn head_avx2(
    c: &Cache<'_>,
    g: usize,
    q: &[f32],
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    head_body(c, g, q, scale, scores, out);
}

/// The same operations in the same order on every CPU (only the vector width differs, and
/// the eight partial sums of a dot product fix its order).
#[inline(always)]
fn head_body(c: &Cache<'_>, g: usize, q: &[f32], scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let d = c.d;
    let (ko, kh, kp) = c.k_at;
    let (vo, vh, vp) = c.v_at;
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores.iter_mut().enumerate().take(c.len) {
        let at = ko + g * kh + j * kp;
        *s = dot(q, &c.k[at..at + d]) * scale;
        max = max.max(*s);
    }
    let mut sum = 0f32;
    for s in scores.iter_mut().take(c.len) {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (j, s) in scores.iter().enumerate().take(c.len) {
        let p = s / sum;
        let at = vo + g * vh + j * vp;
        for (o, x) in out.iter_mut().zip(&c.v[at..at + d]) {
            *o += p * x;
        }
    }
}

/// `Σ a_i b_i` in eight interleaved partial sums, then a fixed tree.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, k: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * k % 101) as f32 - 50.0) / 37.0)
            .collect()
    }

    /// candle's way: a matmul, the scale, the softmax, a matmul.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, rep: usize) -> Result<Vec<f32>> {
        let (_, nh, _, d) = q.dims4()?;
        let k = k.repeat_interleave_heads(rep)?;
        let v = v.repeat_interleave_heads(rep)?;
        let att = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        Ok(att
            .matmul(&v)?
            .reshape((1, 1, nh * d))?
            .flatten_all()?
            .to_vec1()?)
    }

    trait Heads {
        fn repeat_interleave_heads(&self, rep: usize) -> Result<Tensor>;
    }
    impl Heads for Tensor {
        fn repeat_interleave_heads(&self, rep: usize) -> Result<Tensor> {
            let (b, h, l, d) = self.dims4()?;
            Ok(self
                .unsqueeze(2)?
                .expand((b, h, rep, l, d))?
                .reshape((b, h * rep, l, d))?)
        }
    }

    #[test]
    fn equals_candles_attention_on_a_cache_view() -> Result<()> {
        for (nh, nkv, d, len, cap) in [(9, 3, 64, 37, 256), (4, 1, 256, 5, 8), (2, 2, 12, 1, 3)] {
            let cpu = Device::Cpu;
            let q = Tensor::from_vec(ramp(nh * d, 7), (1, nh, 1, d), &cpu)?;
            // A cache with room for `cap` positions, of which the first `len` are read.
            let kc = Tensor::from_vec(ramp(nkv * cap * d, 13), (1, nkv, cap, d), &cpu)?;
            let vc = Tensor::from_vec(ramp(nkv * cap * d, 29), (1, nkv, cap, d), &cpu)?;
            let (k, v) = (kc.narrow(2, 0, len)?, vc.narrow(2, 0, len)?);
            let got: Vec<f32> = single_position(&q, &k, &v, nh / nkv)?
                .expect("f32 on the CPU")
                .flatten_all()?
                .to_vec1()?;
            let want = reference(&q, &k.contiguous()?, &v.contiguous()?, nh / nkv)?;
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                    "{nh} {d} {i}: {a} vs {b}"
                );
            }
            // A window: the last positions of the cache, as a view that starts later.
            if len > 2 {
                let (k2, v2) = (kc.narrow(2, 2, len - 2)?, vc.narrow(2, 2, len - 2)?);
                let got = single_position(&q, &k2, &v2, nh / nkv)?.expect("cpu");
                let want = reference(&q, &k2.contiguous()?, &v2.contiguous()?, nh / nkv)?;
                let got: Vec<f32> = got.flatten_all()?.to_vec1()?;
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn other_shapes_and_types_are_left_to_candle() -> Result<()> {
        let cpu = Device::Cpu;
        let q = Tensor::zeros((1, 2, 2, 4), DType::F32, &cpu)?;
        let k = Tensor::zeros((1, 2, 3, 4), DType::F32, &cpu)?;
        assert!(single_position(&q, &k, &k, 1)?.is_none(), "two positions");
        let q1 = q.narrow(2, 0, 1)?.contiguous()?;
        assert!(
            single_position(&q1, &k, &k, 3)?.is_none(),
            "heads do not divide"
        );
        let h = q1.to_dtype(DType::F16)?;
        assert!(single_position(&h, &k, &k, 1)?.is_none(), "f16");
        Ok(())
    }
}

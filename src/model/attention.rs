//! Causal attention on the CPU, one query row at a time, reading the KV cache in place.
//!
//! Each query row at position `p` attends to the keys `lo..=p` of its sequence (`lo` is 0,
//! or `p + 1 - window` in a sliding-window layer): `softmax(q·kᵀ / √d) · v`, the query heads
//! of each key/value head sharing it (grouped-query attention). The row is computed by the
//! same operations in the same order whether it is a decoding step, one row of a prompt
//! chunk, or a prompt split anywhere else: its result depends only on its query and the
//! cached keys and values, so a prompt gives the same bits however it was split into
//! chunks, cached prefixes or batched segments.
//!
//! This replaces candle's path on the CPU (two matmuls over the whole square with an
//! additive mask, the softmax, the reshapes, once per sequence and layer), which both did
//! twice the work of a causal prompt and summed in an order that depended on the number of
//! keys a chunk saw. Blocks of four query rows, per key/value head, are split across the
//! kernels' thread pool; a block reads each key and value once for all its queries. With
//! AVX2 and FMA, the scores take two queries against four keys at a time and the weighted
//! sum keeps six queries × 16 values in registers (without them, four × 16), the same bits
//! either way.

use super::parallel::SendPtr;
use crate::error::Result;
use candle_core::{DType, Device, Storage, Tensor};

/// [`causal_batch`] for one sequence (the tests' entry point).
#[cfg(test)]
pub(crate) fn causal(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rep: usize,
    window: Option<usize>,
) -> Result<Option<Tensor>> {
    let seqs = [(q.clone(), k.clone(), v.clone())];
    Ok(causal_batch(&seqs, rep, window)?.map(|mut outs| outs.remove(0)))
}

/// `softmax(q·kᵀ / √d) · v` for the `seq` newest positions of each sequence `(q, k, v)`: `q`
/// is `(1, nh, seq, d)`, `k` and `v` are `(1, nkv, len, d)` (views of a cache are fine; the
/// queries are positions `len - seq .. len`) with `nh = nkv · rep`. Returns each `(1, seq,
/// nh · d)`, or `None` when any sequence's tensors are not f32 on the CPU in a layout read
/// here (the caller then uses candle's operations). The sequences (a batch's decoding step,
/// or its segments) have their work items split across the thread pool together.
pub(crate) fn causal_batch(
    seqs: &[(Tensor, Tensor, Tensor)],
    rep: usize,
    window: Option<usize>,
) -> Result<Option<Vec<Tensor>>> {
    causal_batch_with(seqs, rep, window, simd_available())
}

/// Whether this CPU runs the blocks' AVX2 kernels (AVX2 and FMA).
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

/// [`causal_batch`], with the blocks' AVX2 kernels (`simd`, which the CPU must have) or the
/// plain loops: the same bits either way.
fn causal_batch_with(
    seqs: &[(Tensor, Tensor, Tensor)],
    rep: usize,
    window: Option<usize>,
    simd: bool,
) -> Result<Option<Vec<Tensor>>> {
    let simd = simd && simd_available();
    let mut shapes = Vec::with_capacity(seqs.len());
    for (q, k, v) in seqs {
        match shape(q, k, v, rep, window)? {
            Some(s) => shapes.push(s),
            None => return Ok(None),
        }
    }
    // Each sequence's queries, copied out one lock at a time: a batch's queries are views of
    // one tensor, and one thread must not hold two read locks on the same storage. (Keys and
    // values live in each sequence's own cache.)
    let mut queries = Vec::with_capacity(seqs.len());
    for ((q, _, _), s) in seqs.iter().zip(&shapes) {
        let (qs, ql) = q.storage_and_layout();
        let Storage::Cpu(qs) = &*qs else {
            return Ok(None);
        };
        let at = ql.start_offset();
        let Some(q) = qs.as_slice::<f32>()?.get(at..at + s.nh * s.seq * s.d) else {
            return Ok(None);
        };
        queries.push(q.to_vec());
    }
    let guards: Vec<_> = seqs
        .iter()
        .map(|(_, k, v)| (k.storage_and_layout(), v.storage_and_layout()))
        .collect();
    let mut jobs = Vec::with_capacity(seqs.len());
    for ((((ks, kl), (vs, vl)), shape), q) in guards.iter().zip(&shapes).zip(&queries) {
        let Shape {
            nh,
            seq,
            d,
            nkv,
            len,
        } = *shape;
        let (Storage::Cpu(ks), Storage::Cpu(vs)) = (&**ks, &**vs) else {
            return Ok(None);
        };
        let (ksd, vsd) = (kl.stride(), vl.stride());
        if ksd[3] != 1 || vsd[3] != 1 {
            return Ok(None);
        }
        let (kall, vall) = (ks.as_slice::<f32>()?, vs.as_slice::<f32>()?);
        // The last element either view reads must lie inside its storage.
        let end = |off: usize, st: &[usize]| off + (nkv - 1) * st[1] + (len - 1) * st[2] + d;
        if end(kl.start_offset(), ksd) > kall.len() || end(vl.start_offset(), vsd) > vall.len() {
            return Ok(None);
        }
        jobs.push(Job {
            q,
            cache: Cache {
                k: kall,
                v: vall,
                k_at: (kl.start_offset(), ksd[1], ksd[2]),
                v_at: (vl.start_offset(), vsd[1], vsd[2]),
                d,
            },
            nh,
            nkv,
            seq,
            pos: len - seq,
        });
    }
    // One work item: a block of query rows of one sequence against one key/value head, for
    // its `rep` query heads, so that each key and value is read once for all of them.
    let mut first = Vec::with_capacity(jobs.len() + 1);
    first.push(0);
    for job in &jobs {
        first.push(first[first.len() - 1] + job.seq.div_ceil(ROWS) * job.nkv);
    }
    let mut outs: Vec<Vec<f32>> = jobs
        .iter()
        .map(|j| vec![0f32; j.seq * j.nh * j.cache.d])
        .collect();
    let dsts: Vec<SendPtr<f32>> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    let total = first[jobs.len()];
    super::parallel::for_each_chunk(total, |items| {
        for item in items {
            // The sequence whose items include `item`.
            let s = first.partition_point(|&f| f <= item) - 1;
            let job = &jobs[s];
            let (nh, nkv, seq, d) = (job.nh, job.nkv, job.seq, job.cache.d);
            let local = item - first[s];
            let (b, g) = (local / nkv, local % nkv);
            let scale = (1.0 / (d as f64).sqrt()) as f32;
            let mut queries = Vec::with_capacity(ROWS * rep);
            for i in b * ROWS..seq.min((b + 1) * ROWS) {
                let p = job.pos + i;
                let lo = window.map_or(0, |w| (p + 1).saturating_sub(w));
                for h in g * rep..(g + 1) * rep {
                    // SAFETY: each (row, head) slice of a sequence's output belongs to exactly
                    // one work item, and the outputs outlive the call.
                    let out = unsafe {
                        std::slice::from_raw_parts_mut(dsts[s].0.add((i * nh + h) * d), d)
                    };
                    queries.push(Query {
                        q: &job.q[(h * seq + i) * d..(h * seq + i + 1) * d],
                        lo,
                        scores: vec![0.0; p + 1 - lo],
                        sum: 0.0,
                        out,
                    });
                }
            }
            block(&job.cache, g, scale, &mut queries, simd);
        }
    });
    let outs = jobs
        .iter()
        .zip(outs)
        .map(|(job, out)| Tensor::from_vec(out, (1, job.seq, job.nh * job.cache.d), &Device::Cpu))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Some(outs))
}

/// The sizes of one sequence's attention.
#[derive(Clone, Copy)]
struct Shape {
    /// Query heads.
    nh: usize,
    /// Query rows.
    seq: usize,
    /// Head size.
    d: usize,
    /// Key/value heads.
    nkv: usize,
    /// Keys.
    len: usize,
}

/// The sizes of one sequence's `q`, `k` and `v`, or `None` when they are not f32 on the CPU
/// in the shapes [`causal_batch`] reads.
fn shape(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rep: usize,
    window: Option<usize>,
) -> Result<Option<Shape>> {
    if !matches!(q.device(), Device::Cpu)
        || [q, k, v].iter().any(|t| t.dtype() != DType::F32)
        || !q.is_contiguous()
    {
        return Ok(None);
    }
    let (b, nh, seq, d) = q.dims4()?;
    let (kb, nkv, len, kd) = k.dims4()?;
    if b != 1
        || kb != 1
        || kd != d
        || rep == 0
        || nkv == 0
        || nkv * rep != nh
        || seq == 0
        || seq > len
        || window == Some(0)
        || v.dims4()? != (1, nkv, len, d)
    {
        return Ok(None);
    }
    Ok(Some(Shape {
        nh,
        seq,
        d,
        nkv,
        len,
    }))
}

/// One sequence's part of [`causal_batch`]: its queries and cache.
struct Job<'a> {
    q: &'a [f32],
    cache: Cache<'a>,
    nh: usize,
    nkv: usize,
    seq: usize,
    /// The position of the first query.
    pos: usize,
}

/// Query rows per work item.
const ROWS: usize = 4;

/// One query head of one row: keys `lo..lo + scores.len()`, and where its output goes.
struct Query<'a> {
    q: &'a [f32],
    lo: usize,
    scores: Vec<f32>,
    sum: f32,
    out: &'a mut [f32],
}

impl Query<'_> {
    fn end(&self) -> usize {
        self.lo + self.scores.len()
    }
}

/// A cache's keys and values as slices, with (offset, head stride, position stride).
struct Cache<'a> {
    k: &'a [f32],
    v: &'a [f32],
    k_at: (usize, usize, usize),
    v_at: (usize, usize, usize),
    d: usize,
}

/// Every query of a block against key/value head `g`: writes `softmax(q·kᵀ · scale) · v`
/// to each query's output, with the AVX2 kernels where `simd` says the CPU has them.
fn block(c: &Cache<'_>, g: usize, scale: f32, qs: &mut [Query<'_>], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the caller checked AVX2 and FMA (`simd_available`).
        unsafe { block_avx2(c, g, scale, qs) };
        return;
    }
    let _ = simd;
    block_body::<false>(c, g, scale, qs);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(c: &Cache<'_>, g: usize, scale: f32, qs: &mut [Query<'_>]) {
    block_body::<true>(c, g, scale, qs);
}

/// The same operations in the same order for a query whatever its block and on every CPU:
/// fused multiply-adds (`mul_add` is exactly rounded with or without the instruction),
/// eight partial sums in a fixed tree, keys in ascending order.
///
/// `SIMD` (only where AVX2 and FMA are available) takes the score and weighted-sum loops
/// through the `simd` module's kernels: each query and key still get the same multiply-adds
/// in the same order, so the bits are the plain loops' (tested).
#[inline(always)]
fn block_body<const SIMD: bool>(c: &Cache<'_>, g: usize, scale: f32, qs: &mut [Query<'_>]) {
    let d = c.d;
    let (ko, kh, kp) = c.k_at;
    let (vo, vh, vp) = c.v_at;
    let key = |j: usize| {
        let at = ko + g * kh + j * kp;
        &c.k[at..at + d]
    };
    let first = qs.iter().map(|x| x.lo).min().unwrap_or(0);
    let last = qs.iter().map(|x| x.end()).max().unwrap_or(0);
    // Scores, four keys at a time (four independent chains of multiply-adds), each group
    // of keys read once for every query of the block.
    // With SIMD, two queries that both see all four keys go through one kernel (each key
    // loaded once for both, the eight partial sums reduced in vectors).
    #[cfg(target_arch = "x86_64")]
    let pairs = SIMD && d.is_multiple_of(8);
    let mut j = first;
    while j < last {
        let j4 = (j + 4).min(last);
        let sees = |x: &Query<'_>| j4 - j == 4 && x.lo <= j && j4 <= x.end();
        let mut i = 0;
        while i < qs.len() {
            #[cfg(target_arch = "x86_64")]
            if pairs && i + 1 < qs.len() && sees(&qs[i]) && sees(&qs[i + 1]) {
                let (a, b) = qs.split_at_mut(i + 1);
                let (x, y) = (&mut a[i], &mut b[0]);
                let keys = [key(j), key(j + 1), key(j + 2), key(j + 3)];
                // SAFETY: `SIMD` runs only where AVX2 and FMA are available; every slice
                // holds `d` values, a multiple of eight.
                let [sx, sy] = unsafe { simd::scores_2x4([x.q, y.q], keys, scale) };
                x.scores[j - x.lo..j4 - x.lo].copy_from_slice(&sx);
                y.scores[j - y.lo..j4 - y.lo].copy_from_slice(&sy);
                i += 2;
                continue;
            }
            let x = &mut qs[i];
            let (lo, end) = (x.lo, x.end());
            if sees(x) {
                let s = dot::<4>(x.q, [key(j), key(j + 1), key(j + 2), key(j + 3)]);
                for (o, v) in x.scores[j - lo..j4 - lo].iter_mut().zip(s) {
                    *o = v * scale;
                }
            } else {
                for jj in j.max(lo)..j4.min(end) {
                    x.scores[jj - lo] = dot::<1>(x.q, [key(jj)])[0] * scale;
                }
            }
            i += 1;
        }
        j = j4;
    }
    for x in qs.iter_mut() {
        let max = lanes(&x.scores, f32::NEG_INFINITY, f32::max);
        for s in x.scores.iter_mut() {
            *s = super::activation::exp(*s - max);
        }
        x.sum = lanes(&x.scores, 0.0, |a, b| a + b);
        x.out.fill(0.0);
    }
    // Weighted values. Each query takes its keys in ascending order, one multiply-add per key
    // and element, whatever the grouping below: first the keys only some queries of the
    // block see (sliding windows), then the keys all of them see, four queries × 16 values
    // at a time in registers, then the newest keys only the later rows see.
    let value = |j: usize| {
        let at = vo + g * vh + j * vp;
        &c.v[at..at + d]
    };
    let common_lo = qs.iter().map(|x| x.lo).max().unwrap_or(0);
    let common_end = qs.iter().map(|x| x.end()).min().unwrap_or(0).max(common_lo);
    for x in qs.iter_mut() {
        for j in x.lo..common_lo.min(x.end()) {
            add_value(x, j, value(j), 0..d);
        }
    }
    let tiled = d / DT * DT;
    #[cfg(target_arch = "x86_64")]
    if SIMD && common_lo < common_end {
        // Six queries × 16 values in registers (every group, the last one shorter), then
        // the values past the last 16 as below.
        let values = simd::Values {
            at: c.v[vo + g * vh + common_lo * vp..].as_ptr(),
            stride: vp,
            keys: common_end - common_lo,
            tiled,
        };
        for group in qs.chunks_mut(simd::QS) {
            let mut s = [std::ptr::null::<f32>(); simd::QS];
            let mut o = [std::ptr::null_mut::<f32>(); simd::QS];
            for ((s, o), x) in s.iter_mut().zip(o.iter_mut()).zip(group.iter_mut()) {
                *s = x.scores[common_lo - x.lo..].as_ptr();
                *o = x.out.as_mut_ptr();
            }
            let (s, o) = (&s[..group.len()], &o[..group.len()]);
            // SAFETY: AVX2 and FMA are available (`SIMD`); each query's scores hold its keys
            // `common_lo..common_end` from `s`, its output `d` values, and the values of
            // keys `common_lo..common_end` lie at `values.at + k · vp`, each `d` long.
            unsafe { simd::weighted(s, o, &values) };
            if tiled < d {
                for x in group.iter_mut() {
                    for j in common_lo..common_end {
                        add_value(x, j, value(j), tiled..d);
                    }
                }
            }
        }
    }
    for group in qs.chunks_mut(QT) {
        if SIMD {
            // Done above.
            break;
        }
        if group.len() == QT {
            for c0 in (0..tiled).step_by(DT) {
                let mut acc = [[0f32; DT]; QT];
                for (a, x) in acc.iter_mut().zip(group.iter()) {
                    a.copy_from_slice(&x.out[c0..c0 + DT]);
                }
                for j in common_lo..common_end {
                    let v = &value(j)[c0..c0 + DT];
                    for (a, x) in acc.iter_mut().zip(group.iter()) {
                        let e = x.scores[j - x.lo];
                        for t in 0..DT {
                            a[t] = e.mul_add(v[t], a[t]);
                        }
                    }
                }
                for (a, x) in acc.iter().zip(group.iter_mut()) {
                    x.out[c0..c0 + DT].copy_from_slice(a);
                }
            }
        }
        let rest = if group.len() == QT { tiled..d } else { 0..d };
        if rest.is_empty() {
            continue;
        }
        for x in group.iter_mut() {
            for j in common_lo..common_end {
                add_value(x, j, value(j), rest.clone());
            }
        }
    }
    for x in qs.iter_mut() {
        for j in common_end.max(x.lo)..x.end() {
            add_value(x, j, value(j), 0..d);
        }
    }
    for x in qs.iter_mut() {
        let sum = x.sum;
        for o in x.out.iter_mut() {
            *o /= sum;
        }
    }
}

/// The AVX2 kernels of [`block_body`]'s SIMD path.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Queries per register tile of [`weighted`]: six × 16 values is twelve accumulators.
    pub(super) const QS: usize = 6;

    /// Two queries against four keys, each `d` long (a multiple of eight): for each pair,
    /// [`super::dot`]'s eight partial sums of fused multiply-adds and its fixed tree (tail
    /// zero), times `scale`.
    ///
    /// # Safety
    /// AVX2 and FMA are available; every slice holds the same number of values, a multiple
    /// of eight.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_2x4(q: [&[f32]; 2], k: [&[f32]; 4], scale: f32) -> [[f32; 4]; 2] {
        let d = q[0].len();
        debug_assert!(d.is_multiple_of(8) && q[1].len() == d && k.iter().all(|k| k.len() == d));
        // Plain loops, no closures: the intrinsics stay inside this function's features.
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        for t in (0..d).step_by(8) {
            let mut kv = [_mm256_setzero_ps(); 4];
            for i in 0..4 {
                kv[i] = _mm256_loadu_ps(k[i].as_ptr().add(t));
            }
            for (a, q) in acc.iter_mut().zip(q) {
                let x = _mm256_loadu_ps(q.as_ptr().add(t));
                for i in 0..4 {
                    a[i] = _mm256_fmadd_ps(x, kv[i], a[i]);
                }
            }
        }
        let mut out = [[0f32; 4]; 2];
        for (out, a) in out.iter_mut().zip(&acc) {
            // Lane i + lane i + 4 for each key: [a0+a4, a1+a5, a2+a6, a3+a7].
            let h01 = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a[0], a[1]),
                _mm256_permute2f128_ps::<0x31>(a[0], a[1]),
            );
            let h23 = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a[2], a[3]),
                _mm256_permute2f128_ps::<0x31>(a[2], a[3]),
            );
            // [u0, v0, u2, v2, u1, v1, u3, v3]: u = (a0+a4)+(a1+a5), v = (a2+a6)+(a3+a7);
            // then v + tail (0). Adding 0 to the u lanes too changes no final sum: it only
            // turns -0 into +0, and v + 0 is never -0.
            let w = _mm256_add_ps(_mm256_hadd_ps(h01, h23), _mm256_setzero_ps());
            // u + v: keys 0 and 2 in lanes 0 and 1, keys 1 and 3 in lanes 4 and 5.
            let f = _mm256_hadd_ps(w, w);
            let s = _mm_unpacklo_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps::<1>(f));
            _mm_storeu_ps(out.as_mut_ptr(), _mm_mul_ps(s, _mm_set1_ps(scale)));
        }
        out
    }

    /// The values a [`weighted`] sum reads: `keys` keys from `at`, one every `stride`
    /// floats, of which the first `tiled` values (a multiple of 16) are summed.
    pub(super) struct Values {
        pub(super) at: *const f32,
        pub(super) stride: usize,
        pub(super) keys: usize,
        pub(super) tiled: usize,
    }

    /// `out[q][c] += Σ_k e_q,k · v_k[c]` for the first `v.tiled` values of up to [`QS`]
    /// queries, over the keys `k` of `v` in ascending order (one fused multiply-add per key
    /// and value, as [`super::add_value`]): query `q`'s weights from `s[q]`, its output at
    /// `o[q]`.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `s` and `o` have the same length, at most [`QS`]; each
    /// `s[q]` holds `v.keys` weights, each `o[q]` at least `v.tiled` values, and each of the
    /// keys' values `v.tiled`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted(s: &[*const f32], o: &[*mut f32], v: &Values) {
        match s.len() {
            6 => tile::<6>(s, o, v),
            5 => tile::<5>(s, o, v),
            4 => tile::<4>(s, o, v),
            3 => tile::<3>(s, o, v),
            2 => tile::<2>(s, o, v),
            1 => tile::<1>(s, o, v),
            _ => unreachable!("at most {QS} queries per tile"),
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const Q: usize>(s: &[*const f32], o: &[*mut f32], v: &Values) {
        let mut sq = [std::ptr::null::<f32>(); Q];
        let mut oq = [std::ptr::null_mut::<f32>(); Q];
        sq.copy_from_slice(&s[..Q]);
        oq.copy_from_slice(&o[..Q]);
        let (s, o) = (sq, oq);
        for c0 in (0..v.tiled).step_by(16) {
            let mut acc = [[_mm256_setzero_ps(); 2]; Q];
            for q in 0..Q {
                acc[q] = [
                    _mm256_loadu_ps(o[q].add(c0)),
                    _mm256_loadu_ps(o[q].add(c0 + 8)),
                ];
            }
            let mut at = v.at.add(c0);
            for k in 0..v.keys {
                let v0 = _mm256_loadu_ps(at);
                let v1 = _mm256_loadu_ps(at.add(8));
                for q in 0..Q {
                    let e = _mm256_broadcast_ss(&*s[q].add(k));
                    acc[q][0] = _mm256_fmadd_ps(e, v0, acc[q][0]);
                    acc[q][1] = _mm256_fmadd_ps(e, v1, acc[q][1]);
                }
                // Past the last key this points beyond the cache: never read, so `wrapping`.
                at = at.wrapping_add(v.stride);
            }
            for q in 0..Q {
                _mm256_storeu_ps(o[q].add(c0), acc[q][0]);
                _mm256_storeu_ps(o[q].add(c0 + 8), acc[q][1]);
            }
        }
    }
}

/// Queries and values per register tile of the weighted sum.
const QT: usize = 4;
const DT: usize = 16;

/// `out[r] += e_j · v[r]` for the elements `r` of `range`, `e_j` the query's weight of key
/// `j`.
#[inline(always)]
fn add_value(x: &mut Query<'_>, j: usize, v: &[f32], range: std::ops::Range<usize>) {
    let e = x.scores[j - x.lo];
    for (o, y) in x.out[range.clone()].iter_mut().zip(&v[range]) {
        *o = e.mul_add(*y, *o);
    }
}

/// Folds `xs` with `f` in eight interleaved lanes, then a fixed tree.
#[inline(always)]
fn lanes(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(init, |a, &x| f(a, x));
    for c in chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i]);
        }
    }
    f(
        f(f(acc[0], acc[4]), f(acc[1], acc[5])),
        f(f(f(acc[2], acc[6]), f(acc[3], acc[7])), tail),
    )
}

/// `Σ_i q_i k_i` for each of `N` keys, each in eight interleaved partial sums of fused
/// multiply-adds, then a fixed tree: a key's result is the same whatever `N`, and the same
/// with AVX2 (eight lanes in one register) as without.
#[inline(always)]
fn dot<const N: usize>(q: &[f32], ks: [&[f32]; N]) -> [f32; N] {
    let body = q.len() / 8 * 8;
    assert!(ks.iter().all(|k| k.len() == q.len()), "dot: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: AVX2 and FMA were detected at run time; every slice holds `body` values.
        let acc = unsafe { lanes_avx2::<N>(q, &ks, body) };
        return finish(q, &ks, body, &acc);
    }
    let mut acc = [[0f32; 8]; N];
    for t in (0..body).step_by(8) {
        let x = &q[t..t + 8];
        for (a, k) in acc.iter_mut().zip(&ks) {
            let y = &k[t..t + 8];
            for i in 0..8 {
                a[i] = x[i].mul_add(y[i], a[i]);
            }
        }
    }
    finish(q, &ks, body, &acc)
}

/// The eight partial sums of [`dot`] with AVX2: one fused multiply-add per lane and step,
/// as the plain loop does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn lanes_avx2<const N: usize>(q: &[f32], ks: &[&[f32]; N], body: usize) -> [[f32; 8]; N] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); N];
    for t in (0..body).step_by(8) {
        let x = _mm256_loadu_ps(q.as_ptr().add(t));
        for (a, k) in acc.iter_mut().zip(ks) {
            *a = _mm256_fmadd_ps(x, _mm256_loadu_ps(k.as_ptr().add(t)), *a);
        }
    }
    let mut out = [[0f32; 8]; N];
    for (o, a) in out.iter_mut().zip(&acc) {
        _mm256_storeu_ps(o.as_mut_ptr(), *a);
    }
    out
}

/// The tail and the fixed tree of [`dot`].
#[inline(always)]
fn finish<const N: usize>(
    q: &[f32],
    ks: &[&[f32]; N],
    body: usize,
    acc: &[[f32; 8]; N],
) -> [f32; N] {
    let mut out = [0f32; N];
    for ((o, a), k) in out.iter_mut().zip(acc).zip(ks) {
        let tail = q[body..]
            .iter()
            .zip(&k[body..])
            .fold(0f32, |t, (x, y)| x.mul_add(*y, t));
        *o = ((a[0] + a[4]) + (a[1] + a[5])) + (((a[2] + a[6]) + (a[3] + a[7])) + tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, k: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * k % 101) as f32 - 50.0) / 37.0)
            .collect()
    }

    /// candle's way: a matmul, the scale, the additive mask, the softmax, a matmul.
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        rep: usize,
        window: Option<usize>,
    ) -> Result<Vec<f32>> {
        let (_, nh, seq, d) = q.dims4()?;
        let len = k.dim(2)?;
        let heads = |t: &Tensor| -> Result<Tensor> {
            let (b, h, l, d) = t.dims4()?;
            Ok(t.unsqueeze(2)?
                .expand((b, h, rep, l, d))?
                .reshape((b, h * rep, l, d))?)
        };
        let (k, v) = (heads(k)?, heads(v)?);
        let pos = len - seq;
        let mask: Vec<f32> = (0..seq)
            .flat_map(|i| {
                (0..len).map(move |j| {
                    let p = pos + i;
                    if j <= p && window.is_none_or(|w| p - j < w) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (seq, len), &Device::Cpu)?;
        let att = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&mask)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        Ok(att
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((1, seq, nh * d))?
            .flatten_all()?
            .to_vec1()?)
    }

    /// Queries `(1, nh, seq, d)` and a cache of `cap` positions, of which `len` are read.
    fn inputs(
        nh: usize,
        nkv: usize,
        d: usize,
        seq: usize,
        len: usize,
        cap: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let cpu = Device::Cpu;
        let q = Tensor::from_vec(ramp(nh * seq * d, 7), (1, nh, seq, d), &cpu)?;
        let kc = Tensor::from_vec(ramp(nkv * cap * d, 13), (1, nkv, cap, d), &cpu)?;
        let vc = Tensor::from_vec(ramp(nkv * cap * d, 29), (1, nkv, cap, d), &cpu)?;
        Ok((q, kc.narrow(2, 0, len)?, vc.narrow(2, 0, len)?))
    }

    #[test]
    fn equals_candles_masked_attention_on_a_cache_view() -> Result<()> {
        for (nh, nkv, d, seq, len, cap, window) in [
            (9, 3, 64, 1, 37, 256, None),
            (9, 3, 64, 20, 37, 256, None),
            (4, 1, 256, 5, 8, 8, Some(3)),
            (4, 1, 256, 1, 8, 8, Some(3)),
            (2, 2, 12, 3, 3, 5, None),
        ] {
            let (q, k, v) = inputs(nh, nkv, d, seq, len, cap)?;
            let got: Vec<f32> = causal(&q, &k, &v, nh / nkv, window)?
                .expect("f32 on the CPU")
                .flatten_all()?
                .to_vec1()?;
            let want = reference(&q, &k.contiguous()?, &v.contiguous()?, nh / nkv, window)?;
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5 * (1.0 + b.abs()),
                    "{nh} {d} {seq} {window:?} {i}: {a} vs {b}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_batch_gives_each_sequence_the_bits_it_gets_alone() -> Result<()> {
        // Three sequences of different lengths and query rows (a decoding step, a chunk and
        // a whole prompt), attended together and one by one.
        let (nh, nkv, d) = (4, 2, 20);
        let seqs = [
            inputs(nh, nkv, d, 1, 9, 16)?,
            inputs(nh, nkv, d, 5, 12, 16)?,
            inputs(nh, nkv, d, 7, 7, 8)?,
        ];
        for window in [None, Some(4)] {
            let together = causal_batch(&seqs, 2, window)?.expect("cpu");
            assert_eq!(together.len(), seqs.len());
            for ((q, k, v), got) in seqs.iter().zip(&together) {
                let alone: Vec<f32> = causal(q, k, v, 2, window)?
                    .expect("cpu")
                    .flatten_all()?
                    .to_vec1()?;
                assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, alone, "{window:?}");
            }
        }
        // One sequence in a layout not read here sends the whole batch to candle's path.
        let odd = (
            seqs[0].0.to_dtype(DType::F16)?,
            seqs[0].1.clone(),
            seqs[0].2.clone(),
        );
        assert!(causal_batch(&[seqs[1].clone(), odd], 2, None)?.is_none());
        Ok(())
    }

    #[test]
    fn the_avx2_kernels_give_the_plain_loops_bits() -> Result<()> {
        if !simd_available() {
            eprintln!("no AVX2 and FMA on this CPU: only the plain loops run here");
            return Ok(());
        }
        // The judge's groups (6 and 7 query heads per key/value head: tiles of six and the
        // rest), head sizes with and without a tail past 16 values or 8 (the plain dot),
        // blocks of rows whose keys differ (causal, sliding window), and keys in the cache
        // before the first query.
        for (nh, nkv, d, seq, len, cap, window) in [
            (12, 2, 128, 9, 40, 64, None),
            (14, 2, 64, 7, 7, 8, None),
            (14, 2, 64, 6, 30, 32, Some(5)),
            (4, 2, 24, 5, 13, 16, None),
            (6, 3, 20, 4, 11, 16, Some(3)),
            (12, 2, 128, 1, 33, 64, None),
            // Blocks of 7 and 5 queries: tiles of six and one, and of five.
            (7, 1, 64, 1, 9, 16, None),
            (5, 1, 32, 1, 9, 16, None),
            // A full cache (`len == cap`): the last key is the storage's last position.
            (4, 1, 256, 3, 8, 8, None),
        ] {
            let (q, k, v) = inputs(nh, nkv, d, seq, len, cap)?;
            let seqs = [(q, k, v)];
            let bits = |simd: bool| -> Result<Vec<u32>> {
                let out = causal_batch_with(&seqs, nh / nkv, window, simd)?.expect("cpu");
                let out: Vec<f32> = out[0].flatten_all()?.to_vec1()?;
                Ok(out.iter().map(|x| x.to_bits()).collect())
            };
            let (fast, plain) = (bits(true)?, bits(false)?);
            assert_eq!(
                fast, plain,
                "{nh}/{nkv} heads, d {d}, {seq} rows, {len} keys"
            );
            assert!(plain.iter().any(|&b| b != 0));
        }
        Ok(())
    }

    #[test]
    fn a_row_gives_the_same_bits_however_the_prompt_was_split() -> Result<()> {
        // 12 positions at once, or the first 7 then the last 5, or one at a time: each row
        // sees the same keys and gives exactly the same output.
        // d = 20 leaves a tail for the dot products (20 % 8) and for the tiles (20 % 16).
        for (d, window) in [(16, None), (16, Some(4)), (20, None), (20, Some(4))] {
            let (nh, nkv, len) = (4, 2, 12);
            let (q, k, v) = inputs(nh, nkv, d, len, len, 16)?;
            let whole: Vec<f32> = causal(&q, &k, &v, 2, window)?
                .expect("cpu")
                .flatten_all()?
                .to_vec1()?;
            let row = nh * d;
            for (start, n) in [(0, 7), (7, 5), (11, 1), (3, 1)] {
                let qs = q.narrow(2, start, n)?.contiguous()?;
                let (ks, vs) = (k.narrow(2, 0, start + n)?, v.narrow(2, 0, start + n)?);
                let part: Vec<f32> = causal(&qs, &ks, &vs, 2, window)?
                    .expect("cpu")
                    .flatten_all()?
                    .to_vec1()?;
                assert_eq!(
                    part[..],
                    whole[start * row..(start + n) * row],
                    "{start}+{n}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn other_shapes_and_types_are_left_to_candle() -> Result<()> {
        let cpu = Device::Cpu;
        let k = Tensor::zeros((1, 2, 3, 4), DType::F32, &cpu)?;
        let q = Tensor::zeros((1, 2, 4, 4), DType::F32, &cpu)?;
        assert!(
            causal(&q, &k, &k, 1, None)?.is_none(),
            "more queries than keys"
        );
        let q1 = q.narrow(2, 0, 1)?.contiguous()?;
        assert!(
            causal(&q1, &k, &k, 3, None)?.is_none(),
            "heads do not divide"
        );
        assert!(causal(&q1, &k, &k, 1, Some(0))?.is_none(), "empty window");
        let h = q1.to_dtype(DType::F16)?;
        assert!(causal(&h, &k, &k, 1, None)?.is_none(), "f16");
        Ok(())
    }
}

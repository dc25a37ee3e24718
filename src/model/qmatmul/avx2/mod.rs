//! The AVX2 kernel. A register tile holds up to eight output elements (row, column
//! pairs), one per lane of a single accumulator. For each block the tile computes every
//! pair's integer dot product `P` (exact, in 32-bit lanes), reduces the eight pairs' lanes
//! into one vector, converts it (exactly for a block: `|P| < 2²⁴`; a K-quant super-block's
//! sum, up to 2²⁸, is rounded once, the same way on every path) and multiplies it by the scale
//! products: `t = P · (scale · d)`, `scale` the weight block's scale and `d` the
//! activation block's (for the K-quants, one `t` per super-block of eight blocks, from
//! their `P` summed in integers). Eight blocks' `t` are summed in a fixed tree,
//! `((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))` (zeros standing in past the last
//! block), and the groups one after the other; the bias term is added at the end. Every
//! path below (decoding, tiles of any shape, weights read in place or unpacked first)
//! does exactly these operations per element, so the result never depends on the batch.
mod blocks;
mod superblock;
mod vnni;
mod vnni_blocks;

use blocks::transpose8;
pub(super) use blocks::{amax, quantize_block, Packed};
pub(super) use vnni::{available as vnni_available, interleave, supported as vnni_supported};
pub(super) use vnni_blocks::{block_offsets, interleave as interleave_blocks};

use super::{Kind, QuantizedRows, QK};
use blocks::{fetch, operands, products, reduce8, unpack, Sub};
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

/// Bytes of weights a group of eight blocks reads.
const fn group_bytes(k: u8) -> usize {
    match k {
        Q4_1 => 8 * 20,
        Q5_0 => 8 * 22,
        Q8_0 => 8 * 34,
        Q4K => 144,
        _ => 210,
    }
}
/// Output elements per tile: the lanes of one accumulator.
const LANES: usize = 8;
/// Blocks summed together before they join an element's running sum.
const GROUP: usize = 8;

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

/// Asks for the cache lines of the `bytes` bytes at `at`, into the L2 cache: a hint that
/// changes no result (`at` may lie past the weights' end; see [`super::prefetch`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ask(at: *const u8, bytes: usize) {
    let mut line = 0;
    while line < bytes {
        _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(line) as *const i8);
        line += 64;
    }
}

/// Where the kernel reads activations and writes results.
pub(super) struct Io<'a> {
    /// The quantised activations (rows of `nb` blocks).
    pub(super) x: &'a QuantizedRows,
    /// The same, interleaved for the VNNI tiles ([`interleave`] for the K-quants,
    /// [`interleave_blocks`] for the block kinds); empty when they do not run.
    pub(super) xi: &'a [i8],
    /// For Q6_K's VNNI tiles and its decoding, `-32 ·` each 16-value group's activation sum
    /// ([`QuantizedRows::group_offsets`]); for Q8_0's VNNI tiles, `-128 ·` each block's
    /// ([`block_offsets`]); empty otherwise.
    pub(super) offsets: &'a [i32],
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
    /// How many bytes ahead of the super-block or group it reads each weight row's lines are
    /// asked for, where the weights are read from memory once per call: decoding, and the
    /// unpacking for several rows (0: none; see [`super::prefetch`]). It changes no result.
    pub(super) prefetch: usize,
    /// Whether Q4_K's decoding may use its AVX-512 VNNI kernel (the CPU has it, and the
    /// caller wants it). The VNNI tiles run where `xi` is not empty.
    pub(super) vnni: bool,
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
    store::<K, R, C>(acc, &bias, io, r0, col);
}

/// Writes a tile's `R × C` results: lane `c · R + r` of `acc` plus the bias term of row
/// `r0 + r` and column `col + c`, or plus 0 for the kinds without one (which turns -0 into
/// +0). Every tile (AVX2 and VNNI) ends here, so all write the same bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store<const K: u8, const R: usize, const C: usize>(
    acc: __m256,
    bias: &[*const f32; C],
    io: &Io<'_>,
    r0: usize,
    col: usize,
) {
    let nb = io.nb;
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
    let (xq, nb) = (io.x.q.as_ptr(), io.nb);
    let scales = |sb: usize| row_scales::<R>(io, r0, sb);
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

/// The activation scales of rows `r0..r0 + R` for block `sb`, in a tile's lanes (lane `j`:
/// row `r0 + j % R`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_scales<const R: usize>(io: &Io<'_>, r0: usize, sb: usize) -> __m256 {
    match R {
        1 => _mm256_set1_ps(*io.x.d.as_ptr().add(r0 * io.nb + sb)),
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
}

/// One weight column (the GGUF row at `w`) against one activation row (decoding),
/// reading the weights once, in place: per element the same operations as a tile's lane,
/// and the bias term as [`bias_dot`] computes it. `PREFETCH_AHEAD`: ask for the lines
/// `io.prefetch` bytes ahead ([`super::prefetch`]); it changes no result.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn column<const K: u8, const PREFETCH_AHEAD: bool>(w: *const u8, io: &Io<'_>, col: usize) {
    let nb = io.nb;
    let full = nb - nb % GROUP;
    let mut acc = _mm_setzero_ps();
    let mut bias = _mm256_setzero_ps();
    let step = group_bytes(K);
    for g in (0..full).step_by(GROUP) {
        if PREFETCH_AHEAD {
            ask(w.wrapping_add((g / GROUP) * step + io.prefetch), step);
        }
        acc = _mm_add_ss(acc, column_group::<K, true>(w, io, g, &mut bias));
    }
    if full < nb {
        acc = _mm_add_ss(acc, column_group::<K, false>(w, io, full, &mut bias));
    }
    let b = if biased(K) { hsum(bias) } else { 0.0 };
    *io.y.add(col) = _mm_cvtss_f32(acc) + b;
}

/// [`column`] for Q4_K with AVX-512 VNNI ([`superblock::q4k_vnni`]): the same integer per
/// super-block, scaled and summed with the same float operations, so the same bits. (A
/// Q6_K version measured within noise of the AVX2 one and was not kept.)
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn column_q4k_vnni<const PREFETCH_AHEAD: bool>(w: *const u8, io: &Io<'_>, col: usize) {
    let (xq, xd, xs, nb) = (io.x.q.as_ptr(), io.x.d.as_ptr(), io.x.s.as_ptr(), io.nb);
    let mut acc = _mm_setzero_ps();
    let mut bias = _mm256_setzero_ps();
    let step = group_bytes(Q4K);
    for g in (0..nb).step_by(GROUP) {
        let s = w.add((g / GROUP) * step);
        if PREFETCH_AHEAD {
            ask(s.wrapping_add(io.prefetch), step);
        }
        let (p, scale, b) = superblock::q4k_vnni(s, xq.add(g * QK));
        bias = _mm256_fmadd_ps(b, _mm256_loadu_ps(xs.add(g)), bias);
        acc = _mm_add_ss(acc, _mm_set_ss(p as f32 * (scale * *xd.add(g))));
    }
    *io.y.add(col) = _mm_cvtss_f32(acc) + hsum(bias);
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
        // converted once and scaled once (read whole, [`superblock`]).
        let (s, x) = (w.add((g / GROUP) * group_bytes(K)), xq.add(g * QK));
        let (p, scale) = if K == Q4K {
            let (p, scale, b) = superblock::q4k(s, x);
            *bias = _mm256_fmadd_ps(b, _mm256_loadu_ps(xs.add(g)), *bias);
            (p, scale)
        } else {
            superblock::q6k(s, x, io.offsets.as_ptr().add((g / GROUP) * 16))
        };
        return _mm_set_ss(p as f32 * (scale * *xd.add(g)));
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
/// into `bias` (for the kinds with one), asking for the lines `ahead` bytes on (0: none).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack<const K: u8>(
    w: *const u8,
    nb: usize,
    dst: *mut Packed,
    bias: *mut f32,
    ahead: usize,
) {
    for sb in 0..nb {
        if ahead > 0 && sb.is_multiple_of(GROUP) {
            let step = group_bytes(K);
            ask(w.wrapping_add(sb / GROUP * step + ahead), step);
        }
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
    /// K-quant super-blocks unpacked for the VNNI tiles, column after column.
    pairs: Vec<vnni::Pair>,
    /// The block kinds' groups of eight unpacked for the VNNI tiles, column after column.
    groups: Vec<vnni_blocks::Group>,
}

/// The task's columns against every activation row.
///
/// # Safety
/// AVX2, FMA and F16C are available; `cols.data` holds at least `c1` rows of `rb` bytes
/// of `kind`, each `io.nb` sub-blocks long; `io.y` has room for `m` rows times `io.n`,
/// `io.dt` holds the scales by block when `m > 1`, `io.offsets` holds the rows'
/// [`QuantizedRows::group_offsets`] when `kind` is Q6_K and `m == 1` or `io.xi` is not
/// empty, and their [`block_offsets`] when `kind` is Q8_0 and `io.xi` is not empty; `io.xi`
/// is empty or the activations interleaved for `kind` ([`interleave`] or
/// [`interleave_blocks`]) on a CPU with AVX-512 F, BW, VL and VNNI, and so is `io.vnni` set
/// only there; and no one else writes columns `c0..c1`.
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
    // Once per task: decoding Q6_K reads 16 offsets per super-block.
    assert!(
        K != Q6K || m != 1 || io.offsets.len() >= nb / GROUP * 16,
        "decoding Q6_K needs the row's group offsets"
    );
    let weights = Weights {
        base: data.as_ptr(),
        stride: rb,
        first: 0,
    };
    if m == 1 {
        // Decoding: the weights stream past once, read in place, one column after the
        // other (measured: reading two, four or eight columns side by side, as several
        // streams, decodes 20-50 % slower).
        if K == Q4K && io.vnni {
            // SAFETY: the caller set `vnni` only where the CPU has AVX-512 VNNI.
            if io.prefetch > 0 {
                for c in c0..c1 {
                    column_q4k_vnni::<true>(weights.of(c), io, c);
                }
            } else {
                for c in c0..c1 {
                    column_q4k_vnni::<false>(weights.of(c), io, c);
                }
            }
        } else if io.prefetch > 0 {
            for c in c0..c1 {
                column::<K, true>(weights.of(c), io, c);
            }
        } else {
            for c in c0..c1 {
                column::<K, false>(weights.of(c), io, c);
            }
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
    // Several rows, where the VNNI tiles run (the caller made `xi`): every kind unpacked
    // into their layout once per task, from two rows up (measured on the 1.5B: two and
    // four sequences decode 25 % and 40 % faster than with the AVX2 tiles reading the
    // weights in place, and eight rows read in place decode 40 % slower).
    if !io.xi.is_empty() {
        if superblocks(K) {
            // SAFETY: the caller made `xi` only where the VNNI tiles can run, for this kind.
            return vnni::columns::<K>(data.as_ptr(), rb, &bias, &mut buf.pairs, io, m, c1);
        }
        // SAFETY: the caller made `xi` (and Q8_0's offsets) only where the VNNI tiles can
        // run, for this kind.
        return vnni_blocks::columns::<K>(data.as_ptr(), rb, &bias, &mut buf.groups, io, m, c1);
    }
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
        pack::<K>(weights.of(c), nb, dst, bias.of(c), io.prefetch);
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

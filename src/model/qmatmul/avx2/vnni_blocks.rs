//! The block kinds (Q4_1, Q5_0, Q8_0: blocks of 32 values, one float scale each) against
//! several activation rows with AVX-512 VNNI (`vpdpbusd`), where the CPU has it: the same
//! results as the AVX2 tiles, bit for bit, in far fewer operations.
//!
//! The AVX2 tiles multiply each block with `maddubs` and `madd`, reduce the eight elements'
//! lanes into one vector, then convert and scale it: a reduction per block. Here eight
//! blocks are laid out side by side ([`Group`]), so that lane `l` of a vector holds four
//! values of block `l` (the K-quant tiles' layout, with blocks for sub-blocks). `vpdpbusd`
//! then leaves each block's whole integer product `P` in its own lane, on 512-bit vectors
//! (two of the layout's vectors per instruction, the halves added after). One conversion
//! and one multiplication by the blocks' scale products give the eight `t = P · (scale · d)`
//! of an element, and two rounds of `hadd` and one sum of 128-bit halves add the eight
//! elements' blocks in the AVX2 tiles' tree, `((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))`: the same operations on
//! the same numbers (tested in `the_vnni_tiles_give_the_avx2_tiles_bits`).
//!
//! `vpdpbusd` multiplies unsigned bytes by signed ones. Q4_1's and Q5_0's weights are
//! unsigned already (their offsets are the bias terms); Q8_0's are read as `q + 128`, and
//! each block's lane starts at `-128 ·` the sum of its activations ([`block_offsets`]).
//! Rows whose blocks do not fill a last group are padded with zero blocks of scale `+0`,
//! whose `t` is the `+0` the AVX2 tiles put in their place.

use super::{ask, biased, group_bytes, store, transpose8, unpack, Biases, Io, LANES, Q8_0};
use crate::model::qmatmul::QK;
use std::arch::x86_64::*;

/// Eight blocks of a weight column, interleaved: lane `l` of `q[v]` holds values
/// `4v..4v + 4` of block `l`, unsigned (Q4_1's 0..15, Q5_0's 0..31, Q8_0's `q + 128`);
/// `scale[l]` is block `l`'s scale (`+0` past the row's end).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(in crate::model::qmatmul) struct Group {
    q: [[u8; QK]; 8],
    scale: [f32; 8],
}

impl Group {
    /// An all-zero group, to size a buffer before unpacking into it.
    pub(in crate::model::qmatmul) const ZERO: Group = Group {
        q: [[0; QK]; 8],
        scale: [0.0; 8],
    };
}

/// Blocks per row rounded up to whole groups of eight.
const fn padded(nb: usize) -> usize {
    nb.div_ceil(8) * 8
}

/// Activations interleaved for these tiles: `m` rows of `nb` blocks, each padded with zero
/// blocks to whole groups of eight, every group laid out as [`Group`] lays out weights.
pub(in crate::model::qmatmul) fn interleave(q: &[i8], m: usize, nb: usize) -> Vec<i8> {
    debug_assert_eq!(q.len(), m * nb * QK);
    let padded_nb = padded(nb);
    let mut out = vec![0i8; m * padded_nb * QK];
    for r in 0..m {
        for b in 0..nb {
            let src = &q[(r * nb + b) * QK..(r * nb + b + 1) * QK];
            let group = (r * padded_nb + b / 8 * 8) * QK;
            for v in 0..8 {
                let to = group + v * QK + 4 * (b % 8);
                out[to..to + 4].copy_from_slice(&src[4 * v..4 * v + 4]);
            }
        }
    }
    out
}

/// For Q8_0, whose weights these tiles read as `q + 128`: `-128 ·` the sum of each block's
/// activations, by row and padded block (0 in the padding).
pub(in crate::model::qmatmul) fn block_offsets(q: &[i8], m: usize, nb: usize) -> Vec<i32> {
    let padded_nb = padded(nb);
    let mut out = vec![0i32; m * padded_nb];
    for r in 0..m {
        for b in 0..nb {
            let block = &q[(r * nb + b) * QK..(r * nb + b + 1) * QK];
            out[r * padded_nb + b] = -128 * block.iter().map(|&x| x as i32).sum::<i32>();
        }
    }
    out
}

/// Unpacks the `nb` blocks of the weight row at `w` into `nb.div_ceil(8)` groups at `dst`,
/// and (Q4_1, Q5_0) their biases into `bias`: eight blocks unpacked, then moved into
/// [`Group`]'s layout by a transpose of 4-byte units in registers. Asks for the lines
/// `ahead` bytes on (0: none).
// Plain index loops: with iterator adaptors (`zip`, `take`, `enumerate`) eight sequences
// of Gemma 3 decoded 10 % slower (447-448 against 495-514 tokens/s).
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pack<const K: u8>(
    w: *const u8,
    nb: usize,
    dst: *mut Group,
    bias: *mut f32,
    ahead: usize,
) {
    let step = group_bytes(K);
    for g in 0..nb.div_ceil(8) {
        if ahead > 0 {
            ask(w.wrapping_add(g * step + ahead), step);
        }
        let s = &mut *dst.add(g);
        let mut blocks = [_mm256_setzero_si256(); 8];
        s.scale = [0.0; 8];
        for l in 0..8.min(nb - 8 * g) {
            let u = unpack::<K>(w, 8 * g + l);
            // Q8_0's signed values, plus 128 (the sign bit flipped).
            blocks[l] = if K == Q8_0 {
                _mm256_xor_si256(u.q, _mm256_set1_epi8(i8::MIN))
            } else {
                u.q
            };
            s.scale[l] = u.scale;
            if biased(K) {
                *bias.add(8 * g + l) = u.bias;
            }
        }
        // Vector v, lane l: block l's values 4v..4v + 4.
        let q = transpose8(&blocks);
        for v in 0..8 {
            _mm256_store_si256(s.q[v].as_mut_ptr() as *mut __m256i, q[v]);
        }
    }
}

/// The eight elements' `t` (lane `i`: block `i` of the group) summed over the blocks in
/// the AVX2 tiles' tree: lane `j` of the result is `((t0 + t1) + (t2 + t3)) + ((t4 + t5) +
/// (t6 + t7))` of element `j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tree(t: &[__m256; LANES]) -> __m256 {
    let h01 = _mm256_hadd_ps(t[0], t[1]);
    let h23 = _mm256_hadd_ps(t[2], t[3]);
    let h45 = _mm256_hadd_ps(t[4], t[5]);
    let h67 = _mm256_hadd_ps(t[6], t[7]);
    // Lanes 0..4: elements 0..4's `(t0 + t1) + (t2 + t3)`; lanes 4..8 their other half.
    let q0 = _mm256_hadd_ps(h01, h23);
    let q1 = _mm256_hadd_ps(h45, h67);
    _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(q0, q1),
        _mm256_permute2f128_ps::<0x31>(q0, q1),
    )
}

/// Rows `r0..r0 + R` against the `C` weight columns whose groups start at `w` (the first
/// is column `col`); lane `j = c · R + r` of the running sum is row `r0 + r`, column
/// `col + c`, as in the AVX2 tiles. Writes the `R × C` results.
// The indices are the lanes' layout, as in the AVX2 tiles.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const K: u8, const R: usize, const C: usize>(
    w: [*const Group; C],
    bias: [*const f32; C],
    io: &Io<'_>,
    r0: usize,
    col: usize,
) {
    const { assert!(R >= 1 && R <= 4 && C >= 1 && R * C <= LANES) };
    let (nb, padded_nb) = (io.nb, padded(io.nb));
    let (xi, off, xd) = (io.xi.as_ptr(), io.offsets.as_ptr(), io.x.d.as_ptr());
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut acc = _mm256_setzero_ps();
    for g in 0..padded_nb / 8 {
        // 512-bit products: the low half takes vector `v`, the high half `v + 1`.
        let mut a = [_mm512_setzero_si512(); LANES];
        if K == Q8_0 {
            for r in 0..R {
                let at = off.add((r0 + r) * padded_nb + 8 * g) as *const __m256i;
                let o = _mm512_zextsi256_si512(_mm256_loadu_si256(at));
                for c in 0..C {
                    a[c * R + r] = o;
                }
            }
        }
        for v in (0..8).step_by(2) {
            let mut wv = [_mm512_setzero_si512(); C];
            for c in 0..C {
                // Vectors `v` and `v + 1`: a pointer to the whole field, which covers both.
                let q = std::ptr::addr_of!((*w[c].add(g)).q) as *const u8;
                wv[c] = _mm512_load_si512(q.add(v * QK) as *const __m512i);
            }
            for r in 0..R {
                let x = _mm512_loadu_si512(
                    xi.add(((r0 + r) * padded_nb + 8 * g) * QK + v * QK) as *const __m512i
                );
                for c in 0..C {
                    let j = c * R + r;
                    a[j] = _mm512_dpbusd_epi32(a[j], wv[c], x);
                }
            }
        }
        // The rows' block scales (zero past the row's end, so those lanes' `t` is +0).
        let left = nb - 8 * g;
        let mut d = [_mm256_setzero_ps(); R];
        for r in 0..R {
            let at = xd.add((r0 + r) * nb + 8 * g);
            d[r] = if left >= 8 {
                _mm256_loadu_ps(at)
            } else {
                _mm256_maskload_ps(at, _mm256_cmpgt_epi32(_mm256_set1_epi32(left as i32), lane))
            };
        }
        let mut t = [_mm256_setzero_ps(); LANES];
        for c in 0..C {
            let scale = _mm256_load_ps((*w[c].add(g)).scale.as_ptr());
            for r in 0..R {
                let j = c * R + r;
                let p = _mm256_add_epi32(
                    _mm512_castsi512_si256(a[j]),
                    _mm512_extracti64x4_epi64::<1>(a[j]),
                );
                t[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(scale, d[r]));
            }
        }
        acc = _mm256_add_ps(acc, tree(&t));
    }
    store::<K, R, C>(acc, &bias, io, r0, col);
}

/// Rows `r..r + R` against columns `bias.c0..c1`: `C` at a time, then one at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows<const K: u8, const R: usize, const C: usize>(
    base: *const Group,
    bias: &Biases,
    io: &Io<'_>,
    r: usize,
    c1: usize,
) {
    let per = io.nb.div_ceil(8);
    let of = |c: usize| base.add((c - bias.c0) * per);
    let mut c = bias.c0;
    while c + C <= c1 {
        let ws: [*const Group; C] = std::array::from_fn(|i| of(c + i));
        let bs: [*const f32; C] = std::array::from_fn(|i| bias.of(c + i) as *const f32);
        tile::<K, R, C>(ws, bs, io, r, c);
        c += C;
    }
    for c in c..c1 {
        tile::<K, R, 1>([of(c)], [bias.of(c) as *const f32], io, r, c);
    }
}

/// Columns `c0..c1` of a block-kind matrix (GGUF rows of `rb` bytes from `data`) against
/// every activation row: unpacked into `groups`, then tiles of four rows (two columns),
/// then the remaining rows, as [`super::run_tiles`] walks them. The columns' biases (for
/// the kinds with one) are unpacked into `bias` on the way, which has room for
/// `(c1 - c0) · nb` of them.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI are available; `io.xi` holds the
/// activations [`interleave`]d, and for Q8_0 `io.offsets` their [`block_offsets`]; the rest
/// as [`super::columns`] requires.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn columns<const K: u8>(
    data: *const u8,
    rb: usize,
    bias: &Biases,
    groups: &mut Vec<Group>,
    io: &Io<'_>,
    m: usize,
    c1: usize,
) {
    let (c0, nb) = (bias.c0, io.nb);
    let per = nb.div_ceil(8);
    if groups.len() < (c1 - c0) * per {
        groups.resize((c1 - c0) * per, Group::ZERO);
    }
    for c in c0..c1 {
        pack::<K>(
            data.add(c * rb),
            nb,
            groups.as_mut_ptr().add((c - c0) * per),
            bias.of(c),
            io.prefetch,
        );
    }
    let base = groups.as_ptr();
    let mut r = 0;
    while r + 4 <= m {
        rows::<K, 4, 2>(base, bias, io, r, c1);
        r += 4;
    }
    match m - r {
        3 => rows::<K, 3, 2>(base, bias, io, r, c1),
        2 => rows::<K, 2, 4>(base, bias, io, r, c1),
        1 => rows::<K, 1, 8>(base, bias, io, r, c1),
        _ => {}
    }
}

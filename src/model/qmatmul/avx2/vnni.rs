//! The K-quants (Q4_K, Q6_K) against several activation rows with AVX-512 VNNI
//! (`vpdpbusd`), where the CPU has it: the same integers as the AVX2 tiles, in fewer
//! multiplications.
//!
//! The AVX2 tiles multiply a 32-value sub-block with `maddubs`, apply its integer scales with
//! `madd` and add (Q6_K also moves the weights' signs onto the activations first): two
//! multiplications and one or two more operations per 32 products. Here a super-block
//! (256 values) is laid out so that each 32-bit lane of a 256-bit vector holds four values
//! of one scale group: Q4_K's eight sub-blocks of 32, one per lane, in eight vectors; Q6_K's
//! sixteen groups of 16, eight per half, in two halves of four vectors. The weights are laid
//! out so once per task ([`Pair`], unpacked as decoding unpacks them) and the
//! activations once per call ([`interleave`]). `vpdpbusd` then leaves each group's whole
//! dot product in its own lane, and one `vpmulld` per half by the groups' integer scales
//! finishes the super-block: eight (Q4_K) or sixteen (Q6_K) `vpdpbusd` and one or two
//! `vpmulld` per 256 products, where the AVX2 tiles take sixteen multiplications. Q6_K's
//! weights are read unsigned (`q + 32`, as `vpdpbusd` needs), and each group's lane starts
//! at `-32 ·` the sum of its activations.
//!
//! Every step is exact in 32-bit integers (`|P| < 2²⁸`, as in the AVX2 tiles), so a
//! super-block's `P` is the same integer, and it is converted, scaled and summed with the
//! same float operations in the same order: the results are the AVX2 kernel's, bit for bit
//! (tested in `the_vnni_tiles_give_the_avx2_tiles_bits`).
//!
//! The products run on 512-bit vectors, each holding one vector of two consecutive
//! super-blocks ([`Pair`]): one `vpdpbusd` does both, and the pair's integer scales and
//! lane sums are applied on 512-bit vectors too ([`reduce16`]); then each super-block's
//! sums are converted, scaled and added in order, as before. On a CPU with full-width
//! 512-bit units (Zen 5, Intel's server cores) that is twice the products per instruction
//! and per cycle. Measured on a 2-core Zen 5 (alternating runs of an 830-token prompt on
//! the 1.5B): 512-bit products over two vectors of one super-block, whose halves were then
//! added, read prompts about 6 % faster than 256-bit ones, and pairs of super-blocks, which
//! skip that addition and halve the scales' and sums' work, 3 % faster again.
//!
//! Decoding several sequences unpacks every weight once per call, so there the unpacking
//! ([`pack`]) is most of the work. It unpacks a super-block whole, as decoding does, and
//! moves it into [`Pair`]'s layout with register transposes of 4-byte units; it used to
//! unpack sub-block by sub-block and copy 4 bytes at a time. Measured on the 1.5B (2-core
//! Zen 5, alternating `bench` runs): eight sequences decoded 77-79 tokens/s in all before,
//! 87-88 with the transposes, and 128-133 when the unpacking also asks for its weights a
//! few KiB ahead ([`super::super::prefetch`]).
//!
//! `LLM_JUDGE_NO_VNNI=1` turns this path off (to compare the two).

use super::blocks::f16;
use super::{
    ask, group_bytes, lanes, row_scales, store, superblock, transpose8, Biases, Io, Q4K, Q6K,
};
use crate::model::qmatmul::QK;
use std::arch::x86_64::*;

/// Whether the CPU has what this path needs: AVX-512 F, BW, VL and VNNI.
pub(in crate::model::qmatmul) fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// Whether this path runs: the CPU has it ([`supported`]) and `LLM_JUDGE_NO_VNNI` is unset,
/// empty or `0` (any other value turns it off). Decided once.
pub(in crate::model::qmatmul) fn available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let off = std::env::var("LLM_JUDGE_NO_VNNI").is_ok_and(|v| !v.is_empty() && v != "0");
        !off && supported()
    })
}

/// Halves of a super-block's vectors, each with its own eight scale groups: one for Q4_K
/// (eight sub-blocks of 32), two for Q6_K (sixteen groups of 16).
const fn halves(k: u8) -> usize {
    if k == Q6K {
        2
    } else {
        1
    }
}

/// Where byte `t` (0..4) of lane `l` of vector `v` of a super-block's interleaved layout
/// comes from, as an offset into the super-block's 256 values in order.
const fn source(k: u8, v: usize, l: usize) -> usize {
    if k == Q6K {
        // Half `v / 4`, group `8 · half + l` (values `16 · group ..`), bytes `4 · (v % 4)`.
        16 * (8 * (v / 4) + l) + 4 * (v % 4)
    } else {
        QK * l + 4 * v
    }
}

/// Two consecutive K-quant super-blocks of a weight column, unpacked and interleaved (the
/// second all zero past the row's end): bytes `32 · s..32 · s + 32` of `q[v]` are vector `v`
/// of super-block `s`, whose lane `l` holds four values of one scale group (see [`source`]),
/// each made unsigned (Q4_K's 0..15, Q6_K's `q + 32`, 0..63); `sc[h]` the integer scales of
/// half `h`'s eight groups, the first super-block's then the second's; `d` their scales.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(in crate::model::qmatmul) struct Pair {
    q: [[u8; 2 * QK]; 8],
    sc: [[i32; 16]; 2],
    d: [f32; 2],
}

impl Pair {
    /// An all-zero pair, to size a buffer before unpacking into it.
    pub(in crate::model::qmatmul) const ZERO: Pair = Pair {
        q: [[0; 2 * QK]; 8],
        sc: [[0; 16]; 2],
        d: [0.0; 2],
    };
}

/// Pairs of super-blocks in a row of `nb` blocks (the last one half empty when the count
/// is odd).
const fn pairs(nb: usize) -> usize {
    (nb / 8).div_ceil(2)
}

/// Activations interleaved for the VNNI tiles of weights of `kind` (Q4_K or Q6_K): `m`
/// rows of `nb` blocks (`nb` a multiple of eight), each pair of super-blocks laid out as
/// [`Pair`] lays out the weights (zeros in a last half-empty pair). Q6_K's tiles also read
/// the activations' group offsets
/// ([`QuantizedRows::group_offsets`](crate::model::qmatmul::quantize::QuantizedRows::group_offsets)).
pub(in crate::model::qmatmul) fn interleave(
    kind: crate::model::qmatmul::Kind,
    q: &[i8],
    m: usize,
    nb: usize,
) -> Vec<i8> {
    let k = if kind == crate::model::qmatmul::Kind::Q6K {
        Q6K
    } else {
        Q4K
    };
    debug_assert!(nb.is_multiple_of(8) && q.len() == m * nb * QK);
    let (ns, np) = (nb / 8, pairs(nb));
    let mut out = vec![0i8; m * np * 16 * QK];
    for r in 0..m {
        for g in 0..ns {
            let src = &q[(r * ns + g) * 8 * QK..(r * ns + g + 1) * 8 * QK];
            let pair = (r * np + g / 2) * 16 * QK + (g % 2) * QK;
            for v in 0..8 {
                for l in 0..8 {
                    let from = source(k, v, l);
                    let to = pair + v * 2 * QK + 4 * l;
                    out[to..to + 4].copy_from_slice(&src[from..from + 4]);
                }
            }
        }
    }
    out
}

/// Unpacks the `nb / 8` super-blocks of the K-quant row at `w` into pairs at `dst`, and
/// (Q4_K) the `nb` sub-block biases into `bias`: each super-block's sub-blocks unpacked
/// whole, as decoding unpacks them ([`superblock`]), then moved into [`Pair`]'s layout by
/// transposes of 4-byte units in registers. Asks for the lines `ahead` bytes on (0: none).
// Plain index loops: iterator adaptors here were not inlined as well (measured on the
// block kinds' unpacking: eight sequences of Gemma 3 decoded 10 % slower).
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pack<const K: u8>(w: *const u8, nb: usize, dst: *mut Pair, bias: *mut f32, ahead: usize) {
    let ns = nb / 8;
    if ns % 2 == 1 {
        // The last pair's second half stays zero.
        *dst.add(ns / 2) = Pair::ZERO;
    }
    let step = group_bytes(K);
    for g in 0..ns {
        if ahead > 0 {
            ask(w.wrapping_add(g * step + ahead), step);
        }
        let (s, half) = (&mut *dst.add(g / 2), g % 2);
        let at = |v: &mut [u8; 2 * QK]| v.as_mut_ptr().add(QK * half) as *mut __m256i;
        if K == Q4K {
            let b = w.add(g * 144);
            let (d, scales, mins) = superblock::q4k_scales(b);
            let nibble = _mm256_set1_epi8(0x0F);
            let mut sub = [_mm256_setzero_si256(); 8];
            for k in 0..4 {
                let [lo, hi] = superblock::q4k_pair(b, k, nibble);
                sub[2 * k] = lo;
                sub[2 * k + 1] = hi;
            }
            // Vector v, lane l: sub-block l's values 4v..4v + 4.
            let q = transpose8(&sub);
            for v in 0..8 {
                _mm256_store_si256(at(&mut s.q[v]), q[v]);
            }
            let sc = s.sc[0].as_mut_ptr().add(8 * half) as *mut __m256i;
            _mm256_storeu_si256(sc, _mm256_cvtepu8_epi32(scales));
            _mm256_storeu_ps(bias.add(g * 8), mins);
            s.d[half] = d;
        } else {
            let b = w.add(g * 210);
            for c in 0..2 {
                // Vector 4c + k, lane l: values 4k..4k + 4 of the half's 16-value group l.
                let q = transpose_groups(&superblock::q6k_half(b, c));
                for k in 0..4 {
                    _mm256_store_si256(at(&mut s.q[4 * c + k]), q[k]);
                }
                let sc = _mm_loadl_epi64(b.add(192 + 8 * c) as *const __m128i);
                let to = s.sc[c].as_mut_ptr().add(8 * half) as *mut __m256i;
                _mm256_storeu_si256(to, _mm256_cvtepi8_epi32(sc));
            }
            s.d[half] = f16(b.add(208));
        }
    }
}

/// Four 32-value sub-blocks as eight 16-value groups (group `l`: half `l % 2` of `r[l / 2]`)
/// of four 4-byte units each, transposed: lane `l` of result `k` is unit `k` of group `l`,
/// that is lane `k + 4 · (l % 2)` of `r[l / 2]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn transpose_groups(r: &[__m256i; 4]) -> [__m256i; 4] {
    // Each sub-block's lanes as pairs (k, k + 4): 64-bit unit k is then that pair.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let p = [
        _mm256_permutevar8x32_epi32(r[0], order),
        _mm256_permutevar8x32_epi32(r[1], order),
        _mm256_permutevar8x32_epi32(r[2], order),
        _mm256_permutevar8x32_epi32(r[3], order),
    ];
    // Then the 4 × 4 transpose of 8-byte units.
    let a = [
        _mm256_unpacklo_epi64(p[0], p[1]),
        _mm256_unpackhi_epi64(p[0], p[1]),
        _mm256_unpacklo_epi64(p[2], p[3]),
        _mm256_unpackhi_epi64(p[2], p[3]),
    ];
    [
        _mm256_permute2x128_si256::<0x20>(a[0], a[2]),
        _mm256_permute2x128_si256::<0x20>(a[1], a[3]),
        _mm256_permute2x128_si256::<0x31>(a[0], a[2]),
        _mm256_permute2x128_si256::<0x31>(a[1], a[3]),
    ]
}

/// [`_mm256_hadd_epi32`] on 512-bit vectors: within each 128-bit lane,
/// `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hadd(a: __m512i, b: __m512i) -> __m512i {
    let (a, b) = (_mm512_castsi512_ps(a), _mm512_castsi512_ps(b));
    let even = _mm512_shuffle_ps::<0b10_00_10_00>(a, b);
    let odd = _mm512_shuffle_ps::<0b11_01_11_01>(a, b);
    _mm512_add_epi32(_mm512_castps_si512(even), _mm512_castps_si512(odd))
}

/// The AVX2 tiles' `reduce8` of both halves of eight 512-bit vectors at once: lane `j` of
/// the result is the sum of the low half of `v[j]`, lane `8 + j` the sum of its high half
/// (integers, so the same sums in any order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn reduce16(v: &[__m512i; 8]) -> __m512i {
    let g0 = hadd(hadd(v[0], v[1]), hadd(v[2], v[3]));
    let g1 = hadd(hadd(v[4], v[5]), hadd(v[6], v[7]));
    // 128-bit lanes: [low 0..4, high 0..4, low 4..8, high 4..8], each summed from two.
    let s = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0b10_00_10_00>(g0, g1),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(g0, g1),
    );
    _mm512_shuffle_i32x4::<0b11_01_10_00>(s, s)
}

/// Rows `r0..r0 + R` against `H` groups of `C` columns whose pairs of super-blocks start
/// at `w` (the first is column `col`): for each group, [`super::tile`]'s lanes, sums and
/// output. Groups side by side share the activations' loads (AVX-512 has the registers).
/// Each 512-bit product covers one vector of two super-blocks; the pair's products are
/// scaled and reduced together ([`reduce16`]), then each super-block's sums are converted,
/// scaled and added in order, as the AVX2 tiles add them.
// The indices are the lanes' layout (`c · R + r`), as in the AVX2 tiles.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const K: u8, const R: usize, const C: usize, const H: usize>(
    w: [[*const Pair; C]; H],
    bias: [[*const f32; C]; H],
    io: &Io<'_>,
    r0: usize,
    col: usize,
) {
    const { assert!(R >= 1 && R <= 4 && C >= 1 && R * C <= 8 && H >= 1 && H <= 2) };
    let nb = io.nb;
    let (ns, np) = (nb / 8, pairs(nb));
    let (xi, off) = (io.xi.as_ptr(), io.offsets.as_ptr());
    let per = 8 / halves(K);
    let mut acc = [_mm256_setzero_ps(); H];
    for p in 0..np {
        let both = 2 * p + 1 < ns;
        let mut a = [[[_mm512_setzero_si512(); 8]; 2]; H];
        if K == Q6K {
            for r in 0..R {
                let at = off.add(((r0 + r) * ns + 2 * p) * 16);
                let mut o = [_mm512_setzero_si512(); 2];
                for (hv, o) in o.iter_mut().enumerate() {
                    let low = _mm256_loadu_si256(at.add(8 * hv) as *const __m256i);
                    let high = if both {
                        _mm256_loadu_si256(at.add(16 + 8 * hv) as *const __m256i)
                    } else {
                        _mm256_setzero_si256()
                    };
                    *o = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high);
                }
                for a in a.iter_mut() {
                    for c in 0..C {
                        a[0][c * R + r] = o[0];
                        a[1][c * R + r] = o[1];
                    }
                }
            }
        }
        for hv in 0..halves(K) {
            for k in 0..per {
                let v = hv * per + k;
                let mut wv = [[_mm512_setzero_si512(); C]; H];
                for h in 0..H {
                    for c in 0..C {
                        wv[h][c] =
                            _mm512_load_si512((*w[h][c].add(p)).q[v].as_ptr() as *const __m512i);
                    }
                }
                for r in 0..R {
                    let x = _mm512_loadu_si512(
                        xi.add(((r0 + r) * np + p) * 16 * QK + v * 2 * QK) as *const __m512i
                    );
                    for h in 0..H {
                        for c in 0..C {
                            let j = c * R + r;
                            a[h][hv][j] = _mm512_dpbusd_epi32(a[h][hv][j], wv[h][c], x);
                        }
                    }
                }
            }
        }
        // Plain code, not `[0, 1].map(..)`: arrays of 512-bit values through `array::map`
        // were not inlined here (prompts read three times slower).
        let d0 = row_scales::<R>(io, r0, 2 * p * 8);
        let d1 = if both {
            row_scales::<R>(io, r0, (2 * p + 1) * 8)
        } else {
            _mm256_setzero_ps()
        };
        let d = [d0, d1];
        for h in 0..H {
            let mut scale = [[0f32; C]; 2];
            let mut prod = [_mm512_setzero_si512(); 8];
            for c in 0..C {
                let s = &*w[h][c].add(p);
                scale[0][c] = s.d[0];
                scale[1][c] = s.d[1];
                let sc0 = _mm512_load_si512(s.sc[0].as_ptr() as *const __m512i);
                let sc1 = _mm512_load_si512(s.sc[1].as_ptr() as *const __m512i);
                let sc = [sc0, sc1];
                for r in 0..R {
                    let j = c * R + r;
                    prod[j] = _mm512_mullo_epi32(a[h][0][j], sc[0]);
                    if K == Q6K {
                        prod[j] = _mm512_add_epi32(prod[j], _mm512_mullo_epi32(a[h][1][j], sc[1]));
                    }
                }
            }
            let sums = reduce16(&prod);
            let sums = [
                _mm512_castsi512_si256(sums),
                _mm512_extracti64x4_epi64::<1>(sums),
            ];
            for s in 0..1 + both as usize {
                let t = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(sums[s]),
                    _mm256_mul_ps(lanes::<R, C>(scale[s]), d[s]),
                );
                acc[h] = _mm256_add_ps(acc[h], t);
            }
        }
    }
    for h in 0..H {
        store::<K, R, C>(acc[h], &bias[h], io, r0, col + h * C);
    }
}

/// Rows `r..r + R` against columns `bias.c0..c1`: `2 · C` columns at a time (Q4_K: two
/// groups side by side), then `C`, then one at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows<const K: u8, const R: usize, const C: usize>(
    base: *const Pair,
    bias: &Biases,
    io: &Io<'_>,
    r: usize,
    c1: usize,
) {
    let per = pairs(io.nb);
    let of = |c: usize| base.add((c - bias.c0) * per);
    let mut c = bias.c0;
    // Q6_K's two halves already fill the registers of one group.
    while K == Q4K && c + 2 * C <= c1 {
        let ws = std::array::from_fn(|h| std::array::from_fn(|i| of(c + h * C + i)));
        let bs =
            std::array::from_fn(|h| std::array::from_fn(|i| bias.of(c + h * C + i) as *const f32));
        tile::<K, R, C, 2>(ws, bs, io, r, c);
        c += 2 * C;
    }
    while c + C <= c1 {
        let ws: [*const Pair; C] = std::array::from_fn(|i| of(c + i));
        let bs: [*const f32; C] = std::array::from_fn(|i| bias.of(c + i) as *const f32);
        tile::<K, R, C, 1>([ws], [bs], io, r, c);
        c += C;
    }
    for c in c..c1 {
        tile::<K, R, 1, 1>([[of(c)]], [[bias.of(c) as *const f32]], io, r, c);
    }
}

/// Columns `c0..c1` of a K-quant matrix (GGUF rows of `rb` bytes from `data`) against every
/// activation row: unpacked into `buf` (and Q4_K's biases into `bias`), then tiles of
/// four rows (two columns; four for Q4_K, two tiles side by side), then the remaining rows,
/// as [`super::run_tiles`] walks them.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI are available; `io.xi` (and for Q6_K
/// `io.offsets`) hold the activations [`interleave`]d for `K`, `io.nb` is a multiple of
/// eight, and the rest as [`super::columns`] requires.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn columns<const K: u8>(
    data: *const u8,
    rb: usize,
    bias: &Biases,
    buf: &mut Vec<Pair>,
    io: &Io<'_>,
    m: usize,
    c1: usize,
) {
    let (c0, nb) = (bias.c0, io.nb);
    let per = pairs(nb);
    if buf.len() < (c1 - c0) * per {
        buf.resize((c1 - c0) * per, Pair::ZERO);
    }
    for c in c0..c1 {
        pack::<K>(
            data.add(c * rb),
            nb,
            buf.as_mut_ptr().add((c - c0) * per),
            bias.of(c),
            io.prefetch,
        );
    }
    let base = buf.as_ptr();
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

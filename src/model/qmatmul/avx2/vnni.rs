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
//! out so once per task ([`Super`], unpacked as the AVX2 tiles unpack them) and the
//! activations once per call ([`interleave`]). `vpdpbusd` then leaves each group's whole
//! dot product in its own lane, and one `vpmulld` per half by the groups' integer scales
//! finishes the super-block: nine (Q4_K) or ten (Q6_K) multiplications per 256 products
//! where the AVX2 tiles take sixteen. Q6_K's weights are read unsigned (`q + 32`, as
//! `vpdpbusd` needs), and each group's lane starts at `-32 ·` the sum of its activations.
//!
//! Every step is exact in 32-bit integers (`|P| < 2²⁸`, as in the AVX2 tiles), so a
//! super-block's `P` is the same integer, and it is converted, scaled and summed with the
//! same float operations in the same order: the results are the AVX2 kernel's, bit for bit
//! (tested in `the_vnni_tiles_give_the_avx2_tiles_bits`).
//!
//! The products run on 512-bit vectors: two of a super-block's vectors, side by side in the
//! layout, in one `vpdpbusd`, and the two halves of each accumulator added before the
//! scales (integers again, so the same `P`). On a CPU with full-width 512-bit units (Zen 5,
//! Intel's server cores) that is twice the products per instruction and per cycle; measured
//! on a 2-core Zen 5, the 1.5B judge's prompts read about 6 % faster than with 256-bit
//! vectors. The rest of a super-block's work (scales, sums) stays as it was.
//!
//! `LLM_JUDGE_NO_VNNI=1` turns this path off (to compare the two).

use super::{bias_dot, biased, lanes, reduce8, row_scales, unpack, Biases, Io, Q4K, Q6K};
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

/// One K-quant super-block of a weight column, unpacked and interleaved: lane `l` of
/// `q[v]` holds four values of one scale group (see [`source`]), each made unsigned (Q4_K's
/// 0..15, Q6_K's `q + 32`, 0..63); `sc[h]` the integer scales of half `h`'s eight groups;
/// `d` the super-block's scale.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(in crate::model::qmatmul) struct Super {
    q: [[u8; QK]; 8],
    sc: [[i32; 8]; 2],
    d: f32,
}

impl Super {
    /// An all-zero super-block, to size a buffer before unpacking into it.
    pub(in crate::model::qmatmul) const ZERO: Super = Super {
        q: [[0; QK]; 8],
        sc: [[0; 8]; 2],
        d: 0.0,
    };
}

/// Activations interleaved for the VNNI tiles of weights of `kind` (Q4_K or Q6_K): `m`
/// rows of `nb` blocks (`nb` a multiple of eight), each run of eight blocks laid out as
/// [`Super`] lays out the weights. Q6_K's tiles also read the activations' group offsets
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
    let mut out = vec![0i8; q.len()];
    for (src, dst) in q.chunks_exact(8 * QK).zip(out.chunks_exact_mut(8 * QK)) {
        for v in 0..8 {
            for l in 0..8 {
                let from = source(k, v, l);
                let to = v * QK + 4 * l;
                dst[to..to + 4].copy_from_slice(&src[from..from + 4]);
            }
        }
    }
    out
}

/// Unpacks the `nb / 8` super-blocks of the K-quant row at `w` into `dst`, and (Q4_K) the
/// `nb` sub-block biases into `bias`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pack<const K: u8>(w: *const u8, nb: usize, dst: *mut Super, bias: *mut f32) {
    for g in 0..nb / 8 {
        let s = &mut *dst.add(g);
        let mut values = [0u8; 8 * QK];
        for b in 0..8 {
            let u = unpack::<K>(w, g * 8 + b);
            // Q6_K's values are signed (-32..31): shifted to 0..63.
            let q = if K == Q6K {
                _mm256_add_epi8(u.q, _mm256_set1_epi8(32))
            } else {
                u.q
            };
            _mm256_storeu_si256(values.as_mut_ptr().add(b * QK) as *mut __m256i, q);
            if K == Q6K {
                s.sc[b / 4][2 * (b % 4)] = u.halves[0] as i32;
                s.sc[b / 4][2 * (b % 4) + 1] = u.halves[1] as i32;
            } else {
                s.sc[0][b] = u.halves[0] as i32;
            }
            s.d = u.scale;
            if biased(K) {
                *bias.add(g * 8 + b) = u.bias;
            }
        }
        for v in 0..8 {
            for l in 0..8 {
                let from = source(K, v, l);
                s.q[v][4 * l..4 * l + 4].copy_from_slice(&values[from..from + 4]);
            }
        }
    }
}

/// Rows `r0..r0 + R` against `H` groups of `C` columns whose super-blocks start at `w` (the
/// first is column `col`): for each group, [`super::tile`]'s lanes, sums and output.
/// Groups side by side share the activations' loads (AVX-512 has the registers).
// The indices are the lanes' layout (`c · R + r`), as in the AVX2 tiles.
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const K: u8, const R: usize, const C: usize, const H: usize>(
    w: [[*const Super; C]; H],
    bias: [[*const f32; C]; H],
    io: &Io<'_>,
    r0: usize,
    col: usize,
) {
    const { assert!(R >= 1 && R <= 4 && C >= 1 && R * C <= 8 && H >= 1 && H <= 2) };
    let nb = io.nb;
    let (xi, off) = (io.xi.as_ptr(), io.offsets.as_ptr());
    let per = 8 / halves(K);
    let mut acc = [_mm256_setzero_ps(); H];
    for g in 0..nb / 8 {
        // 512-bit accumulators: the low half takes vectors `v`, the high half `v + 1` (one
        // 512-bit load each, as the layout keeps them side by side); the halves are added
        // before the scales, so each group's lane holds the same integer as eight 256-bit
        // steps would give.
        let mut a = [[[_mm512_setzero_si512(); 8]; 2]; H];
        if K == Q6K {
            for r in 0..R {
                let at = off.add(((r0 + r) * (nb / 8) + g) * 16);
                let o0 = _mm512_zextsi256_si512(_mm256_loadu_si256(at as *const __m256i));
                let o1 = _mm512_zextsi256_si512(_mm256_loadu_si256(at.add(8) as *const __m256i));
                let o = [o0, o1];
                for a in a.iter_mut() {
                    for c in 0..C {
                        a[0][c * R + r] = o[0];
                        a[1][c * R + r] = o[1];
                    }
                }
            }
        }
        for hv in 0..halves(K) {
            for k in (0..per).step_by(2) {
                let v = hv * per + k;
                let mut wv = [[_mm512_setzero_si512(); C]; H];
                for h in 0..H {
                    for c in 0..C {
                        wv[h][c] =
                            _mm512_load_si512((*w[h][c].add(g)).q[v].as_ptr() as *const __m512i);
                    }
                }
                for r in 0..R {
                    let x = _mm512_loadu_si512(
                        xi.add(((r0 + r) * nb + g * 8) * QK + v * QK) as *const __m512i
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
        let mut sums = [[[_mm256_setzero_si256(); 8]; 2]; H];
        for h in 0..H {
            for hv in 0..halves(K) {
                for j in 0..R * C {
                    let z = a[h][hv][j];
                    sums[h][hv][j] = _mm256_add_epi32(
                        _mm512_castsi512_si256(z),
                        _mm512_extracti64x4_epi64::<1>(z),
                    );
                }
            }
        }
        let a = sums;
        let d = row_scales::<R>(io, r0, g * 8);
        for h in 0..H {
            let mut scale = [0f32; C];
            let mut p = [_mm256_setzero_si256(); 8];
            for c in 0..C {
                let s = &*w[h][c].add(g);
                scale[c] = s.d;
                let sc = [0, 1].map(|hv| _mm256_load_si256(s.sc[hv].as_ptr() as *const __m256i));
                for r in 0..R {
                    let j = c * R + r;
                    p[j] = _mm256_mullo_epi32(a[h][0][j], sc[0]);
                    if K == Q6K {
                        p[j] = _mm256_add_epi32(p[j], _mm256_mullo_epi32(a[h][1][j], sc[1]));
                    }
                }
            }
            let p = _mm256_cvtepi32_ps(reduce8(p));
            let t = _mm256_mul_ps(p, _mm256_mul_ps(lanes::<R, C>(scale), d));
            acc[h] = _mm256_add_ps(acc[h], t);
        }
    }
    let xs = io.x.s.as_ptr();
    for h in 0..H {
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc[h]);
        for c in 0..C {
            for r in 0..R {
                // As the AVX2 tiles do: a bias term, or 0 (which turns -0 into +0).
                let b = if biased(K) {
                    bias_dot(bias[h][c], xs.add((r0 + r) * nb), nb)
                } else {
                    0.0
                };
                *io.y.add((r0 + r) * io.n + col + h * C + c) = out[c * R + r] + b;
            }
        }
    }
}

/// Rows `r..r + R` against columns `bias.c0..c1`: `2 · C` columns at a time (Q4_K: two
/// groups side by side), then `C`, then one at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows<const K: u8, const R: usize, const C: usize>(
    base: *const Super,
    bias: &Biases,
    io: &Io<'_>,
    r: usize,
    c1: usize,
) {
    let per = io.nb / 8;
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
        let ws: [*const Super; C] = std::array::from_fn(|i| of(c + i));
        let bs: [*const f32; C] = std::array::from_fn(|i| bias.of(c + i) as *const f32);
        tile::<K, R, C, 1>([ws], [bs], io, r, c);
        c += C;
    }
    for c in c..c1 {
        tile::<K, R, 1, 1>([[of(c)]], [[bias.of(c) as *const f32]], io, r, c);
    }
}

/// Columns `c0..c1` of a K-quant matrix (GGUF rows of `rb` bytes from `data`) against every
/// activation row: unpacked into `supers` (and Q4_K's biases into `bias`), then tiles of
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
    supers: &mut Vec<Super>,
    io: &Io<'_>,
    m: usize,
    c1: usize,
) {
    let (c0, nb) = (bias.c0, io.nb);
    let per = nb / 8;
    if supers.len() < (c1 - c0) * per {
        supers.resize((c1 - c0) * per, Super::ZERO);
    }
    for c in c0..c1 {
        pack::<K>(
            data.add(c * rb),
            nb,
            supers.as_mut_ptr().add((c - c0) * per),
            bias.of(c),
        );
    }
    let base = supers.as_ptr();
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

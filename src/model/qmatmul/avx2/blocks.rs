//! Weight sub-blocks as the AVX2 kernel reads them: unpacked from each GGUF layout (or from
//! the tiles' [`Packed`] copies), made ready for `maddubs`, and their integer products; and
//! activations quantised with AVX2.

use super::{signed, LANES, Q4K, Q4_1, Q5_0, Q6K, Q8_0};
use crate::model::qmatmul::QK;
use std::arch::x86_64::*;

/// One unpacked 32-value weight sub-block, as the multi-row tiles read it.
#[repr(C, align(32))]
#[derive(Clone, Copy)]
pub(in crate::model::qmatmul) struct Packed {
    pub(super) q: [i8; QK],
    pub(super) scale: f32,
    pub(super) halves: [i16; 2],
}

impl Packed {
    /// An all-zero block, to size a buffer before unpacking into it.
    pub(super) const ZERO: Packed = Packed {
        q: [0; QK],
        scale: 0.0,
        halves: [0; 2],
    };
}

/// A weight sub-block: `value_j = scale · halves[j / 16] · q_j + bias`.
pub(super) struct Sub {
    /// The 32 weights as bytes (signed, or unsigned for the kinds with a bias).
    pub(super) q: __m256i,
    /// The block's float scale (for the K-quants, the super-block's `d`, shared by its
    /// eight blocks).
    pub(super) scale: f32,
    /// Integer scales of the two 16-value halves (Q6_K's sub-block scales, Q4_K's 6-bit
    /// sub-block scale twice; 1 and 1 otherwise), applied exactly in the integer products.
    pub(super) halves: [i16; 2],
    /// The offset of every value.
    pub(super) bias: f32,
}

/// The little-endian f16 at `p`, as f32 (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 16 bytes of nibbles as 32 bytes: the low nibbles first, then the high ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles_16(p: *const u8) -> __m256i {
    let mask = _mm_set1_epi8(0x0F);
    let qs = _mm_loadu_si128(p as *const __m128i);
    let lo = _mm_and_si128(qs, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
    _mm256_set_m128i(hi, lo)
}

/// Bit `j` of `bits` as byte `j` (0xFF when set).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
    let m = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(bytes, m), m)
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K super-block (`s`: its 12 scale
/// bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_min_k4(j: usize, s: *const u8) -> (u8, u8) {
    if j < 4 {
        (*s.add(j) & 63, *s.add(j + 4) & 63)
    } else {
        (
            (*s.add(j + 4) & 0x0F) | ((*s.add(j - 4) >> 6) << 4),
            (*s.add(j + 4) >> 4) | ((*s.add(j) >> 6) << 4),
        )
    }
}

/// Sub-block `sb` of the weight row at `w`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack<const K: u8>(w: *const u8, sb: usize) -> Sub {
    let unit = [1, 1];
    match K {
        Q4_1 => {
            let b = w.add(sb * 20);
            Sub {
                q: nibbles_16(b.add(4)),
                scale: f16(b),
                halves: unit,
                bias: f16(b.add(2)),
            }
        }
        Q5_0 => {
            let b = w.add(sb * 22);
            let d = f16(b);
            let qh = (b.add(2) as *const u32).read_unaligned();
            // The fifth bit adds 16: values 0..31, and the offset of -16 is the bias.
            let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
            Sub {
                q: _mm256_or_si256(nibbles_16(b.add(6)), high),
                scale: d,
                halves: unit,
                bias: -16.0 * d,
            }
        }
        Q8_0 => {
            let b = w.add(sb * 34);
            Sub {
                q: _mm256_loadu_si256(b.add(2) as *const __m256i),
                scale: f16(b),
                halves: unit,
                bias: 0.0,
            }
        }
        Q4K => {
            let s = w.add((sb / 8) * 144);
            let j = sb % 8;
            let (d, dmin) = (f16(s), f16(s.add(2)));
            let (sc, m) = scale_min_k4(j, s.add(4));
            let q = _mm256_loadu_si256(s.add(16 + (j / 2) * 32) as *const __m256i);
            let q = if j.is_multiple_of(2) {
                q
            } else {
                _mm256_srli_epi16(q, 4)
            };
            // The 6-bit sub-block scale is applied exactly, in the integer products; the
            // super-block's `d` is the scale of all eight.
            Sub {
                q: _mm256_and_si256(q, _mm256_set1_epi8(0x0F)),
                scale: d,
                halves: [sc as i16, sc as i16],
                bias: -dmin * m as f32,
            }
        }
        _ => {
            let s = w.add((sb / 8) * 210);
            let (c, g) = ((sb % 8) / 4, sb % 4);
            let ql = s.add(64 * c + if g % 2 == 1 { 32 } else { 0 });
            let low = _mm256_loadu_si256(ql as *const __m256i);
            let low = if g >= 2 {
                _mm256_srli_epi16(low, 4)
            } else {
                low
            };
            let low = _mm256_and_si256(low, _mm256_set1_epi8(0x0F));
            let qh = _mm256_loadu_si256(s.add(128 + 32 * c) as *const __m256i);
            let high = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32)),
                _mm256_set1_epi8(3),
            );
            let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
            let sc = s.add(192 + 8 * c + 2 * g) as *const i8;
            Sub {
                q: _mm256_sub_epi8(q, _mm256_set1_epi8(32)),
                scale: f16(s.add(208)),
                halves: [*sc as i16, *sc.add(1) as i16],
                bias: 0.0,
            }
        }
    }
}

/// Sub-block `sb` of column `w`: read in place (`PACKED` false: `w` is the GGUF row) or
/// from unpacked [`Packed`] blocks (whose bias is not kept: the tiles take the biases
/// from [`biases`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fetch<const K: u8, const PACKED: bool>(w: *const u8, sb: usize) -> Sub {
    if PACKED {
        let p = (w as *const Packed).add(sb);
        Sub {
            q: _mm256_load_si256((*p).q.as_ptr() as *const __m256i),
            scale: (*p).scale,
            halves: (*p).halves,
            bias: 0.0,
        }
    } else {
        unpack::<K>(w, sb)
    }
}

/// A weight sub-block ready to multiply activation blocks ([`products`]).
#[derive(Clone, Copy)]
pub(super) struct Operands {
    /// The bytes themselves (for their signs).
    pub(super) wq: __m256i,
    /// The bytes made unsigned.
    pub(super) aw: __m256i,
    /// The halves' integer scales, as `madd`'s 16-bit multipliers.
    pub(super) mv: __m256i,
}

/// The operands of sub-block `u`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn operands<const K: u8>(u: &Sub) -> Operands {
    Operands {
        wq: u.q,
        aw: if signed(K) { _mm256_abs_epi8(u.q) } else { u.q },
        mv: if K == Q6K {
            _mm256_set_m128i(_mm_set1_epi16(u.halves[1]), _mm_set1_epi16(u.halves[0]))
        } else if K == Q4K {
            _mm256_set1_epi16(u.halves[0])
        } else {
            _mm256_set1_epi16(1)
        },
    }
}

/// The integer products of one weight sub-block with one activation block, as eight
/// 32-bit lanes of four products each, times the halves' integer scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn products<const K: u8>(o: &Operands, x: __m256i) -> __m256i {
    let x = if signed(K) {
        _mm256_sign_epi8(x, o.wq)
    } else {
        x
    };
    _mm256_madd_epi16(_mm256_maddubs_epi16(o.aw, x), o.mv)
}

/// The sum of eight 32-bit lanes (exact while it fits in 32 bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn sum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// The 8 × 8 transpose of 4-byte units: lane `l` of result `v` is lane `v` of `r[l]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn transpose8(r: &[__m256i; 8]) -> [__m256i; 8] {
    let t = [
        _mm256_unpacklo_epi32(r[0], r[1]),
        _mm256_unpackhi_epi32(r[0], r[1]),
        _mm256_unpacklo_epi32(r[2], r[3]),
        _mm256_unpackhi_epi32(r[2], r[3]),
        _mm256_unpacklo_epi32(r[4], r[5]),
        _mm256_unpackhi_epi32(r[4], r[5]),
        _mm256_unpacklo_epi32(r[6], r[7]),
        _mm256_unpackhi_epi32(r[6], r[7]),
    ];
    // u[i] (i < 4: rows 0..4; else rows 4..8): lanes i % 4 and 4 + i % 4 of each row.
    let u = [
        _mm256_unpacklo_epi64(t[0], t[2]),
        _mm256_unpackhi_epi64(t[0], t[2]),
        _mm256_unpacklo_epi64(t[1], t[3]),
        _mm256_unpackhi_epi64(t[1], t[3]),
        _mm256_unpacklo_epi64(t[4], t[6]),
        _mm256_unpackhi_epi64(t[4], t[6]),
        _mm256_unpacklo_epi64(t[5], t[7]),
        _mm256_unpackhi_epi64(t[5], t[7]),
    ];
    [
        _mm256_permute2x128_si256::<0x20>(u[0], u[4]),
        _mm256_permute2x128_si256::<0x20>(u[1], u[5]),
        _mm256_permute2x128_si256::<0x20>(u[2], u[6]),
        _mm256_permute2x128_si256::<0x20>(u[3], u[7]),
        _mm256_permute2x128_si256::<0x31>(u[0], u[4]),
        _mm256_permute2x128_si256::<0x31>(u[1], u[5]),
        _mm256_permute2x128_si256::<0x31>(u[2], u[6]),
        _mm256_permute2x128_si256::<0x31>(u[3], u[7]),
    ]
}

/// Sums of the lanes of eight vectors: lane `j` of the result is the sum of `v[j]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn reduce8(v: [__m256i; LANES]) -> __m256i {
    let h0 = _mm256_hadd_epi32(v[0], v[1]);
    let h1 = _mm256_hadd_epi32(v[2], v[3]);
    let h2 = _mm256_hadd_epi32(v[4], v[5]);
    let h3 = _mm256_hadd_epi32(v[6], v[7]);
    let g0 = _mm256_hadd_epi32(h0, h1);
    let g1 = _mm256_hadd_epi32(h2, h3);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(g0, g1, 0x20),
        _mm256_permute2x128_si256(g0, g1, 0x31),
    )
}

/// [`super::amax`] with AVX2 (`xs`: a multiple of 8 values): the same maximum, NaN
/// skipped.
///
/// # Safety
/// AVX2, FMA and F16C are available. (The length is checked.)
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::model::qmatmul) unsafe fn amax(xs: &[f32]) -> f32 {
    assert!(xs.len().is_multiple_of(8), "amax: whole vectors");
    let sign = _mm256_set1_ps(-0.0);
    // `max_ps` returns its second operand when either is NaN: keeping the running maximum
    // second skips NaN, as `f32::max` does.
    let m = xs.chunks_exact(8).fold(_mm256_setzero_ps(), |m, c| {
        _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr())), m)
    });
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)))
}

/// [`super::quantize_block`] with AVX2: the same operations on 8 lanes, so the same bits
/// (NaN quantised to 0, as there).
///
/// # Safety
/// AVX2, FMA and F16C are available. (Both slices must hold 32 values; that is checked.)
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::model::qmatmul) unsafe fn quantize_block(
    xs: &[f32],
    amax: f32,
    q: &mut [i8],
) -> (f32, i32) {
    assert!(xs.len() == QK && q.len() == QK, "quantize_block: 32 values");
    let p = xs.as_ptr();
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let scale = amax / 127.0;
    let inv = _mm256_set1_ps(if scale > 0.0 && (1.0 / scale).is_finite() {
        1.0 / scale
    } else {
        0.0
    });
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let i = v.map(|x| {
        let r = _mm256_round_ps(
            _mm256_mul_ps(x, inv),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        // NaN lanes become 0 (the scalar `NaN as i8`), before the clamp would keep them.
        let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
    });
    let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    // Pack 32 i32 to 32 i8; the packs work within 128-bit lanes, the permute restores the
    // order.
    let w = _mm256_packs_epi32(i[0], i[1]);
    let z = _mm256_packs_epi32(i[2], i[3]);
    let b = _mm256_packs_epi16(w, z);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, b);
    (scale, sum_epi32(sum))
}

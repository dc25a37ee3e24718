//! One K-quant super-block (256 weights, eight sub-blocks) against one activation row, read
//! whole: the decoding path's inner step.
//!
//! Decoding streams every weight once per token, so its speed is set by how few
//! instructions a super-block takes: at the memory's pace a core has about 30 cycles for
//! one. Unpacking sub-block by sub-block ([`super::blocks::unpack`]) decodes each scale in
//! scalar code and moves it into a vector one at a time, and (Q6_K) moves each weight's sign
//! onto the activations. Here:
//! - Q4_K's twelve bytes of 6-bit scales and minimums are decoded for all eight sub-blocks
//!   at once, in three 32-bit words, and each sub-block's scale is picked out of one vector
//!   by a byte shuffle; the minimums become the eight biases in one conversion;
//! - Q6_K's weights are read unsigned (`q + 32`, 0..63, as `maddubs` needs), and the offset
//!   of 32 is taken off once per super-block, from each 16-value group's activation sum
//!   times its scale ([`super::Io::offsets`]);
//! - where the CPU has AVX-512 VNNI, Q4_K's super-block takes two sub-blocks per 512-bit
//!   `vpdpbusd` ([`q4k_vnni`]): the 32 bytes that hold them, broadcast, shifted per half
//!   and masked, then each lane's sum times its sub-block's scale. On a 2-core Zen 5 the 1.5B
//!   decoded 42.2-42.8 tokens/s against 40.9-41.9 (300 greedy tokens, four alternating
//!   runs, the same text). The same for Q6_K (sub-blocks `g` and `g + 2` of a half) measured
//!   within noise of that and was not kept.
//!
//! The super-block's integer product `P` is exact in 32-bit integers either way (no
//! `maddubs` pair reaches 2¹⁵: `2 · 63 · 127`), so it is the same integer as the tiles', and
//! the caller scales it with the same float operations: the same bits
//! (`every_kind_matches_dequantized_weights_and_is_independent_of_the_batch` decodes each
//! row alone and compares).

use super::blocks::{f16, sum_epi32};
use crate::model::qmatmul::QK;
use std::arch::x86_64::*;

/// The byte-shuffle mask that spreads 16-bit element `lo` over a vector's low 128 bits and
/// element `hi` over its high 128 bits (each half indexes its own 16 bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn spread(lo: usize, hi: usize) -> __m256i {
    let pair = |e: usize| (((2 * e + 1) << 8) | (2 * e)) as i16;
    _mm256_set_m128i(_mm_set1_epi16(pair(hi)), _mm_set1_epi16(pair(lo)))
}

/// The Q4_K super-block at `s` (144 bytes): its scale `d`, its eight 6-bit sub-block scales
/// (the low eight bytes), and the eight sub-blocks' biases `-dmin · min` in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_scales(s: *const u8) -> (f32, __m128i, __m256) {
    let (d, dmin) = (f16(s), f16(s.add(2)));
    // The 12 scale bytes: sub-block j < 4 has its scale in the low six bits of byte j and
    // its minimum in those of byte j + 4; sub-block j ≥ 4 has the low four bits of each in
    // byte j + 4 (scale low, minimum high) and the top two in the top bits of bytes j - 4
    // (scale) and j (minimum).
    let word = |i: usize| (s.add(4 + 4 * i) as *const u32).read_unaligned();
    let (a0, a1, a2) = (word(0), word(1), word(2));
    let scales = [
        a0 & 0x3f3f_3f3f,
        (a2 & 0x0f0f_0f0f) | (((a0 >> 6) & 0x0303_0303) << 4),
    ];
    let mins = [
        a1 & 0x3f3f_3f3f,
        ((a2 >> 4) & 0x0f0f_0f0f) | (((a1 >> 6) & 0x0303_0303) << 4),
    ];
    let bytes = |w: [u32; 2]| _mm_set_epi32(0, 0, w[1] as i32, w[0] as i32);
    let mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes(mins)));
    (d, bytes(scales), _mm256_mul_ps(_mm256_set1_ps(-dmin), mins))
}

/// Sub-blocks `2k` and `2k + 1` of the Q4_K super-block at `s`: their 32 weights each
/// (0..15), from the 32 bytes whose low and high nibbles hold them (`nibble`: `0x0F` in
/// every byte).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_pair(s: *const u8, k: usize, nibble: __m256i) -> [__m256i; 2] {
    let q = _mm256_loadu_si256(s.add(16 + 32 * k) as *const __m256i);
    [
        _mm256_and_si256(q, nibble),
        _mm256_and_si256(_mm256_srli_epi16(q, 4), nibble),
    ]
}

/// Half `c` (0 or 1) of the Q6_K super-block at `s`: its four sub-blocks (`4c..4c + 4`),
/// 32 weights each, read unsigned (`q + 32`, 0..63).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k_half(s: *const u8, c: usize) -> [__m256i; 4] {
    let (nibble, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    // 64 bytes of low nibbles, 32 bytes of high bit pairs.
    let ql = [0, 32].map(|o| _mm256_loadu_si256(s.add(64 * c + o) as *const __m256i));
    let qh = _mm256_loadu_si256(s.add(128 + 32 * c) as *const __m256i);
    // Sub-block g takes its high bits from bit pair g of each byte, moved to bits 4-5.
    let high = [
        _mm256_slli_epi16(qh, 4),
        _mm256_slli_epi16(qh, 2),
        qh,
        _mm256_srli_epi16(qh, 2),
    ];
    let low = [
        ql[0],
        ql[1],
        _mm256_srli_epi16(ql[0], 4),
        _mm256_srli_epi16(ql[1], 4),
    ];
    let mut w = [_mm256_setzero_si256(); 4];
    for g in 0..4 {
        w[g] = _mm256_or_si256(
            _mm256_and_si256(low[g], nibble),
            _mm256_and_si256(high[g], two),
        );
    }
    w
}

/// [`q4k`] with AVX-512 VNNI: two sub-blocks per 512-bit `vpdpbusd` (the 32 bytes that hold
/// them, low nibbles and high, side by side), each lane's sum times its sub-block's scale,
/// all summed: the same integer `P`.
///
/// # Safety
/// As [`q4k`], and AVX-512 F, BW, VL and VNNI are available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q4k_vnni(s: *const u8, x: *const i8) -> (i32, f32, __m256) {
    let (d, scales, bias) = q4k_scales(s);
    let sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi32(scales));
    let nibble = _mm512_set1_epi8(0x0F);
    // The high half's 16-bit lanes shift by four: its bytes become the high nibbles.
    let shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
    let mut acc = _mm512_setzero_si512();
    for k in 0..4 {
        let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(s.add(16 + 32 * k) as *const __m256i));
        let w = _mm512_and_si512(_mm512_srlv_epi16(q, shift), nibble);
        let xv = _mm512_loadu_si512(x.add(2 * k * QK) as *const __m512i);
        let t = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xv);
        // Sub-block 2k's scale in the low eight lanes, 2k + 1's in the high eight.
        let j = 2 * k as i32;
        let pick = _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_set1_epi32(j)),
            _mm256_set1_epi32(j + 1),
        );
        let m = _mm512_permutexvar_epi32(pick, sc);
        acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(t, m));
    }
    (_mm512_reduce_add_epi32(acc), d, bias)
}

/// The Q4_K super-block at `s` (144 bytes) against the 256 activations at `x`: the integer
/// product `P` (each sub-block's products times its 6-bit scale), the super-block's scale
/// `d`, and the eight sub-blocks' biases `-dmin · min` in order.
///
/// # Safety
/// AVX2, FMA and F16C are available; `s` points at 144 readable bytes and `x` at 256.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k(s: *const u8, x: *const i8) -> (i32, f32, __m256) {
    let (d, scales, bias) = q4k_scales(s);
    let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales));
    let nibble = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_si256();
    for k in 0..4 {
        for (h, w) in q4k_pair(s, k, nibble).into_iter().enumerate() {
            let j = 2 * k + h;
            let xv = _mm256_loadu_si256(x.add(j * QK) as *const __m256i);
            let m = _mm256_shuffle_epi8(sc, spread(j, j));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), m));
        }
    }
    (sum_epi32(acc), d, bias)
}

/// The Q6_K super-block at `s` (210 bytes) against the 256 activations at `x`, whose
/// sixteen 16-value groups' sums times -32 are at `off`: the integer product `P` (each
/// group's products of the signed weights `q - 32` times its scale) and the super-block's
/// scale `d`.
///
/// # Safety
/// AVX2, FMA and F16C are available; `s` points at 210 readable bytes, `x` at 256 and `off`
/// at 16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k(s: *const u8, x: *const i8, off: *const i32) -> (i32, f32) {
    let sc8 = _mm_loadu_si128(s.add(192) as *const __m128i);
    let hi8 = _mm_srli_si128(sc8, 8);
    // The offset: Σ over groups of scale · (-32 · the group's activation sum).
    let mut acc = _mm256_add_epi32(
        _mm256_mullo_epi32(
            _mm256_cvtepi8_epi32(sc8),
            _mm256_loadu_si256(off as *const __m256i),
        ),
        _mm256_mullo_epi32(
            _mm256_cvtepi8_epi32(hi8),
            _mm256_loadu_si256(off.add(8) as *const __m256i),
        ),
    );
    // Each half's eight scales as 16-bit values, in both 128-bit halves.
    let sc = [sc8, hi8].map(|h| _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h)));
    for (c, sc) in sc.into_iter().enumerate() {
        for (g, w) in q6k_half(s, c).into_iter().enumerate() {
            let xv = _mm256_loadu_si256(x.add((4 * c + g) * QK) as *const __m256i);
            let m = _mm256_shuffle_epi8(sc, spread(2 * g, 2 * g + 1));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), m));
        }
    }
    (sum_epi32(acc), f16(s.add(208)))
}

//! The scalar fallback: weight sub-blocks unpacked in plain Rust, and one weight row against
//! several activation rows. It sums the same products as the AVX2 kernel in a plainer order,
//! agreeing with it to rounding.

use super::quantize::Rows;
use super::{Kind, QMatrix, QK};

/// One unpacked 32-value weight sub-block.
#[derive(Clone, Copy, Debug)]
pub(super) struct Unpacked {
    pub(super) w: [i8; QK],
    pub(super) lo: f32,
    pub(super) hi: f32,
    pub(super) bias: f32,
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K super-block.
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

impl QMatrix {
    /// Sub-block `sb` (32 values) of weight row `w`, unpacked (scalar).
    pub(super) fn unpack(&self, w: &[u8], sb: usize) -> Unpacked {
        let mut u = Unpacked {
            w: [0; QK],
            lo: 0.0,
            hi: 0.0,
            bias: 0.0,
        };
        match self.kind {
            Kind::Q4_1 => {
                let b = &w[sb * 20..(sb + 1) * 20];
                for j in 0..16 {
                    u.w[j] = (b[4 + j] & 0x0F) as i8;
                    u.w[j + 16] = (b[4 + j] >> 4) as i8;
                }
                u.lo = f16_at(b, 0);
                u.hi = u.lo;
                u.bias = f16_at(b, 2);
            }
            Kind::Q5_0 => {
                let b = &w[sb * 22..(sb + 1) * 22];
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for j in 0..16 {
                    let h0 = ((qh >> j) & 1) as u8;
                    let h1 = ((qh >> (j + 16)) & 1) as u8;
                    u.w[j] = ((b[6 + j] & 0x0F) | (h0 << 4)) as i8 - 16;
                    u.w[j + 16] = ((b[6 + j] >> 4) | (h1 << 4)) as i8 - 16;
                }
                u.lo = f16_at(b, 0);
                u.hi = u.lo;
            }
            Kind::Q8_0 => {
                let b = &w[sb * 34..(sb + 1) * 34];
                for j in 0..QK {
                    u.w[j] = b[2 + j] as i8;
                }
                u.lo = f16_at(b, 0);
                u.hi = u.lo;
            }
            Kind::Q4K => {
                let s = &w[(sb / 8) * 144..(sb / 8 + 1) * 144];
                let j = sb % 8;
                let (d, dmin) = (f16_at(s, 0), f16_at(s, 2));
                let (sc, m) = scale_min_k4(j, &s[4..16]);
                let q = &s[16 + (j / 2) * 32..16 + (j / 2) * 32 + 32];
                for (l, v) in q.iter().enumerate() {
                    u.w[l] = if j.is_multiple_of(2) {
                        v & 0x0F
                    } else {
                        v >> 4
                    } as i8;
                }
                u.lo = d * sc as f32;
                u.hi = u.lo;
                u.bias = -dmin * m as f32;
            }
            Kind::Q6K => {
                let s = &w[(sb / 8) * 210..(sb / 8 + 1) * 210];
                let (c, g) = ((sb % 8) / 4, sb % 4);
                let ql = &s[64 * c..64 * c + 64];
                let qh = &s[128 + 32 * c..128 + 32 * c + 32];
                let sc = &s[192 + 8 * c..192 + 8 * c + 8];
                let d = f16_at(s, 208);
                for l in 0..QK {
                    let low = match g {
                        0 => ql[l] & 0x0F,
                        1 => ql[l + 32] & 0x0F,
                        2 => ql[l] >> 4,
                        _ => ql[l + 32] >> 4,
                    };
                    let high = (qh[l] >> (2 * g)) & 3;
                    u.w[l] = (low | (high << 4)) as i8 - 32;
                }
                u.lo = d * sc[2 * g] as i8 as f32;
                u.hi = d * sc[2 * g + 1] as i8 as f32;
            }
        }
        u
    }

    /// One weight row against every activation row of `x`, in plain Rust.
    pub(super) fn scalar_dot_rows(&self, w: &[u8], x: &Rows<'_>, nb: usize, dst: &mut [f32]) {
        dst.fill(0.0);
        let mut bias = vec![0f32; dst.len()];
        for sb in 0..nb {
            let u = self.unpack(w, sb);
            for (r, (d, b)) in dst.iter_mut().zip(bias.iter_mut()).enumerate() {
                let at = r * nb + sb;
                let xq = &x.q[at * QK..(at + 1) * QK];
                let (mut lo, mut hi) = (0i32, 0i32);
                for j in 0..16 {
                    lo += u.w[j] as i32 * xq[j] as i32;
                    hi += u.w[j + 16] as i32 * xq[j + 16] as i32;
                }
                *d += x.d[at] * (u.lo * lo as f32 + u.hi * hi as f32);
                *b += u.bias * x.s[at];
            }
        }
        for (d, b) in dst.iter_mut().zip(bias) {
            *d += b;
        }
    }
}

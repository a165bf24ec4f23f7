//! Scale rules: the scale (and its code) a block gets from its amax, for
//! every scheme (MX floor/ceil, NVFP4 with and without the tensor scale,
//! scaled FP8); the SIMD leaves evaluate the same rules eight blocks at a
//! time.

use crate::dtype::{F8E4M3, F8E8M0};

/// The amax those bits stand for, or NaN when they are a NaN's or ±∞'s.
pub(crate) fn to_amax(bits: u32) -> f32 {
    if bits >= 0x7F80_0000 {
        f32::NAN
    } else {
        f32::from_bits(bits)
    }
}

/// 2^e as f32, for e in −149..=127 (subnormals included); +∞ above.
pub(super) fn pow2_f32(e: i32) -> f32 {
    if e > 127 {
        f32::INFINITY
    } else if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (e + 149).max(0))
    }
}

/// The 23 fraction bits of the significand of a finite x > 0, normalised
/// (x = 2^⌊log₂ x⌋ · (1 + f / 2^23); f32 subnormals included).
pub(super) fn significand_fraction(x: f32) -> u32 {
    let b = x.to_bits() & 0x7FFF_FFFF;
    if b >> 23 == 0 {
        // Subnormal: shift the leading one out to bit 23.
        let shift = b.leading_zeros() - 8;
        (b << shift) & 0x007F_FFFF
    } else {
        b & 0x007F_FFFF
    }
}

/// ⌊log₂ x⌋ for a finite x > 0 (f32 subnormals included).
pub(super) fn floor_log2(x: f32) -> i32 {
    let b = x.to_bits();
    let e = (b >> 23) as i32;
    if e == 0 {
        // Subnormal: the leading one of the mantissa.
        -127 - ((b & 0x007F_FFFF).leading_zeros() as i32 - 9)
    } else {
        e - 127
    }
}

/// How a block's scale follows from the bits of its largest |x| (NaN
/// and ±∞ have the largest bits): the scalar definition of each scheme,
/// which the fused SIMD quantizer evaluates eight blocks at a time for MX
/// and NVFP4 (`convert::x86_avx2::quantize_blocks`, same bits).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ScaleRule {
    /// MX: 2^(⌊log₂ amax⌋ − emax), plus one with `ceil` when amax's
    /// significand fraction exceeds `max_frac` (the element max's);
    /// exponents clamp at −127, above 127 the scale is NaN.
    Mx {
        emax: i32,
        ceil: bool,
        max_frac: u32,
    },
    /// NVFP4: the E4M3 of amax / 6 (/ s_t) clamped to [2^-9, 448], times
    /// the tensor scale s_t where there is one.
    Nvfp4 { tensor_scale: Option<f32> },
    /// Scaled FP8: amax / max (the power of two at or above it with
    /// `pow2`), at least 2^-149, 1 for an all-zero block; `tensor_amax` replaces the
    /// block's amax (per-tensor scaling).
    Fp8 {
        max: f32,
        pow2: bool,
        tensor_amax: Option<f32>,
    },
}

impl ScaleRule {
    /// The block's f32 scale and its code (NVFP4's E4M3 block scale; 0
    /// for the other schemes).
    pub(crate) fn scale(&self, amax_bits: u32) -> (f32, u8) {
        let amax = to_amax(amax_bits);
        match *self {
            Self::Mx {
                emax,
                ceil,
                max_frac,
            } => {
                if amax.is_nan() {
                    return (f32::NAN, 0);
                }
                let amax = if amax == 0.0 { f32::MIN_POSITIVE } else { amax };
                // amax / max_elem = 2^e · (1 + f_a) / (1 + f_max) with the
                // significand fractions f: at most 2^e exactly when
                // f_a <= f_max, else in (2^e, 2^(e+1)).
                let e = floor_log2(amax) - emax
                    + i32::from(ceil && significand_fraction(amax) > max_frac);
                (F8E8M0::from_exponent(e.max(-127)).to_f32(), 0)
            }
            Self::Nvfp4 { tensor_scale } => {
                let raw = match tensor_scale {
                    Some(s) => amax / 6.0 / s,
                    None => amax / 6.0,
                };
                // E4M3 of the block scale, clamped to [2^-9, 448]; NaN stays.
                let (lo, hi) = (F8E4M3::MIN_POSITIVE_SUBNORMAL.to_f32(), 448.0f32);
                let e4 = if raw.is_nan() {
                    F8E4M3::NAN
                } else {
                    F8E4M3::from_f32_saturating(raw.clamp(lo, hi))
                };
                let s = match tensor_scale {
                    Some(s) => s * e4.to_f32(),
                    None => e4.to_f32(),
                };
                (s, e4.to_bits())
            }
            Self::Fp8 {
                max,
                pow2,
                tensor_amax,
            } => {
                let amax = tensor_amax.unwrap_or(amax);
                if amax.is_nan() {
                    return (f32::NAN, 0);
                }
                if amax == 0.0 {
                    return (1.0, 0);
                }
                // A block of tiny subnormals whose amax / max underflows
                // takes the smallest positive f32, 2^-149: a power of two at
                // or above the exact ratio, so no element saturates and
                // zeros stay zeros.
                let s = (amax / max).max(pow2_f32(-149));
                if pow2 && s.is_finite() {
                    // The smallest power of two at or above s.
                    let e = floor_log2(s);
                    let p = pow2_f32(e);
                    (if p == s { p } else { pow2_f32(e + 1) }, 0)
                } else {
                    (s, 0)
                }
            }
        }
    }
}

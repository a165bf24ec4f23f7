//! Requantization with gemmlowp / TFLite semantics: an i32 accumulator times
//! a real multiplier `M = scale_a·scale_b/scale_out`, represented as a Q31
//! fixed-point multiplier and a power-of-two shift.
//!
//! ```
//! use mixprec::quant::requant::{multiply_by_quantized_multiplier, quantize_multiplier};
//! let (m, shift) = quantize_multiplier(0.25)?; // 0.25 = 0.5 · 2^-1
//! assert_eq!((m, shift), (1 << 30, -1));
//! assert_eq!(multiply_by_quantized_multiplier(100, m, shift), 25);
//! assert_eq!(multiply_by_quantized_multiplier(-6, m, shift), -2); // -1.5 rounds away from zero
//! # Ok::<(), mixprec::Error>(())
//! ```

use crate::Error;

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: the high 32 bits of
/// `2·a·b`, rounded to nearest (ties away from zero), saturating the one
/// overflow case `a = b = i32::MIN`.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncating toward zero, as in C++.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent` rounded to nearest,
/// ties away from zero. `exponent` must be in `0..=31`.
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    debug_assert!(exponent <= 31);
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's `MultiplyByQuantizedMultiplier`: `x · multiplier · 2^shift / 2^31`
/// with the roundings above (a left shift first when `shift > 0`).
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.max(0) as u32;
    let right = (-shift).max(0) as u32;
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left), multiplier),
        right,
    )
}

/// TFLite's `QuantizeMultiplier`: `real = q · 2^shift / 2^31` with
/// `q` in `[2^30, 2^31)` from `frexp`, `q = round(frac · 2^31)` (half away
/// from zero; a result of `2^31` is halved and the shift incremented).
/// `real` must be finite and > 0; shifts below −31 flush the multiplier to 0
/// and shifts above 30 saturate to `(i32::MAX, 30)`, as TFLite does.
pub fn quantize_multiplier(real: f64) -> Result<(i32, i32), Error> {
    if !(real.is_finite() && real > 0.0) {
        return Err(Error::InvalidParameter {
            name: "real multiplier",
            value: format!("{real:e}"),
            requirement: "finite and > 0",
        });
    }
    let (frac, mut shift) = frexp(real);
    let mut q = (frac * (1i64 << 31) as f64).round() as i64;
    if q == 1i64 << 31 {
        q /= 2;
        shift += 1;
    }
    if shift < -31 {
        return Ok((0, 0));
    }
    if shift > 30 {
        // TFLite saturates multipliers of 2^31 and above.
        return Ok((i32::MAX, 30));
    }
    Ok((q as i32, shift))
}

/// `x = frac · 2^exp` with `frac` in `[0.5, 1)`, for finite `x > 0`.
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7FF) as i32;
    if biased == 0 {
        // Subnormal: scale up into the normal range first.
        let (f, e) = frexp(x * 2f64.powi(64));
        return (f, e - 64);
    }
    let frac = f64::from_bits((bits & !(0x7FFu64 << 52)) | (1022u64 << 52));
    (frac, biased - 1022)
}

/// Requantization of an i32 accumulator to an 8-bit output:
/// `clamp(zero_point + MultiplyByQuantizedMultiplier(acc, m, shift), qmin, qmax)`.
pub fn requantize(
    acc: i32,
    multiplier: i32,
    shift: i32,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
) -> i32 {
    multiply_by_quantized_multiplier(acc, multiplier, shift)
        .saturating_add(zero_point)
        .clamp(qmin, qmax)
}

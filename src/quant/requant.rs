//! Requantization with gemmlowp / TFLite semantics: an i32 accumulator times
//! a real multiplier `M = scale_a·scale_b/scale_out`, represented as a Q31
//! fixed-point multiplier and a power-of-two shift.
//!
//! TFLite has two definitions of `MultiplyByQuantizedMultiplier`, and this
//! module offers both; the choice is explicit ([`RequantRounding`]):
//!
//! * [`RequantRounding::Double`] (gemmlowp, TFLite's historical reference):
//!   `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x·2^left, m), right)`,
//!   two roundings;
//! * [`RequantRounding::Single`] (TFLite built with `TFLITE_SINGLE_ROUNDING`):
//!   `(x·m + 2^(30−shift)) >> (31 − shift)` in 64 bits, one rounding (ties
//!   toward +∞).
//!
//! The two differ by one on some inputs (a tie, or a value next to one,
//! after the first rounding of the double form).
//!
//! ```
//! use mixprec::quant::requant::{multiply_by_quantized_multiplier, quantize_multiplier, RequantRounding};
//! let (m, shift) = quantize_multiplier(0.25)?; // 0.25 = 0.5 · 2^-1
//! assert_eq!((m, shift), (1 << 30, -1));
//! let double = |x| multiply_by_quantized_multiplier(x, m, shift, RequantRounding::Double);
//! let single = |x| multiply_by_quantized_multiplier(x, m, shift, RequantRounding::Single);
//! assert_eq!(double(100)?, 25);
//! assert_eq!(double(-6)?, -2); // -1.5 rounds away from zero
//! assert_eq!(single(-6)?, -1); // -1.5 rounds toward +inf
//! assert!(multiply_by_quantized_multiplier(1, m, 31, RequantRounding::Double).is_err());
//! # Ok::<(), mixprec::Error>(())
//! ```

use crate::Error;

/// Which of TFLite's two `MultiplyByQuantizedMultiplier` definitions to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RequantRounding {
    /// gemmlowp's double rounding (TFLite's reference without
    /// `TFLITE_SINGLE_ROUNDING`): the high half of `2·x·m` rounded to
    /// nearest (ties toward +∞), then a rounding right shift (ties away from
    /// zero). The default, as in gemmlowp and TFLite's reference kernels.
    #[default]
    Double,
    /// TFLite's `TFLITE_SINGLE_ROUNDING`: `(x·m + 2^(30−shift)) >> (31 −
    /// shift)` in 64-bit arithmetic; one rounding, ties toward +∞. A result
    /// outside i32 (possible only for `shift > 0`) saturates.
    Single,
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: the high 32 bits of
/// `2·a·b`, rounded to nearest with ties toward +∞ (the nudge is `2^30`
/// for a non-negative product and `1 − 2^30` for a negative one, then the
/// division truncates toward zero), saturating the one overflow case
/// `a = b = i32::MIN` to `i32::MAX`. Defined for every input.
///
/// ```
/// use mixprec::quant::requant::saturating_rounding_doubling_high_mul as srdhm;
/// assert_eq!(srdhm(1 << 30, 1), 1);      //  0.5 → 1
/// assert_eq!(srdhm(-(1 << 30), 1), 0);   // -0.5 → 0 (toward +inf)
/// assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
/// ```
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
/// ties away from zero.
///
/// # Errors
/// [`Error::InvalidParameter`] when `exponent` is above 31.
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> Result<i32, Error> {
    if exponent > 31 {
        return Err(Error::InvalidParameter {
            name: "exponent",
            value: exponent.to_string(),
            requirement: "in 0..=31",
        });
    }
    Ok(rounding_divide_by_pot_unchecked(x, exponent))
}

/// [`rounding_divide_by_pot`] for an `exponent` already known to be ≤ 31.
fn rounding_divide_by_pot_unchecked(x: i32, exponent: u32) -> i32 {
    let mask: i32 = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// Checks a multiplier and shift as TFLite's `DCHECK`s do: `multiplier ≥ 0`,
/// `shift` in `-31..=30`.
pub(crate) fn check_multiplier(multiplier: i32, shift: i32) -> Result<(), Error> {
    if multiplier < 0 {
        return Err(Error::InvalidParameter {
            name: "multiplier",
            value: multiplier.to_string(),
            requirement: ">= 0",
        });
    }
    if !(-31..=30).contains(&shift) {
        return Err(Error::InvalidParameter {
            name: "shift",
            value: shift.to_string(),
            requirement: "in -31..=30",
        });
    }
    Ok(())
}

/// TFLite's `MultiplyByQuantizedMultiplier`: `x · multiplier · 2^shift / 2^31`
/// with the roundings of `rounding`. In the double form a positive shift is
/// applied first as `x · 2^shift`, saturating (TFLite leaves that overflow
/// undefined).
///
/// # Errors
/// [`Error::InvalidParameter`] when `multiplier < 0` or `shift` is outside
/// `-31..=30` (the range TFLite's `QuantizeMultiplier` produces and its
/// kernels check).
pub fn multiply_by_quantized_multiplier(
    x: i32,
    multiplier: i32,
    shift: i32,
    rounding: RequantRounding,
) -> Result<i32, Error> {
    check_multiplier(multiplier, shift)?;
    Ok(mul_quantized_unchecked(x, multiplier, shift, rounding))
}

/// [`multiply_by_quantized_multiplier`] for a checked multiplier and shift.
#[inline]
pub(crate) fn mul_quantized_unchecked(
    x: i32,
    multiplier: i32,
    shift: i32,
    rounding: RequantRounding,
) -> i32 {
    match rounding {
        RequantRounding::Double => {
            let left = shift.max(0) as u32;
            let right = (-shift).max(0) as u32;
            // left <= 30, so 1 << left fits in i32.
            let shifted = x.saturating_mul(1 << left);
            rounding_divide_by_pot_unchecked(
                saturating_rounding_doubling_high_mul(shifted, multiplier),
                right,
            )
        }
        RequantRounding::Single => {
            let total_shift = 31 - shift; // 1..=62
            let round = 1i64 << (total_shift - 1);
            let v = (x as i64 * multiplier as i64 + round) >> total_shift;
            v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
        }
    }
}

/// TFLite's `QuantizeMultiplier`: `real = q · 2^shift / 2^31` with
/// `q` in `[2^30, 2^31)` from `frexp`, `q = round(frac · 2^31)` (half away
/// from zero; a result of `2^31` is halved and the shift incremented).
/// Shifts below −31 flush the multiplier to 0; shifts above 30 saturate
/// to `(i32::MAX, 30)`, as TFLite's single-rounding build
/// (`TFLITE_SINGLE_ROUNDING`) does. TFLite's default (double-rounding)
/// build does not clamp there: it returns the larger shift, which its
/// `MultiplyByQuantizedMultiplier` then applies as a left shift.
///
/// # Errors
/// [`Error::InvalidParameter`] unless `real` is finite and > 0.
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

/// Requantization of an i32 accumulator to an integer output:
/// `clamp(zero_point + MultiplyByQuantizedMultiplier(acc, m, shift), qmin, qmax)`
/// (the zero-point add saturates).
///
/// # Errors
/// [`Error::InvalidParameter`] for a negative multiplier, a shift outside
/// `-31..=30`, or `qmin > qmax`.
pub fn requantize(
    acc: i32,
    multiplier: i32,
    shift: i32,
    zero_point: i32,
    (qmin, qmax): (i32, i32),
    rounding: RequantRounding,
) -> Result<i32, Error> {
    check_multiplier(multiplier, shift)?;
    if qmin > qmax {
        return Err(Error::InvalidParameter {
            name: "output range",
            value: format!("[{qmin}, {qmax}]"),
            requirement: "qmin <= qmax",
        });
    }
    Ok(requantize_unchecked(
        acc, multiplier, shift, zero_point, qmin, qmax, rounding,
    ))
}

/// [`requantize`] for checked parameters.
#[inline]
pub(crate) fn requantize_unchecked(
    acc: i32,
    multiplier: i32,
    shift: i32,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
    rounding: RequantRounding,
) -> i32 {
    mul_quantized_unchecked(acc, multiplier, shift, rounding)
        .saturating_add(zero_point)
        .clamp(qmin, qmax)
}

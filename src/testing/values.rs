//! Value strategies: each maps uniformly drawn integers onto exactly the bit
//! patterns it promises (no filtering, so no rejected samples).

use crate::dtype::FloatElement;
use crate::Error;
use proptest::prelude::*;
use proptest::sample::select;

/// Bits of the sign.
fn sign_bit<T: FloatElement>() -> u32 {
    1 << (T::BITS - 1)
}

/// Bits of the largest finite magnitude (every magnitude at or below it is
/// finite, in every format).
fn max_bits<T: FloatElement>() -> u32 {
    T::MAX.to_raw_bits()
}

/// Bits of the smallest normal magnitude.
fn min_normal_bits<T: FloatElement>() -> u32 {
    T::MIN_POSITIVE.to_raw_bits()
}

/// The value with this sign-magnitude pattern (MXINT8 stores two's
/// complement; every other format is sign-magnitude already).
pub(crate) fn from_sign_magnitude<T: FloatElement>(bits: u32) -> T {
    if T::DTYPE == crate::DType::MxInt8 {
        T::from_raw_bits(crate::dtype::format::sign_magnitude_to_twos(
            bits,
            crate::dtype::format::Format::MXINT8,
        ))
    } else {
        T::from_raw_bits(bits)
    }
}

fn with_sign<T: FloatElement>(negative: bool, magnitude: u32) -> T {
    from_sign_magnitude::<T>(if negative {
        magnitude | sign_bit::<T>()
    } else {
        magnitude
    })
}

/// Every bit pattern of `T`, uniformly: NaNs (with any payload),
/// infinities, zeros, subnormals and normals.
pub fn any_bits<T: FloatElement>() -> impl Strategy<Value = T> + Clone {
    let all = if T::BITS == 32 {
        u32::MAX
    } else {
        (1u32 << T::BITS) - 1
    };
    (0..=all).prop_map(T::from_raw_bits)
}

/// Every finite value of `T` (zeros and subnormals included), uniformly over
/// bit patterns.
pub fn finite<T: FloatElement>() -> impl Strategy<Value = T> + Clone {
    (any::<bool>(), 0..=max_bits::<T>()).prop_map(|(neg, mag)| with_sign::<T>(neg, mag))
}

/// Every normal value of `T` (either sign), uniformly over bit patterns.
pub fn normal<T: FloatElement>() -> impl Strategy<Value = T> + Clone {
    (any::<bool>(), min_normal_bits::<T>()..=max_bits::<T>())
        .prop_map(|(neg, mag)| with_sign::<T>(neg, mag))
}

/// Every subnormal value of `T` (nonzero, either sign), uniformly.
pub fn subnormal<T: FloatElement>() -> impl Strategy<Value = T> + Clone {
    (any::<bool>(), 1..min_normal_bits::<T>()).prop_map(|(neg, mag)| with_sign::<T>(neg, mag))
}

/// The normal values `v` of `T` with `lo <= v <= hi`, uniformly over bit
/// patterns (so every binade in the range is sampled alike, which favours
/// small magnitudes over a uniform real distribution).
///
/// ```
/// use mixprec::{testing::normal_in, FloatElement, F8E4M3};
/// use proptest::{strategy::{Strategy, ValueTree}, test_runner::TestRunner};
/// let s = normal_in::<F8E4M3>(-1.0, 8.0)?;
/// let mut runner = TestRunner::deterministic();
/// for _ in 0..100 {
///     let v = s.new_tree(&mut runner).unwrap().current().to_f32();
///     assert!((-1.0..=8.0).contains(&v) && v.abs() >= 2f32.powi(-6));
/// }
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] when `lo` or `hi` is NaN, `lo > hi`, or no
/// normal value of `T` lies in `[lo, hi]`.
pub fn normal_in<T: FloatElement>(lo: f32, hi: f32) -> Result<BoxedStrategy<T>, Error> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(Error::InvalidParameter {
            name: "normal_in range",
            value: format!("[{lo}, {hi}]"),
            requirement: "lo <= hi, neither NaN",
        });
    }
    // Magnitude ranges (inclusive bit ranges) on each side of zero.
    let positive = magnitudes::<T>(lo.max(0.0), hi);
    let negative = magnitudes::<T>((-hi).max(0.0), -lo);
    let count = |r: Option<(u32, u32)>| r.map_or(0, |(a, b)| u64::from(b - a) + 1);
    let (n_pos, n_neg) = (count(positive), count(negative));
    if n_pos + n_neg == 0 {
        return Err(Error::InvalidParameter {
            name: "normal_in range",
            value: format!("[{lo}, {hi}] for {}", T::DTYPE),
            requirement: "a range holding at least one normal value of the format",
        });
    }
    let (p0, n0) = (positive.map_or(0, |r| r.0), negative.map_or(0, |r| r.0));
    Ok((0..n_pos + n_neg)
        .prop_map(move |i| {
            if i < n_pos {
                with_sign::<T>(false, p0 + i as u32)
            } else {
                with_sign::<T>(true, n0 + (i - n_pos) as u32)
            }
        })
        .boxed())
}

/// The inclusive bit range of normal magnitudes of `T` in `[lo, hi]`
/// (`0 <= lo`), if any.
fn magnitudes<T: FloatElement>(lo: f32, hi: f32) -> Option<(u32, u32)> {
    if hi < lo || hi <= 0.0 {
        return None;
    }
    let max = T::MAX.to_f32();
    let first = if lo <= T::MIN_POSITIVE.to_f32() {
        min_normal_bits::<T>()
    } else if lo > max {
        return None;
    } else {
        // The smallest value >= lo: round, step up if that went below.
        let b = T::from_f32(lo).to_raw_bits();
        if T::from_raw_bits(b).to_f32() < lo {
            b + 1
        } else {
            b
        }
    };
    let last = if hi >= max {
        max_bits::<T>()
    } else {
        let b = T::from_f32(hi).to_raw_bits();
        if T::from_raw_bits(b).to_f32() > hi {
            b - 1
        } else {
            b
        }
    };
    let last = last.min(max_bits::<T>());
    (first.max(min_normal_bits::<T>()) <= last).then_some((first.max(min_normal_bits::<T>()), last))
}

/// f32 inputs within `ulps` f32 steps of the points where rounding from
/// f32 to `T` changes its result: the midpoint between every pair of
/// adjacent finite values of `T` (ties), the midpoint between zero and the
/// smallest subnormal (underflow), and the one just past `MAX` (overflow;
/// not for the formats that saturate, FP6, FP4 and MXINT8, where nothing
/// changes there), of either sign. Rounding bugs live there.
///
/// For `T = f32` itself, where rounding from f32 is the identity, the values
/// lie within `ulps` steps of the binade edges ±2^e and ±MAX (where the
/// spacing of f32 changes), the edges that matter to rounding from a wider
/// format.
///
/// ```
/// use mixprec::{testing::near_rounding_boundary, bf16};
/// use proptest::prelude::*;
/// proptest!(|(x in near_rounding_boundary::<bf16>(3))| {
///     let y = bf16::from_f32(x);
///     // Rounding to nearest: no bf16 value is closer to x than y.
///     let (lo, hi) = (bf16::from_bits(y.to_bits().wrapping_sub(1)), bf16::from_bits(y.to_bits() + 1));
///     for z in [lo, hi] {
///         if z.is_finite() && y.is_finite() {
///             prop_assert!((z.to_f64() - x as f64).abs() >= (y.to_f64() - x as f64).abs());
///         }
///     }
/// });
/// ```
pub fn near_rounding_boundary<T: FloatElement>(ulps: u32) -> impl Strategy<Value = f32> + Clone {
    let ulps = ulps.min(1 << 20) as i64;
    let narrow = T::BITS < 32;
    // f32: binade edges 2^-149 ..= 2^127 (subnormal steps included), and MAX.
    let saturating = T::NAN.is_none() && !T::HAS_INFINITY;
    let points = if narrow && saturating {
        max_bits::<T>() - 1
    } else if narrow {
        max_bits::<T>()
    } else {
        254 + 23 + 1
    };
    (any::<bool>(), 0..=points, -ulps..=ulps).prop_map(move |(neg, i, offset)| {
        let centre = if narrow {
            midpoint_above::<T>(i)
        } else if i == 277 {
            f32::MAX
        } else {
            // i = 0..=22: subnormal powers of two; 23..=276: normal ones.
            f32::from_bits(if i < 23 { 1 << i } else { (i - 22) << 23 })
        };
        let bits = i64::from(centre.to_bits()) + offset;
        // Stay within the finite non-negative f32 patterns.
        let bits = bits.clamp(0, i64::from(f32::MAX.to_bits())) as u32;
        let x = f32::from_bits(bits);
        if neg {
            -x
        } else {
            x
        }
    })
}

/// The point halfway between the magnitude with bits `mag` and the next
/// one up (for MAX: the next value the format would have without its
/// exponent limit). Exact in f32: a narrow format's values need at most 11
/// significant bits, their midpoints 12.
fn midpoint_above<T: FloatElement>(mag: u32) -> f32 {
    let v = f64::from(T::from_raw_bits(mag).to_f32());
    let next = if mag < max_bits::<T>() {
        f64::from(T::from_raw_bits(mag + 1).to_f32())
    } else {
        2.0 * v - f64::from(T::from_raw_bits(mag - 1).to_f32())
    };
    ((v + next) / 2.0) as f32
}

/// The special values of `T`: ±0, ±MAX, ±MIN_POSITIVE, ±MIN_POSITIVE_SUBNORMAL,
/// ±∞ where the format has them, and NaNs where it has them (quiet and
/// signalling, both signs, smallest and largest payloads; for E4M3 its two
/// NaN patterns; none for the MX FP6/FP4 formats).
pub fn specials<T: FloatElement>() -> impl Strategy<Value = T> + Clone {
    select(special_values::<T>())
}

fn special_values<T: FloatElement>() -> Vec<T> {
    let s = sign_bit::<T>();
    let mut bits = vec![
        0,
        max_bits::<T>(),
        min_normal_bits::<T>(),
        T::MIN_POSITIVE_SUBNORMAL.to_raw_bits(),
    ];
    if T::HAS_INFINITY {
        let inf = max_bits::<T>() + 1;
        let quiet = 1 << (T::MANTISSA_BITS - 1);
        let all_payload = (1 << T::MANTISSA_BITS) - 1;
        bits.extend([inf, inf | quiet, inf | 1, inf | all_payload]);
    } else if let Some(nan) = T::NAN {
        bits.push(nan.to_raw_bits()); // E4M3: S.1111.111
    }
    let negatives: Vec<u32> = bits.iter().map(|b| b | s).collect();
    bits.extend(negatives);
    bits.into_iter().map(from_sign_magnitude::<T>).collect()
}

/// A mixture for inputs of kernels: mostly finite values, with subnormals,
/// values next to rounding boundaries and specials mixed in (weights 6, 1,
/// 1, 1).
pub fn mixed<T: FloatElement>() -> impl Strategy<Value = T> + Clone {
    prop_oneof![
        6 => finite::<T>(),
        1 => subnormal::<T>(),
        1 => near_rounding_boundary::<T>(2).prop_map(T::from_f32),
        1 => specials::<T>(),
    ]
}

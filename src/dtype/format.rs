//! One description of a narrow binary floating-point format, and the scalar
//! reference conversions for all of them (f16, bf16, E4M3, E5M2).
//!
//! Every SIMD path in [`crate::convert`] is tested to return exactly the bits of
//! these functions. They use integer arithmetic only, so they give the same
//! result on every platform.

/// Layout of a narrow float format: sign bit, `exp_bits` exponent bits with
/// `bias`, `man_bits` stored mantissa bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Format {
    pub exp_bits: u32,
    pub man_bits: u32,
    pub bias: i32,
    /// IEEE-style specials: the all-ones exponent holds infinities and NaNs.
    /// When false (E4M3 "fn"), only S.1111.111 is NaN and there is no infinity.
    pub ieee_specials: bool,
    /// No NaN and no infinity at all (the MX FP6 and FP4 formats): every
    /// pattern is finite, overflow and infinities saturate to ±MAX in both
    /// overflow modes, and a NaN input becomes a zero whose sign is the
    /// opposite of the NaN's (what ml_dtypes 0.6 does). Implies
    /// `!ieee_specials`.
    pub finite_only: bool,
    /// Stored as a two's complement integer rather than sign-magnitude
    /// (MXINT8: the values of a finite-only E1M6 with bias 1, i.e. k · 2^-6
    /// for |k| <= 127, held as the int8 k; the byte 0x80 is k = -128,
    /// -2.0, which no rounding produces).
    pub twos_complement: bool,
}

/// How an f32 is rounded into a narrow format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rounding {
    /// Round to nearest, ties to even.
    NearestEven,
    /// Stochastic: round away from zero with probability equal to the dropped
    /// fraction, using these 64 random bits.
    Stochastic(u64),
}

/// What happens to finite values beyond the largest finite value, and to infinities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Overflow gives infinity where the format has one, NaN otherwise.
    Ieee,
    /// Overflow and infinities clamp to ±MAX. NaN stays NaN.
    Saturate,
}

impl Format {
    pub const F16: Format = Format {
        exp_bits: 5,
        man_bits: 10,
        bias: 15,
        ieee_specials: true,
        finite_only: false,
        twos_complement: false,
    };
    pub const BF16: Format = Format {
        exp_bits: 8,
        man_bits: 7,
        bias: 127,
        ieee_specials: true,
        finite_only: false,
        twos_complement: false,
    };
    pub const E4M3: Format = Format {
        exp_bits: 4,
        man_bits: 3,
        bias: 7,
        ieee_specials: false,
        finite_only: false,
        twos_complement: false,
    };
    pub const E5M2: Format = Format {
        exp_bits: 5,
        man_bits: 2,
        bias: 15,
        ieee_specials: true,
        finite_only: false,
        twos_complement: false,
    };

    /// MX FP6 E2M3: bias 1, max 7.5, no NaN or infinity.
    pub const E2M3: Format = Format {
        exp_bits: 2,
        man_bits: 3,
        bias: 1,
        ieee_specials: false,
        finite_only: true,
        twos_complement: false,
    };
    /// MX FP6 E3M2: bias 3, max 28, no NaN or infinity.
    pub const E3M2: Format = Format {
        exp_bits: 3,
        man_bits: 2,
        bias: 3,
        ieee_specials: false,
        finite_only: true,
        twos_complement: false,
    };
    /// MX FP4 E2M1: bias 1, max 6, no NaN or infinity.
    pub const E2M1: Format = Format {
        exp_bits: 2,
        man_bits: 1,
        bias: 1,
        ieee_specials: false,
        finite_only: true,
        twos_complement: false,
    };

    /// MXINT8: int8 k standing for k · 2^-6, |k| <= 127 when rounded to.
    pub const MXINT8: Format = Format {
        exp_bits: 1,
        man_bits: 6,
        bias: 1,
        ieee_specials: false,
        finite_only: true,
        twos_complement: true,
    };

    /// The same layout stored sign-magnitude (what the rounding works in).
    pub const fn sign_magnitude(self) -> Format {
        Format {
            twos_complement: false,
            ..self
        }
    }

    pub const fn sign_bit(self) -> u32 {
        1 << (self.exp_bits + self.man_bits)
    }

    /// Bits of the largest finite value (positive).
    pub const fn max_bits(self) -> u32 {
        if self.finite_only {
            self.sign_bit() - 1
        } else if self.ieee_specials {
            (((1 << self.exp_bits) - 1) << self.man_bits) - 1
        } else {
            self.sign_bit() - 2
        }
    }

    /// Bits of +infinity, or of the positive NaN where the format has no infinity.
    /// For a finite-only format: MAX (its overflow code in every mode).
    pub const fn inf_or_nan_bits(self) -> u32 {
        if self.finite_only {
            self.max_bits()
        } else if self.ieee_specials {
            ((1 << self.exp_bits) - 1) << self.man_bits
        } else {
            self.sign_bit() - 1
        }
    }

    /// The NaN rule of every narrowing conversion: a quiet NaN with the input's
    /// sign and the high bits of its payload (as F16C hardware does); for E4M3,
    /// whose only NaN is S.1111.111, just the sign.
    pub const fn nan_bits(self, f32_bits: u32) -> u32 {
        let sign = (f32_bits >> 31) << (self.exp_bits + self.man_bits);
        if self.finite_only {
            // No NaN: a zero with the opposite sign (ml_dtypes 0.6).
            sign ^ self.sign_bit()
        } else if self.ieee_specials {
            let quiet = 1 << (self.man_bits - 1);
            let payload = (f32_bits & 0x007F_FFFF) >> (23 - self.man_bits);
            sign | self.inf_or_nan_bits() | quiet | payload
        } else {
            sign | (self.sign_bit() - 1)
        }
    }
}

/// Narrows one f32 to `fmt`, returning the bits.
///
/// Finite values: the f32 significand (with its implicit bit) is shifted right
/// by the number of bits the format drops at that exponent (more in the
/// format's subnormal range) and rounded as `rounding` says; the exponent is
/// added back, so a carry out of the mantissa moves to the next binade.
pub(crate) const fn narrow_bits(
    x: f32,
    fmt: Format,
    rounding: Rounding,
    overflow: Overflow,
) -> u32 {
    if fmt.twos_complement {
        let sm = narrow_sign_magnitude(x, fmt.sign_magnitude(), rounding, overflow);
        return sign_magnitude_to_twos(sm, fmt);
    }
    narrow_sign_magnitude(x, fmt, rounding, overflow)
}

/// The two's complement code (in the format's width) of a sign-magnitude
/// code; −0 becomes 0.
pub(crate) const fn sign_magnitude_to_twos(sm: u32, fmt: Format) -> u32 {
    let width = fmt.exp_bits + fmt.man_bits + 1;
    let magnitude = sm & (fmt.sign_bit() - 1);
    let code = if sm & fmt.sign_bit() != 0 {
        magnitude.wrapping_neg()
    } else {
        magnitude
    };
    code & ((1 << width) - 1)
}

const fn narrow_sign_magnitude(x: f32, fmt: Format, rounding: Rounding, overflow: Overflow) -> u32 {
    let bits = x.to_bits();
    let sign = (bits >> 31) << (fmt.exp_bits + fmt.man_bits);
    let abs = bits & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return fmt.nan_bits(bits);
    }
    let overflowed = match overflow {
        Overflow::Saturate => sign | fmt.max_bits(),
        Overflow::Ieee => sign | fmt.inf_or_nan_bits(),
    };
    if abs == 0x7F80_0000 {
        return overflowed;
    }
    let biased = (abs >> 23) as i32;
    // Significand with its implicit bit, and the exponent it is scaled by.
    let (m, e) = if biased == 0 {
        (abs as u64, -126)
    } else {
        ((abs & 0x007F_FFFF | 0x0080_0000) as u64, biased - 127)
    };
    let min_exp = 1 - fmt.bias;
    let mut shift = 23 - fmt.man_bits;
    let mut exp_field = 0u32;
    if e >= min_exp {
        exp_field = ((e + fmt.bias - 1) as u32) << fmt.man_bits;
    } else {
        shift += (min_exp - e) as u32;
    }
    let rounded = match rounding {
        Rounding::NearestEven => {
            if shift > 40 {
                0
            } else {
                let half = 1u64 << (shift - 1);
                (m + half - 1 + ((m >> shift) & 1)) >> shift
            }
        }
        Rounding::Stochastic(r) => {
            if shift >= 64 {
                0
            } else {
                (m + (r & ((1u64 << shift) - 1))) >> shift
            }
        }
    };
    let out = rounded as u32 + exp_field;
    if out > fmt.max_bits() {
        overflowed
    } else {
        sign | out
    }
}

/// Widens `bits` of `fmt` to f32, exactly. NaNs become quiet f32 NaNs with the
/// same sign and the payload in the high mantissa bits.
pub(crate) const fn widen_bits(bits: u32, fmt: Format) -> f32 {
    if fmt.twos_complement {
        // k in the format's width, sign-extended; |k| · 2^-6 through the
        // sign-magnitude layout, and the one code it lacks (k = −2^(w−1)).
        let width = fmt.exp_bits + fmt.man_bits + 1;
        let k = ((bits << (32 - width)) as i32) >> (32 - width);
        let sm = fmt.sign_magnitude();
        if k == -(1 << (width - 1)) {
            // −2^(w−1) · 2^(1 − bias − man) = −2^(exp_bits + 1 − bias).
            return f32::from_bits(
                0x8000_0000 | (((fmt.exp_bits as i32 + 1 - fmt.bias + 127) as u32) << 23),
            );
        }
        let code = if k < 0 {
            sm.sign_bit() | (-k) as u32
        } else {
            k as u32
        };
        return widen_bits(code, sm);
    }
    let sign = ((bits >> (fmt.exp_bits + fmt.man_bits)) & 1) << 31;
    let abs = bits & (fmt.sign_bit() - 1);
    let man_mask = (1 << fmt.man_bits) - 1;
    let exp = abs >> fmt.man_bits;
    let man = abs & man_mask;
    let exp_max = (1 << fmt.exp_bits) - 1;
    let is_nan = if fmt.finite_only {
        false
    } else if fmt.ieee_specials {
        exp == exp_max && man != 0
    } else {
        abs == fmt.sign_bit() - 1
    };
    if is_nan {
        return f32::from_bits(sign | 0x7FC0_0000 | (man << (23 - fmt.man_bits)));
    }
    if fmt.ieee_specials && exp == exp_max {
        return f32::from_bits(sign | 0x7F80_0000);
    }
    if exp == 0 {
        if man == 0 || fmt.bias == 127 {
            // Zero, or a bf16 subnormal, which is an f32 subnormal.
            return f32::from_bits(sign | (man << (23 - fmt.man_bits)));
        }
        // Subnormal: normalise the mantissa into an f32 normal (every narrow
        // format's subnormals are f32 normals).
        let lz = man.leading_zeros() - (32 - fmt.man_bits);
        // value = man * 2^(1 - bias - man_bits); leading one at bit (man_bits-1-lz)
        let e = 1 - fmt.bias - 1 - lz as i32;
        let frac = (man << (lz + 1)) & man_mask;
        return f32::from_bits(sign | (((e + 127) as u32) << 23) | (frac << (23 - fmt.man_bits)));
    }
    let e = exp as i32 - fmt.bias + 127;
    f32::from_bits(sign | ((e as u32) << 23) | (man << (23 - fmt.man_bits)))
}

/// f64 → f32 with round-to-odd: exact values stay, inexact ones are truncated
/// and get their last bit set. A following nearest-even rounding to any format
/// with at most 22 significant bits is then correctly rounded (no double rounding).
pub(crate) fn f64_to_f32_round_odd(x: f64) -> f32 {
    let nearest = x as f32;
    if !nearest.is_finite() || nearest as f64 == x {
        return nearest;
    }
    let toward_zero = if (nearest as f64).abs() > x.abs() {
        f32::from_bits(nearest.to_bits() - 1)
    } else {
        nearest
    };
    f32::from_bits(toward_zero.to_bits() | 1)
}

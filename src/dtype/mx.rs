//! The element formats of OCP Microscaling (MX v1.0) and NVFP4: FP6
//! (E2M3, E3M2), FP4 (E2M1), MXINT8's fixed-point int8 and the E8M0 scale.
//!
//! | type        | sign.exp.man | bias | max  | min normal | min subnormal | inf, NaN |
//! |-------------|--------------|------|------|------------|---------------|----------|
//! | [`F6E2M3`]  | 1.2.3        | 1    | 7.5  | 1          | 0.125         | none     |
//! | [`F6E3M2`]  | 1.3.2        | 3    | 28   | 0.25       | 0.0625        | none     |
//! | [`F4E2M1`]  | 1.2.1        | 1    | 6    | 1          | 0.5           | none     |
//! | [`F8E8M0`]  | 0.8.0        | 127  | 2^127 | 2^-127    | –             | 0xFF = NaN |
//! | [`MxInt8`]  | int8 · 2^-6  | –    | 127/64 | –        | 2^-6          | none       |
//!
//! Each value is stored unpacked, one per byte, in the byte's low bits
//! (FP6: bits 5..0, sign in bit 5; FP4: bits 3..0, sign in bit 3); the high
//! bits are ignored when read and zero when written. Packed storage for
//! files and for memory bandwidth is [`pack_fp4`] (two per byte, the first
//! element in the low nibble) and [`pack_fp6`] (four per three bytes, little
//! endian: element `i` of a group of four occupies bits `6i..6i+6` of the
//! 24-bit little-endian word).
//!
//! **Conversions agree bit for bit with ml_dtypes 0.6** (`float6_e2m3fn`,
//! `float6_e3m2fn`, `float4_e2m1fn`, `float8_e8m0fnu`) on every element
//! pattern and on f32 inputs at and around every rounding midpoint (tested
//! against committed fixtures made by `scripts/make_mx_fixtures.py`):
//!
//! * FP6/FP4: round to nearest, ties to even; overflow and ±infinity
//!   saturate to ±MAX (there is no infinity); a NaN input becomes a zero
//!   whose sign is the opposite of the NaN's sign (there is no NaN; this is
//!   ml_dtypes' rule).
//! * E8M0: for f32 normals, the power of two nearest in value, **ties
//!   rounding up** (3 → 4, 0.75 → 1); for f32 subnormals, 2^-126 above
//!   2^-127 and 2^-127 at or below it (there is no zero); zero, negative
//!   numbers, infinities, NaN and values that round past 2^127 give NaN
//!   (0xFF). This is ml_dtypes 0.6's `float8_e8m0fnu`, which the MX scale
//!   computation does not depend on (it builds scales from exponents:
//!   [`F8E8M0::from_exponent`]).

use super::format::{f64_to_f32_round_odd, narrow_bits, widen_bits, Format, Overflow, Rounding};
use std::fmt;

macro_rules! small_float {
    ($name:ident, $fmt:expr, $bits:expr, $doc:literal) => {
        #[doc = $doc]
        #[repr(transparent)]
        #[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name(u8);

        impl $name {
            pub(crate) const FORMAT: Format = $fmt;
            const MASK: u8 = ((1u32 << $bits) - 1) as u8;
            /// Positive zero.
            pub const ZERO: Self = Self(0);
            /// One.
            pub const ONE: Self = Self(((Self::FORMAT.bias as u32) << Self::FORMAT.man_bits) as u8);
            /// Largest finite value.
            pub const MAX: Self = Self(Self::FORMAT.max_bits() as u8);
            /// Smallest (most negative) value.
            pub const MIN: Self = Self((Self::FORMAT.max_bits() | Self::FORMAT.sign_bit()) as u8);
            /// Smallest positive normal value.
            pub const MIN_POSITIVE: Self = Self(1 << Self::FORMAT.man_bits);
            /// Smallest positive subnormal value.
            pub const MIN_POSITIVE_SUBNORMAL: Self = Self(1);
            /// Difference between one and the next larger value.
            pub const EPSILON: Self = Self(
                (((Self::FORMAT.bias - Self::FORMAT.man_bits as i32) as u32)
                    << Self::FORMAT.man_bits) as u8,
            );

            /// The value with this bit pattern (bits above the format's
            /// width are ignored).
            pub const fn from_bits(bits: u8) -> Self {
                Self(bits & Self::MASK)
            }

            /// The bit pattern (high bits zero).
            pub const fn to_bits(self) -> u8 {
                self.0 & Self::MASK
            }

            /// Rounds `x` to nearest, ties to even, saturating; NaN as the
            /// module docs say.
            pub const fn from_f32(x: f32) -> Self {
                Self(narrow_bits(x, Self::FORMAT, Rounding::NearestEven, Overflow::Saturate) as u8)
            }

            /// Rounds `x` with a single rounding (no double rounding through f32).
            pub fn from_f64(x: f64) -> Self {
                Self::from_f32(f64_to_f32_round_odd(x))
            }

            /// The exact value as `f32`.
            pub const fn to_f32(self) -> f32 {
                widen_bits(self.0 as u32, Self::FORMAT)
            }

            /// The exact value as `f64`.
            pub const fn to_f64(self) -> f64 {
                self.to_f32() as f64
            }

            /// True when the sign bit is set (including −0).
            pub const fn is_sign_negative(self) -> bool {
                self.0 as u32 & Self::FORMAT.sign_bit() != 0
            }
        }

        value_traits!($name);
        sign_magnitude_traits!($name);
    };
}

small_float!(
    F6E2M3,
    Format::E2M3,
    6,
    "MX FP6 E2M3: bias 1, max 7.5, subnormals down to 0.125, no infinity or NaN.\n\n\
     ```\nuse mixprec::F6E2M3;\nassert_eq!(F6E2M3::from_f32(7.0).to_bits(), 0x1E);\n\
     assert_eq!(F6E2M3::from_f32(100.0), F6E2M3::MAX); // saturates\n```"
);
small_float!(
    F6E3M2,
    Format::E3M2,
    6,
    "MX FP6 E3M2: bias 3, max 28, subnormals down to 0.0625, no infinity or NaN.\n\n\
     ```\nuse mixprec::F6E3M2;\nassert_eq!(F6E3M2::from_f32(0.2).to_f32(), 0.1875);\n```"
);
small_float!(
    F4E2M1,
    Format::E2M1,
    4,
    "FP4 E2M1 (MXFP4, NVFP4): the values 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6; no \
     infinity or NaN.\n\n\
     ```\nuse mixprec::F4E2M1;\nassert_eq!(F4E2M1::from_f32(2.5).to_f32(), 2.0); // tie to even\n\
     assert_eq!(F4E2M1::from_f32(5.0).to_f32(), 4.0); // tie to even (4 = 0b110)\n\
     assert_eq!(F4E2M1::from_f32(-1e9).to_f32(), -6.0);\n```"
);

/// The MXINT8 element: an int8 `k` standing for `k · 2^-6` (fixed point in
/// [−2, 2)), stored as the two's complement byte the OCP MX v1.0 spec
/// names. Rounding from f32 is to nearest, ties to even, on the 2^-6 grid
/// and **saturates to the symmetric range ±127 · 2^-6** (±1.984375);
/// infinities saturate; NaN becomes 0 (there is no NaN). The byte 0x80
/// (k = −128) is read as −2.0, as two's complement says, but no rounding
/// produces it.
///
/// Its values are those of a finite-only E1M6 float with bias 1 (k ≥ 64 is
/// the normal binade [1, 2), smaller k the subnormals), which is how
/// [`crate::FloatElement`] describes it: `MANTISSA_BITS` 6, `EXPONENT_BITS`
/// 1, unit roundoff 2^-7 in [1, 2). [`crate::FloatElement::to_raw_bits`] is
/// the stored byte.
///
/// ```
/// use mixprec::MxInt8;
/// assert_eq!(MxInt8::from_f32(0.5).to_i8(), 32);
/// assert_eq!(MxInt8::from_f32(-1.0 / 128.0).to_i8(), 0); // tie to even (k = −0.5)
/// assert_eq!(MxInt8::from_f32(3.0 / 128.0).to_i8(), 2); // tie to even (k = 1.5)
/// assert_eq!(MxInt8::from_f32(-100.0), MxInt8::MIN); // saturates to −127
/// assert_eq!(MxInt8::from_i8(-128).to_f32(), -2.0);
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MxInt8(u8);

impl MxInt8 {
    pub(crate) const FORMAT: Format = Format::MXINT8;
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// One (k = 64).
    pub const ONE: Self = Self(64);
    /// Largest value, 127 · 2^-6.
    pub const MAX: Self = Self(127);
    /// Smallest value rounding produces, −127 · 2^-6.
    pub const MIN: Self = Self(129);
    /// Smallest positive "normal" value of the E1M6 view: 1.0.
    pub const MIN_POSITIVE: Self = Self(64);
    /// Smallest positive value, 2^-6.
    pub const MIN_POSITIVE_SUBNORMAL: Self = Self(1);
    /// Difference between one and the next larger value, 2^-6.
    pub const EPSILON: Self = Self(1);

    /// The element with integer `k` (value `k · 2^-6`).
    pub const fn from_i8(k: i8) -> Self {
        Self(k as u8)
    }

    /// The integer `k` (value `k · 2^-6`).
    pub const fn to_i8(self) -> i8 {
        self.0 as i8
    }

    /// The value with this (two's complement) byte.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The stored byte.
    pub const fn to_bits(self) -> u8 {
        self.0
    }

    /// Rounds `x` to nearest on the 2^-6 grid, ties to even, saturating to
    /// ±127 · 2^-6; NaN gives 0.
    pub const fn from_f32(x: f32) -> Self {
        Self(narrow_bits(x, Self::FORMAT, Rounding::NearestEven, Overflow::Saturate) as u8)
    }

    /// Rounds `x` with a single rounding (no double rounding through f32).
    pub fn from_f64(x: f64) -> Self {
        Self::from_f32(f64_to_f32_round_odd(x))
    }

    /// The exact value as `f32`.
    pub const fn to_f32(self) -> f32 {
        widen_bits(self.0 as u32, Self::FORMAT)
    }

    /// The exact value as `f64`.
    pub const fn to_f64(self) -> f64 {
        self.to_f32() as f64
    }

    /// True for the negative values.
    pub const fn is_sign_negative(self) -> bool {
        self.0 >= 0x80
    }
}

value_traits!(MxInt8);

impl MxInt8 {
    /// The order of the values (two's complement: −128 · 2^-6 first); there
    /// is no NaN or −0, so this is the IEEE order made total.
    pub fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.to_i8().cmp(&other.to_i8())
    }
}

/// What `half` users reach for, where it has one meaning: `From<f32>` and
/// `FromStr` round as [`MxInt8::from_f32`] / [`MxInt8::from_f64`];
/// `Bounded` is [`MxInt8::MIN`] (−127 · 2^-6, what rounding gives) to
/// [`MxInt8::MAX`]. No `Neg` or `abs`: −(−128 · 2^-6) is not a value.
impl From<f32> for MxInt8 {
    fn from(x: f32) -> Self {
        Self::from_f32(x)
    }
}

impl std::str::FromStr for MxInt8 {
    type Err = std::num::ParseFloatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<f64>().map(Self::from_f64)
    }
}

impl num_traits::Bounded for MxInt8 {
    fn min_value() -> Self {
        Self::MIN
    }
    fn max_value() -> Self {
        Self::MAX
    }
}

/// The MX scale: an unsigned power of two `2^(bits − 127)`, bits 0..=254;
/// 0xFF is NaN; no zero, no sign. Rounding from f32 as the module docs say
/// (for normals: nearest power of two, ties up).
///
/// ```
/// use mixprec::F8E8M0;
/// assert_eq!(F8E8M0::from_f32(1.0).to_bits(), 127);
/// assert_eq!(F8E8M0::from_f32(3.0).to_f32(), 4.0); // tie: up
/// assert!(F8E8M0::from_f32(0.0).is_nan());
/// assert_eq!(F8E8M0::from_exponent(-3).to_f32(), 0.125);
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct F8E8M0(u8);

impl F8E8M0 {
    /// 2^0.
    pub const ONE: Self = Self(127);
    /// 2^127.
    pub const MAX: Self = Self(254);
    /// 2^-127.
    pub const MIN_POSITIVE: Self = Self(0);
    /// NaN.
    pub const NAN: Self = Self(0xFF);

    /// The value with this bit pattern.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The bit pattern.
    pub const fn to_bits(self) -> u8 {
        self.0
    }

    /// `2^e`, or NaN when `e` is outside −127..=127.
    pub const fn from_exponent(e: i32) -> Self {
        if e < -127 || e > 127 {
            Self::NAN
        } else {
            Self((e + 127) as u8)
        }
    }

    /// The exponent `e` of `2^e`, or `None` for NaN.
    pub const fn exponent(self) -> Option<i32> {
        if self.0 == 0xFF {
            None
        } else {
            Some(self.0 as i32 - 127)
        }
    }

    /// The nearest power of two to `x`, ties up, as the module docs say.
    pub const fn from_f32(x: f32) -> Self {
        let bits = x.to_bits();
        if bits >> 31 != 0 || bits == 0 || bits >= 0x7F80_0000 {
            return Self::NAN; // negative, ±0, ±inf, NaN
        }
        let e = bits >> 23;
        let m = bits & 0x007F_FFFF;
        if e == 0 {
            // f32 subnormal (2^-127 is 0x0040_0000): anything above 2^-127
            // gives 2^-126, the rest 2^-127 (ml_dtypes 0.6's rule there).
            return Self(if m > 0x0040_0000 { 1 } else { 0 });
        }
        // 2^(e-127)·1.m: up when the mantissa is at least one half.
        let code = e + (m >> 22);
        if code >= 0xFF {
            Self::NAN
        } else {
            Self(code as u8)
        }
    }

    /// The exact value as f32 (2^-127 is an f32 subnormal); NaN for 0xFF.
    pub const fn to_f32(self) -> f32 {
        match self.0 {
            0xFF => f32::NAN,
            0 => f32::from_bits(0x0040_0000),
            c => f32::from_bits((c as u32) << 23),
        }
    }

    /// True for 0xFF.
    pub const fn is_nan(self) -> bool {
        self.0 == 0xFF
    }
}

impl F8E8M0 {
    /// The order of the codes (2^-127 first, NaN last), which is the order
    /// of the values made total.
    pub fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// `From<f32>` and `FromStr` round as [`F8E8M0::from_f32`] (the nearest
/// power of two, ties up; a parsed value is first rounded to f32);
/// `Bounded` is 2^-127 to 2^127.
impl From<f32> for F8E8M0 {
    fn from(x: f32) -> Self {
        Self::from_f32(x)
    }
}

impl std::str::FromStr for F8E8M0 {
    type Err = std::num::ParseFloatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<f32>().map(Self::from_f32)
    }
}

impl num_traits::Bounded for F8E8M0 {
    fn min_value() -> Self {
        Self::MIN_POSITIVE
    }
    fn max_value() -> Self {
        Self::MAX
    }
}

impl PartialEq for F8E8M0 {
    /// NaN is unequal to everything.
    fn eq(&self, other: &Self) -> bool {
        !self.is_nan() && self.0 == other.0
    }
}

impl fmt::Debug for F8E8M0 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exponent() {
            Some(e) => write!(f, "2^{e}"),
            None => f.write_str("NaN"),
        }
    }
}

/// Packs FP4 values two per byte, the first of each pair in the low nibble
/// (an odd count leaves the last high nibble zero).
///
/// ```
/// use mixprec::dtype::{pack_fp4, unpack_fp4};
/// use mixprec::F4E2M1;
/// let v = [F4E2M1::from_f32(1.0), F4E2M1::from_f32(-6.0), F4E2M1::from_f32(0.5)];
/// let packed = pack_fp4(&v);
/// assert_eq!(packed, [0xF2, 0x01]);
/// assert_eq!(unpack_fp4(&packed, 3).unwrap(), v);
/// ```
pub fn pack_fp4(values: &[F4E2M1]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|p| p[0].to_bits() | p.get(1).map_or(0, |x| x.to_bits() << 4))
        .collect()
}

/// The first `count` FP4 values of `packed` (see [`pack_fp4`]).
///
/// # Errors
/// [`crate::Error::LengthMismatch`] when `packed` does not hold exactly
/// `count` values (`⌈count/2⌉` bytes).
pub fn unpack_fp4(packed: &[u8], count: usize) -> Result<Vec<F4E2M1>, crate::Error> {
    let bytes = count.div_ceil(2);
    if packed.len() != bytes {
        return Err(crate::Error::LengthMismatch {
            what: "unpack_fp4 (⌈count/2⌉ bytes)",
            expected: bytes,
            actual: packed.len(),
        });
    }
    Ok((0..count)
        .map(|i| F4E2M1::from_bits(packed[i / 2] >> (4 * (i % 2))))
        .collect())
}

/// Packs FP6 values (either FP6 type's bits) four per three bytes: element
/// `i` of each group of four takes bits `6i..6i+6` of the group's 24-bit
/// little-endian word; a last partial group is zero-filled and takes
/// `⌈6·n/8⌉` bytes.
///
/// ```
/// use mixprec::dtype::{pack_fp6, unpack_fp6};
/// use mixprec::F6E2M3;
/// let v: Vec<F6E2M3> = [1.0f32, -7.5, 0.125, 2.0].map(F6E2M3::from_f32).to_vec();
/// let packed = pack_fp6(&v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
/// assert_eq!(packed.len(), 3);
/// let back: Vec<F6E2M3> = unpack_fp6(&packed, 4)?.into_iter().map(F6E2M3::from_bits).collect();
/// assert_eq!(back, v);
/// # Ok::<(), mixprec::Error>(())
/// ```
pub fn pack_fp6(bits: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((bits.len() * 6).div_ceil(8));
    for group in bits.chunks(4) {
        let word = group
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &b)| w | (u32::from(b & 0x3F) << (6 * i)));
        let used = (group.len() * 6).div_ceil(8);
        out.extend_from_slice(&word.to_le_bytes()[..used]);
    }
    out
}

/// The first `count` FP6 bit patterns of `packed` (see [`pack_fp6`]).
///
/// # Errors
/// [`crate::Error::LengthMismatch`] when `packed` is not `⌈6·count/8⌉` bytes.
pub fn unpack_fp6(packed: &[u8], count: usize) -> Result<Vec<u8>, crate::Error> {
    let bytes = count
        .checked_mul(6)
        .map(|b| b.div_ceil(8))
        .ok_or(crate::Error::ShapeOverflow { shape: vec![count] })?;
    if packed.len() != bytes {
        return Err(crate::Error::LengthMismatch {
            what: "unpack_fp6 (⌈6·count/8⌉ bytes)",
            expected: bytes,
            actual: packed.len(),
        });
    }
    let mut out = Vec::with_capacity(count);
    for (g, chunk) in packed.chunks(3).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        let word = u32::from_le_bytes(word);
        for i in 0..4 {
            if g * 4 + i < count {
                out.push(((word >> (6 * i)) & 0x3F) as u8);
            }
        }
    }
    Ok(out)
}

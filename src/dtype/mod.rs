//! Number formats: `f32`, [`f16`](struct@f16), [`bf16`] (from `half`), the OCP FP8 types
//! [`F8E4M3`] and [`F8E5M2`], the OCP Microscaling element types
//! [`F6E2M3`], [`F6E3M2`], [`F4E2M1`] and [`MxInt8`], the MX scale
//! [`F8E8M0`], and `i8`, `u8` and `i32`; the [`DType`] tag and the
//! [`Element`] trait that ties each Rust type to its tag.
//!
//! The narrow float types carry what `half::f16` users reach for where it
//! has one meaning: `From<f32>` and `FromStr` (the documented rounding),
//! `Neg`, `abs`, `signum`, `copysign` and `total_cmp` (sign-magnitude
//! types), `num_traits::{Bounded, ToPrimitive, FromPrimitive, NumCast}`.
//! Not `Zero`, `One` or `Float`: `num_traits` asks those for arithmetic,
//! which would round twice (widen to f32, compute, round back).
//!
//! ```
//! use mixprec::{F4E2M1, F8E4M3};
//! let x: F8E4M3 = 0.3f32.into(); // round to nearest even
//! assert_eq!(x.to_f32(), 0.3125);
//! assert_eq!("-0.3".parse::<F8E4M3>().unwrap(), -x);
//! assert_eq!((-x).abs(), x);
//! assert_eq!(F4E2M1::from_f32(-4.0).signum().to_f32(), -1.0);
//! assert!(F8E4M3::from_f32(-0.0).total_cmp(&F8E4M3::ZERO).is_lt());
//! ```

/// The value traits every narrow float type implements through `f32`/`f64`:
/// IEEE comparison, formatting as its value, conversions to f32/f64 and the
/// `num_traits` casts. One definition for the FP8 and the MX types.
macro_rules! value_traits {
    ($name:ident) => {
        impl PartialEq for $name {
            /// IEEE equality: NaN is unequal to everything, +0 == -0.
            fn eq(&self, other: &Self) -> bool {
                self.to_f32() == other.to_f32()
            }
        }

        impl PartialOrd for $name {
            /// IEEE ordering: `None` when either side is NaN.
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                self.to_f32().partial_cmp(&other.to_f32())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.to_f32(), f)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.to_f32(), f)
            }
        }

        impl From<$name> for f32 {
            fn from(x: $name) -> f32 {
                x.to_f32()
            }
        }

        impl From<$name> for f64 {
            fn from(x: $name) -> f64 {
                x.to_f64()
            }
        }

        impl num_traits::ToPrimitive for $name {
            fn to_i64(&self) -> Option<i64> {
                num_traits::ToPrimitive::to_i64(&$name::to_f32(*self))
            }
            fn to_u64(&self) -> Option<u64> {
                num_traits::ToPrimitive::to_u64(&$name::to_f32(*self))
            }
            fn to_f32(&self) -> Option<f32> {
                Some($name::to_f32(*self))
            }
            fn to_f64(&self) -> Option<f64> {
                Some($name::to_f64(*self))
            }
        }

        impl num_traits::FromPrimitive for $name {
            fn from_i64(n: i64) -> Option<Self> {
                Some(Self::from_f64(n as f64))
            }
            fn from_u64(n: u64) -> Option<Self> {
                Some(Self::from_f64(n as f64))
            }
            fn from_f32(x: f32) -> Option<Self> {
                Some($name::from_f32(x))
            }
            fn from_f64(x: f64) -> Option<Self> {
                Some($name::from_f64(x))
            }
        }

        impl num_traits::NumCast for $name {
            fn from<N: num_traits::ToPrimitive>(n: N) -> Option<Self> {
                n.to_f64().map(Self::from_f64)
            }
        }
    };
}

/// What `half::f16` users reach for on a narrow float type whose sign is
/// one bit beside the magnitude (the FP8, FP6 and FP4 types): `From<f32>`
/// (the type's documented rounding, as `from_f32`), `FromStr` (parsed as
/// f64, then one rounding), `Neg`, `abs`, `signum`, `copysign`,
/// `total_cmp` and `num_traits::Bounded`. Arithmetic stays out: it would
/// round twice.
macro_rules! sign_magnitude_traits {
    ($name:ident) => {
        impl $name {
            /// The magnitude: the sign bit cleared (NaN stays NaN).
            pub const fn abs(self) -> Self {
                Self::from_bits(self.to_bits() & !(Self::FORMAT.sign_bit() as u8))
            }

            /// `self`'s magnitude with `sign`'s sign bit.
            pub const fn copysign(self, sign: Self) -> Self {
                let bit = Self::FORMAT.sign_bit() as u8;
                Self::from_bits((self.to_bits() & !bit) | (sign.to_bits() & bit))
            }

            /// 1 for positive values (+0 included), −1 for negative ones
            /// (−0 included), as `f32::signum`; NaN stays NaN.
            pub fn signum(self) -> Self {
                if self.to_f32().is_nan() {
                    self
                } else {
                    Self::ONE.copysign(self)
                }
            }

            /// IEEE 754 totalOrder on the bit patterns, as `f32::total_cmp`:
            /// −NaN < −∞ < … < −0 < +0 < … < +∞ < +NaN.
            ///
            /// ```
            #[doc = concat!("use mixprec::", stringify!($name), ";")]
            #[doc = concat!("let (a, b) = (", stringify!($name), "::from_f32(-0.0), ", stringify!($name), "::ZERO);")]
            /// assert_eq!(a, b); // IEEE equality
            /// assert!(a.total_cmp(&b).is_lt());
            /// ```
            pub fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
                let key = |x: &Self| {
                    let bit = Self::FORMAT.sign_bit() as i32;
                    let b = i32::from(x.to_bits());
                    if b & bit != 0 {
                        -(b & (bit - 1)) - 1
                    } else {
                        b
                    }
                };
                key(self).cmp(&key(other))
            }
        }

        impl std::ops::Neg for $name {
            type Output = Self;
            /// Flips the sign bit (exact; NaN stays NaN).
            fn neg(self) -> Self {
                Self::from_bits(self.to_bits() ^ Self::FORMAT.sign_bit() as u8)
            }
        }

        impl From<f32> for $name {
            /// As [`Self::from_f32`]: the type's documented rounding.
            fn from(x: f32) -> Self {
                Self::from_f32(x)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseFloatError;
            /// Parses a decimal as f64 (as `f64::from_str` accepts it,
            /// `inf` and `NaN` included), then rounds once as
            /// [`Self::from_f64`].
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<f64>().map(Self::from_f64)
            }
        }

        impl num_traits::Bounded for $name {
            fn min_value() -> Self {
                Self::MIN
            }
            fn max_value() -> Self {
                Self::MAX
            }
        }
    };
}

pub(crate) mod format;
mod fp8;
mod mx;

pub use fp8::{F8E4M3, F8E5M2};
pub use half::{bf16, f16};
pub use mx::{pack_fp4, pack_fp6, unpack_fp4, unpack_fp6, MxInt8, F4E2M1, F6E2M3, F6E3M2, F8E8M0};

use crate::Error;
use std::fmt;
use std::str::FromStr;

/// The element types the crate knows, named as safetensors names them.
///
/// With the `serde` feature it serializes as its [`DType::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum DType {
    /// IEEE binary32.
    #[cfg_attr(feature = "serde", serde(rename = "f32"))]
    F32,
    /// IEEE binary16.
    #[cfg_attr(feature = "serde", serde(rename = "f16"))]
    F16,
    /// bfloat16.
    #[cfg_attr(feature = "serde", serde(rename = "bf16"))]
    BF16,
    /// OCP FP8 E4M3 ("fn": no infinity).
    #[cfg_attr(feature = "serde", serde(rename = "f8_e4m3"))]
    F8E4M3,
    /// OCP FP8 E5M2.
    #[cfg_attr(feature = "serde", serde(rename = "f8_e5m2"))]
    F8E5M2,
    /// Signed 8-bit integer.
    #[cfg_attr(feature = "serde", serde(rename = "i8"))]
    I8,
    /// Unsigned 8-bit integer (affine-quantized activations).
    #[cfg_attr(feature = "serde", serde(rename = "u8"))]
    U8,
    /// Signed 32-bit integer.
    #[cfg_attr(feature = "serde", serde(rename = "i32"))]
    I32,
    /// MX scale E8M0: an unsigned power of two (safetensors `F8_E8M0`).
    #[cfg_attr(feature = "serde", serde(rename = "f8_e8m0"))]
    F8E8M0,
    /// MX FP6 E2M3 (safetensors `F6_E2M3`), stored one per byte.
    #[cfg_attr(feature = "serde", serde(rename = "f6_e2m3"))]
    F6E2M3,
    /// MX FP6 E3M2 (safetensors `F6_E3M2`), stored one per byte.
    #[cfg_attr(feature = "serde", serde(rename = "f6_e3m2"))]
    F6E3M2,
    /// FP4 E2M1 (safetensors `F4`), stored one per byte.
    #[cfg_attr(feature = "serde", serde(rename = "f4"))]
    F4E2M1,
    /// MXINT8 elements: int8 `k` standing for `k · 2^-6` ([`MxInt8`]).
    /// Safetensors has no name for it: files store it as `I8`.
    #[cfg_attr(feature = "serde", serde(rename = "mxint8"))]
    MxInt8,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::I8,
        DType::U8,
        DType::I32,
        DType::F8E8M0,
        DType::F6E2M3,
        DType::F6E3M2,
        DType::F4E2M1,
        DType::MxInt8,
    ];

    /// Size of one element in bytes, as the crate stores it (FP6 and FP4
    /// take a byte each; see [`pack_fp4`] and [`pack_fp6`] for packed storage).
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3
            | DType::F8E5M2
            | DType::I8
            | DType::U8
            | DType::F8E8M0
            | DType::F6E2M3
            | DType::F6E3M2
            | DType::F4E2M1
            | DType::MxInt8 => 1,
        }
    }

    /// The name used by safetensors and most of the ecosystem.
    ///
    /// ```
    /// use mixprec::DType;
    /// assert_eq!(DType::F8E4M3.name(), "f8_e4m3");
    /// assert_eq!("bf16".parse::<DType>(), Ok(DType::BF16));
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8_e4m3",
            DType::F8E5M2 => "f8_e5m2",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::F8E8M0 => "f8_e8m0",
            DType::F6E2M3 => "f6_e2m3",
            DType::F6E3M2 => "f6_e3m2",
            DType::F4E2M1 => "f4",
            DType::MxInt8 => "mxint8",
        }
    }

    /// True for the floating-point types.
    pub const fn is_float(self) -> bool {
        !matches!(self, DType::I8 | DType::U8 | DType::I32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        DType::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::InvalidParameter {
                name: "dtype",
                value: format!("{s:?}"),
                requirement:
                    "one of f32, f16, bf16, f8_e4m3, f8_e5m2, i8, u8, i32, f8_e8m0, f6_e2m3, f6_e3m2, f4, mxint8",
            })
    }
}

#[cfg(feature = "arbitrary")]
#[cfg_attr(docsrs, doc(cfg(feature = "arbitrary")))]
impl<'a> arbitrary::Arbitrary<'a> for DType {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(*u.choose(&DType::ALL)?)
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// A type that can be a tensor element: plain old data tied to one [`DType`].
pub trait Element:
    bytemuck::Pod + Default + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The tag of this type.
    const DTYPE: DType;
}

mod sealed {
    pub trait Sealed {}
}

/// A floating-point element: exact widening to `f32`, rounding from it, and
/// the format's constants, so generic code can ask a format for its range.
///
/// Sealed: implemented for `f32`, [`f16`](struct@f16), [`bf16`], [`F8E4M3`], [`F8E5M2`],
/// and the MX element formats [`F6E2M3`], [`F6E3M2`], [`F4E2M1`], [`MxInt8`] (which
/// saturate: [`FloatElement::from_f32`] clamps to ±MAX). The slice conversions in
/// [`crate::convert`] are generic over this trait.
///
/// ```
/// use mixprec::{bf16, FloatElement, F8E4M3, F8E5M2};
/// fn range<T: FloatElement>() -> (f32, f32) {
///     (T::MIN_POSITIVE_SUBNORMAL.to_f32(), T::MAX.to_f32())
/// }
/// assert_eq!(range::<F8E4M3>(), (2f32.powi(-9), 448.0));
/// assert_eq!(range::<F8E5M2>(), (2f32.powi(-16), 57344.0));
/// assert_eq!(bf16::UNIT_ROUNDOFF, 2f64.powi(-8));
/// assert!(!F8E4M3::HAS_INFINITY && F8E5M2::HAS_INFINITY);
/// ```
pub trait FloatElement: Element + sealed::Sealed {
    /// Width of the format in bits.
    const BITS: u32;
    /// Stored fraction bits (the implicit leading bit not counted): the
    /// precision is `MANTISSA_BITS + 1` significant bits.
    const MANTISSA_BITS: u32;
    /// Exponent bits.
    const EXPONENT_BITS: u32;
    /// True when the format has ±infinity (false for E4M3, whose overflow
    /// and infinite inputs give NaN, or ±MAX when saturating).
    const HAS_INFINITY: bool;
    /// The largest finite value.
    const MAX: Self;
    /// The smallest positive normal value.
    const MIN_POSITIVE: Self;
    /// The smallest positive subnormal value.
    const MIN_POSITIVE_SUBNORMAL: Self;
    /// The distance from 1.0 to the next larger value: `2^-MANTISSA_BITS`.
    const EPSILON: Self;
    /// The unit roundoff `u = 2^-(MANTISSA_BITS + 1)` of rounding to nearest
    /// into this format: `|fl(x) - x| <= u·|x|` for `x` in the normal range
    /// (2^-24 for f32, 2^-11 for f16, 2^-8 for bf16, 2^-4 for E4M3, 2^-3
    /// for E5M2).
    const UNIT_ROUNDOFF: f64;
    /// A quiet NaN, or `None` for the formats without one (MX FP6, FP4).
    const NAN: Option<Self>;

    /// The exact value as `f32`.
    fn to_f32(self) -> f32;
    /// `x` rounded to nearest, ties to even (overflow to infinity, or NaN for
    /// E4M3, or ±MAX for the MX FP6/FP4 formats, which have neither).
    fn from_f32(x: f32) -> Self;
    /// The bit pattern, zero-extended to `u32`.
    fn to_raw_bits(self) -> u32;
    /// The value with this bit pattern; bits above [`Self::BITS`] are ignored.
    ///
    /// ```
    /// use mixprec::{FloatElement, F8E5M2};
    /// assert_eq!(F8E5M2::from_raw_bits(0x17C).to_f32(), f32::INFINITY);
    /// ```
    fn from_raw_bits(bits: u32) -> Self;
}

/// `2^-(man_bits + 1)`, exactly.
const fn unit_roundoff(man_bits: u32) -> f64 {
    1.0 / (1u64 << (man_bits + 1)) as f64
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
        }
    };
    ($t:ty, $d:expr, float) => {
        element!($t, $d);
        impl sealed::Sealed for $t {}
        impl FloatElement for $t {
            const BITS: u32 = 8;
            const MANTISSA_BITS: u32 = <$t>::FORMAT.man_bits;
            const EXPONENT_BITS: u32 = <$t>::FORMAT.exp_bits;
            const HAS_INFINITY: bool = <$t>::FORMAT.ieee_specials;
            const MAX: Self = <$t>::MAX;
            const MIN_POSITIVE: Self = <$t>::MIN_POSITIVE;
            const MIN_POSITIVE_SUBNORMAL: Self = <$t>::MIN_POSITIVE_SUBNORMAL;
            const EPSILON: Self = <$t>::EPSILON;
            const UNIT_ROUNDOFF: f64 = unit_roundoff(<$t>::FORMAT.man_bits);
            const NAN: Option<Self> = Some(<$t>::NAN);
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            fn to_raw_bits(self) -> u32 {
                self.to_bits() as u32
            }
            fn from_raw_bits(bits: u32) -> Self {
                <$t>::from_bits(bits as u8)
            }
        }
    };
}

element!(f16, DType::F16);
element!(bf16, DType::BF16);
element!(F8E4M3, DType::F8E4M3, float);
element!(F8E5M2, DType::F8E5M2, float);
element!(F8E8M0, DType::F8E8M0);
element!(i8, DType::I8);
element!(u8, DType::U8);
element!(i32, DType::I32);

macro_rules! small_float_element {
    ($t:ty, $d:expr, $bits:expr) => {
        element!($t, $d);
        impl sealed::Sealed for $t {}
        impl FloatElement for $t {
            const BITS: u32 = $bits;
            const MANTISSA_BITS: u32 = <$t>::FORMAT.man_bits;
            const EXPONENT_BITS: u32 = <$t>::FORMAT.exp_bits;
            const HAS_INFINITY: bool = false;
            const MAX: Self = <$t>::MAX;
            const MIN_POSITIVE: Self = <$t>::MIN_POSITIVE;
            const MIN_POSITIVE_SUBNORMAL: Self = <$t>::MIN_POSITIVE_SUBNORMAL;
            const EPSILON: Self = <$t>::EPSILON;
            const UNIT_ROUNDOFF: f64 = unit_roundoff(<$t>::FORMAT.man_bits);
            const NAN: Option<Self> = None;
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            fn to_raw_bits(self) -> u32 {
                self.to_bits() as u32
            }
            fn from_raw_bits(bits: u32) -> Self {
                <$t>::from_bits(bits as u8)
            }
        }
    };
}

small_float_element!(F6E2M3, DType::F6E2M3, 6);
small_float_element!(F6E3M2, DType::F6E3M2, 6);
small_float_element!(F4E2M1, DType::F4E2M1, 4);
small_float_element!(MxInt8, DType::MxInt8, 8);

macro_rules! half_float {
    ($t:ty, $fmt:expr) => {
        impl sealed::Sealed for $t {}
        impl FloatElement for $t {
            const BITS: u32 = 16;
            const MANTISSA_BITS: u32 = $fmt.man_bits;
            const EXPONENT_BITS: u32 = $fmt.exp_bits;
            const HAS_INFINITY: bool = true;
            const MAX: Self = <$t>::MAX;
            const MIN_POSITIVE: Self = <$t>::MIN_POSITIVE;
            const MIN_POSITIVE_SUBNORMAL: Self = <$t>::MIN_POSITIVE_SUBNORMAL;
            const EPSILON: Self = <$t>::EPSILON;
            const UNIT_ROUNDOFF: f64 = unit_roundoff($fmt.man_bits);
            const NAN: Option<Self> = Some(<$t>::NAN);
            fn to_raw_bits(self) -> u32 {
                self.to_bits() as u32
            }
            fn from_raw_bits(bits: u32) -> Self {
                <$t>::from_bits(bits as u16)
            }
            fn to_f32(self) -> f32 {
                format::widen_bits(self.to_bits() as u32, $fmt)
            }
            fn from_f32(x: f32) -> Self {
                <$t>::from_bits(format::narrow_bits(
                    x,
                    $fmt,
                    format::Rounding::NearestEven,
                    format::Overflow::Ieee,
                ) as u16)
            }
        }
    };
}

half_float!(f16, format::Format::F16);
half_float!(bf16, format::Format::BF16);

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl sealed::Sealed for f32 {}
impl FloatElement for f32 {
    const BITS: u32 = 32;
    const MANTISSA_BITS: u32 = 23;
    const EXPONENT_BITS: u32 = 8;
    const HAS_INFINITY: bool = true;
    const MAX: Self = f32::MAX;
    const MIN_POSITIVE: Self = f32::MIN_POSITIVE;
    const MIN_POSITIVE_SUBNORMAL: Self = f32::from_bits(1);
    const EPSILON: Self = f32::EPSILON;
    const UNIT_ROUNDOFF: f64 = unit_roundoff(23);
    const NAN: Option<Self> = Some(f32::NAN);
    fn to_raw_bits(self) -> u32 {
        self.to_bits()
    }
    fn from_raw_bits(bits: u32) -> Self {
        f32::from_bits(bits)
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

//! The two OCP 8-bit floating-point formats (OCP 8-bit Floating Point
//! Specification, v1.0).
//!
//! | type       | sign.exp.man | bias | max    | min normal | min subnormal | inf | NaN            |
//! |------------|--------------|------|--------|------------|---------------|-----|----------------|
//! | [`F8E4M3`] | 1.4.3        | 7    | 448    | 2^-6       | 2^-9          | no  | S.1111.111     |
//! | [`F8E5M2`] | 1.5.2        | 15   | 57344  | 2^-14      | 2^-16         | yes | S.11111.{01,10,11} |
//!
//! Conversions from `f32` round to nearest, ties to even. Overflow goes to
//! infinity (E5M2) or NaN (E4M3, which has no infinity); the `*_saturating`
//! constructors clamp to ±MAX instead. A NaN input gives a quiet NaN with its
//! sign. Widening to `f32` is exact.

use super::format::{f64_to_f32_round_odd, narrow_bits, widen_bits, Format, Overflow, Rounding};

macro_rules! fp8_type {
    ($name:ident, $fmt:expr, $doc:literal) => {
        #[doc = $doc]
        #[repr(transparent)]
        #[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name(u8);

        /// Serialized as its bit pattern (a `u8`): exact for every value,
        /// NaN included.
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_u8(self.0)
            }
        }

        /// Deserialized from its bit pattern (a `u8`).
        #[cfg(feature = "serde")]
        #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                u8::deserialize(d).map(Self)
            }
        }

        /// Any bit pattern (NaNs and, for E5M2, infinities included), one
        /// byte of input each.
        #[cfg(feature = "arbitrary")]
        #[cfg_attr(docsrs, doc(cfg(feature = "arbitrary")))]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok(Self(u8::arbitrary(u)?))
            }

            fn size_hint(_depth: usize) -> (usize, Option<usize>) {
                (1, Some(1))
            }
        }

        impl $name {
            pub(crate) const FORMAT: Format = $fmt;
            /// Positive zero.
            pub const ZERO: Self = Self(0);
            /// One.
            pub const ONE: Self = Self(((Self::FORMAT.bias as u32) << Self::FORMAT.man_bits) as u8);
            /// Largest finite value.
            pub const MAX: Self = Self(Self::FORMAT.max_bits() as u8);
            /// Smallest (most negative) finite value.
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
            /// The canonical quiet NaN (positive).
            pub const NAN: Self = Self(Self::FORMAT.nan_bits(0x7FC0_0000) as u8);

            /// Builds a value from its bit pattern.
            pub const fn from_bits(bits: u8) -> Self {
                Self(bits)
            }

            /// The bit pattern.
            pub const fn to_bits(self) -> u8 {
                self.0
            }

            /// Rounds `x` to nearest, ties to even; overflow as the module docs say.
            pub const fn from_f32(x: f32) -> Self {
                Self(narrow_bits(x, Self::FORMAT, Rounding::NearestEven, Overflow::Ieee) as u8)
            }

            /// Rounds `x` to nearest, ties to even, clamping overflow and
            /// infinities to ±[`Self::MAX`]. NaN stays NaN.
            pub const fn from_f32_saturating(x: f32) -> Self {
                Self(narrow_bits(x, Self::FORMAT, Rounding::NearestEven, Overflow::Saturate) as u8)
            }

            /// Rounds `x` to nearest, ties to even, with a single rounding (no
            /// double rounding through f32).
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

            /// True for NaN.
            pub const fn is_nan(self) -> bool {
                let abs = self.0 as u32 & (Self::FORMAT.sign_bit() - 1);
                if Self::FORMAT.ieee_specials {
                    abs > Self::FORMAT.inf_or_nan_bits()
                } else {
                    abs == Self::FORMAT.inf_or_nan_bits()
                }
            }

            /// True for ±infinity (never for E4M3).
            pub const fn is_infinite(self) -> bool {
                Self::FORMAT.ieee_specials
                    && (self.0 as u32 & (Self::FORMAT.sign_bit() - 1))
                        == Self::FORMAT.inf_or_nan_bits()
            }

            /// True when neither NaN nor infinite.
            pub const fn is_finite(self) -> bool {
                !self.is_nan() && !self.is_infinite()
            }

            /// True when the sign bit is set (including -0 and negative NaNs).
            pub const fn is_sign_negative(self) -> bool {
                self.0 & 0x80 != 0
            }
        }

        value_traits!($name);
        sign_magnitude_traits!($name);
    };
}

fp8_type!(
    F8E4M3,
    Format::E4M3,
    "OCP FP8 E4M3 (\"fn\" variant): bias 7, max 448, no infinity, NaN only at S.1111.111.\n\n\
     ```\nuse mixprec::F8E4M3;\nassert_eq!(F8E4M3::from_f32(1.0625).to_f32(), 1.0); // tie to even\n\
     assert!(F8E4M3::from_f32(500.0).is_nan()); // overflow: no infinity\n\
     assert_eq!(F8E4M3::from_f32_saturating(500.0), F8E4M3::MAX);\n```"
);
fp8_type!(
    F8E5M2,
    Format::E5M2,
    "OCP FP8 E5M2: bias 15, max 57344, IEEE-style infinities and NaNs.\n\n\
     ```\nuse mixprec::F8E5M2;\nassert_eq!(F8E5M2::from_f32(1.0).to_bits(), 0x3C);\n\
     assert!(F8E5M2::from_f32(1e6).is_infinite());\n\
     assert_eq!(F8E5M2::from_f32_saturating(1e6).to_f32(), 57344.0);\n```"
);

impl F8E5M2 {
    /// Positive infinity.
    pub const INFINITY: Self = Self(0x7C);
    /// Negative infinity.
    pub const NEG_INFINITY: Self = Self(0xFC);
}

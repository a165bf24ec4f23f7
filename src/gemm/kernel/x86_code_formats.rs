//! The minifloat code formats the x86 `blocks_t` kernels
//! ([`super::x86_blocks_t`], [`super::x86_avx512_blocks_t`]) read in place:
//! FP8 E4M3/E5M2, FP6 E2M3/E3M2, FP4 E2M1, each described by the crate's
//! [`Format`] and the constants the decodes derive from it (a 4-bit
//! format's 16 values, a 6-bit one's 32 magnitudes, an FP8 format's f16
//! form).

use crate::dtype::format::{widen_bits, Format};

/// A minifloat code of at most 8 bits that the `blocks_t` kernels decode
/// (AVX2: by shifts, a 4-bit one by a table, FP8 through f16; AVX-512: by a
/// table or through f16): its layout is the crate's [`Format`]
/// description, from which the rest follows.
pub(crate) trait ShiftCode {
    /// The format's layout.
    const FORMAT: Format;
    /// Mantissa bits.
    const MBITS: u32 = Self::FORMAT.man_bits;
    /// The magnitude bits (exponent and mantissa) of a code.
    const MAG_MASK: u32 = Self::FORMAT.sign_bit() - 1;
    /// The sign bit's position.
    const SIGN_POS: u32 = Self::FORMAT.exp_bits + Self::FORMAT.man_bits;
    /// The exponent bias.
    const BIAS: i32 = Self::FORMAT.bias;
    /// The smallest magnitude code that is NaN or infinity (0: none).
    const SPECIAL_FROM: u8 = if Self::FORMAT.finite_only {
        0
    } else {
        Self::FORMAT.inf_or_nan_bits() as u8
    };
    /// For a 4-bit format, its 16 values by code: decoded by one table
    /// lookup (`vpermps`) instead of shifts.
    const TABLE: Option<[f32; 16]> = None;
    /// For a 6-bit format, its 32 magnitudes by magnitude code: the AVX-512
    /// kernels decode it by one two-register lookup (`vpermt2ps`) and the
    /// sign moved to bit 31.
    const MAGNITUDES: Option<[f32; 32]> = None;
    /// For an FP8 format whose code, moved to the high byte of an f16, is
    /// that f16 once its magnitude is shifted right by this many bits
    /// (E5M2: 0; E4M3: 1): both tiers decode it through f16.
    const F16_SHIFT: Option<i32> = if Self::SIGN_POS == 7 && Self::MBITS >= 2 {
        Some(Self::MBITS as i32 - 2)
    } else {
        None
    };
}

/// The values of codes `0..N` of a format: a 4-bit format's 16 values
/// (N = 16), a 6-bit one's 32 magnitudes (N = 32, the codes without sign).
const fn values<const N: usize>(fmt: Format) -> [f32; N] {
    let mut t = [0.0f32; N];
    let mut code = 0;
    while code < N {
        t[code] = widen_bits(code as u32, fmt);
        code += 1;
    }
    t
}

/// FP8 E4M3.
pub(crate) struct E4M3;
/// FP8 E5M2.
pub(crate) struct E5M2;
/// FP6 E2M3.
pub(crate) struct E2M3;
/// FP6 E3M2.
pub(crate) struct E3M2;
/// FP4 E2M1.
pub(crate) struct E2M1;

impl ShiftCode for E4M3 {
    const FORMAT: Format = Format::E4M3;
}
impl ShiftCode for E5M2 {
    const FORMAT: Format = Format::E5M2;
}
impl ShiftCode for E2M3 {
    const FORMAT: Format = Format::E2M3;
    const MAGNITUDES: Option<[f32; 32]> = Some(values(Format::E2M3));
}
impl ShiftCode for E3M2 {
    const FORMAT: Format = Format::E3M2;
    const MAGNITUDES: Option<[f32; 32]> = Some(values(Format::E3M2));
}
impl ShiftCode for E2M1 {
    const FORMAT: Format = Format::E2M1;
    const TABLE: Option<[f32; 16]> = Some(values(Format::E2M1));
}

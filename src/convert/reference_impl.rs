//! Scalar reference conversions: the definition every fast path is tested against.
//!
//! Each function converts element by element with the integer-only routines of
//! the format module; they are also what the crate uses on CPUs without AVX2.

use crate::dtype::format::{narrow_bits, widen_bits, Format, Overflow, Rounding};

/// Narrows `src` into `dst` bit patterns of `fmt` (equal lengths assumed).
pub(crate) fn narrow_bits_slice<U: Copy + TryFrom<u32>>(
    src: &[f32],
    dst: &mut [U],
    fmt: Format,
    overflow: Overflow,
) {
    for (d, &x) in dst.iter_mut().zip(src) {
        let bits = narrow_bits(x, fmt, Rounding::NearestEven, overflow);
        // The format has at most 16 bits, so the conversion always succeeds.
        if let Ok(b) = U::try_from(bits) {
            *d = b;
        }
    }
}

/// Widens bit patterns of `fmt` into `dst`.
pub(crate) fn widen_bits_slice<U: Copy + Into<u32>>(src: &[U], dst: &mut [f32], fmt: Format) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = widen_bits(b.into(), fmt);
    }
}

//! Slice conversions between `f32` and the narrow formats.
//!
//! * [`narrow`]: f32 → f16, bf16, E4M3, E5M2, round to nearest, ties to even.
//!   Overflow gives ±infinity where the format has one; E4M3 has none, so
//!   overflow and ±infinity give NaN there.
//! * [`narrow_saturating`]: the same, but overflow and ±infinity clamp to ±MAX
//!   (65504, 3.39e38, 448, 57344).
//! * [`narrow_stochastic`]: stochastic rounding from a seeded [`StochasticRng`].
//! * [`widen`]: any format → f32, exact.
//!
//! **NaN rule.** Narrowing gives a quiet NaN with the input's sign and the
//! high bits of its payload (E4M3 has one NaN per sign, S.1111.111). Widening
//! gives a quiet f32 NaN with the same sign and the payload in its high bits.
//! So a narrow NaN survives a round trip with the same bits, its quiet bit set.
//!
//! **Speed.** On x86-64 with AVX2, FMA and F16C (detected once at run time;
//! no special build flags) each conversion runs a SIMD kernel; elsewhere the
//! scalar [`reference`](mod@reference). Both return identical bits for every input, length
//! and alignment, which the test suite checks exhaustively.
//!
//! ```
//! use mixprec::{bf16, convert};
//! let x = [1.0f32, 1.00390625, -3.5, f32::INFINITY];
//! let mut y = [bf16::ZERO; 4];
//! convert::narrow(&x, &mut y)?;
//! assert_eq!(y[1], bf16::from_f32(1.0)); // tie: rounds to even
//! let mut back = [0.0f32; 4];
//! convert::widen(&y, &mut back)?;
//! assert_eq!(back, [1.0, 1.0, -3.5, f32::INFINITY]);
//! # Ok::<(), mixprec::Error>(())
//! ```

pub(crate) mod reference_impl;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;

mod stochastic;

pub use stochastic::{narrow_stochastic, StochasticRng};

use crate::dtype::format::{Format, Overflow};
use crate::dtype::{DType, FloatElement};
use crate::Error;

/// The bit layout of `T`, or `None` for f32.
pub(crate) fn format_of<T: FloatElement>() -> Option<Format> {
    match T::DTYPE {
        DType::F16 => Some(Format::F16),
        DType::BF16 => Some(Format::BF16),
        DType::F8E4M3 => Some(Format::E4M3),
        DType::F8E5M2 => Some(Format::E5M2),
        DType::F6E2M3 => Some(Format::E2M3),
        DType::F6E3M2 => Some(Format::E3M2),
        DType::F4E2M1 => Some(Format::E2M1),
        DType::MxInt8 => Some(Format::MXINT8),
        _ => None,
    }
}

pub(crate) fn check_len(what: &'static str, src: usize, dst: usize) -> Result<(), Error> {
    if src == dst {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected: src,
            actual: dst,
        })
    }
}

/// Rounds each f32 of `src` into `dst` (same length), ties to even; overflow to
/// ±infinity, or NaN for E4M3.
///
/// # Errors
/// [`Error::LengthMismatch`] when `src` and `dst` differ in length.
pub fn narrow<T: FloatElement>(src: &[f32], dst: &mut [T]) -> Result<(), Error> {
    check_len("convert::narrow", src.len(), dst.len())?;
    narrow_dispatch(src, dst, Overflow::Ieee, crate::cpu::has_avx2_fma_f16c());
    Ok(())
}

/// Like [`narrow`], but overflow and ±infinity clamp to ±MAX of `T`; NaN stays NaN.
///
/// ```
/// use mixprec::{convert, F8E4M3};
/// let mut y = [F8E4M3::ZERO; 3];
/// convert::narrow_saturating(&[1000.0, f32::NEG_INFINITY, 0.3], &mut y)?;
/// assert_eq!(y.map(|v| v.to_f32()), [448.0, -448.0, 0.3125]);
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// [`Error::LengthMismatch`] when `src` and `dst` differ in length.
pub fn narrow_saturating<T: FloatElement>(src: &[f32], dst: &mut [T]) -> Result<(), Error> {
    check_len("convert::narrow_saturating", src.len(), dst.len())?;
    narrow_dispatch(
        src,
        dst,
        Overflow::Saturate,
        crate::cpu::has_avx2_fma_f16c(),
    );
    Ok(())
}

/// Widens each element of `src` into `dst` (same length), exactly.
///
/// # Errors
/// [`Error::LengthMismatch`] when `src` and `dst` differ in length.
pub fn widen<T: FloatElement>(src: &[T], dst: &mut [f32]) -> Result<(), Error> {
    check_len("convert::widen", src.len(), dst.len())?;
    widen_dispatch(src, dst, crate::cpu::has_avx2_fma_f16c());
    Ok(())
}

/// `src` rounded into a new `Vec<T>`, as [`narrow`] (ties to even;
/// overflow to ±infinity, or NaN for E4M3).
///
/// ```
/// use mixprec::{bf16, convert};
/// let w: Vec<bf16> = convert::narrow_vec(&[1.0f32, 0.1, -3.0e38]);
/// assert_eq!(w[1], bf16::from_f32(0.1));
/// assert_eq!(convert::widen_vec(&w)[0], 1.0);
/// ```
pub fn narrow_vec<T: FloatElement>(src: &[f32]) -> Vec<T> {
    let mut dst = vec![T::default(); src.len()];
    narrow_dispatch(
        src,
        &mut dst,
        Overflow::Ieee,
        crate::cpu::has_avx2_fma_f16c(),
    );
    dst
}

/// `src` widened exactly into a new `Vec<f32>`, as [`widen`].
pub fn widen_vec<T: FloatElement>(src: &[T]) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    widen_dispatch(src, &mut dst, crate::cpu::has_avx2_fma_f16c());
    dst
}

/// Each element of `src` rounded to `D` in a new `Vec<D>`: widened exactly
/// to f32, then rounded once to nearest, ties to even (so an f16 → E4M3
/// conversion rounds once, like a direct one).
///
/// ```
/// use mixprec::{convert, f16, F8E4M3};
/// let x = [f16::from_f32(0.3), f16::from_f32(500.0)];
/// let y: Vec<F8E4M3> = convert::cast_vec(&x);
/// assert_eq!(y[0].to_f32(), 0.3125);
/// assert!(y[1].is_nan()); // past E4M3's MAX = 448: NaN (no infinity)
/// ```
pub fn cast_vec<S: FloatElement, D: FloatElement>(src: &[S]) -> Vec<D> {
    let simd = crate::cpu::has_avx2_fma_f16c();
    let mut out = vec![D::default(); src.len()];
    // Through f32 a cache-sized chunk at a time.
    const CHUNK: usize = 4096;
    let mut wide = [0.0f32; CHUNK];
    for (s, d) in src.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
        let wide = &mut wide[..s.len()];
        widen_dispatch(s, wide, simd);
        narrow_dispatch(wide, d, Overflow::Ieee, simd);
    }
    out
}

pub(crate) fn narrow_dispatch<T: FloatElement>(
    src: &[f32],
    dst: &mut [T],
    overflow: Overflow,
    simd: bool,
) {
    let Some(fmt) = format_of::<T>() else {
        let dst: &mut [f32] = bytemuck::cast_slice_mut(dst);
        dst.copy_from_slice(src);
        return;
    };
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C.
        unsafe {
            match T::DTYPE {
                DType::F16 => x86_avx2::narrow_f16(src, bytemuck::cast_slice_mut(dst), overflow),
                DType::BF16 => x86_avx2::narrow_bf16(src, bytemuck::cast_slice_mut(dst), overflow),
                _ => x86_avx2::narrow_fp8(src, bytemuck::cast_slice_mut(dst), fmt, overflow),
            }
        }
        return;
    }
    let _ = simd;
    if T::DTYPE.size_bytes() == 1 {
        reference_impl::narrow_bits_slice::<u8>(src, bytemuck::cast_slice_mut(dst), fmt, overflow);
    } else {
        reference_impl::narrow_bits_slice::<u16>(src, bytemuck::cast_slice_mut(dst), fmt, overflow);
    }
}

pub(crate) fn widen_dispatch<T: FloatElement>(src: &[T], dst: &mut [f32], simd: bool) {
    let Some(fmt) = format_of::<T>() else {
        dst.copy_from_slice(bytemuck::cast_slice(src));
        return;
    };
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C.
        unsafe {
            match T::DTYPE {
                DType::F16 => x86_avx2::widen_f16(bytemuck::cast_slice(src), dst),
                DType::BF16 => x86_avx2::widen_bf16(bytemuck::cast_slice(src), dst),
                _ => x86_avx2::widen_fp8(bytemuck::cast_slice(src), dst, fmt),
            }
        }
        return;
    }
    let _ = simd;
    if T::DTYPE.size_bytes() == 1 {
        reference_impl::widen_bits_slice::<u8>(bytemuck::cast_slice(src), dst, fmt);
    } else {
        reference_impl::widen_bits_slice::<u16>(bytemuck::cast_slice(src), dst, fmt);
    }
}

/// The scalar reference conversions: element-by-element, integer arithmetic
/// only. The fast paths of this module are tested to equal them bit for bit.
pub mod reference {
    use super::*;

    /// Scalar [`super::narrow`].
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `src` and `dst` differ in length.
    pub fn narrow<T: FloatElement>(src: &[f32], dst: &mut [T]) -> Result<(), Error> {
        check_len("convert::reference::narrow", src.len(), dst.len())?;
        narrow_dispatch(src, dst, Overflow::Ieee, false);
        Ok(())
    }

    /// Scalar [`super::narrow_saturating`].
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `src` and `dst` differ in length.
    pub fn narrow_saturating<T: FloatElement>(src: &[f32], dst: &mut [T]) -> Result<(), Error> {
        check_len(
            "convert::reference::narrow_saturating",
            src.len(),
            dst.len(),
        )?;
        narrow_dispatch(src, dst, Overflow::Saturate, false);
        Ok(())
    }

    /// Scalar [`super::widen`].
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `src` and `dst` differ in length.
    pub fn widen<T: FloatElement>(src: &[T], dst: &mut [f32]) -> Result<(), Error> {
        check_len("convert::reference::widen", src.len(), dst.len())?;
        widen_dispatch(src, dst, false);
        Ok(())
    }
}

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
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

mod stochastic;

pub use stochastic::{narrow_stochastic, StochasticRng};

use crate::block_scaled::ScaleRule;
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

/// The largest |x| bits of each block of `block` values of `src` (NaN and
/// ±∞ have the largest bits), into `out` (one per whole block).
pub(crate) fn block_amax_bits(src: &[f32], block: usize, out: &mut [u32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd && block.is_multiple_of(8) {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C.
        unsafe { x86_avx2::block_amax_bits(src, block, out) };
        return;
    }
    let _ = simd;
    for (blk, o) in src.chunks_exact(block).zip(out.iter_mut()) {
        *o = abs_bits_max(blk, 0);
    }
}

/// The largest of `init` and the |x| bits of `x` (NaN and ±∞ largest).
fn abs_bits_max(x: &[f32], init: u32) -> u32 {
    x.iter().fold(init, |m, v| m.max(v.to_bits() & 0x7FFF_FFFF))
}

/// The largest |x| bits of a whole slice (NaN and ±∞ have the largest
/// bits; 0 for an empty slice): [`block_amax_bits`] over the body, the
/// tail in scalar code.
pub(crate) fn amax_bits(x: &[f32], simd: bool) -> u32 {
    let body = x.len() - x.len() % 8;
    let mut m = [0u32];
    if body > 0 {
        block_amax_bits(&x[..body], body, &mut m, simd);
    }
    abs_bits_max(&x[body..], m[0])
}

/// How a block's quotients `x / s` are formed: by the reciprocal when `s`
/// is a normal power of two whose reciprocal is normal (the same exact
/// quotient, so the same bits, and far cheaper), else by division.
#[inline]
pub(crate) fn block_reciprocal(s: f32) -> Option<f32> {
    // 2^(e − 127) with e in 1..=253 has the normal reciprocal 2^(127 − e):
    // exponent field 254 − e (no division needed).
    let bits = s.to_bits();
    let e = bits >> 23;
    (bits & 0x007F_FFFF == 0 && (1..=253).contains(&e)).then(|| f32::from_bits((254 - e) << 23))
}

/// `dst[i]` = `src[i] / scales[i / block]` (by `recips` where given, see
/// [`block_reciprocal`]), rounded to nearest even and saturated to `T`.
/// `scratch` holds the quotients on the portable path. `src.len()` is a
/// multiple of `block`. With `stream` the SIMD path stores the codes
/// non-temporally (then [`store_fence`] before the output is read). With
/// `amax_scales` every scale is a [`ScaleRule`]'s from an amax over values
/// that include its block's (so a finite positive scale means finite quotients, and
/// the SIMD path leaves out their NaN handling); a scale from elsewhere
/// (delayed scaling's history) needs `false`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn narrow_scaled_blocks<T: FloatElement>(
    src: &[f32],
    block: usize,
    scales: &[f32],
    recips: &[Option<f32>],
    dst: &mut [T],
    scratch: &mut Vec<f32>,
    simd: bool,
    stream: bool,
    amax_scales: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(fmt)) = (simd && fused_ok::<T>(block), format_of::<T>()) {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C;
        // `T` is one byte (checked by `fused_ok`).
        unsafe {
            x86_avx2::narrow_scaled_blocks(
                src,
                block,
                scales,
                recips,
                bytemuck::cast_slice_mut(dst),
                fmt,
                stream,
                amax_scales,
            )
        };
        return;
    }
    let _ = (stream, amax_scales);
    scratch.clear();
    for ((blk, &s), rec) in src.chunks_exact(block).zip(scales).zip(recips) {
        match rec {
            Some(r) => scratch.extend(blk.iter().map(|&v| v * r)),
            None => scratch.extend(blk.iter().map(|&v| v / s)),
        }
    }
    narrow_dispatch(scratch, &mut dst[..scratch.len()], Overflow::Saturate, simd);
}

/// Whether the fused block kernels take `T` (one-byte formats) and `block`.
fn fused_ok<T: FloatElement>(block: usize) -> bool {
    T::DTYPE.size_bytes() == 1
        && format_of::<T>().is_some()
        && (block == 16 || block.is_multiple_of(32))
}

/// `dst` = `src` (equal lengths); on x86-64 by non-temporal stores, which
/// skip reading `dst`'s lines into cache first and do not keep them there
/// (for data read back only after much else has passed through the
/// caches). Call [`store_fence`] before the data is read.
pub(crate) fn copy_streaming(dst: &mut [u32], src: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    x86_avx2::copy_streaming(dst, src);
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(&src[..dst.len()]);
}

/// Asks for `values` to be brought into cache (a hint: on other
/// architectures, nothing).
pub(crate) fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    x86_avx2::prefetch_lines(values, 0);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Orders [`quantize_blocks`]'s and [`copy_streaming`]'s non-temporal
/// stores before every later store: call it once after the last line,
/// before the output is handed back or read.
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    x86_avx2::store_fence();
}

/// How [`quantize_blocks`] runs over a line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct LinePass {
    /// Where each block's amax bits come from.
    pub(crate) amax: BlockAmax,
    /// Non-temporal stores for the codes where the SIMD tier has them
    /// (then [`store_fence`] before the output is handed back).
    pub(crate) stream: bool,
}

/// Where [`quantize_blocks`] finds each block's amax bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BlockAmax {
    /// In the source: the line's pass finds them.
    FromSource,
    /// Already in `scales` (each block's |x| bits as an f32's bits), from a
    /// pass before: the line's pass only reads them, then writes the scales
    /// over them.
    InScales,
}

/// One line of a block-scaled quantization: per block of `block` values,
/// `(scales[b], codes[b]) = rule.scale(amax bits)` (`codes` may be empty)
/// and `dst` = the block's quotients rounded to `T` (as
/// [`narrow_scaled_blocks`]); fused into one pass with SIMD, which also
/// evaluates MX and NVFP4 rules eight blocks at a time; `pass` says where
/// the blocks' amax bits come from and how the codes are stored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_blocks<T: FloatElement>(
    src: &[f32],
    block: usize,
    scales: &mut [f32],
    codes: &mut [u8],
    dst: &mut [T],
    scratch: &mut Vec<f32>,
    simd: bool,
    rule: &ScaleRule,
    pass: LinePass,
) {
    #[cfg(target_arch = "x86_64")]
    if simd && fused_ok::<T>(block) {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C;
        // `T` is one byte (checked by `fused_ok`).
        unsafe {
            x86_avx2::quantize_blocks::<T>(
                src,
                block,
                scales,
                codes,
                bytemuck::cast_slice_mut(dst),
                rule,
                pass,
            )
        };
        return;
    }
    let mut recips = Vec::with_capacity(scales.len());
    for (b, (s, blk)) in scales.iter_mut().zip(src.chunks_exact(block)).enumerate() {
        let bits = match pass.amax {
            BlockAmax::FromSource => abs_bits_max(blk, 0),
            BlockAmax::InScales => s.to_bits(),
        };
        let (scale, code) = rule.scale(bits);
        *s = scale;
        if let Some(c) = codes.get_mut(b) {
            *c = code;
        }
        recips.push(block_reciprocal(scale));
    }
    narrow_scaled_blocks(
        src, block, scales, &recips, dst, scratch, false, false, true,
    );
}

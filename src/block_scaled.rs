//! Block-scaled low precision: OCP Microscaling (MXFP8, MXFP6, MXFP4),
//! NVFP4 and scaled FP8, as [`BlockScaled`] matrices whose scales run along
//! K in blocks of 16, 32 or 128, ready for the block-scaled GEMM
//! ([`crate::gemm::block_gemm`]).
//!
//! # Layout
//!
//! A [`BlockScaled<T>`] holds a `lines × k` matrix, row-major, of elements
//! of type `T`, and one f32 scale per block of `block` consecutive values
//! along k (`k` a multiple of `block`) and `line_group` consecutive lines:
//! `scales[(line / line_group) · (k / block) + kk / block]`. The value of
//! element `(line, kk)` is `data · scale`, one f32 rounding. As a GEMM
//! operand, A is `M × K` (lines = M) and B is given as `N × K` (lines = N,
//! PyTorch's `[out, in]` weight layout): the GEMM computes `A · Bᵀ`.
//!
//! # Schemes
//!
//! | scheme | elements | block | scale | bits/element incl. scale | dynamic range of the elements | u of the elements |
//! |---|---|---|---|---|---|---|
//! | MXFP8 E4M3 | [`F8E4M3`] | 32 | E8M0 | 8.25 | 2^-9 … 448 | 2^-4 |
//! | MXFP8 E5M2 | [`F8E5M2`] | 32 | E8M0 | 8.25 | 2^-16 … 57344 | 2^-3 |
//! | MXFP6 E2M3 | [`F6E2M3`] | 32 | E8M0 | 6.25 | 0.125 … 7.5 | 2^-4 |
//! | MXFP6 E3M2 | [`F6E3M2`] | 32 | E8M0 | 6.25 | 0.0625 … 28 | 2^-3 |
//! | MXFP4 | [`F4E2M1`] | 32 | E8M0 | 4.25 | 0.5 … 6 | 2^-2 |
//! | MXINT8 | [`MxInt8`] (int8 · 2^-6) | 32 | E8M0 | 8.25 | 2^-6 … 127/64 | 2^-7 (in [1, 2)) |
//! | NVFP4 | [`F4E2M1`] | 16 | E4M3 (+ f32 per tensor) | 4.5 | 0.5 … 6 | 2^-2 |
//! | FP8, 1×128 | E4M3/E5M2 | 128 | f32 | 8.25 | as MXFP8 | as MXFP8 |
//! | FP8, 128×128 | E4M3/E5M2 | 128 × 128 lines | f32 | ≈ 8 | as MXFP8 | as MXFP8 |
//! | FP8, per tensor | E4M3/E5M2 | whole tensor | f32 | ≈ 8 | as MXFP8 | as MXFP8 |
//!
//! (Bits in memory: FP6/FP4 are stored a byte each here; pack them with
//! [`crate::dtype::pack_fp4`]/[`crate::dtype::pack_fp6`] for the figures
//! above. FP4 weights for inference at small batch: [`PackedFp4`], two per
//! byte, with [`crate::gemm::block_gemm_packed`].)
//!
//! **MX** ([`BlockScaled::mx`]): X = 2^(⌊log₂ amax⌋ − emax_elem) with
//! emax_elem 8 (E4M3), 15 (E5M2), 2 (E2M3), 4 (E3M2), 2 (E2M1), 0 (INT8)
//! ([`MxScaleMode::Floor`], the OCP MX v1.0 rule), or
//! X = 2^⌈log₂(amax / max_elem)⌉ ([`MxScaleMode::Ceil`], cuBLAS's RCEIL;
//! `amax / max_elem` in f64). Exponents below −127 clamp to −127, above 127
//! give a NaN scale. Elements are `V / X` rounded to nearest even and
//! saturated to ±max. A block holding NaN or ±∞ gets a NaN scale (0xFF). An
//! all-zero block is treated as amax = 2^-126 (the smallest normal f32, as
//! microxcaling does): its scale is 2^max(−127, −126 − emax_elem) and its
//! elements are zero.
//!
//! **NVFP4** ([`BlockScaled::nvfp4`]): blocks of 16 E2M1. Without a tensor
//! scale the block scale is E4M3(amax / 6), clamped to [2^-9, 448]; with
//! one, s_t = amax_tensor / (448 · 6) and the block scale is
//! E4M3(amax / 6 / s_t) clamped likewise, used as `fl(s_t · e4m3)`. Elements
//! are `x / scale`, saturated to ±6, rounded to E2M1. A NaN or ±∞ anywhere
//! in the tensor makes s_t NaN, and with it every block scale (as torchao's
//! definition computes it); an all-zero tensor has s_t = 1.
//!
//! **Scaled FP8** ([`BlockScaled::fp8`]): scale = amax / max_normal in f32
//! (or, with `pow2`, the power of two at or above it), per tensor, per
//! line in 1×128 blocks (activations) or in 128×128 blocks (weights); an
//! all-zero block has scale 1. Elements are `x / scale` rounded to nearest
//! even, saturated.
//!
//! ```
//! use mixprec::block_scaled::{BlockScaled, MxScaleMode};
//! use mixprec::{MatRef, F8E4M3};
//! let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
//! let q = BlockScaled::<F8E4M3>::mx(MatRef::from_row_major(&x, 1, 64)?, MxScaleMode::Floor)?;
//! // Block 0: amax = 20 × 0.37 = 7.4, ⌊log₂ 7.4⌋ = 2, scale 2^(2 − 8) = 2^-6.
//! assert_eq!(q.scales()[0], 2f32.powi(-6));
//! let back = q.dequantize()?;
//! assert!((back.as_slice()[1] - x[1]).abs() <= x[1].abs() / 16.0);
//! # Ok::<(), mixprec::Error>(())
//! ```

use crate::convert::{
    amax_bits, block_amax_bits, block_reciprocal, copy_streaming, narrow_scaled_blocks, prefetch,
    quantize_blocks, store_fence, widen, BlockAmax, LinePass,
};
use crate::dtype::{MxInt8, F4E2M1, F6E2M3, F6E3M2, F8E4M3, F8E5M2, F8E8M0};
use crate::error::checked_numel;
use crate::tensor::{MatRef, Tensor};
use crate::{Error, FloatElement};

/// Block sizes along K that the GEMM contract allows (each divides 128).
pub const BLOCK_SIZES: [usize; 3] = [16, 32, 128];

/// How an MX block's power-of-two scale follows from its amax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MxScaleMode {
    /// OCP MX v1.0: 2^(⌊log₂ amax⌋ − emax_elem); values may exceed the
    /// element's max and then saturate.
    #[default]
    Floor,
    /// cuBLAS's RCEIL (torchao's RCEIL/CEIL): 2^⌈log₂(amax / max_elem)⌉, so
    /// no element saturates.
    Ceil,
}

mod sealed {
    pub trait Sealed {}
}

/// An MX element format: its largest normal's exponent (emax_elem).
pub trait MxElement: FloatElement + sealed::Sealed {
    /// The exponent of the largest normal value.
    const EMAX: i32;
}

macro_rules! mx_element {
    ($t:ty, $e:expr) => {
        impl sealed::Sealed for $t {}
        impl MxElement for $t {
            const EMAX: i32 = $e;
        }
    };
}
mx_element!(F8E4M3, 8);
mx_element!(F8E5M2, 15);
mx_element!(F6E2M3, 2);
mx_element!(F6E3M2, 4);
mx_element!(F4E2M1, 2);
mx_element!(MxInt8, 0);

/// The lines that share one scale in scaled FP8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8Granularity {
    /// One scale for the whole tensor (blocks of 128 along K, all equal).
    PerTensor,
    /// One scale per line and 128 values of K (activations, per token).
    Lines1x128,
    /// One scale per 128 lines and 128 values of K (weights).
    Blocks128x128,
}

/// How the scales were made (kept for storage in their own encoding).
#[derive(Clone, Debug, PartialEq)]
enum ScaleKind {
    /// Powers of two from E8M0 codes (MX).
    E8M0,
    /// E4M3 block scales, optionally times an f32 tensor scale (NVFP4).
    Nvfp4 {
        block_scales: Vec<F8E4M3>,
        tensor_scale: Option<f32>,
    },
    /// f32 scales (scaled FP8, or given by the caller).
    F32,
}

/// A `lines × k` matrix of `T` with one f32 scale per block along k; see
/// the module docs for the layout and the schemes.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockScaled<T> {
    lines: usize,
    k: usize,
    block: usize,
    line_group: usize,
    data: Vec<T>,
    scales: Vec<f32>,
    kind: ScaleKind,
}

fn check_shape(lines: usize, k: usize, block: usize, line_group: usize) -> Result<usize, Error> {
    if !BLOCK_SIZES.contains(&block) {
        return Err(Error::InvalidParameter {
            name: "block size",
            value: block.to_string(),
            requirement: "16, 32 or 128 (a divisor of the array height)",
        });
    }
    if !k.is_multiple_of(block) {
        return Err(Error::InvalidParameter {
            name: "K",
            value: format!("{k} with blocks of {block}"),
            requirement: "a multiple of the block size",
        });
    }
    if line_group == 0 {
        return Err(Error::InvalidParameter {
            name: "line_group",
            value: "0".into(),
            requirement: "at least 1",
        });
    }
    checked_numel(&[lines, k])?;
    Ok(lines.div_ceil(line_group) * (k / block))
}

/// Quantized outputs of at least this many bytes are written with
/// non-temporal stores (8 MiB: past any core's L2 and most of an L3 share).
const STREAM_MIN_BYTES: usize = 8 << 20;

/// Whether quantizing `lines × k` values into elements of `elem_bytes`
/// bytes streams its outputs (see [`STREAM_MIN_BYTES`]); the byte count
/// saturates, for views whose lines × k need not fit one.
fn streams(lines: usize, k: usize, elem_bytes: usize) -> bool {
    lines.saturating_mul(k).saturating_mul(elem_bytes) >= STREAM_MIN_BYTES
}

/// Values rounded between prefetches of the next band in scaled FP8 by
/// 128 x 128 blocks (a multiple of 128; 2 KiB of source).
const PREFETCH_PIECE: usize = 512;

/// Source bytes per chunk of lines in a pass that finds maxima before a
/// second pass reads the source again (4 MiB, a fraction of an L3): the
/// first pass takes the chunks last first, so the second, first to last,
/// starts on the lines the first left in cache (and the first starts
/// where a caller that just wrote the source left off).
const REUSE_CHUNK_BYTES: usize = 4 << 20;

/// The lines `0..lines`, in chunks of about [`REUSE_CHUNK_BYTES`] of
/// source (`row_bytes` each): the last chunk first, each chunk in order.
fn lines_last_chunk_first(lines: usize, row_bytes: usize) -> impl Iterator<Item = usize> {
    let per = (REUSE_CHUNK_BYTES / row_bytes.max(1)).max(1);
    (0..lines.div_ceil(per))
        .rev()
        .flat_map(move |c| c * per..lines.min((c + 1) * per))
}

/// [`amax_or_nan`] of `x` (rows contiguous, `k` a positive multiple of
/// `block`), leaving each block's largest |x| bits, as an f32's bits, in
/// `scales` (resized to `n_scales`, one per block, in line order); lines
/// as [`lines_last_chunk_first`] orders them. With
/// `stream` the maxima go out by non-temporal stores: the rest of the
/// source evicts them before the second pass reads them anyway, and those
/// stores skip reading their lines first.
fn block_amax_in_scales(
    x: MatRef<'_, f32>,
    block: usize,
    scales: &mut Vec<f32>,
    n_scales: usize,
    stream: bool,
) -> f32 {
    let simd = crate::cpu::has_avx2_fma_f16c();
    let (k, nb) = (x.cols(), x.cols() / block);
    // Every entry is written below: a reused buffer is only resized.
    scales.truncate(n_scales);
    scales.resize(n_scales, 0.0);
    let bits: &mut [u32] = bytemuck::cast_slice_mut(scales);
    // With `stream`, the maxima pass through here on their way out.
    let mut piece = [0u32; 256];
    let mut amax = 0u32;
    for l in lines_last_chunk_first(x.rows(), k.saturating_mul(4)) {
        let line = &mut bits[l * nb..][..nb];
        let row = &x.as_slice()[l * x.row_stride()..][..k];
        // 256 blocks at a time: their maxima are in L1, so their max is cheap.
        let pieces = row.chunks(block * piece.len());
        for (src, dst) in pieces.zip(line.chunks_mut(piece.len())) {
            let maxima = if stream {
                &mut piece[..dst.len()]
            } else {
                &mut *dst
            };
            block_amax_bits(src, block, maxima, simd);
            amax = amax.max(amax_bits(bytemuck::cast_slice(maxima), simd));
            if stream {
                copy_streaming(dst, &piece[..dst.len()]);
            }
        }
    }
    if stream {
        store_fence();
    }
    to_amax(amax)
}

/// The largest |x| of a matrix, or NaN when it holds a NaN or ±∞ (by the
/// bits of |x|, which order NaN and ±∞ last; an integer max), lines as
/// [`lines_last_chunk_first`] orders them.
fn amax_or_nan(x: MatRef<'_, f32>) -> f32 {
    let simd = crate::cpu::has_avx2_fma_f16c();
    let mut bits = 0u32;
    for l in lines_last_chunk_first(x.rows(), x.cols().saturating_mul(4)) {
        bits = match x.row(l) {
            Ok(r) if r.col_stride() == 1 && r.cols() > 0 => {
                bits.max(amax_bits(&r.as_slice()[..r.cols()], simd))
            }
            Ok(r) => (0..r.cols()).fold(bits, |m, j| m.max(r.at(0, j).to_bits() & 0x7FFF_FFFF)),
            Err(_) => bits,
        };
    }
    to_amax(bits)
}

/// The amax those bits stand for, or NaN when they are a NaN's or ±∞'s.
pub(crate) fn to_amax(bits: u32) -> f32 {
    if bits >= 0x7F80_0000 {
        f32::NAN
    } else {
        f32::from_bits(bits)
    }
}

/// 2^e as f32, for e in −149..=127 (subnormals included); +∞ above.
fn pow2_f32(e: i32) -> f32 {
    if e > 127 {
        f32::INFINITY
    } else if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (e + 149).max(0))
    }
}

/// The 23 fraction bits of the significand of a finite x > 0, normalised
/// (x = 2^⌊log₂ x⌋ · (1 + f / 2^23); f32 subnormals included).
fn significand_fraction(x: f32) -> u32 {
    let b = x.to_bits() & 0x7FFF_FFFF;
    if b >> 23 == 0 {
        // Subnormal: shift the leading one out to bit 23.
        let shift = b.leading_zeros() - 8;
        (b << shift) & 0x007F_FFFF
    } else {
        b & 0x007F_FFFF
    }
}

/// ⌊log₂ x⌋ for a finite x > 0 (f32 subnormals included).
fn floor_log2(x: f32) -> i32 {
    let b = x.to_bits();
    let e = (b >> 23) as i32;
    if e == 0 {
        // Subnormal: the leading one of the mantissa.
        -127 - ((b & 0x007F_FFFF).leading_zeros() as i32 - 9)
    } else {
        e - 127
    }
}

/// How a block's scale follows from the bits of its largest |x| (NaN
/// and ±∞ have the largest bits): the scalar definition of each scheme,
/// which the fused SIMD quantizer evaluates eight blocks at a time for MX
/// and NVFP4 (`convert::x86_avx2::quantize_blocks`, same bits).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ScaleRule {
    /// MX: 2^(⌊log₂ amax⌋ − emax), plus one with `ceil` when amax's
    /// significand fraction exceeds `max_frac` (the element max's);
    /// exponents clamp at −127, above 127 the scale is NaN.
    Mx {
        emax: i32,
        ceil: bool,
        max_frac: u32,
    },
    /// NVFP4: the E4M3 of amax / 6 (/ s_t) clamped to [2^-9, 448], times
    /// the tensor scale s_t where there is one.
    Nvfp4 { tensor_scale: Option<f32> },
    /// Scaled FP8: amax / max (the power of two at or above it with
    /// `pow2`), 1 for an all-zero block; `tensor_amax` replaces the
    /// block's amax (per-tensor scaling).
    Fp8 {
        max: f32,
        pow2: bool,
        tensor_amax: Option<f32>,
    },
}

impl ScaleRule {
    /// The block's f32 scale and its code (NVFP4's E4M3 block scale; 0
    /// for the other schemes).
    pub(crate) fn scale(&self, amax_bits: u32) -> (f32, u8) {
        let amax = to_amax(amax_bits);
        match *self {
            Self::Mx {
                emax,
                ceil,
                max_frac,
            } => {
                if amax.is_nan() {
                    return (f32::NAN, 0);
                }
                let amax = if amax == 0.0 { f32::MIN_POSITIVE } else { amax };
                // amax / max_elem = 2^e · (1 + f_a) / (1 + f_max) with the
                // significand fractions f: at most 2^e exactly when
                // f_a <= f_max, else in (2^e, 2^(e+1)).
                let e = floor_log2(amax) - emax
                    + i32::from(ceil && significand_fraction(amax) > max_frac);
                (F8E8M0::from_exponent(e.max(-127)).to_f32(), 0)
            }
            Self::Nvfp4 { tensor_scale } => {
                let raw = match tensor_scale {
                    Some(s) => amax / 6.0 / s,
                    None => amax / 6.0,
                };
                // E4M3 of the block scale, clamped to [2^-9, 448]; NaN stays.
                let (lo, hi) = (F8E4M3::MIN_POSITIVE_SUBNORMAL.to_f32(), 448.0f32);
                let e4 = if raw.is_nan() {
                    F8E4M3::NAN
                } else {
                    F8E4M3::from_f32_saturating(raw.clamp(lo, hi))
                };
                let s = match tensor_scale {
                    Some(s) => s * e4.to_f32(),
                    None => e4.to_f32(),
                };
                (s, e4.to_bits())
            }
            Self::Fp8 {
                max,
                pow2,
                tensor_amax,
            } => {
                let amax = tensor_amax.unwrap_or(amax);
                if amax.is_nan() {
                    return (f32::NAN, 0);
                }
                if amax == 0.0 {
                    return (1.0, 0);
                }
                let s = amax / max;
                if pow2 && s > 0.0 && s.is_finite() {
                    // The smallest power of two at or above s.
                    let e = floor_log2(s);
                    let p = pow2_f32(e);
                    (if p == s { p } else { pow2_f32(e + 1) }, 0)
                } else {
                    (s, 0)
                }
            }
        }
    }
}

impl<T: FloatElement> BlockScaled<T> {
    /// A block-scaled matrix from its parts (for data quantized
    /// elsewhere): `data` is `lines × k` row-major, `scales` one per
    /// `line_group` lines and `block` values of k.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a block size other than 16, 32 or
    /// 128, a K that is not a multiple of it, a line group of 0, or a scale
    /// that is not finite and > 0; [`Error::LengthMismatch`] for data or
    /// scales of the wrong length; [`Error::ShapeOverflow`].
    pub fn from_parts(
        lines: usize,
        k: usize,
        block: usize,
        line_group: usize,
        data: Vec<T>,
        scales: Vec<f32>,
    ) -> Result<Self, Error> {
        let n_scales = check_shape(lines, k, block, line_group)?;
        if data.len() != lines * k {
            return Err(Error::LengthMismatch {
                what: "BlockScaled data (lines × k)",
                expected: lines * k,
                actual: data.len(),
            });
        }
        if scales.len() != n_scales {
            return Err(Error::LengthMismatch {
                what: "BlockScaled scales (one per line group and block)",
                expected: n_scales,
                actual: scales.len(),
            });
        }
        if let Some((i, s)) = scales
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(Error::InvalidParameter {
                name: "block scale",
                value: format!("{s} at {i}"),
                requirement: "finite and > 0",
            });
        }
        Ok(Self {
            lines,
            k,
            block,
            line_group,
            data,
            scales,
            kind: ScaleKind::F32,
        })
    }

    /// Lines (rows of the stored matrix).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Length of each line: the K of a GEMM.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Values of K per scale.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Lines per scale.
    pub fn line_group(&self) -> usize {
        self.line_group
    }

    /// The elements, `lines × k` row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements as a `lines × k` view.
    pub fn data_mat(&self) -> MatRef<'_, T> {
        match MatRef::from_row_major(&self.data, self.lines, self.k) {
            Ok(m) => m,
            Err(e) => unreachable!("BlockScaled shape checked when built: {e}"),
        }
    }

    /// The f32 scales, `⌈lines / line_group⌉ × (k / block)` row-major (for
    /// NVFP4 with a tensor scale: `fl(s_t · block scale)`).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The scale of element `(line, kk)`, if inside.
    pub fn scale_at(&self, line: usize, kk: usize) -> Option<f32> {
        (line < self.lines && kk < self.k)
            .then(|| self.scales[self.scale_index(line, kk / self.block)])
    }

    pub(crate) fn scale_index(&self, line: usize, block: usize) -> usize {
        (line / self.line_group) * (self.k / self.block) + block
    }

    /// The scales as E8M0 codes, for MX matrices.
    pub fn e8m0_scales(&self) -> Option<Vec<F8E8M0>> {
        (self.kind == ScaleKind::E8M0).then(|| {
            self.scales
                .iter()
                .map(|&s| {
                    if s.is_nan() {
                        F8E8M0::NAN
                    } else {
                        F8E8M0::from_exponent(floor_log2(s))
                    }
                })
                .collect()
        })
    }

    /// The E4M3 block scales and the f32 tensor scale, for NVFP4 matrices.
    pub fn nvfp4_scales(&self) -> Option<(&[F8E4M3], Option<f32>)> {
        match &self.kind {
            ScaleKind::Nvfp4 {
                block_scales,
                tensor_scale,
            } => Some((block_scales, *tensor_scale)),
            _ => None,
        }
    }

    /// Every element times its scale (one rounding each), `lines × k`.
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] only if the shape cannot be allocated.
    pub fn dequantize(&self) -> Result<Tensor<f32>, Error> {
        let mut out = vec![0.0f32; self.data.len()];
        self.dequantize_into(&mut out)?;
        Tensor::from_vec(&[self.lines, self.k], out)
    }

    /// Every element times its scale (one rounding each) into `out`
    /// (`lines × k`, row-major), without allocating.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `out` is not `lines × k` long.
    pub fn dequantize_into(&self, out: &mut [f32]) -> Result<(), Error> {
        widen(&self.data, out)?;
        let nb = self.k / self.block;
        for (line, row) in out.chunks_mut(self.k.max(1)).enumerate().take(self.lines) {
            let srow = &self.scales[(line / self.line_group) * nb..][..nb];
            for (blk, &s) in row.chunks_mut(self.block).zip(srow) {
                for v in blk {
                    *v *= s;
                }
            }
        }
        Ok(())
    }

    /// Runs a quantizer on this matrix's buffers and takes its result; on
    /// an error the buffers (untouched: quantizers check before writing)
    /// go back.
    fn reuse(
        &mut self,
        quantize: impl FnOnce(&mut Vec<T>, &mut Vec<f32>) -> Result<Self, Error>,
    ) -> Result<(), Error> {
        let (mut data, mut scales) = (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.scales),
        );
        match quantize(&mut data, &mut scales) {
            Ok(q) => {
                *self = q;
                Ok(())
            }
            Err(e) => {
                self.data = data;
                self.scales = scales;
                Err(e)
            }
        }
    }

    /// Quantizes `x` block by block: `rule` gives the block's f32 scale
    /// from the largest |value| of its region; elements are `x / scale`
    /// rounded to nearest even and saturated. `codes` (NVFP4) receives the
    /// rule's code per block (lines with their own scales only).
    #[allow(clippy::too_many_arguments)]
    fn quantize_with(
        x: MatRef<'_, f32>,
        block: usize,
        line_group: usize,
        kind: ScaleKind,
        rule: ScaleRule,
        data: &mut Vec<T>,
        scales: &mut Vec<f32>,
        codes: Option<&mut Vec<F8E4M3>>,
        amax_given: BlockAmax,
    ) -> Result<Self, Error> {
        let (lines, k) = (x.rows(), x.cols());
        let n_scales = check_shape(lines, k, block, line_group)?;
        // Block amaxes are only handed in for lines with their own scales,
        // one per block (see `nvfp4_in`).
        let amax_given = match amax_given {
            BlockAmax::InScales if line_group == 1 && scales.len() == n_scales => amax_given,
            _ => BlockAmax::FromSource,
        };
        let nb = k / block;
        // Lines as slices (copied only from a strided view).
        let contiguous = x.col_stride() == 1;
        let mut buf = Vec::new();
        // Grown a line at a time just before the line is written, so the
        // zeroing happens in cache rather than as a pass over memory (and
        // in the caller's buffers when it lends them).
        // A reused buffer keeps its length (every element is written), so
        // only its growth is zeroed; the same for the scales and codes
        // (every block's is written; with `InScales` they hold the amaxes).
        data.truncate(lines * k);
        data.reserve(lines * k - data.len());
        scales.truncate(n_scales);
        if k == 0 {
            return Ok(Self {
                lines,
                k,
                block,
                line_group,
                data: std::mem::take(data),
                scales: std::mem::take(scales),
                kind,
            });
        }
        macro_rules! row {
            ($l:expr) => {
                if contiguous {
                    &x.as_slice()[$l * x.row_stride()..][..k]
                } else {
                    buf.clear();
                    buf.extend((0..k).map(|kk| x.at($l, kk)));
                    &buf[..]
                }
            };
        }
        let simd = crate::cpu::has_avx2_fma_f16c();
        scales.resize(n_scales, 0.0);
        let mut scratch = Vec::new();
        // An output past what caches keep goes out by non-temporal stores
        // (as memcpy's do): no reads of its lines first.
        let stream = streams(lines, k, std::mem::size_of::<T>());
        if line_group == 1 {
            // Each line has its own scales: amax, scales and quotients while
            // the line is in cache.
            let mut no_codes = Vec::new();
            let codes = match codes {
                Some(c) => {
                    c.truncate(n_scales);
                    c.resize(n_scales, F8E4M3::default());
                    c
                }
                None => &mut no_codes,
            };
            for l in 0..lines {
                let row: &[f32] = row!(l);
                if data.len() < (l + 1) * k {
                    data.resize((l + 1) * k, T::default());
                }
                let srow = &mut scales[l * nb..(l + 1) * nb];
                let crow = codes.get_mut(l * nb..(l + 1) * nb).unwrap_or_default();
                let out = &mut data[l * k..];
                quantize_blocks(
                    row,
                    block,
                    srow,
                    bytemuck::cast_slice_mut(crow),
                    out,
                    &mut scratch,
                    simd,
                    &rule,
                    LinePass {
                        amax: amax_given,
                        stream,
                    },
                );
            }
            if stream {
                store_fence();
            }
        } else {
            // A band of `line_group` lines at a time (128 x 128 blocks; per
            // tensor, all the lines): its regions' maxima, their scales,
            // then its codes, so that the band's second read can find it
            // in cache. Per tensor, the one scale comes from the tensor's
            // amax (already found), which replaces the regions' maxima: no
            // pass for them.
            let per_tensor = matches!(
                rule,
                ScaleRule::Fp8 {
                    tensor_amax: Some(_),
                    ..
                }
            );
            if per_tensor {
                scales.fill(rule.scale(0).0);
            }
            let (mut amax, mut region) = (vec![0u32; nb], vec![0u32; nb]);
            let mut recips = vec![None; nb];
            for (band, srow) in scales.chunks_exact_mut(nb).enumerate() {
                let band_lines = band * line_group..lines.min((band + 1) * line_group);
                if !per_tensor {
                    region.fill(0);
                    for l in band_lines.clone() {
                        block_amax_bits(row!(l), block, &mut amax, simd);
                        for (a, &b) in region.iter_mut().zip(&amax) {
                            *a = (*a).max(b);
                        }
                    }
                    for (s, &b) in srow.iter_mut().zip(&region) {
                        *s = rule.scale(b).0;
                    }
                }
                // A power-of-two scale multiplies by its exact reciprocal.
                for (r, &s) in recips.iter_mut().zip(&*srow) {
                    *r = block_reciprocal(s);
                }
                for l in band_lines {
                    let row: &[f32] = row!(l);
                    if data.len() < (l + 1) * k {
                        data.resize((l + 1) * k, T::default());
                    }
                    // The same line of the next band, fetched while this
                    // one is rounded (the rounding is compute-bound): that
                    // band's two reads then find it in cache (per tensor
                    // the one band holds every line: there is none).
                    let next = (contiguous && l + line_group < lines)
                        .then(|| &x.as_slice()[(l + line_group) * x.row_stride()..][..k]);
                    let out = &mut data[l * k..];
                    for c in (0..k).step_by(PREFETCH_PIECE) {
                        let cols = c..k.min(c + PREFETCH_PIECE);
                        if let Some(next) = next {
                            prefetch(&next[cols.clone()]);
                        }
                        let (b0, b1) = (cols.start / block, cols.end / block);
                        narrow_scaled_blocks(
                            &row[cols.clone()],
                            block,
                            &srow[b0..b1],
                            &recips[b0..b1],
                            &mut out[cols],
                            &mut scratch,
                            simd,
                            stream,
                            true,
                        );
                    }
                }
            }
            if stream {
                store_fence();
            }
        }
        Ok(Self {
            lines,
            k,
            block,
            line_group,
            data: std::mem::take(data),
            scales: std::mem::take(scales),
            kind,
        })
    }
}

impl<T: MxElement> BlockScaled<T> {
    /// MX quantization of `x` (`lines × k`, any strides): blocks of 32
    /// along k, E8M0 scales by `mode` (see the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when k is not a multiple of 32.
    pub fn mx(x: MatRef<'_, f32>, mode: MxScaleMode) -> Result<Self, Error> {
        Self::mx_in(x, mode, &mut Vec::new(), &mut Vec::new())
    }

    /// [`Self::mx`] into `out`, reusing its allocations: once they are large
    /// enough, quantizing allocates nothing (activations, call after call;
    /// for `x` with contiguous rows on the AVX2 and AVX-512 tiers, where
    /// `tests/alloc_free.rs` counts it; the portable tier keeps per-line
    /// scratch).
    ///
    /// # Errors
    /// As [`Self::mx`]; `out` is then unchanged.
    pub fn mx_into(x: MatRef<'_, f32>, mode: MxScaleMode, out: &mut Self) -> Result<(), Error> {
        out.reuse(|d, s| Self::mx_in(x, mode, d, s))
    }

    fn mx_in(
        x: MatRef<'_, f32>,
        mode: MxScaleMode,
        data: &mut Vec<T>,
        scales: &mut Vec<f32>,
    ) -> Result<Self, Error> {
        let rule = ScaleRule::Mx {
            emax: T::EMAX,
            ceil: mode == MxScaleMode::Ceil,
            max_frac: significand_fraction(T::MAX.to_f32()),
        };
        Self::quantize_with(
            x,
            32,
            1,
            ScaleKind::E8M0,
            rule,
            data,
            scales,
            None,
            BlockAmax::FromSource,
        )
    }
}

impl BlockScaled<F4E2M1> {
    /// NVFP4 quantization of `x` (`lines × k`): blocks of 16 along k, E4M3
    /// block scales and, with `tensor_scale`, an f32 per-tensor scale (see
    /// the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when k is not a multiple of 16.
    pub fn nvfp4(x: MatRef<'_, f32>, tensor_scale: bool) -> Result<Self, Error> {
        Self::nvfp4_in(
            x,
            tensor_scale,
            &mut Vec::new(),
            &mut Vec::new(),
            Vec::new(),
        )
    }

    /// [`Self::nvfp4`] into `out`, reusing its allocations (the elements,
    /// the f32 scales and the E4M3 block scales): once they are large
    /// enough, quantizing allocates nothing (as [`Self::mx_into`]: rows
    /// contiguous, the SIMD tiers).
    ///
    /// # Errors
    /// As [`Self::nvfp4`]; `out` is then unchanged.
    pub fn nvfp4_into(x: MatRef<'_, f32>, tensor_scale: bool, out: &mut Self) -> Result<(), Error> {
        // The only error; checked before the block scales leave `out`.
        check_shape(x.rows(), x.cols(), 16, 1)?;
        let codes = match &mut out.kind {
            ScaleKind::Nvfp4 { block_scales, .. } => std::mem::take(block_scales),
            _ => Vec::new(),
        };
        out.reuse(|d, s| Self::nvfp4_in(x, tensor_scale, d, s, codes))
    }

    fn nvfp4_in(
        x: MatRef<'_, f32>,
        tensor_scale: bool,
        data: &mut Vec<F4E2M1>,
        scales: &mut Vec<f32>,
        mut block_scales: Vec<F8E4M3>,
    ) -> Result<Self, Error> {
        let (lines, k) = (x.rows(), x.cols());
        let n_scales = check_shape(lines, k, 16, 1)?;
        let mut amax_given = BlockAmax::FromSource;
        let s_t = if tensor_scale {
            let amax = if x.col_stride() == 1 && k > 0 {
                // The pass for the tensor's amax keeps every block's amax
                // (in `scales`, 1/16 of the source), so the second pass only
                // reads them.
                amax_given = BlockAmax::InScales;
                let stream = streams(lines, k, std::mem::size_of::<F4E2M1>());
                block_amax_in_scales(x, 16, scales, n_scales, stream)
            } else {
                amax_or_nan(x)
            };
            let s = amax / (448.0 * 6.0);
            // NaN (a NaN or ±∞ in the tensor) propagates to every block;
            // an all-zero tensor (or one whose scale underflows) takes 1.
            Some(if s > 0.0 || s.is_nan() { s } else { 1.0 })
        } else {
            None
        };
        let rule = ScaleRule::Nvfp4 { tensor_scale: s_t };
        let mut q = Self::quantize_with(
            x,
            16,
            1,
            ScaleKind::F32,
            rule,
            data,
            scales,
            Some(&mut block_scales),
            amax_given,
        )?;
        q.kind = ScaleKind::Nvfp4 {
            block_scales,
            tensor_scale: s_t,
        };
        Ok(q)
    }
}

/// Scaled FP8 for the two FP8 formats.
impl<T: FloatElement> BlockScaled<T> {
    /// Scaled-FP8 quantization of `x` (`lines × k`): E4M3 or E5M2
    /// elements, f32 scales `amax / max_normal` (the power of two at or
    /// above it with `pow2`) at `granularity` (see the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `T` is not an FP8 format or k is
    /// not a multiple of 128.
    pub fn fp8(x: MatRef<'_, f32>, granularity: Fp8Granularity, pow2: bool) -> Result<Self, Error> {
        Self::fp8_in(x, granularity, pow2, &mut Vec::new(), &mut Vec::new())
    }

    /// [`Self::fp8`] into `out`, reusing its allocations.
    ///
    /// # Errors
    /// As [`Self::fp8`]; `out` is then unchanged.
    pub fn fp8_into(
        x: MatRef<'_, f32>,
        granularity: Fp8Granularity,
        pow2: bool,
        out: &mut Self,
    ) -> Result<(), Error> {
        out.reuse(|d, s| Self::fp8_in(x, granularity, pow2, d, s))
    }

    fn fp8_in(
        x: MatRef<'_, f32>,
        granularity: Fp8Granularity,
        pow2: bool,
        data: &mut Vec<T>,
        scales: &mut Vec<f32>,
    ) -> Result<Self, Error> {
        if !matches!(T::DTYPE, crate::DType::F8E4M3 | crate::DType::F8E5M2) {
            return Err(Error::InvalidParameter {
                name: "scaled FP8 element type",
                value: T::DTYPE.to_string(),
                requirement: "f8_e4m3 or f8_e5m2",
            });
        }
        let max = T::MAX.to_f32();
        let line_group = match granularity {
            Fp8Granularity::PerTensor => x.rows().max(1),
            Fp8Granularity::Lines1x128 => 1,
            Fp8Granularity::Blocks128x128 => 128,
        };
        let per_tensor = granularity == Fp8Granularity::PerTensor;
        let tensor_amax = if per_tensor { amax_or_nan(x) } else { 0.0 };
        let rule = ScaleRule::Fp8 {
            max,
            pow2,
            tensor_amax: per_tensor.then_some(tensor_amax),
        };
        Self::quantize_with(
            x,
            128,
            line_group,
            ScaleKind::F32,
            rule,
            data,
            scales,
            None,
            BlockAmax::FromSource,
        )
    }
}

/// Lines per group of a [`PackedFp4`] (one AVX2 register of i32 sums).
pub(crate) const PACK_LINES: usize = 8;

/// FP4 weights (a [`BlockScaled<F4E2M1>`], `lines × k`, as `block_gemm`'s
/// B) packed once for products with few rows
/// ([`crate::gemm::block_gemm_packed`]): two codes per byte, in groups of
/// eight lines interleaved four values of k at a time, with each group's
/// block scales side by side. Half the bytes of the unpacked matrix, read
/// in one sequential stream. The layout is private; [`Self::to_block_scaled`]
/// gives the matrix back exactly.
///
/// ```
/// use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp4};
/// use mixprec::gemm::{block_gemm, block_gemm_packed, Epilogue, Parallelism};
/// use mixprec::{MatMut, MatRef, F4E2M1};
/// let w: Vec<f32> = (0..20 * 64).map(|i| ((i % 11) as f32 - 5.0) * 0.3).collect();
/// let x: Vec<f32> = (0..64).map(|i| (i % 5) as f32 - 2.0).collect();
/// let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 20, 64)?, MxScaleMode::Floor)?;
/// let a = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&x, 1, 64)?, MxScaleMode::Floor)?;
/// let packed = PackedFp4::new(&b);
/// let (mut y1, mut y2) = ([0.0f32; 20], [0.0f32; 20]);
/// block_gemm_packed(&a, &packed, MatMut::from_row_major(&mut y1, 1, 20)?, &Epilogue::new(), Parallelism::Serial)?;
/// block_gemm(&a, &b, MatMut::from_row_major(&mut y2, 1, 20)?, &Epilogue::new(), Parallelism::Serial)?;
/// assert_eq!(y1, y2); // the same bits
/// assert_eq!(packed.to_block_scaled(), b);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PackedFp4 {
    lines: usize,
    k: usize,
    block: usize,
    line_group: usize,
    /// Per group of 8 lines, per 8 values of k: 32 bytes; byte `4j + i`
    /// holds line j's code at k = 8q + i (low nibble) and 8q + 4 + i (high).
    codes: Vec<u8>,
    /// Per group, per block: the 8 lines' scales (padding lines: 1).
    scales: Vec<f32>,
    kind: ScaleKind,
}

impl PackedFp4 {
    /// Packs `b` (any FP4 block-scaled matrix: MXFP4, NVFP4, or from parts).
    pub fn new(b: &BlockScaled<F4E2M1>) -> Self {
        let (lines, k, block) = (b.lines, b.k, b.block);
        let groups = lines.div_ceil(PACK_LINES);
        let blocks = k.checked_div(block).unwrap_or(0);
        // Fits: lines · k is a checked product and this is at most
        // (lines + 7) · k / 2 bytes.
        let mut codes = vec![0u8; groups * k / 8 * 32];
        let mut scales = vec![1.0f32; groups * blocks * PACK_LINES];
        for line in 0..lines {
            let (g, j) = (line / PACK_LINES, line % PACK_LINES);
            let row = &b.data[line * k..(line + 1) * k];
            for (kk, v) in row.iter().enumerate() {
                let (q, r) = (kk / 8, kk % 8);
                let byte = &mut codes[(g * k / 8 + q) * 32 + 4 * j + r % 4];
                *byte |= (v.to_bits() & 0x0F) << (4 * (r / 4));
            }
            for blk in 0..blocks {
                scales[(g * blocks + blk) * PACK_LINES + j] = b.scales[b.scale_index(line, blk)];
            }
        }
        Self {
            lines,
            k,
            block,
            line_group: b.line_group,
            codes,
            scales,
            kind: b.kind.clone(),
        }
    }

    /// Lines (outputs of the product).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Length of each line: the K of a GEMM.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Values of K per scale.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Bytes held (codes and scales).
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len()
    }

    /// The packed matrix back as a [`BlockScaled<F4E2M1>`], exactly.
    pub fn to_block_scaled(&self) -> BlockScaled<F4E2M1> {
        let (k, block) = (self.k, self.block);
        let blocks = k.checked_div(block).unwrap_or(0);
        let mut data = vec![F4E2M1::ZERO; self.lines * k];
        let mut scales = vec![0.0f32; self.lines.div_ceil(self.line_group) * blocks];
        for line in 0..self.lines {
            let (g, j) = (line / PACK_LINES, line % PACK_LINES);
            for (kk, v) in data[line * k..(line + 1) * k].iter_mut().enumerate() {
                let (q, r) = (kk / 8, kk % 8);
                let byte = self.codes[(g * k / 8 + q) * 32 + 4 * j + r % 4];
                *v = F4E2M1::from_bits(byte >> (4 * (r / 4)));
            }
            for blk in 0..blocks {
                scales[(line / self.line_group) * blocks + blk] =
                    self.scales[(g * blocks + blk) * PACK_LINES + j];
            }
        }
        BlockScaled {
            lines: self.lines,
            k,
            block,
            line_group: self.line_group,
            data,
            scales,
            kind: self.kind.clone(),
        }
    }

    /// The packed codes and scales, for the kernels.
    pub(crate) fn parts(&self) -> (&[u8], &[f32]) {
        (&self.codes, &self.scales)
    }
}

#[cfg(test)]
mod tests {
    use super::{lines_last_chunk_first, REUSE_CHUNK_BYTES};

    /// Every line once, chunks of `REUSE_CHUNK_BYTES / row_bytes` lines last
    /// first, each in order; a row past the chunk size is a chunk of its
    /// own, and no lines give nothing.
    #[test]
    fn lines_last_chunk_first_visits_every_line_once() {
        let order = |lines, row_bytes| lines_last_chunk_first(lines, row_bytes).collect::<Vec<_>>();
        let per = REUSE_CHUNK_BYTES / 4096;
        let got = order(2 * per + 3, 4096);
        let mut want: Vec<usize> = (2 * per..2 * per + 3).collect();
        want.extend(per..2 * per);
        want.extend(0..per);
        assert_eq!(got, want);
        assert_eq!(order(3, REUSE_CHUNK_BYTES * 2), vec![2, 1, 0]);
        // Zero-width rows: one chunk.
        assert_eq!(order(5, 0), (0..5).collect::<Vec<_>>());
        assert_eq!(order(0, 64), Vec::<usize>::new());
        assert_eq!(order(7, 64), (0..7).collect::<Vec<_>>());
    }
}

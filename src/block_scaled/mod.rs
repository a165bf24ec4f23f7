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
//! all-zero block has scale 1. A block whose amax / max_normal underflows
//! to 0 in f32 (amax ≤ max_normal · 2^-150: about 3.1e-43 for E4M3,
//! 4.0e-41 for E5M2) has scale 2^-149, the smallest positive f32 (with or
//! without `pow2`: it is the power of two at or above the exact ratio), so
//! its zeros stay zero and nothing saturates. Elements are `x / scale`
//! rounded to nearest even, saturated.
//!
//! **Special values, every scheme.** A block (or, with a tensor scale, a
//! tensor) holding NaN or ±∞ gets a NaN scale, and every element of it
//! dequantizes to NaN: none of the element formats has an ∞, and a scale
//! of ∞ or of the format's max (torchao's and NVIDIA's saturating
//! conversions) would turn the block's finite values into 0 or hide the
//! overflow. NaN then propagates through [`crate::gemm::block_gemm`] as
//! IEEE 754 says. In NVFP4 with the tensor scale, an s_t that underflows
//! to 0 on a non-zero tensor (amax_tensor < 2688 · 2^-149) is taken as 1,
//! as for an all-zero tensor: the block scales then cover the tiny values
//! (clamped at 2^-9, so they quantize to zero).
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

mod int4;
mod kernel;
mod packed;
mod packed_fp8;
mod pad;
mod quantize;
mod scale;

pub use int4::{PackedInt4, INT4_GROUP_SIZES};
pub use packed::PackedFp4;
pub(crate) use packed::{e4m3_scale, PACK_LINES};
pub use packed_fp8::PackedFp8;
pub use pad::{pad_k, padded_k};
pub(crate) use quantize::{amax_bits, block_reciprocal, narrow_scaled_blocks};
pub(crate) use scale::{to_amax, ScaleRule};

use crate::convert::widen;
use crate::dtype::{MxInt8, F4E2M1, F6E2M3, F6E3M2, F8E4M3, F8E5M2, F8E8M0};
use crate::error::checked_len_of;
use crate::tensor::{MatRef, Tensor};
use crate::{Error, FloatElement};
use quantize::{amax_or_nan, block_amax_in_scales, streams, BlockAmax};
use scale::{floor_log2, significand_fraction};

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

fn check_shape<T>(lines: usize, k: usize, block: usize, line_group: usize) -> Result<usize, Error> {
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
    // In bytes too (isize::MAX, the allocator's limit): a broadcast view
    // of 2^31 × 2^32 has a count that fits usize and bytes that do not.
    checked_len_of::<T>(&[lines, k])?;
    Ok(lines.div_ceil(line_group) * (k / block))
}

impl<T: FloatElement> BlockScaled<T> {
    /// A block-scaled matrix from its parts (for data quantized
    /// elsewhere): `data` is `lines × k` row-major, `scales` one per
    /// `line_group` lines and `block` values of k. The scales are plain
    /// f32s: the result is neither MX nor NVFP4 (it has no
    /// [`Self::e8m0_scales`] and compares unequal to an MX matrix of the
    /// same values). For those, use [`Self::from_mx_parts`] and
    /// [`BlockScaled::from_nvfp4_parts`], which keep the scheme and check
    /// the scales' encoding.
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
        let n_scales = check_shape::<T>(lines, k, block, line_group)?;
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

    /// An MX matrix from its parts (for MX data quantized elsewhere, such
    /// as a checkpoint's packed blocks and E8M0 scales): blocks of 32 along
    /// k, one [`F8E8M0`] scale per line and block. The result is an MX
    /// matrix: it compares equal to the one [`Self::mx`] made from the same
    /// parts, and [`Self::e8m0_scales`] gives the codes back. A NaN scale
    /// (0xFF, the OCP rule for a block that held NaN or ±∞) is accepted:
    /// that block's values are NaN.
    ///
    /// ```
    /// use mixprec::block_scaled::{BlockScaled, MxScaleMode};
    /// use mixprec::{MatRef, F4E2M1};
    /// let x: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) * 0.1).collect();
    /// let q = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&x, 1, 64)?, MxScaleMode::Floor)?;
    /// let codes = q.e8m0_scales().unwrap();
    /// let back = BlockScaled::from_mx_parts(1, 64, q.data().to_vec(), codes)?;
    /// assert_eq!(back, q);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Self::from_parts`] with block 32 and line group 1.
    pub fn from_mx_parts(
        lines: usize,
        k: usize,
        data: Vec<T>,
        scales: Vec<F8E8M0>,
    ) -> Result<Self, Error> {
        let f32_scales: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect();
        // Checked as finite scales (a NaN code stands in as 1 for the
        // check), then stored as they are.
        let check: Vec<f32> = f32_scales
            .iter()
            .map(|&s| if s.is_nan() { 1.0 } else { s })
            .collect();
        let mut out = Self::from_parts(lines, k, 32, 1, data, check)?;
        out.scales = f32_scales;
        out.kind = ScaleKind::E8M0;
        Ok(out)
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
    /// An NVFP4 matrix from its parts (for NVFP4 data quantized
    /// elsewhere): blocks of 16 along k, one E4M3 block scale per line and
    /// block, and the optional f32 tensor scale; each block's scale is
    /// `fl(tensor_scale · block_scale)`, as [`Self::nvfp4`] makes it. The
    /// result is an NVFP4 matrix: [`Self::nvfp4_scales`] gives the parts
    /// back, and it compares equal to the one `nvfp4` made from the same
    /// parts. A NaN block scale (a block or tensor that held NaN or ±∞) is
    /// accepted: that block's values are NaN.
    ///
    /// ```
    /// use mixprec::block_scaled::BlockScaled;
    /// use mixprec::{MatRef, F4E2M1};
    /// let x: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 0.3).collect();
    /// let q = BlockScaled::<F4E2M1>::nvfp4(MatRef::from_row_major(&x, 1, 32)?, true)?;
    /// let (codes, s_t) = q.nvfp4_scales().unwrap();
    /// let back = BlockScaled::from_nvfp4_parts(1, 32, q.data().to_vec(), codes.to_vec(), s_t)?;
    /// assert_eq!(back, q);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Self::from_parts`] with block 16 and line group 1 (a block
    /// scale of zero is refused); [`Error::InvalidParameter`] for a tensor
    /// scale that is not finite and > 0.
    pub fn from_nvfp4_parts(
        lines: usize,
        k: usize,
        data: Vec<F4E2M1>,
        block_scales: Vec<F8E4M3>,
        tensor_scale: Option<f32>,
    ) -> Result<Self, Error> {
        if let Some(t) = tensor_scale.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(Error::InvalidParameter {
                name: "NVFP4 tensor scale",
                value: format!("{t:e}"),
                requirement: "finite and > 0",
            });
        }
        let scales: Vec<f32> = block_scales
            .iter()
            .map(|c| match tensor_scale {
                Some(t) => t * c.to_f32(),
                None => c.to_f32(),
            })
            .collect();
        let check: Vec<f32> = scales
            .iter()
            .map(|&s| if s.is_nan() { 1.0 } else { s })
            .collect();
        let mut out = Self::from_parts(lines, k, 16, 1, data, check)?;
        out.scales = scales;
        out.kind = ScaleKind::Nvfp4 {
            block_scales,
            tensor_scale,
        };
        Ok(out)
    }

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
        check_shape::<F4E2M1>(x.rows(), x.cols(), 16, 1)?;
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
        let n_scales = check_shape::<F4E2M1>(lines, k, 16, 1)?;
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

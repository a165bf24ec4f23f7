//! int8 quantization and the integer GEMM (what TPU v1 did for inference:
//! 8-bit integers in, exact 32-bit sums, a rescale out).
//!
//! * [`QuantParams`]: scale (finite, > 0) and zero point (in the integer
//!   range), per tensor or per channel along an axis, for `i8` or `u8`
//!   storage; derived from an observed range with PyTorch's observer
//!   formulas ([`QuantParams::from_range`]) or as a power-of-two scale
//!   ([`QuantParams::power_of_two`]).
//! * Observers ([`observer`]): min/max, moving-average min/max, per-channel
//!   min/max, and a histogram observer that picks the clipping range with the
//!   least L2 quantization error.
//! * [`quantize`] / [`dequantize`] (slices; SIMD, bit-identical to
//!   [`reference`](mod@reference)), [`quantize_tensor`] / [`dequantize_tensor`].
//! * Integer GEMM ([`qgemm`], reference [`qgemm_reference`]) on quantized
//!   matrices ([`QMatRef`]: values with their zero points): `Σ (a − za)(b − zb)`
//!   exactly in i32, with the float engine's 128-deep tiling and threading;
//!   [`PackedI8`] / [`qgemm_packed`] for weights packed once;
//!   [`QEpilogue`] gives i32, f32 (dequantized, per-channel scales, bias) or
//!   i8/u8 out through TFLite/gemmlowp requantization ([`requant`]).
//! * [`DynamicQuantLinear`]: f32 activations quantized per row on the fly,
//!   int8 weights per output channel, f32 out.
//! * [`ptq`]: post-training quantization of a trained MLP by scheme and
//!   bit width, run on the integer and block-scaled GEMMs.
//!
//! Quantization of one value, the definition (`round` is half to even):
//!
//! ```text
//! q = NaN → zero_point; otherwise clamp(round(x / scale) + zero_point, qmin, qmax)
//!     (x / scale formed as QuantRounding says: a division by default,
//!      or PyTorch/FBGEMM's x · (1/scale))
//! x̂ = (q − zero_point) · scale          (one rounding)
//! ```
//!
//! ```
//! use mixprec::quant::{quantize, dequantize, QuantParams, Scheme};
//! let p = QuantParams::from_range::<u8>(-1.0, 3.0, Scheme::Affine)?;
//! let (s, z) = (p.scales()[0], p.zero_points()[0]);
//! assert_eq!(z, 64); // 0 - round(-1 / (4/255))
//! let x = [-1.0f32, 0.0, 0.5, 3.0, 9.0];
//! let mut q = [0u8; 5];
//! quantize(&x, &mut q, s, z)?;
//! assert_eq!(q, [0, 64, 96, 255, 255]); // 9.0 saturates
//! let mut back = [0.0f32; 5];
//! dequantize(&q, &mut back, s, z)?;
//! assert!((back[2] - 0.5).abs() <= s / 2.0);
//! # Ok::<(), mixprec::Error>(())
//! ```

mod convert;
mod gemm;
mod linear;
pub mod observer;
pub mod ptq;
pub mod requant;
mod weight_only;

pub use convert::{
    dequantize, dequantize_tensor, quantize, quantize_tensor, quantize_with, reference,
    QuantRounding,
};
pub use gemm::{
    max_k, qgemm, qgemm_packed, qgemm_packed_portable, qgemm_portable, qgemm_reference, PackedI8,
    QEpilogue, QMatRef, QOutput,
};
pub use linear::{DynamicQuantLinear, ACTIVATION_QMAX, MAX_IN_FEATURES};
pub use weight_only::{WeightOnlyLinear, WeightScheme};

use crate::dtype::Element;
use crate::Error;

mod sealed {
    pub trait Sealed {}
    impl Sealed for i8 {}
    impl Sealed for u8 {}
}

/// An 8-bit integer storage type for quantized values: `i8` or `u8`.
pub trait QInt: Element + Copy + sealed::Sealed {
    /// Smallest value.
    const QMIN: i32;
    /// Largest value.
    const QMAX: i32;
    /// The value as i32.
    fn to_i32(self) -> i32;
    /// `v` clamped to `[QMIN, QMAX]`.
    fn from_i32_clamped(v: i32) -> Self;
}

impl QInt for i8 {
    const QMIN: i32 = -128;
    const QMAX: i32 = 127;
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn from_i32_clamped(v: i32) -> Self {
        v.clamp(-128, 127) as i8
    }
}

impl QInt for u8 {
    const QMIN: i32 = 0;
    const QMAX: i32 = 255;
    fn to_i32(self) -> i32 {
        self as i32
    }
    fn from_i32_clamped(v: i32) -> Self {
        v.clamp(0, 255) as u8
    }
}

/// How a real range maps onto the integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Scheme {
    /// Asymmetric: `scale = (max − min)/(qmax − qmin)`, zero point where 0 lands.
    Affine,
    /// Symmetric around 0: `scale = max(|min|, |max|)/((qmax − qmin)/2)`,
    /// zero point 0 for `i8` (128 for `u8`, as PyTorch does).
    Symmetric,
}

/// Scale(s) and zero point(s) of a quantized tensor, per tensor or per
/// channel along one axis, for one storage type's range.
///
/// With the `serde` feature it serializes as its scales, zero points, axis
/// and storage range; deserializing makes the checks of
/// [`QuantParams::per_channel`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "serde_impl::QuantParamsState"))]
pub struct QuantParams {
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    axis: Option<usize>,
    qmin: i32,
    qmax: i32,
}

/// Checks one scale and zero point against `[qmin, qmax]`.
pub(crate) fn check_scale_zp(
    scale: f32,
    zero_point: i32,
    qmin: i32,
    qmax: i32,
) -> Result<(), Error> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::InvalidParameter {
            name: "scale",
            value: format!("{scale:e}"),
            requirement: "finite and > 0",
        });
    }
    if !(qmin..=qmax).contains(&zero_point) {
        return Err(Error::InvalidParameter {
            name: "zero_point",
            value: zero_point.to_string(),
            requirement: "within the storage type's range ([-128, 127] for i8, [0, 255] for u8)",
        });
    }
    Ok(())
}

impl QuantParams {
    /// One scale and zero point for the whole tensor.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless the scale is finite and > 0 and the
    /// zero point within `Q`'s range.
    pub fn per_tensor<Q: QInt>(scale: f32, zero_point: i32) -> Result<Self, Error> {
        check_scale_zp(scale, zero_point, Q::QMIN, Q::QMAX)?;
        Ok(Self {
            scales: vec![scale],
            zero_points: vec![zero_point],
            axis: None,
            qmin: Q::QMIN,
            qmax: Q::QMAX,
        })
    }

    /// One scale and zero point per index along `axis`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the lists are empty or differ in length;
    /// [`Error::InvalidParameter`] as [`QuantParams::per_tensor`] for any channel.
    pub fn per_channel<Q: QInt>(
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        axis: usize,
    ) -> Result<Self, Error> {
        if scales.len() != zero_points.len() || scales.is_empty() {
            return Err(Error::LengthMismatch {
                what: "QuantParams::per_channel (zero points, one per scale)",
                expected: scales.len().max(1),
                actual: zero_points.len(),
            });
        }
        for (&s, &z) in scales.iter().zip(&zero_points) {
            check_scale_zp(s, z, Q::QMIN, Q::QMAX)?;
        }
        Ok(Self {
            scales,
            zero_points,
            axis: Some(axis),
            qmin: Q::QMIN,
            qmax: Q::QMAX,
        })
    }

    /// Parameters for the observed range `[min, max]`, with PyTorch's
    /// observer formulas (the range is first widened to include 0; the scale
    /// is at least `f32::EPSILON`; the zero point is rounded half to even
    /// and clamped).
    ///
    /// ```
    /// use mixprec::quant::{QuantParams, Scheme};
    /// let p = QuantParams::from_range::<i8>(-2.0, 6.0, Scheme::Symmetric)?;
    /// assert_eq!((p.scale(0), p.zero_point(0)), (Some(6.0 / 127.5), Some(0)));
    /// assert!(QuantParams::from_range::<i8>(f32::NAN, 1.0, Scheme::Affine).is_err());
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless both ends are finite with
    /// `min <= max` and the resulting scale is finite.
    pub fn from_range<Q: QInt>(min: f32, max: f32, scheme: Scheme) -> Result<Self, Error> {
        let (s, z) = scale_zp_from_range(min, max, Q::QMIN, Q::QMAX, scheme)?;
        Self::per_tensor::<Q>(s, z)
    }

    /// Per-channel parameters from per-channel ranges.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `mins` and `maxs` differ in length or are
    /// empty; otherwise as [`QuantParams::from_range`] for each channel.
    pub fn from_ranges<Q: QInt>(
        mins: &[f32],
        maxs: &[f32],
        scheme: Scheme,
        axis: usize,
    ) -> Result<Self, Error> {
        if mins.len() != maxs.len() {
            return Err(Error::LengthMismatch {
                what: "QuantParams::from_ranges (maxs, one per min)",
                expected: mins.len(),
                actual: maxs.len(),
            });
        }
        let mut scales = Vec::with_capacity(mins.len());
        let mut zps = Vec::with_capacity(mins.len());
        for (&lo, &hi) in mins.iter().zip(maxs) {
            let (s, z) = scale_zp_from_range(lo, hi, Q::QMIN, Q::QMAX, scheme)?;
            scales.push(s);
            zps.push(z);
        }
        Self::per_channel::<Q>(scales, zps, axis)
    }

    /// Power-of-two fixed-point parameters, as early TPU-style inference
    /// used: symmetric, `scale = 2^-f` with the largest integer `f` (in
    /// −126..=126) such that `max(|min|, |max|) ≤ (qmax − zero_point)·2^-f`.
    /// Dequantization is then an exact shift.
    ///
    /// ```
    /// use mixprec::quant::QuantParams;
    /// let p = QuantParams::power_of_two::<i8>(-3.0, 1.5)?;
    /// assert_eq!(p.scale(0), Some(2f32.powi(-5))); // 3 ≤ 127/32 = 3.97, but 3 > 127/64
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless both ends are finite with `min <= max`.
    pub fn power_of_two<Q: QInt>(min: f32, max: f32) -> Result<Self, Error> {
        check_range(min, max)?;
        let zp = symmetric_zero_point(Q::QMIN, Q::QMAX);
        let amax = (min.abs().max(max.abs())) as f64;
        Self::per_tensor::<Q>(power_of_two_scale(amax, (Q::QMAX - zp) as f64), zp)
    }

    /// Scale of channel `c` (of the only channel when per tensor, for any
    /// `c`); `None` past the last channel.
    pub fn scale(&self, c: usize) -> Option<f32> {
        self.scales
            .get(if self.axis.is_some() { c } else { 0 })
            .copied()
    }

    /// Zero point of channel `c` (of the only channel when per tensor, for
    /// any `c`); `None` past the last channel.
    pub fn zero_point(&self, c: usize) -> Option<i32> {
        self.zero_points
            .get(if self.axis.is_some() { c } else { 0 })
            .copied()
    }

    /// All scales (one when per tensor).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// All zero points (one when per tensor).
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }

    /// The channel axis, or `None` when per tensor.
    pub fn axis(&self) -> Option<usize> {
        self.axis
    }

    /// The storage type's range `(qmin, qmax)`.
    pub fn range(&self) -> (i32, i32) {
        (self.qmin, self.qmax)
    }
}

/// `2^-f` with the largest integer `f` in −126..=126 such that
/// `amax ≤ room · 2^-f` (f = 0 for amax = 0): the power-of-two scale that
/// fits `amax` into `room` steps.
pub(crate) fn power_of_two_scale(amax: f64, room: f64) -> f32 {
    let f = if amax == 0.0 {
        0
    } else {
        (room / amax).log2().floor().clamp(-126.0, 126.0) as i32
    };
    // Guard the floor against log2 rounding: step down while it does not fit.
    let mut f = f;
    while f > -126 && amax > room * 2f64.powi(-f) {
        f -= 1;
    }
    2f32.powi(-f)
}

fn check_range(min: f32, max: f32) -> Result<(), Error> {
    if !(min.is_finite() && max.is_finite()) || min > max {
        return Err(Error::InvalidParameter {
            name: "range",
            value: format!("[{min:e}, {max:e}]"),
            requirement: "finite with min <= max",
        });
    }
    Ok(())
}

pub(crate) fn symmetric_zero_point(qmin: i32, qmax: i32) -> i32 {
    if qmin < 0 {
        0
    } else {
        (qmin + qmax + 1) / 2
    }
}

/// PyTorch's `_calculate_qparams`, in f32.
pub(crate) fn scale_zp_from_range(
    min: f32,
    max: f32,
    qmin: i32,
    qmax: i32,
    scheme: Scheme,
) -> Result<(f32, i32), Error> {
    check_range(min, max)?;
    let (min_neg, max_pos) = (min.min(0.0), max.max(0.0));
    let (scale, zp) = match scheme {
        Scheme::Symmetric => {
            let m = max_pos.max(-min_neg);
            let scale = (m / ((qmax - qmin) as f32 / 2.0)).max(f32::EPSILON);
            (scale, symmetric_zero_point(qmin, qmax))
        }
        Scheme::Affine => {
            let scale = ((max_pos - min_neg) / (qmax - qmin) as f32).max(f32::EPSILON);
            let zp = qmin as f32 - (min_neg / scale).round_ties_even();
            (scale, (zp as i32).clamp(qmin, qmax))
        }
    };
    if !scale.is_finite() {
        return Err(Error::InvalidParameter {
            name: "range",
            value: format!("[{min:e}, {max:e}]"),
            requirement: "narrow enough that its scale is finite",
        });
    }
    Ok((scale, zp))
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::{check_scale_zp, QInt, QuantParams};
    use crate::Error;

    /// The serialized fields of [`QuantParams`], checked on the way in.
    #[derive(serde::Deserialize)]
    pub(super) struct QuantParamsState {
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        axis: Option<usize>,
        qmin: i32,
        qmax: i32,
    }

    impl TryFrom<QuantParamsState> for QuantParams {
        type Error = Error;

        fn try_from(s: QuantParamsState) -> Result<Self, Error> {
            // The storage range is a storage type's (per_tensor and
            // per_channel take it from Q), so a zero point within it is
            // within Q's range.
            let ranges = [(i8::QMIN, i8::QMAX), (u8::QMIN, u8::QMAX)];
            if !ranges.contains(&(s.qmin, s.qmax)) {
                return Err(Error::InvalidParameter {
                    name: "QuantParams range",
                    value: format!("[{}, {}]", s.qmin, s.qmax),
                    requirement: "a storage type's: [-128, 127] (i8) or [0, 255] (u8)",
                });
            }
            let expected = if s.axis.is_none() {
                1
            } else {
                s.scales.len().max(1)
            };
            if s.scales.len() != expected || s.zero_points.len() != expected {
                return Err(Error::LengthMismatch {
                    what: "QuantParams (one scale and zero point per channel, one without an axis)",
                    expected,
                    actual: s.zero_points.len().min(s.scales.len()),
                });
            }
            for (&scale, &zp) in s.scales.iter().zip(&s.zero_points) {
                check_scale_zp(scale, zp, s.qmin, s.qmax)?;
            }
            Ok(QuantParams {
                scales: s.scales,
                zero_points: s.zero_points,
                axis: s.axis,
                qmin: s.qmin,
                qmax: s.qmax,
            })
        }
    }
}

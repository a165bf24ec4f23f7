//! Quantize and dequantize: scalar definition, SIMD fast paths, tensors.

#[cfg(target_arch = "x86_64")]
mod x86_avx2;

use super::{check_scale_zp, QInt, QuantParams};
use crate::convert::check_len;
use crate::tensor::Tensor;
use crate::Error;

/// How `x / scale` is formed before rounding.
///
/// The two rules differ on some inputs: `x · (1/scale)` rounds twice (the
/// reciprocal, then the product), so a quotient next to a half-way point
/// can land on the other side of it. With scale 0.390419 (f32
/// 0x3EC7E500) and x = 11.126942 (0x413207F4), division gives exactly 28.5
/// (→ 28, ties to even) and the reciprocal 28.500002 (→ 29).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuantRounding {
    /// `round_half_even(x / scale)`: the correctly rounded quotient, then
    /// the integer rounding, ties to even. The crate's default: it is the
    /// definition ONNX's `QuantizeLinear` states, and it depends on no
    /// library's evaluation order. It is not TFLite's reference kernel,
    /// which divides but rounds ties away from zero (`TfLiteRound`, that
    /// is `std::round`), nor PyTorch's (below).
    #[default]
    Divide,
    /// `nearbyint(x · (1.0f32 / scale))`, the reciprocal computed once in
    /// f32. This is PyTorch's rule: `quantize_val` multiplies by
    /// `1.0f / scale` in both its FBGEMM build and its plain build, so
    /// `torch.quantize_per_tensor` and the observers' dynamic quantization
    /// give these bits. Choose it to match PyTorch. Needs a finite
    /// reciprocal.
    MultiplyByReciprocal,
}

/// One value, the definition: NaN → `zp`; otherwise
/// `clamp(round_half_even(x / scale) + zp, qmin, qmax)`, with `x / scale`
/// formed as `rule` says.
#[inline(always)]
pub(crate) fn quantize_one(
    x: f32,
    scale: f32,
    zp: i32,
    (qmin, qmax): (i32, i32),
    rule: QuantRounding,
) -> i32 {
    if x.is_nan() {
        return zp;
    }
    // The reciprocal is loop-invariant: after inlining it is formed once.
    let quotient = match rule {
        QuantRounding::Divide => x / scale,
        QuantRounding::MultiplyByReciprocal => x * (1.0 / scale),
    };
    let v = quotient.round_ties_even() + zp as f32;
    v.clamp(qmin as f32, qmax as f32) as i32
}

/// One value: `(q − zp) · scale`, one rounding.
#[inline(always)]
pub(crate) fn dequantize_one(q: i32, scale: f32, zp: i32) -> f32 {
    (q - zp) as f32 * scale
}

/// Quantizes `src` into `dst` (same length) with one scale and zero point:
/// `round_half_even(x / scale) + zero_point`, saturating; NaN becomes the
/// zero point. Uses [`QuantRounding::Divide`]; [`quantize_with`] offers
/// PyTorch's reciprocal form.
///
/// # Errors
/// [`Error::LengthMismatch`] when the lengths differ;
/// [`Error::InvalidParameter`] for a scale that is not finite and > 0 or a
/// zero point outside `Q`'s range.
pub fn quantize<Q: QInt>(
    src: &[f32],
    dst: &mut [Q],
    scale: f32,
    zero_point: i32,
) -> Result<(), Error> {
    quantize_with(src, dst, scale, zero_point, QuantRounding::Divide)
}

/// [`quantize`] with an explicit [`QuantRounding`].
///
/// ```
/// use mixprec::quant::{quantize_with, QuantRounding};
/// let (x, scale) = ([f32::from_bits(0x4132_07F4)], f32::from_bits(0x3EC7_E500));
/// let (mut by_div, mut by_inv) = ([0i8], [0i8]);
/// quantize_with(&x, &mut by_div, scale, 0, QuantRounding::Divide)?;
/// quantize_with(&x, &mut by_inv, scale, 0, QuantRounding::MultiplyByReciprocal)?;
/// assert_eq!((by_div[0], by_inv[0]), (28, 29));
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// As [`quantize`]; with [`QuantRounding::MultiplyByReciprocal`] also a
/// scale whose f32 reciprocal overflows.
pub fn quantize_with<Q: QInt>(
    src: &[f32],
    dst: &mut [Q],
    scale: f32,
    zero_point: i32,
    rule: QuantRounding,
) -> Result<(), Error> {
    quantize_checked(
        "quant::quantize",
        src,
        dst,
        scale,
        zero_point,
        rule,
        crate::cpu::has_avx2_fma_f16c(),
    )
}

/// Dequantizes `src` into `dst` (same length): `(q − zero_point)·scale`.
///
/// # Errors
/// As [`quantize`].
pub fn dequantize<Q: QInt>(
    src: &[Q],
    dst: &mut [f32],
    scale: f32,
    zero_point: i32,
) -> Result<(), Error> {
    dequantize_checked(
        "quant::dequantize",
        src,
        dst,
        scale,
        zero_point,
        crate::cpu::has_avx2_fma_f16c(),
    )
}

pub(crate) fn quantize_dispatch<Q: QInt>(
    src: &[f32],
    dst: &mut [Q],
    scale: f32,
    zp: i32,
    rule: QuantRounding,
    simd: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C.
        return unsafe { x86_avx2::quantize(src, dst, scale, zp, rule) };
    }
    let _ = simd;
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = Q::from_i32_clamped(quantize_one(x, scale, zp, (Q::QMIN, Q::QMAX), rule));
    }
}

pub(crate) fn dequantize_dispatch<Q: QInt>(
    src: &[Q],
    dst: &mut [f32],
    scale: f32,
    zp: i32,
    simd: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C.
        return unsafe { x86_avx2::dequantize(src, dst, scale, zp) };
    }
    let _ = simd;
    for (d, &q) in dst.iter_mut().zip(src) {
        *d = dequantize_one(q.to_i32(), scale, zp);
    }
}

/// The scalar definitions, element by element; the fast paths equal them
/// bit for bit.
pub mod reference {
    use super::*;

    /// Scalar [`super::quantize`].
    ///
    /// # Errors
    /// As [`super::quantize`].
    pub fn quantize<Q: QInt>(
        src: &[f32],
        dst: &mut [Q],
        scale: f32,
        zero_point: i32,
    ) -> Result<(), Error> {
        quantize_with(src, dst, scale, zero_point, QuantRounding::Divide)
    }

    /// Scalar [`super::quantize_with`].
    ///
    /// # Errors
    /// As [`super::quantize_with`].
    pub fn quantize_with<Q: QInt>(
        src: &[f32],
        dst: &mut [Q],
        scale: f32,
        zero_point: i32,
        rule: QuantRounding,
    ) -> Result<(), Error> {
        quantize_checked(
            "quant::reference::quantize",
            src,
            dst,
            scale,
            zero_point,
            rule,
            false,
        )
    }

    /// Scalar [`super::dequantize`].
    ///
    /// # Errors
    /// As [`super::dequantize`].
    pub fn dequantize<Q: QInt>(
        src: &[Q],
        dst: &mut [f32],
        scale: f32,
        zero_point: i32,
    ) -> Result<(), Error> {
        dequantize_checked(
            "quant::reference::dequantize",
            src,
            dst,
            scale,
            zero_point,
            false,
        )
    }
}

fn quantize_checked<Q: QInt>(
    what: &'static str,
    src: &[f32],
    dst: &mut [Q],
    scale: f32,
    zero_point: i32,
    rule: QuantRounding,
    simd: bool,
) -> Result<(), Error> {
    check_len(what, src.len(), dst.len())?;
    check_scale_zp(scale, zero_point, Q::QMIN, Q::QMAX)?;
    check_rule(scale, rule)?;
    quantize_dispatch(src, dst, scale, zero_point, rule, simd);
    Ok(())
}

/// The reciprocal rule needs `1/scale` finite.
fn check_rule(scale: f32, rule: QuantRounding) -> Result<(), Error> {
    if rule == QuantRounding::MultiplyByReciprocal && !(1.0 / scale).is_finite() {
        return Err(Error::InvalidParameter {
            name: "scale",
            value: format!("{scale:e}"),
            requirement:
                "large enough that 1/scale is finite in f32 (QuantRounding::MultiplyByReciprocal)",
        });
    }
    Ok(())
}

fn dequantize_checked<Q: QInt>(
    what: &'static str,
    src: &[Q],
    dst: &mut [f32],
    scale: f32,
    zero_point: i32,
    simd: bool,
) -> Result<(), Error> {
    check_len(what, src.len(), dst.len())?;
    check_scale_zp(scale, zero_point, Q::QMIN, Q::QMAX)?;
    dequantize_dispatch(src, dst, scale, zero_point, simd);
    Ok(())
}

/// Runs `f(channel, range)` over the contiguous runs of a row-major tensor
/// of `shape` that share one channel along `axis` (one run, channel 0, when
/// `axis` is `None`).
fn for_each_channel_run(
    shape: &[usize],
    axis: Option<usize>,
    channels: usize,
    mut f: impl FnMut(usize, std::ops::Range<usize>),
) -> Result<(), Error> {
    let numel: usize = shape.iter().product();
    let Some(axis) = axis else {
        f(0, 0..numel);
        return Ok(());
    };
    if axis >= shape.len() {
        return Err(Error::InvalidParameter {
            name: "axis",
            value: axis.to_string(),
            requirement: "less than the tensor's rank",
        });
    }
    if shape[axis] != channels {
        return Err(Error::LengthMismatch {
            what: "quantization parameters (one per channel along the axis)",
            expected: shape[axis],
            actual: channels,
        });
    }
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    for o in 0..outer {
        for c in 0..channels {
            let start = (o * channels + c) * inner;
            f(c, start..start + inner);
        }
    }
    Ok(())
}

/// Quantizes a tensor with per-tensor or per-channel parameters (the
/// channel axis must have one entry per scale).
///
/// # Errors
/// * [`Error::InvalidParameter`] when `params` were made for the other
///   storage type, or the channel axis is past the tensor's rank;
/// * [`Error::LengthMismatch`] when the axis does not have one entry per
///   channel.
pub fn quantize_tensor<Q: QInt>(t: &Tensor<f32>, params: &QuantParams) -> Result<Tensor<Q>, Error> {
    check_storage::<Q>(params)?;
    let mut out = vec![Q::zeroed(); t.len()];
    let simd = crate::cpu::has_avx2_fma_f16c();
    for_each_channel_run(t.shape(), params.axis(), params.scales().len(), |c, r| {
        quantize_dispatch(
            &t.as_slice()[r.clone()],
            &mut out[r],
            params.scales()[c],
            params.zero_points()[c],
            QuantRounding::Divide,
            simd,
        )
    })?;
    Tensor::from_vec(t.shape(), out)
}

/// Dequantizes a tensor with per-tensor or per-channel parameters.
///
/// # Errors
/// As [`quantize_tensor`].
pub fn dequantize_tensor<Q: QInt>(
    t: &Tensor<Q>,
    params: &QuantParams,
) -> Result<Tensor<f32>, Error> {
    check_storage::<Q>(params)?;
    let mut out = vec![0.0f32; t.len()];
    let simd = crate::cpu::has_avx2_fma_f16c();
    for_each_channel_run(t.shape(), params.axis(), params.scales().len(), |c, r| {
        dequantize_dispatch(
            &t.as_slice()[r.clone()],
            &mut out[r],
            params.scales()[c],
            params.zero_points()[c],
            simd,
        )
    })?;
    Tensor::from_vec(t.shape(), out)
}

fn check_storage<Q: QInt>(params: &QuantParams) -> Result<(), Error> {
    if params.range() != (Q::QMIN, Q::QMAX) {
        return Err(Error::InvalidParameter {
            name: "QuantParams",
            value: format!("{:?}", params.range()),
            requirement: "made for the tensor's storage type (i8 or u8)",
        });
    }
    Ok(())
}

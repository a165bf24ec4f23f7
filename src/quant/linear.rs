//! A dynamically quantized linear layer (PyTorch's `quantized.dynamic.Linear`
//! scheme, with per-row activation parameters).

use super::gemm::{qgemm_packed, PackedI8, QEpilogue, QMatRef};
use super::{quantize, scale_zp_from_range, QInt, QuantParams, Scheme};

/// `(min(row ∪ {0}), max(row ∪ {0}))` in one pass; when the row holds a NaN
/// or an infinity (its range has no finite scale, and `min`/`max` would
/// skip a NaN) an error naming `what`, row `r` and the first such column.
fn range_with_zero(what: &'static str, r: usize, row: &[f32]) -> Result<(f32, f32), Error> {
    let (lo, hi, nan) = row.iter().fold((0.0f32, 0.0f32, false), |(l, h, nan), &v| {
        (l.min(v), h.max(v), nan | v.is_nan())
    });
    if !nan && lo.is_finite() && hi.is_finite() {
        return Ok((lo, hi));
    }
    let (c, v) = row
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map_or((0, f32::NAN), |(c, &v)| (c, v));
    Err(Error::InvalidParameter {
        name: what,
        value: format!("{v} at row {r}, column {c}"),
        requirement: "finite (a NaN or infinity has no quantized value)",
    })
}

/// A weight of `out × in` features: no empty dimension, `in` within
/// [`MAX_IN_FEATURES`]. Returns `(out, in)`.
fn check_shape(out_features: usize, in_features: usize) -> Result<(usize, usize), Error> {
    if out_features == 0 || in_features == 0 {
        return Err(Error::EmptyDimension {
            what: "DynamicQuantLinear weight [out_features, in_features]",
            shape: vec![out_features, in_features],
        });
    }
    if in_features > MAX_IN_FEATURES {
        return Err(Error::KTooLarge {
            what: "DynamicQuantLinear (in_features)",
            k: in_features,
            max_k: MAX_IN_FEATURES,
        });
    }
    Ok((out_features, in_features))
}

/// The rows of a linear layer's input of shape `[.., in]` (the leading
/// dimensions' product) and the output's shape `[.., out]`, as `nn.Linear`
/// takes them; `what` names the layer in the shape error.
pub(super) fn linear_rows(
    shape: &[usize],
    (in_features, out_features): (usize, usize),
    what: &'static str,
) -> Result<(usize, Vec<usize>), Error> {
    let Some((&last, lead)) = shape.split_last() else {
        return Err(Error::RankMismatch {
            expected: 1,
            actual: 0,
        });
    };
    if last != in_features {
        return Err(Error::ShapeMismatch {
            what,
            left: shape.to_vec(),
            right: vec![in_features],
        });
    }
    // The tensor exists, so its element count fits; checked all the same.
    let batch = crate::error::checked_numel(lead)?;
    let mut out_shape = lead.to_vec();
    out_shape.push(out_features);
    Ok((batch, out_shape))
}

/// A bias, if any: finite, one per output feature.
/// `[out, in]` i8 weights packed as the GEMM's B (`in × out`), zero point 0.
fn pack_weight(q: &[i8], out_features: usize, in_features: usize) -> Result<PackedI8, Error> {
    PackedI8::new(
        MatRef::from_row_major(q, out_features, in_features)?.t(),
        &[0],
    )
}

fn check_bias(bias: Option<&[f32]>, out_features: usize) -> Result<(), Error> {
    if let Some(b) = bias {
        range_with_zero("DynamicQuantLinear bias", 0, b)?;
        if b.len() != out_features {
            return Err(Error::LengthMismatch {
                what: "DynamicQuantLinear bias (one per output feature)",
                expected: out_features,
                actual: b.len(),
            });
        }
    }
    Ok(())
}

/// Largest quantized activation: 7 bits.
pub const ACTIVATION_QMAX: i32 = 127;

/// The most input features a [`DynamicQuantLinear`] accepts: the integer
/// GEMM's exact-sum limit for its operands (u8 activations whose zero point
/// may be 0, symmetric i8 weights with zero point 0), `max_k::<u8>(0, 0)`
/// = 65,793.
pub const MAX_IN_FEATURES: usize = 65_793;

use crate::gemm::Parallelism;
use crate::tensor::{MatMut, MatRef, Tensor};
use crate::Error;

/// `y = x·Wᵀ + bias` with int8 arithmetic: weights quantized once,
/// symmetric i8 per output channel; each call quantizes every row of `x`
/// (affine u8 from that row's min/max), runs the exact integer GEMM and
/// dequantizes with the per-row and per-channel scales.
///
/// ```
/// use mixprec::quant::DynamicQuantLinear;
/// use mixprec::{gemm::Parallelism, Tensor};
/// let w = Tensor::from_fn(&[3, 4], |ix| (ix[0] as f32 - 1.0) * 0.5 + ix[1] as f32 * 0.1)?;
/// let layer = DynamicQuantLinear::new(&w, Some(&[0.1, 0.0, -0.1]))?;
/// let x = Tensor::from_vec(&[1, 4], vec![1.0, -2.0, 0.5, 3.0])?;
/// let y = layer.forward(&x, Parallelism::Serial)?;
/// assert_eq!(y.shape(), &[1, 3]);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct DynamicQuantLinear {
    /// The weights as the GEMM's B (`in × out`), packed once.
    weight: PackedI8,
    weight_scales: Vec<f32>,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
}

impl DynamicQuantLinear {
    /// Quantizes `weight` (`[out_features, in_features]`, f32) per output
    /// channel, symmetric i8.
    ///
    /// # Errors
    /// * [`Error::RankMismatch`] when `weight` is not rank 2;
    /// * [`Error::EmptyDimension`] when either dimension is 0;
    /// * [`Error::KTooLarge`] when `in_features` > [`MAX_IN_FEATURES`];
    /// * [`Error::InvalidParameter`] for a NaN or infinite weight or bias;
    /// * [`Error::LengthMismatch`] for a bias whose length is not `out_features`.
    pub fn new(weight: &Tensor<f32>, bias: Option<&[f32]>) -> Result<Self, Error> {
        let w = weight.as_mat()?;
        let (out_features, in_features) = check_shape(w.rows(), w.cols())?;
        check_bias(bias, out_features)?;
        let mut q = vec![0i8; out_features * in_features];
        let mut scales = Vec::with_capacity(out_features);
        for (o, row) in weight
            .as_slice()
            .chunks(in_features.max(1))
            .enumerate()
            .take(out_features)
        {
            let (lo, hi) = range_with_zero("DynamicQuantLinear weight", o, row)?;
            let p = QuantParams::from_range::<i8>(lo, hi, Scheme::Symmetric)?;
            let scale = p.scales()[0];
            quantize(
                row,
                &mut q[o * in_features..(o + 1) * in_features],
                scale,
                0,
            )?;
            scales.push(scale);
        }
        Ok(Self {
            weight: pack_weight(&q, out_features, in_features)?,
            weight_scales: scales,
            bias: bias.map(<[f32]>::to_vec),
            in_features,
            out_features,
        })
    }

    /// `[.., in_features]` → `[.., out_features]`, as `nn.Linear`: any
    /// leading dimensions (`[in]`, `[batch, in]`, `[batch, seq, in]`, …)
    /// are rows of one product, each row quantized with its own scale. A
    /// leading dimension of 0 gives an empty output of the same shape.
    ///
    /// ```
    /// use mixprec::quant::DynamicQuantLinear;
    /// use mixprec::gemm::Parallelism;
    /// use mixprec::Tensor;
    /// let w = Tensor::from_vec(&[2, 3], vec![1.0f32, 0.5, -1.0, 0.0, 2.0, 1.0])?;
    /// let layer = DynamicQuantLinear::new(&w, None)?;
    /// let x = Tensor::from_fn(&[2, 4, 3], |ix| (ix[1] + ix[2]) as f32 * 0.5)?;
    /// let y = layer.forward(&x, Parallelism::Serial)?;
    /// assert_eq!(y.shape(), &[2, 4, 2]);
    /// let v = layer.forward(&Tensor::from_vec(&[3], vec![1.0, 0.0, 0.0])?, Parallelism::Serial)?;
    /// assert_eq!(v.shape(), &[2]);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// * [`Error::RankMismatch`] when `x` is rank 0;
    /// * [`Error::ShapeMismatch`] when `x`'s last dimension is not
    ///   `in_features`;
    /// * [`Error::InvalidParameter`] for a NaN or infinite activation (its
    ///   row's range has no finite scale), or `Threads(0)`.
    pub fn forward(&self, x: &Tensor<f32>, parallelism: Parallelism) -> Result<Tensor<f32>, Error> {
        let (batch, out_shape) = linear_rows(
            x.shape(),
            (self.in_features, self.out_features),
            "DynamicQuantLinear::forward: x must be [.., in_features]",
        )?;
        let mut xq = vec![0u8; batch * self.in_features];
        let mut scales = Vec::with_capacity(batch);
        let mut zps = Vec::with_capacity(batch);
        for (r, row) in x
            .as_slice()
            .chunks(self.in_features.max(1))
            .enumerate()
            .take(batch)
        {
            let (lo, hi) = range_with_zero("DynamicQuantLinear::forward activation", r, row)?;
            let (scale, zp) = scale_zp_from_range(lo, hi, 0, ACTIVATION_QMAX, Scheme::Affine)?;
            let q = &mut xq[r * self.in_features..(r + 1) * self.in_features];
            quantize(row, q, scale, zp)?;
            for v in q.iter_mut() {
                *v = (*v).min(ACTIVATION_QMAX as u8);
            }
            scales.push(scale);
            zps.push(zp);
        }
        let mut y = Tensor::<f32>::zeros(&out_shape)?;
        qgemm_packed(
            QMatRef::new(MatRef::from_row_major(&xq, batch, self.in_features)?, &zps)?,
            &self.weight,
            MatMut::from_row_major(y.as_mut_slice(), batch, self.out_features)?,
            &QEpilogue::Dequantize {
                a_scales: &scales,
                b_scales: &self.weight_scales,
                bias: self.bias.as_deref(),
            },
            parallelism,
        )?;
        Ok(y)
    }

    /// Scale of each output channel's weights.
    pub fn weight_scales(&self) -> &[f32] {
        &self.weight_scales
    }

    /// The quantized weights, `[out_features, in_features]` row-major
    /// (unpacked from the layer's packed form into a new vector).
    pub fn weight_q(&self) -> Vec<i8> {
        // The packed B is `in × out`: its row-major form transposed.
        let b = self.weight.to_row_major();
        let (o, i) = (self.out_features, self.in_features);
        (0..o * i).map(|x| b[(x % i) * o + x / i]).collect()
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The weights' parameters: symmetric i8 per output channel (axis 0),
    /// zero points 0, for saving beside [`Self::weight_q`].
    pub fn weight_params(&self) -> QuantParams {
        QuantParams {
            scales: self.weight_scales.clone(),
            zero_points: vec![0; self.out_features],
            axis: Some(0),
            qmin: i8::QMIN,
            qmax: i8::QMAX,
        }
    }

    /// A layer from weights quantized already (for example loaded from a
    /// file): `[out_features, in_features]` i8 with per-output-channel
    /// parameters along axis 0, zero points 0 (the layer's scheme). The
    /// result computes exactly what the layer that saved them computed.
    ///
    /// # Errors
    /// * the shape errors of [`DynamicQuantLinear::new`];
    /// * [`Error::InvalidParameter`] unless `params` is per channel on axis
    ///   0 with one scale per output feature, zero points 0 and the i8 range;
    /// * [`Error::LengthMismatch`] or [`Error::InvalidParameter`] for the bias
    ///   as [`DynamicQuantLinear::new`].
    pub fn from_quantized(
        weight: &Tensor<i8>,
        params: &QuantParams,
        bias: Option<&[f32]>,
    ) -> Result<Self, Error> {
        let w = weight.as_mat()?;
        let (out_features, in_features) = check_shape(w.rows(), w.cols())?;
        if params.axis() != Some(0)
            || params.scales().len() != out_features
            || params.zero_points().iter().any(|&z| z != 0)
            || params.range() != (i8::QMIN, i8::QMAX)
        {
            return Err(Error::InvalidParameter {
                name: "DynamicQuantLinear weight params",
                value: format!(
                    "axis {:?}, {} scales, zero points {:?}, range {:?}",
                    params.axis(),
                    params.scales().len(),
                    params.zero_points(),
                    params.range()
                ),
                requirement:
                    "per channel on axis 0, one scale per output feature, zero points 0, i8",
            });
        }
        check_bias(bias, out_features)?;
        Ok(Self {
            weight: pack_weight(weight.as_slice(), out_features, in_features)?,
            weight_scales: params.scales().to_vec(),
            bias: bias.map(<[f32]>::to_vec),
            in_features,
            out_features,
        })
    }
}

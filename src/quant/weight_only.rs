//! [`WeightOnlyLinear`]: a linear layer whose weights are quantized once
//! (int8 dynamic, MXFP4, NVFP4, MXFP8, block FP8, group-wise int4) and
//! whose activations stay f32, bf16 or f16.

use super::DynamicQuantLinear;
use crate::block_scaled::{
    pad_k, padded_k, BlockScaled, Fp8Granularity, MxScaleMode, PackedFp4, PackedFp8, PackedInt4,
};
use crate::gemm::{
    weight_only_gemm_fp8, weight_only_gemm_int4, weight_only_gemm_packed, Epilogue, Parallelism,
};
use crate::tensor::{MatMut, MatRef, Tensor};
use crate::{Error, FloatElement, F4E2M1, F8E4M3};

/// How [`WeightOnlyLinear::new`] quantizes the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightScheme {
    /// [`DynamicQuantLinear`]: symmetric i8 weights per output channel,
    /// each activation row quantized to u8 per call (W8A8).
    Int8Dynamic,
    /// MXFP8 E4M3 weights, E8M0 scales per 32 values of K (W8A16).
    Mxfp8,
    /// Scaled FP8 E4M3 weights, one f32 scale per 128 × 128 block
    /// (DeepSeek-V3's weight layout, W8A16).
    Fp8Block128,
    /// MXFP4 weights, E8M0 scales per 32 values of K, packed two per byte
    /// (W4A16, 4.25 bits per weight).
    Mxfp4,
    /// NVFP4 weights, E4M3 scales per 16 values and an f32 tensor scale,
    /// packed two per byte (W4A16, 4.5 bits per weight).
    Nvfp4,
    /// Group-wise int4 with a scale and zero point per `group` (32, 64 or
    /// 128) values of K, as GPTQ/AWQ and torchao's int4 weight-only use
    /// (W4A16).
    Int4 {
        /// Values of K per scale and zero point.
        group: usize,
    },
}

/// The layer's weights as each scheme holds them.
#[derive(Clone, Debug)]
enum Weights {
    Int8(DynamicQuantLinear),
    Fp8(PackedFp8),
    Fp4(PackedFp4),
    Int4(PackedInt4),
}

/// `y = x·Wᵀ + bias` with W (`[out_features, in_features]`, PyTorch's
/// layout) quantized once and packed for its kernel, and the activations
/// used as given (f32, bf16, f16): weight-only quantized inference. One
/// `forward` serves every [`WeightScheme`]; it takes input of any rank
/// `[.., in_features]` as `nn.Linear` does.
///
/// Products: the block-scaled and int4 schemes run
/// [`weight_only_gemm_fp8`] ([`PackedFp8`]), [`weight_only_gemm_packed`]
/// ([`PackedFp4`]) or [`weight_only_gemm_int4`] (bit-exact to their
/// contracts); `Int8Dynamic`
/// runs [`DynamicQuantLinear`] (its activations quantized per row). When
/// `in_features` is not a multiple of the scheme's block, the weights are
/// padded with zero columns once ([`pad_k`]) and each input row with zeros
/// per call: the zeros add nothing to any chain's value.
///
/// ```
/// use mixprec::quant::{WeightOnlyLinear, WeightScheme};
/// use mixprec::{bf16, gemm::Parallelism, Tensor};
/// let w = Tensor::from_fn(&[48, 100], |ix| ((ix[0] * 7 + ix[1]) % 13) as f32 * 0.1 - 0.6)?;
/// let layer = WeightOnlyLinear::new(&w, None, WeightScheme::Mxfp4)?;
/// // bf16 activations [batch 2, seq 3, in 100] → [2, 3, 48].
/// let x = Tensor::from_fn(&[2, 3, 100], |ix| bf16::from_f32(ix[2] as f32 * 0.01))?;
/// let y = layer.forward(&x, Parallelism::Serial)?;
/// assert_eq!(y.shape(), &[2, 3, 48]);
/// // 4.25 bits per weight (K padded to 128).
/// assert_eq!(layer.weight_bytes(), 48 * 128 * 17 / 32);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct WeightOnlyLinear {
    weights: Weights,
    scheme: WeightScheme,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
    /// K of the packed weights: `in_features` rounded up to the block.
    k: usize,
}

impl WeightOnlyLinear {
    /// Quantizes `weight` (`[out_features, in_features]`, f32) with `scheme`.
    ///
    /// # Errors
    /// * [`Error::RankMismatch`] when `weight` is not rank 2;
    /// * [`Error::EmptyDimension`] when either dimension is 0;
    /// * [`Error::InvalidParameter`] for a NaN or infinite weight or bias,
    ///   or an int4 group other than 32, 64 or 128;
    /// * [`Error::LengthMismatch`] for a bias whose length is not
    ///   `out_features`;
    /// * the errors of [`DynamicQuantLinear::new`] for `Int8Dynamic`.
    pub fn new(
        weight: &Tensor<f32>,
        bias: Option<&[f32]>,
        scheme: WeightScheme,
    ) -> Result<Self, Error> {
        let w = weight.as_mat()?;
        let (out_features, in_features) = (w.rows(), w.cols());
        if out_features == 0 || in_features == 0 {
            return Err(Error::EmptyDimension {
                what: "WeightOnlyLinear weight [out_features, in_features]",
                shape: vec![out_features, in_features],
            });
        }
        if let Some((i, v)) = weight
            .as_slice()
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(Error::InvalidParameter {
                name: "WeightOnlyLinear weight",
                value: format!("{v} at row {}, column {}", i / in_features, i % in_features),
                requirement: "finite",
            });
        }
        check_bias(bias, out_features)?;
        let block = match scheme {
            WeightScheme::Int8Dynamic => {
                let layer = DynamicQuantLinear::new(weight, bias)?;
                return Ok(Self::with(
                    Weights::Int8(layer),
                    scheme,
                    bias,
                    in_features,
                    out_features,
                    in_features,
                ));
            }
            WeightScheme::Mxfp8 | WeightScheme::Mxfp4 => 32,
            WeightScheme::Nvfp4 => 16,
            WeightScheme::Fp8Block128 => 128,
            WeightScheme::Int4 { group } => group,
        };
        let padded = pad_k(w, block)?;
        let p = padded.as_mat()?;
        let weights = match scheme {
            WeightScheme::Mxfp8 => {
                Weights::Fp8(PackedFp8::new(&BlockScaled::mx(p, MxScaleMode::Floor)?))
            }
            WeightScheme::Fp8Block128 => Weights::Fp8(PackedFp8::new(&BlockScaled::fp8(
                p,
                Fp8Granularity::Blocks128x128,
                false,
            )?)),
            WeightScheme::Mxfp4 => Weights::Fp4(PackedFp4::new(&BlockScaled::<F4E2M1>::mx(
                p,
                MxScaleMode::Floor,
            )?)),
            WeightScheme::Nvfp4 => Weights::Fp4(PackedFp4::new(&BlockScaled::nvfp4(p, true)?)),
            _ => Weights::Int4(PackedInt4::quantize(p, block)?),
        };
        let k = padded_k(in_features, block)?;
        Ok(Self::with(
            weights,
            scheme,
            bias,
            in_features,
            out_features,
            k,
        ))
    }

    /// A layer on FP4 weights quantized already (for example loaded from a
    /// checkpoint), `[out_features, k]` with `k` the padded
    /// `in_features`; the scheme is reported as MXFP4 or NVFP4 by its
    /// block (32 or 16).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `in_features` is 0, larger than
    /// the weights' K, or not within one block of it;
    /// [`Error::LengthMismatch`] or [`Error::InvalidParameter`] for the
    /// bias as [`Self::new`].
    pub fn from_packed_fp4(
        weights: PackedFp4,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self, Error> {
        let (out, k, block) = (weights.lines(), weights.k(), weights.block());
        let scheme = if block == 16 {
            WeightScheme::Nvfp4
        } else {
            WeightScheme::Mxfp4
        };
        Self::from_parts(
            Weights::Fp4(weights),
            scheme,
            (out, k, block),
            in_features,
            bias,
        )
    }

    /// A layer on group-wise int4 weights quantized already (GPTQ/AWQ
    /// exports), as [`Self::from_packed_fp4`].
    ///
    /// # Errors
    /// As [`Self::from_packed_fp4`].
    pub fn from_int4(
        weights: PackedInt4,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self, Error> {
        let (out, k, group) = (weights.lines(), weights.k(), weights.group());
        let scheme = WeightScheme::Int4 { group };
        Self::from_parts(
            Weights::Int4(weights),
            scheme,
            (out, k, group),
            in_features,
            bias,
        )
    }

    /// A layer on FP8 E4M3 block-scaled weights quantized already (MXFP8,
    /// or DeepSeek-style 128 × 128 blocks), as [`Self::from_packed_fp4`];
    /// reported as `Mxfp8` for blocks of 32, else `Fp8Block128`.
    ///
    /// # Errors
    /// As [`Self::from_packed_fp4`].
    pub fn from_fp8(
        weights: BlockScaled<F8E4M3>,
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self, Error> {
        let (out, k, block) = (weights.lines(), weights.k(), weights.block());
        let scheme = if block == 32 {
            WeightScheme::Mxfp8
        } else {
            WeightScheme::Fp8Block128
        };
        Self::from_parts(
            Weights::Fp8(PackedFp8::new(&weights)),
            scheme,
            (out, k, block),
            in_features,
            bias,
        )
    }

    fn from_parts(
        weights: Weights,
        scheme: WeightScheme,
        (out_features, k, block): (usize, usize, usize),
        in_features: usize,
        bias: Option<&[f32]>,
    ) -> Result<Self, Error> {
        if out_features == 0 || in_features == 0 || in_features > k || k - in_features >= block {
            return Err(Error::InvalidParameter {
                name: "WeightOnlyLinear in_features",
                value: format!("{in_features} for weights [{out_features}, {k}] in blocks of {block}"),
                requirement: "in 1..=K, within one block of K (the padded in_features), with out_features ≥ 1",
            });
        }
        check_bias(bias, out_features)?;
        Ok(Self::with(
            weights,
            scheme,
            bias,
            in_features,
            out_features,
            k,
        ))
    }

    fn with(
        weights: Weights,
        scheme: WeightScheme,
        bias: Option<&[f32]>,
        in_features: usize,
        out_features: usize,
        k: usize,
    ) -> Self {
        Self {
            weights,
            scheme,
            bias: bias.map(<[f32]>::to_vec),
            in_features,
            out_features,
            k,
        }
    }

    /// `[.., in_features]` → `[.., out_features]` (f32), as `nn.Linear`:
    /// any leading dimensions are rows of one product. A leading dimension
    /// of 0 gives an empty output of the same shape.
    ///
    /// # Errors
    /// * [`Error::RankMismatch`] when `x` is rank 0;
    /// * [`Error::ShapeMismatch`] when `x`'s last dimension is not
    ///   `in_features`;
    /// * [`Error::InvalidParameter`] for `Threads(0)`, and for a NaN or
    ///   infinite activation with `Int8Dynamic` (the other schemes
    ///   propagate them as IEEE 754 says).
    pub fn forward<T: FloatElement>(
        &self,
        x: &Tensor<T>,
        parallelism: Parallelism,
    ) -> Result<Tensor<f32>, Error> {
        let (batch, out_shape) = super::linear::linear_rows(
            x.shape(),
            (self.in_features, self.out_features),
            "WeightOnlyLinear::forward: x must be [.., in_features]",
        )?;
        if let Weights::Int8(layer) = &self.weights {
            let xf =
                Tensor::from_vec(x.shape(), x.as_slice().iter().map(|v| v.to_f32()).collect())?;
            return layer.forward(&xf, parallelism);
        }
        let mut y = Tensor::<f32>::zeros(&out_shape)?;
        // Rows padded with zeros to the weights' K, if need be.
        let padded;
        let a = if self.k == self.in_features {
            MatRef::from_row_major(x.as_slice(), batch, self.in_features)?
        } else {
            padded = self.pad_rows(x, batch)?;
            MatRef::from_row_major(&padded, batch, self.k)?
        };
        let c = MatMut::from_row_major(y.as_mut_slice(), batch, self.out_features)?;
        let epilogue = match &self.bias {
            Some(b) => Epilogue::new().bias(b),
            None => Epilogue::new(),
        };
        match &self.weights {
            Weights::Fp8(w) => weight_only_gemm_fp8(a, w, c, &epilogue, parallelism)?,
            Weights::Fp4(w) => weight_only_gemm_packed(a, w, c, &epilogue, parallelism)?,
            Weights::Int4(w) => weight_only_gemm_int4(a, w, c, &epilogue, parallelism)?,
            Weights::Int8(_) => {} // returned above
        }
        Ok(y)
    }

    /// `x`'s rows (`batch × in_features`) padded with zeros to `k` columns.
    fn pad_rows<T: FloatElement>(&self, x: &Tensor<T>, batch: usize) -> Result<Vec<T>, Error> {
        let mut out = vec![T::from_f32(0.0); crate::error::checked_len_of::<T>(&[batch, self.k])?];
        for (dst, src) in out
            .chunks_exact_mut(self.k)
            .zip(x.as_slice().chunks_exact(self.in_features))
        {
            dst[..self.in_features].copy_from_slice(src);
        }
        Ok(out)
    }

    /// The scheme the weights are held in.
    pub fn scheme(&self) -> WeightScheme {
        self.scheme
    }

    /// Input features (the last dimension of `forward`'s input).
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The weights' values as the layer holds them, `[out_features,
    /// in_features]` f32 (each element times its scale, one rounding; the
    /// padding columns dropped): what the layer multiplies by.
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] only if the shape cannot be allocated.
    pub fn dequantized_weight(&self) -> Result<Tensor<f32>, Error> {
        let (full, k) = match &self.weights {
            Weights::Int8(l) => {
                let q = l.weight_q();
                let s = l.weight_scales();
                let v = q
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| f32::from(v) * s[i / self.in_features])
                    .collect();
                (
                    Tensor::from_vec(&[self.out_features, self.in_features], v)?,
                    self.in_features,
                )
            }
            Weights::Fp8(w) => (w.to_block_scaled().dequantize()?, self.k),
            Weights::Fp4(w) => (w.to_block_scaled().dequantize()?, self.k),
            Weights::Int4(w) => (w.dequantize()?, self.k),
        };
        let cropped = full
            .as_slice()
            .chunks_exact(k)
            .flat_map(|row| &row[..self.in_features])
            .copied()
            .collect();
        Tensor::from_vec(&[self.out_features, self.in_features], cropped)
    }

    /// Bytes of the quantized weights with their scales (and zero points),
    /// as held (padded to the block along K).
    pub fn weight_bytes(&self) -> usize {
        match &self.weights {
            Weights::Int8(l) => l.weight_q().len() + 4 * l.weight_scales().len(),
            Weights::Fp8(w) => w.size_bytes(),
            Weights::Fp4(w) => w.size_bytes(),
            Weights::Int4(w) => w.size_bytes(),
        }
    }
}

/// A bias, if any: finite, one per output feature.
fn check_bias(bias: Option<&[f32]>, out_features: usize) -> Result<(), Error> {
    let Some(b) = bias else {
        return Ok(());
    };
    if b.len() != out_features {
        return Err(Error::LengthMismatch {
            what: "WeightOnlyLinear bias (one per output feature)",
            expected: out_features,
            actual: b.len(),
        });
    }
    if let Some((i, v)) = b.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidParameter {
            name: "WeightOnlyLinear bias",
            value: format!("{v} at {i}"),
            requirement: "finite",
        });
    }
    Ok(())
}

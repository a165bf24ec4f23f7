//! Post-training quantization of a trained [`Mlp`], scheme by scheme and
//! bit width by bit width: the seed's accuracy-vs-bits experiment, run on
//! the crate's own integer and block-scaled GEMMs (never on dequantized
//! f32 weights).
//!
//! | scheme | weights | activations (inputs of each layer) |
//! |---|---|---|
//! | [`PtqScheme::FixedPoint`] | symmetric, one power-of-two scale per layer from max\|w\| (TPU v1: the integer bits from the observed range, the rest fraction) | the same, from max\|x\| seen in calibration |
//! | [`PtqScheme::AffinePerTensor`] | affine (scale, zero point) per layer from min/max | affine per layer from calibration min/max (`u8`) |
//! | [`PtqScheme::SymmetricPerChannel`] | symmetric, one scale per output channel | affine per layer (`u8`) |
//! | [`PtqScheme::HistogramPerTensor`] | affine per layer, clipping range with the least L2 error ([`super::observer::HistogramObserver`]) | the same over the calibration activations (`u8`) |
//! | [`PtqScheme::MxInt8`], [`PtqScheme::MxFp8`], [`PtqScheme::MxFp6`], [`PtqScheme::MxFp4`] | OCP MX blocks of 32 along K (MXINT8, E4M3, E2M3, E2M1), FLOOR scales | the same, per row, at run time |
//! | [`PtqScheme::Nvfp4`] | NVFP4 blocks of 16 with E4M3 scales and a tensor scale | the same, per batch, at run time |
//!
//! The integer schemes take any width from 2 to 8 bits: values are stored
//! in `i8`/`u8` but clamped to the `bits`-wide range (`[−2^(b−1), 2^(b−1)−1]`
//! signed, `[0, 2^b − 1]` unsigned), with the scales computed for that range.
//! Each integer layer is [`super::qgemm`] (exact i32 sums) with a
//! dequantizing epilogue and the bias, then the layer's activation in f32;
//! each block-scaled layer is [`crate::gemm::block_gemm`] with the bias and
//! activation in its epilogue. K is padded with zeros to the block size
//! where it is not a multiple (zeros add nothing to any block's sum).
//!
//! ```
//! use mixprec::amp::Mlp;
//! use mixprec::convert::StochasticRng;
//! use mixprec::gemm::{Activation, Parallelism};
//! use mixprec::quant::ptq::{PtqScheme, QuantizedMlp};
//! let mlp = Mlp::<f32>::new(&[32, 16, 4], Activation::Relu, 1.0, &mut StochasticRng::new(1))?;
//! let x: Vec<f32> = (0..8 * 32).map(|i| (i % 7) as f32 / 7.0).collect();
//! let q = QuantizedMlp::new(&mlp, &x, PtqScheme::SymmetricPerChannel, 8)?;
//! let y = q.infer(&x, 8, Parallelism::Serial)?;
//! let f = mlp.infer(&x, Parallelism::Serial)?;
//! let worst = y.iter().zip(&f).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
//! assert!(worst < 0.05, "{worst}");
//! assert!((q.bits_per_weight() - 8.0).abs() < 1.5); // 8 bits + one f32 scale per channel
//! # Ok::<(), mixprec::Error>(())
//! ```

use super::observer::{batch_range, HistogramObserver};
use super::{
    power_of_two_scale, qgemm, quantize, scale_zp_from_range, QEpilogue, QInt, QMatRef, Scheme,
};
use crate::amp::Mlp;
use crate::block_scaled::{pad_k, BlockScaled, MxScaleMode};
use crate::dtype::{MxInt8, F4E2M1, F6E2M3, F8E4M3};
use crate::gemm::{block_gemm, Activation, Epilogue, Parallelism};
use crate::tensor::{MatMut, MatRef};
use crate::Error;

/// A post-training quantization scheme (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PtqScheme {
    /// TPU-style fixed point: power-of-two scales per layer, symmetric.
    FixedPoint,
    /// Affine (scale and zero point) per tensor, from min/max.
    AffinePerTensor,
    /// Symmetric per output channel (weights), affine per tensor (activations).
    SymmetricPerChannel,
    /// Affine per tensor with L2-optimal clipping from a histogram.
    HistogramPerTensor,
    /// OCP MXINT8 (8 bits).
    MxInt8,
    /// OCP MXFP8 E4M3 (8 bits).
    MxFp8,
    /// OCP MXFP6 E2M3 (6 bits).
    MxFp6,
    /// OCP MXFP4 E2M1 (4 bits).
    MxFp4,
    /// NVFP4 (4 bits, E4M3 block scales of 16, a tensor scale).
    Nvfp4,
}

impl PtqScheme {
    /// Every scheme, integer ones first.
    pub const ALL: [Self; 9] = [
        Self::FixedPoint,
        Self::AffinePerTensor,
        Self::SymmetricPerChannel,
        Self::HistogramPerTensor,
        Self::MxInt8,
        Self::MxFp8,
        Self::MxFp6,
        Self::MxFp4,
        Self::Nvfp4,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::FixedPoint => "fixed-point (TPU)",
            Self::AffinePerTensor => "affine per tensor",
            Self::SymmetricPerChannel => "symmetric per channel",
            Self::HistogramPerTensor => "histogram (L2 clip)",
            Self::MxInt8 => "MXINT8",
            Self::MxFp8 => "MXFP8 E4M3",
            Self::MxFp6 => "MXFP6 E2M3",
            Self::MxFp4 => "MXFP4",
            Self::Nvfp4 => "NVFP4",
        }
    }

    /// The element width of a block-scaled format (`None` for the integer
    /// schemes, which take 2 to 8 bits).
    pub fn fixed_bits(self) -> Option<u32> {
        match self {
            Self::MxInt8 | Self::MxFp8 => Some(8),
            Self::MxFp6 => Some(6),
            Self::MxFp4 | Self::Nvfp4 => Some(4),
            _ => None,
        }
    }
}

/// Scale and zero point of one integer tensor at a bit width.
#[derive(Clone, Debug)]
struct IntParams {
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    qmin: i32,
    qmax: i32,
}

/// One integer layer: weights `n × k` (row-major, `i8`, clamped to the
/// bit width), activations quantized on the way in.
#[derive(Clone, Debug)]
struct IntLayer {
    k: usize,
    n: usize,
    w: Vec<i8>,
    w_params: IntParams,
    act: IntParams,
    /// Activations stored as `u8` (affine) or `i8` (symmetric fixed point).
    act_unsigned: bool,
    bias: Vec<f32>,
    activation: Activation,
}

/// Block-scaled weights of one layer (K padded to the block).
#[derive(Clone, Debug)]
enum BlockWeights {
    MxInt8(BlockScaled<MxInt8>),
    MxFp8(BlockScaled<F8E4M3>),
    MxFp6(BlockScaled<F6E2M3>),
    Fp4(BlockScaled<F4E2M1>),
}

#[derive(Clone, Debug)]
struct BlockLayer {
    k: usize,
    k_padded: usize,
    /// The scaling block (K is padded to a multiple of it).
    block: usize,
    n: usize,
    w: BlockWeights,
    bias: Vec<f32>,
    activation: Activation,
}

#[derive(Clone, Debug)]
enum Layer {
    Int(IntLayer),
    Block(BlockLayer),
}

/// An [`Mlp`] quantized after training by one [`PtqScheme`] at one bit
/// width; inference runs on the integer or block-scaled GEMM.
#[derive(Clone, Debug)]
pub struct QuantizedMlp {
    scheme: PtqScheme,
    bits: u32,
    in_features: usize,
    out_features: usize,
    layers: Vec<Layer>,
}

/// The signed and unsigned integer ranges of `bits` bits.
fn signed_range(bits: u32) -> (i32, i32) {
    (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
}

fn unsigned_range(bits: u32) -> (i32, i32) {
    (0, (1 << bits) - 1)
}

/// min and max of the non-NaN values (0 and 0 when there are none; the
/// parameter formulas widen every range to include 0).
fn min_max(x: &[f32]) -> (f32, f32) {
    batch_range(x).unwrap_or((0.0, 0.0))
}

/// `InvalidParameter` naming the first NaN or ±∞ of `x` (layer `layer`).
fn all_finite(name: &'static str, layer: usize, x: &[f32]) -> Result<(), Error> {
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::InvalidParameter {
            name,
            value: format!("layer {layer}, element {i}: {:e}", x[i]),
            requirement: "finite (a NaN or infinity has no quantization scale)",
        }),
    }
}

/// Per-tensor parameters of `x` for `[qmin, qmax]` under `scheme`.
fn tensor_params(x: &[f32], scheme: PtqScheme, qmin: i32, qmax: i32) -> Result<IntParams, Error> {
    let (lo, hi) = min_max(x);
    let (scale, zp) = match scheme {
        PtqScheme::FixedPoint => {
            let amax = f64::from(lo.abs().max(hi.abs()));
            (power_of_two_scale(amax, f64::from(qmax)), 0)
        }
        PtqScheme::HistogramPerTensor => {
            let mut obs = HistogramObserver::new();
            obs.observe(x);
            let (clo, chi) = obs.clipping_range(qmin, qmax, Scheme::Affine)?;
            scale_zp_from_range(clo, chi, qmin, qmax, Scheme::Affine)?
        }
        _ => scale_zp_from_range(lo, hi, qmin, qmax, Scheme::Affine)?,
    };
    Ok(IntParams {
        scales: vec![scale],
        zero_points: vec![zp],
        qmin,
        qmax,
    })
}

/// Quantizes `x` with one scale/zero point (or one per row of `cols`
/// values when `p` has several), clamped to `p`'s range.
fn quantize_clamped<Q: QInt>(x: &[f32], cols: usize, p: &IntParams) -> Result<Vec<Q>, Error> {
    let mut q = vec![Q::from_i32_clamped(0); x.len()];
    if p.scales.len() == 1 {
        quantize(x, &mut q, p.scales[0], p.zero_points[0])?;
    } else {
        for ((xr, qr), (&s, &z)) in x
            .chunks(cols.max(1))
            .zip(q.chunks_mut(cols.max(1)))
            .zip(p.scales.iter().zip(&p.zero_points))
        {
            quantize(xr, qr, s, z)?;
        }
    }
    for v in q.iter_mut() {
        *v = Q::from_i32_clamped(v.to_i32().clamp(p.qmin, p.qmax));
    }
    Ok(q)
}

impl QuantizedMlp {
    /// Quantizes `mlp` (its f32 master weights) by `scheme` at `bits`,
    /// calibrating the activation ranges of the integer schemes on
    /// `calibration` (rows of `in_features` values, run through the f32
    /// model). The block-scaled schemes quantize activations at run time
    /// and only check the calibration shape.
    ///
    /// # Errors
    /// * [`Error::InvalidParameter`] for `bits` outside 2..=8 (integer
    ///   schemes) or other than the format's width (block-scaled ones), or
    ///   an empty calibration set for an integer scheme;
    /// * [`Error::InvalidParameter`] for a NaN or ±∞ in a master weight
    ///   or bias, or (integer schemes) in the calibration data or the
    ///   activations it produces: no scale represents them;
    /// * [`Error::LengthMismatch`] when `calibration` is not whole rows;
    /// * errors of the f32 forward pass and of the quantizers.
    pub fn new(
        mlp: &Mlp<f32>,
        calibration: &[f32],
        scheme: PtqScheme,
        bits: u32,
    ) -> Result<Self, Error> {
        let layers = mlp.layers();
        let in_features = layers.first().map_or(0, |l| l.in_features());
        let out_features = layers.last().map_or(0, |l| l.out_features());
        match scheme.fixed_bits() {
            Some(b) if b != bits => {
                return Err(Error::InvalidParameter {
                    name: "bits",
                    value: bits.to_string(),
                    requirement: "the block-scaled format's own element width (8 for MXINT8 and MXFP8, 6 for MXFP6, 4 for MXFP4 and NVFP4)",
                })
            }
            None if !(2..=8).contains(&bits) => {
                return Err(Error::InvalidParameter {
                    name: "bits",
                    value: bits.to_string(),
                    requirement: "in 2..=8 for the integer schemes",
                })
            }
            _ => {}
        }
        if in_features == 0 || !calibration.len().is_multiple_of(in_features) {
            return Err(Error::LengthMismatch {
                what: "QuantizedMlp::new: calibration (whole rows of the input width)",
                expected: calibration.len().next_multiple_of(in_features.max(1)),
                actual: calibration.len(),
            });
        }
        let rows = calibration.len() / in_features;
        if rows == 0 && scheme.fixed_bits().is_none() {
            return Err(Error::InvalidParameter {
                name: "calibration",
                value: "0 rows".into(),
                requirement: "at least one row for the integer schemes' activation ranges",
            });
        }
        let mut x = calibration.to_vec();
        let mut out = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            let (w, b) = layer.masters();
            let (k, n) = (layer.in_features(), layer.out_features());
            let activation = layer.activation();
            // A NaN or ±∞ would pick no scale (NaN quantizes to 0 under a
            // per-channel scale) or an absurd one (2^126 from ±∞).
            all_finite("QuantizedMlp::new: master weights", i, w)?;
            all_finite("QuantizedMlp::new: master bias", i, b)?;
            if scheme.fixed_bits().is_none() {
                all_finite("QuantizedMlp::new: calibration activations", i, &x)?;
            }
            out.push(match scheme.fixed_bits() {
                None => Layer::Int(Self::int_layer(w, b, k, n, activation, &x, scheme, bits)?),
                Some(_) => Layer::Block(Self::block_layer(w, b, k, n, activation, scheme)?),
            });
            if scheme.fixed_bits().is_none() {
                x = layer.infer(&x, rows, Parallelism::Serial)?;
            }
        }
        Ok(Self {
            scheme,
            bits,
            in_features,
            out_features,
            layers: out,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn int_layer(
        w: &[f32],
        b: &[f32],
        k: usize,
        n: usize,
        activation: Activation,
        x: &[f32],
        scheme: PtqScheme,
        bits: u32,
    ) -> Result<IntLayer, Error> {
        let (wmin, wmax) = signed_range(bits);
        let w_params = match scheme {
            PtqScheme::SymmetricPerChannel => {
                let mut scales = Vec::with_capacity(n);
                for row in w.chunks(k) {
                    let (lo, hi) = min_max(row);
                    scales.push(scale_zp_from_range(lo, hi, wmin, wmax, Scheme::Symmetric)?.0);
                }
                IntParams {
                    zero_points: vec![0; n],
                    scales,
                    qmin: wmin,
                    qmax: wmax,
                }
            }
            _ => tensor_params(w, scheme, wmin, wmax)?,
        };
        // Fixed point keeps activations signed and symmetric (as the seed's
        // fixed-point numbers); the affine schemes use u8 with a zero point.
        let act_unsigned = scheme != PtqScheme::FixedPoint;
        let (amin, amax) = if act_unsigned {
            unsigned_range(bits)
        } else {
            signed_range(bits)
        };
        let act = tensor_params(x, scheme, amin, amax)?;
        Ok(IntLayer {
            k,
            n,
            w: quantize_clamped::<i8>(w, k, &w_params)?,
            w_params,
            act,
            act_unsigned,
            bias: b.to_vec(),
            activation,
        })
    }

    fn block_layer(
        w: &[f32],
        b: &[f32],
        k: usize,
        n: usize,
        activation: Activation,
        scheme: PtqScheme,
    ) -> Result<BlockLayer, Error> {
        let block = if scheme == PtqScheme::Nvfp4 { 16 } else { 32 };
        let wp = pad_k(MatRef::from_row_major(w, n, k)?, block)?;
        let k_padded = wp.shape()[1];
        let m = wp.as_mat()?;
        let floor = MxScaleMode::Floor;
        let w = match scheme {
            PtqScheme::MxInt8 => BlockWeights::MxInt8(BlockScaled::mx(m, floor)?),
            PtqScheme::MxFp8 => BlockWeights::MxFp8(BlockScaled::mx(m, floor)?),
            PtqScheme::MxFp6 => BlockWeights::MxFp6(BlockScaled::mx(m, floor)?),
            PtqScheme::MxFp4 => BlockWeights::Fp4(BlockScaled::mx(m, floor)?),
            _ => BlockWeights::Fp4(BlockScaled::nvfp4(m, true)?),
        };
        Ok(BlockLayer {
            k,
            k_padded,
            block,
            n,
            w,
            bias: b.to_vec(),
            activation,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> PtqScheme {
        self.scheme
    }

    /// The bit width of the weights (and activations).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output width (logits).
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Storage of the weights in bits per weight, scales and zero points
    /// included (f32 scales and i32 zero points count 32 bits each, E8M0
    /// and E4M3 block scales 8, NVFP4's tensor scale 32; K padding counts
    /// as stored elements). Biases are not weights and stay f32.
    pub fn bits_per_weight(&self) -> f64 {
        let (mut stored, mut weights) = (0.0f64, 0.0f64);
        for layer in &self.layers {
            match layer {
                Layer::Int(l) => {
                    let zps = l.w_params.zero_points.iter().filter(|&&z| z != 0).count();
                    stored += (l.n * l.k) as f64 * f64::from(self.bits)
                        + 32.0 * (l.w_params.scales.len() + zps) as f64;
                    weights += (l.n * l.k) as f64;
                }
                Layer::Block(l) => {
                    let (block, extra) = match l.w {
                        BlockWeights::Fp4(_) if self.scheme == PtqScheme::Nvfp4 => (16, 32.0),
                        _ => (32, 0.0),
                    };
                    let elems = (l.n * l.k_padded) as f64;
                    stored += elems * f64::from(self.bits) + 8.0 * elems / block as f64 + extra;
                    weights += (l.n * l.k) as f64;
                }
            }
        }
        if weights == 0.0 {
            0.0
        } else {
            stored / weights
        }
    }

    /// Logits for `rows` rows of `x` (`rows × in_features`, row-major).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `x` is not `rows × in_features`;
    /// errors of the GEMMs (`Threads(0)`).
    pub fn infer(&self, x: &[f32], rows: usize, par: Parallelism) -> Result<Vec<f32>, Error> {
        let want = crate::error::checked_numel(&[rows, self.in_features])?;
        if x.len() != want {
            return Err(Error::LengthMismatch {
                what: "QuantizedMlp::infer: x (rows × in_features)",
                expected: want,
                actual: x.len(),
            });
        }
        let mut h = x.to_vec();
        for layer in &self.layers {
            h = match layer {
                Layer::Int(l) => Self::int_forward(l, &h, rows, par)?,
                Layer::Block(l) => Self::block_forward(l, &h, rows, self.scheme, par)?,
            };
        }
        Ok(h)
    }

    fn int_forward(
        l: &IntLayer,
        x: &[f32],
        rows: usize,
        par: Parallelism,
    ) -> Result<Vec<f32>, Error> {
        let mut y = vec![0.0f32; crate::error::checked_numel(&[rows, l.n])?];
        let b = QMatRef::new(
            MatRef::from_row_major(&l.w, l.n, l.k)?.t(),
            &l.w_params.zero_points,
        )?;
        let ep = QEpilogue::Dequantize {
            a_scales: &l.act.scales,
            b_scales: &l.w_params.scales,
            bias: Some(&l.bias),
        };
        let c = MatMut::from_row_major(&mut y, rows, l.n)?;
        if l.act_unsigned {
            let a = quantize_clamped::<u8>(x, l.k, &l.act)?;
            let a = QMatRef::new(MatRef::from_row_major(&a, rows, l.k)?, &l.act.zero_points)?;
            qgemm(a, b, c, &ep, par)?;
        } else {
            let a = quantize_clamped::<i8>(x, l.k, &l.act)?;
            let a = QMatRef::new(MatRef::from_row_major(&a, rows, l.k)?, &l.act.zero_points)?;
            qgemm(a, b, c, &ep, par)?;
        }
        if l.activation != Activation::Identity {
            y.iter_mut().for_each(|v| *v = l.activation.apply(*v));
        }
        Ok(y)
    }

    fn block_forward(
        l: &BlockLayer,
        x: &[f32],
        rows: usize,
        scheme: PtqScheme,
        par: Parallelism,
    ) -> Result<Vec<f32>, Error> {
        let xp = pad_k(MatRef::from_row_major(x, rows, l.k)?, l.block)?;
        let a = xp.as_mat()?;
        let mut y = vec![0.0f32; crate::error::checked_numel(&[rows, l.n])?];
        let c = MatMut::from_row_major(&mut y, rows, l.n)?;
        let ep = Epilogue::new().bias(&l.bias).activation(l.activation);
        let floor = MxScaleMode::Floor;
        match &l.w {
            BlockWeights::MxInt8(w) => {
                block_gemm(&BlockScaled::<MxInt8>::mx(a, floor)?, w, c, &ep, par)
            }
            BlockWeights::MxFp8(w) => {
                block_gemm(&BlockScaled::<F8E4M3>::mx(a, floor)?, w, c, &ep, par)
            }
            BlockWeights::MxFp6(w) => {
                block_gemm(&BlockScaled::<F6E2M3>::mx(a, floor)?, w, c, &ep, par)
            }
            BlockWeights::Fp4(w) if scheme == PtqScheme::Nvfp4 => {
                block_gemm(&BlockScaled::nvfp4(a, true)?, w, c, &ep, par)
            }
            BlockWeights::Fp4(w) => {
                block_gemm(&BlockScaled::<F4E2M1>::mx(a, floor)?, w, c, &ep, par)
            }
        }?;
        Ok(y)
    }
}

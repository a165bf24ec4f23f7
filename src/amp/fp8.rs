//! FP8 training: the GEMMs of a [`super::Linear`] layer on scaled FP8
//! operands, as NVIDIA Transformer Engine's recipes run them.
//!
//! Each layer holds three scaled tensors: its input X and weight W (E4M3)
//! and the gradient of its output dY (E5M2 in the [`Fp8Format::Hybrid`]
//! recipe, E4M3 in [`Fp8Format::E4M3`]). Every product is the block-scaled
//! GEMM ([`crate::gemm::block_gemm`]) with one scale per tensor and f32
//! accumulation; K is padded with zeros to a multiple of 16 and the
//! contract's `acc = fma(p, s_a·s_b, acc)` runs every 128, 32 or 16 values
//! of K (the largest that divides the padded K):
//!
//! * forward `Y = X·Wᵀ` (E4M3 × E4M3), the bias and ReLU in the epilogue;
//! * weight gradient `dW = dZᵀ·X` (dY format × E4M3), reusing the FP8 X
//!   saved by the forward pass (transposed, not re-rounded);
//! * input gradient `dX = dZ·W` (dY format × E4M3).
//!
//! Master weights and the bias gradient stay f32. A tensor's elements are
//! `x / s` rounded to nearest even and saturated to ±max normal (448 for
//! E4M3, 57344 for E5M2), while ±∞ and NaN become NaN (an overflow reaches
//! the loss scaler instead of saturating to a finite value); `s` is the
//! tensor's dequantization scale:
//!
//! * [`Fp8Scaling::Delayed`]: `s = amax_h · 2^margin / max_normal` with
//!   `amax_h` the largest amax in the tensor's history of the last
//!   `history` steps ([`DelayedScaling`]); Transformer Engine's
//!   `scale = max_normal / amax / 2^margin` is its reciprocal;
//! * [`Fp8Scaling::Current`]: the same from this step's amax;
//! * [`Fp8Scaling::Unscaled`]: `s = 1` (FP8 as a plain number format).
//!
//! An all-zero tensor keeps the previous scale (delayed) or takes 1
//! (current). A NaN or ±∞ amax (an overflowed gradient) is not recorded:
//! the history and the scale stay as they were, the overflow is counted,
//! and the NaN/∞ propagates through the product so that the loss scaler
//! skips the step ([`DelayedScaling::record`]).
//!
//! ```
//! use mixprec::amp::{train_step, Loss, Mlp, Precision, Sgd};
//! use mixprec::gemm::{Activation, Parallelism};
//! use mixprec::convert::StochasticRng;
//! let p = Precision::Fp8HybridDelayed;
//! let mut mlp = Mlp::<f32>::new(&[32, 16, 4], Activation::Relu, 1.0, &mut StochasticRng::new(1))?;
//! mlp.set_fp8(p.fp8_recipe())?; // E4M3 X and W, E5M2 dY, delayed scaling
//! let (mut opt, mut scaler) = (Sgd::new(0.05, 0.9, 0.0)?, p.scaler());
//! let x: Vec<f32> = (0..8 * 32).map(|i| (i % 9) as f32 / 9.0).collect();
//! let labels: Vec<u32> = (0..8).map(|i| i % 4).collect();
//! for _ in 0..3 {
//!     let loss = Loss::CrossEntropy { labels: &labels };
//!     let out = train_step(&mut mlp, &mut opt, &mut scaler, &x, loss, 1.0, Parallelism::Serial)?;
//!     assert!(out.loss.is_finite() && !out.skipped);
//! }
//! // After three steps each tensor's scale comes from its amax history.
//! let [sx, sw, sdy] = mlp.layers()[0].fp8_scales().unwrap();
//! assert_eq!(sx, 8.0 / 9.0 / 448.0); // max |x| = 8/9, E4M3's max normal 448
//! assert!(sw > 0.0 && sdy > 0.0);
//! # Ok::<(), mixprec::Error>(())
//! ```

use crate::block_scaled::BlockScaled;
use crate::block_scaled::{amax_bits, block_reciprocal, narrow_scaled_blocks};
use crate::dtype::{FloatElement, F8E4M3, F8E5M2};
use crate::gemm::{block_gemm, Epilogue, Parallelism};
use crate::tensor::{MatMut, MatRef};
use crate::Error;

/// Which FP8 format each tensor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Fp8Format {
    /// E4M3 for the forward pass (X, W), E5M2 for gradients (dY): range
    /// where gradients need it, precision where activations do.
    Hybrid,
    /// E4M3 for every tensor.
    E4M3,
}

/// How each tensor's scale is chosen (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Fp8Scaling {
    /// From the largest amax of the last `history` steps (Transformer
    /// Engine's `DelayedScaling`: history 1024, margin 0 by default).
    Delayed {
        /// Steps of amax history, at least 1.
        history: usize,
        /// Headroom: the scale is 2^margin larger (−64..=64).
        margin: i32,
    },
    /// From this step's amax.
    Current {
        /// Headroom as for `Delayed` (−64..=64).
        margin: i32,
    },
    /// Scale 1: the FP8 formats' own range only.
    Unscaled,
}

impl Fp8Scaling {
    /// Transformer Engine's default: delayed, history 1024, margin 0.
    pub const DELAYED: Self = Self::Delayed {
        history: 1024,
        margin: 0,
    };

    /// Current scaling, margin 0.
    pub const CURRENT: Self = Self::Current { margin: 0 };
}

/// An FP8 training recipe: the formats and the scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Fp8Recipe {
    /// Formats of X, W (forward) and dY (backward).
    pub format: Fp8Format,
    /// How scales are chosen.
    pub scaling: Fp8Scaling,
}

impl Fp8Recipe {
    /// The longest amax history a delayed recipe may ask for: 65,536 steps
    /// (Transformer Engine's default is 1,024). Each step is kept, so a
    /// longer one would be memory asked of the caller's data (a history of
    /// `usize::MAX` in a checkpoint cannot be allocated).
    pub const MAX_HISTORY: usize = 1 << 16;

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a history of 0 or above
    /// [`Self::MAX_HISTORY`], or a margin outside −64..=64.
    pub fn validate(&self) -> Result<(), Error> {
        let margin = match self.scaling {
            Fp8Scaling::Delayed { history, .. } if !(1..=Self::MAX_HISTORY).contains(&history) => {
                return Err(Error::InvalidParameter {
                    name: "Fp8Scaling::Delayed history",
                    value: history.to_string(),
                    requirement: "1..=65536 steps",
                })
            }
            Fp8Scaling::Delayed { margin, .. } | Fp8Scaling::Current { margin } => margin,
            Fp8Scaling::Unscaled => 0,
        };
        if !(-64..=64).contains(&margin) {
            return Err(Error::InvalidParameter {
                name: "FP8 scaling margin",
                value: margin.to_string(),
                requirement: "in -64..=64",
            });
        }
        Ok(())
    }
}

/// 2^margin · amax / max_normal, or `None` when that is not a finite
/// value > 0 (amax 0, NaN or ±∞, or an underflow).
fn scale_from_amax(amax: f32, margin: i32, max_normal: f32) -> Option<f32> {
    let s = amax * 2f32.powi(margin) / max_normal;
    (s.is_finite() && s > 0.0).then_some(s)
}

/// The delayed-scaling state of one tensor: the amaxes of the last
/// `history` steps and the scale they give.
///
/// ```
/// use mixprec::amp::fp8::DelayedScaling;
/// let mut d = DelayedScaling::new(2, 0, 448.0)?;
/// assert_eq!(d.scale(), 1.0); // nothing recorded yet
/// d.record(896.0);
/// assert_eq!(d.scale(), 2.0); // 896 / 448
/// d.record(44.8);
/// assert_eq!(d.scale(), 2.0); // the history's max is still 896
/// d.record(44.8);
/// assert_eq!(d.scale(), 0.1); // 896 rolled out: 44.8 / 448
/// d.record(f32::INFINITY);    // an overflow: counted, not recorded
/// assert_eq!((d.scale(), d.overflows()), (0.1, 1));
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "serde_impl::DelayedScalingState"))]
pub struct DelayedScaling {
    /// Ring buffer of recorded amaxes; `next` is the slot the next one
    /// overwrites; `filled` how many are valid.
    history: Vec<f32>,
    next: usize,
    filled: usize,
    margin: i32,
    max_normal: f32,
    scale: f32,
    overflows: u64,
}

impl DelayedScaling {
    /// An empty history of `history` steps for a format whose largest
    /// normal is `max_normal`; the scale starts at 1.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a history of 0 or above
    /// [`Fp8Recipe::MAX_HISTORY`], a margin outside −64..=64 or a
    /// `max_normal` that is not finite and > 0.
    pub fn new(history: usize, margin: i32, max_normal: f32) -> Result<Self, Error> {
        Fp8Recipe {
            format: Fp8Format::E4M3,
            scaling: Fp8Scaling::Delayed { history, margin },
        }
        .validate()?;
        if !(max_normal.is_finite() && max_normal > 0.0) {
            return Err(Error::InvalidParameter {
                name: "max_normal",
                value: format!("{max_normal:e}"),
                requirement: "finite and > 0",
            });
        }
        Ok(Self {
            history: vec![0.0; history],
            next: 0,
            filled: 0,
            margin,
            max_normal,
            scale: 1.0,
            overflows: 0,
        })
    }

    /// The scale the next quantization uses (elements are `x / scale`).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Records one step's amax and recomputes the scale from the history:
    /// the amax enters the history (the oldest leaves once it is full), and
    /// the scale becomes `max(history) · 2^margin / max_normal` when that
    /// is finite and > 0 (else it stays). A NaN or ±∞ amax is not recorded
    /// and changes nothing but [`Self::overflows`]; a negative one counts
    /// as its magnitude.
    pub fn record(&mut self, amax: f32) {
        if !amax.is_finite() {
            self.overflows = self.overflows.saturating_add(1);
            return;
        }
        self.history[self.next] = amax.abs();
        self.next = (self.next + 1) % self.history.len();
        self.filled = (self.filled + 1).min(self.history.len());
        let m = self.history[..self.filled]
            .iter()
            .fold(0.0f32, |m, &a| m.max(a));
        if let Some(s) = scale_from_amax(m, self.margin, self.max_normal) {
            self.scale = s;
        }
    }

    /// The recorded amaxes, oldest first.
    pub fn history(&self) -> Vec<f32> {
        let len = self.history.len();
        let start = (self.next + len - self.filled) % len;
        (0..self.filled)
            .map(|i| self.history[(start + i) % len])
            .collect()
    }

    /// How many non-finite amaxes were seen (and not recorded).
    pub fn overflows(&self) -> u64 {
        self.overflows
    }
}

/// The scale state of one tensor of a layer.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
enum TensorScale {
    Delayed(DelayedScaling),
    Current { margin: i32, max_normal: f32 },
    Unscaled,
}

impl TensorScale {
    fn new(scaling: Fp8Scaling, max_normal: f32) -> Result<Self, Error> {
        Ok(match scaling {
            Fp8Scaling::Delayed { history, margin } => {
                Self::Delayed(DelayedScaling::new(history, margin, max_normal)?)
            }
            Fp8Scaling::Current { margin } => Self::Current { margin, max_normal },
            Fp8Scaling::Unscaled => Self::Unscaled,
        })
    }

    /// The scale for a tensor whose amax is `amax`, which delayed scaling
    /// then records.
    fn take(&mut self, amax: f32) -> f32 {
        let s = self.peek(amax);
        if let Self::Delayed(d) = self {
            d.record(amax);
        }
        s
    }

    /// The scale [`Self::take`] would give, recording nothing.
    fn peek(&self, amax: f32) -> f32 {
        match self {
            Self::Delayed(d) => d.scale(),
            Self::Current { margin, max_normal } => {
                scale_from_amax(amax, *margin, *max_normal).unwrap_or(1.0)
            }
            Self::Unscaled => 1.0,
        }
    }
}

/// How many gradient values a rounding to a narrow format flushed to zero,
/// and how many it would flush without scaling: kept by FP8 layers for
/// their dY, and usable for any format (`train_mnist` counts its f16 and
/// bf16 activation gradients with it).
///
/// ```
/// use mixprec::amp::fp8::GradFlushStats;
/// let mut st = GradFlushStats::default();
/// // Gradients times a loss scale of 2^10, rounded to f16 (smallest
/// // subnormal 2^-24: at or below 2^-25 goes to zero).
/// let g = [0.0, 2f32.powi(-20), 2f32.powi(-30), 1.0];
/// st.record(&g, 1024.0, 1.0, 2f32.powi(-25));
/// assert_eq!((st.values, st.nonzero, st.flushed_unscaled, st.flushed_scaled), (4, 3, 2, 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GradFlushStats {
    /// Gradient values counted.
    pub values: u64,
    /// Of those, non-zero ones (NaN excluded).
    pub nonzero: u64,
    /// Non-zero values that would round to zero without any scaling.
    pub flushed_unscaled: u64,
    /// Non-zero values that rounded to zero with the scale used.
    pub flushed_scaled: u64,
}

impl GradFlushStats {
    /// Adds another count.
    pub fn add(&mut self, o: &Self) {
        self.values = self.values.saturating_add(o.values);
        self.nonzero = self.nonzero.saturating_add(o.nonzero);
        self.flushed_unscaled = self.flushed_unscaled.saturating_add(o.flushed_unscaled);
        self.flushed_scaled = self.flushed_scaled.saturating_add(o.flushed_scaled);
    }

    /// Counts `g`: a non-zero value flushes without scaling when
    /// `|g / unscale| ≤ half_min`, and with the scale used when
    /// `|g / scale| ≤ half_min` (the quotient the rounding sees;
    /// `half_min` is half the format's smallest subnormal, which round to
    /// nearest even sends to zero).
    pub fn record(&mut self, g: &[f32], unscale: f32, scale: f32, half_min: f32) {
        let (mut nonzero, mut unscaled, mut scaled) = (0u64, 0u64, 0u64);
        for &v in g {
            let live = v != 0.0 && !v.is_nan();
            nonzero += u64::from(live);
            unscaled += u64::from(live && (v / unscale).abs() <= half_min);
            scaled += u64::from(live && (v / scale).abs() <= half_min);
        }
        self.values = self.values.saturating_add(g.len() as u64);
        self.nonzero = self.nonzero.saturating_add(nonzero);
        self.flushed_unscaled = self.flushed_unscaled.saturating_add(unscaled);
        self.flushed_scaled = self.flushed_scaled.saturating_add(scaled);
    }
}

/// A layer's FP8 state: the recipe, the three tensors' scales, the FP8
/// input and weight saved by the forward pass, and gradient statistics.
///
/// With the `serde` feature it serializes its recipe, the three scaling
/// states and the statistics (the FP8 copies are per-step scratch); loading
/// checks that the states fit the recipe.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "serde_impl::Fp8StateData"))]
pub(crate) struct Fp8State {
    recipe: Fp8Recipe,
    x: TensorScale,
    w: TensorScale,
    dy: TensorScale,
    /// X (batch × in, K padded) and W (out × in) as quantized by the
    /// last forward pass, for the backward products.
    #[cfg_attr(feature = "serde", serde(skip))]
    saved_x: Option<BlockScaled<F8E4M3>>,
    #[cfg_attr(feature = "serde", serde(skip))]
    saved_w: Option<BlockScaled<F8E4M3>>,
    pub(crate) stats: GradFlushStats,
}

/// The FP8 X and W of a forward pass.
pub(crate) type Fp8Operands = (BlockScaled<F8E4M3>, BlockScaled<F8E4M3>);

/// K of every FP8 operand is padded with zeros to a multiple of 16; the
/// scaling block is then the largest of 128, 32 and 16 that divides the
/// padded K (the scales are all equal, so the block only sets how often
/// the contract's `fma(p, s_a·s_b, acc)` runs: a fixed function of K, so
/// results do not depend on anything else).
fn padded_k_and_block(k: usize) -> (usize, usize) {
    let kp = k.next_multiple_of(16).max(16);
    let block = [128, 32, 16]
        .into_iter()
        .find(|b| kp.is_multiple_of(*b))
        .unwrap_or(16);
    (kp, block)
}

/// The largest |x| (NaN when any value is NaN or ±∞).
fn amax(x: &[f32]) -> f32 {
    crate::block_scaled::to_amax(amax_bits(x, crate::cpu::has_avx2_fma_f16c()))
}

/// `x` (`lines × k`, any strides) as FP8 elements `x / s` (nearest even,
/// saturating finite values; ±∞ and NaN become NaN) with K padded with
/// zeros ([`padded_k_and_block`]), one scale `s` for the whole tensor.
/// `finite`: the tensor holds no NaN or ±∞ (its amax, which the caller has
/// computed, is not NaN).
fn quantize_scaled<T: FloatElement>(
    x: MatRef<'_, f32>,
    s: f32,
    finite: bool,
) -> Result<BlockScaled<T>, Error> {
    let (lines, k) = (x.rows(), x.cols());
    let (kp, block) = padded_k_and_block(k);
    let n = crate::error::checked_numel(&[lines, kp])?;
    let simd = crate::cpu::has_avx2_fma_f16c();
    let mut data = vec![T::zeroed(); n];
    let blocks = n / block;
    let (scales, recips) = (vec![s; blocks], vec![block_reciprocal(s); blocks]);
    let mut scratch = Vec::new();
    let contiguous = x.col_stride() == 1 && k == kp && x.row_stride() == k;
    let buf;
    let src: &[f32] = if contiguous && finite {
        // Contiguous, finite, nothing to pad: straight from the caller's
        // values.
        &x.as_slice()[..n]
    } else {
        let mut padded = vec![0.0f32; n];
        for l in 0..lines {
            let row = &mut padded[l * kp..l * kp + k];
            match x.row(l) {
                Ok(r) if r.col_stride() == 1 => row.copy_from_slice(&r.as_slice()[..k]),
                _ => row
                    .iter_mut()
                    .enumerate()
                    .for_each(|(kk, v)| *v = x.at(l, kk)),
            }
            if !finite {
                // ±∞ becomes NaN: saturating would turn an overflow into a
                // finite value and hide it from the loss scaler.
                for v in row.iter_mut().filter(|v| v.is_infinite()) {
                    *v = f32::NAN;
                }
            }
        }
        buf = padded;
        &buf
    };
    narrow_scaled_blocks(
        src,
        block,
        &scales,
        &recips,
        &mut data,
        &mut scratch,
        simd,
        false,
        // The scale is the delayed-scaling history's, not this data's.
        false,
    );
    BlockScaled::from_parts(lines, kp, block, 1, data, scales)
}

/// The transpose of a per-tensor-scaled FP8 matrix whose real width is
/// `k` (its padding dropped, the new K padded): the same elements, moved
/// in 16 × 16 tiles.
fn transpose<T: FloatElement>(m: &BlockScaled<T>, k: usize) -> Result<BlockScaled<T>, Error> {
    let (lines, kp) = (m.lines(), m.k());
    let s = m.scales().first().copied().unwrap_or(1.0);
    let (lp, block) = padded_k_and_block(lines);
    let n = crate::error::checked_numel(&[k, lp])?;
    let mut data = vec![T::zeroed(); n];
    let src = m.data();
    const TILE: usize = 16;
    for l0 in (0..lines).step_by(TILE) {
        for k0 in (0..k).step_by(TILE) {
            for l in l0..(l0 + TILE).min(lines) {
                for kk in k0..(k0 + TILE).min(k) {
                    data[kk * lp + l] = src[l * kp + kk];
                }
            }
        }
    }
    BlockScaled::from_parts(k, lp, block, 1, data, vec![s; n / block])
}

impl Fp8State {
    pub(crate) fn new(recipe: Fp8Recipe) -> Result<Self, Error> {
        recipe.validate()?;
        let (e4, e5) = (F8E4M3::MAX.to_f32(), F8E5M2::MAX.to_f32());
        let dy_max = match recipe.format {
            Fp8Format::Hybrid => e5,
            Fp8Format::E4M3 => e4,
        };
        Ok(Self {
            recipe,
            x: TensorScale::new(recipe.scaling, e4)?,
            w: TensorScale::new(recipe.scaling, e4)?,
            dy: TensorScale::new(recipe.scaling, dy_max)?,
            saved_x: None,
            saved_w: None,
            stats: GradFlushStats::default(),
        })
    }

    pub(crate) fn recipe(&self) -> Fp8Recipe {
        self.recipe
    }

    /// The current scales of X, W and dY (what the next step uses under
    /// delayed scaling; 1 for unscaled; for current scaling, the last
    /// tensor's is not kept, so 1).
    pub(crate) fn scales(&self) -> [f32; 3] {
        let of = |t: &TensorScale| match t {
            TensorScale::Delayed(d) => d.scale(),
            _ => 1.0,
        };
        [of(&self.x), of(&self.w), of(&self.dy)]
    }

    /// Bytes of the FP8 copies held for the backward pass.
    pub(crate) fn saved_bytes(&self) -> usize {
        self.saved_x.as_ref().map_or(0, |m| m.data().len())
            + self.saved_w.as_ref().map_or(0, |m| m.data().len())
    }

    /// The scales of X and W for a training step, their amaxes recorded,
    /// and whether each tensor is finite.
    pub(crate) fn forward_scales(&mut self, x: &[f32], w: &[f32]) -> [(f32, bool); 2] {
        let (ax, aw) = (amax(x), amax(w));
        [
            (self.x.take(ax), !ax.is_nan()),
            (self.w.take(aw), !aw.is_nan()),
        ]
    }

    /// As [`Self::forward_scales`] for inference (nothing recorded).
    pub(crate) fn inference_scales(&self, x: &[f32], w: &[f32]) -> [(f32, bool); 2] {
        let (ax, aw) = (amax(x), amax(w));
        [
            (self.x.peek(ax), !ax.is_nan()),
            (self.w.peek(aw), !aw.is_nan()),
        ]
    }

    /// `x·Wᵀ` (`batch × out`) with `epilogue` into `out`, on X and W
    /// quantized with the scales (and finiteness) of
    /// [`Self::forward_scales`]; returns the FP8 operands.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_product(
        x: &[f32],
        w: &[f32],
        (batch, i, o): (usize, usize, usize),
        [(sx, fx), (sw, fw)]: [(f32, bool); 2],
        epilogue: &Epilogue<'_>,
        par: Parallelism,
        out: &mut [f32],
    ) -> Result<Fp8Operands, Error> {
        let xq = quantize_scaled::<F8E4M3>(MatRef::from_row_major(x, batch, i)?, sx, fx)?;
        let wq = quantize_scaled::<F8E4M3>(MatRef::from_row_major(w, o, i)?, sw, fw)?;
        block_gemm(
            &xq,
            &wq,
            MatMut::from_row_major(out, batch, o)?,
            epilogue,
            par,
        )?;
        Ok((xq, wq))
    }

    /// Keeps the forward pass's FP8 operands for [`Self::backward`].
    pub(crate) fn save(&mut self, (xq, wq): Fp8Operands) {
        self.saved_x = Some(xq);
        self.saved_w = Some(wq);
    }

    /// The weight and input gradients from `dz` (`batch × out`, the
    /// gradient at the pre-activation) on FP8 operands: `grad_w` (`out ×
    /// in`) = dZᵀ·X, returns dX (`batch × in`) = dZ·W.
    pub(crate) fn backward(
        &mut self,
        dz: &[f32],
        (batch, i, o): (usize, usize, usize),
        grad_w: &mut [f32],
        par: Parallelism,
    ) -> Result<Vec<f32>, Error> {
        let (Some(xq), Some(wq)) = (self.saved_x.as_ref(), self.saved_w.as_ref()) else {
            return Err(Error::InvalidParameter {
                name: "Linear::backward",
                value: "no FP8 forward pass saved".into(),
                requirement: "a training forward pass first",
            });
        };
        let a = amax(dz);
        let s = self.dy.take(a);
        let dzv = MatRef::from_row_major(dz, batch, o)?;
        let mut dx = vec![0.0f32; crate::error::checked_numel(&[batch, i])?];
        // X and W transposed (K = batch for dW, K = out for dX): the same
        // FP8 elements, no second rounding.
        let xt = transpose(xq, i)?;
        let wt = transpose(wq, i)?;
        macro_rules! products {
            ($t:ty) => {{
                let dzq = quantize_scaled::<$t>(dzv, s, !a.is_nan())?;
                let dzt = transpose(&dzq, o)?;
                let half_min = <$t>::MIN_POSITIVE_SUBNORMAL.to_f32() / 2.0;
                self.stats.record(dz, 1.0, s, half_min);
                block_gemm(
                    &dzt,
                    &xt,
                    MatMut::from_row_major(grad_w, o, i)?,
                    &Epilogue::new(),
                    par,
                )?;
                block_gemm(
                    &dzq,
                    &wt,
                    MatMut::from_row_major(&mut dx, batch, i)?,
                    &Epilogue::new(),
                    par,
                )?;
            }};
        }
        match self.recipe.format {
            Fp8Format::Hybrid => products!(F8E5M2),
            Fp8Format::E4M3 => products!(F8E4M3),
        }
        Ok(dx)
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::{DelayedScaling, Fp8Recipe, Fp8State, GradFlushStats, TensorScale};
    use crate::Error;

    /// The serialized fields of [`DelayedScaling`], checked on the way in.
    #[derive(serde::Deserialize)]
    pub(super) struct DelayedScalingState {
        history: Vec<f32>,
        next: usize,
        filled: usize,
        margin: i32,
        max_normal: f32,
        scale: f32,
        overflows: u64,
    }

    impl TryFrom<DelayedScalingState> for DelayedScaling {
        type Error = Error;

        fn try_from(s: DelayedScalingState) -> Result<Self, Error> {
            let mut d = DelayedScaling::new(s.history.len(), s.margin, s.max_normal)?;
            let len = s.history.len();
            let bad = |what: &'static str, value: String| Error::InvalidParameter {
                name: "DelayedScaling state",
                value,
                requirement: what,
            };
            if s.next >= len || s.filled > len {
                return Err(bad(
                    "next < history length and filled <= history length",
                    format!("next {}, filled {}, length {len}", s.next, s.filled),
                ));
            }
            if let Some(a) = s.history.iter().find(|a| !(a.is_finite() && **a >= 0.0)) {
                return Err(bad("amaxes finite and >= 0", format!("{a:e}")));
            }
            if !(s.scale.is_finite() && s.scale > 0.0) {
                return Err(bad("a scale finite and > 0", format!("{:e}", s.scale)));
            }
            d.history = s.history;
            d.next = s.next;
            d.filled = s.filled;
            d.scale = s.scale;
            d.overflows = s.overflows;
            Ok(d)
        }
    }

    /// The serialized fields of [`Fp8State`].
    #[derive(serde::Deserialize)]
    pub(super) struct Fp8StateData {
        recipe: Fp8Recipe,
        x: TensorScale,
        w: TensorScale,
        dy: TensorScale,
        stats: GradFlushStats,
    }

    impl TryFrom<Fp8StateData> for Fp8State {
        type Error = Error;

        fn try_from(s: Fp8StateData) -> Result<Self, Error> {
            let mut state = Fp8State::new(s.recipe)?;
            // Each state must be the kind the recipe makes, with its
            // parameters (history length, margin, max normal).
            let fits = |fresh: &TensorScale, got: &TensorScale| match (fresh, got) {
                (TensorScale::Delayed(a), TensorScale::Delayed(b)) => {
                    a.history.len() == b.history.len()
                        && a.margin == b.margin
                        && a.max_normal == b.max_normal
                }
                (a, b) => a == b,
            };
            if !(fits(&state.x, &s.x) && fits(&state.w, &s.w) && fits(&state.dy, &s.dy)) {
                return Err(Error::InvalidParameter {
                    name: "FP8 layer state",
                    value: format!("{:?}", s.recipe),
                    requirement: "scaling states made by this recipe",
                });
            }
            (state.x, state.w, state.dy, state.stats) = (s.x, s.w, s.dy, s.stats);
            Ok(state)
        }
    }
}

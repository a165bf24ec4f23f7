//! Mixed-precision training: the three techniques of Micikevicius et al.
//! (2018) — an f32 master copy of the weights, loss scaling, and f16/bf16
//! products accumulated in f32 — packaged for a downstream crate.
//!
//! * [`Precision`]: `F32`, `Bf16` (no scaling needed: f32's exponent range),
//!   `F16` with a dynamic [`LossScaler`], and `F16NoScale` (kept on purpose,
//!   to show small gradients vanish).
//! * [`LossScaler`]: PyTorch `GradScaler` semantics; [`has_non_finite`] is
//!   its one-pass overflow check (AVX2 where available).
//! * [`Linear`], [`Mlp`], [`softmax_cross_entropy`]: explicit forward and
//!   backward passes through the GEMM engine; [`Mlp::infer`] for inference
//!   on a shared model.
//! * [`Loss`]: cross-entropy (`u32` labels), mean squared error, and
//!   knowledge distillation, each with its gradient.
//! * [`Sgd`], [`AdamW`]: optimizers on the f32 masters.
//! * [`train_step`]: one step of the whole recipe.
//!
//! ```
//! use mixprec::amp::{train_step, Loss, Mlp, Precision, Sgd};
//! use mixprec::gemm::{Activation, Parallelism};
//! use mixprec::{convert::StochasticRng, f16};
//! let mut rng = StochasticRng::new(1);
//! let mut mlp = Mlp::<f16>::new(&[4, 8, 3], Activation::Relu, 1.0, &mut rng)?;
//! let mut opt = Sgd::new(0.1, 0.9, 0.0)?;
//! let mut scaler = Precision::F16.scaler();
//! let x: Vec<f16> = (0..8).map(|i| f16::from_f32(i as f32 * 0.1)).collect();
//! let labels = Loss::CrossEntropy { labels: &[0, 2] };
//! let out = train_step(&mut mlp, &mut opt, &mut scaler, &x, labels, 1.0, Parallelism::Serial)?;
//! assert!(out.loss.is_finite() && !out.skipped);
//! # Ok::<(), mixprec::Error>(())
//! ```

pub mod fp8;
mod layers;
mod loss;
mod optim;
mod scaler;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;

pub use layers::{softmax_cross_entropy, Linear, WorkingRounding};
pub use loss::Loss;
pub use optim::{AdamW, Optimizer, Sgd};
pub use scaler::{LossScaler, ScalerState};

use crate::convert::narrow;
use crate::convert::StochasticRng;
use crate::dtype::FloatElement;
use crate::gemm::{Activation, Parallelism};
use crate::Error;

/// A training precision policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// bf16 weights and activations, f32 masters and accumulation; no loss
    /// scaling (bf16 has f32's exponent range).
    Bf16,
    /// f16 weights and activations, f32 masters and accumulation, dynamic
    /// loss scaling.
    F16,
    /// f16 without loss scaling: small gradients flush to zero.
    F16NoScale,
    /// FP8 GEMMs ([`fp8`]), HYBRID formats (E4M3 forward, E5M2
    /// gradients), delayed scaling (history 1024, margin 0); f32
    /// activations between layers and f32 masters.
    Fp8HybridDelayed,
    /// As `Fp8HybridDelayed` with current scaling.
    Fp8HybridCurrent,
    /// FP8 GEMMs with E4M3 for every tensor, delayed scaling.
    Fp8E4M3Delayed,
    /// FP8 GEMMs with E4M3 for every tensor and no scaling at all (scale 1):
    /// gradients below E4M3's smallest subnormal, 2^-9, flush to zero.
    Fp8E4M3NoScale,
}

impl Precision {
    /// All policies, in table order.
    pub const ALL: [Precision; 8] = [
        Precision::F32,
        Precision::Bf16,
        Precision::F16,
        Precision::F16NoScale,
        Precision::Fp8HybridDelayed,
        Precision::Fp8HybridCurrent,
        Precision::Fp8E4M3Delayed,
        Precision::Fp8E4M3NoScale,
    ];

    /// The command-line name: `f32`, `bf16`, `f16`, `f16-noscale`,
    /// `fp8-hybrid-delayed`, `fp8-hybrid-current`, `fp8-e4m3`,
    /// `fp8-e4m3-noscale`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::F16NoScale => "f16-noscale",
            Precision::Fp8HybridDelayed => "fp8-hybrid-delayed",
            Precision::Fp8HybridCurrent => "fp8-hybrid-current",
            Precision::Fp8E4M3Delayed => "fp8-e4m3",
            Precision::Fp8E4M3NoScale => "fp8-e4m3-noscale",
        }
    }

    /// The FP8 recipe of the FP8 policies (their models are `Mlp<f32>`
    /// with [`Mlp::set_fp8`]).
    pub fn fp8_recipe(self) -> Option<fp8::Fp8Recipe> {
        use fp8::{Fp8Format, Fp8Recipe, Fp8Scaling};
        let (format, scaling) = match self {
            Precision::Fp8HybridDelayed => (Fp8Format::Hybrid, Fp8Scaling::DELAYED),
            Precision::Fp8HybridCurrent => (Fp8Format::Hybrid, Fp8Scaling::CURRENT),
            Precision::Fp8E4M3Delayed => (Fp8Format::E4M3, Fp8Scaling::DELAYED),
            Precision::Fp8E4M3NoScale => (Fp8Format::E4M3, Fp8Scaling::Unscaled),
            _ => return None,
        };
        Some(Fp8Recipe { format, scaling })
    }

    /// The smallest positive value of the format the policy's activation
    /// gradients are rounded to (f32, bf16, f16, E5M2 or E4M3): gradients
    /// at or below half of it flush to zero.
    pub fn grad_min_subnormal(self) -> f32 {
        use crate::dtype::{F8E4M3, F8E5M2};
        match self {
            Precision::F32 => f32::from_bits(1),
            Precision::Bf16 => crate::bf16::from_bits(1).to_f32(),
            Precision::F16 | Precision::F16NoScale => crate::f16::from_bits(1).to_f32(),
            Precision::Fp8HybridDelayed | Precision::Fp8HybridCurrent => {
                F8E5M2::MIN_POSITIVE_SUBNORMAL.to_f32()
            }
            Precision::Fp8E4M3Delayed | Precision::Fp8E4M3NoScale => {
                F8E4M3::MIN_POSITIVE_SUBNORMAL.to_f32()
            }
        }
    }

    /// The name of the format the policy's activation gradients are
    /// rounded to: `f32`, `bf16`, `f16`, `E5M2` or `E4M3`.
    pub fn grad_format(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 | Precision::F16NoScale => "f16",
            Precision::Fp8HybridDelayed | Precision::Fp8HybridCurrent => "E5M2",
            Precision::Fp8E4M3Delayed | Precision::Fp8E4M3NoScale => "E4M3",
        }
    }

    /// Where the format of the policy's activation gradients overflows:
    /// the smallest magnitude that rounds to ±∞ (f32, bf16, f16, E5M2:
    /// the max plus half an ulp of it) or, for E4M3, which has no ∞, the
    /// smallest f32 that no longer rounds to its max 448 (the f32 after
    /// 464: 464 itself ties to 448, whose significand is even).
    pub fn grad_overflow(self) -> f32 {
        match self {
            Precision::F32 => f32::INFINITY,
            Precision::Bf16 => 3.3961776e38, // (2 − 2^-8) · 2^127
            Precision::F16 | Precision::F16NoScale => 65520.0,
            Precision::Fp8HybridDelayed | Precision::Fp8HybridCurrent => 61440.0,
            Precision::Fp8E4M3Delayed | Precision::Fp8E4M3NoScale => f32::from_bits(0x43E8_0001),
        }
    }

    /// The loss scaler the policy uses: dynamic for `F16`, a fixed scale of
    /// 1 (overflow still skips the step) otherwise.
    pub fn scaler(self) -> LossScaler {
        match self {
            Precision::F16 => LossScaler::dynamic(),
            _ => LossScaler::fixed(1.0).unwrap_or_else(|_| LossScaler::dynamic()),
        }
    }

    /// Bytes of one value of the precision the products read (FP8: 1).
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 | Precision::F16 | Precision::F16NoScale => 2,
            _ => 1,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::InvalidParameter {
                name: "precision",
                value: format!("{s:?}"),
                requirement: "one of f32, bf16, f16, f16-noscale, fp8-hybrid-delayed, fp8-hybrid-current, fp8-e4m3, fp8-e4m3-noscale",
            })
    }
}

/// True when any value is inf or NaN: one pass, AVX2 where available.
///
/// ```
/// assert!(mixprec::amp::has_non_finite(&[1.0, f32::NAN]));
/// assert!(!mixprec::amp::has_non_finite(&[1.0, f32::MAX]));
/// ```
pub fn has_non_finite(x: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2_fma_f16c() {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { x86_avx2::has_non_finite(x) };
    }
    x.iter().any(|v| !v.is_finite())
}

/// A multilayer perceptron of [`Linear`] layers: the hidden layers use one
/// activation, the last layer none (it produces logits).
///
/// With the `serde` feature an `Mlp` serializes its layers (f32 masters
/// and working copies) and its rounding state, everything a resumed run
/// needs to continue bit-identically; deserializing checks the shapes.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "serde_impl::MlpState<T>",
        bound(
            serialize = "T: serde::Serialize",
            deserialize = "T: serde::Deserialize<'de> + FloatElement"
        )
    )
)]
pub struct Mlp<T> {
    layers: Vec<Linear<T>>,
    rounding: WorkingRounding,
}

impl<T: FloatElement> Mlp<T> {
    /// Layers of widths `sizes` (`[in, hidden…, out]`), PyTorch's default
    /// initialisation times `init_scale`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for fewer than two sizes, and the errors
    /// of [`Linear::new`] (a zero width; an `init_scale` that is not
    /// finite and > 0, or whose initial weights overflow `T`).
    pub fn new(
        sizes: &[usize],
        activation: Activation,
        init_scale: f32,
        rng: &mut StochasticRng,
    ) -> Result<Self, Error> {
        if sizes.len() < 2 {
            return Err(Error::InvalidParameter {
                name: "Mlp sizes",
                value: format!("{sizes:?}"),
                requirement: "at least [in, out]",
            });
        }
        let last = sizes.len() - 2;
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                Linear::new(
                    w[0],
                    w[1],
                    if i == last {
                        Activation::Identity
                    } else {
                        activation
                    },
                    init_scale,
                    rng,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            layers,
            rounding: WorkingRounding::NearestEven,
        })
    }

    /// An MLP of these layers, in order (for example built with
    /// [`Linear::from_weights`] from loaded tensors).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for no layers; [`Error::ShapeMismatch`]
    /// when a layer's input width is not the previous layer's output width.
    pub fn from_layers(layers: Vec<Linear<T>>) -> Result<Self, Error> {
        if layers.is_empty() {
            return Err(Error::InvalidParameter {
                name: "Mlp layers",
                value: "none".into(),
                requirement: "at least one layer",
            });
        }
        for pair in layers.windows(2) {
            if pair[0].out_features() != pair[1].in_features() {
                return Err(Error::ShapeMismatch {
                    what: "Mlp layers (each layer's output feeds the next)",
                    left: vec![pair[0].out_features(), pair[0].in_features()],
                    right: vec![pair[1].out_features(), pair[1].in_features()],
                });
            }
        }
        Ok(Self {
            layers,
            rounding: WorkingRounding::NearestEven,
        })
    }

    /// Use stochastic rounding when refreshing the working copies.
    pub fn with_rounding(mut self, rounding: WorkingRounding) -> Self {
        self.rounding = rounding;
        self
    }

    /// The layers.
    pub fn layers(&self) -> &[Linear<T>] {
        &self.layers
    }

    /// Mutable layers.
    pub fn layers_mut(&mut self) -> &mut [Linear<T>] {
        &mut self.layers
    }

    /// The number of rows of `x`, checked to be whole.
    fn batch_of(&self, x: &[T], what: &'static str) -> Result<usize, Error> {
        let width = self.layers[0].in_features();
        let batch = x.len() / width;
        if batch * width != x.len() {
            return Err(Error::LengthMismatch {
                what,
                expected: batch * width,
                actual: x.len(),
            });
        }
        Ok(batch)
    }

    /// Logits for `x` (`[batch, in]`), saving activations for
    /// [`Mlp::backward`].
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `x.len()` is not a multiple of `in`.
    pub fn forward(&mut self, x: &[T], par: Parallelism) -> Result<Vec<T>, Error> {
        let batch = self.batch_of(x, "Mlp::forward (x = batch × in)")?;
        let mut h = x.to_vec();
        for layer in &mut self.layers {
            h = layer.forward(&h, batch, par)?;
        }
        Ok(h)
    }

    /// Logits for `x` (`[batch, in]`) without saving anything: inference
    /// on a shared model (`&self`, so one model can serve several threads).
    /// The same bits as [`Mlp::forward`].
    ///
    /// ```
    /// use mixprec::amp::Mlp;
    /// use mixprec::gemm::{Activation, Parallelism};
    /// use mixprec::{bf16, convert::StochasticRng};
    /// let mlp = Mlp::<bf16>::new(&[3, 4, 2], Activation::Relu, 1.0, &mut StochasticRng::new(7))?;
    /// let x = [bf16::from_f32(0.5); 6]; // a batch of 2
    /// let logits = mlp.infer(&x, Parallelism::Serial)?;
    /// assert_eq!(logits.len(), 4);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `x.len()` is not a multiple of `in`.
    pub fn infer(&self, x: &[T], par: Parallelism) -> Result<Vec<T>, Error> {
        let batch = self.batch_of(x, "Mlp::infer (x = batch × in)")?;
        let mut h = x.to_vec();
        for layer in &self.layers {
            h = layer.infer(&h, batch, par)?;
        }
        Ok(h)
    }

    /// Back-propagates `dlogits`; `observe` sees every activation gradient
    /// in f32 (times the loss scale) before it is rounded to the working type.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `dlogits` is not `batch × out` of the
    /// last forward pass.
    pub fn backward(
        &mut self,
        dlogits: &[T],
        par: Parallelism,
        observe: &mut dyn FnMut(&[f32]),
    ) -> Result<(), Error> {
        let mut g = dlogits.to_vec();
        for (idx, layer) in self.layers.iter_mut().enumerate().rev() {
            let dx = layer.backward(&g, par)?;
            if idx > 0 {
                observe(&dx);
                g = vec![T::zeroed(); dx.len()];
                narrow(&dx, &mut g)?;
            }
        }
        Ok(())
    }

    /// Rounds every layer's masters into its working copy.
    ///
    /// # Errors
    /// As [`Linear::refresh`].
    pub fn refresh(&mut self) -> Result<(), Error> {
        let mut rounding = std::mem::replace(&mut self.rounding, WorkingRounding::NearestEven);
        let result = self
            .layers
            .iter_mut()
            .try_for_each(|l| l.refresh(&mut rounding));
        self.rounding = rounding;
        result
    }

    /// Runs every layer's products on scaled FP8 operands by `recipe`
    /// ([`fp8`]), or with `None` in the working type again.
    ///
    /// # Errors
    /// As [`Linear::set_fp8`].
    pub fn set_fp8(&mut self, recipe: Option<fp8::Fp8Recipe>) -> Result<(), Error> {
        if let Some(r) = recipe {
            r.validate()?;
        }
        self.layers.iter_mut().try_for_each(|l| l.set_fp8(recipe))
    }

    /// The FP8 gradient statistics of all layers together (`None` unless
    /// the model runs on FP8).
    pub fn fp8_grad_stats(&self) -> Option<fp8::GradFlushStats> {
        self.layers
            .iter()
            .try_fold(fp8::GradFlushStats::default(), |mut acc, l| {
                acc.add(&l.fp8_grad_stats()?);
                Some(acc)
            })
    }

    /// Bytes of the working weights and the activations kept for backward,
    /// over all layers ([`Linear::footprint_bytes`]).
    pub fn footprint_bytes(&self) -> usize {
        self.layers.iter().map(Linear::footprint_bytes).sum()
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.in_features() * l.out_features() + l.out_features())
            .sum()
    }
}

/// What one [`train_step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// The batch-mean loss (times the loss weight), in f32.
    pub loss: f32,
    /// True when the gradients overflowed and the update was skipped.
    pub skipped: bool,
    /// The loss scale used for this step.
    pub scale: f32,
}

/// One mixed-precision training step: forward in the working type, the
/// [`Loss`] (computed in f64, its gradient in f32),
/// `dL/doutputs × loss_weight × scale` rounded to the working type, backward (f32 accumulation, f32 weight gradients), unscale and
/// overflow check, scaler update, and — unless the step overflowed — the
/// optimizer step on the f32 masters and a refresh of the working copies.
///
/// `loss_weight` multiplies the loss (1.0 normally; a small weight models a
/// weak learning signal, as an auxiliary loss term has).
///
/// # Errors
/// * [`Error::InvalidParameter`] unless `loss_weight` is finite and > 0;
/// * [`Error::LengthMismatch`] when `x` is not a whole number of rows
///   ([`Mlp::forward`]) or the loss's labels or targets do not match them;
/// * [`Error::EmptyDimension`] for an empty batch, and the other errors of
///   [`Loss::evaluate`] (a label past the classes, a bad temperature);
/// * the errors of the optimizer's step.
///
/// Every input check fails before the backward pass, so the masters, the
/// optimizer state and the scaler are unchanged by an error.
#[allow(clippy::too_many_arguments)]
pub fn train_step<T: FloatElement, O: Optimizer + ?Sized>(
    mlp: &mut Mlp<T>,
    opt: &mut O,
    scaler: &mut LossScaler,
    x: &[T],
    loss: Loss<'_>,
    loss_weight: f32,
    par: Parallelism,
) -> Result<StepOutcome, Error> {
    train_step_observed(mlp, opt, scaler, x, loss, loss_weight, par, &mut |_| {})
}

/// [`train_step`] with an observer of the (scaled, f32) activation gradients.
///
/// # Errors
/// As [`train_step`].
#[allow(clippy::too_many_arguments)]
pub fn train_step_observed<T: FloatElement, O: Optimizer + ?Sized>(
    mlp: &mut Mlp<T>,
    opt: &mut O,
    scaler: &mut LossScaler,
    x: &[T],
    loss: Loss<'_>,
    loss_weight: f32,
    par: Parallelism,
    observe: &mut dyn FnMut(&[f32]),
) -> Result<StepOutcome, Error> {
    if !(loss_weight.is_finite() && loss_weight > 0.0) {
        return Err(Error::InvalidParameter {
            name: "loss_weight",
            value: format!("{loss_weight:e}"),
            requirement: "finite and > 0",
        });
    }
    // The forward pass checks `x`, the loss checks the batch against it.
    let width = mlp.layers.last().map_or(0, |l| l.out_features());
    let outputs = mlp.forward(x, par)?;
    let (loss, mut dlogits) = loss.evaluate(&outputs, width)?;
    let scale = scaler.scale();
    let factor = loss_weight * scale;
    for g in dlogits.iter_mut() {
        *g *= factor;
    }
    observe(&dlogits);
    let mut dlog_t = vec![T::zeroed(); dlogits.len()];
    narrow(&dlogits, &mut dlog_t)?;
    mlp.backward(&dlog_t, par, observe)?;
    let mut found_inf = false;
    for layer in &mut mlp.layers {
        let (gw, gb) = layer.grads_mut();
        found_inf |= scaler.unscale(gw);
        found_inf |= scaler.unscale(gb);
    }
    let step = scaler.update(found_inf);
    if step {
        let mut slot = 0;
        for layer in &mut mlp.layers {
            for (p, g) in layer.params_and_grads() {
                opt.step(slot, p, g)?;
                slot += 1;
            }
        }
        opt.finish_step();
        mlp.refresh()?;
    }
    Ok(StepOutcome {
        loss: loss * loss_weight,
        skipped: !step,
        scale,
    })
}

/// Magnitudes of activation gradients in log2 buckets, and how many would
/// be lost in the gradients' format (f16 with [`GradHistogram::add`], any
/// with [`GradHistogram::add_in`]): rounded to zero without scaling, or
/// with the scale given.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GradHistogram {
    /// `counts[i]` holds values with `floor(log2 |g|) == MIN_LOG2 + i`.
    pub counts: Vec<u64>,
    /// Exact zeros.
    pub zeros: u64,
    /// All values seen.
    pub total: u64,
    /// Non-zero values that round to zero in the format unscaled (|g| at
    /// most half its smallest subnormal: 2^-25 for f16).
    pub lost_unscaled: u64,
    /// Non-zero values that round to zero in the format times the scale.
    pub lost_scaled: u64,
    /// Values that overflow the format times the scale (|g·s| ≥ 65520
    /// for f16).
    pub overflow_scaled: u64,
}

impl Default for GradHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; (Self::MAX_LOG2 - Self::MIN_LOG2 + 1) as usize],
            zeros: 0,
            total: 0,
            lost_unscaled: 0,
            lost_scaled: 0,
            overflow_scaled: 0,
        }
    }
}

impl GradHistogram {
    /// Lowest bucket (values below land in it).
    pub const MIN_LOG2: i32 = -40;
    /// Highest bucket (values above land in it).
    pub const MAX_LOG2: i32 = 16;

    /// Adds true (unscaled) gradient values, judged in f16 against
    /// `scale`: [`Self::add_in`] with f16's smallest subnormal (2^-24) and
    /// its overflow threshold (65520).
    pub fn add(&mut self, grads: &[f32], scale: f32) {
        self.add_in(grads, scale, 2f32.powi(-24), 65520.0);
    }

    /// Adds true (unscaled) gradient values, judged in the format whose
    /// smallest positive value is `min_subnormal` (values at or below half
    /// of it are lost to zero) and whose values round to ±∞ or saturate
    /// from `overflow` up ([`Precision::grad_min_subnormal`] and
    /// [`Precision::grad_overflow`] give both for a policy's gradients).
    /// (If `counts` was given another length by hand, it is first reset to
    /// the right number of zeroed buckets.)
    pub fn add_in(&mut self, grads: &[f32], scale: f32, min_subnormal: f32, overflow: f32) {
        let tiny = min_subnormal / 2.0;
        let buckets = (Self::MAX_LOG2 - Self::MIN_LOG2 + 1) as usize;
        if self.counts.len() != buckets {
            self.counts = vec![0; buckets];
        }
        for &g in grads {
            self.total = self.total.saturating_add(1);
            let a = g.abs();
            if a == 0.0 || !a.is_finite() {
                self.zeros = self.zeros.saturating_add(u64::from(a == 0.0));
                continue;
            }
            let b = (a.log2().floor() as i32).clamp(Self::MIN_LOG2, Self::MAX_LOG2);
            let bucket = &mut self.counts[(b - Self::MIN_LOG2) as usize]; // b is clamped
            *bucket = bucket.saturating_add(1);
            self.lost_unscaled = self.lost_unscaled.saturating_add(u64::from(a <= tiny));
            let s = a * scale;
            self.lost_scaled = self.lost_scaled.saturating_add(u64::from(s <= tiny));
            self.overflow_scaled = self
                .overflow_scaled
                .saturating_add(u64::from(s >= overflow));
        }
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::{Linear, Mlp, WorkingRounding};
    use crate::dtype::FloatElement;
    use crate::Error;

    /// The serialized fields of [`Mlp`], checked on the way in.
    #[derive(serde::Deserialize)]
    #[serde(bound(deserialize = "T: serde::Deserialize<'de> + FloatElement"))]
    pub(super) struct MlpState<T> {
        layers: Vec<Linear<T>>,
        rounding: WorkingRounding,
    }

    impl<T: FloatElement> TryFrom<MlpState<T>> for Mlp<T> {
        type Error = Error;

        fn try_from(s: MlpState<T>) -> Result<Self, Error> {
            Ok(Mlp::from_layers(s.layers)?.with_rounding(s.rounding))
        }
    }
}

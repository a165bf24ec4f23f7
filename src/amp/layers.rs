//! Layers with explicit forward and backward passes, in a working precision
//! `T` (f32, f16 or bf16) with f32 master weights, f32 accumulation and f32
//! gradients of the weights.

use super::fp8::{Fp8Operands, Fp8Recipe, Fp8State, GradFlushStats};
use crate::convert::{narrow, narrow_stochastic, widen, StochasticRng};
use crate::dtype::FloatElement;
use crate::gemm::{gemm, Activation, Epilogue, Parallelism};
use crate::tensor::{MatMut, MatRef};
use crate::Error;

/// How master weights are rounded into the working copy after each step.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum WorkingRounding {
    /// Round to nearest, ties to even.
    NearestEven,
    /// Stochastic rounding with this generator's stream (useful for bf16,
    /// whose 8-bit significand swallows small updates).
    Stochastic(StochasticRng),
}

/// `y = activation(x·Wᵀ + b)` for a batch of rows `x`.
///
/// Forward and both backward products run through the GEMM engine with f32
/// accumulation; the bias and ReLU are applied in its epilogue (GELU is
/// applied after it, since its backward needs the pre-activation).
///
/// With the `serde` feature a layer serializes its shape, activation, f32
/// masters, working copy and FP8 scaling state (amax histories); the
/// gradients and the activations saved for backward are per-step scratch
/// and are not saved.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "serde_impl::LinearState<T>",
        bound(
            serialize = "T: serde::Serialize",
            deserialize = "T: serde::Deserialize<'de> + FloatElement"
        )
    )
)]
pub struct Linear<T> {
    in_features: usize,
    out_features: usize,
    activation: Activation,
    master_w: Vec<f32>,
    master_b: Vec<f32>,
    w: Vec<T>,
    #[cfg_attr(feature = "serde", serde(skip))]
    grad_w: Vec<f32>,
    #[cfg_attr(feature = "serde", serde(skip))]
    grad_b: Vec<f32>,
    #[cfg_attr(feature = "serde", serde(skip))]
    saved_x: Vec<T>,
    #[cfg_attr(feature = "serde", serde(skip))]
    saved: Vec<T>,
    #[cfg_attr(feature = "serde", serde(skip))]
    batch: usize,
    /// FP8 GEMMs ([`super::fp8`]) when set, with their scaling state.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    fp8: Option<Box<Fp8State>>,
}

/// `out[j]` = Σ over the rows of `m` (`rows × out.len()`) of `m[r, j]`,
/// in f32, rows in order (the bias gradient).
fn column_sums(m: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for row in m.chunks(out.len().max(1)) {
        for (g, &v) in out.iter_mut().zip(row) {
            *g += v;
        }
    }
}

fn gelu_grad(z: f32) -> f32 {
    // d/dz of 0.5 z (1 + tanh(c (z + a z³))).
    let (c, a) = (0.797_884_6_f32, 0.044_715_f32);
    let inner = c * (z + a * z * z * z);
    let t = inner.tanh();
    0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3.0 * a * z * z)
}

impl<T: FloatElement> Linear<T> {
    /// A layer initialised like PyTorch's `nn.Linear`
    /// (`U(−1/√in, 1/√in)` for weights and bias), times `init_scale`.
    ///
    /// # Errors
    /// * [`Error::EmptyDimension`] when either width is 0;
    /// * [`Error::ShapeOverflow`] when `in × out` overflows;
    /// * [`Error::InvalidParameter`] unless `init_scale` is finite and > 0
    ///   and the initial bound `init_scale/√in` is finite in `T` (an
    ///   infinite working weight would poison every step).
    pub fn new(
        in_features: usize,
        out_features: usize,
        activation: Activation,
        init_scale: f32,
        rng: &mut StochasticRng,
    ) -> Result<Self, Error> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::EmptyDimension {
                what: "Linear",
                shape: vec![out_features, in_features],
            });
        }
        let numel = crate::error::checked_len_of::<f32>(&[out_features, in_features])?;
        let bound = init_scale / (in_features as f32).sqrt();
        if !(init_scale.is_finite() && init_scale > 0.0 && T::from_f32(bound).to_f32().is_finite())
        {
            return Err(Error::InvalidParameter {
                name: "init_scale",
                value: format!("{init_scale:e}"),
                requirement:
                    "finite, > 0, and init_scale/sqrt(in_features) finite in the working type",
            });
        }
        let mut uniform = || ((rng.next_u64() >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0) * bound;
        let master_w: Vec<f32> = (0..numel).map(|_| uniform()).collect();
        let master_b: Vec<f32> = (0..out_features).map(|_| uniform()).collect();
        Self::assemble(
            (in_features, out_features),
            activation,
            master_w,
            master_b,
            None,
        )
    }

    /// A layer with these f32 master weights (`[out, in]`, row-major) and
    /// bias (`[out]`); the working copy is rounded from them (nearest
    /// even). Loading weights saved from a layer's working copy gives that
    /// working copy back bit for bit: widening is exact and rounding an
    /// exact value returns it.
    ///
    /// ```
    /// use mixprec::amp::Linear;
    /// use mixprec::{bf16, gemm::Activation, gemm::Parallelism, Tensor};
    /// let w = Tensor::from_vec(&[2, 3], vec![0.5f32, -1.0, 0.25, 1.0, 0.0, -0.5])?;
    /// let layer = Linear::<bf16>::from_weights(&w, vec![0.0, 1.0], Activation::Relu)?;
    /// let y = layer.infer(&[bf16::ONE; 3], 1, Parallelism::Serial)?;
    /// assert_eq!(y, [bf16::ZERO, bf16::from_f32(1.5)]);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::RankMismatch`] when `weight` is not rank 2;
    /// [`Error::EmptyDimension`] for a zero width;
    /// [`Error::LengthMismatch`] for a bias whose length is not `out`;
    /// [`Error::InvalidParameter`] for a weight or bias that is NaN, ±∞ or
    /// rounds to ±∞ in `T` (1e30 in f16): as in [`Linear::new`], an
    /// infinite working weight would poison every output.
    pub fn from_weights(
        weight: &crate::tensor::Tensor<f32>,
        bias: Vec<f32>,
        activation: Activation,
    ) -> Result<Self, Error> {
        let w = weight.as_mat()?;
        let values = weight.as_slice().iter().map(|v| ("weight", v));
        let bad = values
            .chain(bias.iter().map(|v| ("bias", v)))
            .enumerate()
            .find(|(_, (_, v))| !T::from_f32(**v).to_f32().is_finite());
        if let Some((i, (what, v))) = bad {
            let i = if what == "bias" { i - weight.len() } else { i };
            return Err(Error::InvalidParameter {
                name: "Linear::from_weights",
                value: format!("{what} [{i}] = {v:e}"),
                requirement: "finite, and finite when rounded to the working type",
            });
        }
        Self::assemble(
            (w.cols(), w.rows()),
            activation,
            weight.as_slice().to_vec(),
            bias,
            None,
        )
    }

    /// A layer from its parts, checked: `in × out` non-empty, masters of
    /// `out × in` and `out`, and the working copy (of `out × in`) or, when
    /// `None`, the masters rounded to nearest even.
    pub(crate) fn assemble(
        (in_features, out_features): (usize, usize),
        activation: Activation,
        master_w: Vec<f32>,
        master_b: Vec<f32>,
        w: Option<Vec<T>>,
    ) -> Result<Self, Error> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::EmptyDimension {
                what: "Linear",
                shape: vec![out_features, in_features],
            });
        }
        let numel = crate::error::checked_len_of::<f32>(&[out_features, in_features])?;
        let working = w.as_ref().map_or(numel, Vec::len);
        for (what, expected, actual) in [
            ("Linear master weights (out × in)", numel, master_w.len()),
            ("Linear working weights (out × in)", numel, working),
            ("Linear bias (one per output)", out_features, master_b.len()),
        ] {
            if expected != actual {
                return Err(Error::LengthMismatch {
                    what,
                    expected,
                    actual,
                });
            }
        }
        let refresh = w.is_none();
        let mut layer = Self {
            in_features,
            out_features,
            activation,
            master_w,
            master_b,
            w: w.unwrap_or_else(|| vec![T::zeroed(); numel]),
            grad_w: vec![0.0; numel],
            grad_b: vec![0.0; out_features],
            saved_x: Vec::new(),
            saved: Vec::new(),
            batch: 0,
            fp8: None,
        };
        if refresh {
            layer.refresh(&mut WorkingRounding::NearestEven)?;
        }
        Ok(layer)
    }

    /// The activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Runs this layer's products on scaled FP8 operands by `recipe` (see
    /// [`super::fp8`]), or, with `None`, in the working type again. The
    /// scaling state starts afresh.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a recipe that
    /// [`Fp8Recipe::validate`] rejects.
    pub fn set_fp8(&mut self, recipe: Option<Fp8Recipe>) -> Result<(), Error> {
        self.fp8 = match recipe {
            Some(r) => Some(Box::new(Fp8State::new(r)?)),
            None => None,
        };
        Ok(())
    }

    /// The FP8 recipe, when the layer runs on FP8.
    pub fn fp8_recipe(&self) -> Option<Fp8Recipe> {
        self.fp8.as_ref().map(|s| s.recipe())
    }

    /// The delayed-scaling scales of X, W and dY the next step uses (1
    /// for tensors that are unscaled or scaled from the current step).
    pub fn fp8_scales(&self) -> Option<[f32; 3]> {
        self.fp8.as_ref().map(|s| s.scales())
    }

    /// Gradient values the FP8 rounding of dY has flushed to zero so far.
    pub fn fp8_grad_stats(&self) -> Option<GradFlushStats> {
        self.fp8.as_ref().map(|s| s.stats)
    }

    /// Bytes of the working weights and of the activations kept for the
    /// backward pass (after a forward pass; FP8 layers keep their FP8 X
    /// and W instead of the working-type input).
    pub fn footprint_bytes(&self) -> usize {
        let t = std::mem::size_of::<T>();
        self.w.len() * t
            + (self.saved_x.len() + self.saved.len()) * t
            + self.fp8.as_ref().map_or(0, |s| s.saved_bytes())
    }

    /// The working copy of the weights (`[out, in]`, type `T`), what the
    /// forward pass multiplies by.
    pub fn working_weights(&self) -> &[T] {
        &self.w
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// The f32 master weights `[out, in]` and bias.
    pub fn masters(&self) -> (&[f32], &[f32]) {
        (&self.master_w, &self.master_b)
    }

    /// Mutable masters (for tests and custom initialisation); call
    /// [`Linear::refresh`] afterwards.
    pub fn masters_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.master_w, &mut self.master_b)
    }

    /// Gradients of the last backward pass (f32, as scaled by the loss scale
    /// until unscaled).
    pub fn grads(&self) -> (&[f32], &[f32]) {
        (&self.grad_w, &self.grad_b)
    }

    /// Mutable gradients (for unscaling and clipping).
    pub fn grads_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.grad_w, &mut self.grad_b)
    }

    /// Masters and their gradients, for an optimizer.
    pub fn params_and_grads(&mut self) -> [(&mut [f32], &[f32]); 2] {
        [
            (&mut self.master_w, &self.grad_w),
            (&mut self.master_b, &self.grad_b),
        ]
    }

    /// Rounds the masters into the working copy.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] only if the masters were resized, which the
    /// layer's API does not allow; in practice infallible.
    pub fn refresh(&mut self, rounding: &mut WorkingRounding) -> Result<(), Error> {
        match rounding {
            WorkingRounding::NearestEven => narrow(&self.master_w, &mut self.w),
            WorkingRounding::Stochastic(rng) => narrow_stochastic(&self.master_w, &mut self.w, rng),
        }
    }

    /// `x·Wᵀ + b` with the activation fused in the GEMM epilogue, except
    /// GELU, which the caller applies (its backward needs the
    /// pre-activation this returns).
    fn affine(&self, x: &[T], batch: usize, par: Parallelism) -> Result<Vec<T>, Error> {
        let (i, o) = (self.in_features, self.out_features);
        if let Some(st) = &self.fp8 {
            let (xf, wf) = (Self::wide(x)?, Self::wide(&self.w)?);
            let scales = st.inference_scales(&xf, &wf);
            return self
                .fp8_affine(&xf, &wf, batch, scales, par)
                .map(|(y, _)| y);
        }
        let xv = MatRef::from_row_major(x, batch, i)?;
        let wt = MatRef::from_row_major(&self.w, o, i)?.t();
        let mut y = vec![T::zeroed(); crate::error::checked_len_of::<f32>(&[batch, o])?];
        let fused = match self.activation {
            Activation::Gelu => Activation::Identity,
            a => a,
        };
        gemm(
            xv,
            wt,
            MatMut::from_row_major(&mut y, batch, o)?,
            &Epilogue::new().bias(&self.master_b).activation(fused),
            par,
        )?;
        Ok(y)
    }

    /// `x` as f32: the slice itself when `T` is f32, else widened.
    fn wide(x: &[T]) -> Result<std::borrow::Cow<'_, [f32]>, Error> {
        if let Some(f) = (T::DTYPE == crate::DType::F32)
            .then(|| bytemuck::try_cast_slice::<T, f32>(x).ok())
            .flatten()
        {
            return Ok(std::borrow::Cow::Borrowed(f));
        }
        let mut out = vec![0.0f32; x.len()];
        widen(x, &mut out)?;
        Ok(std::borrow::Cow::Owned(out))
    }

    /// The FP8 forward product (bias and ReLU fused as in [`Self::affine`]),
    /// rounded to `T`, and the FP8 operands.
    fn fp8_affine(
        &self,
        x: &[f32],
        w: &[f32],
        batch: usize,
        scales: [(f32, bool); 2],
        par: Parallelism,
    ) -> Result<(Vec<T>, Fp8Operands), Error> {
        let (i, o) = (self.in_features, self.out_features);
        let n = crate::error::checked_len_of::<f32>(&[batch, o])?;
        let fused = match self.activation {
            Activation::Gelu => Activation::Identity,
            a => a,
        };
        let mut yf = vec![0.0f32; n];
        let operands = Fp8State::forward_product(
            x,
            w,
            (batch, i, o),
            scales,
            &Epilogue::new().bias(&self.master_b).activation(fused),
            par,
            &mut yf,
        )?;
        let mut y = vec![T::zeroed(); n];
        narrow(&yf, &mut y)?;
        Ok((y, operands))
    }

    fn apply_gelu(&self, y: &mut [T]) {
        if self.activation == Activation::Gelu {
            for v in y.iter_mut() {
                *v = T::from_f32(Activation::Gelu.apply(v.to_f32()));
            }
        }
    }

    /// Inference: the output of [`Linear::forward`] without saving anything
    /// for a backward pass, so the layer can be shared (`&self`).
    ///
    /// # Errors
    /// As [`Linear::forward`].
    pub fn infer(&self, x: &[T], batch: usize, par: Parallelism) -> Result<Vec<T>, Error> {
        let mut y = self.affine(x, batch, par)?;
        self.apply_gelu(&mut y);
        Ok(y)
    }

    /// Forward pass over `batch` rows of `x` (`[batch, in]`, row-major),
    /// saving what [`Linear::backward`] needs.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `x` is not `batch × in`;
    /// [`Error::ShapeOverflow`] when `batch × out` overflows;
    /// `Threads(0)` as [`gemm`] reports it.
    pub fn forward(&mut self, x: &[T], batch: usize, par: Parallelism) -> Result<Vec<T>, Error> {
        let mut y = match self.fp8.take() {
            Some(mut st) => {
                let result = (|| -> Result<Vec<T>, Error> {
                    MatRef::from_row_major(x, batch, self.in_features)?;
                    let (xf, wf) = (Self::wide(x)?, Self::wide(&self.w)?);
                    let scales = st.forward_scales(&xf, &wf);
                    let (y, operands) = self.fp8_affine(&xf, &wf, batch, scales, par)?;
                    st.save(operands);
                    Ok(y)
                })();
                self.fp8 = Some(st);
                // Backward multiplies by the FP8 X and W the state keeps;
                // the input itself is not kept.
                self.saved_x = Vec::new();
                result?
            }
            None => {
                let y = self.affine(x, batch, par)?;
                self.saved_x = x.to_vec();
                y
            }
        };
        self.batch = batch;
        // Saved for backward: the output (ReLU, identity) or, for GELU, the
        // pre-activation, which is what `y` holds until GELU is applied.
        self.saved = y.clone();
        self.apply_gelu(&mut y);
        Ok(y)
    }

    /// Backward pass: from `dy` (`[batch, out]`, the batch of the last
    /// forward pass) computes the weight and bias gradients (f32,
    /// overwritten) and returns `dx` in f32 (`[batch, in]`); the caller
    /// rounds it to the working type.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `dy` is not `batch × out`.
    pub fn backward(&mut self, dy: &[T], par: Parallelism) -> Result<Vec<f32>, Error> {
        let (i, o, b) = (self.in_features, self.out_features, self.batch);
        // b × o and b × i were allocated by the last forward pass.
        if dy.len() != b * o {
            return Err(Error::LengthMismatch {
                what: "Linear::backward (dy)",
                expected: b * o,
                actual: dy.len(),
            });
        }
        let dz: Vec<T> = match self.activation {
            Activation::Identity => dy.to_vec(),
            Activation::Relu => dy
                .iter()
                .zip(&self.saved)
                .map(|(&g, &y)| if y.to_f32() > 0.0 { g } else { T::zeroed() })
                .collect(),
            Activation::Gelu => dy
                .iter()
                .zip(&self.saved)
                .map(|(&g, &z)| T::from_f32(g.to_f32() * gelu_grad(z.to_f32())))
                .collect(),
        };
        if let Some(st) = self.fp8.as_mut() {
            let dzf = Self::wide(&dz)?;
            let dx = st.backward(&dzf, (b, i, o), &mut self.grad_w, par)?;
            column_sums(&dzf, &mut self.grad_b);
            return Ok(dx);
        }
        let dzv = MatRef::from_row_major(&dz, b, o)?;
        // dW = dzᵀ · x
        gemm(
            dzv.t(),
            MatRef::from_row_major(&self.saved_x, b, i)?,
            MatMut::from_row_major(&mut self.grad_w, o, i)?,
            &Epilogue::new(),
            par,
        )?;
        // db = column sums of dz, in f32, rows in order.
        let mut wide = vec![0.0f32; dz.len()];
        widen(&dz, &mut wide)?;
        column_sums(&wide, &mut self.grad_b);
        // dx = dz · W
        let mut dx = vec![0.0f32; b * i];
        gemm(
            dzv,
            MatRef::from_row_major(&self.w, o, i)?,
            MatMut::from_row_major(&mut dx, b, i)?,
            &Epilogue::new(),
            par,
        )?;
        Ok(dx)
    }
}

/// Mean softmax cross-entropy of `logits` (`[batch, classes]`, any working
/// type, computed in f32) against integer labels; returns the loss and
/// `dL/dlogits` in f32 (`(softmax − onehot)/batch`). NaN or infinite
/// logits give a NaN or infinite loss, as IEEE 754 arithmetic does.
///
/// ```
/// use mixprec::amp::softmax_cross_entropy;
/// let (loss, grad) = softmax_cross_entropy(&[0.0f32, 0.0], &[1], 2)?;
/// assert!((loss - std::f32::consts::LN_2).abs() < 1e-6);
/// assert_eq!(grad, vec![0.5, -0.5]);
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// * [`Error::EmptyDimension`] for an empty batch (a mean over nothing)
///   or 0 classes;
/// * [`Error::LengthMismatch`] when `logits` is not `labels.len() × classes`;
/// * [`Error::InvalidParameter`] for a label ≥ `classes`.
pub fn softmax_cross_entropy<T: FloatElement>(
    logits: &[T],
    labels: &[u8],
    classes: usize,
) -> Result<(f32, Vec<f32>), Error> {
    if labels.is_empty() || classes == 0 {
        return Err(Error::EmptyDimension {
            what: "softmax_cross_entropy (batch, classes)",
            shape: vec![labels.len(), classes],
        });
    }
    let expected = crate::error::checked_numel(&[labels.len(), classes])?;
    if logits.len() != expected {
        return Err(Error::LengthMismatch {
            what: "softmax_cross_entropy (logits = batch × classes)",
            expected,
            actual: logits.len(),
        });
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::InvalidParameter {
            name: "label",
            value: bad.to_string(),
            requirement: "less than the number of classes",
        });
    }
    let batch = labels.len();
    let mut grad = vec![0.0f32; logits.len()];
    let mut loss = 0.0f64;
    for (r, &label) in labels.iter().enumerate() {
        let row: Vec<f32> = logits[r * classes..(r + 1) * classes]
            .iter()
            .map(|v| v.to_f32())
            .collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        loss += (sum.ln() - (row[label as usize] - max)) as f64;
        for (c, g) in grad[r * classes..(r + 1) * classes].iter_mut().enumerate() {
            let onehot = if c == label as usize { 1.0 } else { 0.0 };
            *g = (exps[c] / sum - onehot) / batch as f32;
        }
    }
    Ok(((loss / batch as f64) as f32, grad))
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::Linear;
    use crate::dtype::FloatElement;
    use crate::gemm::Activation;
    use crate::Error;

    /// The serialized fields of [`Linear`], checked on the way in.
    #[derive(serde::Deserialize)]
    #[serde(bound(deserialize = "T: serde::Deserialize<'de> + FloatElement"))]
    pub(super) struct LinearState<T> {
        in_features: usize,
        out_features: usize,
        activation: Activation,
        master_w: Vec<f32>,
        master_b: Vec<f32>,
        w: Vec<T>,
        #[serde(default)]
        fp8: Option<Box<super::Fp8State>>,
    }

    impl<T: FloatElement> TryFrom<LinearState<T>> for Linear<T> {
        type Error = Error;

        fn try_from(s: LinearState<T>) -> Result<Self, Error> {
            let mut layer = Linear::assemble(
                (s.in_features, s.out_features),
                s.activation,
                s.master_w,
                s.master_b,
                Some(s.w),
            )?;
            layer.fp8 = s.fp8;
            Ok(layer)
        }
    }
}

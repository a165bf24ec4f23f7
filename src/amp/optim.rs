//! Optimizers on f32 master weights.

use crate::Error;

/// A parameter update rule on f32 masters.
pub trait Optimizer {
    /// Updates `params` (one tensor, identified by `slot`) with `grads`.
    /// Each distinct tensor passes its own `slot` every step; slots are
    /// numbered 0, 1, 2… in the order they are first seen.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when `grads` and `params` differ in length,
    /// or a slot's tensor changes length; [`Error::InvalidParameter`] for a
    /// slot past the next unused one.
    fn step(&mut self, slot: usize, params: &mut [f32], grads: &[f32]) -> Result<(), Error>;
    /// Marks the end of one optimizer step over all tensors.
    fn finish_step(&mut self) {}
}

/// The state vector of `slot`, created (zeros) on first use.
fn state_for(states: &mut Vec<Vec<f32>>, slot: usize, len: usize) -> Result<&mut [f32], Error> {
    if slot == states.len() {
        states.push(vec![0.0; len]);
    }
    let Some(s) = states.get_mut(slot) else {
        return Err(Error::InvalidParameter {
            name: "optimizer slot",
            value: slot.to_string(),
            requirement: "at most the number of slots seen so far (slots are 0, 1, 2...)",
        });
    };
    if s.len() != len {
        return Err(Error::LengthMismatch {
            what: "optimizer slot state (the tensor's length changed)",
            expected: s.len(),
            actual: len,
        });
    }
    Ok(s)
}

fn check_grads(params: &[f32], grads: &[f32]) -> Result<(), Error> {
    if params.len() != grads.len() {
        return Err(Error::LengthMismatch {
            what: "optimizer step (one gradient per parameter)",
            expected: params.len(),
            actual: grads.len(),
        });
    }
    Ok(())
}

fn check_lr_wd(name: &'static str, lr: f32, weight_decay: f32) -> Result<(), Error> {
    if !(lr.is_finite() && lr > 0.0 && weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(Error::InvalidParameter {
            name,
            value: format!("lr {lr:e}, weight_decay {weight_decay:e}"),
            requirement: "lr finite and > 0, weight_decay finite and >= 0",
        });
    }
    Ok(())
}

/// SGD with momentum and (coupled) weight decay, as PyTorch's `SGD`:
/// `g += wd·p; v = μ·v + g; p -= lr·v`.
///
/// With the `serde` feature it serializes its settings and momentum
/// buffers; deserializing makes the checks of [`Sgd::new`].
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "serde_impl::SgdState"))]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// SGD with these settings.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless lr is finite and > 0, momentum in
    /// [0, 1) and weight decay finite and ≥ 0.
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Result<Self, Error> {
        check_lr_wd("Sgd", lr, weight_decay)?;
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::InvalidParameter {
                name: "Sgd momentum",
                value: format!("{momentum:e}"),
                requirement: "in [0, 1)",
            });
        }
        Ok(Self {
            lr,
            momentum,
            weight_decay,
            velocity: Vec::new(),
        })
    }

    /// Learning rate.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// Momentum μ.
    pub fn momentum(&self) -> f32 {
        self.momentum
    }

    /// Weight decay.
    pub fn weight_decay(&self) -> f32 {
        self.weight_decay
    }

    /// Changes the learning rate (a schedule).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `lr` is finite and > 0.
    pub fn set_lr(&mut self, lr: f32) -> Result<(), Error> {
        check_lr_wd("Sgd", lr, self.weight_decay)?;
        self.lr = lr;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, slot: usize, params: &mut [f32], grads: &[f32]) -> Result<(), Error> {
        check_grads(params, grads)?;
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        let v = state_for(&mut self.velocity, slot, params.len())?;
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(v.iter_mut()) {
            let g = g + wd * *p;
            *v = mu * *v + g;
            *p -= lr * *v;
        }
        Ok(())
    }
}

/// AdamW (Loshchilov & Hutter), as PyTorch's `AdamW`: decoupled weight
/// decay `p -= lr·wd·p`, then the bias-corrected Adam update.
///
/// With the `serde` feature it serializes its settings, step count and
/// moment buffers; deserializing makes the checks of [`AdamW::new`] and
/// [`AdamW::with_betas_eps`] and checks that the moments agree in shape.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "serde_impl::AdamWState"))]
pub struct AdamW {
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    t: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl AdamW {
    /// AdamW with PyTorch's defaults for betas (0.9, 0.999) and eps 1e-8.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless lr is finite and > 0 and weight
    /// decay finite and ≥ 0.
    pub fn new(lr: f32, weight_decay: f32) -> Result<Self, Error> {
        check_lr_wd("AdamW", lr, weight_decay)?;
        Ok(Self {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        })
    }

    /// The same optimizer with other betas and eps.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless both betas are in [0, 1) and eps
    /// is finite and > 0.
    pub fn with_betas_eps(mut self, betas: (f32, f32), eps: f32) -> Result<Self, Error> {
        let ok = |b: f32| (0.0..1.0).contains(&b);
        if !(ok(betas.0) && ok(betas.1) && eps.is_finite() && eps > 0.0) {
            return Err(Error::InvalidParameter {
                name: "AdamW betas, eps",
                value: format!("({:e}, {:e}), {eps:e}", betas.0, betas.1),
                requirement: "betas in [0, 1), eps finite and > 0",
            });
        }
        self.betas = betas;
        self.eps = eps;
        Ok(self)
    }

    /// Learning rate.
    pub fn lr(&self) -> f32 {
        self.lr
    }

    /// β1, β2.
    pub fn betas(&self) -> (f32, f32) {
        self.betas
    }

    /// ε.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Decoupled weight decay.
    pub fn weight_decay(&self) -> f32 {
        self.weight_decay
    }

    /// Steps finished so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// Changes the learning rate (a schedule).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `lr` is finite and > 0.
    pub fn set_lr(&mut self, lr: f32) -> Result<(), Error> {
        check_lr_wd("AdamW", lr, self.weight_decay)?;
        self.lr = lr;
        Ok(())
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, slot: usize, params: &mut [f32], grads: &[f32]) -> Result<(), Error> {
        check_grads(params, grads)?;
        // Past 2^31 steps the bias corrections are 1 to f32 precision anyway.
        let t = self.t.saturating_add(1).min(i32::MAX as u64) as i32;
        let (b1, b2) = self.betas;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let (lr, eps, wd) = (self.lr, self.eps, self.weight_decay);
        let len = params.len();
        state_for(&mut self.m, slot, len)?;
        state_for(&mut self.v, slot, len)?;
        let (m, v) = (&mut self.m[slot], &mut self.v[slot]);
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            *p -= lr * wd * *p;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
        Ok(())
    }

    fn finish_step(&mut self) {
        self.t = self.t.saturating_add(1);
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::{AdamW, Sgd};
    use crate::Error;

    /// The serialized fields of [`Sgd`], checked on the way in.
    #[derive(serde::Deserialize)]
    pub(super) struct SgdState {
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        velocity: Vec<Vec<f32>>,
    }

    impl TryFrom<SgdState> for Sgd {
        type Error = Error;

        fn try_from(s: SgdState) -> Result<Self, Error> {
            let mut sgd = Sgd::new(s.lr, s.momentum, s.weight_decay)?;
            sgd.velocity = s.velocity;
            Ok(sgd)
        }
    }

    /// The serialized fields of [`AdamW`], checked on the way in.
    #[derive(serde::Deserialize)]
    pub(super) struct AdamWState {
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
        t: u64,
        m: Vec<Vec<f32>>,
        v: Vec<Vec<f32>>,
    }

    impl TryFrom<AdamWState> for AdamW {
        type Error = Error;

        fn try_from(s: AdamWState) -> Result<Self, Error> {
            let mut adam = AdamW::new(s.lr, s.weight_decay)?.with_betas_eps(s.betas, s.eps)?;
            let shape = |x: &[Vec<f32>]| x.iter().map(Vec::len).collect::<Vec<_>>();
            if shape(&s.m) != shape(&s.v) {
                return Err(Error::ShapeMismatch {
                    what: "AdamW moments (m and v, one buffer per slot)",
                    left: shape(&s.m),
                    right: shape(&s.v),
                });
            }
            adam.t = s.t;
            adam.m = s.m;
            adam.v = s.v;
            Ok(adam)
        }
    }
}

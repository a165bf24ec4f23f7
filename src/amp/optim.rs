//! Optimizers on f32 master weights.

use crate::Error;

/// A parameter update rule on f32 masters.
pub trait Optimizer {
    /// Updates `params` (one tensor, identified by `slot`) with `grads`.
    /// Each distinct tensor passes its own `slot` (0, 1, 2…) every step.
    fn step(&mut self, slot: usize, params: &mut [f32], grads: &[f32]);
    /// Marks the end of one optimizer step over all tensors.
    fn finish_step(&mut self) {}
}

fn state_for(states: &mut Vec<Vec<f32>>, slot: usize, len: usize) -> &mut Vec<f32> {
    if states.len() <= slot {
        states.resize_with(slot + 1, Vec::new);
    }
    let s = &mut states[slot];
    if s.len() != len {
        *s = vec![0.0; len];
    }
    s
}

/// SGD with momentum and (coupled) weight decay, as PyTorch's `SGD`:
/// `g += wd·p; v = μ·v + g; p -= lr·v`.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// Weight decay.
    pub weight_decay: f32,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    /// SGD with these settings (all finite, lr > 0, momentum in [0, 1)).
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Result<Self, Error> {
        if !(lr.is_finite()
            && lr > 0.0
            && (0.0..1.0).contains(&momentum)
            && weight_decay.is_finite()
            && weight_decay >= 0.0)
        {
            return Err(Error::InvalidParameter {
                name: "Sgd",
                value: format!("lr {lr:e}, momentum {momentum:e}, weight_decay {weight_decay:e}"),
                requirement: "lr > 0, momentum in [0, 1), weight_decay >= 0, all finite",
            });
        }
        Ok(Self {
            lr,
            momentum,
            weight_decay,
            velocity: Vec::new(),
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, slot: usize, params: &mut [f32], grads: &[f32]) {
        let (lr, mu, wd) = (self.lr, self.momentum, self.weight_decay);
        let v = state_for(&mut self.velocity, slot, params.len());
        for ((p, &g), v) in params.iter_mut().zip(grads).zip(v.iter_mut()) {
            let g = g + wd * *p;
            *v = mu * *v + g;
            *p -= lr * *v;
        }
    }
}

/// AdamW (Loshchilov & Hutter), as PyTorch's `AdamW`: decoupled weight
/// decay `p -= lr·wd·p`, then the bias-corrected Adam update.
#[derive(Clone, Debug)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f32,
    /// β1, β2.
    pub betas: (f32, f32),
    /// ε.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl AdamW {
    /// AdamW with PyTorch's defaults for betas (0.9, 0.999) and eps 1e-8.
    pub fn new(lr: f32, weight_decay: f32) -> Result<Self, Error> {
        if !(lr.is_finite() && lr > 0.0 && weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "AdamW",
                value: format!("lr {lr:e}, weight_decay {weight_decay:e}"),
                requirement: "lr > 0, weight_decay >= 0, both finite",
            });
        }
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
}

impl Optimizer for AdamW {
    fn step(&mut self, slot: usize, params: &mut [f32], grads: &[f32]) {
        let t = self.t + 1;
        let (b1, b2) = self.betas;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let (lr, eps, wd) = (self.lr, self.eps, self.weight_decay);
        let len = params.len();
        state_for(&mut self.m, slot, len);
        state_for(&mut self.v, slot, len);
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
    }

    fn finish_step(&mut self) {
        self.t += 1;
    }
}

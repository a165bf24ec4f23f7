//! Loss scaling, with the semantics of PyTorch's `GradScaler`.

use crate::Error;

/// The complete state of a [`LossScaler`], to save and restore (e.g. with a
/// checkpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerState {
    /// Current scale.
    pub scale: f32,
    /// Consecutive steps without inf/NaN since the last change.
    pub growth_tracker: u32,
    /// Steps skipped because their gradients overflowed.
    pub skipped_steps: u64,
    /// Steps seen (skipped or not).
    pub steps: u64,
    /// Whether the scale changes (dynamic) or not (static).
    pub dynamic: bool,
    /// Multiplier on growth (2.0).
    pub growth_factor: f32,
    /// Multiplier on overflow (0.5).
    pub backoff_factor: f32,
    /// Clean steps before growth (2000).
    pub growth_interval: u32,
    /// Lower bound of the scale.
    pub min_scale: f32,
    /// Upper bound of the scale.
    pub max_scale: f32,
}

/// Scales the loss so that small gradients survive in f16, and unscales the
/// gradients before the optimizer sees them.
///
/// Dynamic scaling follows PyTorch's `GradScaler` (`_amp_update_scale_`):
/// initial scale 2^16; on a step whose gradients hold an inf or NaN the
/// step is skipped, the scale multiplied by 0.5 and the clean-step count
/// reset; after 2000 consecutive clean steps the scale is multiplied by 2
/// (only if the result is finite) and the count reset. This crate adds
/// optional bounds `[min_scale, max_scale]` (default `[2^-24, f32::MAX]`).
///
/// ```
/// use mixprec::amp::LossScaler;
/// let mut s = LossScaler::dynamic();
/// assert_eq!(s.scale(), 65536.0);
/// let mut grads = vec![65536.0f32, f32::INFINITY];
/// let found_inf = s.unscale(&mut grads);
/// assert!(found_inf);
/// assert!(!s.update(found_inf)); // step skipped
/// assert_eq!(s.scale(), 32768.0);
/// assert_eq!(s.skipped_steps(), 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    st: ScalerState,
}

impl LossScaler {
    /// Dynamic scaling with PyTorch's defaults.
    pub fn dynamic() -> Self {
        Self {
            st: ScalerState {
                scale: 65536.0,
                growth_tracker: 0,
                skipped_steps: 0,
                steps: 0,
                dynamic: true,
                growth_factor: 2.0,
                backoff_factor: 0.5,
                growth_interval: 2000,
                min_scale: 2f32.powi(-24),
                max_scale: f32::MAX,
            },
        }
    }

    /// Dynamic scaling with explicit settings: initial scale, growth and
    /// backoff factors, growth interval, bounds. Errors on a non-finite or
    /// non-positive scale, growth ≤ 1, backoff outside (0, 1), interval 0,
    /// or bounds that do not contain the initial scale.
    pub fn dynamic_with(
        init_scale: f32,
        growth_factor: f32,
        backoff_factor: f32,
        growth_interval: u32,
        (min_scale, max_scale): (f32, f32),
    ) -> Result<Self, Error> {
        let bad = |name, v: f32, req| {
            Err(Error::InvalidParameter {
                name,
                value: format!("{v:e}"),
                requirement: req,
            })
        };
        if !(init_scale.is_finite() && init_scale > 0.0) {
            return bad("init_scale", init_scale, "finite and > 0");
        }
        if !(growth_factor.is_finite() && growth_factor > 1.0) {
            return bad("growth_factor", growth_factor, "finite and > 1");
        }
        if !(backoff_factor > 0.0 && backoff_factor < 1.0) {
            return bad("backoff_factor", backoff_factor, "in (0, 1)");
        }
        if growth_interval == 0 {
            return bad("growth_interval", 0.0, "at least 1");
        }
        if !(min_scale > 0.0 && min_scale <= init_scale && init_scale <= max_scale) {
            return bad(
                "scale bounds",
                min_scale,
                "0 < min_scale <= init_scale <= max_scale",
            );
        }
        let mut s = Self::dynamic();
        s.st.scale = init_scale;
        s.st.growth_factor = growth_factor;
        s.st.backoff_factor = backoff_factor;
        s.st.growth_interval = growth_interval;
        s.st.min_scale = min_scale;
        s.st.max_scale = max_scale;
        Ok(s)
    }

    /// A constant scale (1.0 disables scaling). Overflowing steps are still
    /// detected and skipped.
    pub fn fixed(scale: f32) -> Result<Self, Error> {
        let mut s = Self::dynamic_with(scale, 2.0, 0.5, 1, (scale, scale))?;
        s.st.dynamic = false;
        Ok(s)
    }

    /// The current scale.
    pub fn scale(&self) -> f32 {
        self.st.scale
    }

    /// `loss × scale`.
    pub fn scale_loss(&self, loss: f32) -> f32 {
        loss * self.st.scale
    }

    /// Divides the gradients by the scale in place (multiplying by the f32
    /// reciprocal, as PyTorch does) and reports whether any is inf or NaN.
    /// Call before gradient clipping so clipping sees true gradients.
    pub fn unscale(&self, grads: &mut [f32]) -> bool {
        let inv = 1.0 / self.st.scale;
        for g in grads.iter_mut() {
            *g *= inv;
        }
        super::has_non_finite(grads)
    }

    /// Records one step's outcome and updates the scale; returns whether
    /// the optimizer step should be taken (false when `found_inf`).
    pub fn update(&mut self, found_inf: bool) -> bool {
        let st = &mut self.st;
        st.steps += 1;
        if found_inf {
            st.skipped_steps += 1;
        }
        if !st.dynamic {
            return !found_inf;
        }
        if found_inf {
            st.scale = (st.scale * st.backoff_factor).max(st.min_scale);
            st.growth_tracker = 0;
        } else {
            let successful = st.growth_tracker + 1;
            if successful == st.growth_interval {
                let grown = st.scale * st.growth_factor;
                if grown.is_finite() {
                    st.scale = grown.min(st.max_scale);
                }
                st.growth_tracker = 0;
            } else {
                st.growth_tracker = successful;
            }
        }
        !found_inf
    }

    /// Steps skipped so far.
    pub fn skipped_steps(&self) -> u64 {
        self.st.skipped_steps
    }

    /// The whole state.
    pub fn state(&self) -> ScalerState {
        self.st
    }

    /// A scaler resumed from a saved state.
    pub fn from_state(state: ScalerState) -> Self {
        Self { st: state }
    }
}

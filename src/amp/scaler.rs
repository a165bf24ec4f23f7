//! Loss scaling, with the semantics of PyTorch's `GradScaler`.

use crate::Error;

/// The complete state of a [`LossScaler`], to save and restore (e.g. with a
/// checkpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// Multiplier on growth (2.0), a double as in PyTorch.
    pub growth_factor: f64,
    /// Multiplier on overflow (0.5), a double as in PyTorch.
    pub backoff_factor: f64,
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
/// (only if the result is finite) and the count reset.
///
/// PyTorch parity, exactly:
/// * the factors are doubles: the new scale is `(scale as f64 · factor) as
///   f32`, so factors such as 1.1 and 0.9 follow PyTorch's trajectory;
/// * [`LossScaler::unscale`] looks for inf/NaN in the *scaled* gradients,
///   before unscaling (`_amp_foreach_non_finite_check_and_unscale_`), and
///   multiplies by `inv_scale = (1.0f64 / scale) as f32`.
///
/// This crate's one addition: optional bounds `[min_scale, max_scale]`
/// (default `[2^-24, f32::MAX]`), applied after each change.
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
///
/// With the `serde` feature it serializes as its [`ScalerState`];
/// deserializing goes through [`LossScaler::from_state`] and its checks.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(into = "ScalerState", try_from = "ScalerState")
)]
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
    /// backoff factors (doubles, as PyTorch keeps them), growth interval,
    /// bounds.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a non-finite or non-positive scale,
    /// growth not finite or ≤ 1, backoff outside (0, 1), interval 0, or
    /// bounds that are not finite and positive or do not contain the
    /// initial scale.
    pub fn dynamic_with(
        init_scale: f32,
        growth_factor: f64,
        backoff_factor: f64,
        growth_interval: u32,
        (min_scale, max_scale): (f32, f32),
    ) -> Result<Self, Error> {
        let mut s = Self::dynamic();
        s.st.scale = init_scale;
        s.st.growth_factor = growth_factor;
        s.st.backoff_factor = backoff_factor;
        s.st.growth_interval = growth_interval;
        s.st.min_scale = min_scale;
        s.st.max_scale = max_scale;
        Self::from_state(s.st)
    }

    /// A constant scale (1.0 disables scaling). Overflowing steps are still
    /// detected and skipped.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `scale` is finite and > 0.
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

    /// Reports whether any of the (scaled) gradients is inf or NaN, then
    /// divides them by the scale in place, multiplying by `(1.0f64 /
    /// scale) as f32` as PyTorch does. Call before gradient clipping so
    /// clipping sees true gradients. As in PyTorch, a finite scaled
    /// gradient that overflows when unscaled (possible only with a scale
    /// below 1) is not reported.
    pub fn unscale(&self, grads: &mut [f32]) -> bool {
        let found_inf = super::has_non_finite(grads);
        let inv = (1.0f64 / self.st.scale as f64) as f32;
        for g in grads.iter_mut() {
            *g *= inv;
        }
        found_inf
    }

    /// Records one step's outcome and updates the scale; returns whether
    /// the optimizer step should be taken (false when `found_inf`).
    pub fn update(&mut self, found_inf: bool) -> bool {
        let st = &mut self.st;
        st.steps = st.steps.saturating_add(1);
        if found_inf {
            st.skipped_steps = st.skipped_steps.saturating_add(1);
        }
        if !st.dynamic {
            return !found_inf;
        }
        if found_inf {
            // f32 · f64 in double, stored in the f32 scale, as PyTorch.
            let backed_off = (st.scale as f64 * st.backoff_factor) as f32;
            st.scale = backed_off.max(st.min_scale);
            st.growth_tracker = 0;
        } else {
            let successful = st.growth_tracker.saturating_add(1);
            if successful >= st.growth_interval {
                let grown = (st.scale as f64 * st.growth_factor) as f32;
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

    /// A scaler resumed from a saved state, after the checks of
    /// [`LossScaler::dynamic_with`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the state breaks a rule of
    /// [`LossScaler::dynamic_with`], or its growth tracker is not below
    /// the growth interval, or more steps were skipped than taken.
    pub fn from_state(state: ScalerState) -> Result<Self, Error> {
        let bad = |name, value: String, requirement| {
            Err(Error::InvalidParameter {
                name,
                value,
                requirement,
            })
        };
        let st = state;
        if !(st.scale.is_finite() && st.scale > 0.0) {
            return bad("scale", format!("{:e}", st.scale), "finite and > 0");
        }
        if !(st.growth_factor.is_finite() && st.growth_factor > 1.0) {
            return bad(
                "growth_factor",
                format!("{:e}", st.growth_factor),
                "finite and > 1",
            );
        }
        if !(st.backoff_factor > 0.0 && st.backoff_factor < 1.0) {
            return bad(
                "backoff_factor",
                format!("{:e}", st.backoff_factor),
                "in (0, 1)",
            );
        }
        if st.growth_interval == 0 {
            return bad("growth_interval", "0".into(), "at least 1");
        }
        if !(st.min_scale > 0.0
            && st.max_scale.is_finite()
            && st.min_scale <= st.scale
            && st.scale <= st.max_scale)
        {
            return bad(
                "scale bounds",
                format!(
                    "min {:e}, scale {:e}, max {:e}",
                    st.min_scale, st.scale, st.max_scale
                ),
                "0 < min_scale <= scale <= max_scale, all finite",
            );
        }
        if st.growth_tracker >= st.growth_interval {
            return bad(
                "growth_tracker",
                format!("{} (interval {})", st.growth_tracker, st.growth_interval),
                "below growth_interval",
            );
        }
        if st.skipped_steps > st.steps {
            return bad(
                "skipped_steps",
                format!("{} of {} steps", st.skipped_steps, st.steps),
                "at most steps",
            );
        }
        Ok(Self { st })
    }
}

impl From<LossScaler> for ScalerState {
    fn from(s: LossScaler) -> Self {
        s.st
    }
}

impl TryFrom<ScalerState> for LossScaler {
    type Error = Error;

    /// [`LossScaler::from_state`].
    fn try_from(state: ScalerState) -> Result<Self, Error> {
        LossScaler::from_state(state)
    }
}

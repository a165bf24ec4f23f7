//! Observers: collect statistics of f32 data and turn them into
//! [`QuantParams`], with the semantics of PyTorch's observers.
//!
//! NaNs are ignored; infinities widen the range (and then make
//! `qparams` fail, since no finite scale covers them).

use super::{scale_zp_from_range, QInt, QuantParams, Scheme};
use crate::tensor::Tensor;
use crate::Error;

/// The smallest and largest non-NaN values of `x` (`None` when there are
/// none).
pub(crate) fn batch_range(x: &[f32]) -> Option<(f32, f32)> {
    x.iter()
        .filter(|v| !v.is_nan())
        .fold(None, |acc, &v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

fn no_data() -> Error {
    Error::InvalidParameter {
        name: "observer",
        value: "no data".into(),
        requirement: "to have observed at least one non-NaN value",
    }
}

/// Running minimum and maximum (PyTorch `MinMaxObserver`).
///
/// ```
/// use mixprec::quant::{observer::MinMaxObserver, Scheme};
/// let mut obs = MinMaxObserver::new();
/// obs.observe(&[-1.0, 0.5]);
/// obs.observe(&[2.0, f32::NAN]);
/// assert_eq!(obs.range(), Some((-1.0, 2.0)));
/// let p = obs.qparams::<u8>(Scheme::Affine)?;
/// assert_eq!(p.zero_point(0), Some(85));
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MinMaxObserver {
    range: Option<(f32, f32)>,
}

impl MinMaxObserver {
    /// An observer that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a batch into the running range.
    pub fn observe(&mut self, x: &[f32]) {
        if let Some((lo, hi)) = batch_range(x) {
            self.range = Some(match self.range {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
    }

    /// The range seen so far.
    pub fn range(&self) -> Option<(f32, f32)> {
        self.range
    }

    /// Parameters for the range seen so far.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when nothing (or only NaN) was observed, or
    /// the range is not finite (see [`QuantParams::from_range`]).
    pub fn qparams<Q: QInt>(&self, scheme: Scheme) -> Result<QuantParams, Error> {
        let (lo, hi) = self.range.ok_or_else(no_data)?;
        QuantParams::from_range::<Q>(lo, hi, scheme)
    }
}

/// Exponential moving average of each batch's min and max (PyTorch
/// `MovingAverageMinMaxObserver`): the first batch sets the range, then
/// `min += c·(batch_min − min)`, likewise for max.
#[derive(Clone, Debug, PartialEq)]
pub struct MovingAverageMinMaxObserver {
    averaging_constant: f32,
    range: Option<(f32, f32)>,
}

impl Default for MovingAverageMinMaxObserver {
    fn default() -> Self {
        Self {
            averaging_constant: 0.01,
            range: None,
        }
    }
}

impl MovingAverageMinMaxObserver {
    /// An observer with averaging constant 0.01.
    pub fn new() -> Self {
        Self::default()
    }

    /// An observer with averaging constant `c` in (0, 1].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `c` is in (0, 1].
    pub fn with_constant(c: f32) -> Result<Self, Error> {
        if !(c > 0.0 && c <= 1.0) {
            return Err(Error::InvalidParameter {
                name: "averaging_constant",
                value: format!("{c:e}"),
                requirement: "in (0, 1]",
            });
        }
        Ok(Self {
            averaging_constant: c,
            range: None,
        })
    }

    /// Folds a batch into the moving averages.
    pub fn observe(&mut self, x: &[f32]) {
        if let Some((lo, hi)) = batch_range(x) {
            let c = self.averaging_constant;
            self.range = Some(match self.range {
                None => (lo, hi),
                Some((a, b)) => (a + c * (lo - a), b + c * (hi - b)),
            });
        }
    }

    /// The averaged range.
    pub fn range(&self) -> Option<(f32, f32)> {
        self.range
    }

    /// Parameters for the averaged range.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when nothing (or only NaN) was observed, or
    /// the range is not finite (see [`QuantParams::from_range`]).
    pub fn qparams<Q: QInt>(&self, scheme: Scheme) -> Result<QuantParams, Error> {
        let (lo, hi) = self.range.ok_or_else(no_data)?;
        QuantParams::from_range::<Q>(lo, hi, scheme)
    }
}

/// Running min and max per index along one axis (PyTorch
/// `PerChannelMinMaxObserver`).
#[derive(Clone, Debug, PartialEq)]
pub struct PerChannelMinMaxObserver {
    axis: usize,
    /// The channel count of the first batch (which may be 0); `None`
    /// before it.
    channels: Option<usize>,
    mins: Vec<f32>,
    maxs: Vec<f32>,
}

impl PerChannelMinMaxObserver {
    /// An observer of channels along `axis`.
    pub fn new(axis: usize) -> Self {
        Self {
            axis,
            channels: None,
            mins: Vec::new(),
            maxs: Vec::new(),
        }
    }

    /// Folds a tensor into the per-channel ranges. Errors when the axis is
    /// out of range or the channel count changes between calls.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the axis is past the tensor's rank;
    /// [`Error::LengthMismatch`] when the channel count differs from earlier
    /// batches.
    pub fn observe(&mut self, t: &Tensor<f32>) -> Result<(), Error> {
        let shape = t.shape();
        if self.axis >= shape.len() {
            return Err(Error::InvalidParameter {
                name: "axis",
                value: self.axis.to_string(),
                requirement: "less than the tensor's rank",
            });
        }
        let channels = shape[self.axis];
        match self.channels {
            None => {
                self.channels = Some(channels);
                self.mins = vec![f32::INFINITY; channels];
                self.maxs = vec![f32::NEG_INFINITY; channels];
            }
            Some(expected) if expected != channels => {
                return Err(Error::LengthMismatch {
                    what: "PerChannelMinMaxObserver (channels along the axis)",
                    expected,
                    actual: channels,
                });
            }
            Some(_) => {}
        }
        let inner: usize = shape[self.axis + 1..].iter().product();
        for (i, &v) in t.as_slice().iter().enumerate() {
            if v.is_nan() {
                continue;
            }
            let c = (i / inner.max(1)) % channels.max(1);
            self.mins[c] = self.mins[c].min(v);
            self.maxs[c] = self.maxs[c].max(v);
        }
        Ok(())
    }

    /// Per-channel parameters along the axis.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when nothing (or only NaN) was observed, or
    /// the range is not finite (see [`QuantParams::from_range`]).
    pub fn qparams<Q: QInt>(&self, scheme: Scheme) -> Result<QuantParams, Error> {
        if self.mins.is_empty() {
            return Err(no_data());
        }
        // A channel that saw only NaNs gets the range [0, 0].
        let fix = |v: f32| {
            if v.is_infinite() && self.mins.len() == self.maxs.len() {
                0.0
            } else {
                v
            }
        };
        let mins: Vec<f32> = self
            .mins
            .iter()
            .zip(&self.maxs)
            .map(|(&a, &b)| if a > b { 0.0 } else { fix(a) })
            .collect();
        let maxs: Vec<f32> = self
            .mins
            .iter()
            .zip(&self.maxs)
            .map(|(&a, &b)| if a > b { 0.0 } else { fix(b) })
            .collect();
        QuantParams::from_ranges::<Q>(&mins, &maxs, scheme, self.axis)
    }
}

/// A histogram of everything observed, and the clipping range that
/// minimises the expected L2 quantization error.
///
/// For a candidate range the error is estimated from the histogram: values
/// inside the representable range contribute `scale²/12` (uniform rounding
/// error), values outside their squared distance to the clipping bound. The
/// search tries every pair of bin edges on a grid of at most 256 per side.
///
/// ```
/// use mixprec::quant::{observer::HistogramObserver, Scheme};
/// let mut obs = HistogramObserver::new();
/// // 100k values in [-1, 1) and one outlier at 1.5: clipping it costs less
/// // squared error than the coarser step a range up to 1.5 would give all
/// // the others, so the chosen range stops short of it.
/// let mut x: Vec<f32> = (0..100_000).map(|i| (i % 2000) as f32 / 1000.0 - 1.0).collect();
/// x.push(1.5);
/// obs.observe(&x);
/// let p = obs.qparams::<i8>(Scheme::Affine)?;
/// assert!(((127 - p.zero_points()[0]) as f32) * p.scales()[0] < 1.4);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramObserver {
    counts: Vec<f64>,
    range: Option<(f32, f32)>,
}

impl Default for HistogramObserver {
    fn default() -> Self {
        Self::with_bins_unchecked(2048)
    }
}

impl HistogramObserver {
    /// 2048 bins, as PyTorch's.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most bins [`HistogramObserver::with_bins`] accepts (2^20).
    pub const MAX_BINS: usize = 1 << 20;

    /// An observer with `bins` bins.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `bins` is in `1..=MAX_BINS`.
    pub fn with_bins(bins: usize) -> Result<Self, Error> {
        if !(1..=Self::MAX_BINS).contains(&bins) {
            return Err(Error::InvalidParameter {
                name: "bins",
                value: bins.to_string(),
                requirement: "in 1..=2^20",
            });
        }
        Ok(Self::with_bins_unchecked(bins))
    }

    fn with_bins_unchecked(bins: usize) -> Self {
        Self {
            counts: vec![0.0; bins],
            range: None,
        }
    }

    fn bin_of(v: f32, lo: f32, hi: f32, bins: usize) -> usize {
        if hi <= lo {
            return 0;
        }
        // In f64: hi − lo overflows f32 for a range like ±3e38.
        let t = ((v as f64 - lo as f64) / (hi as f64 - lo as f64) * bins as f64).floor();
        (t.max(0.0) as usize).min(bins - 1)
    }

    /// Adds a batch; when it widens the range, existing counts move to the
    /// bins of the wider range that hold their old bin centres.
    pub fn observe(&mut self, x: &[f32]) {
        let Some((blo, bhi)) = batch_range(x) else {
            return;
        };
        if !(blo.is_finite() && bhi.is_finite()) {
            self.range = Some((
                blo.min(self.range.map_or(blo, |r| r.0)),
                bhi.max(self.range.map_or(bhi, |r| r.1)),
            ));
            return;
        }
        let bins = self.counts.len();
        let (lo, hi) = match self.range {
            None => (blo, bhi),
            Some((a, b)) => (a.min(blo), b.max(bhi)),
        };
        if let Some((a, b)) = self.range {
            if (a, b) != (lo, hi) {
                let old = std::mem::replace(&mut self.counts, vec![0.0; bins]);
                let w = (b as f64 - a as f64) / bins as f64;
                for (i, n) in old.into_iter().enumerate().filter(|(_, n)| *n > 0.0) {
                    let centre = (a as f64 + (i as f64 + 0.5) * w) as f32;
                    self.counts[Self::bin_of(centre, lo, hi, bins)] += n;
                }
            }
        }
        self.range = Some((lo, hi));
        for &v in x.iter().filter(|v| !v.is_nan()) {
            self.counts[Self::bin_of(v, lo, hi, bins)] += 1.0;
        }
    }

    /// The full range observed.
    pub fn range(&self) -> Option<(f32, f32)> {
        self.range
    }

    /// The estimated L2 error of quantizing the histogram with these
    /// parameters (see the type's docs).
    fn l2_error(&self, scale: f32, zp: i32, qmin: i32, qmax: i32, lo: f64, w: f64) -> f64 {
        let (rlo, rhi) = (
            ((qmin - zp) as f64) * scale as f64,
            ((qmax - zp) as f64) * scale as f64,
        );
        let step2 = (scale as f64) * (scale as f64) / 12.0;
        let mut err = 0.0;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0.0 {
                continue;
            }
            let c = lo + (i as f64 + 0.5) * w;
            err += n * if c < rlo {
                (rlo - c).powi(2)
            } else if c > rhi {
                (c - rhi).powi(2)
            } else {
                step2
            };
        }
        err
    }

    /// Parameters whose clipping range minimises the estimated L2 error.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when nothing (or only NaN) was observed, or
    /// the range is not finite (see [`QuantParams::from_range`]).
    pub fn qparams<Q: QInt>(&self, scheme: Scheme) -> Result<QuantParams, Error> {
        let (clo, chi) = self.clipping_range(Q::QMIN, Q::QMAX, scheme)?;
        QuantParams::from_range::<Q>(clo, chi, scheme)
    }

    /// The clipping range with the least estimated L2 error for the
    /// integer range `[qmin, qmax]` (the observed range itself when it is
    /// empty or not finite).
    pub(crate) fn clipping_range(
        &self,
        qmin: i32,
        qmax: i32,
        scheme: Scheme,
    ) -> Result<(f32, f32), Error> {
        let (lo, hi) = self.range.ok_or_else(no_data)?;
        if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
            return Ok((lo, hi));
        }
        let bins = self.counts.len();
        let w = (hi as f64 - lo as f64) / bins as f64;
        let stride = bins.div_ceil(256).max(1);
        let edges: Vec<usize> = (0..=bins)
            .step_by(stride)
            .chain(std::iter::once(bins))
            .collect();
        let mut best: Option<(f64, f32, f32)> = None;
        let mut refused = None;
        for (si, &s) in edges.iter().enumerate() {
            for &e in &edges[si + 1..] {
                let (clo, chi) = (
                    (lo as f64 + s as f64 * w) as f32,
                    (lo as f64 + e as f64 * w) as f32,
                );
                let (scale, zp) = match scale_zp_from_range(clo, chi, qmin, qmax, scheme) {
                    Ok(p) => p,
                    Err(e) => {
                        refused = Some(e);
                        continue;
                    }
                };
                let err = self.l2_error(scale, zp, qmin, qmax, lo as f64, w);
                if best.is_none_or(|(b, _, _)| err < b) {
                    best = Some((err, clo, chi));
                }
            }
        }
        // Data was seen; if no candidate range has a finite scale, say why.
        let (_, clo, chi) = best.ok_or_else(|| refused.unwrap_or_else(no_data))?;
        Ok((clo, chi))
    }
}

//! Training losses: each returns the batch-mean loss and its gradient with
//! respect to the model's outputs, in f32.

use crate::dtype::FloatElement;
use crate::error::checked_numel;
use crate::Error;

/// A training loss, passed by value to [`super::train_step`]. Each one
/// returns the mean over the batch and `dL/doutputs` ([`Loss::evaluate`]).
///
/// ```
/// use mixprec::amp::Loss;
/// let logits = [2.0f32, 0.0, 0.0, 1.0]; // a batch of 2, 2 classes
/// let (ce, _) = Loss::CrossEntropy { labels: &[0, 1] }.evaluate(&logits, 2)?;
/// let (mse, grad) = Loss::MeanSquaredError { targets: &[2.0, 0.0, 0.0, 0.0] }.evaluate(&logits, 2)?;
/// assert!((ce - 0.2201).abs() < 1e-4);
/// assert_eq!((mse, grad), (0.25, vec![0.0, 0.0, 0.0, 0.5]));
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss<'a> {
    /// Mean softmax cross-entropy against one class label per row.
    CrossEntropy {
        /// Class of each row, below the number of outputs.
        labels: &'a [u32],
    },
    /// Mean squared error against targets of the outputs' shape, averaged
    /// over every element (PyTorch's `MSELoss()` default reduction).
    MeanSquaredError {
        /// `batch × outputs` targets, row-major.
        targets: &'a [f32],
    },
    /// Knowledge distillation (Hinton, Vinyals & Dean, 2015): the KL
    /// divergence from the teacher's softened distribution to the
    /// student's, both softmaxes at `temperature` T, times T² (so its
    /// gradients keep their size as T changes), mixed with the hard-label
    /// cross-entropy:
    /// `soft_weight · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − soft_weight) · CE(s, labels)`,
    /// averaged over the batch. Its gradient is
    /// `(soft_weight · T · (softmax(s/T) − softmax(t/T)) + (1 − soft_weight) · (softmax(s) − onehot)) / batch`.
    Distillation {
        /// The teacher's logits, `batch × classes`, row-major.
        teacher_logits: &'a [f32],
        /// Hard labels, one per row.
        labels: &'a [u32],
        /// Softmax temperature T: finite and > 0 (Hinton et al. use 2–20).
        temperature: f32,
        /// Weight of the soft (KL) term, in `[0, 1]`.
        soft_weight: f32,
    },
}

impl Loss<'_> {
    /// The batch-mean loss of `outputs` (`batch × width`, row-major, any
    /// float type, read as f32) and `dL/doutputs` in f32. Computed in f64
    /// per row, so the only rounding of consequence is the final one to
    /// f32. NaN or infinite outputs propagate into the loss.
    ///
    /// # Errors
    /// * [`Error::EmptyDimension`] for `width` 0 or an empty batch;
    /// * [`Error::LengthMismatch`] when `outputs` is not a whole number of
    ///   rows, or labels, targets or teacher logits do not match it;
    /// * [`Error::InvalidParameter`] for a label ≥ `width`, a temperature
    ///   that is not finite and > 0, or a soft weight outside `[0, 1]`.
    pub fn evaluate<T: FloatElement>(
        &self,
        outputs: &[T],
        width: usize,
    ) -> Result<(f32, Vec<f32>), Error> {
        let batch = outputs.len().checked_div(width).unwrap_or(0);
        if batch == 0 {
            return Err(Error::EmptyDimension {
                what: "Loss::evaluate (batch, outputs)",
                shape: vec![batch, width],
            });
        }
        let expected = checked_numel(&[batch, width])?;
        if outputs.len() != expected {
            return Err(Error::LengthMismatch {
                what: "Loss::evaluate (outputs = batch × width)",
                expected,
                actual: outputs.len(),
            });
        }
        let out: Vec<f64> = outputs.iter().map(|v| f64::from(v.to_f32())).collect();
        let mut grad = vec![0.0f32; out.len()];
        let mut total = 0.0f64;
        let inv_batch = 1.0 / batch as f64;
        match *self {
            Loss::CrossEntropy { labels } => {
                check_labels(labels, batch, width)?;
                for ((row, g), &label) in out.chunks(width).zip(grad.chunks_mut(width)).zip(labels)
                {
                    let p = softmax(row, 1.0);
                    total += -log_softmax_at(row, 1.0, label as usize);
                    for (c, (g, &pc)) in g.iter_mut().zip(&p).enumerate() {
                        *g = ((pc - onehot(c, label)) * inv_batch) as f32;
                    }
                }
            }
            Loss::MeanSquaredError { targets } => {
                if targets.len() != out.len() {
                    return Err(Error::LengthMismatch {
                        what: "Loss::MeanSquaredError targets (batch × width)",
                        expected: out.len(),
                        actual: targets.len(),
                    });
                }
                let inv_n = 1.0 / out.len() as f64;
                for ((&y, &t), g) in out.iter().zip(targets).zip(grad.iter_mut()) {
                    let d = y - f64::from(t);
                    total += d * d;
                    *g = (2.0 * d * inv_n) as f32;
                }
                return Ok(((total * inv_n) as f32, grad));
            }
            Loss::Distillation {
                teacher_logits,
                labels,
                temperature,
                soft_weight,
            } => {
                check_labels(labels, batch, width)?;
                if teacher_logits.len() != out.len() {
                    return Err(Error::LengthMismatch {
                        what: "Loss::Distillation teacher_logits (batch × classes)",
                        expected: out.len(),
                        actual: teacher_logits.len(),
                    });
                }
                if !(temperature.is_finite() && temperature > 0.0) {
                    return Err(Error::InvalidParameter {
                        name: "Loss::Distillation temperature",
                        value: format!("{temperature:e}"),
                        requirement: "finite and > 0",
                    });
                }
                if !(0.0..=1.0).contains(&soft_weight) {
                    return Err(Error::InvalidParameter {
                        name: "Loss::Distillation soft_weight",
                        value: format!("{soft_weight:e}"),
                        requirement: "in [0, 1]",
                    });
                }
                let (t, a) = (f64::from(temperature), f64::from(soft_weight));
                let teacher: Vec<f64> = teacher_logits.iter().map(|&v| f64::from(v)).collect();
                for (((row, g), trow), &label) in out
                    .chunks(width)
                    .zip(grad.chunks_mut(width))
                    .zip(teacher.chunks(width))
                    .zip(labels)
                {
                    let ps = softmax(row, t);
                    let pt = softmax(trow, t);
                    let p1 = softmax(row, 1.0);
                    // KL(pt ‖ ps) = Σ pt·(log pt − log ps); a zero pt adds 0.
                    let kl: f64 = (0..width)
                        .filter(|&c| pt[c] > 0.0)
                        .map(|c| pt[c] * (log_softmax_at(trow, t, c) - log_softmax_at(row, t, c)))
                        .sum();
                    let hard = -log_softmax_at(row, 1.0, label as usize);
                    total += a * t * t * kl + (1.0 - a) * hard;
                    for (c, g) in g.iter_mut().enumerate() {
                        let soft = a * t * (ps[c] - pt[c]);
                        let hard = (1.0 - a) * (p1[c] - onehot(c, label));
                        *g = ((soft + hard) * inv_batch) as f32;
                    }
                }
            }
        }
        Ok(((total * inv_batch) as f32, grad))
    }
}

fn onehot(c: usize, label: u32) -> f64 {
    if c == label as usize {
        1.0
    } else {
        0.0
    }
}

fn check_labels(labels: &[u32], batch: usize, classes: usize) -> Result<(), Error> {
    if labels.len() != batch {
        return Err(Error::LengthMismatch {
            what: "Loss labels (one per row of outputs)",
            expected: batch,
            actual: labels.len(),
        });
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::InvalidParameter {
            name: "label",
            value: bad.to_string(),
            requirement: "less than the number of classes (outputs)",
        });
    }
    Ok(())
}

/// `softmax(row / t)`, shifted by the row's maximum.
fn softmax(row: &[f64], t: f64) -> Vec<f64> {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = row.iter().map(|&v| ((v - max) / t).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// `log softmax(row / t)[c]`.
fn log_softmax_at(row: &[f64], t: f64, c: usize) -> f64 {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().map(|&v| ((v - max) / t).exp()).sum();
    (row[c] - max) / t - sum.ln()
}

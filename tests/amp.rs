//! Mixed-precision training: the loss scaler, gradients, and training parity.

use mixprec::amp::{
    has_non_finite, softmax_cross_entropy, train_step, AdamW, Linear, Loss, LossScaler, Mlp,
    Optimizer, Precision, ScalerState, Sgd, WorkingRounding,
};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{bf16, f16, Error, FloatElement};
use proptest::prelude::*;

/// An independent model of PyTorch's `_amp_update_scale_`.
struct Model {
    scale: f64,
    tracker: u32,
}

impl Model {
    fn update(&mut self, inf: bool, interval: u32) {
        if inf {
            self.scale *= 0.5;
            self.tracker = 0;
        } else if self.tracker + 1 == interval {
            let grown = self.scale * 2.0;
            if grown <= f32::MAX as f64 {
                self.scale = grown;
            }
            self.tracker = 0;
        } else {
            self.tracker += 1;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random overflow sequences: every scale equals the model's, skipped
    /// steps are exactly the overflowing ones, and a state round trip
    /// continues identically.
    #[test]
    fn scaler_follows_gradscaler(seq in prop::collection::vec(prop::bool::weighted(0.1), 0..400), interval in 1u32..20, init_exp in 100i32..128) {
        let init = 2f32.powi(init_exp);
        let mut s = LossScaler::dynamic_with(init, 2.0, 0.5, interval, (2f32.powi(-24), f32::MAX)).unwrap();
        let mut m = Model { scale: init as f64, tracker: 0 };
        let mut skipped = 0;
        for (i, &inf) in seq.iter().enumerate() {
            let took = s.update(inf);
            m.update(inf, interval);
            skipped += u64::from(inf);
            prop_assert_eq!(took, !inf);
            prop_assert_eq!(s.scale() as f64, m.scale, "step {}", i);
            prop_assert!(s.scale().is_finite());
            if i == seq.len() / 2 {
                s = LossScaler::from_state(s.state()).unwrap();
            }
        }
        prop_assert_eq!(s.skipped_steps(), skipped);
    }

    /// Factors that are not powers of two (1.1, 0.9): PyTorch keeps them as
    /// doubles and stores `(scale · factor)` rounded once to the f32 scale.
    /// The model here is a plain transcription of `_amp_update_scale_`.
    #[test]
    fn scaler_double_factors_follow_pytorch(seq in prop::collection::vec(prop::bool::weighted(0.3), 0..300), interval in 1u32..5, growth in 1.01f64..3.0, backoff in 0.05f64..0.99) {
        let mut s = LossScaler::dynamic_with(65536.0, growth, backoff, interval, (f32::MIN_POSITIVE, f32::MAX)).unwrap();
        let (mut scale, mut tracker) = (65536.0f32, 0u32);
        for &inf in &seq {
            s.update(inf);
            if inf {
                scale = ((scale as f64 * backoff) as f32).max(f32::MIN_POSITIVE);
                tracker = 0;
            } else if tracker + 1 == interval {
                let grown = (scale as f64 * growth) as f32;
                if grown.is_finite() { scale = grown; }
                tracker = 0;
            } else {
                tracker += 1;
            }
            prop_assert_eq!(s.scale().to_bits(), scale.to_bits());
        }
    }

    #[test]
    fn overflow_check_matches_scalar(xs in prop::collection::vec(any::<u32>().prop_map(f32::from_bits), 0..200), off in 0usize..8) {
        let xs = &xs[off.min(xs.len())..];
        prop_assert_eq!(has_non_finite(xs), xs.iter().any(|v| !v.is_finite()));
    }
}

#[test]
fn scaler_defaults_and_errors() {
    let s = LossScaler::dynamic();
    let st = s.state();
    assert_eq!(
        (
            st.scale,
            st.growth_factor,
            st.backoff_factor,
            st.growth_interval
        ),
        (65536.0, 2.0, 0.5, 2000)
    );
    let mut s =
        LossScaler::dynamic_with(f32::MAX / 2.0 * 1.5, 2.0, 0.5, 1, (1.0, f32::MAX)).unwrap();
    s.update(false);
    assert!(
        s.scale().is_finite(),
        "growth refused when it would overflow"
    );
    assert!(LossScaler::dynamic_with(0.0, 2.0, 0.5, 10, (1.0, 2.0)).is_err());
    assert!(LossScaler::dynamic_with(1.0, 1.0, 0.5, 10, (0.5, 2.0)).is_err());
    assert!(LossScaler::dynamic_with(1.0, 2.0, 1.5, 10, (0.5, 2.0)).is_err());
    let mut fixed = LossScaler::fixed(8.0).unwrap();
    assert!(!fixed.update(true));
    assert_eq!(fixed.scale(), 8.0);
    let mut g = vec![8.0f32, 16.0];
    assert!(!fixed.unscale(&mut g));
    assert_eq!(g, [1.0, 2.0]);
    // 1.1 in double vs f32 gives another scale after one growth.
    let mut s = LossScaler::dynamic_with(3.0, 1.1, 0.5, 1, (1.0, f32::MAX)).unwrap();
    s.update(false);
    assert_eq!(s.scale(), 3.3f32); // 3.2999999523: 3 · 1.1 in double, rounded once
    assert_ne!(s.scale(), 3.0f32 * 1.1f32); // 3.3000001907 with an f32 factor
}

/// PyTorch's order: the overflow check sees the scaled gradients, and the
/// reciprocal is formed in double. With scale 0.25 a finite scaled
/// gradient of f32::MAX overflows when unscaled and is not reported, as in
/// `_amp_foreach_non_finite_check_and_unscale_`.
#[test]
fn unscale_checks_before_unscaling() {
    let s = LossScaler::fixed(0.25).unwrap();
    let mut g = vec![f32::MAX, 1.0];
    assert!(!s.unscale(&mut g));
    assert_eq!(g, [f32::INFINITY, 4.0]);
    // inv_scale = (1/3 in double) rounded to f32, then one f32 multiply.
    let s = LossScaler::fixed(3.0).unwrap();
    let mut g = vec![0.7f32];
    s.unscale(&mut g);
    assert_eq!(g[0], 0.7f32 * (1.0f64 / 3.0) as f32);
}

/// `from_state` makes the checks `dynamic_with` makes.
#[test]
fn scaler_state_is_validated() {
    let good = LossScaler::dynamic().state();
    assert!(LossScaler::from_state(good).is_ok());
    let bad = [
        ScalerState {
            scale: f32::NAN,
            ..good
        },
        ScalerState { scale: 0.0, ..good },
        ScalerState {
            scale: f32::INFINITY,
            ..good
        },
        ScalerState {
            growth_factor: f64::NAN,
            ..good
        },
        ScalerState {
            growth_factor: 1.0,
            ..good
        },
        ScalerState {
            backoff_factor: 1.0,
            ..good
        },
        ScalerState {
            backoff_factor: -0.5,
            ..good
        },
        ScalerState {
            growth_interval: 0,
            ..good
        },
        ScalerState {
            growth_tracker: 2000,
            ..good
        },
        ScalerState {
            min_scale: 1e6,
            ..good
        },
        ScalerState {
            max_scale: 1.0,
            ..good
        },
        ScalerState {
            skipped_steps: 5,
            steps: 4,
            ..good
        },
    ];
    for st in bad {
        assert!(
            matches!(
                LossScaler::from_state(st),
                Err(Error::InvalidParameter { .. })
            ),
            "{st:?}"
        );
    }
}

/// f64 forward of `y = act(x·Wᵀ + b)`, for finite differences.
fn forward64(
    x: &[f64],
    w: &[f64],
    b: &[f64],
    batch: usize,
    i: usize,
    o: usize,
    act: Activation,
) -> Vec<f64> {
    let mut y = vec![0.0; batch * o];
    for r in 0..batch {
        for j in 0..o {
            let z: f64 = (0..i).map(|k| x[r * i + k] * w[j * i + k]).sum::<f64>() + b[j];
            y[r * o + j] = match act {
                Activation::Identity => z,
                Activation::Relu => z.max(0.0),
                Activation::Gelu => {
                    0.5 * z
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (z + 0.044715 * z * z * z))
                                .tanh())
                }
            };
        }
    }
    y
}

/// Gradient check of one Linear layer: analytic gradients (f32 layer) of
/// `L = Σ y ⊙ R` against central differences of the f64 forward
/// (h = 1e-6). Tolerance: 1e-3 relative to the gradient's scale, far above
/// f32 rounding (u·Σ|terms| ≈ 1e-6 here) and far below any real error.
#[test]
fn linear_gradients_match_finite_differences() {
    let (batch, i, o) = (3, 5, 4);
    for act in [Activation::Identity, Activation::Relu, Activation::Gelu] {
        let mut rng = StochasticRng::new(9);
        let mut layer = Linear::<f32>::new(i, o, act, 1.0, &mut rng).unwrap();
        let x: Vec<f32> = (0..batch * i)
            .map(|_| (rng.next_u64() >> 40) as f32 / 8e6 - 1.0)
            .collect();
        let r: Vec<f32> = (0..batch * o)
            .map(|_| (rng.next_u64() >> 40) as f32 / 8e6 - 1.0)
            .collect();
        layer.forward(&x, batch, Parallelism::Serial).unwrap();
        let dx = layer.backward(&r, Parallelism::Serial).unwrap();
        let (w, b) = layer.masters();
        let (w64, b64): (Vec<f64>, Vec<f64>) = (
            w.iter().map(|&v| v as f64).collect(),
            b.iter().map(|&v| v as f64).collect(),
        );
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            forward64(x, w, b, batch, i, o, act)
                .iter()
                .zip(&r)
                .map(|(y, &r)| y * r as f64)
                .sum()
        };
        let h = 1e-6;
        let fd = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        let (gw, gb) = layer.grads();
        let check = |analytic: f32, numeric: f64, what: String| {
            assert!(
                (analytic as f64 - numeric).abs() <= 1e-3 * numeric.abs().max(1.0),
                "{act:?} {what}: analytic {analytic} vs numeric {numeric}"
            );
        };
        for p in 0..w.len() {
            let num = fd(&|d| {
                let mut w2 = w64.clone();
                w2[p] += d;
                loss(&x64, &w2, &b64)
            });
            check(gw[p], num, format!("dW[{p}]"));
        }
        for p in 0..b.len() {
            let num = fd(&|d| {
                let mut b2 = b64.clone();
                b2[p] += d;
                loss(&x64, &w64, &b2)
            });
            check(gb[p], num, format!("db[{p}]"));
        }
        for p in 0..x.len() {
            let num = fd(&|d| {
                let mut x2 = x64.clone();
                x2[p] += d;
                loss(&x2, &w64, &b64)
            });
            check(dx[p], num, format!("dx[{p}]"));
        }
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let logits: Vec<f32> = vec![0.3, -1.2, 2.0, 0.0, 0.5, 0.5, -0.7, 1.1];
    let labels = [2u8, 1];
    let (_, g) = softmax_cross_entropy(&logits, &labels, 4).unwrap();
    let loss64 = |l: &[f64]| -> f64 {
        labels
            .iter()
            .enumerate()
            .map(|(r, &y)| {
                let row = &l[r * 4..r * 4 + 4];
                let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
                lse - row[y as usize]
            })
            .sum::<f64>()
            / 2.0
    };
    let l64: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    for p in 0..logits.len() {
        let (mut a, mut b) = (l64.clone(), l64.clone());
        a[p] += 1e-6;
        b[p] -= 1e-6;
        let num = (loss64(&a) - loss64(&b)) / 2e-6;
        assert!(
            (g[p] as f64 - num).abs() < 1e-5,
            "logit {p}: {} vs {num}",
            g[p]
        );
    }
    // f16 logits are read exactly.
    let half: Vec<f16> = logits.iter().map(|&v| f16::from_f32(v)).collect();
    assert!(softmax_cross_entropy(&half, &labels, 4).is_ok());
    assert!(softmax_cross_entropy(&logits, &[7, 0], 4).is_err());
}

#[test]
fn overflowing_steps_are_skipped_and_masters_untouched() {
    let mut rng = StochasticRng::new(3);
    let mut mlp = Mlp::<f16>::new(&[6, 8, 3], Activation::Relu, 1.0, &mut rng).unwrap();
    let mut opt = Sgd::new(0.1, 0.9, 0.0).unwrap();
    // A scale so large the f16 gradients overflow.
    let mut scaler =
        LossScaler::dynamic_with(2f32.powi(40), 2.0, 0.5, 2000, (1.0, f32::MAX)).unwrap();
    let x: Vec<f16> = (0..12)
        .map(|i| f16::from_f32(i as f32 * 0.3 - 1.0))
        .collect();
    let before: Vec<Vec<f32>> = mlp
        .layers()
        .iter()
        .map(|l| l.masters().0.to_vec())
        .collect();
    let out = train_step(
        &mut mlp,
        &mut opt,
        &mut scaler,
        &x,
        Loss::CrossEntropy { labels: &[0, 2] },
        1.0,
        Parallelism::Serial,
    )
    .unwrap();
    assert!(out.skipped);
    assert_eq!(scaler.skipped_steps(), 1);
    assert_eq!(scaler.scale(), 2f32.powi(39));
    let after: Vec<Vec<f32>> = mlp
        .layers()
        .iter()
        .map(|l| l.masters().0.to_vec())
        .collect();
    assert_eq!(before, after, "masters untouched on a skipped step");
    // Backing off until the step goes through.
    let mut steps = 1;
    while train_step(
        &mut mlp,
        &mut opt,
        &mut scaler,
        &x,
        Loss::CrossEntropy { labels: &[0, 2] },
        1.0,
        Parallelism::Serial,
    )
    .unwrap()
    .skipped
    {
        steps += 1;
        assert!(steps < 40);
    }
    assert_eq!(scaler.skipped_steps(), steps);
    assert_ne!(
        before,
        mlp.layers()
            .iter()
            .map(|l| l.masters().0.to_vec())
            .collect::<Vec<_>>()
    );
}

#[test]
fn optimizers_follow_their_formulas() {
    let mut p = vec![1.0f32, -2.0];
    let mut sgd = Sgd::new(0.1, 0.9, 0.01).unwrap();
    sgd.step(0, &mut p, &[0.5, 0.5]).unwrap();
    assert!(
        sgd.step(0, &mut p, &[0.5]).is_err(),
        "one gradient per parameter"
    );
    assert!(sgd.step(5, &mut p, &[0.5, 0.5]).is_err(), "slots are dense");
    assert!(
        sgd.step(0, &mut [1.0], &[0.5]).is_err(),
        "a slot keeps its length"
    );
    assert_eq!(p, [1.0 - 0.1 * (0.5 + 0.01), -2.0 - 0.1 * (0.5 - 0.02)]);
    let mut q = vec![1.0f32];
    let mut adam = AdamW::new(0.01, 0.1).unwrap();
    adam.step(0, &mut q, &[0.2]).unwrap();
    adam.finish_step();
    // First step: m̂ = g, v̂ = g², update = lr·g/(|g| + eps) ≈ lr; decay lr·wd·p first.
    let expected = (1.0 - 0.01 * 0.1) - 0.01 * 0.2 / (0.2 + 1e-8);
    assert!((q[0] - expected).abs() < 1e-7, "{} vs {expected}", q[0]);
    assert!(Sgd::new(-1.0, 0.0, 0.0).is_err());
}

fn digits() -> (Vec<f32>, Vec<u32>) {
    let text = include_str!("../data/optdigits.csv");
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: Vec<f32> = line.split(',').map(|t| t.trim().parse().unwrap()).collect();
        x.extend(v[..64].iter().map(|p| p / 16.0));
        y.push(v[64] as u32);
    }
    (x, y)
}

fn train_and_test<T: FloatElement>(p: Precision, loss_weight: f32) -> (f64, f32, f32) {
    let (x, y) = digits();
    let (train_n, test_n) = (1400, 397);
    let mut rng = StochasticRng::new(42);
    let mut mlp = Mlp::<T>::new(&[64, 64, 10], Activation::Relu, 1.0, &mut rng).unwrap();
    if T::DTYPE == mixprec::DType::BF16 {
        mlp = mlp.with_rounding(WorkingRounding::Stochastic(StochasticRng::new(5)));
    }
    let mut opt = Sgd::new(0.05 / loss_weight, 0.9, 0.0).unwrap();
    let mut scaler = p.scaler();
    let to_t = |v: &[f32]| v.iter().map(|&a| T::from_f32(a)).collect::<Vec<T>>();
    let (mut first, mut last) = (0.0, 0.0);
    for epoch in 0..20 {
        let mut sum = 0.0;
        for b in 0..train_n / 50 {
            let xb = to_t(&x[b * 50 * 64..(b + 1) * 50 * 64]);
            let out = train_step(
                &mut mlp,
                &mut opt,
                &mut scaler,
                &xb,
                Loss::CrossEntropy {
                    labels: &y[b * 50..(b + 1) * 50],
                },
                loss_weight,
                Parallelism::Serial,
            )
            .unwrap();
            sum += out.loss / loss_weight;
        }
        if epoch == 0 {
            first = sum;
        }
        last = sum;
    }
    let logits = mlp
        .forward(&to_t(&x[train_n * 64..]), Parallelism::Serial)
        .unwrap();
    let correct = logits
        .chunks(10)
        .zip(&y[train_n..])
        .filter(|(row, &label)| {
            let best = (0..10)
                .max_by(|&a, &b| row[a].to_f32().total_cmp(&row[b].to_f32()))
                .unwrap();
            best == label as usize
        })
        .count();
    (correct as f64 / test_n as f64, first, last)
}

/// With fixed seeds on the bundled digits: the loss decreases, scaled f16
/// and bf16 reach f32's accuracy within 1.5 percentage points (6 of 397 test
/// images; run to run the f32 accuracy itself moves by about that much
/// between epochs), and with a weak learning signal (loss weight 1e-6, lr
/// compensated) unscaled f16 fails while scaled f16 does not.
#[test]
fn training_parity_on_digits() {
    let (acc32, first, last) = train_and_test::<f32>(Precision::F32, 1.0);
    assert!(last < first * 0.5, "f32 loss {first} -> {last}");
    assert!(acc32 > 0.85, "f32 accuracy {acc32}");
    let (acc16, first16, last16) = train_and_test::<f16>(Precision::F16, 1.0);
    assert!(last16 < first16 * 0.5);
    let (accbf, _, _) = train_and_test::<bf16>(Precision::Bf16, 1.0);
    assert!((acc16 - acc32).abs() <= 0.015, "f16 {acc16} vs f32 {acc32}");
    assert!(
        (accbf - acc32).abs() <= 0.015,
        "bf16 {accbf} vs f32 {acc32}"
    );

    let (weak32, _, _) = train_and_test::<f32>(Precision::F32, 1e-6);
    let (weak16, _, _) = train_and_test::<f16>(Precision::F16, 1e-6);
    let (weak_noscale, _, _) = train_and_test::<f16>(Precision::F16NoScale, 1e-6);
    assert!(
        (weak16 - weak32).abs() <= 0.015,
        "scaled f16 {weak16} vs f32 {weak32}"
    );
    assert!(
        weak_noscale < weak32 - 0.2,
        "unscaled f16 should fail: {weak_noscale} vs {weak32}"
    );
}

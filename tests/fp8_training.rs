//! FP8 training (`amp::fp8`): the delayed-scaling state machine against an
//! independent model, the gradients of an FP8 `Linear` against f64 within
//! the bound its element formats imply, typed errors, and training parity
//! on the bundled digits within 1.5 percentage points of f32.

#[path = "../examples/common/mod.rs"]
mod common;

use mixprec::amp::fp8::{DelayedScaling, Fp8Format, Fp8Recipe, Fp8Scaling};
use mixprec::amp::{train_step, Linear, Loss, Mlp, Precision, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{Error, Tensor};
use proptest::prelude::*;

/// The delayed-scaling rule written out plainly: all finite amaxes ever
/// recorded, the scale from the largest of the last `len` (when finite and
/// > 0), non-finite ones only counted.
struct Model {
    seen: Vec<f32>,
    len: usize,
    margin: i32,
    max: f32,
    scale: f32,
    overflows: u64,
}

impl Model {
    fn record(&mut self, amax: f32) {
        if amax.is_nan() || amax.is_infinite() {
            self.overflows += 1;
            return;
        }
        self.seen.push(amax.abs());
        let window = &self.seen[self.seen.len().saturating_sub(self.len)..];
        let m = window.iter().cloned().fold(0.0f32, f32::max);
        let s = m * 2f32.powi(self.margin) / self.max;
        if s.is_finite() && s > 0.0 {
            self.scale = s;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn delayed_scaling_follows_the_model(
        len in 1usize..12,
        margin in -3i32..4,
        e5 in any::<bool>(),
        amaxes in prop::collection::vec(
            prop_oneof![
                6 => (-20i32..20, 0.5f32..1.0).prop_map(|(e, m)| m * 2f32.powi(e)),
                1 => Just(0.0f32),
                1 => Just(f32::INFINITY),
                1 => Just(f32::NAN),
                1 => Just(f32::MAX),
                1 => Just(1e-44f32),
                1 => (0.5f32..1.0).prop_map(|m| -m),
            ],
            0..60,
        ),
    ) {
        let max = if e5 { 57344.0 } else { 448.0 };
        let mut d = DelayedScaling::new(len, margin, max)?;
        let mut m = Model { seen: Vec::new(), len, margin, max, scale: 1.0, overflows: 0 };
        for &a in &amaxes {
            d.record(a);
            m.record(a);
            prop_assert_eq!(d.scale().to_bits(), m.scale.to_bits());
            prop_assert_eq!(d.overflows(), m.overflows);
            let start = m.seen.len().saturating_sub(len);
            prop_assert_eq!(d.history(), m.seen[start..].to_vec());
        }
    }
}

#[test]
fn bad_recipes_are_typed_errors() {
    assert!(matches!(
        DelayedScaling::new(0, 0, 448.0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        DelayedScaling::new(4, 65, 448.0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        DelayedScaling::new(4, 0, f32::NAN),
        Err(Error::InvalidParameter { .. })
    ));
    let mut mlp = Mlp::<f32>::new(
        &[16, 8, 4],
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(1),
    )
    .unwrap();
    let bad = Fp8Recipe {
        format: Fp8Format::Hybrid,
        scaling: Fp8Scaling::Delayed {
            history: 0,
            margin: 0,
        },
    };
    assert!(mlp.set_fp8(Some(bad)).is_err());
    assert!(
        mlp.layers()[0].fp8_recipe().is_none(),
        "a rejected recipe changes nothing"
    );
    // An empty batch: empty outputs, zero weight gradients, no panic.
    for p in [
        Precision::Fp8HybridDelayed,
        Precision::Fp8HybridCurrent,
        Precision::Fp8E4M3NoScale,
    ] {
        let mut layer =
            Linear::<f32>::new(10, 3, Activation::Relu, 1.0, &mut StochasticRng::new(4)).unwrap();
        layer.set_fp8(p.fp8_recipe()).unwrap();
        assert!(layer
            .forward(&[], 0, Parallelism::Serial)
            .unwrap()
            .is_empty());
        assert!(layer.backward(&[], Parallelism::Serial).unwrap().is_empty());
        assert!(layer.grads().0.iter().all(|&g| g == 0.0));
        // A wrong input length is an error, and records nothing.
        let before = layer.fp8_scales();
        assert!(layer.forward(&[1.0; 7], 1, Parallelism::Serial).is_err());
        assert_eq!(layer.fp8_scales(), before);
    }
    // An infinite input reaches the loss as NaN (not saturated to a finite
    // FP8 value), so the step is skipped and the masters stay (found by the
    // fp8_train_step fuzz target).
    for p in [
        Precision::Fp8HybridDelayed,
        Precision::Fp8HybridCurrent,
        Precision::Fp8E4M3NoScale,
    ] {
        let mut mlp = Mlp::<f32>::new(
            &[3, 4, 2],
            Activation::Relu,
            1.0,
            &mut StochasticRng::new(1),
        )
        .unwrap();
        mlp.set_fp8(p.fp8_recipe()).unwrap();
        let (mut opt, mut scaler) = (Sgd::new(0.1, 0.5, 0.0).unwrap(), p.scaler());
        let before = mlp.layers()[0].masters().0.to_vec();
        let x = [1.0, f32::INFINITY, 0.5, 0.25, -1.0, 2.0];
        let out = train_step(
            &mut mlp,
            &mut opt,
            &mut scaler,
            &x,
            Loss::CrossEntropy { labels: &[0, 1] },
            1.0,
            Parallelism::Serial,
        )
        .unwrap();
        assert!(out.skipped && out.loss.is_nan(), "{}: {out:?}", p.name());
        assert_eq!(mlp.layers()[0].masters().0, &before[..]);
        assert!(mlp.layers()[0]
            .fp8_scales()
            .unwrap()
            .iter()
            .all(|s| s.is_finite() && *s > 0.0));
    }
    // Backward before any forward pass: an error, not a panic.
    let mut layer =
        Linear::<f32>::new(16, 8, Activation::Identity, 1.0, &mut StochasticRng::new(2)).unwrap();
    layer
        .set_fp8(Precision::Fp8HybridCurrent.fp8_recipe())
        .unwrap();
    assert!(layer.backward(&[], Parallelism::Serial).is_err());
}

/// Exact (f64) products of f32 matrices: `a` (m × k) · `b` (k × n).
fn matmul64(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64)
                .sum();
        }
    }
    c
}

/// The error bound of a product of quantized operands: per element,
/// |x̂ − x| ≤ u·|x| + s·d/2 (u the format's unit roundoff, d its smallest
/// subnormal, s the tensor's scale = amax / max_normal under current
/// scaling), and the f32 accumulation adds γ_K = K·2^-24/(1 − K·2^-24)
/// of Σ|â||b̂|. Returns Σ_k (|a|+ea)(|b|+eb) − |a||b| + γ_K Σ (|a|+ea)(|b|+eb).
fn bound(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    (ua, da): (f64, f64),
    (ub, db): (f64, f64),
) -> Vec<f64> {
    let amax = |x: &[f32]| x.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
    let (sa, sb) = (amax(a) / max_of(da), amax(b) / max_of(db));
    let g = k as f64 * 2f64.powi(-24) / (1.0 - k as f64 * 2f64.powi(-24));
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut e, mut s) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let (x, y) = ((a[i * k + kk] as f64).abs(), (b[kk * n + j] as f64).abs());
                let (ex, ey) = (ua * x + sa * da / 2.0, ub * y + sb * db / 2.0);
                e += (x + ex) * (y + ey) - x * y;
                s += (x + ex) * (y + ey);
            }
            out[i * n + j] = e + g * s;
        }
    }
    out
}

/// max normal from the smallest subnormal (E4M3: 2^-9 → 448; E5M2: 2^-16 → 57344).
fn max_of(d: f64) -> f64 {
    if d == 2f64.powi(-9) {
        448.0
    } else {
        57344.0
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// An FP8 layer's forward output and gradients against the f64 products
    /// of its unquantized operands, within the bound of the element formats
    /// (current scaling: s = amax / max_normal exactly).
    #[test]
    fn fp8_linear_gradients_within_the_format_bound(
        seed in any::<u64>(), batch in 1usize..20, i in 1usize..40, o in 1usize..24, hybrid in any::<bool>(),
    ) {
        let mut r = StochasticRng::new(seed);
        let mut uni = |scale: f32| ((r.next_u64() >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0) * scale;
        let w: Vec<f32> = (0..o * i).map(|_| uni(0.5)).collect();
        let x: Vec<f32> = (0..batch * i).map(|_| uni(2.0)).collect();
        let dy: Vec<f32> = (0..batch * o).map(|_| uni(1e-3)).collect();
        let mut layer = Linear::<f32>::from_weights(&Tensor::from_vec(&[o, i], w.clone())?, vec![0.0; o], Activation::Identity)?;
        let format = if hybrid { Fp8Format::Hybrid } else { Fp8Format::E4M3 };
        layer.set_fp8(Some(Fp8Recipe { format, scaling: Fp8Scaling::CURRENT }))?;
        let y = layer.forward(&x, batch, Parallelism::Serial)?;
        let dx = layer.backward(&dy, Parallelism::Serial)?;
        let dw = layer.grads().0.to_vec();
        let e4 = (2f64.powi(-4), 2f64.powi(-9));
        let e5 = (2f64.powi(-3), 2f64.powi(-16));
        let g = if hybrid { e5 } else { e4 };
        let t = |m: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..cols * rows).map(|idx| m[(idx % rows) * cols + idx / rows]).collect()
        };
        let wt = t(&w, o, i); // i × o
        // Y = X·Wᵀ; dX = dY·W; dW = dYᵀ·X.
        for (got, exact, bnd, what) in [
            (y.clone(), matmul64(&x, &wt, batch, i, o), bound(&x, &wt, (batch, i, o), e4, e4), "Y"),
            (dx.clone(), matmul64(&dy, &w, batch, o, i), bound(&dy, &w, (batch, o, i), g, e4), "dX"),
            (dw.clone(), matmul64(&t(&dy, batch, o), &x, o, batch, i), bound(&t(&dy, batch, o), &x, (o, batch, i), g, e4), "dW"),
        ] {
            for ((&v, &e), &b) in got.iter().zip(&exact).zip(&bnd) {
                prop_assert!((v as f64 - e).abs() <= b, "{what}: {v} vs exact {e}, bound {b}");
            }
        }
        // The bound is not vacuous: relative to Σ|x||w| it is about 2u
        // (E4M3: u = 2^-4), far from 1. Over the whole output, not element by
        // element: the format's absolute spacing is per tensor (scale ·
        // smallest subnormal), so an output whose operands are all near 0
        // next to the tensor's amax (seed 191865161871278520, batch 9, i 1,
        // o 2: x ≈ 1e-5 beside amax ≈ 2) has a bound above 0.15 Σ|x||w|
        // without the bound being loose.
        let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let abs_wt: Vec<f32> = wt.iter().map(|v| v.abs()).collect();
        let size: f64 = matmul64(&abs_x, &abs_wt, batch, i, o).iter().sum();
        let total: f64 = bound(&x, &wt, (batch, i, o), e4, e4).iter().sum();
        prop_assert!(total <= 0.15 * size + 1e-30, "bound {total} against Σ|x||w| = {size}");
    }
}

/// The digits MLP trained in f32 and with each scaled FP8 policy, same
/// seed and schedule: the FP8 runs end within 1.5 pp of f32.
#[test]
fn fp8_training_matches_f32_on_digits() {
    let data = common::parse_digits(common::DIGITS_CSV).unwrap();
    let (train, test) = common::holdout_split(&data, 5);
    let run = |p: Precision| -> f64 {
        let mut mlp = common::train_mlp(
            &train,
            &[64],
            p.fp8_recipe(),
            20,
            3,
            Parallelism::Serial,
            |_| {},
        )
        .unwrap();
        let logits = mlp.infer(&test.x, Parallelism::Serial).unwrap();
        // Inference on a shared model gives the training forward's bits.
        let fwd = mlp.forward(&test.x, Parallelism::Serial).unwrap();
        assert_eq!(
            logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            fwd.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        common::correct_predictions(&logits, &test.y) as f64 / test.y.len() as f64
    };
    let base = run(Precision::F32);
    for p in [
        Precision::Fp8HybridDelayed,
        Precision::Fp8HybridCurrent,
        Precision::Fp8E4M3Delayed,
    ] {
        let a = run(p);
        eprintln!("{}: {a} vs f32 {base}", p.name());
        assert!((a - base).abs() <= 0.015, "{}: {a} vs f32 {base}", p.name());
    }
}

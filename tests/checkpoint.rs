//! Checkpoints (feature `serde`): a run saved half way, dropped, loaded and
//! continued ends bit-identical to the uninterrupted run — f32 masters,
//! working copies, optimizer moments, loss-scaler state and RNG streams.
//! Also: every serializable type round-trips, and a tampered checkpoint is
//! a typed error on load.

use mixprec::amp::fp8::{DelayedScaling, Fp8Scaling};
use mixprec::amp::{
    train_step, AdamW, GradHistogram, Loss, LossScaler, Mlp, Optimizer, Precision, Sgd,
    WorkingRounding,
};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::quant::{QuantParams, Scheme};
use mixprec::{bf16, f16, DType, FloatElement, F8E4M3, F8E5M2};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Everything a training run carries from step to step.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize, O: Serialize"))]
#[serde(bound(deserialize = "T: DeserializeOwned + FloatElement, O: DeserializeOwned"))]
struct Run<T, O> {
    mlp: Mlp<T>,
    opt: O,
    scaler: LossScaler,
    shuffle: StochasticRng,
    order: Vec<usize>,
    step: usize,
}

const N: usize = 96;
const BATCH: usize = 16;

fn data() -> (Vec<f32>, Vec<u32>) {
    let mut rng = StochasticRng::new(99);
    let x: Vec<f32> = (0..N * 8)
        .map(|_| (rng.next_u64() >> 40) as f32 / 16_777_216.0 - 0.5)
        .collect();
    let y = x
        .chunks(8)
        .map(|r| u32::from(r[0] + r[1] > 0.0) + u32::from(r[2] > 0.2))
        .collect();
    (x, y)
}

/// Steps `run` until `until` steps have been taken: a fresh shuffle each
/// epoch, batches in order, as `train_mnist` does.
fn advance<T: FloatElement, O: Optimizer>(run: &mut Run<T, O>, until: usize) {
    let (x, y) = data();
    let per_epoch = N / BATCH;
    while run.step < until {
        if run.step.is_multiple_of(per_epoch) {
            for i in (1..N).rev() {
                let j = (run.shuffle.next_u64() % (i as u64 + 1)) as usize;
                run.order.swap(i, j);
            }
        }
        let b = run.step % per_epoch;
        let idx = &run.order[b * BATCH..(b + 1) * BATCH];
        let xb: Vec<T> = idx
            .iter()
            .flat_map(|&i| x[i * 8..(i + 1) * 8].iter().map(|&v| T::from_f32(v)))
            .collect();
        let yb: Vec<u32> = idx.iter().map(|&i| y[i]).collect();
        train_step(
            &mut run.mlp,
            &mut run.opt,
            &mut run.scaler,
            &xb,
            Loss::CrossEntropy { labels: &yb },
            1.0,
            Parallelism::Serial,
        )
        .unwrap();
        run.step += 1;
    }
}

fn fresh<T: FloatElement, O>(opt: O, precision: Precision, stochastic: bool) -> Run<T, O> {
    let mut rng = StochasticRng::new(1);
    let mut mlp = Mlp::<T>::new(&[8, 12, 3], Activation::Relu, 1.0, &mut rng).unwrap();
    if stochastic {
        mlp = mlp.with_rounding(WorkingRounding::Stochastic(StochasticRng::new(77)));
    }
    // FP8 policies: the layers' amax histories are part of the run (a
    // 3-step history, so that amaxes roll out of it before and after the
    // checkpoint).
    let recipe = precision.fp8_recipe().map(|mut r| {
        if let Fp8Scaling::Delayed { margin, .. } = r.scaling {
            r.scaling = Fp8Scaling::Delayed { history: 3, margin };
        }
        r
    });
    mlp.set_fp8(recipe).unwrap();
    Run {
        mlp,
        opt,
        // A large initial scale, so the f16 run skips steps and backs off
        // before the checkpoint: the scaler's state matters.
        scaler: if precision == Precision::F16 {
            LossScaler::dynamic_with(2f32.powi(30), 2.0, 0.5, 3, (1.0, 2f32.powi(40))).unwrap()
        } else {
            precision.scaler()
        },
        shuffle: StochasticRng::new(5),
        order: (0..N).collect(),
        step: 0,
    }
}

fn bits<T: FloatElement, O>(run: &Run<T, O>) -> Vec<u32> {
    run.mlp
        .layers()
        .iter()
        .flat_map(|l| {
            l.masters()
                .0
                .iter()
                .chain(l.masters().1)
                .map(|v| v.to_bits())
        })
        .collect()
}

fn resume_is_bit_identical<T, O>(opt: O, precision: Precision, stochastic: bool)
where
    T: FloatElement + Serialize + DeserializeOwned,
    O: Optimizer + Clone + Serialize + DeserializeOwned,
{
    let total = 4 * N / BATCH; // 4 epochs
    let mut straight = fresh::<T, O>(opt.clone(), precision, stochastic);
    advance(&mut straight, total);

    let mut first = fresh::<T, O>(opt, precision, stochastic);
    advance(&mut first, total / 2 + 1); // mid-epoch
    let saved = serde_json::to_string(&first).unwrap();
    drop(first);
    let mut resumed: Run<T, O> = serde_json::from_str(&saved).unwrap();
    advance(&mut resumed, total);

    assert_eq!(
        bits(&straight),
        bits(&resumed),
        "{precision:?}: masters differ"
    );
    // Working copies, optimizer state, scaler and RNGs: the whole run
    // serializes to the same text.
    assert_eq!(
        serde_json::to_string(&straight).unwrap(),
        serde_json::to_string(&resumed).unwrap(),
        "{precision:?}: state differs"
    );
    if precision == Precision::F16 {
        assert!(straight.scaler.skipped_steps() > 0, "the scaler backed off");
    }
}

#[test]
fn resume_is_bit_identical_for_every_precision_and_optimizer() {
    let sgd = Sgd::new(0.1, 0.9, 1e-4).unwrap();
    let adam = AdamW::new(0.01, 0.01).unwrap();
    resume_is_bit_identical::<f32, _>(sgd.clone(), Precision::F32, false);
    resume_is_bit_identical::<bf16, _>(sgd.clone(), Precision::Bf16, true);
    resume_is_bit_identical::<f16, _>(sgd, Precision::F16, false);
    resume_is_bit_identical::<f16, _>(adam.clone(), Precision::F16, false);
    resume_is_bit_identical::<bf16, _>(adam, Precision::Bf16, true);
    // FP8: the delayed-scaling histories carry over.
    resume_is_bit_identical::<f32, _>(
        Sgd::new(0.05, 0.9, 0.0).unwrap(),
        Precision::Fp8HybridDelayed,
        false,
    );
    resume_is_bit_identical::<f32, _>(
        Sgd::new(0.05, 0.9, 0.0).unwrap(),
        Precision::Fp8HybridCurrent,
        false,
    );
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let text = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, v, "{text}");
}

#[test]
fn formats_and_parameters_round_trip() {
    // FP8 as bit patterns: every one of the 256, NaNs included, exactly.
    for b in 0..=255u8 {
        let (x, y) = (F8E4M3::from_bits(b), F8E5M2::from_bits(b));
        let text = serde_json::to_string(&(x, y)).unwrap();
        assert_eq!(text, format!("[{b},{b}]"));
        let (x2, y2): (F8E4M3, F8E5M2) = serde_json::from_str(&text).unwrap();
        assert_eq!((x2.to_bits(), y2.to_bits()), (b, b));
    }
    assert_eq!(
        serde_json::to_string(&DType::F8E5M2).unwrap(),
        "\"f8_e5m2\""
    );
    for d in DType::ALL {
        round_trip(&d);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!("\"{}\"", d.name())
        );
    }
    round_trip(&QuantParams::from_range::<i8>(-1.0, 3.0, Scheme::Affine).unwrap());
    round_trip(&QuantParams::per_channel::<u8>(vec![0.5, 0.25], vec![3, 128], 1).unwrap());
    round_trip(&LossScaler::dynamic());
    round_trip(&GradHistogram::default());
    round_trip(&Precision::F16);
    round_trip(&StochasticRng::new(u64::MAX));
    round_trip(&vec![f16::from_f32(0.1), f16::MAX]);
    round_trip(&vec![bf16::from_f32(-3.5), bf16::MIN_POSITIVE]);
}

#[test]
fn tampered_checkpoints_are_errors() {
    let bad = |text: &str| -> String {
        let e = serde_json::from_str::<QuantParams>(text)
            .unwrap_err()
            .to_string();
        assert!(!e.is_empty());
        e
    };
    let ok = r#"{"scales":[0.5],"zero_points":[3],"axis":null,"qmin":-128,"qmax":127}"#;
    serde_json::from_str::<QuantParams>(ok).unwrap();
    assert!(
        bad(r#"{"scales":[0.0],"zero_points":[3],"axis":null,"qmin":-128,"qmax":127}"#)
            .contains("scale")
    );
    bad(r#"{"scales":[0.5],"zero_points":[300],"axis":null,"qmin":-128,"qmax":127}"#);
    bad(r#"{"scales":[0.5,1.0],"zero_points":[3],"axis":0,"qmin":-128,"qmax":127}"#);
    bad(r#"{"scales":[0.5,1.0],"zero_points":[3,4],"axis":null,"qmin":-128,"qmax":127}"#);
    bad(r#"{"scales":[0.5],"zero_points":[3],"axis":null,"qmin":127,"qmax":-128}"#);
    // A storage range no type has: the zero point 500 would pass it (issue 27).
    bad(r#"{"scales":[0.5],"zero_points":[500],"axis":null,"qmin":-1000,"qmax":1000}"#);

    let mut state = LossScaler::dynamic().state();
    state.growth_interval = 0;
    let text = serde_json::to_string(&state).unwrap();
    assert!(serde_json::from_str::<LossScaler>(&text).is_err());
    assert!(serde_json::from_str::<Sgd>(
        r#"{"lr":-1.0,"momentum":0.9,"weight_decay":0.0,"velocity":[]}"#
    )
    .is_err());
    assert!(serde_json::from_str::<Sgd>(
        r#"{"lr":0.1,"momentum":1.0,"weight_decay":0.0,"velocity":[]}"#
    )
    .is_err());
    assert!(serde_json::from_str::<AdamW>(
        r#"{"lr":0.1,"betas":[0.9,0.999],"eps":1e-8,"weight_decay":0.0,"t":1,"m":[[1.0]],"v":[[1.0,2.0]]}"#
    )
    .is_err());

    // Delayed-scaling states out of their invariants, and an FP8 layer
    // whose state does not fit its recipe.
    let mut d = DelayedScaling::new(4, 0, 448.0).unwrap();
    d.record(3.0);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        serde_json::from_value::<DelayedScaling>(v.clone()).unwrap(),
        d
    );
    for (field, value) in [
        ("next", serde_json::json!(4)),
        ("filled", serde_json::json!(5)),
        ("scale", serde_json::json!(0.0)),
        ("max_normal", serde_json::json!(-1.0)),
        ("history", serde_json::json!([])),
        ("history", serde_json::json!([1.0, -2.0, 0.0, 0.0])),
    ] {
        let mut t = v.clone();
        t[field] = value;
        assert!(
            serde_json::from_value::<DelayedScaling>(t).is_err(),
            "{field}"
        );
    }
    let mut fp8 = Mlp::<f32>::new(
        &[3, 4, 2],
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(1),
    )
    .unwrap();
    fp8.set_fp8(Precision::Fp8HybridDelayed.fp8_recipe())
        .unwrap();
    let mut v: serde_json::Value = serde_json::to_value(&fp8).unwrap();
    assert!(serde_json::from_value::<Mlp<f32>>(v.clone()).is_ok());
    v["layers"][0]["fp8"]["dy"]["Delayed"]["max_normal"] = serde_json::json!(448.0);
    assert!(
        serde_json::from_value::<Mlp<f32>>(v).is_err(),
        "E5M2 dY with E4M3's max"
    );

    // An Mlp whose weights were cut short, or whose layers do not chain.
    let mlp = Mlp::<f32>::new(
        &[3, 4, 2],
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(1),
    )
    .unwrap();
    let mut v: serde_json::Value = serde_json::to_value(&mlp).unwrap();
    v["layers"][0]["master_w"].as_array_mut().unwrap().pop();
    let e = serde_json::from_value::<Mlp<f32>>(v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("master weights"), "{e}");
    let mut v: serde_json::Value = serde_json::to_value(&mlp).unwrap();
    v["layers"][1]["in_features"] = 5.into();
    assert!(serde_json::from_value::<Mlp<f32>>(v).is_err());
    let v = serde_json::json!({"layers": [], "rounding": "NearestEven"});
    assert!(serde_json::from_value::<Mlp<f32>>(v).is_err());
}

/// The checkpoints above are JSON: they are exact only if serde_json
/// writes and reads back every finite f32 bit for bit. Checked on 300,000
/// random finite patterns, every binade's extremes, and subnormals.
#[test]
fn json_round_trips_f32_bits() {
    let mut rng = StochasticRng::new(2024);
    let mut values: Vec<f32> = (0..300_000)
        .map(|_| f32::from_bits((rng.next_u64() >> 32) as u32))
        .filter(|v| v.is_finite())
        .collect();
    for e in 0..255u32 {
        values.extend([
            f32::from_bits(e << 23),
            f32::from_bits((e << 23) | 0x7F_FFFF),
        ]);
    }
    values.extend((1..1000).map(f32::from_bits));
    let text = serde_json::to_string(&values).unwrap();
    let back: Vec<f32> = serde_json::from_str(&text).unwrap();
    let bad = values
        .iter()
        .zip(&back)
        .find(|(a, b)| a.to_bits() != b.to_bits());
    assert!(bad.is_none(), "{bad:?}");
}

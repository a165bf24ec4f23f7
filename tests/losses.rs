//! The training losses against independent f64 formulas: the loss value,
//! and the gradient against an f64 central finite difference of that
//! formula. Also `Mlp::infer` against `Mlp::forward`.

use mixprec::amp::{train_step, Loss, LossScaler, Mlp, Precision, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{bf16, f16, Error, FloatElement};
use proptest::prelude::*;

fn log_softmax(row: &[f64], t: f64) -> Vec<f64> {
    let z: Vec<f64> = row.iter().map(|v| v / t).collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    z.iter().map(|v| v - lse).collect()
}

/// The losses written directly from their definitions, in f64.
fn reference(loss: &Loss<'_>, out: &[f64], width: usize) -> f64 {
    let batch = out.len() / width;
    match *loss {
        Loss::CrossEntropy { labels } => {
            out.chunks(width)
                .zip(labels)
                .map(|(row, &l)| -log_softmax(row, 1.0)[l as usize])
                .sum::<f64>()
                / batch as f64
        }
        Loss::MeanSquaredError { targets } => {
            out.iter()
                .zip(targets)
                .map(|(y, &t)| (y - t as f64).powi(2))
                .sum::<f64>()
                / out.len() as f64
        }
        Loss::Distillation {
            teacher_logits,
            labels,
            temperature,
            soft_weight,
        } => {
            let (t, a) = (temperature as f64, soft_weight as f64);
            let teacher: Vec<f64> = teacher_logits.iter().map(|&v| v as f64).collect();
            let mut total = 0.0;
            for ((s, tl), &l) in out.chunks(width).zip(teacher.chunks(width)).zip(labels) {
                let (ls, lt) = (log_softmax(s, t), log_softmax(tl, t));
                let kl: f64 = lt.iter().zip(&ls).map(|(q, p)| q.exp() * (q - p)).sum();
                total += a * t * t * kl + (1.0 - a) * -log_softmax(s, 1.0)[l as usize];
            }
            total / batch as f64
        }
    }
}

/// Loss within 1e-6 relative of the f64 formula; each gradient entry within
/// 1e-6 + 1e-4·|fd| of the central difference (step 1e-5: truncation
/// error ~1e-10, rounding ~1e-11, far below the f32 rounding of the
/// gradient itself, ~6e-8 relative).
fn check_gradient(loss: &Loss<'_>, out: &[f32], width: usize) -> Result<(), TestCaseError> {
    let (value, grad) = loss.evaluate(out, width)?;
    let wide: Vec<f64> = out.iter().map(|&v| v as f64).collect();
    let want = reference(loss, &wide, width);
    prop_assert!(
        (value as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
        "loss {} vs f64 {}",
        value,
        want
    );
    let h = 1e-5;
    for i in 0..out.len() {
        let (mut up, mut down) = (wide.clone(), wide.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (reference(loss, &up, width) - reference(loss, &down, width)) / (2.0 * h);
        prop_assert!(
            (grad[i] as f64 - fd).abs() <= 1e-6 + 1e-4 * fd.abs(),
            "d/d out[{}]: {} vs finite difference {}",
            i,
            grad[i],
            fd
        );
    }
    Ok(())
}

fn rows() -> impl Strategy<Value = (usize, usize, Vec<f32>, Vec<f32>, Vec<u32>)> {
    (1usize..5, 2usize..7).prop_flat_map(|(batch, width)| {
        let n = batch * width;
        (
            Just(batch),
            Just(width),
            prop::collection::vec(-6.0f32..6.0, n),
            prop::collection::vec(-6.0f32..6.0, n),
            prop::collection::vec(0..width as u32, batch),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn cross_entropy_gradient((_, width, out, _, labels) in rows()) {
        check_gradient(&Loss::CrossEntropy { labels: &labels }, &out, width)?;
    }

    #[test]
    fn mse_gradient((_, width, out, targets, _) in rows()) {
        check_gradient(&Loss::MeanSquaredError { targets: &targets }, &out, width)?;
    }

    #[test]
    fn distillation_gradient((_, width, out, teacher, labels) in rows(),
                             temperature in prop_oneof![Just(1.0f32), 0.5f32..20.0],
                             soft_weight in prop_oneof![Just(0.0f32), Just(1.0f32), 0.0f32..1.0]) {
        let loss = Loss::Distillation { teacher_logits: &teacher, labels: &labels, temperature, soft_weight };
        check_gradient(&loss, &out, width)?;
    }
}

#[test]
fn distillation_limits() {
    // soft_weight 0 is cross-entropy; a student equal to its teacher has
    // KL 0, so soft_weight 1 gives loss 0 and gradient 0.
    let s = [1.0f32, -0.5, 2.0, 0.0, 0.25, -1.0];
    let labels = [2u32, 0];
    let ce = Loss::CrossEntropy { labels: &labels }
        .evaluate(&s, 3)
        .unwrap();
    let hard = Loss::Distillation {
        teacher_logits: &s,
        labels: &labels,
        temperature: 4.0,
        soft_weight: 0.0,
    }
    .evaluate(&s, 3)
    .unwrap();
    assert_eq!(ce, hard);
    let (kl, g) = Loss::Distillation {
        teacher_logits: &s,
        labels: &labels,
        temperature: 4.0,
        soft_weight: 1.0,
    }
    .evaluate(&s, 3)
    .unwrap();
    assert!(
        kl.abs() < 1e-7 && g.iter().all(|v| v.abs() < 1e-7),
        "{kl} {g:?}"
    );
}

#[test]
fn loss_errors_name_the_problem() {
    let out = [0.0f32; 6];
    let err = |l: Loss<'_>, w| l.evaluate(&out, w).unwrap_err();
    assert!(matches!(
        err(Loss::CrossEntropy { labels: &[0] }, 3),
        Error::LengthMismatch {
            expected: 2,
            actual: 1,
            ..
        }
    ));
    assert!(matches!(
        err(Loss::CrossEntropy { labels: &[0, 3] }, 3),
        Error::InvalidParameter { name: "label", .. }
    ));
    assert!(matches!(
        err(Loss::CrossEntropy { labels: &[] }, 0),
        Error::EmptyDimension { .. }
    ));
    assert!(matches!(
        err(Loss::CrossEntropy { labels: &[0] }, 4),
        Error::LengthMismatch { .. }
    ));
    assert!(matches!(
        err(Loss::MeanSquaredError { targets: &[0.0; 5] }, 3),
        Error::LengthMismatch {
            expected: 6,
            actual: 5,
            ..
        }
    ));
    for (t, a) in [
        (0.0, 0.5),
        (f32::NAN, 0.5),
        (f32::INFINITY, 0.5),
        (2.0, 1.5),
        (2.0, f32::NAN),
        (2.0, -0.1),
    ] {
        let l = Loss::Distillation {
            teacher_logits: &out,
            labels: &[0, 1],
            temperature: t,
            soft_weight: a,
        };
        assert!(
            matches!(err(l, 3), Error::InvalidParameter { .. }),
            "{t} {a}"
        );
    }
    let short = Loss::Distillation {
        teacher_logits: &out[..3],
        labels: &[0, 1],
        temperature: 2.0,
        soft_weight: 0.5,
    };
    assert!(matches!(err(short, 3), Error::LengthMismatch { .. }));
    // NaN outputs propagate into the loss (not an error).
    let (v, _) = Loss::MeanSquaredError { targets: &[0.0; 2] }
        .evaluate(&[f32::NAN, 1.0], 2)
        .unwrap();
    assert!(v.is_nan());
}

fn infer_equals_forward<T: FloatElement>(activation: Activation) {
    let mut rng = StochasticRng::new(3);
    let mut mlp = Mlp::<T>::new(&[5, 7, 6, 3], activation, 1.0, &mut rng).unwrap();
    let x: Vec<T> = (0..4 * 5)
        .map(|i| T::from_f32((i as f32 * 0.37).sin()))
        .collect();
    let shared = &mlp;
    let inferred = shared.infer(&x, Parallelism::Serial).unwrap();
    let forward = mlp.forward(&x, Parallelism::Threads(2)).unwrap();
    let bits = |v: &[T]| v.iter().map(|x| x.to_raw_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&inferred), bits(&forward));
    assert!(mlp.infer(&x[..7], Parallelism::Serial).is_err());
}

#[test]
fn infer_is_forward_without_mut() {
    for act in [Activation::Relu, Activation::Gelu, Activation::Identity] {
        infer_equals_forward::<f32>(act);
        infer_equals_forward::<bf16>(act);
        infer_equals_forward::<f16>(act);
    }
}

/// A regression (MSE) and a distillation run through `train_step` and
/// learn: the loss falls by half on a fixed batch.
#[test]
fn train_step_with_mse_and_distillation_learns() {
    let mut rng = StochasticRng::new(11);
    let x: Vec<f32> = (0..32 * 4)
        .map(|_| (rng.next_u64() >> 40) as f32 / 16_777_216.0 - 0.5)
        .collect();
    // Targets: a fixed linear map of x.
    let targets: Vec<f32> = x
        .chunks(4)
        .flat_map(|r| [r[0] + 2.0 * r[1], r[2] - r[3]])
        .collect();
    fn mse_learns<T: FloatElement>(p: Precision, x: &[f32], targets: &[f32]) {
        let mut mlp = Mlp::<T>::new(
            &[4, 16, 2],
            Activation::Relu,
            1.0,
            &mut StochasticRng::new(5),
        )
        .unwrap();
        let mut opt = Sgd::new(0.1, 0.9, 0.0).unwrap();
        let mut scaler: LossScaler = p.scaler();
        let x: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
        let loss = Loss::MeanSquaredError { targets };
        let first = train_step(
            &mut mlp,
            &mut opt,
            &mut scaler,
            &x,
            loss,
            1.0,
            Parallelism::Serial,
        )
        .unwrap()
        .loss;
        let mut last = first;
        for _ in 0..200 {
            last = train_step(
                &mut mlp,
                &mut opt,
                &mut scaler,
                &x,
                loss,
                1.0,
                Parallelism::Serial,
            )
            .unwrap()
            .loss;
        }
        assert!(last < first / 2.0, "{p:?}: MSE {first} -> {last}");
    }
    mse_learns::<f32>(Precision::F32, &x, &targets);
    mse_learns::<bf16>(Precision::Bf16, &x, &targets);
    mse_learns::<f16>(Precision::F16, &x, &targets);
    // Distillation: a student matches a fixed teacher's soft targets.
    let teacher = Mlp::<f32>::new(
        &[4, 16, 3],
        Activation::Relu,
        3.0,
        &mut StochasticRng::new(9),
    )
    .unwrap();
    let t_logits = teacher.infer(&x, Parallelism::Serial).unwrap();
    let labels: Vec<u32> = t_logits
        .chunks(3)
        .map(|r| (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as u32)
        .collect();
    let loss = Loss::Distillation {
        teacher_logits: &t_logits,
        labels: &labels,
        temperature: 4.0,
        soft_weight: 0.9,
    };
    let mut student = Mlp::<bf16>::new(
        &[4, 8, 3],
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(2),
    )
    .unwrap();
    let mut opt = Sgd::new(0.2, 0.9, 0.0).unwrap();
    let mut scaler = Precision::Bf16.scaler();
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let first = train_step(
        &mut student,
        &mut opt,
        &mut scaler,
        &xb,
        loss,
        1.0,
        Parallelism::Serial,
    )
    .unwrap()
    .loss;
    let mut last = first;
    for _ in 0..300 {
        last = train_step(
            &mut student,
            &mut opt,
            &mut scaler,
            &xb,
            loss,
            1.0,
            Parallelism::Serial,
        )
        .unwrap()
        .loss;
    }
    assert!(last < first / 2.0, "distillation {first} -> {last}");
}

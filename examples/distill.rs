//! Knowledge distillation (Hinton, Vinyals & Dean, 2015) in low precision:
//! a small student learns from a larger f32 teacher's softened outputs.
//!
//! ```text
//! cargo run --release --example distill
//! cargo run --release --example distill -- --epochs 40 --temperature 4 --soft-weight 0.7 --seeds 3
//! ```
//!
//! On the bundled UCI digits: a 64-256-128-10 teacher trained in f32; a
//! 64-32-10 student trained from the hard labels (f32); the same student
//! distilled in f32, bf16 (f32 masters) and f16 (f32 masters, dynamic loss
//! scaling) with `Loss::Distillation`. The table gives each model's test
//! accuracy (mean over `--seeds` student initialisations) and parameter
//! count; the run fails (exit status 1) unless each low-precision student
//! is within 0.5 percentage points of the f32 distilled student.

mod common;
use common::{accuracy, holdout_split, parse_digits, Data, DIGITS_CSV};

use mixprec::amp::{train_step, Loss, LossScaler, Mlp, Precision, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{bf16, f16, FloatElement};

struct Opts {
    epochs: usize,
    temperature: f32,
    soft_weight: f32,
    seeds: u64,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        epochs: 40,
        temperature: 4.0,
        soft_weight: 0.7,
        seeds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--epochs" => o.epochs = val()?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "--temperature" => {
                o.temperature = val()?.parse().map_err(|e| format!("--temperature: {e}"))?
            }
            "--soft-weight" => {
                o.soft_weight = val()?.parse().map_err(|e| format!("--soft-weight: {e}"))?
            }
            "--seeds" => o.seeds = val()?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "-h" | "--help" => {
                println!(
                    "distill [--epochs N] [--temperature T] [--soft-weight A] [--seeds N]\n\
                     Trains a 64-256-128-10 f32 teacher and 64-32-10 students on the bundled\n\
                     digits: from hard labels (f32), and distilled at temperature T with the\n\
                     soft term weighted A, in f32, bf16 and f16 with loss scaling."
                );
                std::process::exit(0)
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.epochs == 0 || o.seeds == 0 {
        return Err("--epochs and --seeds must be at least 1".into());
    }
    if !(o.temperature.is_finite() && o.temperature > 0.0 && (0.0..=1.0).contains(&o.soft_weight)) {
        return Err("--temperature must be finite and > 0, --soft-weight in [0, 1]".into());
    }
    Ok(o)
}

const BATCH: usize = 32;

/// The teacher's logits for every training image, and how to soften them.
struct Soft<'a> {
    logits: &'a [f32],
    temperature: f32,
    soft_weight: f32,
}

/// Trains `mlp` for `epochs` epochs of SGD (momentum 0.9), from the hard
/// labels or, given `soft`, by distillation.
fn train<T: FloatElement>(
    mlp: &mut Mlp<T>,
    precision: Precision,
    train: &Data,
    epochs: usize,
    seed: u64,
    soft: Option<&Soft<'_>>,
) -> Result<(), mixprec::Error> {
    let mut opt = Sgd::new(0.02, 0.9, 0.0)?;
    let mut scaler: LossScaler = precision.scaler();
    let n = train.y.len();
    let f = train.features;
    let mut order: Vec<usize> = (0..n).collect();
    let mut shuffle = StochasticRng::new(seed ^ 0x5eed);
    for _ in 0..epochs {
        for i in (1..n).rev() {
            order.swap(i, (shuffle.next_u64() % (i as u64 + 1)) as usize);
        }
        for idx in order.chunks(BATCH) {
            let x: Vec<T> = idx
                .iter()
                .flat_map(|&i| train.x[i * f..(i + 1) * f].iter().map(|&v| T::from_f32(v)))
                .collect();
            let labels: Vec<u32> = idx.iter().map(|&i| u32::from(train.y[i])).collect();
            let teacher: Vec<f32> = soft.map_or(Vec::new(), |s| {
                idx.iter()
                    .flat_map(|&i| s.logits[i * 10..(i + 1) * 10].iter().copied())
                    .collect()
            });
            let loss = match soft {
                None => Loss::CrossEntropy { labels: &labels },
                Some(s) => Loss::Distillation {
                    teacher_logits: &teacher,
                    labels: &labels,
                    temperature: s.temperature,
                    soft_weight: s.soft_weight,
                },
            };
            train_step(
                mlp,
                &mut opt,
                &mut scaler,
                &x,
                loss,
                1.0,
                Parallelism::Serial,
            )?;
        }
    }
    Ok(())
}

struct Row {
    model: &'static str,
    precision: Precision,
    params: usize,
    accuracy: f64,
}

/// A student (64-32-10) trained `distill`ed or from hard labels, in `T`;
/// mean test accuracy over the seeds.
fn student<T: FloatElement>(
    precision: Precision,
    o: &Opts,
    data: (&Data, &Data),
    teacher_logits: Option<&[f32]>,
) -> Result<(usize, f64), mixprec::Error> {
    let (tr, te) = data;
    let mut sum = 0.0;
    let mut params = 0;
    for seed in 0..o.seeds {
        let mut rng = StochasticRng::new(100 + seed);
        let mut mlp = Mlp::<T>::new(&[tr.features, 32, 10], Activation::Relu, 1.0, &mut rng)?;
        params = mlp.num_params();
        let soft = teacher_logits.map(|logits| Soft {
            logits,
            temperature: o.temperature,
            soft_weight: o.soft_weight,
        });
        train(&mut mlp, precision, tr, o.epochs, seed, soft.as_ref())?;
        sum += accuracy(&mlp, &te.x, &te.y, te.features, Parallelism::Serial)?;
    }
    Ok((params, sum / o.seeds as f64))
}

fn run(o: &Opts) -> Result<bool, mixprec::Error> {
    let data = parse_digits(DIGITS_CSV).map_err(|e| mixprec::Error::InvalidParameter {
        name: "bundled digits",
        value: e,
        requirement: "a valid digits CSV",
    })?;
    let (tr, te) = holdout_split(&data, 5);
    println!(
        "UCI digits (bundled): {} train / {} test; {} epochs, batch {BATCH}, SGD(momentum 0.9) lr 0.02; \
         distillation T = {}, soft weight {}; students: mean of {} seeds",
        tr.y.len(),
        te.y.len(),
        o.epochs,
        o.temperature,
        o.soft_weight,
        o.seeds
    );
    // The teacher: larger, f32, hard labels.
    let mut teacher = Mlp::<f32>::new(
        &[tr.features, 256, 128, 10],
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(1),
    )?;
    train(&mut teacher, Precision::F32, &tr, o.epochs, 1, None)?;
    let teacher_acc = accuracy(&teacher, &te.x, &te.y, te.features, Parallelism::Serial)?;
    let soft = teacher.infer(&tr.x, Parallelism::Serial)?;
    let mut rows = vec![Row {
        model: "teacher 64-256-128-10",
        precision: Precision::F32,
        params: teacher.num_params(),
        accuracy: teacher_acc,
    }];
    let (params, acc) = student::<f32>(Precision::F32, o, (&tr, &te), None)?;
    rows.push(Row {
        model: "student 64-32-10, hard labels",
        precision: Precision::F32,
        params,
        accuracy: acc,
    });
    for p in [Precision::F32, Precision::Bf16, Precision::F16] {
        let (params, acc) = match p {
            Precision::F32 => student::<f32>(p, o, (&tr, &te), Some(&soft))?,
            Precision::Bf16 => student::<bf16>(p, o, (&tr, &te), Some(&soft))?,
            _ => student::<f16>(p, o, (&tr, &te), Some(&soft))?,
        };
        rows.push(Row {
            model: "student 64-32-10, distilled",
            precision: p,
            params,
            accuracy: acc,
        });
    }
    let reference = rows[2].accuracy;
    println!(
        "\n| model | precision | parameters | test accuracy | vs f32 distilled student (pp) |"
    );
    println!("|---|---|---|---|---|");
    let mut ok = true;
    for (i, r) in rows.iter().enumerate() {
        let delta = (r.accuracy - reference) * 100.0;
        let low_precision_student = i >= 3;
        if low_precision_student && delta.abs() > 0.5 {
            ok = false;
        }
        println!(
            "| {} | {} | {} | {:.2}% | {} |",
            r.model,
            r.precision.name(),
            r.params,
            r.accuracy * 100.0,
            if i >= 2 {
                format!("{delta:+.2}")
            } else {
                "–".into()
            }
        );
    }
    Ok(ok)
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    };
    match run(&o) {
        Ok(true) => println!("\nlow-precision students within 0.5 pp of the f32 student: yes"),
        Ok(false) => {
            println!("\nlow-precision students within 0.5 pp of the f32 student: NO");
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}

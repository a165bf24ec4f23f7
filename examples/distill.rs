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
//! count, and a last line says whether each low-precision student is
//! within 0.5 percentage points of the f32 distilled student. Progress goes
//! to stderr as each model finishes. `--check` makes a miss exit with
//! status 1 (for CI); without it the program reports and exits 0, so that
//! exploratory settings (`--temperature 1e30`) are not failures.

#[macro_use]
mod common;
use common::{accuracy, holdout_split, parse_digits, unknown, Args, Data, DIGITS_CSV};

use mixprec::amp::{train_step, Loss, LossScaler, Mlp, Precision, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{bf16, f16, FloatElement};

struct Opts {
    epochs: usize,
    temperature: f32,
    soft_weight: f32,
    seeds: u64,
    check: bool,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        epochs: 40,
        temperature: 4.0,
        soft_weight: 0.7,
        seeds: 3,
        check: false,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--epochs" => o.epochs = args.at_least(&flag, 1)?,
            "--temperature" => o.temperature = args.positive(&flag)?,
            "--soft-weight" => {
                o.soft_weight = args.parse(&flag)?;
                if !(0.0..=1.0).contains(&o.soft_weight) {
                    return Err(format!(
                        "--soft-weight {}: must be in [0, 1]",
                        o.soft_weight
                    ));
                }
            }
            "--seeds" => o.seeds = args.at_least(&flag, 1)?,
            "--check" => o.check = true,
            "-h" | "--help" => {
                outln!(
                    "distill [--epochs N] [--temperature T] [--soft-weight A] [--seeds N] [--check]\n\
                     Trains a 64-256-128-10 f32 teacher and 64-32-10 students on the bundled\n\
                     digits: from hard labels (f32), and distilled at temperature T with the\n\
                     soft term weighted A, in f32, bf16 and f16 with loss scaling.\n\
                     --check: exit with status 1 unless each low-precision student is within\n\
                     0.5 pp of the f32 distilled student (without it the run only reports)."
                );
                std::process::exit(0)
            }
            other => return Err(unknown(other)),
        }
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
    let what = if teacher_logits.is_some() {
        format!("student {} distilled", precision.name())
    } else {
        "student f32 hard labels".to_string()
    };
    for seed in 0..o.seeds {
        progress(o, Some((&what, seed)));
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

/// On a terminal, which model and seed is training (stderr, one line
/// rewritten in place; the table on stdout stays clean).
/// `None` clears the line.
fn progress(o: &Opts, what: Option<(&str, u64)>) {
    use std::io::{IsTerminal, Write};
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = match what {
            Some((what, seed)) => write!(
                err,
                "\r\x1b[K  training {what}, seed {} of {}",
                seed + 1,
                o.seeds
            ),
            None => write!(err, "\r\x1b[K"),
        };
        let _ = err.flush();
    }
}

fn run(o: &Opts) -> Result<bool, mixprec::Error> {
    let data = parse_digits(DIGITS_CSV).map_err(|e| mixprec::Error::InvalidParameter {
        name: "bundled digits",
        value: e,
        requirement: "a valid digits CSV",
    })?;
    let (tr, te) = holdout_split(&data, 5);
    outln!(
        "UCI digits (bundled): {} train / {} test; {} epochs, batch {BATCH}, SGD(momentum 0.9) lr 0.02; \
         distillation T = {}, soft weight {}; students: mean of {} seeds",
        tr.y.len(),
        te.y.len(),
        o.epochs,
        o.temperature,
        o.soft_weight,
        o.seeds
    );
    // Rows are printed as their models finish (the f32 distilled student,
    // the reference of the last column, comes before the other two).
    outln!("\n| model | precision | parameters | test accuracy | vs f32 distilled student (pp) |");
    outln!("|---|---|---|---|---|");
    let row = |model: &str, precision: Precision, params: usize, acc: f64, delta: Option<f64>| {
        progress(o, None);
        outln!(
            "| {model} | {} | {params} | {:.2}% | {} |",
            precision.name(),
            acc * 100.0,
            delta.map_or("–".into(), |d| format!("{d:+.2}"))
        );
    };
    // The teacher: larger, f32, hard labels.
    progress(o, Some(("teacher", 0)));
    let mut teacher = Mlp::<f32>::new(
        &[tr.features, 256, 128, 10],
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(1),
    )?;
    train(&mut teacher, Precision::F32, &tr, o.epochs, 1, None)?;
    let teacher_acc = accuracy(&teacher, &te.x, &te.y, te.features, Parallelism::Serial)?;
    let soft = teacher.infer(&tr.x, Parallelism::Serial)?;
    row(
        "teacher 64-256-128-10",
        Precision::F32,
        teacher.num_params(),
        teacher_acc,
        None,
    );
    let (params, acc) = student::<f32>(Precision::F32, o, (&tr, &te), None)?;
    row(
        "student 64-32-10, hard labels",
        Precision::F32,
        params,
        acc,
        None,
    );
    let mut reference = 0.0;
    let mut ok = true;
    for p in [Precision::F32, Precision::Bf16, Precision::F16] {
        let (params, acc) = match p {
            Precision::F32 => student::<f32>(p, o, (&tr, &te), Some(&soft))?,
            Precision::Bf16 => student::<bf16>(p, o, (&tr, &te), Some(&soft))?,
            _ => student::<f16>(p, o, (&tr, &te), Some(&soft))?,
        };
        if p == Precision::F32 {
            reference = acc;
        }
        let delta = (acc - reference) * 100.0;
        if p != Precision::F32 && delta.abs() > 0.5 {
            ok = false;
        }
        row("student 64-32-10, distilled", p, params, acc, Some(delta));
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
        Ok(true) => outln!("\nlow-precision students within 0.5 pp of the f32 student: yes"),
        Ok(false) => {
            outln!("\nlow-precision students within 0.5 pp of the f32 student: no");
            if o.check {
                eprintln!(
                    "error: --check: a low-precision student is more than 0.5 pp from the f32 one"
                );
                std::process::exit(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}

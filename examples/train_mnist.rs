//! Trains an MLP on handwritten digits with each mixed-precision policy.
//!
//! ```text
//! cargo run --release --example train_mnist                       # f32, bundled 8×8 digits
//! cargo run --release --example train_mnist -- --precision all    # the side-by-side table
//! cargo run --release --example train_mnist -- --data DIR --precision all   # MNIST IDX files in DIR
//! cargo run --release --example train_mnist -- --precision all --loss-weight 1e-5 --grad-histogram
//! cargo run --release --example train_mnist -- --precision f16 --epochs 10 --checkpoint ck.json
//! cargo run --release --example train_mnist -- --precision f16 --epochs 30 --resume ck.json
//! ```
//!
//! `--checkpoint FILE` writes the whole run (f32 masters and working
//! weights, optimizer moments, loss-scaler state, the shuffling RNG and
//! order, the gradient histogram) after every epoch; `--resume FILE`
//! continues it, bit-identical to a run that was never interrupted. Both
//! need one precision and the same settings as the run that wrote the file.
//!
//! The bundled set is the UCI optical digits (1797 images of 8×8, CC BY 4.0,
//! E. Alpaydin, C. Kaynak); `--data DIR` reads MNIST IDX files
//! (`PREFIXimages-idx3-ubyte[.gz]` with `PREFIXlabels-idx1-ubyte[.gz]`) from
//! DIR. With the standard layout (`train-*` and `t10k-*`) the t10k files are
//! the test set; with one pair, 20 % of it is held out.

use mixprec::amp::fp8::GradFlushStats;
use mixprec::amp::{
    train_step_observed, AdamW, GradHistogram, Loss, LossScaler, Mlp, Optimizer, Precision, Sgd,
};
use mixprec::convert::{narrow, StochasticRng};
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{bf16, f16, FloatElement};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::time::Instant;

#[macro_use]
mod common;
use common::{
    accuracy, accuracy_plot, holdout_split, mnist, parse_digits, unknown, Args, Data, Series,
    DIGITS_CSV,
};

#[derive(Clone)]
struct Opts {
    precisions: Vec<Precision>,
    epochs: usize,
    hidden: Vec<usize>,
    batch: usize,
    lr: f32,
    adamw: bool,
    /// `None`: 1, and with `--precision all` a second table at
    /// [`SMALL_LOSS_WEIGHT`].
    loss_weight: Option<f32>,
    init_scale: f32,
    seed: u64,
    data: Option<String>,
    histogram: bool,
    threads: usize,
    checkpoint: Option<String>,
    resume: Option<String>,
    verbose: bool,
    svg: Option<String>,
}

/// The optimizer of a run, as a value that serializes.
#[derive(Clone, Serialize, Deserialize)]
enum Opt {
    Sgd(Sgd),
    AdamW(AdamW),
}

impl Optimizer for Opt {
    fn step(
        &mut self,
        slot: usize,
        params: &mut [f32],
        grads: &[f32],
    ) -> Result<(), mixprec::Error> {
        match self {
            Opt::Sgd(o) => o.step(slot, params, grads),
            Opt::AdamW(o) => o.step(slot, params, grads),
        }
    }
    fn finish_step(&mut self) {
        match self {
            Opt::Sgd(o) => o.finish_step(),
            Opt::AdamW(o) => o.finish_step(),
        }
    }
}

/// The settings a checkpoint must agree with to be resumed (all but
/// `--epochs`, `--threads` and the output flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RunKey {
    precision: Precision,
    sizes: Vec<usize>,
    batch: usize,
    lr: f32,
    adamw: bool,
    loss_weight: f32,
    init_scale: f32,
    seed: u64,
    train_images: usize,
}

/// Everything that carries over from one epoch to the next.
#[derive(Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: DeserializeOwned + FloatElement"
))]
struct Checkpoint<T> {
    key: RunKey,
    epochs_done: usize,
    mlp: Mlp<T>,
    opt: Opt,
    scaler: LossScaler,
    shuffle: StochasticRng,
    order: Vec<usize>,
    histogram: GradHistogram,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        precisions: vec![Precision::F32],
        epochs: 30,
        hidden: vec![256, 128],
        batch: 32,
        lr: 0.02,
        adamw: false,
        loss_weight: None,
        init_scale: 1.0,
        seed: 42,
        data: None,
        histogram: false,
        threads: 1,
        checkpoint: None,
        resume: None,
        verbose: false,
        svg: None,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--precision" => {
                let v = args.value(&flag)?;
                o.precisions = if v == "all" {
                    Precision::ALL.to_vec()
                } else {
                    vec![v.parse().map_err(|e| format!("--precision: {e}"))?]
                };
            }
            "--epochs" => o.epochs = args.at_least(&flag, 1)?,
            "--hidden" => {
                o.hidden = args
                    .value(&flag)?
                    .split(',')
                    .map(|s| match s.parse::<usize>() {
                        Ok(0) => Err(format!("--hidden {s}: widths must be at least 1")),
                        Ok(w) => Ok(w),
                        Err(e) => Err(format!("--hidden {s:?}: {e}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--batch" => o.batch = args.at_least(&flag, 1)?,
            "--lr" => o.lr = args.positive(&flag)?,
            "--optimizer" => {
                o.adamw = match args.value(&flag)?.as_str() {
                    "sgd" => false,
                    "adamw" => true,
                    other => return Err(format!("--optimizer: {other:?} is not sgd or adamw")),
                }
            }
            "--loss-weight" => o.loss_weight = Some(args.positive(&flag)?),
            "--init-scale" => o.init_scale = args.positive(&flag)?,
            "--seed" => o.seed = args.parse(&flag)?,
            "--data" => o.data = Some(args.value(&flag)?),
            "--threads" => o.threads = args.at_least(&flag, 1)?,
            "--grad-histogram" => o.histogram = true,
            "--checkpoint" => o.checkpoint = Some(args.value(&flag)?),
            "--resume" => o.resume = Some(args.value(&flag)?),
            "--verbose" => o.verbose = true,
            "--svg" => o.svg = Some(args.value(&flag)?),
            "-h" | "--help" => {
                outln!(
                    "train_mnist [--precision P|all] [--epochs N] [--hidden A,B,..]\n\
                     \x20           [--batch N] [--lr X] [--optimizer sgd|adamw] [--loss-weight W]\n\
                     \x20           [--init-scale S] [--seed N] [--data DIR] [--threads N] [--grad-histogram]\n\
                     \x20           [--checkpoint FILE] [--resume FILE] [--verbose] [--svg FILE]\n\
                     P: f32, bf16, f16, f16-noscale, fp8-hybrid-delayed, fp8-hybrid-current, fp8-e4m3,\n\
                     fp8-e4m3-noscale. --verbose prints a line per epoch; --svg writes the test\n\
                     accuracy per epoch, one line per precision.\n\
                     --checkpoint writes the run's whole state after every epoch; --resume continues\n\
                     it bit-identically (one precision, the same settings).\n\
                     --loss-weight multiplies the loss (a weaker learning signal, so smaller\n\
                     gradients); with SGD the learning rate is divided by it, so f32 training is\n\
                     unchanged. --precision all without --loss-weight runs the table twice: at\n\
                     loss weight 1 and at {SMALL_LOSS_WEIGHT:e}, where unscaled f16 and FP8 lose their gradients."
                );
                std::process::exit(0)
            }
            other => return Err(unknown(other)),
        }
    }
    if let (Some(w), false) = (o.loss_weight, o.adamw) {
        // SGD's rate is lr / loss weight: it must stay finite.
        if !(o.lr / w).is_finite() {
            return Err(format!(
                "--loss-weight {w:e}: with SGD the learning rate becomes --lr / --loss-weight = {} / {w:e}, which overflows; use a larger loss weight",
                o.lr
            ));
        }
    }
    if (o.checkpoint.is_some() || o.resume.is_some()) && o.precisions.len() != 1 {
        return Err("--checkpoint and --resume need a single --precision".into());
    }
    if let Some(path) = &o.checkpoint {
        // Found now, not after the first epoch has trained.
        let dir = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "--checkpoint {path}: the folder {} does not exist",
                dir.display()
            ));
        }
    }

    Ok(o)
}

struct RunResult {
    precision: Precision,
    /// Test accuracy after each epoch of this run.
    accuracy_per_epoch: Vec<f64>,
    secs_per_epoch: f64,
    memory_bytes: usize,
    skipped: u64,
    /// Optimizer steps this process ran, and how many of them the scaler
    /// skipped (a resumed run counts only its own).
    steps_here: u64,
    skipped_here: u64,
    final_scale: f32,
    histogram: GradHistogram,
    /// Non-zero activation gradients and how many flush to zero in the
    /// policy's gradient format: without any scaling, and with the scale
    /// used (the loss scale; for FP8, dY's tensor scale).
    flush: GradFlushStats,
}

/// `n` as a percentage of `of` ("–" when `of` is 0).
fn share(n: u64, of: u64) -> String {
    if of == 0 {
        "–".into()
    } else {
        format!("{:.2}%", n as f64 * 100.0 / of as f64)
    }
}

fn bar(done: usize, total: usize) -> String {
    let width = 30;
    let filled = done * width / total.max(1);
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    )
}

fn write_checkpoint<T: Serialize>(path: &str, ck: &Checkpoint<T>) -> Result<(), String> {
    let text = serde_json::to_string(ck).map_err(|e| format!("--checkpoint {path}: {e}"))?;
    // Write then rename, so an interrupted write leaves the last checkpoint.
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("--checkpoint {path}: {e}"))
}

fn read_checkpoint<T: DeserializeOwned + FloatElement>(
    path: &str,
    key: &RunKey,
) -> Result<Checkpoint<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--resume {path}: {e}"))?;
    let ck: Checkpoint<T> =
        serde_json::from_str(&text).map_err(|e| format!("--resume {path}: {e}"))?;
    if &ck.key != key {
        return Err(format!(
            "--resume {path}: the checkpoint was written with other settings:\n  file: {:?}\n  now:  {key:?}",
            ck.key
        ));
    }
    if ck.order.len() != key.train_images {
        return Err(format!(
            "--resume {path}: the shuffle order does not match the data"
        ));
    }
    Ok(ck)
}

/// A run's failure: a library error or a checkpoint problem.
fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[allow(clippy::too_many_arguments)]
fn run<T: FloatElement + Serialize + DeserializeOwned>(
    precision: Precision,
    o: &Opts,
    loss_weight: f32,
    train: &Data,
    test: &Data,
    quiet: bool,
) -> Result<RunResult, String> {
    let par = if o.threads > 1 {
        Parallelism::Threads(o.threads)
    } else {
        Parallelism::Serial
    };
    let mut rng = StochasticRng::new(o.seed);
    let mut sizes = vec![train.features];
    sizes.extend(&o.hidden);
    sizes.push(10);
    let key = RunKey {
        precision,
        sizes: sizes.clone(),
        batch: o.batch,
        lr: o.lr,
        adamw: o.adamw,
        loss_weight,
        init_scale: o.init_scale,
        seed: o.seed,
        train_images: train.y.len(),
    };
    let start = match &o.resume {
        Some(path) => read_checkpoint::<T>(path, &key)?,
        None => Checkpoint {
            key,
            epochs_done: 0,
            mlp: Mlp::<T>::new(&sizes, Activation::Relu, o.init_scale, &mut rng).map_err(fail)?,
            opt: if o.adamw {
                Opt::AdamW(AdamW::new(o.lr, 0.01).map_err(fail)?)
            } else {
                Opt::Sgd(Sgd::new(o.lr / loss_weight, 0.9, 0.0).map_err(fail)?)
            },
            scaler: precision.scaler(),
            shuffle: StochasticRng::new(o.seed ^ 0x5eed),
            order: (0..train.y.len()).collect(),
            histogram: GradHistogram::default(),
        },
    };
    let Checkpoint {
        key,
        epochs_done,
        mut mlp,
        mut opt,
        mut scaler,
        mut shuffle,
        mut order,
        histogram: mut hist,
    } = start;
    // FP8 policies: f32 activations between layers, FP8 products (a
    // resumed run brings its layers' FP8 state, amax histories included).
    if o.resume.is_none() {
        mlp.set_fp8(precision.fp8_recipe()).map_err(fail)?;
    }
    let half_min = precision.grad_min_subnormal() / 2.0;
    let mut flush = GradFlushStats::default();
    let fp8 = precision.fp8_recipe().is_some();
    let mut memory_bytes = None;
    let skipped_before = scaler.skipped_steps();
    let mut steps_here = 0u64;
    let mut accuracy_per_epoch = Vec::new();
    if epochs_done >= o.epochs {
        return Err(format!(
            "the checkpoint has {epochs_done} epochs done; ask for more with --epochs"
        ));
    }
    let n = train.y.len();
    let started = Instant::now();
    let steps = n.div_ceil(o.batch);
    let progress = !quiet && std::io::stderr().is_terminal();
    for epoch in epochs_done + 1..=o.epochs {
        for i in (1..n).rev() {
            order.swap(i, (shuffle.next_u64() % (i as u64 + 1)) as usize);
        }
        let (mut loss_sum, mut count) = (0.0f64, 0usize);
        for (s, idx) in order.chunks(o.batch).enumerate() {
            let xb: Vec<f32> = idx
                .iter()
                .flat_map(|&i| {
                    train.x[i * train.features..(i + 1) * train.features]
                        .iter()
                        .copied()
                })
                .collect();
            let yb: Vec<u32> = idx.iter().map(|&i| u32::from(train.y[i])).collect();
            let mut xt = vec![T::zeroed(); xb.len()];
            narrow(&xb, &mut xt).map_err(fail)?;
            let scale = scaler.scale();
            let record = o.histogram;
            let mut observe = |g: &[f32]| {
                if record {
                    // Judged in the row's own gradient format; f16 against
                    // the scale a dynamic scaler reaches (at least 2^16),
                    // the others against the loss scale they run with.
                    let true_grads: Vec<f32> = g.iter().map(|v| v / scale).collect();
                    let judge = if precision == Precision::F16 {
                        65536.0f32.max(scale)
                    } else {
                        scale
                    };
                    hist.add_in(
                        &true_grads,
                        judge,
                        precision.grad_min_subnormal(),
                        precision.grad_overflow(),
                    );
                }
                // What rounding to the gradient format does to them (FP8
                // layers count their own, with the tensor scales).
                if !fp8 {
                    flush.record(g, scale, 1.0, half_min);
                }
            };
            let out = train_step_observed(
                &mut mlp,
                &mut opt,
                &mut scaler,
                &xt,
                Loss::CrossEntropy { labels: &yb },
                loss_weight,
                par,
                &mut observe,
            )
            .map_err(fail)?;
            steps_here += 1;
            if out.loss.is_finite() {
                loss_sum += (out.loss / loss_weight) as f64;
                count += 1;
            }
            if memory_bytes.is_none() {
                // After the first (full) batch: f32 masters, working
                // weights, the activations kept for backward.
                memory_bytes = Some(mlp.num_params() * 4 + mlp.footprint_bytes());
            }
            if progress && (s % 8 == 0 || s + 1 == steps) {
                eprint!(
                    "\r  {:<12} epoch {epoch:>3}/{} {}",
                    precision.name(),
                    o.epochs,
                    bar(s + 1, steps)
                );
                let _ = std::io::stderr().flush();
            }
        }
        let accuracy_now = accuracy(&mlp, &test.x, &test.y, test.features, par).map_err(fail)?;
        accuracy_per_epoch.push(accuracy_now);
        if progress {
            eprint!("\r{}\r", " ".repeat(72));
        }
        if !quiet && o.verbose {
            // An epoch whose every loss was NaN or infinite prints NaN, not 0.
            let mean_loss = if count == 0 {
                f64::NAN
            } else {
                loss_sum / count as f64
            };
            outln!(
                "{:<12} epoch {epoch:>3}  loss {:.4}  test acc {:.2}%  loss scale {:<8}  skipped {}",
                precision.name(),
                mean_loss,
                accuracy_now * 100.0,
                scaler.scale(),
                scaler.skipped_steps()
            );
            if count == 0 {
                eprintln!(
                    "warning: {} epoch {epoch}: every batch's loss was NaN or infinite",
                    precision.name()
                );
            }
        }
        if let Some(path) = &o.checkpoint {
            let ck = Checkpoint {
                key: key.clone(),
                epochs_done: epoch,
                mlp: mlp.clone(),
                opt: opt.clone(),
                scaler: scaler.clone(),
                shuffle: shuffle.clone(),
                order: order.clone(),
                histogram: hist.clone(),
            };
            write_checkpoint(path, &ck)?;
        }
    }
    let secs = started.elapsed().as_secs_f64() / (o.epochs - epochs_done) as f64;
    if let Some(st) = mlp.fp8_grad_stats() {
        flush = st;
    }
    Ok(RunResult {
        precision,
        accuracy_per_epoch,
        secs_per_epoch: secs,
        memory_bytes: memory_bytes.unwrap_or(0),
        skipped: scaler.skipped_steps(),
        steps_here,
        skipped_here: scaler.skipped_steps().saturating_sub(skipped_before),
        final_scale: scaler.scale(),
        histogram: hist,
        flush,
    })
}

/// Test accuracy per epoch, one line per precision, as an SVG.
fn svg(results: &[RunResult], title: &str) -> String {
    let epochs = results
        .iter()
        .map(|r| r.accuracy_per_epoch.len())
        .max()
        .unwrap_or(1);
    let step = (epochs / 10).max(1);
    let ticks: Vec<f64> = std::iter::once(1)
        .chain((step..=epochs).step_by(step).filter(|&e| e > 1))
        .map(|e| e as f64)
        .collect();
    let series: Vec<Series> = results
        .iter()
        .map(|r| Series {
            name: r.precision.name().to_string(),
            points: (1..)
                .map(|e| e as f64)
                .zip(r.accuracy_per_epoch.iter().copied())
                .collect(),
        })
        .collect();
    accuracy_plot(title, "epoch", &ticks, &series, None, false)
}

fn print_histogram(r: &RunResult) {
    let h = &r.histogram;
    if h.total == 0 {
        return;
    }
    let p = r.precision;
    let format = p.grad_format();
    let min_log2 = p.grad_min_subnormal().log2().round() as i32;
    outln!(
        "\nactivation-gradient magnitudes ({}; gradients in {format}; {} values, {} exact zeros):",
        p.name(),
        h.total,
        h.zeros
    );
    let max = *h.counts.iter().max().unwrap_or(&1);
    for (i, &c) in h.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let e = GradHistogram::MIN_LOG2 + i as i32;
        let below = if e < min_log2 {
            format!(" <- below {format}'s smallest subnormal (2^{min_log2})")
        } else {
            String::new()
        };
        outln!(
            "  2^{e:<4} {:>10}  {}{below}",
            c,
            "#".repeat((c * 40 / max.max(1)) as usize)
        );
    }
    let nz = (h.total - h.zeros).max(1) as f64;
    outln!(
        "  lost to zero in {format} unscaled: {:.3}% of non-zero gradients",
        h.lost_unscaled as f64 * 100.0 / nz
    );
    if p == Precision::F16 {
        outln!(
            "  lost to zero in {format} with the loss scale (max(2^16, final scale)): {:.3}%; overflowing: {:.3}%",
            h.lost_scaled as f64 * 100.0 / nz,
            h.overflow_scaled as f64 * 100.0 / nz
        );
    } else if p.fp8_recipe().is_some() {
        outln!(
            "  (FP8 layers scale each tensor: the table's \"flushed, scale used\" counts those)"
        );
    }
}

/// The rows' columns, explained once under the tables.
const LEGEND: &str = "\
columns: test acc. = held-out accuracy after the last epoch (best: over all epochs);
  vs f32 = last accuracy minus f32's, in percentage points;
  grads flushed, unscaled = share of non-zero activation gradients that round to
    zero in the row's own gradient format (f16, bf16, E5M2 for fp8-hybrid, E4M3)
    without any scaling;
  flushed, scale used = the same with the scaling the row applies (the loss scale
    for f16/bf16; each gradient tensor's own scale for the FP8 rows);
  skipped steps = optimizer steps the loss scaler skipped for ±inf/NaN gradients;
  bytes = f32 master weights + working weights + activations kept for backward.";

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    };
    let loaded = match &o.data {
        None => parse_digits(DIGITS_CSV).map(|d| (d, None)),
        Some(dir) => mnist(dir),
    };
    let (data, given_test) = match loaded {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    };
    // At least one image to train on and one to test on.
    let min_images = if given_test.is_some() { 1 } else { 5 };
    if data.y.len() < min_images || given_test.as_ref().is_some_and(|t| t.y.is_empty()) {
        eprintln!(
            "error: too few images ({} to train{}); need at least {min_images} to train and 1 to test",
            data.y.len(),
            given_test
                .as_ref()
                .map_or(String::new(), |t| format!(", {} to test", t.y.len()))
        );
        std::process::exit(2)
    }
    if let Some(t) = given_test.as_ref().filter(|t| t.features != data.features) {
        eprintln!(
            "error: train images have {} pixels, test images {}",
            data.features, t.features
        );
        std::process::exit(2)
    }
    // Held-out split: a seeded shuffle, 20 % for test (unless the folder
    // has its own test files).
    let (train, test) = match given_test {
        Some(t) => (holdout_split(&data, 0).0, t),
        None => holdout_split(&data, 5),
    };
    if o.batch > train.y.len() {
        eprintln!(
            "error: --batch {}: more than the {} training images",
            o.batch,
            train.y.len()
        );
        std::process::exit(2)
    }
    // One table per loss weight: the one asked for, or with --precision
    // all, 1 and a small one, where the formats differ.
    let weights = match o.loss_weight {
        Some(w) => vec![w],
        None if o.precisions.len() > 1 => vec![1.0, SMALL_LOSS_WEIGHT],
        None => vec![1.0],
    };
    let model = format!(
        "MLP {}-{}-10",
        data.features,
        o.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-")
    );
    outln!(
        "{}: {} train / {} test images of {} pixels; {model}, {} epochs, batch {}, {} lr {}",
        if o.data.is_some() {
            "MNIST"
        } else {
            "UCI digits (bundled)"
        },
        train.y.len(),
        test.y.len(),
        data.features,
        o.epochs,
        o.batch,
        if o.adamw {
            "AdamW"
        } else {
            "SGD(momentum 0.9)"
        },
        o.lr,
    );
    let mut tables = Vec::new();
    for &w in &weights {
        let mut results = Vec::new();
        for &p in &o.precisions {
            let res = match p {
                Precision::Bf16 => run::<bf16>(p, &o, w, &train, &test, false),
                Precision::F16 | Precision::F16NoScale => {
                    run::<f16>(p, &o, w, &train, &test, false)
                }
                // f32, and the FP8 policies (f32 activations, FP8 products).
                _ => run::<f32>(p, &o, w, &train, &test, false),
            };
            match res {
                Ok(r) => results.push(r),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1)
                }
            }
        }
        print_table(w, &results);
        tables.push((w, results));
    }
    outln!("\n{LEGEND}");
    for line in conclusion(&tables) {
        outln!("{line}");
    }
    if let Some(path) = &o.svg {
        for (i, (w, results)) in tables.iter().enumerate() {
            let file = if i == 0 {
                path.clone()
            } else {
                svg_path_for_weight(path, *w)
            };
            let title = format!(
                "{}: test accuracy per epoch, {model}, loss weight {w:e}",
                if o.data.is_some() {
                    "MNIST"
                } else {
                    "UCI digits"
                },
            );
            if let Err(e) = std::fs::write(&file, svg(results, &title)) {
                eprintln!("error: --svg {file}: {e}");
                std::process::exit(1)
            }
            outln!("wrote {file}");
        }
    }
    if o.histogram {
        for (_, results) in &tables {
            for r in results {
                print_histogram(r);
            }
        }
    }
}

/// The small loss weight of the second table (`--precision all` without
/// `--loss-weight`): gradients 10^6 times smaller, below f16's and FP8's
/// smallest values unless scaled.
const SMALL_LOSS_WEIGHT: f32 = 1e-6;

/// `chart.svg` → `chart-lw1e-6.svg`: the second table's chart.
fn svg_path_for_weight(path: &str, w: f32) -> String {
    match path.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.contains('/') => {
            format!("{stem}-lw{w:e}.{ext}")
        }
        _ => format!("{path}-lw{w:e}"),
    }
}

fn last(r: &RunResult) -> f64 {
    r.accuracy_per_epoch.last().copied().unwrap_or(0.0)
}

fn print_table(loss_weight: f32, results: &[RunResult]) {
    outln!("\nloss weight {loss_weight:e}:");
    outln!(
        "| precision | test acc. (last) | best | vs f32 (pp, last) | grads flushed, unscaled | flushed, scale used | skipped steps | final loss scale | time/epoch | bytes: weights + activations |"
    );
    outln!("|---|---|---|---|---|---|---|---|---|---|");
    let base = results
        .iter()
        .find(|r| r.precision == Precision::F32)
        .map(last);
    for r in results {
        let delta = base.map_or("–".to_string(), |b| {
            format!("{:+.2}", (last(r) - b) * 100.0)
        });
        let best = r.accuracy_per_epoch.iter().fold(0.0f64, |m, &a| m.max(a));
        outln!(
            "| {} | {:.2}% | {:.2}% | {} | {} | {} | {} | {} | {:.0} ms | {:.1} KiB |",
            r.precision.name(),
            last(r) * 100.0,
            best * 100.0,
            delta,
            share(r.flush.flushed_unscaled, r.flush.nonzero),
            share(r.flush.flushed_scaled, r.flush.nonzero),
            r.skipped,
            r.final_scale,
            r.secs_per_epoch * 1e3,
            r.memory_bytes as f64 / 1024.0,
        );
    }
    for r in results
        .iter()
        .filter(|r| r.steps_here > 0 && r.skipped_here == r.steps_here)
    {
        eprintln!(
            "warning: {} at loss weight {loss_weight:e}: all {} steps were skipped (the gradients overflowed every time), so the weights never moved; its accuracy is the initial model's",
            r.precision.name(),
            r.steps_here
        );
    }
}

/// What the tables show, in sentences built from their numbers: per loss
/// weight, the spread around f32, and for each unscaled/scaled pair the
/// flushed share and the accuracy with and without scaling.
fn conclusion(tables: &[(f32, Vec<RunResult>)]) -> Vec<String> {
    let mut lines = vec![String::new()];
    for (w, results) in tables {
        let find = |p: Precision| results.iter().find(|r| r.precision == p);
        let Some(f32_run) = find(Precision::F32) else {
            continue;
        };
        let base = last(f32_run);
        let worst = results
            .iter()
            .map(|r| (last(r) - base) * 100.0)
            .fold(0.0f64, |m, d| if d.abs() > m.abs() { d } else { m });
        lines.push(format!(
            "loss weight {w:e}: f32 ends at {:.2}%; the largest difference from it is {worst:+.2} pp.",
            base * 100.0
        ));
        for (bare, scaled) in [
            (Precision::F16NoScale, Precision::F16),
            (Precision::Fp8E4M3NoScale, Precision::Fp8E4M3Delayed),
        ] {
            if let (Some(b), Some(s)) = (find(bare), find(scaled)) {
                lines.push(format!(
                    "  {} flushed {} of its gradients to zero and ended at {:.2}%; {} flushed {} and ended at {:.2}%.",
                    b.precision.name(),
                    share(b.flush.flushed_unscaled, b.flush.nonzero),
                    last(b) * 100.0,
                    s.precision.name(),
                    share(s.flush.flushed_scaled, s.flush.nonzero),
                    last(s) * 100.0
                ));
            }
        }
    }
    // The one-line conclusion, only where the numbers say it.
    if let Some((w, results)) = tables.iter().find(|(w, _)| *w < 1.0) {
        let acc = |p: Precision| results.iter().find(|r| r.precision == p).map(last);
        if let (Some(f), Some(bare), Some(scaled)) = (
            acc(Precision::F32),
            acc(Precision::F16NoScale),
            acc(Precision::F16),
        ) {
            let (lost, kept) = ((f - bare) * 100.0, (f - scaled) * 100.0);
            lines.push(if lost > 2.0 && kept.abs() <= 1.0 {
                format!(
                    "Conclusion: with gradients {w:e} times smaller, f16 without loss scaling falls {lost:.1} pp behind f32 and dynamic loss scaling keeps it within {:.1} pp.",
                    kept.abs()
                )
            } else {
                format!(
                    "Conclusion: at loss weight {w:e} unscaled f16 is {lost:+.1} pp and scaled f16 {kept:+.1} pp from f32 in this run (no collapse to report)."
                )
            });
        }
    }
    lines
}

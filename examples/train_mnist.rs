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

mod common;
use common::{
    accuracy, accuracy_plot, holdout_split, mnist, parse_digits, Data, Series, DIGITS_CSV,
};

#[derive(Clone)]
struct Opts {
    precisions: Vec<Precision>,
    epochs: usize,
    hidden: Vec<usize>,
    batch: usize,
    lr: f32,
    adamw: bool,
    loss_weight: f32,
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
        loss_weight: 1.0,
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
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--precision" => {
                let v = val()?;
                o.precisions = if v == "all" {
                    Precision::ALL.to_vec()
                } else {
                    vec![v.parse().map_err(|e| format!("{e}"))?]
                };
            }
            "--epochs" => o.epochs = val()?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "--hidden" => {
                o.hidden = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--hidden: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--batch" => o.batch = val()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--lr" => o.lr = val()?.parse().map_err(|e| format!("--lr: {e}"))?,
            "--optimizer" => {
                o.adamw = match val()?.as_str() {
                    "sgd" => false,
                    "adamw" => true,
                    other => return Err(format!("--optimizer: {other:?} is not sgd or adamw")),
                }
            }
            "--loss-weight" => {
                o.loss_weight = val()?.parse().map_err(|e| format!("--loss-weight: {e}"))?
            }
            "--init-scale" => {
                o.init_scale = val()?.parse().map_err(|e| format!("--init-scale: {e}"))?
            }
            "--seed" => o.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--data" => o.data = Some(val()?),
            "--threads" => o.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--grad-histogram" => o.histogram = true,
            "--checkpoint" => o.checkpoint = Some(val()?),
            "--resume" => o.resume = Some(val()?),
            "--verbose" => o.verbose = true,
            "--svg" => o.svg = Some(val()?),
            "-h" | "--help" => {
                println!(
                    "train_mnist [--precision P|all] [--epochs N] [--hidden A,B,..]\n\
                     \x20           [--batch N] [--lr X] [--optimizer sgd|adamw] [--loss-weight W]\n\
                     \x20           [--init-scale S] [--seed N] [--data DIR] [--threads N] [--grad-histogram]\n\
                     \x20           [--checkpoint FILE] [--resume FILE] [--verbose] [--svg FILE]\n\
                     P: f32, bf16, f16, f16-noscale, fp8-hybrid-delayed, fp8-hybrid-current, fp8-e4m3,\n\
                     fp8-e4m3-noscale. --verbose prints a line per epoch; --svg writes the test\n\
                     accuracy per epoch, one line per precision.\n\
                     --checkpoint writes the run's whole state after every epoch; --resume continues\n\
                     it bit-identically (one precision, the same settings).\n\
                     --loss-weight multiplies the loss (a weaker learning signal); with SGD the\n\
                     learning rate is divided by it, so f32 training is unchanged."
                );
                std::process::exit(0)
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.batch == 0 || o.epochs == 0 || !(o.loss_weight.is_finite() && o.loss_weight > 0.0) {
        return Err("--batch, --epochs and --loss-weight must be positive (and finite)".into());
    }
    if o.hidden.contains(&0) || o.threads == 0 {
        return Err("--hidden widths and --threads must be at least 1".into());
    }
    if (o.checkpoint.is_some() || o.resume.is_some()) && o.precisions.len() != 1 {
        return Err("--checkpoint and --resume need a single --precision".into());
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
        loss_weight: o.loss_weight,
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
                Opt::Sgd(Sgd::new(o.lr / o.loss_weight, 0.9, 0.0).map_err(fail)?)
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
                    let true_grads: Vec<f32> = g.iter().map(|v| v / scale).collect();
                    hist.add(&true_grads, 65536.0f32.max(scale));
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
                o.loss_weight,
                par,
                &mut observe,
            )
            .map_err(fail)?;
            if out.loss.is_finite() {
                loss_sum += (out.loss / o.loss_weight) as f64;
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
            println!(
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
    accuracy_plot(title, "epoch", &ticks, &series, None, 0.02, false)
}

fn print_histogram(r: &RunResult) {
    let h = &r.histogram;
    if h.total == 0 {
        return;
    }
    println!(
        "\nactivation-gradient magnitudes ({}; {} values, {} exact zeros):",
        r.precision.name(),
        h.total,
        h.zeros
    );
    let max = *h.counts.iter().max().unwrap_or(&1);
    for (i, &c) in h.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let e = GradHistogram::MIN_LOG2 + i as i32;
        let marker = if e < -24 {
            " <- below f16's smallest subnormal (2^-24)"
        } else {
            ""
        };
        println!(
            "  2^{e:<4} {:>10}  {}{marker}",
            c,
            "#".repeat((c * 40 / max.max(1)) as usize)
        );
    }
    let nz = (h.total - h.zeros).max(1) as f64;
    println!(
        "  lost to zero in f16 unscaled: {:.3}% of non-zero gradients",
        h.lost_unscaled as f64 * 100.0 / nz
    );
    println!("  lost to zero in f16 with loss scale (max(2^16, final scale)): {:.3}%; overflowing: {:.3}%", h.lost_scaled as f64 * 100.0 / nz, h.overflow_scaled as f64 * 100.0 / nz);
}

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
    println!(
        "{}: {} train / {} test images of {} pixels; MLP {}-{}-10, {} epochs, batch {}, {} lr {}, loss weight {}",
        if o.data.is_some() { "MNIST" } else { "UCI digits (bundled)" },
        train.y.len(),
        test.y.len(),
        data.features,
        data.features,
        o.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
        o.epochs,
        o.batch,
        if o.adamw { "AdamW" } else { "SGD(momentum 0.9)" },
        o.lr,
        o.loss_weight
    );
    let mut results = Vec::new();
    for &p in &o.precisions {
        let res = match p {
            Precision::Bf16 => run::<bf16>(p, &o, &train, &test, false),
            Precision::F16 | Precision::F16NoScale => run::<f16>(p, &o, &train, &test, false),
            // f32, and the FP8 policies (f32 activations, FP8 products).
            _ => run::<f32>(p, &o, &train, &test, false),
        };
        match res {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1)
            }
        }
    }
    println!(
        "\n| precision | test acc. (last) | best | vs f32 (pp, last) | grads flushed, unscaled | flushed, scale used | skipped steps | final loss scale | time/epoch | bytes: weights + activations |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let last = |r: &RunResult| r.accuracy_per_epoch.last().copied().unwrap_or(0.0);
    let base = results
        .iter()
        .find(|r| r.precision == Precision::F32)
        .map(last);
    for r in &results {
        let delta = base.map_or("–".to_string(), |b| {
            format!("{:+.2}", (last(r) - b) * 100.0)
        });
        let best = r.accuracy_per_epoch.iter().fold(0.0f64, |m, &a| m.max(a));
        println!(
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
    if let Some(path) = &o.svg {
        let title = format!(
            "{}: test accuracy per epoch, MLP {}-{}-10",
            if o.data.is_some() {
                "MNIST"
            } else {
                "UCI digits"
            },
            data.features,
            o.hidden
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("-")
        );
        if let Err(e) = std::fs::write(path, svg(&results, &title)) {
            eprintln!("error: --svg {path}: {e}");
            std::process::exit(1)
        }
        println!("\nwrote {path}");
    }
    if o.histogram {
        for r in &results {
            print_histogram(r);
        }
    }
}

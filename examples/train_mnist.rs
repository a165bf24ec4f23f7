//! Trains an MLP on handwritten digits with each mixed-precision policy.
//!
//! ```text
//! cargo run --release --example train_mnist                       # f32, bundled 8×8 digits
//! cargo run --release --example train_mnist -- --precision all    # the side-by-side table
//! cargo run --release --example train_mnist -- --data ../shared/data --precision all   # MNIST IDX files
//! cargo run --release --example train_mnist -- --precision all --loss-weight 1e-5 --grad-histogram
//! ```
//!
//! The bundled set is the UCI optical digits (1797 images of 8×8, CC BY 4.0,
//! E. Alpaydin, C. Kaynak); `--data DIR` reads MNIST IDX files
//! (`*images-idx3-ubyte[.gz]`, `*labels-idx1-ubyte[.gz]`) from DIR.

use mixprec::amp::{
    train_step_observed, AdamW, GradHistogram, LossScaler, Mlp, Optimizer, Precision, Sgd,
};
use mixprec::convert::{narrow, StochasticRng};
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{bf16, f16, FloatElement};
use std::io::{Read, Write};
use std::time::Instant;

const DIGITS_CSV: &str = include_str!("../data/optdigits.csv");

struct Data {
    x: Vec<f32>,
    y: Vec<u8>,
    features: usize,
}

fn digits() -> Data {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for line in DIGITS_CSV.lines().filter(|l| !l.trim().is_empty()) {
        let v: Vec<f32> = line
            .split(',')
            .map(|t| t.trim().parse::<f32>().unwrap_or(0.0))
            .collect();
        x.extend(v[..64].iter().map(|p| p / 16.0));
        y.push(v[64] as u8);
    }
    Data { x, y, features: 64 }
}

fn read_maybe_gz(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let raw = std::fs::read(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn mnist(dir: &str) -> Result<Data, String> {
    let find = |tag: &str| -> Result<std::path::PathBuf, String> {
        std::fs::read_dir(dir)
            .map_err(|e| format!("{dir}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(tag))
            })
            .ok_or(format!("no *{tag}* file in {dir}"))
    };
    let images = read_maybe_gz(&find("images-idx3-ubyte")?).map_err(|e| e.to_string())?;
    let labels = read_maybe_gz(&find("labels-idx1-ubyte")?).map_err(|e| e.to_string())?;
    let be =
        |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
    if images.len() < 16 || be(&images, 0) != 2051 || labels.len() < 8 || be(&labels, 0) != 2049 {
        return Err("not MNIST IDX files (bad magic numbers)".into());
    }
    let (n, rows, cols) = (be(&images, 4), be(&images, 8), be(&images, 12));
    if be(&labels, 4) != n || images.len() < 16 + n * rows * cols || labels.len() < 8 + n {
        return Err("IDX files disagree on the number of images or are truncated".into());
    }
    Ok(Data {
        x: images[16..16 + n * rows * cols]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect(),
        y: labels[8..8 + n].to_vec(),
        features: rows * cols,
    })
}

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
            "--optimizer" => o.adamw = val()? == "adamw",
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
            "-h" | "--help" => {
                println!(
                    "train_mnist [--precision f32|bf16|f16|f16-noscale|all] [--epochs N] [--hidden A,B,..]\n\
                     \x20           [--batch N] [--lr X] [--optimizer sgd|adamw] [--loss-weight W]\n\
                     \x20           [--init-scale S] [--seed N] [--data DIR] [--threads N] [--grad-histogram]\n\
                     --loss-weight multiplies the loss (a weaker learning signal); with SGD the\n\
                     learning rate is divided by it, so f32 training is unchanged."
                );
                std::process::exit(0)
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.batch == 0 || o.epochs == 0 || o.loss_weight.is_nan() || o.loss_weight <= 0.0 {
        return Err("--batch, --epochs and --loss-weight must be positive".into());
    }
    Ok(o)
}

struct RunResult {
    precision: Precision,
    accuracy: f64,
    secs_per_epoch: f64,
    memory_bytes: usize,
    skipped: u64,
    final_scale: f32,
    histogram: GradHistogram,
}

fn accuracy<T: FloatElement>(
    mlp: &mut Mlp<T>,
    x: &[f32],
    y: &[u8],
    features: usize,
    par: Parallelism,
) -> Result<f64, mixprec::Error> {
    let mut correct = 0usize;
    for (xb, yb) in x.chunks(256 * features).zip(y.chunks(256)) {
        let mut xt = vec![T::zeroed(); xb.len()];
        narrow(xb, &mut xt)?;
        let logits = mlp.forward(&xt, par)?;
        let classes = logits.len() / yb.len();
        for (row, &label) in logits.chunks(classes).zip(yb) {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |b, (i, v)| {
                    if v.to_f32() > b.1 {
                        (i, v.to_f32())
                    } else {
                        b
                    }
                });
            correct += usize::from(best.0 == label as usize);
        }
    }
    Ok(correct as f64 / y.len() as f64)
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

#[allow(clippy::too_many_arguments)]
fn run<T: FloatElement>(
    precision: Precision,
    o: &Opts,
    train: &Data,
    test: &Data,
    quiet: bool,
) -> Result<RunResult, mixprec::Error> {
    let par = if o.threads > 1 {
        Parallelism::Threads(o.threads)
    } else {
        Parallelism::Serial
    };
    let mut rng = StochasticRng::new(o.seed);
    let mut sizes = vec![train.features];
    sizes.extend(&o.hidden);
    sizes.push(10);
    let mut mlp = Mlp::<T>::new(&sizes, Activation::Relu, o.init_scale, &mut rng)?;
    let mut opt: Box<dyn Optimizer> = if o.adamw {
        Box::new(AdamW::new(o.lr, 0.01)?)
    } else {
        Box::new(Sgd::new(o.lr / o.loss_weight, 0.9, 0.0)?)
    };
    let mut scaler: LossScaler = precision.scaler();
    let n = train.y.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut shuffle = StochasticRng::new(o.seed ^ 0x5eed);
    let mut hist = GradHistogram::default();
    let started = Instant::now();
    let mut accuracy_now = 0.0;
    let steps = n.div_ceil(o.batch);
    for epoch in 1..=o.epochs {
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
            let yb: Vec<u8> = idx.iter().map(|&i| train.y[i]).collect();
            let mut xt = vec![T::zeroed(); xb.len()];
            narrow(&xb, &mut xt)?;
            let scale = scaler.scale();
            let record = o.histogram;
            let mut observe = |g: &[f32]| {
                if record {
                    let true_grads: Vec<f32> = g.iter().map(|v| v / scale).collect();
                    hist.add(&true_grads, 65536.0f32.max(scale));
                }
            };
            let out = train_step_observed(
                &mut mlp,
                opt.as_mut(),
                &mut scaler,
                &xt,
                &yb,
                o.loss_weight,
                par,
                &mut observe,
            )?;
            if out.loss.is_finite() {
                loss_sum += (out.loss / o.loss_weight) as f64;
                count += 1;
            }
            if !quiet && (s % 8 == 0 || s + 1 == steps) {
                eprint!("\r  epoch {epoch:>3}/{} {}", o.epochs, bar(s + 1, steps));
                let _ = std::io::stderr().flush();
            }
        }
        accuracy_now = accuracy(&mut mlp, &test.x, &test.y, test.features, par)?;
        if !quiet {
            eprint!("\r{}\r", " ".repeat(60));
            println!(
                "{:<12} epoch {epoch:>3}  loss {:.4}  test acc {:.2}%  loss scale {:<8}  skipped {}",
                precision.name(),
                loss_sum / count.max(1) as f64,
                accuracy_now * 100.0,
                scaler.scale(),
                scaler.skipped_steps()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64() / o.epochs as f64;
    let params = mlp.num_params();
    let widths: usize = sizes.iter().sum();
    let bytes = precision.bytes();
    let memory_bytes = params * bytes
        + if precision == Precision::F32 {
            0
        } else {
            params * 4
        }
        + o.batch * widths * bytes;
    Ok(RunResult {
        precision,
        accuracy: accuracy_now,
        secs_per_epoch: secs,
        memory_bytes,
        skipped: scaler.skipped_steps(),
        final_scale: scaler.scale(),
        histogram: hist,
    })
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
    let data = match &o.data {
        None => digits(),
        Some(dir) => match mnist(dir) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
        },
    };
    // Held-out split: a seeded shuffle, 20 % for test.
    let n = data.y.len();
    let mut idx: Vec<usize> = (0..n).collect();
    let mut r = StochasticRng::new(7);
    for i in (1..n).rev() {
        idx.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
    }
    let n_test = n / 5;
    let pick = |ids: &[usize]| Data {
        x: ids
            .iter()
            .flat_map(|&i| {
                data.x[i * data.features..(i + 1) * data.features]
                    .iter()
                    .copied()
            })
            .collect(),
        y: ids.iter().map(|&i| data.y[i]).collect(),
        features: data.features,
    };
    let (test, train) = (pick(&idx[..n_test]), pick(&idx[n_test..]));
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
            Precision::F32 => run::<f32>(p, &o, &train, &test, false),
            Precision::Bf16 => run::<bf16>(p, &o, &train, &test, false),
            Precision::F16 | Precision::F16NoScale => run::<f16>(p, &o, &train, &test, false),
        };
        match res {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1)
            }
        }
    }
    if results.len() > 1 {
        println!("\n| precision | test accuracy | vs f32 (pp) | time/epoch | weights+activations | skipped steps | final loss scale |");
        println!("|---|---|---|---|---|---|---|");
        let base = results
            .iter()
            .find(|r| r.precision == Precision::F32)
            .map(|r| r.accuracy);
        for r in &results {
            let delta = base.map_or("–".to_string(), |b| {
                format!("{:+.2}", (r.accuracy - b) * 100.0)
            });
            println!(
                "| {} | {:.2}% | {} | {:.0} ms | {:.1} KiB | {} | {} |",
                r.precision.name(),
                r.accuracy * 100.0,
                delta,
                r.secs_per_epoch * 1e3,
                r.memory_bytes as f64 / 1024.0,
                r.skipped,
                r.final_scale
            );
        }
    }
    if o.histogram {
        for r in &results {
            print_histogram(r);
        }
    }
}

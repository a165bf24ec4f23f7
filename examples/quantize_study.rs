//! Accuracy vs bits after post-training quantization: the seed's figure.
//!
//! ```text
//! cargo run --release --example quantize_study                        # bundled 8×8 digits
//! cargo run --release --example quantize_study -- --svg study.svg     # and the plot
//! cargo run --release --example quantize_study -- --data DIR          # MNIST IDX files in DIR
//! ```
//!
//! Trains an MLP in f32 (SGD with momentum, seeded), then quantizes its
//! weights, and the activations where the scheme defines them, after
//! training ([`mixprec::quant::ptq`]): TPU-style fixed point (power-of-two
//! scales per layer from the observed range), affine per tensor, symmetric
//! per channel and histogram-calibrated (L2-optimal clipping) affine at 8,
//! 7, 6, 5 and 4 bits, and MXINT8, MXFP8 E4M3, MXFP6 E2M3, MXFP4 and NVFP4 at
//! their own widths. Inference runs on the crate's integer GEMM (`qgemm`,
//! exact i32 sums) and block-scaled GEMM (`block_gemm`), never on
//! dequantized f32 weights. Prints test accuracy by scheme × bits with the
//! bits per weight including scale overhead; `--svg FILE` writes the plot
//! (accuracy vs bits per scheme, f32 as a horizontal line).
//!
//! `--data DIR` reads MNIST IDX files (`train-*`/`t10k-*`, optionally
//! gzipped); the test set is then MNIST's 10k.

#[macro_use]
mod common;
use common::{
    accuracy_plot, correct_predictions, holdout_split, mnist, parse_digits, train_mlp, unknown,
    Args, Series, DIGITS_CSV,
};

use mixprec::gemm::Parallelism;
use mixprec::quant::ptq::{PtqScheme, QuantizedMlp};
use std::io::IsTerminal;

const BITS: [u32; 5] = [8, 7, 6, 5, 4];

struct Opts {
    data: Option<String>,
    epochs: usize,
    hidden: Vec<usize>,
    seed: u64,
    svg: Option<String>,
    threads: usize,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        data: None,
        epochs: 20,
        hidden: vec![64],
        seed: 3,
        svg: None,
        threads: 1,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.as_str() {
            "--data" => o.data = Some(args.value(&flag)?),
            "--epochs" => o.epochs = args.at_least(&flag, 1)?,
            "--hidden" => {
                let v = args.value(&flag)?;
                o.hidden = v
                    .split(',')
                    .map(|s| match s.parse::<usize>() {
                        Ok(w) if w >= 1 => Ok(w),
                        Ok(_) => Err(format!("--hidden {v}: widths must be at least 1")),
                        Err(e) => Err(format!("--hidden {v}: {e}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--seed" => o.seed = args.parse(&flag)?,
            "--svg" => o.svg = Some(args.value(&flag)?),
            "--threads" => o.threads = args.at_least(&flag, 1)?,
            "-h" | "--help" => {
                outln!(
                    "quantize_study [--data DIR] [--epochs N] [--hidden A,B,..] [--seed N]\n\
                     \x20              [--svg FILE] [--threads N]"
                );
                std::process::exit(0)
            }
            other => return Err(unknown(other)),
        }
    }
    Ok(o)
}

fn accuracy(logits: &[f32], labels: &[u8]) -> f64 {
    correct_predictions(logits, labels) as f64 / labels.len().max(1) as f64
}

/// One row of the table: accuracy per bit width (None where the scheme
/// has another width) and the bits per weight at each.
struct Row {
    scheme: PtqScheme,
    acc: Vec<Option<f64>>,
    bpw: Vec<Option<f64>>,
}

/// Accuracy against bits per weight as the table counts them (scales
/// included: MXFP4 at 4.25, NVFP4 at 4.5, MXFP8 at 8.25), so that schemes
/// of the same nominal width stand apart where their storage differs.
fn svg(rows: &[Row], f32_acc: f64, title: &str) -> String {
    let series: Vec<Series> = rows
        .iter()
        .map(|r| Series {
            name: r.scheme.name().to_string(),
            points: r
                .acc
                .iter()
                .zip(&r.bpw)
                .filter_map(|(a, b)| Some((b.as_ref().copied()?, a.as_ref().copied()?)))
                .collect(),
        })
        .collect();
    let ticks: Vec<f64> = BITS.iter().map(|&b| f64::from(b)).collect();
    accuracy_plot(
        title,
        "bits per weight, scales included",
        &ticks,
        &series,
        Some(("f32", f32_acc)),
        true,
    )
}

fn run(o: &Opts) -> Result<(), String> {
    let fail = |e: mixprec::Error| e.to_string();
    let (train_set, test) = match &o.data {
        Some(dir) => match mnist(dir)? {
            (train, Some(test)) => (train, test),
            (all, None) => holdout_split(&all, 5),
        },
        None => holdout_split(&parse_digits(DIGITS_CSV)?, 5),
    };
    let par = if o.threads == 1 {
        Parallelism::Serial
    } else {
        Parallelism::Threads(o.threads)
    };
    let f = train_set.features;
    outln!(
        "{}: {} train / {} test images of {f} pixels; MLP {f}-{}-10 trained in f32 for {} epochs",
        if o.data.is_some() {
            "MNIST"
        } else {
            "UCI digits (bundled)"
        },
        train_set.y.len(),
        test.y.len(),
        o.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        o.epochs
    );
    let progress = std::io::stderr().is_terminal();
    let mlp = train_mlp(&train_set, &o.hidden, None, o.epochs, o.seed, par, |e| {
        if progress {
            eprint!("\rtraining f32: epoch {e}/{}", o.epochs);
        }
    })
    .map_err(fail)?;
    if progress {
        eprintln!();
    }
    let f32_acc = accuracy(&mlp.infer(&test.x, par).map_err(fail)?, &test.y);
    // Calibration: the first 1024 training images.
    let calib = &train_set.x[..train_set.x.len().min(1024 * f)];
    let mut rows = Vec::new();
    for scheme in PtqScheme::ALL {
        let mut row = Row {
            scheme,
            acc: vec![None; BITS.len()],
            bpw: vec![None; BITS.len()],
        };
        for (i, &bits) in BITS.iter().enumerate() {
            if scheme.fixed_bits().is_some_and(|b| b != bits) {
                continue;
            }
            let q = QuantizedMlp::new(&mlp, calib, scheme, bits).map_err(fail)?;
            let logits = q.infer(&test.x, test.y.len(), par).map_err(fail)?;
            row.acc[i] = Some(accuracy(&logits, &test.y));
            row.bpw[i] = Some(q.bits_per_weight());
        }
        rows.push(row);
    }
    outln!(
        "\nTest accuracy after post-training quantization (f32: {:.2} %)\n",
        f32_acc * 100.0
    );
    print!("| scheme |");
    for b in BITS {
        print!(" {b} bits |");
    }
    outln!(" bits/weight incl. scales |");
    outln!("|---|{}---|", "---|".repeat(BITS.len()));
    for row in &rows {
        print!("| {} |", row.scheme.name());
        for a in &row.acc {
            match a {
                Some(a) => print!(" {:.2} % |", a * 100.0),
                None => print!(" – |"),
            }
        }
        let bpw: Vec<String> = row
            .bpw
            .iter()
            .flatten()
            .map(|p| format!("{p:.3}"))
            .collect();
        outln!(" {} |", bpw.join(" / "));
    }
    if let Some(path) = &o.svg {
        let title = format!(
            "Post-training quantization, {} ({}-{}-10 MLP)",
            if o.data.is_some() {
                "MNIST"
            } else {
                "UCI digits"
            },
            f,
            o.hidden
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("-")
        );
        std::fs::write(path, svg(&rows, f32_acc, &title))
            .map_err(|e| format!("--svg {path}: {e}"))?;
        outln!("\nwrote {path}");
    }
    Ok(())
}

fn main() {
    let result = parse().and_then(|o| run(&o));
    if let Err(e) = result {
        eprintln!("quantize_study: {e}");
        std::process::exit(2);
    }
}

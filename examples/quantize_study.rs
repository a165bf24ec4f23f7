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

mod common;
use common::{correct_predictions, holdout_split, mnist, parse_digits, Data, DIGITS_CSV};

use mixprec::amp::{train_step, Loss, Mlp, Precision, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::quant::ptq::{PtqScheme, QuantizedMlp};
use std::fmt::Write as _;
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
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => o.data = Some(val()?),
            "--epochs" => o.epochs = val()?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "--hidden" => {
                o.hidden = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--hidden: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--seed" => o.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--svg" => o.svg = Some(val()?),
            "--threads" => o.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "-h" | "--help" => {
                println!(
                    "quantize_study [--data DIR] [--epochs N] [--hidden A,B,..] [--seed N]\n\
                     \x20              [--svg FILE] [--threads N]"
                );
                std::process::exit(0)
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.epochs == 0 || o.threads == 0 || o.hidden.contains(&0) {
        return Err("--epochs, --threads and --hidden widths must be at least 1".into());
    }
    Ok(o)
}

/// The f32 model, trained with SGD (lr 0.02, momentum 0.9), batch 32.
fn train(train: &Data, o: &Opts, par: Parallelism) -> Result<Mlp<f32>, mixprec::Error> {
    let f = train.features;
    let widths: Vec<usize> = std::iter::once(f)
        .chain(o.hidden.iter().copied())
        .chain([10])
        .collect();
    let mut mlp = Mlp::<f32>::new(
        &widths,
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(o.seed),
    )?;
    let mut opt = Sgd::new(0.02, 0.9, 0.0)?;
    let mut scaler = Precision::F32.scaler();
    for epoch in 0..o.epochs {
        for (xb, yb) in train.x.chunks(32 * f).zip(train.y.chunks(32)) {
            let labels: Vec<u32> = yb.iter().map(|&y| u32::from(y)).collect();
            let loss = Loss::CrossEntropy { labels: &labels };
            train_step(&mut mlp, &mut opt, &mut scaler, xb, loss, 1.0, par)?;
        }
        if std::io::stderr().is_terminal() {
            eprint!("\rtraining f32: epoch {}/{}", epoch + 1, o.epochs);
        }
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    Ok(mlp)
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

fn svg(rows: &[Row], f32_acc: f64, title: &str) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 460.0, 60.0, 230.0, 40.0, 50.0);
    let lo = rows
        .iter()
        .flat_map(|r| r.acc.iter().flatten())
        .fold(f32_acc, |m, &a| m.min(a));
    let lo = ((lo * 20.0).floor() / 20.0).max(0.0); // down to a multiple of 5 %
    let x_of = |bits: f64| left + (bits - 4.0) / 4.0 * (w - left - right);
    let y_of = |acc: f64| top + (1.0 - (acc - lo) / (1.0 - lo)) * (h - top - bottom);
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22",
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>"#,
        (w - right + left) / 2.0
    );
    // Axes, ticks and grid.
    for bits in 4..=8 {
        let x = x_of(f64::from(bits));
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{bits}</text>"##,
            h - bottom,
            h - bottom + 16.0
        );
    }
    let steps = ((1.0 - lo) / 0.05).round() as usize;
    for i in 0..=steps {
        let acc = lo + i as f64 * 0.05;
        let y = y_of(acc);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{:.0}%</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            acc * 100.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">bits per element</text>"#,
        (w - right + left) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">test accuracy</text>"#,
        (h - bottom + top) / 2.0,
        (h - bottom + top) / 2.0
    );
    // f32 as a horizontal line.
    let y = y_of(f32_acc);
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="black" stroke-dasharray="6,4"/>"#,
        w - right
    );
    let mut legend_y = top + 10.0;
    let _ = writeln!(
        s,
        r#"<line x1="{}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="black" stroke-dasharray="6,4"/><text x="{}" y="{}">f32 ({:.2}%)</text>"#,
        w - right + 15.0,
        w - right + 40.0,
        w - right + 46.0,
        legend_y + 4.0,
        f32_acc * 100.0
    );
    for (row, colour) in rows.iter().zip(colours.iter().cycle()) {
        let points: Vec<(f64, f64)> = BITS
            .iter()
            .zip(&row.acc)
            .filter_map(|(&b, a)| a.map(|a| (x_of(f64::from(b)), y_of(a))))
            .collect();
        if points.len() > 1 {
            let path: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
        }
        for (x, y) in &points {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{colour}"/>"#
            );
        }
        legend_y += 20.0;
        let _ = writeln!(
            s,
            r#"<circle cx="{}" cy="{legend_y}" r="4" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
            w - right + 27.0,
            w - right + 46.0,
            legend_y + 4.0,
            row.scheme.name()
        );
    }
    s.push_str("</svg>\n");
    s
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
    println!(
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
    let mlp = train(&train_set, o, par).map_err(fail)?;
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
    println!(
        "\nTest accuracy after post-training quantization (f32: {:.2} %)\n",
        f32_acc * 100.0
    );
    print!("| scheme |");
    for b in BITS {
        print!(" {b} bits |");
    }
    println!(" bits/weight incl. scales |");
    println!("|---|{}---|", "---|".repeat(BITS.len()));
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
        println!(" {} |", bpw.join(" / "));
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
        println!("\nwrote {path}");
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

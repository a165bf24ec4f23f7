//! Shared by the examples: the command line ([`Args`]), printing that
//! survives a closed pipe ([`outln!`]), the bundled digits, MNIST IDX
//! files, a seeded held-out split, accuracy and plots. (A directory module,
//! so Cargo does not take it for an example of its own.)

#![allow(dead_code, unused_macros)] // each example uses part of it

/// `println!` for the examples' output: when stdout is a closed pipe
/// (`example | head -2`) the program ends quietly with status 0, as Unix
/// tools do, instead of panicking; any other write error ends it with a
/// message and status 1.
macro_rules! outln {
    () => {
        $crate::common::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::common::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// The body of [`outln!`].
pub fn write_stdout(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// The examples' command line, with the guarantees clap gives: an unknown
/// flag, a flag given twice, a missing value and a value that does not
/// parse or is out of range are errors that name the flag.
pub struct Args {
    rest: std::vec::IntoIter<String>,
    seen: Vec<String>,
}

impl Args {
    /// The process's arguments, program name skipped.
    pub fn from_env() -> Self {
        Self::new(std::env::args().skip(1).collect())
    }

    /// These arguments (for tests of a parser).
    pub fn new(args: Vec<String>) -> Self {
        Self {
            rest: args.into_iter(),
            seen: Vec::new(),
        }
    }

    /// The next flag, or `None` at the end. A flag seen before is an
    /// error (clap's default: a repeated flag is not silently the last).
    pub fn next_flag(&mut self) -> Result<Option<String>, String> {
        let Some(flag) = self.rest.next() else {
            return Ok(None);
        };
        if self.seen.contains(&flag) {
            return Err(format!("{flag} given twice"));
        }
        self.seen.push(flag.clone());
        Ok(Some(flag))
    }

    /// The value after `flag`.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))
    }

    /// The value after `flag`, parsed.
    pub fn parse<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.value(flag)?;
        v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
    }

    /// The value after `flag`, parsed, at least `min`.
    pub fn at_least<T>(&mut self, flag: &str, min: T) -> Result<T, String>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let v: T = self.parse(flag)?;
        if v < min {
            return Err(format!("{flag} {v}: must be at least {min}"));
        }
        Ok(v)
    }

    /// The value after `flag`: a finite number > 0.
    pub fn positive(&mut self, flag: &str) -> Result<f32, String> {
        let v: f32 = self.parse(flag)?;
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("{flag} {v}: must be finite and > 0"));
        }
        Ok(v)
    }
}

/// The error for an argument no flag matches.
pub fn unknown(arg: &str) -> String {
    format!("unknown argument {arg:?} (try --help)")
}

use mixprec::amp::Mlp;
use mixprec::convert::{narrow, StochasticRng};
use mixprec::gemm::Parallelism;
use mixprec::FloatElement;
use std::io::Read;

/// The bundled UCI optical digits (CC BY 4.0, E. Alpaydin, C. Kaynak).
pub const DIGITS_CSV: &str = include_str!("../../data/optdigits.csv");

/// Images (pixels in [0, 1], row after row) and labels.
pub struct Data {
    pub x: Vec<f32>,
    pub y: Vec<u8>,
    pub features: usize,
}

/// Parses the digits CSV: 64 pixels in 0..=16 and a label in 0..=9 per
/// line; any other field is an error naming its line and column.
pub fn parse_digits(csv: &str) -> Result<Data, String> {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (i, line) in csv
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 65 {
            return Err(format!(
                "digits CSV line {}: {} fields, expected 65 (64 pixels and a label)",
                i + 1,
                fields.len()
            ));
        }
        for (j, f) in fields.iter().enumerate() {
            let v: u8 = f.parse().map_err(|_| {
                format!(
                    "digits CSV line {}, field {}: {f:?} is not a whole number",
                    i + 1,
                    j + 1
                )
            })?;
            let max = if j == 64 { 9 } else { 16 };
            if v > max {
                return Err(format!(
                    "digits CSV line {}, field {}: {v} is above {max}",
                    i + 1,
                    j + 1
                ));
            }
            if j == 64 {
                y.push(v);
            } else {
                x.push(v as f32 / 16.0);
            }
        }
    }
    Ok(Data { x, y, features: 64 })
}

/// A seeded shuffle (seed 7) of `data`, then the first `n / test_share`
/// images as the test set and the rest as the training set (`test_share`
/// 0: no test set, every image shuffled into training).
pub fn holdout_split(data: &Data, test_share: usize) -> (Data, Data) {
    let n = data.y.len();
    let mut idx: Vec<usize> = (0..n).collect();
    let mut r = StochasticRng::new(7);
    for i in (1..n).rev() {
        idx.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
    }
    let n_test = n.checked_div(test_share).unwrap_or(0);
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
    (pick(&idx[n_test..]), pick(&idx[..n_test]))
}

/// How many rows of `logits` (one row per label) have their largest value
/// (the first, on ties) at the label.
pub fn correct_predictions<T: FloatElement>(logits: &[T], labels: &[u8]) -> usize {
    let classes = logits.len() / labels.len().max(1);
    logits
        .chunks(classes.max(1))
        .zip(labels)
        .filter(|(row, &label)| {
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
            best.0 == label as usize
        })
        .count()
}

/// Share of `y` that the model's largest logit gets right.
pub fn accuracy<T: FloatElement>(
    mlp: &Mlp<T>,
    x: &[f32],
    y: &[u8],
    features: usize,
    par: Parallelism,
) -> Result<f64, mixprec::Error> {
    let mut correct = 0usize;
    for (xb, yb) in x.chunks(256 * features).zip(y.chunks(256)) {
        let mut xt = vec![T::zeroed(); xb.len()];
        narrow(xb, &mut xt)?;
        let logits = mlp.infer(&xt, par)?;
        correct += correct_predictions(&logits, yb);
    }
    Ok(correct as f64 / y.len() as f64)
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

/// The `(images, labels)` file pairs in `dir`, by prefix: `train-` from
/// `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz`, and so on.
fn idx_pairs(dir: &str) -> Result<Vec<(String, std::path::PathBuf, std::path::PathBuf)>, String> {
    let names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{dir}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let prefix_of = |p: &std::path::Path, tag: &str| -> Option<String> {
        let name = p.file_name()?.to_str()?;
        let at = name.find(tag)?;
        let rest = &name[at + tag.len()..];
        (rest.is_empty() || rest == ".gz").then(|| name[..at].to_string())
    };
    let mut pairs = Vec::new();
    for img in &names {
        let Some(prefix) = prefix_of(img, "images-idx3-ubyte") else {
            continue;
        };
        let label = names
            .iter()
            .find(|l| prefix_of(l, "labels-idx1-ubyte").as_deref() == Some(prefix.as_str()))
            .ok_or(format!(
                "{}: no matching {prefix}labels-idx1-ubyte[.gz] in {dir}",
                img.display()
            ))?;
        pairs.push((prefix, img.clone(), label.clone()));
    }
    pairs.sort();
    Ok(pairs)
}

/// Reads one IDX image/label pair, checking magic numbers, sizes (without
/// overflow) and labels (0..=9).
pub fn read_idx(images: &std::path::Path, labels: &std::path::Path) -> Result<Data, String> {
    let what = |p: &std::path::Path, e: std::io::Error| format!("{}: {e}", p.display());
    let img = read_maybe_gz(images).map_err(|e| what(images, e))?;
    let lab = read_maybe_gz(labels).map_err(|e| what(labels, e))?;
    let be = |b: &[u8], at: usize| -> usize {
        b.get(at..at + 4)
            .map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize)
    };
    if img.len() < 16 || be(&img, 0) != 2051 || lab.len() < 8 || be(&lab, 0) != 2049 {
        return Err(format!(
            "{} / {}: not MNIST IDX files (bad magic numbers)",
            images.display(),
            labels.display()
        ));
    }
    let (n, rows, cols) = (be(&img, 4), be(&img, 8), be(&img, 12));
    let features = rows.checked_mul(cols).filter(|&f| f > 0).ok_or(format!(
        "{}: image size {rows}x{cols} is invalid",
        images.display()
    ))?;
    let pixels = n
        .checked_mul(features)
        .and_then(|p| p.checked_add(16))
        .ok_or(format!(
            "{}: {n} images of {rows}x{cols} overflow",
            images.display()
        ))?;
    if be(&lab, 4) != n {
        return Err(format!(
            "{} holds {n} images but {} holds {} labels",
            images.display(),
            labels.display(),
            be(&lab, 4)
        ));
    }
    if img.len() < pixels || lab.len() < 8 + n {
        return Err(format!(
            "{} / {}: truncated ({} and {} bytes for {n} images)",
            images.display(),
            labels.display(),
            img.len(),
            lab.len()
        ));
    }
    let y = lab[8..8 + n].to_vec();
    if let Some((i, &bad)) = y.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(format!(
            "{}: label {bad} of image {i} is not a digit",
            labels.display()
        ));
    }
    Ok(Data {
        x: img[16..pixels].iter().map(|&p| p as f32 / 255.0).collect(),
        y,
        features,
    })
}

/// `(train, Some(test))` for the standard `train-*`/`t10k-*` layout, or
/// `(all, None)` for a folder with one pair.
pub fn mnist(dir: &str) -> Result<(Data, Option<Data>), String> {
    let pairs = idx_pairs(dir)?;
    let find = |p: &str| pairs.iter().find(|(prefix, _, _)| prefix == p);
    match (find("train-"), find("t10k-"), pairs.as_slice()) {
        (Some(train), Some(test), _) => Ok((
            read_idx(&train.1, &train.2)?,
            Some(read_idx(&test.1, &test.2)?),
        )),
        (_, _, [one]) => Ok((read_idx(&one.1, &one.2)?, None)),
        (_, _, []) => Err(format!(
            "no MNIST IDX files (*images-idx3-ubyte[.gz] with *labels-idx1-ubyte[.gz]) in {dir}"
        )),
        _ => Err(format!(
            "{dir} holds several IDX pairs ({}) and not the standard train-/t10k- layout; \
             put one pair in a folder of its own",
            pairs
                .iter()
                .map(|(p, _, _)| format!("{p}*"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// One line of an [`accuracy_plot`]: a name and `(x, accuracy)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The y grid step for accuracies from `lo` to 1: the smallest of 1, 2,
/// 5, 10, 20, 25 and 50 percentage points that draws at most 10 intervals
/// (labels overprint past that in the plot's height).
pub fn y_step_for(lo: f64) -> f64 {
    let span = (1.0 - lo).max(0.0);
    [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5]
        .into_iter()
        .find(|&step| span / step <= 10.0)
        .unwrap_or(0.5)
}

/// An SVG plot of test accuracy (0..1, shown in %) against `x`: one
/// coloured line per series with a marker on each point when `dots`, a
/// legend, optionally a dashed horizontal reference line, grid lines at a
/// step chosen by [`y_step_for`], and `x_ticks` on the x axis (the x range
/// covers the ticks and every point).
///
/// Series that coincide stay visible: each earlier series is drawn wider
/// and lighter than the ones after it (the first one widest, underneath),
/// and markers shrink and change shape from series to series. A series of
/// one point is drawn as its marker alone.
pub fn accuracy_plot(
    title: &str,
    x_label: &str,
    x_ticks: &[f64],
    series: &[Series],
    reference: Option<(&str, f64)>,
    dots: bool,
) -> String {
    use std::fmt::Write as _;
    let (w, h, left, right, top, bottom) = (800.0, 470.0, 60.0, 220.0, 40.0, 50.0);
    let (x0, x1) = x_ticks
        .iter()
        .copied()
        .chain(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    let (x0, x1) = if x0.is_finite() { (x0, x1) } else { (0.0, 1.0) };
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let lo = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(reference.map(|r| r.1))
        .filter(|a| a.is_finite())
        .fold(1.0f64, f64::min);
    let y_step = y_step_for(lo);
    let lo = ((lo / y_step).floor() * y_step).clamp(0.0, 1.0 - y_step);
    let x_of = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let y_of = |a: f64| top + (1.0 - (a.max(lo) - lo) / (1.0 - lo)) * (h - top - bottom);
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
    let mid = (w - right + left) / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="{mid}" y="20" text-anchor="middle" font-size="14">{title}</text>"#
    );
    for &x in x_ticks {
        let px = x_of(x);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{}" stroke="#ddd"/><text x="{px:.1}" y="{}" text-anchor="middle">{x}</text>"##,
            h - bottom,
            h - bottom + 16.0
        );
    }
    for i in 0..=((1.0 - lo) / y_step).round() as usize {
        let a = lo + i as f64 * y_step;
        let y = y_of(a);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>"##,
            w - right,
            left - 6.0,
            y + 4.0,
            a * 100.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{mid}" y="{}" text-anchor="middle">{x_label}</text>"#,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">test accuracy</text>"#,
        (h - bottom + top) / 2.0
    );
    let mut legend_y = top + 10.0;
    let (lx0, lx1, tx) = (w - right + 15.0, w - right + 40.0, w - right + 46.0);
    if let Some((name, a)) = reference {
        let y = y_of(a);
        let _ = writeln!(
            s,
            r#"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="black" stroke-dasharray="6,4"/>"#,
            w - right
        );
        let _ = writeln!(
            s,
            r#"<line x1="{lx0}" y1="{legend_y}" x2="{lx1}" y2="{legend_y}" stroke="black" stroke-dasharray="6,4"/><text x="{tx}" y="{}">{name} ({:.2}%)</text>"#,
            legend_y + 4.0,
            a * 100.0
        );
        legend_y += 20.0;
    }
    let n = series.len();
    for (i, (line, colour)) in series.iter().zip(colours.iter().cycle()).enumerate() {
        // Earlier series wider and lighter, so a later one on top of it
        // leaves it visible as a border.
        let under = (n - 1 - i) as f64;
        let width = 2.0 + 1.5 * under;
        let opacity = if under > 0.0 { 0.55 } else { 1.0 };
        let size = 3.0 + 0.8 * under;
        let pts: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|&(x, a)| (x_of(x), y_of(a)))
            .collect();
        if pts.len() > 1 {
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{width}" stroke-opacity="{opacity}" stroke-linejoin="round"/>"#,
                path.join(" ")
            );
        }
        if dots || pts.len() == 1 {
            for &(x, y) in &pts {
                s.push_str(&marker(i, x, y, size, colour));
            }
        }
        if pts.len() == 1 {
            s.push_str(&marker(i, (lx0 + lx1) / 2.0, legend_y, 4.5, colour));
        } else {
            let _ = writeln!(
                s,
                r#"<line x1="{lx0}" y1="{legend_y}" x2="{lx1}" y2="{legend_y}" stroke="{colour}" stroke-width="{width}" stroke-opacity="{opacity}"/>"#
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{tx}" y="{}">{}</text>"#,
            legend_y + 4.0,
            line.name
        );
        legend_y += 20.0;
    }
    s.push_str("</svg>\n");
    s
}

/// Marker `i` (circle, square, triangle, diamond, in turn) of half-size
/// `r` at (x, y), outlined in white so that overlapping markers stay apart.
fn marker(i: usize, x: f64, y: f64, r: f64, colour: &str) -> String {
    let style = format!(r#"fill="{colour}" stroke="white" stroke-width="1""#);
    match i % 4 {
        0 => format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r:.1}\" {style}/>\n"),
        1 => format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" {style}/>\n",
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        2 => format!(
            "<polygon points=\"{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" {style}/>\n",
            y - r * 1.2,
            x - r * 1.1,
            y + r * 0.8,
            x + r * 1.1,
            y + r * 0.8
        ),
        _ => format!(
            "<polygon points=\"{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}\" {style}/>\n",
            y - r * 1.3,
            x + r * 1.3,
            y + r * 1.3,
            x - r * 1.3
        ),
    }
}

/// An MLP with f32 masters and working weights (`train.features`,
/// `hidden…`, 10) trained on `train` with SGD (learning rate 0.02,
/// momentum 0.9), batches of 32 in order, seeded initialisation, on FP8
/// products when `fp8` is given; `on_epoch(e)` after each epoch. What
/// `quantize_study` trains and the tests that hold its numbers train.
pub fn train_mlp(
    train: &Data,
    hidden: &[usize],
    fp8: Option<mixprec::amp::fp8::Fp8Recipe>,
    epochs: usize,
    seed: u64,
    par: Parallelism,
    mut on_epoch: impl FnMut(usize),
) -> Result<Mlp<f32>, mixprec::Error> {
    use mixprec::amp::{train_step, Loss, LossScaler, Sgd};
    use mixprec::gemm::Activation;
    let f = train.features;
    let widths: Vec<usize> = std::iter::once(f)
        .chain(hidden.iter().copied())
        .chain([10])
        .collect();
    let mut mlp = Mlp::<f32>::new(
        &widths,
        Activation::Relu,
        1.0,
        &mut StochasticRng::new(seed),
    )?;
    mlp.set_fp8(fp8)?;
    let mut opt = Sgd::new(0.02, 0.9, 0.0)?;
    // f32 and the FP8 policies both use a fixed loss scale of 1.
    let mut scaler = LossScaler::fixed(1.0)?;
    for epoch in 0..epochs {
        for (xb, yb) in train.x.chunks(32 * f).zip(train.y.chunks(32)) {
            let labels: Vec<u32> = yb.iter().map(|&y| u32::from(y)).collect();
            let loss = Loss::CrossEntropy { labels: &labels };
            train_step(&mut mlp, &mut opt, &mut scaler, xb, loss, 1.0, par)?;
        }
        on_epoch(epoch + 1);
    }
    Ok(mlp)
}

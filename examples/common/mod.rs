//! Shared by the examples: the bundled digits, MNIST IDX files, a seeded held-out split,
//! and accuracy. (A directory module, so Cargo does not take it for an
//! example of its own.)

#![allow(dead_code)] // each example uses part of it

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

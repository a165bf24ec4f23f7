//! Shared by the examples: the bundled digits, a seeded held-out split,
//! and accuracy. (A directory module, so Cargo does not take it for an
//! example of its own.)

#![allow(dead_code)] // each example uses part of it

use mixprec::amp::Mlp;
use mixprec::convert::{narrow, StochasticRng};
use mixprec::gemm::Parallelism;
use mixprec::FloatElement;

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

//! Post-training quantization (`quant::ptq`): the integer schemes equal a
//! plain transcription of their definitions bit for bit; the storage count
//! is exact; bad parameters are typed errors; and on the bundled digits the
//! 8-bit schemes stay within 1 percentage point of the f32 model, measured
//! by the same functions `examples/quantize_study` prints its table with.

#[path = "../examples/common/mod.rs"]
mod common;

use mixprec::amp::Mlp;
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::quant::ptq::{PtqScheme, QuantizedMlp};
use mixprec::Error;
use proptest::prelude::*;

fn random_mlp(widths: &[usize], seed: u64) -> Mlp<f32> {
    Mlp::<f32>::new(widths, Activation::Relu, 1.0, &mut StochasticRng::new(seed)).unwrap()
}

fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut r = StochasticRng::new(seed);
    (0..n)
        .map(|_| (r.next_u64() >> 40) as f32 / 16_777_216.0 * 2.0 - 0.5)
        .collect()
}

/// The definitions, transcribed: per-tensor or per-channel parameters for a
/// `bits`-wide range, `q = clamp(round_half_even(x / s) + z, qmin, qmax)`,
/// exact integer sums, `y = (acc as f32) · (s_a · s_w) + bias`, ReLU between
/// layers; activation ranges from the f32 model on the calibration rows.
mod plain {
    use super::*;

    pub fn min_max(x: &[f32]) -> (f32, f32) {
        x.iter()
            .fold((0.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)))
    }

    /// PyTorch's affine formula for `[qmin, qmax]`.
    pub fn affine(x: &[f32], qmin: i32, qmax: i32) -> (f32, i32) {
        let (lo, hi) = min_max(x);
        let s = ((hi - lo) / (qmax - qmin) as f32).max(f32::EPSILON);
        let z = (qmin as f32 - (lo / s).round_ties_even()) as i32;
        (s, z.clamp(qmin, qmax))
    }

    /// The power of two 2^-f with the largest f such that max|x| fits in
    /// `room` steps.
    pub fn pow2(x: &[f32], room: i32) -> f32 {
        let (lo, hi) = min_max(x);
        let amax = f64::from(lo.abs().max(hi.abs()));
        if amax == 0.0 {
            return 1.0;
        }
        let mut f = 126;
        while f > -126 && amax > f64::from(room) * 2f64.powi(-f) {
            f -= 1;
        }
        2f32.powi(-f)
    }

    pub fn q(x: f32, s: f32, z: i32, qmin: i32, qmax: i32) -> i32 {
        ((x / s).round_ties_even() as i64 + z as i64).clamp(qmin as i64, qmax as i64) as i32
    }

    pub fn infer(
        mlp: &Mlp<f32>,
        calib: &[f32],
        x: &[f32],
        scheme: PtqScheme,
        bits: u32,
    ) -> Vec<f32> {
        let (smin, smax) = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
        let (umin, umax) = (0, (1 << bits) - 1);
        let mut cal = calib.to_vec();
        let mut h = x.to_vec();
        let layers = mlp.layers();
        for (li, layer) in layers.iter().enumerate() {
            let (w, b) = layer.masters();
            let (k, n) = (layer.in_features(), layer.out_features());
            let rows = h.len() / k;
            // Weights: per-row (channel) or one (scale, zero point).
            let wp: Vec<(f32, i32)> = match scheme {
                PtqScheme::FixedPoint => vec![(pow2(w, smax), 0); n],
                PtqScheme::AffinePerTensor => vec![affine(w, smin, smax); n],
                PtqScheme::SymmetricPerChannel => w
                    .chunks(k)
                    .map(|r| {
                        let (lo, hi) = min_max(r);
                        let m = hi.max(-lo);
                        ((m / ((smax - smin) as f32 / 2.0)).max(f32::EPSILON), 0)
                    })
                    .collect(),
                _ => unreachable!(),
            };
            let (amin, amax, ap) = match scheme {
                PtqScheme::FixedPoint => (smin, smax, (pow2(&cal, smax), 0)),
                _ => (umin, umax, affine(&cal, umin, umax)),
            };
            let mut y = vec![0.0f32; rows * n];
            for r in 0..rows {
                for j in 0..n {
                    let (ws, wz) = wp[j];
                    let mut acc = 0i64;
                    for kk in 0..k {
                        let a = q(h[r * k + kk], ap.0, ap.1, amin, amax) - ap.1;
                        let wq = q(w[j * k + kk], ws, wz, smin, smax) - wz;
                        acc += i64::from(a) * i64::from(wq);
                    }
                    let v = acc as f32 * (ap.0 * ws) + b[j];
                    y[r * n + j] = if li + 1 < layers.len() && v < 0.0 {
                        0.0
                    } else {
                        v
                    };
                }
            }
            h = y;
            cal = layer
                .infer(&cal, cal.len() / k, Parallelism::Serial)
                .unwrap();
        }
        h
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The integer schemes at every width from 2 to 8 bits equal the plain
    /// transcription bit for bit (histogram calibration is left to the
    /// observer's own tests; here its accuracy is checked below).
    #[test]
    fn integer_schemes_follow_their_definitions(seed in any::<u64>(), bits in 2u32..=8, hidden in 1usize..40, rows in 1usize..9) {
        let mlp = random_mlp(&[24, hidden, 5], seed);
        let calib = inputs(16 * 24, seed ^ 1);
        let x = inputs(rows * 24, seed ^ 2);
        for scheme in [PtqScheme::FixedPoint, PtqScheme::AffinePerTensor, PtqScheme::SymmetricPerChannel] {
            let q = QuantizedMlp::new(&mlp, &calib, scheme, bits)?;
            let got = q.infer(&x, rows, Parallelism::Serial)?;
            let want = plain::infer(&mlp, &calib, &x, scheme, bits);
            prop_assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{:?} at {} bits", scheme, bits
            );
            // Threads give the same bits (the GEMMs' contract).
            let par = q.infer(&x, rows, Parallelism::Threads(2))?;
            prop_assert_eq!(par, got);
        }
    }
}

/// Storage per weight, counted by hand for a 40-24-10 MLP (K = 40 pads to
/// 64 for MX, to 48 for NVFP4; K = 24 pads to 32 and 32).
#[test]
fn bits_per_weight_counts_the_scales() {
    let mlp = random_mlp(&[40, 24, 10], 1);
    let calib = inputs(8 * 40, 2);
    let weights = (40 * 24 + 24 * 10) as f64;
    let bpw = |s, b| {
        QuantizedMlp::new(&mlp, &calib, s, b)
            .unwrap()
            .bits_per_weight()
    };
    // Per tensor: one f32 scale per layer (symmetric fixed point: no zero point).
    assert_eq!(bpw(PtqScheme::FixedPoint, 6), 6.0 + 2.0 * 32.0 / weights);
    // Symmetric per channel: one f32 scale per output channel.
    assert_eq!(
        bpw(PtqScheme::SymmetricPerChannel, 8),
        8.0 + (24.0 + 10.0) * 32.0 / weights
    );
    // MXFP4: 4 bits per stored element (K padded) and 8 per block of 32.
    let mx_stored = (64 * 24 + 32 * 10) as f64;
    assert_eq!(
        bpw(PtqScheme::MxFp4, 4),
        mx_stored * (4.0 + 8.0 / 32.0) / weights
    );
    assert_eq!(
        bpw(PtqScheme::MxFp8, 8),
        mx_stored * (8.0 + 8.0 / 32.0) / weights
    );
    // NVFP4: 4 + 8/16 per stored element and a 32-bit tensor scale per layer.
    let nv_stored = (48 * 24 + 32 * 10) as f64;
    assert_eq!(bpw(PtqScheme::Nvfp4, 4), (nv_stored * 4.5 + 64.0) / weights);
}

#[test]
fn bad_parameters_are_typed_errors() {
    let mlp = random_mlp(&[16, 8, 4], 1);
    let calib = inputs(4 * 16, 2);
    for bits in [0, 1, 9, 32] {
        assert!(matches!(
            QuantizedMlp::new(&mlp, &calib, PtqScheme::AffinePerTensor, bits),
            Err(Error::InvalidParameter { name: "bits", .. })
        ));
    }
    assert!(matches!(
        QuantizedMlp::new(&mlp, &calib, PtqScheme::MxFp4, 8),
        Err(Error::InvalidParameter { name: "bits", .. })
    ));
    assert!(matches!(
        QuantizedMlp::new(&mlp, &calib[..20], PtqScheme::FixedPoint, 8),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        QuantizedMlp::new(&mlp, &[], PtqScheme::HistogramPerTensor, 8),
        Err(Error::InvalidParameter {
            name: "calibration",
            ..
        })
    ));
    // Block-scaled schemes need no calibration rows.
    let q = QuantizedMlp::new(&mlp, &[], PtqScheme::Nvfp4, 4).unwrap();
    assert!(matches!(
        q.infer(&calib[..15], 1, Parallelism::Serial),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(q.infer(&calib, 4, Parallelism::Serial).unwrap().len(), 16);
    assert!(q.infer(&calib, 4, Parallelism::Threads(0)).is_err());
    // No rows: no logits, for every scheme.
    for scheme in PtqScheme::ALL {
        let q = QuantizedMlp::new(&mlp, &calib, scheme, scheme.fixed_bits().unwrap_or(5)).unwrap();
        assert!(
            q.infer(&[], 0, Parallelism::Serial).unwrap().is_empty(),
            "{scheme:?}"
        );
    }
}

/// The digits MLP of `examples/quantize_study` (same data split, seed,
/// training and calibration): every 8-bit scheme within 1 percentage point
/// of f32 on the held-out images, and the 4-bit block formats within 3.
#[test]
fn eight_bit_schemes_keep_the_f32_accuracy_on_digits() {
    let data = common::parse_digits(common::DIGITS_CSV).unwrap();
    let (train, test) = common::holdout_split(&data, 5);
    let f = train.features;
    let mlp = common::train_mlp(&train, &[64], None, 20, 3, Parallelism::Serial, |_| {}).unwrap();
    let acc =
        |logits: &[f32]| common::correct_predictions(logits, &test.y) as f64 / test.y.len() as f64;
    let f32_acc = acc(&mlp.infer(&test.x, Parallelism::Serial).unwrap());
    assert!(f32_acc > 0.93, "f32 model: {f32_acc}");
    let calib = &train.x[..train.x.len().min(1024 * f)];
    for scheme in PtqScheme::ALL {
        let bits = scheme.fixed_bits().unwrap_or(8);
        let q = QuantizedMlp::new(&mlp, calib, scheme, bits).unwrap();
        let a = acc(&q.infer(&test.x, test.y.len(), Parallelism::Serial).unwrap());
        let allowed = if bits == 8 { 0.01 } else { 0.03 };
        assert!(
            a >= f32_acc - allowed,
            "{scheme:?} at {bits} bits: {a} vs f32 {f32_acc}"
        );
    }
}

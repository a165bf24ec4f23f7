//! FP8 `train_step` (every recipe kind, short amax histories, any margins)
//! on arbitrary inputs, labels, loss weights: never a panic; a typed error
//! leaves the masters untouched; a step that meets a NaN or ±∞ in its
//! inputs is skipped (the NaN propagates through the FP8 products) and
//! leaves them untouched too; the scales stay finite and > 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::amp::fp8::{Fp8Format, Fp8Recipe, Fp8Scaling};
use mixprec::amp::{train_step, Loss, LossScaler, Mlp, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let f = |i: usize| {
        f32::from_le_bytes([
            data[i % data.len()],
            data[(i + 1) % data.len()],
            data[(i + 2) % data.len()],
            data[(i + 3) % data.len()],
        ])
    };
    let format = if data[0] & 1 == 0 { Fp8Format::Hybrid } else { Fp8Format::E4M3 };
    let margin = (data[1] % 9) as i32 - 4;
    let scaling = match data[0] / 2 % 3 {
        0 => Fp8Scaling::Delayed { history: 1 + data[2] as usize % 4, margin },
        1 => Fp8Scaling::Current { margin },
        _ => Fp8Scaling::Unscaled,
    };
    let mut mlp = Mlp::<f32>::new(&[3, 4, 2], Activation::Relu, 1.0, &mut StochasticRng::new(data[3] as u64)).unwrap();
    mlp.set_fp8(Some(Fp8Recipe { format, scaling })).unwrap();
    let mut opt = Sgd::new(0.1, 0.5, 0.0).unwrap();
    let mut scaler = LossScaler::fixed(1.0).unwrap();
    for step in 0..1 + data[4] as usize % 3 {
        let batch = (data[5] as usize + step) % 4;
        let labels: Vec<u32> = data.iter().skip(6).take(batch).map(|&b| u32::from(b % 2)).collect();
        let x: Vec<f32> = (0..batch * 3 + (data[2] % 2) as usize).map(|i| f(8 + 4 * (i + step))).collect();
        let loss_weight = if data[5] & 0x80 == 0 { 1.0 } else { f(6) };
        let before: Vec<u32> = mlp.layers().iter().flat_map(|l| l.masters().0.iter().map(|v| v.to_bits())).collect();
        let out = train_step(&mut mlp, &mut opt, &mut scaler, &x, Loss::CrossEntropy { labels: &labels }, loss_weight, Parallelism::Serial);
        let after: Vec<u32> = mlp.layers().iter().flat_map(|l| l.masters().0.iter().map(|v| v.to_bits())).collect();
        match out {
            Err(_) => assert_eq!(before, after, "an error must not move the masters"),
            Ok(o) => {
                if x.iter().any(|v| !v.is_finite()) {
                    assert!(o.skipped, "a NaN or ±∞ input must skip the step");
                }
                if o.skipped {
                    assert_eq!(before, after, "a skipped step must not move the masters");
                }
            }
        }
        for l in mlp.layers() {
            for s in l.fp8_scales().unwrap() {
                assert!(s.is_finite() && s > 0.0, "scale {s}");
            }
        }
    }
});

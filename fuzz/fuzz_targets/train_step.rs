//! `train_step` on arbitrary inputs, labels, loss weights and scaler
//! states: a typed error leaves the masters untouched; a success either
//! skips (masters untouched) or updates; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::amp::{train_step, Loss, LossScaler, Mlp, Sgd};
use mixprec::convert::StochasticRng;
use mixprec::gemm::{Activation, Parallelism};
use mixprec::f16;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let f = |i: usize| f32::from_le_bytes([data[i % data.len()], data[(i + 1) % data.len()], data[(i + 2) % data.len()], data[(i + 3) % data.len()]]);
    let mut rng = StochasticRng::new(data[0] as u64);
    let init_scale = f(0);
    let mlp = Mlp::<f16>::new(&[3, 4, 2], Activation::Relu, init_scale, &mut rng);
    let Ok(mut mlp) = mlp else {
        assert!(!(init_scale.is_finite() && init_scale > 0.0 && init_scale < 1e4));
        return;
    };
    let mut opt = Sgd::new(0.1, 0.5, 0.0).unwrap();
    let mut scaler = LossScaler::dynamic_with(2f32.powi((data[1] % 40) as i32), 2.0, 0.5, 1 + data[2] as u32 % 4, (1e-3, 1e30))
        .unwrap_or_else(|_| LossScaler::dynamic());
    let batch = (data[3] % 4) as usize;
    let labels: Vec<u32> = data.iter().skip(4).take(batch).map(|&b| u32::from(b % 3)).collect();
    let x: Vec<f16> = (0..batch * 3 + (data[4] % 2) as usize).map(|i| f16::from_f32(f(8 + i))).collect();
    let loss_weight = f(5);
    let before: Vec<Vec<f32>> = mlp.layers().iter().map(|l| l.masters().0.to_vec()).collect();
    let out = train_step(&mut mlp, &mut opt, &mut scaler, &x, Loss::CrossEntropy { labels: &labels }, loss_weight, Parallelism::Serial);
    let after: Vec<Vec<f32>> = mlp.layers().iter().map(|l| l.masters().0.to_vec()).collect();
    let same = |a: &Vec<Vec<f32>>, b: &Vec<Vec<f32>>| a.iter().flatten().map(|v| v.to_bits()).eq(b.iter().flatten().map(|v| v.to_bits()));
    match out {
        Err(_) => assert!(same(&before, &after), "an error must not move the masters"),
        Ok(o) => {
            assert!(!labels.is_empty() && loss_weight.is_finite() && loss_weight > 0.0);
            if o.skipped {
                assert!(same(&before, &after), "a skipped step must not move the masters");
            }
        }
    }
});

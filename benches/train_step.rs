//! One training step of the MLP (784-512-256-10 shapes, batch 64) per
//! precision policy (f32, bf16, f16, and FP8 on the block-scaled GEMM),
//! side by side. `cargo bench --bench train_step`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mixprec::amp::{train_step, Loss, Mlp, Precision, Sgd};
use mixprec::convert::{narrow, StochasticRng};
use mixprec::gemm::{Activation, Parallelism};
use mixprec::{bf16, f16, FloatElement};
use std::time::Duration;

const SIZES: [usize; 4] = [784, 512, 256, 10];
const BATCH: usize = 64;

fn bench_policy<T: FloatElement>(c: &mut Criterion, p: Precision) {
    let mut rng = StochasticRng::new(1);
    let mut mlp = Mlp::<T>::new(&SIZES, Activation::Relu, 1.0, &mut rng).unwrap();
    // FP8 policies: f32 activations, FP8 products on the block-scaled GEMM.
    mlp.set_fp8(p.fp8_recipe()).unwrap();
    let mut opt = Sgd::new(0.01, 0.9, 0.0).unwrap();
    let mut scaler = p.scaler();
    let x32: Vec<f32> = (0..BATCH * SIZES[0])
        .map(|i| (i % 255) as f32 / 255.0)
        .collect();
    let mut x = vec![T::zeroed(); x32.len()];
    narrow(&x32, &mut x).unwrap();
    let labels: Vec<u32> = (0..BATCH).map(|i| (i % 10) as u32).collect();
    let macs: usize = SIZES.windows(2).map(|w| w[0] * w[1]).sum::<usize>() * BATCH * 3;
    let mut g = c.benchmark_group("train_step");
    g.throughput(Throughput::Elements(macs as u64));
    g.bench_function(p.name(), |b| {
        b.iter(|| {
            train_step(
                &mut mlp,
                &mut opt,
                &mut scaler,
                &x,
                Loss::CrossEntropy { labels: &labels },
                1.0,
                Parallelism::Serial,
            )
            .unwrap()
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_policy::<f32>(c, Precision::F32);
    bench_policy::<bf16>(c, Precision::Bf16);
    bench_policy::<f16>(c, Precision::F16);
    bench_policy::<f16>(c, Precision::F16NoScale);
    bench_policy::<f32>(c, Precision::Fp8HybridDelayed);
    bench_policy::<f32>(c, Precision::Fp8HybridCurrent);
    bench_policy::<f32>(c, Precision::Fp8E4M3NoScale);
}

criterion_group! {
    name = train_benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(train_benches);

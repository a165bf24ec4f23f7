//! Integer GEMM throughput in multiply-adds per second, beside our own f32
//! GEMM and gemmkit's i8 GEMM, in one run; and the dynamically quantized
//! linear layer (quantize + integer GEMM + dequantize) at n = 1024, the
//! shape of PyTorch's fbgemm figure (see scripts/torch_dynamic_linear.py).
//!
//! `cargo bench --bench int8`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mixprec::gemm::{gemm, Epilogue, Parallelism};
use mixprec::quant::{qgemm, DynamicQuantLinear, QEpilogue, QInt};
use mixprec::{MatMut, MatRef, Tensor};
use std::hint::black_box;
use std::time::Duration;

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = mixprec::convert::StochasticRng::new(seed);
    (0..n).map(|_| r.next_u64() as u8).collect()
}

/// `C = (A − za)·B` exactly, i32 out, n×n, single thread.
fn int_gemm<A: QInt>(a: &[A], za: i32, b: &[i8], c: &mut [i32], n: usize) {
    qgemm(
        MatRef::from_row_major(a, n, n).unwrap(),
        &[za],
        MatRef::from_row_major(b, n, n).unwrap(),
        &[0],
        MatMut::from_row_major(c, n, n).unwrap(),
        &QEpilogue::I32,
        Parallelism::Serial,
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("int8_gemm");
    for n in [256usize, 512, 1024] {
        g.throughput(Throughput::Elements((n * n * n) as u64));
        g.sample_size(if n >= 1024 { 10 } else { 20 });
        let au = bytes(n * n, 1);
        let a7: Vec<u8> = au.iter().map(|&v| v & 0x7F).collect();
        let ai: Vec<i8> = au.iter().map(|&v| v as i8).collect();
        let bi: Vec<i8> = bytes(n * n, 2).iter().map(|&v| v as i8).collect();
        let af: Vec<f32> = ai.iter().map(|&v| v as f32).collect();
        let bf: Vec<f32> = bi.iter().map(|&v| v as f32).collect();
        let mut ci = vec![0i32; n * n];
        let mut cf = vec![0.0f32; n * n];
        let id = n.to_string();
        g.bench_function(BenchmarkId::new("mixprec_u8xi8_i32", &id), |b| {
            b.iter(|| int_gemm(black_box(&au), 128, &bi, &mut ci, n))
        });
        g.bench_function(BenchmarkId::new("mixprec_u7xi8_i32", &id), |b| {
            b.iter(|| int_gemm(black_box(&a7), 64, &bi, &mut ci, n))
        });
        g.bench_function(BenchmarkId::new("mixprec_i8xi8_i32", &id), |b| {
            b.iter(|| int_gemm(black_box(&ai), 0, &bi, &mut ci, n))
        });
        g.bench_function(BenchmarkId::new("mixprec_f32", &id), |b| {
            b.iter(|| {
                gemm(
                    MatRef::from_row_major(black_box(&af), n, n).unwrap(),
                    MatRef::from_row_major(&bf, n, n).unwrap(),
                    MatMut::from_row_major(&mut cf, n, n).unwrap(),
                    &Epilogue::new(),
                    Parallelism::Serial,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("gemmkit_i8xi8_i32", &id), |b| {
            b.iter(|| {
                gemmkit::gemm_i8(
                    1,
                    gemmkit::MatRef::from_row_major(black_box(&ai), n, n),
                    gemmkit::MatRef::from_row_major(&bi, n, n),
                    0,
                    gemmkit::MatMut::from_row_major(&mut ci, n, n),
                    gemmkit::Parallelism::Serial,
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("dynamic_quant_linear");
    let n = 1024;
    g.throughput(Throughput::Elements((n * n * n) as u64));
    g.sample_size(10);
    let w = Tensor::from_fn(&[n, n], |ix| {
        ((ix[0] * 31 + ix[1] * 17) % 255) as f32 / 255.0 - 0.5
    })
    .unwrap();
    let x = Tensor::from_fn(&[n, n], |ix| {
        ((ix[0] * 13 + ix[1] * 7) % 251) as f32 / 251.0 - 0.3
    })
    .unwrap();
    let layer = DynamicQuantLinear::new(&w, None).unwrap();
    g.bench_function(BenchmarkId::new("mixprec", n), |b| {
        b.iter(|| layer.forward(black_box(&x), Parallelism::Serial).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = int8_benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(int8_benches);

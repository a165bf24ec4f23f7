//! Integer GEMM throughput in multiply-adds per second, beside our own f32
//! GEMM and gemmkit's i8 GEMM, in one run; and the dynamically quantized
//! linear layer (quantize + integer GEMM + dequantize) at n = 1024, the
//! shape of PyTorch's fbgemm figure (see scripts/torch_dynamic_linear.py).
//!
//! `cargo bench --bench int8`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mixprec::gemm::{gemm, Epilogue, Parallelism};
use mixprec::quant::{qgemm, qgemm_packed, DynamicQuantLinear, PackedI8, QEpilogue, QInt, QMatRef};
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
        QMatRef::new(MatRef::from_row_major(a, n, n).unwrap(), &[za]).unwrap(),
        QMatRef::new(MatRef::from_row_major(b, n, n).unwrap(), &[0]).unwrap(),
        MatMut::from_row_major(c, n, n).unwrap(),
        &QEpilogue::I32,
        Parallelism::Serial,
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("int8_gemm");
    for n in [256usize, 512, 1024, 2048] {
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

    small_batch(c);

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

/// Batch 1–128 against 4096×4096 int8 weights (the shapes of inference),
/// packed once, unpacked `[in, out]` and unpacked `[out, in]` (`x · Wᵀ`),
/// beside our f32 GEMM of the same shape and a read-only pass over the
/// weight bytes (the memory limit), in GOP/s (2·M·N·K per second).
fn small_batch(c: &mut Criterion) {
    let (k, n) = (4096usize, 4096usize);
    let bi: Vec<i8> = bytes(k * n, 2).iter().map(|&v| v as i8).collect();
    let bf: Vec<f32> = bi.iter().map(|&v| v as f32).collect();
    let packed = PackedI8::new(MatRef::from_row_major(&bi, k, n).unwrap(), &[0]).unwrap();
    let mut g = c.benchmark_group("int8_small_batch");
    g.sample_size(10);
    // The memory limit: one pass summing the weights' bytes.
    g.throughput(Throughput::Bytes((k * n) as u64));
    let raw: Vec<u8> = bi.iter().map(|&v| v as u8).collect();
    g.bench_function("read_weight_bytes", |b| {
        b.iter(|| {
            black_box(&raw).chunks_exact(8).fold(0u64, |s, c| {
                s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap()))
            })
        })
    });
    // The same weights stored `[out, in]` (PyTorch's layout), for x · Wᵀ.
    let bt: Vec<i8> = (0..n * k).map(|x| bi[(x % k) * n + x / k]).collect();
    for m in [1usize, 8, 32, 128] {
        let id = format!("{m}x{k}x{n}");
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let au = bytes(m * k, 1);
        let a7: Vec<u8> = au.iter().map(|&v| v & 0x7F).collect();
        let af: Vec<f32> = au.iter().map(|&v| v as f32).collect();
        let mut ci = vec![0i32; m * n];
        let mut cf = vec![0.0f32; m * n];
        let packed_on = |a: &[u8], za: i32, ci: &mut [i32], par: Parallelism| {
            qgemm_packed(
                QMatRef::new(MatRef::from_row_major(a, m, k).unwrap(), &[za]).unwrap(),
                &packed,
                MatMut::from_row_major(ci, m, n).unwrap(),
                &QEpilogue::I32,
                par,
            )
            .unwrap()
        };
        let packed_run =
            |a: &[u8], za: i32, ci: &mut [i32]| packed_on(a, za, ci, Parallelism::Serial);
        g.bench_function(BenchmarkId::new("mixprec_f32", &id), |b| {
            b.iter(|| {
                gemm(
                    MatRef::from_row_major(black_box(&af), m, k).unwrap(),
                    MatRef::from_row_major(&bf, k, n).unwrap(),
                    MatMut::from_row_major(&mut cf, m, n).unwrap(),
                    &Epilogue::new(),
                    Parallelism::Serial,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("mixprec_u8xi8_packed", &id), |b| {
            b.iter(|| packed_run(black_box(&au), 128, &mut ci))
        });
        g.bench_function(BenchmarkId::new("mixprec_u7xi8_packed", &id), |b| {
            b.iter(|| packed_run(black_box(&a7), 64, &mut ci))
        });
        g.bench_function(
            BenchmarkId::new("mixprec_u8xi8_packed_2threads", &id),
            |b| b.iter(|| packed_on(black_box(&au), 128, &mut ci, Parallelism::Threads(2))),
        );
        g.bench_function(
            BenchmarkId::new("mixprec_u8xi8_unpacked_out_in", &id),
            |b| {
                b.iter(|| {
                    qgemm(
                        QMatRef::new(
                            MatRef::from_row_major(black_box(&au), m, k).unwrap(),
                            &[128],
                        )
                        .unwrap(),
                        QMatRef::new(MatRef::from_row_major(&bt, n, k).unwrap().t(), &[0]).unwrap(),
                        MatMut::from_row_major(&mut ci, m, n).unwrap(),
                        &QEpilogue::I32,
                        Parallelism::Serial,
                    )
                    .unwrap()
                })
            },
        );
        g.bench_function(BenchmarkId::new("mixprec_u8xi8_unpacked", &id), |b| {
            b.iter(|| {
                qgemm(
                    QMatRef::new(
                        MatRef::from_row_major(black_box(&au), m, k).unwrap(),
                        &[128],
                    )
                    .unwrap(),
                    QMatRef::new(MatRef::from_row_major(&bi, k, n).unwrap(), &[0]).unwrap(),
                    MatMut::from_row_major(&mut ci, m, n).unwrap(),
                    &QEpilogue::I32,
                    Parallelism::Serial,
                )
                .unwrap()
            })
        });
    }
    // The batch-1 layer: DynamicQuantLinear (quantize + packed GEMM +
    // dequantize) against an f32 GEMM of the same layer.
    let w = Tensor::from_fn(&[n, k], |ix| {
        ((ix[0] * 31 + ix[1] * 17) % 255) as f32 / 255.0 - 0.5
    })
    .unwrap();
    let x = Tensor::from_fn(&[1, k], |ix| ((ix[1] * 7) % 251) as f32 / 251.0 - 0.3).unwrap();
    let layer = DynamicQuantLinear::new(&w, None).unwrap();
    g.throughput(Throughput::Elements((2 * n * k) as u64));
    g.bench_function(
        BenchmarkId::new("dynamic_quant_linear", "1x4096x4096"),
        |b| b.iter(|| layer.forward(black_box(&x), Parallelism::Serial).unwrap()),
    );
    g.finish();
}

criterion_group! {
    name = int8_benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(int8_benches);

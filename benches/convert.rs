//! Conversion throughput at 16M elements, beside `half`'s slice conversions and
//! a `copy_from_slice` of the source bytes (the memory limit), in one run.
//!
//! Throughput is bytes moved (read + written), so the copy and each conversion
//! are on one scale. `cargo bench --bench convert`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::slice::HalfFloatSliceExt;
use mixprec::{bf16, convert, f16, FloatElement, F8E4M3, F8E5M2};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 16 << 20;

type NarrowFn<T> = fn(&[f32], &mut [T]);
type WidenFn<T> = fn(&[T], &mut [f32]);

fn source() -> Vec<f32> {
    let mut s = convert::StochasticRng::new(9);
    (0..N)
        .map(|_| ((s.next_u64() >> 40) as f32 - 8388608.0) * 1e-5)
        .collect()
}

/// 64K elements (256 KiB of f32: cache-resident, shows compute speed) and
/// 16M elements (64 MiB: memory-bound, the size).
const SIZES: [usize; 2] = [64 << 10, N];

fn memcpy_baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_limit");
    for n in SIZES {
        let bytes = 4 * n;
        let src = vec![1u8; bytes];
        let mut dst = vec![0u8; bytes];
        g.throughput(Throughput::Bytes(2 * bytes as u64));
        g.bench_function(BenchmarkId::new("copy_from_slice_f32_bytes", n), |b| {
            b.iter(|| dst.copy_from_slice(black_box(&src)))
        });
    }
    g.finish();
}

fn narrow_group<T: FloatElement>(c: &mut Criterion, src: &[f32], half_peer: Option<NarrowFn<T>>) {
    let mut g = c.benchmark_group(format!("narrow_f32_to_{}", T::DTYPE.name()));
    for n in SIZES {
        let src = &src[..n];
        let mut dst = vec![T::zeroed(); n];
        g.throughput(Throughput::Bytes((n * (4 + T::DTYPE.size_bytes())) as u64));
        g.bench_function(BenchmarkId::new("mixprec", n), |b| {
            b.iter(|| convert::narrow(black_box(src), &mut dst).unwrap())
        });
        g.bench_function(BenchmarkId::new("mixprec_saturating", n), |b| {
            b.iter(|| convert::narrow_saturating(black_box(src), &mut dst).unwrap())
        });
        if let Some(peer) = half_peer {
            g.bench_function(BenchmarkId::new("half", n), |b| {
                b.iter(|| peer(black_box(src), &mut dst))
            });
        }
    }
    g.finish();
}

fn widen_group<T: FloatElement>(c: &mut Criterion, src: &[f32], half_peer: Option<WidenFn<T>>) {
    let mut g = c.benchmark_group(format!("widen_{}_to_f32", T::DTYPE.name()));
    for n in SIZES {
        let mut narrow = vec![T::zeroed(); n];
        convert::narrow(&src[..n], &mut narrow).unwrap();
        let mut dst = vec![0.0f32; n];
        g.throughput(Throughput::Bytes((n * (4 + T::DTYPE.size_bytes())) as u64));
        g.bench_function(BenchmarkId::new("mixprec", n), |b| {
            b.iter(|| convert::widen(black_box(&narrow), &mut dst).unwrap())
        });
        if let Some(peer) = half_peer {
            g.bench_function(BenchmarkId::new("half", n), |b| {
                b.iter(|| peer(black_box(&narrow), &mut dst))
            });
        }
    }
    g.finish();
}

fn stochastic(c: &mut Criterion, src: &[f32]) {
    let mut dst = vec![bf16::ZERO; src.len()];
    let mut rng = convert::StochasticRng::new(1);
    let mut g = c.benchmark_group("stochastic_f32_to_bf16");
    g.throughput(Throughput::Bytes((src.len() * 6) as u64));
    g.bench_with_input(BenchmarkId::new("mixprec", N), src, |b, s| {
        b.iter(|| convert::narrow_stochastic(black_box(s), &mut dst, &mut rng).unwrap())
    });
    g.finish();
}

/// MX quantization (FLOOR scales) of `m` into reused buffers, as `name`.
fn mx_into_case<T: mixprec::block_scaled::MxElement>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    m: mixprec::MatRef<'_, f32>,
) {
    use mixprec::block_scaled::{BlockScaled, MxScaleMode};
    let mut q = BlockScaled::<T>::mx(m, MxScaleMode::Floor).unwrap();
    g.bench_function(name, |b| {
        b.iter(|| BlockScaled::<T>::mx_into(black_box(m), MxScaleMode::Floor, &mut q).unwrap())
    });
}

/// Block-scaled quantization and dequantization of 16M f32 (4096 × 4096,
/// scales along rows), bytes moved = 4 read + 1 written per element
/// (quantize) or 1 read + 4 written (dequantize), beside the copy.
fn block_scaled(c: &mut Criterion, src: &[f32]) {
    use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
    use mixprec::{MatRef, MxInt8, F4E2M1, F6E2M3};
    let m = MatRef::from_row_major(src, 4096, N / 4096).unwrap();
    let mut g = c.benchmark_group("block_scaled_16M");
    g.throughput(Throughput::Bytes(5 * N as u64));
    // Into reused buffers (as the copy baseline writes into a reused one);
    // the allocating constructors add first-touch page faults on top.
    mx_into_case::<F8E4M3>(&mut g, "quantize_mxfp8_e4m3", m);
    mx_into_case::<F4E2M1>(&mut g, "quantize_mxfp4", m);
    let mut qn = BlockScaled::nvfp4(m, true).unwrap();
    g.bench_function("quantize_nvfp4", |b| {
        b.iter(|| BlockScaled::nvfp4_into(black_box(m), true, &mut qn).unwrap())
    });
    // Without the tensor scale: one pass (the tensor scale needs the
    // tensor's amax first, a second read of the source).
    let mut qn1 = BlockScaled::nvfp4(m, false).unwrap();
    g.bench_function("quantize_nvfp4_block_scales_only", |b| {
        b.iter(|| BlockScaled::nvfp4_into(black_box(m), false, &mut qn1).unwrap())
    });
    // Scaled FP8 at its three granularities: per tensor and 128 x 128 read
    // the source twice (the maxima first), as NVFP4 with its tensor scale.
    for (name, granularity) in [
        ("quantize_fp8_1x128", Fp8Granularity::Lines1x128),
        ("quantize_fp8_per_tensor", Fp8Granularity::PerTensor),
        ("quantize_fp8_128x128", Fp8Granularity::Blocks128x128),
    ] {
        let mut qf = BlockScaled::<F8E4M3>::fp8(m, granularity, false).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                BlockScaled::<F8E4M3>::fp8_into(black_box(m), granularity, false, &mut qf).unwrap()
            })
        });
    }
    // The other MX element kinds: FP6 (one byte per element here) and INT8.
    mx_into_case::<F6E2M3>(&mut g, "quantize_mxfp6_e2m3", m);
    mx_into_case::<MxInt8>(&mut g, "quantize_mxint8", m);
    g.bench_function("quantize_mxfp8_e4m3_allocating", |b| {
        b.iter(|| BlockScaled::<F8E4M3>::mx(black_box(m), MxScaleMode::Floor).unwrap())
    });
    let q = BlockScaled::<F8E4M3>::mx(m, MxScaleMode::Floor).unwrap();
    let mut out = vec![0.0f32; N];
    g.bench_function("dequantize_into_mxfp8_e4m3", |b| {
        b.iter(|| black_box(&q).dequantize_into(&mut out).unwrap())
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let src = source();
    memcpy_baseline(c);
    narrow_group::<f16>(c, &src, Some(|s, d| d.convert_from_f32_slice(s)));
    narrow_group::<bf16>(c, &src, Some(|s, d| d.convert_from_f32_slice(s)));
    narrow_group::<F8E4M3>(c, &src, None);
    narrow_group::<F8E5M2>(c, &src, None);
    widen_group::<f16>(c, &src, Some(|s, d| s.convert_to_f32_slice(d)));
    widen_group::<bf16>(c, &src, Some(|s, d| s.convert_to_f32_slice(d)));
    widen_group::<F8E4M3>(c, &src, None);
    widen_group::<F8E5M2>(c, &src, None);
    stochastic(c, &src);
    block_scaled(c, &src);
}

criterion_group! {
    name = convert_benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(convert_benches);

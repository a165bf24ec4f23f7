//! GEMM throughput (FLOP/s = 2·M·N·K per second) beside the peers a user
//! would pick instead, and this core's FMA peak, in one run.
//!
//! `cargo bench --bench gemm` (default build flags). Set `MIXPREC_BENCH_QUICK=1`
//! to run only n ≤ 512 and the skinny shapes. `cargo bench --bench gemm --
//! 'peak|gemm_mixed'` runs the mixed-operand group beside the FMA peak.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mixprec::gemm::{gemm, gemm_mixed, Epilogue, Parallelism};
use mixprec::{bf16, f16, FloatElement, MatMut, MatRef, F8E4M3, F8E5M2};
use std::hint::black_box;
use std::time::Duration;

fn values<T: FloatElement>(n: usize, seed: u64) -> Vec<T> {
    let mut r = mixprec::convert::StochasticRng::new(seed);
    (0..n)
        .map(|_| T::from_f32((r.next_u64() >> 40) as f32 / 16777216.0 - 0.5))
        .collect()
}

/// Peak f32 FMA throughput of one core: 12 independent register chains of
/// 8-wide FMAs, no memory traffic.
#[cfg(target_arch = "x86_64")]
fn peak_fma(c: &mut Criterion) {
    use std::arch::x86_64::*;
    const ITERS: usize = 1 << 20;
    #[target_feature(enable = "avx2,fma")]
    fn chains(x: f32) -> f32 {
        let m = _mm256_set1_ps(0.999_999);
        let a = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(x); 12];
        for _ in 0..ITERS {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        let mut s = _mm256_setzero_ps();
        for v in acc {
            s = _mm256_add_ps(s, v);
        }
        _mm256_cvtss_f32(s)
    }
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return;
    }
    let mut g = c.benchmark_group("peak");
    g.throughput(Throughput::Elements((ITERS * 12 * 8 * 2) as u64));
    // SAFETY: the CPU has AVX2 and FMA (checked above).
    g.bench_function("fma_f32_one_core", |b| {
        b.iter(|| unsafe { chains(black_box(1.0)) })
    });
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn peak_fma(_: &mut Criterion) {}

#[allow(clippy::too_many_arguments)]
fn ours<T: FloatElement>(
    a: &[T],
    b: &[T],
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    par: Parallelism,
) {
    gemm(
        MatRef::from_row_major(a, m, k).unwrap(),
        MatRef::from_row_major(b, k, n).unwrap(),
        MatMut::from_row_major(c, m, n).unwrap(),
        &Epilogue::new(),
        par,
    )
    .unwrap();
}

#[allow(clippy::too_many_arguments)]
fn gemm_crate<T: 'static + Copy>(
    a: &[T],
    b: &[T],
    c: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    one: T,
    zero: T,
    par: gemm::Parallelism,
) {
    // SAFETY: the slices hold row-major m×k, k×n and m×n matrices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            zero,
            one,
            false,
            false,
            false,
            par,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn gemmkit_crate<T: gemmkit::GemmScalar>(
    a: &[T],
    b: &[T],
    c: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    one: T,
    zero: T,
    par: gemmkit::Parallelism,
) {
    gemmkit::gemm(
        one,
        gemmkit::MatRef::from_row_major(a, m, k),
        gemmkit::MatRef::from_row_major(b, k, n),
        zero,
        gemmkit::MatMut::from_row_major(c, m, n),
        par,
    );
}

fn shape_group(c: &mut Criterion, group: &str, shapes: &[(usize, usize, usize)], threads: bool) {
    let mut g = c.benchmark_group(group);
    for &(m, n, k) in shapes {
        let id = format!("{m}x{n}x{k}");
        let flops = 2 * m * n * k;
        g.throughput(Throughput::Elements(flops as u64));
        let big = flops >= 1 << 31;
        g.sample_size(if big { 10 } else { 20 });
        let (a32, b32) = (values::<f32>(m * k, 1), values::<f32>(k * n, 2));
        let (a16, b16) = (values::<f16>(m * k, 1), values::<f16>(k * n, 2));
        let (abf, bbf) = (values::<bf16>(m * k, 1), values::<bf16>(k * n, 2));
        let mut c32 = vec![0.0f32; m * n];
        let mut c16 = vec![f16::ZERO; m * n];
        let mut cbf = vec![bf16::ZERO; m * n];
        let serial = Parallelism::Serial;
        g.bench_function(BenchmarkId::new("mixprec_f32", &id), |bch| {
            bch.iter(|| ours(black_box(&a32), &b32, &mut c32, m, n, k, serial))
        });
        g.bench_function(BenchmarkId::new("matrixmultiply_f32", &id), |bch| {
            bch.iter(|| {
                // SAFETY: row-major m×k, k×n, m×n slices.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a32.as_ptr(),
                        k as isize,
                        1,
                        b32.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c32.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
        g.bench_function(BenchmarkId::new("gemm_f32", &id), |bch| {
            bch.iter(|| {
                gemm_crate(
                    black_box(&a32),
                    &b32,
                    &mut c32,
                    m,
                    n,
                    k,
                    1.0,
                    0.0,
                    gemm::Parallelism::None,
                )
            })
        });
        g.bench_function(BenchmarkId::new("gemmkit_f32", &id), |bch| {
            bch.iter(|| {
                gemmkit_crate(
                    black_box(&a32),
                    &b32,
                    &mut c32,
                    m,
                    n,
                    k,
                    1.0,
                    0.0,
                    gemmkit::Parallelism::Serial,
                )
            })
        });
        g.bench_function(BenchmarkId::new("mixprec_f16", &id), |bch| {
            bch.iter(|| ours(black_box(&a16), &b16, &mut c32, m, n, k, serial))
        });
        g.bench_function(BenchmarkId::new("gemm_f16", &id), |bch| {
            bch.iter(|| {
                gemm_crate(
                    black_box(&a16),
                    &b16,
                    &mut c16,
                    m,
                    n,
                    k,
                    f16::ONE,
                    f16::ZERO,
                    gemm::Parallelism::None,
                )
            })
        });
        g.bench_function(BenchmarkId::new("gemmkit_f16", &id), |bch| {
            bch.iter(|| {
                gemmkit_crate(
                    black_box(&a16),
                    &b16,
                    &mut c16,
                    m,
                    n,
                    k,
                    f16::ONE,
                    f16::ZERO,
                    gemmkit::Parallelism::Serial,
                )
            })
        });
        g.bench_function(BenchmarkId::new("mixprec_bf16", &id), |bch| {
            bch.iter(|| ours(black_box(&abf), &bbf, &mut c32, m, n, k, serial))
        });
        g.bench_function(BenchmarkId::new("gemmkit_bf16", &id), |bch| {
            bch.iter(|| {
                gemmkit_crate(
                    black_box(&abf),
                    &bbf,
                    &mut cbf,
                    m,
                    n,
                    k,
                    bf16::ONE,
                    bf16::ZERO,
                    gemmkit::Parallelism::Serial,
                )
            })
        });
        if threads {
            let two = Parallelism::Threads(2);
            g.bench_function(BenchmarkId::new("mixprec_f32_2threads", &id), |bch| {
                bch.iter(|| ours(black_box(&a32), &b32, &mut c32, m, n, k, two))
            });
            g.bench_function(BenchmarkId::new("gemm_f32_2threads", &id), |bch| {
                bch.iter(|| {
                    gemm_crate(
                        black_box(&a32),
                        &b32,
                        &mut c32,
                        m,
                        n,
                        k,
                        1.0,
                        0.0,
                        gemm::Parallelism::Rayon(2),
                    )
                })
            });
        }
    }
    g.finish();
}

/// One call of `gemm_mixed` (f32 output).
#[allow(clippy::too_many_arguments)]
fn ours_mixed<TA: FloatElement, TB: FloatElement>(
    a: &[TA],
    b: &[TB],
    c: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
) {
    gemm_mixed(
        MatRef::from_row_major(a, m, k).unwrap(),
        MatRef::from_row_major(b, k, n).unwrap(),
        MatMut::from_row_major(c, m, n).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
}

/// Mixed operand types beside the same-type calls they must keep up with
/// (goal: ≥ 95 %), and beside what a user would do without them: widen
/// the narrow operand to f32 first, then an f32 GEMM.
fn mixed_group(c: &mut Criterion, shapes: &[(usize, usize, usize)]) {
    let mut g = c.benchmark_group("gemm_mixed");
    for &(m, n, k) in shapes {
        let id = format!("{m}x{n}x{k}");
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.sample_size(10);
        let (a32, b32) = (values::<f32>(m * k, 1), values::<f32>(k * n, 2));
        let (abf, bbf) = (values::<bf16>(m * k, 1), values::<bf16>(k * n, 2));
        let (a16, b16) = (values::<f16>(m * k, 1), values::<f16>(k * n, 2));
        let (a43, b43) = (values::<F8E4M3>(m * k, 1), values::<F8E4M3>(k * n, 2));
        let b52 = values::<F8E5M2>(k * n, 2);
        let mut c32 = vec![0.0f32; m * n];
        let mut run = |name: &str, f: &mut dyn FnMut(&mut [f32])| {
            g.bench_function(BenchmarkId::new(name, &id), |bch| bch.iter(|| f(&mut c32)));
        };
        run("f32xf32", &mut |c| {
            ours_mixed(black_box(&a32), &b32, c, m, n, k)
        });
        run("f32xbf16", &mut |c| {
            ours_mixed(black_box(&a32), &bbf, c, m, n, k)
        });
        run("widen_bf16_then_f32xf32", &mut |c| {
            let wide = mixprec::convert::widen_vec(black_box(&bbf));
            ours_mixed(&a32, &wide, c, m, n, k)
        });
        run("bf16xbf16", &mut |c| {
            ours_mixed(black_box(&abf), &bbf, c, m, n, k)
        });
        run("bf16xf32", &mut |c| {
            ours_mixed(black_box(&abf), &b32, c, m, n, k)
        });
        run("f16xf16", &mut |c| {
            ours_mixed(black_box(&a16), &b16, c, m, n, k)
        });
        run("f16xbf16", &mut |c| {
            ours_mixed(black_box(&a16), &bbf, c, m, n, k)
        });
        run("e4m3xe4m3", &mut |c| {
            ours_mixed(black_box(&a43), &b43, c, m, n, k)
        });
        run("e4m3xe5m2", &mut |c| {
            ours_mixed(black_box(&a43), &b52, c, m, n, k)
        });
    }
    g.finish();
}

/// One serial `block_gemm` into an f32 `C`.
fn scaled<TA: FloatElement, TB: FloatElement>(
    a: &mixprec::block_scaled::BlockScaled<TA>,
    b: &mixprec::block_scaled::BlockScaled<TB>,
    out: &mut [f32],
) {
    let (m, n) = (a.lines(), b.lines());
    mixprec::gemm::block_gemm(
        a,
        b,
        MatMut::from_row_major(out, m, n).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
}

/// Block-scaled GEMM (`block_gemm`) beside our f32 GEMM: MXFP8, scaled FP8
/// (1×128 activations × 128×128 weights), MXFP4 and NVFP4 at n = 1024, and
/// M = 1 with MXFP4 weights against the f32 GEMV.
fn block_scaled_group(c: &mut Criterion) {
    use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
    use mixprec::F4E2M1;
    let mut g = c.benchmark_group("gemm_block_scaled");
    g.sample_size(10);
    for &(m, n, k) in &[(1024usize, 1024usize, 1024usize), (1, 4096, 4096)] {
        let id = format!("{m}x{n}x{k}");
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let (x, w) = (values::<f32>(m * k, 1), values::<f32>(n * k, 2));
        let (xm, wm) = (
            MatRef::from_row_major(&x, m, k).unwrap(),
            MatRef::from_row_major(&w, n, k).unwrap(),
        );
        let mut out = vec![0.0f32; m * n];
        g.bench_function(BenchmarkId::new("f32", &id), |bch| {
            bch.iter(|| ours(black_box(&x), &w, &mut out, m, n, k, Parallelism::Serial))
        });
        let mxfp4_a = BlockScaled::<F4E2M1>::mx(xm, MxScaleMode::Floor).unwrap();
        let mxfp4_b = BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Floor).unwrap();
        if m > 1 {
            let mxfp8_a = BlockScaled::<F8E4M3>::mx(xm, MxScaleMode::Floor).unwrap();
            let mxfp8_b = BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Floor).unwrap();
            let fp8_a = BlockScaled::<F8E4M3>::fp8(xm, Fp8Granularity::Lines1x128, false).unwrap();
            let fp8_b =
                BlockScaled::<F8E4M3>::fp8(wm, Fp8Granularity::Blocks128x128, false).unwrap();
            let nv_a = BlockScaled::nvfp4(xm, true).unwrap();
            let nv_b = BlockScaled::nvfp4(wm, true).unwrap();
            g.bench_function(BenchmarkId::new("mxfp8_e4m3", &id), |bch| {
                bch.iter(|| scaled(black_box(&mxfp8_a), &mxfp8_b, &mut out))
            });
            g.bench_function(BenchmarkId::new("fp8_1x128_x_128x128", &id), |bch| {
                bch.iter(|| scaled(black_box(&fp8_a), &fp8_b, &mut out))
            });
            g.bench_function(BenchmarkId::new("nvfp4", &id), |bch| {
                bch.iter(|| scaled(black_box(&nv_a), &nv_b, &mut out))
            });
        }
        g.bench_function(BenchmarkId::new("mxfp4", &id), |bch| {
            bch.iter(|| scaled(black_box(&mxfp4_a), &mxfp4_b, &mut out))
        });
        if m == 1 {
            // Weights packed once (`PackedFp4`), as inference holds them.
            let packed = mixprec::block_scaled::PackedFp4::new(&mxfp4_b);
            g.bench_function(BenchmarkId::new("mxfp4_packed", &id), |bch| {
                bch.iter(|| {
                    mixprec::gemm::block_gemm_packed(
                        black_box(&mxfp4_a),
                        &packed,
                        MatMut::from_row_major(&mut out, m, n).unwrap(),
                        &Epilogue::new(),
                        Parallelism::Serial,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let quick = std::env::var_os("MIXPREC_BENCH_QUICK").is_some();
    peak_fma(c);
    let small: Vec<_> = [16, 32, 64, 128].iter().map(|&n| (n, n, n)).collect();
    shape_group(c, "gemm_small", &small, false);
    let square: Vec<_> = [256, 512, 1024, 2048]
        .iter()
        .filter(|&&n| !quick || n <= 512)
        .map(|&n| (n, n, n))
        .collect();
    shape_group(c, "gemm_square", &square, true);
    shape_group(
        c,
        "gemm_skinny",
        &[(1, 4096, 4096), (8, 4096, 4096), (32, 4096, 4096)],
        true,
    );
    weight_read_limit(c);
    weight_layout_group(c);
    prepacked_group(c);
    mixed_group(c, &[(1024, 1024, 1024), (8, 4096, 4096)]);
    block_scaled_group(c);
    weight_only_group(c);
    weight_only_small_group(c);
}

/// Weight-only products with a small weight matrix (N = 256, K = 512: 2^17
/// weights, under the size from which the f32 GEMM reads B in place), M =
/// 1, 8, 32: MXFP4 and MXFP8 weights as a `BlockScaled` holds them
/// (`weight_only_gemm`), and MXFP4 × MXFP4 (`block_gemm`), beside our f32
/// GEMM with the weights `[out, in]`, the same layout. Such products read
/// the codes in place as the large ones do (they used to widen the weights
/// per call: 0.5–0.65× our f32 GEMM at M = 1).
fn weight_only_small_group(c: &mut Criterion) {
    use mixprec::block_scaled::{BlockScaled, MxScaleMode};
    use mixprec::gemm::block_gemm;
    use mixprec::F4E2M1;
    let mut g = c.benchmark_group("gemm_weight_only_small");
    let (k, n) = (512usize, 256usize);
    let w = values::<f32>(n * k, 2);
    let wm = MatRef::from_row_major(&w, n, k).unwrap();
    let mxfp4 = BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Floor).unwrap();
    let mxfp8 = BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Floor).unwrap();
    let (e, s) = (Epilogue::new(), Parallelism::Serial);
    for m in [1usize, 8, 32] {
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let x = values::<f32>(m * k, 1);
        let xm = MatRef::from_row_major(&x, m, k).unwrap();
        let x4 = BlockScaled::<F4E2M1>::mx(xm, MxScaleMode::Floor).unwrap();
        let mut out = vec![0.0f32; m * n];
        layout_case(&mut g, "f32_gemm_out_in", &x, wm.t(), &mut out);
        weight_only_case(&mut g, "mxfp4_weights_f32_act", xm, &mxfp4, &mut out);
        weight_only_case(&mut g, "mxfp8_weights_f32_act", xm, &mxfp8, &mut out);
        g.bench_function(BenchmarkId::new("mxfp4_x_mxfp4_block_gemm", m), |b| {
            b.iter(|| {
                let c = MatMut::from_row_major(&mut out, m, n).unwrap();
                block_gemm(black_box(&x4), &mxfp4, c, &e, s).unwrap()
            })
        });
    }
    g.finish();
}

/// The compute limit of FP4 weights at one row of A on this core, no
/// memory past L1: the packed kernel's inner loop at M = 1 (four chains of
/// 16 lines; per 8 steps a 64-byte load of codes per chain, four 16-bit
/// shifts, four `vpermw` lookups to bf16 pairs, their widening, and one
/// FMA per value) over 4 KiB of codes, `ITERS` times. `None` without
/// AVX-512 F/BW. FLOPs are counted as at M = 1 (2 per weight), so the
/// figure compares directly with the M = 1 entries of the group.
#[cfg(target_arch = "x86_64")]
fn fp4_lookup_limit() -> Option<(u64, fn() -> f32)> {
    use std::arch::x86_64::*;
    const ITERS: usize = 1 << 12;
    const CODE_VECTORS: usize = 64;
    #[target_feature(enable = "avx512f,avx512bw")]
    fn chains() -> f32 {
        let entries: [u16; 32] = std::array::from_fn(|i| {
            let v = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0][i % 8];
            let v = if i % 16 < 8 { v } else { -v };
            (v.to_bits() >> 16) as u16
        });
        let codes: Vec<u32> = (0..16 * CODE_VECTORS as u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let a: Vec<f32> = (0..8 * CODE_VECTORS).map(|i| i as f32 * 1e-3).collect();
        // SAFETY: every load is within `entries`, `codes` or `a`.
        unsafe {
            let table = _mm512_loadu_si512(entries.as_ptr() as *const _);
            let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
            let mut sums = [_mm512_setzero_ps(); 4];
            for _ in 0..ITERS {
                for g in (0..CODE_VECTORS).step_by(4) {
                    let mut w = [[_mm512_setzero_ps(); 8]; 4];
                    for (q, w) in w.iter_mut().enumerate() {
                        let v = _mm512_loadu_si512(codes.as_ptr().add((g + q) * 16) as *const _);
                        for (j, index) in [
                            v,
                            _mm512_srli_epi16::<4>(v),
                            _mm512_srli_epi16::<8>(v),
                            _mm512_srli_epi16::<12>(v),
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            let both = _mm512_permutexvar_epi16(index, table);
                            w[j] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(both));
                            w[j + 4] = _mm512_castsi512_ps(_mm512_and_si512(both, high));
                        }
                    }
                    for i in 0..8 {
                        let x = _mm512_set1_ps(*a.get_unchecked(g * 8 + i));
                        for (s, w) in sums.iter_mut().zip(&w) {
                            *s = _mm512_fmadd_ps(x, w[i], *s);
                        }
                    }
                }
            }
            let s = _mm512_add_ps(
                _mm512_add_ps(sums[0], sums[1]),
                _mm512_add_ps(sums[2], sums[3]),
            );
            _mm512_reduce_add_ps(s)
        }
    }
    if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
        return None;
    }
    // SAFETY: the CPU has AVX-512 F/BW (checked above).
    let run: fn() -> f32 = || unsafe { chains() };
    // 16 lines × 8 steps per code vector, 4 vectors per pass of `g`.
    let weights = ITERS * CODE_VECTORS * 16 * 8;
    Some((2 * weights as u64, run))
}

#[cfg(not(target_arch = "x86_64"))]
fn fp4_lookup_limit() -> Option<(u64, fn() -> f32)> {
    None
}

/// Weight-only inference, K = N = 4096, M = 1, 8, 32: f32 (and bf16)
/// activations against MXFP4 and NVFP4 weights packed once
/// (`weight_only_gemm_packed`), MXFP4, MXFP6 (E2M3) and MXFP8 (E4M3, E5M2)
/// unpacked, read in place (`weight_only_gemm`), MXFP8 packed
/// (`weight_only_gemm_fp8`) and group-wise int4 (`weight_only_gemm_int4`, group 128), MXFP8 activations
/// against the packed MXFP4 weights (`block_gemm_packed`), beside our f32
/// GEMM with the weights in either layout, the time to read the packed
/// MXFP4 weights' bytes once (the memory limit of M = 1) and the FP4
/// lookups' compute limit ([`fp4_lookup_limit`]), all in one run.
fn weight_only_group(c: &mut Criterion) {
    use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp4};
    use mixprec::gemm::{block_gemm_packed, weight_only_gemm_packed};
    use mixprec::F4E2M1;
    let mut g = c.benchmark_group("gemm_weight_only");
    g.sample_size(10);
    let (k, n) = (4096usize, 4096usize);
    let w = values::<f32>(n * k, 2);
    let wm = MatRef::from_row_major(&w, n, k).unwrap();
    let wq = BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Floor).unwrap();
    let packed = PackedFp4::new(&wq);
    let mxfp8_w = BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Floor).unwrap();
    let mxfp8_packed = mixprec::block_scaled::PackedFp8::new(&mxfp8_w);
    let mxfp6_w = BlockScaled::<mixprec::F6E2M3>::mx(wm, MxScaleMode::Floor).unwrap();
    let e5m2_w = BlockScaled::<F8E5M2>::mx(wm, MxScaleMode::Floor).unwrap();
    let nvfp4 = PackedFp4::new(&BlockScaled::<F4E2M1>::nvfp4(wm, true).unwrap());
    let int4 = mixprec::block_scaled::PackedInt4::quantize(wm, 128).unwrap();
    let bytes = packed.size_bytes();
    let data: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("read_packed_mxfp4_bytes", |b| {
        b.iter(|| {
            black_box(&data)
                .iter()
                .fold(0u64, |s, &v| s.wrapping_add(v))
        })
    });
    if let Some((flops, run)) = fp4_lookup_limit() {
        g.throughput(Throughput::Elements(flops));
        g.bench_function("fp4_lookup_fma_limit", |b| b.iter(|| black_box(run())));
    }
    for m in [1usize, 8, 32] {
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let x = values::<f32>(m * k, 1);
        let x16: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let xm = MatRef::from_row_major(&x, m, k).unwrap();
        let x16m = MatRef::from_row_major(&x16, m, k).unwrap();
        let mxfp8 = BlockScaled::<F8E4M3>::mx(xm, MxScaleMode::Floor).unwrap();
        let mut out = vec![0.0f32; m * n];
        layout_case(
            &mut g,
            "f32_gemm_in_out",
            &x,
            MatRef::from_row_major(&w, k, n).unwrap(),
            &mut out,
        );
        layout_case(&mut g, "f32_gemm_out_in", &x, wm.t(), &mut out);
        let (e, s) = (Epilogue::new(), Parallelism::Serial);
        g.bench_function(BenchmarkId::new("mxfp4_packed_f32_act", m), |b| {
            b.iter(|| {
                weight_only_gemm_packed(
                    black_box(xm),
                    &packed,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &e,
                    s,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("nvfp4_packed_f32_act", m), |b| {
            b.iter(|| {
                weight_only_gemm_packed(
                    black_box(xm),
                    &nvfp4,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &e,
                    s,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("int4_g128_f32_act", m), |b| {
            b.iter(|| {
                mixprec::gemm::weight_only_gemm_int4(
                    black_box(xm),
                    &int4,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &e,
                    s,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("mxfp4_packed_bf16_act", m), |b| {
            b.iter(|| {
                weight_only_gemm_packed(
                    black_box(x16m),
                    &packed,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &e,
                    s,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("mxfp4_packed_mxfp8_act", m), |b| {
            b.iter(|| {
                block_gemm_packed(
                    black_box(&mxfp8),
                    &packed,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &e,
                    s,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("mxfp8_packed_f32_act", m), |b| {
            b.iter(|| {
                mixprec::gemm::weight_only_gemm_fp8(
                    black_box(xm),
                    &mxfp8_packed,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &e,
                    s,
                )
                .unwrap()
            })
        });
        weight_only_case(&mut g, "mxfp8_weights_f32_act", xm, &mxfp8_w, &mut out);
        weight_only_case(&mut g, "mxfp4_unpacked_f32_act", xm, &wq, &mut out);
        weight_only_case(&mut g, "mxfp6_unpacked_f32_act", xm, &mxfp6_w, &mut out);
        weight_only_case(&mut g, "mxfp8_e5m2_unpacked_f32_act", xm, &e5m2_w, &mut out);
    }
    g.finish();
}

/// `x · W` with the weights stored `[in, out]` (B row-major) beside
/// `x · Wᵀ` with the same weights stored `[out, in]` as PyTorch holds them
/// (B a transposed view), f32, bf16, f16 and FP8 E4M3 (activations of the
/// same type), K = N = 4096, at the batch sizes of
/// inference: the two layouts' ratio is the figure (issue 29).
fn weight_layout_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_weight_layout");
    g.sample_size(10);
    let (k, n) = (4096usize, 4096usize);
    let w = values::<f32>(k * n, 2);
    let w16: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let w8: Vec<F8E4M3> = w.iter().map(|&v| F8E4M3::from_f32(v)).collect();
    for m in [1usize, 8, 32, 128] {
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let a = values::<f32>(m * k, 1);
        let a16: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut out = vec![0.0f32; m * n];
        for (name, b) in [
            ("f32_in_out", MatRef::from_row_major(&w, k, n).unwrap()),
            ("f32_out_in", MatRef::from_row_major(&w, n, k).unwrap().t()),
        ] {
            layout_case(&mut g, name, &a, b, &mut out);
        }
        for (name, b) in [
            ("bf16_in_out", MatRef::from_row_major(&w16, k, n).unwrap()),
            (
                "bf16_out_in",
                MatRef::from_row_major(&w16, n, k).unwrap().t(),
            ),
        ] {
            layout_case(&mut g, name, &a16, b, &mut out);
        }
        let ah: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
        for (name, b) in [
            ("f16_in_out", MatRef::from_row_major(&wh, k, n).unwrap()),
            ("f16_out_in", MatRef::from_row_major(&wh, n, k).unwrap().t()),
        ] {
            layout_case(&mut g, name, &ah, b, &mut out);
        }
        let a8: Vec<F8E4M3> = a.iter().map(|&v| F8E4M3::from_f32(v)).collect();
        for (name, b) in [
            ("e4m3_in_out", MatRef::from_row_major(&w8, k, n).unwrap()),
            (
                "e4m3_out_in",
                MatRef::from_row_major(&w8, n, k).unwrap().t(),
            ),
        ] {
            layout_case(&mut g, name, &a8, b, &mut out);
        }
    }
    g.finish();
}

/// One case of [`weight_layout_group`]: `a` (M × K, row-major) times `b`.
fn layout_case<T: FloatElement>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    a: &[T],
    b: MatRef<'_, T>,
    out: &mut [f32],
) {
    let (m, k, n) = (a.len() / b.rows(), b.rows(), b.cols());
    g.bench_function(BenchmarkId::new(name, m), |bch| {
        bch.iter(|| {
            gemm(
                MatRef::from_row_major(black_box(a), m, k).unwrap(),
                b,
                MatMut::from_row_major(out, m, n).unwrap(),
                &Epilogue::new(),
                Parallelism::Serial,
            )
            .unwrap()
        })
    });
}

/// `weight_only_gemm` of f32 activations `x` (M × K) against block-scaled
/// weights `w` stored `[out, in]` (N lines of K codes), read in place.
fn weight_only_case<T: FloatElement>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    x: MatRef<'_, f32>,
    w: &mixprec::block_scaled::BlockScaled<T>,
    out: &mut [f32],
) {
    let (m, n) = (x.rows(), w.lines());
    g.bench_function(BenchmarkId::new(name, m), |b| {
        b.iter(|| {
            let c = MatMut::from_row_major(out, m, n).unwrap();
            mixprec::gemm::weight_only_gemm(
                black_box(x),
                w,
                c,
                &Epilogue::new(),
                Parallelism::Serial,
            )
            .unwrap()
        })
    });
}

/// `gemm_packed` (B packed once, `PackedB`) beside `gemm` on the same
/// weights, f32 and bf16.
fn prepacked_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_prepacked");
    g.sample_size(10);
    for &(m, k, n) in &[
        (256usize, 1024usize, 1024usize),
        (32, 4096, 4096),
        (1, 4096, 4096),
    ] {
        let id = format!("{m}x{n}x{k}");
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let (a, w) = (values::<f32>(m * k, 1), values::<f32>(k * n, 2));
        let (a16, w16): (Vec<bf16>, Vec<bf16>) = (
            a.iter().map(|&v| bf16::from_f32(v)).collect(),
            w.iter().map(|&v| bf16::from_f32(v)).collect(),
        );
        let mut out = vec![0.0f32; m * n];
        let pf = mixprec::gemm::PackedB::new(MatRef::from_row_major(&w, k, n).unwrap()).unwrap();
        let pb = mixprec::gemm::PackedB::new(MatRef::from_row_major(&w16, k, n).unwrap()).unwrap();
        g.bench_function(BenchmarkId::new("f32_gemm", &id), |bch| {
            bch.iter(|| ours(black_box(&a), &w, &mut out, m, n, k, Parallelism::Serial))
        });
        g.bench_function(BenchmarkId::new("f32_packed", &id), |bch| {
            bch.iter(|| {
                mixprec::gemm::gemm_packed(
                    MatRef::from_row_major(black_box(&a), m, k).unwrap(),
                    &pf,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &Epilogue::new(),
                    Parallelism::Serial,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("bf16_gemm", &id), |bch| {
            bch.iter(|| {
                gemm(
                    MatRef::from_row_major(black_box(&a16), m, k).unwrap(),
                    MatRef::from_row_major(&w16, k, n).unwrap(),
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &Epilogue::new(),
                    Parallelism::Serial,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("bf16_packed", &id), |bch| {
            bch.iter(|| {
                mixprec::gemm::gemm_packed(
                    MatRef::from_row_major(black_box(&a16), m, k).unwrap(),
                    &pb,
                    MatMut::from_row_major(&mut out, m, n).unwrap(),
                    &Epilogue::new(),
                    Parallelism::Serial,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// The read-only memory limit of the skinny shapes: one pass summing the
/// bytes of a 4096×4096 weight matrix in f32 and in bf16 (what a GEMV must
/// at least read), in the same run as `gemm_skinny`.
fn weight_read_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_skinny_memory_limit");
    g.sample_size(10);
    for (name, bytes) in [("f32_weights", 4usize << 24), ("bf16_weights", 2 << 24)] {
        let data: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(&data)
                    .iter()
                    .fold(0u64, |s, &v| s.wrapping_add(v))
            })
        });
        // Two cores, each summing half (the limit of the two-thread GEMV).
        let sum = |part: &[u64]| part.iter().fold(0u64, |s, &v| s.wrapping_add(v));
        g.bench_function(format!("{name}_2threads"), |b| {
            b.iter(|| {
                let (left, right) = black_box(&data).split_at(data.len() / 2);
                let (l, r) = rayon::join(|| sum(left), || sum(right));
                l.wrapping_add(r)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = gemm_benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(gemm_benches);

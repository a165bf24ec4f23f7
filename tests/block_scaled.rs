//! Block-scaled formats and the block-scaled GEMM: every fast path equals
//! the contract's loops bit for bit; with S = 128 and unit scales it is the
//! plain GEMM; the result is within the contract's error bound of the f64
//! product of the dequantized operands; the quantizers follow their rules
//! on worked examples.

use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
use mixprec::gemm::{
    self, block_gemm, block_gemm_packed, block_gemm_packed_portable, block_gemm_portable,
    block_gemm_reference, Epilogue, Parallelism,
};
use mixprec::testing::{check_slice_bits_eq, gamma};
use mixprec::{
    Error, FloatElement, MatMut, MatRef, MxInt8, F4E2M1, F6E2M3, F6E3M2, F8E4M3, F8E5M2, F8E8M0,
};
use proptest::prelude::*;

fn values(n: usize, seed: u64, specials: bool) -> Vec<f32> {
    let mut r = mixprec::convert::StochasticRng::new(seed);
    (0..n)
        .map(|_| {
            let u = r.next_u64();
            match u % 97 {
                0 if specials => f32::NAN,
                1 if specials => f32::INFINITY,
                2 => 0.0,
                _ => ((u >> 40) as f32 / 16_777_216.0 - 0.5) * 2f32.powi((u % 9) as i32 - 3),
            }
        })
        .collect()
}

/// Scales as bits to compare, every NaN as one value (`u32::MAX`).
fn scale_bits(s: &[f32]) -> Vec<u32> {
    s.iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

/// The element codes of a quantized matrix.
fn code_bits<T: FloatElement>(q: &BlockScaled<T>) -> Vec<u32> {
    q.data().iter().map(|v| v.to_raw_bits()).collect()
}

/// Quantizes an `lines × k` matrix with one of the schemes.
fn quantize<T: mixprec::block_scaled::MxElement>(
    x: &[f32],
    lines: usize,
    k: usize,
    scheme: u8,
) -> BlockScaled<T> {
    let m = MatRef::from_row_major(x, lines, k).unwrap();
    let mode = if scheme.is_multiple_of(2) {
        MxScaleMode::Floor
    } else {
        MxScaleMode::Ceil
    };
    BlockScaled::<T>::mx(m, mode).unwrap()
}

/// The bias, epilogues, starting C and parallelism of the GEMM checks.
fn test_bias(n: usize) -> Vec<f32> {
    (0..n).map(|j| j as f32 * 0.25 - 1.0).collect()
}

fn test_epilogue(ep: u8, bias: &[f32]) -> Epilogue<'_> {
    match ep {
        0 => Epilogue::new(),
        1 => Epilogue::new().alpha(0.5).beta(2.0),
        _ => Epilogue::new()
            .bias(bias)
            .activation(gemm::Activation::Relu),
    }
}

fn test_c0(len: usize) -> Vec<f32> {
    (0..len).map(|i| i as f32 * 0.125).collect()
}

fn test_parallelism(threads: usize) -> Parallelism {
    if threads == 1 {
        Parallelism::Serial
    } else {
        Parallelism::Threads(threads)
    }
}

fn run_all<TA: FloatElement, TB: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<TB>,
    threads: usize,
    ep: u8,
) -> Result<(), TestCaseError> {
    let par = test_parallelism(threads);
    same_as_reference(
        a,
        b,
        ep,
        &[&|c, e| block_gemm(a, b, c, e, par), &|c, e| {
            block_gemm_portable(a, b, c, e, par)
        }],
    )
}

/// Each of `paths` (given C and the epilogue) leaves the reference's bits
/// in C, for epilogue `ep` and the same starting C.
#[allow(clippy::type_complexity)]
fn same_as_reference<TA: FloatElement, TB: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<TB>,
    ep: u8,
    paths: &[&dyn Fn(MatMut<'_, f32>, &Epilogue<'_>) -> Result<(), Error>],
) -> Result<(), TestCaseError> {
    let (m, n) = (a.lines(), b.lines());
    let bias = test_bias(n);
    let epilogue = test_epilogue(ep, &bias);
    let c0 = test_c0(m * n);
    let mut want = c0.clone();
    block_gemm_reference(a, b, MatMut::from_row_major(&mut want, m, n)?, &epilogue)?;
    for path in paths {
        let mut got = c0.clone();
        path(MatMut::from_row_major(&mut got, m, n)?, &epilogue)?;
        check_slice_bits_eq(&got, &want)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn mx_fast_paths_equal_the_reference(m in 0usize..30, n in 0usize..40, kb in 0usize..10, seed in any::<u64>(),
                                          scheme in 0u8..5, threads in 1usize..4, ep in 0u8..3,
                                          specials in any::<bool>()) {
        // Without NaN and infinity every MX scale is a power of two near 1,
        // so the driver folds the scales into its panels; with them, NaN
        // scales keep the per-block scale multiply.
        let k = kb * 32;
        let (x, w) = (values(m * k, seed, specials), values(n * k, seed ^ 1, specials));
        match scheme {
            0 => run_all(&quantize::<F8E4M3>(&x, m, k, scheme), &quantize::<F8E5M2>(&w, n, k, scheme), threads, ep)?,
            1 => run_all(&quantize::<F8E5M2>(&x, m, k, scheme), &quantize::<F8E4M3>(&w, n, k, scheme), threads, ep)?,
            2 => run_all(&quantize::<F4E2M1>(&x, m, k, scheme), &quantize::<F6E3M2>(&w, n, k, scheme), threads, ep)?,
            3 => run_all(&quantize::<MxInt8>(&x, m, k, scheme), &quantize::<F8E4M3>(&w, n, k, scheme), threads, ep)?,
            _ => run_all(&quantize::<F6E2M3>(&x, m, k, scheme), &quantize::<F4E2M1>(&w, n, k, scheme), threads, ep)?,
        }
    }

    #[test]
    fn nvfp4_and_scaled_fp8_equal_the_reference(m in 0usize..20, n in 0usize..140, kb in 0usize..3, seed in any::<u64>(),
                                                 ts in any::<bool>(), threads in 1usize..4) {
        let k = kb * 128;
        let (x, w) = (values(m * k, seed, false), values(n * k, seed ^ 7, false));
        let a = BlockScaled::nvfp4(MatRef::from_row_major(&x, m, k)?, ts)?;
        let b = BlockScaled::nvfp4(MatRef::from_row_major(&w, n, k)?, !ts)?;
        run_all(&a, &b, threads, 2)?;
        let a = BlockScaled::<F8E4M3>::fp8(MatRef::from_row_major(&x, m, k)?, Fp8Granularity::Lines1x128, ts)?;
        let b = BlockScaled::<F8E5M2>::fp8(MatRef::from_row_major(&w, n, k)?, Fp8Granularity::Blocks128x128, false)?;
        run_all(&a, &b, threads, 0)?;
        let b = BlockScaled::<F8E4M3>::fp8(MatRef::from_row_major(&w, n, k)?, Fp8Granularity::PerTensor, ts)?;
        run_all(&a, &b, threads, 1)?;
    }
}

/// MX products over several K-tiles (and the packing's K chunks) with
/// scales that the driver folds into its panels, at shapes with partial
/// register blocks, both FP8 element orders and MXFP6 × MXINT8.
#[test]
fn mx_products_with_folded_scales_equal_the_reference() {
    for (m, n, k, threads) in [(13, 37, 640, 1), (1, 70, 288, 1), (50, 17, 1024, 2)] {
        let (x, w) = (values(m * k, 11, false), values(n * k, 12, false));
        run_all(
            &quantize::<F8E4M3>(&x, m, k, 0),
            &quantize::<F8E5M2>(&w, n, k, 1),
            threads,
            0,
        )
        .unwrap();
        run_all(
            &quantize::<F8E5M2>(&x, m, k, 1),
            &quantize::<F8E4M3>(&w, n, k, 0),
            threads,
            2,
        )
        .unwrap();
        run_all(
            &quantize::<F6E3M2>(&x, m, k, 0),
            &quantize::<MxInt8>(&w, n, k, 0),
            threads,
            1,
        )
        .unwrap();
    }
}

#[test]
fn block_128_with_unit_scales_is_the_plain_contract() {
    for (m, n, k) in [(7, 33, 256), (64, 130, 384), (1, 5, 128)] {
        let x: Vec<F8E4M3> = values(m * k, 3, false)
            .into_iter()
            .map(F8E4M3::from_f32)
            .collect();
        let w: Vec<F8E5M2> = values(n * k, 4, false)
            .into_iter()
            .map(F8E5M2::from_f32)
            .collect();
        let ones = |lines: usize| vec![1.0f32; lines * (k / 128)];
        let a = BlockScaled::from_parts(m, k, 128, 1, x.clone(), ones(m)).unwrap();
        let b = BlockScaled::from_parts(n, k, 128, 1, w.clone(), ones(n)).unwrap();
        let mut scaled = vec![0.0f32; m * n];
        block_gemm(
            &a,
            &b,
            MatMut::from_row_major(&mut scaled, m, n).unwrap(),
            &Epilogue::new(),
            Parallelism::Threads(2),
        )
        .unwrap();
        let mut plain = vec![0.0f32; m * n];
        gemm::gemm_mixed(
            MatRef::from_row_major(&x, m, k).unwrap(),
            MatRef::from_row_major(&w, n, k).unwrap().t(),
            MatMut::from_row_major(&mut plain, m, n).unwrap(),
            &Epilogue::new(),
            Parallelism::Serial,
        )
        .unwrap();
        check_slice_bits_eq(&scaled, &plain).unwrap();
    }
}

/// |C − Σ (a·s_a)(b·s_b)| ≤ γ(S + ⌈K/S⌉ + 1, 2^-24)·Σ|a s_a||b s_b|: each
/// block's chain rounds at most S times, the scale product once, the
/// accumulator once per block; the reference is the exact f64 sum of the
/// products of the dequantized operands (exact in f64: at most 24 + 24
/// bits, plus powers of two).
fn check_bound<TA: FloatElement, TB: FloatElement>(a: &BlockScaled<TA>, b: &BlockScaled<TB>) {
    let (m, n, k, s) = (a.lines(), b.lines(), a.k(), a.block());
    let mut c = vec![0.0f32; m * n];
    block_gemm(
        a,
        b,
        MatMut::from_row_major(&mut c, m, n).unwrap(),
        &Epilogue::new(),
        Parallelism::Threads(2),
    )
    .unwrap();
    let g = gamma(s + k / s + 1, 2f64.powi(-24));
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut abs) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let x = a.data()[i * k + kk].to_f32() as f64 * a.scale_at(i, kk).unwrap() as f64;
                let y = b.data()[j * k + kk].to_f32() as f64 * b.scale_at(j, kk).unwrap() as f64;
                exact += x * y;
                abs += (x * y).abs();
            }
            let err = (c[i * n + j] as f64 - exact).abs();
            let bound = g * abs + 1e-300 + gamma(k, f64::EPSILON / 2.0) * abs;
            assert!(err <= bound, "({i},{j}) K={k} S={s}: {err:e} > {bound:e}");
        }
    }
}

#[test]
fn error_bound_against_the_dequantized_operands() {
    for (m, n, k) in [(5, 9, 256), (12, 7, 1024)] {
        let (x, w) = (values(m * k, 11, false), values(n * k, 12, false));
        let xm = MatRef::from_row_major(&x, m, k).unwrap();
        let wm = MatRef::from_row_major(&w, n, k).unwrap();
        check_bound(
            &BlockScaled::<F8E4M3>::mx(xm, MxScaleMode::Floor).unwrap(),
            &BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Ceil).unwrap(),
        );
        check_bound(
            &BlockScaled::nvfp4(xm, true).unwrap(),
            &BlockScaled::nvfp4(wm, false).unwrap(),
        );
        check_bound(
            &BlockScaled::<F8E4M3>::fp8(xm, Fp8Granularity::Lines1x128, false).unwrap(),
            &BlockScaled::<F8E5M2>::fp8(wm, Fp8Granularity::Blocks128x128, false).unwrap(),
        );
    }
}

fn mx_one_block<T: mixprec::block_scaled::MxElement>(
    v: &[f32],
    mode: MxScaleMode,
) -> BlockScaled<T> {
    let mut x = v.to_vec();
    x.resize(32, 0.0);
    BlockScaled::<T>::mx(MatRef::from_row_major(&x, 1, 32).unwrap(), mode).unwrap()
}

#[test]
fn mx_worked_examples() {
    // FLOOR: amax 6 → ⌊log₂ 6⌋ = 2; MXFP4 emax 2 → X = 2^0: elements as given.
    let q = mx_one_block::<F4E2M1>(&[6.0, -3.0, 0.5, 0.25], MxScaleMode::Floor);
    assert_eq!(q.scales()[0], 1.0);
    assert_eq!(q.e8m0_scales().unwrap()[0].to_bits(), 127);
    let e: Vec<f32> = q.data()[..4].iter().map(|v| v.to_f32()).collect();
    assert_eq!(e, [6.0, -3.0, 0.5, 0.0]); // 0.25 is the tie between 0 and 0.5: even → 0
                                          // FLOOR lets an element exceed the max: amax 7 → X = 1, 7 saturates to 6.
    let q = mx_one_block::<F4E2M1>(&[7.0], MxScaleMode::Floor);
    assert_eq!((q.scales()[0], q.data()[0].to_f32()), (1.0, 6.0));
    // CEIL (RCEIL): X = 2^⌈log₂(7/6)⌉ = 2; 3.5 ties to 4 (even).
    let q = mx_one_block::<F4E2M1>(&[7.0], MxScaleMode::Ceil);
    assert_eq!((q.scales()[0], q.data()[0].to_f32()), (2.0, 4.0));
    // MXFP8 E4M3: amax 448 → ⌊log₂ 448⌋ = 8, emax 8 → X = 1.
    let q = mx_one_block::<F8E4M3>(&[448.0, 1.0 / 3.0], MxScaleMode::Floor);
    assert_eq!(q.scales()[0], 1.0);
    assert_eq!(q.data()[1].to_f32(), 0.34375);
    // E5M2: amax 1 → 2^(0 − 15); E3M2: amax 1 → 2^-4; E2M3: 2^-2.
    assert_eq!(
        mx_one_block::<F8E5M2>(&[1.0], MxScaleMode::Floor).scales()[0],
        2f32.powi(-15)
    );
    assert_eq!(
        mx_one_block::<F6E3M2>(&[1.0], MxScaleMode::Floor).scales()[0],
        2f32.powi(-4)
    );
    assert_eq!(
        mx_one_block::<F6E2M3>(&[1.0], MxScaleMode::Floor).scales()[0],
        2f32.powi(-2)
    );
    // A NaN or infinity anywhere in a block: NaN scale (0xFF), and the
    // whole block dequantizes to NaN.
    let q = mx_one_block::<F8E4M3>(&[1.0, f32::INFINITY], MxScaleMode::Floor);
    assert!(q.scales()[0].is_nan());
    assert!(q.e8m0_scales().unwrap()[0].is_nan());
    assert!(q
        .dequantize()
        .unwrap()
        .as_slice()
        .iter()
        .all(|v| v.is_nan()));
    // All zero: amax taken as 2^-126 → 2^(−126 − 8) clamps to 2^-127.
    let q = mx_one_block::<F8E4M3>(&[0.0], MxScaleMode::Floor);
    assert_eq!(q.e8m0_scales().unwrap()[0], F8E8M0::MIN_POSITIVE);
    assert!(q.dequantize().unwrap().as_slice().iter().all(|&v| v == 0.0));
    // MXINT8 (emax 0): amax 3 → X = 2^1; 3 / 2 = 1.5 = 96 · 2^-6, and
    // 0.01 / 2 = 0.32 · 2^-6 → 0. amax 1.999 → X = 1, 1.999 · 64 = 127.94
    // rounds to 128, saturates to 127; CEIL gives X = 2 and 63.97 → 64.
    let q = mx_one_block::<MxInt8>(&[3.0, 0.01, -1.0], MxScaleMode::Floor);
    assert_eq!(q.scales()[0], 2.0);
    let k: Vec<i8> = q.data()[..3].iter().map(|v| v.to_i8()).collect();
    assert_eq!(k, [96, 0, -32]);
    let q = mx_one_block::<MxInt8>(&[1.999], MxScaleMode::Floor);
    assert_eq!((q.scales()[0], q.data()[0].to_i8()), (1.0, 127));
    let q = mx_one_block::<MxInt8>(&[-1.999], MxScaleMode::Ceil);
    assert_eq!((q.scales()[0], q.data()[0].to_i8()), (2.0, -64));
    // The top of f32 with CEIL: ⌈log₂(3.4e38 / 6)⌉ = 126.
    let q = mx_one_block::<F4E2M1>(&[f32::MAX], MxScaleMode::Ceil);
    assert_eq!(q.scales()[0], 2f32.powi(126));
}

#[test]
fn nvfp4_and_fp8_worked_examples() {
    let block = |v: &[f32]| {
        let mut x = v.to_vec();
        x.resize(16, 0.0);
        x
    };
    // amax 6 → E4M3(6/6) = 1: elements as given.
    let x = block(&[6.0, 1.5, -0.5]);
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 16).unwrap(), false).unwrap();
    assert_eq!(q.scales()[0], 1.0);
    assert_eq!(q.nvfp4_scales().unwrap().0[0], F8E4M3::ONE);
    assert_eq!(q.dequantize().unwrap().as_slice()[..3], [6.0, 1.5, -0.5]);
    // amax 12 → scale 2 → 12/2 = 6, 3/2 = 1.5.
    let x = block(&[12.0, 3.0]);
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 16).unwrap(), false).unwrap();
    assert_eq!((q.scales()[0], q.data()[1].to_f32()), (2.0, 1.5));
    // NVFP4's definition step by step, with the bits: amax 7 → 7/6 =
    // 1.1667 → E4M3 1.125 (0x39, step 0.125 in [1, 2)); then 7/1.125 =
    // 6.22 saturates to 6 (0x7), -1/1.125 = -0.889 → -1 (0xA), 0.3/1.125 =
    // 0.267 → 0.5 (0x1, above the midpoint 0.25), 5/1.125 = 4.44 → 4 (0x6,
    // below the midpoint 5).
    let x = block(&[7.0, -1.0, 0.3, 5.0]);
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 16).unwrap(), false).unwrap();
    assert_eq!(q.nvfp4_scales().unwrap().0[0].to_bits(), 0x39);
    assert_eq!(q.scales()[0], 1.125);
    let bits: Vec<u8> = q.data()[..4].iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, [0x7, 0xA, 0x1, 0x6]);
    assert_eq!(
        q.dequantize().unwrap().as_slice()[..4],
        [6.75, -1.125, 0.5625, 4.5]
    );
    // With a tensor scale: s_t = 2688 / 2688 = 1 → the same block scales.
    let x = block(&[2688.0, 3.0]);
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 16).unwrap(), true).unwrap();
    assert_eq!(q.nvfp4_scales().unwrap().1, Some(1.0));
    assert_eq!(q.nvfp4_scales().unwrap().0[0].to_f32(), 448.0);
    // A NaN anywhere with a tensor scale: s_t = NaN, so every block is NaN;
    // without one, only the NaN's block.
    let mut x = block(&[1.0, 2.0]);
    x.extend(block(&[f32::NAN]));
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 32).unwrap(), true).unwrap();
    assert!(q.nvfp4_scales().unwrap().1.unwrap().is_nan());
    assert!(q.scales().iter().all(|s| s.is_nan()));
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 32).unwrap(), false).unwrap();
    assert_eq!(q.scales()[0], F8E4M3::from_f32(2.0 / 6.0).to_f32());
    assert!(q.scales()[1].is_nan());
    // All zero: the block scale clamps to E4M3's smallest, 2^-9.
    let x = vec![0.0f32; 16];
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 16).unwrap(), false).unwrap();
    assert_eq!(q.scales()[0], 2f32.powi(-9));
    // Scaled FP8, per tensor: amax 896 → 896/448 = 2; with pow2, 500/448 → 2.
    let mut x = vec![1.0f32; 128];
    x[5] = 896.0;
    let q = BlockScaled::<F8E4M3>::fp8(
        MatRef::from_row_major(&x, 1, 128).unwrap(),
        Fp8Granularity::PerTensor,
        false,
    )
    .unwrap();
    assert_eq!(
        (q.scales()[0], q.data()[5].to_f32(), q.data()[0].to_f32()),
        (2.0, 448.0, 0.5)
    );
    x[5] = 500.0;
    let q = BlockScaled::<F8E4M3>::fp8(
        MatRef::from_row_major(&x, 1, 128).unwrap(),
        Fp8Granularity::PerTensor,
        true,
    )
    .unwrap();
    assert_eq!(q.scales()[0], 2.0);
    // An all-zero block has scale 1.
    let z = vec![0.0f32; 256];
    let q = BlockScaled::<F8E5M2>::fp8(
        MatRef::from_row_major(&z, 2, 128).unwrap(),
        Fp8Granularity::Lines1x128,
        false,
    )
    .unwrap();
    assert_eq!(q.scales(), [1.0, 1.0]);
    // 128×128: 130 lines use two scale rows.
    let w = values(130 * 256, 5, false);
    let q = BlockScaled::<F8E4M3>::fp8(
        MatRef::from_row_major(&w, 130, 256).unwrap(),
        Fp8Granularity::Blocks128x128,
        false,
    )
    .unwrap();
    assert_eq!(q.scales().len(), 4);
    assert_eq!(q.scale_at(127, 200), Some(q.scales()[1]));
    assert_eq!(q.scale_at(128, 0), Some(q.scales()[2]));
}

#[test]
fn bad_parameters_are_typed_errors() {
    let x = vec![1.0f32; 48];
    let m = MatRef::from_row_major(&x, 1, 48).unwrap();
    assert!(matches!(
        BlockScaled::<F8E4M3>::mx(m, MxScaleMode::Floor),
        Err(Error::InvalidParameter { name: "K", .. })
    ));
    assert!(BlockScaled::nvfp4(MatRef::from_row_major(&x[..24], 1, 24).unwrap(), false).is_err());
    assert!(BlockScaled::<F6E2M3>::fp8(
        MatRef::from_row_major(&vec![0.0; 128], 1, 128).unwrap(),
        Fp8Granularity::PerTensor,
        false
    )
    .is_err());
    let d = vec![F8E4M3::ONE; 64];
    assert!(matches!(
        BlockScaled::from_parts(1, 64, 64, 1, d.clone(), vec![1.0]),
        Err(Error::InvalidParameter {
            name: "block size",
            ..
        })
    ));
    assert!(matches!(
        BlockScaled::from_parts(1, 64, 32, 1, d.clone(), vec![1.0]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        BlockScaled::from_parts(1, 64, 32, 1, d.clone(), vec![1.0, f32::NAN]),
        Err(Error::InvalidParameter {
            name: "block scale",
            ..
        })
    ));
    assert!(BlockScaled::from_parts(1, 64, 32, 1, d.clone(), vec![1.0, 0.0]).is_err());
    assert!(BlockScaled::from_parts(1, 64, 32, 0, d.clone(), vec![1.0, 1.0]).is_err());
    assert!(BlockScaled::from_parts(2, 64, 32, 1, d.clone(), vec![1.0; 4]).is_err());
    // GEMM: K or block sizes that disagree, an output of the wrong shape.
    let a = BlockScaled::from_parts(1, 64, 32, 1, d.clone(), vec![1.0, 1.0]).unwrap();
    let b = BlockScaled::from_parts(1, 64, 16, 1, d.clone(), vec![1.0; 4]).unwrap();
    let mut c = [0.0f32; 1];
    assert!(block_gemm(
        &a,
        &b,
        MatMut::from_row_major(&mut c, 1, 1).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial
    )
    .is_err());
    let b = BlockScaled::from_parts(1, 32, 32, 1, d[..32].to_vec(), vec![1.0]).unwrap();
    assert!(matches!(
        block_gemm(
            &a,
            &b,
            MatMut::from_row_major(&mut c, 1, 1).unwrap(),
            &Epilogue::new(),
            Parallelism::Serial
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut c2 = [0.0f32; 2];
    assert!(block_gemm(
        &a,
        &a,
        MatMut::from_row_major(&mut c2, 1, 2).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial
    )
    .is_err());
}

/// The quantizers against a plain transcription of the module docs' rules
/// (amax per block, the scale rule, `x / scale` saturated and rounded).
mod plain {
    use super::*;
    use mixprec::block_scaled::MxElement;

    fn blocks(lines: usize, k: usize, block: usize, group: usize, x: &[f32]) -> Vec<f32> {
        // amax (NaN for a region with NaN/±inf) per (line group, block).
        let nb = k / block;
        let mut out = vec![0.0f32; lines.div_ceil(group) * nb];
        for l in 0..lines {
            for kk in 0..k {
                let v = x[l * k + kk];
                let o = &mut out[(l / group) * nb + kk / block];
                *o = if !v.is_finite() || o.is_nan() {
                    f32::NAN
                } else {
                    o.max(v.abs())
                };
            }
        }
        out
    }

    fn elements<T: FloatElement>(
        x: &[f32],
        k: usize,
        block: usize,
        group: usize,
        scales: &[f32],
    ) -> Vec<u32> {
        let nb = k / block;
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let s = scales[(i / k / group) * nb + (i % k) / block];
                let mut out = [T::default()];
                mixprec::convert::narrow_saturating(&[v / s], &mut out).unwrap();
                out[0].to_raw_bits()
            })
            .collect()
    }

    pub fn mx<T: MxElement>(
        x: &[f32],
        lines: usize,
        k: usize,
        mode: MxScaleMode,
    ) -> (Vec<f32>, Vec<u32>) {
        let scales: Vec<f32> = blocks(lines, k, 32, 1, x)
            .into_iter()
            .map(|amax| {
                if amax.is_nan() {
                    return f32::NAN;
                }
                let amax = if amax == 0.0 { f32::MIN_POSITIVE } else { amax };
                let e = match mode {
                    MxScaleMode::Floor => (amax as f64).log2().floor() as i32 - T::EMAX,
                    MxScaleMode::Ceil => {
                        let r = amax as f64 / T::MAX.to_f32() as f64;
                        (0..)
                            .map(|d| r.log2().floor() as i32 - 1 + d)
                            .find(|&e| 2f64.powi(e) >= r)
                            .unwrap()
                    }
                };
                F8E8M0::from_exponent(e.max(-127)).to_f32()
            })
            .collect();
        let e = elements::<T>(x, k, 32, 1, &scales);
        (scales, e)
    }

    pub fn fp8<T: FloatElement>(
        x: &[f32],
        lines: usize,
        k: usize,
        g: Fp8Granularity,
        pow2: bool,
    ) -> (Vec<f32>, Vec<u32>) {
        let group = match g {
            Fp8Granularity::PerTensor => lines.max(1),
            Fp8Granularity::Lines1x128 => 1,
            Fp8Granularity::Blocks128x128 => 128,
        };
        let mut amax = blocks(lines, k, 128, group, x);
        if g == Fp8Granularity::PerTensor {
            let all = amax.iter().fold(0.0f32, |m, &a| {
                if a.is_nan() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(a)
                }
            });
            amax.iter_mut().for_each(|a| *a = all);
        }
        let scales: Vec<f32> = amax
            .into_iter()
            .map(|a| {
                if a.is_nan() {
                    f32::NAN
                } else if a == 0.0 {
                    1.0
                } else {
                    // Never below the smallest positive f32 (2^-149): a
                    // block of tiny subnormals keeps a usable scale.
                    let s = (a / T::MAX.to_f32()).max(f32::from_bits(1));
                    if pow2 {
                        let e = (s as f64).log2().ceil() as i32;
                        let p = 2f64.powi(e) as f32;
                        if p / 2.0 >= s {
                            p / 2.0
                        } else {
                            p
                        }
                    } else {
                        s
                    }
                }
            })
            .collect();
        let e = elements::<T>(x, k, 128, group, &scales);
        (scales, e)
    }

    /// NVFP4 by its definition: (scales, E4M3 block-scale bits, tensor
    /// scale, element bits).
    pub fn nvfp4(
        x: &[f32],
        lines: usize,
        k: usize,
        tensor: bool,
    ) -> (Vec<f32>, Vec<u8>, Option<f32>, Vec<u32>) {
        let amax = blocks(lines, k, 16, 1, x);
        let s_t = tensor.then(|| {
            let all = x.iter().fold(0.0f32, |m, &v| {
                if !v.is_finite() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(v.abs())
                }
            });
            let s = all / (448.0 * 6.0);
            if s.is_nan() || s > 0.0 {
                s
            } else {
                1.0
            }
        });
        let (mut scales, mut codes) = (Vec::new(), Vec::new());
        for a in amax {
            let raw = a / 6.0 / s_t.unwrap_or(1.0);
            let e4 = if raw.is_nan() {
                F8E4M3::NAN
            } else {
                F8E4M3::from_f32_saturating(raw.clamp(2f32.powi(-9), 448.0))
            };
            codes.push(e4.to_bits());
            scales.push(match s_t {
                Some(s) => s * e4.to_f32(),
                None => e4.to_f32(),
            });
        }
        let e = elements::<F4E2M1>(x, k, 16, 1, &scales);
        (scales, codes, s_t, e)
    }
}

/// Blocks whose amax runs over the whole f32 range (subnormal to f32::MAX),
/// sits at and next to the significands where the MX rules change (1,
/// the element max's, one ulp above it), or is 0, NaN or ±∞: `lines × k`.
fn edge_blocks(lines: usize, k: usize, block: usize, seed: u64, max_fracs: &[u32]) -> Vec<f32> {
    let mut r = mixprec::convert::StochasticRng::new(seed);
    let mut x = vec![0.0f32; lines * k];
    for blk in x.chunks_exact_mut(block) {
        let u = r.next_u64();
        let frac = match u % 5 {
            0 => 0,
            1 => max_fracs[(u >> 8) as usize % max_fracs.len()],
            2 => max_fracs[(u >> 8) as usize % max_fracs.len()] + 1,
            _ => (u >> 20) as u32 & 0x007F_FFFF,
        };
        let exp = (u >> 40) % 256; // 0 (subnormal) ..= 255 (±∞/NaN)
        let amax = match (u >> 48) % 16 {
            0 => 0.0,
            1 => f32::from_bits((u >> 8) as u32 & 0x007F_FFFF), // subnormal
            _ if exp == 255 => {
                if u & 1 == 0 {
                    f32::NAN
                } else {
                    f32::INFINITY
                }
            }
            _ => f32::from_bits(((exp as u32) << 23) | frac),
        };
        let at = (u >> 52) as usize % block;
        for (i, v) in blk.iter_mut().enumerate() {
            let w = r.next_u64();
            let t = ((w >> 40) as f32 / 16_777_216.0) * 2.0 - 1.0;
            *v = if i == at {
                if w & 1 == 0 {
                    amax
                } else {
                    -amax
                }
            } else if amax.is_finite() {
                amax * t
            } else {
                t
            };
        }
    }
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The quantizers' scales and elements equal the definitions on blocks
    /// chosen to hit every branch of the scale rules (the SIMD path takes
    /// eight blocks at a time, so lines run 0 to 20 blocks).
    #[test]
    fn quantizer_scale_rules_at_their_edges(lines in 0usize..5, nb in 0usize..21, seed in any::<u64>()) {
        let sbits = |s: &[f32]| s.iter().map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() }).collect::<Vec<_>>();
        let fr = |v: f32| v.to_bits() & 0x007F_FFFF;
        let fracs = [fr(448.0), fr(57344.0), fr(7.5), fr(28.0), fr(6.0), fr(127.0 / 64.0)];
        let x = edge_blocks(lines, nb * 32, 32, seed, &fracs);
        let m = MatRef::from_row_major(&x, lines, nb * 32)?;
        macro_rules! check_mx {
            ($t:ty) => {
                for mode in [MxScaleMode::Floor, MxScaleMode::Ceil] {
                    let q = BlockScaled::<$t>::mx(m, mode)?;
                    let (s, e) = plain::mx::<$t>(&x, lines, nb * 32, mode);
                    prop_assert_eq!(sbits(q.scales()), sbits(&s), "{} {:?}", stringify!($t), mode);
                    prop_assert_eq!(q.data().iter().map(|v| v.to_raw_bits()).collect::<Vec<_>>(), e);
                }
            };
        }
        check_mx!(F8E4M3);
        check_mx!(F8E5M2);
        check_mx!(F6E2M3);
        check_mx!(F6E3M2);
        check_mx!(F4E2M1);
        // MXINT8's elements are checked against their own definition in
        // quantizers_follow_their_rules; here its scales.
        for mode in [MxScaleMode::Floor, MxScaleMode::Ceil] {
            let q = BlockScaled::<MxInt8>::mx(m, mode)?;
            prop_assert_eq!(sbits(q.scales()), sbits(&plain::mx::<MxInt8>(&x, lines, nb * 32, mode).0));
        }
        let x = edge_blocks(lines, nb * 16, 16, seed ^ 1, &fracs);
        // Tensor scales from a finite tensor too (most edge tensors hold a NaN or ±∞).
        let finite: Vec<f32> = x.iter().map(|&v| if v.is_finite() { v } else { 1.5 }).collect();
        for x in [&x, &finite] {
            let m = MatRef::from_row_major(x, lines, nb * 16)?;
            for tensor in [false, true] {
                let q = BlockScaled::nvfp4(m, tensor)?;
                let (s, c, t, e) = plain::nvfp4(x, lines, nb * 16, tensor);
                let (qc, qt) = q.nvfp4_scales().unwrap();
                prop_assert_eq!(sbits(q.scales()), sbits(&s));
                prop_assert_eq!(qc.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), c);
                prop_assert_eq!(qt.map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() }), t.map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() }));
                prop_assert_eq!(q.data().iter().map(|v| v.to_raw_bits()).collect::<Vec<_>>(), e);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn quantizers_follow_their_rules(lines in 0usize..140, kb in 0usize..6, seed in any::<u64>(), specials in any::<bool>(), pow2 in any::<bool>()) {
        let k = kb * 128;
        let mut x = values(lines * k, seed, specials);
        // Some all-zero blocks.
        if lines > 0 && k > 0 {
            x[..32].iter_mut().for_each(|v| *v = 0.0);
        }
        let m = MatRef::from_row_major(&x, lines, k)?;
        let bits = |q: &[u32]| q.to_vec();
        let sbits = |s: &[f32]| s.iter().map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() }).collect::<Vec<_>>();
        for mode in [MxScaleMode::Floor, MxScaleMode::Ceil] {
            let q = BlockScaled::<F8E4M3>::mx(m, mode)?;
            let (s, e) = plain::mx::<F8E4M3>(&x, lines, k, mode);
            prop_assert_eq!(sbits(q.scales()), sbits(&s));
            prop_assert_eq!(q.data().iter().map(|v| v.to_raw_bits()).collect::<Vec<_>>(), bits(&e));
            let q = BlockScaled::<F4E2M1>::mx(m, mode)?;
            let (s, e) = plain::mx::<F4E2M1>(&x, lines, k, mode);
            prop_assert_eq!(sbits(q.scales()), sbits(&s));
            prop_assert_eq!(q.data().iter().map(|v| v.to_raw_bits()).collect::<Vec<_>>(), bits(&e));
            // MXINT8: its elements by their definition, round-half-even(x / X · 64)
            // clamped to ±127 (NaN blocks: 0).
            let q = BlockScaled::<MxInt8>::mx(m, mode)?;
            let (s, _) = plain::mx::<MxInt8>(&x, lines, k, mode);
            prop_assert_eq!(sbits(q.scales()), sbits(&s));
            let want: Vec<i8> = x.iter().enumerate().map(|(i, &v)| {
                let r = f64::from(v / s[(i / k) * (k / 32) + (i % k) / 32]) * 64.0;
                if r.is_nan() { 0 } else { r.round_ties_even().clamp(-127.0, 127.0) as i8 }
            }).collect();
            prop_assert_eq!(q.data().iter().map(|v| v.to_i8()).collect::<Vec<_>>(), want);
        }
        for g in [Fp8Granularity::PerTensor, Fp8Granularity::Lines1x128, Fp8Granularity::Blocks128x128] {
            let q = BlockScaled::<F8E5M2>::fp8(m, g, pow2)?;
            let (s, e) = plain::fp8::<F8E5M2>(&x, lines, k, g, pow2);
            prop_assert_eq!(sbits(q.scales()), sbits(&s));
            prop_assert_eq!(q.data().iter().map(|v| v.to_raw_bits()).collect::<Vec<_>>(), bits(&e));
        }
    }
}

/// The `_into` quantizers give the allocating ones' bits and reuse the
/// buffers; on an error the output is left as it was.
/// The FP4 × FP4 integer tiles at their largest sums: every element ±6
/// (the tile's offset bytes at 0 and 24, its i16 block sums at the bound
/// 8 · 2 · 24 · 12), MXFP4 (blocks of 32) and NVFP4 (16), one and two
/// threads, against the reference bit for bit.
#[test]
fn fp4_tiles_at_their_largest_sums_equal_the_reference() {
    let (m, n, k) = (13, 40, 256);
    for (sa, sb) in [(6.0f32, 6.0f32), (6.0, -6.0), (-6.0, -6.0)] {
        // A few elements flipped so that the sums are not all equal.
        let x: Vec<f32> = (0..m * k)
            .map(|i| if i % 97 == 0 { -sa } else { sa })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| if i % 89 == 0 { -sb } else { sb })
            .collect();
        let (xm, wm) = (
            MatRef::from_row_major(&x, m, k).unwrap(),
            MatRef::from_row_major(&w, n, k).unwrap(),
        );
        for threads in [1, 2] {
            let a = BlockScaled::<F4E2M1>::mx(xm, MxScaleMode::Floor).unwrap();
            let b = BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Floor).unwrap();
            run_all(&a, &b, threads, 0).unwrap();
            let a = BlockScaled::nvfp4(xm, true).unwrap();
            let b = BlockScaled::nvfp4(wm, false).unwrap();
            run_all(&a, &b, threads, 2).unwrap();
        }
    }
}

/// MX operands whose block scales sit at the ends of E8M0's range (tiny
/// blocks with subnormal scales, huge and tiny blocks whose products of
/// scales overflow or underflow, and ordinary ones), mixed element types,
/// against the reference bit for bit.
#[test]
fn mx_scales_at_the_ends_of_their_range_equal_the_reference() {
    let (m, n, k) = (7, 17, 96);
    let mut r = mixprec::convert::StochasticRng::new(5);
    let mut v = |mag: f32| mag * ((r.next_u64() >> 40) as f32 / 16777216.0 - 0.5);
    // Block by block: magnitudes with subnormal E8M0 scales among them;
    // huge and tiny ones whose scales are all normal; ordinary ones only.
    let cases: [&[f32]; 3] = [
        &[1e-38, 3e-42, 1.0, 1e30, 2e-30, 1e38],
        &[1e38, 1e-30, 1.0, 1e-25, 1e35],
        &[1.0, 1e6, 1e-6, 300.0],
    ];
    for mags in cases {
        let x: Vec<f32> = (0..m * k)
            .map(|i| v(mags[(i / 32 + i / k) % mags.len()]))
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| v(mags[(i / 32 + 2 * (i / k)) % mags.len()]))
            .collect();
        let (xm, wm) = (
            MatRef::from_row_major(&x, m, k).unwrap(),
            MatRef::from_row_major(&w, n, k).unwrap(),
        );
        for mode in [MxScaleMode::Floor, MxScaleMode::Ceil] {
            run_all(
                &quantize_mx::<F8E4M3>(xm, mode),
                &quantize_mx::<F8E5M2>(wm, mode),
                1,
                0,
            )
            .unwrap();
            run_all(
                &quantize_mx::<F8E5M2>(xm, mode),
                &quantize_mx::<F8E4M3>(wm, mode),
                2,
                1,
            )
            .unwrap();
            run_all(
                &quantize_mx::<F6E3M2>(xm, mode),
                &quantize_mx::<F8E5M2>(wm, mode),
                1,
                2,
            )
            .unwrap();
        }
    }
}

fn quantize_mx<T: mixprec::block_scaled::MxElement>(
    x: MatRef<'_, f32>,
    mode: MxScaleMode,
) -> BlockScaled<T> {
    BlockScaled::<T>::mx(x, mode).unwrap()
}

/// NVFP4 with a tensor scale on a tensor of subnormals: an all-zero block's
/// scale s_t · 2^-9 underflows to 0, so its quotients are 0/0 = NaN (E2M1
/// has no NaN: +0 here, by the definition). The SIMD quantizer skips its
/// NaN handling only for groups whose scales are all non-zero; this case,
/// sixteen blocks (two SIMD groups) on each line, holds it to that.
#[test]
fn nvfp4_tensor_scale_underflow_follows_the_definition() {
    let (lines, k) = (2, 16 * 16);
    let tiny = f32::from_bits(0x0001_1170); // ≈ 1e-40, subnormal
    let x: Vec<f32> = (0..lines * k)
        .map(|i| match (i / 16) % 4 {
            0 => 0.0,
            1 => tiny,
            2 => -tiny * 0.5,
            _ => tiny * ((i % 16) as f32) / 16.0,
        })
        .collect();
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, lines, k).unwrap(), true).unwrap();
    let (s, c, t, e) = plain::nvfp4(&x, lines, k, true);
    assert!(s.contains(&0.0), "the case needs an underflowed scale");
    assert_eq!(
        q.scales().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        s.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let (qc, qt) = q.nvfp4_scales().unwrap();
    assert_eq!(qc.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), c);
    assert_eq!(qt.map(f32::to_bits), t.map(f32::to_bits));
    assert_eq!(
        q.data().iter().map(|v| v.to_raw_bits()).collect::<Vec<_>>(),
        e
    );
}

#[test]
fn quantizing_into_reused_buffers() {
    let x = values(8 * 256, 5, true);
    let m = MatRef::from_row_major(&x, 8, 256).unwrap();
    let bits = |q: &BlockScaled<F8E4M3>| {
        (
            q.data().iter().map(|v| v.to_raw_bits()).collect::<Vec<_>>(),
            q.scales().iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
        )
    };
    let mut out = BlockScaled::<F8E4M3>::mx(
        MatRef::from_row_major(&x[..64], 2, 32).unwrap(),
        MxScaleMode::Ceil,
    )
    .unwrap();
    BlockScaled::mx_into(m, MxScaleMode::Floor, &mut out).unwrap();
    assert_eq!(
        bits(&out),
        bits(&BlockScaled::mx(m, MxScaleMode::Floor).unwrap())
    );
    assert_eq!((out.lines(), out.k(), out.block()), (8, 256, 32));
    BlockScaled::fp8_into(m, Fp8Granularity::Blocks128x128, true, &mut out).unwrap();
    assert_eq!(
        bits(&out),
        bits(&BlockScaled::fp8(m, Fp8Granularity::Blocks128x128, true).unwrap())
    );
    assert_eq!(out.line_group(), 128);
    let before = out.clone();
    let bad = MatRef::from_row_major(&x[..8 * 48], 8, 48).unwrap();
    assert!(BlockScaled::mx_into(bad, MxScaleMode::Floor, &mut out).is_err());
    assert_eq!(bits(&out), bits(&before));
    let mut nv = BlockScaled::nvfp4(m, false).unwrap();
    BlockScaled::nvfp4_into(m, true, &mut nv).unwrap();
    let fresh = BlockScaled::nvfp4(m, true).unwrap();
    let sbits = |q: &BlockScaled<F4E2M1>| {
        let (s, t) = q.nvfp4_scales().unwrap();
        (
            s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            t.map(f32::to_bits),
        )
    };
    assert_eq!(sbits(&nv), sbits(&fresh));
    assert_eq!(
        nv.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        fresh.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // A refused shape leaves everything in place, the E4M3 block scales
    // (which `nvfp4_into` reuses) included.
    let before = nv.clone();
    let bad = MatRef::from_row_major(&x[..8 * 40], 8, 40).unwrap();
    assert!(BlockScaled::nvfp4_into(bad, true, &mut nv).is_err());
    assert_eq!(sbits(&nv), sbits(&before));
    assert_eq!(
        nv.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        before
            .data()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    // Reused block scales of another length: the fresh result's bits.
    let small = MatRef::from_row_major(&x[..2 * 32], 2, 32).unwrap();
    BlockScaled::nvfp4_into(small, true, &mut nv).unwrap();
    let fresh = BlockScaled::nvfp4(small, true).unwrap();
    assert_eq!(sbits(&nv), sbits(&fresh));
    BlockScaled::nvfp4_into(m, false, &mut nv).unwrap();
    assert_eq!(sbits(&nv), sbits(&BlockScaled::nvfp4(m, false).unwrap()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]

    /// Few rows, FP4 weights large enough for the small-M path (block sums
    /// as exact integer dot products from the FP4 codes): the reference's
    /// bits, for FP4, FP6 E2M3 and MXINT8 activations, blocks of 16 and 32,
    /// NaN blocks, column tails (N not a multiple of 8), threads and a
    /// narrow output; M = 5 (the general path) alongside.
    #[test]
    fn small_m_fp4_weights_equal_the_reference(m in 1usize..6, n in 96usize..140, kb in 22usize..26,
                                                seed in any::<u64>(), scheme in 0u8..4, threads in 1usize..4) {
        let k = kb * 128; // k · n >= 2^18: the small-M path's size
        let (mut x, mut w) = (values(m * k, seed, false), values(n * k, seed ^ 3, false));
        // One NaN block in each operand (its outputs are NaN; the rest not).
        x[(seed as usize) % (m * k)] = f32::NAN;
        w[(seed as usize >> 20) % (n * k)] = f32::NAN;
        let xm = MatRef::from_row_major(&x, m, k)?;
        let b = if scheme == 3 {
            BlockScaled::nvfp4(MatRef::from_row_major(&w, n, k)?, true)?
        } else {
            quantize::<F4E2M1>(&w, n, k, scheme)
        };
        match scheme {
            0 => run_all(&quantize::<F4E2M1>(&x, m, k, scheme), &b, threads, 2)?,
            1 => run_all(&quantize::<F6E2M3>(&x, m, k, scheme), &b, threads, 1)?,
            2 => run_all(&quantize::<MxInt8>(&x, m, k, scheme), &b, threads, 0)?,
            _ => run_all(&BlockScaled::nvfp4(xm, false)?, &b, threads, 2)?,
        }
        // A bf16 output through the same path.
        let a = quantize::<F4E2M1>(&x, m, k, 0);
        let b = quantize::<F4E2M1>(&w, n, k, 1);
        let (mut fast, mut want) = (vec![mixprec::bf16::ZERO; m * n], vec![mixprec::bf16::ZERO; m * n]);
        block_gemm(&a, &b, MatMut::from_row_major(&mut fast, m, n)?, &Epilogue::new(), Parallelism::Serial)?;
        block_gemm_reference(&a, &b, MatMut::from_row_major(&mut want, m, n)?, &Epilogue::new())?;
        check_slice_bits_eq(&fast, &want)?;
    }
}

/// `block_gemm_packed` (and its portable form) against the reference on the
/// unpacked matrix, for every epilogue; the packing round-trips.
fn run_packed<TA: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<F4E2M1>,
    threads: usize,
    ep: u8,
) -> Result<(), TestCaseError> {
    let packed = mixprec::block_scaled::PackedFp4::new(b);
    let back = packed.to_block_scaled();
    let bits = |q: &BlockScaled<F4E2M1>| {
        (
            q.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            q.scales().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            (q.lines(), q.k(), q.block(), q.line_group()),
        )
    };
    prop_assert_eq!(bits(&back), bits(b));
    prop_assert_eq!(
        back.e8m0_scales()
            .map(|s| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>()),
        b.e8m0_scales()
            .map(|s| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    );
    let par = test_parallelism(threads);
    same_as_reference(
        a,
        b,
        ep,
        &[&|c, e| block_gemm_packed(a, &packed, c, e, par), &|c, e| {
            block_gemm_packed_portable(a, &packed, c, e, par)
        }],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn packed_fp4_equals_the_reference(m in 0usize..7, n in 0usize..40, kb in 0usize..6, seed in any::<u64>(),
                                       scheme in 0u8..5, threads in 1usize..4, ep in 0u8..3) {
        let k = kb * 32;
        let (mut x, mut w) = (values(m * k, seed, false), values(n * k, seed ^ 5, false));
        if seed % 3 == 0 && m * k > 0 && n * k > 0 {
            x[(seed as usize >> 8) % (m * k)] = f32::NAN;
            w[(seed as usize >> 16) % (n * k)] = f32::INFINITY;
        }
        let b = if scheme == 4 {
            BlockScaled::nvfp4(MatRef::from_row_major(&w, n, k)?, true)?
        } else {
            quantize::<F4E2M1>(&w, n, k, scheme)
        };
        match scheme {
            0 => run_packed(&quantize::<F4E2M1>(&x, m, k, scheme), &b, threads, ep)?,
            1 => run_packed(&quantize::<F6E2M3>(&x, m, k, scheme), &b, threads, ep)?,
            2 => run_packed(&quantize::<MxInt8>(&x, m, k, scheme), &b, threads, ep)?,
            // E4M3 activations: no integer view, the f32 chains on the packed codes.
            3 => run_packed(&quantize::<F8E4M3>(&x, m, k, scheme), &b, threads, ep)?,
            _ => run_packed(&BlockScaled::nvfp4(MatRef::from_row_major(&x, m, k)?, false)?, &b, threads, ep)?,
        }
    }
}

#[test]
fn packed_fp4_errors() {
    let w = values(16 * 64, 1, false);
    let b = BlockScaled::<F4E2M1>::mx(
        MatRef::from_row_major(&w, 16, 64).unwrap(),
        MxScaleMode::Floor,
    )
    .unwrap();
    let packed = mixprec::block_scaled::PackedFp4::new(&b);
    assert_eq!((packed.lines(), packed.k(), packed.block()), (16, 64, 32));
    // Half a byte per weight, one byte per E8M0 scale.
    assert_eq!(packed.size_bytes(), 16 * 64 / 2 + 16 * 2);
    // NVFP4: one E4M3 byte per 16 weights (4.5 bits) and the 1 KiB table
    // of their f32 values; the round trip exact.
    let nv = BlockScaled::nvfp4(MatRef::from_row_major(&w, 16, 64).unwrap(), true).unwrap();
    let packed_nv = mixprec::block_scaled::PackedFp4::new(&nv);
    assert_eq!(packed_nv.size_bytes(), 16 * 64 / 2 + 16 * 4 + 1024);
    assert_eq!(packed_nv.to_block_scaled(), nv);
    // Plain f32 scales stay four bytes each.
    let parts = BlockScaled::from_parts(16, 64, 32, 1, b.data().to_vec(), vec![0.3; 32]).unwrap();
    let packed_f32 = mixprec::block_scaled::PackedFp4::new(&parts);
    assert_eq!(packed_f32.size_bytes(), 16 * 64 / 2 + 4 * 16 * 2);
    assert_eq!(packed_f32.to_block_scaled(), parts);
    let a = BlockScaled::<F4E2M1>::mx(
        MatRef::from_row_major(&w[..96], 1, 96).unwrap(),
        MxScaleMode::Floor,
    )
    .unwrap();
    let mut y = [0.0f32; 16];
    let r = block_gemm_packed(
        &a,
        &packed,
        MatMut::from_row_major(&mut y, 1, 16).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let a = BlockScaled::nvfp4(MatRef::from_row_major(&w[..64], 1, 64).unwrap(), false).unwrap();
    let r = block_gemm_packed(
        &a,
        &packed,
        MatMut::from_row_major(&mut y, 1, 16).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    );
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
    let a = BlockScaled::<F4E2M1>::mx(
        MatRef::from_row_major(&w[..64], 1, 64).unwrap(),
        MxScaleMode::Floor,
    )
    .unwrap();
    let mut y2 = [0.0f32; 15];
    let r = block_gemm_packed(
        &a,
        &packed,
        MatMut::from_row_major(&mut y2, 1, 15).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = block_gemm_packed(
        &a,
        &packed,
        MatMut::from_row_major(&mut y, 1, 16).unwrap(),
        &Epilogue::new(),
        Parallelism::Threads(0),
    );
    assert!(r.is_err());
}

/// The MX scale rules at their edges against the plain transcription:
/// amax at and next to max_elem · 2^j (where CEIL steps), powers of two
/// (where FLOOR steps), f32 subnormals and the top of f32.
#[test]
fn mx_scale_edges_follow_the_rules() {
    fn check<T: mixprec::block_scaled::MxElement>() {
        let max = T::MAX.to_f32();
        let mut amaxes = vec![f32::MAX, 1e-45, 3e-39, 1.1754942e-38, f32::MIN_POSITIVE];
        for j in [-140i32, -126, -20, -1, 0, 1, 7, 100, 120] {
            for base in [max * 2f32.powi(j), 2f32.powi(j)] {
                if base.is_finite() && base > 0.0 {
                    let b = base.to_bits();
                    amaxes.extend([f32::from_bits(b - 1), base, f32::from_bits(b + 1)]);
                }
            }
        }
        // One block per amax: the amax itself and a smaller value.
        let mut x = Vec::new();
        for &a in &amaxes {
            let mut blk = vec![a * 0.25; 32];
            blk[7] = -a;
            x.extend(blk);
        }
        let lines = amaxes.len();
        let m = MatRef::from_row_major(&x, lines, 32).unwrap();
        for mode in [MxScaleMode::Floor, MxScaleMode::Ceil] {
            let q = BlockScaled::<T>::mx(m, mode).unwrap();
            let (s, e) = plain::mx::<T>(&x, lines, 32, mode);
            let got: Vec<u32> = q.scales().iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = s.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{:?} {mode:?}", T::DTYPE);
            let data: Vec<u32> = q.data().iter().map(|v| v.to_raw_bits()).collect();
            assert_eq!(data, e, "{:?} {mode:?}", T::DTYPE);
        }
    }
    check::<F8E4M3>();
    check::<F8E5M2>();
    check::<F6E2M3>();
    check::<F6E3M2>();
    check::<F4E2M1>();
    check::<MxInt8>();
}

/// Empty shapes through the packed paths: M = 0, N = 0, K = 0.
#[test]
fn packed_paths_with_empty_shapes() {
    for (m, n, k) in [(0usize, 5usize, 32usize), (3, 0, 32), (3, 5, 0), (0, 0, 0)] {
        let x = values(m * k, 1, false);
        let w = values(n * k, 2, false);
        let a = BlockScaled::<F4E2M1>::mx(
            MatRef::from_row_major(&x, m, k).unwrap(),
            MxScaleMode::Floor,
        )
        .unwrap();
        let b = BlockScaled::<F4E2M1>::mx(
            MatRef::from_row_major(&w, n, k).unwrap(),
            MxScaleMode::Floor,
        )
        .unwrap();
        let packed = mixprec::block_scaled::PackedFp4::new(&b);
        let bias = vec![0.5f32; n];
        let ep = Epilogue::new().bias(&bias);
        let (mut y1, mut y2) = (vec![9.0f32; m * n], vec![9.0f32; m * n]);
        block_gemm_packed(
            &a,
            &packed,
            MatMut::from_row_major(&mut y1, m, n).unwrap(),
            &ep,
            Parallelism::Threads(2),
        )
        .unwrap();
        block_gemm_reference(&a, &b, MatMut::from_row_major(&mut y2, m, n).unwrap(), &ep).unwrap();
        assert_eq!(y1, y2, "{m}x{n}x{k}");
        let bf: Vec<f32> = values(k * n, 3, false);
        let pb = gemm::PackedB::new(MatRef::from_row_major(&bf, k, n).unwrap()).unwrap();
        let (mut z1, mut z2) = (vec![9.0f32; m * n], vec![9.0f32; m * n]);
        gemm::gemm_packed(
            MatRef::from_row_major(&x, m, k).unwrap(),
            &pb,
            MatMut::from_row_major(&mut z1, m, n).unwrap(),
            &ep,
            Parallelism::Serial,
        )
        .unwrap();
        gemm::reference(
            MatRef::from_row_major(&x, m, k).unwrap(),
            MatRef::from_row_major(&bf, k, n).unwrap(),
            MatMut::from_row_major(&mut z2, m, n).unwrap(),
            &ep,
        )
        .unwrap();
        assert_eq!(z1, z2, "float {m}x{n}x{k}");
        let bi: Vec<i8> = (0..k * n).map(|i| i as i8).collect();
        let pi = mixprec::quant::PackedI8::new(MatRef::from_row_major(&bi, k, n).unwrap(), &[3])
            .unwrap();
        let au: Vec<u8> = (0..m * k).map(|i| i as u8).collect();
        let (mut c1, mut c2) = (vec![7i32; m * n], vec![7i32; m * n]);
        mixprec::quant::qgemm_packed(
            mixprec::quant::QMatRef::new(MatRef::from_row_major(&au, m, k).unwrap(), &[5]).unwrap(),
            &pi,
            MatMut::from_row_major(&mut c1, m, n).unwrap(),
            &mixprec::quant::QEpilogue::I32,
            Parallelism::Serial,
        )
        .unwrap();
        mixprec::quant::qgemm_reference(
            mixprec::quant::QMatRef::new(MatRef::from_row_major(&au, m, k).unwrap(), &[5]).unwrap(),
            mixprec::quant::QMatRef::new(MatRef::from_row_major(&bi, k, n).unwrap(), &[3]).unwrap(),
            MatMut::from_row_major(&mut c2, m, n).unwrap(),
            &mixprec::quant::QEpilogue::I32,
        )
        .unwrap();
        assert_eq!(c1, c2, "int {m}x{n}x{k}");
    }
}

/// Outputs of 8 MiB and more are written with non-temporal stores (on the
/// AVX-512 tier; NVFP4's block amaxes on every x86-64 tier): the same bits
/// as the plain rules, for NVFP4 with and without the tensor scale (the
/// tensor scale's pass hands the block amaxes to the second pass), MXFP4
/// and MXFP8, in reused buffers too; NaN and ±∞ in a few blocks (which
/// make NVFP4's tensor scale NaN, so the tensor scale is also tested on the
/// finite values), and a view whose lines start 4 bytes into a line.
#[test]
fn large_outputs_equal_the_plain_rules() {
    let (lines, k) = (2048, 4096);
    let finite = values(lines * k + 1, 77, false);
    let mut x = finite.clone();
    for i in [5, 4096 * 700 + 33, lines * k - 2] {
        x[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3];
    }
    for offset in [0, 1] {
        for (data, tensor) in [(&x, false), (&x, true), (&finite, true)] {
            let xs = &data[offset..offset + lines * k];
            let m = MatRef::from_row_major(xs, lines, k).unwrap();
            let (s, c, t, e) = plain::nvfp4(xs, lines, k, tensor);
            let mut q = BlockScaled::nvfp4(m, tensor).unwrap();
            for _ in 0..2 {
                let (qc, qt) = q.nvfp4_scales().unwrap();
                assert_eq!(scale_bits(q.scales()), scale_bits(&s));
                assert_eq!(qc.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), c);
                assert_eq!(qt.map(|v| v.to_bits()), t.map(|v| v.to_bits()));
                assert_eq!(code_bits(&q), e, "offset {offset}, tensor {tensor}");
                BlockScaled::nvfp4_into(m, tensor, &mut q).unwrap();
            }
        }
        let xs = &x[offset..offset + lines * k];
        let m = MatRef::from_row_major(xs, lines, k).unwrap();
        let (s, e) = plain::mx::<F4E2M1>(xs, lines, k, MxScaleMode::Floor);
        let q = BlockScaled::<F4E2M1>::mx(m, MxScaleMode::Floor).unwrap();
        assert_eq!(scale_bits(q.scales()), scale_bits(&s));
        assert_eq!(code_bits(&q), e);
        let (s, e) = plain::mx::<F8E4M3>(xs, lines, k, MxScaleMode::Floor);
        let q = BlockScaled::<F8E4M3>::mx(m, MxScaleMode::Floor).unwrap();
        assert_eq!(scale_bits(q.scales()), scale_bits(&s));
        assert_eq!(code_bits(&q), e);
        // Scaled FP8 at every granularity (per tensor and 128 x 128: two
        // passes, the second streaming its codes), on finite data too (a
        // NaN makes the per-tensor scale NaN everywhere).
        for data in [&x, &finite] {
            let xs = &data[offset..offset + lines * k];
            let m = MatRef::from_row_major(xs, lines, k).unwrap();
            for g in [
                Fp8Granularity::PerTensor,
                Fp8Granularity::Lines1x128,
                Fp8Granularity::Blocks128x128,
            ] {
                let (s, e) = plain::fp8::<F8E4M3>(xs, lines, k, g, false);
                let mut q = BlockScaled::<F8E4M3>::fp8(m, g, false).unwrap();
                for _ in 0..2 {
                    assert_eq!(scale_bits(q.scales()), scale_bits(&s), "{g:?}");
                    assert_eq!(code_bits(&q), e, "{g:?}, offset {offset}");
                    BlockScaled::<F8E4M3>::fp8_into(m, g, false, &mut q).unwrap();
                }
            }
        }
    }
}

/// Scales at the bottom of f32's range: amaxes whose scale (amax / max,
/// or the MX and NVFP4 rules) is subnormal or underflows to 0, where the
/// SIMD rounding's choice between its finite and NaN-handling forms rests
/// on the scale. Every scheme at every granularity, against the plain
/// rules, bit for bit.
#[test]
fn tiny_scales_round_as_the_plain_rules() {
    let (lines, k) = (256, 256);
    for top in [1e-44f32, 3e-42, 1e-40, 2e-38, 1.1754942e-38] {
        // Values from -top to top, some zero, a block of zeros.
        let mut x: Vec<f32> = values(lines * k, 11, false)
            .iter()
            .map(|v| (v * 0.5).clamp(-1.0, 1.0) * top)
            .collect();
        x[..128].iter_mut().for_each(|v| *v = 0.0);
        x[7] = top;
        let m = MatRef::from_row_major(&x, lines, k).unwrap();
        for g in [
            Fp8Granularity::PerTensor,
            Fp8Granularity::Lines1x128,
            Fp8Granularity::Blocks128x128,
        ] {
            for pow2 in [false, true] {
                let q = BlockScaled::<F8E4M3>::fp8(m, g, pow2).unwrap();
                let (s, e) = plain::fp8::<F8E4M3>(&x, lines, k, g, pow2);
                assert_eq!(
                    scale_bits(q.scales()),
                    scale_bits(&s),
                    "{top:e} {g:?} {pow2}"
                );
                assert_eq!(code_bits(&q), e, "{top:e} {g:?} {pow2}");
            }
        }
        for tensor in [false, true] {
            let q = BlockScaled::nvfp4(m, tensor).unwrap();
            let (s, _, _, e) = plain::nvfp4(&x, lines, k, tensor);
            assert_eq!(
                scale_bits(q.scales()),
                scale_bits(&s),
                "{top:e} nvfp4 {tensor}"
            );
            assert_eq!(code_bits(&q), e, "{top:e} nvfp4 {tensor}");
        }
        let q = BlockScaled::<F4E2M1>::mx(m, MxScaleMode::Floor).unwrap();
        let (s, e) = plain::mx::<F4E2M1>(&x, lines, k, MxScaleMode::Floor);
        assert_eq!(scale_bits(q.scales()), scale_bits(&s), "{top:e} mxfp4");
        assert_eq!(code_bits(&q), e, "{top:e} mxfp4");
    }
}

/// Quotients at and around every E2M1 rounding edge: blocks whose values
/// are fl(e · s) and its neighbours a few ulps away, for each edge e (the
/// codes' midpoints and values) and the block's own scale s, with scales
/// of every kind (NVFP4 with and without the tensor scale, MXFP4): a
/// quotient one ulp off (a multiplication by fl(1 / s) in place of the
/// division, say) lands on the other side of an edge here. Against the
/// plain rules, bit for bit.
#[test]
fn quotients_at_e2m1_edges_round_as_the_plain_rules() {
    let edges = [
        0.25f32, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0,
    ];
    let (lines, k) = (64, 256);
    let mut r = mixprec::convert::StochasticRng::new(5);
    let mut x = vec![0.0f32; lines * k];
    for (l, line) in x.chunks_mut(k).enumerate() {
        // A block's amax sets its scale: the amax goes first, the rest of
        // the block is filled from the scale it gets (found below).
        for (b, blk) in line.chunks_mut(16).enumerate() {
            let amax = (1.0 + (r.next_u64() >> 41) as f32 / 8_388_608.0)
                * 2f32.powi((l % 9) as i32 - 4 + b as i32 % 3);
            blk[0] = if b % 2 == 0 { amax } else { -amax };
        }
    }
    let m = MatRef::from_row_major(&x, lines, k).unwrap();
    for tensor in [false, true] {
        // The scales the blocks get from their amaxes alone (the other
        // values stay below each amax, so the scales do not change).
        let scales = BlockScaled::nvfp4(m, tensor).unwrap().scales().to_vec();
        let mut y = x.clone();
        for (bi, blk) in y.chunks_mut(16).enumerate() {
            let (s, top) = (scales[bi], blk[0].abs() * 0.999);
            for (i, v) in blk.iter_mut().enumerate().skip(1) {
                let e = edges[(i + bi) % edges.len()];
                let d = (i as i32 % 9) - 4;
                let at = (e * s).to_bits() as i32 + d;
                *v = f32::from_bits(at as u32).min(top);
                if (i + bi) % 3 == 0 {
                    *v = -*v;
                }
            }
        }
        let ym = MatRef::from_row_major(&y, lines, k).unwrap();
        let q = BlockScaled::nvfp4(ym, tensor).unwrap();
        assert_eq!(q.scales(), &scales[..], "the scales moved");
        let (s, _, _, e) = plain::nvfp4(&y, lines, k, tensor);
        assert_eq!(scale_bits(q.scales()), scale_bits(&s));
        assert_eq!(code_bits(&q), e, "nvfp4, tensor scale {tensor}");
        let q = BlockScaled::<F4E2M1>::mx(ym, MxScaleMode::Floor).unwrap();
        let (s, e) = plain::mx::<F4E2M1>(&y, lines, k, MxScaleMode::Floor);
        assert_eq!(scale_bits(q.scales()), scale_bits(&s));
        assert_eq!(code_bits(&q), e, "mxfp4");
    }
}

/// `pad_k`/`padded_k`: rows padded with zeros to whole blocks, the values
/// kept bit for bit (−0 and NaN included), any strides; a block of 0 and
/// an overflowing K are typed errors; a product on padded operands has the
/// bits of the same product on K a multiple of the block to begin with.
#[test]
fn pad_k_pads_with_zeros_to_whole_blocks() {
    use mixprec::block_scaled::{pad_k, padded_k};
    assert_eq!(padded_k(50, 32).unwrap(), 64);
    assert_eq!(padded_k(64, 32).unwrap(), 64);
    assert_eq!(padded_k(0, 16).unwrap(), 0);
    assert!(matches!(
        padded_k(5, 0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        padded_k(usize::MAX, 32),
        Err(Error::ShapeOverflow { .. })
    ));
    let x: Vec<f32> = (0..3 * 50)
        .map(|i| match i {
            7 => -0.0,
            9 => f32::NAN,
            _ => (i % 9) as f32 - 4.0,
        })
        .collect();
    // A transposed view of a 50 × 3 buffer: any strides.
    let xt: Vec<f32> = (0..50 * 3).map(|i| x[(i % 3) * 50 + i / 3]).collect();
    let view = MatRef::from_row_major(&xt, 50, 3).unwrap().t();
    let p = pad_k(view, 32).unwrap();
    assert_eq!(p.shape(), &[3, 64]);
    for r in 0..3 {
        for c in 0..64 {
            let got = p.as_slice()[r * 64 + c].to_bits();
            let want = if c < 50 { x[r * 50 + c].to_bits() } else { 0 };
            assert_eq!(got, want, "{r} {c}");
        }
    }
    let huge = [1.0f32];
    let broadcast = MatRef::new(&huge, 1 << 40, 1 << 30, 0, 0).unwrap();
    assert!(matches!(
        pad_k(broadcast, 32),
        Err(Error::ShapeOverflow { .. })
    ));
}

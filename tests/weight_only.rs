//! Dense activations × block-scaled weights (`weight_only_gemm`,
//! `weight_only_gemm_packed`): every path returns the bits of the
//! block-scaled reference loops on the activations given unit scales, for
//! f32, bf16 and f16 activations, every weight scheme, 1–3 threads, the
//! portable kernels too, and activations with subnormals, NaN and ±∞.

use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode, PackedFp4, PackedInt4};
use mixprec::gemm::{
    block_gemm_packed, block_gemm_reference, weight_only_gemm, weight_only_gemm_int4,
    weight_only_gemm_int4_portable, weight_only_gemm_packed, weight_only_gemm_packed_plan,
    weight_only_gemm_packed_portable, weight_only_gemm_plan, weight_only_gemm_portable, Activation,
    Epilogue, Parallelism, Strategy, Tier,
};
use mixprec::testing::check_slice_bits_eq;
use mixprec::{
    bf16, f16, Error, FloatElement, MatMut, MatRef, F4E2M1, F6E2M3, F8E4M3, F8E5M2, F8E8M0,
};
use proptest::prelude::*;

/// Values of mixed magnitudes; with `specials`, some NaN, ±∞ and
/// subnormals (which the packed kernel cannot halve exactly).
fn values(n: usize, seed: u64, specials: bool) -> Vec<f32> {
    let mut r = mixprec::convert::StochasticRng::new(seed);
    (0..n)
        .map(|_| {
            let u = r.next_u64();
            // Specials rare enough that most rows of a few hundred values
            // hold none (a NaN row's outputs are all NaN).
            match u % 997 {
                0 if specials => f32::NAN,
                1 if specials => f32::NEG_INFINITY,
                2 if specials => f32::from_bits(0x0000_0301), // subnormal
                3 if specials => -1.5e-38,                    // below 2^-125
                4 => 0.0,
                _ => ((u >> 40) as f32 / 16_777_216.0 - 0.5) * 2f32.powi((u % 9) as i32 - 3),
            }
        })
        .collect()
}

fn epilogue(ep: u8, bias: &[f32]) -> Epilogue<'_> {
    match ep {
        0 => Epilogue::new(),
        1 => Epilogue::new().alpha(0.5).beta(2.0),
        _ => Epilogue::new().bias(bias).activation(Activation::Relu),
    }
}

fn parallelism(threads: usize) -> Parallelism {
    if threads == 1 {
        Parallelism::Serial
    } else {
        Parallelism::Threads(threads)
    }
}

/// The weights in scheme `scheme` (`n × k`).
fn weights(w: &[f32], n: usize, k: usize, scheme: u8) -> Result<Weights, Error> {
    let m = MatRef::from_row_major(w, n, k)?;
    Ok(match scheme {
        0 => Weights::Fp4(BlockScaled::mx(m, MxScaleMode::Floor)?),
        1 => Weights::Fp4(BlockScaled::nvfp4(m, true)?),
        2 => Weights::Fp4(BlockScaled::nvfp4(m, false)?),
        3 => Weights::E4M3(BlockScaled::mx(m, MxScaleMode::Ceil)?),
        4 => Weights::E4M3(BlockScaled::fp8(m, Fp8Granularity::Blocks128x128, false)?),
        5 => Weights::E5M2(BlockScaled::fp8(m, Fp8Granularity::Lines1x128, true)?),
        _ => Weights::E2M3(BlockScaled::mx(m, MxScaleMode::Floor)?),
    })
}

enum Weights {
    Fp4(BlockScaled<F4E2M1>),
    E4M3(BlockScaled<F8E4M3>),
    E5M2(BlockScaled<F8E5M2>),
    E2M3(BlockScaled<F6E2M3>),
}

/// One way of computing the product into C.
type Path<'a> = Box<dyn Fn(MatMut<'_, f32>) -> Result<(), Error> + 'a>;

/// Every path against the reference for activations of type `TA`: `a`
/// is `m × k` (stored transposed when `transposed`, read through a view).
#[allow(clippy::too_many_arguments)]
fn check<TA: FloatElement, TB: FloatElement>(
    x: &[f32],
    (m, k): (usize, usize),
    b: &BlockScaled<TB>,
    packed: Option<&PackedFp4>,
    threads: usize,
    ep: u8,
    transposed: bool,
) -> Result<(), TestCaseError> {
    let n = b.lines();
    let xa: Vec<TA> = x.iter().map(|&v| TA::from_f32(v)).collect();
    // The reference: A as a block-scaled matrix with unit scales.
    let unit = BlockScaled::from_parts(
        m,
        k,
        b.block(),
        1,
        xa.clone(),
        vec![1.0; m * (k / b.block())],
    )?;
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
    let e = epilogue(ep, &bias);
    let c0: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.125).collect();
    let mut want = c0.clone();
    block_gemm_reference(&unit, b, MatMut::from_row_major(&mut want, m, n)?, &e)?;
    let stored: Vec<TA> = if transposed {
        (0..k * m).map(|i| xa[(i % m) * k + i / m]).collect()
    } else {
        xa.clone()
    };
    let a = if transposed {
        MatRef::from_row_major(&stored, k, m)?.t()
    } else {
        MatRef::from_row_major(&stored, m, k)?
    };
    let par = parallelism(threads);
    let mut paths: Vec<Path<'_>> = vec![
        Box::new(|c| weight_only_gemm(a, b, c, &e, par)),
        Box::new(|c| weight_only_gemm_portable(a, b, c, &e, par)),
    ];
    if let Some(p) = packed {
        paths.push(Box::new(move |c| weight_only_gemm_packed(a, p, c, &e, par)));
        paths.push(Box::new(move |c| {
            weight_only_gemm_packed_portable(a, p, c, &e, par)
        }));
    }
    for path in &paths {
        let mut got = c0.clone();
        path(MatMut::from_row_major(&mut got, m, n)?)?;
        check_slice_bits_eq(&got, &want)?;
    }
    Ok(())
}

fn check_all_types<TB: FloatElement>(
    x: &[f32],
    mk: (usize, usize),
    b: &BlockScaled<TB>,
    packed: Option<&PackedFp4>,
    (threads, ep, ta, transposed): (usize, u8, u8, bool),
) -> Result<(), TestCaseError> {
    match ta {
        0 => check::<f32, TB>(x, mk, b, packed, threads, ep, transposed),
        1 => check::<bf16, TB>(x, mk, b, packed, threads, ep, transposed),
        _ => check::<f16, TB>(x, mk, b, packed, threads, ep, transposed),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Rows across the packed path's limit (32), columns across groups of 8.
    #[test]
    fn weight_only_paths_equal_the_reference(m in 0usize..40, n in 0usize..90, kb in 0usize..3,
                                             seed in any::<u64>(), scheme in 0u8..7, ta in 0u8..3,
                                             threads in 1usize..4, ep in 0u8..3, specials in any::<bool>(),
                                             transposed in any::<bool>()) {
        // K a multiple of 128 covers every scheme's block.
        let k = kb * 128;
        let (x, w) = (values(m * k, seed, specials), values(n * k, seed ^ 7, false));
        let opts = (threads, ep, ta, transposed);
        match weights(&w, n, k, scheme)? {
            Weights::Fp4(b) => {
                let packed = PackedFp4::new(&b);
                check_all_types(&x, (m, k), &b, Some(&packed), opts)?
            }
            Weights::E4M3(b) => check_all_types(&x, (m, k), &b, None, opts)?,
            Weights::E5M2(b) => check_all_types(&x, (m, k), &b, None, opts)?,
            Weights::E2M3(b) => check_all_types(&x, (m, k), &b, None, opts)?,
        }
    }

    /// `block_gemm_packed` with activations that have no integer view
    /// (MXFP8 E4M3) streams the packed weights by f32 chains: the same
    /// bits as the reference.
    #[test]
    fn packed_fp4_with_fp8_activations_equals_the_reference(m in 1usize..12, n in 1usize..90, kb in 1usize..4,
                                                             seed in any::<u64>(), threads in 1usize..4) {
        let k = kb * 32;
        let (x, w) = (values(m * k, seed, true), values(n * k, seed ^ 3, false));
        let a = BlockScaled::<F8E4M3>::mx(MatRef::from_row_major(&x, m, k)?, MxScaleMode::Floor)?;
        let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, n, k)?, MxScaleMode::Floor)?;
        let packed = PackedFp4::new(&b);
        let mut want = vec![0.0f32; m * n];
        block_gemm_reference(&a, &b, MatMut::from_row_major(&mut want, m, n)?, &Epilogue::new())?;
        let mut got = vec![0.0f32; m * n];
        block_gemm_packed(&a, &packed, MatMut::from_row_major(&mut got, m, n)?, &Epilogue::new(), parallelism(threads))?;
        check_slice_bits_eq(&got, &want)?;
    }
}

/// A worked example: one block of 32 with scale 2^-1 and FP4 weights.
#[test]
fn worked_example() -> Result<(), Error> {
    // w[0, k] = 6 for every k, w[1, k] = -0.5 (exactly FP4), MX scale 2^0.
    let mut w = vec![6.0f32; 32];
    w.extend(vec![-0.5f32; 32]);
    let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 2, 32)?, MxScaleMode::Floor)?;
    // Row 0: amax 6, ⌊log₂ 6⌋ − 2 = 0, scale 1.
    assert_eq!(b.scales(), &[1.0, 0.125]); // row 1: amax 0.5, 2^(−1 − 2)
    let x: Vec<f32> = (0..32).map(|i| i as f32).collect(); // Σ = 496
    let mut y = [0.0f32; 2];
    let a = MatRef::from_row_major(&x, 1, 32)?;
    weight_only_gemm(
        a,
        &b,
        MatMut::from_row_major(&mut y, 1, 2)?,
        &Epilogue::new(),
        Parallelism::Serial,
    )?;
    assert_eq!(y, [496.0 * 6.0, -248.0]);
    let mut yp = [0.0f32; 2];
    weight_only_gemm_packed(
        a,
        &PackedFp4::new(&b),
        MatMut::from_row_major(&mut yp, 1, 2)?,
        &Epilogue::new(),
        Parallelism::Serial,
    )?;
    assert_eq!(yp, y);
    Ok(())
}

#[test]
fn plans_name_the_strategies() -> Result<(), Error> {
    let w = values(64 * 256, 1, false);
    let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 64, 256)?, MxScaleMode::Floor)?;
    let packed = PackedFp4::new(&b);
    let x = vec![0.5f32; 40 * 256];
    let one = MatRef::from_row_major(&x[..256], 1, 256)?;
    let plan = weight_only_gemm_packed_plan(one, &packed, Parallelism::Serial)?;
    // The float GEMM's tier: AVX-512 where the CPU has it.
    let expected = match mixprec::active_isa() {
        "portable" => Tier::Portable,
        "avx2+fma+f16c" => Tier::Avx2,
        _ => Tier::Avx512,
    };
    assert_eq!(plan.tier, expected);
    assert_eq!(plan.strategy, Strategy::PackedDense);
    // Past 32 rows the packed weights are unpacked for the blocked engine.
    let many = MatRef::from_row_major(&x, 40, 256)?;
    let plan = weight_only_gemm_packed_plan(many, &packed, Parallelism::Serial)?;
    assert_ne!(plan.strategy, Strategy::PackedDense);
    assert_eq!(plan, weight_only_gemm_plan(many, &b, Parallelism::Serial)?);
    Ok(())
}

#[test]
fn bad_shapes_are_typed_errors() -> Result<(), Error> {
    let w = values(16 * 64, 2, false);
    let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 16, 64)?, MxScaleMode::Floor)?;
    let packed = PackedFp4::new(&b);
    let x = vec![1.0f32; 2 * 96];
    let a = MatRef::from_row_major(&x, 2, 96)?;
    let mut y = vec![0.0f32; 2 * 16];
    let e = Epilogue::new();
    for r in [
        weight_only_gemm(
            a,
            &b,
            MatMut::from_row_major(&mut y, 2, 16)?,
            &e,
            Parallelism::Serial,
        ),
        weight_only_gemm_packed(
            a,
            &packed,
            MatMut::from_row_major(&mut y, 2, 16)?,
            &e,
            Parallelism::Serial,
        ),
    ] {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("96"), "{err}");
    }
    // C of the wrong shape, and Threads(0).
    let a = MatRef::from_row_major(&x[..128], 2, 64)?;
    let err = weight_only_gemm(
        a,
        &b,
        MatMut::from_row_major(&mut y[..30], 2, 15)?,
        &e,
        Parallelism::Serial,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = weight_only_gemm_packed(
        a,
        &packed,
        MatMut::from_row_major(&mut y, 2, 16)?,
        &e,
        Parallelism::Threads(0),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    Ok(())
}

/// Subnormal activations (and values below 2^-101, which the packed
/// kernel's prescaling by 2^-25 would make subnormal) keep their exact
/// products: the prescaled activations are used only where the scaling is
/// exact.
#[test]
fn tiny_activations_keep_their_bits() -> Result<(), Error> {
    let (n, k) = (16, 64);
    let w: Vec<f32> = (0..n * k).map(|i| [1.0, -0.5, 1.5, 6.0][i % 4]).collect();
    let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, n, k)?, MxScaleMode::Floor)?;
    let packed = PackedFp4::new(&b);
    for tiny in [
        f32::from_bits(1),
        f32::from_bits(0x0000_0301),
        -1.5e-38,
        f32::MIN_POSITIVE * 3.0,
    ] {
        let x: Vec<f32> = (0..2 * k)
            .map(|i| if i % 3 == 0 { tiny } else { 0.0 })
            .collect();
        let a = MatRef::from_row_major(&x, 2, k)?;
        let unit = BlockScaled::from_parts(2, k, 32, 1, x.clone(), vec![1.0; 2 * 2])?;
        let mut want = vec![0.0f32; 2 * n];
        block_gemm_reference(
            &unit,
            &b,
            MatMut::from_row_major(&mut want, 2, n)?,
            &Epilogue::new(),
        )?;
        assert!(
            want.iter().any(|v| *v != 0.0),
            "{tiny:e}: the products are not all zero"
        );
        for portable in [false, true] {
            let mut got = vec![0.0f32; 2 * n];
            let c = MatMut::from_row_major(&mut got, 2, n)?;
            if portable {
                weight_only_gemm_packed_portable(
                    a,
                    &packed,
                    c,
                    &Epilogue::new(),
                    Parallelism::Serial,
                )?;
            } else {
                weight_only_gemm_packed(a, &packed, c, &Epilogue::new(), Parallelism::Serial)?;
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{tiny:e}, portable {portable}");
        }
    }
    Ok(())
}

/// The int4 contract as plain loops: per group, the chain of
/// `a · (q − z)` from +0.0, then `acc = fma(p, s, acc)`; the epilogue.
fn int4_reference(x: &[f32], m: usize, b: &PackedInt4, e: &Epilogue<'_>, c: &mut [f32]) {
    let (n, k, group) = (b.lines(), b.k(), b.group());
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for blk in 0..k / group {
                let (s, z) = (b.scale(j, blk).unwrap(), b.zero_point(j, blk).unwrap());
                let mut p = 0.0f32;
                for kk in blk * group..(blk + 1) * group {
                    let w = f32::from(b.code(j, kk).unwrap()) - f32::from(z);
                    p = x[i * k + kk].mul_add(w, p);
                }
                acc = p.mul_add(s, acc);
            }
            let old = c[i * n + j];
            c[i * n + j] = e.apply(acc, old, j);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// `weight_only_gemm_int4` (and its portable form) against the
    /// contract's loops, f32 and bf16 activations, every group size.
    #[test]
    fn int4_equals_its_reference(m in 0usize..40, n in 0usize..90, kb in 0usize..3, seed in any::<u64>(),
                                 group_i in 0usize..3, bf in any::<bool>(), threads in 1usize..4,
                                 ep in 0u8..3, specials in any::<bool>()) {
        let (k, group) = (kb * 128, mixprec::block_scaled::INT4_GROUP_SIZES[group_i]);
        let (mut x, w) = (values(m * k, seed, specials), values(n * k, seed ^ 9, false));
        if bf {
            x.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
        }
        let b = PackedInt4::quantize(MatRef::from_row_major(&w, n, k)?, group)?;
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
        let e = epilogue(ep, &bias);
        let c0: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.125).collect();
        let mut want = c0.clone();
        int4_reference(&x, m, &b, &e, &mut want);
        let x16: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let par = parallelism(threads);
        for portable in [false, true] {
            let mut got = c0.clone();
            let c = MatMut::from_row_major(&mut got, m, n)?;
            match (bf, portable) {
                (false, false) => weight_only_gemm_int4(MatRef::from_row_major(&x, m, k)?, &b, c, &e, par)?,
                (false, true) => weight_only_gemm_int4_portable(MatRef::from_row_major(&x, m, k)?, &b, c, &e, par)?,
                (true, false) => weight_only_gemm_int4(MatRef::from_row_major(&x16, m, k)?, &b, c, &e, par)?,
                (true, true) => weight_only_gemm_int4_portable(MatRef::from_row_major(&x16, m, k)?, &b, c, &e, par)?,
            }
            check_slice_bits_eq(&got, &want)?;
        }
    }
}

/// Every FP4 code in every lane and nibble position of the packed
/// kernels' registers, and every int4 (code, zero point) pair, at 1–9
/// rows of A: the AVX-512 kernel decodes two values per table lookup up to
/// 3 rows and one past them, on 4, 2 and 1 pairs of groups per call (88
/// lines: 11 groups of 8, the last one alone). The packed paths give the
/// reference's bits.
#[test]
fn every_packed_code_at_every_row_count_equals_the_reference() -> Result<(), TestCaseError> {
    let (lines, k, group) = (88, 512, 32);
    let x: Vec<f32> = (0..9 * k)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.37)
        .collect();
    // Code of (line, kk): in each line every code at every nibble
    // position (kk % 8) over the groups of eight steps.
    let code = |line: usize, kk: usize| ((3 * line + kk + kk / 8) % 16) as u8;
    let data: Vec<F4E2M1> = (0..lines * k)
        .map(|i| F4E2M1::from_bits(code(i / k, i % k)))
        .collect();
    let blocks = k / group;
    let scales: Vec<F8E8M0> = (0..lines * blocks)
        .map(|i| F8E8M0::from_bits(120 + (i % 13) as u8))
        .collect();
    let b = BlockScaled::from_mx_parts(lines, k, data, scales)?;
    let packed = PackedFp4::new(&b);
    let q: Vec<u8> = (0..lines * k).map(|i| code(i / k, i % k)).collect();
    let zero = |line: usize, blk: usize| ((7 * line + 5 * blk) % 16) as u8;
    let zeros: Vec<u8> = (0..lines * blocks)
        .map(|i| zero(i / blocks, i % blocks))
        .collect();
    let int4_scales: Vec<f32> = (0..lines * blocks)
        .map(|i| 0.25 + (i % 5) as f32 * 0.3)
        .collect();
    let b4 = PackedInt4::from_parts(lines, k, group, &q, &int4_scales, &zeros)?;
    let mut pairs = std::collections::BTreeSet::new();
    for line in 0..lines {
        for kk in 0..k {
            pairs.insert((code(line, kk), zero(line, kk / group)));
        }
    }
    assert_eq!(pairs.len(), 256, "every (code, zero point) pair");
    for m in 1..=9 {
        check::<f32, F4E2M1>(&x[..m * k], (m, k), &b, Some(&packed), 1, 0, false)?;
        let mut want = vec![0.0f32; m * lines];
        int4_reference(&x, m, &b4, &Epilogue::new(), &mut want);
        let mut got = vec![0.0f32; m * lines];
        let a = MatRef::from_row_major(&x[..m * k], m, k)?;
        let c = MatMut::from_row_major(&mut got, m, lines)?;
        weight_only_gemm_int4(a, &b4, c, &Epilogue::new(), Parallelism::Serial)?;
        check_slice_bits_eq(&got, &want)?;
    }
    Ok(())
}

/// The int4 product is within γ(K) · Σ|a · (q − z) · s| of the exact
/// (f64) product of the activations and the weights' values, u = 2^-24.
#[test]
fn int4_error_bound() -> Result<(), Error> {
    let (m, n, k) = (3, 20, 512);
    let (x, w) = (values(m * k, 11, false), values(n * k, 12, false));
    for group in mixprec::block_scaled::INT4_GROUP_SIZES {
        let b = PackedInt4::quantize(MatRef::from_row_major(&w, n, k)?, group)?;
        let mut y = vec![0.0f32; m * n];
        let a = MatRef::from_row_major(&x, m, k)?;
        weight_only_gemm_int4(
            a,
            &b,
            MatMut::from_row_major(&mut y, m, n)?,
            &Epilogue::new(),
            Parallelism::Serial,
        )?;
        let u = 2f64.powi(-24);
        let gamma = k as f64 * u / (1.0 - k as f64 * u);
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut abs) = (0.0f64, 0.0f64);
                for kk in 0..k {
                    let blk = kk / group;
                    let wv = (f64::from(b.code(j, kk).unwrap())
                        - f64::from(b.zero_point(j, blk).unwrap()))
                        * f64::from(b.scale(j, blk).unwrap());
                    exact += f64::from(x[i * k + kk]) * wv;
                    abs += (f64::from(x[i * k + kk]) * wv).abs();
                }
                let err = (f64::from(y[i * n + j]) - exact).abs();
                assert!(
                    err <= gamma * abs,
                    "group {group} ({i}, {j}): {err:e} > {:e}",
                    gamma * abs
                );
            }
        }
    }
    Ok(())
}

/// The quantizer's rule on a worked group, the parts' checks, and the size.
#[test]
fn int4_quantizer_and_parts() -> Result<(), Error> {
    // One group of 32: min −0.5, max 3.25 → s = 3.75 / 15 = 0.25, z = 2;
    // 1.1 / 0.25 = 4.4 → 4, q = 6, value (6 − 2) · 0.25 = 1.0.
    let mut w = vec![0.0f32; 32];
    (w[0], w[1], w[2]) = (-0.5, 3.25, 1.1);
    let q = PackedInt4::quantize(MatRef::from_row_major(&w, 1, 32)?, 32)?;
    assert_eq!((q.scale(0, 0), q.zero_point(0, 0)), (Some(0.25), Some(2)));
    assert_eq!(
        (q.code(0, 0), q.code(0, 1), q.code(0, 2), q.code(0, 3)),
        (Some(0), Some(15), Some(6), Some(2))
    );
    assert_eq!(&q.dequantize()?.as_slice()[..4], &[-0.5, 3.25, 1.0, 0.0]);
    // A constant group keeps a finite, positive scale.
    let c = PackedInt4::quantize(MatRef::from_row_major(&[0.0f32; 64], 1, 64)?, 64)?;
    assert!(c.scale(0, 0).unwrap() > 0.0 && c.dequantize()?.as_slice().iter().all(|v| *v == 0.0));
    // 4 bits per weight plus 5 bytes per group (8 lines padded).
    let big = PackedInt4::quantize(
        MatRef::from_row_major(&values(16 * 256, 3, false), 16, 256)?,
        128,
    )?;
    assert_eq!(big.size_bytes(), 16 * 256 / 2 + 5 * 16 * 2);
    // Bad input is a typed error naming the value.
    let mut nan = vec![0.5f32; 64];
    nan[37] = f32::NAN;
    let err = PackedInt4::quantize(MatRef::from_row_major(&nan, 1, 64)?, 32).unwrap_err();
    assert!(err.to_string().contains("column 37"), "{err}");
    for (group, k) in [(16, 64), (32, 48)] {
        let err =
            PackedInt4::quantize(MatRef::from_row_major(&vec![0.0; k], 1, k)?, group).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    }
    let err = PackedInt4::from_parts(1, 32, 32, &[16; 32], &[1.0], &[0]).unwrap_err();
    assert!(err.to_string().contains("16 at 0"), "{err}");
    let err = PackedInt4::from_parts(1, 32, 32, &[1; 32], &[0.0], &[0]).unwrap_err();
    assert!(err.to_string().contains("scale"), "{err}");
    let err = PackedInt4::from_parts(1, 32, 32, &[1; 31], &[1.0], &[0]).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
    // K of the activations must match.
    let mut y = [0.0f32; 16];
    let x = vec![1.0f32; 128];
    let err = weight_only_gemm_int4(
        MatRef::from_row_major(&x, 1, 128)?,
        &big,
        MatMut::from_row_major(&mut y, 1, 16)?,
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    Ok(())
}

/// `WeightOnlyLinear`: for every scheme, `forward` on rank 1, 2 and 3
/// input gives the same bits row for row, and (but for int8 dynamic, whose
/// activations are quantized) is within γ(K + 2) · Σ|x·w| + |bias|·u of
/// the exact product with the layer's own dequantized weights, u = 2^-24
/// (the chain's K − 1 roundings, the block accumulates, one for a scale
/// product, one for the bias). `in_features` = 100 is padded to each block.
#[test]
fn weight_only_linear_forward_every_scheme() -> Result<(), Error> {
    use mixprec::quant::{WeightOnlyLinear, WeightScheme};
    use mixprec::Tensor;
    let (out, inf) = (24usize, 100usize);
    let w = Tensor::from_vec(&[out, inf], values(out * inf, 21, false))?;
    let bias: Vec<f32> = (0..out).map(|j| j as f32 * 0.01 - 0.1).collect();
    let x = values(6 * inf, 22, false);
    let schemes = [
        WeightScheme::Int8Dynamic,
        WeightScheme::Mxfp8,
        WeightScheme::Fp8Block128,
        WeightScheme::Mxfp4,
        WeightScheme::Nvfp4,
        WeightScheme::Int4 { group: 32 },
        WeightScheme::Int4 { group: 64 },
        WeightScheme::Int4 { group: 128 },
    ];
    for scheme in schemes {
        let layer = WeightOnlyLinear::new(&w, Some(&bias), scheme)?;
        assert_eq!(
            (layer.in_features(), layer.out_features(), layer.scheme()),
            (inf, out, scheme)
        );
        let y2 = layer.forward(
            &Tensor::from_vec(&[6, inf], x.clone())?,
            Parallelism::Serial,
        )?;
        let y3 = layer.forward(
            &Tensor::from_vec(&[2, 3, inf], x.clone())?,
            Parallelism::Threads(2),
        )?;
        assert_eq!(y3.shape(), &[2, 3, out]);
        assert_eq!(y2.as_slice(), y3.as_slice(), "{scheme:?}: rank 3");
        for r in 0..6 {
            let y1 = layer.forward(
                &Tensor::from_vec(&[inf], x[r * inf..(r + 1) * inf].to_vec())?,
                Parallelism::Serial,
            )?;
            assert_eq!(y1.shape(), &[out]);
            assert_eq!(
                y1.as_slice(),
                &y2.as_slice()[r * out..(r + 1) * out],
                "{scheme:?}: row {r}"
            );
        }
        let empty = layer.forward(&Tensor::<f32>::zeros(&[0, inf])?, Parallelism::Serial)?;
        assert_eq!(empty.shape(), &[0, out]);
        if scheme == WeightScheme::Int8Dynamic {
            continue;
        }
        let wd = layer.dequantized_weight()?;
        let u = 2f64.powi(-24);
        let n = (inf + 2) as f64;
        let gamma = n * u / (1.0 - n * u);
        for r in 0..6 {
            for (j, &bj) in bias.iter().enumerate() {
                let (mut exact, mut abs) = (f64::from(bj), 0.0f64);
                for kk in 0..inf {
                    let p = f64::from(x[r * inf + kk]) * f64::from(wd.as_slice()[j * inf + kk]);
                    exact += p;
                    abs += p.abs();
                }
                let err = (f64::from(y2.as_slice()[r * out + j]) - exact).abs();
                let bound = gamma * abs + f64::from(bj).abs() * u * 2.0;
                assert!(err <= bound, "{scheme:?} ({r}, {j}): {err:e} > {bound:e}");
            }
        }
        // bf16 activations: the same as their f32 values.
        let x16: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let xw: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
        let a = layer.forward(&Tensor::from_vec(&[6, inf], x16)?, Parallelism::Serial)?;
        let b = layer.forward(&Tensor::from_vec(&[6, inf], xw)?, Parallelism::Serial)?;
        assert_eq!(a.as_slice(), b.as_slice(), "{scheme:?}: bf16");
    }
    // Sizes: MXFP4 at 4.25 bits per weight (K padded to 128), int4 g128 at
    // 4 bits + 5 bytes per group.
    let mx = WeightOnlyLinear::new(&w, None, WeightScheme::Mxfp4)?;
    assert_eq!(mx.weight_bytes(), out * 128 * 17 / 32);
    let i4 = WeightOnlyLinear::new(&w, None, WeightScheme::Int4 { group: 128 })?;
    assert_eq!(i4.weight_bytes(), out * 128 / 2 + 5 * out);
    Ok(())
}

#[test]
fn weight_only_linear_errors() -> Result<(), Error> {
    use mixprec::quant::{WeightOnlyLinear, WeightScheme};
    use mixprec::Tensor;
    let w = Tensor::from_vec(&[4, 64], values(256, 5, false))?;
    let layer = WeightOnlyLinear::new(&w, None, WeightScheme::Mxfp4)?;
    let err = layer
        .forward(
            &Tensor::from_vec(&[2, 63], vec![0.0f32; 126])?,
            Parallelism::Serial,
        )
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = WeightOnlyLinear::new(&w, Some(&[0.0; 3]), WeightScheme::Nvfp4).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
    let mut bad = w.as_slice().to_vec();
    bad[70] = f32::INFINITY;
    let err = WeightOnlyLinear::new(&Tensor::from_vec(&[4, 64], bad)?, None, WeightScheme::Mxfp8)
        .unwrap_err();
    assert!(err.to_string().contains("row 1, column 6"), "{err}");
    let err = WeightOnlyLinear::new(&w, None, WeightScheme::Int4 { group: 48 }).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    let b = BlockScaled::<F4E2M1>::mx(w.as_mat()?, MxScaleMode::Floor)?;
    for bad_in in [0, 31, 65] {
        let err = WeightOnlyLinear::from_packed_fp4(PackedFp4::new(&b), bad_in, None).unwrap_err();
        assert!(
            matches!(err, Error::InvalidParameter { .. }),
            "{bad_in}: {err}"
        );
    }
    // A loaded layer computes what the quantizing one does.
    let loaded = WeightOnlyLinear::from_packed_fp4(PackedFp4::new(&b), 64, None)?;
    let x = Tensor::from_vec(&[3, 64], values(192, 6, true))?;
    let (y1, y2) = (
        layer.forward(&x, Parallelism::Serial)?,
        loaded.forward(&x, Parallelism::Serial)?,
    );
    let bits = |t: &Tensor<f32>| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y1), bits(&y2));
    Ok(())
}

/// Every E4M3 code an NVFP4 block scale can hold (0x01..=0x7E, and the NaN
/// codes 0x7F/0xFF), with and without a tensor scale (a subnormal one, and
/// one whose product with 2^8 overflows): the packed kernel,
/// which decodes the codes itself, gives the bits of the unpacked path
/// (which reads the f32 scales).
#[test]
fn every_nvfp4_scale_code_decodes_exactly() -> Result<(), Error> {
    // 16 lines × 16 blocks: 0x01..=0x7E from the first block on, then
    // again, and the NaN codes in the last line only, so that a finite code
    // decoded as NaN shows in a line of finite outputs.
    let (lines, k) = (16, 256);
    let codes: Vec<u8> = (0..lines * k / 16)
        .map(|i| match i {
            254 => 0x7F,
            255 => 0xFF,
            _ => 0x01 + (i % 126) as u8,
        })
        .collect();
    let data: Vec<F4E2M1> = (0..lines * k)
        .map(|i| F4E2M1::from_bits((i % 16) as u8))
        .collect();
    let x: Vec<f32> = (0..3 * k).map(|i| ((i % 11) as f32 - 5.0) * 0.37).collect();
    // One row: the kernel decodes the codes; three: one decoding pass.
    for (rows, tensor_scale) in [1, 3].into_iter().flat_map(|r| {
        // 2e36: the tensor scale times 2^8 overflows, which the
        // kernel's f16 route takes as its limit (with codes up to
        // 0x70, 128, for finite scales).
        [None, Some(0.37f32), Some(3.0e-39), Some(2.0e36)].map(|t| (r, t))
    }) {
        let a = MatRef::from_row_major(&x[..rows * k], rows, k)?;
        let big = tensor_scale.is_some_and(|t| t > 1e30);
        let scales = codes
            .iter()
            .map(|&c| {
                F8E4M3::from_bits(if big && (0x71..0x7F).contains(&c) {
                    c - 0x38
                } else {
                    c
                })
            })
            .collect();
        let b = BlockScaled::from_nvfp4_parts(lines, k, data.clone(), scales, tensor_scale)?;
        let packed = PackedFp4::new(&b);
        let (mut want, mut got) = (vec![0.0f32; rows * lines], vec![0.0f32; rows * lines]);
        let e = Epilogue::new();
        weight_only_gemm(
            a,
            &b,
            MatMut::from_row_major(&mut want, rows, lines)?,
            &e,
            Parallelism::Serial,
        )?;
        weight_only_gemm_packed(
            a,
            &packed,
            MatMut::from_row_major(&mut got, rows, lines)?,
            &e,
            Parallelism::Serial,
        )?;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got),
            bits(&want),
            "rows {rows}, tensor scale {tensor_scale:?}"
        );
        assert!(want.iter().any(|v| v.is_nan()) && want.iter().any(|v| v.is_finite()));
    }
    Ok(())
}

/// `block_gemm` on `a` and `b` gives `block_gemm_reference`'s bits.
fn block_gemm_equals_reference<TA: FloatElement, TB: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<TB>,
    par: Parallelism,
) -> Result<(), TestCaseError> {
    let (m, n) = (a.lines(), b.lines());
    let (mut want, mut got) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
    block_gemm_reference(
        a,
        b,
        MatMut::from_row_major(&mut want, m, n)?,
        &Epilogue::new(),
    )?;
    mixprec::gemm::block_gemm(
        a,
        b,
        MatMut::from_row_major(&mut got, m, n)?,
        &Epilogue::new(),
        par,
    )?;
    check_slice_bits_eq(&got, &want)?;
    Ok(())
}

/// Skinny products on a large block-scaled B (past the skinny thresholds
/// of the plan) give the reference's bits: weight-only and fully
/// block-scaled, every scheme's block size, 1–2 threads.
#[test]
fn skinny_block_scaled_products_equal_the_reference() -> Result<(), TestCaseError> {
    let (n, k) = (520, 512); // 266,240 weights: past the skinny threshold
    let w = values(n * k, 31, false);
    let wm = MatRef::from_row_major(&w, n, k)?;
    let b8 = BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Floor)?;
    let b_blocks = BlockScaled::<F8E4M3>::fp8(wm, Fp8Granularity::Blocks128x128, false)?;
    let b_nv = BlockScaled::nvfp4(wm, true)?;
    for m in [1usize, 3, 17] {
        let mut x = values(m * k, 32 + m as u64, false);
        if m > 1 {
            // One NaN and one ∞ in the last row; the others stay finite.
            (x[m * k - 3], x[m * k - 200]) = (f32::NAN, f32::INFINITY);
        }
        let xm = MatRef::from_row_major(&x, m, k)?;
        for threads in [1, 2] {
            let par = parallelism(threads);
            check::<f32, F8E4M3>(&x, (m, k), &b8, None, threads, 2, false)?;
            check::<bf16, F8E4M3>(&x, (m, k), &b_blocks, None, threads, 1, false)?;
            check::<f32, F4E2M1>(&x, (m, k), &b_nv, None, threads, 0, true)?;
            // Both operands block-scaled (MXFP8 activations, 1×128 FP8).
            let a8 = BlockScaled::<F8E4M3>::mx(xm, MxScaleMode::Ceil)?;
            let a_lines = BlockScaled::<F8E4M3>::fp8(xm, Fp8Granularity::Lines1x128, false)?;
            for (a, b) in [(&a8, &b8), (&a_lines, &b_blocks)] {
                block_gemm_equals_reference(a, b, par)?;
            }
        }
    }
    Ok(())
}

/// Weights stored `[out, in]` as one-byte codes, read in place at small
/// batch (`Strategy::DirectTransposedBlocks` on AVX-512): every code format
/// the kernel decodes (FP8 E4M3 and E5M2, FP6 E2M3 and E3M2, FP4 E2M1),
/// MX, NVFP4 and per-line / 128 × 128 FP8 scales, FP8 weights with NaN and
/// infinite codes (detected, and those lines computed by the contract's
/// loops), a K whose last blocks are not a whole 64-byte
/// line (544 with blocks of 32), an N that is not a multiple of 16 nor of
/// 32, 1–32 rows (1, 2 and 5 rows one panel of the per-panel kernels, the
/// AVX2 one with both halves' chains side by side up to 2 rows; 8, 9 and
/// 32 rows the staged kernels, two groups of lines per call, on AVX2 and,
/// where the CPU has VBMI and GFNI, AVX-512; on AVX-512 4-bit codes up to
/// 8 rows the kernel reading whole lines, two groups per call, and the
/// per-panel one for the last group of 16);
/// CI runs this file on both tiers and without VBMI), both operand kinds,
/// 1 and 2 threads: the reference's bits.
#[test]
fn codes_read_in_place_equal_the_reference() -> Result<(), TestCaseError> {
    use mixprec::dtype::DType;
    use mixprec::gemm::{block_gemm_plan, Strategy, Tier};
    use mixprec::F6E3M2;
    fn run<TB: FloatElement>(b: &BlockScaled<TB>, k: usize) -> Result<(), TestCaseError> {
        for m in [1usize, 2, 5, 8, 9, 32] {
            // NaN and infinite activations only past 8 rows, so that the
            // weights' own specials show in the first rows' outputs.
            let x = values(m * k, 40 + m as u64, m > 8);
            let xm = MatRef::from_row_major(&x, m, k)?;
            let unit = BlockScaled::<f32>::from_parts(
                m,
                k,
                b.block(),
                1,
                x.clone(),
                vec![1.0; m * (k / b.block())],
            )?;
            let plan = block_gemm_plan(&unit, b, Parallelism::Serial)?;
            // (Past 24 rows the AVX2 tier widens FP6 weights instead.)
            let fp6 = matches!(TB::DTYPE, DType::F6E2M3 | DType::F6E3M2);
            if plan.tier == Tier::Avx512 || (plan.tier == Tier::Avx2 && (m <= 24 || !fp6)) {
                prop_assert_eq!(plan.strategy, Strategy::DirectTransposedBlocks, "{}", plan);
            }
            let mx = BlockScaled::<F8E4M3>::mx(xm, MxScaleMode::Floor)?;
            for threads in [1, 2] {
                check::<f32, TB>(&x, (m, k), b, None, threads, 0, false)?;
                if b.block() == 32 {
                    block_gemm_equals_reference(&mx, b, parallelism(threads))?;
                }
            }
        }
        Ok(())
    }
    // FP8 weights with NaN (E4M3 0x7F / 0xFF; E5M2 0x7E) and infinite
    // (E5M2 0x7C / 0xFC) codes placed in a few lines: 37, 154 and 271 (the
    // first and the second group of 16 in a call of 32 lines).
    fn with_specials<TB: FloatElement>(b: BlockScaled<TB>, codes: &[u32]) -> BlockScaled<TB> {
        let mut data = b.data().to_vec();
        for (i, &c) in codes.iter().enumerate() {
            data[(37 + 117 * i) * b.k() + 5 + 29 * i] = TB::from_raw_bits(c);
        }
        let (lines, k, block, group) = (b.lines(), b.k(), b.block(), b.line_group());
        // (The quantizer marks a block holding a NaN by a NaN scale, which
        // `from_parts` refuses: those blocks get scale 1.)
        let scales = b
            .scales()
            .iter()
            .map(|&s| if s.is_finite() && s > 0.0 { s } else { 1.0 });
        BlockScaled::from_parts(lines, k, block, group, data, scales.collect()).unwrap()
    }
    let n = 530;
    for k in [512usize, 544] {
        let w = values(n * k, 39 + k as u64, false);
        let wm = MatRef::from_row_major(&w, n, k)?;
        let e4m3 = BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Floor)?;
        run(&with_specials(e4m3, &[0x7F, 0xFF]), k)?;
        let e5m2 = BlockScaled::<F8E5M2>::mx(wm, MxScaleMode::Ceil)?;
        run(&with_specials(e5m2, &[0x7C, 0xFC, 0x7E]), k)?;
        run(&BlockScaled::<F6E2M3>::mx(wm, MxScaleMode::Floor)?, k)?;
        run(&BlockScaled::<F6E3M2>::mx(wm, MxScaleMode::Floor)?, k)?;
        run(&BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Floor)?, k)?;
        run(&BlockScaled::<F4E2M1>::nvfp4(wm, true)?, k)?;
        if k.is_multiple_of(128) {
            run(
                &BlockScaled::<F8E4M3>::fp8(wm, Fp8Granularity::Blocks128x128, false)?,
                k,
            )?;
            run(
                &BlockScaled::<F8E5M2>::fp8(wm, Fp8Granularity::Lines1x128, true)?,
                k,
            )?;
        }
    }
    Ok(())
}

/// Every code of each format decoded by a table on AVX-512 (FP6 E2M3 and
/// E3M2: 32 magnitudes and the sign; FP4 E2M1: 16 values), and of the FP8
/// formats, placed so that each line of 16 and each of the four codes a
/// 32-bit lane holds meets all of them (code `(i + 7 · line) mod 2^w` at
/// step `i`), read in place at 1, 2, 8, 9, 16 and 32 rows: the reference's bits.
#[test]
fn every_code_read_in_place_equals_the_reference() -> Result<(), TestCaseError> {
    use mixprec::F6E3M2;
    fn run<TB: FloatElement>(width: u32) -> Result<(), TestCaseError> {
        let (n, k) = (48, 256);
        let codes = 1usize << width;
        let data: Vec<TB> = (0..n * k)
            .map(|i| TB::from_raw_bits(((i % k + 7 * (i / k)) % codes) as u32))
            .collect();
        // Scales of 2^-3..2^3 (exact products with any code).
        let scales: Vec<f32> = (0..n * k / 32).map(|i| [0.125, 1.0, 8.0][i % 3]).collect();
        let b = BlockScaled::from_parts(n, k, 32, 1, data, scales)?;
        for m in [1usize, 2, 8, 9, 16, 32] {
            let x = values(m * k, 500 + m as u64, false);
            check::<f32, TB>(&x, (m, k), &b, None, 1, 0, false)?;
        }
        Ok(())
    }
    run::<F6E2M3>(6)?;
    run::<F6E3M2>(6)?;
    run::<F4E2M1>(4)?;
    // FP8 codes past the finite ones are NaN or infinity: the lines that
    // hold them are computed by the contract's loops.
    run::<F8E4M3>(8)?;
    run::<F8E5M2>(8)
}

/// E4M3 weights read in place against activations at the edge of the
/// AVX-512 tier's `a · 2^8` form (A scaled by 2^8 so the decode skips its
/// multiply): f32::MAX / 2^8 (scaled exactly to f32::MAX: the scaled form
/// is used), just above it (2^120 · 1.5: not scaled, the plain decode),
/// subnormal and tiny activations, and a row of ordinary values; 1, 3 and 9
/// rows (the per-panel and staged kernels), 1 and 2 threads: the
/// reference's bits (infinities where products overflow, in both).
#[test]
fn e4m3_in_place_with_activations_near_overflow_equals_the_reference() -> Result<(), TestCaseError>
{
    let (n, k) = (64, 256);
    let w = values(n * k, 77, false);
    let b = BlockScaled::<F8E4M3>::mx(MatRef::from_row_major(&w, n, k)?, MxScaleMode::Floor)?;
    for (edge, m) in [
        (f32::MAX / 256.0, 1usize),
        (1.5 * 2f32.powi(120), 3),
        (f32::MAX / 256.0, 9),
    ] {
        let mut x = values(m * k, 78 + m as u64, false);
        // One large value per row (its products overflow at most to one
        // infinity per chain: no inf − inf), a subnormal and a tiny one.
        for r in 0..m {
            x[r * k + 5 + r] = if r % 2 == 0 { edge } else { -edge };
            x[r * k + 40] = f32::from_bits(0x0000_0301);
            x[r * k + 41] = -1.5e-38;
        }
        for threads in [1, 2] {
            check::<f32, F8E4M3>(&x, (m, k), &b, None, threads, 0, false)?;
        }
    }
    Ok(())
}

/// `weight_only_gemm_fp8` (and its portable form) on `PackedFp8::new(b)`
/// against the reference on `b`, activations of type `TA`.
fn check_fp8<TA: FloatElement>(
    x: &[f32],
    (m, k): (usize, usize),
    b: &BlockScaled<F8E4M3>,
    threads: usize,
    ep: u8,
) -> Result<(), TestCaseError> {
    use mixprec::block_scaled::PackedFp8;
    use mixprec::gemm::{weight_only_gemm_fp8, weight_only_gemm_fp8_portable};
    let n = b.lines();
    let packed = PackedFp8::new(b);
    // The round trip, bit for bit (a NaN code compares unequal to itself).
    prop_assert_eq!(format!("{:?}", packed.to_block_scaled()), format!("{b:?}"));
    let xa: Vec<TA> = x.iter().map(|&v| TA::from_f32(v)).collect();
    let unit = BlockScaled::from_parts(
        m,
        k,
        b.block(),
        1,
        xa.clone(),
        vec![1.0; m * (k / b.block())],
    )?;
    let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
    let e = epilogue(ep, &bias);
    let c0: Vec<f32> = (0..m * n).map(|i| i as f32 * 0.125).collect();
    let mut want = c0.clone();
    block_gemm_reference(&unit, b, MatMut::from_row_major(&mut want, m, n)?, &e)?;
    let a = MatRef::from_row_major(&xa, m, k)?;
    let par = parallelism(threads);
    for portable in [false, true] {
        let mut got = c0.clone();
        let c = MatMut::from_row_major(&mut got, m, n)?;
        if portable {
            weight_only_gemm_fp8_portable(a, &packed, c, &e, par)?;
        } else {
            weight_only_gemm_fp8(a, &packed, c, &e, par)?;
        }
        check_slice_bits_eq(&got, &want)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// E4M3 weights laid out by `PackedFp8`: MXFP8 (both scale modes),
    /// 128 × 128 blocks, 1 × 128 lines, and a matrix with NaN codes (which
    /// runs on the matrix): the reference's bits, f32 and bf16 activations,
    /// rows across the 32-row switch.
    #[test]
    fn fp8_packed_equals_the_reference(m in 0usize..40, n in 0usize..90, kb in 0usize..3, seed in any::<u64>(),
                                       scheme in 0u8..5, bf in any::<bool>(), threads in 1usize..4,
                                       ep in 0u8..3, specials in any::<bool>()) {
        let k = kb * 128;
        let (x, w) = (values(m * k, seed, specials), values(n * k, seed ^ 11, false));
        let wm = MatRef::from_row_major(&w, n, k)?;
        let b = match scheme {
            0 => BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Floor)?,
            1 => BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Ceil)?,
            2 => BlockScaled::<F8E4M3>::fp8(wm, Fp8Granularity::Blocks128x128, false)?,
            3 => BlockScaled::<F8E4M3>::fp8(wm, Fp8Granularity::Lines1x128, true)?,
            _ => {
                // NaN codes among the elements (from parts).
                let q = BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Floor)?;
                let mut data = q.data().to_vec();
                if let Some(v) = data.get_mut(seed as usize % (n * k).max(1)) {
                    *v = F8E4M3::from_bits(0xFF);
                }
                BlockScaled::from_parts(n, k, 32, 1, data, q.scales().iter().map(|s| if s.is_finite() { *s } else { 1.0 }).collect())?
            }
        };
        if bf {
            check_fp8::<bf16>(&x, (m, k), &b, threads, ep)?;
        } else {
            check_fp8::<f32>(&x, (m, k), &b, threads, ep)?;
        }
    }
}

/// Activations near f32's top (a · 2^8 would overflow) and the extreme
/// E4M3 codes keep their bits: the prescaled rows are used only where
/// the scaling is exact.
#[test]
fn fp8_packed_extremes() -> Result<(), TestCaseError> {
    let (n, k) = (16, 64);
    // Every finite E4M3 code, subnormals and ±448 included.
    let codes: Vec<F8E4M3> = (0..n * k)
        .map(|i| F8E4M3::from_bits((i * 37 % 256) as u8))
        .map(|v| {
            if v.to_f32().is_nan() {
                F8E4M3::from_bits(0x01)
            } else {
                v
            }
        })
        .collect();
    let b = BlockScaled::from_parts(n, k, 32, 1, codes, vec![0.75; n * 2])?;
    for big in [3.0e38f32, f32::MAX / 256.0, 1.0e-40, f32::INFINITY] {
        let x: Vec<f32> = (0..2 * k)
            .map(|i| {
                if i % 5 == 0 {
                    big
                } else {
                    (i % 7) as f32 - 3.0
                }
            })
            .collect();
        check_fp8::<f32>(&x, (2, k), &b, 1, 0)?;
    }
    Ok(())
}

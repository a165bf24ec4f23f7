//! The `testing` module (feature `proptest`) and the format constants:
//! strategies give what they promise without rejecting samples, bounds and
//! checkers catch what they should, constants match the formats.

use mixprec::gemm::{self, Epilogue, Parallelism};
use mixprec::testing::{
    any_bits, check_bits_eq, check_gemm_within_bound, check_slice_bits_eq, conversion_error_bound,
    finite, gamma, gemm_error_bound, gemm_shapes, mixed, near_rounding_boundary, normal, normal_in,
    specials, strided_matrix, subnormal, tensor, tensor_shapes, ulp_distance,
};
use mixprec::{bf16, f16, DType, FloatElement, MatMut, MatRef, F8E4M3, F8E5M2};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// A runner that fails on the first rejected sample.
fn strict_runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        max_global_rejects: 0,
        max_local_rejects: 0,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `strategy` under a runner that allows no rejection, checking `prop`.
fn holds<S: Strategy>(strategy: S, prop: impl Fn(S::Value) -> bool)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = strict_runner(3000);
    runner
        .run(&strategy, |v| {
            let shown = format!("{v:?}");
            prop_assert!(prop(v), "property fails for {shown}");
            Ok(())
        })
        .unwrap();
}

fn samples<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[test]
fn constants_are_the_formats_values() {
    fn check<T: FloatElement>(
        dtype: DType,
        (bits, man, exp, inf): (u32, u32, u32, bool),
        (max, min_pos, min_sub, eps): (f32, f32, f32, f32),
        u: f64,
    ) {
        assert_eq!(T::DTYPE, dtype);
        assert_eq!(
            (T::BITS, T::MANTISSA_BITS, T::EXPONENT_BITS),
            (bits, man, exp)
        );
        assert_eq!(1 + man + exp, bits, "{dtype}: sign + exponent + mantissa");
        assert_eq!(T::HAS_INFINITY, inf, "{dtype}");
        assert_eq!(T::MAX.to_f32(), max, "{dtype} MAX");
        assert_eq!(T::MIN_POSITIVE.to_f32(), min_pos, "{dtype} MIN_POSITIVE");
        assert_eq!(
            T::MIN_POSITIVE_SUBNORMAL.to_f32(),
            min_sub,
            "{dtype} subnormal"
        );
        assert_eq!(T::EPSILON.to_f32(), eps, "{dtype} EPSILON");
        assert_eq!(T::UNIT_ROUNDOFF, u, "{dtype} u");
        assert_eq!(f64::from(eps), 2.0 * u, "{dtype}: EPSILON = 2u");
        assert!(T::NAN.is_none_or(|n| n.to_f32().is_nan()));
    }
    let p = |e: i32| 2f32.powi(e);
    check::<f32>(
        DType::F32,
        (32, 23, 8, true),
        (f32::MAX, p(-126), f32::from_bits(1), p(-23)),
        2f64.powi(-24),
    );
    check::<f16>(
        DType::F16,
        (16, 10, 5, true),
        (65504.0, p(-14), p(-24), p(-10)),
        2f64.powi(-11),
    );
    check::<bf16>(
        DType::BF16,
        (16, 7, 8, true),
        (bf16::MAX.to_f32(), p(-126), p(-133), p(-7)),
        2f64.powi(-8),
    );
    assert_eq!(bf16::MAX.to_f32(), f32::from_bits(0x7F7F_0000));
    check::<F8E4M3>(
        DType::F8E4M3,
        (8, 3, 4, false),
        (448.0, p(-6), p(-9), p(-3)),
        2f64.powi(-4),
    );
    check::<F8E5M2>(
        DType::F8E5M2,
        (8, 2, 5, true),
        (57344.0, p(-14), p(-16), p(-2)),
        2f64.powi(-3),
    );
}

/// Exhaustive over every bit pattern of the narrow formats: MAX is the
/// largest finite value, MIN_POSITIVE(_SUBNORMAL) the smallest positive
/// normal (nonzero) value, the raw bits round-trip, and `ulp_distance`
/// orders values as their f32 values do, adjacent values 1 apart.
fn exhaustive<T: FloatElement>() {
    let all: Vec<T> = (0..1u32 << T::BITS).map(T::from_raw_bits).collect();
    for (bits, x) in all.iter().enumerate() {
        assert_eq!(x.to_raw_bits(), bits as u32);
    }
    let finite: Vec<f32> = all
        .iter()
        .map(|x| x.to_f32())
        .filter(|v| v.is_finite())
        .collect();
    let max = finite.iter().copied().fold(f32::MIN, f32::max);
    assert_eq!(max, T::MAX.to_f32());
    let positive = finite.iter().copied().filter(|&v| v > 0.0);
    assert_eq!(
        positive.clone().fold(f32::MAX, f32::min),
        T::MIN_POSITIVE_SUBNORMAL.to_f32()
    );
    let min_normal = 2f32.powi(1 - ((1 << (T::EXPONENT_BITS - 1)) - 1));
    assert_eq!(T::MIN_POSITIVE.to_f32(), min_normal);
    assert_eq!(
        (1.0 + T::EPSILON.to_f32()),
        T::from_raw_bits(T::from_f32(1.0).to_raw_bits() + 1).to_f32()
    );
    // ulp_distance: sort by value; neighbours (distinct values) are 1 apart.
    let mut sorted: Vec<T> = all
        .iter()
        .copied()
        .filter(|x| !x.to_f32().is_nan())
        .collect();
    sorted.sort_by(|a, b| a.to_f32().partial_cmp(&b.to_f32()).unwrap());
    sorted.dedup_by(|a, b| a.to_f32() == b.to_f32()); // +0 and -0
    for w in sorted.windows(2) {
        assert_eq!(ulp_distance(w[0], w[1]), Some(1), "{:?}", (w[0], w[1]));
    }
    assert_eq!(
        ulp_distance(sorted[0], sorted[sorted.len() - 1]),
        Some(sorted.len() as u64 - 1)
    );
    assert_eq!(ulp_distance(T::from_f32(0.0), T::from_f32(-0.0)), Some(0));
    if let Some(nan) = T::NAN {
        assert_eq!(ulp_distance(nan, T::MAX), None);
    }
}

#[test]
fn exhaustive_constants_and_ulp_distance() {
    exhaustive::<f16>();
    exhaustive::<bf16>();
    exhaustive::<F8E4M3>();
    exhaustive::<F8E5M2>();
}

fn value_strategies<T: FloatElement>() {
    let (min_pos, max) = (T::MIN_POSITIVE.to_f32(), T::MAX.to_f32());
    holds(any_bits::<T>(), |_| true);
    holds(finite::<T>(), |x| x.to_f32().is_finite());
    holds(normal::<T>(), move |x| {
        let a = x.to_f32().abs();
        (min_pos..=max).contains(&a)
    });
    holds(subnormal::<T>(), move |x| {
        let a = x.to_f32().abs();
        a > 0.0 && a < min_pos
    });
    for (lo, hi) in [(-1.0f32, 8.0), (0.1, 0.3), (-1e30, -0.5), (-1e38, 1e38)] {
        let Ok(s) = normal_in::<T>(lo, hi) else {
            // Only when no normal value of T lies in the range (MXINT8's
            // normals are [1, 2)): checked over every pattern.
            assert!(T::BITS <= 16);
            let any = (0..1u32 << T::BITS).any(|b| {
                let v = T::from_raw_bits(b).to_f32();
                (lo..=hi).contains(&v) && v.abs() >= min_pos && v.abs() <= max
            });
            assert!(!any, "normal_in({lo}, {hi}) refused a non-empty range");
            continue;
        };
        holds(s, move |x| {
            let v = x.to_f32();
            (lo..=hi).contains(&v) && v.abs() >= min_pos
        });
    }
    let with_specials = specials::<T>();
    holds(with_specials, move |x| {
        let v = x.to_f32();
        v.is_nan()
            || v.is_infinite()
            || [0.0, max, min_pos, T::MIN_POSITIVE_SUBNORMAL.to_f32()].contains(&v.abs())
    });
    holds(mixed::<T>(), |_| true);
}

#[test]
fn value_strategies_give_what_they_promise_without_rejection() {
    value_strategies::<f32>();
    value_strategies::<f16>();
    value_strategies::<bf16>();
    value_strategies::<F8E4M3>();
    value_strategies::<F8E5M2>();
    value_strategies::<mixprec::MxInt8>();
}

#[test]
fn value_strategies_cover_their_sets() {
    // Every subnormal and every special of E4M3 shows up in a few thousand draws.
    let subs = samples(subnormal::<F8E4M3>(), 2000);
    let mut seen: Vec<u32> = subs.iter().map(|x| x.to_raw_bits()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 14, "7 subnormal magnitudes × 2 signs");
    let sp = samples(specials::<F8E5M2>(), 2000);
    assert!(sp.iter().any(|x| x.to_f32() == f32::NEG_INFINITY));
    assert!(sp.iter().any(|x| x.to_raw_bits() == 0x7D)); // signalling NaN
    let sp = samples(specials::<F8E4M3>(), 2000);
    assert!(sp.iter().any(|x| x.to_raw_bits() == 0xFF));
    // Finite E5M2 values reach MAX and both signs.
    let f = samples(finite::<F8E5M2>(), 5000);
    assert!(f.iter().any(|x| x.to_f32() == 57344.0));
    assert!(f.iter().any(|x| x.to_f32() == -57344.0));
}

#[test]
fn normal_in_rejects_empty_and_bad_ranges() {
    assert!(normal_in::<F8E4M3>(500.0, 600.0).is_err()); // past MAX
    assert!(normal_in::<F8E4M3>(0.001, 0.01).is_err()); // subnormal only
    assert!(normal_in::<f16>(0.0, 0.0).is_err());
    assert!(normal_in::<f32>(1.0, -1.0).is_err());
    assert!(normal_in::<f32>(f32::NAN, 1.0).is_err());
    // A range holding exactly one value of the format.
    let one = samples(normal_in::<F8E4M3>(0.99, 1.01).unwrap(), 20);
    assert!(one.iter().all(|x| x.to_f32() == 1.0));
}

/// Every value lies within `ulps` f32 steps of a point where rounding to T
/// changes: one step further on each side rounds differently.
fn boundary_strategy<T: FloatElement>(ulps: u32) {
    holds(near_rounding_boundary::<T>(ulps), move |x| {
        let step = |d: i64| {
            let b = i64::from(x.abs().to_bits()) + d;
            f32::from_bits(b.clamp(0, i64::from(f32::MAX.to_bits())) as u32)
        };
        let (below, above) = (step(-(i64::from(ulps) + 1)), step(i64::from(ulps) + 1));
        if T::BITS == 32 {
            // f32: a power of two (or MAX) lies between them.
            let p = floor_pow2(above);
            (below..=above).contains(&p) || (below..=above).contains(&f32::MAX)
        } else {
            T::from_f32(below).to_raw_bits() != T::from_f32(above).to_raw_bits()
        }
    });
}

/// The largest power of two (or subnormal power of two) at most `x > 0`.
fn floor_pow2(x: f32) -> f32 {
    let b = x.to_bits();
    if b >= 0x0080_0000 {
        f32::from_bits(b & 0x7F80_0000)
    } else {
        f32::from_bits(1 << (31 - b.leading_zeros()))
    }
}

#[test]
fn near_rounding_boundary_straddles_a_boundary() {
    for ulps in [0, 1, 3] {
        boundary_strategy::<f16>(ulps);
        boundary_strategy::<bf16>(ulps);
        boundary_strategy::<F8E4M3>(ulps);
        boundary_strategy::<F8E5M2>(ulps);
        boundary_strategy::<f32>(ulps);
        boundary_strategy::<mixprec::MxInt8>(ulps);
    }
    // The overflow boundary is among them: E4M3 464 (448 + 16).
    let xs = samples(near_rounding_boundary::<F8E4M3>(0), 20000);
    assert!(xs.iter().any(|&x| x.abs() == 464.0));
    assert!(xs.iter().any(|&x| x.abs() == 2f32.powi(-10))); // underflow
}

#[test]
fn matrix_and_tensor_strategies() {
    holds(gemm_shapes(10, 3), |(m, k, n)| {
        m <= 10 && n <= 10 && k <= 3 * 128 + 2
    });
    let ks: Vec<usize> = samples(gemm_shapes(4, 2), 400)
        .iter()
        .map(|s| s.1)
        .collect();
    for edge in [126, 127, 128, 129, 130, 254, 256, 258] {
        assert!(ks.contains(&edge), "K = {edge} never drawn");
    }
    let s = strided_matrix(3, 5, finite::<bf16>()).unwrap();
    let ms = samples(s, 200);
    assert!(ms.iter().all(|m| {
        let v = m.view();
        (v.rows(), v.cols()) == (3, 5)
    }));
    assert!(ms.iter().any(|m| m.is_transposed()) && ms.iter().any(|m| !m.is_transposed()));
    assert!(
        ms.iter().any(|m| m.storage().len() > 15),
        "padding or offset"
    );
    holds(strided_matrix(0, 4, finite::<f32>()).unwrap(), |m| {
        m.view().rows() == 0
    });
    assert!(strided_matrix(usize::MAX, 2, finite::<f32>()).is_err());
    holds(tensor_shapes(4, 64), |s| {
        s.len() <= 4 && s.iter().product::<usize>() <= 64
    });
    holds(tensor(3, 50, finite::<F8E5M2>()), |t| {
        t.len() == t.shape().iter().product::<usize>() && t.len() <= 50
    });
}

#[test]
fn gamma_and_conversion_bound() {
    let u = 2f64.powi(-24);
    assert_eq!(gamma(1, u), u / (1.0 - u));
    assert_eq!(gamma(1 << 24, u), f64::INFINITY);
    assert_eq!(gamma(usize::MAX, 0.5), f64::INFINITY);
    // Every f32 → bf16 conversion of a normal-range value meets u·|x|;
    // sampled across binades.
    holds(finite::<f32>(), |x| {
        let y = bf16::from_f32(x);
        !y.is_finite() || (y.to_f64() - f64::from(x)).abs() <= conversion_error_bound::<bf16>(x)
    });
    holds(finite::<f32>(), |x| {
        let y = F8E4M3::from_f32(x);
        y.is_nan() || (y.to_f64() - f64::from(x)).abs() <= conversion_error_bound::<F8E4M3>(x)
    });
}

fn product(a: MatRef<'_, F8E4M3>, b: MatRef<'_, F8E5M2>) -> Vec<f32> {
    let mut c = vec![0.0f32; a.rows() * b.cols()];
    gemm::gemm_mixed(
        a,
        b,
        MatMut::from_row_major(&mut c, a.rows(), b.cols()).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
    c
}

#[test]
fn gemm_checker_accepts_the_engine_and_catches_an_error_past_the_bound() {
    let (m, k, n) = (3, 700, 4);
    let a: Vec<F8E4M3> = (0..m * k)
        .map(|i| F8E4M3::from_f32(((i * 7 % 23) as f32 - 11.0) / 4.0))
        .collect();
    let b: Vec<F8E5M2> = (0..k * n)
        .map(|i| F8E5M2::from_f32(((i * 5 % 19) as f32 - 9.0) / 8.0))
        .collect();
    let (av, bv) = (
        MatRef::from_row_major(&a, m, k).unwrap(),
        MatRef::from_row_major(&b, k, n).unwrap(),
    );
    let c = product(av, bv);
    check_gemm_within_bound(av, bv, MatRef::from_row_major(&c, m, n).unwrap()).unwrap();
    let bound = gemm_error_bound(av, bv).unwrap();
    assert_eq!(bound.len(), m * n);
    assert!(bound.iter().all(|&e| e > 0.0 && e < 1e-1));
    // Move one element 3 bounds away from the exact value: caught, and
    // reported at its index.
    let mut off = c.clone();
    off[6] += (3.0 * bound[6]).max(f64::from(off[6].abs()) * 2f64.powi(-22)) as f32;
    let report =
        check_gemm_within_bound(av, bv, MatRef::from_row_major(&off, m, n).unwrap()).unwrap_err();
    assert_eq!(report.index(), &[1, 2]);
    assert_eq!((report.failures(), report.checked()), (1, m * n));
    let text = report.to_string();
    assert!(text.contains("[1, 2]") && text.contains("bound"), "{text}");
    // A NaN where the exact value is finite is caught too.
    off[6] = f32::NAN;
    assert!(check_gemm_within_bound(av, bv, MatRef::from_row_major(&off, m, n).unwrap()).is_err());
    // Shapes that do not agree are a report, not a panic.
    let r = check_gemm_within_bound(av, bv, MatRef::from_row_major(&c[..4], 1, 4).unwrap());
    assert!(r.unwrap_err().to_string().contains("shapes"));
}

#[test]
fn gemm_checker_with_a_narrow_output_and_infinities() {
    // bf16 output: the final rounding is part of the bound.
    let a = [1.0f32, 1.0 / 3.0];
    let b = [1.0f32, 1.0];
    let (av, bv) = (
        MatRef::from_row_major(&a, 1, 2).unwrap(),
        MatRef::from_row_major(&b, 2, 1).unwrap(),
    );
    let mut c = [bf16::ZERO];
    gemm::gemm(
        av,
        bv,
        MatMut::from_row_major(&mut c, 1, 1).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
    check_gemm_within_bound(av, bv, MatRef::from_row_major(&c, 1, 1).unwrap()).unwrap();
    // Overflow to infinity of the right sign is accepted, the wrong sign is not.
    let a = [3.0e38f32, 3.0e38];
    let av = MatRef::from_row_major(&a, 1, 2).unwrap();
    let inf = [f32::INFINITY];
    check_gemm_within_bound(av, bv, MatRef::from_row_major(&inf, 1, 1).unwrap()).unwrap();
    let ninf = [f32::NEG_INFINITY];
    assert!(check_gemm_within_bound(av, bv, MatRef::from_row_major(&ninf, 1, 1).unwrap()).is_err());
}

#[test]
fn bits_checkers_see_signs_of_zero_and_nan_payloads() {
    let x = [f16::from_f32(0.0), f16::NAN, f16::ONE];
    let y = [f16::from_f32(-0.0), f16::from_bits(0x7E01), f16::ONE];
    let r = check_slice_bits_eq(&x, &y).unwrap_err();
    assert_eq!((r.index(), r.failures(), r.checked()), (&[0][..], 2, 3));
    assert!(r.to_string().contains("0x8000"), "{r}");
    check_slice_bits_eq(&x, &x).unwrap();
    assert!(check_slice_bits_eq(&x, &x[..2]).is_err());
    let m = MatRef::from_row_major(&x, 1, 3).unwrap();
    check_bits_eq(m, m).unwrap();
    assert!(check_bits_eq(m, m.t()).is_err());
}

#[test]
fn arbitrary_fp8_and_dtype() {
    use arbitrary::{Arbitrary, Unstructured};
    for b in 0..=255u8 {
        let bytes = [b];
        let mut u = Unstructured::new(&bytes);
        assert_eq!(F8E4M3::arbitrary(&mut u).unwrap().to_bits(), b);
        let mut u = Unstructured::new(&bytes);
        assert_eq!(F8E5M2::arbitrary(&mut u).unwrap().to_bits(), b);
    }
    let mut seen: Vec<DType> = (0..=255u8)
        .map(|b| DType::arbitrary(&mut Unstructured::new(&[b])).unwrap())
        .collect();
    seen.sort_by_key(|d| d.name());
    seen.dedup();
    assert_eq!(seen.len(), DType::ALL.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_global_rejects: 0, ..ProptestConfig::default() })]

    /// The README's example, as a test: E4M3 × E5M2 against the bound.
    #[test]
    fn fp8_product_within_bound((a, b) in gemm_shapes(12, 3).prop_flat_map(|(m, k, n)| (
        strided_matrix(m, k, normal_in::<F8E4M3>(-4.0, 4.0).unwrap()).unwrap(),
        strided_matrix(k, n, normal_in::<F8E5M2>(-4.0, 4.0).unwrap()).unwrap(),
    ))) {
        let c = product(a.view(), b.view());
        check_gemm_within_bound(a.view(), b.view(), MatRef::from_row_major(&c, a.rows(), b.cols())?)?;
    }
}

/// The case the independent check found: bf16::MAX products at k = 0, 128
/// and 129 make K-tile 0 end at +∞ and tile 1 at −∞; the contract's result
/// is NaN although the exact value (−1.15e77) is finite. The checker
/// accepts the NaN (both signs of overflow are reachable), and still
/// refuses +∞ where only negative products could overflow.
#[test]
fn gemm_checker_accepts_nan_from_opposite_overflows() {
    let k = 130;
    let max = bf16::MAX;
    let mut a = vec![bf16::ZERO; k];
    let mut b = vec![bf16::ZERO; k];
    for (i, sign) in [(0, 1.0f32), (128, -1.0), (129, -1.0)] {
        a[i] = max;
        b[i] = bf16::from_f32(sign * max.to_f32());
    }
    let (av, bv) = (
        MatRef::from_row_major(&a, 1, k).unwrap(),
        MatRef::from_row_major(&b, k, 1).unwrap(),
    );
    let mut c = [0.0f32];
    gemm::gemm(
        av,
        bv,
        MatMut::from_row_major(&mut c, 1, 1).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
    assert!(c[0].is_nan(), "the contract's +inf + -inf, got {}", c[0]);
    check_gemm_within_bound(av, bv, MatRef::from_row_major(&c, 1, 1).unwrap()).unwrap();
    // Only negative products: −∞ is reachable, +∞ and NaN are not.
    let mut a_neg = a.clone();
    a_neg[0] = bf16::ZERO;
    let (av, bv) = (
        MatRef::from_row_major(&a_neg, 1, k).unwrap(),
        MatRef::from_row_major(&b, k, 1).unwrap(),
    );
    for (got, ok) in [
        (f32::NEG_INFINITY, true),
        (f32::INFINITY, false),
        (f32::NAN, false),
    ] {
        let c = [got];
        let r = check_gemm_within_bound(av, bv, MatRef::from_row_major(&c, 1, 1).unwrap());
        assert_eq!(r.is_ok(), ok, "{got}");
    }
}

/// `dot_reference` and `dot_error_bound`: the exact sum and Σ|ab| of a
/// small case by hand, the length check, and a plain f32 and bf16-chain
/// loop held within the sequential bound γ(K−1)·Σ|ab| (u = 2^-24 for f32,
/// 2^-8 for bf16), and a perturbation past it caught.
#[test]
fn dot_reference_and_bound() {
    use mixprec::testing::{dot_error_bound, dot_reference};
    let r = dot_reference(&[1.0f32, -2.0, 0.5], &[3.0f32, 1.0, -4.0]).unwrap();
    assert_eq!((r.sum, r.abs_sum), (3.0 - 2.0 - 2.0, 3.0 + 2.0 + 2.0));
    assert!(r.error <= 2.0 * 7.0 * f64::EPSILON);
    assert!(dot_reference(&[1.0f32], &[1.0f32, 2.0]).is_err());
    assert_eq!(
        dot_error_bound::<f32>(1, 5.0),
        f64::from(f32::from_bits(1)) / 2.0
    );
    let k = 4096;
    let a: Vec<f32> = (0..k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let b: Vec<f32> = (0..k)
        .map(|i| ((i * 53 % 89) as f32 - 44.0) / 3.0)
        .collect();
    let r = dot_reference(&a, &b).unwrap();
    let f32_loop = a.iter().zip(&b).fold(0.0f32, |s, (x, y)| x.mul_add(*y, s));
    let bound = dot_error_bound::<f32>(k, r.abs_sum) + r.error;
    assert!((f64::from(f32_loop) - r.sum).abs() <= bound);
    // γ(K−1) with u = 2^-24 grows as (K−1)·u / (1 − (K−1)·u).
    let u = 2f64.powi(-24);
    let gamma = (k - 1) as f64 * u / (1.0 - (k - 1) as f64 * u);
    assert!(bound >= gamma * r.abs_sum);
    let bf16_loop = a.iter().zip(&b).fold(bf16::ZERO, |s, (x, y)| {
        bf16::from_f32(x.mul_add(*y, s.to_f32()))
    });
    let bound16 = dot_error_bound::<bf16>(k, r.abs_sum) + r.error;
    assert!((f64::from(bf16_loop.to_f32()) - r.sum).abs() <= bound16);
    assert!(bound16 > bound);
    assert!((f64::from(f32_loop) + 2.0 * bound - r.sum).abs() > bound);
}

//! int8 quantization and the integer GEMM.

use mixprec::gemm::Parallelism;
use mixprec::quant::observer::{
    HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver,
};
use mixprec::quant::requant::{
    self, multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul, RequantRounding,
};
use mixprec::quant::{
    self, max_k, qgemm, qgemm_packed, qgemm_packed_portable, qgemm_portable, qgemm_reference,
    DynamicQuantLinear, PackedI8, QEpilogue, QInt, QMatRef, QuantParams, QuantRounding, Scheme,
};
use mixprec::{Error, MatMut, MatRef, Tensor};
use proptest::prelude::*;

/// A matrix stored (maybe transposed, maybe padded) for strided views.
fn store<T: Copy>(
    rows: usize,
    cols: usize,
    t: bool,
    pad: usize,
    mut f: impl FnMut() -> T,
) -> (Vec<T>, usize, usize, usize) {
    let (outer, inner) = if t { (cols, rows) } else { (rows, cols) };
    (
        (0..outer * (inner + pad)).map(|_| f()).collect(),
        outer,
        inner,
        inner + pad,
    )
}

fn view<T: Copy>(s: &(Vec<T>, usize, usize, usize), t: bool) -> MatRef<'_, T> {
    let v = MatRef::new(&s.0, s.1, s.2, s.3, 1).unwrap();
    if t {
        v.t()
    } else {
        v
    }
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    pad: usize,
    threads: usize,
    seed: u64,
    per_row: bool,
    per_col: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..70,
        0usize..70,
        prop_oneof![0usize..20, 0usize..300],
        any::<(bool, bool)>(),
        0usize..3,
        1usize..4,
        any::<u64>(),
        any::<(bool, bool)>(),
    )
        .prop_map(
            |(m, n, k, (ta, tb), pad, threads, seed, (per_row, per_col))| Case {
                m,
                n,
                k,
                ta,
                tb,
                pad,
                threads,
                seed,
                per_row,
                per_col,
            },
        )
}

fn check_exact<A: QInt + std::fmt::Debug>(cs: &Case, to_a: fn(u64) -> A) {
    let mut rng = mixprec::convert::StochasticRng::new(cs.seed);
    let sa = store(cs.m, cs.k, cs.ta, cs.pad, || to_a(rng.next_u64()));
    let sb = store(cs.k, cs.n, cs.tb, cs.pad, || rng.next_u64() as i8);
    let span_a = A::QMAX - A::QMIN + 1;
    let za: Vec<i32> = (0..if cs.per_row { cs.m.max(1) } else { 1 })
        .map(|_| A::QMIN + (rng.next_u64() % span_a as u64) as i32)
        .collect();
    let zb: Vec<i32> = (0..if cs.per_col { cs.n.max(1) } else { 1 })
        .map(|_| (rng.next_u64() % 256) as i32 - 128)
        .collect();
    let za = if cs.m == 0 { vec![0] } else { za };
    let zb = if cs.n == 0 { vec![0] } else { zb };
    let (a, b) = (view(&sa, cs.ta), view(&sb, cs.tb));
    // The i64 oracle, written here.
    let mut want = vec![0i64; cs.m * cs.n];
    for i in 0..cs.m {
        for j in 0..cs.n {
            let z_a = za[if za.len() == 1 { 0 } else { i }] as i64;
            let z_b = zb[if zb.len() == 1 { 0 } else { j }] as i64;
            want[i * cs.n + j] = (0..cs.k)
                .map(|k| {
                    (a.get(i, k).unwrap().to_i32() as i64 - z_a)
                        * (b.get(k, j).unwrap() as i64 - z_b)
                })
                .sum();
        }
    }
    let par = if cs.threads == 1 {
        Parallelism::Serial
    } else {
        Parallelism::Threads(cs.threads)
    };
    // B pre-packed (its layout and column sums), reusable across calls.
    let packed = PackedI8::new(b, &zb).unwrap();
    let b_row_major: Vec<i8> = (0..cs.k * cs.n)
        .map(|x| b.get(x / cs.n.max(1), x % cs.n.max(1)).unwrap_or(0))
        .collect();
    assert_eq!(packed.to_row_major(), b_row_major);
    let sums: Vec<i32> = (0..cs.n)
        .map(|j| (0..cs.k).map(|k| b.get(k, j).unwrap() as i32).sum())
        .collect();
    assert_eq!(packed.column_sums(), &sums[..]);
    for which in 0..5 {
        let mut c = vec![7i32; cs.m * cs.n];
        let cv = MatMut::from_row_major(&mut c, cs.m, cs.n).unwrap();
        match which {
            0 => qgemm(
                QMatRef::new(a, &za).unwrap(),
                QMatRef::new(b, &zb).unwrap(),
                cv,
                &QEpilogue::I32,
                par,
            )
            .unwrap(),
            1 => qgemm_portable(
                QMatRef::new(a, &za).unwrap(),
                QMatRef::new(b, &zb).unwrap(),
                cv,
                &QEpilogue::I32,
                par,
            )
            .unwrap(),
            2 => qgemm_packed(
                QMatRef::new(a, &za).unwrap(),
                &packed,
                cv,
                &QEpilogue::I32,
                par,
            )
            .unwrap(),
            3 => qgemm_packed_portable(
                QMatRef::new(a, &za).unwrap(),
                &packed,
                cv,
                &QEpilogue::I32,
                par,
            )
            .unwrap(),
            _ => qgemm_reference(
                QMatRef::new(a, &za).unwrap(),
                QMatRef::new(b, &zb).unwrap(),
                cv,
                &QEpilogue::I32,
            )
            .unwrap(),
        }
        let got: Vec<i64> = c.iter().map(|&v| v as i64).collect();
        assert_eq!(got, want, "path {which}: {cs:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn i8_gemm_equals_i64_reference(cs in case()) {
        check_exact::<i8>(&cs, |r| r as i8);
    }

    #[test]
    fn u8_gemm_equals_i64_reference(cs in case()) {
        check_exact::<u8>(&cs, |r| r as u8);
    }

    /// u8 activations restricted to 7 bits take the `vpmaddubsw` kernel
    /// (raw products plus zero-point corrections): still exact.
    #[test]
    fn u7_gemm_equals_i64_reference(cs in case()) {
        check_exact::<u8>(&cs, |r| (r % 128) as u8);
    }

    #[test]
    fn requantized_output_equals_reference(cs in case(), mult in 1i32.., shift in -31i32..=30, zp in -128i32..=127, single in any::<bool>()) {
        let rounding = if single { RequantRounding::Single } else { RequantRounding::Double };
        let mut rng = mixprec::convert::StochasticRng::new(cs.seed);
        let sa = store(cs.m, cs.k, cs.ta, cs.pad, || rng.next_u64() as u8);
        let sb = store(cs.k, cs.n, cs.tb, cs.pad, || rng.next_u64() as i8);
        let bias: Vec<i32> = (0..cs.n).map(|_| rng.next_u64() as i32 >> 8).collect();
        let mults = [mult];
        let shifts = [shift];
        let epi = QEpilogue::Requantize { rounding, bias: Some(&bias), multipliers: &mults, shifts: &shifts, zero_point: zp };
        let mut fast = vec![0i8; cs.m * cs.n];
        let mut slow = vec![0i8; cs.m * cs.n];
        let par = Parallelism::Threads(cs.threads);
        qgemm(QMatRef::new(view(&sa, cs.ta), &[3]).unwrap(), QMatRef::new(view(&sb, cs.tb), &[-1]).unwrap(), MatMut::from_row_major(&mut fast, cs.m, cs.n).unwrap(), &epi, par).unwrap();
        qgemm_reference(QMatRef::new(view(&sa, cs.ta), &[3]).unwrap(), QMatRef::new(view(&sb, cs.tb), &[-1]).unwrap(), MatMut::from_row_major(&mut slow, cs.m, cs.n).unwrap(), &epi).unwrap();
        prop_assert_eq!(&fast, &slow);
        let packed = PackedI8::new(view(&sb, cs.tb), &[-1]).unwrap();
        qgemm_packed(QMatRef::new(view(&sa, cs.ta), &[3]).unwrap(), &packed, MatMut::from_row_major(&mut fast, cs.m, cs.n).unwrap(), &epi, par).unwrap();
        prop_assert_eq!(&fast, &slow);
        // f32 out (dequantize), per-row scales, through the packed path too.
        let a_scales: Vec<f32> = (0..cs.m.max(1)).map(|i| 0.01 + i as f32 * 0.003).collect();
        let a_scales = if cs.m == 0 { vec![1.0] } else { a_scales };
        let epi = QEpilogue::Dequantize { a_scales: &a_scales, b_scales: &[0.02], bias: None };
        let (mut f1, mut f2) = (vec![0.0f32; cs.m * cs.n], vec![0.0f32; cs.m * cs.n]);
        qgemm_packed(QMatRef::new(view(&sa, cs.ta), &[3]).unwrap(), &packed, MatMut::from_row_major(&mut f1, cs.m, cs.n).unwrap(), &epi, par).unwrap();
        qgemm_reference(QMatRef::new(view(&sa, cs.ta), &[3]).unwrap(), QMatRef::new(view(&sb, cs.tb), &[-1]).unwrap(), MatMut::from_row_major(&mut f2, cs.m, cs.n).unwrap(), &epi).unwrap();
        prop_assert_eq!(f1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), f2.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    /// Requantization against an independent model in i128 arithmetic:
    /// round(x·m / 2^31) half away from zero (saturating the MIN·MIN case),
    /// then x / 2^e rounded half away from zero.
    #[test]
    fn requantization_matches_model(x in any::<i32>(), m in any::<i32>(), e in 0u32..32) {
        let model_high = |a: i32, b: i32| -> i32 {
            if a == i32::MIN && b == i32::MIN { return i32::MAX; }
            let p = a as i128 * b as i128;
            let q = (p.abs() + (1i128 << 30)) >> 31; // |p|/2^31 rounded half up
            (if p < 0 { -q } else { q }) as i32
        };
        prop_assert_eq!(saturating_rounding_doubling_high_mul(x, m), model_high(x, m));
        let d = 1i128 << e;
        let model_div = {
            let v = x as i128;
            let q = (v.abs() * 2 + d) / (2 * d); // half away from zero
            (if v < 0 { -q } else { q }) as i32
        };
        prop_assert_eq!(rounding_divide_by_pot(x, e).unwrap(), model_div);
    }

    /// TFLite's single-rounding form against an i128 model:
    /// floor((x·m + 2^(30−shift)) / 2^(31−shift)), saturated to i32.
    #[test]
    fn single_rounding_matches_model(x in any::<i32>(), m in 0i32.., shift in -31i32..=30) {
        let t = 31 - shift;
        let v = (x as i128 * m as i128 + (1i128 << (t - 1))).div_euclid(1i128 << t);
        let model = v.clamp(i32::MIN as i128, i32::MAX as i128) as i32;
        prop_assert_eq!(multiply_by_quantized_multiplier(x, m, shift, RequantRounding::Single).unwrap(), model);
    }

    /// Both quantization rules: SIMD equals the scalar reference, and the
    /// reciprocal rule equals its definition `rne(x · (1/scale)) + zp`.
    #[test]
    fn quantize_rules_fast_equal_reference(xs in prop::collection::vec(prop_oneof![any::<u32>().prop_map(f32::from_bits), -300.0f32..300.0], 0..70), scale in 0.001f32..10.0, zp in -128i32..=127) {
        for rule in [QuantRounding::Divide, QuantRounding::MultiplyByReciprocal] {
            let (mut a, mut b) = (vec![0i8; xs.len()], vec![0i8; xs.len()]);
            quant::quantize_with(&xs, &mut a, scale, zp, rule).unwrap();
            quant::reference::quantize_with(&xs, &mut b, scale, zp, rule).unwrap();
            prop_assert_eq!(&a, &b);
            let inv = 1.0f32 / scale;
            for (&x, &q) in xs.iter().zip(&a) {
                let t = match rule { QuantRounding::Divide => x / scale, QuantRounding::MultiplyByReciprocal => x * inv };
                let want = if x.is_nan() { zp } else { ((t.round_ties_even() + zp as f32).clamp(-128.0, 127.0)) as i32 };
                prop_assert_eq!(q as i32, want, "x={} rule={:?}", x, rule);
            }
        }
    }

    #[test]
    fn quantize_fast_equals_reference(xs in prop::collection::vec(prop_oneof![any::<u32>().prop_map(f32::from_bits), -300.0f32..300.0], 0..70), off in 0usize..8, scale in 0.001f32..10.0, zp in -128i32..=127) {
        let xs = &xs[off.min(xs.len())..];
        let (mut a, mut b) = (vec![0i8; xs.len()], vec![0i8; xs.len()]);
        quant::quantize(xs, &mut a, scale, zp).unwrap();
        quant::reference::quantize(xs, &mut b, scale, zp).unwrap();
        prop_assert_eq!(&a, &b);
        let (mut fa, mut fb) = (vec![0.0f32; xs.len()], vec![0.0f32; xs.len()]);
        quant::dequantize(&a, &mut fa, scale, zp).unwrap();
        quant::reference::dequantize(&a, &mut fb, scale, zp).unwrap();
        prop_assert_eq!(fa.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), fb.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let zu = zp + 128;
        let (mut ua, mut ub) = (vec![0u8; xs.len()], vec![0u8; xs.len()]);
        quant::quantize(xs, &mut ua, scale, zu).unwrap();
        quant::reference::quantize(xs, &mut ub, scale, zu).unwrap();
        prop_assert_eq!(ua, ub);
    }

    /// Inside the representable range the round trip is within scale/2 (plus
    /// the one rounding of the multiply, u·|x̂| with u = 2^-24); outside it
    /// saturates to the range's end.
    #[test]
    fn round_trip_error(x in -500.0f32..500.0, scale in 0.01f32..2.0, zp in 0i32..=255) {
        let mut q = [0u8; 1];
        quant::quantize(&[x], &mut q, scale, zp).unwrap();
        let mut back = [0.0f32; 1];
        quant::dequantize(&q, &mut back, scale, zp).unwrap();
        let (lo, hi) = ((0 - zp) as f32 * scale, (255 - zp) as f32 * scale);
        if x >= lo && x <= hi {
            let bound = scale as f64 / 2.0 * (1.0 + 1e-6) + back[0].abs() as f64 * 2f64.powi(-24);
            prop_assert!(((back[0] - x) as f64).abs() <= bound, "x={} back={} scale={}", x, back[0], scale);
        } else {
            prop_assert_eq!(q[0], if x < lo { 0 } else { 255 });
        }
    }
}

#[test]
fn requantization_edge_cases() {
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
        i32::MAX
    );
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
        -i32::MAX
    );
    // gemmlowp rounds SRDHM ties toward +inf: -0.5 -> 0, 0.5 -> 1.
    assert_eq!(saturating_rounding_doubling_high_mul(-(1 << 30), 1), 0);
    assert_eq!(saturating_rounding_doubling_high_mul(1 << 30, 1), 1);
    assert_eq!(rounding_divide_by_pot(5, 1).unwrap(), 3); // 2.5 → 3
    assert_eq!(rounding_divide_by_pot(-5, 1).unwrap(), -3); // -2.5 → -3
    assert_eq!(rounding_divide_by_pot(i32::MIN, 31).unwrap(), -1);
    assert_eq!(rounding_divide_by_pot(i32::MAX, 31).unwrap(), 1);
    assert!(rounding_divide_by_pot(1, 32).is_err());
    assert_eq!(quantize_multiplier(1.0).unwrap(), (1 << 30, 1));
    assert_eq!(quantize_multiplier(0.5).unwrap(), (1 << 30, 0));
    // A fraction that rounds up to 2^31 is halved, the shift incremented.
    assert_eq!(
        quantize_multiplier(1.0 - 2f64.powi(-40)).unwrap(),
        (1 << 30, 1)
    );
    assert_eq!(quantize_multiplier(1e-20).unwrap(), (0, 0));
    assert!(quantize_multiplier(0.0).is_err() && quantize_multiplier(f64::NAN).is_err());
    let dbl = RequantRounding::Double;
    let (m, s) = quantize_multiplier(0.0123).unwrap();
    assert_eq!(
        multiply_by_quantized_multiplier(10_000, m, s, dbl).unwrap(),
        123
    );
    let (m, s) = quantize_multiplier(3.0).unwrap();
    assert_eq!(multiply_by_quantized_multiplier(7, m, s, dbl).unwrap(), 21);
    // The two TFLite definitions differ on a tie: -1.5 (x = -6, M = 0.25).
    let (m, s) = quantize_multiplier(0.25).unwrap();
    assert_eq!(multiply_by_quantized_multiplier(-6, m, s, dbl).unwrap(), -2);
    let single = RequantRounding::Single;
    assert_eq!(
        multiply_by_quantized_multiplier(-6, m, s, single).unwrap(),
        -1
    );
    // Shifts outside [-31, 30] and negative multipliers are errors (they
    // panicked in debug and wrapped in release before).
    for bad_shift in [31, 32, -32, i32::MIN, i32::MAX] {
        assert!(multiply_by_quantized_multiplier(12_800, 1, bad_shift, dbl).is_err());
        assert!(multiply_by_quantized_multiplier(12_800, 1, bad_shift, single).is_err());
    }
    assert!(multiply_by_quantized_multiplier(1, -1, 0, dbl).is_err());
    // requantize: qmin > qmax is an error, not a clamp panic.
    assert!(requant::requantize(5, 1 << 30, 0, 0, (10, -10), dbl).is_err());
    assert_eq!(
        requant::requantize(1000, 1 << 30, 0, 3, (-128, 127), dbl).unwrap(),
        127
    );
    assert_eq!(
        requant::requantize(-6, 1 << 30, -1, 0, (-128, 127), single).unwrap(),
        -1
    );
}

#[test]
fn k_past_the_i32_limit_is_an_error() {
    assert_eq!(max_k::<i8>(0, 0), 131_071);
    assert_eq!(max_k::<u8>(0, 0), 65_793);
    let k = max_k::<i8>(0, 0) + 1;
    let a = vec![0i8; k];
    let mut c = [0i32; 1];
    let err = qgemm(
        QMatRef::new(MatRef::from_row_major(&a, 1, k).unwrap(), &[0]).unwrap(),
        QMatRef::new(MatRef::from_row_major(&a, k, 1).unwrap(), &[0]).unwrap(),
        MatMut::from_row_major(&mut c, 1, 1).unwrap(),
        &QEpilogue::I32,
        Parallelism::Serial,
    )
    .unwrap_err();
    assert!(err.to_string().contains("131072"), "{err}");
    // At the limit, the worst case is exact: all -128 · -128.
    let k = max_k::<i8>(0, 0);
    let a = vec![-128i8; k];
    qgemm(
        QMatRef::new(MatRef::from_row_major(&a, 1, k).unwrap(), &[0]).unwrap(),
        QMatRef::new(MatRef::from_row_major(&a, k, 1).unwrap(), &[0]).unwrap(),
        MatMut::from_row_major(&mut c, 1, 1).unwrap(),
        &QEpilogue::I32,
        Parallelism::Serial,
    )
    .unwrap();
    assert_eq!(c[0] as i64, 16384 * k as i64);
}

#[test]
fn bad_parameters_are_typed_errors() {
    for s in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        assert!(
            matches!(
                QuantParams::per_tensor::<i8>(s, 0),
                Err(Error::InvalidParameter { name: "scale", .. })
            ),
            "{s}"
        );
    }
    assert!(matches!(
        QuantParams::per_tensor::<i8>(1.0, 128),
        Err(Error::InvalidParameter {
            name: "zero_point",
            ..
        })
    ));
    assert!(matches!(
        QuantParams::per_tensor::<u8>(1.0, -1),
        Err(Error::InvalidParameter {
            name: "zero_point",
            ..
        })
    ));
    assert!(matches!(
        QuantParams::per_channel::<i8>(vec![1.0, 2.0], vec![0], 0),
        Err(Error::LengthMismatch { .. })
    ));
    let p = QuantParams::per_channel::<i8>(vec![1.0, 2.0], vec![0, 0], 1).unwrap();
    let t = Tensor::<f32>::zeros(&[2, 3]).unwrap();
    assert!(matches!(
        quant::quantize_tensor::<i8>(&t, &p),
        Err(Error::LengthMismatch {
            expected: 3,
            actual: 2,
            ..
        })
    ));
    assert!(
        quant::quantize_tensor::<u8>(&t, &QuantParams::per_tensor::<i8>(1.0, 0).unwrap()).is_err()
    );
    let mut q = [0i8; 1];
    assert!(quant::quantize(&[1.0], &mut q, 0.0, 0).is_err());
}

#[test]
fn pytorch_observer_formulas() {
    // Affine u8 over [-1, 2]: scale 3/255, zero point 0 - round(-1/scale) = 85.
    let p = QuantParams::from_range::<u8>(-1.0, 2.0, Scheme::Affine).unwrap();
    assert_eq!(p.scale(0), Some(3.0 / 255.0));
    assert_eq!(p.zero_point(0), Some(85));
    // The range always includes 0.
    let p = QuantParams::from_range::<u8>(1.0, 2.0, Scheme::Affine).unwrap();
    assert_eq!((p.scale(0), p.zero_point(0)), (Some(2.0 / 255.0), Some(0)));
    // Symmetric: i8 zero point 0, u8 zero point 128.
    let p = QuantParams::from_range::<u8>(-3.0, 1.0, Scheme::Symmetric).unwrap();
    assert_eq!(
        (p.scale(0), p.zero_point(0)),
        (Some(3.0 / 127.5), Some(128))
    );
    // An all-zero range gets the minimum scale, not zero.
    assert_eq!(
        QuantParams::from_range::<i8>(0.0, 0.0, Scheme::Affine)
            .unwrap()
            .scale(0)
            .unwrap(),
        f32::EPSILON
    );
    assert!(QuantParams::from_range::<i8>(2.0, 1.0, Scheme::Affine).is_err());
    // Power of two: 1.0 ≤ 127·2^-6 = 1.98, 1.0 > 127·2^-7.
    assert_eq!(
        QuantParams::power_of_two::<i8>(-1.0, 0.5)
            .unwrap()
            .scale(0)
            .unwrap(),
        2f32.powi(-6)
    );
}

#[test]
fn observers() {
    let mut mm = MinMaxObserver::new();
    assert!(mm.qparams::<i8>(Scheme::Affine).is_err(), "no data yet");
    mm.observe(&[f32::NAN]);
    assert_eq!(mm.range(), None);
    let mut ma = MovingAverageMinMaxObserver::new();
    ma.observe(&[-1.0, 1.0]);
    ma.observe(&[-3.0, 5.0]);
    assert_eq!(ma.range(), Some((-1.0 + 0.01 * -2.0, 1.0 + 0.01 * 4.0)));
    assert!(MovingAverageMinMaxObserver::with_constant(0.0).is_err());

    let mut pc = PerChannelMinMaxObserver::new(0);
    pc.observe(&Tensor::from_vec(&[2, 3], vec![1.0, -2.0, 3.0, 0.5, 0.25, -0.5]).unwrap())
        .unwrap();
    let p = pc.qparams::<i8>(Scheme::Symmetric).unwrap();
    assert_eq!(p.scales(), &[3.0 / 127.5, 0.5 / 127.5]);
    assert_eq!(p.axis(), Some(0));
    assert!(pc.observe(&Tensor::<f32>::zeros(&[3, 3]).unwrap()).is_err());

    // Histogram: 200k values uniform in [-1, 1) and one outlier at 1.5.
    // Clipping the outlier at ~1 costs 0.25 in squared error but shrinks the
    // rounding error of every other value by (1.5/1)^2: the L2-optimal range
    // clips, and its measured L2 error beats the min/max range's.
    let mut h = HistogramObserver::new();
    let mut rng = mixprec::convert::StochasticRng::new(1);
    let mut x: Vec<f32> = (0..200_000)
        .map(|_| (rng.next_u64() >> 40) as f32 / 8388608.0 - 1.0)
        .collect();
    x.push(1.5);
    h.observe(&x[..100_000]);
    h.observe(&x[100_000..]);
    let p = h.qparams::<i8>(Scheme::Affine).unwrap();
    let full = QuantParams::from_range::<i8>(-1.0, 1.5, Scheme::Affine).unwrap();
    let top = (127 - p.zero_point(0).unwrap()) as f32 * p.scale(0).unwrap();
    assert!(
        top < 1.4,
        "histogram range top {top} should clip the outlier"
    );
    let l2 = |p: &QuantParams| {
        let mut q = vec![0i8; x.len()];
        quant::quantize(&x, &mut q, p.scale(0).unwrap(), p.zero_point(0).unwrap()).unwrap();
        let mut y = vec![0.0f32; x.len()];
        quant::dequantize(&q, &mut y, p.scale(0).unwrap(), p.zero_point(0).unwrap()).unwrap();
        x.iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
    };
    assert!(l2(&p) < l2(&full), "{} vs {}", l2(&p), l2(&full));
}

#[test]
fn per_channel_tensor_round_trip() {
    let t = Tensor::from_fn(&[3, 4], |ix| (ix[0] as f32 + 1.0) * (ix[1] as f32 - 1.5)).unwrap();
    let mut obs = PerChannelMinMaxObserver::new(0);
    obs.observe(&t).unwrap();
    let p = obs.qparams::<i8>(Scheme::Symmetric).unwrap();
    let q = quant::quantize_tensor::<i8>(&t, &p).unwrap();
    let back = quant::dequantize_tensor(&q, &p).unwrap();
    for (i, (a, b)) in t.as_slice().iter().zip(back.as_slice()).enumerate() {
        assert!(
            (a - b).abs() <= p.scale(i / 4).unwrap() / 2.0 * 1.0001,
            "{a} vs {b}"
        );
    }
}

#[test]
#[allow(clippy::needless_range_loop)]
fn dequantized_gemm_and_dynamic_linear_error_bound() {
    let (batch, inf, outf) = (5, 300, 7);
    let mut rng = mixprec::convert::StochasticRng::new(42);
    let mut val = || (rng.next_u64() >> 40) as f32 / 16777216.0 * 2.0 - 1.0;
    let w = Tensor::from_fn(&[outf, inf], |_| val()).unwrap();
    let x = Tensor::from_fn(&[batch, inf], |_| val() * 3.0).unwrap();
    let bias: Vec<f32> = (0..outf).map(|i| i as f32 * 0.1).collect();
    let layer = DynamicQuantLinear::new(&w, Some(&bias)).unwrap();
    let y = layer.forward(&x, Parallelism::Threads(2)).unwrap();
    // Bound: with x̂ = x + δx, |δx| ≤ s_x/2, and ŵ = w + δw, |δw| ≤ s_w/2:
    // |x̂ŵ − xw| ≤ Σ_k (|x_k|·s_w/2 + |ŵ_k|·s_x/2), plus f32 rounding of the
    // f32 reference and the dequantize step (a few ulps of Σ|x||w|).
    for m in 0..batch {
        let xr = &x.as_slice()[m * inf..(m + 1) * inf];
        let (lo, hi) = xr
            .iter()
            .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
        let sx = QuantParams::from_range::<u8>(lo, hi, Scheme::Affine)
            .unwrap()
            .scale(0)
            .unwrap() as f64;
        for n in 0..outf {
            let wr = &w.as_slice()[n * inf..(n + 1) * inf];
            let sw = layer.weight_scales()[n] as f64;
            let exact: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                + bias[n] as f64;
            let bound: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| {
                    (a as f64).abs() * sw / 2.0 + ((b as f64).abs() + sw / 2.0) * sx / 2.0
                })
                .sum::<f64>()
                + 1e-5
                    * xr.iter()
                        .zip(wr)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum::<f64>();
            let got = y.as_slice()[m * outf + n] as f64;
            assert!(
                (got - exact).abs() <= bound,
                "({m},{n}): {got} vs {exact}, bound {bound}"
            );
        }
    }
    // The layer's error is far below the bound's worst case on average:
    // check it is at least small in absolute terms.
    assert!(layer
        .forward(&Tensor::<f32>::zeros(&[2, 5]).unwrap(), Parallelism::Serial)
        .is_err());
}

/// PackedI8 and qgemm_packed refuse what qgemm refuses, with typed errors.
#[test]
fn packed_int8_bad_parameters_are_typed_errors() {
    let b: Vec<i8> = vec![1; 6 * 10];
    let bm = MatRef::from_row_major(&b, 6, 10).unwrap();
    assert!(matches!(
        PackedI8::new(bm, &[0, 0]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        PackedI8::new(bm, &[200]),
        Err(Error::InvalidParameter { .. })
    ));
    let packed = PackedI8::new(bm, &[0]).unwrap();
    // Codes: 2 groups × 8 k (6 padded to 8) × 8 columns; 10 sums, 1 zero point.
    assert_eq!(packed.size_bytes(), 2 * 8 * 8 + 4 * (10 + 1));
    let a: Vec<u8> = vec![3; 2 * 7];
    let mut c = vec![0i32; 2 * 10];
    let r = qgemm_packed(
        QMatRef::new(MatRef::from_row_major(&a, 2, 7).unwrap(), &[0]).unwrap(),
        &packed,
        MatMut::from_row_major(&mut c, 2, 10).unwrap(),
        &QEpilogue::I32,
        Parallelism::Serial,
    );
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let a: Vec<u8> = vec![3; 2 * 6];
    let r = qgemm_packed(
        QMatRef::new(MatRef::from_row_major(&a, 2, 6).unwrap(), &[0, 0, 0]).unwrap(),
        &packed,
        MatMut::from_row_major(&mut c, 2, 10).unwrap(),
        &QEpilogue::I32,
        Parallelism::Serial,
    );
    assert!(matches!(r, Err(Error::LengthMismatch { .. })), "{r:?}");
    let mut cf = vec![0.0f32; 2 * 10];
    let r = qgemm_packed(
        QMatRef::new(MatRef::from_row_major(&a, 2, 6).unwrap(), &[0]).unwrap(),
        &packed,
        MatMut::from_row_major(&mut cf, 2, 10).unwrap(),
        &QEpilogue::I32,
        Parallelism::Serial,
    );
    assert!(matches!(r, Err(Error::InvalidParameter { .. })), "{r:?}");
}

/// Threaded products of 2–32 rows split C's columns (each part into a
/// buffer of its own, then copied into C): pre-packed and blocked integer
/// GEMMs give the reference's values for 2, 3 and `usize::MAX` threads,
/// into a padded C.
#[test]
fn threaded_few_rows_split_columns_equal_reference() {
    let (n, k) = (1000, 1100);
    let b: Vec<i8> = (0..k * n).map(|i| (i % 251) as i8).collect();
    let bv = MatRef::from_row_major(&b, k, n).unwrap();
    let packed = PackedI8::new(bv, &[-3]).unwrap();
    for m in [2, 8, 13, 32] {
        let a: Vec<u8> = (0..m * k).map(|i| (i % 253) as u8).collect();
        let qa = || QMatRef::new(MatRef::from_row_major(&a, m, k).unwrap(), &[7]).unwrap();
        let ld = n + 5;
        let mut want = vec![0i32; m * ld];
        let qb = QMatRef::new(bv, &[-3]).unwrap();
        qgemm_reference(
            qa(),
            qb,
            MatMut::new(&mut want, m, n, ld, 1).unwrap(),
            &QEpilogue::I32,
        )
        .unwrap();
        for threads in [2, 3, usize::MAX] {
            let par = Parallelism::Threads(threads);
            let mut got = vec![0i32; m * ld];
            qgemm_packed(
                qa(),
                &packed,
                MatMut::new(&mut got, m, n, ld, 1).unwrap(),
                &QEpilogue::I32,
                par,
            )
            .unwrap();
            assert_eq!(got, want, "packed, m={m} threads={threads}");
            let mut got = vec![0i32; m * ld];
            qgemm(
                qa(),
                qb,
                MatMut::new(&mut got, m, n, ld, 1).unwrap(),
                &QEpilogue::I32,
                par,
            )
            .unwrap();
            assert_eq!(got, want, "blocked, m={m} threads={threads}");
        }
    }
}

/// `qgemm_packed` streams the packed weights up to 512 rows of A and
/// unpacks them past that; `qgemm` reads B in place up to 32 rows in
/// either layout, packing each tile once past 4 (AVX2) or 8 (VNNI) rows. Each side of each switch, with per-row
/// and per-column zero points, i8 and u8 activations, a K that is not a
/// multiple of 4 and an N that is not a multiple of 64, gives the
/// reference's values; so do the weights unpacked by `to_row_major`.
#[test]
fn row_count_switches_equal_reference() {
    let (n, k) = (75, 131);
    let b: Vec<i8> = (0..k * n).map(|i| ((i * 37) % 256) as i8).collect();
    let zb: Vec<i32> = (0..n).map(|j| (j % 9) as i32 - 4).collect();
    let bv = MatRef::from_row_major(&b, k, n).unwrap();
    // The same weights stored [out, in], seen as K × N.
    let bt: Vec<i8> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
    let btv = MatRef::from_row_major(&bt, n, k).unwrap().t();
    let packed = PackedI8::new(bv, &zb).unwrap();
    assert_eq!(packed.to_row_major(), b);
    fn check<A: QInt + std::fmt::Debug>(
        m: usize,
        k: usize,
        n: usize,
        to_a: fn(usize) -> A,
        (bv, btv, zb, packed): (MatRef<'_, i8>, MatRef<'_, i8>, &[i32], &PackedI8),
    ) {
        let a: Vec<A> = (0..m * k).map(to_a).collect();
        let za: Vec<i32> = (0..m).map(|i| A::QMIN + (i % 200) as i32).collect();
        let qa = || QMatRef::new(MatRef::from_row_major(&a, m, k).unwrap(), &za).unwrap();
        let mut want = vec![0i32; m * n];
        qgemm_reference(
            qa(),
            QMatRef::new(bv, zb).unwrap(),
            MatMut::from_row_major(&mut want, m, n).unwrap(),
            &QEpilogue::I32,
        )
        .unwrap();
        for (path, b) in [("[in, out]", bv), ("[out, in]", btv)] {
            let mut got = vec![0i32; m * n];
            qgemm(
                qa(),
                QMatRef::new(b, zb).unwrap(),
                MatMut::from_row_major(&mut got, m, n).unwrap(),
                &QEpilogue::I32,
                Parallelism::Serial,
            )
            .unwrap();
            assert_eq!(got, want, "qgemm {path}, m={m}");
        }
        let mut got = vec![0i32; m * n];
        qgemm_packed(
            qa(),
            packed,
            MatMut::from_row_major(&mut got, m, n).unwrap(),
            &QEpilogue::I32,
            Parallelism::Serial,
        )
        .unwrap();
        assert_eq!(got, want, "packed, m={m}");
    }
    let ops = (bv, btv, &zb[..], &packed);
    for m in [1, 3, 4, 5, 8, 9, 32, 33, 512, 513] {
        check::<u8>(m, k, n, |i| ((i * 29) % 256) as u8, ops);
        check::<i8>(m, k, n, |i| ((i * 31) % 256) as i8, ops);
    }
}

/// `DynamicQuantLinear::forward` takes any rank `[.., in]` as nn.Linear
/// does: `[2, 3, in]` and `[in]` give the bits of the same rows as a
/// `[6, in]` (or `[1, in]`) batch, with the leading dimensions kept; rank 0
/// and a wrong last dimension are typed errors.
#[test]
fn dynamic_linear_takes_any_leading_dimensions() {
    let (o, i) = (5, 7);
    let w = Tensor::from_fn(&[o, i], |ix| ((ix[0] * 3 + ix[1]) % 11) as f32 * 0.25 - 1.2).unwrap();
    let layer = DynamicQuantLinear::new(&w, Some(&[0.5, -0.5, 0.25, 0.0, 1.0])).unwrap();
    let x: Vec<f32> = (0..6 * i)
        .map(|v| ((v * 7) % 13) as f32 * 0.3 - 1.5)
        .collect();
    let flat = layer
        .forward(
            &Tensor::from_vec(&[6, i], x.clone()).unwrap(),
            Parallelism::Serial,
        )
        .unwrap();
    let y3 = layer
        .forward(
            &Tensor::from_vec(&[2, 3, i], x.clone()).unwrap(),
            Parallelism::Serial,
        )
        .unwrap();
    assert_eq!(y3.shape(), &[2, 3, o]);
    let bits = |t: &Tensor<f32>| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y3), bits(&flat));
    let y1 = layer
        .forward(
            &Tensor::from_vec(&[i], x[..i].to_vec()).unwrap(),
            Parallelism::Serial,
        )
        .unwrap();
    assert_eq!(y1.shape(), &[o]);
    assert_eq!(bits(&y1), bits(&flat)[..o]);
    let empty = layer
        .forward(
            &Tensor::<f32>::zeros(&[4, 0, i]).unwrap(),
            Parallelism::Serial,
        )
        .unwrap();
    assert_eq!(empty.shape(), &[4, 0, o]);
    assert!(matches!(
        layer.forward(
            &Tensor::from_vec(&[], vec![1.0f32]).unwrap(),
            Parallelism::Serial
        ),
        Err(Error::RankMismatch { .. })
    ));
    assert!(matches!(
        layer.forward(
            &Tensor::<f32>::zeros(&[2, i + 1]).unwrap(),
            Parallelism::Serial
        ),
        Err(Error::ShapeMismatch { .. })
    ));
}

//! Adversarial inputs against every public entry point: NaN, ±inf, 0,
//! negative values, `usize::MAX`, empty slices, mismatched lengths and
//! non-finite parameters. Each property asserts "a typed `Err`, or `Ok`
//! with the documented result; never a panic". Every call runs under
//! `catch_unwind`, so a panic fails the property (with its input) instead
//! of aborting the file.
//!
//! `.ci/run` runs this file in the debug profile as well as in release:
//! a dependent crate's `cargo test` is a debug build, where arithmetic
//! overflow and `debug_assert!` panic.
//!
//! Out of scope: allocation failure. A shape whose byte count fits
//! `isize` but not the machine's memory aborts in the allocator, as in any
//! Rust collection; the shapes below either overflow (a typed error) or
//! are small.

use mixprec::amp::{
    has_non_finite, softmax_cross_entropy, train_step, AdamW, GradHistogram, Linear, Loss,
    LossScaler, Mlp, Optimizer, ScalerState, Sgd,
};
use mixprec::convert::{self, StochasticRng};
use mixprec::gemm::{self, Activation, Epilogue, Parallelism};
use mixprec::quant::observer::{
    HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver,
};
use mixprec::quant::requant::{self, RequantRounding};
use mixprec::quant::{
    self, max_k, qgemm, qgemm_reference, DynamicQuantLinear, QEpilogue, QMatRef, QuantParams,
    QuantRounding, Scheme,
};
use mixprec::systolic::{self, ArrayConfig, Dataflow, Mode};
use mixprec::{bf16, f16, DType, Error, MatMut, MatRef, Tensor, F8E4M3, F8E5M2};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning a panic into a failed property that names `what`.
fn no_panic<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {msg}"))
    })
}

/// Floats where bugs live.
fn nasty_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(-f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(f32::MAX),
        Just(f32::MIN),
        Just(f32::MIN_POSITIVE),
        Just(1e-45),
        Just(-1.0),
        any::<u32>().prop_map(f32::from_bits),
        -10.0f32..10.0,
    ]
}

/// Sizes where bugs live.
fn nasty_usize() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(usize::MAX),
        Just(usize::MAX / 2 + 1),
        Just(1usize << 32),
        Just(u32::MAX as usize),
        0usize..40,
    ]
}

/// Small sizes (to allocate) mixed with ones that must be refused.
fn nasty_dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..12,
        1 => Just(usize::MAX),
        1 => Just(usize::MAX / 2 + 1),
    ]
}

fn nasty_i32() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(i32::MIN),
        Just(i32::MAX),
        Just(0),
        Just(-1),
        Just(31),
        Just(-32),
        -300i32..300,
        any::<i32>(),
    ]
}

fn threads() -> impl Strategy<Value = Parallelism> {
    prop_oneof![
        Just(Parallelism::Serial),
        Just(Parallelism::Threads(0)),
        Just(Parallelism::Threads(usize::MAX)),
        Just(Parallelism::Threads(usize::MAX / 2 + 1)),
        (1usize..5).prop_map(Parallelism::Threads),
    ]
}

fn floats(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(nasty_f32(), len)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Formats: every conversion is total.
    #[test]
    fn formats_are_total(x in nasty_f32(), b in any::<u8>(), h in any::<u16>()) {
        no_panic("formats", || {
            let _ = (F8E4M3::from_f32(x).to_f32(), F8E5M2::from_f32(x).to_f32());
            let _ = (F8E4M3::from_f32_saturating(x), F8E5M2::from_f32_saturating(x));
            let _ = (F8E4M3::from_bits(b).to_f32(), F8E5M2::from_bits(b).to_f32());
            let _ = (f16::from_bits(h).to_f32(), bf16::from_bits(h).to_f32());
            let _ = (F8E4M3::from_f64(x as f64), F8E5M2::from_f64(x as f64));
        })?;
        let s = format!("{x}");
        no_panic("DType::from_str", || s.parse::<DType>())?.ok();
    }

    /// Slice conversions: equal lengths convert, others are LengthMismatch.
    #[test]
    fn conversions_check_lengths(src in floats(0..40), dst_len in 0usize..40, seed in any::<u64>()) {
        let same = src.len() == dst_len;
        let mut h = vec![f16::ZERO; dst_len];
        let mut b = vec![bf16::ZERO; dst_len];
        let mut e = vec![F8E4M3::from_bits(0); dst_len];
        let mut w = vec![0.0f32; dst_len];
        let r = no_panic("convert", || {
            [
                convert::narrow(&src, &mut h).is_ok(),
                convert::narrow_saturating(&src, &mut e).is_ok(),
                convert::narrow_stochastic(&src, &mut b, &mut StochasticRng::new(seed)).is_ok(),
                convert::widen(&b, &mut w).is_ok(),
            ]
        })?;
        prop_assert_eq!(r, [same, same, same, true]);
    }

    /// Tensors and views: an overflowing or mismatched shape is an error;
    /// a view that is built reads only inside its buffer.
    #[test]
    fn tensors_and_views(shape in prop::collection::vec(nasty_dim(), 0..4), len in 0usize..50,
                         rows in nasty_usize(), cols in nasty_usize(), rs in nasty_usize(), cs in nasty_usize(),
                         i in nasty_usize(), j in nasty_usize()) {
        let data = vec![1.5f32; len];
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let t = no_panic("Tensor::from_vec", || Tensor::from_vec(&shape, data.clone()))?;
        prop_assert_eq!(t.is_ok(), numel == Some(len));
        if numel.is_none() {
            prop_assert!(no_panic("Tensor::zeros", || Tensor::<f32>::zeros(&shape))?.is_err());
        }
        let bytes = vec![0u8; len];
        no_panic("Tensor::from_bytes", || Tensor::<f32>::from_bytes(&shape, &bytes))?.ok();
        if let Ok(t) = t {
            let r = no_panic("reshape", || t.clone().reshape(&[len, 1]))?;
            prop_assert!(r.is_ok());
            no_panic("as_mat", || t.as_mat().map(|m| m.get(i, j)))?.ok();
        }
        let v = no_panic("MatRef::new", || MatRef::new(&data, rows, cols, rs, cs))?;
        if let Ok(v) = v {
            let got = no_panic("MatRef::get", || (v.get(i, j), v.t().get(j, i)))?;
            prop_assert_eq!(got.0.is_some(), i < rows && j < cols);
            prop_assert_eq!(got.0, got.1);
        }
        let mut data = data;
        if let Ok(mut m) = no_panic("MatMut::new", || MatMut::new(&mut data, rows, cols, rs, cs))? {
            prop_assert_eq!(no_panic("MatMut::set", || m.set(i, j, 2.0))?, i < rows && j < cols);
        }
    }

    /// Sub-views with any indices (`usize::MAX` included) over views with
    /// any strides (0 and huge included): a typed error, or a view whose
    /// elements are the parent's.
    #[test]
    fn subviews_any_input(len in 0usize..40, rows in nasty_dim(), cols in nasty_dim(), rs in nasty_usize(),
                          cs in nasty_usize(), i in nasty_usize(), j in nasty_usize(), n in nasty_usize()) {
        let mut data: Vec<f32> = (0..len).map(|x| x as f32).collect();
        if let Ok(v) = MatRef::new(&data, rows, cols, rs, cs) {
            let s = no_panic("MatRef::slice", || v.slice(i..n, j..))?;
            if let Ok(s) = s {
                prop_assert!(i <= n && n <= rows && j <= cols);
                prop_assert_eq!(s.get(0, 0), v.get(i, j).filter(|_| n > i));
            }
            no_panic("MatRef::slice inclusive", || v.slice(..=i, j..=n))?.ok();
            no_panic("MatRef::submatrix", || v.submatrix(i, j, n, n))?.ok();
            prop_assert_eq!(no_panic("MatRef::row", || v.row(i))?.is_ok(), i < rows);
            prop_assert_eq!(no_panic("MatRef::col", || v.col(j))?.is_ok(), j < cols);
            prop_assert_eq!(no_panic("MatRef::split_at_row", || v.split_at_row(i))?.is_ok(), i <= rows);
            prop_assert_eq!(no_panic("MatRef::split_at_col", || v.split_at_col(j))?.is_ok(), j <= cols);
        }
        if let Ok(m) = MatMut::new(&mut data, rows, cols, rs, cs) {
            let (r2, c2, rs2, cs2) = (m.rows(), m.cols(), m.row_stride(), m.col_stride());
            let ok = no_panic("MatMut::split_at_row", || m.split_at_row(i).map(|(a, b)| (a.rows(), b.rows())))?;
            if let Ok((a, b)) = ok {
                prop_assert_eq!((a, b), (i, r2 - i));
            }
            let m = MatMut::new(&mut data, r2, c2, rs2, cs2).unwrap();
            no_panic("MatMut::split_at_col", || m.split_at_col(j).map(|(a, b)| (a.cols(), b.cols())))?.ok();
            let m = MatMut::new(&mut data, r2, c2, rs2, cs2).unwrap();
            if let Ok(Ok(mut s)) = no_panic("MatMut::slice", || m.slice(i..n, j..)) {
                no_panic("MatMut::set in slice", || s.set(0, 0, -1.0))?;
            }
            let m = MatMut::new(&mut data, r2, c2, rs2, cs2).unwrap();
            no_panic("MatMut::row", || m.row(i).map(|r| r.cols()))?.ok();
        }
    }

    /// Block-scaled matrices and their GEMM with any shape, block, line
    /// group, scale and value: a typed error or a result, never a panic.
    #[test]
    fn block_scaled_any_input(lines in nasty_dim(), k in prop_oneof![0usize..300, Just(usize::MAX)], block in nasty_usize(),
                              group in nasty_usize(), scale in nasty_f32(), x in floats(0..300), pow2 in any::<bool>()) {
        use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
        use mixprec::{F4E2M1, F6E2M3};
        let (lines, k) = (lines.min(4), k.min(x.len()));
        let data = vec![F4E2M1::ONE; lines.saturating_mul(k).min(1200)];
        let n_scales = lines.saturating_mul(k / block.max(1)).min(64);
        let parts = no_panic("BlockScaled::from_parts", || {
            BlockScaled::from_parts(lines, k, block, group, data.clone(), vec![scale; n_scales])
        })?;
        if let Ok(p) = &parts {
            // The scale is checked where there is one (no lines, no scales).
            let scale_ok = n_scales == 0 || (scale.is_finite() && scale > 0.0);
            prop_assert!([16, 32, 128].contains(&block) && scale_ok);
            no_panic("dequantize", || p.dequantize())?.ok();
        }
        let rows = x.len().checked_div(k).unwrap_or(0);
        if let Ok(m) = MatRef::from_row_major(&x[..rows * k], rows, k) {
            let a = no_panic("mx", || BlockScaled::<F6E2M3>::mx(m, MxScaleMode::Ceil))?;
            let b = no_panic("nvfp4", || BlockScaled::nvfp4(m, pow2))?;
            let f = no_panic("fp8", || BlockScaled::<F8E4M3>::fp8(m, Fp8Granularity::PerTensor, pow2))?;
            prop_assert_eq!(a.is_ok(), k % 32 == 0);
            prop_assert_eq!(b.is_ok(), k % 16 == 0);
            prop_assert_eq!(f.is_ok(), k % 128 == 0);
            if let (Ok(a), Ok(p)) = (&a, &parts) {
                let mut c = vec![0.0f32; rows * lines];
                let cm = MatMut::from_row_major(&mut c, rows, lines).unwrap();
                no_panic("block_gemm", || gemm::block_gemm(a, p, cm, &Epilogue::new(), Parallelism::Threads(usize::MAX)))?.ok();
            }
        }
    }

    /// The `testing` helpers take any parameters without panicking.
    #[test]
    fn testing_helpers_any_input(lo in nasty_f32(), hi in nasty_f32(), n in nasty_usize(), u in nasty_f32(),
                                 r in nasty_usize(), c in nasty_usize()) {
        use mixprec::testing;
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        if let Ok(s) = no_panic("normal_in", || testing::normal_in::<F8E4M3>(lo, hi))? {
            let v = s.new_tree(&mut runner).unwrap().current().to_f32();
            prop_assert!(v >= lo && v <= hi, "{} outside [{}, {}]", v, lo, hi);
        }
        no_panic("normal_in f32", || testing::normal_in::<f32>(lo, hi))?.ok();
        no_panic("gamma", || testing::gamma(n, u as f64))?;
        no_panic("conversion_error_bound", || testing::conversion_error_bound::<bf16>(lo))?;
        no_panic("ulp_distance", || testing::ulp_distance(lo, hi))?;
        let small = (r % 1000, c % 1000);
        no_panic("strided_matrix", || testing::strided_matrix(r, c, testing::finite::<f16>()).map(|_| ()))?.ok();
        no_panic("strided_matrix small", || testing::strided_matrix(small.0, small.1, testing::finite::<f16>()).map(|_| ()))?.ok();
        no_panic("gemm_shapes", || {
            testing::gemm_shapes(n, r).new_tree(&mut TestRunner::deterministic()).map(|t| t.current())
        })?.ok();
        no_panic("tensor_shapes", || {
            testing::tensor_shapes(n, r).new_tree(&mut TestRunner::deterministic()).map(|t| t.current())
        })?.ok();
        no_panic("near_rounding_boundary", || {
            testing::near_rounding_boundary::<F8E5M2>(n as u32).new_tree(&mut TestRunner::deterministic()).map(|t| t.current())
        })?.ok();
        let one = [1.0f32];
        if let Ok(a) = MatRef::new(&one, r % 5, c % 5, 0, 0) {
            no_panic("gemm_error_bound", || testing::gemm_error_bound(a, a.t()))?.ok();
            no_panic("check_gemm_within_bound", || testing::check_gemm_within_bound(a, a.t(), a))?.ok();
            no_panic("check_bits_eq", || testing::check_bits_eq(a, a.t()))?.ok();
        }
    }

    /// GEMM: bad shapes, bias lengths, thread counts (`usize::MAX`
    /// included) and non-finite epilogue parameters give a typed error or
    /// the reference's bits.
    #[test]
    fn gemm_any_input(m in nasty_dim(), k in nasty_dim(), n in nasty_dim(), k2 in 0usize..12,
                      vals in floats(1..20), bias_len in 0usize..14, alpha in nasty_f32(), beta in nasty_f32(),
                      par in threads(), col in nasty_usize()) {
        let cap = |d: usize| d.min(12);
        let (mm, kk, nn) = (cap(m), cap(k), cap(n));
        let a: Vec<f32> = vals.iter().copied().cycle().take(mm * kk).collect();
        let b: Vec<f32> = vals.iter().rev().copied().cycle().take(k2 * nn).collect();
        let bias = vec![0.25f32; bias_len];
        let epi = Epilogue::new().alpha(alpha).beta(beta).bias(&bias).activation(Activation::Gelu);
        let mut fast = vec![0.5f32; mm * nn];
        let mut slow = fast.clone();
        let r = no_panic("gemm", || -> Result<(), Error> {
            let av = MatRef::from_row_major(&a, mm, kk)?;
            let bv = MatRef::from_row_major(&b, k2, nn)?;
            gemm::gemm(av, bv, MatMut::from_row_major(&mut fast, mm, nn)?, &epi, par)
        })?;
        let s = no_panic("reference", || -> Result<(), Error> {
            let av = MatRef::from_row_major(&a, mm, kk)?;
            let bv = MatRef::from_row_major(&b, k2, nn)?;
            gemm::reference(av, bv, MatMut::from_row_major(&mut slow, mm, nn)?, &epi)
        })?;
        prop_assert_eq!(r.is_ok(), kk == k2 && (bias_len == nn) && par != Parallelism::Threads(0));
        if r.is_ok() && s.is_ok() {
            prop_assert_eq!(bits(&fast), bits(&slow));
        }
        // Shapes past memory: only their product is checked, and it overflows.
        if m.checked_mul(k).is_none() {
            prop_assert!(no_panic("from_row_major", || MatRef::from_row_major(&a, m, k))?.is_err());
        }
        // Epilogue::apply with a column past the bias: no bias, no panic.
        let y = no_panic("Epilogue::apply", || epi.apply(1.0, 2.0, col))?;
        prop_assert!(y.is_nan() || y.is_finite() || y.is_infinite());
        let tile = no_panic("reference_with_tile_height", || {
            let av = MatRef::from_row_major(&a, mm, kk).ok()?;
            let bv = MatRef::from_row_major(&b, k2, nn).ok()?;
            let mut c = vec![0.0f32; mm * nn];
            Some(gemm::reference_with_tile_height(av, bv, MatMut::from_row_major(&mut c, mm, nn).ok()?, &epi, col).is_ok())
        })?;
        if let Some(ok) = tile {
            prop_assert!(!ok || col != 0);
        }
    }

    /// Quantization parameters, observers and slice quantization.
    #[test]
    fn quant_params_and_observers(lo in nasty_f32(), hi in nasty_f32(), scale in nasty_f32(), zp in nasty_i32(),
                                  xs in floats(0..30), c in nasty_usize(), axis in nasty_usize(), bins in nasty_usize()) {
        for scheme in [Scheme::Affine, Scheme::Symmetric] {
            let p = no_panic("from_range", || QuantParams::from_range::<i8>(lo, hi, scheme))?;
            if let Ok(p) = &p {
                let s = p.scales()[0];
                prop_assert!(s.is_finite() && s > 0.0);
                prop_assert_eq!(no_panic("scale(c)", || p.scale(c))?, Some(s));
            }
            prop_assert!(p.is_err() || (lo.is_finite() && hi.is_finite() && lo <= hi));
            no_panic("from_ranges", || QuantParams::from_ranges::<u8>(&[lo, lo], &[hi], scheme, axis))?.ok();
        }
        no_panic("power_of_two", || QuantParams::power_of_two::<u8>(lo, hi))?.ok();
        let pt = no_panic("per_tensor", || QuantParams::per_tensor::<i8>(scale, zp))?;
        prop_assert_eq!(pt.is_ok(), scale.is_finite() && scale > 0.0 && (-128..=127).contains(&zp));
        let pc = no_panic("per_channel", || QuantParams::per_channel::<u8>(vec![scale; 3], vec![zp; 3], axis))?;
        if let Ok(pc) = &pc {
            let got = no_panic("per-channel scale(c)", || (pc.scale(c), pc.zero_point(c)))?;
            prop_assert_eq!(got.0.is_some(), c < 3);
            prop_assert_eq!(got.1.is_some(), c < 3);
            let t = Tensor::from_vec(&[xs.len(), 1], xs.clone()).unwrap();
            no_panic("quantize_tensor", || quant::quantize_tensor::<u8>(&t, pc))?.ok();
        }
        for rule in [QuantRounding::Divide, QuantRounding::MultiplyByReciprocal] {
            let mut q = vec![0i8; xs.len()];
            let r = no_panic("quantize_with", || quant::quantize_with(&xs, &mut q, scale, zp, rule))?;
            prop_assert_eq!(r.is_ok(), pt.is_ok() && (rule == QuantRounding::Divide || (1.0 / scale).is_finite()));
            let mut back = vec![0.0f32; xs.len() + 1];
            prop_assert!(no_panic("dequantize", || quant::dequantize(&q, &mut back, scale, zp))?.is_err());
        }
        let mut mm = MinMaxObserver::new();
        let mut ma = MovingAverageMinMaxObserver::new();
        let mut h = HistogramObserver::new();
        no_panic("observers", || {
            mm.observe(&xs);
            ma.observe(&xs);
            h.observe(&xs);
            h.observe(&[lo, hi]);
            let _ = (mm.qparams::<i8>(Scheme::Affine), ma.qparams::<u8>(Scheme::Symmetric), h.qparams::<i8>(Scheme::Affine));
        })?;
        let hb = no_panic("HistogramObserver::with_bins", || HistogramObserver::with_bins(bins))?;
        prop_assert_eq!(hb.is_ok(), (1..=HistogramObserver::MAX_BINS).contains(&bins));
        no_panic("MovingAverage::with_constant", || MovingAverageMinMaxObserver::with_constant(lo))?.ok();
        let mut pco = PerChannelMinMaxObserver::new(axis);
        let t = Tensor::from_vec(&[1, xs.len()], xs.clone()).unwrap();
        no_panic("PerChannelMinMaxObserver", || {
            let _ = pco.observe(&t);
            let _ = pco.qparams::<i8>(Scheme::Symmetric);
        })?;
    }

    /// Requantization helpers: any multiplier, shift and range.
    #[test]
    fn requant_any_input(x in nasty_i32(), m in nasty_i32(), shift in nasty_i32(), zp in nasty_i32(),
                         qmin in nasty_i32(), qmax in nasty_i32(), e in any::<u32>(), real in any::<u64>().prop_map(f64::from_bits)) {
        for rounding in [RequantRounding::Double, RequantRounding::Single] {
            let r = no_panic("multiply_by_quantized_multiplier", || requant::multiply_by_quantized_multiplier(x, m, shift, rounding))?;
            prop_assert_eq!(r.is_ok(), m >= 0 && (-31..=30).contains(&shift));
            let q = no_panic("requantize", || requant::requantize(x, m, shift, zp, (qmin, qmax), rounding))?;
            prop_assert_eq!(q.is_ok(), r.is_ok() && qmin <= qmax);
            if let Ok(q) = q {
                prop_assert!((qmin..=qmax).contains(&q));
            }
        }
        prop_assert_eq!(no_panic("rounding_divide_by_pot", || requant::rounding_divide_by_pot(x, e))?.is_ok(), e <= 31);
        no_panic("srdhm", || requant::saturating_rounding_doubling_high_mul(x, m))?;
        if let Ok((qm, qs)) = no_panic("quantize_multiplier", || requant::quantize_multiplier(real))? {
            prop_assert!(qm >= 0 && (-31..=30).contains(&qs));
        }
        let k8 = no_panic("max_k", || (max_k::<i8>(zp, m), max_k::<u8>(zp, m)))?;
        prop_assert!(k8.0 <= 131_071 && k8.1 <= 131_071);
    }

    /// The integer GEMM: zero points, scales, shifts, lengths and thread
    /// counts from anywhere; a typed error or the reference's values.
    #[test]
    fn qgemm_any_input(m in 0usize..6, k in 0usize..9, n in 0usize..6, za in nasty_i32(), zb in nasty_i32(),
                       zps_a in 0usize..8, zps_b in 0usize..8, scale in nasty_f32(), shift in nasty_i32(), mult in nasty_i32(),
                       out_zp in nasty_i32(), bias_len in 0usize..7, par in threads(), which in 0u8..3, seed in any::<u64>()) {
        let mut rng = StochasticRng::new(seed);
        let a: Vec<u8> = (0..m * k).map(|_| rng.next_u64() as u8).collect();
        let b: Vec<i8> = (0..k * n).map(|_| rng.next_u64() as i8).collect();
        let (za, zb) = (vec![za; zps_a], vec![zb; zps_b]);
        let av = MatRef::from_row_major(&a, m, k).unwrap();
        let bv = MatRef::from_row_major(&b, k, n).unwrap();
        let ok_zp = |z: &[i32], lo: i32, hi: i32, len: usize| (z.len() == 1 || z.len() == len) && z.iter().all(|v| (lo..=hi).contains(v));
        let zps_ok = ok_zp(&za, 0, 255, m) && ok_zp(&zb, -128, 127, n) && par != Parallelism::Threads(0);
        match which {
            0 => {
                let (mut f, mut s) = (vec![0i32; m * n], vec![0i32; m * n]);
                let r = no_panic("qgemm i32", || QMatRef::new(av, &za).and_then(|qa| QMatRef::new(bv, &zb).and_then(|qb| qgemm(qa, qb, MatMut::from_row_major(&mut f, m, n).unwrap(), &QEpilogue::I32, par))))?;
                prop_assert_eq!(r.is_ok(), zps_ok);
                if r.is_ok() {
                    QMatRef::new(av, &za).and_then(|qa| QMatRef::new(bv, &zb).and_then(|qb| qgemm_reference(qa, qb, MatMut::from_row_major(&mut s, m, n).unwrap(), &QEpilogue::I32))).unwrap();
                    prop_assert_eq!(f, s);
                }
            }
            1 => {
                let scales = vec![scale; 1];
                let bias = vec![1.0f32; bias_len];
                let epi = QEpilogue::Dequantize { a_scales: &scales, b_scales: &scales, bias: Some(&bias) };
                let mut f = vec![0f32; m * n];
                let r = no_panic("qgemm f32", || QMatRef::new(av, &za).and_then(|qa| QMatRef::new(bv, &zb).and_then(|qb| qgemm(qa, qb, MatMut::from_row_major(&mut f, m, n).unwrap(), &epi, par))))?;
                prop_assert_eq!(r.is_ok(), zps_ok && scale.is_finite() && scale > 0.0 && bias_len == n);
            }
            _ => {
                let (mults, shifts, bias) = ([mult], [shift], vec![7i32; bias_len]);
                for rounding in [RequantRounding::Double, RequantRounding::Single] {
                    let epi = QEpilogue::Requantize { rounding, bias: Some(&bias), multipliers: &mults, shifts: &shifts, zero_point: out_zp };
                    let (mut f, mut s) = (vec![0i8; m * n], vec![0i8; m * n]);
                    let r = no_panic("qgemm i8", || QMatRef::new(av, &za).and_then(|qa| QMatRef::new(bv, &zb).and_then(|qb| qgemm(qa, qb, MatMut::from_row_major(&mut f, m, n).unwrap(), &epi, par))))?;
                    prop_assert_eq!(r.is_ok(), zps_ok && mult >= 0 && (-31..=30).contains(&shift) && (-128..=127).contains(&out_zp) && bias_len == n);
                    if r.is_ok() {
                        QMatRef::new(av, &za).and_then(|qa| QMatRef::new(bv, &zb).and_then(|qb| qgemm_reference(qa, qb, MatMut::from_row_major(&mut s, m, n).unwrap(), &epi))).unwrap();
                        prop_assert_eq!(f, s);
                    }
                }
            }
        }
    }

    /// DynamicQuantLinear: non-finite weights, bias or activations and empty
    /// widths are errors; everything else gives `[batch, out]`.
    #[test]
    fn dynamic_quant_linear_any_input(out_f in 0usize..5, in_f in 0usize..6, batch in 0usize..4,
                                      w in floats(1..8), x in floats(1..8), bias in prop::option::of(floats(0..6)), par in threads()) {
        let wv: Vec<f32> = w.iter().copied().cycle().take(out_f * in_f).collect();
        let xv: Vec<f32> = x.iter().copied().cycle().take(batch * in_f).collect();
        let wt = Tensor::from_vec(&[out_f, in_f], wv.clone()).unwrap();
        let layer = no_panic("DynamicQuantLinear::new", || DynamicQuantLinear::new(&wt, bias.as_deref()))?;
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        let bias_ok = bias.as_ref().is_none_or(|b| b.len() == out_f && finite(b));
        prop_assert_eq!(layer.is_ok(), out_f > 0 && in_f > 0 && finite(&wv) && bias_ok);
        if let Ok(layer) = layer {
            let xt = Tensor::from_vec(&[batch, in_f], xv.clone()).unwrap();
            let y = no_panic("DynamicQuantLinear::forward", || layer.forward(&xt, par))?;
            // A row whose range overflows f32 (say [-MAX, MAX]) has no finite
            // scale: a typed error too.
            let rows_ok = xv.chunks(in_f).all(|r| {
                let (lo, hi) = r.iter().fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
                (hi - lo).is_finite()
            });
            prop_assert_eq!(y.is_ok(), finite(&xv) && rows_ok && par != Parallelism::Threads(0), "{:?}", y);
            if let Ok(y) = y {
                prop_assert_eq!(y.shape(), &[batch, out_f]);
            }
            let wrong = Tensor::from_vec(&[1, in_f + 1], vec![0.0; in_f + 1]).unwrap();
            prop_assert!(no_panic("forward wrong width", || layer.forward(&wrong, Parallelism::Serial))?.is_err());
        }
    }

    /// FP8 training: any recipe parameters, amaxes and layer inputs
    /// (NaN, infinities, extremes): a typed error or a result, never a
    /// panic; non-finite inputs propagate to the outputs.
    #[test]
    fn fp8_training_any_input(history in nasty_usize(), margin in nasty_i32(), max in nasty_f32(), amaxes in floats(0..12),
                              x in floats(1..12), batch in 0usize..4, current in any::<bool>(), par in threads()) {
        use mixprec::amp::fp8::{DelayedScaling, Fp8Format, Fp8Recipe, Fp8Scaling};
        let history = history % 4096; // an allocation of that many f32
        let d = no_panic("DelayedScaling::new", || DelayedScaling::new(history, margin, max))?;
        prop_assert_eq!(d.is_ok(), history > 0 && (-64..=64).contains(&margin) && max.is_finite() && max > 0.0);
        if let Ok(mut d) = d {
            for &a in &amaxes {
                no_panic("DelayedScaling::record", || d.record(a))?;
                prop_assert!(d.scale().is_finite() && d.scale() > 0.0);
            }
        }
        let scaling = if current { Fp8Scaling::Current { margin } } else { Fp8Scaling::Delayed { history, margin } };
        let mut layer = mixprec::amp::Linear::<f32>::new(5, 3, mixprec::gemm::Activation::Relu, 1.0, &mut StochasticRng::new(1)).unwrap();
        let set = no_panic("set_fp8", || layer.set_fp8(Some(Fp8Recipe { format: Fp8Format::Hybrid, scaling })))?;
        if set.is_ok() {
            let xs: Vec<f32> = x.iter().copied().cycle().take(batch * 5).collect();
            let y = no_panic("fp8 forward", || layer.forward(&xs, batch, par))?;
            prop_assert_eq!(y.is_ok(), par != Parallelism::Threads(0));
            if y.is_ok() {
                let dy: Vec<f32> = x.iter().copied().cycle().take(batch * 3).collect();
                no_panic("fp8 backward", || layer.backward(&dy, par))?.ok();
            }
        }
    }

    /// Post-training quantization: any bit width, calibration and input
    /// values; typed errors or logits, never a panic.
    #[test]
    fn ptq_any_input(bits in 0u32..40, scheme in 0usize..9, calib in floats(0..40), x in floats(1..20), rows in 0usize..3) {
        use mixprec::quant::ptq::{PtqScheme, QuantizedMlp};
        let mlp = mixprec::amp::Mlp::<f32>::new(&[4, 5, 3], mixprec::gemm::Activation::Relu, 1.0, &mut StochasticRng::new(2)).unwrap();
        let scheme = PtqScheme::ALL[scheme];
        let q = no_panic("QuantizedMlp::new", || QuantizedMlp::new(&mlp, &calib, scheme, bits))?;
        if let Ok(q) = q {
            let xs: Vec<f32> = x.iter().copied().cycle().take(rows * 4).collect();
            no_panic("QuantizedMlp::infer", || q.infer(&xs, rows, Parallelism::Serial))?.ok();
            prop_assert!(no_panic("infer, wrong length", || q.infer(&xs, rows + 1, Parallelism::Serial))?.is_err());
        }
    }

    /// The systolic model: sizes up to `usize::MAX`, any array shape; the
    /// simulation on NaN and infinities.
    #[test]
    fn systolic_any_input(rows in nasty_usize(), cols in nasty_usize(), m in nasty_usize(), k in nasty_usize(), n in nasty_usize(),
                          flow in 0usize..3, tpu in any::<bool>(), buf in any::<u64>(), vals in floats(1..10), name in "[a-zA-Z]{0,4}") {
        let flow = [Dataflow::WeightStationary, Dataflow::OutputStationary, Dataflow::InputStationary][flow];
        let mode = if tpu { Mode::Tpu } else { Mode::ScaleSim };
        let cfg = no_panic("ArrayConfig::new", || ArrayConfig::new(rows, cols, flow))?;
        prop_assert_eq!(cfg.is_ok(), rows > 0 && cols > 0 && (rows as u128 * cols as u128) <= u64::MAX as u128);
        if let Ok(cfg) = cfg {
            let r = no_panic("analyze", || systolic::analyze(&cfg, m, k, n, mode, [buf; 3]))?;
            let macs = (m as u128 * k as u128).saturating_mul(n as u128);
            if m == 0 || k == 0 || n == 0 || macs > u64::MAX as u128 {
                prop_assert!(r.is_err());
            }
            if let Ok(r) = r {
                prop_assert_eq!(r.macs as u128, macs);
                // SCALE-Sim mode counts the last cycle's 0-based index, so the
                // utilization may pass 100 % by that one cycle; never infinite.
                let stepped = r.cycles as f64 + 1.0;
                prop_assert!(r.utilization_pct.is_finite());
                prop_assert!(r.utilization_pct <= 100.0 * stepped / (r.cycles.max(1) as f64) * (1.0 + 1e-9));
            }
        }
        let (sm, sk, sn) = (m % 4 + 1, k % 5, n % 4 + 1);
        let a: Vec<f32> = vals.iter().copied().cycle().take(sm * sk).collect();
        let b: Vec<f32> = vals.iter().rev().copied().cycle().take(sk * sn).collect();
        let small = ArrayConfig::new(rows % 4 + 1, cols % 4 + 1, flow).unwrap();
        let sim = no_panic("simulate", || systolic::simulate(MatRef::from_row_major(&a, sm, sk).unwrap(), MatRef::from_row_major(&b, sk, sn).unwrap(), &small))?;
        prop_assert!(sim.is_ok());
        if rows > 0 && cols > 0 && rows.saturating_mul(cols) > systolic::MAX_SIMULATED_PES {
            let big = ArrayConfig::new(rows, cols, flow);
            prop_assert!(big.is_ok() || rows.checked_mul(cols).is_none());
            let Ok(big) = big else { return Ok(()) };
            prop_assert!(no_panic("simulate big", || systolic::simulate(MatRef::from_row_major(&a, sm, sk).unwrap(), MatRef::from_row_major(&b, sk, sn).unwrap(), &big))?.is_err());
        }
        no_panic("FromStr", || (name.parse::<Dataflow>().is_ok(), name.parse::<Mode>().is_ok()))?;
    }

    /// The loss scaler: any settings and any saved state.
    #[test]
    fn scaler_any_input(init in nasty_f32(), growth in nasty_f32(), backoff in nasty_f32(), interval in any::<u32>(),
                        lo in nasty_f32(), hi in nasty_f32(), tracker in any::<u32>(), steps in any::<u64>(), skipped in any::<u64>(),
                        infs in prop::collection::vec(any::<bool>(), 0..20), grads in floats(0..10)) {
        let s = no_panic("dynamic_with", || LossScaler::dynamic_with(init, growth as f64, backoff as f64, interval, (lo, hi)))?;
        let st = ScalerState { scale: init, growth_tracker: tracker, skipped_steps: skipped, steps, dynamic: true,
                               growth_factor: growth as f64, backoff_factor: backoff as f64, growth_interval: interval, min_scale: lo, max_scale: hi };
        let from = no_panic("from_state", || LossScaler::from_state(st))?;
        for mut scaler in [s.ok(), from.ok(), no_panic("fixed", || LossScaler::fixed(init))?.ok()].into_iter().flatten() {
            let mut g = grads.clone();
            no_panic("scaler steps", || {
                let _ = scaler.unscale(&mut g);
                for &inf in &infs {
                    scaler.update(inf);
                }
            })?;
            prop_assert!(scaler.scale().is_finite() && scaler.scale() > 0.0);
            prop_assert!(LossScaler::from_state(scaler.state()).is_ok());
        }
    }

    /// Layers, losses, optimizers and training steps on nonsense.
    #[test]
    fn amp_any_input(sizes in prop::collection::vec(prop_oneof![4 => 0usize..5, 1 => Just(usize::MAX)], 0..4), init in nasty_f32(),
                     batch in 0usize..4, labels in prop::collection::vec(0u8..6, 0..5), x in floats(1..8), lw in nasty_f32(),
                     slot in nasty_usize(), lr in nasty_f32(), mom in nasty_f32(), seed in any::<u64>()) {
        let mut rng = StochasticRng::new(seed);
        let mlp = no_panic("Mlp::new", || Mlp::<bf16>::new(&sizes, Activation::Relu, init, &mut rng))?;
        let valid_sizes = sizes.len() >= 2 && sizes.iter().all(|&s| s > 0 && s < 5);
        if !(valid_sizes && init.is_finite() && init > 0.0 && init < 1e30) {
            prop_assert!(mlp.is_err() || (valid_sizes && init.is_finite() && init > 0.0));
        }
        no_panic("Linear::new", || Linear::<f16>::new(3, 2, Activation::Gelu, init, &mut rng))?.ok();
        let logits: Vec<f32> = x.iter().copied().cycle().take(labels.len() * 3).collect();
        let ce = no_panic("softmax_cross_entropy", || softmax_cross_entropy(&logits, &labels, 3))?;
        prop_assert_eq!(ce.is_ok(), !labels.is_empty() && labels.iter().all(|&l| l < 3));
        prop_assert!(no_panic("cross entropy, 0 classes", || softmax_cross_entropy::<f32>(&[], &[], 0))?.is_err());
        let sgd = no_panic("Sgd::new", || Sgd::new(lr, mom, 0.0))?;
        prop_assert_eq!(sgd.is_ok(), lr.is_finite() && lr > 0.0 && (0.0..1.0).contains(&mom));
        let adam = no_panic("AdamW::new", || AdamW::new(lr, mom))?;
        if let Ok(adam) = adam {
            no_panic("with_betas_eps", || adam.clone().with_betas_eps((mom, mom), lr))?.ok();
            let mut adam = adam;
            let mut p = vec![1.0f32; 3];
            prop_assert_eq!(no_panic("AdamW::step", || adam.step(slot, &mut p, &[0.1; 3]))?.is_ok(), slot == 0);
        }
        if let (Ok(mut mlp), Ok(mut opt)) = (mlp, Sgd::new(0.1, 0.9, 0.0)) {
            let inp = sizes[0];
            let xb: Vec<bf16> = x.iter().copied().cycle().take(batch * inp).map(bf16::from_f32).collect();
            let lb: Vec<u32> = labels.iter().copied().cycle().take(batch).map(u32::from).collect();
            let classes = *sizes.last().unwrap();
            let before: Vec<u32> = mlp.layers().iter().flat_map(|l| bits(l.masters().0)).collect();
            let mut scaler = LossScaler::dynamic();
            let out = no_panic("train_step", || train_step(&mut mlp, &mut opt, &mut scaler, &xb, Loss::CrossEntropy { labels: &lb }, lw, Parallelism::Serial))?;
            let expect_ok = !lb.is_empty() && lw.is_finite() && lw > 0.0 && lb.iter().all(|&l| (l as usize) < classes);
            prop_assert_eq!(out.is_ok(), expect_ok, "{:?}", out);
            let after: Vec<u32> = mlp.layers().iter().flat_map(|l| bits(l.masters().0)).collect();
            if out.is_err() || out.is_ok_and(|o| o.skipped) {
                prop_assert_eq!(before, after, "masters moved on an error or a skipped step");
            }
            let wrong = vec![bf16::ZERO; inp + 1];
            prop_assert!(inp == 1 || no_panic("Mlp::forward wrong length", || mlp.forward(&wrong, Parallelism::Serial))?.is_err());
        }
        let mut hist = GradHistogram { counts: vec![], ..GradHistogram::default() };
        no_panic("GradHistogram::add", || { hist.add(&x, lw); has_non_finite(&x) })?;
    }
}

/// The cases the issue named, one by one.
#[test]
fn named_defects_are_fixed() {
    // DynamicQuantLinear: NaN weights and activations, zero input features.
    let w = Tensor::from_vec(&[2, 2], vec![1.0, f32::NAN, 0.5, 0.25]).unwrap();
    assert!(matches!(
        DynamicQuantLinear::new(&w, None),
        Err(Error::InvalidParameter { .. })
    ));
    let w = Tensor::from_vec(&[2, 2], vec![1.0, -1.0, 0.5, 0.25]).unwrap();
    let layer = DynamicQuantLinear::new(&w, None).unwrap();
    let x = Tensor::from_vec(&[1, 2], vec![f32::NAN, 1.0]).unwrap();
    assert!(layer.forward(&x, Parallelism::Serial).is_err());
    let empty = Tensor::<f32>::zeros(&[3, 0]).unwrap();
    assert!(matches!(
        DynamicQuantLinear::new(&empty, None),
        Err(Error::EmptyDimension { .. })
    ));
    // The K limit is found at construction and names the real limit.
    let wide = Tensor::<f32>::zeros(&[1, quant::MAX_IN_FEATURES + 1]).unwrap();
    match DynamicQuantLinear::new(&wide, None) {
        Err(Error::KTooLarge { k, max_k, .. }) => {
            assert_eq!((k, max_k), (65_794, 65_793));
        }
        other => panic!("{other:?}"),
    }
    // qgemm's message states the limit for these operand types and zero points.
    let k = max_k::<u8>(128, 0) + 1;
    let a = vec![0u8; k];
    let b = vec![0i8; k];
    let mut c = [0i32];
    let err = QMatRef::new(MatRef::from_row_major(&a, 1, k).unwrap(), &[128])
        .and_then(|qa| {
            QMatRef::new(MatRef::from_row_major(&b, k, 1).unwrap(), &[0]).and_then(|qb| {
                qgemm(
                    qa,
                    qb,
                    MatMut::from_row_major(&mut c, 1, 1).unwrap(),
                    &QEpilogue::I32,
                    Parallelism::Serial,
                )
            })
        })
        .unwrap_err();
    assert_eq!(
        err,
        Error::KTooLarge {
            what: "qgemm",
            k,
            max_k: 131_071
        }
    );
    assert!(err.to_string().contains("131071") && err.to_string().contains(&k.to_string()));
    // systolic: huge sizes are an error, not a wrapped utilization.
    let tpu = ArrayConfig::tpu();
    assert!(matches!(
        systolic::analyze(&tpu, usize::MAX, 2, 2, Mode::ScaleSim, [u64::MAX; 3]),
        Err(Error::ShapeOverflow { .. })
    ));
    // simulate with a NaN input propagates it.
    let a = [f32::NAN, 1.0];
    let b = [2.0f32, 3.0];
    let sim = systolic::simulate(
        MatRef::from_row_major(&a, 1, 2).unwrap(),
        MatRef::from_row_major(&b, 2, 1).unwrap(),
        &ArrayConfig::new(2, 2, Dataflow::WeightStationary).unwrap(),
    )
    .unwrap();
    assert!(sim.output.as_slice()[0].is_nan());
    // gemm with Threads(usize::MAX) is the serial bits.
    let a = vec![0.1f32; 64 * 64];
    let mut c1 = vec![0.0f32; 64 * 64];
    let mut c2 = c1.clone();
    let av = MatRef::from_row_major(&a, 64, 64).unwrap();
    gemm::gemm(
        av,
        av,
        MatMut::from_row_major(&mut c1, 64, 64).unwrap(),
        &Epilogue::new(),
        Parallelism::Threads(usize::MAX),
    )
    .unwrap();
    gemm::gemm(
        av,
        av,
        MatMut::from_row_major(&mut c2, 64, 64).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
    assert_eq!(bits(&c1), bits(&c2));
    // amp: empty batch, NaN/negative loss weight, NaN/huge init scale.
    let mut rng = StochasticRng::new(1);
    assert!(Mlp::<f16>::new(&[2, 2], Activation::Relu, f32::NAN, &mut rng).is_err());
    assert!(Mlp::<f16>::new(&[2, 2], Activation::Relu, 1e30, &mut rng).is_err());
    let mut mlp = Mlp::<f16>::new(&[2, 2], Activation::Relu, 1.0, &mut rng).unwrap();
    let mut opt = Sgd::new(0.1, 0.9, 0.0).unwrap();
    let mut scaler = LossScaler::dynamic();
    let x = [f16::ONE, f16::ONE];
    for lw in [f32::NAN, -1.0, 0.0, f32::INFINITY] {
        assert!(train_step(
            &mut mlp,
            &mut opt,
            &mut scaler,
            &x,
            Loss::CrossEntropy { labels: &[1] },
            lw,
            Parallelism::Serial
        )
        .is_err());
    }
    assert!(train_step(
        &mut mlp,
        &mut opt,
        &mut scaler,
        &[],
        Loss::CrossEntropy { labels: &[] },
        1.0,
        Parallelism::Serial
    )
    .is_err());
    assert_eq!(scaler.state().steps, 0, "rejected steps are not counted");
    assert!(softmax_cross_entropy::<f32>(&[], &[], 3).is_err());
}

/// The defects and silent accepts the newcomer issue (27) listed, each now
/// a typed error or a documented, tested rule. Run in the debug profile
/// too (`.ci/run`), where the counters' and offsets' overflows panicked.
#[test]
fn newcomer_issue_defects_are_fixed() {
    use mixprec::amp::fp8::{DelayedScaling, Fp8Format, Fp8Recipe, Fp8Scaling, GradFlushStats};
    use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
    use mixprec::gemm::PackedB;
    use mixprec::quant::ptq::{PtqScheme, QuantizedMlp};
    use mixprec::safetensors::Safetensors;
    use mixprec::F4E2M1;

    // FP8 amax history: 0, usize::MAX and MAX_HISTORY + 1 are refused
    // (they panicked in the allocator), MAX_HISTORY is accepted.
    for h in [0, usize::MAX, Fp8Recipe::MAX_HISTORY + 1] {
        assert!(matches!(
            DelayedScaling::new(h, 0, 448.0),
            Err(Error::InvalidParameter { .. })
        ));
    }
    assert!(DelayedScaling::new(Fp8Recipe::MAX_HISTORY, 0, 448.0).is_ok());
    let recipe = |history| Fp8Recipe {
        format: Fp8Format::Hybrid,
        scaling: Fp8Scaling::Delayed { history, margin: 0 },
    };
    let mut rng = StochasticRng::new(1);
    let mut mlp = Mlp::<f32>::new(&[4, 3, 2], Activation::Relu, 1.0, &mut rng).unwrap();
    assert!(mlp.set_fp8(Some(recipe(usize::MAX))).is_err());
    let mut layer = Linear::<f32>::new(4, 3, Activation::Relu, 1.0, &mut rng).unwrap();
    assert!(layer.set_fp8(Some(recipe(usize::MAX))).is_err());
    // ... and a checkpoint asking for it is refused while loading.
    mlp.set_fp8(Some(recipe(16))).unwrap();
    let json = serde_json::to_string(&mlp).unwrap();
    assert!(json.contains("\"history\":16"));
    let bad = json.replace("\"history\":16", "\"history\":18446744073709551615");
    assert!(serde_json::from_str::<Mlp<f32>>(&bad).is_err());

    // Allocation sizes are checked in bytes against isize::MAX: broadcast
    // views whose element count fits usize give ShapeOverflow.
    let one = [1.0f32];
    let huge = MatRef::new(&one, 1 << 30, 1 << 31, 0, 0).unwrap();
    assert!(matches!(
        PackedB::new(huge),
        Err(Error::ShapeOverflow { .. })
    ));
    let huger = MatRef::new(&one, 1 << 31, 1 << 32, 0, 0).unwrap();
    assert!(matches!(
        BlockScaled::<F4E2M1>::mx(huger, MxScaleMode::Floor),
        Err(Error::ShapeOverflow { .. })
    ));
    assert!(matches!(
        BlockScaled::nvfp4(huger, true),
        Err(Error::ShapeOverflow { .. })
    ));
    assert!(matches!(
        BlockScaled::<F8E4M3>::fp8(huger, Fp8Granularity::Lines1x128, false),
        Err(Error::ShapeOverflow { .. })
    ));

    // Scaled FP8 of tiny subnormals: the scale is at least 2^-149, never
    // 0; a zero stays zero, 2^-149 comes back as itself and 100·2^-149 as
    // 96·2^-149 (100 × the scale lies halfway between the E4M3 values 96
    // and 104 and rounds to even), never NaN or 0.
    let tiny = f32::from_bits(1);
    let mut x = vec![0.0f32; 128];
    x[1] = 100.0 * tiny;
    x[2] = tiny;
    let m = MatRef::from_row_major(&x, 1, 128).unwrap();
    for pow2 in [false, true] {
        let q = BlockScaled::<F8E4M3>::fp8(m, Fp8Granularity::Lines1x128, pow2).unwrap();
        assert_eq!(q.scales(), [tiny], "pow2 {pow2}");
        let back = q.dequantize().unwrap();
        let back = back.as_slice();
        assert_eq!(back[0].to_bits(), 0);
        assert_eq!(back[1], 96.0 * tiny);
        assert_eq!(back[2], tiny);
        assert!(back.iter().all(|v| v.is_finite()));
    }
    // An all-zero block keeps scale 1.
    let zeros = [0.0f32; 128];
    let q = BlockScaled::<F8E4M3>::fp8(
        MatRef::from_row_major(&zeros, 1, 128).unwrap(),
        Fp8Granularity::Lines1x128,
        true,
    )
    .unwrap();
    assert_eq!(q.scales(), [1.0]);
    // A block with ±∞ (no NaN) gets a NaN scale, as documented.
    let mut inf_block = x.clone();
    inf_block[5] = f32::NEG_INFINITY;
    let q = BlockScaled::<F8E4M3>::fp8(
        MatRef::from_row_major(&inf_block, 1, 128).unwrap(),
        Fp8Granularity::Lines1x128,
        false,
    )
    .unwrap();
    assert!(q.scales()[0].is_nan());
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&inf_block, 1, 128).unwrap(), false).unwrap();
    assert!(q.scales()[..].iter().any(|s| s.is_nan()));
    // NVFP4 with the tensor scale: amax/2688 underflows to 0 on this
    // non-zero tensor, and the tensor scale is taken as 1.
    let q = BlockScaled::nvfp4(MatRef::from_row_major(&x, 1, 128).unwrap(), true).unwrap();
    assert_eq!(q.nvfp4_scales().unwrap().1, Some(1.0));

    // Counters saturate (they overflowed in debug from a checkpoint's
    // u64::MAX).
    let mut stats = GradFlushStats {
        values: u64::MAX,
        nonzero: u64::MAX,
        flushed_unscaled: u64::MAX,
        flushed_scaled: u64::MAX,
    };
    stats.record(&[1e-30, 1.0], 1.0, 1.0, 1e-20);
    stats.add(&stats.clone());
    assert_eq!(stats.values, u64::MAX);
    assert_eq!(stats.flushed_scaled, u64::MAX);
    let mut hist = GradHistogram {
        total: u64::MAX,
        zeros: u64::MAX,
        lost_unscaled: u64::MAX,
        lost_scaled: u64::MAX,
        overflow_scaled: u64::MAX,
        ..GradHistogram::default()
    };
    hist.counts.iter_mut().for_each(|c| *c = u64::MAX);
    hist.add(&[0.0, 1e-30, 1.0, 1e30], 1.0);
    assert_eq!((hist.total, hist.zeros), (u64::MAX, u64::MAX));

    // PerChannelMinMaxObserver keeps the channel count of a first batch
    // with 0 channels.
    let mut obs = PerChannelMinMaxObserver::new(0);
    obs.observe(&Tensor::<f32>::zeros(&[0, 3]).unwrap())
        .unwrap();
    assert!(matches!(
        obs.observe(&Tensor::<f32>::zeros(&[2, 3]).unwrap()),
        Err(Error::LengthMismatch {
            expected: 0,
            actual: 2,
            ..
        })
    ));
    // HistogramObserver over ±3e38 bins the data (it said "no data").
    let mut h = HistogramObserver::new();
    h.observe(&[-3e38, 3e38, 1.0, 0.0]);
    assert_eq!(h.range(), Some((-3e38, 3e38)));
    assert!(h.qparams::<i8>(Scheme::Symmetric).is_ok());

    // QuantParams deserialized with a range that is not i8's or u8's.
    let bad = r#"{"scales":[0.5],"zero_points":[500],"qmin":-1000,"qmax":1000,"axis":null}"#;
    assert!(serde_json::from_str::<QuantParams>(bad).is_err());

    // Linear::from_weights refuses weights that overflow the working type.
    let w = Tensor::from_vec(&[1, 2], vec![1e30f32, 0.5]).unwrap();
    assert!(matches!(
        Linear::<f16>::from_weights(&w, vec![0.0], Activation::Relu),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(Linear::<f32>::from_weights(&w, vec![0.0], Activation::Relu).is_ok());
    assert!(Linear::<f32>::from_weights(&w, vec![f32::NAN], Activation::Relu).is_err());

    // PTQ: ±∞ in calibration and NaN master weights are refused (they
    // gave a 2^126 scale and a silent 0).
    let mut mlp = Mlp::<f32>::new(&[2, 3, 2], Activation::Relu, 1.0, &mut rng).unwrap();
    let calib = [1.0f32, f32::INFINITY, -1.0, 0.5];
    assert!(matches!(
        QuantizedMlp::new(&mlp, &calib, PtqScheme::FixedPoint, 8),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(QuantizedMlp::new(&mlp, &[1.0, 0.25, -1.0, 0.5], PtqScheme::FixedPoint, 8).is_ok());
    mlp.layers_mut()[0].masters_mut().0[1] = f32::NAN;
    for scheme in [PtqScheme::SymmetricPerChannel, PtqScheme::MxFp4] {
        let bits = scheme.fixed_bits().unwrap_or(8);
        assert!(matches!(
            QuantizedMlp::new(&mlp, &[1.0, 0.25], scheme, bits),
            Err(Error::InvalidParameter { .. })
        ));
    }

    // safetensors: offsets whose sum overflows are InvalidFile (a debug
    // panic inside the safetensors crate before); a quantized tensor
    // without `.range` is InvalidFile; to_bytes is deterministic.
    let header = format!(
        r#"{{"a":{{"dtype":"U8","shape":[1],"data_offsets":[{},{}]}}}}"#,
        u64::MAX - 1,
        u64::MAX
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.push(0);
    assert!(matches!(
        Safetensors::from_bytes(&file),
        Err(Error::InvalidFile { .. })
    ));
    let mut st = Safetensors::new();
    let params = QuantParams::per_tensor::<i8>(0.01, 0).unwrap();
    let q = Tensor::from_vec(&[2], vec![50i8, -100]).unwrap();
    st.insert_quantized("w", q, &params).unwrap();
    st.insert("b", Tensor::from_vec(&[1], vec![1.0f32]).unwrap())
        .unwrap();
    st.set_metadata("z", "last");
    st.set_metadata("a", "first");
    let bytes = st.to_bytes().unwrap();
    assert_eq!(bytes, st.to_bytes().unwrap());
    assert_eq!(
        bytes,
        Safetensors::from_bytes(&bytes).unwrap().to_bytes().unwrap()
    );
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
    let (pa, pz) = (text.find("\"a\"").unwrap(), text.find("\"z\"").unwrap());
    assert!(pa < pz, "metadata keys sorted: {text}");
    let stripped = text.replace(r#""mixprec.quant.w.range":"-128,127","#, "");
    assert_ne!(
        stripped, text,
        "the range key is where it was expected: {text}"
    );
    let stripped = format!("{stripped:<len$}");
    let mut file = (stripped.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(stripped.as_bytes());
    file.extend_from_slice(&bytes[8 + len..]);
    let loaded = Safetensors::from_bytes(&file).unwrap();
    assert!(matches!(
        loaded.quantized::<i8>("w"),
        Err(Error::InvalidFile { .. })
    ));

    // from_mx_parts / from_nvfp4_parts keep the scheme: equal to the
    // original, scales readable back.
    let v: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
    let m = MatRef::from_row_major(&v, 2, 32).unwrap();
    let mx = BlockScaled::<F4E2M1>::mx(m, MxScaleMode::Floor).unwrap();
    let back =
        BlockScaled::from_mx_parts(2, 32, mx.data().to_vec(), mx.e8m0_scales().unwrap()).unwrap();
    assert_eq!(back, mx);
    assert_eq!(back.e8m0_scales(), mx.e8m0_scales());
    let nv = BlockScaled::nvfp4(m, true).unwrap();
    let (codes, s_t) = nv.nvfp4_scales().unwrap();
    let back =
        BlockScaled::from_nvfp4_parts(2, 32, nv.data().to_vec(), codes.to_vec(), s_t).unwrap();
    assert_eq!(back, nv);
    assert!(
        BlockScaled::from_nvfp4_parts(2, 32, nv.data().to_vec(), codes.to_vec(), Some(0.0))
            .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The weight-only entry points (`weight_only_gemm`, `_packed`,
    /// `_fp8`, `_int4`, `WeightOnlyLinear`, `PackedInt4`) with nasty activations,
    /// shapes that do not match, any thread count and nasty int4 parts: a
    /// typed error or the documented result, never a panic.
    #[test]
    fn weight_only_entry_points_never_panic(x in floats(0..200), w in floats(64..300), m in 0usize..4,
                                            k_a in 0usize..200, par in threads(), lines in nasty_usize(),
                                            group in nasty_usize(), scale in nasty_f32(), zero in any::<u8>()) {
        use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp4, PackedFp8, PackedInt4};
        use mixprec::quant::{WeightOnlyLinear, WeightScheme};
        use mixprec::F4E2M1;
        let n = w.len() / 64;
        let finite: Vec<f32> = w.iter().map(|v| if v.is_finite() { v.clamp(-1e30, 1e30) } else { 0.5 }).collect();
        let wm = MatRef::from_row_major(&finite[..n * 64], n, 64)?;
        let b = BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Floor)?;
        let packed = PackedFp4::new(&b);
        let int4 = PackedInt4::quantize(wm, 32)?;
        let fp8 = PackedFp8::new(&BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Ceil)?);
        let xs = &x[..(m * k_a).min(x.len()) / k_a.max(1) * k_a];
        let rows = xs.len().checked_div(k_a).unwrap_or(0);
        if let Ok(a) = MatRef::from_row_major(xs, rows, k_a) {
            let mut y = vec![0.0f32; rows * n];
            let e = Epilogue::new();
            let ok_shape = k_a == 64;
            for r in [
                no_panic("weight_only_gemm", || gemm::weight_only_gemm(a, &b, MatMut::from_row_major(&mut y, rows, n).unwrap(), &e, par))?,
                no_panic("weight_only_gemm_packed", || gemm::weight_only_gemm_packed(a, &packed, MatMut::from_row_major(&mut y, rows, n).unwrap(), &e, par))?,
                no_panic("weight_only_gemm_int4", || gemm::weight_only_gemm_int4(a, &int4, MatMut::from_row_major(&mut y, rows, n).unwrap(), &e, par))?,
                no_panic("weight_only_gemm_fp8", || gemm::weight_only_gemm_fp8(a, &fp8, MatMut::from_row_major(&mut y, rows, n).unwrap(), &e, par))?,
            ] {
                prop_assert_eq!(r.is_ok(), ok_shape && !matches!(par, Parallelism::Threads(0)) , "{:?}", r);
            }
            let layer = no_panic("WeightOnlyLinear::new", || {
                WeightOnlyLinear::new(&Tensor::from_vec(&[n, 64], finite[..n * 64].to_vec()).unwrap(), None, WeightScheme::Nvfp4)
            })?;
            if let (Ok(layer), Ok(t)) = (layer, Tensor::from_vec(&[rows, k_a], xs.to_vec())) {
                let r = no_panic("WeightOnlyLinear::forward", || layer.forward(&t, par))?;
                prop_assert_eq!(r.is_ok(), (ok_shape || rows == 0 && k_a == 64) && !matches!(par, Parallelism::Threads(0)), "{:?}", r.err());
            }
        }
        // Nasty int4 parts: lines up to usize::MAX, any group, scale, zero point.
        let r = no_panic("PackedInt4::from_parts", || {
            PackedInt4::from_parts(lines, 64, group, &[1; 64], &[scale; 2], &[zero; 2])
        })?;
        if r.is_ok() {
            prop_assert!(lines == 1 && group == 32 && scale.is_finite() && scale > 0.0 && zero <= 15);
        }
    }
}

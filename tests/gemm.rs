//! The GEMM engine against the contract's reference loops (bit for bit) and
//! against an f64 product (error bound).

use mixprec::gemm::{self, Activation, Epilogue, Parallelism};
use mixprec::testing::{
    check_bits_eq, check_gemm_within_bound, check_slice_bits_eq, gemm_shapes, mixed,
    strided_matrix, StridedMatrix,
};
use mixprec::{bf16, f16, Error, FloatElement, MatMut, MatRef, F8E4M3};
use mixprec::{Tensor, F8E5M2};
use proptest::prelude::*;

/// A matrix stored with padding and optionally transposed, so views have
/// every kind of stride.
struct Stored<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
    transposed: bool,
    pad: usize,
}

impl<T: FloatElement> Stored<T> {
    fn new(
        rows: usize,
        cols: usize,
        transposed: bool,
        pad: usize,
        mut f: impl FnMut() -> f32,
    ) -> Self {
        let (outer, inner) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let ld = inner + pad;
        let data = (0..outer * ld).map(|_| T::from_f32(f())).collect();
        Self {
            data,
            rows,
            cols,
            transposed,
            pad,
        }
    }
    fn view(&self) -> MatRef<'_, T> {
        let (outer, inner) = if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        };
        let m = MatRef::new(&self.data, outer, inner, inner + self.pad, 1).unwrap();
        if self.transposed {
            m.t()
        } else {
            m
        }
    }
}

/// Values: mostly small numbers, some zeros of both signs, subnormals,
/// and (when `specials`) infinities and NaN.
fn value_gen(seed: u64, specials: bool) -> impl FnMut() -> f32 {
    let mut rng = mixprec::convert::StochasticRng::new(seed);
    move || {
        let r = rng.next_u64();
        match r % 64 {
            0 => 0.0,
            1 => -0.0,
            2 => {
                f32::from_bits((r >> 40) as u32 & 0x7F_FFFF)
                    * if r & 1 << 20 == 0 { 1.0 } else { -1.0 }
            }
            3 if specials => f32::INFINITY,
            4 if specials => f32::NEG_INFINITY,
            5 if specials => f32::NAN,
            _ => ((r >> 32) as i32 as f32) * 2f32.powi(-31 + ((r >> 8) % 8) as i32),
        }
    }
}

fn bits<O: FloatElement>(v: &[O]) -> Vec<u32> {
    v.iter().map(|x| x.to_f32().to_bits()).collect()
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    tc: bool,
    pad: usize,
    threads: usize,
    seed: u64,
    specials: bool,
    epilogue: u8,
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..20,
        0usize..200,
        prop::sample::select(vec![127, 128, 129, 255, 256, 257, 300])
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        dim(),
        dim(),
        dim(),
        any::<(bool, bool, bool)>(),
        0usize..3,
        1usize..5,
        any::<u64>(),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(
            |(m, n, k, (ta, tb, tc), pad, threads, seed, specials, epilogue)| Case {
                m: m.min(200),
                n: n.min(200),
                k,
                ta,
                tb,
                tc,
                pad,
                threads,
                seed,
                specials,
                epilogue,
            },
        )
}

/// Runs the fast path (dispatched, and forced portable) and the reference on
/// one case and compares the bits of C.
fn check_case<T: FloatElement, O: FloatElement>(cs: &Case) {
    let mut g = value_gen(cs.seed, cs.specials);
    let a = Stored::<T>::new(cs.m, cs.k, cs.ta, cs.pad, &mut g);
    let b = Stored::<T>::new(cs.k, cs.n, cs.tb, cs.pad, &mut g);
    let c0 = Stored::<O>::new(cs.m, cs.n, cs.tc, cs.pad, &mut g);
    let bias: Vec<f32> = (0..cs.n).map(|_| g()).collect();
    let epilogue = match cs.epilogue {
        0 => Epilogue::new(),
        1 => Epilogue::new().alpha(0.5).beta(-1.5),
        2 => Epilogue::new().bias(&bias).activation(Activation::Relu),
        _ => Epilogue::new()
            .alpha(2.0)
            .beta(1.0)
            .bias(&bias)
            .activation(Activation::Gelu),
    };
    let (rows, cols) = if cs.tc { (cs.n, cs.m) } else { (cs.m, cs.n) };
    let ld = cols + cs.pad;
    let out = |f: &dyn Fn(MatMut<'_, O>)| {
        let mut data = c0.data.clone();
        let view = MatMut::new(&mut data, rows, cols, ld, 1).unwrap();
        f(if cs.tc { view.t() } else { view });
        data
    };
    let want = out(&|c| gemm::reference(a.view(), b.view(), c, &epilogue).unwrap());
    let par = if cs.threads == 1 {
        Parallelism::Serial
    } else {
        Parallelism::Threads(cs.threads)
    };
    let fast = out(&|c| gemm::gemm(a.view(), b.view(), c, &epilogue, par).unwrap());
    assert_eq!(bits(&fast), bits(&want), "fast path differs: {cs:?}");
    let portable = out(&|c| gemm::gemm_portable(a.view(), b.view(), c, &epilogue, par).unwrap());
    assert_eq!(
        bits(&portable),
        bits(&want),
        "portable path differs: {cs:?}"
    );
    // B packed once (the same packed value serves every call).
    let packed = gemm::PackedB::new(b.view()).unwrap();
    assert_eq!((packed.k(), packed.n()), (cs.k, cs.n));
    let b_values: Vec<u32> = (0..cs.k * cs.n)
        .map(|x| {
            b.view()
                .get(x / cs.n.max(1), x % cs.n.max(1))
                .unwrap()
                .to_f32()
                .to_bits()
        })
        .collect();
    let unpacked: Vec<u32> = packed.to_row_major().iter().map(|v| v.to_bits()).collect();
    assert_eq!(unpacked, b_values);
    let pre = out(&|c| gemm::gemm_packed(a.view(), &packed, c, &epilogue, par).unwrap());
    assert_eq!(bits(&pre), bits(&want), "pre-packed path differs: {cs:?}");
    let pre_portable =
        out(&|c| gemm::gemm_packed_portable(a.view(), &packed, c, &epilogue, par).unwrap());
    assert_eq!(
        bits(&pre_portable),
        bits(&want),
        "pre-packed portable differs: {cs:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn f32_bits_equal_reference(cs in case()) {
        check_case::<f32, f32>(&cs);
    }

    #[test]
    fn f16_bits_equal_reference(cs in case()) {
        check_case::<f16, f32>(&cs);
        check_case::<f16, f16>(&Case { seed: cs.seed ^ 1, ..cs.clone() });
    }

    #[test]
    fn bf16_bits_equal_reference(cs in case()) {
        check_case::<bf16, bf16>(&cs);
    }
}

#[test]
fn large_threaded_bits_equal_reference() {
    // Big enough to run in parallel and to cross MC/NC block edges.
    // The last three are skinny with a large B (K·N ≥ 2^18): B is read in
    // place by the streaming kernel, tails (N % 16) included.
    for (m, n, k) in [
        (301, 530, 260),
        (7, 1100, 129),
        (530, 3, 300),
        (1, 1030, 300),
        (5, 700, 600),
        (20, 513, 600),
    ] {
        for threads in [2, 3, 8] {
            let cs = Case {
                m,
                n,
                k,
                ta: false,
                tb: threads == 3,
                tc: threads == 8,
                pad: 1,
                threads,
                seed: (m * n + threads) as u64,
                specials: false,
                epilogue: 3,
            };
            check_case::<f32, f32>(&cs);
            check_case::<bf16, f32>(&cs);
        }
    }
    check_case::<F8E4M3, f32>(&Case {
        m: 40,
        n: 70,
        k: 300,
        ta: true,
        tb: false,
        tc: false,
        pad: 0,
        threads: 1,
        seed: 5,
        specials: true,
        epilogue: 1,
    });
}

/// |C − A·B| within the contract's bound γ(min(K,128) + ⌈K/128⌉)·|A||B|
/// (u = 2^-24), against the exact product of the (already rounded) inputs:
/// the crate's own `testing::check_gemm_within_bound`.
fn check_bound<T: FloatElement>(m: usize, n: usize, k: usize, seed: u64) {
    let mut g = value_gen(seed, false);
    let a = Stored::<T>::new(m, k, false, 0, &mut g);
    let b = Stored::<T>::new(k, n, true, 0, &mut g);
    let mut c = vec![0.0f32; m * n];
    gemm::gemm(
        a.view(),
        b.view(),
        MatMut::from_row_major(&mut c, m, n).unwrap(),
        &Epilogue::new(),
        Parallelism::Threads(2),
    )
    .unwrap();
    if let Err(report) = check_gemm_within_bound(
        a.view(),
        b.view(),
        MatRef::from_row_major(&c, m, n).unwrap(),
    ) {
        panic!("K={k}: {report}");
    }
}

#[test]
fn error_bound_f32() {
    for (k, seed) in [(1, 1), (127, 2), (128, 3), (129, 4), (1000, 5)] {
        check_bound::<f32>(9, 17, k, seed);
    }
}

#[test]
fn error_bound_f16_and_bf16_inputs() {
    // Products of f16/bf16 are exact in f32, so the same bound holds against
    // the f64 product of the rounded inputs.
    for (k, seed) in [(64, 1), (300, 2), (777, 3)] {
        check_bound::<f16>(8, 19, k, seed);
        check_bound::<bf16>(8, 19, k, seed);
    }
}

#[test]
fn k_zero_gives_the_epilogue_of_zero() {
    let a: [f32; 0] = [];
    let mut c = vec![7.0f32; 6];
    let bias = [1.0f32, -2.0, 3.0];
    gemm::gemm(
        MatRef::new(&a, 2, 0, 0, 1).unwrap(),
        MatRef::new(&a, 0, 3, 3, 1).unwrap(),
        MatMut::from_row_major(&mut c, 2, 3).unwrap(),
        &Epilogue::new()
            .beta(0.5)
            .bias(&bias)
            .activation(Activation::Relu),
        Parallelism::Serial,
    )
    .unwrap();
    assert_eq!(c, [4.5, 1.5, 6.5, 4.5, 1.5, 6.5]);
}

#[test]
fn beta_zero_does_not_read_c() {
    let a = [1.0f32; 4];
    let mut c = [f32::NAN; 4];
    gemm::gemm(
        MatRef::from_row_major(&a, 2, 2).unwrap(),
        MatRef::from_row_major(&a, 2, 2).unwrap(),
        MatMut::from_row_major(&mut c, 2, 2).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap();
    assert_eq!(c, [2.0; 4]);
}

#[test]
fn typed_errors_before_any_work() {
    let a = [0.0f32; 6];
    let b = [0.0f32; 12];
    let mut c = [0.0f32; 8];
    let av = MatRef::from_row_major(&a, 2, 3).unwrap();
    let bv = MatRef::from_row_major(&b, 4, 3).unwrap();
    let err = gemm::gemm(
        av,
        bv,
        MatMut::from_row_major(&mut c, 2, 4).unwrap(),
        &Epilogue::new(),
        Parallelism::Serial,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::ShapeMismatch {
            what: "gemm: A (M×K) and B (K×N)",
            left: vec![2, 3],
            right: vec![4, 3]
        }
    );
    assert!(err.to_string().contains("[2, 3] vs [4, 3]"));
    let bv = MatRef::from_row_major(&b, 3, 4).unwrap();
    let mut c6 = [0.0f32; 6];
    assert!(matches!(
        gemm::gemm(
            av,
            bv,
            MatMut::from_row_major(&mut c6, 2, 3).unwrap(),
            &Epilogue::new(),
            Parallelism::Serial
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let bias = [0.0f32; 3];
    assert!(matches!(
        gemm::gemm(
            av,
            bv,
            MatMut::from_row_major(&mut c, 2, 4).unwrap(),
            &Epilogue::new().bias(&bias),
            Parallelism::Serial
        ),
        Err(Error::LengthMismatch {
            expected: 4,
            actual: 3,
            ..
        })
    ));
    assert!(matches!(
        gemm::gemm(
            av,
            bv,
            MatMut::from_row_major(&mut c, 2, 4).unwrap(),
            &Epilogue::new(),
            Parallelism::Threads(0)
        ),
        Err(Error::InvalidParameter { .. })
    ));
    // An output whose strides make elements share memory.
    let overlapping = MatMut::new(&mut c, 2, 4, 1, 1).unwrap();
    assert!(matches!(
        gemm::gemm(av, bv, overlapping, &Epilogue::new(), Parallelism::Serial),
        Err(Error::InvalidParameter {
            name: "C strides",
            ..
        })
    ));
}

#[test]
fn output_aliasing_an_input_is_an_error() {
    // Safe code cannot alias a MatMut with a MatRef; a caller with raw
    // pointers can. The check compares address ranges.
    let mut buf = vec![1.0f32; 16];
    let ptr = buf.as_mut_ptr();
    // SAFETY (test): the shared view is only read by `gemm`'s validation,
    // which rejects the call before any write.
    let shared: &[f32] = unsafe { std::slice::from_raw_parts(ptr, 16) };
    let a = MatRef::from_row_major(&shared[..4], 2, 2).unwrap();
    let b = MatRef::from_row_major(&shared[12..], 2, 2).unwrap();
    let c = MatMut::from_row_major(&mut buf[..4], 2, 2).unwrap();
    assert_eq!(
        gemm::gemm(a, b, c, &Epilogue::new(), Parallelism::Serial),
        Err(Error::Aliasing { input: "A" })
    );
}

#[test]
fn matmul_convenience() {
    let a: Vec<f32> = (0..6).map(|i| i as f32).collect();
    let m = MatRef::from_row_major(&a, 2, 3).unwrap();
    let c = gemm::matmul(m, m.t(), Parallelism::Threads(2)).unwrap();
    assert_eq!(c.shape(), &[2, 2]);
    assert_eq!(c.as_slice(), &[5.0, 14.0, 14.0, 50.0]);
}

/// The operands of a mixed-type case and the thread count.
type MixedCase<TA, TB, O> = (
    StridedMatrix<TA>,
    StridedMatrix<TB>,
    StridedMatrix<O>,
    usize,
);

fn mixed_case<TA: FloatElement, TB: FloatElement, O: FloatElement>(
) -> impl Strategy<Value = MixedCase<TA, TB, O>> {
    gemm_shapes(40, 3).prop_flat_map(|(m, k, n)| {
        (
            strided_matrix(m, k, mixed::<TA>()).unwrap(),
            strided_matrix(k, n, mixed::<TB>()).unwrap(),
            strided_matrix(m, n, mixed::<O>()).unwrap(),
            1usize..4,
        )
    })
}

fn widened<T: FloatElement>(m: MatRef<'_, T>) -> Tensor<f32> {
    Tensor::from_fn(&[m.rows(), m.cols()], |ix| {
        m.get(ix[0], ix[1]).unwrap().to_f32()
    })
    .unwrap()
}

/// The contract for mixed operands: `gemm_mixed` (dispatched and portable,
/// any thread count) gives the bits of `reference` on the operands widened
/// to f32, and of `reference_mixed`.
fn check_mixed<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    (a, b, c, threads): MixedCase<TA, TB, O>,
) -> Result<(), TestCaseError> {
    let (wa, wb) = (widened(a.view()), widened(b.view()));
    let epilogue = Epilogue::new().alpha(0.75).beta(0.5);
    let par = if threads == 1 {
        Parallelism::Serial
    } else {
        Parallelism::Threads(threads)
    };
    let mut want = c.clone();
    gemm::reference(wa.as_mat()?, wb.as_mat()?, want.view_mut(), &epilogue)?;
    let mut fast = c.clone();
    gemm::gemm_mixed(a.view(), b.view(), fast.view_mut(), &epilogue, par)?;
    check_bits_eq(fast.view(), want.view())?;
    // Nothing outside the output view was touched (padding, offset).
    check_slice_bits_eq(fast.storage(), want.storage())?;
    let mut portable = c.clone();
    gemm::gemm_portable(a.view(), b.view(), portable.view_mut(), &epilogue, par)?;
    check_bits_eq(portable.view(), want.view())?;
    let mut mixed_ref = c;
    gemm::reference_mixed(a.view(), b.view(), mixed_ref.view_mut(), &epilogue)?;
    check_bits_eq(mixed_ref.view(), want.view())?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn mixed_e4m3_e5m2(case in mixed_case::<F8E4M3, F8E5M2, f32>()) {
        check_mixed(case)?;
    }

    #[test]
    fn mixed_e5m2_e4m3(case in mixed_case::<F8E5M2, F8E4M3, bf16>()) {
        check_mixed(case)?;
    }

    #[test]
    fn mixed_bf16_f32(case in mixed_case::<bf16, f32, f32>()) {
        check_mixed(case)?;
    }

    #[test]
    fn mixed_f32_bf16(case in mixed_case::<f32, bf16, f16>()) {
        check_mixed(case)?;
    }

    #[test]
    fn mixed_f16_bf16(case in mixed_case::<f16, bf16, f32>()) {
        check_mixed(case)?;
    }
}

/// `gemm_mixed(a, b)` with each of `threads` equals the reference on the
/// widened operands, bit for bit.
fn mixed_equals_reference<TA: FloatElement, TB: FloatElement>(
    av: MatRef<'_, TA>,
    bv: MatRef<'_, TB>,
    threads: &[usize],
) {
    let (m, n) = (av.rows(), bv.cols());
    let (wa, wb) = (widened(av), widened(bv));
    let mut want = vec![0.0f32; m * n];
    gemm::reference(
        wa.as_mat().unwrap(),
        wb.as_mat().unwrap(),
        MatMut::from_row_major(&mut want, m, n).unwrap(),
        &Epilogue::new(),
    )
    .unwrap();
    for &threads in threads {
        let mut got = vec![0.0f32; m * n];
        gemm::gemm_mixed(
            av,
            bv,
            MatMut::from_row_major(&mut got, m, n).unwrap(),
            &Epilogue::new(),
            Parallelism::Threads(threads),
        )
        .unwrap();
        check_slice_bits_eq(&got, &want).unwrap();
    }
}

/// Skinny products whose B (f32, f16 or bf16 weights) is read in place by
/// the direct kernels, for every row count of a register block (1–6 and
/// past it) and a column count that is not a multiple of 16: the
/// reference's bits.
#[test]
fn skinny_direct_b_of_each_weight_type_equals_reference() {
    fn check<TB: FloatElement>() {
        let (n, k) = (1030, 300);
        let b: Vec<TB> = (0..k * n)
            .map(|i| TB::from_f32(((i % 43) as f32 - 21.0) / 8.0))
            .collect();
        let bv = MatRef::from_row_major(&b, k, n).unwrap();
        for m in [1, 2, 3, 4, 5, 6, 7, 8, 13, 16] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
            mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1]);
        }
    }
    check::<f32>();
    check::<f16>();
    check::<bf16>();
    // FP8 B (E4M3 widened by its f16 pattern times 2^8, E5M2 as an f16's
    // top byte): every code, subnormals and both zeros among them, NaN
    // and infinity codes only in the columns j ≡ 5 (mod 16). With E4M3 and
    // a whole number of 16-column blocks (n = 1024) the kernels take A
    // times 2^8 where that is exact: A's values then reach f32::MAX / 2^8
    // (1e36), and one past it (f32::MAX / 2) keeps A as it is.
    fn check_fp8<TB: FloatElement>(from_bits: fn(u8) -> TB, n: usize) {
        let k = 300;
        let b: Vec<TB> = (0..k * n)
            .map(|i| {
                let (kk, j) = (i / n, i % n);
                let code = ((kk * 7 + j * 3) % 256) as u8;
                let x = from_bits(code);
                if x.to_f32().is_finite() || j % 16 == 5 {
                    x
                } else {
                    from_bits(code & 0x8F)
                }
            })
            .collect();
        let bv = MatRef::from_row_major(&b, k, n).unwrap();
        let plan = gemm::plan(
            MatRef::from_row_major(&vec![0.0f32; k], 1, k).unwrap(),
            bv,
            Parallelism::Serial,
        )
        .unwrap();
        if plan.tier != gemm::Tier::Portable {
            assert_eq!(plan.strategy, gemm::Strategy::DirectB, "{plan}");
        }
        for m in [1, 2, 3, 5, 8, 13, 16] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
            mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1, 2]);
        }
        if n.is_multiple_of(16) {
            for (m, top) in [(1, 1e36f32), (8, 1e36), (13, 1e36), (8, f32::MAX / 2.0)] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| match i % 31 {
                        0 => top,
                        1 => -top,
                        2 => f32::from_bits(3),
                        3 => -1e-40,
                        _ => ((i % 29) as f32 - 14.0) / 5.0,
                    })
                    .collect();
                mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1, 2]);
            }
        }
    }
    for n in [1030, 1024] {
        check_fp8::<F8E4M3>(F8E4M3::from_bits, n);
        check_fp8::<F8E5M2>(F8E5M2::from_bits, n);
    }
    // A small B (133 × 150: read in place at up to 16 rows, bf16 stored
    // [in, out] up to 32), both layouts, on each side of those limits.
    let (n, k) = (150, 133);
    let w: Vec<f32> = (0..k * n).map(|i| ((i % 37) as f32 - 18.0) / 4.0).collect();
    for bv in [
        MatRef::from_row_major(&w, k, n).unwrap(),
        MatRef::from_row_major(&w, n, k).unwrap().t(),
    ] {
        for m in [1, 2, 3, 4, 5, 9, 16, 17] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
            mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1, 2]);
        }
    }
    let w16: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
    for m in [17, 31, 32, 33] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
        let bv = MatRef::from_row_major(&w16, k, n).unwrap();
        mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1, 2]);
    }
}

/// `x · Wᵀ` with W stored `[out, in]` (B a transposed view, its columns
/// contiguous): the strategy that transposes each K-tile of a panel in L1,
/// for row counts across the register block and past it, a K with a short
/// last tile (301: one pair of whole tiles, read side by side for bf16 on
/// AVX-512, then 45 steps; 600: two pairs, so the second pair's sums are
/// added to a non-zero accumulator in tile order), an N that is not a
/// multiple of 16 or 8 (the transpose's blocks and the panel's tail),
/// f32/f16/bf16 weights, and 1, 2 and 3 threads: the reference's bits.
#[test]
fn skinny_transposed_weights_equal_reference() {
    fn check<TB: FloatElement>(k: usize) {
        let n = 1037;
        // W: n rows of k, row-major; B = Wᵀ is k × n.
        let w: Vec<TB> = (0..n * k)
            .map(|i| TB::from_f32(((i * 7 % 43) as f32 - 21.0) / 8.0))
            .collect();
        let bv = MatRef::from_row_major(&w, n, k).unwrap().t();
        assert_eq!((bv.rows(), bv.cols(), bv.row_stride()), (k, n, 1));
        let plan = gemm::plan(
            MatRef::from_row_major(&vec![TB::from_f32(0.0); k], 1, k).unwrap(),
            bv,
            Parallelism::Serial,
        )
        .unwrap();
        if plan.tier != gemm::Tier::Portable {
            assert_eq!(plan.strategy, gemm::Strategy::DirectTransposed, "{plan}");
        }
        for m in [1, 2, 3, 5, 6, 7, 8, 13, 32] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
            mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1, 2, 3]);
        }
    }
    for k in [301, 600] {
        check::<f32>(k);
        check::<f16>(k);
        check::<bf16>(k);
    }
    // f32 W of 16 MiB, which AMD Zen 4 reads in place up to 32 rows of A
    // (packed past 16 rows elsewhere).
    let (n, k) = (4096, 1024);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7 % 43) as f32 - 21.0) / 8.0)
        .collect();
    let bv = MatRef::from_row_major(&w, n, k).unwrap().t();
    for m in [20, 32] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
        mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1]);
    }
    // Rows of W 4 KiB apart (f32, ld 1024) and 2 KiB (bf16), a K that is
    // not a whole number of tiles, starting 0–48 bytes past a 64-byte
    // boundary: where AMD Zen 4 runs all of K per call, reading a line
    // that a tile boundary splits once for both tiles.
    fn strided<TB: FloatElement>() {
        let (n, ld) = (48, 1024);
        let w: Vec<TB> = (0..n * ld + 64)
            .map(|i| TB::from_f32(((i * 5 % 41) as f32 - 20.0) / 8.0))
            .collect();
        let lead = (64 - (w.as_ptr() as usize) % 64) % 64 / size_of::<TB>();
        for (k, start) in [(600, 0), (600, 4), (1000, 12), (131, 8), (256, 0)] {
            let from = lead + start * 4 / size_of::<TB>();
            let bv = MatRef::new(&w[from..], k, n, 1, ld).unwrap();
            for m in [1, 3, 8, 13] {
                let a: Vec<f32> = (0..m * k).map(|i| ((i % 31) as f32 - 15.0) / 4.0).collect();
                mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1]);
            }
        }
    }
    strided::<f32>();
    strided::<bf16>();
}

/// Plain products with one-byte float weights stored `[out, in]` (B a
/// transposed view; FP8 E4M3 and E5M2, FP6, FP4), which read the codes in
/// place as blocks of one K-tile with unit scales: every row count up to
/// the kernel's 32, K of one and several tiles, N of one group of 16
/// lines, a group and a tail, and many groups, NaN and infinity codes in
/// some lines (those lines run the scalar loops), f32 and bf16
/// activations, 1 and 2 threads: the reference's bits. A K that is not a
/// whole number of tiles takes the other paths, also the reference's
/// bits.
#[test]
fn one_byte_weights_out_in_equal_reference() {
    fn check<TB: FloatElement>(specials: bool) {
        for (n, k) in [(16, 128), (53, 384), (1037, 256), (40, 200)] {
            let mut w: Vec<TB> = (0..n * k)
                .map(|i| TB::from_f32(((i * 7 % 43) as f32 - 21.0) / 8.0))
                .collect();
            if specials {
                // A NaN in line 3, an infinity (or NaN, where the format
                // has none) in line 20.
                w[3 * k + k / 2] = TB::from_f32(f32::NAN);
                if n > 20 {
                    w[20 * k + 1] = TB::from_f32(f32::INFINITY);
                }
            }
            let bv = MatRef::from_row_major(&w, n, k).unwrap().t();
            let plan = gemm::plan(
                MatRef::from_row_major(&vec![0.0f32; k], 1, k).unwrap(),
                bv,
                Parallelism::Serial,
            )
            .unwrap();
            if plan.tier != gemm::Tier::Portable && k % gemm::ARRAY_ROWS == 0 {
                assert_eq!(
                    plan.strategy,
                    gemm::Strategy::DirectTransposedBlocks,
                    "{plan}"
                );
            }
            for m in [1, 2, 3, 5, 8, 13, 16, 32] {
                let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
                mixed_equals_reference(MatRef::from_row_major(&a, m, k).unwrap(), bv, &[1, 2]);
                let a16: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
                mixed_equals_reference(MatRef::from_row_major(&a16, m, k).unwrap(), bv, &[1]);
            }
        }
    }
    for specials in [false, true] {
        check::<F8E4M3>(specials);
        check::<F8E5M2>(specials);
        check::<mixprec::F6E2M3>(specials);
        check::<mixprec::F4E2M1>(specials);
    }
}

#[test]
fn mixed_large_skinny_and_threaded() {
    // Skinny with a large B (the path that reads B in place) and blocks
    // crossing MC/NC edges, for bf16 activations × f32 weights and back.
    for (m, n, k) in [(3, 1030, 300), (130, 600, 260)] {
        let a: Vec<bf16> = (0..m * k)
            .map(|i| bf16::from_f32(((i % 37) as f32 - 18.0) / 7.0))
            .collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 41) as f32 - 20.0) / 9.0).collect();
        mixed_equals_reference(
            MatRef::from_row_major(&a, m, k).unwrap(),
            MatRef::from_row_major(&b, k, n).unwrap(),
            &[1, 2, 5],
        );
    }
}

/// Threaded products of 2–32 rows split C's columns, each part computing
/// into a buffer of its own that is then copied into C: the reference's bits
/// for a padded C whose old values the epilogue reads (beta, bias by
/// column), a column-major C, a B whose row stride is a whole number of
/// 4 KiB pages (the direct kernel's sums then start away from B's page
/// offset), f32 and f16 outputs, and
/// thread counts that do and do not divide the 16-column panels.
#[test]
fn threaded_few_rows_split_columns_equal_reference() {
    let (n, k, ldb) = (1000, 1100, 1024);
    let b: Vec<f32> = (0..k * ldb)
        .map(|i| ((i % 47) as f32 - 23.0) / 8.0)
        .collect();
    let bv = MatRef::new(&b, k, n, ldb, 1).unwrap();
    let bias: Vec<f32> = (0..n).map(|j| (j % 13) as f32 - 6.0).collect();
    let epilogue = Epilogue::new().alpha(0.5).beta(-1.25).bias(&bias);
    fn run<O: FloatElement>(
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        epilogue: &Epilogue<'_>,
        transposed: bool,
        par: Option<Parallelism>,
    ) -> Vec<O> {
        let (m, n) = (a.rows(), b.cols());
        let (rows, cols) = if transposed { (n, m) } else { (m, n) };
        let ld = cols + 3;
        let mut data: Vec<O> = (0..rows * ld)
            .map(|i| O::from_f32(((i % 11) as f32 - 5.0) / 4.0))
            .collect();
        let view = MatMut::new(&mut data, rows, cols, ld, 1).unwrap();
        let c = if transposed { view.t() } else { view };
        match par {
            Some(par) => gemm::gemm(a, b, c, epilogue, par).unwrap(),
            None => gemm::reference(a, b, c, epilogue).unwrap(),
        }
        data
    }
    for m in [2, 7, 8, 13, 32] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 29) as f32 - 14.0) / 5.0).collect();
        let av = MatRef::from_row_major(&a, m, k).unwrap();
        for transposed in [false, true] {
            let want = run::<f32>(av, bv, &epilogue, transposed, None);
            let want16 = run::<f16>(av, bv, &epilogue, transposed, None);
            for threads in [2, 3, usize::MAX] {
                let par = Some(Parallelism::Threads(threads));
                let got = run::<f32>(av, bv, &epilogue, transposed, par);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "m={m} threads={threads} {transposed}"
                );
                let got16 = run::<f16>(av, bv, &epilogue, transposed, par);
                assert_eq!(
                    bits(&got16),
                    bits(&want16),
                    "f16 out, m={m} threads={threads}"
                );
            }
        }
    }
}

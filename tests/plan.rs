//! `gemm::plan` and its block-scaled and packed forms name the path that
//! runs: each strategy for the shapes and types that select it, on the
//! tier `active_isa()` names, and the same answer for the same call.

use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp4};
use mixprec::gemm::{
    block_gemm_packed_plan, block_gemm_plan, gemm_packed_plan, plan, PackedB, Parallelism,
    Strategy, Tier,
};
use mixprec::{active_isa, bf16, Error, FloatElement, MatRef, F4E2M1, F8E4M3};

fn tier_of_isa() -> Tier {
    match active_isa() {
        "portable" => Tier::Portable,
        s if s.starts_with("avx512") => Tier::Avx512,
        _ => Tier::Avx2,
    }
}

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.125)
        .collect()
}

/// For each `(rows, want_first, want_second)`: the strategies of `rows`
/// rows of f32 A against `first` and `second` (two K-row B operands, such
/// as one weight stored `[in, out]` and as `w.t()`), off the portable tier.
fn assert_plans_by_rows<T1: FloatElement, T2: FloatElement>(
    first: MatRef<'_, T1>,
    second: MatRef<'_, T2>,
    cases: &[(usize, Strategy, Strategy)],
) -> Result<(), Error> {
    let k = first.rows();
    let most = cases.iter().map(|c| c.0).max().unwrap_or(0);
    let x = vec![0.25f32; most * k];
    for &(rows, want_first, want_second) in cases {
        let xr = MatRef::from_row_major(&x[..rows * k], rows, k)?;
        let (p1, p2) = (
            plan(xr, first, Parallelism::Serial)?,
            plan(xr, second, Parallelism::Serial)?,
        );
        if p1.tier != Tier::Portable {
            let want = (want_first, want_second);
            assert_eq!((p1.strategy, p2.strategy), want, "{rows}: {p1} / {p2}");
        }
    }
    Ok(())
}

#[test]
fn plain_gemm_plans() -> Result<(), Error> {
    let x = vec![bf16::ONE; 4096];
    let w = vec![bf16::ONE; 4096 * 4096];
    let (xm, wm) = (
        MatRef::from_row_major(&x, 1, 4096)?,
        MatRef::from_row_major(&w, 4096, 4096)?,
    );
    let p = plan(xm, wm, Parallelism::Serial)?;
    assert_eq!(p.tier, tier_of_isa());
    assert_eq!(p.parts, 1);
    let direct = if p.tier == Tier::Portable {
        Strategy::Blocked
    } else {
        Strategy::DirectB
    };
    assert_eq!(p.strategy, direct, "{p}");
    // The transposed view of the same weights (W stored [out, in]) has
    // contiguous columns: each K-tile of a panel is transposed in L1.
    let transposed = if p.tier == Tier::Portable {
        Strategy::Blocked
    } else {
        Strategy::DirectTransposed
    };
    assert_eq!(plan(xm, wm.t(), Parallelism::Serial)?.strategy, transposed);
    // A square product is blocked, and split in two for two threads.
    let a = vec![1.0f32; 512 * 512];
    let am = MatRef::from_row_major(&a, 512, 512)?;
    let p = plan(am, am, Parallelism::Threads(2))?;
    assert_eq!((p.strategy, p.parts), (Strategy::Blocked, 2));
    // A small B (K = 512, N = 256) is read in place at up to 16 rows of A,
    // in either layout, and packed from 17 rows on; bf16 B stored
    // [in, out] in place up to 32 rows.
    let small_b = MatRef::from_row_major(&a[..512 * 256], 512, 256)?;
    let small_w = MatRef::from_row_major(&a[..512 * 256], 256, 512)?.t();
    assert_plans_by_rows(
        small_b,
        small_w,
        &[
            (1, Strategy::DirectB, Strategy::DirectTransposed),
            (16, Strategy::DirectB, Strategy::DirectTransposed),
            (17, Strategy::Blocked, Strategy::Blocked),
        ],
    )?;
    let w16 = vec![bf16::ONE; 512 * 256];
    assert_plans_by_rows(
        MatRef::from_row_major(&w16, 512, 256)?,
        MatRef::from_row_major(&w16, 256, 512)?.t(),
        &[
            (16, Strategy::DirectB, Strategy::DirectTransposed),
            (17, Strategy::DirectB, Strategy::Blocked),
            (32, Strategy::DirectB, Strategy::Blocked),
            (33, Strategy::Blocked, Strategy::Blocked),
        ],
    )?;
    // Small one-byte weights [out, in] (FP8, FP4) with K not a multiple of
    // the K-tile (the block kernels do not take them): in place up to 4
    // rows only.
    let (w8s, w4s) = (
        vec![F8E4M3::from_f32(0.5); 256 * 500],
        vec![F4E2M1::from_f32(0.5); 256 * 500],
    );
    assert_plans_by_rows(
        MatRef::from_row_major(&w8s, 256, 500)?.t(),
        MatRef::from_row_major(&w4s, 256, 500)?.t(),
        &[
            (4, Strategy::DirectTransposed, Strategy::DirectTransposed),
            (5, Strategy::Blocked, Strategy::Blocked),
        ],
    )?;
    // FP8 weights (2048 × 4096, 8 MiB of codes): stored [in, out] in place
    // up to 128 rows of A; stored [out, in], past the 32 rows of the block
    // kernels, in place up to 64 rows and packed from 65 on.
    let w8 = vec![F8E4M3::from_f32(0.5); 2048 * 4096];
    assert_plans_by_rows(
        MatRef::from_row_major(&w8, 2048, 4096)?,
        MatRef::from_row_major(&w8, 4096, 2048)?.t(),
        &[
            (64, Strategy::DirectB, Strategy::DirectTransposed),
            (65, Strategy::DirectB, Strategy::Blocked),
            (128, Strategy::DirectB, Strategy::Blocked),
            (129, Strategy::Blocked, Strategy::Blocked),
        ],
    )?;
    // Too little work for threads; an empty C has no parts.
    let s = MatRef::from_row_major(&a[..64], 8, 8)?;
    assert_eq!(plan(s, s, Parallelism::Threads(8))?.parts, 1);
    let e = MatRef::from_row_major(&a[..0], 0, 8)?;
    assert_eq!(plan(e, s, Parallelism::Serial)?.parts, 0);
    // Mismatched inner dimensions are an error that names both shapes.
    let err = plan(s, am, Parallelism::Serial).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    Ok(())
}

#[test]
fn packed_b_plans() -> Result<(), Error> {
    let w = values(4096 * 4096);
    let packed = PackedB::new(MatRef::from_row_major(&w, 4096, 4096)?)?;
    let x = values(4096);
    let p = gemm_packed_plan(
        MatRef::from_row_major(&x, 1, 4096)?,
        &packed,
        Parallelism::Serial,
    )?;
    let want = if p.tier == Tier::Portable {
        Strategy::Blocked
    } else {
        Strategy::DirectPrepacked
    };
    assert_eq!(p.strategy, want, "{p}");
    let wrong = MatRef::from_row_major(&x[..4095], 1, 4095)?;
    assert!(gemm_packed_plan(wrong, &packed, Parallelism::Serial).is_err());
    Ok(())
}

#[test]
fn block_scaled_plans() -> Result<(), Error> {
    let (m, n, k) = (64, 64, 256);
    let xa = values(m * k);
    let xb = values(n * k);
    let a4 = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&xa, m, k)?, MxScaleMode::Floor)?;
    let b4 = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&xb, n, k)?, MxScaleMode::Floor)?;
    let p = block_gemm_plan(&a4, &b4, Parallelism::Serial)?;
    assert_eq!(p.tier, tier_of_isa());
    assert_eq!(p.strategy, Strategy::Fp4Tiles, "{p}");
    // MXFP8: power-of-two scales in range fold into the panels.
    let a8 = BlockScaled::<F8E4M3>::mx(MatRef::from_row_major(&xa, m, k)?, MxScaleMode::Floor)?;
    let b8 = BlockScaled::<F8E4M3>::mx(MatRef::from_row_major(&xb, n, k)?, MxScaleMode::Floor)?;
    let p = block_gemm_plan(&a8, &b8, Parallelism::Serial)?;
    assert_eq!(p.strategy, Strategy::BlockedFoldedScales, "{p}");
    // One FP4 row against wide FP4 weights: exact integer sums on a SIMD tier.
    let wide = values(1024 * 1024);
    let w4 = BlockScaled::<F4E2M1>::mx(
        MatRef::from_row_major(&wide, 1024, 1024)?,
        MxScaleMode::Floor,
    )?;
    let one = BlockScaled::<F4E2M1>::mx(
        MatRef::from_row_major(&wide[..1024], 1, 1024)?,
        MxScaleMode::Floor,
    )?;
    let p = block_gemm_plan(&one, &w4, Parallelism::Serial)?;
    let want = if p.tier == Tier::Portable {
        // No integer dot kernel: the blocked loops, MX scales folded in.
        Strategy::BlockedFoldedScales
    } else {
        Strategy::ExactSmallFp4
    };
    assert_eq!(p.strategy, want, "{p}");
    // Packed FP4 weights stream for integer-valued activations (on the
    // float GEMM's tier, whose integer dots are AVX2's), and unpack for
    // MXFP8 activations.
    let packed = PackedFp4::new(&w4);
    let p = block_gemm_packed_plan(&one, &packed, Parallelism::Serial)?;
    assert_eq!(p.strategy, Strategy::PackedFp4, "{p}");
    assert_eq!(p.tier, tier_of_isa());
    let one8 = BlockScaled::<F8E4M3>::mx(
        MatRef::from_row_major(&wide[..1024], 1, 1024)?,
        MxScaleMode::Floor,
    )?;
    let p = block_gemm_packed_plan(&one8, &packed, Parallelism::Serial)?;
    assert_ne!(p.strategy, Strategy::PackedFp4, "{p}");
    // K that differs is an error.
    assert!(block_gemm_plan(&a4, &w4, Parallelism::Serial).is_err());
    Ok(())
}

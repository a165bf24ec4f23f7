//! AVX2 + FMA micro-kernel: a 6×16 block in twelve ymm accumulators, one
//! `vfmadd231ps` per (row, 8 columns, k), which is the contract's
//! `p = fma(a, b, p)` with one rounding.
//!
//! One idea: the AVX2 float kernel family (packed tiles, their
//! block-scaled forms, the direct-B kernel), whose parts share the 6 × 16
//! layout and the chain macro; the AVX-512 leaf reuses several of them.
//! The FP4 integer dots these kernels expose live in
//! [`super::x86_avx2_fp4`].

use super::x86_avx2_fp4::fp4_tile_avx2;
use super::{
    check_fp4_tile, checked_tiles, epilogue_rows_body, scaled_blocks_loop, scaling_blocks,
    DirectLoad, DirectReads, Fp4Tile, Kernel, RowLoad,
};
use crate::dtype::FloatElement;
use crate::gemm::Epilogue;
use std::arch::x86_64::*;

/// 6 rows × 16 columns (two ymm registers per row).
pub(crate) struct Avx2;

const MR: usize = 6;
const NR: usize = 16;

/// The [`Kernel`] methods that both x86 kernels (this one and
/// `x86_avx512::Avx512`) take from this leaf: the small-M FP4 dot
/// products, which B types the direct kernel reads, and the epilogue.
/// Each asserts the bounds its `#[target_feature]` function relies on.
macro_rules! avx2_shared_methods {
    ($dense_fp4:path, $dense_fp8:path, $e4m3_scales:path, $direct_t:path) => {
        fn has_fp4_dots() -> bool {
            true
        }

        fn fp4_dots8(
            lines: &$crate::gemm::kernel::Fp4Lines<'_>,
            a_abs: &[u8],
            a_int: &[i8],
            sa: &[f32],
            g: f32,
            out: &mut [f32; 8],
        ) {
            let len = lines.blocks * lines.block;
            assert!(lines.block == 16 || lines.block.is_multiple_of(32));
            assert!(lines.ld >= len && lines.codes.len() >= 7 * lines.ld + len);
            assert!(a_abs.len() >= len && a_int.len() >= len && sa.len() >= lines.blocks);
            let last = lines.scale_start.iter().max().copied().unwrap_or(0);
            assert!(lines.blocks == 0 || last + lines.blocks <= lines.scales.len());
            // SAFETY: the driver selects this kernel only when the CPU has AVX2
            // and FMA; the asserts above bound every read (codes of 8 lines,
            // A's row, the scales of every line and block).
            unsafe {
                $crate::gemm::kernel::x86_avx2_fp4::fp4_dots8_avx2(
                    lines,
                    a_abs.as_ptr(),
                    a_int.as_ptr(),
                    sa.as_ptr(),
                    g,
                    out,
                )
            };
        }

        fn fp4_packed8(
            codes: &[u8],
            scales: &[f32],
            block: usize,
            a_abs: &[u8],
            a_int: &[i8],
            sa: &[f32],
            g: f32,
            out: &mut [f32; 8],
        ) {
            let blocks = sa.len();
            let len = blocks * block;
            assert!(block.is_multiple_of(16) && block <= 128);
            assert!(codes.len() >= len * 4 && scales.len() >= blocks * 8);
            assert!(a_abs.len() >= len && a_int.len() >= len);
            // SAFETY: the driver selects this kernel only when the CPU has AVX2
            // and FMA; the asserts bound every read.
            unsafe {
                $crate::gemm::kernel::x86_avx2_fp4::fp4_packed8_avx2(
                    codes.as_ptr(),
                    scales.as_ptr(),
                    block,
                    blocks,
                    a_abs.as_ptr(),
                    a_int.as_ptr(),
                    sa.as_ptr(),
                    g,
                    out,
                )
            }
        }

        $crate::gemm::kernel::x86_fp4_dense::dense_methods!($dense_fp4, $dense_fp8, $e4m3_scales);

        fn reads_direct<T: $crate::dtype::FloatElement>() -> bool {
            matches!(
                T::DTYPE,
                $crate::dtype::DType::F32
                    | $crate::dtype::DType::F16
                    | $crate::dtype::DType::BF16
                    | $crate::dtype::DType::F8E4M3
                    | $crate::dtype::DType::F8E5M2
            )
        }

        fn reads_direct_t<T: $crate::dtype::FloatElement>() -> bool {
            $crate::gemm::kernel::DirectLoad::of::<T>().is_some()
        }

        fn tile_direct_t<T: $crate::dtype::FloatElement>(
            kt: usize,
            rows: usize,
            a: &[f32],
            w: &[T],
            ld: usize,
            nb: usize,
            p: &mut [f32],
        ) {
            let mr = <Self as $crate::gemm::kernel::Kernel>::DIRECT_MR;
            assert!((1..=mr).contains(&rows) && mr <= 8 && a.len() >= kt * mr);
            assert!(kt == 0 || nb == 0 || w.len() >= (nb - 1) * ld + kt);
            assert!(p.len() >= rows * nb);
            let kt8 = match $crate::gemm::kernel::DirectLoad::of::<T>() {
                Some(load) if nb.is_multiple_of(8) => {
                    let (ap, wp, pp) = (a.as_ptr(), w.as_ptr() as *const u8, p.as_mut_ptr());
                    let kt8 = kt / 8 * 8;
                    let shape = $crate::gemm::kernel::x86_transposed::TransposedTile {
                        kt8,
                        mr,
                        ld,
                        nb,
                        load,
                    };
                    // SAFETY: the driver selects this kernel only when the
                    // CPU has the features of `$direct_t`'s tier; the
                    // asserts bound every access (A: kt8 ≤ kt steps of mr
                    // values; W: nb rows of ld, kt8 ≤ kt values each; p:
                    // rows × nb); `load` reads elements of the type `T` is.
                    unsafe { $direct_t(rows, ap, wp, pp, shape) };
                    kt8
                }
                _ => 0,
            };
            // The last kt % 8 steps (or all, for other types or widths)
            // continue the same chains.
            $crate::gemm::kernel::tile_direct_scalar::<T>(mr, kt8..kt, rows, a, w, (1, ld), nb, p);
        }

        fn epilogue_rows(
            epilogue: &$crate::gemm::Epilogue<'_>,
            acc: &[f32],
            ld_acc: usize,
            out: &mut [f32],
            ld_out: usize,
            rows: usize,
            cols: usize,
            col0: usize,
        ) {
            // SAFETY: only selected when the CPU has AVX2 and FMA.
            unsafe {
                $crate::gemm::kernel::x86_avx2::epilogue_rows_fma(
                    epilogue, acc, ld_acc, out, ld_out, rows, cols, col0,
                )
            }
        }
    };
}
pub(crate) use avx2_shared_methods;

impl Kernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    /// Xeon, forced, K = N = 4096, MXFP4², integer sums / codes in place
    /// (ms): M = 1 1.21 / 2.35, 2 2.26 / 2.83, 4 4.35 / 3.76.
    const EXACT_SMALL_ROWS: usize = 2;

    checked_tiles!(
        tile_avx2,
        tile_scaled_avx2,
        tile_scaled_blocks_avx2,
        tile_blocks_avx2
    );
    avx2_shared_methods!(
        super::x86_fp4_dense::fp4_dense_checked,
        super::x86_fp8_dense::fp8_dense_checked,
        super::x86_fp4_dense::e4m3_scales_avx2,
        super::x86_transposed::direct_t_avx2
    );
    // FP8/FP6 in place up to 24 rows: at 32 the blocked loops were faster
    // (Xeon, forced AVX2, K = N = 4096: 36.1 vs 31.3 ms; at 24 24.9 vs 25.5).
    super::x86_blocks_t::blocks_t_methods!(
        super::x86_blocks_t::tile_blocks_t_avx2,
        24,
        whole: super::x86_blocks_t::blocks_t_whole_avx2
    );

    fn fp4_tile(
        blocks: usize,
        quads: usize,
        t: &Fp4Tile<'_>,
        acc: &mut [f32],
        ld: usize,
        first: bool,
    ) {
        assert!(
            quads <= 8,
            "{quads} quads per block: the i16 sums need at most 8"
        );
        check_fp4_tile(blocks, quads, t, acc, ld);
        // SAFETY: the driver selects this kernel only when the CPU has AVX2
        // and FMA; the asserts bound every access.
        unsafe { fp4_tile_avx2(blocks, quads, t, acc.as_mut_ptr(), ld, first) }
    }

    fn tile_direct<T: FloatElement>(
        kt: usize,
        rows: usize,
        a: &[f32],
        b: &[T],
        b_stride: usize,
        nb: usize,
        p: &mut [f32],
        reads: DirectReads,
    ) {
        assert!((1..=MR).contains(&rows) && a.len() >= kt * MR && nb.is_multiple_of(NR));
        assert!(kt == 0 || b.len() >= (kt - 1) * b_stride + nb);
        assert!(p.len() >= rows * nb);
        let (ap, pp) = (a.as_ptr(), p.as_mut_ptr());
        macro_rules! go {
            ($load:expr) => {
                // SAFETY: the CPU has AVX2, FMA and F16C (the driver's
                // dispatch); the asserts bound every access; `$load` reads
                // elements of the type `T` is.
                unsafe {
                    let bp = b.as_ptr() as *const u8;
                    match rows {
                        1 => tile_direct_avx2::<1>(kt, ap, bp, b_stride, nb, pp, $load),
                        2 => tile_direct_avx2::<2>(kt, ap, bp, b_stride, nb, pp, $load),
                        3 => tile_direct_avx2::<3>(kt, ap, bp, b_stride, nb, pp, $load),
                        4 => tile_direct_avx2::<4>(kt, ap, bp, b_stride, nb, pp, $load),
                        5 => tile_direct_avx2::<5>(kt, ap, bp, b_stride, nb, pp, $load),
                        _ => tile_direct_avx2::<6>(kt, ap, bp, b_stride, nb, pp, $load),
                    }
                }
            };
        }
        match RowLoad::read::<T>(reads) {
            Some(load) => go!(load),
            None => super::tile_direct_scalar::<T>(MR, 0..kt, rows, a, b, (b_stride, 1), nb, p),
        }
    }

    fn direct_wants_a_times_256<T: FloatElement>() -> bool {
        // The E4M3 widening gives `w · 2^-8` ([`e4m3_as_f16`]).
        T::DTYPE == crate::dtype::DType::F8E4M3
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn epilogue_rows_fma(
    epilogue: &Epilogue<'_>,
    acc: &[f32],
    ld_acc: usize,
    out: &mut [f32],
    ld_out: usize,
    rows: usize,
    cols: usize,
    col0: usize,
) {
    epilogue_rows_body(epilogue, acc, ld_acc, out, ld_out, rows, cols, col0)
}

/// The 6×16 block of chains `p` over `kt` steps of the packed panels (a
/// macro so that it inlines into every kernel: a `#[target_feature]`
/// function cannot be `inline(always)`, and returning the twelve
/// registers through memory costs as much as a short block's chains).
///
/// Used inside `unsafe`: `a` has `kt * 6` readable floats, `b` has `kt * 16`.
macro_rules! chains_avx2 {
    ($kt:expr, $a:expr, $b:expr) => {{
        let (kt, a, b): (usize, *const f32, *const f32) = ($kt, $a, $b);
        let mut p = [[_mm256_setzero_ps(); 2]; MR];
        // One step of the chain: p[r][..] = fma(a[r], b[..], p[r][..]).
        #[inline(always)]
        fn step(p: &mut [[__m256; 2]; MR], a: *const f32, b: *const f32) {
            // SAFETY: the caller passes pointers to one k-step of each panel.
            unsafe {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (r, pr) in p.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(r));
                    pr[0] = _mm256_fmadd_ps(av, b0, pr[0]);
                    pr[1] = _mm256_fmadd_ps(av, b1, pr[1]);
                }
            }
        }
        let (mut a, mut b) = (a, b);
        // Unrolled by four (loop overhead costs ~9% otherwise); k stays in order.
        for _ in 0..kt / 4 {
            // SAFETY: four more k-steps remain in both panels.
            unsafe {
                step(&mut p, a, b);
                step(&mut p, a.add(MR), b.add(NR));
                step(&mut p, a.add(2 * MR), b.add(2 * NR));
                step(&mut p, a.add(3 * MR), b.add(3 * NR));
                a = a.add(4 * MR);
                b = b.add(4 * NR);
            }
        }
        for _ in 0..kt % 4 {
            // SAFETY: one more k-step remains in both panels.
            unsafe {
                step(&mut p, a, b);
                a = a.add(MR);
                b = b.add(NR);
            }
        }
        p
    }};
}

/// # Safety
/// `a` has `kt * 6` readable floats, `b` has `kt * 16`, and `acc` has rows
/// `0..6` of 16 floats at stride `ld`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    kt: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    // The caller's contract covers the panels (the macro's reads).
    let p = chains_avx2!(kt, a, b);
    for (r, pr) in p.iter().enumerate() {
        // SAFETY: row r < 6 of the accumulator block, 16 floats.
        unsafe {
            let dst = acc.add(r * ld);
            // acc = start + p, with start = +0.0 on the first K-tile.
            let (s0, s1) = if first {
                (_mm256_setzero_ps(), _mm256_setzero_ps())
            } else {
                (_mm256_loadu_ps(dst), _mm256_loadu_ps(dst.add(8)))
            };
            _mm256_storeu_ps(dst, _mm256_add_ps(s0, pr[0]));
            _mm256_storeu_ps(dst.add(8), _mm256_add_ps(s1, pr[1]));
        }
    }
}

/// [`Kernel::tile_blocks`]: [`tile_avx2`] for each block of a K-tile in
/// one function, so that one block's accumulate overlaps the next block's
/// chains.
///
/// # Safety
/// As [`tile_avx2`] for `kt` steps; `block > 0`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_blocks_avx2(
    kt: usize,
    block: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    for (i, b0, bt) in scaling_blocks(kt, block) {
        // SAFETY: block i's panels start at step b0 < kt (this function's
        // contract).
        unsafe { tile_avx2(bt, a.add(b0 * MR), b.add(b0 * NR), acc, ld, first && i == 0) }
    }
}

/// [`tile_avx2`] for one scaling block: `acc = fma(p, sa[r]·sb[c], start)`.
///
/// # Safety
/// As [`tile_avx2`], and `sa` has 6 readable floats, `sb` 16.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_scaled_avx2(
    kt: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
    sa: *const f32,
    sb: *const f32,
) {
    // The caller's contract covers the panels (the macro's reads).
    let p = chains_avx2!(kt, a, b);
    // SAFETY: the caller's contract covers the scales and the accumulator.
    unsafe {
        let (sb0, sb1) = (_mm256_loadu_ps(sb), _mm256_loadu_ps(sb.add(8)));
        for (r, pr) in p.iter().enumerate() {
            let dst = acc.add(r * ld);
            let s = _mm256_broadcast_ss(&*sa.add(r));
            // fl(sa · sb), one rounding, then one FMA into the accumulator.
            let (s0, s1) = (_mm256_mul_ps(s, sb0), _mm256_mul_ps(s, sb1));
            let (z0, z1) = if first {
                (_mm256_setzero_ps(), _mm256_setzero_ps())
            } else {
                (_mm256_loadu_ps(dst), _mm256_loadu_ps(dst.add(8)))
            };
            _mm256_storeu_ps(dst, _mm256_fmadd_ps(pr[0], s0, z0));
            _mm256_storeu_ps(dst.add(8), _mm256_fmadd_ps(pr[1], s1, z1));
        }
    }
}

/// [`Kernel::tile_scaled_blocks`]: the blocks of a K-tile in one function,
/// so that one block's accumulate overlaps the next block's chains.
///
/// # Safety
/// As [`tile_scaled_avx2`] for every block `i` (panels from step `i·block`,
/// scales at `i·stride`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_scaled_blocks_avx2(
    kt: usize,
    block: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
    sa: (*const f32, usize),
    sb: (*const f32, usize),
) {
    scaled_blocks_loop!(tile_scaled_avx2(kt, block, a, b, acc, ld, first, sa, sb))
}

/// The leaf's loads of B for the direct kernels (here and in
/// [`super::x86_transposed`]).
pub(super) trait LoadB {
    unsafe fn load8(self, p: *const u8) -> __m256;
}

impl LoadB for DirectLoad {
    /// # Safety
    /// `p` points at 8 readable elements of this type; AVX2 and F16C present.
    #[inline(always)]
    unsafe fn load8(self, p: *const u8) -> __m256 {
        // SAFETY: per the function's contract.
        unsafe {
            match self {
                DirectLoad::F32 => _mm256_loadu_ps(p as *const f32),
                DirectLoad::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
                DirectLoad::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(
                    _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
                )),
            }
        }
    }
}

impl LoadB for RowLoad {
    /// # Safety
    /// `p` points at 8 readable elements of this type; AVX2 and F16C present.
    #[inline(always)]
    unsafe fn load8(self, p: *const u8) -> __m256 {
        // SAFETY: per the function's contract.
        unsafe {
            // Each code in the top byte of a 16-bit lane, the low byte zero.
            let codes_high =
                || _mm_unpacklo_epi8(_mm_setzero_si128(), _mm_loadl_epi64(p as *const __m128i));
            match self {
                RowLoad::Dense(load) => load.load8(p),
                RowLoad::E4M3 => _mm256_mul_ps(
                    _mm256_cvtph_ps(e4m3_as_f16(codes_high())),
                    _mm256_set1_ps(256.0),
                ),
                RowLoad::E4M3Over256 => _mm256_cvtph_ps(e4m3_as_f16(codes_high())),
                RowLoad::E5M2 => _mm256_cvtph_ps(codes_high()),
            }
        }
    }
}

/// Eight E4M3 codes (each the top byte of a 16-bit lane, the low byte
/// zero) as the f16s of their values times 2^-8, exactly: an arithmetic
/// shift right by one puts the magnitude bits in place below the sign
/// (E4M3's exponent bias is 8 less than f16's, and its subnormals land on
/// f16 subnormals); bit 14, a copy of the sign, is cleared, and set for
/// the NaN codes (magnitude 0x7F), which gives them f16's all-ones
/// exponent, sign kept.
#[inline(always)]
fn e4m3_as_f16(high: __m128i) -> __m128i {
    // SAFETY: SSE2 only (x86_64's baseline).
    unsafe {
        let shifted = _mm_srai_epi16::<1>(high);
        let exponent_mantissa = _mm_set1_epi16(0x3F80);
        let nan = _mm_cmpeq_epi16(_mm_and_si128(shifted, exponent_mantissa), exponent_mantissa);
        _mm_or_si128(
            _mm_and_si128(shifted, _mm_set1_epi16(!0x4000)),
            _mm_and_si128(nan, _mm_set1_epi16(0x4000)),
        )
    }
}

/// K-steps per pass over a row of B in [`tile_direct_avx2`]: that many rows
/// of B stream at once, which the hardware prefetchers follow.
const DIRECT_K_GROUP: usize = 8;

/// Partial sums of `R` rows of the A panel (stride 6) times `nb` columns of
/// B read in place (row stride `bs` elements), into `p` (`R` rows of `nb`,
/// zeroed by the caller). For each output the chain runs over k in
/// increasing order exactly as in `tile_avx2`; only the traversal differs:
/// a group of k-steps sweeps across all columns, keeping each 16-column
/// block of `p` in registers for the group.
///
/// # Safety
/// AVX2, FMA and F16C present; `a` has `kt * 6` floats; `b` has
/// `(kt - 1) * bs + nb` elements of `load`'s type; `p` has `R * nb` floats;
/// `nb` is a multiple of 16.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_direct_avx2<const R: usize>(
    kt: usize,
    a: *const f32,
    b: *const u8,
    bs: usize,
    nb: usize,
    p: *mut f32,
    load: RowLoad,
) {
    let row_bytes = bs * load.size();
    let vec_bytes = 8 * load.size();
    for g in (0..kt).step_by(DIRECT_K_GROUP) {
        let steps = DIRECT_K_GROUP.min(kt - g);
        for j in (0..nb).step_by(NR) {
            // SAFETY: rows < R of p, columns j..j + 16 < nb; k-steps
            // g..g + steps < kt of A and B; B columns j..j + 16 < nb.
            unsafe {
                let mut sums = [[_mm256_setzero_ps(); 2]; R];
                for (r, s) in sums.iter_mut().enumerate() {
                    s[0] = _mm256_loadu_ps(p.add(r * nb + j));
                    s[1] = _mm256_loadu_ps(p.add(r * nb + j + 8));
                }
                for kk in g..g + steps {
                    let bk = b.add(kk * row_bytes + j * load.size());
                    let b0 = load.load8(bk);
                    let b1 = load.load8(bk.add(vec_bytes));
                    let ak = a.add(kk * MR);
                    for (r, s) in sums.iter_mut().enumerate() {
                        let av = _mm256_broadcast_ss(&*ak.add(r));
                        s[0] = _mm256_fmadd_ps(av, b0, s[0]);
                        s[1] = _mm256_fmadd_ps(av, b1, s[1]);
                    }
                }
                for (r, s) in sums.iter().enumerate() {
                    _mm256_storeu_ps(p.add(r * nb + j), s[0]);
                    _mm256_storeu_ps(p.add(r * nb + j + 8), s[1]);
                }
            }
        }
    }
}

//! AVX2 + FMA micro-kernel: a 6×16 block in twelve ymm accumulators, one
//! `vfmadd231ps` per (row, 8 columns, k), which is the contract's
//! `p = fma(a, b, p)` with one rounding.
//!
//! One file past 700 lines on purpose: it is one idea, the AVX2 float
//! kernel family (packed tiles, their block-scaled forms, the direct-B
//! kernel, the FP4 integer dots), whose parts share the 6 × 16 layout and
//! the chain macro; the AVX-512 leaf reuses several of them.

use super::{
    check_fp4_tile, checked_tiles, epilogue_rows_body, scaled_blocks_loop, scaling_blocks,
    DirectLoad, Fp4Lines, Fp4Tile, Kernel, FP4_MR, FP4_NR, FP4_TIMES_2,
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
                $crate::gemm::kernel::x86_avx2::fp4_dots8_avx2(
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
                $crate::gemm::kernel::x86_avx2::fp4_packed8_avx2(
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
                $crate::dtype::DType::F32 | $crate::dtype::DType::F16 | $crate::dtype::DType::BF16
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
        _from_memory: bool,
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
        match DirectLoad::of::<T>() {
            Some(load) => go!(load),
            None => super::tile_direct_scalar::<T>(MR, 0..kt, rows, a, b, (b_stride, 1), nb, p),
        }
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
    load: DirectLoad,
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

/// Σ a·b of 32 byte pairs as eight i32 (four products each): FP4 codes of B
/// decoded to 2·value by a table lookup, A as |a| (u8) and its sign.
/// `vpmaddubsw` cannot saturate here: |a| ≤ 128 and |2·b| ≤ 12.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fp4_dot32(codes: __m256i, a_abs: __m256i, a_int: __m256i, lut: __m256i) -> __m256i {
    let b = _mm256_shuffle_epi8(lut, _mm256_and_si256(codes, _mm256_set1_epi8(0x0F)));
    let pairs = _mm256_maddubs_epi16(a_abs, _mm256_sign_epi8(b, a_int));
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// Lane j of the result: the sum of the eight lanes of `v[j]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum_lanes8(v: &[__m256i; 8]) -> __m256i {
    let t01 = _mm256_hadd_epi32(v[0], v[1]);
    let t23 = _mm256_hadd_epi32(v[2], v[3]);
    let t45 = _mm256_hadd_epi32(v[4], v[5]);
    let t67 = _mm256_hadd_epi32(v[6], v[7]);
    let u0 = _mm256_hadd_epi32(t01, t23);
    let u1 = _mm256_hadd_epi32(t45, t67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(u0, u1),
        _mm256_permute2x128_si256::<0x31>(u0, u1),
    )
}

/// Bytes ahead of the current block that [`fp4_dots8_avx2`] prefetches
/// on each line (a hint: past the end it fetches nothing useful, harmlessly).
const PREFETCH_AHEAD: usize = 512;

/// [`Kernel::fp4_dots8`] (bounds checked by the caller).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn fp4_dots8_avx2(
    lines: &Fp4Lines<'_>,
    a_abs: *const u8,
    a_int: *const i8,
    sa: *const f32,
    g: f32,
    out: &mut [f32; 8],
) {
    let t = FP4_TIMES_2;
    let lut = _mm256_setr_epi8(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
        t[12], t[13], t[14], t[15],
    );
    let (block, ld) = (lines.block, lines.ld);
    let codes = lines.codes.as_ptr();
    let gv = _mm256_set1_ps(g);
    let mut acc = _mm256_setzero_ps();
    let mut sb = [_mm256_setzero_ps(); 8];
    for blk in 0..lines.blocks {
        // B's scales for the 8 lines, eight blocks at a time: 8 loads and a
        // transpose (a gather per block costs more than the block's dots).
        let within = blk % 8;
        if within == 0 {
            let scale = |j: usize, b: usize| lines.scales[lines.scale_start[j] + b];
            if blk + 8 <= lines.blocks {
                let rows: [__m256; 8] = std::array::from_fn(|j| {
                    let row = &lines.scales[lines.scale_start[j] + blk..][..8];
                    // SAFETY: `row` holds 8 f32.
                    unsafe { _mm256_loadu_ps(row.as_ptr()) }
                });
                sb = crate::simd::x86_64::transpose8x8(rows);
            } else {
                for (b, v) in sb.iter_mut().enumerate().take(lines.blocks - blk) {
                    *v = _mm256_setr_ps(
                        scale(0, blk + b),
                        scale(1, blk + b),
                        scale(2, blk + b),
                        scale(3, blk + b),
                        scale(4, blk + b),
                        scale(5, blk + b),
                        scale(6, blk + b),
                        scale(7, blk + b),
                    );
                }
            }
        }
        let off = blk * block;
        let mut v = [_mm256_setzero_si256(); 8];
        for (j, vj) in v.iter_mut().enumerate() {
            // SAFETY (all loads): off + block <= blocks · block, which the
            // caller checked against A's row and each line of codes.
            unsafe {
                let line = codes.add(j * ld + off);
                // Eight streams at once are more than the hardware
                // prefetcher follows well: fetch each line ahead.
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(PREFETCH_AHEAD) as *const i8);
                if block == 16 {
                    macro_rules! load {
                        ($p:expr) => {
                            _mm256_zextsi128_si256(_mm_loadu_si128($p as *const __m128i))
                        };
                    }
                    *vj = fp4_dot32(
                        load!(line),
                        load!(a_abs.add(off)),
                        load!(a_int.add(off)),
                        lut,
                    );
                } else {
                    macro_rules! load {
                        ($p:expr) => {
                            _mm256_loadu_si256($p as *const __m256i)
                        };
                    }
                    for c in (0..block).step_by(32) {
                        let d = fp4_dot32(
                            load!(line.add(c)),
                            load!(a_abs.add(off + c)),
                            load!(a_int.add(off + c)),
                            lut,
                        );
                        *vj = _mm256_add_epi32(*vj, d);
                    }
                }
            }
        }
        // p = exact sum · g; acc = fma(p, fl(sa · sb), acc).
        let p = _mm256_mul_ps(_mm256_cvtepi32_ps(sum_lanes8(&v)), gv);
        // SAFETY: blk < blocks <= sa's length (checked).
        let s_a = unsafe { *sa.add(blk) };
        acc = _mm256_fmadd_ps(p, _mm256_mul_ps(_mm256_set1_ps(s_a), sb[within]), acc);
    }
    // SAFETY: `out` holds 8 f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
}

/// [`Kernel::fp4_packed8`] (bounds checked by the caller). Per 8 values of
/// k, one 32-byte load holds the 8 lines' codes (low nibbles: k to k + 3,
/// high: k + 4 to k + 7, four bytes per line), so each `vpmaddubsw` lane
/// pair belongs to one line and no horizontal sums are needed. The i16
/// pair sums of a 32-value run are added before widening: at most
/// 8 · 2 · 128 · 12 = 24576 < 2^15.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn fp4_packed8_avx2(
    codes: *const u8,
    scales: *const f32,
    block: usize,
    blocks: usize,
    a_abs: *const u8,
    a_int: *const i8,
    sa: *const f32,
    g: f32,
    out: &mut [f32; 8],
) {
    let t = FP4_TIMES_2;
    let lut = _mm256_setr_epi8(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
        t[12], t[13], t[14], t[15],
    );
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let gv = _mm256_set1_ps(g);
    let mut acc = _mm256_setzero_ps();
    // SAFETY (all reads): k < blocks · block, whose codes (k/2 bytes per
    // line, 8 lines), A values and scales the caller checked.
    unsafe {
        // Four values of A (as |a| and a) repeated for the eight lines.
        macro_rules! a4 {
            ($p:expr) => {
                _mm256_set1_epi32(($p as *const i32).read_unaligned())
            };
        }
        let run_len = block.min(32);
        for blk in 0..blocks {
            let mut d = _mm256_setzero_si256();
            for run in (0..block).step_by(run_len) {
                let mut pairs = _mm256_setzero_si256();
                for q in (0..run_len).step_by(8) {
                    let k0 = blk * block + run + q;
                    let v = _mm256_loadu_si256(codes.add(k0 * 4) as *const __m256i);
                    let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
                    let hi =
                        _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(v), low));
                    let p_lo = _mm256_maddubs_epi16(
                        a4!(a_abs.add(k0)),
                        _mm256_sign_epi8(lo, a4!(a_int.add(k0))),
                    );
                    let p_hi = _mm256_maddubs_epi16(
                        a4!(a_abs.add(k0 + 4)),
                        _mm256_sign_epi8(hi, a4!(a_int.add(k0 + 4))),
                    );
                    pairs = _mm256_add_epi16(pairs, _mm256_add_epi16(p_lo, p_hi));
                }
                d = _mm256_add_epi32(d, _mm256_madd_epi16(pairs, ones));
            }
            let p = _mm256_mul_ps(_mm256_cvtepi32_ps(d), gv);
            let s = _mm256_mul_ps(
                _mm256_set1_ps(*sa.add(blk)),
                _mm256_loadu_ps(scales.add(blk * 8)),
            );
            acc = _mm256_fmadd_ps(p, s, acc);
        }
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
    }
}

/// [`Kernel::fp4_tile`] on AVX2: per k-quad, two 32-byte loads of B (16
/// columns × 4 k) and per row one broadcast of A's 4 bytes and two
/// `vpmaddubsw` (u8 · i8 pair sums, at most 2 · 24 · 12), summed in i16
/// lanes over the block's quads (at most 8 · 576 = 4608: no saturation);
/// at the block's end `vpmaddwd` by ones gives each column's i32 sum, the
/// offset correction is subtracted and the f32 block accumulate applied.
///
/// # Safety
/// AVX2 and FMA; the bounds [`Kernel::fp4_tile`] asserts.
#[target_feature(enable = "avx2,fma")]
unsafe fn fp4_tile_avx2(
    blocks: usize,
    quads: usize,
    t: &Fp4Tile<'_>,
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    let ones = _mm256_set1_epi16(1);
    let (mut a, mut b) = (t.a.as_ptr(), t.b.as_ptr());
    for blk in 0..blocks {
        let mut p = [[_mm256_setzero_si256(); 2]; FP4_MR];
        // SAFETY (all accesses): quad q < blocks · quads of both panels,
        // block blk's corrections and scales, rows < FP4_MR of `acc`.
        unsafe {
            for _ in 0..quads {
                let b0 = _mm256_loadu_si256(b as *const __m256i);
                let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
                for (r, pr) in p.iter_mut().enumerate() {
                    let av = _mm256_set1_epi32((a.add(4 * r) as *const i32).read_unaligned());
                    pr[0] = _mm256_add_epi16(pr[0], _mm256_maddubs_epi16(av, b0));
                    pr[1] = _mm256_add_epi16(pr[1], _mm256_maddubs_epi16(av, b1));
                }
                a = a.add(4 * FP4_MR);
                b = b.add(4 * FP4_NR);
            }
            // The i16 pair sums of each lane, widened to its column's i32.
            let sums = p.map(|pr| pr.map(|v| _mm256_madd_epi16(v, ones)));
            fp4_block_accumulate(&sums, t, blk, acc, ld, first && blk == 0);
        }
    }
}

/// The end of block `blk` of an FP4 × FP4 tile, from each column's integer
/// sum Σ(2a + 12)·2b (two i32 vectors per row): d = that − 12·Σ2b = 4·Σab,
/// exact; p = d / 4 (exact in f32, |d| < 2^24); then the contract's
/// `acc = fma(p, fl(sa·sb), acc)`, from +0.0 with `start_zero`.
///
/// # Safety
/// AVX2 and FMA; the bounds [`Kernel::fp4_tile`] checks, `blk` < its
/// `blocks`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn fp4_block_accumulate(
    sums: &[[__m256i; 2]; FP4_MR],
    t: &Fp4Tile<'_>,
    blk: usize,
    acc: *mut f32,
    ld: usize,
    start_zero: bool,
) {
    let quarter = _mm256_set1_ps(0.25);
    // SAFETY: block blk's corrections and scales and rows < FP4_MR of `acc`
    // are within the bounds the caller's contract gives.
    unsafe {
        let corr = t.corr.as_ptr().add(blk * FP4_NR);
        let (c0, c1) = (
            _mm256_loadu_si256(corr as *const __m256i),
            _mm256_loadu_si256(corr.add(8) as *const __m256i),
        );
        let sb = t.sb.0.as_ptr().add(blk * t.sb.1);
        let (sb0, sb1) = (_mm256_loadu_ps(sb), _mm256_loadu_ps(sb.add(8)));
        let sa = t.sa.0.as_ptr().add(blk * t.sa.1);
        for (r, sr) in sums.iter().enumerate() {
            let p0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sr[0], c0)), quarter);
            let p1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sr[1], c1)), quarter);
            let s = _mm256_broadcast_ss(&*sa.add(r));
            let dst = acc.add(r * ld);
            let (z0, z1) = if start_zero {
                (_mm256_setzero_ps(), _mm256_setzero_ps())
            } else {
                (_mm256_loadu_ps(dst), _mm256_loadu_ps(dst.add(8)))
            };
            _mm256_storeu_ps(dst, _mm256_fmadd_ps(p0, _mm256_mul_ps(s, sb0), z0));
            _mm256_storeu_ps(dst.add(8), _mm256_fmadd_ps(p1, _mm256_mul_ps(s, sb1), z1));
        }
    }
}

//! AVX-512 micro-kernel: an 8×16 block, one zmm register per row, one
//! `vfmadd231ps zmm` per (row, 16 columns, k): each lane is the contract's
//! chain `p = fma(a, b, p)`, so the bits are those of every other kernel.
//! The blocked loops run it on three B panels at once where they can
//! ([`Kernel::tile_panels`]: 8 × 48, 24 chains; two for the last panels), so
//! that each broadcast of A feeds three FMAs: a CPU with two zmm FMA pipes
//! (Intel) is bound by its loads otherwise (Ice Lake, f32 1024³: 6×16
//! tiles one panel at a time about 48 GFLOP/s, 6 × 32 about 72, 8 × 32
//! about 98, 8 × 48 about 105–110, of a 176 GFLOP/s FMA peak; OpenBLAS on
//! the same core 93–120). The B panels are the AVX2
//! kernel's (16 columns, so that pre-packed weights serve both tiers), and
//! so are the small-M FP4 dot products and the epilogue; the direct-B kernel of skinny products is
//! the AVX2 one's traversal on zmm registers ([`super::x86_avx512_direct`]), the `x · Wᵀ` kernel of f32
//! and bf16 W is [`super::x86_avx512_transposed`]'s, and the FP4 × FP4
//! integer tile sums its byte products with `vpdpbusd` (AVX-512 VNNI).

use super::x86_avx2::avx2_shared_methods;
use super::x86_avx2_fp4::fp4_block_accumulate;
use super::x86_avx512_direct::{tile_direct_avx512, DIRECT_K_GROUP, DIRECT_K_GROUP_FROM_MEMORY};
use super::x86_blocks_t::blocks_t_methods;
use super::{
    check_fp4_tile, checked_tiles, scaled_blocks_loop, scaling_blocks, tile_direct_scalar,
    DirectLoad, DirectReads, Fp4Tile, Kernel, RowLoad, FP4_MR, FP4_NR,
};
use crate::dtype::FloatElement;
use crate::gemm::ARRAY_ROWS;
use crate::simd::x86_64::dpbusd_quads;
use std::arch::x86_64::*;

/// 8 rows × 16 columns (one zmm register per row), or 8 × 32 / 8 × 48 on
/// two or three B panels.
pub(crate) struct Avx512;

const MR: usize = 8;
pub(super) const NR: usize = 16;
/// Rows of the direct kernel's A panel: 8 zmm sums, one B vector.
pub(super) const DIRECT_MR: usize = 8;

impl Kernel for Avx512 {
    const MR: usize = MR;
    const DIRECT_MR: usize = DIRECT_MR;
    const DENSE_ROWS: usize = super::DENSE_ROWS_WIDE;
    /// Intel Xeon, K = N = 4096, MXFP4 × MXFP4, ms integer sums / codes in
    /// place: M = 1 1.21 / 1.30, 2 2.26 / 1.49, 4 4.35 / 2.07.
    const EXACT_SMALL_ROWS: usize = 1;
    const NR: usize = NR;

    checked_tiles!(
        tile_avx512,
        tile_scaled_avx512,
        tile_scaled_blocks_avx512,
        tile_blocks_avx512
    );
    avx2_shared_methods!(
        super::x86_avx512_dense::fp4_dense_checked_avx512,
        super::x86_avx512_fp8_dense::fp8_dense_checked_avx512,
        super::x86_avx512_dense::e4m3_scales_avx512,
        super::x86_avx512_transposed::direct_t_avx512
    );

    fn fp4_tile(
        blocks: usize,
        quads: usize,
        t: &Fp4Tile<'_>,
        acc: &mut [f32],
        ld: usize,
        first: bool,
    ) {
        check_fp4_tile(blocks, quads, t, acc, ld);
        // SAFETY: the CPU has AVX2, FMA and AVX-512 F/BW/VL/VNNI (the
        // driver's choice of kernel); the asserts bound every access.
        unsafe { fp4_tile_vnni(blocks, quads, t, acc.as_mut_ptr(), ld, first) }
    }

    fn tile_panels(
        kt: usize,
        a: &[f32],
        b: &[&[f32]],
        acc: &mut [f32],
        ld: usize,
        first: bool,
    ) -> bool {
        let width = b.len() * NR;
        assert!(a.len() >= kt * MR && b.iter().all(|p| p.len() >= kt * NR));
        assert!(ld >= width && acc.len() >= (MR - 1) * ld + width);
        let (ap, accp) = (a.as_ptr(), acc.as_mut_ptr());
        // SAFETY: the CPU has AVX2, FMA and AVX-512F (the driver's choice
        // of kernel); the asserts bound the panels' reads and the 8 ×
        // width block of `acc`.
        unsafe {
            match *b {
                [b0, b1] => tile_panels_avx512(kt, ap, [b0.as_ptr(), b1.as_ptr()], accp, ld, first),
                [b0, b1, b2] => {
                    let bp = [b0.as_ptr(), b1.as_ptr(), b2.as_ptr()];
                    tile_panels_avx512(kt, ap, bp, accp, ld, first)
                }
                _ => return false,
            }
        }
        true
    }

    /// 16 rows on one pair of groups, except where the core has two load
    /// ports ([`crate::cpu::two_load_ports`]): there each of those FMAs
    /// needs its own broadcast of A, and 8 rows on two pairs (two FMAs
    /// per broadcast) are faster (Intel Xeon, Ice Lake-SP, K = N = 4096,
    /// M = 16 / 32, ms: MXFP4 7.0–7.2 / 14.7–16.0 → 5.7–6.1 / 8.9–12.5,
    /// int4 6.7 / 12.5–13.2 → 5.0–5.1 / 9.7–11.0, NVFP4 7.7–8.3 /
    /// 16.4–16.8 → 5.5–7.4 / 10.8–11.0).
    fn fp4_dense_rows() -> usize {
        if crate::cpu::two_load_ports() {
            super::DENSE_ROWS_WIDE
        } else {
            super::FP4_DENSE_ROWS_WIDE
        }
    }

    fn direct_t_in_place_rows<T: FloatElement>() -> usize {
        // Where an L1 set holds fewer than 12 lines (AMD Zen 4), f32,
        // bf16 and f16 W in place to 32 rows, where the kernel reads all of K per
        // call (`tile_run_direct_t`): K = N = 4096, M = 32, bf16 19.4 →
        // 11.7–14.2 ms, f32 19.4–19.8 → 15.3–16.0; f32 at K = 1024, N =
        // 2048 2.05 → 1.80, at N = K = 512 0.23–0.28 → 0.20, at N = K =
        // 1024 (in cache) 0.87 → 0.89 (packing widens bf16, and from
        // memory it does not overlap the FMAs); f16 alike since its AVX-512
        // kernel (M = 20 / 32 14.8 / 19.1 → 8.7 / 12.3 ms).
        if crate::cpu::narrow_l1() && DirectLoad::of::<T>().is_some() {
            32
        } else {
            16
        }
    }

    fn direct_t_outputs<T: FloatElement>() -> usize {
        match DirectLoad::of::<T>() {
            Some(_) => super::x86_avx512_transposed::OUTPUTS,
            None => 8,
        }
    }

    fn tile_run_direct_t<T: FloatElement>(
        rows: usize,
        a: &[f32],
        w: &[T],
        ld: usize,
        nb: usize,
        k: usize,
        acc: &mut [f32],
        ld_acc: usize,
    ) -> bool {
        use super::x86_avx512_transposed::{one_load_lines, one_load_span};
        use super::x86_avx512_transposed::{tile_run_direct_t_avx512 as t, OUTPUTS};
        // Where the one-tile kernel reads whole lines.
        let Some(load) = DirectLoad::of::<T>() else {
            return false;
        };
        let size = load.size();
        if !one_load_lines(ld * size)
            || nb == 0
            || !nb.is_multiple_of(OUTPUTS)
            || k == 0
            || w.len() < (nb - 1) * ld + k
        {
            return false;
        }
        // The steps after the last whole line: whole 16-byte pieces.
        let (_, end) = one_load_span(w.as_ptr() as *const u8, ld * size, size, k);
        if !((k - end) * size).is_multiple_of(16) {
            return false;
        }
        assert!((1..=DIRECT_MR).contains(&rows) && a.len() >= k * DIRECT_MR);
        assert!(acc.len() >= (rows - 1) * ld_acc + nb);
        let shape = super::x86_transposed::TransposedTile {
            kt8: 0,
            mr: DIRECT_MR,
            ld,
            nb,
            load,
        };
        let (ap, wp, cp) = (a.as_ptr(), w.as_ptr() as *const u8, acc.as_mut_ptr());
        macro_rules! by_rows {
            ($w:ident) => {
                // SAFETY: the CPU has AVX-512F (the driver's dispatch); the
                // checks and asserts bound every access (A: k steps of
                // DIRECT_MR values; W: nb rows of ld, k values each, whole
                // pieces after the last whole line; acc: rows rows of nb,
                // ld_acc apart); `$w` is the format `T` is.
                unsafe {
                    match rows {
                        1 => t::<1, $w>(ap, wp, cp, ld_acc, k, shape),
                        2 => t::<2, $w>(ap, wp, cp, ld_acc, k, shape),
                        3 => t::<3, $w>(ap, wp, cp, ld_acc, k, shape),
                        4 => t::<4, $w>(ap, wp, cp, ld_acc, k, shape),
                        5 => t::<5, $w>(ap, wp, cp, ld_acc, k, shape),
                        6 => t::<6, $w>(ap, wp, cp, ld_acc, k, shape),
                        7 => t::<7, $w>(ap, wp, cp, ld_acc, k, shape),
                        _ => t::<8, $w>(ap, wp, cp, ld_acc, k, shape),
                    }
                }
            };
        }
        use super::x86_avx512_transposed::{W_BF16, W_F16, W_F32};
        match load {
            DirectLoad::F32 => by_rows!(W_F32),
            DirectLoad::BF16 => by_rows!(W_BF16),
            DirectLoad::F16 => by_rows!(W_F16),
        }
        true
    }

    fn tile_pair_direct_t<T: FloatElement>(
        rows: usize,
        a: &[f32],
        w: &[T],
        ld: usize,
        nb: usize,
        acc: &mut [f32],
        ld_acc: usize,
    ) -> bool {
        // bf16 only: f32 rows arrive at half the rate, one chain keeps up,
        // and a second place read in each row slowed f32 by 10–15 %.
        // Not where an L1 set holds fewer than 12 lines: there the
        // one-tile kernel, which reads each line of W by one load, is
        // faster (AMD EPYC, Zen 4, K = N = 4096, bf16 W: M = 1 3.0–4.9 →
        // 2.3–2.6 ms, M = 8 4.9 → 4.4).
        if crate::cpu::narrow_l1()
            || T::DTYPE != crate::dtype::DType::BF16
            || nb == 0
            || !nb.is_multiple_of(super::x86_avx512_transposed::OUTPUTS)
        {
            return false;
        }
        let kt = ARRAY_ROWS;
        assert!((1..=DIRECT_MR).contains(&rows) && a.len() >= 2 * kt * DIRECT_MR);
        assert!(w.len() >= (nb - 1) * ld + 2 * kt);
        assert!(acc.len() >= (rows - 1) * ld_acc + nb);
        let shape = super::x86_transposed::TransposedTile {
            kt8: kt,
            mr: DIRECT_MR,
            ld,
            nb,
            load: DirectLoad::BF16,
        };
        let (ap, wp, cp) = (a.as_ptr(), w.as_ptr() as *const u8, acc.as_mut_ptr());
        use super::x86_avx512_transposed::tile_pair_direct_t_avx512 as t;
        // SAFETY: the CPU has AVX-512F (the driver's dispatch); the asserts
        // bound every access (A: two tiles of DIRECT_MR values per step; W:
        // nb rows of ld, two tiles each; acc: rows rows of nb, ld_acc
        // apart); `T` is bf16 (checked above).
        unsafe {
            match rows {
                1 => t::<1>(ap, wp, cp, ld_acc, shape),
                2 => t::<2>(ap, wp, cp, ld_acc, shape),
                3 => t::<3>(ap, wp, cp, ld_acc, shape),
                4 => t::<4>(ap, wp, cp, ld_acc, shape),
                5 => t::<5>(ap, wp, cp, ld_acc, shape),
                6 => t::<6>(ap, wp, cp, ld_acc, shape),
                7 => t::<7>(ap, wp, cp, ld_acc, shape),
                _ => t::<8>(ap, wp, cp, ld_acc, shape),
            }
        }
        true
    }

    fn fp8_staged_runs() -> bool {
        crate::cpu::has_avx512_vbmi_gfni()
    }

    fn fp8_staged(
        rows: &super::Fp4DenseRows<'_>,
        panels: &[f32],
        codes: &[u8],
        scales: &[f32],
        groups: usize,
        out: &mut [f32],
        out_stride: usize,
    ) -> bool {
        use super::x86_avx512_blocks_staged::{fp8_packed_staged, PackedE4M3};
        use super::x86_blocks_t::BlocksT;
        use super::{FP8_STAGED_MAX_ROWS, FP8_STAGED_PANEL};
        let (k, block) = (rows.k, rows.block);
        if !Self::fp8_staged_runs()
            || groups == 0
            || !groups.is_multiple_of(2)
            || block == 0
            || !block.is_multiple_of(16)
            || !(1..=FP8_STAGED_MAX_ROWS).contains(&rows.rows)
        {
            return false;
        }
        let blocks = k / block;
        assert!(blocks * block == k && FP8_STAGED_PANEL == DIRECT_MR);
        assert!(panels.len() >= rows.rows.div_ceil(FP8_STAGED_PANEL) * FP8_STAGED_PANEL * k);
        assert!(rows.sa.len() >= rows.rows * blocks);
        assert!(codes.len() >= groups * 8 * k && scales.len() >= groups * 8 * blocks);
        assert!(out_stride >= groups * 8 && out.len() >= (rows.rows - 1) * out_stride + groups * 8);
        // Calls of up to 32 lines (two staged groups of 16, four packed
        // groups of 8).
        for c0 in (0..groups).step_by(4) {
            let packed = 4.min(groups - c0);
            let call = BlocksT {
                rows: rows.rows,
                groups: packed / 2,
                k,
                block,
                a: panels.as_ptr(),
                mr: FP8_STAGED_PANEL,
                sa: rows.sa.as_ptr(),
                codes: std::ptr::null(),
                ld: 0,
                sb: std::ptr::null(),
                sb_start: [0; 32],
                out: out[8 * c0..].as_mut_ptr(),
                out_ld: out_stride,
                a_times_256: rows.prescaled,
            };
            let src = PackedE4M3 {
                codes: codes[c0 * 8 * k..].as_ptr(),
                code_stride: 8 * k,
                scales: scales[c0 * 8 * blocks..].as_ptr(),
                scale_stride: 8 * blocks,
                unscale: !rows.prescaled,
            };
            // SAFETY: the CPU has AVX-512 F/BW, VBMI and GFNI (checked);
            // the asserts bound every access: the panels (rows, k), A's
            // scales, the packed groups c0..c0 + packed of k steps and
            // their blocks, the output rows; block a multiple of 16 and k
            // of block; PackedFp8 streams no NaN code.
            unsafe { fp8_packed_staged(&call, &src) };
        }
        true
    }

    blocks_t_methods!(
        super::x86_avx512_blocks_t::tile_blocks_t_avx512,
        32,
        whole: super::x86_avx512_blocks_staged::blocks_t_whole_avx512
    );

    fn direct_wants_a_times_256<T: FloatElement>() -> bool {
        // The E4M3 widening gives `w · 2^-8` (x86_avx512_direct).
        T::DTYPE == crate::dtype::DType::F8E4M3
    }

    fn blocks_t_wants_a_times_256<T: FloatElement>() -> bool {
        // The E4M3 decodes give `value · 2^-8` (x86_avx512_blocks_t).
        T::DTYPE == crate::dtype::DType::F8E4M3
    }

    fn blocks_t_wide_panels() -> bool {
        // Only the whole-line kernel takes panels of 16 rows.
        super::x86_avx512_blocks_staged::whole_lines_take_every_call()
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
        let Some(load) = RowLoad::read::<T>(reads) else {
            return tile_direct_scalar(DIRECT_MR, 0..kt, rows, a, b, (b_stride, 1), nb, p);
        };
        assert!((1..=DIRECT_MR).contains(&rows) && a.len() >= kt * DIRECT_MR);
        assert!(nb.is_multiple_of(NR));
        assert!(kt == 0 || b.len() >= (kt - 1) * b_stride + nb);
        assert!(p.len() >= rows * nb);
        let (ap, bp, pp) = (a.as_ptr(), b.as_ptr() as *const u8, p.as_mut_ptr());
        let group = if reads.from_memory {
            DIRECT_K_GROUP_FROM_MEMORY
        } else {
            DIRECT_K_GROUP
        };
        // SAFETY: the CPU has AVX2, FMA, F16C and AVX-512F (the driver's
        // dispatch); the asserts bound every access; `load` reads elements
        // of the type `T` is.
        unsafe {
            match rows {
                1 => tile_direct_avx512::<1>(kt, ap, bp, b_stride, nb, pp, load, group),
                2 => tile_direct_avx512::<2>(kt, ap, bp, b_stride, nb, pp, load, group),
                3 => tile_direct_avx512::<3>(kt, ap, bp, b_stride, nb, pp, load, group),
                4 => tile_direct_avx512::<4>(kt, ap, bp, b_stride, nb, pp, load, group),
                5 => tile_direct_avx512::<5>(kt, ap, bp, b_stride, nb, pp, load, group),
                6 => tile_direct_avx512::<6>(kt, ap, bp, b_stride, nb, pp, load, group),
                7 => tile_direct_avx512::<7>(kt, ap, bp, b_stride, nb, pp, load, group),
                _ => tile_direct_avx512::<8>(kt, ap, bp, b_stride, nb, pp, load, group),
            }
        }
    }
}

/// The 8×16 block of chains `p` over `kt` steps of the packed panels, one
/// zmm per row (a macro so that it inlines into every kernel, as in the
/// AVX2 leaf).
///
/// Used inside `unsafe`: `a` has `kt * 8` readable floats, `b` has `kt * 16`.
macro_rules! chains_avx512 {
    ($kt:expr, $a:expr, $b:expr) => {{
        let (kt, a, b): (usize, *const f32, *const f32) = ($kt, $a, $b);
        let mut p = [_mm512_setzero_ps(); MR];
        // One step of the chain: p[r] = fma(a[r], b[..], p[r]).
        #[inline(always)]
        fn step(p: &mut [__m512; MR], a: *const f32, b: *const f32) {
            // SAFETY: the caller passes pointers to one k-step of each panel.
            unsafe {
                let bv = _mm512_loadu_ps(b);
                for (r, pr) in p.iter_mut().enumerate() {
                    *pr = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(r)), bv, *pr);
                }
            }
        }
        let (mut a, mut b) = (a, b);
        // Unrolled by four; k stays in order.
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

/// `acc = start + p` (the plain tile): [`tile_panels_avx512`] on one panel.
///
/// # Safety
/// AVX2, FMA and AVX-512F; `a` has `kt * 8` readable floats, `b` has
/// `kt * 16`, and `acc` has rows `0..8` of 16 floats at stride `ld`.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_avx512(
    kt: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    // SAFETY: the same contract, for one panel.
    unsafe { tile_panels_avx512::<1>(kt, a, [b], acc, ld, first) }
}

/// [`Kernel::tile_panels`]: [`tile_avx512`] over `V` B panels, 8 × `V`
/// chains, so each broadcast of A feeds `V` FMAs (see the module docs for
/// the figures).
///
/// # Safety
/// AVX2, FMA and AVX-512F; `a` has `kt * 8` readable floats, each of `b`
/// `kt * 16`, and `acc` has rows `0..8` of `16 · V` floats at stride `ld`.
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_panels_avx512<const V: usize>(
    kt: usize,
    a: *const f32,
    b: [*const f32; V],
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    let mut p = [[_mm512_setzero_ps(); V]; MR];
    // SAFETY: steps 0..kt of each panel (the function's contract); rows
    // r < 8 of the accumulator block, 16 · V floats.
    unsafe {
        for i in 0..kt {
            // One step of the chains: p[r][v] = fma(a[r], b_v[..], p[r][v]).
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(b[v].add(i * NR)));
            fma_step(&mut p, a.add(i * MR), &bv);
        }
        for (r, pr) in p.iter().enumerate() {
            for (v, pv) in pr.iter().enumerate() {
                let dst = acc.add(r * ld + v * NR);
                let start = if first {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(dst)
                };
                _mm512_storeu_ps(dst, _mm512_add_ps(start, *pv));
            }
        }
    }
}

/// [`Kernel::tile_blocks`] with the accumulator block in registers across
/// the K-tile's scaling blocks: `sum = start`, then `sum = sum + p` after
/// each block's chains, one store at the end (the default loads and
/// stores it around every block; an f32 value survives memory exactly, so
/// the bits are the same).
///
/// # Safety
/// As [`tile_avx512`] for `kt` steps; `block > 0`.
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_blocks_avx512(
    kt: usize,
    block: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    let mut sum = [_mm512_setzero_ps(); MR];
    if !first {
        for (r, s) in sum.iter_mut().enumerate() {
            // SAFETY: row r < 8 of the accumulator block, 16 floats.
            *s = unsafe { _mm512_loadu_ps(acc.add(r * ld)) };
        }
    }
    for (_, b0, bt) in scaling_blocks(kt, block) {
        // SAFETY: the block's panels start at step b0 < kt and end by kt
        // (this function's contract).
        let (a0, b0) = unsafe { (a.add(b0 * MR), b.add(b0 * NR)) };
        let p = chains_avx512!(bt, a0, b0);
        for (s, pr) in sum.iter_mut().zip(&p) {
            *s = _mm512_add_ps(*s, *pr);
        }
    }
    for (r, s) in sum.iter().enumerate() {
        // SAFETY: row r < 8 of the accumulator block, 16 floats.
        unsafe { _mm512_storeu_ps(acc.add(r * ld), *s) };
    }
}

/// [`tile_avx512`] for one scaling block: `acc = fma(p, sa[r]·sb[c], start)`.
///
/// # Safety
/// As [`tile_avx512`], and `sa` has 8 readable floats, `sb` 16.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_scaled_avx512(
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
    let p = chains_avx512!(kt, a, b);
    // SAFETY: the caller's contract covers the scales and the accumulator.
    unsafe {
        let sbv = _mm512_loadu_ps(sb);
        for (r, pr) in p.iter().enumerate() {
            let dst = acc.add(r * ld);
            // fl(sa · sb), one rounding, then one FMA into the accumulator.
            let s = _mm512_mul_ps(_mm512_set1_ps(*sa.add(r)), sbv);
            let start = if first {
                _mm512_setzero_ps()
            } else {
                _mm512_loadu_ps(dst)
            };
            _mm512_storeu_ps(dst, _mm512_fmadd_ps(*pr, s, start));
        }
    }
}

/// [`Kernel::tile_scaled_blocks`]: [`tile_scaled_avx512`] per block.
///
/// # Safety
/// As [`tile_scaled_avx512`] for every block `i` (panels from step
/// `i·block`, scales at `i·stride`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn tile_scaled_blocks_avx512(
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
    scaled_blocks_loop!(tile_scaled_avx512(kt, block, a, b, acc, ld, first, sa, sb))
}

/// One k-step of `R × V` chains, shared by the blocked tile on several
/// panels and the direct-B kernel ([`super::x86_avx512_direct`]): `sums[r][v] = fma(a[r], b[v],
/// sums[r][v])`, each row's value of A broadcast once for its `V` FMAs.
///
/// # Safety
/// AVX-512F present (it inlines into callers that enable it); `a` has `R`
/// readable floats.
#[inline(always)]
pub(super) unsafe fn fma_step<const R: usize, const V: usize>(
    sums: &mut [[__m512; V]; R],
    a: *const f32,
    b: &[__m512; V],
) {
    // SAFETY: rows r < R of `a` (the function's contract); AVX-512F.
    unsafe {
        for (r, row) in sums.iter_mut().enumerate() {
            let ar = _mm512_set1_ps(*a.add(r));
            for (s, x) in row.iter_mut().zip(b) {
                *s = _mm512_fmadd_ps(ar, *x, *s);
            }
        }
    }
}

/// [`Kernel::fp4_tile`] with `vpdpbusd`: per k-quad, the four products of
/// A's offset codes (2a + 12, unsigned) and B's (2b) go straight into each
/// column's i32 lane, so a block needs no i16 sums (and no limit on its
/// length) and no widening; then the same correction and block accumulate
/// as the AVX2 tile: d = Σ(2a + 12)·2b − 12·Σ2b = 4·Σab exactly, p = d / 4,
/// `acc = fma(p, fl(sa·sb), acc)`.
///
/// # Safety
/// AVX2, FMA and AVX-512 F/BW/VL/VNNI; the bounds [`Kernel::fp4_tile`]
/// asserts.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn fp4_tile_vnni(
    blocks: usize,
    quads: usize,
    t: &Fp4Tile<'_>,
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    let (mut a, mut b) = (t.a.as_ptr(), t.b.as_ptr());
    for blk in 0..blocks {
        let mut p = [[_mm256_setzero_si256(); 2]; FP4_MR];
        // SAFETY (all accesses): quad q < blocks · quads of both panels,
        // block blk's corrections and scales, rows < FP4_MR of `acc`.
        unsafe {
            dpbusd_quads(&mut p, quads, a.cast(), b.cast());
            a = a.add(4 * FP4_MR * quads);
            b = b.add(4 * FP4_NR * quads);
            fp4_block_accumulate(&p, t, blk, acc, ld, first && blk == 0);
        }
    }
}

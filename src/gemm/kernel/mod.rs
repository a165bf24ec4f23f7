//! Micro-kernels: one pass of the systolic array over a K-tile.
//!
//! A kernel computes an `MR × NR` block of partial sums `p`, each a chain of
//! fused multiply-adds from +0.0 over at most [`super::ARRAY_ROWS`] values of
//! k in increasing order, and then adds `p` into the f32 accumulator block:
//! `acc = acc + p`, one rounding. Inputs are packed panels: `a` holds, for each
//! k, `MR` values (one per row); `b` holds, for each k, `NR` values.

mod epilogue;
mod operands;
pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2_fp4;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512_blocks_staged;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512_blocks_t;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512_dense;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512_direct;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512_fp8_dense;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512_transposed;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_blocks_t;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_code_formats;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_fp4_dense;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_fp8_dense;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_transposed;

pub(crate) use epilogue::epilogue_rows_body;
pub(crate) use operands::*;

use super::Epilogue;
use crate::dtype::FloatElement;

/// The scaling blocks of a K-tile of `kt` steps in blocks of `block`:
/// `(index, first step, steps)`, the last block possibly shorter.
pub(crate) fn scaling_blocks(
    kt: usize,
    block: usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..kt)
        .step_by(block.max(1))
        .enumerate()
        .map(move |(i, b0)| (i, b0, block.min(kt - b0)))
}

/// The bounds a SIMD tile relies on: panels of `kt` steps of an `mr × nr`
/// tile, and its accumulator block at stride `ld`.
pub(crate) fn check_tile(
    kt: usize,
    (mr, nr): (usize, usize),
    a: &[f32],
    b: &[f32],
    acc: &[f32],
    ld: usize,
) {
    assert!(a.len() >= kt * mr && b.len() >= kt * nr);
    assert!(ld >= nr && acc.len() >= (mr - 1) * ld + nr);
}

/// The bounds of the scales of every scaling block of a K-tile (see
/// [`Kernel::tile_scaled_blocks`]); `block > 0`.
pub(crate) fn check_block_scales(
    kt: usize,
    block: usize,
    (mr, nr): (usize, usize),
    (sa, sa_stride): (&[f32], usize),
    (sb, sb_stride): (&[f32], usize),
) {
    let blocks = kt.div_ceil(block.max(1));
    assert!(block > 0);
    assert!(
        blocks == 0
            || (sa.len() >= (blocks - 1) * sa_stride + mr
                && sb.len() >= (blocks - 1) * sb_stride + nr)
    );
}

/// The bounds a SIMD [`Kernel::fp4_tile`] relies on: `blocks · quads`
/// k-quads of both panels, each block's corrections and scales, and the
/// `FP4_MR × FP4_NR` accumulator block at stride `ld`.
pub(crate) fn check_fp4_tile(blocks: usize, quads: usize, t: &Fp4Tile<'_>, acc: &[f32], ld: usize) {
    let quads_all = blocks * quads;
    assert!(t.a.len() >= quads_all * 4 * FP4_MR && t.b.len() >= quads_all * 4 * FP4_NR);
    assert!(t.corr.len() >= blocks * FP4_NR);
    if blocks > 0 {
        assert!(t.sa.0.len() >= (blocks - 1) * t.sa.1 + FP4_MR);
        assert!(t.sb.0.len() >= (blocks - 1) * t.sb.1 + FP4_NR);
        assert!(ld >= FP4_NR && acc.len() >= (FP4_MR - 1) * ld + FP4_NR);
    }
}

/// The body of a leaf's `tile_scaled_blocks`: its one-block scaled tile
/// `$tile` (raw pointers, see `Kernel::tile_scaled`) for each scaling block
/// of the K-tile, in one `#[target_feature]` function so that one block's
/// accumulate overlaps the next block's chains. Expands inside `unsafe`
/// code whose contract bounds every block's panels and scales.
macro_rules! scaled_blocks_loop {
    ($tile:ident($kt:expr, $block:expr, $a:expr, $b:expr, $acc:expr, $ld:expr, $first:expr, $sa:expr, $sb:expr)) => {{
        let ((sa, sa_stride), (sb, sb_stride)) = ($sa, $sb);
        for (i, b0, bt) in $crate::gemm::kernel::scaling_blocks($kt, $block) {
            // SAFETY: per the enclosing function's contract.
            unsafe {
                $tile(
                    bt,
                    $a.add(b0 * MR),
                    $b.add(b0 * NR),
                    $acc,
                    $ld,
                    $first && i == 0,
                    sa.add(i * sa_stride),
                    sb.add(i * sb_stride),
                )
            }
        }
    }};
}
pub(crate) use scaled_blocks_loop;

/// The four f32 tile methods of a SIMD [`Kernel`] leaf, written once: each
/// asserts the bounds its `#[target_feature]` function (named in the
/// invocation, in the order `tile`, `tile_scaled`, `tile_scaled_blocks`,
/// `tile_blocks`) relies on, then calls it. A macro, not a generic helper,
/// so that each call stays a direct call of the leaf's own function.
///
/// The leaf's functions take `(kt, a, b, acc, ld, first)` as raw pointers
/// (plus `block`, and the scales, where the method has them), and require
/// the CPU features the driver checked before it chose this kernel.
macro_rules! checked_tiles {
    ($tile:ident, $scaled:ident, $scaled_blocks:ident, $blocks:ident) => {
        #[inline]
        fn tile(kt: usize, a: &[f32], b: &[f32], acc: &mut [f32], ld: usize, first: bool) {
            $crate::gemm::kernel::check_tile(kt, (Self::MR, Self::NR), a, b, acc, ld);
            // SAFETY: the driver selects this kernel only when the CPU has
            // its features (`driver::tier`); `check_tile` bounds every access.
            unsafe { $tile(kt, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr(), ld, first) }
        }

        #[inline]
        fn tile_scaled(
            kt: usize,
            a: &[f32],
            b: &[f32],
            acc: &mut [f32],
            ld: usize,
            first: bool,
            sa: &[f32],
            sb: &[f32],
        ) {
            $crate::gemm::kernel::check_tile(kt, (Self::MR, Self::NR), a, b, acc, ld);
            assert!(sa.len() >= Self::MR && sb.len() >= Self::NR);
            let (ap, bp, accp) = (a.as_ptr(), b.as_ptr(), acc.as_mut_ptr());
            // SAFETY: as in `tile`; the asserts also bound the scale reads.
            unsafe { $scaled(kt, ap, bp, accp, ld, first, sa.as_ptr(), sb.as_ptr()) }
        }

        fn tile_scaled_blocks(
            kt: usize,
            block: usize,
            a: &[f32],
            b: &[f32],
            acc: &mut [f32],
            ld: usize,
            first: bool,
            (sa, sa_stride): (&[f32], usize),
            (sb, sb_stride): (&[f32], usize),
        ) {
            let tile = (Self::MR, Self::NR);
            $crate::gemm::kernel::check_tile(kt, tile, a, b, acc, ld);
            $crate::gemm::kernel::check_block_scales(
                kt,
                block,
                tile,
                (sa, sa_stride),
                (sb, sb_stride),
            );
            let (ap, bp, accp) = (a.as_ptr(), b.as_ptr(), acc.as_mut_ptr());
            let scales = ((sa.as_ptr(), sa_stride), (sb.as_ptr(), sb_stride));
            // SAFETY: the CPU has the kernel's features (the driver's choice
            // of kernel); the asserts bound every block's panels and scales.
            unsafe { $scaled_blocks(kt, block, ap, bp, accp, ld, first, scales.0, scales.1) }
        }

        fn tile_blocks(
            kt: usize,
            block: usize,
            a: &[f32],
            b: &[f32],
            acc: &mut [f32],
            ld: usize,
            first: bool,
        ) {
            $crate::gemm::kernel::check_tile(kt, (Self::MR, Self::NR), a, b, acc, ld);
            assert!(block > 0);
            let (ap, bp, accp) = (a.as_ptr(), b.as_ptr(), acc.as_mut_ptr());
            // SAFETY: the CPU has the kernel's features (the driver's choice
            // of kernel); the asserts bound the panels and the accumulator.
            unsafe { $blocks(kt, block, ap, bp, accp, ld, first) }
        }
    };
}
pub(crate) use checked_tiles;

/// A micro-kernel and the row epilogue compiled for the same instruction set.
pub(crate) trait Kernel {
    /// Rows of the register block.
    const MR: usize;
    /// Columns of the register block.
    const NR: usize;
    /// Rows of an A panel for [`Kernel::tile_direct`] (the direct kernel
    /// keeps one accumulator per row and none for B, so it can hold more
    /// rows than the packed tile).
    const DIRECT_MR: usize = Self::MR;
    /// Rows of A per [`Kernel::fp4_dense`] and [`Kernel::fp8_dense`] call
    /// (1..=this many).
    const DENSE_ROWS: usize = FP4_DENSE_MR;
    /// Rows of A per [`Kernel::fp4_dense`] call on this CPU (1..=this
    /// many; at least [`Self::DENSE_ROWS`]); where it is more, the driver
    /// hands the calls A in panels.
    fn fp4_dense_rows() -> usize {
        Self::DENSE_ROWS
    }
    /// Rows of A up to which a block-scaled FP4 × FP4 product with weights
    /// `[out, in]` takes the integer block sums ([`Kernel::fp4_dots8`],
    /// `Strategy::ExactSmallFp4`) rather than the codes read in place
    /// ([`Kernel::blocks_t`]), where both apply. Their time grows with the
    /// rows at different rates; see the tiers' values.
    const EXACT_SMALL_ROWS: usize = 4;

    /// `acc[r * ld + c] = start + sum` for the `MR × NR` block, where `sum`
    /// is the contract's K-tile partial sum over the `kt` steps of `a` and
    /// `b`, and `start` is the accumulator's value (`acc[..]` itself) or,
    /// for the first K-tile (`first`), +0.0 (so the block needs no zeroing).
    fn tile(kt: usize, a: &[f32], b: &[f32], acc: &mut [f32], ld: usize, first: bool);

    /// [`Kernel::tile`] for `b.len()` B panels at once (panel `i` is the
    /// columns `i·NR..(i + 1)·NR` of `acc`), the same chains, so that each
    /// broadcast of A feeds one FMA per panel; false (nothing done) where
    /// the kernel has no such tile: the caller then tiles each panel.
    fn tile_panels(
        _kt: usize,
        _a: &[f32],
        _b: &[&[f32]],
        _acc: &mut [f32],
        _ld: usize,
        _first: bool,
    ) -> bool {
        false
    }

    /// [`Kernel::tile`] once per scaling block of `block` steps (the last
    /// may be shorter): `acc = acc + p` after each block, `first` applying
    /// to block 0 only. The block-scaled contract when the scales are
    /// folded into the panels (`driver::prescalable`).
    #[allow(clippy::too_many_arguments)]
    fn tile_blocks(
        kt: usize,
        block: usize,
        a: &[f32],
        b: &[f32],
        acc: &mut [f32],
        ld: usize,
        first: bool,
    ) {
        for (i, b0, bt) in scaling_blocks(kt, block) {
            Self::tile(
                bt,
                &a[b0 * Self::MR..(b0 + bt) * Self::MR],
                &b[b0 * Self::NR..(b0 + bt) * Self::NR],
                acc,
                ld,
                first && i == 0,
            );
        }
    }

    /// The block-scaled form of [`Kernel::tile`]: the same chains `p` over
    /// one scaling block of `kt` steps, then
    /// `acc[r * ld + c] = fma(p, fl(sa[r] · sb[c]), start)` (the
    /// block-scaled contract's accumulate), `start` as in `tile`.
    #[allow(clippy::too_many_arguments)]
    fn tile_scaled(
        kt: usize,
        a: &[f32],
        b: &[f32],
        acc: &mut [f32],
        ld: usize,
        first: bool,
        sa: &[f32],
        sb: &[f32],
    );

    /// The scaling blocks of one K-tile in a row: for each block `i` of
    /// `block` steps (the last may be shorter), [`Kernel::tile_scaled`] with
    /// the scales `sa[i * sa_stride..][..MR]`, `sb[i * sb_stride..][..NR]`
    /// (`first` applies to block 0 only). One call per tile, so the
    /// accumulate of one block overlaps the chains of the next.
    #[allow(clippy::too_many_arguments)]
    fn tile_scaled_blocks(
        kt: usize,
        block: usize,
        a: &[f32],
        b: &[f32],
        acc: &mut [f32],
        ld: usize,
        first: bool,
        (sa, sa_stride): (&[f32], usize),
        (sb, sb_stride): (&[f32], usize),
    ) {
        for (i, b0, bt) in scaling_blocks(kt, block) {
            Self::tile_scaled(
                bt,
                &a[b0 * Self::MR..(b0 + bt) * Self::MR],
                &b[b0 * Self::NR..(b0 + bt) * Self::NR],
                acc,
                ld,
                first && i == 0,
                &sa[i * sa_stride..][..Self::MR],
                &sb[i * sb_stride..][..Self::NR],
            );
        }
    }

    /// Eight outputs of a small-M block-scaled product whose block sums are
    /// exact in integers (see `driver::serial_exact_small`): for each block
    /// `blk`, `d_j` = Σ a·b over the block as integers (`a` given as |a| and
    /// a, `b` as FP4 codes of the eight lines), `p = d_j · g` and
    /// `out_j = fma(p, fl(sa[blk] · scale_j(blk)), out_j)` from +0.0.
    /// Called only where [`Kernel::has_fp4_dots`] is true.
    fn fp4_dots8(
        _lines: &Fp4Lines<'_>,
        _a_abs: &[u8],
        _a_int: &[i8],
        _sa: &[f32],
        _g: f32,
        _out: &mut [f32; 8],
    ) {
    }

    /// True when [`Kernel::fp4_dots8`] is implemented (the driver takes the
    /// general path otherwise).
    fn has_fp4_dots() -> bool {
        false
    }

    /// `blocks` scaling blocks of `quads` k-quads each of an FP4 × FP4
    /// tile into the accumulator block (`FP4_MR` rows at stride `ld`): per
    /// block, `d` = Σ (2a + 12)·2b − corr = 4·Σ a·b in integers (the
    /// contract's chain is exact: every partial sum is a multiple of 1/4
    /// far below 2^24 / 4), `p = d / 4` and `acc = fma(p, fl(sa · sb),
    /// acc)`; `first` starts block 0 from +0.0. Portable form: plain
    /// integer loops.
    fn fp4_tile(
        blocks: usize,
        quads: usize,
        t: &Fp4Tile<'_>,
        acc: &mut [f32],
        ld: usize,
        first: bool,
    ) {
        for blk in 0..blocks {
            let mut d = [[0i32; FP4_NR]; FP4_MR];
            for q in blk * quads..(blk + 1) * quads {
                let (a, b) = (&t.a[q * 4 * FP4_MR..], &t.b[q * 4 * FP4_NR..]);
                for (r, dr) in d.iter_mut().enumerate() {
                    for (j, dj) in dr.iter_mut().enumerate() {
                        for g in 0..4 {
                            *dj += i32::from(a[4 * r + g]) * i32::from(b[4 * j + g]);
                        }
                    }
                }
            }
            let corr = &t.corr[blk * FP4_NR..][..FP4_NR];
            let (sa, sb) = (&t.sa.0[blk * t.sa.1..], &t.sb.0[blk * t.sb.1..]);
            for (r, dr) in d.iter().enumerate() {
                for (j, &dj) in dr.iter().enumerate() {
                    let p = (dj - corr[j]) as f32 * 0.25;
                    let out = &mut acc[r * ld + j];
                    let z = if first && blk == 0 { 0.0 } else { *out };
                    *out = p.mul_add(sa[r] * sb[j], z);
                }
            }
        }
    }

    /// One group of eight lines of a [`crate::block_scaled::PackedFp4`]
    /// (`codes`: k/8 runs of 32 bytes; `scales`: 8 per block) times one row
    /// of A given as exact integers (|a| and a): for each block, the
    /// integer dot products `d_j`, `p = d_j · g` and
    /// `out_j = fma(p, fl(sa[blk] · scales[8·blk + j]), out_j)` from +0.0.
    /// Portable form: plain integer loops.
    #[allow(clippy::too_many_arguments)]
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
        let _ = a_abs;
        let mut acc = [0.0f32; 8];
        for (blk, &s_a) in sa.iter().enumerate() {
            let mut d = [0i32; 8];
            let start = blk * block;
            for (kk, &av) in a_int.iter().enumerate().skip(start).take(block) {
                let (q, r) = (kk / 8, kk % 8);
                for (j, dj) in d.iter_mut().enumerate() {
                    let code = (codes[q * 32 + 4 * j + r % 4] >> (4 * (r / 4))) & 0x0F;
                    *dj += i32::from(av) * i32::from(FP4_TIMES_2[usize::from(code)]);
                }
            }
            for (j, (o, &dj)) in acc.iter_mut().zip(&d).enumerate() {
                let p = dj as f32 * g;
                *o = p.mul_add(s_a * scales[blk * 8 + j], *o);
            }
        }
        *out = acc;
    }

    /// NVFP4 block scales for [`Kernel::fp4_dense`] decoded ahead, once
    /// for every row: `out[i] = fl(e4m3(codes[i]) · t)`, bit for bit
    /// [`crate::block_scaled::e4m3_scale`] (`codes` and `out` of one
    /// length). Portable form: that function per code.
    fn e4m3_scales(codes: &[u8], t: f32, out: &mut [f32]) {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = crate::block_scaled::e4m3_scale(c, t);
        }
    }

    /// `groups` (1..=[`FP4_DENSE_GROUPS`]) groups of 8 lines of FP4 weights
    /// in [`PackedFp4`](crate::block_scaled::PackedFp4)'s layout (group `g`:
    /// codes `codes[g · 4k..][..4k]`, per 8 values of k 32 bytes; scales
    /// `scales[g · 8·blocks..]`, per block the 8 lines' scales) against
    /// `rows.rows` rows of f32 activations: for row `r` and line `8g + j`,
    /// per block, the chain `p = fma(a[r,k], w[8g + j, k], p)` from +0.0
    /// over the block, k increasing, then
    /// `acc = fma(p, fl(sa[r][blk] · s[8g + j][blk]), acc)` from +0.0 (the
    /// block-scaled contract of `block_gemm`), written to
    /// `out[r · out_stride + 8g + j]`. With `zeros` (laid out as the
    /// scales), the codes are unsigned int4 `q` and the weights `q − z`
    /// (group-wise int4, [`crate::block_scaled::PackedInt4`]). Portable form:
    /// plain loops.
    fn fp4_dense(
        rows: &Fp4DenseRows<'_>,
        codes: &[u8],
        scales: GroupScales<'_>,
        zeros: Option<&[u8]>,
        groups: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let (k, block) = (rows.k, rows.block);
        let blocks = k.checked_div(block).unwrap_or(0);
        // (a · 2^-25) · (2w · 2^24) is a · w exactly: the prescaled rows take
        // the weights scaled up.
        let w_factor = if rows.prescaled {
            (1u32 << 24) as f32
        } else {
            0.5
        };
        for r in 0..rows.rows {
            let a = &rows.a[r * k..(r + 1) * k];
            for line in 0..groups * 8 {
                let (g, j) = (line / 8, line % 8);
                let group_codes = &codes[g * k * 4..];
                let mut acc = 0.0f32;
                for blk in 0..blocks {
                    let mut p = 0.0f32;
                    for (kk, &av) in a.iter().enumerate().skip(blk * block).take(block) {
                        let (q, i) = (kk / 8, kk % 8);
                        let byte = group_codes[q * 32 + 4 * j + i % 4];
                        let code = (byte >> (4 * (i / 4))) & 0x0F;
                        let w2 = match zeros {
                            // 2q − 2z, exact.
                            Some(z) => {
                                let zero = z[(g * blocks + blk) * 8 + j];
                                2.0 * (f32::from(code) - f32::from(zero))
                            }
                            None => f32::from(FP4_TIMES_2[usize::from(code)]),
                        };
                        let w = w2 * w_factor;
                        p = av.mul_add(w, p);
                    }
                    let s = rows.sa[r * blocks + blk] * scales.at((g * blocks + blk) * 8 + j);
                    acc = p.mul_add(s, acc);
                }
                out[r * out_stride + line] = acc;
            }
        }
    }

    /// True when [`Kernel::fp8_staged`] runs on this CPU.
    fn fp8_staged_runs() -> bool {
        false
    }

    /// [`Kernel::fp8_dense`] for up to [`FP8_STAGED_MAX_ROWS`] rows at
    /// once, each code decoded once for every row: `panels` holds the rows
    /// of `rows.a` in panels of [`FP8_STAGED_PANEL`] (per step, the panel's
    /// values side by side, zeros past the last row); `groups` is even.
    /// Returns false where the kernel has no such form (the caller then
    /// runs [`Kernel::fp8_dense`] per panel of rows).
    #[allow(clippy::too_many_arguments)]
    fn fp8_staged(
        _rows: &Fp4DenseRows<'_>,
        _panels: &[f32],
        _codes: &[u8],
        _scales: &[f32],
        _groups: usize,
        _out: &mut [f32],
        _out_stride: usize,
    ) -> bool {
        false
    }

    /// [`Kernel::fp4_dense`] for E4M3 weights packed by
    /// [`PackedFp8`](crate::block_scaled::PackedFp8): group `g`'s codes at
    /// `codes[g · 8k..]`, per value of k the 8 lines' codes (no NaN code);
    /// `rows.prescaled` means the rows hold a · [`FP8_DENSE_A_SCALE`].
    /// Portable form: plain loops.
    fn fp8_dense(
        rows: &Fp4DenseRows<'_>,
        codes: &[u8],
        scales: &[f32],
        groups: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let (k, block) = (rows.k, rows.block);
        let blocks = k.checked_div(block).unwrap_or(0);
        // (a · 2^8) · (w · 2^-8) is a · w exactly.
        let w_factor = if rows.prescaled {
            1.0 / FP8_DENSE_A_SCALE
        } else {
            1.0
        };
        for r in 0..rows.rows {
            let a = &rows.a[r * k..(r + 1) * k];
            for line in 0..groups * 8 {
                let (g, j) = (line / 8, line % 8);
                let mut acc = 0.0f32;
                for blk in 0..blocks {
                    let mut p = 0.0f32;
                    for (kk, &av) in a.iter().enumerate().skip(blk * block).take(block) {
                        let code = codes[g * k * 8 + kk * 8 + j];
                        let w = crate::F8E4M3::from_bits(code).to_f32() * w_factor;
                        p = av.mul_add(w, p);
                    }
                    let s = rows.sa[r * blocks + blk] * scales[(g * blocks + blk) * 8 + j];
                    acc = p.mul_add(s, acc);
                }
                out[r * out_stride + line] = acc;
            }
        }
    }

    /// True when [`Kernel::tile_direct`] can read B of type `T` unpacked.
    fn reads_direct<T: FloatElement>() -> bool {
        false
    }

    /// The partial sums of one K-tile for the first `rows`
    /// (1..=[`Kernel::DIRECT_MR`]) rows of the A panel (`DIRECT_MR` values
    /// per step) and `nb` columns of B read unpacked from a row-major matrix
    /// (step k's values are `b[k * b_stride..][..nb]`, widened in
    /// registers), written to `p` (`rows × nb`, zeroed by the caller). Each
    /// sum is the same FMA chain from +0.0 as in [`Kernel::tile`].
    /// `reads` says how B's rows come (from memory or cache) and whether A
    /// holds its values times 2^8 ([`DirectReads`]); neither changes the
    /// bits.
    #[allow(clippy::too_many_arguments)]
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
        assert!(!reads.a_times_256, "the scalar chains take A as it is");
        tile_direct_scalar::<T>(Self::DIRECT_MR, 0..kt, rows, a, b, (b_stride, 1), nb, p)
    }

    /// True when [`Kernel::tile_direct`] takes A times 2^8 for weights of
    /// type `T` ([`DirectReads::a_times_256`]): E4M3, whose SIMD widening
    /// gives `w · 2^-8` and multiplies by 2^8 otherwise.
    fn direct_wants_a_times_256<T: FloatElement>() -> bool {
        false
    }

    /// True when [`Kernel::tile_direct_t`] reads `T` with a register
    /// transpose (else it is the scalar chain).
    fn reads_direct_t<T: FloatElement>() -> bool {
        false
    }

    /// Rows of A up to which the `[out, in]` driver reads W of type `T` in
    /// place with [`Kernel::tile_direct_t`], each A panel transposing it
    /// again; past them it packs each panel of W once.
    fn direct_t_in_place_rows<T: FloatElement>() -> usize {
        16
    }

    /// Outputs (rows of W) that the driver hands [`Kernel::tile_direct_t`]
    /// at a time, each group through all of K before the next: as many row
    /// streams as one register of the kernel holds outputs.
    fn direct_t_outputs<T: FloatElement>() -> usize {
        8
    }

    /// [`Kernel::tile_direct`] for a B whose columns are contiguous (B =
    /// Wᵀ, W stored `[out, in]`): `w` holds `nb` columns of B as rows,
    /// column j's `kt` values at `w[j * ld..][..kt]`. The partial sums of
    /// the first `rows` rows of the A panel go to `p` (`rows × nb`, zeroed
    /// by the caller), each the same FMA chain from +0.0 over k in
    /// increasing order as in [`Kernel::tile`]; only the reads differ.
    #[allow(clippy::too_many_arguments)]
    fn tile_direct_t<T: FloatElement>(
        kt: usize,
        rows: usize,
        a: &[f32],
        w: &[T],
        ld: usize,
        nb: usize,
        p: &mut [f32],
    ) {
        tile_direct_scalar::<T>(Self::DIRECT_MR, 0..kt, rows, a, w, (1, ld), nb, p)
    }

    /// All `k` steps of [`Kernel::tile_direct_t`] for `rows` rows of the A
    /// panel (`a`, `k · DIRECT_MR` values) and `nb` outputs, K-tile by
    /// K-tile: each tile's partial sums from +0.0, added into `acc` (`rows ×
    /// nb`, rows `ld_acc` apart) in tile order, as the driver adds them.
    /// The kernel then reads each line of W once across the tiles'
    /// boundaries. Returns false, having done nothing, where it has no such
    /// form for `T`, `nb` and W's layout (the driver goes tile by tile); the
    /// answer does not depend on `rows`.
    #[allow(clippy::too_many_arguments)]
    fn tile_run_direct_t<T: FloatElement>(
        _rows: usize,
        _a: &[f32],
        _w: &[T],
        _ld: usize,
        _nb: usize,
        _k: usize,
        _acc: &mut [f32],
        _ld_acc: usize,
    ) -> bool {
        false
    }

    /// Two whole K-tiles (`2 · ARRAY_ROWS` steps) of [`Kernel::tile_direct_t`]
    /// at once, each tile's partial sums from +0.0 then added into `acc`
    /// (`rows × nb`, rows `ld_acc` apart) in tile order, as the driver adds
    /// them: `acc = (acc + p₀) + p₁`. Returns false, having done nothing,
    /// where the kernel has no such form for `T` and `nb` (the driver then
    /// goes tile by tile).
    #[allow(clippy::too_many_arguments)]
    fn tile_pair_direct_t<T: FloatElement>(
        _rows: usize,
        _a: &[f32],
        _w: &[T],
        _ld: usize,
        _nb: usize,
        _acc: &mut [f32],
        _ld_acc: usize,
    ) -> bool {
        false
    }

    /// True when [`Kernel::blocks_t`] reads block-scaled codes of `T` in
    /// place.
    fn reads_blocks_t<T: FloatElement>() -> bool {
        false
    }

    /// True when [`Kernel::blocks_t`] reads codes of `T` faster from an A
    /// that holds `a · 2^8` (exactly; `BlocksTile::a_times_256`): E4M3 on
    /// the AVX-512 tier, whose decode gives `value · 2^-8` and saves its
    /// multiply by 2^8 (the products `a · 2^8 · value · 2^-8` are `a ·
    /// value` exactly, so the chains are the same).
    fn blocks_t_wants_a_times_256<T: FloatElement>() -> bool {
        false
    }

    /// Whether [`Kernel::blocks_t`] takes A in panels of 16 rows where the
    /// rows are a multiple of 16 (see [`blocks_t_panel_rows`]): each code
    /// decoded once for 16 rows instead of 8.
    fn blocks_t_wide_panels() -> bool {
        false
    }

    /// Rows of A up to which reading codes of `T` in place with
    /// [`Kernel::blocks_t`] beats widening B for the blocked loops (0: it
    /// does not read `T`).
    fn blocks_t_max_rows<T: FloatElement>() -> usize {
        0
    }

    /// The block-scaled products of `t.rows` rows of A and `t.groups`
    /// groups of [`BLOCKS_T_LINES`] lines of codes of `T` (W stored
    /// `[out, in]`, one code per element) over all of K: for each row and
    /// line, per block the FMA chain from +0.0 over k increasing, then
    /// `acc = fma(p, fl(s_a · s_b), acc)`; the sums go to `t.out`. Returns
    /// the groups whose sums are the contract's (bit `g`): a group with a
    /// NaN or infinity code, or every group where the kernel has no such
    /// form for `T`, is left to the caller to compute another way.
    fn blocks_t<T: FloatElement>(_t: &mut BlocksTile<'_, T>) -> u32 {
        0
    }

    /// `out[i*ld_out + j] = epilogue(acc[i*ld_acc + j], out[i*ld_out + j], col0 + j)`
    /// for `rows` rows of `cols` columns: `out` holds the old C values (as
    /// f32) when `beta != 0`.
    #[allow(clippy::too_many_arguments)]
    fn epilogue_rows(
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
}

/// Scalar form of [`Kernel::tile_direct`] and [`Kernel::tile_direct_t`]:
/// for the steps `steps` of the tile, `p[r·nb + j] = fma(a[kk·mr + r],
/// b[kk·k_stride + j·j_stride], p[r·nb + j])`, continuing whatever `p`
/// holds (a SIMD form hands it the steps or columns it does not take). A
/// row-major B has strides `(row stride, 1)`; B stored as the rows of W,
/// `(1, W's row stride)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_direct_scalar<T: FloatElement>(
    mr: usize,
    steps: std::ops::Range<usize>,
    rows: usize,
    a: &[f32],
    b: &[T],
    (k_stride, j_stride): (usize, usize),
    nb: usize,
    p: &mut [f32],
) {
    for kk in steps {
        for r in 0..rows {
            let av = a[kk * mr + r];
            for (j, s) in p[r * nb..(r + 1) * nb].iter_mut().enumerate() {
                *s = av.mul_add(b[kk * k_stride + j * j_stride].to_f32(), *s);
            }
        }
    }
}

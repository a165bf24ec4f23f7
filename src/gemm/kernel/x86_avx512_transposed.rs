//! The AVX-512 kernel of [`Kernel::tile_direct_t`](super::Kernel::tile_direct_t)
//! for f32, bf16 and f16 weights: B with contiguous columns (`x · Wᵀ`, W stored
//! `[out, in]`) read in place, sixteen outputs per zmm register.
//!
//! At one row of A the AVX2 kernel ([`super::x86_transposed`]) is bound by
//! the latency of its one FMA chain per eight outputs; here each FMA
//! carries sixteen outputs, so a chain step covers twice the weights.
//! Each 16 × 4 block of 32-bit values is transposed from 128-bit row pieces
//! (row `i` in lane 0, rows `i + 4`, `i + 8`, `i + 12` inserted from
//! memory in lanes 1–3): two in-lane unpack stages, eight shuffles per
//! block. Four such blocks are read together, so that each row's 64-byte
//! line is read whole at once: the sixteen rows of W lie a multiple of
//! 4 KiB apart in the usual shapes, share one L1 set, and a line read a
//! piece per pass is evicted between pieces.
//!
//! A bf16 row is transposed as pairs (one 32-bit value holds steps `2q`
//! and `2q + 1`) and widened after the transpose by a shift (the even
//! step, in the low half) and a mask (the odd step): half the shuffles per
//! weight of widening first. An f16 row is transposed as pairs alike, and
//! each half narrowed to 16 f16 values (`vpmovdw`) and widened exactly
//! (`vcvtph2ps`). The chains and bits are those of every other
//! kernel: for each output, one FMA per step over k in increasing order.

use super::x86_transposed::{direct_t_avx2, TransposedTile};
use super::DirectLoad;
use crate::gemm::ARRAY_ROWS;
use std::arch::x86_64::*;

/// Outputs per zmm register (and per call's group of W rows).
pub(crate) const OUTPUTS: usize = 16;

/// The weight formats of the kernels' `W` parameter: f32, bf16 and f16
/// (the two 16-bit ones transposed as pairs, one 32-bit value per two
/// steps).
pub(crate) const W_F32: u8 = 0;
/// See [`W_F32`].
pub(crate) const W_BF16: u8 = 1;
/// See [`W_F32`].
pub(crate) const W_F16: u8 = 2;

/// Steps per transposed 32-bit value of format `w`.
const fn value_steps(w: u8) -> usize {
    if w == W_F32 {
        1
    } else {
        2
    }
}

/// The AVX-512 tier's transposed tile for `rows` (1..=8) rows of A: f32
/// and bf16 W sixteen outputs at a time when `t.nb` is a multiple of 16,
/// everything else on the AVX2 kernel.
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512F present; otherwise as
/// [`tile_direct_t_avx2`](super::x86_transposed::tile_direct_t_avx2) with
/// `R = rows`.
pub(crate) unsafe fn direct_t_avx512(
    rows: usize,
    a: *const f32,
    w: *const u8,
    p: *mut f32,
    t: TransposedTile,
) {
    if !t.nb.is_multiple_of(OUTPUTS) {
        // SAFETY: the caller's contract.
        return unsafe { direct_t_avx2(rows, a, w, p, t) };
    }
    let lines = one_load_lines(t.ld * t.load.size());
    macro_rules! by_rows {
        ($w:ident) => {
            // SAFETY: the caller's contract is each instance's; `$w` is
            // the load's format, and nb a multiple of 16 (checked above).
            unsafe {
                match rows {
                    1 => tile_direct_t_avx512::<1, $w>(a, w, p, t, lines),
                    2 => tile_direct_t_avx512::<2, $w>(a, w, p, t, lines),
                    3 => tile_direct_t_avx512::<3, $w>(a, w, p, t, lines),
                    4 => tile_direct_t_avx512::<4, $w>(a, w, p, t, lines),
                    5 => tile_direct_t_avx512::<5, $w>(a, w, p, t, lines),
                    6 => tile_direct_t_avx512::<6, $w>(a, w, p, t, lines),
                    7 => tile_direct_t_avx512::<7, $w>(a, w, p, t, lines),
                    _ => tile_direct_t_avx512::<8, $w>(a, w, p, t, lines),
                }
            }
        };
    }
    match t.load {
        DirectLoad::F32 => by_rows!(W_F32),
        DirectLoad::BF16 => by_rows!(W_BF16),
        DirectLoad::F16 => by_rows!(W_F16),
    }
}

/// True where the kernels read each line of W by one load: an L1 set holds
/// fewer than 12 lines ([`crate::cpu::narrow_l1`]) and W's rows lie
/// `row_bytes` apart, a multiple of 2 KiB, so that 8 or all 16 of them
/// share an L1 set.
pub(crate) fn one_load_lines(row_bytes: usize) -> bool {
    crate::cpu::narrow_l1() && row_bytes.is_multiple_of(2048)
}

/// [`Kernel::tile_direct_t`](super::Kernel::tile_direct_t) on `R` rows of
/// A, sixteen outputs at a time, for f32, bf16 or f16 W (`t.load`); `t.nb`
/// is a multiple of 16 and `t.kt8` of 8. Continues the chains in `p` (`R`
/// rows of `nb`). `W` says which ([`W_F32`], [`W_BF16`], [`W_F16`]): the
/// format `t.load` is.
///
/// `one_load_lines` (where an L1 set holds fewer than 12 lines, see
/// [`crate::cpu::narrow_l1`], and rows lie a multiple of 2 KiB apart, so
/// that 8 or 16 of them share a set): 16-byte pieces up to the rows' first 64-byte
/// boundary, then each line by one load ([`transpose16x16_whole_lines`]),
/// then pieces, so that no line of cache is read twice (AMD EPYC, Zen 4,
/// K = N = 4096, `[out, in]` W: f32 M = 1 4.5–5.0 → 4.0–4.2 ms, M = 8 6.5
/// → 6.0; bf16 M = 1 3.2–3.3 → 2.3–2.4, M = 8 5.0 → 4.6; f32 at K = 11008,
/// rows not sharing sets, 8.9 → 10.4, hence the stride condition).
/// Otherwise four 16-byte loads a line, issued together
/// ([`transpose16x16`]).
///
/// # Safety
/// AVX-512F present; `t.load` is the format `W` names; `a` has `kt8 · mr`
/// floats; `w` has `(nb − 1) · ld + kt8` elements of `load`'s type; `p`
/// has `R · nb` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_direct_t_avx512<const R: usize, const W: u8>(
    a: *const f32,
    w: *const u8,
    p: *mut f32,
    t: TransposedTile,
    one_load_lines: bool,
) {
    let size = t.load.size();
    let row_bytes = t.ld * size;
    // Steps per 64-byte line of a row, per 16-byte piece.
    let (line_steps, piece_steps) = (64 / size, 16 / size);
    let whole_lines = t.kt8 / line_steps * line_steps;
    for j0 in (0..t.nb).step_by(OUTPUTS) {
        // SAFETY: outputs j0..j0 + 16 ≤ nb of W's rows and of p's rows;
        // steps < kt8 of A and W (the function's contract).
        unsafe {
            let mut sums = [_mm512_setzero_ps(); R];
            for (r, s) in sums.iter_mut().enumerate() {
                *s = _mm512_loadu_ps(p.add(r * t.nb + j0));
            }
            let rows = w.add(j0 * row_bytes);
            // Whole lines from `head` to `end` (one load or four a line),
            // 16-byte pieces before and after.
            let (head, end) = if one_load_lines {
                one_load_span(rows, row_bytes, size, t.kt8)
            } else {
                (0, whole_lines)
            };
            for k0 in (0..head).step_by(piece_steps) {
                let v = transpose16x4(rows.add(k0 * size), row_bytes);
                steps::<R, W>(&mut sums, a, t.mr, k0, &v);
            }
            for k0 in (head..end).step_by(line_steps) {
                let v = if one_load_lines {
                    transpose16x16_whole_lines(rows.add(k0 * size), row_bytes)
                } else {
                    transpose16x16(rows.add(k0 * size), row_bytes)
                };
                steps::<R, W>(&mut sums, a, t.mr, k0, &v);
            }
            for k0 in (end..t.kt8).step_by(piece_steps) {
                let v = transpose16x4(rows.add(k0 * size), row_bytes);
                steps::<R, W>(&mut sums, a, t.mr, k0, &v);
            }
            for (r, s) in sums.iter().enumerate() {
                _mm512_storeu_ps(p.add(r * t.nb + j0), *s);
            }
        }
    }
}

/// All `k` steps of `R` rows of A against `t.nb` outputs (a multiple of
/// 16) of f32, bf16 or f16 W (`W` as in [`tile_direct_t_avx512`]), K-tile by
/// K-tile (`ARRAY_ROWS` steps): each tile's chains from +0.0, one FMA per
/// step in increasing k, added into `acc` (`R` rows, `ld_acc` apart) at the
/// tile's end, in tile order, as the driver adds them. Each line of W is
/// read by one load (from the rows' first 64-byte boundary; 16-byte pieces
/// before and after it), also the line a tile boundary splits, whose steps
/// go to both tiles: tile by tile, that line was read in pieces at two
/// times, and sixteen rows sharing an L1 set had evicted it in between.
///
/// # Safety
/// AVX-512F present; `t.load` is the format `W` names; `a` has
/// `k · mr` floats; `w` has `(nb − 1) · ld + k` values of that type, `k`
/// steps a whole number of 16-byte pieces from the last whole line
/// ([`one_load_span`] over `k` steps); `acc` has `(R − 1) · ld_acc + nb`
/// floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_run_direct_t_avx512<const R: usize, const W: u8>(
    a: *const f32,
    w: *const u8,
    acc: *mut f32,
    ld_acc: usize,
    k: usize,
    t: TransposedTile,
) {
    let size = t.load.size();
    let row_bytes = t.ld * size;
    let (line_steps, piece_steps) = (64 / size, 16 / size);
    for j0 in (0..t.nb).step_by(OUTPUTS) {
        // SAFETY: outputs j0..j0 + 16 ≤ nb of W's rows and of acc's rows;
        // steps < k of A and W (the function's contract).
        unsafe {
            let rows = w.add(j0 * row_bytes);
            let (head, end) = one_load_span(rows, row_bytes, size, k);
            let mut run = TileRun {
                sums: [_mm512_setzero_ps(); R],
                tile_end: ARRAY_ROWS.min(k),
                k,
                acc: acc.add(j0),
                ld_acc,
            };
            for k0 in (0..head).step_by(piece_steps) {
                let v = transpose16x4(rows.add(k0 * size), row_bytes);
                run.block::<W, _>(a, t.mr, k0, &v);
            }
            for k0 in (head..end).step_by(line_steps) {
                let v = transpose16x16_whole_lines(rows.add(k0 * size), row_bytes);
                run.block::<W, _>(a, t.mr, k0, &v);
            }
            for k0 in (end..k).step_by(piece_steps) {
                let v = transpose16x4(rows.add(k0 * size), row_bytes);
                run.block::<W, _>(a, t.mr, k0, &v);
            }
            run.flush();
        }
    }
}

/// The chains of [`tile_run_direct_t_avx512`] for sixteen outputs: the
/// current K-tile's sums, where it ends, and where its sums go.
struct TileRun<const R: usize> {
    sums: [__m512; R],
    tile_end: usize,
    k: usize,
    acc: *mut f32,
    ld_acc: usize,
}

impl<const R: usize> TileRun<R> {
    /// The steps from `k0` on of the transposed values `v` (as in
    /// [`steps`]), the current tile's sums added into `acc` and restarted
    /// from +0.0 where a tile ends among them (tile ends fall on whole
    /// values: multiples of `ARRAY_ROWS`, even).
    ///
    /// # Safety
    /// AVX-512F present; as [`steps`], and `acc` has `R` rows of 16 floats
    /// `ld_acc` apart.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const W: u8, const N: usize>(
        &mut self,
        a: *const f32,
        mr: usize,
        k0: usize,
        v: &[__m512i; N],
    ) {
        let value_steps = value_steps(W);
        if k0 == self.tile_end {
            // SAFETY: the function's contract.
            unsafe { self.next_tile() };
        }
        let split = if k0 + N * value_steps <= self.tile_end {
            N
        } else {
            (self.tile_end - k0) / value_steps
        };
        if R >= 2 {
            // Enough chains to hide the FMA latency: one loop over the
            // values, a guard each (unrolled, the steps of several rows
            // were slower: AMD Zen 4, bf16 W, K = N = 4096, M = 8 3.2 →
            // 3.4 ms).
            // SAFETY: the function's contract.
            return unsafe { self.guarded_block::<W, N>(a, mr, k0, v, split) };
        }
        if split == N {
            // The usual case: the whole block in the current tile.
            // SAFETY: the function's contract.
            return unsafe { steps::<R, W>(&mut self.sums, a, mr, k0, v) };
        }
        // The tile ends inside the block (once: a block is at most 32
        // steps). Tile ends and the rows' first whole line fall on 16-byte
        // pieces, so that end is 4, 8 or 12 values in: each a constant
        // split, so that the values stay in registers (a split at a
        // runtime index is a loop over them in memory).
        // SAFETY (each arm): the function's contract.
        match split {
            4 => unsafe { self.split_block::<W, N, 4>(a, mr, k0, v) },
            8 => unsafe { self.split_block::<W, N, 8>(a, mr, k0, v) },
            12 => unsafe { self.split_block::<W, N, 12>(a, mr, k0, v) },
            split => unsafe { self.guarded_block::<W, N>(a, mr, k0, v, split) },
        }
    }

    /// [`Self::block`] with a guard per value ([`steps_of`]): the values
    /// before `split`, and where `split < N` the tile's sums added into
    /// `acc` and the values after.
    ///
    /// # Safety
    /// As [`Self::block`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn guarded_block<const W: u8, const N: usize>(
        &mut self,
        a: *const f32,
        mr: usize,
        k0: usize,
        v: &[__m512i; N],
        split: usize,
    ) {
        // SAFETY: the function's contract.
        unsafe {
            steps_of::<R, W, N>(&mut self.sums, a, mr, k0, v, 0..split);
            if split < N {
                self.next_tile();
                steps_of::<R, W, N>(&mut self.sums, a, mr, k0, v, split..N);
            }
        }
    }

    /// [`Self::block`] where the tile ends `S` values into the block: the
    /// values before, the tile's sums added into `acc`, the values after.
    ///
    /// # Safety
    /// As [`Self::block`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn split_block<const W: u8, const N: usize, const S: usize>(
        &mut self,
        a: *const f32,
        mr: usize,
        k0: usize,
        v: &[__m512i; N],
    ) {
        let value_steps = value_steps(W);
        let (before, after) = v.split_at(S.min(N));
        // SAFETY: the function's contract.
        unsafe {
            steps::<R, W>(&mut self.sums, a, mr, k0, before);
            self.next_tile();
            steps::<R, W>(
                &mut self.sums,
                a,
                mr,
                k0 + before.len() * value_steps,
                after,
            );
        }
    }

    /// The current tile's sums added into `acc`, and the next tile begun.
    ///
    /// # Safety
    /// As [`Self::flush`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn next_tile(&mut self) {
        // SAFETY: the function's contract.
        unsafe { self.flush() };
        self.tile_end = (self.tile_end + ARRAY_ROWS).min(self.k);
    }

    /// `acc = acc + sums` for each row, and the sums back to +0.0.
    ///
    /// # Safety
    /// AVX-512F present; `acc` has `R` rows of 16 floats `ld_acc` apart.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn flush(&mut self) {
        for (r, s) in self.sums.iter_mut().enumerate() {
            // SAFETY: row r < R of acc (the function's contract).
            unsafe {
                let at = self.acc.add(r * self.ld_acc);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), *s));
            }
            *s = _mm512_setzero_ps();
        }
    }
}

/// Two whole K-tiles (`2 · ARRAY_ROWS` steps) of `R` rows of A against
/// `t.nb` outputs (a multiple of 16) of bf16 W, each tile's chains from
/// +0.0 side by side (two independent chains per register of sums: one row
/// of A is otherwise bound by the FMA latency, as bf16 rows arrive twice
/// as fast as f32 ones), then added into `acc` (`R` rows, `ld_acc` apart)
/// in tile order: `acc = (acc + p₀) + p₁`, the driver's two roundings.
/// `t.kt8` is one tile's steps (a multiple of 8).
///
/// # Safety
/// AVX-512F present; `t.load` is `BF16`; `a` has `2 · kt8 · mr` floats;
/// `w` has `(nb − 1) · ld + 2 · kt8` bf16 values; `acc` has
/// `(R − 1) · ld_acc + nb` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_pair_direct_t_avx512<const R: usize>(
    a: *const f32,
    w: *const u8,
    acc: *mut f32,
    ld_acc: usize,
    t: TransposedTile,
) {
    let kt = t.kt8;
    let row_bytes = t.ld * 2;
    for j0 in (0..t.nb).step_by(OUTPUTS) {
        // SAFETY: outputs j0..j0 + 16 ≤ nb of W's rows and of acc's rows;
        // steps < 2 · kt8 of A and W (the function's contract).
        unsafe {
            let mut first = [_mm512_setzero_ps(); R];
            let mut second = [_mm512_setzero_ps(); R];
            let rows = w.add(j0 * row_bytes);
            // Eight steps of each tile at a time, their FMAs interleaved.
            for k0 in (0..kt).step_by(8) {
                let v0 = transpose16x4(rows.add(k0 * 2), row_bytes);
                let v1 = transpose16x4(rows.add((kt + k0) * 2), row_bytes);
                for q in 0..4 {
                    steps::<R, W_BF16>(&mut first, a, t.mr, k0 + 2 * q, &v0[q..q + 1]);
                    steps::<R, W_BF16>(&mut second, a, t.mr, kt + k0 + 2 * q, &v1[q..q + 1]);
                }
            }
            for r in 0..R {
                let at = acc.add(r * ld_acc + j0);
                let sum = _mm512_add_ps(_mm512_loadu_ps(at), first[r]);
                _mm512_storeu_ps(at, _mm512_add_ps(sum, second[r]));
            }
        }
    }
}

/// The steps from k0 on of `R` chains, from transposed 32-bit values:
/// `v[q]` holds value q of the 16 rows of W, step `k0 + q` of f32 W, or
/// steps `k0 + 2q` (low half) and `k0 + 2q + 1` (high half) of bf16 W,
/// widened by a shift and a mask. A step is `sums[r] = fma(a[k][r], col,
/// sums[r])`, A's steps `mr` floats apart.
///
/// # Safety
/// AVX-512F present; `a` has `R` readable floats at each step's offset.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn steps<const R: usize, const W: u8>(
    sums: &mut [__m512; R],
    a: *const f32,
    mr: usize,
    k0: usize,
    v: &[__m512i],
) {
    let odd_mask = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
    let mut fma = |k: usize, col: __m512| {
        for (r, s) in sums.iter_mut().enumerate() {
            // SAFETY: r < R values of step k (the caller's contract).
            let ak = unsafe { *a.add(k * mr + r) };
            *s = _mm512_fmadd_ps(_mm512_set1_ps(ak), col, *s);
        }
    };
    for (q, x) in v.iter().enumerate() {
        match W {
            W_BF16 => {
                fma(k0 + 2 * q, _mm512_castsi512_ps(_mm512_slli_epi32::<16>(*x)));
                fma(
                    k0 + 2 * q + 1,
                    _mm512_castsi512_ps(_mm512_and_si512(*x, odd_mask)),
                );
            }
            W_F16 => {
                // Each half narrowed to 16 f16 values and widened exactly.
                let even = _mm512_cvtepi32_epi16(*x);
                let odd = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(*x));
                fma(k0 + 2 * q, _mm512_cvtph_ps(even));
                fma(k0 + 2 * q + 1, _mm512_cvtph_ps(odd));
            }
            _ => fma(k0 + q, _mm512_castsi512_ps(*x)),
        }
    }
}

/// [`steps`] on the values `v[q]` with `q` in `range` only (the others
/// skipped), `v` a whole array: one guard per value, so that `v` stays in
/// registers where a slice of it would be indexed in memory.
///
/// # Safety
/// As [`steps`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn steps_of<const R: usize, const W: u8, const N: usize>(
    sums: &mut [__m512; R],
    a: *const f32,
    mr: usize,
    k0: usize,
    v: &[__m512i; N],
    range: std::ops::Range<usize>,
) {
    let value_steps = value_steps(W);
    for (q, x) in v.iter().enumerate() {
        if range.contains(&q) {
            // SAFETY: the caller's contract.
            unsafe { steps::<R, W>(sums, a, mr, k0 + q * value_steps, std::slice::from_ref(x)) };
        }
    }
}

/// Sixteen 32-bit values (one 64-byte line) of 16 rows (`row_bytes`
/// apart) at `w`, transposed: output `q` holds value `q` of rows 0..16, in
/// lane order. Four [`transpose16x4`] blocks whose loads are issued
/// together, so each line is read whole at once.
///
/// # Safety
/// AVX-512F present; 64 bytes readable at `w + i · row_bytes` for each
/// row `i` < 16.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16x16(w: *const u8, row_bytes: usize) -> [__m512i; 16] {
    // SAFETY: block b reads bytes 16b..16b + 16 of each row (the caller's
    // contract). Four calls, not a closure: a closure does not take the
    // function's target features, and LLVM then keeps it out of line.
    let [b0, b1, b2, b3] = unsafe {
        [
            transpose16x4(w, row_bytes),
            transpose16x4(w.add(16), row_bytes),
            transpose16x4(w.add(32), row_bytes),
            transpose16x4(w.add(48), row_bytes),
        ]
    };
    [
        b0[0], b0[1], b0[2], b0[3], b1[0], b1[1], b1[2], b1[3], b2[0], b2[1], b2[2], b2[3], b3[0],
        b3[1], b3[2], b3[3],
    ]
}

/// [`transpose16x16`] with each line read by one 64-byte load, then
/// [`transpose16x16_regs`].
///
/// # Safety
/// AVX-512F present; 64 bytes readable at `w + i · row_bytes` for each
/// row `i` < 16.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16x16_whole_lines(w: *const u8, row_bytes: usize) -> [__m512i; 16] {
    // SAFETY: row i's 64 bytes (the caller's contract).
    transpose16x16_regs(std::array::from_fn(|i| unsafe {
        _mm512_loadu_si512(w.add(i * row_bytes) as *const _)
    }))
}

/// The steps `head..end` of `steps` (each `size` bytes; rows `row_bytes`
/// apart from `start`) that a kernel reads a 64-byte line at a time by one
/// aligned load: from the rows' first 64-byte boundary (the same in every
/// row where `row_bytes` is a multiple of 64, else none: `head` 0) to the
/// last whole line; the steps before and after are read in 16-byte
/// pieces. A load that splits two lines of cache reads each again for the
/// next line of steps, by which time rows that share an L1 set have
/// evicted it.
pub(crate) fn one_load_span(
    start: *const u8,
    row_bytes: usize,
    size: usize,
    steps: usize,
) -> (usize, usize) {
    let head_bytes = if row_bytes.is_multiple_of(64) {
        (start as usize).wrapping_neg() % 64
    } else {
        0
    };
    let head = if head_bytes.is_multiple_of(16) {
        (head_bytes / size).min(steps)
    } else {
        0
    };
    let line_steps = 64 / size;
    (head, head + (steps - head) / line_steps * line_steps)
}

/// The 16 × 16 transpose of 32-bit values in registers: output `q` holds
/// value `q` of `l[0..16]`, in lane order. 32-bit and 64-bit unpacks and
/// two rounds of 128-bit lane shuffles (64 shuffles).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16x16_regs(l: [__m512i; 16]) -> [__m512i; 16] {
    // u[4q + e]: in each 128-bit lane L, value 4L + e of rows 4q..4q + 4.
    let mut u = [_mm512_setzero_si512(); 16];
    for q in 0..4 {
        let [r0, r1, r2, r3] = [l[4 * q], l[4 * q + 1], l[4 * q + 2], l[4 * q + 3]];
        let (lo01, hi01) = (_mm512_unpacklo_epi32(r0, r1), _mm512_unpackhi_epi32(r0, r1));
        let (lo23, hi23) = (_mm512_unpacklo_epi32(r2, r3), _mm512_unpackhi_epi32(r2, r3));
        u[4 * q] = _mm512_unpacklo_epi64(lo01, lo23);
        u[4 * q + 1] = _mm512_unpackhi_epi64(lo01, lo23);
        u[4 * q + 2] = _mm512_unpacklo_epi64(hi01, hi23);
        u[4 * q + 3] = _mm512_unpackhi_epi64(hi01, hi23);
    }
    // Output 4L + e: lane L of u[e], u[4 + e], u[8 + e], u[12 + e].
    let mut v = [_mm512_setzero_si512(); 16];
    for e in 0..4 {
        let lo01 = _mm512_shuffle_i32x4::<0x44>(u[e], u[4 + e]);
        let hi01 = _mm512_shuffle_i32x4::<0xEE>(u[e], u[4 + e]);
        let lo23 = _mm512_shuffle_i32x4::<0x44>(u[8 + e], u[12 + e]);
        let hi23 = _mm512_shuffle_i32x4::<0xEE>(u[8 + e], u[12 + e]);
        v[e] = _mm512_shuffle_i32x4::<0x88>(lo01, lo23);
        v[4 + e] = _mm512_shuffle_i32x4::<0xDD>(lo01, lo23);
        v[8 + e] = _mm512_shuffle_i32x4::<0x88>(hi01, hi23);
        v[12 + e] = _mm512_shuffle_i32x4::<0xDD>(hi01, hi23);
    }
    v
}

/// Four 32-bit values of 16 rows (`row_bytes` apart) at `w`, transposed:
/// output `q` holds value `q` of rows 0..16, in lane order.
///
/// # Safety
/// AVX-512F present; 16 bytes readable at `w + i · row_bytes` for each
/// row `i` < 16.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose16x4(w: *const u8, row_bytes: usize) -> [__m512i; 4] {
    // SAFETY: rows 0..16, 16 bytes each (the caller's contract).
    let piece = |i: usize| unsafe { _mm_loadu_si128(w.add(i * row_bytes) as *const __m128i) };
    // Register i: rows i, i + 4, i + 8, i + 12 in lanes 0–3.
    let lanes = |i: usize| {
        let x = _mm512_castsi128_si512(piece(i));
        let x = _mm512_inserti32x4::<1>(x, piece(i + 4));
        let x = _mm512_inserti32x4::<2>(x, piece(i + 8));
        _mm512_inserti32x4::<3>(x, piece(i + 12))
    };
    transpose_dwords4([lanes(0), lanes(1), lanes(2), lanes(3)])
}

/// The 4 × 4 transposes of 32-bit values within each 128-bit lane of
/// `r`: lane `L` of output `j` holds dword `j` of lane `L` of `r[0..4]`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose_dwords4(r: [__m512i; 4]) -> [__m512i; 4] {
    let t0 = _mm512_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm512_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm512_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm512_unpackhi_epi32(r[2], r[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`tile_direct_t_avx512`] continues the chains in `p` with one FMA
    /// per step in step order, for W rows starting at every 16-byte offset
    /// from a 64-byte boundary, strides with and without 64-byte rows, and
    /// both ways of reading lines: the bits of the scalar chains.
    #[test]
    fn transposed_tile_equals_the_chains_at_any_start() {
        if !crate::cpu::has_avx512() {
            return;
        }
        fn run<const R: usize, const W: u8>(kt8: usize, ld: usize, offset: usize) {
            let (nb, size) = (32, if W == W_F32 { 4 } else { 2 });
            let mut rng = crate::convert::StochasticRng::new((kt8 * 131 + ld * 7 + offset) as u64);
            let mut next = || (rng.next_u64() >> 40) as f32 / 8388608.0 - 1.0;
            let a: Vec<f32> = (0..kt8 * 8).map(|_| next()).collect();
            let wv: Vec<f32> = (0..nb * ld)
                .map(|_| {
                    let x = next();
                    match W {
                        W_BF16 => half::bf16::from_f32(x).to_f32(),
                        W_F16 => half::f16::from_f32(x).to_f32(),
                        _ => x,
                    }
                })
                .collect();
            let mut buf = vec![0u8; nb * ld * size + 128];
            let base = (buf.as_ptr() as usize).wrapping_neg() % 64 + offset;
            for (i, x) in wv.iter().enumerate() {
                let at = base + i * size;
                match W {
                    W_BF16 => {
                        let b = half::bf16::from_f32(*x).to_bits().to_le_bytes();
                        buf[at..at + 2].copy_from_slice(&b);
                    }
                    W_F16 => {
                        let b = half::f16::from_f32(*x).to_bits().to_le_bytes();
                        buf[at..at + 2].copy_from_slice(&b);
                    }
                    _ => buf[at..at + 4].copy_from_slice(&x.to_le_bytes()),
                }
            }
            let p0: Vec<f32> = (0..R * nb).map(|_| next()).collect();
            let mut want = p0.clone();
            for r in 0..R {
                for j in 0..nb {
                    for k in 0..kt8 {
                        want[r * nb + j] = a[k * 8 + r].mul_add(wv[j * ld + k], want[r * nb + j]);
                    }
                }
            }
            let load = match W {
                W_BF16 => DirectLoad::BF16,
                W_F16 => DirectLoad::F16,
                _ => DirectLoad::F32,
            };
            let t = TransposedTile {
                kt8,
                mr: 8,
                ld,
                nb,
                load,
            };
            for one_load_lines in [false, true] {
                let mut p = p0.clone();
                // SAFETY: the CPU has AVX-512F (checked above); A holds
                // kt8 steps of 8 floats, W nb rows of ld values from base
                // inside buf, p R rows of nb.
                unsafe {
                    tile_direct_t_avx512::<R, W>(
                        a.as_ptr(),
                        buf[base..].as_ptr(),
                        p.as_mut_ptr(),
                        t,
                        one_load_lines,
                    )
                };
                for (i, (g, w)) in p.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "format {W} kt8 {kt8} ld {ld} offset {offset} lines {one_load_lines} at {i}"
                    );
                }
            }
        }
        for offset in [0, 16, 32, 48] {
            for (kt8, ld) in [(128, 1024), (128, 136), (120, 128), (8, 64), (64, 64)] {
                run::<1, W_F32>(kt8, ld, offset);
                run::<3, W_BF16>(kt8, ld, offset);
                run::<8, W_F32>(kt8, ld, offset);
                run::<8, W_BF16>(kt8, ld, offset);
                run::<1, W_F16>(kt8, ld, offset);
                run::<5, W_F16>(kt8, ld, offset);
            }
        }
    }
}

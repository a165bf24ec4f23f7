//! The staged AVX-512 kernel of [`Kernel::blocks_t`](super::Kernel::blocks_t)
//! (CPUs with AVX-512 VBMI and GFNI: Ice Lake and later, Zen 4 and later)
//! for 8 to 32 rows of A (4-bit codes: 9 to 32, 6-bit ones 7 to 32; below
//! them they run on [`super::x86_avx512_blocks_t::tile_lines_avx512`]): 16 or 32 lines of
//! codes and every row in one call; and of [`Kernel::fp8_staged`](super::Kernel::fp8_staged), the
//! same for E4M3 weights packed by
//! [`PackedFp8`](crate::block_scaled::PackedFp8) at any row count.
//!
//! K runs in chunks of 64 steps. Each chunk of each group of 16 lines is
//! read as whole 64-byte lines (lines lie `ld` bytes apart, often a
//! multiple of 4 KiB, so pieces of them read one at a time share an L1 set
//! and evict each other), transposed in registers (128-bit lanes, then
//! 32-bit values) and decoded once into an L1 buffer of f32, sixteen lines
//! per zmm. Every panel of up to eight rows then runs its FMA chains from
//! that buffer: the decode is paid once per code whatever the rows (the
//! per-panel kernel, [`super::x86_avx512_blocks_t`], decodes again for each
//! panel of eight rows), and two groups give each row two chains.
//!
//! Below eight rows the per-panel kernel is faster (one panel decodes once
//! anyway, and it keeps the decoded codes in registers): on the Intel Xeon
//! of BENCHMARKS.md, K = N = 4096, MXFP8 at M = 1 took 2.63 ms here against
//! 2.42 ms there; at M = 8 4.04 against 4.2, at M = 16 6.9 against
//! 8.4–9.2, at M = 32 9.9 against 16.4.
//!
//! An FP8 code of at most 5 exponent bits is exactly an f16 scaled by
//! `2^(bias − 15)`: its sign to bit 15, its magnitude to bit `10 − MBITS`.
//! E5M2 codes are put in the high bytes of words, two steps of 16 lines
//! per zero-masking byte permute (E5M2 at M = 8 / 16 / 32, K = N = 4096:
//! 4.15 / 5.88 / 9.76 → 3.96 / 5.51 / 9.49 ms against a step-major permute
//! then a widening); `vcvtph2ps` widens them
//! (zero, subnormal codes and the sign come out exact in hardware, and no
//! f32 operand is subnormal); E5M2 has the f16's own exponent and needs no
//! rescale. E4M3 codes go straight to f32 by GFNI (`E4M3ToF32`). A 4-bit
//! code is one `vpermps` table lookup; a 6-bit one a `vpermt2ps` lookup of
//! its 5 magnitude bits in a 32-entry table and its sign moved to bit 31
//! (the GFNI-built f16 it replaced took 4.47 ms at M = 8, K = N = 4096,
//! MXFP6 E2M3, Intel Xeon; the table 3.77).
//!
//! The chains are the contract's: per row and line, per block the FMA chain
//! from +0.0 over k increasing, then `acc = fma(p, fl(s_a · s_b), acc)`.
//! NaN and infinity codes are detected, not decoded: the group's bit is
//! cleared in the result and the driver computes its lines another way.

use super::x86_avx512_blocks_t::CodeConsts;
use super::x86_avx512_fp8_dense::E4M3ToF32;
use super::x86_avx512_transposed::transpose_dwords4;
use super::x86_blocks_t::{block_ends, BlocksT, ShiftCode, StagedChunk, STAGED_CHUNK as CHUNK};
use super::BLOCKS_T_LINES;
use std::arch::x86_64::*;

/// Rows of A one call takes at most.
pub(crate) const STAGED_MAX_ROWS: usize = 32;
/// Rows of A from which this kernel beats the per-panel one (see the
/// module docs).
pub(crate) const STAGED_MIN_ROWS: usize = 8;
/// Groups of [`BLOCKS_T_LINES`] lines one call takes.
pub(crate) const STAGED_MAX_GROUPS: usize = 2;
/// The odd bytes of a register (the high bytes of its 32 words).
const ODD_BYTES: u64 = 0xAAAA_AAAA_AAAA_AAAA;
/// Rows of a panel of packed A (the AVX-512 kernel's `DIRECT_MR`).
const PANEL: usize = 8;
/// Lines of the decoded buffer per step.
const WIDTH: usize = BLOCKS_T_LINES * STAGED_MAX_GROUPS;

/// The chunk's decoded weights (step `kk`, line `l` at
/// `w[kk · WIDTH + l]`).
#[repr(C, align(64))]
struct Buffers {
    w: [f32; CHUNK * WIDTH],
}

/// The running sums of every row and line: the block's chain `p` and the
/// accumulator, one zmm per row and group.
struct State {
    p: [[__m512; STAGED_MAX_GROUPS]; STAGED_MAX_ROWS],
    acc: [[__m512; STAGED_MAX_GROUPS]; STAGED_MAX_ROWS],
}

/// The block-scaled products of `t.rows` rows of A (packed in panels of
/// eight) and `16 · t.groups` lines of codes of format `F` over all of
/// `t.k`, written to `t.out`. Returns bit `g` set where group `g`'s sums are
/// the contract's (clear: a code of the group is NaN or infinity).
///
/// # Safety
/// AVX-512 F/BW, VBMI and GFNI present; `t.rows` in `1..=32`, `t.groups`
/// in `1..=2`; `t.k` a multiple of `t.block`, itself a multiple of 16; `a`
/// has `⌈rows / 8⌉ · 8 · k` floats (panel `q`'s step `k` at
/// `a[q · 8k + 8k..]`); `sa` `rows` rows of `k / block` scales; each of
/// the `16 · groups` lines `k` codes, `ld` bytes apart; each
/// `sb_start[j] + k / block − 1` a valid index of `sb`; `out` `rows` rows
/// of `16 · groups` floats at `out_ld`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
pub(crate) unsafe fn blocks_t_staged<F: ShiftCode>(t: &BlocksT) -> u32 {
    let src = Lines::<F> {
        t,
        consts: HalfConsts::of::<F>(t.a_times_256),
        sb_start: super::x86_avx512_blocks_t::sb_starts(t),
        format: std::marker::PhantomData,
    };
    // SAFETY: per the function's contract.
    unsafe { staged(t, &src) }
}

/// The whole-call kernel of the AVX-512 tier: where the L1 set holds
/// fewer than 12 lines ([`crate::cpu::narrow_l1`]), the kernel that reads whole
/// lines for every call, one group and panel at a time; otherwise up to
/// [`whole_lines_max_rows`] rows of two groups, the kernel that reads
/// whole lines ([`super::x86_avx512_blocks_t::tile_lines_avx512`]); on a
/// CPU with VBMI and GFNI, [`blocks_t_staged`] for [`STAGED_MIN_ROWS`] to
/// [`STAGED_MAX_ROWS`] rows, and below them, for FP8, the per-panel
/// kernel on this kernel's decode
/// ([`super::x86_avx512_blocks_t::tile_fp8_avx512_vbmi`]); `None` otherwise
/// (the caller then runs the per-panel kernel,
/// [`super::x86_avx512_blocks_t`], per group and panel).
///
/// # Safety
/// AVX-512 F/BW present; the operands as [`blocks_t_staged`] states them.
pub(crate) unsafe fn blocks_t_whole_avx512<F: ShiftCode>(t: &BlocksT) -> Option<u32> {
    let gfni = crate::cpu::has_avx512_vbmi_gfni();
    use super::x86_avx512_blocks_t::tile_lines_avx512 as f;
    macro_rules! by_rows {
        ($rows:expr, $g:literal, $t:expr, $gather:expr) => {
            match $rows {
                1 => f::<1, $g, F>($t, $gather),
                2 => f::<2, $g, F>($t, $gather),
                3 => f::<3, $g, F>($t, $gather),
                4 => f::<4, $g, F>($t, $gather),
                5 => f::<5, $g, F>($t, $gather),
                6 => f::<6, $g, F>($t, $gather),
                7 => f::<7, $g, F>($t, $gather),
                _ => f::<8, $g, F>($t, $gather),
            }
        };
    }
    if whole_lines_take_every_call() {
        let mut done = 0;
        for g in 0..t.groups {
            let mut ok = 1;
            for q in 0..t.rows.div_ceil(t.mr) {
                // SAFETY: g < groups and q · mr < rows: one group and one
                // panel of at most mr ≤ 8 rows; the rest per the
                // function's contract.
                ok &= unsafe {
                    let s = t.panel(g, q);
                    if s.rows == 16 {
                        f::<16, 1, F>(&s, false)
                    } else {
                        by_rows!(s.rows, 1, &s, false)
                    }
                };
            }
            done |= ok << g;
        }
        return Some(done);
    }
    if t.groups == STAGED_MAX_GROUPS && (1..=whole_lines_max_rows::<F>()).contains(&t.rows) {
        // SAFETY: two groups of lines and at most eight rows, one panel
        // (rows ≤ mr); the rest per the function's contract.
        return Some(unsafe { by_rows!(t.rows, 2, t, true) });
    }
    if gfni && (STAGED_MIN_ROWS..=STAGED_MAX_ROWS).contains(&t.rows) {
        // SAFETY: the CPU has VBMI and GFNI (checked), the rest per the
        // function's contract.
        return Some(unsafe { blocks_t_staged::<F>(t) });
    }
    if gfni && F::F16_SHIFT.is_some() && (1..STAGED_MIN_ROWS).contains(&t.rows) && t.rows <= t.mr {
        let mut done = 0;
        for g in 0..t.groups {
            // SAFETY: the CPU has VBMI and GFNI (checked); group g <
            // groups, and the rows are one panel (rows ≤ mr), per the
            // function's contract; `F` is FP8.
            let ok = unsafe {
                use super::x86_avx512_blocks_t::tile_fp8_avx512_vbmi as f;
                let s = t.panel(g, 0);
                match s.rows {
                    1 => f::<1, F>(&s),
                    2 => f::<2, F>(&s),
                    3 => f::<3, F>(&s),
                    4 => f::<4, F>(&s),
                    5 => f::<5, F>(&s),
                    6 => f::<6, F>(&s),
                    _ => f::<7, F>(&s),
                }
            };
            if ok {
                done |= 1 << g;
            }
        }
        return Some(done);
    }
    None
}

/// Whether [`blocks_t_whole_avx512`] takes every call on
/// [`super::x86_avx512_blocks_t::tile_lines_avx512`], one group of 16
/// lines at a time (their 16 lines of cache, where `K` is a multiple of
/// 4 KiB, are then all one set can hold), for every format and panel of
/// A, the block scales transposed rather than gathered; elsewhere
/// `whole_lines_max_rows` decides.
///
/// AMD EPYC (Zen 4: 8-way L1, a zmm gather about 21 cycles), K = N = 4096,
/// ms against the kernels before (two groups side by side, FP8 per
/// panel, staged from 8 rows or, for FP6, 7): MXFP4 M = 1 / 4 / 8 1.40 /
/// 3.00 / 4.07 against 1.70 / 3.50 / 4.94 (both with transposed scales);
/// MXFP6 M = 6 / 7 / 8 4.2 / 4.4 / 4.8 against 6.8 / 5.3 / 7.4; MXFP8
/// E4M3 M = 1 / 8 2.2 / 3.9–4.7 against 2.6–3.2 / 5.8–5.9; E5M2 M = 1 / 8
/// 2.1–2.6 / 4.0–4.7 against 2.6 / 7.6; MXFP4 M = 12 / 16 / 32 6.6 / 6.8–7.7
/// / 14.3–14.8 against 7.4 / 8.8–9.1 / 15.1–16.6, E4M3 6.4 / 7.2 / 13.9
/// against 7.7 / 9.0–10.4 / 15.0 (panels of 8 rows against the staged
/// kernel).
///
/// True where an L1 set holds fewer than 12 lines ([`crate::cpu::narrow_l1`]).
/// The panels of A may then be 16 rows
/// ([`Kernel::blocks_t_wide_panels`](super::Kernel::blocks_t_wide_panels)),
/// which only this kernel takes.
pub(crate) fn whole_lines_take_every_call() -> bool {
    crate::cpu::narrow_l1()
}

/// Rows up to which [`blocks_t_whole_avx512`] runs codes of format `F` on
/// [`super::x86_avx512_blocks_t::tile_lines_avx512`], two groups side by
/// side and one panel of A, where the L1 set holds
/// 12 lines or more: 4-bit codes (one table lookup
/// each) up to 8, 6-bit ones (a two-register lookup and the sign) up to 6,
/// others none.
///
/// Intel Xeon, K = N = 4096, ms against the kernels before (per-panel up
/// to 7 rows, staged at 8). MXFP4: M = 1 1.31 / 1.53, 2 1.51 / 1.75, 3
/// 1.77 / 1.99, 4 2.00 / 2.18, 5 2.25 / 2.61, 6 2.43 / 2.80, 7 2.72 /
/// 3.03, 8 2.89 / 3.17 (codes on a 64-byte boundary). MXFP6 E2M3 (both
/// kernels with the table decode): M = 4 2.43 / 2.50, 6 2.95 / 3.12, 7
/// 3.59 / 3.41, 8 4.05 / 3.77. Codes decoded through f16 (FP8) keep the
/// per-panel kernel: E5M2 at M = 3 3.19 / 2.92 (more live registers for
/// the decode). Both groups side by side: MXFP4 at M = 1 1.37 ms, one
/// group alone 1.44.
const fn whole_lines_max_rows<F: ShiftCode>() -> usize {
    if F::TABLE.is_some() {
        8
    } else if F::MAGNITUDES.is_some() {
        6
    } else {
        0
    }
}

/// Where a staged call's lines come from: each group of 16 lines decoded
/// for a chunk of steps, and their B scales per block.
trait Source {
    /// Decodes steps `k0..k0 + kc` (`kc` a multiple of 16, at most 64) of
    /// group `g` into `w` (step `kk` at `w[kk · WIDTH..]`, 16 floats);
    /// returns the bytes that held a NaN or infinity code (0: none).
    ///
    /// # Safety
    /// The CPU has the staged kernel's features; the steps and group exist.
    unsafe fn decode(&self, g: usize, k0: usize, kc: usize, w: *mut f32) -> u64;

    /// Group `g`'s 16 B scales of block `blk`.
    ///
    /// # Safety
    /// As [`Self::decode`]; the block exists.
    unsafe fn scales(&self, g: usize, blk: usize) -> __m512;
}

/// The lines of codes of a [`BlocksT`] (a `BlockScaled`'s, `[out, in]`).
struct Lines<'t, F> {
    t: &'t BlocksT,
    consts: HalfConsts,
    sb_start: [__m512i; STAGED_MAX_GROUPS],
    format: std::marker::PhantomData<F>,
}

impl<F: ShiftCode> Source for Lines<'_, F> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    unsafe fn decode(&self, g: usize, k0: usize, kc: usize, w: *mut f32) -> u64 {
        let t = self.t;
        // SAFETY: lines 16g..16g + 16, steps k0..k0 + kc < k (the caller's
        // contract).
        unsafe {
            decode_group::<F>(
                t.codes.add(g * BLOCKS_T_LINES * t.ld + k0),
                t.ld,
                kc,
                w,
                g,
                &self.consts,
            )
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    unsafe fn scales(&self, g: usize, blk: usize) -> __m512 {
        let index = _mm512_add_epi32(self.sb_start[g], _mm512_set1_epi32(blk as i32));
        // SAFETY: sb_start[j] + blk is a valid index of sb (the contract).
        unsafe { _mm512_i32gather_ps::<4>(index, self.t.sb as *const _) }
    }
}

/// The body of the staged kernels: `t.rows` rows of A (packed in panels of
/// eight; `t`'s codes unused) against `16 · t.groups` lines from `src`.
///
/// # Safety
/// As [`blocks_t_staged`], with `src` for the codes and B scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
unsafe fn staged<S: Source>(t: &BlocksT, src: &S) -> u32 {
    let mut buf = Buffers {
        w: [0.0; CHUNK * WIDTH],
    };
    let zero = _mm512_setzero_ps();
    let mut state = State {
        p: [[zero; STAGED_MAX_GROUPS]; STAGED_MAX_ROWS],
        acc: [[zero; STAGED_MAX_GROUPS]; STAGED_MAX_ROWS],
    };
    let mut special = [0u64; STAGED_MAX_GROUPS];
    let mut sbv = [[zero; STAGED_MAX_GROUPS]; CHUNK / 16];
    for k0 in (0..t.k).step_by(CHUNK) {
        let kc = CHUNK.min(t.k - k0);
        for (g, sp) in special.iter_mut().enumerate().take(t.groups) {
            // SAFETY: group g < groups, steps k0..k0 + kc < k.
            *sp |= unsafe { src.decode(g, k0, kc, buf.w.as_mut_ptr()) };
        }
        // The blocks that end in this chunk, and their B scales per group.
        let ends = block_ends(k0, kc, t.block);
        for (v, blk) in sbv.iter_mut().zip(ends) {
            let Some(blk) = blk else { continue };
            for (g, x) in v.iter_mut().enumerate().take(t.groups) {
                // SAFETY: block blk exists.
                *x = unsafe { src.scales(g, blk) };
            }
        }
        let chunk = Chunk {
            k0,
            kc,
            w: buf.w.as_ptr(),
            sbv: &sbv,
            ends,
        };
        for q in 0..t.rows.div_ceil(PANEL) {
            let rows = PANEL.min(t.rows - q * PANEL);
            // SAFETY: panel q of A and rows q·8.. of sa and the state
            // exist (the contract: rows ≤ 32).
            unsafe {
                macro_rules! panel {
                    ($r:literal) => {
                        if t.groups == 2 {
                            panel::<$r, 2>(t, &chunk, q, &mut state)
                        } else {
                            panel::<$r, 1>(t, &chunk, q, &mut state)
                        }
                    };
                }
                match rows {
                    1 => panel!(1),
                    2 => panel!(2),
                    3 => panel!(3),
                    4 => panel!(4),
                    5 => panel!(5),
                    6 => panel!(6),
                    7 => panel!(7),
                    _ => panel!(8),
                }
            }
        }
    }
    for (r, sums) in state.acc.iter().enumerate().take(t.rows) {
        for (g, s) in sums.iter().enumerate().take(t.groups) {
            // SAFETY: out has rows of 16 · groups floats at out_ld.
            unsafe { _mm512_storeu_ps(t.out.add(r * t.out_ld + g * BLOCKS_T_LINES), *s) };
        }
    }
    let mut done = 0;
    for (g, sp) in special.iter().enumerate().take(t.groups) {
        if *sp == 0 {
            done |= 1 << g;
        }
    }
    done
}

/// One chunk of this kernel: sixteen lines of B scales per vector.
type Chunk<'c> = StagedChunk<'c, __m512, STAGED_MAX_GROUPS>;

/// Rows `8q..8q + R` over one chunk, `G` groups: the chains from the
/// state, one FMA per row, line and step, and each block that ends in the
/// chunk folded into the accumulators; the chains go back to the state.
///
/// # Safety
/// As [`blocks_t_staged`]; `8q + R ≤ t.rows`, `G ≤ t.groups`; the chunk's
/// `kc` steps decoded in `c.w`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn panel<const R: usize, const G: usize>(
    t: &BlocksT,
    c: &Chunk<'_>,
    q: usize,
    s: &mut State,
) {
    let row0 = q * PANEL;
    let blocks = t.k / t.block;
    let mut p = [[_mm512_setzero_ps(); G]; R];
    for (r, pr) in p.iter_mut().enumerate() {
        for (g, x) in pr.iter_mut().enumerate() {
            *x = s.p[row0 + r][g];
        }
    }
    // SAFETY: panel q's steps k0..k0 + kc (a: 8 floats a step); the
    // decoded chunk; sa's rows row0.. (the caller's contract).
    unsafe {
        let a = t.a.add(q * PANEL * t.k + c.k0 * PANEL);
        for u in 0..c.kc / 16 {
            for kk in 16 * u..16 * u + 16 {
                let mut w = [_mm512_setzero_ps(); G];
                for (g, x) in w.iter_mut().enumerate() {
                    *x = _mm512_load_ps(c.w.add(kk * WIDTH + g * BLOCKS_T_LINES));
                }
                let ak = a.add(kk * PANEL);
                for (r, pr) in p.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*ak.add(r));
                    for (g, pg) in pr.iter_mut().enumerate() {
                        *pg = _mm512_fmadd_ps(x, w[g], *pg);
                    }
                }
            }
            if let Some(blk) = c.ends[u] {
                for (r, pr) in p.iter_mut().enumerate() {
                    let sa = _mm512_set1_ps(*t.sa.add((row0 + r) * blocks + blk));
                    for (g, pg) in pr.iter_mut().enumerate() {
                        let scale = _mm512_mul_ps(sa, c.sbv[u][g]);
                        let acc = &mut s.acc[row0 + r][g];
                        *acc = _mm512_fmadd_ps(*pg, scale, *acc);
                        *pg = _mm512_setzero_ps();
                    }
                }
            }
        }
    }
    for (r, pr) in p.iter().enumerate() {
        for (g, x) in pr.iter().enumerate() {
            s.p[row0 + r][g] = *x;
        }
    }
}

/// Decodes steps `0..kc` (a multiple of 16, at most 64) of the 16 lines at
/// `codes` (`ld` bytes apart) into `w` (step `kk` at `w[kk · WIDTH..]`),
/// floats `16g..16g + 16` of each step; returns the bytes that hold a NaN
/// or infinity code (0: none).
///
/// # Safety
/// AVX-512 F/BW, VBMI and GFNI present; 16 lines of `kc` readable codes;
/// `w` holds `kc` steps of `WIDTH` floats, aligned to 64 bytes; `g < 2`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
unsafe fn decode_group<F: ShiftCode>(
    codes: *const u8,
    ld: usize,
    kc: usize,
    w: *mut f32,
    g: usize,
    c: &HalfConsts,
) -> u64 {
    let mask = if kc == CHUNK {
        u64::MAX
    } else {
        (1u64 << kc) - 1
    };
    let mut special = 0;
    let mut l = [_mm512_setzero_si512(); BLOCKS_T_LINES];
    // SAFETY: line i's kc codes (a masked load reads no byte past them).
    unsafe {
        for (i, x) in l.iter_mut().enumerate() {
            *x = _mm512_maskz_loadu_epi8(mask, codes.add(i * ld) as *const i8);
            if F::SPECIAL_FROM != 0 {
                special |= c.code.specials(*x);
            }
        }
    }
    // r[q][i]: lane L holds steps 16q..16q + 16 of line i + 4L.
    let mut r = [[_mm512_setzero_si512(); 4]; 4];
    for i in 0..4 {
        let (x0, x4, x8, x12) = (l[i], l[i + 4], l[i + 8], l[i + 12]);
        let lo04 = _mm512_shuffle_i32x4::<0x44>(x0, x4);
        let lo812 = _mm512_shuffle_i32x4::<0x44>(x8, x12);
        let hi04 = _mm512_shuffle_i32x4::<0xEE>(x0, x4);
        let hi812 = _mm512_shuffle_i32x4::<0xEE>(x8, x12);
        r[0][i] = _mm512_shuffle_i32x4::<0x88>(lo04, lo812);
        r[1][i] = _mm512_shuffle_i32x4::<0xDD>(lo04, lo812);
        r[2][i] = _mm512_shuffle_i32x4::<0x88>(hi04, hi812);
        r[3][i] = _mm512_shuffle_i32x4::<0xDD>(hi04, hi812);
    }
    for (q, rq) in r.iter().enumerate().take(kc / 16) {
        let v = transpose_dwords4(*rq);
        for (j, x) in v.iter().enumerate() {
            let f = decode4::<F>(*x, c);
            for (b, fb) in f.iter().enumerate() {
                let kk = 16 * q + 4 * j + b;
                // SAFETY: step kk < 64, group g < 2: inside w, aligned.
                unsafe { _mm512_store_ps(w.add(kk * WIDTH + g * BLOCKS_T_LINES), *fb) };
            }
        }
    }
    special
}

/// The vectors [`decode4`] and the special-code check use.
pub(crate) struct HalfConsts {
    /// The tables, the f16 decode's vectors and the special-code check
    /// (as the other AVX-512 `blocks_t` kernels use them).
    pub(crate) code: CodeConsts,
    /// Byte permutes: word `w` of pair `h` takes line `w mod 16`'s code of
    /// step `2h + w / 16` in its high byte.
    pair_words: [__m512i; 2],
    /// E4M3's decode straight to f32 (lane `i`'s byte `b`: line `i`,
    /// step `b`).
    e4m3: E4M3ToF32,
}

/// True when `F` is E4M3 (the only 8-bit format with 3 mantissa bits).
const fn is_e4m3<F: ShiftCode>() -> bool {
    F::FORMAT.exp_bits == 4 && F::FORMAT.man_bits == 3
}

impl HalfConsts {
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn of<F: ShiftCode>(a_times_256: bool) -> Self {
        let mut pair = [[0u8; 64]; 2];
        for (h, p) in pair.iter_mut().enumerate() {
            for w in 0..32 {
                p[2 * w + 1] = (4 * (w % 16) + 2 * h + w / 16) as u8;
            }
        }
        // Opaque to the compiler: with the indices known, LLVM rewrites
        // a one-table byte permute as two in-lane shuffles, an OR and a
        // cross-lane permute.
        let pair = std::hint::black_box(pair);
        Self {
            code: CodeConsts::of::<F>(a_times_256),
            // SAFETY: each holds 64 bytes.
            pair_words: pair.map(|p| unsafe { _mm512_loadu_si512(p.as_ptr() as *const _) }),
            e4m3: E4M3ToF32::new(|s, i| 4 * i + s),
        }
    }
}

/// The four steps of 16 lines in `x` (32-bit lane `i`: line `i`, byte `b`:
/// step `b`), decoded exactly: one f32 register per step.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
pub(crate) fn decode4<F: ShiftCode>(x: __m512i, c: &HalfConsts) -> [__m512; 4] {
    if F::TABLE.is_some() || F::MAGNITUDES.is_some() {
        // One lookup per code (4-bit codes: their values; 6-bit: their
        // magnitudes, then the sign).
        // (A loop: a closure would not take the target features.)
        let mut out = [_mm512_setzero_ps(); 4];
        for (b, o) in out.iter_mut().enumerate() {
            *o = super::x86_avx512_blocks_t::decode::<F>(x, b, &c.code.table);
        }
        return out;
    }
    if is_e4m3::<F>() {
        // Straight to f32 (`value · 2^-8`, brought to the value unless A
        // holds `a · 2^8`: the same choice as the f16 decode's).
        return if c.code.f16.rescale {
            c.e4m3.decode_values(x)
        } else {
            c.e4m3.decode(x)
        };
    }
    // FP8 (E5M2): each two steps' codes to the high bytes of 32 words by
    // one byte permute (low bytes zeroed), then through an f16.
    let mut out = [_mm512_setzero_ps(); 4];
    for (h, pick) in c.pair_words.iter().enumerate() {
        let words = _mm512_maskz_permutexvar_epi8(ODD_BYTES, *pick, x);
        let [first, second] = super::x86_avx512_blocks_t::f16_pair::<F>(words, &c.code.f16);
        (out[2 * h], out[2 * h + 1]) = (first, second);
    }
    out
}

/// E4M3 weights packed by [`PackedFp8`](crate::block_scaled::PackedFp8)
/// as a staged source: per group of 8 lines (`code_stride` bytes apart),
/// per step the 8 lines' codes; per group (`scale_stride` floats apart)
/// and block, the 8 lines' f32 scales side by side. A group of 16 lines is
/// two packed groups. With `unscale` the decoded codes are multiplied by
/// 2^8 (their values); without, they stay `value · 2^-8` for rows that
/// hold `a · 2^8` (exact: the driver checked), the same products.
pub(crate) struct PackedE4M3 {
    pub(crate) codes: *const u8,
    pub(crate) code_stride: usize,
    pub(crate) scales: *const f32,
    pub(crate) scale_stride: usize,
    pub(crate) unscale: bool,
}

impl Source for PackedE4M3 {
    /// Two steps of 16 lines per round: 16 bytes of each packed group,
    /// their qwords ordered step by step, widened to words (the code in
    /// the high byte), E4M3's magnitude shifted into the f16's place
    /// (`value · 2^-8` as an f16, subnormals included), `vcvtph2ps`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    unsafe fn decode(&self, g: usize, k0: usize, kc: usize, w: *mut f32) -> u64 {
        let keep = _mm512_set1_epi16(0xBFFFu16 as i16);
        let up = _mm512_set1_ps(256.0);
        // SAFETY: packed groups 2g and 2g + 1 hold steps k0..k0 + kc (the
        // caller's contract); w has kc steps of WIDTH floats.
        unsafe {
            let lo = self.codes.add(2 * g * self.code_stride + 8 * k0);
            let hi = self.codes.add((2 * g + 1) * self.code_stride + 8 * k0);
            for s in (0..kc).step_by(2) {
                let x0 = _mm_loadu_si128(lo.add(8 * s) as *const __m128i);
                let x1 = _mm_loadu_si128(hi.add(8 * s) as *const __m128i);
                let y = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(x0), x1);
                // Steps s | s + 1, each lines 0–7 then 8–15.
                let y = _mm256_permute4x64_epi64::<0b11_01_10_00>(y);
                let words = _mm512_slli_epi16::<8>(_mm512_cvtepu8_epi16(y));
                let half = _mm512_and_si512(_mm512_srai_epi16::<1>(words), keep);
                let steps = [
                    _mm512_cvtph_ps(_mm512_castsi512_si256(half)),
                    _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(half)),
                ];
                for (j, f) in steps.iter().enumerate() {
                    let f = if self.unscale {
                        _mm512_mul_ps(*f, up)
                    } else {
                        *f
                    };
                    _mm512_store_ps(w.add((s + j) * WIDTH + g * BLOCKS_T_LINES), f);
                }
            }
        }
        0
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    unsafe fn scales(&self, g: usize, blk: usize) -> __m512 {
        // SAFETY: packed groups 2g and 2g + 1 have block blk's scales.
        unsafe {
            let lo = _mm256_loadu_ps(self.scales.add(2 * g * self.scale_stride + 8 * blk));
            let hi = _mm256_loadu_ps(self.scales.add((2 * g + 1) * self.scale_stride + 8 * blk));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                _mm256_castps_pd(hi),
            ))
        }
    }
}

/// The staged kernel on weights packed by
/// [`PackedFp8`](crate::block_scaled::PackedFp8): `t.rows` rows of A (in
/// panels of eight) against `16 · t.groups` lines from `src` (`t`'s own
/// codes and B scales unused); the sums to `t.out`.
///
/// # Safety
/// AVX-512 F/BW, VBMI and GFNI present; `t` as [`blocks_t_staged`] states
/// it for A, its scales and the output; `src` holds `2 · t.groups` packed
/// groups of `t.k` steps and their `t.k / t.block` blocks of scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
pub(crate) unsafe fn fp8_packed_staged(t: &BlocksT, src: &PackedE4M3) {
    // SAFETY: per the function's contract (no code is NaN: PackedFp8
    // streams only matrices without one).
    unsafe { staged(t, src) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::format::widen_bits;
    use crate::gemm::kernel::x86_blocks_t::{E2M1, E2M3, E3M2, E4M3, E5M2};

    /// Every code of `F` (both signs) through [`decode4`] equals the
    /// crate's scalar decode, bit for bit (NaN and infinity codes, which
    /// the kernel reports instead, aside; E4M3's −0.0 may be +0.0).
    fn decodes_every_code<F: ShiftCode>() {
        if !crate::cpu::has_avx512_vbmi_gfni() {
            return;
        }
        let codes: Vec<u32> = (0..=(2 * F::FORMAT.sign_bit() - 1)).collect();
        for chunk in codes.chunks(64) {
            let mut bytes = [0u8; 64];
            for (b, c) in bytes.iter_mut().zip(chunk) {
                *b = *c as u8;
            }
            // SAFETY: the CPU has the features (checked above).
            let out = unsafe {
                let c = HalfConsts::of::<F>(false);
                let x = _mm512_loadu_si512(bytes.as_ptr() as *const _);
                decode4::<F>(x, &c)
            };
            for (b, o) in out.iter().enumerate() {
                let mut got = [0f32; 16];
                // SAFETY: 16 floats.
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), *o) };
                for (i, g) in got.iter().enumerate() {
                    let code = u32::from(bytes[4 * i + b]);
                    let mag = code & F::MAG_MASK;
                    if F::SPECIAL_FROM != 0 && mag >= u32::from(F::SPECIAL_FROM) {
                        continue;
                    }
                    let want = widen_bits(code, F::FORMAT);
                    // E4M3 (straight to f32) may give +0.0 for −0.0, which
                    // no chain can tell apart (see `E4M3ToF32`); only that.
                    let zero = is_e4m3::<F>() && want == 0.0 && *g == 0.0;
                    assert!(g.to_bits() == want.to_bits() || zero, "code {code:#x}: {g}");
                }
            }
        }
    }

    #[test]
    fn every_code_decodes_exactly() {
        decodes_every_code::<E4M3>();
        decodes_every_code::<E5M2>();
        decodes_every_code::<E2M3>();
        decodes_every_code::<E3M2>();
        decodes_every_code::<E2M1>();
    }
}

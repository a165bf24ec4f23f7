//! The AVX-512 kernel of [`Kernel::blocks_t`](super::Kernel::blocks_t)
//! (see [`super::x86_blocks_t`] for the formats): sixteen lines per zmm
//! register, each code decoded exactly by a lookup or through an f16, not
//! by the AVX2 kernel's shifts and masks. FP4 by one `vpermps` on its 16
//! values; FP6 by one `vpermt2ps` on its 32 magnitudes and the sign moved
//! to bit 31 (MXFP6 E2M3, K = N = 4096, Intel Xeon: M = 1 2.82 → 1.75 ms,
//! M = 8 4.47 → 3.77 against the shift decode); FP8 through an f16 and
//! `vcvtph2ps` ([`decode4_f16`]; E5M2 at M = 1 2.37 → 1.93 ms, E4M3
//! without VBMI 2.34 → 2.03). With VBMI and GFNI, FP8 runs on
//! [`tile_fp8_avx512_vbmi`]: E4M3 straight to f32, E5M2 to f16 words by
//! one byte permute per two steps (M = 1 1.85 → 1.69 ms).

use super::x86_avx512_transposed::{
    one_load_span, transpose16x16_regs, transpose16x16_whole_lines, transpose16x4,
};
use super::x86_blocks_t::{BlocksT, ShiftCode};
use super::{BLOCKS_T_GROUPS, BLOCKS_T_LINES};
use std::arch::x86_64::*;

/// The block-scaled products of `R` rows of A and 16 lines of codes of
/// format `F` over all of `t.k`, written to `t.out`. Returns false when a
/// code is NaN or infinity (the sums written are then not the contract's).
///
/// # Safety
/// AVX-512 F/BW present; `t.k` a multiple of `t.block`, itself a multiple
/// of 16; `a` has `k · mr` floats; `sa` `R` rows of `k / block` scales;
/// each of the 16 lines `k` codes; each `sb_start[j] + k / block − 1` a
/// valid index of `sb`; `out` `R` rows of 16 floats at `out_ld`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn tile_blocks_t_avx512<const R: usize, F: ShiftCode>(t: &BlocksT) -> bool {
    let consts = CodeConsts::of::<F>(t.a_times_256);
    let [sb_start, _] = sb_starts(t);
    let mut special: u64 = 0;
    let mut acc = [_mm512_setzero_ps(); R];
    let mut p = [_mm512_setzero_ps(); R];
    // 16-byte pieces of each line of codes (plain functions, not closures:
    // a closure does not take the target features and stays out of line).
    // Reading whole 64-byte lines at once, as the f32 kernel does, kept
    // sixteen more registers live: 1.5× slower at 8 rows (at one or two
    // rows and two groups, [`tile_lines_avx512`] does).
    // SAFETY (the reads of codes and the steps): per the function's
    // contract.
    unsafe {
        let blocks = t.k / t.block;
        for blk in 0..blocks {
            for k0 in (blk * t.block..(blk + 1) * t.block).step_by(16) {
                let v = transpose16x4(t.codes.add(k0), t.ld);
                for (q, x) in v.iter().enumerate() {
                    steps4::<R, F>(t, &consts, k0 + 4 * q, *x, &mut p, &mut special);
                }
            }
            let sb = block_scales(t, sb_start, blk);
            end_block(t, sb, (blk, blocks), &mut acc, &mut p);
        }
    }
    // SAFETY: out has R rows of 16 floats at out_ld (the contract).
    unsafe {
        for (r, s) in acc.iter().enumerate() {
            _mm512_storeu_ps(t.out.add(r * t.out_ld), *s);
        }
    }
    special == 0
}

/// [`tile_blocks_t_avx512`] on `G` groups of 16 lines at once (group `g`'s
/// lines from `codes + 16g · ld`, its scales from `sb_start[16g..]`, its
/// sums to `out + 16g`): each group's 64 steps of its 16 lines read by one
/// 64-byte load a line ([`transpose16x16_whole_lines`]) and transposed in
/// registers a chunk ahead of the chains that use them, the groups' chains
/// side by side. Returns bit `g` set where group `g` held no NaN or
/// infinity code.
///
/// The per-panel kernel reads 16-byte pieces of each line at four times,
/// 16 steps apart; when lines lie a multiple of 4 KiB apart (K = 4096 codes
/// a line) the 16 lines share an L1 set and evict each other between the
/// pieces. Here each line's 64 bytes are read at once, and the chunks start
/// where the lines' codes start a 64-byte line (the steps before, and after
/// the last chunk, in pieces of 16), so that no line of cache is read
/// twice: a load that splits two lines of cache reads each again for the
/// next chunk, by which time the other lines have evicted it. The rows and
/// formats it takes depend on the CPU (see `whole_lines_max_rows` in the
/// staged module).
///
/// `gather_scales`: each block's 16 scales of a group by one gather (where
/// gathers are fast); otherwise each line's scales of 16 blocks by one
/// load, transposed ([`scales16`]) every 16 blocks. AMD EPYC (Zen 4),
/// MXFP4, K = N = 4096, one group: the transposed scales 3–9 % faster at
/// M = 1–8 (a zmm gather there takes about 21 cycles).
///
/// # Safety
/// As [`tile_blocks_t_avx512`], for each of the `G ≤ BLOCKS_T_GROUPS`
/// groups; `R ≤ mr`.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn tile_lines_avx512<const R: usize, const G: usize, F: ShiftCode>(
    t: &BlocksT,
    gather_scales: bool,
) -> u32 {
    let c = CodeConsts::of::<F>(t.a_times_256);
    let sb_start = sb_starts(t);
    let mut special = [0u64; G];
    let mut acc = [[_mm512_setzero_ps(); R]; G];
    let mut p = [[_mm512_setzero_ps(); R]; G];
    let blocks = t.k / t.block;
    // Steps in whole chunks of 64 from the lines' first 64-byte boundary,
    // the rest (multiples of 16, as blocks are) in pieces of 16.
    let (head, whole) = one_load_span(t.codes, t.ld, 1, t.k);
    // The step that ends the current block, and its index.
    let (mut end, mut blk) = (t.block, 0);
    // SAFETY (the reads of codes, steps and scales): per the function's
    // contract; every chunk and piece lies within the k steps.
    unsafe {
        let lines = |g: usize| t.codes.add(g * BLOCKS_T_LINES * t.ld);
        let mut sb16 = [[_mm512_setzero_si512(); 16]; G];
        let mut next = [[_mm512_setzero_si512(); 16]; G];
        if whole > head {
            for (g, x) in next.iter_mut().enumerate() {
                *x = transpose16x16_whole_lines(lines(g).add(head), t.ld);
            }
        }
        let mut k0 = 0;
        while k0 < t.k {
            let mut v = next;
            let steps = if (head..whole).contains(&k0) {
                // The next chunk's lines, transposed ahead of this one's
                // chains.
                if k0 + 64 < whole {
                    for (g, x) in next.iter_mut().enumerate() {
                        *x = transpose16x16_whole_lines(lines(g).add(k0 + 64), t.ld);
                    }
                }
                64
            } else {
                for (g, x) in v.iter_mut().enumerate() {
                    let q = transpose16x4(lines(g).add(k0), t.ld);
                    x[..4].copy_from_slice(&q);
                }
                16
            };
            for d in 0..steps / 4 {
                let k = k0 + 4 * d;
                for (g, vg) in v.iter().enumerate() {
                    steps4::<R, F>(t, &c, k, vg[d], &mut p[g], &mut special[g]);
                }
                if k + 4 == end {
                    if !gather_scales && blk % 16 == 0 {
                        for (g, x) in sb16.iter_mut().enumerate() {
                            *x = scales16(t, g, blk, blocks);
                        }
                    }
                    for g in 0..G {
                        let sb = if gather_scales {
                            block_scales(t, sb_start[g], blk)
                        } else {
                            _mm512_castsi512_ps(sb16[g][blk % 16])
                        };
                        end_block(t, sb, (blk, blocks), &mut acc[g], &mut p[g]);
                    }
                    (end, blk) = (end + t.block, blk + 1);
                }
            }
            k0 += steps;
        }
    }
    // SAFETY: out has R rows of 16 floats of each group at out_ld (the
    // contract).
    unsafe {
        for (g, acc) in acc.iter().enumerate() {
            for (r, s) in acc.iter().enumerate() {
                _mm512_storeu_ps(t.out.add(r * t.out_ld + g * BLOCKS_T_LINES), *s);
            }
        }
    }
    (0..G)
        .filter(|&g| special[g] == 0)
        .fold(0, |d, g| d | 1 << g)
}

/// Four steps from `k` of `R` chains on one group of 16 lines: `x` holds
/// each line's codes k..k + 4 (step `k + j` in byte `j` of its lane); the
/// bytes of NaN or infinity codes are ORed into `special`.
///
/// # Safety
/// Steps k..k + 4 of the `R` rows of A exist (`t.a`, `mr` floats a step).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn steps4<const R: usize, F: ShiftCode>(
    t: &BlocksT,
    c: &CodeConsts,
    k: usize,
    x: __m512i,
    p: &mut [__m512; R],
    special: &mut u64,
) {
    if F::SPECIAL_FROM != 0 {
        *special |= c.specials(x);
    }
    // SAFETY: steps k..k + 4 of A (the caller's contract).
    unsafe {
        let a = t.a.add(k * t.mr);
        // Every format the kernels read has an f16 form, a table or
        // 32 magnitudes.
        const { assert!(F::F16_SHIFT.is_some() || F::TABLE.is_some() || F::MAGNITUDES.is_some()) };
        if F::F16_SHIFT.is_some() {
            for (j, w) in decode4_f16::<F>(x, &c.f16).iter().enumerate() {
                fma_rows(p, a.add(j * t.mr), *w);
            }
        } else {
            for j in 0..4 {
                fma_rows(p, a.add(j * t.mr), decode::<F>(x, j, &c.table));
            }
        }
    }
}

/// The block scales of blocks `blk..blk + 16` of group `g`'s 16 lines
/// (those past `blocks` zero), transposed: output `q` holds block
/// `blk + q`'s scale of each line. Each line's 16 scales read by one
/// (masked) load.
///
/// # Safety
/// `g < t.groups`; blocks `blk..blocks` of each of the group's lines exist.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scales16(t: &BlocksT, g: usize, blk: usize, blocks: usize) -> [__m512i; 16] {
    let live: __mmask16 = if blocks - blk >= 16 {
        !0
    } else {
        (1 << (blocks - blk)) - 1
    };
    transpose16x16_regs(std::array::from_fn(|j| {
        let start = t.sb_start[g * BLOCKS_T_LINES + j] as usize + blk;
        // SAFETY: the lanes loaded are blocks blk..blocks of line j (the
        // caller's contract); masked lanes are not read.
        unsafe { _mm512_maskz_loadu_epi32(live, t.sb.add(start) as *const i32) }
    }))
}

/// The block scales of block `blk` of the 16 lines whose scales start at
/// `sb_start` (one gather).
///
/// # Safety
/// Block `blk` of each of those lines exists in `t.sb`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block_scales(t: &BlocksT, sb_start: __m512i, blk: usize) -> __m512 {
    let blk_index = _mm512_add_epi32(sb_start, _mm512_set1_epi32(blk as i32));
    // SAFETY: the scales of block blk of every line (the caller's contract).
    unsafe { _mm512_i32gather_ps::<4>(blk_index, t.sb as *const _) }
}

/// The end of block `blk` for group `g`'s chains: its accumulate, `acc =
/// fma(p, fl(sa · sb), acc)` with the lines' block scales `sb`, and its
/// chains back to +0.0. (The kernels track block ends by counting: a test
/// of each step against the block size is an integer division, which cost
/// about a fifth of the staged kernel's time.)
///
/// # Safety
/// A's scales of block `blk` of the `R` rows exist (`t.sa`).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn end_block<const R: usize>(
    t: &BlocksT,
    sb: __m512,
    (blk, blocks): (usize, usize),
    acc: &mut [__m512; R],
    p: &mut [__m512; R],
) {
    for (r, (acc, pr)) in acc.iter_mut().zip(p.iter_mut()).enumerate() {
        // SAFETY: A's scale of row r, block blk (the caller's contract).
        let sa = unsafe { *t.sa.add(r * blocks + blk) };
        let scale = _mm512_mul_ps(_mm512_set1_ps(sa), sb);
        *acc = _mm512_fmadd_ps(*pr, scale, *acc);
        *pr = _mm512_setzero_ps();
    }
}

/// [`tile_blocks_t_avx512`] for FP8 codes on CPUs with VBMI and GFNI:
/// the same chains, each register of codes (4 steps of the 16 lines, a
/// line's 4 codes per lane) decoded by the staged kernel's decode
/// ([`super::x86_avx512_blocks_staged::decode4`]): E4M3 straight to f32 by
/// [`super::x86_avx512_fp8_dense::E4M3ToF32`] (about 16 operations per 64
/// codes), E5M2 to words by one byte permute per two steps, then f16.
///
/// # Safety
/// AVX-512 F/BW, VBMI and GFNI present; otherwise as
/// [`tile_blocks_t_avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
pub(crate) unsafe fn tile_fp8_avx512_vbmi<const R: usize, F: ShiftCode>(t: &BlocksT) -> bool {
    use super::x86_avx512_blocks_staged::{decode4, HalfConsts};
    let c = HalfConsts::of::<F>(t.a_times_256);
    let [sb_start, _] = sb_starts(t);
    let mut special: u64 = 0;
    let mut acc = [_mm512_setzero_ps(); R];
    let mut p = [_mm512_setzero_ps(); R];
    // SAFETY (the reads of codes, steps and scales): per the function's
    // contract.
    unsafe {
        let blocks = t.k / t.block;
        for blk in 0..blocks {
            for k0 in (blk * t.block..(blk + 1) * t.block).step_by(16) {
                let v = transpose16x4(t.codes.add(k0), t.ld);
                for (q, x) in v.iter().enumerate() {
                    special |= c.code.specials(*x);
                    for (j, w) in decode4::<F>(*x, &c).iter().enumerate() {
                        fma_rows(&mut p, t.a.add((k0 + 4 * q + j) * t.mr), *w);
                    }
                }
            }
            let sb = block_scales(t, sb_start, blk);
            end_block(t, sb, (blk, blocks), &mut acc, &mut p);
        }
    }
    // SAFETY: out has R rows of 16 floats at out_ld (the contract).
    unsafe {
        for (r, s) in acc.iter().enumerate() {
            _mm512_storeu_ps(t.out.add(r * t.out_ld), *s);
        }
    }
    special == 0
}

/// One step of `R` chains: `p[r] = fma(a[r], w, p[r])`.
///
/// # Safety
/// `a` has `R` readable floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn fma_rows<const R: usize>(p: &mut [__m512; R], a: *const f32, w: __m512) {
    for (r, pr) in p.iter_mut().enumerate() {
        // SAFETY: r < R (the caller's contract).
        *pr = _mm512_fmadd_ps(_mm512_set1_ps(unsafe { *a.add(r) }), w, *pr);
    }
}

/// The vectors every AVX-512 `blocks_t` kernel uses to decode codes of a
/// format and to find its NaN and infinity codes, built once per call.
pub(crate) struct CodeConsts {
    /// `F::TABLE` in a register, or `F::MAGNITUDES` in two (zeros
    /// without one).
    pub(crate) table: [__m512; 2],
    /// A code's magnitude bits, in each byte.
    byte_mag: __m512i,
    /// `F::SPECIAL_FROM` in each byte.
    special_from: __m512i,
    /// What [`f16_pair`] uses.
    pub(crate) f16: F16Consts,
}

/// The vectors [`decode4_f16`] uses, built once per call.
pub(crate) struct F16Consts {
    /// In-lane byte shuffles: steps `2h`, `2h + 1` of a 128-bit lane's 4
    /// lines, each code the high byte of a word.
    pick: [__m512i; 2],
    /// The qwords of those words by step: lanes' low halves, then high.
    by_step: __m512i,
    /// The f16 bits an E4M3 code keeps once shifted (all but bit 14).
    keep: __m512i,
    /// `2^(15 − bias)`: an f16 built from a code, times it, is the code.
    factor: __m512,
    /// Whether decoded codes are brought to their values: E4M3's f16 (and
    /// its direct decode) is `value · 2^-8`, kept so against an A that
    /// holds `a · 2^8`; E5M2's f16 is the code (never scaled).
    pub(crate) rescale: bool,
}

impl F16Consts {
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn of<F: ShiftCode>(a_times_256: bool) -> Self {
        Self {
            rescale: F::BIAS != 15 && !a_times_256,
            pick: std::array::from_fn(|h| {
                // Byte 2w + 1 of each lane: line w mod 4, step 2h + w / 4;
                // byte 2w: zero (index bit 7 set).
                let mut pick = [0x80u8; 64];
                for lane in 0..4 {
                    for w in 0..8 {
                        pick[16 * lane + 2 * w + 1] = (4 * (w % 4) + 2 * h + w / 4) as u8;
                    }
                }
                // SAFETY: pick holds 64 bytes.
                unsafe { _mm512_loadu_si512(pick.as_ptr() as *const _) }
            }),
            by_step: _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7),
            keep: _mm512_set1_epi16(0xBFFFu16 as i16),
            factor: _mm512_set1_ps(f32::from_bits(((127 + 15 - F::BIAS) as u32) << 23)),
        }
    }
}

impl CodeConsts {
    /// For codes of `F`; `a_times_256`: A holds `a · 2^8` (E4M3 then stays
    /// `value · 2^-8`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn of<F: ShiftCode>(a_times_256: bool) -> Self {
        Self {
            byte_mag: _mm512_set1_epi8(F::MAG_MASK as i8),
            special_from: _mm512_set1_epi8(F::SPECIAL_FROM as i8),
            f16: F16Consts::of::<F>(a_times_256),
            table: table_regs::<F>(),
        }
    }

    /// The bytes of `x` that hold a NaN or infinity code.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn specials(&self, x: __m512i) -> u64 {
        _mm512_cmpge_epu8_mask(_mm512_and_si512(x, self.byte_mag), self.special_from)
    }
}

/// Where each line's block scales start in `t.sb`, 16 lines (a group) per
/// register.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn sb_starts(t: &BlocksT) -> [__m512i; BLOCKS_T_GROUPS] {
    // SAFETY: sb_start holds the starts of every group's 16 lines.
    std::array::from_fn(|g| unsafe {
        _mm512_loadu_si512(t.sb_start[g * BLOCKS_T_LINES..][..BLOCKS_T_LINES].as_ptr() as *const _)
    })
}

/// `F::TABLE`, or `F::MAGNITUDES`, in registers (zeros without one).
#[inline]
#[target_feature(enable = "avx512f")]
fn table_regs<F: ShiftCode>() -> [__m512; 2] {
    let mut t = [0.0f32; 32];
    if let Some(values) = F::TABLE {
        t[..16].copy_from_slice(&values);
    } else if let Some(magnitudes) = F::MAGNITUDES {
        t = magnitudes;
    }
    // SAFETY: t holds 32 floats.
    unsafe {
        [
            _mm512_loadu_ps(t.as_ptr()),
            _mm512_loadu_ps(t.as_ptr().add(16)),
        ]
    }
}

/// Code `j` (bits 8j..8j + 8) of each 32-bit lane of `x`, of a 4-bit or
/// 6-bit format, decoded exactly: a 4-bit code by one lookup of its 16
/// values, a 6-bit one by one lookup of its magnitude among 32 and its sign
/// moved to bit 31.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn decode<F: ShiftCode>(x: __m512i, j: usize, table: &[__m512; 2]) -> __m512 {
    if F::TABLE.is_some() {
        // vpermps reads the low 4 bits of each lane: code j's.
        return _mm512_permutexvar_ps(shift_left(x, -8 * j as i32), table[0]);
    }
    // vpermt2ps reads the low 5 bits of each lane: code j's magnitude.
    let magnitude = _mm512_permutex2var_ps(table[0], shift_left(x, -8 * j as i32), table[1]);
    let sign = shift_left(x, (31 - F::SIGN_POS) as i32 - 8 * j as i32);
    // bit 31 ? sign : magnitude
    _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xE4>(
        sign,
        _mm512_castps_si512(magnitude),
        _mm512_set1_epi32(i32::MIN),
    ))
}

/// The four steps in `x` (byte `s` of lane `j`: step `s` of line `j`) of
/// an FP8 code with an f16 form (`F::F16_SHIFT`), decoded exactly: each
/// code moved to the high byte of a word (one in-lane byte shuffle for two
/// steps), put in step order (one qword permute), then [`f16_pair`].
/// NaN and infinity codes are not decoded (the caller detects them).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn decode4_f16<F: ShiftCode>(x: __m512i, c: &F16Consts) -> [__m512; 4] {
    let mut out = [_mm512_setzero_ps(); 4];
    for h in 0..2 {
        let words = _mm512_permutexvar_epi64(c.by_step, _mm512_shuffle_epi8(x, c.pick[h]));
        let [first, second] = f16_pair::<F>(words, c);
        (out[2 * h], out[2 * h + 1]) = (first, second);
    }
    out
}

/// Two steps of 16 lines of FP8 codes with an f16 form, each code in the
/// high byte of a word (low byte zero; words 0–15 the first step, 16–31
/// the second), decoded exactly: the magnitude shifted into an f16's place
/// (E4M3: arithmetic shift by 1, the sign's copy in bit 14 cleared),
/// widened by `vcvtph2ps` (zero, subnormal codes and the sign exact in
/// hardware; no f32 operand subnormal) and scaled by `2^(15 − bias)`
/// (exact; none for E5M2, whose exponent is the f16's).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn f16_pair<F: ShiftCode>(words: __m512i, c: &F16Consts) -> [__m512; 2] {
    let half = match F::F16_SHIFT {
        Some(0) | None => words,
        Some(_) => _mm512_and_si512(_mm512_srai_epi16::<1>(words), c.keep),
    };
    let pair = [
        _mm512_cvtph_ps(_mm512_castsi512_si256(half)),
        _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(half)),
    ];
    if F::BIAS == 15 || !c.rescale {
        pair
    } else {
        pair.map(|v| _mm512_mul_ps(v, c.factor))
    }
}

/// Each 32-bit lane of `x` shifted left by `by` bits (right by `−by`).
#[inline]
#[target_feature(enable = "avx512f")]
fn shift_left(x: __m512i, by: i32) -> __m512i {
    if by >= 0 {
        _mm512_sllv_epi32(x, _mm512_set1_epi32(by))
    } else {
        _mm512_srlv_epi32(x, _mm512_set1_epi32(-by))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::format::widen_bits;
    use crate::gemm::kernel::x86_blocks_t::{E2M1, E2M3, E4M3, E5M2};

    /// [`tile_lines_avx512`] of `R` rows and `G` groups, the lines' codes
    /// starting `offset` bytes past a 64-byte boundary, `ld` bytes apart,
    /// against the contract's loops (per block a chain of fused
    /// multiply-adds from +0.0 in step order, then `fma(p, fl(sa · sb),
    /// acc)`), bit for bit; both ways of reading the block scales.
    fn whole_lines_match_the_contract<const R: usize, const G: usize, F: ShiftCode>(
        (k, ld, offset): (usize, usize, usize),
    ) {
        if !crate::cpu::has_avx512() {
            return;
        }
        let (block, lines) = (32, G * BLOCKS_T_LINES);
        let blocks = k / block;
        let mut rng = crate::convert::StochasticRng::new((k * 31 + ld * 7 + offset) as u64);
        let mut next = || (rng.next_u64() >> 32) as u32;
        // A 64-byte-aligned base inside `buf`, then `offset`.
        let mut buf = vec![0u8; lines * ld + 128];
        let base = (buf.as_ptr() as usize).wrapping_neg() % 64 + offset;
        let code_mask = (2 * F::FORMAT.sign_bit() - 1) as u8;
        // Finite codes only (a group with a NaN or infinity is left to the
        // contract's loops).
        let finite =
            |c: u8| F::SPECIAL_FROM == 0 || u32::from(c) & F::MAG_MASK < u32::from(F::SPECIAL_FROM);
        for x in &mut buf {
            *x = next() as u8 & code_mask;
            while !finite(*x) {
                *x = next() as u8 & code_mask;
            }
        }
        let a: Vec<f32> = (0..k * R)
            .map(|_| next() as f32 / 2f32.powi(31) - 1.0)
            .collect();
        let sa: Vec<f32> = (0..R * blocks).map(|i| [0.5, 3.0, 0.0625][i % 3]).collect();
        // Each line's scales from 5 + 3j (not a multiple of 16), a few
        // more after the last (so masked loads past them stay inside).
        let sb: Vec<f32> = (0..5 + 3 * lines + lines * blocks)
            .map(|i| [1.0, 0.25, 6.0, 1.5][i % 4])
            .collect();
        let sb_start: [i32; BLOCKS_T_LINES * BLOCKS_T_GROUPS] = std::array::from_fn(|j| {
            (5 + j * (blocks + 3)).min(5 + (lines - 1) * (blocks + 3)) as i32
        });
        for gather_scales in [true, false] {
            let mut out = vec![f32::NAN; R * lines];
            let t = BlocksT {
                rows: R,
                groups: G,
                k,
                block,
                a: a.as_ptr(),
                mr: R,
                sa: sa.as_ptr(),
                codes: buf[base..].as_ptr(),
                ld,
                sb: sb.as_ptr(),
                sb_start,
                out: out.as_mut_ptr(),
                out_ld: lines,
                a_times_256: false,
            };
            // SAFETY: the CPU has AVX-512 (checked above); every operand
            // is as the function's contract states it (A: k steps of R;
            // codes: lines of k bytes ld apart inside buf; scales of every
            // block of every line; out: R rows of the lines).
            let done = unsafe { tile_lines_avx512::<R, G, F>(&t, gather_scales) };
            assert_eq!(done, (1 << G) - 1);
            for r in 0..R {
                for j in 0..lines {
                    let mut sum = 0.0f32;
                    for blk in 0..blocks {
                        let mut p = 0.0f32;
                        for kk in blk * block..(blk + 1) * block {
                            let w = widen_bits(u32::from(buf[base + j * ld + kk]), F::FORMAT);
                            p = a[kk * R + r].mul_add(w, p);
                        }
                        let scale = sa[r * blocks + blk] * sb[sb_start[j] as usize + blk];
                        sum = p.mul_add(scale, sum);
                    }
                    let got = out[r * lines + j];
                    assert_eq!(
                        got.to_bits(),
                        sum.to_bits(),
                        "k {k} ld {ld} offset {offset} gather {gather_scales} row {r} line {j}: {got} vs {sum}"
                    );
                }
            }
        }
    }

    /// Chunks from any 16-byte start (the steps before the first 64-byte
    /// boundary in pieces), a stride that is not a multiple of 64 (no
    /// aligned start: every chunk from step 0), blocks past the last whole
    /// 16 (the masked scale loads), one and two groups.
    #[test]
    fn whole_lines_equal_the_contract_at_any_start() {
        for offset in [0, 16, 32, 48] {
            for (k, ld) in [(1088, 1088), (320, 384), (1184, 1184), (64, 64), (32, 64)] {
                whole_lines_match_the_contract::<1, 1, E2M1>((k, ld, offset));
                whole_lines_match_the_contract::<3, 2, E2M1>((k, ld, offset));
                whole_lines_match_the_contract::<8, 1, E2M1>((k, ld, offset));
                whole_lines_match_the_contract::<6, 2, E2M3>((k, ld, offset));
                whole_lines_match_the_contract::<8, 1, E2M3>((k, ld, offset));
                whole_lines_match_the_contract::<1, 1, E4M3>((k, ld, offset));
                whole_lines_match_the_contract::<8, 1, E5M2>((k, ld, offset));
                whole_lines_match_the_contract::<16, 1, E4M3>((k, ld, offset));
                whole_lines_match_the_contract::<16, 1, E2M1>((k, ld, offset));
            }
        }
    }
}

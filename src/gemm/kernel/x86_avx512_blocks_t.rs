//! The AVX-512 kernel of [`Kernel::blocks_t`](super::Kernel::blocks_t)
//! (see [`super::x86_blocks_t`] for the formats and the decoding): sixteen
//! lines per zmm register, each code decoded with AVX-512's masks and
//! ternary logic, FP4 by one `vpermps` on a 16-entry table.

use super::x86_avx512_fp8_dense::E4M3ToF32;
use super::x86_avx512_transposed::transpose16x4;
use super::x86_blocks_t::{BlocksT, ShiftCode, E4M3};
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
    let consts = DecodeConsts::of::<F>(&t.sb_start);
    let mut special: u64 = 0;
    let mut acc = [_mm512_setzero_ps(); R];
    let mut p = [_mm512_setzero_ps(); R];
    let mut at = Sums {
        p: &mut p,
        acc: &mut acc,
        special: &mut special,
    };
    // 16-byte pieces of each line of codes (plain functions, not closures:
    // a closure does not take the target features and stays out of line).
    // Reading whole 64-byte lines at once, as the f32 kernel does, kept
    // sixteen more registers live: 1.5× slower at 8 rows, no faster at 1.
    // SAFETY (the reads of codes and the steps): per the function's
    // contract.
    unsafe {
        let blocks = t.k / t.block;
        for blk in 0..blocks {
            for k0 in (blk * t.block..(blk + 1) * t.block).step_by(16) {
                let v = transpose16x4(t.codes.add(k0), t.ld);
                group::<R, F>(t, &consts, k0, &v, &mut at);
            }
            end_block(t, &consts, (blk, blocks), &mut at);
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

/// The running sums of [`tile_blocks_t_avx512`]: the block's chains, the
/// accumulators, and the special codes seen.
struct Sums<'s, const R: usize> {
    p: &'s mut [__m512; R],
    acc: &'s mut [__m512; R],
    special: &'s mut u64,
}

/// Sixteen steps from k0 (`v[q]` holds codes k0 + 4q..k0 + 4q + 4 of the
/// 16 lines).
///
/// # Safety
/// As [`tile_blocks_t_avx512`], with k0 + 16 ≤ `t.k`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn group<const R: usize, F: ShiftCode>(
    t: &BlocksT,
    c: &DecodeConsts,
    k0: usize,
    v: &[__m512i],
    s: &mut Sums<'_, R>,
) {
    // SAFETY: steps k0..k0 + 16 < k of A; the scales of block
    // (k0 + 16) / block − 1 (the caller's contract).
    unsafe {
        for (q, x) in v.iter().enumerate() {
            if F::SPECIAL_FROM != 0 {
                let mag = _mm512_and_si512(*x, c.byte_mag);
                *s.special |= _mm512_cmpge_epu8_mask(mag, c.special_from);
            }
            // Most registers hold no subnormal code (exponent field 0,
            // mantissa not 0): their codes skip decode's subnormal fix.
            let mantissa = _mm512_test_epi8_mask(*x, c.mant_bytes);
            if F::TABLE.is_none() && _mm512_mask_testn_epi8_mask(mantissa, *x, c.exp_bytes) == 0 {
                for j in 0..4 {
                    let w = decode_normal::<F>(*x, j, c);
                    fma_rows(s.p, t.a.add((k0 + 4 * q + j) * t.mr), w);
                }
            } else {
                for j in 0..4 {
                    let w = decode::<F>(*x, j, c);
                    fma_rows(s.p, t.a.add((k0 + 4 * q + j) * t.mr), w);
                }
            }
        }
    }
}

/// The end of block `blk`: its accumulate, `acc = fma(p, fl(sa · sb),
/// acc)`, and its chains back to +0.0. (The kernels loop over blocks: a
/// test of each 16 steps against the block size is an integer division,
/// which cost about a fifth of the staged kernel's time.)
///
/// # Safety
/// As [`group`]; block `blk` of `blocks` exists.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn end_block<const R: usize>(
    t: &BlocksT,
    c: &DecodeConsts,
    (blk, blocks): (usize, usize),
    s: &mut Sums<'_, R>,
) {
    let blk_index = _mm512_add_epi32(c.sb_start, _mm512_set1_epi32(blk as i32));
    // SAFETY: the scales of block blk of every line, and A's scales of
    // the R rows (the caller's contract).
    unsafe {
        let sb = _mm512_i32gather_ps::<4>(blk_index, t.sb as *const _);
        for (r, (acc, pr)) in s.acc.iter_mut().zip(s.p.iter_mut()).enumerate() {
            let scale = _mm512_mul_ps(_mm512_set1_ps(*t.sa.add(r * blocks + blk)), sb);
            *acc = _mm512_fmadd_ps(*pr, scale, *acc);
            *pr = _mm512_setzero_ps();
        }
    }
}

/// [`tile_blocks_t_avx512`] for E4M3 codes on CPUs with VBMI and GFNI:
/// the same chains, each register of codes (4 steps of the 16 lines, a
/// line's 4 codes per lane) decoded straight to f32 by [`E4M3ToF32`]
/// (about 16 operations per 64 codes, against 28 for the shift decode)
/// and scaled back by 2^8 (exact).
///
/// # Safety
/// AVX-512 F/BW, VBMI and GFNI present; otherwise as
/// [`tile_blocks_t_avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
pub(crate) unsafe fn tile_e4m3_avx512_gfni<const R: usize>(t: &BlocksT) -> bool {
    let consts = DecodeConsts::of::<E4M3>(&t.sb_start);
    // Lane j of a transposed register holds line j's 4 codes, step s at
    // byte s.
    let bytes = E4M3ToF32::new(|s, j| 4 * j + s);
    let mut special: u64 = 0;
    let mut acc = [_mm512_setzero_ps(); R];
    let mut p = [_mm512_setzero_ps(); R];
    let mut at = Sums {
        p: &mut p,
        acc: &mut acc,
        special: &mut special,
    };
    // SAFETY (the reads of codes, steps and scales): per the function's
    // contract.
    unsafe {
        let blocks = t.k / t.block;
        for blk in 0..blocks {
            for k0 in (blk * t.block..(blk + 1) * t.block).step_by(16) {
                let v = transpose16x4(t.codes.add(k0), t.ld);
                for (q, x) in v.iter().enumerate() {
                    let mag = _mm512_and_si512(*x, consts.byte_mag);
                    *at.special |= _mm512_cmpge_epu8_mask(mag, consts.special_from);
                    for (j, w) in bytes.decode_values(*x).iter().enumerate() {
                        fma_rows(at.p, t.a.add((k0 + 4 * q + j) * t.mr), *w);
                    }
                }
            }
            end_block(t, &consts, (blk, blocks), &mut at);
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

/// The vectors [`decode`] uses, built once per call.
struct DecodeConsts {
    /// The magnitude bits once moved (exponent field from bit 23).
    mag_mask: __m512i,
    /// The exponent field once moved.
    exp_mask: __m512i,
    /// `(127 − bias) << 23`: rebiases a moved normal magnitude.
    rebias: __m512i,
    /// `(128 − bias) << 23`: the same for a subnormal one, to `2^(1 − bias)`.
    rebias_subnormal: __m512i,
    /// `2^(1 − bias)`: the implicit one a moved subnormal gains.
    implicit: __m512,
    sign_bit: __m512i,
    /// `F::TABLE` in a register (zeros without one).
    table: __m512,
    /// A code's magnitude bits, in each byte.
    byte_mag: __m512i,
    /// `F::SPECIAL_FROM` in each byte.
    special_from: __m512i,
    /// Where each line's block scales start.
    sb_start: __m512i,
    /// A code's exponent bits, in each byte.
    exp_bytes: __m512i,
    /// A code's mantissa bits, in each byte.
    mant_bytes: __m512i,
}

impl DecodeConsts {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn of<F: ShiftCode>(sb_start: &[i32]) -> Self {
        let at = 23 - F::MBITS;
        Self {
            mag_mask: _mm512_set1_epi32((F::MAG_MASK << at) as i32),
            exp_mask: _mm512_set1_epi32(((F::MAG_MASK >> F::MBITS) << 23) as i32),
            rebias: _mm512_set1_epi32((127 - F::BIAS) << 23),
            rebias_subnormal: _mm512_set1_epi32((128 - F::BIAS) << 23),
            implicit: _mm512_set1_ps(f32::from_bits(((128 - F::BIAS) as u32) << 23)),
            sign_bit: _mm512_set1_epi32(i32::MIN),
            byte_mag: _mm512_set1_epi8(F::MAG_MASK as i8),
            exp_bytes: _mm512_set1_epi8((F::MAG_MASK & !((1 << F::MBITS) - 1)) as i8),
            mant_bytes: _mm512_set1_epi8(((1u32 << F::MBITS) - 1) as i8),
            special_from: _mm512_set1_epi8(F::SPECIAL_FROM as i8),
            sb_start: _mm512_setr_epi32(
                sb_start[0],
                sb_start[1],
                sb_start[2],
                sb_start[3],
                sb_start[4],
                sb_start[5],
                sb_start[6],
                sb_start[7],
                sb_start[8],
                sb_start[9],
                sb_start[10],
                sb_start[11],
                sb_start[12],
                sb_start[13],
                sb_start[14],
                sb_start[15],
            ),
            table: {
                let t = F::TABLE.unwrap_or([0.0; 16]);
                _mm512_setr_ps(
                    t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
                    t[12], t[13], t[14], t[15],
                )
            },
        }
    }
}

/// Code `j` (bits 8j..8j + 8) of each 32-bit lane of `x`, decoded exactly:
/// the magnitude moved to bit `23 − MBITS` on (masked) and its exponent
/// rebiased by an integer add, which is the value of a normal code; a
/// subnormal one (exponent field 0) is rebiased to `2^(1 − bias)` and so
/// has gained an implicit one, which one subtraction removes (exact; zero
/// stays +0);
/// the sign moved to bit 31. Every result is a normal f32 or zero (no
/// subnormal operand, which costs a microcode assist on Intel cores: a
/// multiply by `2^(127 − bias)` after reading the moved bits as an f32
/// made MXFP4 weights 18× slower there). A 4-bit format is one table
/// lookup.
#[inline]
#[target_feature(enable = "avx512f")]
fn decode<F: ShiftCode>(x: __m512i, j: usize, c: &DecodeConsts) -> __m512 {
    if F::TABLE.is_some() {
        // vpermps reads the low 4 bits of each lane: code j's.
        return _mm512_permutexvar_ps(shift_left(x, -8 * j as i32), c.table);
    }
    let moved = _mm512_and_si512(
        shift_left(x, (23 - F::MBITS) as i32 - 8 * j as i32),
        c.mag_mask,
    );
    let subnormal = _mm512_testn_epi32_mask(moved, c.exp_mask);
    let rebiased = _mm512_mask_add_epi32(
        _mm512_add_epi32(moved, c.rebias),
        subnormal,
        moved,
        c.rebias_subnormal,
    );
    let value = _mm512_castsi512_ps(rebiased);
    let value = _mm512_mask_sub_ps(value, subnormal, value, c.implicit);
    let sign = shift_left(x, (31 - F::SIGN_POS) as i32 - 8 * j as i32);
    // sign_bit ? sign : value
    _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xE4>(
        sign,
        _mm512_castps_si512(value),
        c.sign_bit,
    ))
}

/// [`decode`] for a register that holds no subnormal code: a zero code
/// stays +0 (before its sign), every other is rebiased; two operations
/// fewer than the subnormal fix.
#[inline]
#[target_feature(enable = "avx512f")]
fn decode_normal<F: ShiftCode>(x: __m512i, j: usize, c: &DecodeConsts) -> __m512 {
    let moved = _mm512_and_si512(
        shift_left(x, (23 - F::MBITS) as i32 - 8 * j as i32),
        c.mag_mask,
    );
    let nonzero = _mm512_test_epi32_mask(moved, moved);
    let value = _mm512_maskz_add_epi32(nonzero, moved, c.rebias);
    let sign = shift_left(x, (31 - F::SIGN_POS) as i32 - 8 * j as i32);
    // sign_bit ? sign : value
    _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xE4>(sign, value, c.sign_bit))
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

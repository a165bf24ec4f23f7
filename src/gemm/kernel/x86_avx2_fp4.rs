//! The AVX2 FP4 integer dots: FP4 codes decoded to 2·value by a table
//! lookup and multiplied with A's integer-valued bytes in `vpmaddubsw`,
//! exact i32 block sums, then one f32 block accumulate. The small-M dots
//! (`Kernel::fp4_dots8`, `Kernel::fp4_packed8`) and the FP4 × FP4 tile
//! (`Kernel::fp4_tile`) of the AVX2 kernel; the AVX-512 leaf reuses the
//! dots and the block accumulate.

use super::{Fp4Lines, Fp4Tile, FP4_MR, FP4_NR, FP4_TIMES_2};
use std::arch::x86_64::*;

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

/// `2 · w` of each FP4 code (`FP4_TIMES_2`) in both 128-bit lanes, the
/// table `vpshufb` reads by a code's low four bits.
#[inline]
#[target_feature(enable = "avx2")]
fn fp4_times2_lut() -> __m256i {
    let t = FP4_TIMES_2;
    _mm256_setr_epi8(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
        t[12], t[13], t[14], t[15],
    )
}

/// [`super::Kernel::fp4_dots8`] (bounds checked by the caller).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn fp4_dots8_avx2(
    lines: &Fp4Lines<'_>,
    a_abs: *const u8,
    a_int: *const i8,
    sa: *const f32,
    g: f32,
    out: &mut [f32; 8],
) {
    let lut = fp4_times2_lut();
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

/// [`super::Kernel::fp4_packed8`] (bounds checked by the caller). Per 8 values of
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
    let lut = fp4_times2_lut();
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

/// [`super::Kernel::fp4_tile`] on AVX2: per k-quad, two 32-byte loads of B (16
/// columns × 4 k) and per row one broadcast of A's 4 bytes and two
/// `vpmaddubsw` (u8 · i8 pair sums, at most 2 · 24 · 12), summed in i16
/// lanes over the block's quads (at most 8 · 576 = 4608: no saturation);
/// at the block's end `vpmaddwd` by ones gives each column's i32 sum, the
/// offset correction is subtracted and the f32 block accumulate applied.
///
/// # Safety
/// AVX2 and FMA; the bounds [`super::Kernel::fp4_tile`] asserts.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fp4_tile_avx2(
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
/// AVX2 and FMA; the bounds [`super::Kernel::fp4_tile`] checks, `blk` < its
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

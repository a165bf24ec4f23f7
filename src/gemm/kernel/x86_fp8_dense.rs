//! The AVX2 + F16C kernel of [`Kernel::fp8_dense`](super::Kernel::fp8_dense):
//! E4M3 weights packed by [`crate::block_scaled::PackedFp8`] against rows
//! of f32 activations, each code decoded in registers. Used by the AVX2
//! and AVX-512 tiers (the `avx2_shared_methods!` of [`super::x86_avx2`]).
//!
//! An E4M3 code `c` (not NaN) read as the f16 with bits
//! `(c & 0x7F) << 7 | (c & 0x80) << 8` is exactly its value times 2^-8:
//! the exponent field lands in the f16's low four exponent bits (bias 15
//! against 7) and the subnormals follow, so `vcvtph2ps` decodes 8 codes at
//! once. With the activations prescaled by 2^8 (where exact) the chain
//! `fma(a · 2^8, w · 2^-8, p)` is `fma(a, w, p)`.

use super::x86_fp4_dense::row_scales8;
use super::Fp4DenseRows;
use std::arch::x86_64::*;

/// Where [`fp8_dense_avx2`] reads its `G` groups of 8 packed lines and
/// writes their sums: group `g`'s codes at `codes + g · code_stride`
/// bytes (per value of k, the 8 lines' codes), its scales at
/// `scales + g · scale_stride` floats; row `r`, line `8g + j` of the output
/// at `out[r · out_stride + 8g + j]`.
#[derive(Clone, Copy)]
pub(crate) struct Fp8Groups {
    pub(crate) codes: *const u8,
    pub(crate) code_stride: usize,
    pub(crate) scales: *const f32,
    pub(crate) scale_stride: usize,
    pub(crate) out: *mut f32,
    pub(crate) out_stride: usize,
}

/// [`Kernel::fp8_dense`](super::Kernel::fp8_dense) for `R` rows and `G`
/// groups of 8 lines. With `PRESCALED` the rows hold a · 2^8 (exact, the
/// driver checked); otherwise each weight is scaled back by 2^8 (exact).
/// Each line's chain over k is the contract's: one FMA per value, k
/// increasing, from +0.0 per block; each block ends with
/// `out = fma(p, fl(sa · sb), out)`.
///
/// # Safety
/// AVX2, FMA and F16C present; each of the `G` groups has `8 · rows.k`
/// bytes of codes (no NaN code) and `8 · blocks` scales, and `out` `R`
/// rows of `8 · G` floats at its stride; `rows.a` has `R` rows of `rows.k`
/// values and `rows.sa` `R` rows of `blocks` scales (`rows.k = blocks ·
/// block`, block even).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn fp8_dense_avx2<const R: usize, const G: usize, const PRESCALED: bool>(
    rows: &Fp4DenseRows<'_>,
    at: Fp8Groups,
) {
    let (k, block) = (rows.k, rows.block);
    let blocks = k / block;
    let a = rows.a.as_ptr();
    let magnitude = _mm256_set1_epi16(0x3F80);
    let sign = _mm256_set1_epi16(0x8000u16 as i16);
    let up = _mm256_set1_ps(256.0);
    let mut acc = [[_mm256_setzero_ps(); R]; G];
    // SAFETY (all reads and writes): k0 + 2 ≤ blocks · block = rows.k,
    // whose codes (8 bytes per value and group), A values (R rows), scales
    // and outputs the caller guarantees.
    unsafe {
        for blk in 0..blocks {
            let mut p = [[_mm256_setzero_ps(); R]; G];
            for k0 in (blk * block..(blk + 1) * block).step_by(2) {
                for (g, p_g) in p.iter_mut().enumerate() {
                    // Values k0 and k0 + 1 of the 8 lines: 16 codes → f16.
                    let c = _mm_loadu_si128(
                        at.codes.add(g * at.code_stride + k0 * 8) as *const __m128i
                    );
                    let c = _mm256_cvtepu8_epi16(c);
                    let h = _mm256_or_si256(
                        _mm256_and_si256(_mm256_slli_epi16::<7>(c), magnitude),
                        _mm256_and_si256(_mm256_slli_epi16::<8>(c), sign),
                    );
                    let w = [
                        _mm256_cvtph_ps(_mm256_castsi256_si128(h)),
                        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h)),
                    ];
                    for (i, w) in w.iter().enumerate() {
                        let w = if PRESCALED { *w } else { _mm256_mul_ps(*w, up) };
                        for (r, s) in p_g.iter_mut().enumerate() {
                            let x = _mm256_broadcast_ss(&*a.add(r * k + k0 + i));
                            *s = _mm256_fmadd_ps(x, w, *s);
                        }
                    }
                }
            }
            for g in 0..G {
                let sb = _mm256_loadu_ps(at.scales.add(g * at.scale_stride + blk * 8));
                let scales = row_scales8::<R>(rows, (blk, blocks), sb);
                for (r, s) in acc[g].iter_mut().enumerate() {
                    *s = _mm256_fmadd_ps(p[g][r], scales[r], *s);
                }
            }
        }
        for (g, acc_g) in acc.iter().enumerate() {
            for (r, s) in acc_g.iter().enumerate() {
                _mm256_storeu_ps(at.out.add(r * at.out_stride + g * 8), *s);
            }
        }
    }
}

/// [`Kernel::fp8_dense`](super::Kernel::fp8_dense) on `groups` (1..=8)
/// consecutive groups, about 4 chains (`R · G`) per call.
///
/// # Safety
/// As [`fp8_dense_avx2`] for every group: `codes` holds `groups · 8 · k`
/// bytes, `scales` `groups · 8 · blocks` floats, `out` `rows.rows` rows of
/// `out_stride ≥ 8 · groups` floats.
pub(crate) unsafe fn fp8_dense_groups(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: &[f32],
    groups: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let (k, blocks) = (rows.k, rows.k / rows.block);
    let mut g0 = 0;
    while g0 < groups {
        let left = groups - g0;
        let most = if rows.rows == 1 { 4 } else { 2 };
        let g = [4, 2, 1]
            .into_iter()
            .find(|&g| g <= most && g <= left)
            .unwrap_or(1);
        // SAFETY: groups g0..g0 + g < groups, within the caller's bounds.
        unsafe {
            let at = Fp8Groups {
                codes: codes.as_ptr().add(g0 * k * 8),
                code_stride: k * 8,
                scales: scales.as_ptr().add(g0 * blocks * 8),
                scale_stride: blocks * 8,
                out: out.as_mut_ptr().add(g0 * 8),
                out_stride,
            };
            macro_rules! call {
                ($($r:literal, $g:literal);*) => {
                    match (rows.rows, g, rows.prescaled) {
                        $(($r, $g, true) => fp8_dense_avx2::<$r, $g, true>(rows, at),
                          ($r, $g, false) => fp8_dense_avx2::<$r, $g, false>(rows, at),)*
                        _ => unreachable!("rows 1..=4 and their group counts"),
                    }
                };
            }
            call!(1, 4; 1, 2; 1, 1; 2, 2; 2, 1; 3, 2; 3, 1; 4, 2; 4, 1);
        }
        g0 += g;
    }
}

/// [`Kernel::fp8_dense`](super::Kernel::fp8_dense) of the AVX2 and AVX-512
/// tiers: the bounds its `#[target_feature]` functions rely on, asserted.
pub(crate) fn fp8_dense_checked(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: &[f32],
    groups: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    check_fp8_dense(
        rows,
        codes,
        scales,
        (groups, out_stride, super::FP4_DENSE_MR),
        out,
    );
    // SAFETY: the driver selects this kernel only when the CPU has AVX2,
    // FMA and F16C, and the packed codes hold no NaN code; the asserts
    // above bound every read and write.
    unsafe { fp8_dense_groups(rows, codes, scales, groups, out, out_stride) }
}

/// The bounds every `fp8_dense` kernel (AVX2, AVX-512) relies on: whole
/// blocks of an even number of values, `groups` groups of codes and
/// scales, the rows of A and their scales, and the output rows.
pub(crate) fn check_fp8_dense(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: &[f32],
    (groups, out_stride, max_rows): (usize, usize, usize),
    out: &[f32],
) {
    let blocks = rows.k / rows.block.max(1);
    assert!(rows.block.is_multiple_of(2) && blocks * rows.block == rows.k);
    assert!(codes.len() >= groups * rows.k * 8 && scales.len() >= groups * blocks * 8);
    assert!(rows.a.len() >= rows.rows * rows.k && rows.sa.len() >= rows.rows * blocks);
    assert!((1..=max_rows).contains(&rows.rows));
    assert!(out_stride >= groups * 8 && out.len() >= (rows.rows - 1) * out_stride + groups * 8);
}

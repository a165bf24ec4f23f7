//! The AVX2 kernel of [`Kernel::fp4_dense8`](super::Kernel::fp4_dense8):
//! FP4 weights packed by [`crate::block_scaled::PackedFp4`] against rows
//! of f32 activations, each FP4 code decoded to f32 in registers. Used by
//! the AVX2 and AVX-512 tiers (the `avx2_shared_methods!` of
//! [`super::x86_avx2`]).

use super::{Fp4DenseRows, FP4_DENSE_MR, FP4_TIMES_2};
use std::arch::x86_64::*;

/// [`Kernel::fp4_dense8`](super::Kernel::fp4_dense8) for `R` rows; with
/// `HALVED` the rows hold a/2 (exact, the driver checked) and the weights
/// enter as 2·w, so that `fma(a/2, 2·w, p) = fma(a, w, p)` (the same real
/// product, one rounding) and no multiply by 1/2 is needed per weight.
///
/// Per 8 values of k one 32-byte load holds the 8 lines' codes (lane `j`:
/// bytes `4j..4j + 4`, low nibbles k to k + 3, high nibbles k + 4 to
/// k + 7). `vpshufb` turns the nibbles into the bytes 2·w; a shift pair
/// sign-extends byte `i` of every lane to an i32, and `vcvtdq2ps` gives
/// 2·w exactly. Each line's chain over k is the contract's: one FMA per
/// value, k increasing, from +0.0 per block; each block ends with
/// `out = fma(p, fl(sa · sb), out)`.
///
/// # Safety
/// AVX2 and FMA present; `codes` has `4 · blocks · block` bytes and
/// `scales` `8 · blocks` floats; `rows.a` has `R` rows of `rows.k`
/// values and `rows.sa` `R` rows of `blocks` scales (`rows.k = blocks ·
/// block`, block a multiple of 8).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn fp4_dense8_avx2<const R: usize, const HALVED: bool>(
    codes: *const u8,
    scales: *const f32,
    rows: &Fp4DenseRows<'_>,
    out: &mut [[f32; 8]; FP4_DENSE_MR],
) {
    let t = FP4_TIMES_2;
    let lut = _mm256_setr_epi8(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
        t[12], t[13], t[14], t[15],
    );
    let low = _mm256_set1_epi8(0x0F);
    let half = _mm256_set1_ps(0.5);
    let (k, block) = (rows.k, rows.block);
    let blocks = k / block;
    let a = rows.a.as_ptr();
    let sa = rows.sa.as_ptr();
    let mut acc = [_mm256_setzero_ps(); R];
    // SAFETY (all reads): k0 + 8 ≤ blocks · block = rows.k, whose codes
    // (32 bytes per 8 values), A values (R rows) and scales the caller
    // guarantees.
    unsafe {
        for blk in 0..blocks {
            let mut p = [_mm256_setzero_ps(); R];
            for k0 in (blk * block..(blk + 1) * block).step_by(8) {
                let v = _mm256_loadu_si256(codes.add(k0 * 4) as *const __m256i);
                let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
                let hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(v), low));
                // Byte i of every lane, sign-extended: 2·w at k0 + i (lo)
                // and k0 + 4 + i (hi).
                let w2 = [
                    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(lo)),
                    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<16>(lo)),
                    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<8>(lo)),
                    _mm256_srai_epi32::<24>(lo),
                    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(hi)),
                    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<16>(hi)),
                    _mm256_srai_epi32::<24>(_mm256_slli_epi32::<8>(hi)),
                    _mm256_srai_epi32::<24>(hi),
                ];
                for (i, w) in w2.iter().enumerate() {
                    let mut w = _mm256_cvtepi32_ps(*w);
                    if !HALVED {
                        w = _mm256_mul_ps(w, half); // exact: w itself
                    }
                    for (r, s) in p.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*a.add(r * k + k0 + i));
                        *s = _mm256_fmadd_ps(x, w, *s);
                    }
                }
            }
            let sb = _mm256_loadu_ps(scales.add(blk * 8));
            for (r, s) in acc.iter_mut().enumerate() {
                let scale = _mm256_mul_ps(_mm256_set1_ps(*sa.add(r * blocks + blk)), sb);
                *s = _mm256_fmadd_ps(p[r], scale, *s);
            }
        }
        for (r, s) in acc.iter().enumerate() {
            _mm256_storeu_ps(out[r].as_mut_ptr(), *s);
        }
    }
}

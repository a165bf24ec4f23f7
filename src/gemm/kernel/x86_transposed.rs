//! The AVX2 kernel of [`Kernel::tile_direct_t`](super::Kernel::tile_direct_t):
//! B with contiguous columns (`x · Wᵀ`, W stored `[out, in]`) read in
//! place, each 8 × 8 block of W transposed in registers. Used by the AVX2
//! tier, and by the AVX-512 tier for f16 W and widths that are not a
//! multiple of 16 (its f32/bf16 kernel is [`super::x86_avx512_transposed`]).

use super::x86_avx2::LoadB;
use super::DirectLoad;
use std::arch::x86_64::*;

/// The shape of a [`tile_direct_t_avx2`] call: `kt8` steps (a multiple
/// of 8) of an A panel of stride `mr`; `nb` outputs (a multiple of 8) whose
/// weights are rows of W (row stride `ld` elements, of `load`'s type).
#[derive(Clone, Copy)]
pub(crate) struct TransposedTile {
    pub(crate) kt8: usize,
    pub(crate) mr: usize,
    pub(crate) ld: usize,
    pub(crate) nb: usize,
    pub(crate) load: DirectLoad,
}

/// [`tile_direct_t_avx2`] for `rows` (1..=8) rows of A.
///
/// # Safety
/// As [`tile_direct_t_avx2`], with `R = rows`.
pub(crate) unsafe fn direct_t_avx2(
    rows: usize,
    a: *const f32,
    w: *const u8,
    p: *mut f32,
    t: TransposedTile,
) {
    // SAFETY: the caller's contract is each instance's.
    unsafe {
        match rows {
            1 => tile_direct_t_avx2::<1>(a, w, p, t),
            2 => tile_direct_t_avx2::<2>(a, w, p, t),
            3 => tile_direct_t_avx2::<3>(a, w, p, t),
            4 => tile_direct_t_avx2::<4>(a, w, p, t),
            5 => tile_direct_t_avx2::<5>(a, w, p, t),
            6 => tile_direct_t_avx2::<6>(a, w, p, t),
            7 => tile_direct_t_avx2::<7>(a, w, p, t),
            _ => tile_direct_t_avx2::<8>(a, w, p, t),
        }
    }
}

/// [`Kernel::tile_direct_t`]'s blocks of 8 steps for `R` rows of A, eight
/// outputs at a time: each 8 × 8 block of W transposed in registers, one
/// FMA per step and row, continuing the chains in `p` (`R` rows of `nb`).
/// For each output the chain runs over k in increasing order, as in
/// `tile_avx2`. Eight outputs at a time keep eight rows of W streaming:
/// on Zen 3, sixteen, or the same eight rows read at two or four places
/// (two groups' or K-tiles' chains side by side, to hide the FMA latency)
/// read 1.4–2.5× slower than this at one row of A.
///
/// # Safety
/// AVX2, FMA and F16C present; `a` has `kt8 · mr` floats; `w` has
/// `(nb − 1) · ld + kt8` elements of `load`'s type; `p` has `R · nb`
/// floats.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_direct_t_avx2<const R: usize>(
    a: *const f32,
    w: *const u8,
    p: *mut f32,
    t: TransposedTile,
) {
    let size = t.load.size();
    for j0 in (0..t.nb).step_by(8) {
        // SAFETY: outputs j0..j0 + 8 ≤ nb of W's rows and of p's rows;
        // steps < kt8 of A and W (the function's contract).
        unsafe {
            let mut sums = [_mm256_setzero_ps(); R];
            for (r, s) in sums.iter_mut().enumerate() {
                *s = _mm256_loadu_ps(p.add(r * t.nb + j0));
            }
            let w_row = |j: usize, k: usize| t.load.load8(w.add((j * t.ld + k) * size));
            let f32_at = |j: usize, k: usize| (w as *const f32).add(j * t.ld + k);
            for k0 in (0..t.kt8).step_by(8) {
                let cols = if matches!(t.load, DirectLoad::F32) {
                    transpose8x8_f32_rows(f32_at(j0, k0), t.ld)
                } else {
                    crate::simd::x86_64::transpose8x8([
                        w_row(j0, k0),
                        w_row(j0 + 1, k0),
                        w_row(j0 + 2, k0),
                        w_row(j0 + 3, k0),
                        w_row(j0 + 4, k0),
                        w_row(j0 + 5, k0),
                        w_row(j0 + 6, k0),
                        w_row(j0 + 7, k0),
                    ])
                };
                for (q, col) in cols.iter().enumerate() {
                    let ak = a.add((k0 + q) * t.mr);
                    for (r, s) in sums.iter_mut().enumerate() {
                        *s = _mm256_fmadd_ps(_mm256_broadcast_ss(&*ak.add(r)), *col, *s);
                    }
                }
            }
            for (r, s) in sums.iter().enumerate() {
                _mm256_storeu_ps(p.add(r * t.nb + j0), *s);
            }
        }
    }
}

/// The 8 × 8 block of f32 at `w` (rows `ld` apart) transposed: output `q`
/// holds value `q` of the 8 rows. Each register is loaded as two 128-bit
/// halves, row `i` below row `i + 4` (`vinsertf128` from memory), so two
/// in-lane 4 × 4 transposes finish the job: 16 in-lane shuffles instead of
/// [`crate::simd::x86_64::transpose8x8`]'s 24, of which 8 cross lanes (on
/// Zen 4 the `x · Wᵀ` GEMV was 1.4× slower than `x · W` with those).
///
/// # Safety
/// AVX present; 8 rows of 8 floats at `w`, `ld` apart.
#[inline]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8_f32_rows(w: *const f32, ld: usize) -> [__m256; 8] {
    // SAFETY: rows 0..8, values 0..8 of each (the caller's contract).
    let half = |i: usize, k: usize| unsafe {
        _mm256_insertf128_ps::<1>(
            _mm256_castps128_ps256(_mm_loadu_ps(w.add(i * ld + k))),
            _mm_loadu_ps(w.add((i + 4) * ld + k)),
        )
    };
    let four = |k: usize| {
        let (r0, r1, r2, r3) = (half(0, k), half(1, k), half(2, k), half(3, k));
        let t0 = _mm256_unpacklo_ps(r0, r1);
        let t1 = _mm256_unpackhi_ps(r0, r1);
        let t2 = _mm256_unpacklo_ps(r2, r3);
        let t3 = _mm256_unpackhi_ps(r2, r3);
        [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ]
    };
    let (lo, hi) = (four(0), four(4));
    [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
}

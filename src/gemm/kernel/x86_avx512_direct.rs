//! The AVX-512 direct-B kernel of [`Kernel::tile_direct`](super::Kernel::tile_direct):
//! rows of B (`[in, out]` weights) read in place and widened in registers
//! (f32, f16, bf16, and FP8 E4M3 / E5M2 through f16), the AVX2 kernel's
//! traversal on zmm registers, each lane the contract's chain (one FMA
//! per step in increasing k; [`super::x86_avx512::fma_step`]).

use super::x86_avx512::{fma_step, DIRECT_MR, NR};
use super::{DirectLoad, RowLoad};
use std::arch::x86_64::*;

/// The leaf's loads of B for the direct kernel.
pub(super) trait LoadB {
    unsafe fn load16(self, p: *const u8) -> __m512;
}

impl LoadB for DirectLoad {
    /// # Safety
    /// `p` points at 16 readable elements of this type; AVX-512F present.
    #[inline(always)]
    unsafe fn load16(self, p: *const u8) -> __m512 {
        // SAFETY: per the function's contract.
        unsafe {
            match self {
                DirectLoad::F32 => _mm512_loadu_ps(p as *const f32),
                DirectLoad::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
                DirectLoad::BF16 => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)),
                )),
            }
        }
    }
}

impl LoadB for RowLoad {
    /// # Safety
    /// `p` points at 16 readable elements of this type; AVX-512 F/BW/VL
    /// present.
    #[inline(always)]
    unsafe fn load16(self, p: *const u8) -> __m512 {
        // SAFETY: per the function's contract.
        unsafe {
            // Each code in the top byte of a 16-bit lane (one in-lane
            // shuffle of the 16 bytes, broadcast to both halves).
            let codes_high = || {
                let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
                _mm256_shuffle_epi8(both, CODE_TO_HIGH_BYTE)
            };
            match self {
                RowLoad::Dense(load) => load.load16(p),
                RowLoad::E4M3 => _mm512_mul_ps(
                    _mm512_cvtph_ps(e4m3_as_f16(codes_high())),
                    _mm512_set1_ps(256.0),
                ),
                RowLoad::E4M3Over256 => _mm512_cvtph_ps(e4m3_as_f16(codes_high())),
                RowLoad::E5M2 => _mm512_cvtph_ps(codes_high()),
            }
        }
    }
}

/// The `vpshufb` indices that put byte `j` of each 128-bit half's 16 codes
/// into the top byte of 16-bit lane `j` of the ymm (codes 0–7 in the low
/// half, 8–15 in the high one), the low bytes zeroed (index 0x80).
const CODE_TO_HIGH_BYTE: __m256i = {
    let mut bytes = [0x80u8; 32];
    let mut j = 0;
    while j < 16 {
        bytes[2 * j + 1] = j as u8;
        j += 1;
    }
    // SAFETY: 32 bytes are a __m256i's size; every bit pattern is valid.
    unsafe { std::mem::transmute::<[u8; 32], __m256i>(bytes) }
};

/// Sixteen E4M3 codes (each the top byte of a 16-bit lane, the low byte
/// zero) as the f16s of their values times 2^-8, exactly: an arithmetic
/// shift right by one puts the magnitude bits in place below the sign
/// (bit 14, a copy of the sign, is cleared), and the NaN codes (magnitude
/// 0x7F) get bit 14 set, the f16's all-ones exponent (the same pattern as
/// the AVX2 leaf's eight, sign kept).
#[inline(always)]
fn e4m3_as_f16(high: __m256i) -> __m256i {
    // SAFETY: AVX2 and AVX-512 F/VL, present wherever this leaf runs (its
    // callers enable them).
    unsafe {
        let shifted = _mm256_srai_epi16::<1>(high);
        let exponent_mantissa = _mm256_set1_epi16(0x3F80);
        let nan = _mm256_cmpeq_epi16(
            _mm256_and_si256(shifted, exponent_mantissa),
            exponent_mantissa,
        );
        // Bit 14 from `nan`, every other bit from `shifted`.
        _mm256_ternarylogic_epi32::<0xD8>(shifted, nan, _mm256_set1_epi16(0x4000))
    }
}

/// K-steps per pass over a row of B in [`tile_direct_avx512`] where B
/// comes from cache (several A panels read it): that many rows of B stream
/// at once, and the sums of a block of columns are loaded and stored once
/// per pass (16 against the AVX2 kernel's 8: Intel Xeon, Ice Lake, f32 K =
/// N = 4096, M = 32 about 24 → 21 ms, M = 32, K = N = 1024 1.5 → 1.25;
/// AMD EPYC Zen 4, M = 32 20.1 → 17.7).
pub(super) const DIRECT_K_GROUP: usize = 16;

/// [`DIRECT_K_GROUP`] where B's rows come from memory once (one A panel
/// sweeps them): sixteen rows a pass are more streams than the
/// prefetchers follow (AMD EPYC Zen 4, f32 K = N = 4096, M = 1 3.5 → 2.7
/// ms, M = 8 5.5–5.9 → 4.7, against 16 a pass).
pub(super) const DIRECT_K_GROUP_FROM_MEMORY: usize = 8;

/// The AVX2 leaf's `tile_direct_avx2` on zmm registers: the same
/// traversal (a group of k-steps sweeps across all columns) and the same
/// chains, with up to three 16-column blocks of `p` in registers per row for
/// the group ([`direct_columns`]): each broadcast of A then feeds that many
/// FMAs. (One block at a time, a step's 8 broadcasts and one load of B fed
/// 8 FMAs, and the loads bounded the kernel: Intel Xeon, Ice Lake, K = N =
/// 4096 f32, M = 32 in about 21 ms of kernel time, 51 GFLOP/s.)
///
/// `group` k-steps per pass ([`DIRECT_K_GROUP`] or
/// [`DIRECT_K_GROUP_FROM_MEMORY`]).
///
/// # Safety
/// AVX2, FMA, F16C and AVX-512 F/BW/VL present; `a` has `kt * DIRECT_MR` floats;
/// `b` has `(kt - 1) * bs + nb` elements of `load`'s type; `p` has `R * nb`
/// floats;
/// `nb` is a multiple of 16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn tile_direct_avx512<const R: usize>(
    kt: usize,
    a: *const f32,
    b: *const u8,
    bs: usize,
    nb: usize,
    p: *mut f32,
    load: RowLoad,
    group: usize,
) {
    let row_bytes = bs * load.size();
    for g in (0..kt).step_by(group.max(1)) {
        let steps = g..g + group.min(kt - g);
        let mut j = 0;
        // SAFETY (each call): rows < R of p, columns j..j + 16·V ≤ nb;
        // k-steps g..g + steps ≤ kt of A and B (the caller's contract).
        unsafe {
            while j + 3 * NR <= nb {
                direct_columns::<R, 3>(steps.clone(), a, b, row_bytes, j, nb, p, load);
                j += 3 * NR;
            }
            match (nb - j) / NR {
                2 => direct_columns::<R, 2>(steps.clone(), a, b, row_bytes, j, nb, p, load),
                1 => direct_columns::<R, 1>(steps.clone(), a, b, row_bytes, j, nb, p, load),
                _ => {}
            }
        }
    }
}

/// [`tile_direct_avx512`]'s k-steps `steps` for `V` blocks of 16 columns
/// from column `j`: the sums loaded from `p`, one FMA per (row, column,
/// step) in increasing k, stored back.
///
/// # Safety
/// As [`tile_direct_avx512`], and columns `j..j + 16·V` lie within `nb`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn direct_columns<const R: usize, const V: usize>(
    steps: std::ops::Range<usize>,
    a: *const f32,
    b: *const u8,
    row_bytes: usize,
    j: usize,
    nb: usize,
    p: *mut f32,
    load: RowLoad,
) {
    // SAFETY: rows < R of p and columns j..j + 16·V < nb; k-steps in
    // `steps` of A and B (the function's contract).
    unsafe {
        let mut sums = [[_mm512_setzero_ps(); V]; R];
        for (r, row) in sums.iter_mut().enumerate() {
            for (v, s) in row.iter_mut().enumerate() {
                *s = _mm512_loadu_ps(p.add(r * nb + j + v * NR));
            }
        }
        for kk in steps {
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = load.load16(b.add(kk * row_bytes + (j + v * NR) * load.size()));
            }
            fma_step(&mut sums, a.add(kk * DIRECT_MR), &bv);
        }
        for (r, row) in sums.iter().enumerate() {
            for (v, s) in row.iter().enumerate() {
                _mm512_storeu_ps(p.add(r * nb + j + v * NR), *s);
            }
        }
    }
}

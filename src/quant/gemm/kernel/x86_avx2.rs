//! AVX2 integer micro-kernels: `vpmaddwd` on i16 pairs (any i8/u8 values:
//! no saturation, every product and pair sum exact in i32), `vpmaddubsw`
//! for 7-bit u8 activations, and the row kernels of the packed skinny path.

use super::{checked_packed_dots, IntKernel};
use std::arch::x86_64::*;

/// 6 rows × 16 columns of i32 sums; per k-pair two `vpmaddwd` per row.
pub(crate) struct Avx2Int;

const MR: usize = 6;
const NR: usize = 16;

impl IntKernel for Avx2Int {
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 2;
    const SUBTRACTS_ZERO_POINTS: bool = true;
    type Packed = i16;

    fn pack_a(v: i32, z: i32) -> i16 {
        (v - z) as i16
    }

    fn pack_b(v: i32, z: i32) -> i16 {
        (v - z) as i16
    }

    fn tile(pairs: usize, a: &[i16], b: &[i16], acc: &mut [i32], ld: usize, first: bool) {
        assert!(a.len() >= 2 * pairs * MR && b.len() >= 2 * pairs * NR);
        assert!(ld >= NR && acc.len() >= (MR - 1) * ld + NR);
        // SAFETY: the driver selects this kernel only when the CPU has AVX2;
        // the asserts bound every access.
        unsafe { tile_madd(pairs, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr(), ld, first) }
    }
}

/// # Safety
/// AVX2; `a` has `2·pairs·6` i16, `b` has `2·pairs·16`, `acc` has 6 rows of
/// 16 i32 at stride `ld`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_madd(
    pairs: usize,
    a: *const i16,
    b: *const i16,
    acc: *mut i32,
    ld: usize,
    first: bool,
) {
    let mut p = [[_mm256_setzero_si256(); 2]; MR];
    #[inline(always)]
    fn step(p: &mut [[__m256i; 2]; MR], a: *const i16, b: *const i16) {
        // SAFETY: the caller passes one k-pair of each panel.
        unsafe {
            let b0 = _mm256_loadu_si256(b as *const __m256i);
            let b1 = _mm256_loadu_si256(b.add(16) as *const __m256i);
            for (r, pr) in p.iter_mut().enumerate() {
                let av = _mm256_set1_epi32((a.add(2 * r) as *const i32).read_unaligned());
                pr[0] = _mm256_add_epi32(pr[0], _mm256_madd_epi16(av, b0));
                pr[1] = _mm256_add_epi32(pr[1], _mm256_madd_epi16(av, b1));
            }
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..pairs / 2 {
        // SAFETY: two more k-pairs remain in both panels.
        unsafe {
            step(&mut p, a, b);
            step(&mut p, a.add(2 * MR), b.add(2 * NR));
            a = a.add(4 * MR);
            b = b.add(4 * NR);
        }
    }
    if pairs % 2 == 1 {
        step(&mut p, a, b);
    }
    // SAFETY: per this function's contract, `acc` has 6 rows of 16 i32.
    unsafe { store_block(&p, acc, ld, first) }
}

/// 6 rows × 16 columns of i32 sums from u8 A values ≤ 127 and i8 B values:
/// per group of four k, one `vpmaddubsw` (u8·i8 pair sums in i16, at most
/// 2·127·128 = 32512: never saturating) and one `vpmaddwd` by ones (to i32)
/// per 8 columns. Raw values are multiplied; the driver applies the
/// zero-point corrections. Only chosen when every A value is ≤ 127.
pub(crate) struct Avx2U7;

impl IntKernel for Avx2U7 {
    const MR: usize = MR;
    const NR: usize = NR;
    const GROUP: usize = 4;
    const SUBTRACTS_ZERO_POINTS: bool = false;
    type Packed = u8;

    fn pack_a(v: i32, _z: i32) -> u8 {
        v as u8
    }

    fn pack_b(v: i32, _z: i32) -> u8 {
        v as i8 as u8
    }

    fn tile(quads: usize, a: &[u8], b: &[u8], acc: &mut [i32], ld: usize, first: bool) {
        assert!(a.len() >= 4 * quads * MR && b.len() >= 4 * quads * NR);
        assert!(ld >= NR && acc.len() >= (MR - 1) * ld + NR);
        // SAFETY: the driver selects this kernel only when the CPU has AVX2;
        // the asserts bound every access.
        unsafe { tile_maddubs(quads, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr(), ld, first) }
    }
}

/// # Safety
/// AVX2; `a` has `4·quads·6` bytes, `b` has `4·quads·16`, `acc` has 6 rows
/// of 16 i32 at stride `ld`; every byte of `a` is at most 127.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_maddubs(
    quads: usize,
    a: *const u8,
    b: *const u8,
    acc: *mut i32,
    ld: usize,
    first: bool,
) {
    let ones = _mm256_set1_epi16(1);
    let mut p = [[_mm256_setzero_si256(); 2]; MR];
    #[inline(always)]
    fn step(p: &mut [[__m256i; 2]; MR], a: *const u8, b: *const u8, ones: __m256i) {
        // SAFETY: the caller passes one k-quad of each panel.
        unsafe {
            let b0 = _mm256_loadu_si256(b as *const __m256i);
            let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
            for (r, pr) in p.iter_mut().enumerate() {
                let av = _mm256_set1_epi32((a.add(4 * r) as *const i32).read_unaligned());
                pr[0] =
                    _mm256_add_epi32(pr[0], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));
                pr[1] =
                    _mm256_add_epi32(pr[1], _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));
            }
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..quads {
        step(&mut p, a, b, ones);
        // SAFETY: advancing within the panels (one quad each).
        unsafe {
            a = a.add(4 * MR);
            b = b.add(4 * NR);
        }
    }
    // SAFETY: per this function's contract, `acc` has 6 rows of 16 i32.
    unsafe { store_block(&p, acc, ld, first) }
}

/// `acc[r·ld ..][..16] = (first ? 0 : acc) + p[r]` for the 6 rows (wrapping).
///
/// # Safety
/// AVX2; `acc` has 6 rows of 16 i32 at stride `ld`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn store_block(p: &[[__m256i; 2]; MR], acc: *mut i32, ld: usize, first: bool) {
    for (r, pr) in p.iter().enumerate() {
        // SAFETY: row r < 6 of the accumulator block, 16 i32.
        unsafe {
            let dst = acc.add(r * ld) as *mut __m256i;
            let (s0, s1) = if first {
                (_mm256_setzero_si256(), _mm256_setzero_si256())
            } else {
                (_mm256_loadu_si256(dst), _mm256_loadu_si256(dst.add(1)))
            };
            _mm256_storeu_si256(dst, _mm256_add_epi32(s0, pr[0]));
            _mm256_storeu_si256(dst.add(1), _mm256_add_epi32(s1, pr[1]));
        }
    }
}

checked_packed_dots! {
    /// Σ_k a_r[k]·b[k, j] for the eight columns of a [`crate::quant::PackedI8`] group
    /// (`codes`: 32 bytes per 4 values of k) and R rows of A (u8 values ≤ 127,
    /// `4 · runs` each): per 4 k, one load of the
    /// weights, then per row one `vpmaddubsw` (pair sums at most 2·127·128,
    /// no saturation) and `vpmaddwd` by ones into i32 lanes, one per column.
    packed_dots8_u7 => packed_dots8_u7_avx2, u8
}

#[target_feature(enable = "avx2,fma")]
unsafe fn packed_dots8_u7_avx2<const R: usize>(
    codes: *const i8,
    rows: [*const u8; R],
    runs: usize,
) -> [[i32; 8]; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); R];
    // SAFETY (all reads): run q < runs reads codes[32q..32q + 32] and
    // a_r[4q..4q + 4].
    unsafe {
        let mut run = |q: usize| {
            let b = _mm256_loadu_si256(codes.add(32 * q) as *const __m256i);
            for (acc_r, &a) in acc.iter_mut().zip(&rows) {
                let a4 = _mm256_set1_epi32((a.add(4 * q) as *const i32).read_unaligned());
                let pairs = _mm256_maddubs_epi16(a4, b);
                *acc_r = _mm256_add_epi32(*acc_r, _mm256_madd_epi16(pairs, ones));
            }
        };
        unrolled_by_4(runs, &mut run);
        let mut out = [[0i32; 8]; R];
        for (o, v) in out.iter_mut().zip(&acc) {
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, *v);
        }
        out
    }
}

checked_packed_dots! {
    /// As [`packed_dots8_u7`] for any A values given as i16: each 4-k run's
    /// bytes widened to i16 once (columns 0–3, then 4–7) and `vpmaddwd` with
    /// each row's four values (products at most 255·128, pair sums exact in
    /// i32).
    packed_dots8_i16 => packed_dots8_i16_avx2, i16
}

#[target_feature(enable = "avx2,fma")]
unsafe fn packed_dots8_i16_avx2<const R: usize>(
    codes: *const i8,
    rows: [*const i16; R],
    runs: usize,
) -> [[i32; 8]; R] {
    let mut lo = [_mm256_setzero_si256(); R];
    let mut hi = [_mm256_setzero_si256(); R];
    // SAFETY (all reads): run q < runs reads codes[32q..32q + 32] and
    // a_r[4q..4q + 4].
    unsafe {
        let mut run = |q: usize| {
            // Two 16-byte loads widened in place (`vpmovsxbw ymm, m128`):
            // no lane extract.
            let b_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(codes.add(32 * q) as *const __m128i));
            let b_hi =
                _mm256_cvtepi8_epi16(_mm_loadu_si128(codes.add(32 * q + 16) as *const __m128i));
            for r in 0..R {
                let a4 = _mm256_set1_epi64x((rows[r].add(4 * q) as *const i64).read_unaligned());
                lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(b_lo, a4));
                hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(b_hi, a4));
            }
        };
        unrolled_by_4(runs, &mut run);
        let mut out = [[0i32; 8]; R];
        for r in 0..R {
            // lo: two partial sums per column 0–3, hi: per column 4–7.
            let pairs = _mm256_hadd_epi32(lo[r], hi[r]); // [c0 c1 c4 c5 | c2 c3 c6 c7]
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(pairs);
            _mm256_storeu_si256(out[r].as_mut_ptr() as *mut __m256i, ordered);
        }
        out
    }
}

/// `run(q)` for q in `0..runs`, four per loop iteration (the row kernels
/// are short enough per run that loop overhead counts at M = 1).
#[inline(always)]
fn unrolled_by_4(runs: usize, run: &mut impl FnMut(usize)) {
    let main = runs - runs % 4;
    for q in (0..main).step_by(4) {
        run(q);
        run(q + 1);
        run(q + 2);
        run(q + 3);
    }
    for q in main..runs {
        run(q);
    }
}

//! AVX2 kernels of the integer GEMM's direct path (a few rows of A, an
//! int8 B read in place): `vpmaddwd` on i16 pairs. A enters as `a − za`
//! (at most 255 in magnitude), B's bytes are sign-extended, and each pair
//! sum (at most 2·255·128 in magnitude) is exact in i32; so no column sums
//! are needed and the zero-point correction is `− zb · Σ(a − za)`.
//!
//! - [`Avx2Direct::by_rows`]: B row-major; one row of A at a time, two
//!   rows of B (64 columns as four runs of 16) sign-extended and
//!   interleaved into pairs in registers.
//! - [`Avx2Direct::by_lines`]: B's columns contiguous (`[out, in]`): dot
//!   products over k, 16 values per instruction, summed across the
//!   register at the end.

use super::{copy_tile, DirectKernel, DIRECT_LINES, DIRECT_TILE as TILE};
use std::arch::x86_64::*;

/// The AVX2 direct kernels.
pub(crate) struct Avx2Direct;

// Columns per call (`TILE`): four runs of 16 (one pair of ymm sums per
// row each), so that each call does enough work to carry its overhead (16
// columns per call ran M = 1 at 1.97 ms on Zen 4, K = N = 4096).
/// Columns per run (two ymm of i32 sums).
const RUN: usize = 16;

impl DirectKernel for Avx2Direct {
    type A = i16;
    const STEP: usize = 2;
    const TILE: usize = TILE;
    const COLUMN_SUMS: bool = false;
    type Tile = i16;
    // On Zen 4 (forced AVX2), K = N = 4096: M = 8 in 6.3 ms in place, 3.3
    // ms packed.
    const PACK_PAST_ROWS: usize = 4;

    fn convert(v: i32, za: i32, _offset: i32) -> i16 {
        (v - za) as i16
    }

    fn slot(j: usize) -> usize {
        // Per run of 16 columns, `vpunpcklwd` keeps columns 0–3 and 8–11
        // (lanes 0–7 of the first vector), `vpunpckhwd` 4–7 and 12–15.
        let (run, j) = (j / RUN, j % RUN);
        let (half, within) = (j / 8, j % 8);
        RUN * run + 8 * (within / 4) + 4 * half + within % 4
    }

    fn by_rows<const R: usize>(
        a: &[i16],
        lda: usize,
        b: &[i8],
        ldb: usize,
        (rows_k, cols): (usize, usize),
        acc: &mut [i32],
        _sums: Option<&mut [i32]>,
        first: bool,
    ) {
        let k2 = rows_k.div_ceil(2) * 2;
        assert!((1..=TILE).contains(&cols) && acc.len() >= R * TILE);
        assert!(R == 0 || (lda >= k2 && a.len() >= (R - 1) * lda + k2));
        assert!(rows_k == 0 || b.len() >= (rows_k - 1) * ldb + cols);
        if cols < TILE {
            // A short tile: its rows copied into 64-byte rows, zero-padded.
            let mut tile = vec![0i8; rows_k * TILE];
            copy_tile(b, ldb, (rows_k, cols), &mut tile);
            return Self::by_rows::<R>(a, lda, &tile, TILE, (rows_k, TILE), acc, None, first);
        }
        // SAFETY: the driver calls this only when the CPU has AVX2; the
        // asserts bound every read (64 bytes of each of B's `rows_k` rows,
        // `k2` values of each row of A) and write.
        unsafe {
            by_rows_avx2::<R>(
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                rows_k,
                acc.as_mut_ptr(),
                first,
            )
        }
    }

    fn tile_len(rows_k: usize) -> usize {
        // Per pair of rows, per run of 16 columns: 16 pairs of i16, twice.
        rows_k.div_ceil(2) * 2 * TILE
    }

    /// Per pair of B's rows, per run of 16 columns, the two vectors of
    /// i16 pairs `by_rows` builds in registers (`vpunpcklwd`, then
    /// `vpunpckhwd` of the sign-extended rows), stored.
    fn pack_tile(
        b: &[i8],
        ldb: usize,
        (rows_k, cols): (usize, usize),
        out: &mut [i16],
        _sums: Option<&mut [i32]>,
        _first: bool,
    ) {
        assert!((1..=TILE).contains(&cols) && out.len() >= Self::tile_len(rows_k));
        assert!(rows_k == 0 || b.len() >= (rows_k - 1) * ldb + cols);
        if cols < TILE {
            let mut tile = vec![0i8; rows_k * TILE];
            copy_tile(b, ldb, (rows_k, cols), &mut tile);
            return Self::pack_tile(&tile, TILE, (rows_k, TILE), out, None, false);
        }
        // SAFETY: the driver calls this only when the CPU has AVX2; the
        // asserts bound every read (64 bytes of each of `rows_k` rows) and
        // write (`tile_len(rows_k)` values).
        unsafe { pack_pairs_avx2(b.as_ptr(), ldb, rows_k, out.as_mut_ptr()) }
    }

    fn by_rows_packed<const R: usize>(
        a: &[i16],
        lda: usize,
        tile: &[i16],
        rows_k: usize,
        acc: &mut [i32],
        first: bool,
    ) {
        let k2 = rows_k.div_ceil(2) * 2;
        assert!(tile.len() >= Self::tile_len(rows_k) && acc.len() >= R * TILE);
        assert!(R == 0 || (lda >= k2 && a.len() >= (R - 1) * lda + k2));
        // SAFETY: the driver calls this only when the CPU has AVX2; the
        // asserts bound every read (the packed pairs, `k2` values of each
        // row of A) and write.
        unsafe {
            by_rows_packed_avx2::<R>(
                a.as_ptr(),
                lda,
                tile.as_ptr(),
                rows_k,
                acc.as_mut_ptr(),
                first,
            )
        }
    }

    fn by_lines<const R: usize>(
        a: &[i16],
        lda: usize,
        w: [&[i8]; DIRECT_LINES],
        k: usize,
        _sums: Option<&mut [i32; DIRECT_LINES]>,
    ) -> [[i32; DIRECT_LINES]; R] {
        assert!(k == 0 || R == 0 || a.len() >= (R - 1) * lda + k);
        assert!(w.iter().all(|line| line.len() >= k));
        let full = k / 16 * 16;
        // SAFETY: the driver calls this only when the CPU has AVX2; the
        // asserts bound every read (`full` ≤ k values of each row and line).
        let mut out = unsafe { by_lines_avx2::<R>(a.as_ptr(), lda, w.map(<[i8]>::as_ptr), full) };
        for (r, out_r) in out.iter_mut().enumerate() {
            let a_r = &a[r * lda + full..r * lda + k];
            for (o, line) in out_r.iter_mut().zip(&w) {
                let tail = a_r.iter().zip(&line[full..k]).fold(0i32, |s, (&x, &y)| {
                    s.wrapping_add(i32::from(x) * i32::from(y))
                });
                *o = o.wrapping_add(tail);
            }
        }
        out
    }
}

/// # Safety
/// AVX2 present; `a` has `R` rows (stride `lda`) of `rows_k` rounded up to
/// 2 values; `b` `rows_k` rows (stride `ldb`) of 64 bytes; `acc` `R` rows
/// of 64 i32.
#[target_feature(enable = "avx2")]
unsafe fn by_rows_avx2<const R: usize>(
    a: *const i16,
    lda: usize,
    b: *const i8,
    ldb: usize,
    rows_k: usize,
    acc: *mut i32,
    first: bool,
) {
    for r in 0..R {
        // SAFETY: row r of A and of the sums, within the caller's bounds.
        unsafe { by_row_avx2(a.add(r * lda), b, ldb, rows_k, acc.add(r * TILE), first) }
    }
}

/// One row of A against the tile: per pair of B's rows, the four runs of
/// 16 columns one after another, so that each row of B is read while its
/// cache line is fresh (the rows of a tile are often 4 KiB apart, one L1
/// set, which a pass per run would miss on every read).
///
/// # Safety
/// AVX2 present; `a` has `rows_k` rounded up to 2 values; `b` `rows_k`
/// rows (stride `ldb`) of 64 bytes; `acc` 64 i32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn by_row_avx2(
    a: *const i16,
    b: *const i8,
    ldb: usize,
    rows_k: usize,
    acc: *mut i32,
    first: bool,
) {
    // SAFETY (all reads and writes): within the caller's bounds.
    unsafe {
        let mut s = [[_mm256_setzero_si256(); 2]; TILE / RUN];
        if !first {
            for (run, s_run) in s.iter_mut().enumerate() {
                for (h, v) in s_run.iter_mut().enumerate() {
                    *v = _mm256_loadu_si256(acc.add(run * RUN + 8 * h) as *const __m256i);
                }
            }
        }
        let mut pair = |k0: usize, present: usize| {
            let a2 = _mm256_set1_epi32((a.add(k0) as *const i32).read_unaligned());
            for (run, s_run) in s.iter_mut().enumerate() {
                let row = |i: usize| {
                    if i < present {
                        let p = b.add((k0 + i) * ldb + run * RUN);
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i))
                    } else {
                        _mm256_setzero_si256()
                    }
                };
                let (x0, x1) = (row(0), row(1));
                let (lo, hi) = (_mm256_unpacklo_epi16(x0, x1), _mm256_unpackhi_epi16(x0, x1));
                s_run[0] = _mm256_add_epi32(s_run[0], _mm256_madd_epi16(a2, lo));
                s_run[1] = _mm256_add_epi32(s_run[1], _mm256_madd_epi16(a2, hi));
            }
        };
        let full = rows_k / 2 * 2;
        for k0 in (0..full).step_by(2) {
            pair(k0, 2);
        }
        if full < rows_k {
            pair(full, 1);
        }
        for (run, s_run) in s.iter().enumerate() {
            for (h, v) in s_run.iter().enumerate() {
                _mm256_storeu_si256(acc.add(run * RUN + 8 * h) as *mut __m256i, *v);
            }
        }
    }
}

/// [`Avx2Direct::pack_tile`]'s packing: pair `p`, run `q` at
/// `out[(4p + q) · 32..]`, low then high unpack.
///
/// # Safety
/// AVX2 present; `b` has `rows_k` rows (stride `ldb`) of 64 bytes; `out`
/// has `tile_len(rows_k)` values.
#[target_feature(enable = "avx2")]
unsafe fn pack_pairs_avx2(b: *const i8, ldb: usize, rows_k: usize, out: *mut i16) {
    // SAFETY (all reads and writes): within the caller's bounds.
    unsafe {
        for p in 0..rows_k.div_ceil(2) {
            for run in 0..TILE / RUN {
                let row = |i: usize| {
                    if i < rows_k {
                        let at = b.add(i * ldb + run * RUN);
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(at as *const __m128i))
                    } else {
                        _mm256_setzero_si256()
                    }
                };
                let (x0, x1) = (row(2 * p), row(2 * p + 1));
                let at = out.add((4 * p + run) * 32);
                _mm256_storeu_si256(at as *mut __m256i, _mm256_unpacklo_epi16(x0, x1));
                _mm256_storeu_si256(at.add(16) as *mut __m256i, _mm256_unpackhi_epi16(x0, x1));
            }
        }
    }
}

/// [`Avx2Direct::by_rows_packed`]: run by run of 16 columns, every pair of
/// the packed tile against `R` rows of A (the pairs' loads shared by the
/// rows).
///
/// # Safety
/// AVX2 present; `a` has `R` rows (stride `lda`) of `rows_k` rounded up to
/// 2 values; `tile` `tile_len(rows_k)` values; `acc` `R` rows of 64 i32.
#[target_feature(enable = "avx2")]
unsafe fn by_rows_packed_avx2<const R: usize>(
    a: *const i16,
    lda: usize,
    tile: *const i16,
    rows_k: usize,
    acc: *mut i32,
    first: bool,
) {
    // SAFETY (all reads and writes): within the caller's bounds.
    unsafe {
        for run in 0..TILE / RUN {
            let mut s = [[_mm256_setzero_si256(); 2]; R];
            if !first {
                for (r, s_r) in s.iter_mut().enumerate() {
                    for (h, v) in s_r.iter_mut().enumerate() {
                        *v = _mm256_loadu_si256(
                            acc.add(r * TILE + run * RUN + 8 * h) as *const __m256i
                        );
                    }
                }
            }
            for p in 0..rows_k.div_ceil(2) {
                let at = tile.add((4 * p + run) * 32);
                let lo = _mm256_loadu_si256(at as *const __m256i);
                let hi = _mm256_loadu_si256(at.add(16) as *const __m256i);
                for (r, s_r) in s.iter_mut().enumerate() {
                    let a2 =
                        _mm256_set1_epi32((a.add(r * lda + 2 * p) as *const i32).read_unaligned());
                    s_r[0] = _mm256_add_epi32(s_r[0], _mm256_madd_epi16(a2, lo));
                    s_r[1] = _mm256_add_epi32(s_r[1], _mm256_madd_epi16(a2, hi));
                }
            }
            for (r, s_r) in s.iter().enumerate() {
                for (h, v) in s_r.iter().enumerate() {
                    _mm256_storeu_si256(acc.add(r * TILE + run * RUN + 8 * h) as *mut __m256i, *v);
                }
            }
        }
    }
}

/// # Safety
/// AVX2 present; `a` has `R` rows (stride `lda`) and each line of `w`
/// `full` values, a multiple of 16.
#[target_feature(enable = "avx2")]
unsafe fn by_lines_avx2<const R: usize>(
    a: *const i16,
    lda: usize,
    w: [*const i8; DIRECT_LINES],
    full: usize,
) -> [[i32; DIRECT_LINES]; R] {
    let mut s = [[_mm256_setzero_si256(); DIRECT_LINES]; R];
    let mut out = [[0i32; DIRECT_LINES]; R];
    // SAFETY (all reads): k0 + 16 ≤ full.
    unsafe {
        for k0 in (0..full).step_by(16) {
            let wl: [__m256i; DIRECT_LINES] = std::array::from_fn(|l| {
                _mm256_cvtepi8_epi16(_mm_loadu_si128(w[l].add(k0) as *const __m128i))
            });
            for (r, s_r) in s.iter_mut().enumerate() {
                let ar = _mm256_loadu_si256(a.add(r * lda + k0) as *const __m256i);
                for (v, &wv) in s_r.iter_mut().zip(&wl) {
                    *v = _mm256_add_epi32(*v, _mm256_madd_epi16(ar, wv));
                }
            }
        }
        for (o_r, s_r) in out.iter_mut().zip(&s) {
            for (o, &v) in o_r.iter_mut().zip(s_r) {
                *o = horizontal_sum(v);
            }
        }
    }
    out
}

/// The eight i32 lanes of `v` summed (wrapping).
///
/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2")]
unsafe fn horizontal_sum(v: __m256i) -> i32 {
    let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
    _mm_cvtsi128_si32(x)
}

//! AVX-512 VNNI kernels of the integer GEMM's direct path: a few rows of A
//! against an int8 B read in place, no packed copy of B. `vpdpbusd` on zmm
//! registers adds the four products of unsigned bytes (A, as
//! [`super::x86_vnni`] takes them: u8 as is, i8 offset by 128) and signed
//! bytes (B) of each 32-bit lane into that lane's i32: exact, so the order
//! of the sums cannot change a bit.
//!
//! Two layouts of B, two kernels:
//! - [`VnniDirect::by_rows`]: B row-major (`[in, out]`, `x · W`). Four rows of
//!   B (64 columns each) are interleaved in registers into the quads
//!   `vpdpbusd` takes (two rounds of byte and word unpacks), so B is read
//!   row after row, as it lies.
//! - [`VnniDirect::by_lines`]: B's columns contiguous (`[out, in]`, `x · Wᵀ`):
//!   each output is a dot product of A's row with W's row, 64 values of k
//!   per instruction, summed across the register at the end.
//!
//! Both also give Σ_k b[k, j] per column when asked (one `vpdpbusd` against
//! ones per quad), which the zero-point corrections need.

use super::{copy_tile, DirectKernel, DIRECT_LINES as LINES, DIRECT_TILE as TILE};
use std::arch::x86_64::*;

/// The AVX-512 VNNI direct kernels.
pub(crate) struct VnniDirect;

impl DirectKernel for VnniDirect {
    type A = u8;
    const STEP: usize = 4;
    const TILE: usize = TILE;
    const COLUMN_SUMS: bool = true;
    type Tile = i8;
    // On Zen 4, K = N = 4096: M = 8 in 1.7 ms in place, 2.45 ms packed;
    // M = 32 in 7.0 ms in place, 5.55 ms packed.
    const PACK_PAST_ROWS: usize = 8;

    fn convert(v: i32, _za: i32, offset: i32) -> u8 {
        (v + offset) as u8
    }

    fn slot(j: usize) -> usize {
        // The unpacks leave the quads of columns `16·(l / 4) + 4·t + l % 4`
        // in lane `l` of quad vector `t`.
        let (part, t, l) = (j / 16, (j % 16) / 4, j % 4);
        16 * t + 4 * part + l
    }

    fn by_rows<const R: usize>(
        a: &[u8],
        lda: usize,
        b: &[i8],
        ldb: usize,
        shape: (usize, usize),
        acc: &mut [i32],
        sums: Option<&mut [i32]>,
        first: bool,
    ) {
        by_rows_checked::<R>(a, lda, b, ldb, shape, acc, sums, first)
    }

    fn tile_len(rows_k: usize) -> usize {
        rows_k * TILE
    }

    /// A dense copy (rows 64 bytes apart: rows of B 4 KiB apart share one
    /// L1 set, so every block of rows after the first would miss L1 on
    /// each read), and the column sums from it.
    fn pack_tile(
        b: &[i8],
        ldb: usize,
        (rows_k, cols): (usize, usize),
        out: &mut [i8],
        sums: Option<&mut [i32]>,
        first: bool,
    ) {
        assert!((1..=TILE).contains(&cols) && out.len() >= rows_k * TILE);
        copy_tile(b, ldb, (rows_k, cols), out);
        if sums.is_some() {
            by_rows_checked::<0>(&[], 0, out, TILE, (rows_k, TILE), &mut [], sums, first);
        }
    }

    fn by_rows_packed<const R: usize>(
        a: &[u8],
        lda: usize,
        tile: &[i8],
        rows_k: usize,
        acc: &mut [i32],
        first: bool,
    ) {
        by_rows_checked::<R>(a, lda, tile, TILE, (rows_k, TILE), acc, None, first)
    }

    fn by_lines<const R: usize>(
        a: &[u8],
        lda: usize,
        w: [&[i8]; LINES],
        k: usize,
        sums: Option<&mut [i32; LINES]>,
    ) -> [[i32; LINES]; R] {
        by_lines_checked::<R>(a, lda, w, k, sums)
    }
}

/// `R` rows of A (unsigned bytes, row stride `lda`, each holding at least
/// `rows_k` rounded up to 4 values) against `rows_k` rows of B (row stride
/// `ldb`, `cols` ≤ 64 columns): the sums added into `acc` (`R` rows of 64
/// i32 in [`VnniDirect::slot`] order; stored, not added, when `first`),
/// and with `sums` (64) the column sums likewise.
#[allow(clippy::too_many_arguments)]
fn by_rows_checked<const R: usize>(
    a: &[u8],
    lda: usize,
    b: &[i8],
    ldb: usize,
    (rows_k, cols): (usize, usize),
    acc: &mut [i32],
    sums: Option<&mut [i32]>,
    first: bool,
) {
    assert!((1..=TILE).contains(&cols) && acc.len() >= R * TILE);
    assert!(sums.as_ref().is_none_or(|s| s.len() >= TILE));
    assert!(rows_k == 0 || b.len() >= (rows_k - 1) * ldb + cols);
    let k4 = rows_k.div_ceil(4) * 4;
    assert!(R == 0 || (lda >= k4 && a.len() >= (R - 1) * lda + k4));
    let sums = sums.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr());
    // SAFETY: the driver calls this only when the CPU has AVX-512 F/BW/VL/
    // VNNI; the asserts bound every read (masked to `cols` columns of B's
    // `rows_k` rows, `k4` bytes of each row of A) and write.
    unsafe {
        if sums.is_null() {
            by_rows_vnni::<R, false>(
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                (rows_k, cols),
                acc.as_mut_ptr(),
                sums,
                first,
            )
        } else {
            by_rows_vnni::<R, true>(
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                (rows_k, cols),
                acc.as_mut_ptr(),
                sums,
                first,
            )
        }
    }
}

/// # Safety
/// AVX-512 F/BW/VNNI present; as [`by_rows_checked`] asserts.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn by_rows_vnni<const R: usize, const SUMS: bool>(
    a: *const u8,
    lda: usize,
    b: *const i8,
    ldb: usize,
    (rows_k, cols): (usize, usize),
    acc: *mut i32,
    sums: *mut i32,
    first: bool,
) {
    let mask: u64 = if cols == TILE { !0 } else { (1u64 << cols) - 1 };
    let ones = _mm512_set1_epi8(1);
    // SAFETY (all reads and writes): within the bounds the caller checked.
    unsafe {
        let mut s = [[_mm512_setzero_si512(); 4]; R];
        let mut cs = [_mm512_setzero_si512(); 4];
        if !first {
            for (r, s_r) in s.iter_mut().enumerate() {
                for (t, v) in s_r.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(acc.add(r * TILE + 16 * t) as *const _);
                }
            }
            if SUMS {
                for (t, v) in cs.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(sums.add(16 * t) as *const _);
                }
            }
        }
        let mut quad = |k0: usize, present: usize| {
            let row = |i: usize| {
                if i < present {
                    _mm512_maskz_loadu_epi8(mask, b.add((k0 + i) * ldb))
                } else {
                    _mm512_setzero_si512()
                }
            };
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            let (lo01, hi01) = (_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1));
            let (lo23, hi23) = (_mm512_unpacklo_epi8(r2, r3), _mm512_unpackhi_epi8(r2, r3));
            let bq = [
                _mm512_unpacklo_epi16(lo01, lo23),
                _mm512_unpackhi_epi16(lo01, lo23),
                _mm512_unpacklo_epi16(hi01, hi23),
                _mm512_unpackhi_epi16(hi01, hi23),
            ];
            for (r, s_r) in s.iter_mut().enumerate() {
                let a4 = _mm512_set1_epi32((a.add(r * lda + k0) as *const i32).read_unaligned());
                for (v, &q) in s_r.iter_mut().zip(&bq) {
                    *v = _mm512_dpbusd_epi32(*v, a4, q);
                }
            }
            if SUMS {
                for (v, &q) in cs.iter_mut().zip(&bq) {
                    *v = _mm512_dpbusd_epi32(*v, ones, q);
                }
            }
        };
        let full = rows_k / 4 * 4;
        for k0 in (0..full).step_by(4) {
            quad(k0, 4);
        }
        if full < rows_k {
            quad(full, rows_k - full);
        }
        for (r, s_r) in s.iter().enumerate() {
            for (t, v) in s_r.iter().enumerate() {
                _mm512_storeu_si512(acc.add(r * TILE + 16 * t) as *mut _, *v);
            }
        }
        if SUMS {
            for (t, v) in cs.iter().enumerate() {
                _mm512_storeu_si512(sums.add(16 * t) as *mut _, *v);
            }
        }
    }
}

/// `R` rows of A (unsigned bytes, row stride `lda`) against [`LINES`] lines
/// of W (signed bytes), each `k` long: `out[r][l] = Σ_k a[r][k]·w[l][k]`
/// (wrapping i32), and with `sums` `Σ_k w[l][k]`.
fn by_lines_checked<const R: usize>(
    a: &[u8],
    lda: usize,
    w: [&[i8]; LINES],
    k: usize,
    sums: Option<&mut [i32; LINES]>,
) -> [[i32; LINES]; R] {
    assert!(k == 0 || R == 0 || a.len() >= (R - 1) * lda + k);
    assert!(w.iter().all(|line| line.len() >= k));
    let w = w.map(<[i8]>::as_ptr);
    // SAFETY: the driver calls this only when the CPU has AVX-512 F/BW/VL/
    // VNNI; the asserts bound every read (masked to `k` values per row).
    unsafe {
        match sums {
            None => by_lines_vnni::<R, false>(a.as_ptr(), lda, w, k).0,
            Some(s) => {
                let (out, line_sums) = by_lines_vnni::<R, true>(a.as_ptr(), lda, w, k);
                *s = line_sums;
                out
            }
        }
    }
}

/// # Safety
/// AVX-512 F/BW/VNNI present; as [`by_lines_checked`] asserts.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn by_lines_vnni<const R: usize, const SUMS: bool>(
    a: *const u8,
    lda: usize,
    w: [*const i8; LINES],
    k: usize,
) -> ([[i32; LINES]; R], [i32; LINES]) {
    let ones = _mm512_set1_epi8(1);
    let mut s = [[_mm512_setzero_si512(); LINES]; R];
    let mut cs = [_mm512_setzero_si512(); LINES];
    // SAFETY (all reads): k0 + 64 ≤ k, or masked to k − k0 bytes.
    unsafe {
        let mut step = |k0: usize, mask: u64| {
            let wl: [__m512i; LINES] =
                std::array::from_fn(|l| _mm512_maskz_loadu_epi8(mask, w[l].add(k0)));
            for (r, s_r) in s.iter_mut().enumerate() {
                let ar = _mm512_maskz_loadu_epi8(mask, a.add(r * lda + k0) as *const i8);
                for (v, &wv) in s_r.iter_mut().zip(&wl) {
                    *v = _mm512_dpbusd_epi32(*v, ar, wv);
                }
            }
            if SUMS {
                for (v, &wv) in cs.iter_mut().zip(&wl) {
                    *v = _mm512_dpbusd_epi32(*v, ones, wv);
                }
            }
        };
        let full = k / 64 * 64;
        for k0 in (0..full).step_by(64) {
            step(k0, !0);
        }
        if full < k {
            step(full, (1u64 << (k - full)) - 1);
        }
    }
    let out = s.map(|s_r| s_r.map(|v| _mm512_reduce_add_epi32(v)));
    (out, cs.map(|v| _mm512_reduce_add_epi32(v)))
}

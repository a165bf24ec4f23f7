//! AVX2 + FMA micro-kernel: a 6×16 block in twelve ymm accumulators, one
//! `vfmadd231ps` per (row, 8 columns, k), which is the contract's
//! `p = fma(a, b, p)` with one rounding.

use super::{epilogue_rows_body, Kernel};
use crate::dtype::{DType, FloatElement};
use crate::gemm::Epilogue;
use std::arch::x86_64::*;

/// 6 rows × 16 columns (two ymm registers per row).
pub(crate) struct Avx2;

const MR: usize = 6;
const NR: usize = 16;

impl Kernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;

    #[inline]
    fn tile(kt: usize, a: &[f32], b: &[f32], acc: &mut [f32], ld: usize, first: bool) {
        assert!(a.len() >= kt * MR && b.len() >= kt * NR);
        assert!(ld >= NR && acc.len() >= (MR - 1) * ld + NR);
        // SAFETY: the driver selects this kernel only when the CPU has AVX2
        // and FMA; the asserts above bound every access of `tile_avx2`.
        unsafe { tile_avx2(kt, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr(), ld, first) }
    }

    #[inline]
    fn tile_scaled(
        kt: usize,
        a: &[f32],
        b: &[f32],
        acc: &mut [f32],
        ld: usize,
        first: bool,
        sa: &[f32],
        sb: &[f32],
    ) {
        assert!(a.len() >= kt * MR && b.len() >= kt * NR);
        assert!(ld >= NR && acc.len() >= (MR - 1) * ld + NR);
        assert!(sa.len() >= MR && sb.len() >= NR);
        // SAFETY: as in `tile`; the asserts also bound the scale reads.
        unsafe {
            tile_scaled_avx2(
                kt,
                a.as_ptr(),
                b.as_ptr(),
                acc.as_mut_ptr(),
                ld,
                first,
                sa.as_ptr(),
                sb.as_ptr(),
            )
        }
    }

    fn reads_direct<T: FloatElement>() -> bool {
        matches!(T::DTYPE, DType::F32 | DType::F16 | DType::BF16)
    }

    fn tile_direct<T: FloatElement>(
        kt: usize,
        rows: usize,
        a: &[f32],
        b: &[T],
        b_stride: usize,
        nb: usize,
        p: &mut [f32],
    ) {
        assert!((1..=MR).contains(&rows) && a.len() >= kt * MR && nb.is_multiple_of(NR));
        assert!(kt == 0 || b.len() >= (kt - 1) * b_stride + nb);
        assert!(p.len() >= rows * nb);
        let (ap, pp) = (a.as_ptr(), p.as_mut_ptr());
        macro_rules! go {
            ($load:expr) => {
                // SAFETY: the CPU has AVX2, FMA and F16C (the driver's
                // dispatch); the asserts bound every access; `$load` reads
                // elements of the type `T` is.
                unsafe {
                    let bp = b.as_ptr() as *const u8;
                    match rows {
                        1 => tile_direct_avx2::<1>(kt, ap, bp, b_stride, nb, pp, $load),
                        2 => tile_direct_avx2::<2>(kt, ap, bp, b_stride, nb, pp, $load),
                        3 => tile_direct_avx2::<3>(kt, ap, bp, b_stride, nb, pp, $load),
                        4 => tile_direct_avx2::<4>(kt, ap, bp, b_stride, nb, pp, $load),
                        5 => tile_direct_avx2::<5>(kt, ap, bp, b_stride, nb, pp, $load),
                        _ => tile_direct_avx2::<6>(kt, ap, bp, b_stride, nb, pp, $load),
                    }
                }
            };
        }
        match T::DTYPE {
            DType::F32 => go!(Load::F32),
            DType::F16 => go!(Load::F16),
            DType::BF16 => go!(Load::BF16),
            _ => super::tile_direct_scalar::<T>(MR, kt, rows, a, b, b_stride, nb, p),
        }
    }

    fn epilogue_rows(
        epilogue: &Epilogue<'_>,
        acc: &[f32],
        ld_acc: usize,
        out: &mut [f32],
        ld_out: usize,
        rows: usize,
        cols: usize,
        col0: usize,
    ) {
        // SAFETY: only selected when the CPU has AVX2 and FMA.
        unsafe { epilogue_rows_fma(epilogue, acc, ld_acc, out, ld_out, rows, cols, col0) }
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
fn epilogue_rows_fma(
    epilogue: &Epilogue<'_>,
    acc: &[f32],
    ld_acc: usize,
    out: &mut [f32],
    ld_out: usize,
    rows: usize,
    cols: usize,
    col0: usize,
) {
    epilogue_rows_body(epilogue, acc, ld_acc, out, ld_out, rows, cols, col0)
}

/// The 6×16 block of chains `p` over `kt` steps of the packed panels.
///
/// # Safety
/// `a` has `kt * 6` readable floats, `b` has `kt * 16`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(kt: usize, a: *const f32, b: *const f32) -> [[__m256; 2]; MR] {
    let mut p = [[_mm256_setzero_ps(); 2]; MR];
    // One step of the chain: p[r][..] = fma(a[r], b[..], p[r][..]).
    #[inline(always)]
    fn step(p: &mut [[__m256; 2]; MR], a: *const f32, b: *const f32) {
        // SAFETY: the caller passes pointers to one k-step of each panel.
        unsafe {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (r, pr) in p.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r));
                pr[0] = _mm256_fmadd_ps(av, b0, pr[0]);
                pr[1] = _mm256_fmadd_ps(av, b1, pr[1]);
            }
        }
    }
    let (mut a, mut b) = (a, b);
    // Unrolled by four (loop overhead costs ~9% otherwise); k stays in order.
    for _ in 0..kt / 4 {
        // SAFETY: four more k-steps remain in both panels.
        unsafe {
            step(&mut p, a, b);
            step(&mut p, a.add(MR), b.add(NR));
            step(&mut p, a.add(2 * MR), b.add(2 * NR));
            step(&mut p, a.add(3 * MR), b.add(3 * NR));
            a = a.add(4 * MR);
            b = b.add(4 * NR);
        }
    }
    for _ in 0..kt % 4 {
        // SAFETY: one more k-step remains in both panels.
        unsafe {
            step(&mut p, a, b);
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    p
}

/// # Safety
/// `a` has `kt * 6` readable floats, `b` has `kt * 16`, and `acc` has rows
/// `0..6` of 16 floats at stride `ld`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    kt: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
) {
    // SAFETY: the caller's contract covers the panels.
    let p = unsafe { chains_avx2(kt, a, b) };
    for (r, pr) in p.iter().enumerate() {
        // SAFETY: row r < 6 of the accumulator block, 16 floats.
        unsafe {
            let dst = acc.add(r * ld);
            // acc = start + p, with start = +0.0 on the first K-tile.
            let (s0, s1) = if first {
                (_mm256_setzero_ps(), _mm256_setzero_ps())
            } else {
                (_mm256_loadu_ps(dst), _mm256_loadu_ps(dst.add(8)))
            };
            _mm256_storeu_ps(dst, _mm256_add_ps(s0, pr[0]));
            _mm256_storeu_ps(dst.add(8), _mm256_add_ps(s1, pr[1]));
        }
    }
}

/// [`tile_avx2`] for one scaling block: `acc = fma(p, sa[r]·sb[c], start)`.
///
/// # Safety
/// As [`tile_avx2`], and `sa` has 6 readable floats, `sb` 16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_scaled_avx2(
    kt: usize,
    a: *const f32,
    b: *const f32,
    acc: *mut f32,
    ld: usize,
    first: bool,
    sa: *const f32,
    sb: *const f32,
) {
    // SAFETY: the caller's contract covers the panels and the scales.
    unsafe {
        let p = chains_avx2(kt, a, b);
        let (sb0, sb1) = (_mm256_loadu_ps(sb), _mm256_loadu_ps(sb.add(8)));
        for (r, pr) in p.iter().enumerate() {
            let dst = acc.add(r * ld);
            let s = _mm256_broadcast_ss(&*sa.add(r));
            // fl(sa · sb), one rounding, then one FMA into the accumulator.
            let (s0, s1) = (_mm256_mul_ps(s, sb0), _mm256_mul_ps(s, sb1));
            let (z0, z1) = if first {
                (_mm256_setzero_ps(), _mm256_setzero_ps())
            } else {
                (_mm256_loadu_ps(dst), _mm256_loadu_ps(dst.add(8)))
            };
            _mm256_storeu_ps(dst, _mm256_fmadd_ps(pr[0], s0, z0));
            _mm256_storeu_ps(dst.add(8), _mm256_fmadd_ps(pr[1], s1, z1));
        }
    }
}

/// How the direct kernel reads 8 B values into an f32 vector (exact widening).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    F32,
    F16,
    BF16,
}

impl Load {
    const fn size(self) -> usize {
        match self {
            Load::F32 => 4,
            Load::F16 | Load::BF16 => 2,
        }
    }

    /// # Safety
    /// `p` points at 8 readable elements of this type; AVX2 and F16C present.
    #[inline(always)]
    unsafe fn load8(self, p: *const u8) -> __m256 {
        // SAFETY: per the function's contract.
        unsafe {
            match self {
                Load::F32 => _mm256_loadu_ps(p as *const f32),
                Load::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
                Load::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                    _mm_loadu_si128(p as *const __m128i),
                ))),
            }
        }
    }
}

/// K-steps per pass over a row of B in [`tile_direct_avx2`]: that many rows
/// of B stream at once, which the hardware prefetchers follow.
const DIRECT_K_GROUP: usize = 8;

/// Partial sums of `R` rows of the A panel (stride 6) times `nb` columns of
/// B read in place (row stride `bs` elements), into `p` (`R` rows of `nb`,
/// zeroed by the caller). For each output the chain runs over k in
/// increasing order exactly as in `tile_avx2`; only the traversal differs:
/// a group of k-steps sweeps across all columns, keeping each 16-column
/// block of `p` in registers for the group.
///
/// # Safety
/// AVX2, FMA and F16C present; `a` has `kt * 6` floats; `b` has
/// `(kt - 1) * bs + nb` elements of `load`'s type; `p` has `R * nb` floats;
/// `nb` is a multiple of 16.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_direct_avx2<const R: usize>(
    kt: usize,
    a: *const f32,
    b: *const u8,
    bs: usize,
    nb: usize,
    p: *mut f32,
    load: Load,
) {
    let row_bytes = bs * load.size();
    let vec_bytes = 8 * load.size();
    for g in (0..kt).step_by(DIRECT_K_GROUP) {
        let steps = DIRECT_K_GROUP.min(kt - g);
        for j in (0..nb).step_by(NR) {
            // SAFETY: rows < R of p, columns j..j + 16 < nb; k-steps
            // g..g + steps < kt of A and B; B columns j..j + 16 < nb.
            unsafe {
                let mut sums = [[_mm256_setzero_ps(); 2]; R];
                for (r, s) in sums.iter_mut().enumerate() {
                    s[0] = _mm256_loadu_ps(p.add(r * nb + j));
                    s[1] = _mm256_loadu_ps(p.add(r * nb + j + 8));
                }
                for kk in g..g + steps {
                    let bk = b.add(kk * row_bytes + j * load.size());
                    let b0 = load.load8(bk);
                    let b1 = load.load8(bk.add(vec_bytes));
                    let ak = a.add(kk * MR);
                    for (r, s) in sums.iter_mut().enumerate() {
                        let av = _mm256_broadcast_ss(&*ak.add(r));
                        s[0] = _mm256_fmadd_ps(av, b0, s[0]);
                        s[1] = _mm256_fmadd_ps(av, b1, s[1]);
                    }
                }
                for (r, s) in sums.iter().enumerate() {
                    _mm256_storeu_ps(p.add(r * nb + j), s[0]);
                    _mm256_storeu_ps(p.add(r * nb + j + 8), s[1]);
                }
            }
        }
    }
}

//! AVX2 + FMA micro-kernel: a 6×16 block in twelve ymm accumulators, one
//! `vfmadd231ps` per (row, 8 columns, k), which is the contract's
//! `p = fma(a, b, p)` with one rounding.

use super::{epilogue_row_body, Kernel};
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
    fn tile(kt: usize, a: &[f32], b: &[f32], acc: &mut [f32], ld: usize) {
        assert!(a.len() >= kt * MR && b.len() >= kt * NR);
        assert!(ld >= NR && acc.len() >= (MR - 1) * ld + NR);
        // SAFETY: the driver selects this kernel only when the CPU has AVX2
        // and FMA; the asserts above bound every access of `tile_avx2`.
        unsafe { tile_avx2(kt, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr(), ld) }
    }

    fn epilogue_row(epilogue: &Epilogue<'_>, acc: &[f32], out: &mut [f32], col0: usize) {
        // SAFETY: only selected when the CPU has AVX2 and FMA.
        unsafe { epilogue_row_fma(epilogue, acc, out, col0) }
    }
}

#[target_feature(enable = "avx2,fma")]
fn epilogue_row_fma(epilogue: &Epilogue<'_>, acc: &[f32], out: &mut [f32], col0: usize) {
    epilogue_row_body(epilogue, acc, out, col0)
}

/// # Safety
/// `a` has `kt * 6` readable floats, `b` has `kt * 16`, and `acc` has rows
/// `0..6` of 16 floats at stride `ld`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(kt: usize, a: *const f32, b: *const f32, acc: *mut f32, ld: usize) {
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
    for (r, pr) in p.iter().enumerate() {
        // SAFETY: row r < 6 of the accumulator block, 16 floats.
        unsafe {
            let dst = acc.add(r * ld);
            _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), pr[0]));
            _mm256_storeu_ps(
                dst.add(8),
                _mm256_add_ps(_mm256_loadu_ps(dst.add(8)), pr[1]),
            );
        }
    }
}

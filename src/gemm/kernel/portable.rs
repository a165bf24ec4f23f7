//! Portable micro-kernel: plain loops with `f32::mul_add`, so the contract's
//! single rounding per step holds on every target.

use super::Kernel;

/// A 4×8 block of scalar accumulators.
pub(crate) struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;
    const NR: usize = 8;

    fn tile(kt: usize, a: &[f32], b: &[f32], acc: &mut [f32], ld: usize, first: bool) {
        let p = chains(kt, a, b);
        for (r, row) in p.iter().enumerate() {
            for (dst, &v) in acc[r * ld..r * ld + Self::NR].iter_mut().zip(row) {
                let start = if first { 0.0 } else { *dst };
                *dst = start + v;
            }
        }
    }

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
        let p = chains(kt, a, b);
        for (r, row) in p.iter().enumerate() {
            let dst = &mut acc[r * ld..r * ld + Self::NR];
            for ((d, &v), &s) in dst.iter_mut().zip(row).zip(&sb[..Self::NR]) {
                let start = if first { 0.0 } else { *d };
                *d = v.mul_add(sa[r] * s, start);
            }
        }
    }
}

/// The 4×8 block of chains `p = fma(a, b, p)` from +0.0 over `kt` steps
/// of the packed panels.
fn chains(kt: usize, a: &[f32], b: &[f32]) -> [[f32; 8]; 4] {
    let (a, b) = (&a[..kt * 4], &b[..kt * 8]);
    let mut p = [[0.0f32; 8]; 4];
    for (ak, bk) in a.chunks_exact(4).zip(b.chunks_exact(8)) {
        for (row, &av) in p.iter_mut().zip(ak) {
            for (pv, &bv) in row.iter_mut().zip(bk) {
                *pv = av.mul_add(bv, *pv);
            }
        }
    }
    p
}

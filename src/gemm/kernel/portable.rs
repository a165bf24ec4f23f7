//! Portable micro-kernel: plain loops with `f32::mul_add`, so the contract's
//! single rounding per step holds on every target.

use super::{epilogue_row_body, Kernel};
use crate::gemm::Epilogue;

/// A 4×8 block of scalar accumulators.
pub(crate) struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;
    const NR: usize = 8;

    fn tile(kt: usize, a: &[f32], b: &[f32], acc: &mut [f32], ld: usize) {
        let (a, b) = (&a[..kt * Self::MR], &b[..kt * Self::NR]);
        let mut p = [[0.0f32; 8]; 4];
        for (ak, bk) in a.chunks_exact(Self::MR).zip(b.chunks_exact(Self::NR)) {
            for (row, &av) in p.iter_mut().zip(ak) {
                for (pv, &bv) in row.iter_mut().zip(bk) {
                    *pv = av.mul_add(bv, *pv);
                }
            }
        }
        for (r, row) in p.iter().enumerate() {
            for (dst, &v) in acc[r * ld..r * ld + Self::NR].iter_mut().zip(row) {
                *dst += v;
            }
        }
    }

    fn epilogue_row(epilogue: &Epilogue<'_>, acc: &[f32], out: &mut [f32], col0: usize) {
        epilogue_row_body(epilogue, acc, out, col0)
    }
}

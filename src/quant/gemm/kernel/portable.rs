//! The portable integer micro-kernel (plain i32 arithmetic).

use super::IntKernel;

/// Portable integer kernel: 4×8 over k-pairs, plain i32 arithmetic (exact).
pub(crate) struct PortableInt;

impl IntKernel for PortableInt {
    const MR: usize = 4;
    const NR: usize = 8;
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
        let mut p = [[0i32; 8]; 4];
        for (ak, bk) in a
            .chunks_exact(2 * Self::MR)
            .zip(b.chunks_exact(2 * Self::NR))
            .take(pairs)
        {
            for (r, row) in p.iter_mut().enumerate() {
                let (a0, a1) = (ak[2 * r] as i32, ak[2 * r + 1] as i32);
                for (j, v) in row.iter_mut().enumerate() {
                    *v += a0 * bk[2 * j] as i32 + a1 * bk[2 * j + 1] as i32;
                }
            }
        }
        for (r, row) in p.iter().enumerate() {
            for (d, &v) in acc[r * ld..r * ld + Self::NR].iter_mut().zip(row) {
                *d = if first { v } else { d.wrapping_add(v) };
            }
        }
    }
}

//! AVX-512 VNNI integer micro-kernels: `vpdpbusd` on 256-bit registers
//! (AVX512VL), which adds the four products of unsigned bytes of A and
//! signed bytes of B of each 32-bit lane into that lane's i32 with no
//! intermediate step: exact for any u8 × i8 values (|Σ of four| ≤
//! 4·255·128 < 2^31), wrapping only as an i32 sum does. A's values go in as
//! unsigned bytes: u8 as they are, i8 offset by 128 (the driver corrects
//! with the zero points, see [`IntKernel::A_OFFSET`]).
//!
//! The same packed layouts as the `vpmaddubsw` kernel of `x86_avx2`: one
//! instruction here replaces its `vpmaddubsw`, `vpmaddwd` and `vpaddd` and
//! lifts its 7-bit limit.

use super::x86_avx2::store_block;
use super::{checked_packed_dots, IntKernel};
use crate::simd::x86_64::dpbusd_quads;
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;

/// 6 rows × 16 columns of i32 sums from u8 A and i8 B values by
/// `vpdpbusd`, per group of four k two instructions per row.
pub(crate) struct VnniU8;

/// [`VnniU8`] for i8 A values, packed as `a + 128`.
pub(crate) struct VnniI8;

macro_rules! vnni_kernel {
    ($name:ident, $offset:expr) => {
        impl IntKernel for $name {
            const MR: usize = MR;
            const NR: usize = NR;
            const GROUP: usize = 4;
            const SUBTRACTS_ZERO_POINTS: bool = false;
            const A_OFFSET: i32 = $offset;
            type Packed = u8;

            fn pack_a(v: i32, _z: i32) -> u8 {
                (v + $offset) as u8
            }

            fn pack_b(v: i32, _z: i32) -> u8 {
                v as i8 as u8
            }

            fn tile(quads: usize, a: &[u8], b: &[u8], acc: &mut [i32], ld: usize, first: bool) {
                assert!(a.len() >= 4 * quads * MR && b.len() >= 4 * quads * NR);
                assert!(ld >= NR && acc.len() >= (MR - 1) * ld + NR);
                // SAFETY: the driver selects this kernel only when the CPU
                // has AVX2 and AVX-512 F/BW/VL/VNNI; the asserts bound every
                // access.
                unsafe { tile_dpbusd(quads, a.as_ptr(), b.as_ptr(), acc.as_mut_ptr(), ld, first) }
            }
        }
    };
}

vnni_kernel!(VnniU8, 0);
vnni_kernel!(VnniI8, 128);

/// # Safety
/// AVX2 and AVX-512 F/BW/VL/VNNI; `a` has `4·quads·6` bytes, `b` has
/// `4·quads·16`, `acc` has 6 rows of 16 i32 at stride `ld`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_dpbusd(
    quads: usize,
    a: *const u8,
    b: *const u8,
    acc: *mut i32,
    ld: usize,
    first: bool,
) {
    let mut p = [[_mm256_setzero_si256(); 2]; MR];
    // SAFETY: per this function's contract: the panels hold `quads` k-quads,
    // `acc` has 6 rows of 16 i32.
    unsafe {
        dpbusd_quads(&mut p, quads, a, b);
        store_block(&p, acc, ld, first)
    }
}

checked_packed_dots! {
    /// Σ_k a_r[k]·b[k, j] (wrapping i32) for the eight columns of a
    /// [`crate::quant::PackedI8`] group (`codes`: 32 bytes per 4 values of k)
    /// and R rows of A as unsigned bytes (`4 · runs` each): per 4 k one load of
    /// the weights and one `vpdpbusd` per row, each row's runs spread over four
    /// accumulators (the instruction's latency is several cycles).
    packed_dots8_vnni => packed_dots8_vnni_impl, u8
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn packed_dots8_vnni_impl<const R: usize>(
    codes: *const i8,
    rows: [*const u8; R],
    runs: usize,
) -> [[i32; 8]; R] {
    let mut acc = [[_mm256_setzero_si256(); 4]; R];
    // SAFETY (all reads): run q < runs reads codes[32q..32q + 32] and
    // a_r[4q..4q + 4].
    unsafe {
        let run = |acc: &mut [[__m256i; 4]; R], q: usize, slot: usize| {
            let b = _mm256_loadu_si256(codes.add(32 * q) as *const __m256i);
            for (acc_r, &a) in acc.iter_mut().zip(&rows) {
                let a4 = _mm256_set1_epi32((a.add(4 * q) as *const i32).read_unaligned());
                acc_r[slot] = _mm256_dpbusd_epi32(acc_r[slot], a4, b);
            }
        };
        let main = runs - runs % 4;
        for q in (0..main).step_by(4) {
            run(&mut acc, q, 0);
            run(&mut acc, q + 1, 1);
            run(&mut acc, q + 2, 2);
            run(&mut acc, q + 3, 3);
        }
        for q in main..runs {
            run(&mut acc, q, 0);
        }
        let mut out = [[0i32; 8]; R];
        for (o, a) in out.iter_mut().zip(&acc) {
            let sum = _mm256_add_epi32(_mm256_add_epi32(a[0], a[1]), _mm256_add_epi32(a[2], a[3]));
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, sum);
        }
        out
    }
}

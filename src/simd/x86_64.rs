//! x86-64 forms of the shared SIMD helpers (SSE/SSE2: the baseline, so no
//! run-time detection is needed).

use std::arch::x86_64::*;

/// Prefetches into L1 the cache lines `ahead` values after those of
/// `values` (0: their own lines; in the quantizer, the same group of the
/// next chunk): a hint only, which never faults, wherever that is.
#[inline]
pub(crate) fn prefetch_lines(values: &[f32], ahead: usize) {
    for line in values.chunks(16) {
        let p = line.as_ptr().wrapping_add(ahead) as *const i8;
        // SAFETY: SSE is part of x86-64's baseline; a prefetch reads
        // nothing and never faults, wherever it points.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) };
    }
}

/// `dst` = `src` (equal lengths), by non-temporal 16-byte stores where
/// `dst` is 16-byte aligned (as a buffer from the allocator is), the tail
/// and an unaligned `dst` by a plain copy. The caller fences
/// ([`store_fence`]) before the data is read back.
pub(crate) fn copy_streaming(dst: &mut [u32], src: &[u32]) {
    let src = &src[..dst.len()];
    if !(dst.as_ptr() as usize).is_multiple_of(16) {
        dst.copy_from_slice(src);
        return;
    }
    let body = dst.len() - dst.len() % 4;
    let (dst_body, dst_tail) = dst.split_at_mut(body);
    for (d, s) in dst_body.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
        // SAFETY: `d` is 16 bytes at a 16-byte aligned address (checked
        // above; every 4-lane step keeps it), `s` is 16 bytes; SSE2 is part
        // of x86-64's baseline.
        unsafe {
            _mm_stream_si128(
                d.as_mut_ptr() as *mut __m128i,
                _mm_loadu_si128(s.as_ptr() as *const __m128i),
            )
        };
    }
    dst_tail.copy_from_slice(&src[body..]);
}

/// `sfence`: orders the non-temporal stores before it with every store
/// after it (Rust's release operations do not order them).
#[inline]
pub(crate) fn store_fence() {
    // SAFETY: SSE is part of x86-64's baseline.
    unsafe { _mm_sfence() };
}

/// `p[r][h]` += the column sums of `quads` k-quads of an R-row A panel
/// (4 unsigned bytes per row and quad) and a 16-column B panel (4 signed
/// bytes per column and quad; columns `8h..8h + 8` in `p[r][h]`), one
/// `vpdpbusd` per row and 8 columns: the blocked integer tile's loop, and
/// the FP4 × FP4 tile's (`gemm::kernel::x86_avx512`).
///
/// # Safety
/// AVX2 and AVX-512 F/BW/VL/VNNI; `a` has `4·quads·R` bytes, `b` has
/// `4·quads·16`.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn dpbusd_quads<const R: usize>(
    p: &mut [[__m256i; 2]; R],
    quads: usize,
    a: *const u8,
    b: *const u8,
) {
    let (mut a, mut b) = (a, b);
    for _ in 0..quads {
        // SAFETY: one more k-quad remains in both panels.
        unsafe {
            let b0 = _mm256_loadu_si256(b as *const __m256i);
            let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
            for (r, pr) in p.iter_mut().enumerate() {
                let av = _mm256_set1_epi32((a.add(4 * r) as *const i32).read_unaligned());
                pr[0] = _mm256_dpbusd_epi32(pr[0], av, b0);
                pr[1] = _mm256_dpbusd_epi32(pr[1], av, b1);
            }
            a = a.add(4 * R);
            b = b.add(64);
        }
    }
}

/// The 8 × 8 blocks of [`super::transpose_to_steps`]: for rows
/// `0..rows8` and steps `0..kc8` (multiples of 8),
/// `dst[kk·nr + r] = src[r·ld + kk]`, eight rows and eight steps per
/// block (8 loads, 24 shuffles, 8 stores).
///
/// # Safety
/// AVX; `rows8` and `kc8` multiples of 8, `rows8 ≤ nr`, and (for
/// `rows8, kc8 > 0`) `src` holds `(rows8 − 1)·ld + kc8` values and `dst`
/// `kc8·nr`.
#[target_feature(enable = "avx")]
pub(crate) unsafe fn transpose_8x8_blocks(
    src: &[f32],
    ld: usize,
    rows8: usize,
    kc8: usize,
    dst: &mut [f32],
    nr: usize,
) {
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..rows8).step_by(8) {
        for k0 in (0..kc8).step_by(8) {
            // SAFETY: rows r0..r0 + 8 ≤ rows8 and steps k0..k0 + 8 ≤ kc8,
            // so every load is inside `src` and every store inside `dst`
            // (the caller's lengths); AVX is enabled on this function.
            unsafe {
                let row = |i: usize| _mm256_loadu_ps(s.add((r0 + i) * ld + k0));
                let out = transpose8x8([
                    row(0),
                    row(1),
                    row(2),
                    row(3),
                    row(4),
                    row(5),
                    row(6),
                    row(7),
                ]);
                for (i, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(d.add((k0 + i) * nr + r0), v);
                }
            }
        }
    }
}

/// The 8 × 8 transpose of eight rows of 8 floats: lane `i` of output `j`
/// is lane `j` of input `i` (24 shuffles).
#[inline]
#[target_feature(enable = "avx")]
pub(crate) fn transpose8x8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

#[cfg(test)]
mod tests {
    use super::{copy_streaming, store_fence};

    /// Every length and alignment of `dst` (16-byte aligned or 4, 8, 12
    /// bytes off, so both the streaming body and the plain paths run; the
    /// tail too): `dst` ends equal to `src`, and nothing past it is touched.
    #[test]
    fn copy_streaming_copies_every_lane() {
        let src: Vec<u32> = (0..40)
            .map(|i| 0x9E37_79B9u32.wrapping_mul(i + 1))
            .collect();
        for off in 0..4 {
            for len in 0..=33 {
                // A u128 buffer is 16-byte aligned; `off` lanes into it.
                let mut buf = vec![0u128; 12];
                let lanes: &mut [u32] = bytemuck::cast_slice_mut(&mut buf);
                copy_streaming(&mut lanes[off..off + len], &src[..len]);
                store_fence();
                assert_eq!(&lanes[off..off + len], &src[..len], "off {off}, len {len}");
                assert!(lanes[..off].iter().all(|&v| v == 0), "off {off}, len {len}");
                assert!(
                    lanes[off + len..].iter().all(|&v| v == 0),
                    "off {off}, len {len}"
                );
            }
        }
    }
}

//! The AVX2 kernel of [`Kernel::fp4_dense`](super::Kernel::fp4_dense):
//! FP4 weights packed by [`crate::block_scaled::PackedFp4`] against rows
//! of f32 activations, each FP4 code decoded to f32 in registers. Used by
//! the AVX2 and AVX-512 tiers (the `avx2_shared_methods!` of
//! [`super::x86_avx2`]).

use super::{Fp4DenseRows, GroupScales, FP4_TIMES_2, INT4_TIMES_2};
use std::arch::x86_64::*;

/// Where [`fp4_dense_avx2`] reads its `G` groups of 8 packed lines and
/// writes their sums: group `g`'s codes at `codes + g · code_stride`
/// bytes, its scales at `scales + g · scale_stride` floats (or, when
/// `e8m0` is not null, E8M0 codes at `e8m0 + g · scale_stride` bytes); row `r`,
/// line `8g + j` of the output at `out[r · out_stride + 8g + j]`.
#[derive(Clone, Copy)]
pub(crate) struct DenseGroups {
    pub(crate) codes: *const u8,
    pub(crate) code_stride: usize,
    pub(crate) scales: *const f32,
    pub(crate) e8m0: *const u8,
    /// With `e8m0`: when `Some(t)`, the codes are E4M3 and each value is
    /// multiplied by `t` (NVFP4's tensor scale).
    pub(crate) e4m3_times: Option<f32>,
    /// With `ZP`: the groups' zero points (bytes 0..=15), laid out as the
    /// scales.
    pub(crate) zeros: *const u8,
    pub(crate) scale_stride: usize,
    pub(crate) out: *mut f32,
    pub(crate) out_stride: usize,
}

impl DenseGroups {
    /// The groups of a `fp4_dense` call's operands from group `g0` on
    /// (pointers not given stay null: the kernels' test). Computing the
    /// pointers reads nothing; the kernels' callers bound the reads.
    pub(crate) fn from_group(
        rows: &Fp4DenseRows<'_>,
        codes: &[u8],
        scales: GroupScales<'_>,
        zeros: Option<&[u8]>,
        g0: usize,
        out: &mut [f32],
        out_stride: usize,
    ) -> Self {
        let (k, blocks) = (rows.k, rows.k / rows.block);
        let at = |p: *const u8| p.wrapping_add(g0 * blocks * 8);
        let null = std::ptr::null();
        let (f32_scales, e8m0, e4m3_times) = match scales {
            GroupScales::F32(s) => (s.as_ptr().wrapping_add(g0 * blocks * 8), null, None),
            GroupScales::E8M0(c) => (std::ptr::null(), at(c.as_ptr()), None),
            GroupScales::E4M3(c, t) => (std::ptr::null(), at(c.as_ptr()), Some(t)),
        };
        DenseGroups {
            codes: codes.as_ptr().wrapping_add(g0 * k * 4),
            code_stride: k * 4,
            scales: f32_scales,
            e8m0,
            e4m3_times,
            zeros: zeros.map_or(null, |z| at(z.as_ptr())),
            scale_stride: blocks * 8,
            out: out.as_mut_ptr().wrapping_add(g0 * 8),
            out_stride,
        }
    }
}

/// [`Kernel::fp4_dense`](super::Kernel::fp4_dense) for `R` rows and `G`
/// groups of 8 lines: `R · G` independent chains side by side, so that the
/// FMA latency of one chain (8 dependent FMAs per 8 values of k) overlaps
/// the others. With `PRESCALED` the rows hold a · 2^-25 (exact, the driver
/// checked) and the weights enter as 2·w · 2^24, so that
/// `fma(a · 2^-25, 2·w · 2^24, p) = fma(a, w, p)` (the same real product,
/// one rounding) and no multiply is needed per weight.
///
/// Per 8 values of k one 32-byte load holds a group's codes (lane `j`:
/// bytes `4j..4j + 4`, low nibbles k to k + 3, high nibbles k + 4 to
/// k + 7). `vpshufb` turns the nibbles into the bytes 2·w; byte `i` of
/// every lane moved to the lane's top byte (the rest zeroed) is the i32
/// 2·w · 2^24, and `vcvtdq2ps` gives it exactly. Each line's chain over k is the contract's: one FMA per
/// value, k increasing, from +0.0 per block; each block ends with
/// `out = fma(p, fl(sa · sb), out)`.
///
/// # Safety
/// AVX2 and FMA present; each of the `G` groups has `4 · rows.k` bytes of
/// codes and `8 · blocks` scales, and `out` `R` rows of `8 · G` floats at
/// its stride; `rows.a` has `R` rows of `rows.k` values and `rows.sa` `R`
/// rows of `blocks` scales (`rows.k = blocks · block`, block a multiple
/// of 8).
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn fp4_dense_avx2<
    const R: usize,
    const G: usize,
    const PRESCALED: bool,
    const ZP: bool,
>(
    rows: &Fp4DenseRows<'_>,
    at: DenseGroups,
) {
    // FP4 codes → 2·w; with `ZP`, unsigned int4 codes q → 2·q, from which
    // each block's 2·z is taken (w = q − z).
    let t = if ZP { INT4_TIMES_2 } else { FP4_TIMES_2 };
    let lut = _mm256_setr_epi8(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
        t[12], t[13], t[14], t[15],
    );
    let low = _mm256_set1_epi8(0x0F);
    let (k, block) = (rows.k, rows.block);
    let blocks = k / block;
    let a = rows.a.as_ptr();
    let mut acc = [[_mm256_setzero_ps(); R]; G];
    // SAFETY (all reads and writes): k0 + 8 ≤ blocks · block = rows.k,
    // whose codes (32 bytes per 8 values and group), A values (R rows),
    // scales and outputs the caller guarantees.
    unsafe {
        // Byte i of every lane moved to the lane's top byte, the rest zero:
        // 2·w · 2^24 as an i32, exactly an f32 after `vcvtdq2ps`. Bytes 0
        // and 3 need no shuffle (a shift, a mask), bytes 1 and 2 one
        // `vpshufb` (index 0x80 zeroes a byte).
        let top1 = _mm256_set1_epi32(0x0180_8080u32 as i32);
        let top2 = _mm256_set1_epi32(0x0280_8080u32 as i32);
        let top3 = _mm256_set1_epi32(0xFF00_0000u32 as i32);
        // Lane jj of each 128-bit half reads bytes 4·jj + i.
        let lane_base =
            _mm256_setr_epi32(0, 4 << 24, 8 << 24, 12 << 24, 0, 4 << 24, 8 << 24, 12 << 24);
        let sel1 = _mm256_add_epi32(top1, lane_base);
        let sel2 = _mm256_add_epi32(top2, lane_base);
        let unscale = _mm256_set1_ps(f32::from_bits(0x3300_0000)); // 2^-25
        let weight = |lo: __m256i, hi: __m256i, zt: __m256i, i: usize| -> __m256 {
            let src = if i < 4 { lo } else { hi };
            let top = match i % 4 {
                0 => _mm256_slli_epi32::<24>(src),
                1 => _mm256_shuffle_epi8(src, sel1),
                2 => _mm256_shuffle_epi8(src, sel2),
                _ => _mm256_and_si256(src, top3),
            };
            // (2q − 2z) · 2^24, exact in an i32 (|2q − 2z| ≤ 30).
            let top = if ZP { _mm256_sub_epi32(top, zt) } else { top };
            let w = _mm256_cvtepi32_ps(top);
            if PRESCALED {
                w
            } else {
                _mm256_mul_ps(w, unscale) // exact: w itself
            }
        };
        for blk in 0..blocks {
            let mut p = [[_mm256_setzero_ps(); R]; G];
            // 2z · 2^24 per line of each group (only with `ZP`).
            let mut zt = [_mm256_setzero_si256(); G];
            if ZP {
                for (g, z) in zt.iter_mut().enumerate() {
                    let at_zero = at.zeros.add(g * at.scale_stride + blk * 8);
                    let zb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(at_zero as *const __m128i));
                    *z = _mm256_slli_epi32::<25>(zb);
                }
            }
            for k0 in (blk * block..(blk + 1) * block).step_by(8) {
                // Every group's codes decoded to bytes first, then value by
                // value across the groups: their chains interleave.
                let mut lo = [_mm256_setzero_si256(); G];
                let mut hi = [_mm256_setzero_si256(); G];
                for g in 0..G {
                    let v = _mm256_loadu_si256(
                        at.codes.add(g * at.code_stride + k0 * 4) as *const __m256i
                    );
                    lo[g] = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, low));
                    hi[g] =
                        _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(v), low));
                }
                for i in 0..8 {
                    for g in 0..G {
                        let w = weight(lo[g], hi[g], zt[g], i);
                        for (r, s) in p[g].iter_mut().enumerate() {
                            let x = _mm256_broadcast_ss(&*a.add(r * k + k0 + i));
                            *s = _mm256_fmadd_ps(x, w, *s);
                        }
                    }
                }
            }
            for g in 0..G {
                let at_scale = g * at.scale_stride + blk * 8;
                let sb = if at.e8m0.is_null() {
                    _mm256_loadu_ps(at.scales.add(at_scale))
                } else if let Some(t) = at.e4m3_times {
                    _mm256_mul_ps(e4m3_to_f32(at.e8m0.add(at_scale)), _mm256_set1_ps(t))
                } else {
                    e8m0_to_f32(at.e8m0.add(at_scale))
                };
                let scales = row_scales8::<R>(rows, (blk, blocks), sb);
                for (r, s) in acc[g].iter_mut().enumerate() {
                    *s = _mm256_fmadd_ps(p[g][r], scales[r], *s);
                }
            }
        }
        for (g, acc_g) in acc.iter().enumerate() {
            for (r, s) in acc_g.iter().enumerate() {
                _mm256_storeu_ps(at.out.add(r * at.out_stride + g * 8), *s);
            }
        }
    }
}

/// Eight E8M0 codes in 1..=254 as f32: 2^(c − 127), the code shifted
/// into the exponent field ([`GroupScales::E8M0`] holds no 0 or 0xFF).
///
/// # Safety
/// AVX2 present; `codes` has 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn e8m0_to_f32(codes: *const u8) -> __m256 {
    // SAFETY: 8 bytes at `codes` (the caller's contract).
    let c = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(codes as *const __m128i) });
    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(c))
}

/// Eight E4M3 codes as f32, as `block_scaled::packed::e4m3_scale` (before
/// its multiply) gives them: normal codes by moving exponent and mantissa
/// into place (bias 7 → 127), subnormal codes (exponent 0) as `m · 2^-9`,
/// 0x7F/0xFF as [`crate::F8E4M3::to_f32`]'s NaNs (±0x7FF00000).
///
/// # Safety
/// AVX2 present; `codes` has 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn e4m3_to_f32(codes: *const u8) -> __m256 {
    // SAFETY: 8 bytes at `codes` (the caller's contract).
    let c = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(codes as *const __m128i) });
    let mag = _mm256_and_si256(c, _mm256_set1_epi32(0x7F));
    let sign = _mm256_slli_epi32::<24>(_mm256_and_si256(c, _mm256_set1_epi32(0x80)));
    let normal = _mm256_add_epi32(_mm256_slli_epi32::<20>(mag), _mm256_set1_epi32(120 << 23));
    let sub = _mm256_castps_si256(_mm256_mul_ps(
        _mm256_cvtepi32_ps(mag),
        _mm256_set1_ps(f32::from_bits(0x3B00_0000)), // 2^-9
    ));
    let is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag);
    let is_nan = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F));
    let bits = _mm256_blendv_epi8(normal, sub, is_sub);
    let bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x7FF0_0000), is_nan);
    _mm256_castsi256_ps(_mm256_or_si256(bits, sign))
}

/// [`super::x86_avx512_dense::row_scales16`] on ymm, for both AVX2 dense
/// kernels: each row's `fl(sa · sb)`, or `sb` where the rows have no
/// block scales.
///
/// # Safety
/// `rows.sa` holds `R` rows of `blocks` scales; `blk < blocks`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn row_scales8<const R: usize>(
    rows: &Fp4DenseRows<'_>,
    (blk, blocks): (usize, usize),
    sb: __m256,
) -> [__m256; R] {
    let mut scales = [sb; R];
    if !rows.unit_scales {
        for (r, scale) in scales.iter_mut().enumerate() {
            // SAFETY: r < R rows, blk < blocks (the caller's contract).
            let sa = unsafe { *rows.sa.as_ptr().add(r * blocks + blk) };
            *scale = _mm256_mul_ps(_mm256_set1_ps(sa), sb);
        }
    }
    scales
}

/// [`Kernel::e4m3_scales`](super::Kernel::e4m3_scales) of the AVX2 tier:
/// 8 codes per [`e4m3_to_f32`] and one multiply, the rest one by one.
///
/// # Panics
/// If `out` and `codes` differ in length (a crate bug).
pub(crate) fn e4m3_scales_avx2(codes: &[u8], t: f32, out: &mut [f32]) {
    assert_eq!(codes.len(), out.len());
    // SAFETY: the driver selects the AVX2 tier only when the CPU has AVX2.
    unsafe { e4m3_scales_body_avx2(codes, t, out) }
}

/// The loop of [`e4m3_scales_avx2`], compiled with the features (so that
/// the intrinsics are inlined).
///
/// # Safety
/// AVX2 present.
#[target_feature(enable = "avx2")]
unsafe fn e4m3_scales_body_avx2(codes: &[u8], t: f32, out: &mut [f32]) {
    let mut code_chunks = codes.chunks_exact(8);
    let mut out_chunks = out.chunks_exact_mut(8);
    for (c, o) in (&mut code_chunks).zip(&mut out_chunks) {
        // SAFETY: 8 bytes in and 8 floats out.
        unsafe {
            let v = _mm256_mul_ps(e4m3_to_f32(c.as_ptr()), _mm256_set1_ps(t));
            _mm256_storeu_ps(o.as_mut_ptr(), v);
        }
    }
    for (&c, o) in code_chunks
        .remainder()
        .iter()
        .zip(out_chunks.into_remainder())
    {
        *o = crate::block_scaled::e4m3_scale(c, t);
    }
}

/// [`Kernel::fp4_dense`](super::Kernel::fp4_dense) on `groups` (1..=8)
/// consecutive groups: about 8 chains (`R · G`) per call: G up to 8 for
/// one row, 4 for two, 2 for three or four.
///
/// # Safety
/// As [`fp4_dense_avx2`] for every group: `codes` holds `groups · 4 · k`
/// bytes, `scales` (and `zeros`, if given) `groups · 8 · blocks` values, `out` `rows.rows` rows of
/// `out_stride ≥ 8 · groups` floats.
pub(crate) unsafe fn fp4_dense_groups(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: GroupScales<'_>,
    zeros: Option<&[u8]>,
    groups: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let mut g0 = 0;
    while g0 < groups {
        let left = groups - g0;
        // About 8 chains per call (R · G), to cover the FMA latency.
        let most = match rows.rows {
            1 => 4,
            2 => 2,
            _ => 2,
        };
        let g = [8, 4, 2, 1]
            .into_iter()
            .find(|&g| g <= most && g <= left)
            .unwrap_or(1);
        let at = DenseGroups::from_group(rows, codes, scales, zeros, g0, out, out_stride);
        // SAFETY: groups g0..g0 + g < groups, within the caller's bounds.
        unsafe {
            macro_rules! call {
                ($($r:literal, $g:literal);*) => {
                    match (rows.rows, g, rows.prescaled, zeros.is_some()) {
                        $(($r, $g, true, false) => fp4_dense_avx2::<$r, $g, true, false>(rows, at),
                          ($r, $g, false, false) => fp4_dense_avx2::<$r, $g, false, false>(rows, at),
                          ($r, $g, true, true) => fp4_dense_avx2::<$r, $g, true, true>(rows, at),
                          ($r, $g, false, true) => fp4_dense_avx2::<$r, $g, false, true>(rows, at),)*
                        _ => unreachable!("rows 1..=4 and their group counts"),
                    }
                };
            }
            call!(1, 8; 1, 4; 1, 2; 1, 1; 2, 4; 2, 2; 2, 1; 3, 2; 3, 1; 4, 2; 4, 1);
        }
        g0 += g;
    }
}

/// The [`Kernel`](super::Kernel) methods of the streaming dense kernels
/// (`fp4_dense`, `fp8_dense`, and `e4m3_scales` for NVFP4's scales) for
/// the AVX2 and AVX-512 tiers, taken by
/// `avx2_shared_methods!`.
macro_rules! dense_methods {
    ($fp4:path, $fp8:path, $e4m3_scales:path) => {
        fn fp4_dense(
            rows: &$crate::gemm::kernel::Fp4DenseRows<'_>,
            codes: &[u8],
            scales: $crate::gemm::kernel::GroupScales<'_>,
            zeros: Option<&[u8]>,
            groups: usize,
            out: &mut [f32],
            out_stride: usize,
        ) {
            $fp4(rows, codes, scales, zeros, groups, out, out_stride)
        }

        fn fp8_dense(
            rows: &$crate::gemm::kernel::Fp4DenseRows<'_>,
            codes: &[u8],
            scales: &[f32],
            groups: usize,
            out: &mut [f32],
            out_stride: usize,
        ) {
            $fp8(rows, codes, scales, groups, out, out_stride)
        }

        fn e4m3_scales(codes: &[u8], t: f32, out: &mut [f32]) {
            $e4m3_scales(codes, t, out)
        }
    };
}
pub(crate) use dense_methods;

/// [`Kernel::fp4_dense`](super::Kernel::fp4_dense) of the AVX2 and AVX-512
/// tiers: the bounds its `#[target_feature]` functions rely on, asserted.
pub(crate) fn fp4_dense_checked(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: GroupScales<'_>,
    zeros: Option<&[u8]>,
    groups: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let bounds = (groups, out_stride, super::FP4_DENSE_MR);
    check_fp4_dense(rows, codes, scales, zeros, bounds, out);
    // SAFETY: the driver selects this kernel only when the CPU has AVX2
    // and FMA; the asserts above bound every read and write.
    unsafe { fp4_dense_groups(rows, codes, scales, zeros, groups, out, out_stride) }
}

/// The bounds every `fp4_dense` kernel (AVX2, AVX-512) relies on: whole
/// blocks of a multiple of 8 values, `groups` groups of codes, scales and
/// zero points, the rows of A and their scales, and the output rows.
pub(crate) fn check_fp4_dense(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: GroupScales<'_>,
    zeros: Option<&[u8]>,
    (groups, out_stride, max_rows): (usize, usize, usize),
    out: &[f32],
) {
    let blocks = rows.k / rows.block.max(1);
    assert!(rows.block.is_multiple_of(8) && blocks * rows.block == rows.k);
    assert!(codes.len() >= groups * rows.k * 4 && scales.len() >= groups * blocks * 8);
    assert!(zeros.is_none_or(|z| z.len() >= groups * blocks * 8));
    assert!(rows.a.len() >= rows.rows * rows.k && rows.sa.len() >= rows.rows * blocks);
    assert!((1..=max_rows).contains(&rows.rows));
    assert!(out_stride >= groups * 8 && out.len() >= (rows.rows - 1) * out_stride + groups * 8);
}

//! AVX2 quantize/dequantize kernels: the same bits as the scalar
//! definitions in the parent module.

use super::QuantRounding;
use crate::quant::QInt;
use std::arch::x86_64::*;

/// Quantize with AVX2: the same operations as `convert::quantize_one`
/// (IEEE division, round half to even, float add of the zero point, clamp,
/// NaN → zero point), eight lanes at a time.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize<Q: QInt>(
    src: &[f32],
    dst: &mut [Q],
    scale: f32,
    zp: i32,
    rule: QuantRounding,
) {
    let n = src.len().min(dst.len());
    let body = n - n % 8;
    let (s, z) = (_mm256_set1_ps(scale), _mm256_set1_ps(zp as f32));
    let inv = _mm256_set1_ps(1.0 / scale);
    let by_reciprocal = rule == QuantRounding::MultiplyByReciprocal;
    let (lo, hi) = (
        _mm256_set1_ps(Q::QMIN as f32),
        _mm256_set1_ps(Q::QMAX as f32),
    );
    let zi = _mm256_set1_epi32(zp);
    let mut out = [0i32; 8];
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= n.
        let x = unsafe { _mm256_loadu_ps(src.as_ptr().add(i)) };
        let q = if by_reciprocal {
            _mm256_mul_ps(x, inv)
        } else {
            _mm256_div_ps(x, s)
        };
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(q);
        let v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, z), lo), hi);
        let q = _mm256_cvttps_epi32(v);
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
        let q = _mm256_blendv_epi8(q, zi, nan);
        // SAFETY: `out` holds 8 i32.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, q) };
        for (d, &v) in dst[i..i + 8].iter_mut().zip(&out) {
            *d = Q::from_i32_clamped(v);
        }
        i += 8;
    }
    for (d, &x) in dst[body..n].iter_mut().zip(&src[body..n]) {
        *d = Q::from_i32_clamped(super::quantize_one(x, scale, zp, (Q::QMIN, Q::QMAX), rule));
    }
}

/// Dequantize with AVX2: `(q − zp) as f32 · scale`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dequantize<Q: QInt>(src: &[Q], dst: &mut [f32], scale: f32, zp: i32) {
    let n = src.len().min(dst.len());
    let body = n - n % 8;
    let s = _mm256_set1_ps(scale);
    let zi = _mm256_set1_epi32(zp);
    let signed = Q::QMIN < 0;
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= n, 8 bytes read from `src`, 8 floats written.
        unsafe {
            let bytes = _mm_loadl_epi64(src.as_ptr().add(i) as *const __m128i);
            let q = if signed {
                _mm256_cvtepi8_epi32(bytes)
            } else {
                _mm256_cvtepu8_epi32(bytes)
            };
            let x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zi)), s);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), x);
        }
        i += 8;
    }
    for (d, &q) in dst[body..n].iter_mut().zip(&src[body..n]) {
        *d = super::dequantize_one(q.to_i32(), scale, zp);
    }
}

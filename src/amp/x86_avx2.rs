//! AVX2 overflow check: one pass over a gradient buffer.

use std::arch::x86_64::*;

/// True when any value is inf or NaN (exponent bits all ones).
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn has_non_finite(x: &[f32]) -> bool {
    let exp = _mm256_set1_epi32(0x7F80_0000);
    let body = x.len() - x.len() % 32;
    let mut i = 0;
    while i < body {
        let mut any = _mm256_setzero_si256();
        for j in 0..4 {
            // SAFETY: i + 32 <= len.
            let v = unsafe { _mm256_loadu_si256(x.as_ptr().add(i + 8 * j) as *const __m256i) };
            // (bits & exp) == exp  ⇔  inf or NaN.
            any = _mm256_or_si256(any, _mm256_cmpeq_epi32(_mm256_and_si256(v, exp), exp));
        }
        if _mm256_testz_si256(any, any) == 0 {
            return true;
        }
        i += 32;
    }
    x[body..].iter().any(|v| !v.is_finite())
}

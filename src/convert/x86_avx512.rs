//! AVX-512 forms of the block quantizer's rounding loop
//! (`x86_avx2::quantize_groups8`): the same quotients and the same rounding
//! on the bits as `x86_avx2::fp8_round8_of`, sixteen lanes at a time, so the
//! same bits as the AVX2 kernel and the scalar reference.
//!
//! Every function here requires AVX-512 F/BW/VL besides AVX2, FMA and F16C;
//! callers check [`crate::cpu::has_avx512`] first.

use crate::dtype::format::Format;
use crate::dtype::FloatElement;
use std::arch::x86_64::*;

/// `x86_avx2::fp8_round8_of` on sixteen lanes (saturating): f32 bits →
/// sign-magnitude codes of `fmt`, round to nearest even; `nan_possible`
/// false leaves the NaN handling out (no lane is a NaN or ±∞).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn round16(x: __m512i, fmt: Format, nan_possible: bool) -> __m512i {
    let set = |v: i32| _mm512_set1_epi32(v);
    let man = fmt.man_bits as i32;
    let shift = _mm_cvtsi32_si128(23 - man);
    let abs = _mm512_and_si512(x, set(0x7FFF_FFFF));
    // Normal range: rebias the exponent and round on the bits.
    let lsb = _mm512_and_si512(_mm512_srl_epi32(abs, shift), set(1));
    let rebias_and_half = ((1i32 << (22 - man)) - 1).wrapping_sub((127 - fmt.bias) << 23);
    let normal = _mm512_srl_epi32(
        _mm512_add_epi32(_mm512_add_epi32(abs, lsb), set(rebias_and_half)),
        shift,
    );
    // Subnormal range: |x| + 2^(1 - bias - man + 23) rounds |x| to the subnormal step.
    let magic = set((128 - fmt.bias - man + 23) << 23);
    let sum = _mm512_add_ps(_mm512_castsi512_ps(abs), _mm512_castsi512_ps(magic));
    let sub = _mm512_sub_epi32(_mm512_castps_si512(sum), magic);
    let min_normal = set((128 - fmt.bias) << 23);
    let subnormal = _mm512_cmpgt_epi32_mask(min_normal, abs);
    let out = _mm512_mask_blend_epi32(subnormal, normal, sub);
    // Saturation: every code above MAX becomes MAX.
    let out = _mm512_min_epi32(out, set(fmt.max_bits() as i32));
    let out = if nan_possible && !fmt.finite_only {
        let nan = if fmt.ieee_specials {
            let payload = _mm512_srl_epi32(_mm512_and_si512(abs, set(0x007F_FFFF)), shift);
            _mm512_or_si512(
                payload,
                set((fmt.inf_or_nan_bits() | 1 << (man - 1)) as i32),
            )
        } else {
            set(fmt.inf_or_nan_bits() as i32)
        };
        _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(abs, set(0x7F80_0000)), out, nan)
    } else {
        out
    };
    // The sign moves from bit 31 to the format's top bit.
    let width = fmt.exp_bits + fmt.man_bits;
    let sign_bit = fmt.sign_bit() as i32;
    let sign = _mm512_and_si512(
        _mm512_srl_epi32(x, _mm_cvtsi32_si128(31 - width as i32)),
        set(sign_bit),
    );
    if fmt.finite_only && nan_possible {
        // No NaN: a NaN input becomes a zero of the opposite sign.
        let is_nan = _mm512_cmpgt_epi32_mask(abs, set(0x7F80_0000));
        let out = _mm512_maskz_mov_epi32(!is_nan, out);
        let sign = _mm512_mask_xor_epi32(sign, is_nan, sign, set(sign_bit));
        return _mm512_or_si512(out, sign);
    }
    _mm512_or_si512(out, sign)
}

/// Sign-magnitude codes → two's complement in the format's width, as
/// `x86_avx2::sign_magnitude_to_twos8`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn sign_magnitude_to_twos16(v: __m512i, fmt: Format) -> __m512i {
    let sign_bit = _mm512_set1_epi32(fmt.sign_bit() as i32);
    let negative = _mm512_test_epi32_mask(v, sign_bit);
    let magnitude = _mm512_andnot_si512(sign_bit, v);
    let code = _mm512_mask_sub_epi32(magnitude, negative, _mm512_setzero_si512(), magnitude);
    _mm512_and_si512(code, _mm512_set1_epi32(((fmt.sign_bit() << 1) - 1) as i32))
}

/// How a group's quotients are formed: every block by its reciprocal, every
/// block by a division, or each block as its reciprocal says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quotients {
    Multiply,
    Divide,
    Mixed,
}

/// The codes of one group of eight blocks of `BLOCK` (16 or 32) values:
/// `dst[i]` = the saturating round to nearest even of `src[i]` times
/// `recips[j]`, or divided by `scales[j]` where `recips[j]` is 0, for the
/// block `j = i / BLOCK` (`how` says which, for the whole group if it can);
/// `NAN` false when no value of the group is a NaN or ±∞ (see [`round16`]).
/// `src` and `dst` hold `8 · BLOCK` values.
///
/// # Safety
/// AVX-512 F/BW/VL, AVX2, FMA and F16C present.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn round_group<T: FloatElement, const BLOCK: usize, const NAN: bool>(
    src: &[f32],
    dst: &mut [u8],
    scales: &[f32; 8],
    recips: &[f32; 8],
    how: Quotients,
) {
    // A constant per `T`, so the format's tests fold away.
    let Some(fmt) = super::format_of::<T>() else {
        return;
    };
    let (src, dst) = (&src[..8 * BLOCK], &mut dst[..8 * BLOCK]);
    let sm = fmt.sign_magnitude();
    // Dword d of the packed bytes holds four codes of vector d % 4 (lane
    // d / 4); this order puts vector v's sixteen codes in dwords 4v..4v + 4.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    // A macro, not a closure: a closure would not inherit the target
    // features, so it would not inline.
    macro_rules! code {
        ($i:expr) => {{
            let i: usize = $i;
            let j = i / BLOCK;
            // SAFETY: i + 16 <= 8 · BLOCK = src.len().
            let x = unsafe { _mm512_loadu_ps(src.as_ptr().add(i)) };
            let divide = match how {
                Quotients::Multiply => false,
                Quotients::Divide => true,
                Quotients::Mixed => recips[j] == 0.0,
            };
            let quot = if divide {
                _mm512_div_ps(x, _mm512_set1_ps(scales[j]))
            } else {
                _mm512_mul_ps(x, _mm512_set1_ps(recips[j]))
            };
            let v = round16(_mm512_castps_si512(quot), sm, NAN);
            if fmt.twos_complement {
                sign_magnitude_to_twos16(v, fmt)
            } else {
                v
            }
        }};
    }
    for i in (0..8 * BLOCK).step_by(64) {
        // Codes are 0..=255, so the saturating packs keep them.
        let ab = _mm512_packus_epi32(code!(i), code!(i + 16));
        let cd = _mm512_packus_epi32(code!(i + 32), code!(i + 48));
        let bytes = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(ab, cd));
        // SAFETY: i + 64 <= 8 · BLOCK = dst.len().
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut __m512i, bytes) };
    }
}

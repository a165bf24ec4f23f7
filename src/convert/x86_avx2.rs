//! AVX2/F16C conversion kernels. Each returns exactly the bits of the scalar
//! reference (`dtype::format`); tails shorter than a vector go through it.
//!
//! Every function here requires AVX2, FMA and F16C; callers check
//! [`crate::cpu::has_avx2_fma_f16c`] first.

use crate::convert::reference_impl::{narrow_bits_slice, widen_bits_slice};
use crate::dtype::format::{Format, Overflow};
use std::arch::x86_64::*;

/// f32 → f16 bits with F16C's round-to-nearest-even conversion.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn narrow_f16(src: &[f32], dst: &mut [u16], overflow: Overflow) {
    let n = src.len().min(dst.len());
    let body = n - n % 16;
    let hi = _mm256_set1_ps(65504.0);
    let lo = _mm256_set1_ps(-65504.0);
    let saturate = overflow == Overflow::Saturate;
    let mut i = 0;
    while i < body {
        // SAFETY: i + 16 <= n, within both slices; unaligned loads/stores.
        unsafe {
            let mut a = _mm256_loadu_ps(src.as_ptr().add(i));
            let mut b = _mm256_loadu_ps(src.as_ptr().add(i + 8));
            if saturate {
                // max/min return their second operand when either is NaN, so NaN passes.
                a = _mm256_min_ps(hi, _mm256_max_ps(lo, a));
                b = _mm256_min_ps(hi, _mm256_max_ps(lo, b));
            }
            let ha = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(a);
            let hb = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(b);
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, ha);
            _mm_storeu_si128(dst.as_mut_ptr().add(i + 8) as *mut __m128i, hb);
        }
        i += 16;
    }
    narrow_bits_slice(&src[body..n], &mut dst[body..n], Format::F16, overflow);
}

/// f16 bits → f32 with F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn widen_f16(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let body = n - n % 16;
    let mut i = 0;
    while i < body {
        // SAFETY: i + 16 <= n, within both slices.
        unsafe {
            let a = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            let b = _mm_loadu_si128(src.as_ptr().add(i + 8) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(a));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i + 8), _mm256_cvtph_ps(b));
        }
        i += 16;
    }
    widen_bits_slice(&src[body..n], &mut dst[body..n], Format::F16);
}

/// Eight f32 (as bits) → eight bf16 bit patterns in the low halves of the lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bf16_round8(x: __m256i, saturate: bool) -> __m256i {
    let x = if saturate {
        let max = _mm256_set1_ps(f32::from_bits(0x7F7F_0000));
        let min = _mm256_set1_ps(f32::from_bits(0xFF7F_0000));
        _mm256_castps_si256(_mm256_min_ps(
            max,
            _mm256_max_ps(min, _mm256_castsi256_ps(x)),
        ))
    } else {
        x
    };
    let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFF_FFFF));
    let is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F80_0000));
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF));
    let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, bias));
    let nan = _mm256_or_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(0x0040));
    _mm256_blendv_epi8(rounded, nan, is_nan)
}

/// f32 → bf16 bits, round to nearest even.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn narrow_bf16(src: &[f32], dst: &mut [u16], overflow: Overflow) {
    let n = src.len().min(dst.len());
    let body = n - n % 16;
    let saturate = overflow == Overflow::Saturate;
    let mut i = 0;
    while i < body {
        // SAFETY: i + 16 <= n, within both slices.
        unsafe {
            let a = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            let b = _mm256_loadu_si256(src.as_ptr().add(i + 8) as *const __m256i);
            let packed = _mm256_packus_epi32(bf16_round8(a, saturate), bf16_round8(b, saturate));
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, ordered);
        }
        i += 16;
    }
    narrow_bits_slice(&src[body..n], &mut dst[body..n], Format::BF16, overflow);
}

/// bf16 bits → f32: a shift, with signalling NaNs quietened.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn widen_bf16(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let body = n - n % 8;
    let abs_mask = _mm256_set1_epi32(0x7FFF_FFFF);
    let inf = _mm256_set1_epi32(0x7F80_0000);
    let quiet = _mm256_set1_epi32(0x0040_0000);
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= n, within both slices.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            let x = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
            let is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
            let x = _mm256_or_si256(x, _mm256_and_si256(is_nan, quiet));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, x);
        }
        i += 8;
    }
    widen_bits_slice(&src[body..n], &mut dst[body..n], Format::BF16);
}

/// Eight f32 (as bits) → eight FP8 bit patterns of `fmt`, one per lane, with
/// round-to-nearest-even. In the target's normal range the rounding is done
/// on the integer bits (add half an ulp minus one plus the kept LSB, shift);
/// in its subnormal range by one f32 addition of a power of two whose ulp is
/// the target's subnormal step, which the FPU rounds to nearest even.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn fp8_round8(x: __m256i, fmt: Format, overflow: Overflow) -> __m256i {
    fp8_round8_of(x, fmt, overflow, true)
}

/// [`fp8_round8`] where `nan_possible` is false only if no lane can be a
/// NaN or ±∞ (the block quantizer's groups whose amax is finite): the NaN
/// handling is then left out.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn fp8_round8_of(
    x: __m256i,
    fmt: Format,
    overflow: Overflow,
    nan_possible: bool,
) -> __m256i {
    let set = |v: i32| _mm256_set1_epi32(v);
    let man = fmt.man_bits as i32;
    let shift = _mm_cvtsi32_si128(23 - man);
    let abs = _mm256_and_si256(x, set(0x7FFF_FFFF));
    // Normal range: rebias the exponent and round on the bits.
    let lsb = _mm256_and_si256(_mm256_srl_epi32(abs, shift), set(1));
    let rebias_and_half = ((1i32 << (22 - man)) - 1).wrapping_sub((127 - fmt.bias) << 23);
    let normal = _mm256_srl_epi32(
        _mm256_add_epi32(_mm256_add_epi32(abs, lsb), set(rebias_and_half)),
        shift,
    );
    // Subnormal range: |x| + 2^(1 - bias - man + 23) rounds |x| to the subnormal step.
    let magic = set((128 - fmt.bias - man + 23) << 23);
    let sum = _mm256_add_ps(_mm256_castsi256_ps(abs), _mm256_castsi256_ps(magic));
    let sub = _mm256_sub_epi32(_mm256_castps_si256(sum), magic);
    let min_normal = set((128 - fmt.bias) << 23);
    let out = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(min_normal, abs));
    // Overflow: every out above MAX becomes the overflow code, which is MAX
    // itself (saturating) or MAX + 1 (infinity, or E4M3's NaN): one `min`.
    let over_bits = match overflow {
        Overflow::Saturate => fmt.max_bits(),
        Overflow::Ieee => fmt.inf_or_nan_bits(),
    };
    let out = _mm256_min_epi32(out, set(over_bits as i32));
    // NaN inputs land above MAX too; only where the overflow code is not the
    // format's NaN do they need their own code.
    let out = if nan_possible
        && !fmt.finite_only
        && (fmt.ieee_specials || overflow == Overflow::Saturate)
    {
        let nan = if fmt.ieee_specials {
            let payload = _mm256_srl_epi32(_mm256_and_si256(abs, set(0x007F_FFFF)), shift);
            _mm256_or_si256(
                payload,
                set((fmt.inf_or_nan_bits() | 1 << (man - 1)) as i32),
            )
        } else {
            set(fmt.inf_or_nan_bits() as i32)
        };
        _mm256_blendv_epi8(out, nan, _mm256_cmpgt_epi32(abs, set(0x7F80_0000)))
    } else {
        out
    };
    // The sign moves from bit 31 to the format's top bit.
    let width = fmt.exp_bits + fmt.man_bits;
    let sign_bit = fmt.sign_bit() as i32;
    let sign = _mm256_and_si256(
        _mm256_srl_epi32(x, _mm_cvtsi32_si128(31 - width as i32)),
        set(sign_bit),
    );
    if fmt.finite_only && nan_possible {
        // No NaN: a NaN input becomes a zero of the opposite sign.
        let is_nan = _mm256_cmpgt_epi32(abs, set(0x7F80_0000));
        let out = _mm256_andnot_si256(is_nan, out);
        let sign = _mm256_xor_si256(sign, _mm256_and_si256(is_nan, set(sign_bit)));
        return _mm256_or_si256(out, sign);
    }
    _mm256_or_si256(out, sign)
}

/// Sign-magnitude codes (one per 32-bit lane) → two's complement in the
/// format's width, as `format::sign_magnitude_to_twos`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn sign_magnitude_to_twos8(v: __m256i, fmt: Format) -> __m256i {
    let sign_bit = _mm256_set1_epi32(fmt.sign_bit() as i32);
    let negative = _mm256_cmpeq_epi32(_mm256_and_si256(v, sign_bit), sign_bit);
    let magnitude = _mm256_andnot_si256(sign_bit, v);
    let code = _mm256_sub_epi32(_mm256_xor_si256(magnitude, negative), negative);
    let width_mask = (fmt.sign_bit() << 1) - 1;
    _mm256_and_si256(code, _mm256_set1_epi32(width_mask as i32))
}

/// f32 → FP8 bits of `fmt`, round to nearest even.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn narrow_fp8(src: &[f32], dst: &mut [u8], fmt: Format, overflow: Overflow) {
    let n = src.len().min(dst.len());
    let body = n - n % 32;
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    // Rounding works in sign-magnitude; MXINT8 then re-encodes.
    let sm = fmt.sign_magnitude();
    let round = |x: __m256i| {
        let v = fp8_round8(x, sm, overflow);
        if fmt.twos_complement {
            sign_magnitude_to_twos8(v, fmt)
        } else {
            v
        }
    };
    let mut i = 0;
    while i < body {
        // SAFETY: i + 32 <= n, within both slices.
        unsafe {
            let p = src.as_ptr().add(i) as *const __m256i;
            let a = round(_mm256_loadu_si256(p));
            let b = round(_mm256_loadu_si256(p.add(1)));
            let c = round(_mm256_loadu_si256(p.add(2)));
            let d = round(_mm256_loadu_si256(p.add(3)));
            let ab = _mm256_packus_epi32(a, b);
            let cd = _mm256_packus_epi32(c, d);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, bytes);
        }
        i += 32;
    }
    narrow_bits_slice(&src[body..n], &mut dst[body..n], fmt, overflow);
}

/// FP8 bits of `fmt` → f32, exactly: normals by moving the fields, subnormals
/// by an exact integer-to-float conversion and scaling.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn widen_fp8(src: &[u8], dst: &mut [f32], fmt: Format) {
    let n = src.len().min(dst.len());
    let body = n - n % 8;
    if fmt.twos_complement {
        // MXINT8 (8 bits wide): k · 2^-6 by an exact conversion and scaling.
        let step = _mm256_set1_ps(f32::from_bits(
            ((127 + 1 - fmt.bias - fmt.man_bits as i32) as u32) << 23,
        ));
        let mut i = 0;
        while i < body {
            // SAFETY: i + 8 <= n, within both slices.
            unsafe {
                let k =
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(src.as_ptr().add(i) as *const __m128i));
                let x = _mm256_mul_ps(_mm256_cvtepi32_ps(k), step);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), x);
            }
            i += 8;
        }
        widen_bits_slice(&src[body..n], &mut dst[body..n], fmt);
        return;
    }
    let set = |v: i32| _mm256_set1_epi32(v);
    let man = fmt.man_bits as i32;
    let min_normal = set(1 << man);
    let rebias = set((127 - fmt.bias) << 23);
    let sub_scale = _mm256_set1_ps(f32::from_bits(((128 - fmt.bias - man) as u32) << 23));
    let special = set(fmt.inf_or_nan_bits() as i32);
    let sign_bit = set(fmt.sign_bit() as i32);
    let magnitude = set(fmt.sign_bit() as i32 - 1);
    let sign_shift = _mm_cvtsi32_si128(31 - (fmt.exp_bits + fmt.man_bits) as i32);
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= n, within both slices.
        unsafe {
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(src.as_ptr().add(i) as *const __m128i));
            let sign = _mm256_sll_epi32(_mm256_and_si256(b, sign_bit), sign_shift);
            let abs = _mm256_and_si256(b, magnitude);
            let normal = _mm256_add_epi32(_mm256_sllv_epi32(abs, set(23 - man)), rebias);
            let sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(abs), sub_scale));
            let mut x = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(min_normal, abs));
            let nan = _mm256_or_si256(
                _mm256_sllv_epi32(_mm256_and_si256(abs, set((1 << man) - 1)), set(23 - man)),
                set(0x7FC0_0000),
            );
            if fmt.finite_only {
                // Every pattern is a number.
            } else if fmt.ieee_specials {
                x = _mm256_blendv_epi8(x, set(0x7F80_0000), _mm256_cmpeq_epi32(abs, special));
                x = _mm256_blendv_epi8(x, nan, _mm256_cmpgt_epi32(abs, special));
            } else {
                x = _mm256_blendv_epi8(x, nan, _mm256_cmpeq_epi32(abs, special));
            }
            _mm256_storeu_si256(
                dst.as_mut_ptr().add(i) as *mut __m256i,
                _mm256_or_si256(x, sign),
            );
        }
        i += 8;
    }
    widen_bits_slice(&src[body..n], &mut dst[body..n], fmt);
}

/// 64-bit lane-wise multiply by a constant (AVX2 has no `vpmullq`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul64_const(a: __m256i, c: u64) -> __m256i {
    let c_lo = _mm256_set1_epi64x((c & 0xFFFF_FFFF) as i64);
    let c_hi = _mm256_set1_epi64x((c >> 32) as i64);
    let lo = _mm256_mul_epu32(a, c_lo);
    let cross = _mm256_add_epi64(
        _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), c_lo),
        _mm256_mul_epu32(a, c_hi),
    );
    _mm256_add_epi64(lo, _mm256_slli_epi64::<32>(cross))
}

/// Stochastic rounding f32 → bf16, sixteen elements per step: four
/// SplitMix64 outputs (the same stream as `StochasticRng::next_u64`, four
/// states advanced at once) give each element its 16 random bits in order;
/// then `(bits + r) >> 16`, NaNs by the NaN rule. Returns how many elements
/// were done (a multiple of 16) and advances `state` past the outputs used.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn stochastic_bf16(src: &[f32], dst: &mut [u16], state: &mut u64) -> usize {
    use crate::convert::StochasticRng;
    let n = src.len().min(dst.len());
    let body = n - n % 16;
    let g = StochasticRng::GAMMA;
    let mut lanes = _mm256_setr_epi64x(
        state.wrapping_add(g) as i64,
        state.wrapping_add(g.wrapping_mul(2)) as i64,
        state.wrapping_add(g.wrapping_mul(3)) as i64,
        state.wrapping_add(g.wrapping_mul(4)) as i64,
    );
    let step = _mm256_set1_epi64x(g.wrapping_mul(4) as i64);
    let abs_mask = _mm256_set1_epi32(0x7FFF_FFFF);
    let inf = _mm256_set1_epi32(0x7F80_0000);
    let quiet = _mm256_set1_epi32(0x0040);
    let mut i = 0;
    while i < body {
        let mut z = lanes;
        z = mul64_const(
            _mm256_xor_si256(z, _mm256_srli_epi64::<30>(z)),
            0xBF58_476D_1CE4_E5B9,
        );
        z = mul64_const(
            _mm256_xor_si256(z, _mm256_srli_epi64::<27>(z)),
            0x94D0_49BB_1331_11EB,
        );
        z = _mm256_xor_si256(z, _mm256_srli_epi64::<31>(z));
        // 16 random u16 in element order, widened to u32 in two halves.
        let r_lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(z));
        let r_hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(z));
        let round = |x: __m256i, r: __m256i| {
            let sum = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, r));
            let nan = _mm256_or_si256(_mm256_srli_epi32::<16>(x), quiet);
            let is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
            _mm256_blendv_epi8(sum, nan, is_nan)
        };
        // SAFETY: i + 16 <= n, within both slices.
        unsafe {
            let a = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            let b = _mm256_loadu_si256(src.as_ptr().add(i + 8) as *const __m256i);
            let packed = _mm256_packus_epi32(round(a, r_lo), round(b, r_hi));
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, ordered);
        }
        lanes = _mm256_add_epi64(lanes, step);
        i += 16;
    }
    *state = state.wrapping_add(g.wrapping_mul((body / 4) as u64));
    body
}

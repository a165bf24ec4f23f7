//! AVX-512 forms of the block quantizer's rounding loop
//! (`x86_avx2::quantize_groups8`): the same quotients and the same rounding
//! on the bits as `convert::x86_avx2::fp8_round8_of`, sixteen lanes at a time, so the
//! same bits as the AVX2 kernel and the scalar reference.
//!
//! Every function here requires AVX-512 F/BW/VL besides AVX2, FMA and F16C;
//! callers check [`crate::cpu::has_avx512`] first. E2M1 has a shorter
//! rounding by table where the CPU also has AVX-512 VBMI
//! ([`crate::cpu::has_avx512_vbmi`]).

use super::x86_avx2::{GroupScales, Quotients};
use crate::dtype::format::Format;
use crate::dtype::FloatElement;
use crate::simd::x86_64::prefetch_lines;
use std::arch::x86_64::*;

/// `convert::x86_avx2::fp8_round8_of` on sixteen lanes (saturating): f32 bits →
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

/// E2M1 codes by class, for [`round_groups_e2m1`]: entry
/// `64 · sign + (t % 64)` where `t` is the class of |x| from
/// [`e2m1_class16`]. A class is either one value (its bits 0..=20 clear:
/// every midpoint and the saturation bound of the rounding is such a value)
/// or the open interval between two such values, so the scalar reference's
/// rounding of one member gives the code of every member.
const E2M1_BY_CLASS: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let sign = (i as u32 >> 6) << 31;
        // The class t in 992..=1055 with t % 64 = i % 64.
        let t = 992 + (i as u32 % 64 + 32) % 64;
        // Bits 21.. from t >> 1; bit 0 set for an interval's member.
        let bits = sign | (t >> 1) << 21 | (t & 1);
        table[i] = crate::dtype::format::narrow_bits(
            f32::from_bits(bits),
            Format::E2M1,
            crate::dtype::format::Rounding::NearestEven,
            crate::dtype::format::Overflow::Saturate,
        ) as u8;
        i += 1;
    }
    table
};

/// The [`E2M1_BY_CLASS`] index of sixteen finite f32 lanes `x`, in bits
/// 0..=6 of each dword (the rest clear): |x| bits clamped to
/// `[2^-3, 2^5)`, shifted right by 20, with bit 0 set when any of bits
/// 0..=20 is (so exact values and the intervals between them get classes of
/// their own), and the sign in bit 6.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn e2m1_class16(x: __m512i) -> __m512i {
    let set = |v: i32| _mm512_set1_epi32(v);
    let abs = _mm512_and_si512(x, set(0x7FFF_FFFF));
    let c = _mm512_min_epu32(_mm512_max_epu32(abs, set(0x3E00_0000)), set(0x41FF_FFFF));
    // (c mod 2^20) + (2^20 − 1) reaches bit 20 exactly when a bit below it
    // is set; or-ed into c, bit 20 becomes the sticky bit.
    let low = set(0x000F_FFFF);
    let sticky = _mm512_add_epi32(_mm512_and_si512(c, low), low);
    let t = _mm512_srli_epi32::<20>(_mm512_or_si512(c, sticky));
    // Bits 0..=5 from t, bit 6 the sign (x >> 25 keeps 7 bits).
    _mm512_ternarylogic_epi32::<0xE2>(t, set(0x3F), _mm512_srli_epi32::<25>(x))
}

/// Sixteen quotients of block `i / BLOCK` of a group: `src[i..i + 16]`
/// times the block's reciprocal or divided by its scale (`scales`, the
/// group's eight), as `plan.how` says.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn quotient16<const BLOCK: usize>(
    src: &[f32],
    i: usize,
    scales: &[f32],
    plan: &GroupScales,
) -> __m512i {
    let j = i / BLOCK;
    let x = src[i..i + 16].as_ptr();
    // SAFETY: `x` points at 16 f32 of `src`.
    let x = unsafe { _mm512_loadu_ps(x) };
    let divide = match plan.how {
        Quotients::Multiply => false,
        Quotients::Divide => true,
        Quotients::Mixed => plan.recips[j] == 0.0,
    };
    _mm512_castps_si512(if divide {
        _mm512_div_ps(x, _mm512_set1_ps(scales[j]))
    } else {
        _mm512_mul_ps(x, _mm512_set1_ps(plan.recips[j]))
    })
}

/// Dword d of the packed bytes of four vectors holds four codes of vector
/// d % 4 (lane d / 4); this order puts vector v's sixteen codes in dwords
/// 4v..4v + 4.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn pack_order() -> __m512i {
    _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
}

/// Runs `$body` on each group of a chunk (eight blocks of `$block`
/// values, `$p` = `$plan[g]` its plan) with `$src`, `$dst` and `$scales`
/// shadowed by the group's values, codes and eight scales; with `$prefetch`, first
/// prefetches the group's place in the next chunk. A macro so the body
/// inlines into the caller's target features (see `round_groups_e2m1`);
/// `continue` in the body goes to the next group.
macro_rules! for_each_group {
    ($block:expr, $src:ident, $dst:ident, $scales:ident, $plan:ident, $prefetch:expr,
     |$p:ident| $body:block) => {
        let n = 8 * $block;
        for (g, $p) in $plan.iter().enumerate() {
            let ($src, $dst, $scales) = (
                &$src[g * n..][..n],
                &mut $dst[g * n..][..n],
                &$scales[g * 8..][..8],
            );
            if $prefetch {
                prefetch_lines($src, $plan.len() * n);
            }
            $body
        }
    };
}

/// The codes of consecutive groups of eight blocks of `BLOCK` (16 or 32)
/// values, group `g` by `plan[g]` and its eight `scales`: `dst[i]` = the
/// saturating round to nearest even to `T` of `src[i]` times its block's
/// reciprocal or divided by its scale. With `vbmi` (the CPU has AVX-512 VBMI) E2M1 goes through
/// [`round_groups_e2m1`]; with `stream` the codes go out by non-temporal
/// stores ([`store_codes`]). `src` and `dst` hold `plan.len() · 8 · BLOCK`
/// values (a chunk); with `prefetch` each group prefetches its place in
/// the next chunk.
///
/// # Safety
/// AVX-512 F/BW/VL, AVX2, FMA and F16C present.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn round_groups<T: FloatElement, const BLOCK: usize>(
    src: &[f32],
    dst: &mut [u8],
    scales: &[f32],
    plan: &[GroupScales],
    vbmi: bool,
    stream: bool,
    prefetch: bool,
) {
    if vbmi && crate::convert::format_of::<T>() == Some(Format::E2M1) {
        // SAFETY: the caller's CPU has AVX-512 VBMI besides the rest.
        unsafe { round_groups_e2m1::<T, BLOCK>(src, dst, scales, plan, stream, prefetch) };
        return;
    }
    for_each_group!(BLOCK, src, dst, scales, plan, prefetch, |p| {
        if p.finite {
            round_group::<T, BLOCK, false>(src, dst, scales, p, stream)
        } else {
            round_group::<T, BLOCK, true>(src, dst, scales, p, stream)
        }
    });
}

/// [`round_groups`] for E2M1: the finite groups' codes by table
/// ([`e2m1_class16`], packed to bytes, then [`E2M1_BY_CLASS`] by `vpermi2b`),
/// 9 operations a vector where [`round16`] takes 13; the rest by
/// [`round_group`]. Same bits.
///
/// # Safety
/// AVX-512 F/BW/VL/VBMI, AVX2, FMA and F16C present.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
unsafe fn round_groups_e2m1<T: FloatElement, const BLOCK: usize>(
    src: &[f32],
    dst: &mut [u8],
    scales: &[f32],
    plan: &[GroupScales],
    stream: bool,
    prefetch: bool,
) {
    // SAFETY: each load reads 64 of the table's 128 bytes.
    let (lo, hi) = unsafe {
        (
            _mm512_loadu_si512(E2M1_BY_CLASS.as_ptr() as *const __m512i),
            _mm512_loadu_si512(E2M1_BY_CLASS[64..].as_ptr() as *const __m512i),
        )
    };
    let order = pack_order();
    for_each_group!(BLOCK, src, dst, scales, plan, prefetch, |p| {
        if !p.finite {
            round_group::<T, BLOCK, true>(src, dst, scales, p, stream);
            continue;
        }
        // A macro, not a closure: a closure would not inherit the target
        // features, so what it calls would not inline.
        macro_rules! class {
            ($i:expr) => {
                e2m1_class16(quotient16::<BLOCK>(src, $i, scales, p))
            };
        }
        for i in (0..8 * BLOCK).step_by(64) {
            // Classes are 0..=127, so the saturating packs keep them.
            let ab = _mm512_packus_epi32(class!(i), class!(i + 16));
            let cd = _mm512_packus_epi32(class!(i + 32), class!(i + 48));
            let codes = _mm512_permutex2var_epi8(lo, _mm512_packus_epi16(ab, cd), hi);
            let bytes = _mm512_permutexvar_epi32(order, codes);
            store_codes(&mut dst[i..i + 64], bytes, stream);
        }
    });
}

/// The codes of one group of eight blocks of `BLOCK` (16 or 32) values by
/// [`round16`]: `dst[i]` = the saturating round to nearest even of `src[i]`
/// times its block's reciprocal or divided by its scale (`scales`, `plan`); `NAN`
/// false when no value of the group is a NaN or ±∞ (see [`round16`]).
/// `src` and `dst` hold `8 · BLOCK` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn round_group<T: FloatElement, const BLOCK: usize, const NAN: bool>(
    src: &[f32],
    dst: &mut [u8],
    scales: &[f32],
    plan: &GroupScales,
    stream: bool,
) {
    // A constant per `T`, so the format's tests fold away.
    let Some(fmt) = crate::convert::format_of::<T>() else {
        return;
    };
    let sm = fmt.sign_magnitude();
    let order = pack_order();
    // A macro, not a closure (see `round_groups_e2m1`).
    macro_rules! code {
        ($i:expr) => {{
            let v = round16(quotient16::<BLOCK>(src, $i, scales, plan), sm, NAN);
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
        store_codes(&mut dst[i..i + 64], bytes, stream);
    }
}

/// Stores the 64 code bytes `bytes` to `dst` (64 bytes): with `stream`
/// (and `dst` 16-byte aligned, as every 64-byte step of a buffer from the
/// allocator is) as four non-temporal stores, which skip reading the lines
/// into cache first; the caller fences ([`super::store_fence`]) before
/// the buffer is handed back.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn store_codes(dst: &mut [u8], bytes: __m512i, stream: bool) {
    let dst = &mut dst[..64];
    if stream && (dst.as_ptr() as usize).is_multiple_of(16) {
        let p = dst.as_mut_ptr() as *mut __m128i;
        // SAFETY: `p` is 16-byte aligned (checked) and `dst` holds the
        // 4 · 16 bytes stored.
        unsafe {
            _mm_stream_si128(p, _mm512_castsi512_si128(bytes));
            _mm_stream_si128(p.add(1), _mm512_extracti32x4_epi32::<1>(bytes));
            _mm_stream_si128(p.add(2), _mm512_extracti32x4_epi32::<2>(bytes));
            _mm_stream_si128(p.add(3), _mm512_extracti32x4_epi32::<3>(bytes));
        }
    } else {
        dst.copy_from_slice(&bytes_of(bytes));
    }
}

/// The 64 bytes of `v`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn bytes_of(v: __m512i) -> [u8; 64] {
    let mut out = [0u8; 64];
    // SAFETY: `out` holds 64 bytes.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, v) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::format::{narrow_bits, Overflow, Rounding};
    use crate::F4E2M1;

    /// f32 bit patterns around every place the E2M1 rounding can change:
    /// each multiple of 2^19 in the bits (so every class's edges and the
    /// values between), one ulp either side, both signs, NaN and ±∞ left out.
    fn patterns() -> Vec<u32> {
        let mut v = Vec::new();
        for k in 0..(0x7F80_0000u32 >> 19) {
            for b in [(k << 19).wrapping_sub(1), k << 19, (k << 19) + 1] {
                if b < 0x7F80_0000 {
                    v.extend([b, b | 0x8000_0000]);
                }
            }
        }
        v
    }

    #[test]
    fn e2m1_classes_round_as_the_reference() {
        if !crate::cpu::has_avx512() {
            return;
        }
        let values = patterns();
        assert!(values.len() > 20_000);
        for chunk in values.chunks_exact(16) {
            // SAFETY: 16 lanes read from `chunk`, 16 written to `class`.
            let class = unsafe {
                let x = _mm512_loadu_si512(chunk.as_ptr() as *const __m512i);
                let mut class = [0u32; 16];
                _mm512_storeu_si512(class.as_mut_ptr() as *mut __m512i, e2m1_class16(x));
                class
            };
            for (&b, &c) in chunk.iter().zip(&class) {
                assert!(c < 128, "{b:#010x}: class {c}");
                let want = narrow_bits(
                    f32::from_bits(b),
                    Format::E2M1,
                    Rounding::NearestEven,
                    Overflow::Saturate,
                );
                assert_eq!(u32::from(E2M1_BY_CLASS[c as usize]), want, "{b:#010x}");
            }
        }
    }

    /// The table path (with VBMI) and `round16` give the same E2M1 codes,
    /// including the groups with NaN and ±∞ (which both send to `round16`).
    #[test]
    fn e2m1_table_and_round16_agree() {
        if !crate::cpu::has_avx512_vbmi() {
            return;
        }
        let mut src: Vec<f32> = patterns().into_iter().map(f32::from_bits).collect();
        src.truncate(src.len() / 128 * 128);
        src[5] = f32::NAN;
        src[300] = f32::NEG_INFINITY;
        let groups = src.len() / 128;
        let scales = [1.0, 0.75, 3.0, 1.0, 0.5, 1.5, 6.0, 1e-3].repeat(groups);
        let plan: Vec<GroupScales> = (0..groups)
            .map(|g| GroupScales {
                recips: [1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0],
                how: Quotients::Mixed,
                finite: !src[g * 128..][..128].iter().any(|v| !v.is_finite()),
            })
            .collect();
        assert!(!plan[0].finite && !plan[2].finite && plan[1].finite);
        let (mut by_table, mut by_round16) = (vec![0u8; src.len()], vec![0u8; src.len()]);
        // SAFETY: the CPU has AVX-512 F/BW/VL/VBMI (checked).
        unsafe {
            round_groups::<F4E2M1, 16>(&src, &mut by_table, &scales, &plan, true, false, true);
            round_groups::<F4E2M1, 16>(&src, &mut by_round16, &scales, &plan, false, true, false);
        }
        assert_eq!(by_table, by_round16);
    }
}

//! AVX2/F16C conversion kernels. Each returns exactly the bits of the scalar
//! reference (`dtype::format`); tails shorter than a vector go through it.
//!
//! Every function here requires AVX2, FMA and F16C; callers check
//! [`crate::cpu::has_avx2_fma_f16c`] first.

use super::{BlockAmax, LinePass};
use crate::block_scaled::ScaleRule;
use crate::convert::reference_impl::{narrow_bits_slice, widen_bits_slice};
use crate::dtype::format::{Format, Overflow};
use crate::dtype::FloatElement;
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
fn fp8_round8_of(x: __m256i, fmt: Format, overflow: Overflow, nan_possible: bool) -> __m256i {
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
fn sign_magnitude_to_twos8(v: __m256i, fmt: Format) -> __m256i {
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

/// The largest |x| bits of each block of `block` values of `src` (a
/// multiple of 8; NaN and ±∞ have the largest bits): an integer max.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn block_amax_bits(src: &[f32], block: usize, out: &mut [u32]) {
    let done = match block {
        16 => block_amax_groups8::<16>(src, out),
        32 => block_amax_groups8::<32>(src, out),
        _ => 0,
    };
    let rest = src.chunks_exact(block).zip(out.iter_mut()).skip(done);
    for (blk, o) in rest {
        *o = hmax_epu32(abs_max_lanes(blk));
    }
}

/// [`block_amax_bits`] for the whole groups of eight blocks of `BLOCK`
/// values (one transpose-and-max gives a group's eight maxima); returns the
/// number of blocks done.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_amax_groups8<const BLOCK: usize>(src: &[f32], out: &mut [u32]) -> usize {
    let groups = (src.len() / BLOCK).min(out.len()) / 8;
    for (g, o) in src
        .chunks_exact(8 * BLOCK)
        .zip(out.chunks_exact_mut(8))
        .take(groups)
    {
        // SAFETY: `o` holds 8 lanes.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, group_amax8::<BLOCK>(g)) };
    }
    groups * 8
}

/// The largest |x| bits of each of the eight blocks of `BLOCK` values in
/// `group` (`8 · BLOCK` values), lane j for block j: one transpose-and-max.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_amax8<const BLOCK: usize>(group: &[f32]) -> __m256i {
    let mut m = [_mm256_setzero_si256(); 8];
    for (mj, blk) in m.iter_mut().zip(group.chunks_exact(BLOCK)) {
        *mj = abs_max_lanes(blk);
    }
    hmax8_epu32(m)
}

/// Lane by lane, the largest |x| bits over the 8-value chunks of `blk`
/// (NaN and ±∞ largest; a tail shorter than 8 is left out).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn abs_max_lanes(blk: &[f32]) -> __m256i {
    let abs_mask = _mm256_set1_epi32(0x7FFF_FFFF);
    let mut m = _mm256_setzero_si256();
    for v in blk.chunks_exact(8) {
        // SAFETY: `v` holds 8 f32.
        let x = unsafe { _mm256_loadu_si256(v.as_ptr() as *const __m256i) };
        m = _mm256_max_epu32(m, _mm256_and_si256(x, abs_mask));
    }
    m
}

/// The largest (unsigned) lane of `m`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_epu32(m: __m256i) -> u32 {
    let m = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    _mm_cvtsi128_si32(m) as u32
}

/// One block: `dst[i]` = `src[i] · f` (`mul`) or `src[i] / f`, rounded to
/// `fmt` (nearest even, saturating). `src.len()` = `dst.len()` is 16 or a
/// multiple of 32. With `$stream` (and `dst` 16-byte aligned) the codes
/// go out by non-temporal stores; the caller fences ([`store_fence`]).
/// `$nan` false only if no quotient can be a NaN or ±∞ (see
/// [`fp8_round8_of`]). A macro so that it inlines into its callers' loops
/// (a `#[target_feature]` function cannot be `inline(always)`; closures do
/// not inherit the features).
macro_rules! narrow_block {
    ($src:expr, $dst:expr, $f:expr, $op:ident, $fmt:expr, $stream:expr, $nan:expr) => {{
        let (src, dst, fmt): (&[f32], &mut [u8], Format) = ($src, $dst, $fmt);
        let stream = $stream && (dst.as_ptr() as usize).is_multiple_of(16);
        let sm = fmt.sign_magnitude();
        let f = _mm256_set1_ps($f);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let n = src.len().min(dst.len());
        macro_rules! q {
            ($i:expr) => {{
                // SAFETY: the loops keep $i + 8 <= n <= src.len().
                let x = unsafe { _mm256_loadu_ps(src.as_ptr().add($i)) };
                let v = fp8_round8_of(_mm256_castps_si256($op(x, f)), sm, Overflow::Saturate, $nan);
                if fmt.twos_complement {
                    sign_magnitude_to_twos8(v, fmt)
                } else {
                    v
                }
            }};
        }
        let mut i = 0;
        while i + 32 <= n {
            let ab = _mm256_packus_epi32(q!(i), q!(i + 8));
            let cd = _mm256_packus_epi32(q!(i + 16), q!(i + 24));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
            // SAFETY: i + 32 <= n <= dst.len(); with `stream`, dst + i is
            // 16-byte aligned (dst is, and i steps by 32).
            unsafe {
                let p = dst.as_mut_ptr().add(i) as *mut __m128i;
                if stream {
                    _mm_stream_si128(p, _mm256_castsi256_si128(bytes));
                    _mm_stream_si128(p.add(1), _mm256_extracti128_si256::<1>(bytes));
                } else {
                    _mm256_storeu_si256(p as *mut __m256i, bytes)
                }
            };
            i += 32;
        }
        if i + 16 <= n {
            let ab = _mm256_packus_epi32(q!(i), q!(i + 8));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, ab), order);
            // SAFETY: i + 16 <= n <= dst.len().
            unsafe {
                _mm_storeu_si128(
                    dst.as_mut_ptr().add(i) as *mut __m128i,
                    _mm256_castsi256_si128(bytes),
                )
            };
        }
    }};
}

/// Per block `b` of `block` values: `dst` = `src · recips[b]` where given,
/// else `src / scales[b]`, rounded to `fmt` (nearest even, saturating): the
/// scalar quotients and `narrow_bits_slice` fused, same bits. `block` is 16
/// or a multiple of 32. `stream` as in [`narrow_block!`]. With
/// `amax_scales` each scale is a [`ScaleRule`]'s from an amax over values
/// that include the block's (see [`finite_by_scale`]).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn narrow_scaled_blocks(
    src: &[f32],
    block: usize,
    scales: &[f32],
    recips: &[Option<f32>],
    dst: &mut [u8],
    fmt: Format,
    stream: bool,
    amax_scales: bool,
) {
    for (((s, d), &scale), recip) in src
        .chunks_exact(block)
        .zip(dst.chunks_exact_mut(block))
        .zip(scales)
        .zip(recips)
    {
        macro_rules! by {
            ($nan:expr) => {
                match recip {
                    Some(r) => narrow_block!(s, d, *r, _mm256_mul_ps, fmt, stream, $nan),
                    None => narrow_block!(s, d, scale, _mm256_div_ps, fmt, stream, $nan),
                }
            };
        }
        if amax_scales && finite_by_scale(scale) {
            by!(false)
        } else {
            by!(true)
        }
    }
}

/// Whether a block whose scale is `scale`, found by a [`ScaleRule`] from
/// an amax over values that include the block's (its own, its 128 x 128
/// region's or the tensor's), holds no NaN or ±∞ and has no NaN or
/// ±∞ quotient: a NaN or ±∞ among the values makes the scale NaN, and a
/// finite positive scale is at least about amax / (the format's max), so
/// every |x / scale| stays near or below that max.
#[inline]
fn finite_by_scale(scale: f32) -> bool {
    scale.is_finite() && scale > 0.0
}

/// Lane j: the largest (unsigned) lane of `v[j]`: a transpose-and-max
/// tree, 21 operations for eight horizontal maxima.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax8_epu32(v: [__m256i; 8]) -> __m256i {
    macro_rules! pair {
        ($a:expr, $b:expr) => {
            _mm256_max_epu32(_mm256_unpacklo_epi32($a, $b), _mm256_unpackhi_epi32($a, $b))
        };
    }
    macro_rules! quad {
        ($a:expr, $b:expr) => {
            _mm256_max_epu32(_mm256_unpacklo_epi64($a, $b), _mm256_unpackhi_epi64($a, $b))
        };
    }
    // Per 128-bit half: [v0, v1, v2, v3] over that half's lanes.
    let lo = quad!(pair!(v[0], v[1]), pair!(v[2], v[3]));
    let hi = quad!(pair!(v[4], v[5]), pair!(v[6], v[7]));
    _mm256_max_epu32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// Eight blocks' scales by an MX or NVFP4 rule from their amax bits, as
/// [`ScaleRule::scale`] computes them: `(scales, reciprocals, codes)`, a
/// reciprocal 0 where the quotient needs a division (see
/// `convert::block_reciprocal`). `None` when a lane needs the scalar rule
/// (a NaN or ±∞ amax, a subnormal one, an MX exponent above 127) or the
/// rule is not one of these.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn rule_scales8(amax: __m256i, rule: &ScaleRule) -> Option<(__m256, __m256, __m256i)> {
    let set = |v: i32| _mm256_set1_epi32(v);
    match *rule {
        ScaleRule::Mx {
            emax,
            ceil,
            max_frac,
        } => {
            // An all-zero block's amax is taken as f32::MIN_POSITIVE.
            let v = _mm256_or_si256(
                amax,
                _mm256_and_si256(_mm256_cmpeq_epi32(amax, set(0)), set(0x0080_0000)),
            );
            let mut bad = _mm256_or_si256(
                _mm256_cmpgt_epi32(set(0x0080_0000), v),
                _mm256_cmpgt_epi32(v, set(0x7F7F_FFFF)),
            );
            let mut e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(v), set(127 + emax));
            if ceil {
                let above =
                    _mm256_cmpgt_epi32(_mm256_and_si256(v, set(0x007F_FFFF)), set(max_frac as i32));
                e = _mm256_sub_epi32(e, above);
            }
            let e = _mm256_max_epi32(e, set(-127));
            bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(e, set(127)));
            if _mm256_movemask_epi8(bad) != 0 {
                return None;
            }
            // 2^e (2^-127 is the subnormal 0x0040_0000).
            let scale = _mm256_blendv_epi8(
                _mm256_slli_epi32::<23>(_mm256_add_epi32(e, set(127))),
                set(0x0040_0000),
                _mm256_cmpeq_epi32(e, set(-127)),
            );
            // 2^-e where both are normal: e in -126..=126.
            let has_recip = _mm256_and_si256(
                _mm256_cmpgt_epi32(e, set(-127)),
                _mm256_cmpgt_epi32(set(127), e),
            );
            let recip = _mm256_and_si256(
                has_recip,
                _mm256_slli_epi32::<23>(_mm256_sub_epi32(set(127), e)),
            );
            Some((
                _mm256_castsi256_ps(scale),
                _mm256_castsi256_ps(recip),
                _mm256_setzero_si256(),
            ))
        }
        ScaleRule::Nvfp4 { tensor_scale } => {
            let mut bad = _mm256_cmpgt_epi32(amax, set(0x7F7F_FFFF));
            let mut raw = _mm256_div_ps(_mm256_castsi256_ps(amax), _mm256_set1_ps(6.0));
            if let Some(s) = tensor_scale {
                raw = _mm256_div_ps(raw, _mm256_set1_ps(s));
            }
            bad = _mm256_or_si256(
                bad,
                _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(raw, raw)),
            );
            if _mm256_movemask_epi8(bad) != 0 {
                return None;
            }
            // E4M3 of raw clamped to [2^-9, 448].
            let clamped = _mm256_min_ps(
                _mm256_max_ps(raw, _mm256_set1_ps(f32::from_bits(0x3B00_0000))),
                _mm256_set1_ps(448.0),
            );
            let code = fp8_round8_of(
                _mm256_castps_si256(clamped),
                Format::E4M3,
                Overflow::Saturate,
                false,
            );
            // Its value: (e = 0 ? m : 8 + m) · 2^(max(e, 1) − 10), exact.
            let e = _mm256_srli_epi32::<3>(code);
            let sig = _mm256_add_epi32(
                _mm256_and_si256(code, set(7)),
                _mm256_and_si256(_mm256_cmpgt_epi32(e, set(0)), set(8)),
            );
            let pow =
                _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_max_epi32(e, set(1)), set(117)));
            let mut scale = _mm256_mul_ps(_mm256_cvtepi32_ps(sig), _mm256_castsi256_ps(pow));
            if let Some(s) = tensor_scale {
                scale = _mm256_mul_ps(_mm256_set1_ps(s), scale);
            }
            Some((scale, _mm256_setzero_ps(), code))
        }
        ScaleRule::Fp8 { .. } => None,
    }
}

/// One pass over a line: per block of `block` values, its largest |x| bits
/// (NaN and ±∞ largest; from `scales` when `pass.amax` says they are there), its
/// scale and code by `rule` into `scales` and `codes` (when not empty), and
/// its quotients rounded to `fmt` as [`narrow_scaled_blocks`]. The block is
/// still in L1 when it is rounded. Blocks of 16 and 32 go eight at a time,
/// their MX and NVFP4 scales computed in SIMD ([`rule_scales8`]); the rest
/// one at a time by [`ScaleRule::scale`]. With `pass.stream` the AVX-512
/// tier stores the codes non-temporally (the caller then fences, see
/// [`store_fence`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_blocks<T: FloatElement>(
    src: &[f32],
    block: usize,
    scales: &mut [f32],
    codes: &mut [u8],
    dst: &mut [u8],
    rule: &ScaleRule,
    pass: LinePass,
) {
    // A constant per `T`, so the rounding's format tests fold away.
    let Some(fmt) = super::format_of::<T>() else {
        return;
    };
    let done = match block {
        // SAFETY: the caller's CPU has AVX2, FMA and F16C.
        16 => unsafe { quantize_groups8::<T, 16>(src, scales, codes, dst, rule, pass) },
        // SAFETY: as above.
        32 => unsafe { quantize_groups8::<T, 32>(src, scales, codes, dst, rule, pass) },
        _ => 0,
    };
    for (b, (s, d)) in src
        .chunks_exact(block)
        .zip(dst.chunks_exact_mut(block))
        .enumerate()
        .skip(done)
    {
        let bits = match (pass.amax, scales.get(b)) {
            (BlockAmax::InScales, Some(given)) => given.to_bits(),
            _ => hmax_epu32(abs_max_lanes(s)),
        };
        let (scale, code) = rule.scale(bits);
        if let Some(c) = codes.get_mut(b) {
            *c = code;
        }
        if let Some(sc) = scales.get_mut(b) {
            *sc = scale;
        }
        // Plain stores: streaming these blocks of 128 (scaled FP8 by lines)
        // was slower, 6/6 in-process A/B runs (6.4-6.7 vs 6.9-7.2 ms per
        // 16M).
        macro_rules! by {
            ($nan:expr) => {
                match super::block_reciprocal(scale) {
                    Some(r) => narrow_block!(s, d, r, _mm256_mul_ps, fmt, false, $nan),
                    None => narrow_block!(s, d, scale, _mm256_div_ps, fmt, false, $nan),
                }
            };
        }
        if finite_by_scale(scale) {
            by!(false)
        } else {
            by!(true)
        }
    }
}

/// Source values per chunk of [`quantize_groups8`] (8 KiB): a chunk's
/// scales are all found before any of its values is rounded, and the
/// rounding prefetches the next chunk, so two chunks share L1.
const CHUNK_VALUES: usize = 2048;

/// The most groups of eight blocks in a chunk (blocks of 16).
const CHUNK_GROUPS: usize = CHUNK_VALUES / (8 * 16);

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

/// One group's plan for its rounding, beside its eight blocks' scales (in
/// the output's scales): their reciprocals (0: divide by the scale), how
/// the quotients are formed, and whether no value of the group is a NaN or
/// ±∞ (and no scale is 0).
#[derive(Clone, Copy)]
pub(crate) struct GroupScales {
    pub(crate) recips: [f32; 8],
    pub(crate) how: Quotients,
    pub(crate) finite: bool,
}

/// How a group's quotients are formed: every block by its reciprocal, every
/// block by a division, or each block as its reciprocal says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quotients {
    Multiply,
    Divide,
    Mixed,
}

/// `how` from a group's reciprocals (lanes of `recip`, 0 where a block
/// divides).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn quotients_of(recip: __m256) -> Quotients {
    match _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(recip, _mm256_setzero_ps())) {
        0 => Quotients::Multiply,
        0xFF => Quotients::Divide,
        _ => Quotients::Mixed,
    }
}

/// The low byte of each lane of `v` (values 0..=255), in lane order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn low_bytes8(v: __m256i) -> [u8; 8] {
    let zero = _mm256_setzero_si256();
    // Bytes 0..4 of each 128-bit half: lanes 0..4 and 4..8.
    let b = _mm256_packus_epi16(_mm256_packus_epi32(v, zero), zero);
    let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(b)) as u32;
    let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(b)) as u32;
    (u64::from(lo) | u64::from(hi) << 32).to_le_bytes()
}

/// One group's scales and codes from its amax bits `$amax` by `$rule`,
/// into `$scales` and `$codes` (8 each; `$codes` may be empty), and its
/// [`GroupScales`] into `$plan`: in SIMD where [`rule_scales8`]
/// can, else by [`group_scales_scalar`]. A macro so that it inlines into
/// the chunk loop (see `narrow_block`).
macro_rules! group_scales {
    ($amax:expr, $rule:expr, $scales:expr, $codes:expr, $plan:expr) => {{
        let (amax, rule, scales, codes, plan): (
            __m256i,
            &ScaleRule,
            &mut [f32],
            &mut [u8],
            &mut GroupScales,
        ) = ($amax, $rule, $scales, $codes, $plan);
        match rule_scales8(amax, rule) {
            Some((scale, recip, code)) => {
                let scales = &mut scales[..8];
                // SAFETY: each destination holds 8 lanes.
                unsafe {
                    _mm256_storeu_ps(plan.recips.as_mut_ptr(), recip);
                    _mm256_storeu_ps(scales.as_mut_ptr(), scale);
                }
                plan.how = quotients_of(recip);
                // A scale that underflowed to 0 (NVFP4 with a tiny tensor
                // scale) would make 0/0 a NaN quotient.
                plan.finite =
                    _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(scale, _mm256_setzero_ps()))
                        == 0;
                if let Some(c) = codes.get_mut(..8) {
                    c.copy_from_slice(&low_bytes8(code));
                }
            }
            None => group_scales_scalar(amax, rule, scales, codes, plan),
        }
    }};
}

/// [`group_scales!`] where [`rule_scales8`] declines (a NaN or ±∞ in the
/// group, a subnormal amax, an MX exponent out of range): each block by
/// [`ScaleRule::scale`]; the group is not marked finite.
#[cold]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_scales_scalar(
    amax: __m256i,
    rule: &ScaleRule,
    scales: &mut [f32],
    codes: &mut [u8],
    plan: &mut GroupScales,
) {
    let mut bits = [0u32; 8];
    // SAFETY: `bits` holds 8 lanes.
    unsafe { _mm256_storeu_si256(bits.as_mut_ptr() as *mut __m256i, amax) };
    for (j, &b) in bits.iter().enumerate() {
        let (s, c) = rule.scale(b);
        scales[j] = s;
        plan.recips[j] = super::block_reciprocal(s).unwrap_or(0.0);
        if let Some(cj) = codes.get_mut(j) {
            *cj = c;
        }
    }
    // SAFETY: `recips` holds 8 lanes.
    plan.how = quotients_of(unsafe { _mm256_loadu_ps(plan.recips.as_ptr()) });
    plan.finite = false;
}

/// [`quantize_blocks`] for the whole groups of eight blocks of `BLOCK`
/// (16 or 32) values; returns the number of blocks done. A chunk of
/// [`CHUNK_VALUES`] values at a time: first all their scales, then all their
/// codes, so no group's rounding waits on its own scales' divisions.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_groups8<T: FloatElement, const BLOCK: usize>(
    src: &[f32],
    scales: &mut [f32],
    codes: &mut [u8],
    dst: &mut [u8],
    rule: &ScaleRule,
    pass: LinePass,
) -> usize {
    let Some(fmt) = super::format_of::<T>() else {
        return 0;
    };
    if matches!(rule, ScaleRule::Fp8 { .. }) {
        return 0;
    }
    let groups = (src.len() / BLOCK).min(dst.len() / BLOCK).min(scales.len()) / 8;
    // The AVX-512 rounding loop where the CPU has it (asked once, not per group).
    let zmm = crate::cpu::has_avx512();
    let vbmi = zmm && crate::cpu::has_avx512_vbmi();
    let mut plan = [GroupScales {
        recips: [0.0; 8],
        how: Quotients::Mixed,
        finite: false,
    }; CHUNK_GROUPS];
    let mut amax = [_mm256_setzero_si256(); CHUNK_GROUPS];
    let chunk_groups = CHUNK_VALUES / (8 * BLOCK);
    for first in (0..groups).step_by(chunk_groups) {
        let chunk = chunk_groups.min(groups - first);
        // The groups' amax bits first (loads and maxima only), then their
        // scales: each group's chain of divisions no longer holds up the
        // next group's loads.
        for (c, a) in amax.iter_mut().take(chunk).enumerate() {
            let g = first + c;
            if pass.amax == BlockAmax::InScales {
                // SAFETY: scales[g · 8..][..8] is in bounds (g < groups).
                *a = unsafe { _mm256_loadu_si256(scales[g * 8..][..8].as_ptr() as *const __m256i) };
                continue;
            }
            *a = group_amax8::<BLOCK>(&src[g * 8 * BLOCK..][..8 * BLOCK]);
        }
        for (c, (p, &a)) in plan.iter_mut().zip(&amax).take(chunk).enumerate() {
            let g = first + c;
            let codes = codes.get_mut(g * 8..g * 8 + 8).unwrap_or_default();
            group_scales!(a, rule, &mut scales[g * 8..], codes, p);
        }
        if zmm {
            let span = first * 8 * BLOCK..(first + chunk) * 8 * BLOCK;
            // SAFETY: the CPU has AVX-512 F/BW/VL (checked) besides AVX2,
            // FMA and F16C; the spans hold the chunk's groups.
            unsafe {
                super::x86_avx512::round_groups::<T, BLOCK>(
                    &src[span.clone()],
                    &mut dst[span],
                    &scales[first * 8..(first + chunk) * 8],
                    &plan[..chunk],
                    vbmi,
                    pass.stream,
                    // Prefetching helps when the scale stage reads the
                    // source first; with the amaxes given, the rounding is
                    // the first touch and the hardware's stream alone does
                    // better (in-process A/B, three runs: 0.5 ms of 8.2-9.3).
                    pass.amax == BlockAmax::FromSource,
                )
            };
            continue;
        }
        for (c, p) in plan[..chunk].iter().enumerate() {
            let g = first + c;
            let (src, dst) = (
                &src[g * 8 * BLOCK..][..8 * BLOCK],
                &mut dst[g * 8 * BLOCK..][..8 * BLOCK],
            );
            let (sc, rc, finite) = (&scales[g * 8..][..8], &p.recips, p.finite);
            // This group's place in the next chunk, fetched while this
            // chunk is rounded.
            prefetch_lines(src, CHUNK_VALUES);
            // 32 values at a time (two blocks of 16, or one of 32), each
            // vector by its block's reciprocal or scale, packed to one store.
            let sm = fmt.sign_magnitude();
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            macro_rules! q {
                ($i:expr, $nan_possible:expr) => {{
                    let j = $i / BLOCK;
                    // SAFETY: $i + 8 <= 8 · BLOCK = src.len().
                    let x = unsafe { _mm256_loadu_ps(src.as_ptr().add($i)) };
                    let quot = if rc[j] != 0.0 {
                        _mm256_mul_ps(x, _mm256_set1_ps(rc[j]))
                    } else {
                        _mm256_div_ps(x, _mm256_set1_ps(sc[j]))
                    };
                    let v = fp8_round8_of(
                        _mm256_castps_si256(quot),
                        sm,
                        Overflow::Saturate,
                        $nan_possible,
                    );
                    if fmt.twos_complement {
                        sign_magnitude_to_twos8(v, fmt)
                    } else {
                        v
                    }
                }};
            }
            macro_rules! round_group {
                ($nan_possible:expr) => {
                    for i in (0..8 * BLOCK).step_by(32) {
                        let ab =
                            _mm256_packus_epi32(q!(i, $nan_possible), q!(i + 8, $nan_possible));
                        let cd = _mm256_packus_epi32(
                            q!(i + 16, $nan_possible),
                            q!(i + 24, $nan_possible),
                        );
                        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
                        // SAFETY: i + 32 <= 8 · BLOCK = dst.len().
                        unsafe {
                            _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, bytes)
                        };
                    }
                };
            }
            if finite {
                round_group!(false);
            } else {
                round_group!(true);
            }
        }
    }
    groups * 8
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

//! The block quantizer's AVX2 kernels: block maxima, scale rules eight
//! blocks at a time, and the chunked rounding of a line (its zmm form in
//! [`super::x86_avx512`]). Each returns exactly the bits of the scalar
//! path in [`super::super::quantize`].
//!
//! Every function here requires AVX2, FMA and F16C; callers check
//! [`crate::cpu::has_avx2_fma_f16c`] first.

use super::super::quantize::{BlockAmax, LinePass};
use super::super::scale::ScaleRule;
use crate::convert::x86_avx2::{fp8_round8_of, sign_magnitude_to_twos8};
use crate::dtype::format::{Format, Overflow};
use crate::dtype::FloatElement;
use crate::simd::x86_64::prefetch_lines;
use std::arch::x86_64::*;

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
    let Some(fmt) = crate::convert::format_of::<T>() else {
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
                match super::super::quantize::block_reciprocal(scale) {
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
        plan.recips[j] = super::super::quantize::block_reciprocal(s).unwrap_or(0.0);
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
    let Some(fmt) = crate::convert::format_of::<T>() else {
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

//! The AVX-512 kernel of [`Kernel::fp4_dense`](super::Kernel::fp4_dense):
//! FP4 (and group-wise int4) weights packed by
//! [`crate::block_scaled::PackedFp4`] against rows of f32 activations, two
//! groups of 8 packed lines (16 outputs) per zmm register. The packed
//! layout is the AVX2 kernel's ([`super::x86_fp4_dense`]): the two groups'
//! 32-byte runs are read from their own places and joined in a register.
//!
//! Each zmm lane is one line's chain, exactly as in the AVX2 kernel: one
//! FMA per value of k, k increasing, from +0.0 per block, then
//! `out = fma(p, fl(sa · sb), out)` per block; so the bits are its bits.
//! What changes is the decoding: table lookups (one `vpermps` per value,
//! or at up to 3 rows one `vpermw` per two values, as bf16 bits) instead
//! of a byte shuffle and a convert. On Zen 4, MXFP4 at M = 1,
//! K = N = 4096: 0.65 ms against the AVX2 kernel's 0.71–0.73 ms with one
//! lookup per value; 0.568 against 0.609 ms with pairs (int4 0.686
//! against 0.759). The FP8 kernel of this tier is
//! [`super::x86_avx512_fp8_dense`] where the CPU has VBMI and GFNI, else
//! AVX2's: the f16 decoding on zmm registers (two groups joined,
//! `vcvtph2ps` on 16 values) measured 5–10 % slower on Zen 4.
//!
//! A call takes up to [`DENSE_ROWS_WIDE`] (8) rows, twice the AVX2
//! kernel's, so each code is decoded once for 8 rows; the per-block sums
//! then live in the outputs (loaded and stored once per block), leaving
//! the registers to the 16 chains. On the Intel Xeon (Sapphire Rapids
//! class), MXFP4 at K = N = 4096: M = 8 / 32 2.59 / 10.30 → 2.22 / 8.77 ms.
//!
//! Where the rows come in panels ([`Fp4DenseRows::panels`], from 16 rows
//! of A on), a call takes 16 rows on one pair of groups: each code decoded
//! once for 16 rows, and every row's value of A read through two panel
//! pointers (16 row pointers spilled: 40 % slower). Same Xeon, M = 32:
//! MXFP4 8.72 → 8.26–8.39 ms, int4 9.17 → 8.60.

use super::x86_fp4_dense::{fp4_dense_checked, DenseGroups};
use super::{
    Fp4DenseRows, GroupScales, DENSE_ROWS_WIDE, FP4_DENSE_MR, FP4_DENSE_ROWS_WIDE, FP4_TIMES_2,
    INT4_TIMES_2,
};
use std::arch::x86_64::*;

/// Two 256-bit runs (`lo` at bits 0..256, `hi` at 256..512) as one zmm.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// 16 scales of a block: 8 of the first group, 8 of the second, as f32
/// (f32 values, E8M0 codes, or E4M3 codes times the tensor scale).
///
/// # Safety
/// AVX-512 F/BW present; 8 values at `first` and at `first + stride` (in
/// the scales' element type).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn block_scales16(at: &DenseGroups, first: usize, stride: usize) -> __m512 {
    // SAFETY (the loads): 8 values at both places (the caller's contract).
    unsafe {
        if at.e8m0.is_null() {
            let lo = _mm256_loadu_ps(at.scales.add(first));
            let hi = _mm256_loadu_ps(at.scales.add(first + stride));
            return _mm512_castsi512_ps(join(_mm256_castps_si256(lo), _mm256_castps_si256(hi)));
        }
        let p = at.e8m0.add(first);
        let c = _mm_unpacklo_epi64(
            _mm_loadl_epi64(p as *const __m128i),
            _mm_loadl_epi64(p.add(stride) as *const __m128i),
        );
        if let Some(t) = at.e4m3_times {
            return e4m3_times16(c, t);
        }
        // E8M0 codes in 1..=254: 2^(c − 127), the code in the exponent field.
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_cvtepu8_epi32(c)))
    }
}

/// Each of the `R` rows' scale of block `blk` of `blocks` times `sb`:
/// `fl(sa · sb)`, or `sb` itself where the rows have no block scales
/// (`fl(1 · sb)` is `sb`, NaN included), for both AVX-512 dense kernels.
/// An array filled before the accumulates: a branch inside their per-row
/// loop made LLVM keep the chains in memory (2× slower).
///
/// # Safety
/// `rows.sa` holds `R` rows of `blocks` scales; `blk < blocks`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn row_scales16<const R: usize>(
    rows: &Fp4DenseRows<'_>,
    (blk, blocks): (usize, usize),
    sb: __m512,
) -> [__m512; R] {
    let mut scales = [sb; R];
    if !rows.unit_scales {
        for (r, scale) in scales.iter_mut().enumerate() {
            // SAFETY: r < R rows, blk < blocks (the caller's contract).
            let sa = unsafe { *rows.sa.as_ptr().add(r * blocks + blk) };
            *scale = _mm512_mul_ps(_mm512_set1_ps(sa), sb);
        }
    }
    scales
}

/// 16 E4M3 codes (the bytes of `codes`) times `t`, each lane
/// [`crate::block_scaled::e4m3_scale`]'s value bit for bit: through f16
/// ([`e4m3_times16_by_f16`]) where `t · 2^8` is finite (always, where
/// any block scale code of 256 or more keeps `code · t` finite); otherwise
/// by its own steps: a normal code's magnitude moved into place and rebiased by an
/// integer add; codes with exponent field 0 as `m · 2^-9` (exact, a
/// masked move); NaN (magnitude 0x7F) as 0x7FF00000; then the sign, and
/// the product with `t`. No operand is a subnormal f32 (a microcode assist
/// on Intel cores). About 13 operations for 16 scales, no branch (a test
/// for exponent-0 codes cost NVFP4 28 % at M = 1 inside the kernel's
/// loop); the two 8-lane AVX2 decodes took 25.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn e4m3_times16(codes: __m128i, t: f32) -> __m512 {
    let t_times_256 = t * 256.0;
    if t_times_256.is_finite() {
        return e4m3_times16_by_f16(codes, t_times_256);
    }
    let c = _mm512_cvtepu8_epi32(codes);
    let mag = _mm512_and_si512(c, _mm512_set1_epi32(0x7F));
    let mut bits = _mm512_add_epi32(_mm512_slli_epi32::<20>(mag), _mm512_set1_epi32(120 << 23));
    let exponent_zero = _mm512_cmplt_epu32_mask(mag, _mm512_set1_epi32(8));
    let small = _mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(2f32.powi(-9)));
    bits = _mm512_mask_mov_epi32(bits, exponent_zero, _mm512_castps_si512(small));
    let nan = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F));
    let bits = _mm512_mask_mov_epi32(bits, nan, _mm512_set1_epi32(0x7FF0_0000));
    let sign = _mm512_and_si512(_mm512_slli_epi32::<24>(c), _mm512_set1_epi32(i32::MIN));
    _mm512_mul_ps(
        _mm512_castsi512_ps(_mm512_or_si512(bits, sign)),
        _mm512_set1_ps(t),
    )
}

/// [`e4m3_times16`] where `t · 2^8` is finite (`t_times_256`): each code
/// read as an f16 of its value times 2^-8 (the code in the top byte of a
/// 16-bit lane, shifted right by one with its sign: the E4M3 exponent and
/// mantissa land in the f16's, subnormal codes on f16 subnormals, all
/// exact; bit 14, a copy of the sign, then set for the NaN codes only, an
/// f16 NaN of the payload `e4m3_scale` gives), widened by `vcvtph2ps` and
/// multiplied by `t · 2^8`: one rounding of the same product, so the same
/// bits, in 10 operations for 16 scales where the integer steps take 14
/// (AMD EPYC, Zen 4, NVFP4 at M = 1, K = N = 4096: see the module docs).
/// Neither factor is a subnormal f32 where `t` is not.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn e4m3_times16_by_f16(codes: __m128i, t_times_256: f32) -> __m512 {
    let words = _mm256_cvtepu8_epi16(codes);
    let shifted = _mm256_srai_epi16::<1>(_mm256_slli_epi16::<8>(words));
    // All ones in the lanes of codes 0x7F and 0xFF.
    let nan = _mm256_cmpeq_epi16(
        _mm256_or_si256(words, _mm256_set1_epi16(0x80)),
        _mm256_set1_epi16(0xFF),
    );
    let bit14 = _mm256_set1_epi16(0x4000);
    let half_bits = _mm256_or_si256(
        _mm256_andnot_si256(bit14, shifted),
        _mm256_and_si256(nan, bit14),
    );
    _mm512_mul_ps(_mm512_cvtph_ps(half_bits), _mm512_set1_ps(t_times_256))
}

/// [`Kernel::e4m3_scales`](super::Kernel::e4m3_scales) of the AVX-512
/// tier: 16 codes per [`e4m3_times16`], the rest one by one.
///
/// # Panics
/// If `out` and `codes` differ in length (a crate bug).
pub(crate) fn e4m3_scales_avx512(codes: &[u8], t: f32, out: &mut [f32]) {
    assert_eq!(codes.len(), out.len());
    // SAFETY: the driver selects the AVX-512 tier only when the CPU has
    // AVX-512 F/BW.
    unsafe { e4m3_scales_body(codes, t, out) }
}

/// The loop of [`e4m3_scales_avx512`], compiled with the features (so
/// that the intrinsics are inlined).
///
/// # Safety
/// AVX-512 F/BW present.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn e4m3_scales_body(codes: &[u8], t: f32, out: &mut [f32]) {
    let mut code_chunks = codes.chunks_exact(16);
    let mut out_chunks = out.chunks_exact_mut(16);
    for (c, o) in (&mut code_chunks).zip(&mut out_chunks) {
        // SAFETY: 16 bytes in and 16 floats out.
        unsafe {
            let v = e4m3_times16(_mm_loadu_si128(c.as_ptr() as *const __m128i), t);
            _mm512_storeu_ps(o.as_mut_ptr(), v);
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

/// Rows of A up to which [`fp4_dense_avx512`] decodes two values per table
/// lookup (`vpermw` to bf16 pairs), past which one per lookup (`vpermps`):
/// AMD EPYC, Zen 4, K = N = 4096, ms, one lookup against pairs: MXFP4
/// M = 1 / 2 / 3 / 4 / 8 0.609 / 0.975 / 1.094 / 1.274 / 2.41 against
/// 0.568 / 0.943 / 1.099 / 1.33 / 2.50 (with eight rows and more each
/// value feeds enough FMAs that decoding is not the bound).
const PAIR_LOOKUP_ROWS: usize = 3;

/// [`Kernel::fp4_dense`](super::Kernel::fp4_dense) for `R` rows and `P`
/// pairs of groups (16 lines per pair, `R · P` chains side by side).
///
/// Decoding is by table lookup: lane `j` of a 64-byte load holds line
/// `j`'s 8 codes of k0..k0 + 8 (value k0 + i in byte i % 4, nibble i / 4).
/// Past [`PAIR_LOOKUP_ROWS`] rows, one lookup per value: `vpermps` reads
/// only the low 4 bits of each lane's index, so the lane shifted right to
/// the value's nibble indexes a 16-entry table of f32 weights directly.
/// Up to it, one lookup per two values: a 16-bit shift puts a nibble at
/// the bottom of each half of the lane (values i and i + 2), and `vpermw`
/// reads 5 bits of each half's index from a 32-entry table of the
/// weights' bf16 bits (exact); the low half shifted up and the high half
/// masked are the two f32 weights. That halves the lookups where decoding
/// is the bound (one row: 16 weights per FMA chain step), for two more
/// simple integer operations per two values. The table holds w (or
/// 2·w · 2^24 when `PRESCALED`: the rows then hold a · 2^-25), exact
/// either way; with `ZP` it holds q (or 2·q · 2^24) and each block's z
/// (or 2·z · 2^24) is subtracted, exactly (small integers times a power
/// of two). The pair lookups subtract z from the index instead (an
/// integer operation; q − z in −15..=15 indexes the table as 5-bit two's
/// complement), so their `ZP` table holds every q − z.
///
/// # Safety
/// AVX-512 F/BW, AVX2 and FMA present; as
/// [`super::x86_fp4_dense::fp4_dense_avx2`] for `2P` groups.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn fp4_dense_avx512<
    const R: usize,
    const P: usize,
    const PRESCALED: bool,
    const ZP: bool,
>(
    rows: &Fp4DenseRows<'_>,
    at: DenseGroups,
) {
    let twice = if ZP { INT4_TIMES_2 } else { FP4_TIMES_2 };
    // 2·w times 2^24 (prescaled rows) or times 1/2: exact.
    let factor = if PRESCALED { (1u32 << 24) as f32 } else { 0.5 };
    let entry = |c: usize| f32::from(twice[c]) * factor;
    let entries: [f32; 16] = std::array::from_fn(entry);
    // SAFETY: 16 floats.
    let table = unsafe { _mm512_loadu_ps(entries.as_ptr()) };
    // The pair lookups' table: bf16 bits (exact: at most 4 significant
    // bits times a power of two) of 32 entries, as `vpermw` reads 5 index
    // bits. FP4: the 16 entries twice (the fifth bit is the next
    // nibble's). Int4: q − z in 5-bit two's complement, −16..=15, so that
    // the zero point is subtracted from the index, an integer operation.
    let pair_entry = |i: usize| {
        let value = if ZP {
            (i as f32 - if i < 16 { 0.0 } else { 32.0 }) * 2.0 * factor
        } else {
            entry(i % 16)
        };
        (value.to_bits() >> 16) as u16
    };
    let pair_entries: [u16; 32] = std::array::from_fn(pair_entry);
    // SAFETY: 64 bytes.
    let pair_table = unsafe { _mm512_loadu_si512(pair_entries.as_ptr() as *const _) };
    let high_halves = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let nibbles = _mm512_set1_epi16(0xF);
    let (k, block) = (rows.k, rows.block);
    let blocks = k / block;
    let a = rows.a.as_ptr();
    let panels = rows.panels.as_ptr();
    let group = |pair: usize, half: usize| 2 * pair + half;
    // SAFETY (all reads and writes): k0 + 8 ≤ blocks · block = rows.k,
    // whose codes (32 bytes per 8 values and group), A values (R rows),
    // scales, zero points and outputs the caller guarantees for 2P groups.
    unsafe {
        // Past 8 chains the per-block sums `acc` live in the outputs, not
        // in registers: they change once per block, and the registers go
        // to the `R · P` chains of `p` (16 at 8 rows and 2 pairs).
        let in_outputs = R * P > 8;
        let out_at = |r: usize, q: usize| at.out.add(r * at.out_stride + q * 16);
        let mut acc = [[_mm512_setzero_ps(); R]; P];
        if in_outputs {
            for q in 0..P {
                for r in 0..R {
                    _mm512_storeu_ps(out_at(r, q), _mm512_setzero_ps());
                }
            }
        }
        for blk in 0..blocks {
            let mut p = [[_mm512_setzero_ps(); R]; P];
            // Each line's zero point as the table holds it (only with
            // `ZP`), and as an integer in both 16-bit halves of its lane
            // (for the pair lookups).
            let mut zt = [_mm512_setzero_ps(); P];
            let mut z16 = [_mm512_setzero_si512(); P];
            if ZP {
                for q in 0..P {
                    let first = at.zeros.add(group(q, 0) * at.scale_stride + blk * 8);
                    let second = first.add(at.scale_stride);
                    let zb = _mm_unpacklo_epi64(
                        _mm_loadl_epi64(first as *const __m128i),
                        _mm_loadl_epi64(second as *const __m128i),
                    );
                    let z = _mm512_cvtepu8_epi32(zb);
                    zt[q] = _mm512_mul_ps(_mm512_cvtepi32_ps(z), _mm512_set1_ps(2.0 * factor));
                    z16[q] = _mm512_or_si512(z, _mm512_slli_epi32::<16>(z));
                }
            }
            for k0 in (blk * block..(blk + 1) * block).step_by(8) {
                let mut v = [_mm512_setzero_si512(); P];
                for (q, v) in v.iter_mut().enumerate() {
                    let run = |half: usize| {
                        let g = group(q, half);
                        _mm256_loadu_si256(at.codes.add(g * at.code_stride + k0 * 4) as *const _)
                    };
                    // Lane j: bytes 4j..4j + 4 of its group's run, low
                    // nibbles k0..k0 + 4, high nibbles k0 + 4..k0 + 8.
                    *v = join(run(0), run(1));
                }
                // Value k0 + i: byte i % 4, nibble i / 4 of it.
                let mut w = [[_mm512_setzero_ps(); 8]; P];
                // Value `$i`, nibble at bit `$shift` of each lane, by one
                // `vpermps` (which reads the lane's low 4 bits).
                macro_rules! lookup {
                    ($shift:literal, $i:literal) => {
                        for q in 0..P {
                            let index = _mm512_srli_epi32::<$shift>(v[q]);
                            let w_i = _mm512_permutexvar_ps(index, table);
                            w[q][$i] = if ZP { _mm512_sub_ps(w_i, zt[q]) } else { w_i };
                        }
                    };
                }
                // Values `$low` and `$high`, nibbles at bit `$shift` of each
                // lane's low and high 16-bit halves, by one `vpermw`
                // (their bf16 bits, each half's own index); the weights
                // are the low half shifted up and the high half masked.
                macro_rules! lookup_pair {
                    ($shift:literal, $low:literal, $high:literal) => {
                        for q in 0..P {
                            let mut index = _mm512_srli_epi16::<$shift>(v[q]);
                            if ZP {
                                index = _mm512_sub_epi16(_mm512_and_si512(index, nibbles), z16[q]);
                            }
                            let both = _mm512_permutexvar_epi16(index, pair_table);
                            w[q][$low] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(both));
                            w[q][$high] = _mm512_castsi512_ps(_mm512_and_si512(both, high_halves));
                        }
                    };
                }
                // The FMAs of values `$i`, in the order given.
                macro_rules! values {
                    ($($i:literal),*) => {$(
                        for q in 0..P {
                            for (r, s) in p[q].iter_mut().enumerate() {
                                let x = _mm512_set1_ps(if R > DENSE_ROWS_WIDE {
                                    // Panel r / 8 starts at 8 · k · (r / 8).
                                    *panels.add(8 * k * (r / 8) + (k0 + $i) * 8 + r % 8)
                                } else {
                                    *a.add(r * k + k0 + $i)
                                });
                                *s = _mm512_fmadd_ps(x, w[q][$i], *s);
                            }
                        }
                    )*};
                }
                if R <= PAIR_LOOKUP_ROWS {
                    lookup_pair!(0, 0, 2);
                    lookup_pair!(8, 1, 3);
                    values!(0, 1, 2, 3);
                    lookup_pair!(4, 4, 6);
                    lookup_pair!(12, 5, 7);
                    values!(4, 5, 6, 7);
                } else {
                    // Each value's lookup just before its FMAs, written out
                    // with immediate shifts: as a loop, LLVM kept it rolled
                    // for int4 (the shift count in a general register, a
                    // two-µop `vpsrld` by xmm, and the count's integer
                    // arithmetic on the vector ports), 20 % slower at M = 8.
                    macro_rules! lookups_then_values {
                        ($(($shift:literal, $i:literal)),*) => {$(
                            lookup!($shift, $i);
                            values!($i);
                        )*};
                    }
                    lookups_then_values!(
                        (0, 0),
                        (8, 1),
                        (16, 2),
                        (24, 3),
                        (4, 4),
                        (12, 5),
                        (20, 6),
                        (28, 7)
                    );
                }
            }
            for (q, p_q) in p.iter().enumerate() {
                let sb = block_scales16(
                    &at,
                    group(q, 0) * at.scale_stride + blk * 8,
                    at.scale_stride,
                );
                let scales = row_scales16::<R>(rows, (blk, blocks), sb);
                for (r, s) in p_q.iter().enumerate() {
                    let scale = scales[r];
                    if in_outputs {
                        let sum = _mm512_fmadd_ps(*s, scale, _mm512_loadu_ps(out_at(r, q)));
                        _mm512_storeu_ps(out_at(r, q), sum);
                    } else {
                        acc[q][r] = _mm512_fmadd_ps(*s, scale, acc[q][r]);
                    }
                }
            }
        }
        if !in_outputs {
            for (q, acc_q) in acc.iter().enumerate() {
                for (r, sum) in acc_q.iter().enumerate() {
                    _mm512_storeu_ps(out_at(r, q), *sum);
                }
            }
        }
    }
}

/// Pairs of groups per call for `rows` rows: at least 4 chains (`R · P`)
/// to cover the FMA latency, at most 16, and a count the kernels are
/// instantiated for (here and in [`super::x86_avx512_fp8_dense`]). One
/// pair from 3 rows on (3–8 chains) where an L1 set holds fewer than 12
/// lines ([`crate::cpu::narrow_l1`]), as both kernels prefer there (AMD
/// EPYC, Zen 4, K = N = 4096, ms, two pairs against one: MXFP4 M = 3 / 4
/// / 6 / 8 1.32 / 1.65 / 2.25 / 2.96 against 1.13 / 1.38 / 1.97 / 2.54,
/// int4 1.40 / 1.70 / 2.31 / 3.02 against 1.29 / 1.41 / 1.91 / 2.60,
/// NVFP4 1.47 / 1.80 / 2.40 / 3.32 against 1.22 / 1.56 / 2.07 / 2.71;
/// `PackedFp8` M = 3 / 4 / 5 / 8 1.50 / 1.77–1.82 / 2.07–2.14 / 3.05–3.09
/// against 1.31–1.42 / 1.64–1.67 / 2.01–2.03 / 2.97–3.07, M = 6 and 7
/// the same; at M = 2 int4 was slower on one pair, 1.14 against 1.23).
pub(crate) fn pairs_per_call(rows: usize, left: usize) -> usize {
    let one_pair_from_3 = crate::cpu::narrow_l1();
    let most = match rows {
        1 => 4,
        3..=8 if one_pair_from_3 => 1,
        2..=8 => 2,
        _ => 1,
    };
    [4, 2, 1]
        .into_iter()
        .find(|&p| p <= most && p <= left)
        .unwrap_or(1)
}

/// [`Kernel::fp4_dense`](super::Kernel::fp4_dense) of the AVX-512 tier on
/// `groups` consecutive groups: pairs on zmm registers, an odd last group
/// on the AVX2 kernel (same chains, same bits).
///
/// # Safety
/// AVX-512 F/BW, AVX2 and FMA present; as
/// [`super::x86_fp4_dense::fp4_dense_groups`].
unsafe fn fp4_dense_pairs(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: GroupScales<'_>,
    zeros: Option<&[u8]>,
    groups: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let (k, blocks) = (rows.k, rows.k / rows.block);
    let mut g0 = 0;
    while groups - g0 >= 2 {
        let pairs = pairs_per_call(rows.rows, (groups - g0) / 2);
        let at = DenseGroups::from_group(rows, codes, scales, zeros, g0, out, out_stride);
        // SAFETY: groups g0..g0 + 2·pairs ≤ groups, within the caller's
        // bounds; the CPU has the features (the caller's contract).
        unsafe {
            macro_rules! call {
                ($($r:literal, $p:literal);*) => {
                    match (rows.rows, pairs, rows.prescaled, zeros.is_some()) {
                        $(($r, $p, true, false) => fp4_dense_avx512::<$r, $p, true, false>(rows, at),
                          ($r, $p, false, false) => fp4_dense_avx512::<$r, $p, false, false>(rows, at),
                          ($r, $p, true, true) => fp4_dense_avx512::<$r, $p, true, true>(rows, at),
                          ($r, $p, false, true) => fp4_dense_avx512::<$r, $p, false, true>(rows, at),)*
                        _ => unreachable!("rows 1..=8 or 16 and their pair counts"),
                    }
                };
            }
            call!(1, 4; 1, 2; 1, 1; 2, 2; 2, 1; 3, 2; 3, 1; 4, 2; 4, 1;
                  5, 2; 5, 1; 6, 2; 6, 1; 7, 2; 7, 1; 8, 2; 8, 1; 16, 1);
        }
        g0 += 2 * pairs;
    }
    if g0 < groups {
        let start = g0 * blocks * 8;
        let scales = match scales {
            GroupScales::F32(s) => GroupScales::F32(&s[start..]),
            GroupScales::E8M0(c) => GroupScales::E8M0(&c[start..]),
            GroupScales::E4M3(c, t) => GroupScales::E4M3(&c[start..], t),
        };
        // The AVX2 kernel takes up to FP4_DENSE_MR rows per call.
        for (r0, part) in rows.parts(FP4_DENSE_MR) {
            fp4_dense_checked(
                &part,
                &codes[g0 * k * 4..],
                scales,
                zeros.map(|z| &z[start..]),
                1,
                &mut out[r0 * out_stride + g0 * 8..],
                out_stride,
            );
        }
    }
}

/// [`Kernel::fp4_dense`](super::Kernel::fp4_dense) of the AVX-512 tier:
/// the bounds of [`super::x86_fp4_dense::fp4_dense_checked`], asserted.
pub(crate) fn fp4_dense_checked_avx512(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: GroupScales<'_>,
    zeros: Option<&[u8]>,
    groups: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let bounds = (groups, out_stride, FP4_DENSE_ROWS_WIDE);
    super::x86_fp4_dense::check_fp4_dense(rows, codes, scales, zeros, bounds, out);
    // 16 rows in one call where they are in panels; otherwise, and for 9
    // to 15 rows, parts of 8 (the kernel is instantiated for 1..=8 and 16
    // rows).
    let most = if rows.rows == FP4_DENSE_ROWS_WIDE && rows.panels.len() >= rows.rows * rows.k {
        FP4_DENSE_ROWS_WIDE
    } else {
        DENSE_ROWS_WIDE
    };
    for (r0, part) in rows.parts(most) {
        // SAFETY: the driver selects the AVX-512 tier only when the CPU
        // has AVX-512 F/BW/VL/VNNI besides AVX2, FMA and F16C; the checks
        // bound every read and write, and rows r0.. of the output are
        // the part's.
        unsafe {
            fp4_dense_pairs(
                &part,
                codes,
                scales,
                zeros,
                groups,
                &mut out[r0 * out_stride..],
                out_stride,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every E4M3 code (NaN, zeros and subnormals included) times tensor
    /// scales of each kind, through both tiers' slice decoders (their
    /// vector bodies and their one-by-one tails), bit for bit against
    /// `e4m3_scale` (NaN as NaN).
    #[test]
    fn every_e4m3_scale_decodes_exactly() {
        type Decoder = fn(&[u8], f32, &mut [f32]);
        let mut decoders: Vec<(&str, Decoder)> = Vec::new();
        if crate::cpu::has_avx2_fma_f16c() {
            decoders.push(("avx2", super::super::x86_fp4_dense::e4m3_scales_avx2));
        }
        if crate::cpu::has_avx512() {
            decoders.push(("avx512", e4m3_scales_avx512));
        }
        // Each code once, then a run of subnormals alone, and a tail of 5.
        let mut codes: Vec<u8> = (0..=255u8).collect();
        codes.extend([1u8, 2, 3, 4, 5, 6, 7, 0x81, 0x87, 0, 0x80, 3, 5, 7, 1, 2]);
        codes.extend([0x7F, 0x07, 0x08, 0xFF, 0x42]);
        let tensor_scales = [
            1.0f32,
            0.37,
            -3.0e-3,
            1.0e30,
            1.0e-40,
            f32::INFINITY,
            f32::NAN,
        ];
        for (name, decode) in decoders {
            for t in tensor_scales {
                let mut got = vec![0.0f32; codes.len()];
                decode(&codes, t, &mut got);
                for (&c, g) in codes.iter().zip(got) {
                    let want = crate::block_scaled::e4m3_scale(c, t);
                    // Which NaN a product of two NaNs gives is the
                    // compiler's choice (the operands commute).
                    if want.is_nan() {
                        assert!(g.is_nan(), "{name}: code {c:#04x}, t {t}: {g}");
                    } else {
                        assert_eq!(g.to_bits(), want.to_bits(), "{name}: code {c:#04x}, t {t}");
                    }
                }
            }
        }
    }
}

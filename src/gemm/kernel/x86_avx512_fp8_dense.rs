//! The AVX-512 kernel of [`Kernel::fp8_dense`](super::Kernel::fp8_dense)
//! on CPUs with VBMI and GFNI: E4M3 weights packed by
//! [`crate::block_scaled::PackedFp8`] against up to 8 rows of f32
//! activations, two groups of 8 packed lines (16 outputs) per zmm
//! register, each code decoded in registers straight to an f32.
//!
//! **The decode.** An E4M3 code `s eeee mmm` with `e ≥ 1` is
//! `(−1)^s · 2^(e − 7) · (1 + m/8)`; the f32 with sign `s`, exponent field
//! `112 + e = 0111eeee` and mantissa `mmm` followed by zeros is that value
//! times 2^-8 (the f16 kernel's scaling, so the prescaled rows are the
//! same). Its top byte `s 0111 eee` and next byte `e mmm 0000` are each a
//! GF(2)-affine function of the code's bits, so two `vgf2p8affineqb` give
//! them for 64 codes, after one `vpermb` has ordered the codes; a byte
//! unpack pairs them into words (bf16s), and one dword shift or AND per
//! step puts them in place (bytes 3 and 2 of each lane, zeros below).
//! That is about 11 vector operations per 64 codes, against about 23 for
//! the f16 route (`vcvtph2ps` on a zmm is two). (A two-table `vpermt2b`
//! to place the bytes took 0.68 ns per instruction on the Intel Xeon,
//! twice `vpermb`: 1.17 against 0.96 ms at M = 1.)
//!
//! Codes with `e = 0` (zero and the subnormals `(−1)^s · m · 2^-9`) come
//! out as `(−1)^s · 2^-15 · (1 + m/8)`; a round of 64 codes that holds one
//! (one byte test) has those lanes fixed exactly: `2 · (x − ±2^-15)` is
//! `(−1)^s · m · 2^-17`. A zero code then reads as +0.0 whatever its sign,
//! which leaves every chain's bits unchanged: a chain starts at +0.0 and
//! can never be −0.0 (only −0 + −0 is −0 in round-to-nearest), so adding
//! `a · ±0` to it gives the same sum.
//!
//! Each lane is one line's chain, exactly as in the AVX2 kernel
//! ([`super::x86_fp8_dense`]): one FMA per value of k, k increasing, from
//! +0.0 per block, then `out = fma(p, fl(sa · sb), out)` per block; the
//! per-block sums live in the outputs, leaving the registers to the
//! chains.

use super::x86_avx512_dense::{pairs_per_call, row_scales16};
use super::x86_fp8_dense::{check_fp8_dense, fp8_dense_checked};
use super::{Fp4DenseRows, DENSE_ROWS_WIDE, FP4_DENSE_MR};
use std::arch::x86_64::*;

/// Values of k per round: 4 steps of 16 lines are 64 codes, one zmm.
pub(crate) const STEPS: usize = 4;

/// The 8 × 8 bit matrix (as `vgf2p8affineqb` reads it: the row of output
/// bit `i` in byte `7 − i`) that maps an E4M3 code to byte `byte` (3: the
/// top, 2: the next) of the f32 [`fp8_dense_avx512`] builds: the sign to
/// bit 31, magnitude bit `j` to bit `j + 20`. The top byte's `0111` of
/// the exponent is the affine constant `0x38`.
const fn f32_byte_matrix(byte: u32) -> u64 {
    let mut m = 0u64;
    let mut j = 0;
    while j < 8 {
        let to = if j == 7 { 31 } else { j + 20 };
        if to / 8 == byte {
            m |= 1u64 << (8 * (7 - to % 8) + j);
        }
        j += 1;
    }
    m
}

/// The E4M3 decode's constants: the two byte matrices, and the `vpermb`
/// indices that order a round's 64 codes so that [`Self::decode`]'s byte
/// unpacks leave step `s`'s f32 of line `j` in lane `j` of one register.
/// Also the decode of [`super::x86_avx512_blocks_t`]'s E4M3 kernel.
pub(crate) struct E4M3ToF32 {
    top: __m512i,
    next: __m512i,
    order: __m512i,
}

impl E4M3ToF32 {
    /// The constants for rounds whose code of line `j` (0..16) at step `s`
    /// (0..4) is byte `source(s, j)` of the 64.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn new(source: fn(usize, usize) -> usize) -> Self {
        // Lane j = 4L + d sits in 128-bit lane L; the low byte unpack
        // reads bytes 16L + 2d (step 0) and 16L + 2d + 1 (step 1) into its
        // words, the high unpack bytes 16L + 8 + 2d (step 2) and + 1
        // (step 3).
        let mut order = [0u8; 64];
        for j in 0..16 {
            let (lane, d) = (j / 4, j % 4);
            for s in 0..STEPS {
                order[16 * lane + 8 * (s / 2) + 2 * d + s % 2] = source(s, j) as u8;
            }
        }
        // Opaque to the compiler: with the indices known, LLVM may rewrite
        // the permute as several shuffles (see the staged kernel).
        let order = std::hint::black_box(order);
        Self {
            top: _mm512_set1_epi64(f32_byte_matrix(3) as i64),
            next: _mm512_set1_epi64(f32_byte_matrix(2) as i64),
            // SAFETY: order holds 64 bytes.
            order: unsafe { _mm512_loadu_si512(order.as_ptr() as *const _) },
        }
    }

    /// The exact f32s, value times 2^-8, of a round's 64 codes (no NaN
    /// among them), per step `s` the 16 lines in lane order: the fast
    /// bytes, then, where a code has exponent field 0 (one byte test),
    /// [`fix_exponent_zero`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    pub(crate) fn decode(&self, codes: __m512i) -> [__m512; STEPS] {
        let mut w = self.fast(codes);
        if exponent_zero(codes) != 0 {
            fix_all(&mut w);
        }
        w
    }

    /// [`Self::decode`] scaled back by 2^8 (exact): the codes' values.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    pub(crate) fn decode_values(&self, codes: __m512i) -> [__m512; STEPS] {
        let mut w = self.decode(codes);
        // A loop, not a closure: a closure does not take the features.
        for w in w.iter_mut() {
            *w = _mm512_mul_ps(*w, _mm512_set1_ps(256.0));
        }
        w
    }

    /// The fast bytes alone: exact for every code but those with exponent
    /// field 0, which come out as `±2^-15 (1 + m/8)` (see
    /// [`exponent_zero`] and [`fix_all`]).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    pub(crate) fn fast(&self, codes: __m512i) -> [__m512; STEPS] {
        let ordered = _mm512_permutexvar_epi8(self.order, codes);
        let top = _mm512_gf2p8affine_epi64_epi8::<0x38>(ordered, self.top);
        let next = _mm512_gf2p8affine_epi64_epi8::<0>(ordered, self.next);
        // Each word: the next byte low, the top byte high (a bf16).
        let low = _mm512_unpacklo_epi8(next, top);
        let high = _mm512_unpackhi_epi8(next, top);
        let upper = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        [
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(low)),
            _mm512_castsi512_ps(_mm512_and_si512(low, upper)),
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(high)),
            _mm512_castsi512_ps(_mm512_and_si512(high, upper)),
        ]
    }
}

/// Where a packed round's code of line `j` at step `s` is: bytes `8s + j`
/// for the first group's lines, `32 + 8s + j − 8` for the second's.
fn packed_source(s: usize, j: usize) -> usize {
    if j < 8 {
        8 * s + j
    } else {
        32 + 8 * s + j - 8
    }
}

/// The lanes of `x` that came from a code with exponent field 0 (x's
/// exponent field 112), made exact: `2 · (x − ±2^-15)`.
#[inline]
#[target_feature(enable = "avx512f")]
fn fix_exponent_zero(x: __m512) -> __m512 {
    let bits = _mm512_castps_si512(x);
    let exponent = _mm512_and_si512(bits, _mm512_set1_epi32(0x7F80_0000));
    let lanes = _mm512_cmpeq_epi32_mask(exponent, _mm512_set1_epi32(0x3800_0000));
    // ±2^-15 with x's sign.
    let unit = _mm512_or_si512(
        _mm512_and_si512(bits, _mm512_set1_epi32(i32::MIN)),
        _mm512_set1_epi32(0x3800_0000),
    );
    let d = _mm512_mask_sub_ps(x, lanes, x, _mm512_castsi512_ps(unit));
    _mm512_mask_add_ps(d, lanes, d, d)
}

/// The bytes of `codes` whose exponent field is 0 (zero and subnormal
/// codes), as a mask: where it is not 0, [`E4M3ToF32::fast`]'s values
/// need [`fix_all`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn exponent_zero(codes: __m512i) -> u64 {
    _mm512_testn_epi8_mask(codes, _mm512_set1_epi8(0x78))
}

/// [`fix_exponent_zero`] on a round's values (a loop, not a closure: a
/// closure does not take the features).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn fix_all(w: &mut [__m512; STEPS]) {
    for w in w.iter_mut() {
        *w = fix_exponent_zero(*w);
    }
}

/// Where [`fp8_dense_avx512`] reads its `P` pairs of groups and writes
/// their sums: group `g`'s codes at `codes + g · code_stride` bytes (per
/// value of k, the 8 lines' codes), its scales at `scales + g ·
/// scale_stride` floats; row `r`, line `8g + j` of the output at
/// `out[r · out_stride + 8g + j]`.
#[derive(Clone, Copy)]
struct Pairs {
    codes: *const u8,
    code_stride: usize,
    scales: *const f32,
    scale_stride: usize,
    out: *mut f32,
    out_stride: usize,
}

/// [`Kernel::fp8_dense`](super::Kernel::fp8_dense) for `R` rows and `P`
/// pairs of groups (16 lines per pair, `R · P` chains side by side). With
/// `PRESCALED` the rows hold a · 2^8 (exact, the driver checked);
/// otherwise each weight is scaled back by 2^8 (exact).
///
/// # Safety
/// AVX-512 F/BW, VBMI and GFNI present; each of the `2P` groups has
/// `8 · rows.k` bytes of codes (no NaN code) and `8 · blocks` scales, and
/// `out` `R` rows of `16 · P` floats at its stride; `rows.a` has `R` rows
/// of `rows.k` values and `rows.sa` `R` rows of `blocks` scales
/// (`rows.k = blocks · block`, block a multiple of [`STEPS`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
unsafe fn fp8_dense_avx512<const R: usize, const P: usize, const PRESCALED: bool>(
    rows: &Fp4DenseRows<'_>,
    at: Pairs,
) {
    let (k, block) = (rows.k, rows.block);
    let blocks = k / block;
    let a = rows.a.as_ptr();
    let c = E4M3ToF32::new(packed_source);
    let group = |pair: usize, half: usize| 2 * pair + half;
    // SAFETY (all reads and writes): k0 + STEPS ≤ blocks · block = rows.k,
    // whose codes (8 bytes per value and group), A values (R rows),
    // scales and outputs the caller guarantees for 2P groups.
    unsafe {
        let out_at = |r: usize, q: usize| at.out.add(r * at.out_stride + q * 16);
        for q in 0..P {
            for r in 0..R {
                _mm512_storeu_ps(out_at(r, q), _mm512_setzero_ps());
            }
        }
        for blk in 0..blocks {
            let mut p = [[_mm512_setzero_ps(); R]; P];
            for k0 in (blk * block..(blk + 1) * block).step_by(STEPS) {
                // Per pair, the round's 64 codes (4 steps of the first
                // group's 8 lines, then 4 of the second's) as f32s.
                let mut w = [[_mm512_setzero_ps(); STEPS]; P];
                let mut codes = [_mm512_setzero_si512(); P];
                // One test and branch per round for every pair (one per
                // pair cost PackedFp8 ~5 % at M = 1, four pairs).
                let mut any_zero = 0u64;
                for (q, (w, codes)) in w.iter_mut().zip(codes.iter_mut()).enumerate() {
                    let first = at.codes.add(group(q, 0) * at.code_stride + k0 * 8);
                    let second = first.add(at.code_stride);
                    *codes = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_loadu_si256(first as *const _)),
                        _mm256_loadu_si256(second as *const _),
                    );
                    *w = c.fast(*codes);
                    any_zero |= exponent_zero(*codes);
                }
                if any_zero != 0 {
                    for (w, codes) in w.iter_mut().zip(codes) {
                        if exponent_zero(codes) != 0 {
                            fix_all(w);
                        }
                    }
                }
                if !PRESCALED {
                    for w in w.iter_mut().flatten() {
                        *w = _mm512_mul_ps(*w, _mm512_set1_ps(256.0));
                    }
                }
                // Each broadcast value of A serves every pair at once
                // (`p[q][r]` and `w[q][s]` share the loops' indices).
                #[allow(clippy::needless_range_loop)]
                for s in 0..STEPS {
                    for r in 0..R {
                        let x = _mm512_set1_ps(*a.add(r * k + k0 + s));
                        for q in 0..P {
                            p[q][r] = _mm512_fmadd_ps(x, w[q][s], p[q][r]);
                        }
                    }
                }
            }
            for (q, p_q) in p.iter().enumerate() {
                let scales =
                    |half: usize| at.scales.add(group(q, half) * at.scale_stride + blk * 8);
                let sb = _mm512_castsi512_ps(_mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(scales(0) as *const _)),
                    _mm256_loadu_si256(scales(1) as *const _),
                ));
                let scales = row_scales16::<R>(rows, (blk, blocks), sb);
                for (r, sum) in p_q.iter().enumerate() {
                    let acc = _mm512_fmadd_ps(*sum, scales[r], _mm512_loadu_ps(out_at(r, q)));
                    _mm512_storeu_ps(out_at(r, q), acc);
                }
            }
        }
    }
}

/// [`Kernel::fp8_dense`](super::Kernel::fp8_dense) of the AVX-512 tier:
/// pairs of groups on [`fp8_dense_avx512`] where the CPU has VBMI and GFNI
/// and the block is a multiple of [`STEPS`]; the rest (an odd last group,
/// or every group otherwise) on the AVX2 kernel, [`FP4_DENSE_MR`] rows per
/// call (same chains, same bits).
pub(crate) fn fp8_dense_checked_avx512(
    rows: &Fp4DenseRows<'_>,
    codes: &[u8],
    scales: &[f32],
    groups: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    check_fp8_dense(
        rows,
        codes,
        scales,
        (groups, out_stride, DENSE_ROWS_WIDE),
        out,
    );
    let (k, blocks) = (rows.k, rows.k / rows.block);
    let mut g0 = 0;
    if crate::cpu::has_avx512_vbmi_gfni() && rows.block.is_multiple_of(STEPS) {
        while groups - g0 >= 2 {
            let pairs = pairs_per_call(rows.rows, (groups - g0) / 2);
            let at = Pairs {
                codes: codes[g0 * k * 8..].as_ptr(),
                code_stride: k * 8,
                scales: scales[g0 * blocks * 8..].as_ptr(),
                scale_stride: blocks * 8,
                out: out[g0 * 8..].as_mut_ptr(),
                out_stride,
            };
            // SAFETY: the CPU has AVX-512 F/BW (the tier), VBMI and GFNI
            // (checked); groups g0..g0 + 2·pairs ≤ groups and the rows are
            // within the checked bounds; block is a multiple of STEPS;
            // PackedFp8 streams no NaN code.
            unsafe {
                macro_rules! call {
                    ($($r:literal, $p:literal);*) => {
                        match (rows.rows, pairs, rows.prescaled) {
                            $(($r, $p, true) => fp8_dense_avx512::<$r, $p, true>(rows, at),
                              ($r, $p, false) => fp8_dense_avx512::<$r, $p, false>(rows, at),)*
                            _ => unreachable!("rows 1..=8 and their pair counts"),
                        }
                    };
                }
                call!(1, 4; 1, 2; 1, 1; 2, 2; 2, 1; 3, 2; 3, 1; 4, 2; 4, 1;
                      5, 2; 5, 1; 6, 2; 6, 1; 7, 2; 7, 1; 8, 2; 8, 1);
            }
            g0 += 2 * pairs;
        }
    }
    if g0 < groups {
        for (r0, part) in rows.parts(FP4_DENSE_MR) {
            fp8_dense_checked(
                &part,
                &codes[g0 * k * 8..],
                &scales[g0 * blocks * 8..],
                groups - g0,
                &mut out[r0 * out_stride + g0 * 8..],
                out_stride,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::F8E4M3;

    /// Every E4M3 code but the two NaNs, both through the fast bytes and
    /// the fix for exponent field 0, is its value times 2^-8, bit for bit
    /// (a zero code may come out +0.0 for −0.0; see the module docs).
    #[test]
    fn every_code_decodes_exactly() {
        if !crate::cpu::has_avx512_vbmi_gfni() {
            return;
        }
        let codes: Vec<u8> = (0..=255u8).collect();
        for chunk in codes.chunks(64) {
            let mut got = [0.0f32; 64];
            // SAFETY: the CPU has AVX-512 F/BW, VBMI and GFNI (checked);
            // the loads read 64 bytes, the stores write 64 floats.
            unsafe { decode64(chunk, &mut got) };
            for (i, &code) in chunk.iter().enumerate() {
                let want = F8E4M3::from_bits(code).to_f32();
                if want.is_nan() {
                    continue;
                }
                let want = want / 256.0;
                let exact = got[i].to_bits() == want.to_bits() || (want == 0.0 && got[i] == 0.0);
                assert!(exact, "code {code:#04x}: {} against {want}", got[i]);
            }
        }
    }

    /// The kernel's decode of 64 codes (as 4 steps of two groups: bytes
    /// 0..32 the first group's, 32..64 the second's), in code order.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,gfni")]
    unsafe fn decode64(codes: &[u8], out: &mut [f32; 64]) {
        let c = E4M3ToF32::new(packed_source);
        // SAFETY: codes holds 64 bytes (the caller's chunk).
        let v = unsafe { _mm512_loadu_si512(codes.as_ptr() as *const _) };
        for (s, &w) in c.decode(v).iter().enumerate() {
            let mut lanes = [0.0f32; 16];
            // SAFETY: lanes holds 16 floats.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), w) };
            for (j, &x) in lanes.iter().enumerate() {
                let at = packed_source(s, j);
                out[at] = x;
            }
        }
    }
}

//! The AVX2 kernel of [`Kernel::blocks_t`](super::Kernel::blocks_t), and
//! what it shares with the AVX-512 one ([`super::x86_avx512_blocks_t`]):
//! block-scaled weights stored `[out, in]` as a
//! [`BlockScaled`](crate::block_scaled::BlockScaled) holds them (one code
//! per byte: FP8 E4M3/E5M2, FP6 E2M3/E3M2, FP4 E2M1), read in place, for a
//! few rows of f32 activations: `weight_only_gemm` and `block_gemm` at
//! small batch, without packing or widening the weights per call.
//!
//! Each block of 16 bytes of each line is transposed as 32-bit values (four
//! codes of a line per lane). A code is decoded exactly: its magnitude
//! bits moved under the f32 exponent field and rebiased by an integer add
//! give a normal code's value; a subnormal code (exponent field 0) is
//! rebiased to `2^(1 − bias)` and so has gained an implicit one, which one
//! subtraction removes (zero stays +0); the sign goes to bit 31. No result
//! and no operand is a subnormal f32 (on Intel cores an operation on one is
//! a microcode assist: an earlier decode that multiplied the moved bits
//! read as an f32 by `2^(127 − bias)` made MXFP4 18× slower there). A 4-bit
//! code is a table lookup. On AVX2 an FP8 code goes through F16C instead
//! ([`decode_pair_f16`]): moved to the high byte of an f16 (one `vpshufb`
//! for two steps of eight lines), its magnitude shifted into place (E4M3),
//! it is that f16 times `2^(bias − 15)`; `vcvtph2ps` widens it exactly and
//! one multiply rescales it: half the operations per code, so FP8 reads in
//! place up to 32 rows on AVX2 as well. FP8 codes whose magnitude is NaN
//! or infinity are detected, not decoded: the kernel reports them and the
//! driver computes those lines by the contract's loops.
//!
//! For each line and row the chain is the contract's: one FMA per code, k
//! increasing, from +0.0 per block; each block ends with
//! `acc = fma(p, fl(s_a · s_b), acc)`.

pub(crate) use super::x86_code_formats::{ShiftCode, E2M1, E2M3, E3M2, E4M3, E5M2};
use super::{BLOCKS_T_GROUPS, BLOCKS_T_LINES};
use std::arch::x86_64::*;

/// Where a `blocks_t` kernel reads and writes. `rows` rows of A and
/// `groups` groups of 16 lines (the per-panel kernels take `R` rows and one
/// group). `a`: the A panel(s), `k` steps of `mr` floats each; `sa`: row
/// `r`'s block scales at `sa[r · blocks..]`; `codes`: the lines of `k`
/// codes, `ld` bytes apart; `sb_start`: line `j`'s first block scale at
/// `sb[sb_start[j]]` (then one per block); `out`: row `r`, line `j` at
/// `out[r · out_ld + j]`; `a_times_256`: A holds `a · 2^8` and E4M3 codes
/// are decoded as `value · 2^-8` (the AVX-512 kernels only).
#[derive(Clone, Copy)]
pub(crate) struct BlocksT {
    pub(crate) rows: usize,
    pub(crate) groups: usize,
    pub(crate) k: usize,
    pub(crate) block: usize,
    pub(crate) a: *const f32,
    pub(crate) mr: usize,
    pub(crate) sa: *const f32,
    pub(crate) codes: *const u8,
    pub(crate) ld: usize,
    pub(crate) sb: *const f32,
    pub(crate) sb_start: [i32; BLOCKS_T_LINES * BLOCKS_T_GROUPS],
    pub(crate) out: *mut f32,
    pub(crate) out_ld: usize,
    pub(crate) a_times_256: bool,
}

impl BlocksT {
    /// The same call restricted to group `g` and the panel of rows
    /// `q · mr..` (for the kernels that take one group and one panel).
    ///
    /// # Safety
    /// `g < groups` and `q · mr < rows`: the pointers stay inside the
    /// call's operands.
    pub(crate) unsafe fn panel(&self, g: usize, q: usize) -> Self {
        let blocks = self.k / self.block;
        let mut sb_start = [0; BLOCKS_T_LINES * BLOCKS_T_GROUPS];
        sb_start[..BLOCKS_T_LINES]
            .copy_from_slice(&self.sb_start[g * BLOCKS_T_LINES..(g + 1) * BLOCKS_T_LINES]);
        // SAFETY: per the function's contract.
        unsafe {
            Self {
                rows: self.mr.min(self.rows - q * self.mr),
                groups: 1,
                a: self.a.add(q * self.mr * self.k),
                sa: self.sa.add(q * self.mr * blocks),
                codes: self.codes.add(g * BLOCKS_T_LINES * self.ld),
                sb_start,
                out: self.out.add(q * self.mr * self.out_ld + g * BLOCKS_T_LINES),
                ..*self
            }
        }
    }
}

/// The [`Kernel::reads_blocks_t`](super::Kernel::reads_blocks_t) and
/// [`Kernel::blocks_t`](super::Kernel::blocks_t) methods of an x86 tier,
/// written once: the bounds the leaf's `$kernel::<R, F>(&BlocksT) -> bool`
/// (one group, one panel of `R` rows) relies on are asserted, then it is
/// called for each group, panel and format. `$max_rows`: the rows up to
/// which the tier reads FP6 codes (AVX2: decoded by shifts; AVX-512: a
/// 32-entry magnitude table) in place; FP8 codes
/// (through F16C on AVX2) and 4-bit codes (one table lookup each): 32.
/// `$whole::<F>(&BlocksT) -> Option<u32>` is asked first and may take the
/// whole call (all rows and groups: the staged kernels).
macro_rules! blocks_t_methods {
    ($kernel:path, $max_rows:expr, whole: $whole:path) => {
        fn blocks_t_max_rows<T: $crate::dtype::FloatElement>() -> usize {
            match T::DTYPE {
                _ if !Self::reads_blocks_t::<T>() => 0,
                $crate::dtype::DType::F4E2M1
                | $crate::dtype::DType::F8E4M3
                | $crate::dtype::DType::F8E5M2 => 32,
                _ => $max_rows,
            }
        }

        fn reads_blocks_t<T: $crate::dtype::FloatElement>() -> bool {
            use $crate::dtype::DType;
            matches!(
                T::DTYPE,
                DType::F8E4M3 | DType::F8E5M2 | DType::F6E2M3 | DType::F6E3M2 | DType::F4E2M1
            )
        }

        fn blocks_t<T: $crate::dtype::FloatElement>(
            t: &mut $crate::gemm::kernel::BlocksTile<'_, T>,
        ) -> u32 {
            use $crate::dtype::DType;
            use $crate::gemm::kernel::x86_blocks_t::{BlocksT, E2M1, E2M3, E3M2, E4M3, E5M2};
            use $crate::gemm::kernel::{BLOCKS_T_GROUPS, BLOCKS_T_LINES};
            use $kernel as f;
            if !Self::reads_blocks_t::<T>() || t.k == 0 {
                return 0;
            }
            let mr = $crate::gemm::kernel::blocks_t_panel_rows::<Self>(t.rows);
            let (k, blocks, lines) = (t.k, t.k / t.block, t.groups * BLOCKS_T_LINES);
            assert_eq!(std::mem::size_of::<T>(), 1);
            assert!((1..=Self::blocks_t_max_rows::<T>()).contains(&t.rows));
            assert!((1..=BLOCKS_T_GROUPS).contains(&t.groups));
            assert!(t.a.len() >= t.rows.div_ceil(mr) * mr * k);
            assert!(t.block.is_multiple_of(16) && k.is_multiple_of(t.block));
            assert!(t.sa.len() >= t.rows * blocks);
            assert!(t.lines.len() >= (lines - 1) * t.ld + k);
            assert!(t.sb_start[..lines]
                .iter()
                .all(|&s| s + blocks <= t.sb.len()));
            assert!(t.sb.len() <= i32::MAX as usize);
            assert!(t.out.len() >= (t.rows - 1) * t.out_ld + lines);
            assert!(!t.a_times_256 || Self::blocks_t_wants_a_times_256::<T>());
            let shape = BlocksT {
                rows: t.rows,
                groups: t.groups,
                k,
                block: t.block,
                a: t.a.as_ptr(),
                mr,
                sa: t.sa.as_ptr(),
                codes: t.lines.as_ptr() as *const u8,
                ld: t.ld,
                sb: t.sb.as_ptr(),
                sb_start: t
                    .sb_start
                    .map(|s| if s <= i32::MAX as usize { s as i32 } else { 0 }),
                out: t.out.as_mut_ptr(),
                out_ld: t.out_ld,
                a_times_256: t.a_times_256,
            };
            macro_rules! by_rows {
                ($f:ty) => {{
                    use $whole as whole;
                    // SAFETY: the CPU has the tier's features (the driver's
                    // choice of kernel); the asserts bound every access (as
                    // below, for all rows and groups).
                    if let Some(done) = unsafe { whole::<$f>(&shape) } {
                        return done;
                    }
                    let mut done = 0;
                    for g in 0..t.groups {
                        let mut ok = true;
                        for q in 0..t.rows.div_ceil(mr) {
                            // SAFETY: the driver picks this kernel only on a
                            // CPU with its tier's features; the asserts bound
                            // every access (A: k steps of mr per panel; sa:
                            // rows × blocks; codes: the groups' lines of k
                            // bytes, `T` is one byte; sb: each line's blocks,
                            // indices within i32; out: rows of the groups'
                            // lines at out_ld), g < groups and q · mr < rows,
                            // and `$f` is the format `T` is.
                            ok &= unsafe {
                                let s = shape.panel(g, q);
                                match s.rows {
                                    1 => f::<1, $f>(&s),
                                    2 => f::<2, $f>(&s),
                                    3 => f::<3, $f>(&s),
                                    4 => f::<4, $f>(&s),
                                    5 => f::<5, $f>(&s),
                                    6 => f::<6, $f>(&s),
                                    7 => f::<7, $f>(&s),
                                    _ => f::<8, $f>(&s),
                                }
                            };
                        }
                        if ok {
                            done |= 1 << g;
                        }
                    }
                    done
                }};
            }
            match T::DTYPE {
                DType::F8E4M3 => by_rows!(E4M3),
                DType::F8E5M2 => by_rows!(E5M2),
                DType::F6E2M3 => by_rows!(E2M3),
                DType::F6E3M2 => by_rows!(E3M2),
                _ => by_rows!(E2M1),
            }
        }
    };
}
pub(crate) use blocks_t_methods;

/// The block-scaled products of `R` rows of A and 16 lines of codes of
/// format `F` over all of `t.k`, written to `t.out`, eight lines per ymm
/// register (the two halves one after the other). Returns false when a
/// code is NaN or infinity (the sums written are then not the contract's).
///
/// # Safety
/// AVX2, FMA and F16C present; otherwise as
/// [`tile_blocks_t_avx512`](super::x86_avx512_blocks_t::tile_blocks_t_avx512).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile_blocks_t_avx2<const R: usize, F: ShiftCode>(t: &BlocksT) -> bool {
    let c = Consts::of::<F>();
    let mut special = _mm256_setzero_si256();
    // SAFETY: halves 0 and 1 of the 16 lines (the function's contract).
    unsafe {
        if R <= 2 {
            // Both halves' chains side by side: at one or two rows a
            // half's chain alone waits on the FMA latency every step.
            halves_avx2::<R, 2, F>(t, &c, 0, &mut special);
        } else {
            halves_avx2::<R, 1, F>(t, &c, 0, &mut special);
            halves_avx2::<R, 1, F>(t, &c, 1, &mut special);
        }
    }
    _mm256_testz_si256(special, special) == 1
}

/// [`tile_blocks_t_avx2`] on the `H` halves of eight lines from half
/// `first`, their chains interleaved step by step; the bytes of special
/// codes seen are ORed into `special`.
///
/// # Safety
/// As [`tile_blocks_t_avx2`]; `first + H ≤ 2`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn halves_avx2<const R: usize, const H: usize, F: ShiftCode>(
    t: &BlocksT,
    c: &Consts,
    first: usize,
    special: &mut __m256i,
) {
    let blocks = t.k / t.block;
    let mut acc = [[_mm256_setzero_ps(); R]; H];
    let mut p = [[_mm256_setzero_ps(); R]; H];
    // SAFETY (all reads and writes): lines 8·half..8·half + 8 of the 16,
    // their scales and outputs; steps < k (the caller's contract).
    unsafe {
        for k0 in (0..t.k).step_by(16) {
            for (hh, ph) in p.iter_mut().enumerate() {
                let half = first + hh;
                let v = transpose8x4(t.codes.add(8 * half * t.ld + k0), t.ld);
                for (q, x) in v.iter().enumerate() {
                    *special = _mm256_or_si256(*special, special_bytes_avx2::<F>(*x, c));
                    for (j, w) in decode4_avx2::<F>(*x, c).iter().enumerate() {
                        let ak = t.a.add((k0 + 4 * q + j) * t.mr);
                        for (r, pr) in ph.iter_mut().enumerate() {
                            *pr = _mm256_fmadd_ps(_mm256_set1_ps(*ak.add(r)), *w, *pr);
                        }
                    }
                }
            }
            if (k0 + 16).is_multiple_of(t.block) {
                let blk = (k0 + 16) / t.block - 1;
                for (hh, (acc_h, ph)) in acc.iter_mut().zip(p.iter_mut()).enumerate() {
                    let half = first + hh;
                    let sb_start =
                        _mm256_loadu_si256(t.sb_start.as_ptr().add(8 * half) as *const __m256i);
                    let index = _mm256_add_epi32(sb_start, _mm256_set1_epi32(blk as i32));
                    let sb = _mm256_i32gather_ps::<4>(t.sb, index);
                    for (r, (s, pr)) in acc_h.iter_mut().zip(ph.iter_mut()).enumerate() {
                        let scale = _mm256_mul_ps(_mm256_set1_ps(*t.sa.add(r * blocks + blk)), sb);
                        *s = _mm256_fmadd_ps(*pr, scale, *s);
                        *pr = _mm256_setzero_ps();
                    }
                }
            }
        }
        for (hh, acc_h) in acc.iter().enumerate() {
            for (r, s) in acc_h.iter().enumerate() {
                _mm256_storeu_ps(t.out.add(r * t.out_ld + 8 * (first + hh)), *s);
            }
        }
    }
}

/// The constant vectors of [`decode_avx2`] and the special-code check.
struct Consts {
    mag_mask: __m256i,
    exp_mask: __m256i,
    rebias: __m256i,
    /// `1 << 23`: the extra exponent step of a subnormal code.
    exp_one: __m256i,
    implicit: __m256,
    sign_bit: __m256i,
    byte_mag: __m256i,
    special_from: __m256i,
    /// The magnitudes of a 4-bit format's codes 0..8 (its `TABLE`).
    table: __m256,
    /// Byte shuffles of [`decode_pair_f16`]: steps `2h`, `2h + 1`.
    f16_pick: [__m256i; 2],
    /// The f16 bits a code keeps once shifted (sign, magnitude).
    f16_keep: __m256i,
    /// `2^(15 − bias)`.
    f16_factor: __m256,
}

impl Consts {
    #[inline]
    #[target_feature(enable = "avx2")]
    fn of<F: ShiftCode>() -> Self {
        let t = F::TABLE.unwrap_or([0.0; 16]);
        Self {
            mag_mask: _mm256_set1_epi32((F::MAG_MASK << (23 - F::MBITS)) as i32),
            exp_mask: _mm256_set1_epi32(((F::MAG_MASK >> F::MBITS) << 23) as i32),
            rebias: _mm256_set1_epi32((127 - F::BIAS) << 23),
            exp_one: _mm256_set1_epi32(1 << 23),
            implicit: _mm256_set1_ps(f32::from_bits(((128 - F::BIAS) as u32) << 23)),
            sign_bit: _mm256_set1_epi32(i32::MIN),
            byte_mag: _mm256_set1_epi8(F::MAG_MASK as i8),
            special_from: _mm256_set1_epi8(F::SPECIAL_FROM as i8),
            table: _mm256_setr_ps(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]),
            f16_pick: [f16_pick(0), f16_pick(1)],
            f16_keep: _mm256_set1_epi16(
                (0x8000u32 | (0x7fffu32 >> F::F16_SHIFT.unwrap_or(0))) as u16 as i16,
            ),
            f16_factor: _mm256_set1_ps(f32::from_bits(((127 + 15 - F::BIAS) as u32) << 23)),
        }
    }
}

/// Code `j` of each 32-bit lane of `x`, decoded exactly (see the module
/// docs): a 4-bit code's magnitude by `vpermps` on the table's first eight
/// values, any other by the rebias and the subnormal fix; then the sign.
#[inline]
#[target_feature(enable = "avx2")]
fn decode_avx2<F: ShiftCode>(x: __m256i, j: usize, c: &Consts) -> __m256 {
    let sign = _mm256_and_si256(
        shift_left(x, (31 - F::SIGN_POS) as i32 - 8 * j as i32),
        c.sign_bit,
    );
    let magnitude = if F::TABLE.is_some() {
        // vpermps reads the low 3 bits of each lane: code j's magnitude.
        _mm256_permutevar8x32_ps(c.table, shift_left(x, -8 * j as i32))
    } else {
        let moved = _mm256_and_si256(
            shift_left(x, (23 - F::MBITS) as i32 - 8 * j as i32),
            c.mag_mask,
        );
        let subnormal =
            _mm256_cmpeq_epi32(_mm256_and_si256(moved, c.exp_mask), _mm256_setzero_si256());
        let rebias = _mm256_add_epi32(c.rebias, _mm256_and_si256(subnormal, c.exp_one));
        let value = _mm256_castsi256_ps(_mm256_add_epi32(moved, rebias));
        _mm256_sub_ps(
            value,
            _mm256_and_ps(c.implicit, _mm256_castsi256_ps(subnormal)),
        )
    };
    _mm256_or_ps(magnitude, _mm256_castsi256_ps(sign))
}

/// The bytes of `x` that hold a NaN or infinity code of `F` (magnitude ≥
/// `SPECIAL_FROM`, unsigned): all ones there, zero elsewhere.
#[inline]
#[target_feature(enable = "avx2")]
fn special_bytes_avx2<F: ShiftCode>(x: __m256i, c: &Consts) -> __m256i {
    if F::SPECIAL_FROM == 0 {
        return _mm256_setzero_si256();
    }
    let mag = _mm256_and_si256(x, c.byte_mag);
    _mm256_cmpeq_epi8(_mm256_max_epu8(mag, c.special_from), mag)
}

/// The four steps of the eight lines in `x` (32-bit lane `i`: line `i`,
/// byte `b`: step `b`), decoded exactly: FP8 through F16C
/// ([`decode_pair_f16`]), any other format by [`decode_avx2`].
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn decode4_avx2<F: ShiftCode>(x: __m256i, c: &Consts) -> [__m256; 4] {
    if F::F16_SHIFT.is_some() {
        let [s0, s1] = decode_pair_f16::<F>(x, 0, c);
        let [s2, s3] = decode_pair_f16::<F>(x, 1, c);
        return [s0, s1, s2, s3];
    }
    // A loop, not a closure: a closure does not take the target features.
    let mut out = [_mm256_setzero_ps(); 4];
    for (b, o) in out.iter_mut().enumerate() {
        *o = decode_avx2::<F>(x, b, c);
    }
    out
}

/// The `vpshufb` pattern that puts, in each 128-bit lane (lines
/// `4L..4L + 4`), step `2h`'s code of each line in the high byte of words
/// 0–3 and step `2h + 1`'s in words 4–7 (low bytes zero).
#[inline]
#[target_feature(enable = "avx2")]
fn f16_pick(h: usize) -> __m256i {
    let mut idx = [0x80u8; 32];
    for lane in 0..2 {
        for w in 0..8 {
            idx[16 * lane + 2 * w + 1] = (4 * (w % 4) + 2 * h + w / 4) as u8;
        }
    }
    // SAFETY: idx holds 32 bytes.
    unsafe { _mm256_loadu_si256(idx.as_ptr() as *const __m256i) }
}

/// Steps `2h` and `2h + 1` of the eight lines in `x` (32-bit lane `i`: line
/// `i`, byte `b`: step `b`) for an FP8 format with
/// [`ShiftCode::F16_SHIFT`], decoded exactly through F16C: each code moved
/// to the high byte of an f16 and its magnitude shifted into place is that
/// f16 times `2^(bias − 15)`; `vcvtph2ps` widens it (zero, subnormal codes
/// and the sign exact in hardware) and one exact multiply rescales it.
/// About half the operations of [`decode_avx2`] per code.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn decode_pair_f16<F: ShiftCode>(x: __m256i, h: usize, c: &Consts) -> [__m256; 2] {
    let shift = F::F16_SHIFT.unwrap_or(0);
    let words = _mm256_shuffle_epi8(x, c.f16_pick[h]);
    // Steps 2h | 2h + 1, each eight lines in order.
    let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(words);
    let words = if shift == 0 {
        words
    } else {
        _mm256_and_si256(
            _mm256_sra_epi16(words, _mm_cvtsi32_si128(shift)),
            c.f16_keep,
        )
    };
    let steps = [
        _mm256_cvtph_ps(_mm256_castsi256_si128(words)),
        _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(words)),
    ];
    if F::BIAS == 15 {
        steps
    } else {
        [
            _mm256_mul_ps(steps[0], c.f16_factor),
            _mm256_mul_ps(steps[1], c.f16_factor),
        ]
    }
}

/// Each 32-bit lane of `x` shifted left by `by` bits (right by `−by`).
#[inline]
#[target_feature(enable = "avx2")]
fn shift_left(x: __m256i, by: i32) -> __m256i {
    if by >= 0 {
        _mm256_sllv_epi32(x, _mm256_set1_epi32(by))
    } else {
        _mm256_srlv_epi32(x, _mm256_set1_epi32(-by))
    }
}

/// Four 32-bit values of 8 rows (`row_bytes` apart) at `w`, transposed:
/// output `q` holds value `q` of rows 0..8 (row `i` in lane `i`).
///
/// # Safety
/// AVX2 present; 16 bytes readable at `w + i · row_bytes` for each row
/// `i` < 8.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose8x4(w: *const u8, row_bytes: usize) -> [__m256i; 4] {
    // SAFETY: rows 0..8, 16 bytes each (the caller's contract).
    let piece = |i: usize| unsafe { _mm_loadu_si128(w.add(i * row_bytes) as *const __m128i) };
    // Register i: rows i and i + 4 in the two 128-bit lanes.
    let r0 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(piece(0)), piece(4));
    let r1 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(piece(1)), piece(5));
    let r2 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(piece(2)), piece(6));
    let r3 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(piece(3)), piece(7));
    let t0 = _mm256_unpacklo_epi32(r0, r1);
    let t1 = _mm256_unpackhi_epi32(r0, r1);
    let t2 = _mm256_unpacklo_epi32(r2, r3);
    let t3 = _mm256_unpackhi_epi32(r2, r3);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// Steps of K per chunk of the staged kernels (one 64-byte line of codes).
pub(crate) const STAGED_CHUNK: usize = 64;
/// Rows [`blocks_t_staged_avx2`] takes at most.
const STAGED_AVX2_MAX_ROWS: usize = 32;
/// Rows from which [`blocks_t_staged_avx2`] beats the per-panel kernel
/// (which decodes the codes again for every panel of rows). Forced AVX2
/// on the Intel Xeon of BENCHMARKS.md, K = N = 4096, MXFP8 at M = 1 / 8 /
/// 32: 3.27 / 6.55 / 18.2 ms staged against 2.99 / 9.14 / 30.6 per panel.
const STAGED_AVX2_MIN_ROWS: usize = 8;
/// Floats of the decoded buffer per step (two groups of 16 lines).
const STAGED_WIDTH: usize = BLOCKS_T_LINES * BLOCKS_T_GROUPS;
/// Vectors of eight lines per row of the staged sums.
const STAGED_VECTORS: usize = STAGED_WIDTH / 8;

/// The whole-call kernel of the AVX2 tier: [`blocks_t_staged_avx2`] for
/// 8 to 32 rows; `None` otherwise (the caller then runs
/// [`tile_blocks_t_avx2`] per group and panel).
///
/// # Safety
/// AVX2, FMA and F16C present; the operands as [`blocks_t_staged_avx2`]
/// states them.
pub(crate) unsafe fn blocks_t_whole_avx2<F: ShiftCode>(t: &BlocksT) -> Option<u32> {
    if (STAGED_AVX2_MIN_ROWS..=STAGED_AVX2_MAX_ROWS).contains(&t.rows) {
        // SAFETY: per the function's contract.
        Some(unsafe { blocks_t_staged_avx2::<F>(t) })
    } else {
        None
    }
}

/// The decoded weights of one chunk: step `kk`, line `l` at
/// `[kk · STAGED_WIDTH + l]`.
#[repr(C, align(32))]
struct StagedBuffer([f32; STAGED_CHUNK * STAGED_WIDTH]);

/// The staged form of [`tile_blocks_t_avx2`]: `t.rows` rows (panels of
/// `t.mr`) and `t.groups` groups of 16 lines in one call. Each chunk of 64
/// steps of every line is decoded once into an L1 buffer, which every
/// panel of rows then reads: the per-panel kernel decodes each code again
/// for every panel. Same chains, same bits. Returns bit `g` set where
/// group `g`'s sums are the contract's (clear: a NaN or infinity code).
///
/// # Safety
/// AVX2, FMA and F16C present; `t.rows` in `1..=32`, `t.groups` in
/// `1..=2`; `t.k` a multiple of `t.block`, itself a multiple of 16; `a`
/// has `⌈rows / mr⌉ · mr · k` floats (panel `q`'s step `k` at
/// `a[q · mr · k + mr · k..]`); `sa` `rows` rows of `k / block` scales;
/// each of the `16 · groups` lines `k` codes, `ld` bytes apart; each
/// `sb_start[j] + k / block − 1` a valid index of `sb`; `out` `rows` rows
/// of `16 · groups` floats at `out_ld`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn blocks_t_staged_avx2<F: ShiftCode>(t: &BlocksT) -> u32 {
    let c = Consts::of::<F>();
    let zero = _mm256_setzero_ps();
    let mut w = StagedBuffer([0.0; STAGED_CHUNK * STAGED_WIDTH]);
    let mut state = StagedSums {
        p: [[zero; STAGED_VECTORS]; STAGED_AVX2_MAX_ROWS],
        acc: [[zero; STAGED_VECTORS]; STAGED_AVX2_MAX_ROWS],
    };
    let mut special = [_mm256_setzero_si256(); BLOCKS_T_GROUPS];
    let vectors = 2 * t.groups;
    let mut sbv = [[zero; STAGED_VECTORS]; STAGED_CHUNK / 16];
    for k0 in (0..t.k).step_by(STAGED_CHUNK) {
        let kc = STAGED_CHUNK.min(t.k - k0);
        for (v, sp) in (0..vectors).zip([0, 0, 1, 1]) {
            // SAFETY: lines 8v..8v + 8 of the call, steps k0..k0 + kc < k;
            // the buffer holds kc steps.
            unsafe {
                let codes = t.codes.add(8 * v * t.ld + k0);
                for q in 0..kc / 16 {
                    let x4 = transpose8x4(codes.add(16 * q), t.ld);
                    for (j, x) in x4.iter().enumerate() {
                        special[sp] = _mm256_or_si256(special[sp], special_bytes_avx2::<F>(*x, &c));
                        for (b, d) in decode4_avx2::<F>(*x, &c).iter().enumerate() {
                            let step = 16 * q + 4 * j + b;
                            _mm256_store_ps(w.0.as_mut_ptr().add(step * STAGED_WIDTH + 8 * v), *d);
                        }
                    }
                }
            }
        }
        // The blocks that end in this chunk, and their B scales.
        let ends = block_ends(k0, kc, t.block);
        for (sv, blk) in sbv.iter_mut().zip(ends) {
            let Some(blk) = blk else { continue };
            for (v, x) in sv.iter_mut().enumerate().take(vectors) {
                // SAFETY: sb_start[j] + blk is a valid index of sb (the
                // contract), for the call's lines 8v..8v + 8.
                *x = unsafe {
                    let start =
                        _mm256_loadu_si256(t.sb_start.as_ptr().add(8 * v) as *const __m256i);
                    let index = _mm256_add_epi32(start, _mm256_set1_epi32(blk as i32));
                    _mm256_i32gather_ps::<4>(t.sb, index)
                };
            }
        }
        let chunk = StagedChunk {
            k0,
            kc,
            w: w.0.as_ptr(),
            sbv: &sbv,
            ends,
        };
        for g in 0..t.groups {
            for q in 0..t.rows.div_ceil(t.mr) {
                let rows = t.mr.min(t.rows - q * t.mr);
                // SAFETY: panel q of A, rows q · mr.. of sa and the sums,
                // group g of the buffer (the contract: rows ≤ 32).
                unsafe {
                    match rows {
                        1 => staged_panel_avx2::<1>(t, &chunk, g, q, &mut state),
                        2 => staged_panel_avx2::<2>(t, &chunk, g, q, &mut state),
                        3 => staged_panel_avx2::<3>(t, &chunk, g, q, &mut state),
                        4 => staged_panel_avx2::<4>(t, &chunk, g, q, &mut state),
                        5 => staged_panel_avx2::<5>(t, &chunk, g, q, &mut state),
                        _ => staged_panel_avx2::<6>(t, &chunk, g, q, &mut state),
                    }
                }
            }
        }
    }
    for (r, sums) in state.acc.iter().enumerate().take(t.rows) {
        for (v, s) in sums.iter().enumerate().take(vectors) {
            // SAFETY: out has rows of 16 · groups floats at out_ld.
            unsafe { _mm256_storeu_ps(t.out.add(r * t.out_ld + 8 * v), *s) };
        }
    }
    let mut done = 0;
    for (g, sp) in special.iter().enumerate().take(t.groups) {
        if _mm256_testz_si256(*sp, *sp) == 1 {
            done |= 1 << g;
        }
    }
    done
}

/// The running sums of [`blocks_t_staged_avx2`]: per row, eight lines per
/// vector, the block's chain and the accumulator.
struct StagedSums {
    p: [[__m256; STAGED_VECTORS]; STAGED_AVX2_MAX_ROWS],
    acc: [[__m256; STAGED_VECTORS]; STAGED_AVX2_MAX_ROWS],
}

/// Per unit of 16 steps of the chunk `k0..k0 + kc`, the block (of `block`
/// steps, a multiple of 16) that ends with it, if one does: worked out once
/// per chunk, not per panel (an integer division per unit cost the FMA
/// loop a fifth).
pub(crate) fn block_ends(k0: usize, kc: usize, block: usize) -> [Option<usize>; 4] {
    let mut ends = [None; 4];
    for (u, e) in ends.iter_mut().enumerate().take(kc / 16) {
        let end = k0 + 16 * u + 16;
        if end.is_multiple_of(block) {
            *e = Some(end / block - 1);
        }
    }
    ends
}

/// One chunk of 64 steps of a staged kernel ([`blocks_t_staged_avx2`],
/// [`super::x86_avx512_blocks_staged`]): its first step and length, the
/// decoded buffer, and per unit of 16 steps the block that ends with it
/// and that block's B scales (`N` vectors `V`).
pub(crate) struct StagedChunk<'c, V, const N: usize> {
    pub(crate) k0: usize,
    pub(crate) kc: usize,
    pub(crate) w: *const f32,
    pub(crate) sbv: &'c [[V; N]; 4],
    pub(crate) ends: [Option<usize>; 4],
}

/// Rows `q · mr..q · mr + R` and group `g` (two vectors of eight lines)
/// over one chunk: the chains from the sums, one FMA per row, line and
/// step, each block that ends in the chunk folded into the accumulators.
///
/// # Safety
/// As [`blocks_t_staged_avx2`]; `q · mr + R ≤ t.rows`, `g < t.groups`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn staged_panel_avx2<const R: usize>(
    t: &BlocksT,
    c: &StagedChunk<'_, __m256, STAGED_VECTORS>,
    g: usize,
    q: usize,
    s: &mut StagedSums,
) {
    let (row0, blocks) = (q * t.mr, t.k / t.block);
    let mut p = [[_mm256_setzero_ps(); 2]; R];
    for (r, pr) in p.iter_mut().enumerate() {
        for (h, x) in pr.iter_mut().enumerate() {
            *x = s.p[row0 + r][2 * g + h];
        }
    }
    // SAFETY: panel q's steps k0..k0 + kc (mr floats a step); the decoded
    // chunk; sa's rows row0.. (the caller's contract).
    unsafe {
        let a = t.a.add(q * t.mr * t.k + c.k0 * t.mr);
        for u in 0..c.kc / 16 {
            for kk in 16 * u..16 * u + 16 {
                let at = c.w.add(kk * STAGED_WIDTH + 16 * g);
                let w = [_mm256_load_ps(at), _mm256_load_ps(at.add(8))];
                let ak = a.add(kk * t.mr);
                for (r, pr) in p.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*ak.add(r));
                    pr[0] = _mm256_fmadd_ps(x, w[0], pr[0]);
                    pr[1] = _mm256_fmadd_ps(x, w[1], pr[1]);
                }
            }
            if let Some(blk) = c.ends[u] {
                for (r, pr) in p.iter_mut().enumerate() {
                    let sa = _mm256_set1_ps(*t.sa.add((row0 + r) * blocks + blk));
                    for (h, ph) in pr.iter_mut().enumerate() {
                        let scale = _mm256_mul_ps(sa, c.sbv[u][2 * g + h]);
                        let acc = &mut s.acc[row0 + r][2 * g + h];
                        *acc = _mm256_fmadd_ps(*ph, scale, *acc);
                        *ph = _mm256_setzero_ps();
                    }
                }
            }
        }
    }
    for (r, pr) in p.iter().enumerate() {
        for (h, x) in pr.iter().enumerate() {
            s.p[row0 + r][2 * g + h] = *x;
        }
    }
}

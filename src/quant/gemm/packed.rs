//! Pre-packed int8 weights for the integer GEMM at small batch
//! ([`qgemm_packed`]): the B operand packed once, as fbgemm's
//! `PackBMatrix` or gemmlowp's prepacked matrices, with its column sums.

use super::{qgemm, validate, QEpilogue, QMatRef, QOutput, RowCorrection};
use crate::cpu::entry_and_portable_twin;
use crate::gemm::driver::{par_split, task_count};
use crate::gemm::Parallelism;
use crate::quant::QInt;
use crate::tensor::{MatMut, MatRef};
use crate::Error;

/// Columns of B per packed group (one AVX2 register of i32 sums).
const GROUP: usize = 8;

/// Rows of A up to which [`qgemm_packed`] streams the packed weights; past
/// it the blocked engine, which reuses each weight across rows, is faster.
/// On Zen 4 (K = N = 4096, one thread) streaming takes 16.2 ms at M = 128
/// (unpacking B, 9.9 ms, then the blocked engine: about 38 ms) and both
/// take about 66 ms at M = 512.
const PACKED_MAX_ROWS: usize = 512;

/// An int8 B operand (`K × N`, as [`qgemm`] takes it) packed once for
/// products with few rows: groups of eight columns, interleaved four
/// values of k at a time (one 32-byte load holds four k of eight outputs,
/// so each `vpmaddubsw`/`vpmaddwd` lane belongs to one output), the column
/// sums `Σ_k b[k, n]` that the zero-point corrections need, and B's zero
/// points. Reusable across calls and threads; the layout is private.
///
/// ```
/// use mixprec::quant::{qgemm, qgemm_packed, PackedI8, QEpilogue, QMatRef};
/// use mixprec::gemm::Parallelism;
/// use mixprec::{MatMut, MatRef};
/// let b: Vec<i8> = (0..6 * 10).map(|i| (i % 7) as i8 - 3).collect(); // K = 6, N = 10
/// let a: Vec<u8> = (0..6).map(|i| 100 + i as u8).collect();           // M = 1
/// let packed = PackedI8::new(MatRef::from_row_major(&b, 6, 10)?, &[0])?;
/// let (mut c1, mut c2) = ([0i32; 10], [0i32; 10]);
/// let a = QMatRef::new(MatRef::from_row_major(&a, 1, 6)?, &[128])?;
/// qgemm_packed(a, &packed, MatMut::from_row_major(&mut c1, 1, 10)?, &QEpilogue::I32, Parallelism::Serial)?;
/// let b = QMatRef::new(MatRef::from_row_major(&b, 6, 10)?, &[0])?;
/// qgemm(a, b, MatMut::from_row_major(&mut c2, 1, 10)?, &QEpilogue::I32, Parallelism::Serial)?;
/// assert_eq!(c1, c2);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedI8 {
    k: usize,
    n: usize,
    /// Per group, per 4 values of k (K rounded up to 4, zero-padded): 32
    /// bytes; byte `4j + i` is b[4q + i, 8g + j] (padding columns: 0).
    codes: Vec<i8>,
    /// Σ_k b[k, n] per column.
    column_sums: Vec<i32>,
    zero_points: Vec<i32>,
}

impl PackedI8 {
    /// Packs `b` (`K × N`, any strides) with its zero points (1 or N).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for zero points whose count is not 1 or
    /// N; [`Error::InvalidParameter`] for a zero point outside −128..=127.
    pub fn new(b: MatRef<'_, i8>, zero_points: &[i32]) -> Result<Self, Error> {
        let (k, n) = (b.rows(), b.cols());
        if zero_points.len() != 1 && zero_points.len() != n {
            return Err(Error::LengthMismatch {
                what: "PackedI8 zero points (1 or N)",
                expected: n,
                actual: zero_points.len(),
            });
        }
        for &z in zero_points {
            crate::quant::check_scale_zp(1.0, z, -128, 127)?;
        }
        let k4 = k.div_ceil(4) * 4;
        let groups = n.div_ceil(GROUP);
        // k4 · 8 · groups <= (k + 3) · (n + 7): the view's own product
        // (checked when it was made) plus a little.
        let len = crate::error::checked_numel(&[k4, groups, GROUP])?;
        let mut codes = vec![0i8; len];
        let mut column_sums = vec![0i32; n];
        for (j, sum) in column_sums.iter_mut().enumerate() {
            let (g, jj) = (j / GROUP, j % GROUP);
            for kk in 0..k {
                let v = b.at(kk, j);
                codes[(g * k4 / 4 + kk / 4) * 32 + 4 * jj + kk % 4] = v;
                *sum = sum.wrapping_add(i32::from(v));
            }
        }
        Ok(Self {
            k,
            n,
            codes,
            column_sums,
            zero_points: zero_points.to_vec(),
        })
    }

    /// K (rows of B).
    pub fn k(&self) -> usize {
        self.k
    }

    /// N (columns of B).
    pub fn n(&self) -> usize {
        self.n
    }

    /// B's zero points (1 or N).
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }

    /// `Σ_k b[k, n]` for each column (wrapping in i32, as the corrections
    /// use it: exact wherever [`qgemm`]'s K limit holds).
    pub fn column_sums(&self) -> &[i32] {
        &self.column_sums
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + 4 * (self.column_sums.len() + self.zero_points.len())
    }

    /// B back as a `K × N` row-major matrix.
    pub fn to_row_major(&self) -> Vec<i8> {
        let (k, n) = (self.k, self.n);
        let runs = k.div_ceil(4);
        let mut out = vec![0i8; k * n];
        if n == 0 {
            return out;
        }
        // 64 runs (256 rows of B) at a time, group by group: each group's
        // runs are read in order (2 KiB), each run's 32 bytes give 8 bytes
        // of 4 rows, and the 256 rows being written stay cached.
        const RUNS: usize = 64;
        for q0 in (0..runs).step_by(RUNS) {
            let q1 = runs.min(q0 + RUNS);
            for (g, group) in self.codes.chunks_exact(runs * 32).enumerate() {
                let (j0, cols) = (g * GROUP, GROUP.min(n - g * GROUP));
                for q in q0..q1 {
                    let run = &group[q * 32..(q + 1) * 32];
                    let rows = &mut out[4 * q * n..(4 * q + 4.min(k - 4 * q)) * n];
                    for (i, row) in rows.chunks_exact_mut(n).enumerate() {
                        for (jj, d) in row[j0..j0 + cols].iter_mut().enumerate() {
                            *d = run[4 * jj + i];
                        }
                    }
                }
            }
        }
        out
    }
}

entry_and_portable_twin! {
    /// [`qgemm`] with B packed once by [`PackedI8`]: the same contract, the
    /// same (exact) results. Up to 512 rows of A it streams the packed
    /// weights, four rows of A per pass (`vpdpbusd` with AVX-512 VNNI; else
    /// u8 activations ≤ 127 through `vpmaddubsw`, any other i8/u8 through
    /// `vpmaddwd` on i16, never saturating), which is what batch-1 inference
    /// needs; with more rows it unpacks B and calls [`qgemm`].
    ///
    /// # Errors
    /// As [`qgemm`].
    pub fn qgemm_packed / qgemm_packed_portable<A: QInt, O: QOutput>(
        a: QMatRef<'_, A>,
        b: &PackedI8,
        c: MatMut<'_, O>,
        epilogue: &QEpilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => packed_on
}

fn packed_on<A: QInt, O: QOutput>(
    a: QMatRef<'_, A>,
    b: &PackedI8,
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    let b_shape = QMatRef {
        values: MatRef::<i8>::shape_only(b.k, b.n),
        zero_points: &b.zero_points,
    };
    validate(&a, &b_shape, &c, epilogue, parallelism)?;
    if a.values.rows() > PACKED_MAX_ROWS {
        let unpacked = b.to_row_major();
        let bm = QMatRef {
            values: MatRef::from_row_major(&unpacked, b.k, b.n)?,
            zero_points: &b.zero_points,
        };
        return qgemm(a, bm, c, epilogue, parallelism);
    }
    run_packed(a.values, a.zero_points, b, c, epilogue, parallelism, simd);
    Ok(())
}

/// A's rows converted by `f(value, row)` and zero-padded to `k4`, one
/// after another, and each row's sum of its raw values (wrapping, as the
/// corrections are taken mod 2^32). Row by row over slices when A's rows
/// are contiguous: this runs before the threads split the columns, so at
/// M = 1 it is serial time. Also the direct path's (`super::direct`).
pub(super) fn padded_rows<A: QInt, P: Copy + Default>(
    a: &MatRef<'_, A>,
    k4: usize,
    f: impl Fn(i32, usize) -> P,
) -> (Vec<P>, Vec<i32>) {
    let (m, k) = (a.rows(), a.cols());
    let mut out = vec![P::default(); m * k4];
    let mut sums = vec![0i32; m];
    if k4 == 0 {
        return (out, sums);
    }
    for (i, (row, sum)) in out.chunks_exact_mut(k4).zip(&mut sums).enumerate() {
        if a.col_stride() == 1 || k == 1 {
            let src = &a.as_slice()[i * a.row_stride()..][..k];
            for (d, &v) in row.iter_mut().zip(src) {
                *d = f(v.to_i32(), i);
            }
            *sum = src.iter().fold(0i32, |s, &v| s.wrapping_add(v.to_i32()));
        } else {
            for (kk, d) in row[..k].iter_mut().enumerate() {
                let v = a.at(i, kk).to_i32();
                *d = f(v, i);
                *sum = sum.wrapping_add(v);
            }
        }
    }
    (out, sums)
}

/// How A's rows are given to the kernels.
enum Rows {
    /// Unsigned bytes `a + offset` (for `vpdpbusd`).
    U8(Vec<u8>),
    /// u8 values ≤ 127 (for `vpmaddubsw`).
    U7(Vec<u8>),
    /// Any values, as i16 (for `vpmaddwd`).
    I16(Vec<i16>),
}

fn run_packed<A: QInt, O: QOutput>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: &PackedI8,
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.n);
    if m == 0 || n == 0 {
        return;
    }
    let k4 = k.div_ceil(4) * 4;
    // A's rows, zero-padded to k4, and their sums.
    #[cfg(target_arch = "x86_64")]
    let vnni = simd && crate::cpu::has_avx512();
    #[cfg(not(target_arch = "x86_64"))]
    let vnni = false;
    #[cfg(target_arch = "x86_64")]
    let seven = simd && !vnni && A::QMIN == 0 && super::fits_seven_bits(&a);
    #[cfg(not(target_arch = "x86_64"))]
    let seven = false;
    // With `vpdpbusd`, i8 values enter as a + 128 (`RowCorrection` shifts
    // the zero point and the row sum to match).
    let offset = if vnni && A::QMIN < 0 { 128 } else { 0 };
    let (rows, row_sums) = if vnni {
        let (rows, sums) = padded_rows(&a, k4, |v, _| (v + offset) as u8);
        (Rows::U8(rows), sums)
    } else if seven {
        let (rows, sums) = padded_rows(&a, k4, |v, _| v as u8);
        (Rows::U7(rows), sums)
    } else {
        let (rows, sums) = padded_rows(&a, k4, |v, _| v as i16);
        (Rows::I16(rows), sums)
    };
    let pick = |v: &[i32], i: usize| v[if v.len() == 1 { 0 } else { i }];
    let tasks = task_count(m, n, k, parallelism);
    par_split(c, (0, 0), tasks, (1, GROUP), &|(r0, c0), mut part| {
        let (mp, np) = (part.rows(), part.cols());
        for (gi, j0) in (0..np).step_by(GROUP).enumerate() {
            let g = c0 / GROUP + gi;
            let codes = &b.codes[g * k4 * GROUP..(g + 1) * k4 * GROUP];
            // Rows in fours (each load of weights serves all four), the
            // rest one at a time.
            let mut i0 = 0;
            while i0 < mp {
                let slab = if mp - i0 >= ROWS { ROWS } else { 1 };
                let mut raw = [[0i32; 8]; ROWS];
                match (&rows, slab) {
                    (Rows::U8(v), ROWS) => {
                        raw = dots8_u8(
                            codes,
                            std::array::from_fn(|t| row_of(v, r0 + i0 + t, k4)),
                            simd,
                        )
                    }
                    (Rows::U8(v), _) => raw[0] = dots8_u8(codes, [row_of(v, r0 + i0, k4)], simd)[0],
                    (Rows::U7(v), ROWS) => {
                        raw = dots8_u7(
                            codes,
                            std::array::from_fn(|t| row_of(v, r0 + i0 + t, k4)),
                            simd,
                        )
                    }
                    (Rows::I16(v), ROWS) => {
                        raw = dots8_i16(
                            codes,
                            std::array::from_fn(|t| row_of(v, r0 + i0 + t, k4)),
                            simd,
                        )
                    }
                    (Rows::U7(v), _) => raw[0] = dots8_u7(codes, [row_of(v, r0 + i0, k4)], simd)[0],
                    (Rows::I16(v), _) => {
                        raw[0] = dots8_i16(codes, [row_of(v, r0 + i0, k4)], simd)[0]
                    }
                }
                for (t, raw_row) in raw.iter().enumerate().take(slab) {
                    let (i, r) = (i0 + t, r0 + i0 + t);
                    let correction = RowCorrection::new(pick(za, r), row_sums[r], k, offset);
                    for (jj, &s) in raw_row.iter().enumerate().take(np - j0) {
                        let col = c0 + j0 + jj;
                        let zc = pick(&b.zero_points, col);
                        let acc = correction.apply(s, zc, b.column_sums[col]);
                        part.set(i, j0 + jj, O::from_acc(acc, r, col, epilogue));
                    }
                }
                i0 += slab;
            }
        }
    });
}

/// Row `r` (of `k4` values) of A's buffer.
fn row_of<T>(v: &[T], r: usize, k4: usize) -> &[T] {
    &v[r * k4..(r + 1) * k4]
}

/// Rows of A per kernel call.
const ROWS: usize = 4;

/// Σ_k a_t[k]·b[k, j] (wrapping i32) for the eight columns of one group
/// and R rows of A; the rows hold u8 values ≤ 127.
fn dots8_u7<const R: usize>(codes: &[i8], a: [&[u8]; R], simd: bool) -> [[i32; 8]; R] {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return super::kernel::x86_avx2::packed_dots8_u7(codes, a);
    }
    let _ = simd;
    a.map(|row| dots8_portable(codes, row.iter().map(|&v| i32::from(v))))
}

/// As [`dots8_u7`] for any unsigned bytes (`vpdpbusd`; only called when
/// the CPU has AVX-512 VNNI).
fn dots8_u8<const R: usize>(codes: &[i8], a: [&[u8]; R], simd: bool) -> [[i32; 8]; R] {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return super::kernel::x86_vnni::packed_dots8_vnni(codes, a);
    }
    let _ = simd;
    a.map(|row| dots8_portable(codes, row.iter().map(|&v| i32::from(v))))
}

/// As [`dots8_u7`] for any values, given as i16.
fn dots8_i16<const R: usize>(codes: &[i8], a: [&[i16]; R], simd: bool) -> [[i32; 8]; R] {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return super::kernel::x86_avx2::packed_dots8_i16(codes, a);
    }
    let _ = simd;
    a.map(|row| dots8_portable(codes, row.iter().map(|&v| i32::from(v))))
}

fn dots8_portable(codes: &[i8], a: impl Iterator<Item = i32>) -> [i32; 8] {
    let mut out = [0i32; 8];
    for (kk, av) in a.enumerate() {
        let run = &codes[(kk / 4) * 32..];
        for (j, o) in out.iter_mut().enumerate() {
            *o = o.wrapping_add(av * i32::from(run[4 * j + kk % 4]));
        }
    }
    out
}

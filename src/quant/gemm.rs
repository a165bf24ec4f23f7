//! The integer GEMM: `C = epilogue(Σ_k (a[m,k] − za)(b[k,n] − zb))`, exact.
//!
//! The sum is exact in i32: [`max_k`] gives the largest K for which no
//! partial sum can leave the i32 range, and a longer K is an error. The
//! driver mirrors the float engine: K-tiles of [`crate::gemm::ARRAY_ROWS`],
//! packed panels, threads over M or N.
//!
//! Zero points are subtracted while packing: the operands are widened to
//! i16 anyway (for `vpmaddwd`), and `a − za`, `b − zb` fit in i16, so the
//! row- and column-sum corrections gemmlowp applies after an 8-bit product
//! are not needed; the result is the same exact integer.

use super::requant::requantize;
use super::QInt;
use crate::dtype::Element;
use crate::gemm::driver::{par_split, task_count};
use crate::gemm::{validate_views, Parallelism, ARRAY_ROWS};
use crate::tensor::{MatMut, MatRef};
use crate::Error;
use std::cell::RefCell;

/// What happens to the exact i32 sum of each output element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QEpilogue<'a> {
    /// i32 out: the sum itself.
    I32,
    /// f32 out: `y = (acc as f32) · (a_scales[m] · b_scales[n]) + bias[n]`,
    /// each product and the sum rounded once in f32 (`acc as f32` is exact
    /// while |acc| ≤ 2^24). Scales have length 1 (per tensor) or M (per row
    /// of A) and 1 or N (per column of B).
    Dequantize {
        /// Scales of A: 1 or M.
        a_scales: &'a [f32],
        /// Scales of B: 1 or N.
        b_scales: &'a [f32],
        /// Optional f32 bias, length N.
        bias: Option<&'a [f32]>,
    },
    /// i8/u8 out: `clamp(zero_point + MultiplyByQuantizedMultiplier(acc +
    /// bias[n], multiplier, shift), qmin, qmax)` (the bias add saturates);
    /// see [`super::requant`]. Multipliers and shifts: 1 or N.
    Requantize {
        /// Optional i32 bias (in units of `scale_a·scale_b`), length N.
        bias: Option<&'a [i32]>,
        /// Q31 multipliers from [`super::requant::quantize_multiplier`].
        multipliers: &'a [i32],
        /// Their shifts.
        shifts: &'a [i32],
        /// Zero point of the output.
        zero_point: i32,
    },
}

/// An output element type of the integer GEMM: `i32`, `f32`, `i8` or `u8`.
pub trait QOutput: Element + Copy + sealed::Sealed {
    /// Applies `epilogue` to the sum `acc` of output (row, col).
    #[doc(hidden)]
    fn from_acc(acc: i32, row: usize, col: usize, epilogue: &QEpilogue<'_>) -> Self;
    #[doc(hidden)]
    fn accepts(epilogue: &QEpilogue<'_>) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for f32 {}
    impl Sealed for i8 {}
    impl Sealed for u8 {}
}

fn pick<T: Copy>(v: &[T], i: usize) -> T {
    v[if v.len() == 1 { 0 } else { i }]
}

impl QOutput for i32 {
    fn from_acc(acc: i32, _: usize, _: usize, _: &QEpilogue<'_>) -> Self {
        acc
    }
    fn accepts(e: &QEpilogue<'_>) -> bool {
        matches!(e, QEpilogue::I32)
    }
}

impl QOutput for f32 {
    fn from_acc(acc: i32, row: usize, col: usize, e: &QEpilogue<'_>) -> Self {
        match e {
            QEpilogue::Dequantize {
                a_scales,
                b_scales,
                bias,
            } => {
                let scale = pick(a_scales, row) * pick(b_scales, col);
                let y = acc as f32 * scale;
                match bias {
                    Some(b) => y + b[col],
                    None => y,
                }
            }
            _ => acc as f32,
        }
    }
    fn accepts(e: &QEpilogue<'_>) -> bool {
        matches!(e, QEpilogue::Dequantize { .. })
    }
}

macro_rules! q8_output {
    ($t:ty) => {
        impl QOutput for $t {
            fn from_acc(acc: i32, _: usize, col: usize, e: &QEpilogue<'_>) -> Self {
                match e {
                    QEpilogue::Requantize {
                        bias,
                        multipliers,
                        shifts,
                        zero_point,
                    } => {
                        let v = match bias {
                            Some(b) => acc.saturating_add(b[col]),
                            None => acc,
                        };
                        let q = requantize(
                            v,
                            pick(multipliers, col),
                            pick(shifts, col),
                            *zero_point,
                            <$t as QInt>::QMIN,
                            <$t as QInt>::QMAX,
                        );
                        <$t as QInt>::from_i32_clamped(q)
                    }
                    _ => <$t as QInt>::from_i32_clamped(acc),
                }
            }
            fn accepts(e: &QEpilogue<'_>) -> bool {
                matches!(e, QEpilogue::Requantize { .. })
            }
        }
    };
}
q8_output!(i8);
q8_output!(u8);

/// The largest K whose sums are exact in i32 for these zero points:
/// `i32::MAX / (max|a − za| · max|b − zb|)`. For zero points 0 that is
/// 131071 for i8×i8 and 65793 for u8×i8.
pub fn max_k<A: QInt>(a_zero_point: i32, b_zero_point: i32) -> usize {
    let span_a = (A::QMAX - a_zero_point).max(a_zero_point - A::QMIN).max(1) as i64;
    let span_b = (i8::QMAX - b_zero_point)
        .max(b_zero_point - i8::QMIN)
        .max(1) as i64;
    (i32::MAX as i64 / (span_a * span_b)) as usize
}

fn check_len(what: &'static str, v_len: usize, one_or: usize) -> Result<(), Error> {
    if v_len == 1 || v_len == one_or {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected: one_or,
            actual: v_len,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn validate<A: QInt, O: QOutput>(
    a: &MatRef<'_, A>,
    a_zero_points: &[i32],
    b: &MatRef<'_, i8>,
    b_zero_points: &[i32],
    c: &MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    validate_views(a, b, c, parallelism)?;
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    check_len("qgemm: A zero points (1 or M)", a_zero_points.len(), m)?;
    check_len("qgemm: B zero points (1 or N)", b_zero_points.len(), n)?;
    for &z in a_zero_points {
        super::check_scale_zp(1.0, z, A::QMIN, A::QMAX)?;
    }
    for &z in b_zero_points {
        super::check_scale_zp(1.0, z, i8::QMIN, i8::QMAX)?;
    }
    let worst_a = a_zero_points
        .iter()
        .map(|&z| max_k::<A>(z, 0))
        .min()
        .unwrap_or(usize::MAX);
    let limit = a_zero_points
        .iter()
        .flat_map(|&za| b_zero_points.iter().map(move |&zb| max_k::<A>(za, zb)))
        .min()
        .unwrap_or(worst_a);
    if k > limit {
        return Err(Error::InvalidParameter {
            name: "K",
            value: k.to_string(),
            requirement: "at most max_k(zero points) so that i32 sums cannot overflow (131071 for i8×i8 with zero points 0)",
        });
    }
    if !O::accepts(epilogue) {
        return Err(Error::InvalidParameter {
            name: "QEpilogue",
            value: format!("{epilogue:?}"),
            requirement: "I32 for i32 output, Dequantize for f32, Requantize for i8/u8",
        });
    }
    match epilogue {
        QEpilogue::I32 => {}
        QEpilogue::Dequantize {
            a_scales,
            b_scales,
            bias,
        } => {
            check_len("qgemm: A scales (1 or M)", a_scales.len(), m)?;
            check_len("qgemm: B scales (1 or N)", b_scales.len(), n)?;
            for &s in a_scales.iter().chain(b_scales.iter()) {
                super::check_scale_zp(s, 0, 0, 0)?;
            }
            if let Some(b) = bias {
                if b.len() != n {
                    return Err(Error::LengthMismatch {
                        what: "qgemm: bias (length N)",
                        expected: n,
                        actual: b.len(),
                    });
                }
            }
        }
        QEpilogue::Requantize {
            bias,
            multipliers,
            shifts,
            zero_point,
        } => {
            check_len("qgemm: multipliers (1 or N)", multipliers.len(), n)?;
            if shifts.len() != multipliers.len() {
                return Err(Error::LengthMismatch {
                    what: "qgemm: shifts (one per multiplier)",
                    expected: multipliers.len(),
                    actual: shifts.len(),
                });
            }
            if let Some(&bad) = shifts.iter().find(|s| !(-31..=30).contains(*s)) {
                return Err(Error::InvalidParameter {
                    name: "shift",
                    value: bad.to_string(),
                    requirement: "in -31..=30",
                });
            }
            if let Some(&bad) = multipliers.iter().find(|&&m| m < 0) {
                return Err(Error::InvalidParameter {
                    name: "multiplier",
                    value: bad.to_string(),
                    requirement: ">= 0",
                });
            }
            let (lo, hi) = if O::DTYPE == crate::DType::U8 {
                (0, 255)
            } else {
                (-128, 127)
            };
            super::check_scale_zp(1.0, *zero_point, lo, hi)?;
            if let Some(b) = bias {
                if b.len() != n {
                    return Err(Error::LengthMismatch {
                        what: "qgemm: bias (length N)",
                        expected: n,
                        actual: b.len(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The integer GEMM: `c[m,n] = epilogue(Σ_k (a[m,k] − za[m]) · (b[k,n] − zb[n]))`,
/// the sum exact in i32. Zero points: 1 (per tensor) or M for A (per row,
/// as dynamic quantization gives), 1 or N for B (per output channel).
///
/// Errors: shape mismatches, zero points out of range, K above [`max_k`],
/// an epilogue that does not produce `O`, parameter lengths, overlapping
/// output, `Threads(0)`.
///
/// ```
/// use mixprec::quant::{qgemm, QEpilogue};
/// use mixprec::gemm::Parallelism;
/// use mixprec::{MatMut, MatRef};
/// let a: [u8; 4] = [130, 128, 0, 255]; // 2×2, zero point 128
/// let b: [i8; 4] = [1, -2, 3, 4];      // 2×2, zero point 0
/// let mut c = [0i32; 4];
/// qgemm(
///     MatRef::from_row_major(&a, 2, 2)?, &[128],
///     MatRef::from_row_major(&b, 2, 2)?, &[0],
///     MatMut::from_row_major(&mut c, 2, 2)?, &QEpilogue::I32, Parallelism::Serial,
/// )?;
/// assert_eq!(c, [2, -4, -128 + 381, 256 + 508]);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn qgemm<A: QInt, O: QOutput>(
    a: MatRef<'_, A>,
    a_zero_points: &[i32],
    b: MatRef<'_, i8>,
    b_zero_points: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    qgemm_on(
        a,
        a_zero_points,
        b,
        b_zero_points,
        c,
        epilogue,
        parallelism,
        crate::cpu::has_avx2_fma_f16c(),
    )
}

#[allow(clippy::too_many_arguments)]
fn qgemm_on<A: QInt, O: QOutput>(
    a: MatRef<'_, A>,
    a_zero_points: &[i32],
    b: MatRef<'_, i8>,
    b_zero_points: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    validate(
        &a,
        a_zero_points,
        &b,
        b_zero_points,
        &c,
        epilogue,
        parallelism,
    )?;
    run(
        a,
        a_zero_points,
        b,
        b_zero_points,
        c,
        epilogue,
        parallelism,
        simd,
    );
    Ok(())
}

/// [`qgemm`] forced onto the portable kernel, for testing the fallback.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn qgemm_portable<A: QInt, O: QOutput>(
    a: MatRef<'_, A>,
    a_zero_points: &[i32],
    b: MatRef<'_, i8>,
    b_zero_points: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    qgemm_on(
        a,
        a_zero_points,
        b,
        b_zero_points,
        c,
        epilogue,
        parallelism,
        false,
    )
}

/// The definition, as plain loops: the sum in i64 (exact; it fits i32 by
/// the K limit), then the epilogue. Same checks as [`qgemm`].
pub fn qgemm_reference<A: QInt, O: QOutput>(
    a: MatRef<'_, A>,
    a_zero_points: &[i32],
    b: MatRef<'_, i8>,
    b_zero_points: &[i32],
    mut c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
) -> Result<(), Error> {
    validate(
        &a,
        a_zero_points,
        &b,
        b_zero_points,
        &c,
        epilogue,
        Parallelism::Serial,
    )?;
    for i in 0..a.rows() {
        for j in 0..b.cols() {
            let (za, zb) = (pick(a_zero_points, i) as i64, pick(b_zero_points, j) as i64);
            let sum: i64 = (0..a.cols())
                .map(|k| (a.at(i, k).to_i32() as i64 - za) * (b.at(k, j) as i64 - zb))
                .sum();
            c.set(i, j, O::from_acc(sum as i32, i, j, epilogue));
        }
    }
    Ok(())
}

/// An integer micro-kernel over K-pairs: `acc (+)= Σ_t a_pair·b_pair` for an
/// `MR × NR` block, operands as i16 pairs (k, k+1) interleaved.
pub(crate) trait IntKernel {
    const MR: usize;
    const NR: usize;
    /// `a`: for each pair t, MR pairs (row r at `2r`); `b`: for each pair t,
    /// NR pairs (column j at `2j`); `acc` rows at stride `ld`.
    fn tile(pairs: usize, a: &[i16], b: &[i16], acc: &mut [i32], ld: usize, first: bool);
}

/// Portable integer kernel: 4×8, plain i32 arithmetic (exact).
struct PortableInt;

impl IntKernel for PortableInt {
    const MR: usize = 4;
    const NR: usize = 8;
    fn tile(pairs: usize, a: &[i16], b: &[i16], acc: &mut [i32], ld: usize, first: bool) {
        let mut p = [[0i32; 8]; 4];
        for (ak, bk) in a
            .chunks_exact(2 * Self::MR)
            .zip(b.chunks_exact(2 * Self::NR))
            .take(pairs)
        {
            for (r, row) in p.iter_mut().enumerate() {
                let (a0, a1) = (ak[2 * r] as i32, ak[2 * r + 1] as i32);
                for (j, v) in row.iter_mut().enumerate() {
                    *v += a0 * bk[2 * j] as i32 + a1 * bk[2 * j + 1] as i32;
                }
            }
        }
        for (r, row) in p.iter().enumerate() {
            for (d, &v) in acc[r * ld..r * ld + Self::NR].iter_mut().zip(row) {
                *d = if first { v } else { d.wrapping_add(v) };
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run<A: QInt, O: QOutput>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: MatRef<'_, i8>,
    zb: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return run_with::<A, O, super::x86_avx2::Avx2Int>(a, za, b, zb, c, epilogue, parallelism);
    }
    let _ = simd;
    run_with::<A, O, PortableInt>(a, za, b, zb, c, epilogue, parallelism)
}

const MC: usize = 96;
const NC: usize = 512;

#[derive(Default)]
struct IntWorkspace {
    a: Vec<i16>,
    b: Vec<i16>,
    acc: Vec<i32>,
}

thread_local! {
    static INT_WORKSPACE: RefCell<IntWorkspace> = RefCell::new(IntWorkspace::default());
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

#[allow(clippy::too_many_arguments)]
fn run_with<A: QInt, O: QOutput, K: IntKernel>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: MatRef<'_, i8>,
    zb: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    if m == 0 || n == 0 {
        return;
    }
    let tasks = task_count(m, n, k, parallelism);
    par_split(c, (0, 0), tasks, (K::MR, K::NR), &|(r0, c0), part| {
        let (a, b) = (a.sub(r0, part.rows(), 0, k), b.sub(0, k, c0, part.cols()));
        INT_WORKSPACE.with(|ws| match ws.try_borrow_mut() {
            Ok(mut ws) => serial::<A, O, K>(a, za, b, zb, part, (r0, c0), epilogue, &mut ws),
            Err(_) => serial::<A, O, K>(
                a,
                za,
                b,
                zb,
                part,
                (r0, c0),
                epilogue,
                &mut IntWorkspace::default(),
            ),
        })
    });
}

#[allow(clippy::too_many_arguments)]
fn serial<A: QInt, O: QOutput, K: IntKernel>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: MatRef<'_, i8>,
    zb: &[i32],
    mut c: MatMut<'_, O>,
    (row0, col0): (usize, usize),
    epilogue: &QEpilogue<'_>,
    ws: &mut IntWorkspace,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let pairs = k.div_ceil(2);
    let IntWorkspace {
        a: a_buf,
        b: b_buf,
        acc: acc_buf,
    } = ws;
    if pairs == 0 {
        // K = 0: every sum is 0.
        for i in 0..m {
            for j in 0..n {
                c.set(i, j, O::from_acc(0, row0 + i, col0 + j, epilogue));
            }
        }
        return;
    }
    for jc in (0..n).step_by(NC) {
        let nb = NC.min(n - jc);
        let nb_pad = nb.div_ceil(K::NR) * K::NR;
        let packed_b = grow(b_buf, nb_pad * 2 * pairs);
        pack_b(&b, zb, col0 + jc, jc, nb, K::NR, packed_b);
        for ic in (0..m).step_by(MC) {
            let mb = MC.min(m - ic);
            let mb_pad = mb.div_ceil(K::MR) * K::MR;
            let packed_a = grow(a_buf, mb_pad * 2 * pairs);
            pack_a(&a, za, row0 + ic, ic, mb, K::MR, packed_a);
            let acc = grow(acc_buf, mb_pad * nb_pad);
            // K-tiles of ARRAY_ROWS (an even number, so pairs never straddle tiles).
            for t0 in (0..pairs).step_by(ARRAY_ROWS / 2) {
                let tp = (ARRAY_ROWS / 2).min(pairs - t0);
                for (p, b_panel) in packed_b.chunks_exact(2 * pairs * K::NR).enumerate() {
                    let b_tile = &b_panel[2 * t0 * K::NR..2 * (t0 + tp) * K::NR];
                    for (q, a_panel) in packed_a.chunks_exact(2 * pairs * K::MR).enumerate() {
                        let a_tile = &a_panel[2 * t0 * K::MR..2 * (t0 + tp) * K::MR];
                        let at = q * K::MR * nb_pad + p * K::NR;
                        K::tile(tp, a_tile, b_tile, &mut acc[at..], nb_pad, t0 == 0);
                    }
                }
            }
            for i in 0..mb {
                for j in 0..nb {
                    let v =
                        O::from_acc(acc[i * nb_pad + j], row0 + ic + i, col0 + jc + j, epilogue);
                    c.set(ic + i, jc + j, v);
                }
            }
        }
    }
}

/// Packs rows `i0..i0 + mb` of A as i16 `a − za[row]`, MR-row panels of
/// k-pairs (`panel[t·MR + r] = [a(r, 2t), a(r, 2t+1)]`); zero padding past
/// `mb` rows and past K.
fn pack_a<A: QInt>(
    a: &MatRef<'_, A>,
    za: &[i32],
    global_i0: usize,
    i0: usize,
    mb: usize,
    mr: usize,
    dst: &mut [i16],
) {
    let k = a.cols();
    let pairs = k.div_ceil(2);
    let (rs, cs, data) = (a.row_stride(), a.col_stride(), a.as_slice());
    for (q, panel) in dst.chunks_exact_mut(2 * pairs * mr).enumerate() {
        for r in 0..mr {
            let i = q * mr + r;
            let slots = panel[2 * r..].chunks_mut(2 * mr).take(pairs);
            if i >= mb {
                for slot in slots {
                    slot[..2].fill(0);
                }
                continue;
            }
            let z = pick(za, global_i0 + i);
            let start = (i0 + i) * rs;
            let value = |kk: usize| {
                if kk < k {
                    (data[start + kk * cs].to_i32() - z) as i16
                } else {
                    0
                }
            };
            if cs == 1 {
                // Contiguous row: read it pairwise.
                let row = &data[start..start + k];
                let mut pairs_in = row.chunks_exact(2);
                let mut slots = slots;
                // `pairs_in` first: zip stops on it without consuming a slot.
                for (pr, slot) in (&mut pairs_in).zip(&mut slots) {
                    slot[0] = (pr[0].to_i32() - z) as i16;
                    slot[1] = (pr[1].to_i32() - z) as i16;
                }
                if let (Some(slot), [last]) = (slots.next(), pairs_in.remainder()) {
                    slot[0] = (last.to_i32() - z) as i16;
                    slot[1] = 0;
                }
            } else {
                for (t, slot) in slots.enumerate() {
                    slot[0] = value(2 * t);
                    slot[1] = value(2 * t + 1);
                }
            }
        }
    }
}

/// Packs columns `j0..j0 + nb` of B as i16 `b − zb[col]`, NR-column panels
/// of k-pairs (`panel[t·NR + j] = [b(2t, j), b(2t+1, j)]`); zero padding
/// past `nb` columns and past K.
fn pack_b(
    b: &MatRef<'_, i8>,
    zb: &[i32],
    global_j0: usize,
    j0: usize,
    nb: usize,
    nr: usize,
    dst: &mut [i16],
) {
    let k = b.rows();
    let pairs = k.div_ceil(2);
    let (rs, cs, data) = (b.row_stride(), b.col_stride(), b.as_slice());
    let zero_of = |j: usize| pick(zb, global_j0 + j);
    for (p, panel) in dst.chunks_exact_mut(2 * pairs * nr).enumerate() {
        let live = nr.min(nb - p * nr);
        for t in 0..pairs {
            let slot = &mut panel[2 * t * nr..2 * (t + 1) * nr];
            let (k0, k1) = (2 * t, 2 * t + 1);
            if cs == 1 {
                // Two contiguous row segments, interleaved.
                let row0 = &data[k0 * rs + j0 + p * nr..][..live];
                let has1 = k1 < k;
                for (r, &v0) in row0.iter().enumerate() {
                    let z = zero_of(p * nr + r);
                    let v1 = if has1 {
                        data[k1 * rs + j0 + p * nr + r] as i32 - z
                    } else {
                        0
                    };
                    slot[2 * r] = (v0 as i32 - z) as i16;
                    slot[2 * r + 1] = v1 as i16;
                }
            } else {
                for r in 0..live {
                    let (j, z) = (j0 + p * nr + r, zero_of(p * nr + r));
                    slot[2 * r] = (data[k0 * rs + j * cs] as i32 - z) as i16;
                    slot[2 * r + 1] = if k1 < k {
                        (data[k1 * rs + j * cs] as i32 - z) as i16
                    } else {
                        0
                    };
                }
            }
            slot[2 * live..].fill(0);
        }
    }
}

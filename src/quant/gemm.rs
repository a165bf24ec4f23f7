//! The integer GEMM: `C = epilogue(Σ_k (a[m,k] − za)(b[k,n] − zb))`, exact.
//!
//! The sum is exact in i32: [`max_k`] gives the largest K for which no
//! partial sum can leave the i32 range, and a longer K is an error. The
//! driver mirrors the float engine: K-tiles of [`crate::gemm::ARRAY_ROWS`],
//! packed panels, threads over M or N.
//!
//! Two exact kernels, chosen at run time: the general one widens both
//! operands to i16 with the zero points subtracted while packing (`a − za`
//! and `b − zb` fit in i16) and uses `vpmaddwd`, so no correction terms are
//! needed; when A is u8 and every value is ≤ 127 (7-bit activations), raw
//! bytes go through `vpmaddubsw` (pair sums at most 2·127·128 = 32512, so
//! its i16 saturation never triggers) and the zero points are applied
//! afterwards with gemmlowp's row- and column-sum corrections,
//! `Σ(a−za)(b−zb) = Σab − zb·Σa − za·Σb + K·za·zb`, exact modulo 2^32 and
//! therefore exact within the K limit.

use super::requant::{check_multiplier, requantize_unchecked, RequantRounding};
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
        /// Which of TFLite's two rounding definitions
        /// ([`RequantRounding::Double`] is gemmlowp's).
        rounding: RequantRounding,
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
                        rounding,
                        bias,
                        multipliers,
                        shifts,
                        zero_point,
                    } => {
                        let v = match bias {
                            Some(b) => acc.saturating_add(b[col]),
                            None => acc,
                        };
                        // Multipliers and shifts were checked by `validate`.
                        let q = requantize_unchecked(
                            v,
                            pick(multipliers, col),
                            pick(shifts, col),
                            *zero_point,
                            <$t as QInt>::QMIN,
                            <$t as QInt>::QMAX,
                            *rounding,
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
/// `i32::MAX / (max|a − za| · max|b − zb|)` over A's storage range and
/// i8's. For zero points 0 that is 131071 for i8×i8 and 65793 for u8×i8.
/// Defined for every zero point (those outside the storage range give a
/// smaller limit; [`qgemm`] rejects them anyway).
///
/// ```
/// use mixprec::quant::max_k;
/// assert_eq!(max_k::<i8>(0, 0), 131_071);
/// assert_eq!(max_k::<u8>(0, 0), 65_793);
/// assert_eq!(max_k::<u8>(128, 0), 131_071);
/// ```
pub fn max_k<A: QInt>(a_zero_point: i32, b_zero_point: i32) -> usize {
    let span = |qmin: i32, qmax: i32, z: i32| {
        let (qmin, qmax, z) = (qmin as i64, qmax as i64, z as i64);
        (qmax - z).max(z - qmin).max(1)
    };
    let span_a = span(A::QMIN, A::QMAX, a_zero_point);
    let span_b = span(i8::QMIN, i8::QMAX, b_zero_point);
    (i32::MAX as i64 / span_a.saturating_mul(span_b)) as usize
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
pub(super) fn validate<A: QInt, O: QOutput>(
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
        return Err(Error::KTooLarge {
            what: "qgemm",
            k,
            max_k: limit,
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
            rounding: _,
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
            for (&m, &s) in multipliers.iter().zip(shifts.iter()) {
                check_multiplier(m, s)?;
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
///
/// # Errors
/// * [`Error::ShapeMismatch`], [`Error::Aliasing`] and `Threads(0)` as
///   [`crate::gemm::gemm`];
/// * [`Error::LengthMismatch`] for zero points, scales, multipliers, shifts
///   or bias of the wrong length;
/// * [`Error::InvalidParameter`] for a zero point outside its storage
///   range, a scale that is not finite and > 0, a negative multiplier, a
///   shift outside −31..=30, or an epilogue that does not produce `O`;
/// * [`Error::KTooLarge`] for K above [`max_k`] of the zero points (the
///   message names that limit).
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
///
/// # Errors
/// As [`qgemm`].
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
///
/// # Errors
/// As [`qgemm`].
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

/// An integer micro-kernel: `acc (+)= Σ a·b` for an `MR × NR` block over
/// groups of `GROUP` consecutive k, operands packed as `Packed` values.
///
/// Packed layouts: A panel `[(t·MR + r)·GROUP + g] = pack_a(a[r, t·GROUP + g])`,
/// B panel `[(t·NR + j)·GROUP + g] = pack_b(b[t·GROUP + g, j])`, zero past
/// the edges.
pub(crate) trait IntKernel {
    const MR: usize;
    const NR: usize;
    /// Consecutive k values combined by one instruction (2 or 4).
    const GROUP: usize;
    /// True when the zero points are subtracted while packing; false when
    /// raw values are multiplied and row/column-sum corrections applied.
    const SUBTRACTS_ZERO_POINTS: bool;
    /// The packed element type.
    type Packed: Copy + Default;
    /// A value of A with its zero point `z`, packed.
    fn pack_a(v: i32, z: i32) -> Self::Packed;
    /// A value of B with its zero point `z`, packed.
    fn pack_b(v: i32, z: i32) -> Self::Packed;
    /// `groups` k-groups of both panels into the accumulator block (rows at
    /// stride `ld`); `first` stores instead of adding.
    fn tile(
        groups: usize,
        a: &[Self::Packed],
        b: &[Self::Packed],
        acc: &mut [i32],
        ld: usize,
        first: bool,
    );
}

/// Portable integer kernel: 4×8 over k-pairs, plain i32 arithmetic (exact).
struct PortableInt;

impl IntKernel for PortableInt {
    const MR: usize = 4;
    const NR: usize = 8;
    const GROUP: usize = 2;
    const SUBTRACTS_ZERO_POINTS: bool = true;
    type Packed = i16;
    fn pack_a(v: i32, z: i32) -> i16 {
        (v - z) as i16
    }
    fn pack_b(v: i32, z: i32) -> i16 {
        (v - z) as i16
    }
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
        if A::QMIN == 0 && fits_seven_bits(&a) {
            return run_with::<A, O, super::x86_avx2::Avx2U7>(
                a,
                za,
                b,
                zb,
                c,
                epilogue,
                parallelism,
            );
        }
        return run_with::<A, O, super::x86_avx2::Avx2Int>(a, za, b, zb, c, epilogue, parallelism);
    }
    let _ = simd;
    run_with::<A, O, PortableInt>(a, za, b, zb, c, epilogue, parallelism)
}

/// True when every value of a u8 A is at most 127: then `vpmaddubsw` pair
/// sums (at most 2·127·128 = 32512) cannot saturate, so the faster u8×i8
/// kernel is exact. Dynamic quantization with a 7-bit range (PyTorch's
/// `reduce_range`) always gives such activations.
#[cfg(target_arch = "x86_64")]
pub(super) fn fits_seven_bits<A: QInt>(a: &MatRef<'_, A>) -> bool {
    if a.rows() == 0 || a.cols() == 0 {
        return true;
    }
    if a.col_stride() == 1 || a.cols() == 1 {
        let data = a.as_slice();
        (0..a.rows()).all(|i| {
            data[i * a.row_stride()..][..a.cols()]
                .iter()
                .all(|v| v.to_i32() <= 127)
        })
    } else {
        (0..a.rows()).all(|i| (0..a.cols()).all(|kk| a.at(i, kk).to_i32() <= 127))
    }
}

const MC: usize = 96;
const NC: usize = 512;

/// Packing buffers (one pair per packed type), the accumulator block and
/// the sums for zero-point corrections, kept per thread.
#[derive(Default)]
struct IntWorkspace {
    a16: Vec<i16>,
    b16: Vec<i16>,
    a8: Vec<u8>,
    b8: Vec<u8>,
    acc: Vec<i32>,
    row_sums: Vec<i32>,
    col_sums: Vec<i32>,
}

/// The buffers one packed type uses, borrowed from the workspace.
struct Buffers<'w, P> {
    a: &'w mut Vec<P>,
    b: &'w mut Vec<P>,
    acc: &'w mut Vec<i32>,
    row_sums: &'w mut Vec<i32>,
    col_sums: &'w mut Vec<i32>,
}

/// The packing buffers of one packed type.
trait PackBuffers<P> {
    fn buffers(&mut self) -> Buffers<'_, P>;
}

impl PackBuffers<i16> for IntWorkspace {
    fn buffers(&mut self) -> Buffers<'_, i16> {
        Buffers {
            a: &mut self.a16,
            b: &mut self.b16,
            acc: &mut self.acc,
            row_sums: &mut self.row_sums,
            col_sums: &mut self.col_sums,
        }
    }
}

impl PackBuffers<u8> for IntWorkspace {
    fn buffers(&mut self) -> Buffers<'_, u8> {
        Buffers {
            a: &mut self.a8,
            b: &mut self.b8,
            acc: &mut self.acc,
            row_sums: &mut self.row_sums,
            col_sums: &mut self.col_sums,
        }
    }
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
) where
    IntWorkspace: PackBuffers<K::Packed>,
{
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
) where
    IntWorkspace: PackBuffers<K::Packed>,
{
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let groups = k.div_ceil(K::GROUP);
    if groups == 0 {
        // K = 0: every sum is 0.
        for i in 0..m {
            for j in 0..n {
                c.set(i, j, O::from_acc(0, row0 + i, col0 + j, epilogue));
            }
        }
        return;
    }
    let Buffers {
        a: a_buf,
        b: b_buf,
        acc: acc_buf,
        row_sums: row_buf,
        col_sums: col_buf,
    } = <IntWorkspace as PackBuffers<K::Packed>>::buffers(ws);
    let tile_groups = ARRAY_ROWS / K::GROUP;
    for jc in (0..n).step_by(NC) {
        let nb = NC.min(n - jc);
        let nb_pad = nb.div_ceil(K::NR) * K::NR;
        let packed_b = grow(b_buf, nb_pad * K::GROUP * groups);
        let col_sums = grow(col_buf, nb);
        let sums = (!K::SUBTRACTS_ZERO_POINTS).then_some(&mut col_sums[..]);
        pack::<i8, K::Packed>(
            &b.t(),
            zb,
            col0 + jc,
            jc,
            nb,
            K::NR,
            K::GROUP,
            packed_b,
            K::pack_b,
            sums,
        );
        for ic in (0..m).step_by(MC) {
            let mb = MC.min(m - ic);
            let mb_pad = mb.div_ceil(K::MR) * K::MR;
            let packed_a = grow(a_buf, mb_pad * K::GROUP * groups);
            let row_sums = grow(row_buf, mb);
            let sums = (!K::SUBTRACTS_ZERO_POINTS).then_some(&mut row_sums[..]);
            pack::<A, K::Packed>(
                &a,
                za,
                row0 + ic,
                ic,
                mb,
                K::MR,
                K::GROUP,
                packed_a,
                K::pack_a,
                sums,
            );
            let acc = grow(acc_buf, mb_pad * nb_pad);
            // K-tiles of ARRAY_ROWS (a multiple of every group size).
            for t0 in (0..groups).step_by(tile_groups) {
                let tg = tile_groups.min(groups - t0);
                for (p, b_panel) in packed_b.chunks_exact(K::GROUP * groups * K::NR).enumerate() {
                    let b_tile = &b_panel[K::GROUP * t0 * K::NR..K::GROUP * (t0 + tg) * K::NR];
                    for (q, a_panel) in packed_a.chunks_exact(K::GROUP * groups * K::MR).enumerate()
                    {
                        let a_tile = &a_panel[K::GROUP * t0 * K::MR..K::GROUP * (t0 + tg) * K::MR];
                        let at = q * K::MR * nb_pad + p * K::NR;
                        K::tile(tg, a_tile, b_tile, &mut acc[at..], nb_pad, t0 == 0);
                    }
                }
            }
            let (rs, cs) = (c.row_stride(), c.col_stride());
            let out = c.as_mut_slice();
            for i in 0..mb {
                let acc_row = &acc[i * nb_pad..i * nb_pad + nb];
                let start = (ic + i) * rs + jc * cs;
                let z_a = pick(za, row0 + ic + i);
                for (j, &v) in acc_row.iter().enumerate() {
                    let v = if K::SUBTRACTS_ZERO_POINTS {
                        v
                    } else {
                        // Σ(a−za)(b−zb) = Σab − zb·Σa − za·Σb + K·za·zb, exact mod 2^32.
                        let z_b = pick(zb, col0 + jc + j);
                        v.wrapping_sub(z_b.wrapping_mul(row_sums[i]))
                            .wrapping_sub(z_a.wrapping_mul(col_sums[j]))
                            .wrapping_add((k as i32).wrapping_mul(z_a).wrapping_mul(z_b))
                    };
                    out[start + j * cs] = O::from_acc(v, row0 + ic + i, col0 + jc + j, epilogue);
                }
            }
        }
    }
}

/// Packs `len` rows (from `i0`) of `src` into `unit`-row panels of
/// `group`-long k-groups: `panel[(t·unit + r)·group + g] =
/// f(src[i0 + q·unit + r, t·group + g], z[row])`, zero past the edges. B is
/// packed through its transpose. Fast paths for either unit stride.
#[allow(clippy::too_many_arguments)]
fn pack<S: QInt, P: Copy + Default>(
    src: &MatRef<'_, S>,
    zero_points: &[i32],
    global_i0: usize,
    i0: usize,
    len: usize,
    unit: usize,
    group: usize,
    dst: &mut [P],
    f: impl Fn(i32, i32) -> P,
    mut sums: Option<&mut [i32]>,
) {
    let k = src.cols();
    let groups = k.div_ceil(group);
    let (rs, cs, data) = (src.row_stride(), src.col_stride(), src.as_slice());
    dst.fill(P::default());
    if let Some(s) = sums.as_deref_mut() {
        s.fill(0);
    }
    let panel_len = group * groups * unit;
    let panels = len.div_ceil(unit);
    if rs == 1 && len > 1 {
        // Columns contiguous (B row-major, seen through its transpose):
        // walk k outer, rows inner, no divisions in the loops.
        let zs: Vec<i32> = (0..len).map(|i| pick(zero_points, global_i0 + i)).collect();
        // Panel by panel, so the writes of one panel are contiguous.
        for q in 0..panels {
            let rows = unit.min(len - q * unit);
            let zq = &zs[q * unit..q * unit + rows];
            for t in 0..groups {
                let base = q * panel_len + t * unit * group;
                for g in 0..group.min(k - t * group) {
                    let kk = t * group + g;
                    let seg = &data[i0 + kk * cs + q * unit..i0 + kk * cs + q * unit + rows];
                    let targets = dst[base + g..].iter_mut().step_by(group);
                    for (d, (&v, &z)) in targets.zip(seg.iter().zip(zq)) {
                        *d = f(v.to_i32(), z);
                    }
                    if let Some(s) = sums.as_deref_mut() {
                        for (acc, &v) in s[q * unit..q * unit + rows].iter_mut().zip(seg) {
                            *acc = acc.wrapping_add(v.to_i32());
                        }
                    }
                }
            }
        }
        return;
    }
    for q in 0..panels {
        for r in 0..unit.min(len - q * unit) {
            let i = q * unit + r;
            let z = pick(zero_points, global_i0 + i);
            let start = (i0 + i) * rs;
            let mut sum = 0i32;
            // Slot t of this row starts at panel + (t·unit + r)·group.
            let slots =
                dst[q * panel_len + r * group..(q + 1) * panel_len].chunks_mut(unit * group);
            if cs == 1 {
                for (slot, chunk) in slots.zip(data[start..start + k].chunks(group)) {
                    for (d, &v) in slot.iter_mut().zip(chunk) {
                        *d = f(v.to_i32(), z);
                        sum = sum.wrapping_add(v.to_i32());
                    }
                }
            } else {
                for (t, slot) in slots.enumerate().take(groups) {
                    for (g, d) in slot.iter_mut().enumerate().take(group.min(k - t * group)) {
                        let v = data[start + (t * group + g) * cs].to_i32();
                        *d = f(v, z);
                        sum = sum.wrapping_add(v);
                    }
                }
            }
            if let Some(s) = sums.as_deref_mut() {
                s[i] = sum;
            }
        }
    }
}

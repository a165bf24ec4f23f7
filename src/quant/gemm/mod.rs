//! The integer GEMM: `C = epilogue(Σ_k (a[m,k] − za)(b[k,n] − zb))`, exact.
//!
//! The sum is exact in i32: [`max_k`] gives the largest K for which no
//! partial sum can leave the i32 range, and a longer K is an error. The
//! driver mirrors the float engine (packed panels, threads over M or N) but
//! blocks K by 512 for the caches rather than by
//! [`crate::gemm::ARRAY_ROWS`]: integer sums are exact, so the blocking
//! cannot change a result.
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
//!
//! Where the CPU has AVX-512 VNNI (with F, BW and VL) both are replaced by
//! `vpdpbusd`, which sums four u8 × i8 products straight into an i32 lane
//! (no i16 step, so any values): raw bytes and the same corrections, i8
//! activations offset by 128 (`za + 128`, `Σa + 128·K`). Every kernel
//! returns the same bits; [`crate::active_isa`] says which runs, and
//! `MIXPREC_FORCE_AVX2=1` keeps the AVX2 ones.

#[cfg(target_arch = "x86_64")]
mod direct;
mod driver;
mod kernel;
mod packed;

pub(crate) use driver::fits_seven_bits;
pub use packed::{qgemm_packed, qgemm_packed_portable, PackedI8};

use super::requant::{check_multiplier, requantize_unchecked, RequantRounding};
use super::QInt;
use crate::cpu::entry_and_portable_twin;
use crate::dtype::Element;
use crate::gemm::{validate_views, Parallelism};
use crate::tensor::{MatMut, MatRef};
use crate::Error;

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
    /// see [`crate::quant::requant`]. Multipliers and shifts: 1 or N.
    Requantize {
        /// Which of TFLite's two rounding definitions
        /// ([`RequantRounding::Double`] is gemmlowp's).
        rounding: RequantRounding,
        /// Optional i32 bias (in units of `scale_a·scale_b`), length N.
        bias: Option<&'a [i32]>,
        /// Q31 multipliers from [`crate::quant::requant::quantize_multiplier`].
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

pub(crate) fn pick<T: Copy>(v: &[T], i: usize) -> T {
    v[if v.len() == 1 { 0 } else { i }]
}

/// gemmlowp's zero-point correction for one row of A, for kernels that
/// multiply raw values: `Σ(a − za)(b − zb) = Σab − zb·Σa − za·Σb +
/// K·za·zb`, exact modulo 2^32 and so exact within the K limit. A kernel
/// that saw A's values offset by `offset` (`IntKernel::A_OFFSET`) summed
/// `(a + offset)·b`; the zero point and the row sum shift with them, which
/// leaves `a − za` and so the result unchanged.
#[derive(Clone, Copy)]
pub(crate) struct RowCorrection {
    za: i32,
    row_sum: i32,
    k: i32,
}

impl RowCorrection {
    /// `za` and `row_sum` (Σa, wrapping) as given; `offset` as the kernel
    /// applied it.
    pub(crate) fn new(za: i32, row_sum: i32, k: usize, offset: i32) -> Self {
        let k = k as i32;
        Self {
            za: za.wrapping_add(offset),
            row_sum: row_sum.wrapping_add(k.wrapping_mul(offset)),
            k,
        }
    }

    /// Whether [`Self::apply`] uses the column sums (A's zero point, with
    /// the kernel's offset, is not zero).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn uses_column_sums(&self) -> bool {
        self.za != 0
    }

    /// The corrected sum of one output from the kernel's raw sum, B's zero
    /// point for the column and the column's sum Σb.
    pub(crate) fn apply(self, raw: i32, zb: i32, col_sum: i32) -> i32 {
        raw.wrapping_sub(zb.wrapping_mul(self.row_sum))
            .wrapping_sub(self.za.wrapping_mul(col_sum))
            .wrapping_add(self.k.wrapping_mul(self.za).wrapping_mul(zb))
    }
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

/// A quantized matrix: integer values (any strides) with their zero
/// points, one for the whole matrix or one per line (per row of A, per
/// column of B, as [`qgemm`] reads them). The real value of entry
/// `(i, j)` is `scale · (q[i, j] − zero point)`; the scales belong to the
/// epilogue ([`QEpilogue`]), since the exact integer sum does not need them.
///
/// ```
/// use mixprec::quant::QMatRef;
/// use mixprec::MatRef;
/// let q: [u8; 6] = [0, 128, 255, 10, 20, 30];
/// let a = QMatRef::new(MatRef::from_row_major(&q, 2, 3)?, &[128])?;
/// assert_eq!((a.values().rows(), a.zero_points()), (2, &[128][..]));
/// // A zero point outside the storage type's range is refused.
/// assert!(QMatRef::new(MatRef::from_row_major(&q, 2, 3)?, &[300]).is_err());
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct QMatRef<'a, Q> {
    values: MatRef<'a, Q>,
    zero_points: &'a [i32],
}

impl<'a, Q: QInt> QMatRef<'a, Q> {
    /// `values` with `zero_points` (1, or one per row of A / column of B;
    /// the product that reads the matrix checks their number against its
    /// side, so an empty list fits an empty side).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a zero point outside `Q`'s range.
    pub fn new(values: MatRef<'a, Q>, zero_points: &'a [i32]) -> Result<Self, Error> {
        for &z in zero_points {
            crate::quant::check_scale_zp(1.0, z, Q::QMIN, Q::QMAX)?;
        }
        Ok(Self {
            values,
            zero_points,
        })
    }

    /// The integer values.
    pub fn values(&self) -> MatRef<'a, Q> {
        self.values
    }

    /// The zero points.
    pub fn zero_points(&self) -> &'a [i32] {
        self.zero_points
    }

    /// The transpose (zero points unchanged: per row becomes per column).
    pub fn t(&self) -> Self {
        Self {
            values: self.values.t(),
            zero_points: self.zero_points,
        }
    }
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

pub(crate) fn validate<A: QInt, O: QOutput>(
    a: &QMatRef<'_, A>,
    b: &QMatRef<'_, i8>,
    c: &MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    let (a_zero_points, b_zero_points) = (a.zero_points, b.zero_points);
    let (a, b) = (&a.values, &b.values);
    validate_views(a, b, c, parallelism)?;
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    check_len("qgemm: A zero points (1 or M)", a_zero_points.len(), m)?;
    check_len("qgemm: B zero points (1 or N)", b_zero_points.len(), n)?;
    for &z in a_zero_points {
        crate::quant::check_scale_zp(1.0, z, A::QMIN, A::QMAX)?;
    }
    for &z in b_zero_points {
        crate::quant::check_scale_zp(1.0, z, i8::QMIN, i8::QMAX)?;
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
                crate::quant::check_scale_zp(s, 0, 0, 0)?;
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
            crate::quant::check_scale_zp(1.0, *zero_point, lo, hi)?;
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

entry_and_portable_twin! {
    /// The integer GEMM: `c[m,n] = epilogue(Σ_k (a[m,k] − za[m]) · (b[k,n] − zb[n]))`,
    /// the sum exact in i32. Zero points ([`QMatRef`]): 1 (per tensor) or M
    /// for A (per row, as dynamic quantization gives), 1 or N for B (per
    /// output channel).
    ///
    /// **Small batch, either weight layout.** Up to 32 rows of A (on CPUs
    /// with AVX2), a B with a unit stride is read in place, never packed
    /// whole: `[in, out]` storage (B row-major) or
    /// PyTorch's `[out, in]` (pass `w.t()`, B's columns contiguous), which
    /// is as fast or faster (on Zen 4 at K = N = 4096, M = 1: 0.46 ms
    /// against 0.58 ms; BENCHMARKS.md "int8"). Larger products pack B per
    /// call; for weights reused across calls, [`PackedI8`] packs them once.
    ///
    /// ```
    /// use mixprec::quant::{qgemm, QEpilogue, QMatRef};
    /// use mixprec::gemm::Parallelism;
    /// use mixprec::{MatMut, MatRef};
    /// let a: [u8; 4] = [130, 128, 0, 255]; // 2×2, zero point 128
    /// let b: [i8; 4] = [1, -2, 3, 4];      // 2×2, zero point 0
    /// let mut c = [0i32; 4];
    /// qgemm(
    ///     QMatRef::new(MatRef::from_row_major(&a, 2, 2)?, &[128])?,
    ///     QMatRef::new(MatRef::from_row_major(&b, 2, 2)?, &[0])?,
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
    pub fn qgemm / qgemm_portable<A: QInt, O: QOutput>(
        a: QMatRef<'_, A>,
        b: QMatRef<'_, i8>,
        c: MatMut<'_, O>,
        epilogue: &QEpilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => qgemm_on
}

fn qgemm_on<A: QInt, O: QOutput>(
    a: QMatRef<'_, A>,
    b: QMatRef<'_, i8>,
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    validate(&a, &b, &c, epilogue, parallelism)?;
    driver::run(a, b, c, epilogue, parallelism, simd);
    Ok(())
}

/// The definition, as plain loops: the sum in i64 (exact; it fits i32 by
/// the K limit), then the epilogue. Same checks as [`qgemm`].
///
/// # Errors
/// As [`qgemm`].
pub fn qgemm_reference<A: QInt, O: QOutput>(
    a: QMatRef<'_, A>,
    b: QMatRef<'_, i8>,
    mut c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
) -> Result<(), Error> {
    validate(&a, &b, &c, epilogue, Parallelism::Serial)?;
    let (a_zero_points, b_zero_points) = (a.zero_points, b.zero_points);
    let (a, b) = (a.values, b.values);
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

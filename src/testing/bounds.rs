//! Error bounds from the unit roundoff, and checkers that say where and by
//! how much a result is off.

use crate::dtype::{DType, FloatElement};
use crate::error::checked_len_of;
use crate::gemm::ARRAY_ROWS;
use crate::tensor::MatRef;
use crate::Error;
use std::fmt;

/// `γ(n) = n·u / (1 − n·u)` (Higham, *Accuracy and Stability of Numerical
/// Algorithms*, §3.1): the relative error bound of `n` successive roundings
/// with unit roundoff `u`. `+∞` when `n·u >= 1`, where no such bound holds.
///
/// ```
/// use mixprec::testing::gamma;
/// assert_eq!(gamma(0, 2f64.powi(-24)), 0.0);
/// let u = 2f64.powi(-24);
/// assert_eq!(gamma(129, u), 129.0 * u / (1.0 - 129.0 * u)); // ≈ 129·u
/// assert_eq!(gamma(300, 2f64.powi(-8)), f64::INFINITY);
/// ```
pub fn gamma(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    if nu.is_nan() || nu >= 1.0 {
        f64::INFINITY
    } else {
        nu / (1.0 - nu)
    }
}

/// The unit roundoff of converting to `T` (round to nearest):
/// [`FloatElement::UNIT_ROUNDOFF`], `2^-(mantissa bits + 1)`.
pub fn unit_roundoff<T: FloatElement>() -> f64 {
    T::UNIT_ROUNDOFF
}

/// The largest error of rounding the f32 `x` to nearest in `T`, when the
/// result is finite: `u·|x|` plus half the smallest subnormal of `T` (the
/// absolute error of the subnormal range, where the relative bound fails).
///
/// ```
/// use mixprec::{testing::conversion_error_bound, bf16};
/// let x = 0.1f32;
/// let err = (bf16::from_f32(x).to_f64() - x as f64).abs();
/// assert!(err <= conversion_error_bound::<bf16>(x));
/// ```
pub fn conversion_error_bound<T: FloatElement>(x: f32) -> f64 {
    T::UNIT_ROUNDOFF * f64::from(x).abs() + f64::from(T::MIN_POSITIVE_SUBNORMAL.to_f32()) / 2.0
}

/// Order-preserving integer of a non-NaN value: −|bits| for negatives, so
/// +0 and −0 are both 0.
fn ordinal<T: FloatElement>(x: T) -> Option<i64> {
    if x.to_f32().is_nan() {
        return None;
    }
    let bits = x.to_raw_bits();
    if T::DTYPE == crate::DType::MxInt8 {
        // Two's complement: the integer k is the ordinal.
        return Some(i64::from(bits as u8 as i8));
    }
    let sign = 1u32 << (T::BITS - 1);
    let magnitude = i64::from(bits & (sign - 1));
    Some(if bits & sign != 0 {
        -magnitude
    } else {
        magnitude
    })
}

/// How many representable values of `T` lie between `a` and `b`, plus one
/// (0 when equal; +0 and −0 are equal; adjacent values are 1 apart; an
/// infinity is one step past MAX). `None` when either is NaN.
///
/// ```
/// use mixprec::{testing::ulp_distance, F8E4M3};
/// assert_eq!(ulp_distance(F8E4M3::MAX, F8E4M3::from_f32(416.0)), Some(1));
/// assert_eq!(ulp_distance(F8E4M3::MIN_POSITIVE_SUBNORMAL, F8E4M3::from_f32(-0.0)), Some(1));
/// assert_eq!(ulp_distance(F8E4M3::NAN, F8E4M3::ONE), None);
/// ```
pub fn ulp_distance<T: FloatElement>(a: T, b: T) -> Option<u64> {
    Some(ordinal(a)?.abs_diff(ordinal(b)?))
}

/// Roundings on the longest path of one output of the contract's loops:
/// up to [`ARRAY_ROWS`] FMAs in a K-tile's chain and one accumulator add
/// per K-tile.
fn gemm_roundings(k: usize) -> usize {
    k.min(ARRAY_ROWS) + k.div_ceil(ARRAY_ROWS)
}

/// The contract's forward error bound for `C = A·B` (f32 accumulation), as
/// an M×N row-major vector: `γ(min(K, 128) + ⌈K/128⌉, 2^-24) · (|A||B|)[m, n]`, plus
/// `2^-149` per rounding for the subnormal range. At most the
/// `γ(128 + ⌈K/128⌉)·|A||B|` of the contract: each product is formed
/// exactly by an FMA, a K-tile's chain rounds at most 128 times, and the
/// accumulator adds once per K-tile.
///
/// `|C − A·B| <= bound` elementwise, against the exact product of the
/// operands as given (each widened exactly to f32), while no intermediate
/// overflows.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `a.cols() != b.rows()`;
/// [`Error::ShapeOverflow`] when M·N (or its size in bytes) overflows.
pub fn gemm_error_bound<TA: FloatElement, TB: FloatElement>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
) -> Result<Vec<f64>, Error> {
    check_inner(&a, &b)?;
    let (m, n) = (a.rows(), b.cols());
    checked_len_of::<f64>(&[m, n])?;
    Ok((0..m)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| exact_dot(&a, &b, i, j).bound)
        .collect())
}

/// One output of the exact product and its bounds.
struct Dot {
    /// The f64 sum of the exact products.
    sum: f64,
    /// Σ|a·b| in f64.
    abs: f64,
    /// The contract's bound on |f32 result − exact|.
    bound: f64,
    /// The bound on |f64 sum − exact|.
    f64_error: f64,
}

fn exact_dot<TA: FloatElement, TB: FloatElement>(
    a: &MatRef<'_, TA>,
    b: &MatRef<'_, TB>,
    i: usize,
    j: usize,
) -> Dot {
    let k = a.cols();
    let r = f64_dot((0..k).map(|kk| (a.at(i, kk), b.at(kk, j))));
    let n = gemm_roundings(k);
    Dot {
        sum: r.sum,
        abs: r.abs_sum,
        bound: gamma(n, f32::EPSILON as f64 / 2.0) * r.abs_sum + n as f64 * 2f64.powi(-149),
        f64_error: r.error,
    }
}

fn f64_dot<TA: FloatElement, TB: FloatElement>(
    pairs: impl ExactSizeIterator<Item = (TA, TB)>,
) -> DotReference {
    let k = pairs.len();
    let (mut sum, mut abs_sum) = (0.0f64, 0.0f64);
    for (x, y) in pairs {
        // Exact: two f32 significands (24 bits each) fit in f64's 53, and
        // no product of f32 values underflows or overflows f64.
        let p = f64::from(x.to_f32()) * f64::from(y.to_f32());
        sum += p;
        abs_sum += p.abs();
    }
    DotReference {
        sum,
        abs_sum,
        error: if k > 1 {
            gamma(k - 1, f64::EPSILON / 2.0) * abs_sum
        } else {
            0.0
        },
    }
}

/// A dot product's reference in f64: what a test of a kernel compares
/// against. See [`dot_reference`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DotReference {
    /// Σ a·b: each product exact in f64, summed in order in f64.
    pub sum: f64,
    /// Σ |a·b|, the scale of every forward error bound here.
    pub abs_sum: f64,
    /// A bound on |`sum` − the exact Σ a·b|: `γ(K − 1, 2^-53) · abs_sum`
    /// (the products are exact; the sum rounds K − 1 times).
    pub error: f64,
}

/// The f64 reference of `Σ a[i]·b[i]` over any two element types, with
/// Σ|a·b| and the reference's own error bound: the pieces a crate needs to
/// test its own dot-product or GEMM kernel. NaN and ±∞ in the inputs give
/// a NaN or ±∞ `sum`, as IEEE 754 says.
///
/// ```
/// use mixprec::testing::{dot_error_bound, dot_reference};
/// use mixprec::bf16;
/// let a: Vec<bf16> = (0..100).map(|i| bf16::from_f32(i as f32 / 7.0)).collect();
/// let b: Vec<f32> = (0..100).map(|i| (i as f32).cos()).collect();
/// let r = dot_reference(&a, &b)?;
/// // A plain f32 loop of FMAs, checked against the sequential-sum bound.
/// let got = a.iter().zip(&b).fold(0.0f32, |s, (x, y)| x.to_f32().mul_add(*y, s));
/// let bound = dot_error_bound::<f32>(a.len(), r.abs_sum) + r.error;
/// assert!((f64::from(got) - r.sum).abs() <= bound);
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// [`Error::LengthMismatch`] when `a` and `b` differ in length.
pub fn dot_reference<TA: FloatElement, TB: FloatElement>(
    a: &[TA],
    b: &[TB],
) -> Result<DotReference, Error> {
    if a.len() != b.len() {
        return Err(Error::LengthMismatch {
            what: "dot_reference (b, one per element of a)",
            expected: a.len(),
            actual: b.len(),
        });
    }
    Ok(f64_dot(a.iter().copied().zip(b.iter().copied())))
}

/// The forward error bound of a plain dot product of length `k` summed in
/// order in the accumulator type `Acc`, each product formed exactly (by an
/// FMA, or because it is exact in `Acc`, as bf16 × bf16 is in f32):
/// `γ(k − 1, u_Acc) · abs_sum + k · η_Acc / 2`, with `u_Acc` the unit
/// roundoff ([`unit_roundoff`]) and `η_Acc` the smallest positive subnormal
/// (an FMA whose result is subnormal rounds absolutely; additions in the
/// subnormal range are exact). `abs_sum` is Σ|a·b| ([`DotReference`]).
///
/// This is a sequential chain's bound (Higham, *Accuracy and Stability of
/// Numerical Algorithms*, 2nd ed., §3.1), not the tiled contract's: for
/// this crate's GEMMs use [`gemm_error_bound`], whose chains restart every
/// 128 products. Valid while no partial sum overflows (`abs_sum` below
/// `Acc`'s largest finite value is enough); the bound is +∞ for `k`
/// where `(k − 1)·u ≥ 1`.
pub fn dot_error_bound<Acc: FloatElement>(k: usize, abs_sum: f64) -> f64 {
    let eta = f64::from(Acc::MIN_POSITIVE_SUBNORMAL.to_f32());
    let g = gamma(k.saturating_sub(1), Acc::UNIT_ROUNDOFF);
    // One product (g = 0) is exact even where abs_sum is ∞.
    let relative = if g == 0.0 { 0.0 } else { g * abs_sum };
    relative + k as f64 * eta / 2.0
}

fn check_inner<TA: Copy, TB: Copy>(a: &MatRef<'_, TA>, b: &MatRef<'_, TB>) -> Result<(), Error> {
    if a.cols() != b.rows() {
        return Err(Error::ShapeMismatch {
            what: "gemm bound: A (M×K) and B (K×N)",
            left: vec![a.rows(), a.cols()],
            right: vec![b.rows(), b.cols()],
        });
    }
    Ok(())
}

/// What a checker found: the first offending index, the values there, the
/// bound (for bounded checks), and how many elements failed. Its `Display`
/// is the message a test should print; it is a `std::error::Error`, so `?`
/// turns it into a proptest `TestCaseError` inside `proptest!`.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    check: &'static str,
    index: Vec<usize>,
    detail: String,
    failures: usize,
    checked: usize,
}

impl Report {
    /// The checker that made the report.
    pub fn check(&self) -> &'static str {
        self.check
    }

    /// The first offending index (row, column for matrices; empty when the
    /// shapes did not agree).
    pub fn index(&self) -> &[usize] {
        &self.index
    }

    /// How many elements failed.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// How many elements were checked.
    pub fn checked(&self) -> usize {
        self.checked
    }

    fn shapes(check: &'static str, left: (usize, usize), right: (usize, usize)) -> Self {
        Report {
            check,
            index: Vec::new(),
            detail: format!("shapes do not agree: {left:?} vs {right:?}"),
            failures: 0,
            checked: 0,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index.is_empty() {
            write!(f, "{}: {}", self.check, self.detail)
        } else {
            write!(
                f,
                "{}: {} of {} elements fail; first at {:?}: {}",
                self.check, self.failures, self.checked, self.index, self.detail
            )
        }
    }
}

impl std::error::Error for Report {}

/// Records the first failure and counts the rest.
struct Tally {
    first: Option<(Vec<usize>, String)>,
    failures: usize,
    checked: usize,
}

impl Tally {
    fn new() -> Self {
        Tally {
            first: None,
            failures: 0,
            checked: 0,
        }
    }

    fn record(
        &mut self,
        ok: bool,
        index: impl FnOnce() -> Vec<usize>,
        detail: impl FnOnce() -> String,
    ) {
        self.checked += 1;
        if !ok {
            self.failures += 1;
            if self.first.is_none() {
                self.first = Some((index(), detail()));
            }
        }
    }

    fn finish(self, check: &'static str) -> Result<(), Report> {
        match self.first {
            None => Ok(()),
            Some((index, detail)) => Err(Report {
                check,
                index,
                detail,
                failures: self.failures,
                checked: self.checked,
            }),
        }
    }
}

fn show<T: FloatElement>(x: T) -> String {
    let width = (T::BITS as usize).div_ceil(4);
    format!("{:?} (0x{:0width$x})", x.to_f32(), x.to_raw_bits())
}

/// Checks that `c` (computed as `A·B` with alpha 1, beta 0, no bias, no
/// activation, in any output type `O`) lies within [`gemm_error_bound`] of
/// the exact product, elementwise.
///
/// The exact product is summed in f64; its own error (`γ(K, 2^-53)·|A||B|`)
/// is added to the bound. For an output narrower than f32, the final
/// rounding adds `u_O·(|exact| + bound)` and half O's smallest subnormal.
/// Where the f64 sum is NaN (a NaN or ∞ − ∞ in the inputs) the result must
/// be NaN; where it is ±∞, that infinity or NaN; where the exact value is
/// past O's range, ±∞ of its sign or (for E4M3) NaN is accepted. Where a
/// partial sum may overflow f32 (the one case the bound does not cover),
/// the infinities that overflow can reach are accepted: +∞ where the sum
/// of the positive products, grown by the bound's relative factor, reaches
/// f32::MAX, −∞ where the negative ones do, and NaN where both do (two K-tiles may end at +∞ and −∞, and
/// the contract's result is then NaN while the exact value is finite), or
/// either does for an output without ∞. A finite result is always held to
/// the bound.
///
/// ```
/// use mixprec::gemm::{matmul, Parallelism};
/// use mixprec::testing::check_gemm_within_bound;
/// use mixprec::MatRef;
/// let a: Vec<f32> = (0..300).map(|i| (i as f32).sin()).collect();
/// let (a, b) = (MatRef::from_row_major(&a, 2, 150)?, MatRef::from_row_major(&a, 150, 2)?);
/// let c = matmul(a, b, Parallelism::Serial)?;
/// assert!(check_gemm_within_bound(a, b, c.as_mat()?).is_ok());
/// let mut off = c.clone();
/// off.as_mut_slice()[3] += 1e-3;
/// let report = check_gemm_within_bound(a, b, off.as_mat()?).unwrap_err();
/// assert_eq!(report.index(), &[1, 1]);
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// A [`Report`] naming the first element outside the bound, or the shapes
/// when A, B and C do not agree.
pub fn check_gemm_within_bound<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    c: MatRef<'_, O>,
) -> Result<(), Report> {
    const CHECK: &str = "check_gemm_within_bound";
    if a.cols() != b.rows() || c.rows() != a.rows() || c.cols() != b.cols() {
        return Err(Report {
            check: CHECK,
            index: Vec::new(),
            detail: format!(
                "shapes do not agree: A {}×{}, B {}×{}, C {}×{}",
                a.rows(),
                a.cols(),
                b.rows(),
                b.cols(),
                c.rows(),
                c.cols()
            ),
            failures: 0,
            checked: 0,
        });
    }
    let narrow_out = O::DTYPE != DType::F32;
    let out_max = f64::from(O::MAX.to_f32());
    let mut tally = Tally::new();
    for i in 0..c.rows() {
        for j in 0..c.cols() {
            let got = c.at(i, j).to_f32();
            let d = exact_dot(&a, &b, i, j);
            let mut bound = d.bound + d.f64_error;
            if narrow_out {
                bound += O::UNIT_ROUNDOFF * (d.sum.abs() + bound)
                    + f64::from(O::MIN_POSITIVE_SUBNORMAL.to_f32()) / 2.0;
            }
            let ok = if d.sum.is_nan() {
                got.is_nan()
            } else if d.sum.is_infinite() {
                got.is_nan() || f64::from(got) == d.sum
            } else if got.is_nan() || got.is_infinite() {
                // Only past the output's range (or f32's, inside the chain).
                let limit = out_max.min(f64::from(f32::MAX));
                let past = d.sum.abs() + bound >= limit;
                // A partial sum may overflow where Σ|a·b| (grown by the
                // chain's roundings) reaches f32's range: one K-tile can
                // then end at +∞ and the next at −∞, and the contract's
                // result is NaN (or ±∞ of either sign) although the exact
                // value is finite. The bound assumes no such overflow.
                // +∞ needs the positive products (grown by the bound) to
                // reach f32::MAX, −∞ the negative ones, NaN both (or one,
                // in an output format without ∞).
                let f32_max = f64::from(f32::MAX);
                let positive = (d.abs + d.sum) / 2.0;
                let negative = (d.abs - d.sum) / 2.0;
                // The bound's relative growth, applied to each side.
                let grow = if d.abs > 0.0 {
                    1.0 + d.bound / d.abs
                } else {
                    1.0
                };
                let may_pos = positive * grow >= f32_max;
                let may_neg = negative * grow >= f32_max;
                let chain_overflow = if got.is_nan() {
                    may_pos && may_neg || (may_pos || may_neg) && !O::HAS_INFINITY
                } else if got > 0.0 {
                    may_pos
                } else {
                    may_neg
                };
                chain_overflow
                    || past
                        && (got.is_nan() && !O::HAS_INFINITY
                            || got.is_infinite() && (got > 0.0) == (d.sum > 0.0)
                            || got.is_nan() && bound.is_infinite())
            } else {
                (f64::from(got) - d.sum).abs() <= bound
            };
            tally.record(
                ok,
                || vec![i, j],
                || {
                    format!(
                        "got {}, exact {:e}, error {:e} > bound {:e} (K = {})",
                        show(c.at(i, j)),
                        d.sum,
                        (f64::from(got) - d.sum).abs(),
                        bound,
                        a.cols()
                    )
                },
            );
        }
    }
    tally.finish(CHECK)
}

/// Checks that two matrices hold the same bits element by element (NaN
/// payloads and the sign of zero included), the comparison the contract
/// asks of every GEMM path against [`crate::gemm::reference()`].
///
/// ```
/// use mixprec::{testing::check_bits_eq, MatRef};
/// let (x, y) = ([0.0f32, 1.0], [-0.0f32, 1.0]);
/// let r = check_bits_eq(MatRef::from_row_major(&x, 1, 2)?, MatRef::from_row_major(&y, 1, 2)?);
/// assert_eq!(r.unwrap_err().index(), &[0, 0]);
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// A [`Report`] naming the first differing element, or the shapes when
/// they differ.
pub fn check_bits_eq<T: FloatElement>(
    actual: MatRef<'_, T>,
    expected: MatRef<'_, T>,
) -> Result<(), Report> {
    const CHECK: &str = "check_bits_eq";
    let (ra, ca, re, ce) = (
        actual.rows(),
        actual.cols(),
        expected.rows(),
        expected.cols(),
    );
    if (ra, ca) != (re, ce) {
        return Err(Report::shapes(CHECK, (ra, ca), (re, ce)));
    }
    let mut tally = Tally::new();
    for i in 0..ra {
        for j in 0..ca {
            let (x, y) = (actual.at(i, j), expected.at(i, j));
            tally.record(
                x.to_raw_bits() == y.to_raw_bits(),
                || vec![i, j],
                || format!("actual {}, expected {}", show(x), show(y)),
            );
        }
    }
    tally.finish(CHECK)
}

/// [`check_bits_eq`] for slices (index is the element's position).
///
/// # Errors
/// A [`Report`] naming the first differing element, or the lengths.
pub fn check_slice_bits_eq<T: FloatElement>(actual: &[T], expected: &[T]) -> Result<(), Report> {
    const CHECK: &str = "check_slice_bits_eq";
    if actual.len() != expected.len() {
        return Err(Report::shapes(
            CHECK,
            (actual.len(), 1),
            (expected.len(), 1),
        ));
    }
    let mut tally = Tally::new();
    for (i, (&x, &y)) in actual.iter().zip(expected).enumerate() {
        tally.record(
            x.to_raw_bits() == y.to_raw_bits(),
            || vec![i],
            || format!("actual {}, expected {}", show(x), show(y)),
        );
    }
    tally.finish(CHECK)
}

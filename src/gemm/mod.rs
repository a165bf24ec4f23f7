//! GEMM whose tiling mirrors a 128×128 weight-stationary systolic array.
//!
//! # The contract
//!
//! For inputs of any [`FloatElement`] type (f32, f16, bf16, FP8), accumulation
//! in f32 and output of any float type, every output element is
//!
//! ```text
//! acc = +0.0f32
//! for each K-tile [k0, min(k0 + ARRAY_ROWS, K)), k0 increasing:   // one pass of the array
//!     p = +0.0f32
//!     for k in the tile, increasing:                               // one PE row after another
//!         p = fma(a[m,k] as f32, b[k,n] as f32, p)                 // one rounding
//!     acc = acc + p                                                // accumulator memory, one rounding
//! c[m,n] = round_to_output(epilogue(acc))                          // once, after the last tile
//! ```
//!
//! A NaN result is stored as the canonical quiet NaN (see [`Epilogue::apply`]).
//!
//! with [`ARRAY_ROWS`] = 128 and the epilogue of [`Epilogue::apply`].
//! [`reference()`] is this loop, written plainly; [`gemm`] returns exactly its
//! bits for every shape, stride, instruction set and thread count.
//!
//! # Why the fast path is bit-exact
//!
//! * **Widening loses nothing.** f16, bf16 and FP8 values widen to f32
//!   exactly, and the product of two of them (at most 22 significant bits)
//!   is exact in f32, so widening while packing and then using an f32 FMA is
//!   the contract's arithmetic.
//! * **FMA everywhere.** The AVX2 and AVX-512 micro-kernels issue one
//!   `vfmadd231ps` per step (ymm or zmm lanes, one output's chain each) and
//!   the portable kernel calls `f32::mul_add`; none ever rounds `a*b`
//!   separately.
//! * **The micro-kernel is one pass of the array.** Blocking uses `kc =
//!   ARRAY_ROWS` exactly (BLIS's five loops with the K block fixed): each
//!   register holds one output's chain `p` for one K-tile, starting at +0.0,
//!   and is then added into the f32 accumulator, tiles in increasing k.
//! * **K is never split.** Threads divide M or N only, so each output's
//!   chain is computed by one thread in one order.
//!
//! # Example: a linear layer's forward pass in one call
//!
//! ```
//! use mixprec::gemm::{gemm, Activation, Epilogue, Parallelism};
//! use mixprec::{bf16, MatMut, MatRef};
//! // x: 2×3 activations, w: 3×2 weights (bf16), y = relu(x·w + bias) in f32.
//! let x: Vec<bf16> = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0].map(bf16::from_f32).to_vec();
//! let w: Vec<bf16> = [1.0, -1.0, 0.5, 0.5, 0.25, 1.0].map(bf16::from_f32).to_vec();
//! let bias = [0.5f32, -4.0];
//! let mut y = vec![0.0f32; 4];
//! gemm(
//!     MatRef::from_row_major(&x, 2, 3)?,
//!     MatRef::from_row_major(&w, 3, 2)?,
//!     MatMut::from_row_major(&mut y, 2, 2)?,
//!     &Epilogue::new().bias(&bias).activation(Activation::Relu),
//!     Parallelism::Serial,
//! )?;
//! assert_eq!(y, [3.25, 0.0, 0.0, 0.0]);
//! # Ok::<(), mixprec::Error>(())
//! ```

mod block;
pub(crate) mod driver;
pub(crate) mod kernel;
mod packed;
mod reference;

use crate::cpu::entry_and_portable_twin;
use crate::dtype::FloatElement;
use crate::tensor::{MatMut, MatRef, Tensor};
use crate::Error;
pub use block::{
    block_gemm, block_gemm_packed, block_gemm_packed_plan, block_gemm_packed_portable,
    block_gemm_plan, block_gemm_portable, block_gemm_reference, weight_only_gemm,
    weight_only_gemm_fp8, weight_only_gemm_fp8_portable, weight_only_gemm_int4,
    weight_only_gemm_int4_portable, weight_only_gemm_packed, weight_only_gemm_packed_plan,
    weight_only_gemm_packed_portable, weight_only_gemm_plan, weight_only_gemm_portable,
};
pub use driver::{Plan, Strategy, Tier};
pub use packed::{gemm_packed, gemm_packed_plan, gemm_packed_portable, PackedB};

/// Height of the systolic array: the K-tile of the contract. Every K-tile
/// holds at most this many values of k.
pub const ARRAY_ROWS: usize = 128;

/// The activation applied last in the epilogue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Activation {
    /// `y`.
    #[default]
    Identity,
    /// `0` where `y < 0`, else `y` (NaN and -0 pass through).
    Relu,
    /// The tanh form of GELU, in f32:
    /// `0.5·y·(1 + tanh(0.7978845608·(y + 0.044715·y³)))`.
    Gelu,
}

impl Activation {
    /// Applies the activation to one value.
    #[inline(always)]
    pub fn apply(self, y: f32) -> f32 {
        match self {
            Activation::Identity => y,
            Activation::Relu => {
                if y < 0.0 {
                    0.0
                } else {
                    y
                }
            }
            Activation::Gelu => {
                let inner = 0.797_884_6_f32 * (y + 0.044_715 * (y * y * y));
                0.5 * y * (1.0 + inner.tanh())
            }
        }
    }
}

/// What happens to the f32 accumulator once, after the last K-tile:
/// `activation(alpha·acc + beta·c_old + bias[n])`; see [`Epilogue::apply`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epilogue<'a> {
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old C (read in its own type). When 0, C is not read, so
    /// NaNs in it do not propagate (as in BLAS).
    pub beta: f32,
    /// Optional per-column bias, of length N.
    pub bias: Option<&'a [f32]>,
    /// Activation applied last.
    pub activation: Activation,
}

impl Default for Epilogue<'_> {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            beta: 0.0,
            bias: None,
            activation: Activation::Identity,
        }
    }
}

impl<'a> Epilogue<'a> {
    /// `C = A·B`: alpha 1, beta 0, no bias, identity.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `alpha`.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets `beta`.
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }

    /// Sets the per-column bias (length N).
    pub fn bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }

    /// Sets the activation.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// The epilogue of one element, in f32, each step rounded once:
    /// `y = alpha * acc; if beta != 0 { y = fma(beta, c_old, y) };
    /// if bias { y = y + bias[col] }; y = activation(y)`; finally a NaN
    /// becomes the canonical quiet NaN (`f32::NAN`, positive). A `col`
    /// past the bias's end adds no bias.
    ///
    /// IEEE 754 leaves the sign and payload of a NaN made by an invalid
    /// operation (∞ − ∞, 0 × ∞) to the hardware: x86 gives a negative NaN, a
    /// software `fma` a positive one. Canonicalising makes NaN results the
    /// same bits on every path; that a NaN appears is unchanged.
    #[inline(always)]
    pub fn apply(&self, acc: f32, c_old: f32, col: usize) -> f32 {
        let mut y = self.alpha * acc;
        if self.beta != 0.0 {
            y = self.beta.mul_add(c_old, y);
        }
        // `gemm` checks the bias length; a direct caller passing a column
        // past its end gets no bias rather than a panic.
        if let Some(&b) = self.bias.and_then(|bias| bias.get(col)) {
            y += b;
        }
        let y = self.activation.apply(y);
        if y.is_nan() {
            f32::NAN
        } else {
            y
        }
    }
}

/// How many threads a GEMM may use. Threads split M or N, never K, so the
/// result is the same bits for every choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// The calling thread only.
    #[default]
    Serial,
    /// Split the work into this many parts, run on rayon's global pool
    /// (sized by `RAYON_NUM_THREADS`, default one thread per core). Small
    /// problems run serially whatever the count.
    Threads(usize),
}

/// `C = epilogue(A·B)` by the blocked, packed, SIMD engine; bit-identical to
/// [`reference()`].
///
/// `a` is M×K, `b` is K×N, `c` is M×N; any strides. A transposed view
/// needs no copy and gives the same bits. Both weight layouts have a path
/// of their own at small batch ([`Strategy::DirectB`] for `[in, out]`,
/// [`Strategy::DirectTransposed`] for PyTorch's `[out, in]` passed as
/// `w.t()`, and [`Strategy::DirectTransposedBlocks`] for one-byte float
/// weights `[out, in]` with K a multiple of [`ARRAY_ROWS`]), but at M = 1
/// `[in, out]` is still the faster one: on AMD Zen 4 at K = N = 4096,
/// `[out, in]` takes 1.25–1.29× the time with f32 weights, 1.34–1.38× with
/// bf16, 1.55–1.64× with f16 and 1.42–1.46× with FP8 E4M3 at M = 1 (two
/// criterion runs; this M = 1 figure moves with the memory traffic of the
/// shared host), 0.83–1.09× at M = 8 and 32, and at M = 128 it is faster
/// (BENCHMARKS.md, "AMD EPYC Zen 4, 2026-12-08 (later)"; on Zen 3 f32 /
/// bf16 1.6× / 2.3× at M = 1). FP8 weights `[in, out]` run 1.9× / 1.2× /
/// 1.03× our f32 product of that layout at M = 1 / 8 / 32. Errors: mismatched shapes, a bias of the wrong length, an output
/// whose strides make two elements share memory, an output overlapping an
/// input, `Threads(0)`. Empty dimensions are valid; K = 0 gives the epilogue
/// of zero.
///
/// # Errors
/// * [`Error::ShapeMismatch`] when A is not M×K, B K×N and C M×N;
/// * [`Error::LengthMismatch`] for a bias whose length is not N;
/// * [`Error::Aliasing`] when C overlaps A or B, or its strides make two
///   elements share memory;
/// * [`Error::InvalidParameter`] for `Threads(0)`.
///
/// Non-finite values (in A, B, C or alpha/beta) are not errors: they
/// propagate as IEEE 754 says (a NaN result is the canonical quiet NaN).
pub fn gemm<T: FloatElement, O: FloatElement>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    gemm_mixed(a, b, c, epilogue, parallelism)
}

entry_and_portable_twin! {
    /// [`gemm`] with operands of two different types: E4M3 activations × E5M2
    /// gradients (the FP8 training pairing), bf16 weights × f32 activations,
    /// f16 × bf16, and so on.
    ///
    /// The contract is unchanged: each operand is widened exactly to f32, so the
    /// result has the bits of [`reference()`] on the widened operands (and of
    /// [`reference_mixed`]). The speed is that of the same-type call: the
    /// operands are widened while they are packed, as for one type.
    ///
    /// ```
    /// use mixprec::gemm::{gemm_mixed, Epilogue, Parallelism};
    /// use mixprec::{convert, MatMut, MatRef, F8E4M3, F8E5M2};
    /// let x: Vec<F8E4M3> = convert::narrow_vec(&[1.0, 2.0, 0.5, -1.0]);
    /// let dy: Vec<F8E5M2> = convert::narrow_vec(&[0.25, 1.0, -2.0, 4.0]);
    /// let mut dw = [0.0f32; 4];
    /// gemm_mixed(
    ///     MatRef::from_row_major(&x, 2, 2)?.t(), // xᵀ: 2×2
    ///     MatRef::from_row_major(&dy, 2, 2)?,
    ///     MatMut::from_row_major(&mut dw, 2, 2)?,
    ///     &Epilogue::new(),
    ///     Parallelism::Serial,
    /// )?;
    /// assert_eq!(dw, [-0.75, 3.0, 2.5, -2.0]);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`gemm`].
    pub fn gemm_mixed / gemm_portable<TA: FloatElement, TB: FloatElement, O: FloatElement>(
        a: MatRef<'_, TA>,
        b: MatRef<'_, TB>,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => gemm_on
}

fn gemm_on<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    validate(&a, &b, &c, epilogue, parallelism)?;
    driver::run(a, b, None, c, epilogue, parallelism, simd);
    Ok(())
}

/// Which strategy and kernel tier [`gemm`] / [`gemm_mixed`] run for these
/// operands and this parallelism (see [`Plan`]): the driver's own choice,
/// so that a test or a user can ask which path runs.
///
/// # Errors
/// [`Error::ShapeMismatch`] when A is M×K and B is not K×N.
pub fn plan<TA: FloatElement, TB: FloatElement>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    parallelism: Parallelism,
) -> Result<Plan, Error> {
    check_inner(&a, &b)?;
    let simd = crate::cpu::has_avx2_fma_f16c();
    Ok(driver::plan(&a, &b, None, false, parallelism, simd))
}

/// The contract as plain loops (see the module docs): the definition of the
/// result, and the oracle of the tests. Slow; same checks as [`gemm`].
///
/// # Errors
/// As [`gemm`].
pub fn reference<T: FloatElement, O: FloatElement>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
) -> Result<(), Error> {
    reference_with_tile_height(a, b, c, epilogue, ARRAY_ROWS)
}

/// [`reference()`] with operands of two types, the oracle of
/// [`gemm_mixed`]: the same loops, each operand widened exactly to f32.
///
/// # Errors
/// As [`gemm`].
pub fn reference_mixed<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
) -> Result<(), Error> {
    validate(&a, &b, &c, epilogue, Parallelism::Serial)?;
    reference::run(a, b, c, epilogue, ARRAY_ROWS);
    Ok(())
}

/// The contract's loops for an array of another height: K-tiles of
/// `tile_height` instead of [`ARRAY_ROWS`]. A weight-stationary array with
/// `tile_height` rows ([`crate::systolic::simulate`]) computes exactly this.
///
/// # Errors
/// As [`gemm`], and [`Error::InvalidParameter`] for a tile height of 0.
pub fn reference_with_tile_height<T: FloatElement, O: FloatElement>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    tile_height: usize,
) -> Result<(), Error> {
    validate(&a, &b, &c, epilogue, Parallelism::Serial)?;
    if tile_height == 0 {
        return Err(Error::InvalidParameter {
            name: "tile_height",
            value: "0".into(),
            requirement: "at least 1",
        });
    }
    reference::run(a, b, c, epilogue, tile_height);
    Ok(())
}

/// `A·B` into a new f32 tensor (alpha 1, beta 0, no bias).
///
/// ```
/// use mixprec::{gemm::{matmul, Parallelism}, MatRef};
/// let a = [1.0f32, 2.0, 3.0, 4.0];
/// let m = MatRef::from_row_major(&a, 2, 2)?;
/// let c = matmul(m, m.t(), Parallelism::Serial)?; // A·Aᵀ
/// assert_eq!(c.as_slice(), &[5.0, 11.0, 11.0, 25.0]);
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// As [`gemm`]; [`Error::ShapeOverflow`] when M·N overflows.
pub fn matmul<T: FloatElement>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    parallelism: Parallelism,
) -> Result<Tensor<f32>, Error> {
    let mut c = Tensor::<f32>::zeros(&[a.rows(), b.cols()])?;
    gemm(a, b, c.as_mat_mut()?, &Epilogue::new(), parallelism)?;
    Ok(c)
}

pub(crate) fn byte_range<T>(s: &[T]) -> (usize, usize) {
    let start = s.as_ptr() as usize;
    (start, start + std::mem::size_of_val(s))
}

pub(crate) fn overlaps(x: (usize, usize), y: (usize, usize)) -> bool {
    x.0 < y.1 && y.0 < x.1 && x.0 < x.1 && y.0 < y.1
}

fn validate<TA: Copy, TB: Copy, O: Copy>(
    a: &MatRef<'_, TA>,
    b: &MatRef<'_, TB>,
    c: &MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    validate_views(a, b, c, parallelism)?;
    if let Some(bias) = epilogue.bias {
        if bias.len() != b.cols() {
            return Err(Error::LengthMismatch {
                what: "gemm: bias (one per column of C)",
                expected: b.cols(),
                actual: bias.len(),
            });
        }
        if overlaps(byte_range(c.as_ref().as_slice()), byte_range(bias)) {
            return Err(Error::Aliasing { input: "bias" });
        }
    }
    Ok(())
}

/// `ShapeMismatch` unless A is M×K and B is K×N.
pub(crate) fn check_inner<TA: Copy, TB: Copy>(
    a: &MatRef<'_, TA>,
    b: &MatRef<'_, TB>,
) -> Result<(), Error> {
    if a.cols() == b.rows() {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        what: "gemm: A (M×K) and B (K×N)",
        left: vec![a.rows(), a.cols()],
        right: vec![b.rows(), b.cols()],
    })
}

/// The checks every GEMM (float or integer) makes before any work: shapes
/// agree, the output's elements are distinct in memory, the output does not
/// overlap an input, the thread count is not zero.
pub(crate) fn validate_views<TA: Copy, TB: Copy, O: Copy>(
    a: &MatRef<'_, TA>,
    b: &MatRef<'_, TB>,
    c: &MatMut<'_, O>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    check_inner(a, b)?;
    let (m, n) = (a.rows(), b.cols());
    if c.rows() != m || c.cols() != n {
        return Err(Error::ShapeMismatch {
            what: "gemm: C must be M×N",
            left: vec![c.rows(), c.cols()],
            right: vec![m, n],
        });
    }
    if parallelism == Parallelism::Threads(0) {
        return Err(Error::InvalidParameter {
            name: "Parallelism::Threads",
            value: "0".into(),
            requirement: "at least 1",
        });
    }
    // The output's elements must be distinct: sort the dimensions of size > 1
    // by stride; the larger stride must clear the smaller dimension's extent.
    let mut dims = [(c.row_stride(), c.rows()), (c.col_stride(), c.cols())];
    dims.sort();
    let [(s0, n0), (s1, n1)] = dims;
    let distinct = n0 == 0
        || n1 == 0
        || match (n0 > 1, n1 > 1) {
            (true, true) => s0 >= 1 && s1 >= s0.saturating_mul(n0),
            (true, false) => s0 >= 1,
            (false, true) => s1 >= 1,
            (false, false) => true,
        };
    if !distinct {
        return Err(Error::InvalidParameter {
            name: "C strides",
            value: format!(
                "({}, {}) for a {}×{} output",
                c.row_stride(),
                c.col_stride(),
                c.rows(),
                c.cols()
            ),
            requirement: "such that no two elements share memory",
        });
    }
    let out = byte_range(c.as_ref().as_slice());
    if overlaps(out, byte_range(a.as_slice())) {
        return Err(Error::Aliasing { input: "A" });
    }
    if overlaps(out, byte_range(b.as_slice())) {
        return Err(Error::Aliasing { input: "B" });
    }
    Ok(())
}

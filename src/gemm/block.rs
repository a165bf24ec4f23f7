//! The block-scaled GEMM: the systolic contract with one scale multiply
//! per block of K (see [`block_gemm`]).

use super::{driver, validate, Epilogue, Parallelism, Plan, Strategy};
use crate::block_scaled::{BlockScaled, PackedFp4, PackedFp8, PackedInt4};
use crate::cpu::entry_and_portable_twin;
use crate::dtype::FloatElement;
use crate::tensor::{MatMut, MatRef};
use crate::Error;

fn check<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<TB>,
    c: &MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
) -> Result<(), Error> {
    check_operands(dims(a), dims(b), BLOCK_GEMM_NAMES)?;
    // Shapes, the output's layout and aliasing, bias, threads: as `gemm`.
    validate(&a.data_mat(), &b.data_mat().t(), c, epilogue, parallelism)
}

entry_and_portable_twin! {
    /// `C = epilogue(A · Bᵀ)` for block-scaled operands: A is `M × K`, B is
    /// given as `N × K` (lines = N), C is `M × N`; element types may differ
    /// (E4M3 × E5M2, MXFP4 × MXFP8, …).
    ///
    /// # The block-scaled contract
    ///
    /// With scaling blocks of S ∈ {16, 32, 128} values along K (S divides 128,
    /// so a block never straddles a K-tile of the array), for each output:
    ///
    /// ```text
    /// acc = +0.0f32
    /// for each block [k0, k0 + S), k0 increasing:
    ///     p = +0.0f32
    ///     for k in the block, increasing:
    ///         p = fma(a[m,k] as f32, b[n,k] as f32, p)        // widened exactly
    ///     acc = fma(p, fl(s_a[m, block] · s_b[n, block]), acc) // one FMA per block
    /// c[m,n] = round_to_output(epilogue(acc))                  // once
    /// ```
    ///
    /// With S = 128 and every scale 1 this is the plain contract of
    /// [`super::gemm`] bit for bit (`fma(p, 1, acc) = acc + p`).
    /// [`block_gemm_reference`] is these loops; every ISA and thread count
    /// returns its bits.
    ///
    /// FP4 × FP4 (MXFP4, NVFP4): every chain above is exact (FP4 values are
    /// halves of integers up to 12, so each partial sum is a multiple of 1/4
    /// far below 2^24 / 4), so the fast path computes each block's `p` as an
    /// integer dot product of the codes (`vpmaddubsw` on AVX2) and then the
    /// same block accumulate: the contract's bits at about 1.3–1.9× the speed
    /// of our f32 GEMM at n = 1024 (BENCHMARKS.md).
    ///
    /// MX scales (powers of two) in the range where multiplying by them
    /// commutes with every rounding of a block's chain (each scale `2^e` with
    /// `2^e` times the element type's smallest value at least `2^-63` and
    /// times its largest at most `2^60`; any real MX data) are folded into the
    /// packed operands, so that each block ends with `acc + p·s_a·s_b`, which
    /// is `fma(p, fl(s_a·s_b), acc)` exactly: MXFP8 at about 0.93–0.95 of our
    /// f32 GEMM. Other scales keep the FMA per block.
    ///
    /// ```
    /// use mixprec::block_scaled::{BlockScaled, MxScaleMode};
    /// use mixprec::gemm::{block_gemm, Epilogue, Parallelism};
    /// use mixprec::{MatMut, MatRef, F4E2M1, F8E4M3};
    /// let x: Vec<f32> = (0..2 * 64).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    /// let w: Vec<f32> = (0..3 * 64).map(|i| ((i % 7) as f32 - 3.0) * 0.5).collect();
    /// let a = BlockScaled::<F8E4M3>::mx(MatRef::from_row_major(&x, 2, 64)?, MxScaleMode::Floor)?;
    /// let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 3, 64)?, MxScaleMode::Floor)?;
    /// let mut y = [0.0f32; 6];
    /// block_gemm(&a, &b, MatMut::from_row_major(&mut y, 2, 3)?, &Epilogue::new(), Parallelism::Serial)?;
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// * [`Error::ShapeMismatch`] when A and B differ in K or C is not M×N;
    /// * [`Error::InvalidParameter`] when A and B have different block sizes,
    ///   or for `Threads(0)`;
    /// * [`Error::LengthMismatch`] for a bias whose length is not N;
    /// * [`Error::Aliasing`] as [`super::gemm`].
    pub fn block_gemm / block_gemm_portable<TA: FloatElement, TB: FloatElement, O: FloatElement>(
        a: &BlockScaled<TA>,
        b: &BlockScaled<TB>,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => block_gemm_on
}

fn block_gemm_on<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<TB>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    check(a, b, &c, epilogue, parallelism)?;
    let scaling = scaling_of(a, b);
    driver::run(
        a.data_mat(),
        b.data_mat().t(),
        Some(&scaling),
        c,
        epilogue,
        parallelism,
        simd,
    );
    Ok(())
}

/// The driver's view of both operands' scales.
fn scaling_of<'s, TA: FloatElement, TB: FloatElement>(
    a: &'s BlockScaled<TA>,
    b: &'s BlockScaled<TB>,
) -> driver::Scaling<'s> {
    driver::Scaling {
        block: a.block(),
        a: grid_of(a),
        b: grid_of(b),
    }
}

fn grid_of<T: FloatElement>(x: &BlockScaled<T>) -> driver::ScaleGrid<'_> {
    driver::ScaleGrid {
        scales: x.scales(),
        line_group: x.line_group(),
        blocks: x.k() / x.block(),
    }
}

/// Which strategy and kernel tier [`block_gemm`] runs for these operands
/// (see [`Plan`]).
///
/// # Errors
/// [`Error::ShapeMismatch`] when A and B differ in K,
/// [`Error::InvalidParameter`] when their block sizes differ.
pub fn block_gemm_plan<TA: FloatElement, TB: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<TB>,
    parallelism: Parallelism,
) -> Result<Plan, Error> {
    check_operands(dims(a), dims(b), BLOCK_GEMM_NAMES)?;
    let simd = crate::cpu::has_avx2_fma_f16c();
    let scaling = scaling_of(a, b);
    let (am, bm) = (a.data_mat(), b.data_mat().t());
    Ok(driver::plan(
        &am,
        &bm,
        Some(&scaling),
        false,
        parallelism,
        simd,
    ))
}

/// Which strategy and kernel tier [`block_gemm_packed`] runs (see
/// [`Plan`]): [`Strategy::PackedFp4`] where it streams the packed weights,
/// else the plan of [`block_gemm`] on the unpacked weights (computed on
/// an unpacked copy).
///
/// # Errors
/// As [`block_gemm_plan`].
pub fn block_gemm_packed_plan<TA: FloatElement>(
    a: &BlockScaled<TA>,
    b: &PackedFp4,
    parallelism: Parallelism,
) -> Result<Plan, Error> {
    if streams_packed(a.lines()) {
        check_operands(dims(a), (b.lines(), b.k(), b.block()), PACKED_NAMES)?;
        return Ok(packed_plan::<TA>(a.lines(), b, parallelism));
    }
    block_gemm_plan(a, &b.to_block_scaled(), parallelism)
}

/// The plan of a product of `m` rows that streams the packed weights `b`.
fn packed_plan<TA: FloatElement>(m: usize, b: &PackedFp4, parallelism: Parallelism) -> Plan {
    let simd = crate::cpu::has_avx2_fma_f16c();
    Plan {
        strategy: if driver::has_integer_view::<TA>() {
            Strategy::PackedFp4
        } else {
            Strategy::PackedDense
        },
        tier: driver::packed_fp4_tier(simd),
        parts: driver::parts(m, b.lines(), b.k(), parallelism),
    }
}

/// The same K and block size on both sides: `(lines, k, block)` of A and
/// of B; `what` names the shapes, `name` the block sizes in the errors.
fn check_operands(
    (lines_a, ka, block_a): (usize, usize, usize),
    (lines_b, kb, block_b): (usize, usize, usize),
    (what, name): (&'static str, &'static str),
) -> Result<(), Error> {
    if ka != kb {
        return Err(Error::ShapeMismatch {
            what,
            left: vec![lines_a, ka],
            right: vec![lines_b, kb],
        });
    }
    if block_a != block_b {
        return Err(Error::InvalidParameter {
            name,
            value: format!("A {block_a}, B {block_b}"),
            requirement: "the same block size along K for A and B",
        });
    }
    Ok(())
}

/// `(lines, k, block)` of a block-scaled operand.
fn dims<T: FloatElement>(x: &BlockScaled<T>) -> (usize, usize, usize) {
    (x.lines(), x.k(), x.block())
}

const BLOCK_GEMM_NAMES: (&str, &str) =
    ("block_gemm: A (M×K) and B (N×K)", "block_gemm block sizes");
const PACKED_NAMES: (&str, &str) = (
    "block_gemm_packed: A (M×K) and B (N×K)",
    "block_gemm_packed block sizes",
);

/// Whether [`block_gemm_packed`] and [`weight_only_gemm_packed`] stream
/// the packed weights for `m` rows of activations (else they unpack them
/// for the blocked engine): at most [`PACKED_MAX_ROWS`] rows.
fn streams_packed(m: usize) -> bool {
    // Past a few dozen rows the blocked engine (which reuses each widened
    // weight across rows) is faster than a stream per row.
    m <= PACKED_MAX_ROWS
}

/// The block-scaled contract as plain loops (see [`block_gemm`]): the
/// oracle of its tests.
///
/// # Errors
/// As [`block_gemm`].
pub fn block_gemm_reference<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: &BlockScaled<TA>,
    b: &BlockScaled<TB>,
    mut c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
) -> Result<(), Error> {
    check(a, b, &c, epilogue, Parallelism::Serial)?;
    let (av, bv): (MatRef<'_, TA>, MatRef<'_, TB>) = (a.data_mat(), b.data_mat());
    let (m, n, k, s) = (a.lines(), b.lines(), a.k(), a.block());
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for (blk, k0) in (0..k).step_by(s).enumerate() {
                let mut p = 0.0f32;
                for kk in k0..k0 + s {
                    p = av.at(i, kk).to_f32().mul_add(bv.at(j, kk).to_f32(), p);
                }
                let scale = a.scales()[a.scale_index(i, blk)] * b.scales()[b.scale_index(j, blk)];
                acc = p.mul_add(scale, acc);
            }
            let old = if epilogue.beta != 0.0 {
                c.as_ref().at(i, j).to_f32()
            } else {
                0.0
            };
            c.set(i, j, O::from_f32(epilogue.apply(acc, old, j)));
        }
    }
    Ok(())
}

entry_and_portable_twin! {
    /// [`block_gemm`] with FP4 weights packed once by [`PackedFp4`] (B is
    /// `N × K`, as there): the same contract and bits. Up to 32 rows of A,
    /// this streams the packed weights, at half a byte per weight, which is
    /// what batch-1 inference needs: with activations whose values are
    /// small integers times a power of two (FP4 E2M1, FP6 E2M3, MXINT8: each
    /// block's FMA chain is then exact, so it is an integer dot product,
    /// [`Strategy::PackedFp4`]), or with the contract's f32 chains on codes
    /// decoded in registers for any other activations (MXFP8, FP8, …,
    /// [`Strategy::PackedDense`]). With more rows it unpacks B and calls
    /// [`block_gemm`].
    ///
    /// # Errors
    /// As [`block_gemm`].
    pub fn block_gemm_packed / block_gemm_packed_portable<TA: FloatElement, O: FloatElement>(
        a: &BlockScaled<TA>,
        b: &PackedFp4,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => packed_on
}

/// Rows of A up to which [`block_gemm_packed`] streams the packed weights.
const PACKED_MAX_ROWS: usize = 32;

fn packed_on<TA: FloatElement, O: FloatElement>(
    a: &BlockScaled<TA>,
    b: &PackedFp4,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    if !streams_packed(a.lines()) {
        let unpacked = b.to_block_scaled();
        return block_gemm_on(a, &unpacked, c, epilogue, parallelism, simd);
    }
    check_operands(dims(a), (b.lines(), b.k(), b.block()), PACKED_NAMES)?;
    // Shapes, the output's layout, bias, threads: as `gemm`, with a
    // shape-only K×N view standing for the packed B.
    let b_shape = MatRef::<u8>::shape_only(b.k(), b.lines());
    validate(&a.data_mat(), &b_shape, &c, epilogue, parallelism)?;
    driver::run_packed_fp4(a.data_mat(), &grid_of(a), b, c, epilogue, parallelism, simd);
    Ok(())
}

/// The driver's scales of a weight-only product: unit scales (`ones`, from
/// [`driver::unit_scales`]) for the dense activations, `b`'s for the weights.
fn weight_only_scaling<'s, TB: FloatElement>(
    b: &'s BlockScaled<TB>,
    ones: &'s [f32],
) -> driver::Scaling<'s> {
    driver::Scaling {
        block: b.block(),
        a: driver::ScaleGrid::unit(ones),
        b: grid_of(b),
    }
}

const WEIGHT_ONLY_NAMES: (&str, &str) = (
    "weight_only_gemm: A (M×K) and B (N×K)",
    "weight_only_gemm block sizes",
);

/// K of the activations against the weights' `(lines, k, block)`: the
/// same check as the block-scaled entry points, with A's block taken as B's.
fn check_dense_a(m: usize, k: usize, (n, kb, block): (usize, usize, usize)) -> Result<(), Error> {
    check_operands((m, k, block), (n, kb, block), WEIGHT_ONLY_NAMES)
}

entry_and_portable_twin! {
    /// `C = epilogue(A · Bᵀ)` for dense activations A (`M × K`, f32, bf16,
    /// f16 or any element type, any strides) against block-scaled weights B
    /// (`N × K`, PyTorch's `[out, in]`: MXFP8, MXFP6, MXFP4, NVFP4, scaled
    /// FP8, …): weight-only quantized inference, W8A16 / W4A16 / W4A32.
    ///
    /// # Contract
    ///
    /// The activations enter as their exact f32 values, unquantized, with a
    /// scale of 1 per block; the block-scaled contract of [`block_gemm`]
    /// then applies: for each output, per block of B's block size along K,
    /// `p` is the FMA chain of `a[m,k] · b[n,k]` from +0.0 (k increasing)
    /// and `acc = fma(p, s_b[n, block], acc)` (`fl(1 · s_b) = s_b`), then
    /// the epilogue and one rounding to the output type. The bits are
    /// those of [`block_gemm_reference`] on A made a [`BlockScaled`] with
    /// unit scales, for every ISA and thread count, and no copy of A is
    /// made. To quantize the activations as well, quantize them
    /// ([`BlockScaled::mx`], [`BlockScaled::nvfp4`], …) and call
    /// [`block_gemm`]. At small batch (up to 32 rows; on AVX2, 24 for FP6)
    /// weights of one-byte codes (FP8, FP6, FP4) are read in place and
    /// decoded in registers ([`Strategy::DirectTransposedBlocks`], whatever
    /// the size of W; from 8 rows, FP4 from 9, each chunk of codes is
    /// decoded once into an L1 buffer that every row reads); past 32 rows B
    /// is widened per call. For FP4 weights
    /// at small batch, packing
    /// them once with [`PackedFp4`] and calling [`weight_only_gemm_packed`]
    /// is faster still (half a byte per weight).
    ///
    /// K must be a multiple of the weights' block
    /// ([`crate::block_scaled::pad_k`] pads both sides with zeros).
    ///
    /// ```
    /// use mixprec::block_scaled::{BlockScaled, MxScaleMode};
    /// use mixprec::gemm::{weight_only_gemm, Epilogue, Parallelism};
    /// use mixprec::{MatMut, MatRef, F4E2M1};
    /// let w: Vec<f32> = (0..3 * 64).map(|i| ((i % 7) as f32 - 3.0) * 0.5).collect();
    /// let x: Vec<f32> = (0..2 * 64).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    /// // Weights [out = 3, in = 64] as MXFP4; activations stay f32.
    /// let wq = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 3, 64)?, MxScaleMode::Floor)?;
    /// let mut y = [0.0f32; 6];
    /// weight_only_gemm(MatRef::from_row_major(&x, 2, 64)?, &wq, MatMut::from_row_major(&mut y, 2, 3)?,
    ///     &Epilogue::new(), Parallelism::Serial)?;
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// * [`Error::ShapeMismatch`] when A's K differs from B's or C is not M×N;
    /// * [`Error::InvalidParameter`] for `Threads(0)`;
    /// * [`Error::LengthMismatch`] for a bias whose length is not N;
    /// * [`Error::Aliasing`] as [`super::gemm`].
    pub fn weight_only_gemm / weight_only_gemm_portable<TA: FloatElement, TB: FloatElement, O: FloatElement>(
        a: MatRef<'_, TA>,
        b: &BlockScaled<TB>,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => weight_only_on
}

fn weight_only_on<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: &BlockScaled<TB>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    check_dense_a(a.rows(), a.cols(), dims(b))?;
    validate(&a, &b.data_mat().t(), &c, epilogue, parallelism)?;
    let ones = driver::unit_scales(b.k(), b.block());
    let scaling = weight_only_scaling(b, &ones);
    driver::run(
        a,
        b.data_mat().t(),
        Some(&scaling),
        c,
        epilogue,
        parallelism,
        simd,
    );
    Ok(())
}

entry_and_portable_twin! {
    /// [`weight_only_gemm`] with FP4 weights (MXFP4, NVFP4) packed once by
    /// [`PackedFp4`]: the same contract and bits. Up to 32 rows of A it
    /// streams the packed weights, decoding each code in registers into the
    /// contract's f32 chains ([`Strategy::PackedDense`]); past that it
    /// unpacks them for the blocked engine.
    ///
    /// ```
    /// use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp4};
    /// use mixprec::gemm::{weight_only_gemm, weight_only_gemm_packed, Epilogue, Parallelism};
    /// use mixprec::{bf16, MatMut, MatRef, F4E2M1};
    /// let w: Vec<f32> = (0..16 * 64).map(|i| ((i % 11) as f32 - 5.0) * 0.3).collect();
    /// let x: Vec<bf16> = (0..64).map(|i| bf16::from_f32(i as f32 * 0.01)).collect();
    /// let wq = BlockScaled::<F4E2M1>::nvfp4(MatRef::from_row_major(&w, 16, 64)?, true)?;
    /// let packed = PackedFp4::new(&wq);
    /// let x = MatRef::from_row_major(&x, 1, 64)?;
    /// let (mut y1, mut y2) = ([0.0f32; 16], [0.0f32; 16]);
    /// weight_only_gemm_packed(x, &packed, MatMut::from_row_major(&mut y1, 1, 16)?, &Epilogue::new(), Parallelism::Serial)?;
    /// weight_only_gemm(x, &wq, MatMut::from_row_major(&mut y2, 1, 16)?, &Epilogue::new(), Parallelism::Serial)?;
    /// assert_eq!(y1, y2); // the same bits
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`weight_only_gemm`].
    pub fn weight_only_gemm_packed / weight_only_gemm_packed_portable<TA: FloatElement, O: FloatElement>(
        a: MatRef<'_, TA>,
        b: &PackedFp4,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => weight_only_packed_on
}

fn weight_only_packed_on<TA: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: &PackedFp4,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    if !streams_packed(a.rows()) {
        let unpacked = b.to_block_scaled();
        return weight_only_on(a, &unpacked, c, epilogue, parallelism, simd);
    }
    stream_dense(a, b, c, epilogue, parallelism, simd)
}

entry_and_portable_twin! {
    /// `C = epilogue(A · Bᵀ)` for dense activations A (`M × K`, f32, bf16,
    /// f16, …, any strides) against group-wise int4 weights B
    /// ([`PackedInt4`], `N × K`, PyTorch's `[out, in]`): W4A16 / W4A32
    /// inference on GPTQ/AWQ-style weights.
    ///
    /// # Contract
    ///
    /// The block-scaled contract of [`block_gemm`] with the groups as
    /// blocks, the activations as their exact f32 values with scale 1, and
    /// the weights as the exact integers `q − z`: for each output, per
    /// group, `p` is the FMA chain of `a[m,k] · (q[n,k] − z[n,group])` from
    /// +0.0 (k increasing) and `acc = fma(p, s[n, group], acc)`; then the
    /// epilogue and one rounding to the output type. Every ISA and thread
    /// count returns these bits. The result is within
    /// `γ(K) · Σ|a·(q − z)·s|` of the exact product of A and
    /// [`PackedInt4::dequantize`]'s values (before their own rounding).
    /// The packed weights are streamed at every M (each 8 × 8 block of
    /// codes decoded in registers).
    ///
    /// ```
    /// use mixprec::block_scaled::PackedInt4;
    /// use mixprec::gemm::{weight_only_gemm_int4, Epilogue, Parallelism};
    /// use mixprec::{MatMut, MatRef};
    /// let w: Vec<f32> = (0..8 * 64).map(|i| ((i % 9) as f32 - 4.0) * 0.25).collect();
    /// let wq = PackedInt4::quantize(MatRef::from_row_major(&w, 8, 64)?, 32)?;
    /// let x = vec![1.0f32; 64];
    /// let mut y = [0.0f32; 8];
    /// weight_only_gemm_int4(MatRef::from_row_major(&x, 1, 64)?, &wq,
    ///     MatMut::from_row_major(&mut y, 1, 8)?, &Epilogue::new(), Parallelism::Serial)?;
    /// let exact: f32 = wq.dequantize()?.as_slice()[..64].iter().sum();
    /// assert!((y[0] - exact).abs() <= 1e-5);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`weight_only_gemm`].
    pub fn weight_only_gemm_int4 / weight_only_gemm_int4_portable<TA: FloatElement, O: FloatElement>(
        a: MatRef<'_, TA>,
        b: &PackedInt4,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => int4_on
}

fn int4_on<TA: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: &PackedInt4,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    stream_dense(a, b, c, epilogue, parallelism, simd)
}

/// Dense activations against weights laid out for streaming (`PackedFp4`,
/// `PackedInt4`, `PackedFp8`): the weight-only checks, unit scales for A,
/// and the streaming kernels.
fn stream_dense<TA: FloatElement, O: FloatElement, W: driver::NibbleWeights>(
    a: MatRef<'_, TA>,
    b: &W,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    check_dense_a(a.rows(), a.cols(), (b.lines(), b.k(), b.block()))?;
    // Shapes, the output's layout, bias, threads: as `gemm`, with a
    // shape-only K×N view standing for the packed B.
    let b_shape = MatRef::<u8>::shape_only(b.k(), b.lines());
    validate(&a, &b_shape, &c, epilogue, parallelism)?;
    let ones = driver::unit_scales(b.k(), b.block());
    driver::run_packed_fp4(
        a,
        &driver::ScaleGrid::unit(&ones),
        b,
        c,
        epilogue,
        parallelism,
        simd,
    );
    Ok(())
}

entry_and_portable_twin! {
    /// [`weight_only_gemm`] with E4M3 weights (MXFP8, scaled FP8 such as
    /// DeepSeek-V3's 128 × 128 blocks) laid out once by [`PackedFp8`]: the
    /// same contract and bits (W8A16 / W8A32). It streams the weights at
    /// every M, eight codes per load decoded in registers (read as f16,
    /// `vcvtph2ps`; [`Strategy::PackedDense`]): on Zen 3 at K = N = 4096
    /// 0.18× the time of [`weight_only_gemm`] on the matrix at M = 1, 0.48×
    /// at 8, 1.07× at 32 (BENCHMARKS.md "Weight-only inference"). On CPUs
    /// with AVX-512 VBMI and GFNI (Ice Lake and later, Zen 4 and later)
    /// sixteen lines go per zmm: up to 8 rows each code is decoded in
    /// registers straight to f32 (two GFNI affines and byte unpacks), and
    /// past 8 rows each chunk of 32 lines is decoded once into an L1
    /// buffer that every row reads. On an Intel Xeon (Sapphire Rapids
    /// class) at K = N = 4096 that is 2.8× / 1.8× / 2.4× faster than our
    /// f32 [`gemm`](crate::gemm::gemm) at M = 1 / 8 / 32. A matrix with a
    /// NaN code runs [`weight_only_gemm`] on the matrix.
    ///
    /// # Errors
    /// As [`weight_only_gemm`].
    pub fn weight_only_gemm_fp8 / weight_only_gemm_fp8_portable<TA: FloatElement, O: FloatElement>(
        a: MatRef<'_, TA>,
        b: &PackedFp8,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => fp8_on
}

fn fp8_on<TA: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: &PackedFp8,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    if !b.streamable() {
        return weight_only_on(a, &b.to_block_scaled(), c, epilogue, parallelism, simd);
    }
    stream_dense(a, b, c, epilogue, parallelism, simd)
}

/// Which strategy and kernel tier [`weight_only_gemm`] runs (see [`Plan`]).
///
/// # Errors
/// [`Error::ShapeMismatch`] when A's K differs from B's.
pub fn weight_only_gemm_plan<TA: FloatElement, TB: FloatElement>(
    a: MatRef<'_, TA>,
    b: &BlockScaled<TB>,
    parallelism: Parallelism,
) -> Result<Plan, Error> {
    check_dense_a(a.rows(), a.cols(), dims(b))?;
    let simd = crate::cpu::has_avx2_fma_f16c();
    let ones = driver::unit_scales(b.k(), b.block());
    let scaling = weight_only_scaling(b, &ones);
    Ok(driver::plan(
        &a,
        &b.data_mat().t(),
        Some(&scaling),
        false,
        parallelism,
        simd,
    ))
}

/// Which strategy and kernel tier [`weight_only_gemm_packed`] runs (see
/// [`Plan`]).
///
/// # Errors
/// As [`weight_only_gemm_plan`].
pub fn weight_only_gemm_packed_plan<TA: FloatElement>(
    a: MatRef<'_, TA>,
    b: &PackedFp4,
    parallelism: Parallelism,
) -> Result<Plan, Error> {
    if streams_packed(a.rows()) {
        check_dense_a(a.rows(), a.cols(), (b.lines(), b.k(), b.block()))?;
        return Ok(packed_plan::<TA>(a.rows(), b, parallelism));
    }
    weight_only_gemm_plan(a, &b.to_block_scaled(), parallelism)
}

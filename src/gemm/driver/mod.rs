//! The GEMM driver: the plan that picks a strategy and a kernel tier for a
//! call, and one file per strategy.
//!
//! | strategy ([`Strategy`]) | file | runs when |
//! |---|---|---|
//! | `Blocked` | [`blocked`] | the default: BLIS's loops, A and B packed |
//! | `DirectB` | [`direct_b`] | few rows, a large row-major B (at ≤ 16 rows, 32 for bf16 / f16 B, from 128 × 128): B read in place |
//! | `DirectTransposed` | [`direct_t`] | the same sizes, B with contiguous columns (`x · Wᵀ`, W stored `[out, in]`): each K-tile of a panel transposed in L1 |
//! | `DirectPrepacked` | [`prepacked`] | few rows, B pre-packed ([`super::PackedB`]) |
//! | `DirectTransposedBlocks` | [`direct_t_blocks`] | block-scaled, few rows, weights `[out, in]` of one-byte codes (FP8, FP6, FP4) the kernel decodes: read in place |
//! | `ExactSmallFp4` | [`exact_small`] | block-scaled, ≤ 1 (AVX-512) / 2 (AVX2) rows, FP4 weights, integer-valued A |
//! | `Fp4Tiles` | [`fp4_tiles`] | block-scaled FP4 × FP4 past 4 rows |
//! | `PackedFp4` | [`packed_fp4`] | [`super::block_gemm_packed`] on a [`PackedFp4`](crate::block_scaled::PackedFp4), integer-valued A |
//! | `PackedDense` | [`packed_fp4`] | the same with any other A, [`super::weight_only_gemm_packed`], [`super::weight_only_gemm_int4`] |
//!
//! [`choose`] is the whole choice, one `match`; [`threads`] splits C into
//! parts (each part chooses by its own shape), and every strategy shares
//! [`pack`], [`workspace`] and [`write_back`]. The kernels they call are the
//! [`super::kernel`] leaves, one per instruction set ([`Tier`]).
//!
//! The blocked loops (outermost first), with the K block fixed at
//! [`super::ARRAY_ROWS`] so that one micro-kernel call is one pass of the
//! systolic array:
//! 1. `jc`: N in blocks of `NC`; pack B's `K × NC` panel (all K-tiles).
//! 2. `ic`: M in blocks of `MC`; pack A's `MC × K` block; zero the f32
//!    accumulator block `MC × NC` (it stays in L2).
//! 3. K-tiles of `ARRAY_ROWS`, increasing: the contract's tile order.
//! 4. `jr`/`ir`: NR-wide B micro-panels, MR-tall A micro-panels: the kernel.
//! 5. After the last K-tile: the epilogue, row by row, into C.

mod blocked;
mod direct_b;
mod direct_t;
mod direct_t_blocks;
mod exact_small;
mod fp4_tiles;
mod pack;
mod packed_fp4;
mod prepacked;
mod threads;
mod workspace;
mod write_back;

pub(crate) use exact_small::has_integer_view;
pub(crate) use packed_fp4::{packed_fp4_tier, run_packed_fp4, NibbleWeights};
pub(crate) use prepacked::{prepack_b, prepacked_kernel_fits, PREPACKED_NR};
pub(crate) use threads::{par_split, task_count};

use super::kernel::portable::Portable;
#[cfg(target_arch = "x86_64")]
use super::kernel::x86_avx2::Avx2;
#[cfg(target_arch = "x86_64")]
use super::kernel::x86_avx512::Avx512;
use super::kernel::{Kernel, BLOCKS_T_LINES};
use super::{Epilogue, Parallelism};
use crate::dtype::{DType, FloatElement};
use crate::tensor::{MatMut, MatRef};
use std::sync::OnceLock;
use workspace::{with_workspace, Workspace};

/// Rows of A per packed block (a multiple of every kernel's MR).
const MC: usize = 96;
/// Columns of B per packed panel (a multiple of every kernel's NR).
const NC: usize = 512;
/// NR-column panels of B that one kernel call takes side by side: the
/// blocked tile on that many panels ([`Kernel::tile_panels`], 8 × 48 on
/// AVX-512), and the `[out, in]` strategy's panels packed as one for the
/// direct kernel (three registers of columns a row). Each broadcast of A
/// then feeds that many FMAs (Intel Xeon, Ice Lake, K = N = 4096 f32, `[out,
/// in]` W, M = 32: 35–37 ms with one panel and the one-register direct
/// kernel, 21–26 with three).
const WIDE_PANELS: usize = 3;
/// Skinny products read B in place instead of packing it (packing B costs
/// as much memory traffic as the whole product): up to `DIRECT_B_MAX_M`
/// rows when B has at least `DIRECT_B_MIN_ELEMENTS` elements, and up to
/// `DIRECT_B_MAX_M_LARGE_B` rows when B is too big for L2. Crossovers
/// measured on Zen 3; small B is faster packed.
const DIRECT_B_MAX_M: usize = 32;
const DIRECT_B_MIN_ELEMENTS: usize = 1 << 18;
const DIRECT_B_MAX_M_LARGE_B: usize = 96;
const LARGE_B_ELEMENTS: usize = 1 << 20;
/// Plain (unscaled) products of up to `SMALL_B_DIRECT_MAX_M` rows read B in
/// place from `SMALL_B_DIRECT_MIN_ELEMENTS` elements on: one A panel with
/// padding rows costs the blocked loops more than they save, and a B the
/// blocked loops widen costs them a pass per call (AMD EPYC Zen 4, one
/// thread, ms, blocked against in place: 8 × 512 × 256 f32 / bf16 W `[in,
/// out]` 0.034 / 0.056 → 0.024 / 0.023, `[out, in]` 0.034 / 0.043 →
/// 0.028 / 0.026; 8 × 128 × 512 f32 `[in, out]` 0.0168 → 0.0149; 16 × 256
/// × 512 f32 / bf16 `[in, out]` 0.053 / 0.075 → 0.048 / 0.043, `[out, in]`
/// 0.052 / 0.063 → 0.047 / 0.052, E4M3 `[in, out]` on the AVX2 tier 0.091
/// → 0.083; 1 × 512 × 256 f32 `[in, out]` 0.036 → 0.009). At 32 rows the
/// blocked loops win for f32 and `[out, in]` W (32 × 128 × 512 f32 `[in,
/// out]` 0.045 against 0.055, `[out, in]` 0.045 against 0.047; 32 × 512 ×
/// 256 f32 `[out, in]` 0.090 against 0.111; E4M3 on the AVX2 tier 0.140
/// against 0.161), and lose for 16-bit W `[in, out]`
/// ([`SMALL_B_DIRECT_MAX_M_16BIT`]).
const SMALL_B_DIRECT_MAX_M: usize = 16;
/// [`SMALL_B_DIRECT_MAX_M`] for bf16 and f16 B stored `[in, out]` (row-major
/// B), which the blocked loops widen per call: 32 × 256 × 512 bf16 / f16
/// 0.102–0.112 / 0.112 → 0.086 / 0.088 ms, 32 × 128 × 512 bf16 0.052 →
/// 0.045, 32 × 512 × 256 0.112 → 0.086; the AVX2 tier 32 × 256 × 512 bf16
/// 0.132 → 0.112.
const SMALL_B_DIRECT_MAX_M_16BIT: usize = 32;
/// [`SMALL_B_DIRECT_MAX_M`] for one-byte codes (FP8, FP6, FP4) with
/// contiguous columns (W stored `[out, in]`) where the block kernels do
/// not take them (K not a multiple of [`super::ARRAY_ROWS`]): their panels
/// widened a chunk at a time lose to the blocked loops past 4 rows (E4M3
/// 8 / 16 × 256 × 500 0.064 / 0.084 ms blocked against 0.071 / 0.096).
const SMALL_B_DIRECT_MAX_M_ONE_BYTE_OUT_IN: usize = 4;
/// [`DIRECT_B_MAX_M_LARGE_B`] for FP8 B, which each A panel decodes again,
/// from the same 4 MiB of B as f32's [`LARGE_B_ELEMENTS`]: AMD EPYC Zen 4,
/// E4M3, one thread, K = N = 4096, M = 96 / 128 / 192 41.4–42.0 / 56.0–59.3
/// / 72.4 ms packed against 40.7 / 54.2 / 81.3 in place, since the kernel
/// widens E4M3 in five integer operations and takes A times 2^8 (before,
/// M = 64 / 96 46.6–52.6 / 52.3–63.5 packed against 34.8–36.4 / 53.5–58.3
/// in place, and the limit was 64); 64 × 1024 × 1024 1.8 against 2.5–2.6.
const DIRECT_B_MAX_M_FP8: usize = 128;
/// [`DIRECT_B_MAX_M_FP8`] for FP8 B with contiguous columns (W stored
/// `[out, in]`; `Strategy::DirectTransposed` past the rows the block
/// kernels take), whose panels are widened a chunk at a time: E4M3, K = N
/// = 4096, M = 64 29.9 ms against 29.2 blocked at 65 rows; M = 96 / 128
/// 41.3–44.2 / 59.7 against 40.1 / 49.5 blocked.
const DIRECT_T_MAX_M_FP8: usize = 64;
const SMALL_B_DIRECT_MIN_ELEMENTS: usize = 1 << 14;
/// Rows up to which block-scaled FP4 × FP4 products do not take the
/// integer tiles (`Fp4Tiles`).
const FP4_TILES_MIN_M: usize = 5;

/// Which code path computes a product (see [`Plan`]). Every path returns
/// the bits of the contract's reference loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// BLIS's loops: A and B packed into panels (widened to f32), one
    /// micro-kernel call per K-tile of 128.
    Blocked,
    /// [`Strategy::Blocked`] for a block-scaled product whose scales are
    /// powers of two in a safe range: they are folded into the packed
    /// panels (exact), and each block ends with a plain add.
    BlockedFoldedScales,
    /// A skinny product (few rows and a large B, or at most 16 rows, 32
    /// for bf16 and f16 B, and a B of 128 × 128 elements or more; B's rows
    /// contiguous): B is read in place instead of packed.
    DirectB,
    /// A skinny product (as for [`Strategy::DirectB`]) whose B has
    /// contiguous columns (`x · Wᵀ` with W stored `[out, in]`): each K-tile
    /// of each panel of B is transposed into L1 and streamed, instead of
    /// packing B whole.
    DirectTransposed,
    /// A skinny product on a pre-packed B ([`super::PackedB`]): its panels
    /// are streamed in place.
    DirectPrepacked,
    /// A block-scaled product of few rows (B of any size) whose weights are `N × K` lines of
    /// one-byte codes (FP8 E4M3/E5M2, FP6, FP4 as a
    /// [`BlockScaled`](crate::block_scaled::BlockScaled) holds them:
    /// [`super::weight_only_gemm`], [`super::block_gemm`]): the codes are
    /// read in place, sixteen lines at a time, and decoded in registers.
    /// Also a plain product of few rows ([`super::gemm`]) with one-byte
    /// float weights stored `[out, in]` (B a transposed view) and K a
    /// multiple of [`super::ARRAY_ROWS`]: the same kernels with unit
    /// scales and blocks of one K-tile, whose `sum = fma(p, 1, sum)` is
    /// the plain contract's `acc = acc + p`.
    DirectTransposedBlocks,
    /// A block-scaled product of one or two rows (the tier's
    /// `Kernel::EXACT_SMALL_ROWS`) with FP4 weights and
    /// activations whose values are small integers times a power of two
    /// (FP4, FP6 E2M3, MXINT8): exact integer block sums from the codes.
    ExactSmallFp4,
    /// A block-scaled FP4 × FP4 product (MXFP4, NVFP4) past four rows:
    /// exact integer tiles in the blocked loops.
    Fp4Tiles,
    /// [`super::block_gemm_packed`]: exact integer block sums on FP4
    /// weights packed by [`crate::block_scaled::PackedFp4`].
    PackedFp4,
    /// [`super::block_gemm_packed`] with activations that have no integer
    /// view (MXFP8, FP8, …), [`super::weight_only_gemm_packed`] (f32,
    /// bf16, f16 activations) and [`super::weight_only_gemm_int4`]: the
    /// contract's f32 chains on 4-bit weights packed two per byte
    /// ([`crate::block_scaled::PackedFp4`], [`crate::block_scaled::PackedInt4`]),
    /// each code decoded in registers.
    PackedDense,
}

/// The kernel family a call runs on (the micro-kernel leaves of
/// `gemm::kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// AVX-512 F/BW/VL/VNNI tiles on zmm registers.
    Avx512,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Plain Rust with `f32::mul_add`: any CPU.
    Portable,
}

/// What a GEMM call will run: the strategy, the kernel tier and the number
/// of parts its threads split C into. A threaded call's parts each choose
/// by their own shape with the same rules; `strategy` is the choice for the
/// whole of C (the one every part makes unless a part's share of rows or
/// columns crosses a threshold of the plan).
///
/// ```
/// use mixprec::gemm::{plan, Parallelism, Strategy, Tier};
/// use mixprec::{bf16, MatRef};
/// let x = vec![bf16::ZERO; 4096];
/// let w = vec![bf16::ZERO; 4096 * 4096];
/// let p = plan(
///     MatRef::from_row_major(&x, 1, 4096)?,
///     MatRef::from_row_major(&w, 4096, 4096)?,
///     Parallelism::Serial,
/// )?;
/// // One row against a large row-major B: B is read in place.
/// if p.tier != Tier::Portable {
///     assert_eq!(p.strategy, Strategy::DirectB);
/// }
/// assert_eq!(p.parts, 1);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Plan {
    /// The code path.
    pub strategy: Strategy,
    /// The kernel family.
    pub tier: Tier,
    /// How many parts C is split into (1: the calling thread only).
    pub parts: usize,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Avx512 => "avx512",
            Tier::Avx2 => "avx2",
            Tier::Portable => "portable",
        })
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {}, {} part(s)",
            self.strategy, self.tier, self.parts
        )
    }
}

/// The float kernels' tier: AVX-512 where the CPU has it (and `simd`),
/// else AVX2 (`simd`), else portable.
pub(crate) fn tier(simd: bool) -> Tier {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return if crate::cpu::has_avx512() {
            Tier::Avx512
        } else {
            Tier::Avx2
        };
    }
    let _ = simd;
    Tier::Portable
}

/// `$body` with the type `$k` naming the kernel of `$tier`.
macro_rules! with_kernel {
    ($tier:expr, $k:ident => $body:expr) => {
        match $tier {
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => {
                type $k = Avx512;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => {
                type $k = Avx2;
                $body
            }
            _ => {
                type $k = Portable;
                $body
            }
        }
    };
}
pub(crate) use with_kernel;

/// What [`choose`] reads of one part of a product.
struct Operands {
    m: usize,
    n: usize,
    k: usize,
    /// The scaling block of a block-scaled product.
    block: Option<usize>,
    /// B comes as pre-packed panels.
    prepacked: bool,
    /// B's rows are contiguous (`col_stride == 1`).
    b_rows_contiguous: bool,
    /// B's columns are contiguous (`row_stride == 1`).
    b_cols_contiguous: bool,
    /// The direct kernel reads B's element type in place.
    direct_reads_b: bool,
    /// B's element type (with its layout, how far reading B in place
    /// pays: FP8 is decoded again per A panel, 16-bit and one-byte types
    /// are widened by the blocked loops per call).
    b_type: DType,
    /// Rows up to which the block-scaled `[out, in]` kernel reads B's
    /// codes in place (0: it does not read them).
    blocks_t_max_rows: usize,
    /// B is FP4 and A's values are small integers times a power of two.
    exact_small_types: bool,
    /// Both operands are FP4 codes the integer tiles take.
    fp4_operands: bool,
}

impl Operands {
    fn of<TA: FloatElement, TB: FloatElement, K: Kernel>(
        a: &MatRef<'_, TA>,
        b: &MatRef<'_, TB>,
        scaling: Option<&Scaling<'_>>,
        prepacked: bool,
    ) -> Self {
        let block = scaling.map(|s| s.block);
        Self {
            m: a.rows(),
            n: b.cols(),
            k: a.cols(),
            block,
            prepacked,
            b_rows_contiguous: b.col_stride() == 1,
            b_cols_contiguous: b.row_stride() == 1,
            direct_reads_b: K::reads_direct::<TB>(),
            b_type: TB::DTYPE,
            blocks_t_max_rows: K::blocks_t_max_rows::<TB>(),
            exact_small_types: TB::DTYPE == DType::F4E2M1 && has_integer_view::<TA>(),
            fp4_operands: block.is_some_and(|blk| fp4_tiles::Fp4Operands::fit(a, b, blk)),
        }
    }
}

/// The plan: which strategy computes a part of a product on kernel `K`.
fn choose<K: Kernel>(o: &Operands) -> Strategy {
    let b_elements = o.k.saturating_mul(o.n);
    // How far in place pays depends on B's type and layout (each limit's
    // doc has its measurements).
    let fp8 = matches!(o.b_type, DType::F8E4M3 | DType::F8E5M2);
    let (max_m_large_b, large_b) = match (fp8, o.b_rows_contiguous) {
        (true, true) => (DIRECT_B_MAX_M_FP8, 4 * LARGE_B_ELEMENTS),
        (true, false) => (DIRECT_T_MAX_M_FP8, 4 * LARGE_B_ELEMENTS),
        (false, _) => (DIRECT_B_MAX_M_LARGE_B, LARGE_B_ELEMENTS),
    };
    let skinny = (o.m <= DIRECT_B_MAX_M && b_elements >= DIRECT_B_MIN_ELEMENTS)
        || (o.m <= max_m_large_b && b_elements >= large_b);
    // Plain operands: from a small B on at few rows.
    let small_b_max_m = match (o.b_type.size_bytes(), o.b_rows_contiguous) {
        (2, true) => SMALL_B_DIRECT_MAX_M_16BIT,
        (1, false) => SMALL_B_DIRECT_MAX_M_ONE_BYTE_OUT_IN,
        _ => SMALL_B_DIRECT_MAX_M,
    };
    let skinny_dense =
        skinny || (o.m <= small_b_max_m && b_elements >= SMALL_B_DIRECT_MIN_ELEMENTS);
    match (o.prepacked, o.block) {
        (true, _) if skinny && K::NR == PREPACKED_NR && K::reads_direct::<f32>() => {
            Strategy::DirectPrepacked
        }
        (true, _) => Strategy::Blocked,
        (false, None)
            if skinny_dense && o.b_rows_contiguous && o.n >= K::NR && o.direct_reads_b =>
        {
            Strategy::DirectB
        }
        // One-byte float weights `[out, in]`: their codes read in place
        // as blocks of one K-tile with unit scales (packing widens all of
        // B per call: AMD Zen 4, E4M3, K = N = 4096, M = 1 7.6 ms, twice
        // f32's time).
        (false, None)
            if o.m <= o.blocks_t_max_rows
                && o.b_cols_contiguous
                && !o.b_rows_contiguous
                && o.n >= BLOCKS_T_LINES
                && o.k > 0
                && o.k.is_multiple_of(super::ARRAY_ROWS) =>
        {
            Strategy::DirectTransposedBlocks
        }
        (false, None)
            if skinny_dense
                && o.b_cols_contiguous
                && !o.b_rows_contiguous
                && o.n >= K::NR
                && K::reads_direct::<f32>() =>
        {
            Strategy::DirectTransposed
        }
        (false, None) => Strategy::Blocked,
        (false, Some(_))
            if o.m <= K::EXACT_SMALL_ROWS
                && skinny
                && o.n >= 8
                && o.b_cols_contiguous
                && o.exact_small_types
                && K::has_fp4_dots() =>
        {
            Strategy::ExactSmallFp4
        }
        // Whatever B's size: widening B per call (the blocked loops) costs
        // more than reading its codes in place, down to the smallest B.
        (false, Some(blk))
            if o.m <= o.blocks_t_max_rows
                && o.b_cols_contiguous
                && !o.b_rows_contiguous
                && o.n >= BLOCKS_T_LINES
                && blk.is_multiple_of(16) =>
        {
            Strategy::DirectTransposedBlocks
        }
        (false, Some(_)) if o.m >= FP4_TILES_MIN_M && o.fp4_operands => Strategy::Fp4Tiles,
        // (BlockedFoldedScales where the scales fold: see `folded`.)
        (false, Some(_)) => Strategy::Blocked,
    }
}

/// Whether a call's block scales fold into the packed panels (see
/// [`blocked::prescalable`]); pre-packed B panels hold B unscaled.
fn folds_scales<TA: FloatElement, TB: FloatElement>(
    scaling: Option<&Scaling<'_>>,
    prepacked: bool,
) -> bool {
    !prepacked && scaling.is_some_and(blocked::prescalable::<TA, TB>)
}

/// `strategy`, with `Blocked` named `BlockedFoldedScales` where the block
/// scales fold (`folds()`). Only the blocked loops ask: the answer reads
/// every scale (0.45 ms of a 1.9 ms product at K = N = 4096, M = 1, when
/// every strategy asked it up front).
fn folded(strategy: Strategy, folds: impl FnOnce() -> bool) -> Strategy {
    match strategy {
        Strategy::Blocked if folds() => Strategy::BlockedFoldedScales,
        s => s,
    }
}

/// How many parts an `m × n × k` call splits C into (0 for an empty C).
pub(crate) fn parts(m: usize, n: usize, k: usize, parallelism: Parallelism) -> usize {
    if m == 0 || n == 0 {
        0
    } else {
        task_count(m, n, k, parallelism)
    }
}

/// The plan of a call of [`run`] (with `packed`: of [`run_prepacked`]).
pub(crate) fn plan<TA: FloatElement, TB: FloatElement>(
    a: &MatRef<'_, TA>,
    b: &MatRef<'_, TB>,
    scaling: Option<&Scaling<'_>>,
    packed: bool,
    parallelism: Parallelism,
    simd: bool,
) -> Plan {
    let tier = tier(simd);
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let strategy = with_kernel!(tier, K => {
        let chosen = choose::<K>(&Operands::of::<TA, TB, K>(a, b, scaling, packed));
        folded(chosen, || folds_scales::<TA, TB>(scaling, packed))
    });
    Plan {
        strategy,
        tier,
        parts: parts(m, n, k, parallelism),
    }
}

/// Block scaling for the driver (the block-scaled contract of
/// [`super::block_gemm`]): K is stepped in scaling blocks of `block`
/// values (16, 32 or 128; each divides [`ARRAY_ROWS`], so a block never
/// straddles a K-tile) and each block ends with the kernel's scaled
/// accumulate `acc = fma(p, fl(s_a · s_b), acc)`. `a` and `b` hold the f32
/// scales of the whole matrices (A's rows, B's columns), with the element
/// types' integer view where one exists (`exact_a`, `exact_b`).
pub(crate) struct Scaling<'s> {
    pub block: usize,
    pub a: ScaleGrid<'s>,
    pub b: ScaleGrid<'s>,
}

/// The scales of one operand: line `l` (a row of A, a column of B), block
/// `blk` has `scales[(l / line_group) · blocks + blk]`.
pub(crate) struct ScaleGrid<'s> {
    pub scales: &'s [f32],
    pub line_group: usize,
    pub blocks: usize,
}

/// Unit scales for `k` steps in blocks of `block` (one 1.0 a block), for
/// [`ScaleGrid::unit`].
pub(crate) fn unit_scales(k: usize, block: usize) -> Vec<f32> {
    vec![1.0; k.checked_div(block).unwrap_or(0)]
}

impl<'s> ScaleGrid<'s> {
    /// Every line's scales the same `ones` (from [`unit_scales`]): an
    /// operand without block scales.
    pub(crate) fn unit(ones: &'s [f32]) -> Self {
        Self {
            scales: ones,
            line_group: usize::MAX,
            blocks: ones.len(),
        }
    }
}

impl ScaleGrid<'_> {
    fn start(&self, line: usize) -> usize {
        (line / self.line_group) * self.blocks
    }

    fn at(&self, line: usize, blk: usize) -> f32 {
        self.scales[self.start(line) + blk]
    }
}

/// `c = epilogue(a·b)` by the plan's strategies; with `scaling`, the
/// block-scaled contract.
pub(crate) fn run<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    scaling: Option<&Scaling<'_>>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    with_kernel!(tier(simd), K => {
        run_with::<TA, TB, O, K>(a, b, scaling, None, c, epilogue, parallelism, simd)
    })
}

/// `c = epilogue(a·b)` with B given as pre-packed panels (`k × n`, see
/// [`prepack_b`]): the same strategies without packing B, so the same
/// bits as [`run`] on the unpacked B. Only for a kernel whose NR is
/// [`PREPACKED_NR`] (the caller checks [`prepacked_kernel_fits`]).
pub(crate) fn run_prepacked<TA: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    panels: &[f32],
    n: usize,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    // A shape-only K×N view stands for B: no path reads it.
    let b = MatRef::<f32>::shape_only(a.cols(), n);
    let packed = Some(panels);
    with_kernel!(tier(simd), K => {
        run_with::<TA, f32, O, K>(a, b, None, packed, c, epilogue, parallelism, simd)
    })
}

#[allow(clippy::too_many_arguments)]
fn run_with<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    scaling: Option<&Scaling<'_>>,
    packed_b: Option<&[f32]>,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    if m == 0 || n == 0 {
        return;
    }
    let tasks = task_count(m, n, k, parallelism);
    // Asked once, by the first part that runs the blocked loops.
    let folds = OnceLock::new();
    par_split(c, (0, 0), tasks, (K::MR, K::NR), &|(r0, c0), c_part| {
        let a = a.sub(r0, c_part.rows(), 0, k);
        let b = b.sub(0, k, c0, c_part.cols());
        let part = Part {
            origin: (r0, c0),
            scaling,
            packed_b,
            folds: &folds,
        };
        with_workspace(|ws| serial::<TA, TB, O, K>(a, b, c_part, &part, epilogue, ws, simd))
    });
}

/// Where a part of C sits in the whole product, its scaling, and B's
/// pre-packed panels when B comes packed (all of B's columns).
struct Part<'p, 's> {
    origin: (usize, usize),
    scaling: Option<&'p Scaling<'s>>,
    packed_b: Option<&'p [f32]>,
    /// Whether the block scales fold into the packed panels (see
    /// [`blocked::prescalable`]; each block then ends with `acc = acc +
    /// p`), once a part has asked.
    folds: &'p OnceLock<bool>,
}

impl Part<'_, '_> {
    /// Whether the blocked loops fold the block scales into the panels.
    fn prescaled<TA: FloatElement, TB: FloatElement>(&self) -> bool {
        *self
            .folds
            .get_or_init(|| folds_scales::<TA, TB>(self.scaling, self.packed_b.is_some()))
    }
}

/// One part of C on one thread, by the strategy [`choose`] picks for it.
#[allow(clippy::too_many_arguments)]
fn serial<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    c: MatMut<'_, O>,
    part: &Part<'_, '_>,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let operands = Operands::of::<TA, TB, K>(&a, &b, part.scaling, part.packed_b.is_some());
    let col0 = part.origin.1;
    match (choose::<K>(&operands), part.packed_b, part.scaling) {
        (Strategy::DirectPrepacked, Some(panels), _) => {
            let n = b.cols();
            prepacked::serial_direct_prepacked::<TA, O, K>(
                a, panels, n, c, col0, epilogue, ws, simd,
            )
        }
        (Strategy::DirectTransposed, _, _) => {
            direct_t::serial_direct_transposed::<TA, TB, O, K>(a, b, c, col0, epilogue, ws, simd)
        }
        (Strategy::DirectB, _, _) => {
            direct_b::serial_direct_b::<TA, TB, O, K>(a, b, c, col0, epilogue, ws, simd)
        }
        (Strategy::DirectTransposedBlocks, _, Some(s)) => {
            direct_t_blocks::serial_direct_t_blocks::<TA, TB, O, K>(
                a, b, c, part, s, epilogue, ws, simd,
            )
        }
        (Strategy::DirectTransposedBlocks, _, None) => {
            // A plain product: unit scales, one block per K-tile.
            let ones = unit_scales(a.cols(), super::ARRAY_ROWS);
            let s = Scaling {
                block: super::ARRAY_ROWS,
                a: ScaleGrid::unit(&ones),
                b: ScaleGrid::unit(&ones),
            };
            direct_t_blocks::serial_direct_t_blocks::<TA, TB, O, K>(
                a, b, c, part, &s, epilogue, ws, simd,
            )
        }
        (Strategy::ExactSmallFp4, _, Some(s)) => {
            exact_small::serial_exact_small::<TA, TB, O, K>(a, b, c, part, s, epilogue, ws, simd)
        }
        (Strategy::Fp4Tiles, _, Some(s)) => {
            fp4_tiles::serial_fp4_tiles::<TA, TB, O, K>(a, b, c, part, s, epilogue, ws, simd)
        }
        _ => blocked::serial_blocked::<TA, TB, O, K>(a, b, c, part, epilogue, ws, simd),
    }
}

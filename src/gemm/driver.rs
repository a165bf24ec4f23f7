//! The blocked driver: BLIS's loops around a micro-kernel, with the K block
//! fixed at [`ARRAY_ROWS`] so that one micro-kernel call is one pass of the
//! systolic array. Packing widens every input type to f32.
//!
//! Loop order (outermost first):
//! 1. `jc`: N in blocks of `NC`; pack B's `K × NC` panel (all K-tiles).
//! 2. `ic`: M in blocks of `MC`; pack A's `MC × K` block; zero the f32
//!    accumulator block `MC × NC` (it stays in L2).
//! 3. K-tiles of `ARRAY_ROWS`, increasing: the contract's tile order.
//! 4. `jr`/`ir`: NR-wide B micro-panels, MR-tall A micro-panels: the kernel.
//! 5. After the last K-tile: the epilogue, row by row, into C.
//!
//! These loops are [`blocked`]; what they pack and which kernel a tile
//! calls come from a [`Panels`]: f32 panels (every type widened) or, for
//! FP4 × FP4 block-scaled products, exact integer panels.

use super::kernel::portable::Portable;
#[cfg(target_arch = "x86_64")]
use super::kernel::x86_avx2::Avx2;
#[cfg(target_arch = "x86_64")]
use super::kernel::x86_avx512::Avx512;
use super::kernel::{
    tile_direct_scalar, Fp4Lines, Fp4Tile, Kernel, FP4_MR, FP4_NR, FP4_OFFSET, FP4_TIMES_2,
};
use super::{Epilogue, Parallelism, ARRAY_ROWS};
use crate::block_scaled::{PackedFp4, PACK_LINES};
use crate::convert::{narrow_dispatch, widen_dispatch};
use crate::dtype::format::Overflow;
use crate::dtype::{DType, FloatElement};
use crate::tensor::{MatMut, MatRef};
use std::cell::RefCell;

/// Steps of K per chunk when B's columns are packed from contiguous columns
/// (a multiple of every scaling block, so a chunk starts on a block).
const COLUMN_CHUNK: usize = 256;
/// Rows of A per packed block (a multiple of every kernel's MR).
const MC: usize = 96;
/// Columns of B per packed panel (a multiple of every kernel's NR).
const NC: usize = 512;
/// Skinny products read B in place instead of packing it (packing B costs
/// as much memory traffic as the whole product): up to `DIRECT_B_MAX_M`
/// rows when B has at least `DIRECT_B_MIN_ELEMENTS` elements, and up to
/// `DIRECT_B_MAX_M_LARGE_B` rows when B is too big for L2. Crossovers
/// measured on Zen 3; small B is faster packed.
const DIRECT_B_MAX_M: usize = 32;
/// Bytes of B (a K-tile's rows, some columns) that the direct path keeps
/// in L2 while every panel of A passes over them.
const DIRECT_B_CHUNK_BYTES: usize = 256 * 1024;
/// Rows up to which block-scaled FP4 products take `serial_exact_small`.
const EXACT_SMALL_MAX_M: usize = 4;
const DIRECT_B_MIN_ELEMENTS: usize = 1 << 18;
const DIRECT_B_MAX_M_LARGE_B: usize = 96;
const LARGE_B_ELEMENTS: usize = 1 << 20;
/// Up to this many rows a threaded product splits C's columns
/// ([`par_columns`]), not its rows.
const COLUMN_SPLIT_MAX_M: usize = 32;
/// Below this many multiply-adds a GEMM runs on one thread.
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// Packing and accumulator buffers, kept per thread and reused across calls.
#[derive(Default)]
struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
    acc: Vec<f32>,
    row: Vec<f32>,
    tmp: Vec<f32>,
    /// The FP4 × FP4 integer tiles' packed panels and block corrections.
    fp4: Fp4Buffers,
}

/// Packed integer panels of [`serial_fp4_tiles`].
#[derive(Default)]
struct Fp4Buffers {
    a: Vec<u8>,
    b: Vec<i8>,
    corr: Vec<i32>,
    stage_a: Vec<u8>,
    stage_b: Vec<i8>,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

fn with_workspace(f: impl FnOnce(&mut Workspace)) {
    WORKSPACE.with(|ws| match ws.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut Workspace::default()),
    })
}

fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to).saturating_mul(to)
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

impl ScaleGrid<'_> {
    fn start(&self, line: usize) -> usize {
        (line / self.line_group) * self.blocks
    }

    fn at(&self, line: usize, blk: usize) -> f32 {
        self.scales[self.start(line) + blk]
    }
}

/// True when the values of `T` are small integers times a power of two
/// (the activations of the exact FP4 paths).
pub(crate) fn has_integer_view<T: FloatElement>() -> bool {
    integer_view::<T>().is_some()
}

/// The factor that makes every value of `T` an integer, and the largest
/// such integer's magnitude, for the element types whose block sums the
/// small-M path computes exactly in integers (FP4 E2M1: 2·v ≤ 12; FP6
/// E2M3: 8·v ≤ 60; MXINT8: 64·v ≤ 128).
fn integer_view<T: FloatElement>() -> Option<f32> {
    match T::DTYPE {
        DType::F4E2M1 => Some(2.0),
        DType::F6E2M3 => Some(8.0),
        DType::MxInt8 => Some(64.0),
        _ => None,
    }
}

/// For the block-scaled element types: `(lo, hi)` such that every finite
/// non-zero value is a multiple of `2^lo` and below `2^hi` in magnitude.
fn value_exponents(dtype: DType) -> Option<(i32, i32)> {
    match dtype {
        DType::F8E4M3 => Some((-9, 9)),   // 2^-9 … 448
        DType::F8E5M2 => Some((-16, 16)), // 2^-16 … 57344
        DType::F6E2M3 => Some((-3, 3)),   // 0.125 … 7.5
        DType::F6E3M2 => Some((-4, 5)),   // 0.0625 … 28
        DType::F4E2M1 => Some((-1, 3)),   // 0.5 … 6
        DType::MxInt8 => Some((-6, 2)),   // 2^-6 … 2
        _ => None,
    }
}

/// Whether the block scales of a product may be folded into the packed
/// panels without changing a bit: every scale a power of two `2^e` with
/// `e + lo ≥ -63` and `e + hi ≤ 60` for its operand's
/// [`value_exponents`].
///
/// Why that is exact: the chain values of a block (products and partial
/// sums of `p`) are multiples of `2^(lo_a + lo_b)` and below
/// `2^(7 + hi_a + hi_b)` (a block has at most 128 steps); times `s_a·s_b`
/// they stay in f32's normal range (`≥ 2^-126`, `≤ 2^127`), where a power
/// of two commutes with every rounding. So the chain over `a·s_a` and
/// `b·s_b` (each exact) is `p·s_a·s_b` exactly, `fl(s_a·s_b) = s_a·s_b`, and
/// the contract's `fma(p, fl(s_a·s_b), acc)` is `acc + p·s_a·s_b`: the
/// plain tile's accumulate. Infinities and NaNs in the elements scale to
/// themselves; a NaN scale is not a power of two.
fn prescalable<TA: FloatElement, TB: FloatElement>(scaling: &Scaling<'_>) -> bool {
    fn fits(grid: &ScaleGrid<'_>, dtype: DType) -> bool {
        let Some((lo, hi)) = value_exponents(dtype) else {
            return false;
        };
        grid.scales.iter().all(|&s| {
            let bits = s.to_bits();
            // Positive, normal, zero fraction: 2^e with e = field - 127.
            let field = (bits >> 23) as i32;
            let e = field - 127;
            bits & 0x807F_FFFF == 0 && (1..=254).contains(&field) && e + lo >= -63 && e + hi <= 60
        })
    }
    fits(&scaling.a, TA::DTYPE) && fits(&scaling.b, TB::DTYPE)
}

/// `c = epilogue(a·b)` by the blocked engine; with `scaling`, the
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
    #[cfg(target_arch = "x86_64")]
    if simd && crate::cpu::has_avx512() {
        return run_with::<TA, TB, O, Avx512>(a, b, scaling, None, c, epilogue, parallelism, simd);
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        return run_with::<TA, TB, O, Avx2>(a, b, scaling, None, c, epilogue, parallelism, simd);
    }
    run_with::<TA, TB, O, Portable>(a, b, scaling, None, c, epilogue, parallelism, simd)
}

/// Columns per panel of a pre-packed B ([`super::PackedB`]): the AVX2 and
/// AVX-512 kernels' NR.
pub(crate) const PREPACKED_NR: usize = 16;

/// B (`k × n`) as the blocked engine's panels, for [`super::PackedB`]:
/// panel `p` holds columns `p·NR..` (zero past `n`), widened to f32, for
/// every k, NR values each: `⌈n/NR⌉ · k · NR` floats.
pub(crate) fn prepack_b<T: FloatElement>(b: &MatRef<'_, T>, simd: bool) -> Vec<f32> {
    let (k, n) = (b.rows(), b.cols());
    let n_pad = round_up(n, PREPACKED_NR);
    let mut panels = vec![0.0f32; n_pad * k];
    if n > 0 {
        let mut tmp = Vec::new();
        pack_b_nr(b, 0, n, PREPACKED_NR, &mut panels, &mut tmp, None, simd);
    }
    panels
}

/// `c = epilogue(a·b)` with B given as pre-packed panels (`k × n`, see
/// [`prepack_b`]): the blocked engine without its packing of B, so the
/// same bits as [`run`] on the unpacked B. Only for a kernel whose NR is
/// [`PREPACKED_NR`] (the caller checks [`prepacked_kernel_fits`]).
#[allow(clippy::too_many_arguments)]
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
    #[cfg(target_arch = "x86_64")]
    if simd && crate::cpu::has_avx512() {
        let packed = Some(panels);
        return run_with::<TA, f32, O, Avx512>(a, b, None, packed, c, epilogue, parallelism, simd);
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        let packed = Some(panels);
        return run_with::<TA, f32, O, Avx2>(a, b, None, packed, c, epilogue, parallelism, simd);
    }
    run_with::<TA, f32, O, Portable>(a, b, None, Some(panels), c, epilogue, parallelism, simd)
}

/// True when the kernel `simd` selects reads [`prepack_b`]'s panels.
pub(crate) fn prepacked_kernel_fits(simd: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return Avx2::NR == PREPACKED_NR && Avx512::NR == PREPACKED_NR;
    }
    let _ = simd;
    Portable::NR == PREPACKED_NR
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
    // Pre-packed B panels hold B unscaled.
    let prescaled = packed_b.is_none() && scaling.is_some_and(prescalable::<TA, TB>);
    par_split(c, (0, 0), tasks, (K::MR, K::NR), &|(r0, c0), c_part| {
        let a = a.sub(r0, c_part.rows(), 0, k);
        let b = b.sub(0, k, c0, c_part.cols());
        let part = Part {
            origin: (r0, c0),
            scaling,
            packed_b,
            prescaled,
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
    /// The block scales are folded into the packed panels (see
    /// [`prescalable`]): each block ends with `acc = acc + p`.
    prescaled: bool,
}

/// How many parts an M×N×K product is split into: 1 below
/// `PARALLEL_MIN_WORK` multiply-adds, else the requested thread count, but
/// never more parts than there are elements of C (so any `Threads(t)`,
/// `usize::MAX` included, is safe to split).
pub(crate) fn task_count(m: usize, n: usize, k: usize, parallelism: Parallelism) -> usize {
    let threads = match parallelism {
        Parallelism::Serial => 1,
        Parallelism::Threads(t) => t.min(m.saturating_mul(n)).max(1),
    };
    let work = m.saturating_mul(n).saturating_mul(k.max(1));
    if work < PARALLEL_MIN_WORK {
        1
    } else {
        threads
    }
}

/// The work done on one part of C: `((row0, col0), part)`.
pub(crate) type PartWork<'w, O> = dyn Fn((usize, usize), MatMut<'_, O>) + Sync + 'w;

/// Runs `work((row0, col0), part)` on `tasks` parts of C in parallel,
/// halving recursively (rayon `join`) along C's outer dimension in memory:
/// rows when the row stride is the larger, else columns, in multiples of
/// `mr` rows or `nr` columns. `(row0, col0)` is where the part sits in the
/// whole C. The reduction dimension is never split.
pub(crate) fn par_split<O: Copy + Send>(
    c: MatMut<'_, O>,
    (row0, col0): (usize, usize),
    tasks: usize,
    (mr, nr): (usize, usize),
    work: &PartWork<'_, O>,
) {
    let (m, n) = (c.rows(), c.cols());
    if tasks > 1 && (2..=COLUMN_SPLIT_MAX_M).contains(&m) && n >= 2 * nr {
        return par_columns(c, (row0, col0), tasks, nr, work);
    }
    let by_rows = m > 1 && (n == 1 || c.row_stride() >= c.col_stride());
    let (len, unit) = if by_rows { (m, mr) } else { (n, nr) };
    let left_tasks = tasks / 2;
    // In u128: `len · left_tasks` may exceed usize for a large `tasks`.
    let share = (len as u128 * left_tasks as u128 / tasks.max(1) as u128) as usize;
    let at = round_up(share, unit);
    if tasks <= 1 || at == 0 || at >= len {
        return work((row0, col0), c);
    }
    let halves = if by_rows {
        c.split_rows(at)
    } else {
        c.split_cols(at)
    };
    match halves {
        Ok((first, second)) => {
            let origin = if by_rows {
                (row0 + at, col0)
            } else {
                (row0, col0 + at)
            };
            rayon::join(
                || par_split(first, (row0, col0), left_tasks, (mr, nr), work),
                || par_split(second, origin, tasks - left_tasks, (mr, nr), work),
            );
        }
        Err(c) => work((row0, col0), c),
    }
}

/// [`par_split`] for a C of a few rows: each of up to `tasks` parts takes
/// a range of whole `nr`-column panels and all the rows, so each thread
/// reads only its share of B (a row split would have every thread read all
/// of B, and split 8 rows 6 + 2). A part's columns interleave with the
/// others' in memory, so it computes into a buffer of its own, row-major,
/// and copies it into C under a lock (C's old values go in first, for an
/// epilogue that reads them). A part is `work` on a row-major view, as from
/// a row split.
fn par_columns<O: Copy + Send>(
    c: MatMut<'_, O>,
    (row0, col0): (usize, usize),
    tasks: usize,
    nr: usize,
    work: &PartWork<'_, O>,
) {
    use rayon::prelude::*;
    let (m, n) = (c.rows(), c.cols());
    let panels = n.div_ceil(nr.max(1));
    let parts = tasks.min(panels);
    // Part t gets panels [panels·t/parts, panels·(t+1)/parts), in u128 so
    // the product cannot overflow.
    let bound = |t: usize| ((panels as u128 * t as u128 / parts as u128) as usize * nr).min(n);
    let c = std::sync::Mutex::new(c);
    (0..parts).into_par_iter().for_each(|t| {
        let (c0, c1) = (bound(t), bound(t + 1));
        if c0 == c1 {
            return;
        }
        let lock = || c.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let w = c1 - c0;
        let mut values = lock().as_ref().sub(0, m, c0, w).to_row_major();
        match MatMut::from_row_major(&mut values, m, w) {
            Ok(part) => work((row0, col0 + c0), part),
            Err(e) => panic!("internal: {e}"),
        }
        lock().copy_cols_from(c0, &values);
    });
}

#[allow(clippy::too_many_arguments)]
fn serial<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    part: &Part<'_, '_>,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let (col0, scaling) = (part.origin.1, part.scaling);
    let b_elements = k.saturating_mul(n);
    let skinny = (m <= DIRECT_B_MAX_M && b_elements >= DIRECT_B_MIN_ELEMENTS)
        || (m <= DIRECT_B_MAX_M_LARGE_B && b_elements >= LARGE_B_ELEMENTS);
    let prepacked = part.packed_b.is_some();
    if let Some(panels) = part.packed_b {
        if skinny && K::NR == PREPACKED_NR && K::reads_direct::<f32>() {
            return serial_direct_prepacked::<TA, O, K>(a, panels, n, c, col0, epilogue, ws, simd);
        }
    }
    if !prepacked
        && scaling.is_none()
        && skinny
        && b.col_stride() == 1
        && n >= K::NR
        && K::reads_direct::<TB>()
    {
        return serial_direct_b::<TA, TB, O, K>(a, b, c, col0, epilogue, ws, simd);
    }
    if let (Some(s), false) = (scaling, prepacked) {
        let exact = m <= EXACT_SMALL_MAX_M
            && skinny
            && n >= 8
            && b.row_stride() == 1
            && TB::DTYPE == DType::F4E2M1
            && integer_view::<TA>().is_some()
            && K::has_fp4_dots();
        if exact {
            return serial_exact_small::<TA, TB, O, K>(a, b, c, part, s, epilogue, ws, simd);
        }
        if m > EXACT_SMALL_MAX_M && Fp4Operands::fit(&a, &b, s.block) {
            return serial_fp4_tiles::<TA, TB, O, K>(a, b, c, part, s, epilogue, ws, simd);
        }
    }
    let Workspace {
        a: a_buf,
        b: b_buf,
        acc: acc_buf,
        row: row_buf,
        tmp,
        ..
    } = ws;
    let mut panels = FloatPanels::<TA, TB, K> {
        a,
        b,
        part,
        bufs: (a_buf, b_buf, tmp),
        scales: (Vec::new(), Vec::new()),
        pads: (0, 0),
        b_panel0: 0,
        simd,
        kernel: std::marker::PhantomData,
    };
    blocked::<O, K, _>(
        &mut panels,
        (m, n, k),
        &mut c,
        col0,
        epilogue,
        (acc_buf, row_buf),
        simd,
    );
}

/// One pair of operands as the blocked loops ([`blocked`]) see them: how
/// B's `NC`-column blocks and A's `MC`-row blocks are packed, and the
/// kernel call for one K-tile of a B panel and an A panel.
trait Panels {
    /// Rows of an A panel (divides `MC`).
    const MR: usize;
    /// Columns of a B panel (divides `NC`).
    const NR: usize;
    /// Packs B's columns `jc..jc + nb` (`nb_pad` with the padding).
    fn pack_b(&mut self, jc: usize, nb: usize, nb_pad: usize);
    /// Packs A's rows `ic..ic + mb` (`mb_pad` with the padding).
    fn pack_a(&mut self, ic: usize, mb: usize, mb_pad: usize);
    /// K-tile `k0..k0 + kt` of B panel `p` times A panel `q` into the
    /// accumulator block `acc` (rows at stride `ld`; `k0 == 0` starts it).
    fn tile(&self, k_tile: (usize, usize), panel: (usize, usize), acc: &mut [f32], ld: usize);
}

/// BLIS's loops (see the module docs) around `panels`' packing and tiles,
/// then the epilogue into C block by block.
#[allow(clippy::too_many_arguments)]
fn blocked<O: FloatElement, K: Kernel, P: Panels>(
    panels: &mut P,
    (m, n, k): (usize, usize, usize),
    c: &mut MatMut<'_, O>,
    col0: usize,
    epilogue: &Epilogue<'_>,
    (acc_buf, row_buf): (&mut Vec<f32>, &mut Vec<f32>),
    simd: bool,
) {
    for jc in (0..n).step_by(NC) {
        let nb = NC.min(n - jc);
        let nb_pad = round_up(nb, P::NR);
        panels.pack_b(jc, nb, nb_pad);
        for ic in (0..m).step_by(MC) {
            let mb = MC.min(m - ic);
            let mb_pad = round_up(mb, P::MR);
            panels.pack_a(ic, mb, mb_pad);
            let acc = grow(acc_buf, mb_pad * nb_pad);
            if k == 0 {
                acc.fill(0.0); // no K-tile writes it: the epilogue of zero
            }
            for k0 in (0..k).step_by(ARRAY_ROWS) {
                let kt = ARRAY_ROWS.min(k - k0);
                for p in 0..nb_pad / P::NR {
                    for q in 0..mb_pad / P::MR {
                        let at = q * P::MR * nb_pad + p * P::NR;
                        panels.tile((k0, kt), (p, q), &mut acc[at..], nb_pad);
                    }
                }
            }
            let row = grow(row_buf, nb);
            write_block::<O, K>(
                c,
                (ic, jc),
                acc,
                nb_pad,
                (mb, nb),
                row,
                col0,
                epilogue,
                simd,
            );
        }
    }
}

/// The f32 panels of [`serial`]: every input widened to f32 while packing
/// (or B pre-packed), the block scales packed beside them.
struct FloatPanels<'x, 'p, 's, TA, TB, K> {
    a: MatRef<'x, TA>,
    b: MatRef<'x, TB>,
    part: &'x Part<'p, 's>,
    /// A's and B's panels and a widening buffer.
    bufs: (&'x mut Vec<f32>, &'x mut Vec<f32>, &'x mut Vec<f32>),
    /// The packed block scales of A's rows and B's columns.
    scales: (Vec<f32>, Vec<f32>),
    /// The current blocks' padded sizes: (mb_pad, nb_pad).
    pads: (usize, usize),
    /// The current B block's first panel among a pre-packed B's.
    b_panel0: usize,
    simd: bool,
    kernel: std::marker::PhantomData<K>,
}

impl<TA: FloatElement, TB: FloatElement, K: Kernel> FloatPanels<'_, '_, '_, TA, TB, K> {
    /// The packed scales to fold into the panels, when the part is prescaled.
    fn fold<'s>(&self, scales: &'s [f32], padded: usize) -> Option<FoldScales<'s>> {
        let s = self.part.scaling.filter(|_| self.part.prescaled)?;
        Some(FoldScales {
            scales,
            padded,
            block: s.block,
        })
    }

    /// The current block of B's panels.
    fn packed_b(&self) -> &[f32] {
        let (k, nb_pad) = (self.a.cols(), self.pads.1);
        match self.part.packed_b {
            // Pre-packed: this block's panels, as `pack_b` would make them.
            Some(all) => {
                let first = self.b_panel0 * k * K::NR;
                &all[first..first + nb_pad * k]
            }
            None => &self.bufs.1[..nb_pad * k],
        }
    }
}

impl<TA: FloatElement, TB: FloatElement, K: Kernel> Panels for FloatPanels<'_, '_, '_, TA, TB, K> {
    const MR: usize = K::MR;
    const NR: usize = K::NR;

    fn pack_b(&mut self, jc: usize, nb: usize, nb_pad: usize) {
        let (k, col0) = (self.a.cols(), self.part.origin.1);
        self.pads.1 = nb_pad;
        self.b_panel0 = (col0 + jc) / K::NR;
        if let Some(s) = self.part.scaling {
            pack_scales(&mut self.scales.1, &s.b, col0 + jc, nb, nb_pad, k / s.block);
        }
        if self.part.packed_b.is_none() {
            let fold = self.fold(&self.scales.1, nb_pad);
            let (_, b_buf, tmp) = &mut self.bufs;
            pack_b::<TB, K>(
                &self.b,
                jc,
                nb,
                grow(b_buf, nb_pad * k),
                tmp,
                fold,
                self.simd,
            );
        }
    }

    fn pack_a(&mut self, ic: usize, mb: usize, mb_pad: usize) {
        let (k, r0) = (self.a.cols(), self.part.origin.0);
        self.pads.0 = mb_pad;
        if let Some(s) = self.part.scaling {
            pack_scales(&mut self.scales.0, &s.a, r0 + ic, mb, mb_pad, k / s.block);
        }
        let fold = self.fold(&self.scales.0, mb_pad);
        let (a_buf, _, tmp) = &mut self.bufs;
        pack_a::<TA, K>(
            &self.a,
            ic,
            mb,
            grow(a_buf, mb_pad * k),
            tmp,
            fold,
            self.simd,
        );
    }

    fn tile(&self, (k0, kt): (usize, usize), (p, q): (usize, usize), acc: &mut [f32], ld: usize) {
        let (k, (mb_pad, nb_pad)) = (self.a.cols(), self.pads);
        let b_panel = &self.packed_b()[p * k * K::NR..(p + 1) * k * K::NR];
        let a_panel = &self.bufs.0[q * k * K::MR..(q + 1) * k * K::MR];
        let b_tile = &b_panel[k0 * K::NR..(k0 + kt) * K::NR];
        let a_tile = &a_panel[k0 * K::MR..(k0 + kt) * K::MR];
        let Some(s) = self.part.scaling else {
            return K::tile(kt, a_tile, b_tile, acc, ld, k0 == 0);
        };
        if self.part.prescaled {
            // The scales are in the panels: each block ends with acc + p.
            return K::tile_blocks(kt, s.block, a_tile, b_tile, acc, ld, k0 == 0);
        }
        // This accumulator block takes the tile's scaling blocks in a row
        // (it stays in L1), each in increasing k.
        let blk0 = k0 / s.block;
        K::tile_scaled_blocks(
            kt,
            s.block,
            a_tile,
            b_tile,
            acc,
            ld,
            k0 == 0,
            (&self.scales.0[blk0 * mb_pad + q * K::MR..], mb_pad),
            (&self.scales.1[blk0 * nb_pad + p * K::NR..], nb_pad),
        );
    }
}

/// Block scales packed like the panels: for each of `blocks` scaling
/// blocks, `padded` values (lines `first..first + live`, then 1.0 for the
/// padding lines, whose products are 0).
fn pack_scales(
    dst: &mut Vec<f32>,
    grid: &ScaleGrid<'_>,
    first: usize,
    live: usize,
    padded: usize,
    blocks: usize,
) {
    dst.clear();
    dst.resize(blocks * padded, 1.0);
    for i in 0..live {
        let line = &grid.scales[grid.start(first + i)..][..blocks];
        for (blk, &s) in line.iter().enumerate() {
            dst[blk * padded + i] = s;
        }
    }
}

/// FP4 × FP4 operands of a block-scaled product, as their codes (one per
/// byte): A's rows and B's columns contiguous in k.
struct Fp4Operands<'x> {
    a: &'x [u8],
    lda: usize,
    b: &'x [u8],
    ldb: usize,
}

impl<'x> Fp4Operands<'x> {
    /// True when both operands are FP4 with unit stride along k and the
    /// block is at most 32 (the tile's i16 sums stay below
    /// 8 · 2 · 24 · 12 = 4608) and a multiple of 4.
    fn fit<TA: FloatElement, TB: FloatElement>(
        a: &MatRef<'_, TA>,
        b: &MatRef<'_, TB>,
        block: usize,
    ) -> bool {
        TA::DTYPE == DType::F4E2M1
            && TB::DTYPE == DType::F4E2M1
            && (a.col_stride() == 1 || a.cols() <= 1)
            && (b.row_stride() == 1 || b.rows() <= 1)
            && (4..=32).contains(&block)
            && block.is_multiple_of(4)
    }

    fn new<TA: FloatElement, TB: FloatElement>(
        a: &'x MatRef<'_, TA>,
        b: &'x MatRef<'_, TB>,
    ) -> Self {
        Self {
            a: bytemuck::cast_slice(a.as_slice()),
            lda: a.row_stride(),
            b: bytemuck::cast_slice(b.as_slice()),
            ldb: b.col_stride(),
        }
    }
}

/// Packs `len` lines (from `first`) of FP4 codes (line `l` at
/// `codes[l · ld..][..k]`) into `unit`-line panels of k-quads:
/// `panel[(t·unit + r)·4 + g] = map(code of line r, k = 4t + g)`, zero past
/// the last line; with `corr`, per panel and block, `FP4_OFFSET` times each
/// line's block sum of the mapped values. A line is converted into `stage`
/// first (contiguous), then interleaved one 4-byte quad at a time.
#[allow(clippy::too_many_arguments)]
fn pack_fp4_lines<P: Copy + Default>(
    codes: &[u8],
    ld: usize,
    (first, len, k): (usize, usize, usize),
    unit: usize,
    map: &[P; 16],
    dst: &mut [P],
    stage: &mut Vec<P>,
    mut corr: Option<(&mut [i32], usize)>,
) where
    i32: From<P>,
{
    let panel_len = unit * k;
    if panel_len == 0 {
        return;
    }
    if stage.len() < k {
        stage.resize(k, P::default());
    }
    for (q, panel) in dst.chunks_exact_mut(panel_len).enumerate() {
        for r in 0..unit {
            let line = q * unit + r;
            if line >= len {
                for slot in panel.chunks_exact_mut(4 * unit) {
                    slot[4 * r..4 * r + 4].fill(P::default());
                }
                if let Some((corr, block)) = corr.as_mut() {
                    for blk in 0..k / *block {
                        corr[(q * (k / *block) + blk) * unit + r] = 0;
                    }
                }
                continue;
            }
            let src = &codes[(first + line) * ld..][..k];
            for (d, &c) in stage[..k].iter_mut().zip(src) {
                *d = map[usize::from(c & 0x0F)];
            }
            if let Some((corr, block)) = corr.as_mut() {
                let blocks = k / *block;
                for (blk, chunk) in stage[..k].chunks_exact(*block).enumerate() {
                    let sum: i32 = chunk.iter().map(|&v| i32::from(v)).sum();
                    corr[(q * blocks + blk) * unit + r] = crate::gemm::kernel::FP4_OFFSET * sum;
                }
            }
            for (slot, quad) in panel
                .chunks_exact_mut(4 * unit)
                .zip(stage[..k].chunks_exact(4))
            {
                slot[4 * r..4 * r + 4].copy_from_slice(quad);
            }
        }
    }
}

/// [`serial`] for FP4 × FP4 block-scaled products (MXFP4, NVFP4) past a
/// few rows: each block's chain `p = fma(a, b, p)` from +0.0 is exact (see
/// [`serial_exact_small`]), so it is computed as an integer dot product of
/// the codes' doubled values in `FP4_MR × FP4_NR` tiles ([`Kernel::fp4_tile`],
/// `vpmaddubsw` on AVX2: four byte products per lane and instruction where
/// the f32 path does one) and the block accumulate is the contract's. The
/// loops are the blocked engine's (B panels per `NC` columns, A per `MC`
/// rows, K in tiles of [`ARRAY_ROWS`]); every output still takes its blocks
/// in increasing k.
#[allow(clippy::too_many_arguments)]
fn serial_fp4_tiles<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    part: &Part<'_, '_>,
    s: &Scaling<'_>,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let Workspace {
        acc: acc_buf,
        row: row_buf,
        fp4,
        ..
    } = ws;
    let mut panels = Fp4Panels::<K> {
        ops: Fp4Operands::new(&a, &b),
        k,
        part,
        s,
        bufs: fp4,
        scales: (Vec::new(), Vec::new()),
        pads: (0, 0),
        kernel: std::marker::PhantomData,
    };
    let col0 = part.origin.1;
    blocked::<O, K, _>(
        &mut panels,
        (m, n, k),
        &mut c,
        col0,
        epilogue,
        (acc_buf, row_buf),
        simd,
    );
}

/// The integer panels of [`serial_fp4_tiles`] (see [`Kernel::fp4_tile`]).
struct Fp4Panels<'x, 'p, 's, K> {
    ops: Fp4Operands<'x>,
    k: usize,
    part: &'x Part<'p, 's>,
    s: &'x Scaling<'s>,
    bufs: &'x mut Fp4Buffers,
    /// The packed block scales of A's rows and B's columns.
    scales: (Vec<f32>, Vec<f32>),
    /// The current blocks' padded sizes: (mb_pad, nb_pad).
    pads: (usize, usize),
    kernel: std::marker::PhantomData<K>,
}

impl<K: Kernel> Panels for Fp4Panels<'_, '_, '_, K> {
    const MR: usize = FP4_MR;
    const NR: usize = FP4_NR;

    fn pack_b(&mut self, jc: usize, nb: usize, nb_pad: usize) {
        let (k, block) = (self.k, self.s.block);
        let corr_len = nb_pad / FP4_NR * (k / block) * FP4_NR;
        self.pads.1 = nb_pad;
        self.bufs.b.resize(nb_pad * k, 0);
        self.bufs.corr.resize(corr_len, 0);
        pack_fp4_lines(
            self.ops.b,
            self.ops.ldb,
            (jc, nb, k),
            FP4_NR,
            &FP4_TIMES_2,
            &mut self.bufs.b[..nb_pad * k],
            &mut self.bufs.stage_b,
            Some((&mut self.bufs.corr[..corr_len], block)),
        );
        let col0 = self.part.origin.1;
        pack_scales(
            &mut self.scales.1,
            &self.s.b,
            col0 + jc,
            nb,
            nb_pad,
            k / block,
        );
    }

    fn pack_a(&mut self, ic: usize, mb: usize, mb_pad: usize) {
        let k = self.k;
        let map_a: [u8; 16] = FP4_TIMES_2.map(|v| (i32::from(v) + FP4_OFFSET) as u8);
        self.pads.0 = mb_pad;
        self.bufs.a.resize(mb_pad * k, 0);
        pack_fp4_lines(
            self.ops.a,
            self.ops.lda,
            (ic, mb, k),
            FP4_MR,
            &map_a,
            &mut self.bufs.a[..mb_pad * k],
            &mut self.bufs.stage_a,
            None,
        );
        let r0 = self.part.origin.0;
        pack_scales(
            &mut self.scales.0,
            &self.s.a,
            r0 + ic,
            mb,
            mb_pad,
            k / self.s.block,
        );
    }

    fn tile(&self, (k0, kt): (usize, usize), (p, q): (usize, usize), acc: &mut [f32], ld: usize) {
        let (k, block, (mb_pad, nb_pad)) = (self.k, self.s.block, self.pads);
        let blocks = k / block;
        let blk0 = k0 / block;
        let b_panel = &self.bufs.b[p * FP4_NR * k..(p + 1) * FP4_NR * k];
        let a_panel = &self.bufs.a[q * FP4_MR * k..(q + 1) * FP4_MR * k];
        let tile = Fp4Tile {
            a: &a_panel[k0 * FP4_MR..(k0 + kt) * FP4_MR],
            b: &b_panel[k0 * FP4_NR..(k0 + kt) * FP4_NR],
            corr: &self.bufs.corr[(p * blocks + blk0) * FP4_NR..(p + 1) * blocks * FP4_NR],
            sa: (&self.scales.0[blk0 * mb_pad + q * FP4_MR..], mb_pad),
            sb: (&self.scales.1[blk0 * nb_pad + p * FP4_NR..], nb_pad),
        };
        K::fp4_tile(kt / block, block / 4, &tile, acc, ld, k0 == 0);
    }
}

/// [`serial`] for block-scaled products with few rows, FP4 weights (B's
/// columns contiguous in k: the `N × K` lines of `block_gemm`) and A in a
/// format whose values are small integers times a power of two (FP4, FP6
/// E2M3, MXINT8): each block's chain `p = fma(a, b, p)` from +0.0 is then
/// exact at every step (every partial sum is a multiple of g = 2^-(log₂ of
/// both factors) below 128 · 128 · 12 · g < 2^24 · g), so it equals the
/// integer dot product times g, which the kernel computes with byte
/// multiplies straight from the FP4 codes; the block accumulate
/// `acc = fma(p, fl(s_a · s_b), acc)` is the contract's. B is read once,
/// in place, one byte per weight.
#[allow(clippy::too_many_arguments)]
fn serial_exact_small<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    part: &Part<'_, '_>,
    s: &Scaling<'_>,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let ((r0, col0), block) = (part.origin, s.block);
    let blocks = k / block;
    let IntegerRows {
        a_int,
        a_abs,
        sa,
        g,
    } = IntegerRows::new(&a, &s.a, r0, block);
    let codes: &[u8] = bytemuck::cast_slice(b.as_slice());
    let ld = b.col_stride();
    let Workspace {
        acc: acc_buf,
        row: row_buf,
        ..
    } = ws;
    let acc = grow(acc_buf, m * n);
    let main = n / 8 * 8;
    for j0 in (0..main).step_by(8) {
        let lines = Fp4Lines {
            codes: &codes[j0 * ld..],
            ld,
            block,
            blocks,
            scales: s.b.scales,
            scale_start: std::array::from_fn(|j| s.b.start(col0 + j0 + j)),
        };
        for i in 0..m {
            let mut out = [0.0f32; 8];
            K::fp4_dots8(
                &lines,
                &a_abs[i * k..],
                &a_int[i * k..],
                &sa[i * blocks..],
                g,
                &mut out,
            );
            acc[i * n + j0..i * n + j0 + 8].copy_from_slice(&out);
        }
    }
    // The last few columns: the same integers and accumulate, in scalar.
    for j in main..n {
        let line = &codes[j * ld..j * ld + k];
        for i in 0..m {
            let mut sum = 0.0f32;
            for blk in 0..blocks {
                let d: i32 = (blk * block..(blk + 1) * block)
                    .map(|kk| {
                        i32::from(a_int[i * k + kk])
                            * i32::from(FP4_TIMES_2[usize::from(line[kk] & 0x0F)])
                    })
                    .sum();
                let p = d as f32 * g;
                sum = p.mul_add(sa[i * blocks + blk] * s.b.at(col0 + j, blk), sum);
            }
            acc[i * n + j] = sum;
        }
    }
    let row = grow(row_buf, n);
    write_block::<O, K>(&mut c, (0, 0), acc, n, (m, n), row, col0, epilogue, simd);
}

/// A's rows as exact integers for the FP4 paths: `a = v · fa` (|a| ≤ 128;
/// as i8 and as |a|), each row's block scales, and g = 1 / (fa · 2) (FP4's
/// factor is 2), a power of two, so `p = d · g` is exact.
struct IntegerRows {
    a_int: Vec<i8>,
    a_abs: Vec<u8>,
    sa: Vec<f32>,
    g: f32,
}

impl IntegerRows {
    fn new<TA: FloatElement>(
        a: &MatRef<'_, TA>,
        grid: &ScaleGrid<'_>,
        r0: usize,
        block: usize,
    ) -> Self {
        let (m, k) = (a.rows(), a.cols());
        let blocks = k / block;
        let fa = integer_view::<TA>().unwrap_or(1.0);
        let mut a_int = vec![0i8; m * k];
        let mut a_abs = vec![0u8; m * k];
        let mut sa = vec![0.0f32; m * blocks];
        for i in 0..m {
            for kk in 0..k {
                let v = (a.at(i, kk).to_f32() * fa) as i32; // exact, in -128..=128
                a_int[i * k + kk] = v.clamp(-128, 127) as i8;
                a_abs[i * k + kk] = v.unsigned_abs().min(255) as u8;
            }
            for (blk, x) in sa[i * blocks..(i + 1) * blocks].iter_mut().enumerate() {
                *x = grid.at(r0 + i, blk);
            }
        }
        Self {
            a_int,
            a_abs,
            sa,
            g: 1.0 / (fa * 2.0),
        }
    }
}

/// `c = epilogue(a · bᵀ)` under the block-scaled contract for FP4 weights
/// packed by [`PackedFp4`], with A in a format whose values are small
/// integers times a power of two (see [`serial_exact_small`] for why the
/// integer block sums are the contract's). Threads split C's columns in
/// groups of 8 (or its rows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_packed_fp4<TA: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    grid_a: &ScaleGrid<'_>,
    b: &PackedFp4,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return packed_fp4_with::<TA, O, Avx2>(a, grid_a, b, c, epilogue, parallelism, simd);
    }
    packed_fp4_with::<TA, O, Portable>(a, grid_a, b, c, epilogue, parallelism, simd)
}

#[allow(clippy::too_many_arguments)]
fn packed_fp4_with<TA: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    grid_a: &ScaleGrid<'_>,
    b: &PackedFp4,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    let (m, n, k, block) = (a.rows(), b.lines(), b.k(), b.block());
    if m == 0 || n == 0 {
        return;
    }
    let blocks = k / block;
    let rows = IntegerRows::new(&a, grid_a, 0, block);
    let (codes, scales) = b.parts();
    let tasks = task_count(m, n, k, parallelism);
    par_split(
        c,
        (0, 0),
        tasks,
        (1, PACK_LINES),
        &|(r0, c0), mut c_part| {
            let (mp, np) = (c_part.rows(), c_part.cols());
            with_workspace(|ws| {
                let Workspace {
                    acc: acc_buf,
                    row: row_buf,
                    ..
                } = ws;
                let acc = grow(acc_buf, mp * np);
                // c0 is a multiple of 8: whole groups, the last one perhaps cut.
                for (gi, j0) in (0..np).step_by(PACK_LINES).enumerate() {
                    let g = c0 / PACK_LINES + gi;
                    let group_codes = &codes[g * k * 4..(g + 1) * k * 4];
                    let group_scales =
                        &scales[g * blocks * PACK_LINES..(g + 1) * blocks * PACK_LINES];
                    let live = PACK_LINES.min(np - j0);
                    for i in 0..mp {
                        let r = r0 + i;
                        let mut out = [0.0f32; PACK_LINES];
                        K::fp4_packed8(
                            group_codes,
                            group_scales,
                            block,
                            &rows.a_abs[r * k..(r + 1) * k],
                            &rows.a_int[r * k..(r + 1) * k],
                            &rows.sa[r * blocks..(r + 1) * blocks],
                            rows.g,
                            &mut out,
                        );
                        acc[i * np + j0..i * np + j0 + live].copy_from_slice(&out[..live]);
                    }
                }
                let row = grow(row_buf, np);
                write_block::<O, K>(
                    &mut c_part,
                    (0, 0),
                    acc,
                    np,
                    (mp, np),
                    row,
                    c0,
                    epilogue,
                    simd,
                );
            });
        },
    );
}

/// [`serial_direct_b`] for a pre-packed B: each panel of NR columns is a
/// `k × NR` row-major matrix, read in place by the streaming kernel (one
/// sequential stream per panel), every A panel in turn while its K-tile
/// of the panel is in L1.
/// Each accumulator element gets one `acc = acc + p` per K-tile, as
/// everywhere.
#[allow(clippy::too_many_arguments)]
fn serial_direct_prepacked<TA: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    panels: &[f32],
    n: usize,
    mut c: MatMut<'_, O>,
    col0: usize,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, k, nr) = (a.rows(), a.cols(), K::NR);
    let Workspace {
        a: a_buf,
        b: p_buf,
        acc: acc_buf,
        row: row_buf,
        tmp,
        ..
    } = ws;
    for ic in (0..m).step_by(MC) {
        let mb = MC.min(m - ic);
        let mb_pad = round_up(mb, K::DIRECT_MR);
        let packed_a = grow(a_buf, mb_pad * k);
        pack_a_rows(&a, ic, mb, K::DIRECT_MR, packed_a, tmp, None, simd);
        let acc = grow(acc_buf, mb_pad * n);
        acc.fill(0.0);
        // Panel by panel (one sequential stream each), its K-tiles in
        // increasing order.
        for pj in 0..n.div_ceil(nr) {
            let cols = nr.min(n - pj * nr);
            for k0 in (0..k).step_by(ARRAY_ROWS) {
                let kt = ARRAY_ROWS.min(k - k0);
                let panel = &panels[((col0 / nr + pj) * k + k0) * nr..];
                for (q, a_panel) in packed_a.chunks_exact(k * K::DIRECT_MR).enumerate() {
                    let a_tile = &a_panel[k0 * K::DIRECT_MR..(k0 + kt) * K::DIRECT_MR];
                    let rows = K::DIRECT_MR.min(mb - q * K::DIRECT_MR);
                    let p = grow(p_buf, rows * nr);
                    p.fill(0.0);
                    K::tile_direct(kt, rows, a_tile, panel, nr, nr, p);
                    for r in 0..rows {
                        let at = (q * K::DIRECT_MR + r) * n + pj * nr;
                        for (s, &v) in acc[at..at + cols].iter_mut().zip(&p[r * nr..]) {
                            *s += v;
                        }
                    }
                }
            }
        }
        let row = grow(row_buf, n);
        write_block::<O, K>(&mut c, (ic, 0), acc, n, (mb, n), row, col0, epilogue, simd);
    }
}

/// [`serial`] for skinny products (few rows): B (row-major) is read in place
/// by the kernel instead of packed, since packing it would cost as much
/// memory traffic as the whole product.
fn serial_direct_b<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    col0: usize,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let (b_data, ldb) = (b.as_slice(), b.row_stride());
    let Workspace {
        a: a_buf,
        b: p_buf,
        acc: acc_buf,
        row: row_buf,
        tmp,
        ..
    } = ws;
    for ic in (0..m).step_by(MC) {
        let mb = MC.min(m - ic);
        let mb_pad = round_up(mb, K::DIRECT_MR);
        let packed_a = grow(a_buf, mb_pad * k);
        pack_a_rows(&a, ic, mb, K::DIRECT_MR, packed_a, tmp, None, simd);
        // Few rows: sweep whole rows of B (long sequential streams).
        let nc = if mb <= 32 { n.clamp(1, 8192) } else { NC };
        for jc in (0..n).step_by(nc) {
            let nb = nc.min(n - jc);
            let acc = grow(acc_buf, mb_pad * nb);
            acc.fill(0.0);
            for k0 in (0..k).step_by(ARRAY_ROWS) {
                let kt = ARRAY_ROWS.min(k - k0);
                let b_tile = &b_data[k0 * ldb + jc..];
                // Columns in whole NR blocks go to the kernel, a chunk of
                // them at a time so that every A panel reads the chunk of
                // B from L2 (one pass over B from memory per call); the
                // last few columns (fewer than NR) go to the scalar form
                // of the same chain. Each accumulator element still gets
                // one `acc = acc + p` per K-tile.
                let main = nb / K::NR * K::NR;
                // (One panel reuses nothing: it sweeps whole rows of B,
                // the longest streams.)
                let chunk = if mb <= K::DIRECT_MR {
                    nb.max(1)
                } else {
                    round_up(DIRECT_B_CHUNK_BYTES / (kt.max(1) * size_of::<TB>()), K::NR).max(K::NR)
                };
                for j0 in (0..nb).step_by(chunk) {
                    let w = chunk.min(nb - j0);
                    let w_main = w.min(main.saturating_sub(j0));
                    for (q, a_panel) in packed_a.chunks_exact(k * K::DIRECT_MR).enumerate() {
                        let a_tile = &a_panel[k0 * K::DIRECT_MR..(k0 + kt) * K::DIRECT_MR];
                        let rows = K::DIRECT_MR.min(mb - q * K::DIRECT_MR);
                        let buf = grow(p_buf, rows * w + PAGE_FLOATS);
                        let start = if size_of::<TB>() == size_of::<f32>() {
                            alias_free_start(buf, &b_tile[j0..], w_main, rows)
                        } else {
                            0
                        };
                        let p = &mut buf[start..start + rows * w];
                        p.fill(0.0);
                        let (p_main, p_tail) = p.split_at_mut(rows * w_main);
                        if w_main > 0 {
                            K::tile_direct(kt, rows, a_tile, &b_tile[j0..], ldb, w_main, p_main);
                        }
                        if w_main < w {
                            tile_direct_scalar(
                                K::DIRECT_MR,
                                kt,
                                rows,
                                a_tile,
                                &b_tile[j0 + w_main..],
                                ldb,
                                w - w_main,
                                p_tail,
                            );
                        }
                        // acc = acc + p, once per K-tile.
                        for r in 0..rows {
                            let at = (q * K::DIRECT_MR + r) * nb + j0;
                            let sums = p_main[r * w_main..(r + 1) * w_main]
                                .iter()
                                .chain(&p_tail[r * (w - w_main)..(r + 1) * (w - w_main)]);
                            for (s, &v) in acc[at..at + w].iter_mut().zip(sums) {
                                *s += v;
                            }
                        }
                    }
                }
            }
            let row = grow(row_buf, nb);
            write_block::<O, K>(
                &mut c,
                (ic, jc),
                acc,
                nb,
                (mb, nb),
                row,
                col0,
                epilogue,
                simd,
            );
        }
    }
}

/// f32 values in a 4 KiB page.
const PAGE_FLOATS: usize = 1024;

/// Where in `buf` (at least `PAGE_FLOATS` longer than needed) the direct
/// kernel's sums start (`rows` rows of `row_len` f32 values): the offset,
/// a multiple of 64 bytes, that keeps every row's offset within a 4 KiB page
/// farthest from that of B's first element (`b`, 4-byte elements), so that
/// a sum stored at column j never shares its page offset with the B values
/// of the columns loaded right after it. (Loads whose address matches an
/// earlier store's in the low 12 bits wait for it, "4K aliasing": with
/// B's rows a whole number of pages apart, the wrong buffer address made
/// 6 × 4096 × 4096 f32 products run at 21–30 GFLOP/s instead of 50.)
fn alias_free_start<T>(buf: &[f32], b: &[T], row_len: usize, rows: usize) -> usize {
    let (page, line) = (4096usize, 64usize);
    let circular = |d: usize| (d % page).min(page - d % page);
    let row_bytes = row_len.wrapping_mul(size_of::<f32>()) % page;
    let delta = (buf.as_ptr() as usize).wrapping_sub(b.as_ptr() as usize) % page;
    let spread = |lines: usize| {
        (0..rows.max(1))
            .map(|r| circular(delta + lines * line + r * row_bytes))
            .min()
            .unwrap_or(0)
    };
    // The first best (ties keep the smaller offset).
    let best = (0..page / line).fold(0, |best, l| if spread(l) > spread(best) { l } else { best });
    best * line / size_of::<f32>()
}

/// Applies the epilogue to the `rows × cols` accumulator block (row stride
/// `ld_acc`) and stores it into C at rows `i0..`, columns `j0..`. An f32 C
/// with unit column stride is updated in place in one call; other outputs go
/// row by row through `row` (old values widened when `beta != 0`, results
/// narrowed with round-to-nearest-even).
#[allow(clippy::too_many_arguments)]
fn write_block<O: FloatElement, K: Kernel>(
    c: &mut MatMut<'_, O>,
    (i0, j0): (usize, usize),
    acc: &[f32],
    ld_acc: usize,
    (rows, cols): (usize, usize),
    row: &mut [f32],
    col0: usize,
    epilogue: &Epilogue<'_>,
    simd: bool,
) {
    let (rs, cs) = (c.row_stride(), c.col_stride());
    let contiguous = cs == 1 || cols == 1;
    let origin = i0 * rs + j0 * cs;
    if contiguous && O::DTYPE == DType::F32 && (rows == 1 || rs >= cols) {
        let span = (rows - 1) * rs + cols;
        let out: &mut [f32] =
            bytemuck::cast_slice_mut(&mut c.as_mut_slice()[origin..origin + span]);
        return K::epilogue_rows(epilogue, acc, ld_acc, out, rs, rows, cols, col0 + j0);
    }
    for i in 0..rows {
        let start = origin + i * rs;
        let data = c.as_mut_slice();
        if epilogue.beta != 0.0 {
            if contiguous {
                widen_dispatch(&data[start..start + cols], row, simd);
            } else {
                for (j, r) in row.iter_mut().enumerate() {
                    *r = data[start + j * cs].to_f32();
                }
            }
        }
        K::epilogue_rows(
            epilogue,
            &acc[i * ld_acc..],
            ld_acc,
            row,
            cols,
            1,
            cols,
            col0 + j0,
        );
        if contiguous {
            narrow_dispatch(row, &mut data[start..start + cols], Overflow::Ieee, simd);
        } else {
            for (j, &r) in row.iter().enumerate() {
                data[start + j * cs] = O::from_f32(r);
            }
        }
    }
}

/// Block scales to fold into packed values (see [`prescalable`]): line `l`
/// of the packed block, scaling block `blk` is multiplied by
/// `scales[blk · padded + l]` (as [`pack_scales`] lays them out).
#[derive(Clone, Copy)]
struct FoldScales<'s> {
    scales: &'s [f32],
    padded: usize,
    block: usize,
}

impl FoldScales<'_> {
    /// Line `line`'s values over all of K (a multiple of the block).
    fn line(&self, line: usize, values: &mut [f32]) {
        self.line_from(line, 0, values)
    }

    /// Line `line`'s values from step `k0` (a multiple of the block) on.
    fn line_from(&self, line: usize, k0: usize, values: &mut [f32]) {
        let blk0 = k0 / self.block;
        for (blk, run) in values.chunks_mut(self.block).enumerate() {
            let s = self.scales[(blk0 + blk) * self.padded + line];
            run.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// Step `kk`'s values of lines `0..values.len()`.
    fn step(&self, kk: usize, values: &mut [f32]) {
        let s = &self.scales[(kk / self.block) * self.padded..][..values.len()];
        values.iter_mut().zip(s).for_each(|(v, &s)| *v *= s);
    }
}

/// Packs rows `i0..i0 + mb` of A (all K) as MR-row micro-panels: panel `q`
/// holds, for each k, the MR values of rows `q*MR..`, zero-padded past `mb`;
/// with `fold`, each value times its block scale.
#[allow(clippy::too_many_arguments)]
fn pack_a<T: FloatElement, K: Kernel>(
    a: &MatRef<'_, T>,
    i0: usize,
    mb: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    pack_a_rows(a, i0, mb, K::MR, dst, tmp, fold, simd)
}

/// [`pack_a`] for panels of `mr` rows.
#[allow(clippy::too_many_arguments)]
fn pack_a_rows<T: FloatElement>(
    a: &MatRef<'_, T>,
    i0: usize,
    mb: usize,
    mr: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    let k = a.cols();
    let (rs, cs, data) = (a.row_stride(), a.col_stride(), a.as_slice());
    if k == 0 {
        return;
    }
    if rs == 1 && mb > 1 {
        // Columns are contiguous: each k gives MR consecutive values per panel.
        let col = grow(tmp, mb);
        for kk in 0..k {
            let start = i0 + kk * cs;
            widen_dispatch(&data[start..start + mb], col, simd);
            if let Some(f) = fold {
                f.step(kk, col);
            }
            for (q, panel) in dst.chunks_exact_mut(k * mr).enumerate() {
                let d = &mut panel[kk * mr..(kk + 1) * mr];
                let w = mr.min(mb.saturating_sub(q * mr));
                d[..w].copy_from_slice(&col[q * mr..q * mr + w]);
                d[w..].fill(0.0);
            }
        }
    } else {
        // Rows are contiguous (or strided): widen the panel's MR rows, then
        // interleave them k by k.
        let rows = grow(tmp, mr * k);
        for (q, panel) in dst.chunks_exact_mut(k * mr).enumerate() {
            let live = mr.min(mb - q * mr);
            if T::DTYPE == DType::F32 && cs == 1 && fold.is_none() && live == mr {
                // f32 rows: interleaved straight from A (no widening copy).
                let src: &[f32] = bytemuck::cast_slice(data);
                let first = (i0 + q * mr) * rs;
                for (kk, d) in panel.chunks_exact_mut(mr).enumerate() {
                    for (r, v) in d.iter_mut().enumerate() {
                        *v = src[first + r * rs + kk];
                    }
                }
                continue;
            }
            for r in 0..mr {
                let row = &mut rows[r * k..(r + 1) * k];
                if r >= live {
                    row.fill(0.0);
                    continue;
                }
                let start = (i0 + q * mr + r) * rs;
                if cs == 1 {
                    widen_dispatch(&data[start..start + k], row, simd);
                } else {
                    for (kk, v) in row.iter_mut().enumerate() {
                        *v = data[start + kk * cs].to_f32();
                    }
                }
                if let Some(f) = fold {
                    f.line(q * mr + r, row);
                }
            }
            for (kk, d) in panel.chunks_exact_mut(mr).enumerate() {
                for (r, v) in d.iter_mut().enumerate() {
                    *v = rows[r * k + kk];
                }
            }
        }
    }
}

/// Packs columns `j0..j0 + nb` of B (all K) as NR-column micro-panels: panel
/// `p` holds, for each k, the NR values of columns `p*NR..`, zero-padded;
/// with `fold`, each value times its block scale.
#[allow(clippy::too_many_arguments)]
fn pack_b<T: FloatElement, K: Kernel>(
    b: &MatRef<'_, T>,
    j0: usize,
    nb: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    pack_b_nr(b, j0, nb, K::NR, dst, tmp, fold, simd)
}

/// B's panels (each `k · NR` values) for columns `j0..j0 + nb` of the f32
/// rows of `src` (row `kk` at `kk · rs`), one panel after another.
fn panels_from_rows<const NR: usize>(
    src: &[f32],
    rs: usize,
    j0: usize,
    nb: usize,
    k: usize,
    dst: &mut [f32],
) {
    for (p, panel) in dst.chunks_exact_mut(k * NR).enumerate() {
        let c0 = j0 + p * NR;
        let live = NR.min(nb.saturating_sub(p * NR));
        for (kk, step) in panel.chunks_exact_mut(NR).enumerate() {
            let row = &src[kk * rs + c0..];
            match (step.first_chunk_mut::<NR>(), row.first_chunk::<NR>()) {
                (Some(d), Some(s)) if live == NR => *d = *s,
                _ => {
                    step[..live].copy_from_slice(&row[..live]);
                    step[live..].fill(0.0);
                }
            }
        }
    }
}

/// Step `kk` of B's panels (each `k · NR` values) from one row of B.
fn cut_row<const NR: usize>(row: &[f32], dst: &mut [f32], k: usize, kk: usize) {
    let mut panels = dst.chunks_exact_mut(k * NR);
    let (chunks, rest) = row.as_chunks::<NR>();
    // `chunks` first: zip stops on it without consuming a panel.
    for (chunk, panel) in chunks.iter().zip(&mut panels) {
        // A constant-length copy (the source is an array).
        panel[kk * NR..(kk + 1) * NR].copy_from_slice(chunk);
    }
    if let Some(panel) = panels.next() {
        let d = &mut panel[kk * NR..(kk + 1) * NR];
        d[..rest.len()].copy_from_slice(rest);
        d[rest.len()..].fill(0.0);
    }
}

/// [`cut_row`] for any panel width.
fn cut_row_any(row: &[f32], dst: &mut [f32], nr: usize, k: usize, kk: usize) {
    let mut panels = dst.chunks_exact_mut(k * nr);
    let mut chunks = row.chunks_exact(nr);
    for (chunk, panel) in (&mut chunks).zip(&mut panels) {
        panel[kk * nr..(kk + 1) * nr].copy_from_slice(chunk);
    }
    let rest = chunks.remainder();
    if let Some(panel) = panels.next() {
        let d = &mut panel[kk * nr..(kk + 1) * nr];
        d[..rest.len()].copy_from_slice(rest);
        d[rest.len()..].fill(0.0);
    }
}

/// [`pack_b`] for panels of `nr` columns.
#[allow(clippy::too_many_arguments)]
fn pack_b_nr<T: FloatElement>(
    b: &MatRef<'_, T>,
    j0: usize,
    nb: usize,
    nr: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    let k = b.rows();
    let (rs, cs, data) = (b.row_stride(), b.col_stride(), b.as_slice());
    if k == 0 {
        return;
    }
    if T::DTYPE == DType::F32 && fold.is_none() && cs == 1 && nr == 16 {
        // f32 rows: each panel copied from B a step at a time, so that the
        // panel is written in order.
        let src: &[f32] = bytemuck::cast_slice(data);
        panels_from_rows::<16>(src, rs, j0, nb, k, dst);
    } else if cs == 1 || nb == 1 {
        // Rows are contiguous: widen a row segment (f32 is used as it is),
        // cut it into panels.
        for kk in 0..k {
            let start = kk * rs + j0 * cs;
            let row: &[f32] = if T::DTYPE == DType::F32 && fold.is_none() {
                bytemuck::cast_slice(&data[start..start + nb])
            } else {
                let row = grow(tmp, nb);
                widen_dispatch(&data[start..start + nb], row, simd);
                if let Some(f) = fold {
                    f.step(kk, row);
                }
                row
            };
            match nr {
                // The kernels' widths as constants: each step's copy is a
                // few vector moves instead of a call to memmove.
                16 => cut_row::<16>(row, dst, k, kk),
                8 => cut_row::<8>(row, dst, k, kk),
                _ => cut_row_any(row, dst, nr, k, kk),
            }
        }
    } else {
        // Columns are contiguous (B transposed) or strided: widen a panel's
        // columns a chunk of K at a time (the chunk stays in L1), then
        // interleave them step by step.
        let chunk = COLUMN_CHUNK.min(k);
        let cols = grow(tmp, nr * chunk);
        for (p, panel) in dst.chunks_exact_mut(k * nr).enumerate() {
            let live = nr.min(nb.saturating_sub(p * nr));
            for k0 in (0..k).step_by(chunk) {
                let kc = chunk.min(k - k0);
                for r in 0..live {
                    let j = p * nr + r;
                    let col = &mut cols[r * chunk..r * chunk + kc];
                    let start = (j0 + j) * cs + k0 * rs;
                    if rs == 1 {
                        widen_dispatch(&data[start..start + kc], col, simd);
                    } else {
                        for (kk, v) in col.iter_mut().enumerate() {
                            *v = data[start + kk * rs].to_f32();
                        }
                    }
                    if let Some(f) = fold {
                        f.line_from(j, k0, col);
                    }
                }
                let steps = panel[k0 * nr..(k0 + kc) * nr].chunks_exact_mut(nr);
                for (kk, step) in steps.enumerate() {
                    for (r, v) in step[..live].iter_mut().enumerate() {
                        *v = cols[r * chunk + kk];
                    }
                    step[live..].fill(0.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{alias_free_start, PAGE_FLOATS};

    /// The sums' rows end up as far from B's page offset as the row stride
    /// allows: half a page when every row has the same offset, a quarter
    /// when rows alternate by half a page; the start is a whole number of
    /// cache lines inside the buffer's spare page.
    #[test]
    fn alias_free_start_keeps_half_a_page_away() {
        let buf = vec![0.0f32; 4 * PAGE_FLOATS];
        let b = vec![0.0f32; 2 * PAGE_FLOATS];
        for b_at in [0, 3, 16, 500, 1023] {
            for (row_len, rows, want) in [
                (4096, 6, 2048),
                (1024, 1, 2048),
                (512, 6, 1024),
                (512, 1, 2048),
            ] {
                let start = alias_free_start(&buf, &b[b_at..], row_len, rows);
                assert!(start < PAGE_FLOATS && start % 16 == 0, "{start}");
                let p = buf[start..].as_ptr() as usize;
                let b = b[b_at..].as_ptr() as usize;
                let worst = (0..rows)
                    .map(|r| {
                        let d = p.wrapping_sub(b).wrapping_add(r * row_len * 4) % 4096;
                        d.min(4096 - d)
                    })
                    .min()
                    .unwrap();
                // Within one cache line of the best possible distance.
                assert!(
                    worst + 64 > want,
                    "row_len {row_len} rows {rows} b_at {b_at}: {worst}"
                );
            }
        }
    }
}

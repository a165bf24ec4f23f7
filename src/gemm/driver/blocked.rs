//! The blocked strategy: BLIS's loops (see the module docs of
//! [`super`]) around a [`Panels`]' packing and tiles. f32 panels (every
//! type widened, block scales packed beside them or folded in) live here;
//! the FP4 integer panels in [`super::fp4_tiles`].

use super::pack::{pack_a, pack_b, FoldScales};
use super::workspace::{grow, round_up, Workspace};
use super::write_back::write_block;
use super::{Part, ScaleGrid, Scaling, MC, NC, WIDE_PANELS};
use crate::dtype::{DType, FloatElement};
use crate::gemm::kernel::Kernel;
use crate::gemm::{Epilogue, ARRAY_ROWS};
use crate::tensor::{MatMut, MatRef};

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
pub(super) fn prescalable<TA: FloatElement, TB: FloatElement>(scaling: &Scaling<'_>) -> bool {
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

/// One pair of operands as the blocked loops ([`blocked`]) see them: how
/// B's `NC`-column blocks and A's `MC`-row blocks are packed, and the
/// kernel call for one K-tile of a B panel and an A panel.
pub(super) trait Panels {
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
    /// [`Panels::tile`] for B panels `p..p + count` at once (accumulator
    /// columns `0..count·NR`), or false, doing nothing, where these panels
    /// have no such tile.
    fn tile_panels(
        &self,
        _k_tile: (usize, usize),
        _panel: (usize, usize),
        _count: usize,
        _acc: &mut [f32],
        _ld: usize,
    ) -> bool {
        false
    }
}

/// [`super::Strategy::Blocked`]: the f32 panels of `a` and `b` through
/// [`blocked`].
#[allow(clippy::too_many_arguments)]
pub(super) fn serial_blocked<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    part: &Part<'_, '_>,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let col0 = part.origin.1;
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

/// BLIS's loops (see the module docs of [`super`]) around `panels`' packing and tiles,
/// then the epilogue into C block by block.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn blocked<O: FloatElement, K: Kernel, P: Panels>(
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
                // B panels WIDE_PANELS at a time where the panels have a
                // tile for several (each accumulator element's chain is the
                // same).
                let b_panels = nb_pad / P::NR;
                for p in (0..b_panels).step_by(WIDE_PANELS) {
                    let count = WIDE_PANELS.min(b_panels - p);
                    for q in 0..mb_pad / P::MR {
                        let at = q * P::MR * nb_pad + p * P::NR;
                        let acc = &mut acc[at..];
                        if panels.tile_panels((k0, kt), (p, q), count, acc, nb_pad) {
                            continue;
                        }
                        for i in 0..count {
                            panels.tile((k0, kt), (p + i, q), &mut acc[i * P::NR..], nb_pad);
                        }
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
        let s = self
            .part
            .scaling
            .filter(|_| self.part.prescaled::<TA, TB>())?;
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

    #[inline]
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

    #[inline]
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

    // Inlined into `blocked` (called once per micro-tile): the driver's
    // files are separate codegen units, and an out-of-line call here cost
    // MXFP4 1024³ 3 % on Zen 3 (the old one-file driver inlined it).
    #[inline(always)]
    fn tile(&self, (k0, kt): (usize, usize), (p, q): (usize, usize), acc: &mut [f32], ld: usize) {
        let (k, (mb_pad, nb_pad)) = (self.a.cols(), self.pads);
        let b_panel = &self.packed_b()[p * k * K::NR..(p + 1) * k * K::NR];
        let a_panel = &self.bufs.0[q * k * K::MR..(q + 1) * k * K::MR];
        let b_tile = &b_panel[k0 * K::NR..(k0 + kt) * K::NR];
        let a_tile = &a_panel[k0 * K::MR..(k0 + kt) * K::MR];
        let Some(s) = self.part.scaling else {
            return K::tile(kt, a_tile, b_tile, acc, ld, k0 == 0);
        };
        if self.part.prescaled::<TA, TB>() {
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

    // Only the plain tile (no block scales) has a form for several panels.
    #[inline(always)]
    fn tile_panels(
        &self,
        (k0, kt): (usize, usize),
        (p, q): (usize, usize),
        count: usize,
        acc: &mut [f32],
        ld: usize,
    ) -> bool {
        if self.part.scaling.is_some() || !(2..=WIDE_PANELS).contains(&count) {
            return false;
        }
        let k = self.a.cols();
        let b = self.packed_b();
        let bs: [&[f32]; WIDE_PANELS] =
            std::array::from_fn(|i| &b[((p + i.min(count - 1)) * k + k0) * K::NR..][..kt * K::NR]);
        let a_tile = &self.bufs.0[q * k * K::MR + k0 * K::MR..][..kt * K::MR];
        K::tile_panels(kt, a_tile, &bs[..count], acc, ld, k0 == 0)
    }
}

/// Block scales packed like the panels: for each of `blocks` scaling
/// blocks, `padded` values (lines `first..first + live`, then 1.0 for the
/// padding lines, whose products are 0).
pub(super) fn pack_scales(
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

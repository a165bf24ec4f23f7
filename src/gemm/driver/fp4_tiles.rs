//! The FP4 × FP4 integer tiles ([`super::Strategy::Fp4Tiles`]): the
//! blocked loops on exact integer panels of the codes.

use super::blocked::{blocked, pack_scales, Panels};
use super::workspace::{Fp4Buffers, Workspace};
use super::{Part, Scaling};
use crate::dtype::{DType, FloatElement};
use crate::gemm::kernel::{Fp4Tile, Kernel, FP4_MR, FP4_NR, FP4_OFFSET, FP4_TIMES_2};
use crate::gemm::Epilogue;
use crate::tensor::{MatMut, MatRef};

/// FP4 × FP4 operands of a block-scaled product, as their codes (one per
/// byte): A's rows and B's columns contiguous in k.
pub(super) struct Fp4Operands<'x> {
    a: &'x [u8],
    lda: usize,
    b: &'x [u8],
    ldb: usize,
}

impl<'x> Fp4Operands<'x> {
    /// True when both operands are FP4 with unit stride along k and the
    /// block is at most 32 (the tile's i16 sums stay below
    /// 8 · 2 · 24 · 12 = 4608) and a multiple of 4.
    pub(super) fn fit<TA: FloatElement, TB: FloatElement>(
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
pub(super) fn serial_fp4_tiles<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
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

    #[inline]
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

    #[inline]
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

    // Inlined into `blocked` (called once per micro-tile): the driver's
    // files are separate codegen units, and an out-of-line call here cost
    // MXFP4 1024³ 3 % on Zen 3 (the old one-file driver inlined it).
    #[inline(always)]
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

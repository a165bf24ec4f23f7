//! Pre-packed B ([`crate::gemm::PackedB`]): its panels, and the skinny
//! strategy that streams them in place ([`super::Strategy::DirectPrepacked`];
//! larger products run the blocked loops on the same panels).

use super::pack::{pack_a_rows, pack_b_nr};
use super::workspace::{add_tile_sums, grow, round_up, Workspace};
use super::write_back::write_block;
#[cfg(target_arch = "x86_64")]
use super::{Avx2, Avx512};
use super::{Portable, MC};
use crate::dtype::FloatElement;
use crate::gemm::kernel::{DirectReads, Kernel};
use crate::gemm::{Epilogue, ARRAY_ROWS};
use crate::tensor::{MatMut, MatRef};

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

/// True when the kernel `simd` selects reads [`prepack_b`]'s panels.
pub(crate) fn prepacked_kernel_fits(simd: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    if simd {
        return Avx2::NR == PREPACKED_NR && Avx512::NR == PREPACKED_NR;
    }
    let _ = simd;
    Portable::NR == PREPACKED_NR
}

/// [`super::direct_b::serial_direct_b`] for a pre-packed B: each panel of NR columns is a
/// `k × NR` row-major matrix, read in place by the streaming kernel (one
/// sequential stream per panel), every A panel in turn while its K-tile
/// of the panel is in L1.
/// Each accumulator element gets one `acc = acc + p` per K-tile, as
/// everywhere.
#[allow(clippy::too_many_arguments)]
pub(super) fn serial_direct_prepacked<TA: FloatElement, O: FloatElement, K: Kernel>(
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
            for k0 in (0..k).step_by(ARRAY_ROWS) {
                let kt = ARRAY_ROWS.min(k - k0);
                let panel = &panels[((col0 / nr + pj) * k + k0) * nr..];
                let tile = PanelTile {
                    col: pj * nr,
                    width: nr,
                    k0,
                    kt,
                };
                add_panel_tile::<K>(packed_a, k, mb, panel, tile, n, acc, p_buf);
            }
        }
        let row = grow(row_buf, n);
        write_block::<O, K>(&mut c, (ic, 0), acc, n, (mb, n), row, col0, epilogue, simd);
    }
}

/// One K-tile of a panel of B (`width` columns a step, a multiple of NR):
/// its first column `col`, steps `k0..k0 + kt`.
#[derive(Clone, Copy)]
pub(super) struct PanelTile {
    pub(super) col: usize,
    pub(super) width: usize,
    pub(super) k0: usize,
    pub(super) kt: usize,
}

/// `acc += p` for every A panel of `packed_a` (`mb` rows, all K) against
/// one K-tile of one B panel (`panel`: `kt` steps of `tile.width` values,
/// those past `n` zero), `p` the tile's partial sums by the streaming
/// kernel: one `acc = acc + p` per accumulator element and K-tile, as
/// everywhere. `acc` is `mb × n` (row-major, rows padded to DIRECT_MR).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn add_panel_tile<K: Kernel>(
    packed_a: &[f32],
    k: usize,
    mb: usize,
    panel: &[f32],
    tile: PanelTile,
    n: usize,
    acc: &mut [f32],
    p_buf: &mut Vec<f32>,
) {
    let PanelTile { col, width, k0, kt } = tile;
    let cols = width.min(n - col);
    for (q, a_panel) in packed_a.chunks_exact(k * K::DIRECT_MR).enumerate() {
        let a_tile = &a_panel[k0 * K::DIRECT_MR..(k0 + kt) * K::DIRECT_MR];
        let rows = K::DIRECT_MR.min(mb - q * K::DIRECT_MR);
        let p = grow(p_buf, rows * width);
        p.fill(0.0);
        K::tile_direct(
            kt,
            rows,
            a_tile,
            panel,
            width,
            width,
            p,
            DirectReads::default(),
        );
        add_tile_sums(acc, n, (q * K::DIRECT_MR, col), p, width, (rows, cols));
    }
}

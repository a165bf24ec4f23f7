//! Skinny products with B's columns contiguous
//! ([`super::Strategy::DirectTransposed`]): `x · Wᵀ` with W stored
//! `[out, in]` as PyTorch holds it, B = Wᵀ a transposed view. With rows
//! that fit one A panel, the kernel reads W in place and transposes each
//! 8 × 8 block in registers ([`crate::gemm::kernel::Kernel::tile_direct_t`]).
//! Otherwise each NR-column panel is packed a chunk of K at a time (a register transpose, widened to
//! f32; each row of W read as one long run) into a buffer that stays in L2
//! while every A panel streams over its K-tiles, so B is read once from
//! memory, in its own order, and never packed whole.
//! The partial sums are the streaming kernel's, as on a pre-packed B
//! ([`super::prepacked`]): the same bits as every other path.

use super::pack::{pack_a_rows, pack_b_nr};
use super::prepacked::{add_panel_tile, PanelTile};
use super::workspace::{add_tile_sums, grow, round_up, Workspace};
use super::write_back::write_block;
use super::{MC, WIDE_PANELS};
use crate::dtype::FloatElement;
use crate::gemm::kernel::Kernel;
use crate::gemm::{Epilogue, ARRAY_ROWS};
use crate::tensor::{MatMut, MatRef};

/// Steps of K packed per panel chunk (a multiple of [`ARRAY_ROWS`]): 8 KiB
/// runs of each f32 row of W, a 128 KiB chunk for 16 columns.
const CHUNK_STEPS: usize = 16 * ARRAY_ROWS;

/// `c = epilogue(a·b)` for few rows of A and a B whose columns are
/// contiguous (`row_stride == 1`), panel by panel and K-tile by K-tile.
#[allow(clippy::too_many_arguments)]
pub(super) fn serial_direct_transposed<
    TA: FloatElement,
    TB: FloatElement,
    O: FloatElement,
    K: Kernel,
>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    col0: usize,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k, nr) = (a.rows(), b.cols(), a.cols(), K::NR);
    let Workspace {
        a: a_buf,
        b: p_buf,
        acc: acc_buf,
        row: row_buf,
        tmp,
        panel: panel_buf,
        ..
    } = ws;
    for ic in (0..m).step_by(MC) {
        let mb = MC.min(m - ic);
        let mb_pad = round_up(mb, K::DIRECT_MR);
        let packed_a = grow(a_buf, mb_pad * k);
        pack_a_rows(&a, ic, mb, K::DIRECT_MR, packed_a, tmp, None, simd);
        let acc = grow(acc_buf, mb_pad * n);
        acc.fill(0.0);
        // Few rows read W in place: each 8 × 8 block is transposed in
        // registers by the kernel itself (no second pass), for each A
        // panel (a second one re-reads the block from L1).
        // (Past the kernel's rows, packing each panel once is cheaper
        // than transposing it again per A panel.)
        let in_place = mb <= K::direct_t_in_place_rows::<TB>() && K::reads_direct_t::<TB>();
        let (w, ld) = (b.as_slice(), b.col_stride());
        let n_main = if in_place { n / nr * nr } else { 0 };
        // A register's worth of outputs (rows of W) at a time over all
        // of K, so that few rows of W stream at once.
        let outputs = K::direct_t_outputs::<TB>();
        for j0 in (0..n_main).step_by(outputs) {
            let nb = outputs.min(n_main - j0);
            // All of K at once where the kernel reads each line of W once
            // across the K-tiles (the answer is the same for every panel).
            let mut panels = packed_a.chunks_exact(k * K::DIRECT_MR).enumerate();
            let mut run = |(q, a_panel): (usize, &[f32])| {
                let rows = K::DIRECT_MR.min(mb - q * K::DIRECT_MR);
                let acc_rows = &mut acc[q * K::DIRECT_MR * n + j0..];
                K::tile_run_direct_t(rows, a_panel, &w[j0 * ld..], ld, nb, k, acc_rows, n)
            };
            if panels.next().is_some_and(&mut run) {
                for panel in panels {
                    assert!(run(panel), "the kernel runs every panel or none");
                }
                continue;
            }
            // Two K-tiles at a time where the kernel runs their chains
            // side by side, else tile by tile; each tile's sums are added
            // into acc in tile order either way.
            let mut k0 = 0;
            while k0 < k {
                let span = (2 * ARRAY_ROWS).min(k - k0);
                for (q, a_panel) in packed_a.chunks_exact(k * K::DIRECT_MR).enumerate() {
                    let rows = K::DIRECT_MR.min(mb - q * K::DIRECT_MR);
                    if span == 2 * ARRAY_ROWS
                        && K::tile_pair_direct_t(
                            rows,
                            &a_panel[k0 * K::DIRECT_MR..(k0 + span) * K::DIRECT_MR],
                            &w[j0 * ld + k0..],
                            ld,
                            nb,
                            &mut acc[q * K::DIRECT_MR * n + j0..],
                            n,
                        )
                    {
                        continue;
                    }
                    for t0 in (k0..k0 + span).step_by(ARRAY_ROWS) {
                        let kt = ARRAY_ROWS.min(k0 + span - t0);
                        let a_tile = &a_panel[t0 * K::DIRECT_MR..(t0 + kt) * K::DIRECT_MR];
                        let p = grow(p_buf, rows * nb);
                        p.fill(0.0);
                        K::tile_direct_t(kt, rows, a_tile, &w[j0 * ld + t0..], ld, nb, p);
                        // One `acc = acc + p` per accumulator element and K-tile.
                        add_tile_sums(acc, n, (q * K::DIRECT_MR, j0), p, nb, (rows, nb));
                    }
                }
                k0 += span;
            }
        }
        // Up to WIDE_PANELS panels side by side (one packed panel of
        // their columns), so that the kernel runs several registers of
        // columns per broadcast of A; a last panel of fewer than NR
        // columns alone.
        let n_full = n / nr * nr;
        let mut j = n_main;
        while j < n {
            let cols = if j < n_full {
                (WIDE_PANELS * nr).min(n_full - j)
            } else {
                n - j
            };
            let width = round_up(cols, nr);
            // A chunk of K-tiles of the panel at a time: each of its
            // columns (rows of W) is read as one run of CHUNK_STEPS values
            // (long sequential streams, which the prefetchers follow), and
            // the packed chunk stays in L2 while the K-tiles are summed.
            for c0 in (0..k).step_by(CHUNK_STEPS) {
                let kc = CHUNK_STEPS.min(k - c0);
                let panel = grow(panel_buf, kc * width);
                let b_chunk = b.sub(c0, kc, j, cols);
                pack_b_nr(&b_chunk, 0, cols, width, panel, tmp, None, simd);
                for t0 in (0..kc).step_by(ARRAY_ROWS) {
                    let kt = ARRAY_ROWS.min(kc - t0);
                    let tile = PanelTile {
                        col: j,
                        width,
                        k0: c0 + t0,
                        kt,
                    };
                    let tile_panel = &panel[t0 * width..];
                    add_panel_tile::<K>(packed_a, k, mb, tile_panel, tile, n, acc, p_buf);
                }
            }
            j += cols;
        }
        let row = grow(row_buf, n);
        write_block::<O, K>(&mut c, (ic, 0), acc, n, (mb, n), row, col0, epilogue, simd);
    }
}

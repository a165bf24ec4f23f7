//! Skinny products ([`super::Strategy::DirectB`]): B (row-major) read in
//! place by the kernel instead of packed, since packing it would cost as
//! much memory traffic as the whole product.

use super::pack::{pack_a_rows, times_256_if_exact};
use super::workspace::{add_tile_sums, grow, round_up, Workspace};
use super::write_back::write_block;
use super::{MC, NC};
use crate::dtype::FloatElement;
use crate::gemm::kernel::{tile_direct_scalar, DirectReads, Kernel};
use crate::gemm::{Epilogue, ARRAY_ROWS};
use crate::tensor::{MatMut, MatRef};

/// Bytes of B (a K-tile's rows, some columns) that the direct path keeps
/// in L2 while every panel of A passes over them.
const DIRECT_B_CHUNK_BYTES: usize = 256 * 1024;

/// [`serial`] for skinny products (few rows): B (row-major) is read in place
/// by the kernel instead of packed, since packing it would cost as much
/// memory traffic as the whole product.
pub(super) fn serial_direct_b<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
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
        // One A panel reads each row of B from memory once, the kernel
        // streaming fewer rows a pass; several read the chunk from L2.
        // E4M3 B: A times 2^8 where exact, so that the kernel widens each
        // weight without a multiply (only where every column is the
        // kernel's: the scalar tail takes A as it is).
        let reads = DirectReads {
            from_memory: mb <= K::DIRECT_MR,
            a_times_256: K::direct_wants_a_times_256::<TB>()
                && n.is_multiple_of(K::NR)
                && times_256_if_exact(packed_a),
        };
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
                            K::tile_direct(
                                kt,
                                rows,
                                a_tile,
                                &b_tile[j0..],
                                ldb,
                                w_main,
                                p_main,
                                reads,
                            );
                        }
                        if w_main < w {
                            assert!(!reads.a_times_256, "no tail with A times 2^8");
                            tile_direct_scalar(
                                K::DIRECT_MR,
                                0..kt,
                                rows,
                                a_tile,
                                &b_tile[j0 + w_main..],
                                (ldb, 1),
                                w - w_main,
                                p_tail,
                            );
                        }
                        // acc = acc + p, once per K-tile, the kernel's
                        // columns and the tail's each as plain rows (which
                        // vectorize: one chained iterator kept this scalar,
                        // a quarter of the time of 32 × 1024 × 1024).
                        let (row0, w_tail) = (q * K::DIRECT_MR, w - w_main);
                        add_tile_sums(acc, nb, (row0, j0), p_main, w_main, (rows, w_main));
                        let at = (row0, j0 + w_main);
                        add_tile_sums(acc, nb, at, p_tail, w_tail, (rows, w_tail));
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

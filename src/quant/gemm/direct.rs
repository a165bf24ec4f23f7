//! The integer GEMM's direct path: up to [`DIRECT_MAX_ROWS`] rows of A
//! against an int8 B read in place, in either layout, with no packed copy
//! of B (the blocked engine packs all of B on every call, which at batch
//! 1–32 costs more than the products). A's rows are converted once to the
//! values its kernel takes (AVX-512 VNNI: unsigned bytes for `vpdpbusd`, as
//! [`super::qgemm_packed`] does; AVX2: `a − za` as i16 for `vpmaddwd`), the
//! kernels ([`DirectKernel`]) give the raw sums (and, for VNNI, the column
//! sums), and the zero-point corrections and the epilogue follow, as in
//! every other path. Integer sums are exact: the bits are the reference's.
//!
//! - B row-major (`[in, out]`): blocks of [`k_block`] rows of B, each swept
//!   across the columns a tile of 64 at a time, so that B is read row after
//!   row as it lies; the sums wait in a per-call buffer (M × N i32). With
//!   few rows of A the kernel reads the tile in place; with more
//!   ([`DirectKernel::PACK_PAST_ROWS`]), each tile is packed once (a dense
//!   copy for VNNI, i16 pairs for AVX2) and every block of 4 rows runs on
//!   it: rows of B 4 KiB apart share one L1 set, so reading them in place
//!   again per block of rows misses L1.
//! - B's columns contiguous (`[out, in]`, PyTorch's `x · Wᵀ`): four lines
//!   of W at a time against every row of A (the lines stay in cache), each
//!   output a dot product over k.

use super::kernel::x86_avx2_direct::Avx2Direct;
use super::kernel::x86_vnni_direct::VnniDirect;
use super::kernel::{DirectKernel, DIRECT_LINES as LINES};
use super::packed::padded_rows;
use super::{pick, QEpilogue, QOutput, RowCorrection};
use crate::gemm::driver::{par_split, task_count};
use crate::gemm::Parallelism;
use crate::quant::QInt;
use crate::tensor::{MatMut, MatRef};

/// Rows of A up to which [`qgemm`](super::qgemm) reads B in place (when
/// B has a unit stride and the CPU has AVX2). Past it the blocked engine's
/// packing pays: on Zen 4 without VNNI (`MIXPREC_FORCE_AVX2`), K = N =
/// 4096, M = 32 takes 8.7 ms here and 19.1 ms blocked.
pub(super) const DIRECT_MAX_ROWS: usize = 32;

/// Rows of B per sweep across the columns (multiples of 4, the quads):
/// with one call per tile (M ≤ 4), 16 rows streaming side by side; with
/// more, 64, so that each call's sums are loaded and stored once per 64
/// rows. On Zen 4 (VNNI, B read in place), K = N = 4096: 16 rows take M = 1 in 0.56 ms
/// (64 rows: 0.66 ms); 64 rows take M = 8 in 1.6 ms and M = 32 in 6.8 ms
/// (16 rows: 2.7 and 8.4 ms).
fn k_block(m: usize) -> usize {
    if m <= ROWS {
        16
    } else {
        64
    }
}

/// Rows of A per kernel call.
const ROWS: usize = 4;

/// True when B is read row by row (row-major); false when by lines (its
/// columns contiguous, `[out, in]`).
fn reads_rows(b: &MatRef<'_, i8>) -> bool {
    b.col_stride() == 1 && (b.row_stride() != 1 || b.cols() > 1)
}

/// Whether the direct path takes this product.
pub(super) fn applies(m: usize, b: &MatRef<'_, i8>, simd: bool) -> bool {
    if !(simd && crate::cpu::has_avx2_fma_f16c()) || m == 0 || b.rows() == 0 {
        return false;
    }
    (reads_rows(b) || b.row_stride() == 1) && m <= DIRECT_MAX_ROWS
}

pub(super) fn run<A: QInt, O: QOutput>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: MatRef<'_, i8>,
    zb: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) {
    if crate::cpu::has_avx512() {
        run_with::<A, O, VnniDirect>(a, za, b, zb, c, epilogue, parallelism)
    } else {
        run_with::<A, O, Avx2Direct>(a, za, b, zb, c, epilogue, parallelism)
    }
}

fn run_with<A: QInt, O: QOutput, K: DirectKernel>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: MatRef<'_, i8>,
    zb: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 {
        return;
    }
    let lda = k.div_ceil(K::STEP) * K::STEP;
    // With column sums, A enters raw (i8 offset by 128: `vpdpbusd` takes
    // unsigned bytes) and the corrections are gemmlowp's; without, A
    // enters as a − za and only − zb · Σ(a − za) remains.
    let offset = if K::COLUMN_SUMS && A::QMIN < 0 {
        128
    } else {
        0
    };
    let (rows, raw_sums) = padded_rows(&a, lda, |v, i| K::convert(v, pick(za, i), offset));
    let corrections: Vec<RowCorrection> = raw_sums
        .iter()
        .enumerate()
        .map(|(i, &sum)| {
            let z = pick(za, i);
            if K::COLUMN_SUMS {
                RowCorrection::new(z, sum, k, offset)
            } else {
                // Σ(a − za) = Σa − k·za (wrapping, as the corrections).
                let centred = sum.wrapping_sub((k as i32).wrapping_mul(z));
                RowCorrection::new(0, centred, k, 0)
            }
        })
        .collect();
    let column_sums = K::COLUMN_SUMS && corrections.iter().any(|c| c.uses_column_sums());
    let tasks = task_count(m, n, k, parallelism);
    let by_rows = reads_rows(&b);
    let job = Job {
        rows: &rows,
        lda,
        b,
        zb,
        corrections: &corrections,
        column_sums,
        epilogue,
    };
    if by_rows {
        par_split(c, (0, 0), tasks, (m, K::TILE), &|(_, c0), part| {
            job.by_rows::<K, O>(c0, part)
        });
    } else {
        par_split(c, (0, 0), tasks, (m, LINES), &|(_, c0), part| {
            job.by_lines::<K, O>(c0, part)
        });
    }
}

/// What every part of C needs.
struct Job<'a, T> {
    /// A's rows as the kernel takes them, zero-padded to `lda`.
    rows: &'a [T],
    lda: usize,
    b: MatRef<'a, i8>,
    zb: &'a [i32],
    corrections: &'a [RowCorrection],
    column_sums: bool,
    epilogue: &'a QEpilogue<'a>,
}

impl<T> Job<'_, T> {
    /// Columns `c0..c0 + part.cols()` of C with B row-major.
    fn by_rows<K: DirectKernel<A = T>, O: QOutput>(&self, c0: usize, mut part: MatMut<'_, O>) {
        let (m, k, np) = (part.rows(), self.b.rows(), part.cols());
        let (ldb, lda, tile) = (self.b.row_stride(), self.lda, K::TILE);
        let data = self.b.as_slice();
        let tiles = np.div_ceil(tile);
        // Per tile: m rows of `tile` sums; and the tile's column sums.
        let mut acc = vec![0i32; tiles * m * tile];
        let mut sums = vec![0i32; tiles * tile];
        let kb = k_block(m);
        // Enough blocks of rows: each tile packed once for all.
        let packs = m > K::PACK_PAST_ROWS;
        let mut packed = vec![K::Tile::default(); if packs { K::tile_len(kb) } else { 0 }];
        for k0 in (0..k).step_by(kb) {
            let rows_k = kb.min(k - k0);
            for (t, tile_sums) in sums.chunks_exact_mut(tile).enumerate() {
                let j0 = t * tile;
                let shape = (rows_k, tile.min(np - j0));
                let b_tile = &data[k0 * ldb + c0 + j0..];
                let acc_tile = &mut acc[t * m * tile..(t + 1) * m * tile];
                let first = k0 == 0;
                if packs {
                    let col_sums = self.column_sums.then_some(&mut *tile_sums);
                    K::pack_tile(b_tile, ldb, shape, &mut packed, col_sums, first);
                    for i0 in (0..m).step_by(ROWS) {
                        let a_rows = &self.rows[i0 * lda + k0..];
                        let out = &mut acc_tile[i0 * tile..];
                        let p = &packed[..];
                        match m - i0 {
                            1 => K::by_rows_packed::<1>(a_rows, lda, p, rows_k, out, first),
                            2 => K::by_rows_packed::<2>(a_rows, lda, p, rows_k, out, first),
                            3 => K::by_rows_packed::<3>(a_rows, lda, p, rows_k, out, first),
                            _ => K::by_rows_packed::<ROWS>(a_rows, lda, p, rows_k, out, first),
                        }
                    }
                    continue;
                }
                for i0 in (0..m).step_by(ROWS) {
                    let a_rows = &self.rows[i0 * lda + k0..];
                    let out = &mut acc_tile[i0 * tile..];
                    let col_sums = (i0 == 0 && self.column_sums).then_some(&mut *tile_sums);
                    match m - i0 {
                        1 => K::by_rows::<1>(a_rows, lda, b_tile, ldb, shape, out, col_sums, first),
                        2 => K::by_rows::<2>(a_rows, lda, b_tile, ldb, shape, out, col_sums, first),
                        3 => K::by_rows::<3>(a_rows, lda, b_tile, ldb, shape, out, col_sums, first),
                        _ => K::by_rows::<ROWS>(
                            a_rows, lda, b_tile, ldb, shape, out, col_sums, first,
                        ),
                    }
                }
            }
        }
        for (t, tile_sums) in sums.chunks_exact(tile).enumerate() {
            let j0 = t * tile;
            for i in 0..m {
                let row = &acc[(t * m + i) * tile..(t * m + i + 1) * tile];
                for jj in 0..tile.min(np - j0) {
                    let slot = K::slot(jj);
                    self.put(&mut part, (i, j0 + jj), c0, row[slot], tile_sums[slot]);
                }
            }
        }
    }

    /// Columns `c0..c0 + part.cols()` of C with B's columns contiguous (the
    /// lines of W = Bᵀ).
    fn by_lines<K: DirectKernel<A = T>, O: QOutput>(&self, c0: usize, mut part: MatMut<'_, O>) {
        let (m, k, np) = (part.rows(), self.b.rows(), part.cols());
        let (ldw, lda) = (self.b.col_stride(), self.lda);
        let data = self.b.as_slice();
        for l0 in (0..np).step_by(LINES) {
            let live = LINES.min(np - l0);
            // A short last group repeats its last line (whose sums are not
            // written twice).
            let w: [&[i8]; LINES] = std::array::from_fn(|l| {
                let line = c0 + l0 + l.min(live - 1);
                &data[line * ldw..line * ldw + k]
            });
            let mut line_sums = [0i32; LINES];
            for i0 in (0..m).step_by(ROWS) {
                let a_rows = &self.rows[i0 * lda..];
                let sums = (i0 == 0 && self.column_sums).then_some(&mut line_sums);
                let mut out = [[0i32; LINES]; ROWS];
                match m - i0 {
                    1 => out[..1].copy_from_slice(&K::by_lines::<1>(a_rows, lda, w, k, sums)),
                    2 => out[..2].copy_from_slice(&K::by_lines::<2>(a_rows, lda, w, k, sums)),
                    3 => out[..3].copy_from_slice(&K::by_lines::<3>(a_rows, lda, w, k, sums)),
                    _ => out = K::by_lines::<ROWS>(a_rows, lda, w, k, sums),
                }
                for (r, out_r) in out.iter().enumerate().take(ROWS.min(m - i0)) {
                    for (l, &raw) in out_r.iter().enumerate().take(live) {
                        self.put(&mut part, (i0 + r, l0 + l), c0, raw, line_sums[l]);
                    }
                }
            }
        }
    }

    /// Output `(i, j)` of the part (column `c0 + j` of C) from its raw sum
    /// and its column's sum Σb.
    fn put<O: QOutput>(
        &self,
        part: &mut MatMut<'_, O>,
        (i, j): (usize, usize),
        c0: usize,
        raw: i32,
        col_sum: i32,
    ) {
        let col = c0 + j;
        let acc = self.corrections[i].apply(raw, pick(self.zb, col), col_sum);
        part.set(i, j, O::from_acc(acc, i, col, self.epilogue));
    }
}

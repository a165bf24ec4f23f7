//! The integer GEMM's direct path: up to [`DIRECT_MAX_ROWS`] rows of A
//! against an int8 B read in place, in either layout, with no packed copy
//! of B (the blocked engine packs all of B on every call, which at batch
//! 1–32 costs more than the products). A's rows are converted once to the
//! unsigned bytes `vpdpbusd` takes (as [`super::qgemm_packed`] does), the
//! kernels of `kernel::x86_vnni_direct` give the raw sums and the column
//! sums, and the zero-point corrections and the epilogue follow, as in
//! every other path. Integer sums are exact: the bits are the reference's.
//!
//! - B row-major (`[in, out]`): blocks of [`k_block`] rows of B, each swept
//!   across the columns 64 at a time, so that B is read row after row as it
//!   lies; the sums wait in a per-call buffer (M × N i32).
//! - B's columns contiguous (`[out, in]`, PyTorch's `x · Wᵀ`): four lines
//!   of W at a time against every row of A (the lines stay in cache), each
//!   output a dot product over k.

use super::kernel::x86_vnni_direct::{
    by_lines_checked, by_rows_checked, by_rows_slot, LINES, TILE,
};
use super::packed::padded_rows;
use super::{pick, QEpilogue, QOutput, RowCorrection};
use crate::gemm::driver::{par_split, task_count};
use crate::gemm::Parallelism;
use crate::quant::QInt;
use crate::tensor::{MatMut, MatRef};

/// Rows of A up to which [`qgemm`](super::qgemm) reads B in place (when
/// the CPU has AVX-512 VNNI and B has a unit stride).
pub(super) const DIRECT_MAX_ROWS: usize = 32;

/// Rows of B per sweep across the columns (multiples of 4, the quads):
/// with one call per tile (M ≤ 4), 16 rows streaming side by side; with
/// more, 64, so that each call's sums are loaded and stored once per 64
/// rows. On Zen 4, K = N = 4096: 16 rows take M = 1 in 0.56 ms (64 rows:
/// 0.66 ms); 64 rows take M = 8 in 1.6 ms and M = 32 in 6.8 ms (16 rows:
/// 2.7 and 8.4 ms).
fn k_block(m: usize) -> usize {
    if m <= ROWS {
        16
    } else {
        64
    }
}

/// Rows of A per kernel call.
const ROWS: usize = 4;

/// Whether the direct path takes this product.
pub(super) fn applies(m: usize, b: &MatRef<'_, i8>, simd: bool) -> bool {
    simd && crate::cpu::has_avx512()
        && (1..=DIRECT_MAX_ROWS).contains(&m)
        && b.rows() > 0
        && (b.col_stride() == 1 || b.row_stride() == 1)
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
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 {
        return;
    }
    let k4 = k.div_ceil(4) * 4;
    // `vpdpbusd` takes A as unsigned bytes: i8 values enter as a + 128.
    let offset = if A::QMIN < 0 { 128 } else { 0 };
    let (rows, row_sums) = padded_rows(&a, k4, |v| (v + offset) as u8);
    let corrections: Vec<RowCorrection> = (0..m)
        .map(|i| RowCorrection::new(pick(za, i), row_sums[i], k, offset))
        .collect();
    let column_sums = corrections.iter().any(|c| c.uses_column_sums());
    let tasks = task_count(m, n, k, parallelism);
    let by_rows = b.col_stride() == 1 && (b.row_stride() != 1 || n > 1);
    let job = Job {
        rows: &rows,
        k4,
        b,
        zb,
        corrections: &corrections,
        column_sums,
        epilogue,
    };
    if by_rows {
        par_split(c, (0, 0), tasks, (m, TILE), &|(_, c0), part| {
            job.by_rows(c0, part)
        });
    } else {
        par_split(c, (0, 0), tasks, (m, LINES), &|(_, c0), part| {
            job.by_lines(c0, part)
        });
    }
}

/// What every part of C needs.
struct Job<'a> {
    /// A's rows as unsigned bytes, zero-padded to `k4`.
    rows: &'a [u8],
    k4: usize,
    b: MatRef<'a, i8>,
    zb: &'a [i32],
    corrections: &'a [RowCorrection],
    column_sums: bool,
    epilogue: &'a QEpilogue<'a>,
}

impl Job<'_> {
    /// Columns `c0..c0 + part.cols()` of C with B row-major.
    fn by_rows<O: QOutput>(&self, c0: usize, mut part: MatMut<'_, O>) {
        let (m, k, np) = (part.rows(), self.b.rows(), part.cols());
        let ldb = self.b.row_stride();
        let data = self.b.as_slice();
        let tiles = np.div_ceil(TILE);
        // Per tile: m rows of 64 sums, then the tile's column sums.
        let mut acc = vec![0i32; tiles * m * TILE];
        let mut sums = vec![[0i32; TILE]; tiles];
        let kb = k_block(m);
        for k0 in (0..k).step_by(kb) {
            let rows_k = kb.min(k - k0);
            for (t, tile_sums) in sums.iter_mut().enumerate() {
                let j0 = t * TILE;
                let cols = TILE.min(np - j0);
                let b_tile = &data[k0 * ldb + c0 + j0..];
                let acc_tile = &mut acc[t * m * TILE..(t + 1) * m * TILE];
                for i0 in (0..m).step_by(ROWS) {
                    let a_rows = &self.rows[i0 * self.k4 + k0..];
                    let out = &mut acc_tile[i0 * TILE..];
                    let col_sums = (i0 == 0 && self.column_sums).then_some(&mut *tile_sums);
                    let shape = (rows_k, cols);
                    let first = k0 == 0;
                    match m - i0 {
                        1 => by_rows_checked::<1>(
                            a_rows, self.k4, b_tile, ldb, shape, out, col_sums, first,
                        ),
                        2 => by_rows_checked::<2>(
                            a_rows, self.k4, b_tile, ldb, shape, out, col_sums, first,
                        ),
                        3 => by_rows_checked::<3>(
                            a_rows, self.k4, b_tile, ldb, shape, out, col_sums, first,
                        ),
                        _ => by_rows_checked::<ROWS>(
                            a_rows, self.k4, b_tile, ldb, shape, out, col_sums, first,
                        ),
                    }
                }
            }
        }
        for (t, tile_sums) in sums.iter().enumerate() {
            let j0 = t * TILE;
            for i in 0..m {
                let row = &acc[(t * m + i) * TILE..(t * m + i + 1) * TILE];
                for jj in 0..TILE.min(np - j0) {
                    let slot = by_rows_slot(jj);
                    self.put(&mut part, (i, j0 + jj), c0, row[slot], tile_sums[slot]);
                }
            }
        }
    }

    /// Columns `c0..c0 + part.cols()` of C with B's columns contiguous (the
    /// lines of W = Bᵀ).
    fn by_lines<O: QOutput>(&self, c0: usize, mut part: MatMut<'_, O>) {
        let (m, k, np) = (part.rows(), self.b.rows(), part.cols());
        let ldw = self.b.col_stride();
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
                let a_rows = &self.rows[i0 * self.k4..];
                let sums = (i0 == 0 && self.column_sums).then_some(&mut line_sums);
                let mut out = [[0i32; LINES]; ROWS];
                match m - i0 {
                    1 => out[..1]
                        .copy_from_slice(&by_lines_checked::<1>(a_rows, self.k4, w, k, sums)),
                    2 => out[..2]
                        .copy_from_slice(&by_lines_checked::<2>(a_rows, self.k4, w, k, sums)),
                    3 => out[..3]
                        .copy_from_slice(&by_lines_checked::<3>(a_rows, self.k4, w, k, sums)),
                    _ => out = by_lines_checked::<ROWS>(a_rows, self.k4, w, k, sums),
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

//! Threads: C is split into parts along M or N (never K, so every thread
//! count gives the same bits), each part computed on one thread.

use crate::gemm::Parallelism;
use crate::tensor::MatMut;

use super::workspace::round_up;

/// Up to this many rows a threaded product splits C's columns
/// ([`par_columns`]), not its rows.
const COLUMN_SPLIT_MAX_M: usize = 32;
/// Below this many multiply-adds a GEMM runs on one thread.
const PARALLEL_MIN_WORK: usize = 1 << 21;

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

//! A model of the systolic array itself: what an R×C array of multiply-add
//! processing elements (PEs) would do with a GEMM `C[M×N] = A[M×K]·B[K×N]`.
//!
//! * [`simulate`]: a cycle-stepped functional simulation (registers per PE,
//!   operands moving one PE per cycle with the input skew, partial sums
//!   moving down) that returns the product and the cycle count.
//! * [`analyze`]: the analytical model, instant for any size: folds,
//!   cycles, utilization, mapping efficiency, buffer and off-chip traffic.
//!
//! # Dataflows
//!
//! Each dataflow keeps one operand in the array ("stationary") and streams
//! the other two. `→` is a row of the array, `↓` a column.
//!
//! ```text
//! weight-stationary (WS, TPU)   output-stationary (OS)      input-stationary (IS)
//!   B tile (K×N) held in PEs      C tile (M×N) held in PEs     A tile (Kᵀ×M) held in PEs
//!                                   B cols ↓ ↓ ↓ (skewed)
//!   A rows → ┌─────────┐          A rows → ┌─────────┐         B rows → ┌─────────┐
//!   (skewed) │ b b b b │ psum ↓   (skewed) │ c c c c │         (skewed) │ a a a a │ psum ↓
//!            │ b b b b │                   │ c c c c │                  │ a a a a │
//!            └─────────┘                   └─────────┘                  └─────────┘
//!              C out ↓                     C drains when done            C out ↓
//! ```
//!
//! * **WS**: array rows hold K, columns hold N. A K×N weight tile is loaded
//!   (R cycles, one row per cycle), then the M rows of A stream in from the
//!   left, row `m` entering array row `r` at cycle `m + r` (the skew); each PE
//!   does `p = fma(a, w, p)` and passes `p` down, so each column's bottom
//!   emits one K-tile sum per row of A, which is added to the accumulator.
//!   This is the crate's GEMM contract with the tile height equal to R.
//! * **OS**: array rows hold M, columns hold N; A streams from the left and
//!   B from the top, both skewed, and each PE accumulates one output over
//!   all of K (no K-tiles: a single FMA chain per output).
//! * **IS**: array rows hold K, columns hold M; an A tile is loaded and
//!   the N columns of B stream in from the left, like WS with A and B's
//!   roles exchanged.
//!
//! # Cycles
//!
//! With `F` folds (tiles of the problem mapped onto the array in turn):
//!
//! | dataflow | folds F | cycles per fold |
//! |---|---|---|
//! | WS | ⌈K/R⌉·⌈N/C⌉ | R (load) + M + R + C − 2 (stream, skew fill and drain) |
//! | OS | ⌈M/R⌉·⌈N/C⌉ | K + R + C − 2 |
//! | IS | ⌈K/R⌉·⌈M/C⌉ | R + N + R + C − 2 |
//!
//! In [`Mode::ScaleSim`] folds run one after another and the reported
//! count is `F × per_fold − 1`: SCALE-Sim 3.0.0 reports the 0-based index of
//! the last cycle, and this mode follows its conventions exactly (checked
//! against it in `tests/scalesim.rs`). [`simulate`] steps `F × per_fold`
//! cycles. In [`Mode::Tpu`] the next fold's stationary operand loads while
//! the current fold streams (double-buffered weights, as in the TPU), so
//! only the first load and the last fill/drain are exposed:
//! `load + F·max(stream, load) + (R + C − 2)` with `(load, stream)` =
//! `(R, M)` for WS, `(R, N)` for IS and `(R, K)` for OS (the finished outputs
//! drain while the next fold computes).
//!
//! Worked example (WS, 128×128 array, a 1024×1024 layer, batch M = 8):
//! F = 8·8 = 64 folds of 2·128 + 128 + 8 − 2 = 390 cycles: 24,960 cycles
//! for 8·1024·1024 MACs, utilization 8.4 Mi / (16,384 · 24,960) = 2.1 %. With
//! M = 1024 the fold is 1,406 cycles, utilization 72.8 %. In TPU mode the
//! weight loads hide behind streaming once M ≥ R: 95.5 % at M = 128 and
//! 99.4 % at M = 1024, but still 6.0 % at M = 8 (each fold waits for its
//! 128-cycle weight load). With the output- or input-stationary dataflow M is
//! mapped onto the array, and M = 129 on 128 rows needs a second, nearly
//! empty fold: utilization halves (80 % at M = 128, 40 % at M = 129, OS).

mod model;
mod sim;

pub use model::{analyze, Mode, Report, Traffic};
pub use sim::{simulate, SimResult, MAX_SIMULATED_PES};

use crate::Error;

/// How operands map onto the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataflow {
    /// Weights (B) stay in the PEs; A streams; partial sums flow down K.
    WeightStationary,
    /// Outputs (C) stay in the PEs; A and B stream.
    OutputStationary,
    /// Inputs (A) stay in the PEs; B streams; partial sums flow down K.
    InputStationary,
}

impl Dataflow {
    /// The short name: `ws`, `os` or `is`.
    pub fn name(self) -> &'static str {
        match self {
            Dataflow::WeightStationary => "ws",
            Dataflow::OutputStationary => "os",
            Dataflow::InputStationary => "is",
        }
    }
}

impl std::str::FromStr for Dataflow {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "ws" => Ok(Dataflow::WeightStationary),
            "os" => Ok(Dataflow::OutputStationary),
            "is" => Ok(Dataflow::InputStationary),
            _ => Err(Error::InvalidParameter {
                name: "dataflow",
                value: format!("{s:?}"),
                requirement: "one of ws, os, is",
            }),
        }
    }
}

/// An array of `rows × cols` PEs running one dataflow. The fields are
/// private so that every value has passed [`ArrayConfig::new`]'s checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayConfig {
    rows: usize,
    cols: usize,
    dataflow: Dataflow,
}

impl ArrayConfig {
    /// An array of `rows × cols` PEs.
    ///
    /// # Errors
    /// [`Error::EmptyDimension`] when either is 0; [`Error::ShapeOverflow`]
    /// when `rows × cols` does not fit in `u64`.
    pub fn new(rows: usize, cols: usize, dataflow: Dataflow) -> Result<Self, Error> {
        if rows == 0 || cols == 0 {
            return Err(Error::EmptyDimension {
                what: "ArrayConfig",
                shape: vec![rows, cols],
            });
        }
        if (rows as u64).checked_mul(cols as u64).is_none() {
            return Err(Error::ShapeOverflow {
                shape: vec![rows, cols],
            });
        }
        Ok(Self {
            rows,
            cols,
            dataflow,
        })
    }

    /// The TPU v1 shape: 128×128 (the crate's [`crate::gemm::ARRAY_ROWS`]), weight-stationary.
    pub fn tpu() -> Self {
        Self {
            rows: crate::gemm::ARRAY_ROWS,
            cols: 128,
            dataflow: Dataflow::WeightStationary,
        }
    }

    /// PE rows (the array height; 128 in the TPU).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// PE columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The dataflow.
    pub fn dataflow(&self) -> Dataflow {
        self.dataflow
    }

    /// The same array with another dataflow.
    pub fn with_dataflow(self, dataflow: Dataflow) -> Self {
        Self { dataflow, ..self }
    }

    /// `(folds, cycles per fold)` of the SCALE-Sim accounting, for M×K×N;
    /// `None` when a count does not fit in `u64`.
    pub(crate) fn folds(&self, m: usize, k: usize, n: usize) -> Option<(u64, u64)> {
        let (r, c) = (self.rows as u64, self.cols as u64);
        let (m, k, n) = (m as u64, k as u64, n as u64);
        // (folds along the array's rows) · (along its columns), and the
        // stationary-load rows (R for WS/IS, 0 for OS) + R + C + T − 2;
        // every term is at least 1, so the subtraction cannot underflow.
        let (row_folds, col_folds, load, t) = match self.dataflow {
            Dataflow::WeightStationary => (k.div_ceil(r), n.div_ceil(c), r, m),
            Dataflow::OutputStationary => (m.div_ceil(r), n.div_ceil(c), 0, k),
            Dataflow::InputStationary => (k.div_ceil(r), m.div_ceil(c), r, n),
        };
        let folds = row_folds.checked_mul(col_folds)?;
        let per_fold = load.checked_add(r)?.checked_add(c)?.checked_add(t)? - 2;
        Some((folds, per_fold))
    }
}

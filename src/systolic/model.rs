//! The analytical model: instant for any GEMM size.

use super::{ArrayConfig, Dataflow};
use crate::Error;

/// Cycle accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// SCALE-Sim 3.0.0's conventions, exactly: folds run back to back, each
    /// paying its stationary-operand load and its skew fill and drain; the
    /// reported count is the 0-based index of the last cycle.
    ScaleSim,
    /// TPU-like: the next fold's stationary operand loads while the current
    /// fold streams (double-buffered weights); see the module docs.
    Tpu,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "scalesim" => Ok(Mode::ScaleSim),
            "tpu" => Ok(Mode::Tpu),
            _ => Err(Error::InvalidParameter {
                name: "mode",
                value: format!("{s:?}"),
                requirement: "scalesim or tpu",
            }),
        }
    }
}

/// Element counts moved between the array and its buffers, or between the
/// buffers and off-chip memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Elements of A read.
    pub a_reads: u64,
    /// Elements of B read.
    pub b_reads: u64,
    /// Elements of C written (partial sums included).
    pub c_writes: u64,
    /// Elements of C read back (partial sums spilled off chip).
    pub c_reads: u64,
}

/// What the array does with one GEMM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    /// The array and dataflow.
    pub config: ArrayConfig,
    /// The accounting mode.
    pub mode: Mode,
    /// GEMM sizes.
    pub m: usize,
    /// GEMM sizes.
    pub k: usize,
    /// GEMM sizes.
    pub n: usize,
    /// Tiles of the problem mapped onto the array in turn.
    pub folds: u64,
    /// Cycles (see [`Mode`]).
    pub cycles: u64,
    /// Multiply-adds: M·K·N.
    pub macs: u64,
    /// MACs / (PEs × cycles), in percent (cycles taken as at least 1). In
    /// [`Mode::ScaleSim`] `cycles` is the last cycle's 0-based index, as
    /// SCALE-Sim reports it, so this may exceed 100 % by one cycle's share.
    pub utilization_pct: f64,
    /// Fraction of PEs holding a useful stationary operand, averaged over
    /// folds, in percent.
    pub mapping_efficiency_pct: f64,
    /// SCALE-Sim's "compute utilization": per fold, MACs / (PEs × that
    /// fold's cycles including its fill and drain), averaged, in percent.
    pub compute_utilization_pct: f64,
    /// Operands read by the array from the on-chip buffers, results written.
    pub buffer: Traffic,
    /// Traffic between the buffers and off-chip memory for the buffer sizes
    /// given to [`analyze`].
    pub offchip: Traffic,
}

/// Analyzes `C[M×N] = A[M×K]·B[K×N]` on `config`. `buffer_elems` gives the
/// capacity, in elements, of the on-chip buffers for A, B and C (use
/// `u64::MAX` for unbounded); off-chip traffic assumes each operand is read
/// once when the part that is reused across folds fits in its buffer, and
/// once per reuse otherwise.
///
/// ```
/// use mixprec::systolic::{analyze, ArrayConfig, Dataflow, Mode};
/// let tpu = ArrayConfig::tpu();
/// let batch8 = analyze(&tpu, 8, 1024, 1024, Mode::ScaleSim, [u64::MAX; 3])?;
/// assert_eq!((batch8.folds, batch8.cycles), (64, 24_959));
/// assert!(batch8.utilization_pct < 2.1);
/// let batch1024 = analyze(&tpu, 1024, 1024, 1024, Mode::Tpu, [u64::MAX; 3])?;
/// assert!(batch1024.utilization_pct > 99.0);
/// assert!(analyze(&tpu, usize::MAX, 2, 2, Mode::ScaleSim, [u64::MAX; 3]).is_err());
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// [`Error::EmptyDimension`] when M, K or N is 0; [`Error::ShapeOverflow`]
/// when a count (MACs, cycles, traffic) does not fit in `u64`.
pub fn analyze(
    config: &ArrayConfig,
    m: usize,
    k: usize,
    n: usize,
    mode: Mode,
    buffer_elems: [u64; 3],
) -> Result<Report, Error> {
    if m == 0 || k == 0 || n == 0 {
        return Err(Error::EmptyDimension {
            what: "systolic::analyze (M, K, N)",
            shape: vec![m, k, n],
        });
    }
    analyze_checked(config, m, k, n, mode, buffer_elems).ok_or_else(|| Error::ShapeOverflow {
        shape: vec![m, k, n],
    })
}

/// `a · b · c` in u64, `None` on overflow.
fn mul3(a: u64, b: u64, c: u64) -> Option<u64> {
    a.checked_mul(b)?.checked_mul(c)
}

/// [`analyze`] for non-empty dimensions; `None` when a count overflows u64.
fn analyze_checked(
    config: &ArrayConfig,
    m: usize,
    k: usize,
    n: usize,
    mode: Mode,
    buffer_elems: [u64; 3],
) -> Option<Report> {
    let (r, c) = (config.rows() as u64, config.cols() as u64);
    let (mu, ku, nu) = (m as u64, k as u64, n as u64);
    let (folds, per_fold) = config.folds(m, k, n)?;
    // Stationary tile dimensions (rows of the array, columns of the array),
    // the streamed length T, and the fold counts along each.
    let (rows_len, cols_len, t) = match config.dataflow() {
        Dataflow::WeightStationary => (ku, nu, mu),
        Dataflow::OutputStationary => (mu, nu, ku),
        Dataflow::InputStationary => (ku, mu, nu),
    };
    let (row_folds, col_folds) = (rows_len.div_ceil(r), cols_len.div_ceil(c));
    // r, c >= 1, so r + c - 2 cannot underflow; folds >= 1 and per_fold >= 1.
    let fill_drain = r.checked_add(c)? - 2;
    let cycles = match mode {
        Mode::ScaleSim => folds.checked_mul(per_fold)? - 1,
        Mode::Tpu => {
            let load = r;
            load.checked_add(folds.checked_mul(t.max(load))?)?
                .checked_add(fill_drain)?
        }
    };
    let macs = mul3(mu, ku, nu)?;
    let pes = (r as f64) * (c as f64);
    // A 1-cycle problem in SCALE-Sim mode reports cycle index 0: count it
    // as one cycle rather than divide by zero.
    let utilization_pct = macs as f64 * 100.0 / (pes * cycles.max(1) as f64);
    // Average occupancy over folds: Σ_folds rows_used·cols_used / (F·R·C).
    // Σ over tiles of the used size along a dimension is the dimension itself.
    let used = rows_len.checked_mul(cols_len)?;
    let mapping_efficiency_pct = used as f64 * 100.0 / (folds as f64 * pes);
    // SCALE-Sim's per-fold compute utilization: mac_used·T / (R·C·fold_cycles)
    // with fold_cycles = 2R + 2C + T − 3 (WS, IS) or R + C + T − 2 (OS).
    let fold_cycles = match config.dataflow() {
        Dataflow::OutputStationary => fill_drain.checked_add(t)?,
        _ => {
            r.checked_mul(2)?
                .checked_add(c.checked_mul(2)?)?
                .checked_add(t)?
                - 3
        }
    };
    let compute_utilization_pct =
        used as f64 * t as f64 * 100.0 / (folds as f64 * pes * fold_cycles as f64);
    // Buffer traffic: every fold streams its streamed operand in full and
    // loads its stationary tile once.
    let buffer = match config.dataflow() {
        Dataflow::WeightStationary => Traffic {
            a_reads: mul3(col_folds, mu, ku)?,
            b_reads: ku.checked_mul(nu)?,
            c_writes: mul3(row_folds, mu, nu)?,
            c_reads: mul3(row_folds - 1, mu, nu)?,
        },
        Dataflow::OutputStationary => Traffic {
            a_reads: mul3(col_folds, mu, ku)?,
            b_reads: mul3(row_folds, ku, nu)?,
            c_writes: mu.checked_mul(nu)?,
            c_reads: 0,
        },
        Dataflow::InputStationary => Traffic {
            a_reads: mu.checked_mul(ku)?,
            b_reads: mul3(col_folds, ku, nu)?,
            c_writes: mul3(row_folds, mu, nu)?,
            c_reads: mul3(row_folds - 1, mu, nu)?,
        },
    };
    let [a_buf, b_buf, c_buf] = buffer_elems;
    let (a_total, b_total, c_total) = (
        mu.checked_mul(ku)?,
        ku.checked_mul(nu)?,
        mu.checked_mul(nu)?,
    );
    let offchip = Traffic {
        a_reads: if a_total <= a_buf {
            a_total
        } else {
            buffer.a_reads
        },
        b_reads: if b_total <= b_buf {
            b_total
        } else {
            buffer.b_reads
        },
        c_writes: if c_total <= c_buf {
            c_total
        } else {
            buffer.c_writes
        },
        c_reads: if c_total <= c_buf { 0 } else { buffer.c_reads },
    };
    Some(Report {
        config: *config,
        mode,
        m,
        k,
        n,
        folds,
        cycles,
        macs,
        utilization_pct,
        mapping_efficiency_pct,
        compute_utilization_pct,
        buffer,
        offchip,
    })
}

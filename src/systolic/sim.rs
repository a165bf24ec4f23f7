//! The cycle-stepped functional simulation.

use super::{ArrayConfig, Dataflow};
use crate::dtype::FloatElement;
use crate::tensor::{MatRef, Tensor};
use crate::Error;

/// The simulated product and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct SimResult {
    /// C = A·B, M×N, computed by the simulated PEs.
    pub output: Tensor<f32>,
    /// Cycles stepped: `F × per_fold` (see the module docs); SCALE-Sim
    /// reports one less.
    pub cycles: u64,
    /// Multiply-adds done by mapped PEs on real (non-padding) operands.
    pub macs: u64,
}

/// The most PEs [`simulate`] models (2^24, a 4096×4096 array): each PE's
/// registers live in memory.
pub const MAX_SIMULATED_PES: usize = 1 << 24;

/// An operand on its way through the array: the index of the streamed
/// element it belongs to (a row of A for WS, a column of B for IS, a k for
/// OS) and its value.
type Token = Option<(usize, f32)>;

/// Simulates `A·B` on the array, cycle by cycle: every PE holds registers
/// for the operand passing right, the partial sum passing down (WS, IS) or
/// its accumulator (OS), and its stationary value; each cycle every PE
/// reads its neighbours' registers from the previous cycle. Loading a
/// stationary tile shifts it in from the top, one array row per cycle.
///
/// Practical up to about 10⁸ PE-cycles (a 16×16 array and modest problems;
/// a 128×128 array with small M). NaN and infinity travel through the PEs
/// as IEEE 754 says.
///
/// ```
/// use mixprec::systolic::{simulate, analyze, ArrayConfig, Dataflow, Mode};
/// use mixprec::MatRef;
/// let a: Vec<f32> = (0..6).map(|i| i as f32).collect(); // 2×3
/// let b: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect(); // 3×4
/// let cfg = ArrayConfig::new(2, 2, Dataflow::WeightStationary)?;
/// let sim = simulate(MatRef::from_row_major(&a, 2, 3)?, MatRef::from_row_major(&b, 3, 4)?, &cfg)?;
/// assert_eq!(sim.output.as_slice()[..4], [10.0, 11.5, 13.0, 14.5]);
/// let model = analyze(&cfg, 2, 3, 4, Mode::ScaleSim, [u64::MAX; 3])?;
/// assert_eq!(sim.cycles, model.cycles + 1); // SCALE-Sim reports the last cycle's index
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// [`Error::ShapeMismatch`] when A's columns and B's rows differ;
/// [`Error::InvalidParameter`] when the array has more than
/// [`MAX_SIMULATED_PES`] PEs (each holds registers in memory);
/// [`Error::ShapeOverflow`] when M·N overflows.
pub fn simulate<T: FloatElement>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    config: &ArrayConfig,
) -> Result<SimResult, Error> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if b.rows() != k {
        return Err(Error::ShapeMismatch {
            what: "systolic::simulate: A (M×K) and B (K×N)",
            left: vec![m, k],
            right: vec![b.rows(), n],
        });
    }
    let (r, c) = (config.rows(), config.cols());
    if r.saturating_mul(c) > MAX_SIMULATED_PES {
        return Err(Error::InvalidParameter {
            name: "simulated array size (PEs)",
            value: format!("{r}x{c}"),
            requirement: "at most 2^24 PEs (MAX_SIMULATED_PES)",
        });
    }
    let mut out = vec![0.0f32; crate::error::checked_numel(&[m, n])?];
    let av = |i: usize, kk: usize| a.at(i, kk).to_f32();
    let bv = |kk: usize, j: usize| b.at(kk, j).to_f32();
    let mut cycles = 0u64;
    let mut macs = 0u64;
    match config.dataflow() {
        Dataflow::WeightStationary => {
            for n0 in (0..n).step_by(c) {
                for k0 in (0..k).step_by(r) {
                    // PE (row, col) holds b[k0 + row, n0 + col]; A rows stream.
                    let stationary = |row: usize, col: usize| {
                        (k0 + row < k && n0 + col < n).then(|| bv(k0 + row, n0 + col))
                    };
                    let input =
                        |row: usize, s: usize| if k0 + row < k { av(s, k0 + row) } else { 0.0 };
                    let mut emit = |s: usize, col: usize, p: f32| {
                        if n0 + col < n {
                            out[s * n + n0 + col] += p;
                        }
                    };
                    let (cy, mc) = stream_fold(r, c, m, &stationary, &input, &mut emit);
                    cycles += cy;
                    macs += mc;
                }
            }
        }
        Dataflow::InputStationary => {
            for m0 in (0..m).step_by(c) {
                for k0 in (0..k).step_by(r) {
                    // PE (row, col) holds a[m0 + col, k0 + row]; B columns stream.
                    let stationary = |row: usize, col: usize| {
                        (k0 + row < k && m0 + col < m).then(|| av(m0 + col, k0 + row))
                    };
                    let input =
                        |row: usize, s: usize| if k0 + row < k { bv(k0 + row, s) } else { 0.0 };
                    let mut emit = |s: usize, col: usize, p: f32| {
                        if m0 + col < m {
                            out[(m0 + col) * n + s] += p;
                        }
                    };
                    let (cy, mc) = stream_fold(r, c, n, &stationary, &input, &mut emit);
                    cycles += cy;
                    macs += mc;
                }
            }
        }
        Dataflow::OutputStationary => {
            for m0 in (0..m).step_by(r) {
                for n0 in (0..n).step_by(c) {
                    let (cy, mc) = output_fold(r, c, k, m0, n0, m, n, &av, &bv, &mut out);
                    cycles += cy;
                    macs += mc;
                }
            }
        }
    }
    Ok(SimResult {
        output: Tensor::from_vec(&[m, n], out)?,
        cycles,
        macs,
    })
}

/// One fold of a stationary-operand dataflow (WS or IS): load the tile
/// (`rows` cycles), then stream `t` elements in from the left with the skew
/// and collect each column's partial sums at the bottom. Returns (cycles, MACs).
fn stream_fold(
    rows: usize,
    cols: usize,
    t: usize,
    stationary: &dyn Fn(usize, usize) -> Option<f32>,
    input: &dyn Fn(usize, usize) -> f32,
    emit: &mut dyn FnMut(usize, usize, f32),
) -> (u64, u64) {
    // Load: the tile shifts in from the top, bottom row first.
    let mut held: Vec<Option<f32>> = vec![None; rows * cols];
    for step in 0..rows {
        for row in (1..rows).rev() {
            for col in 0..cols {
                held[row * cols + col] = held[(row - 1) * cols + col];
            }
        }
        let source_row = rows - 1 - step;
        for (col, h) in held[..cols].iter_mut().enumerate() {
            *h = stationary(source_row, col);
        }
    }
    // The tile shifted in is the tile (bit patterns: NaN compares unequal).
    let bits = |v: Option<f32>| v.map(f32::to_bits);
    debug_assert!((0..rows * cols).all(|i| bits(held[i]) == bits(stationary(i / cols, i % cols))));
    // Stream.
    let mut operand: Vec<Token> = vec![None; rows * cols];
    let mut psum: Vec<Token> = vec![None; rows * cols];
    let stream_cycles = t + rows + cols - 2;
    let mut macs = 0u64;
    for cycle in 0..stream_cycles {
        let (old_op, old_ps) = (operand.clone(), psum.clone());
        for row in 0..rows {
            for col in 0..cols {
                let i = row * cols + col;
                // The operand arrives from the left (or enters, skewed by row).
                let arriving = if col == 0 {
                    cycle
                        .checked_sub(row)
                        .filter(|&s| s < t)
                        .map(|s| (s, input(row, s)))
                } else {
                    old_op[i - 1]
                };
                operand[i] = arriving;
                psum[i] = arriving.map(|(s, x)| {
                    let above = if row == 0 {
                        0.0
                    } else {
                        let (s_above, p) =
                            old_ps[i - cols].expect("partial sum travels with its operand");
                        debug_assert_eq!(s_above, s);
                        p
                    };
                    match held[i] {
                        Some(w) => {
                            macs += 1;
                            (s, x.mul_add(w, above))
                        }
                        None => (s, above), // unmapped PE: the sum passes through
                    }
                });
            }
        }
        for col in 0..cols {
            if let Some((s, p)) = psum[(rows - 1) * cols + col] {
                emit(s, col, p);
            }
        }
    }
    (rows as u64 + stream_cycles as u64, macs)
}

/// One fold of the output-stationary dataflow: A enters from the left and
/// B from the top, both skewed; PE (row, col) accumulates output
/// (m0 + row, n0 + col) over all of K. Returns (cycles, MACs).
#[allow(clippy::too_many_arguments)]
fn output_fold(
    rows: usize,
    cols: usize,
    k: usize,
    m0: usize,
    n0: usize,
    m: usize,
    n: usize,
    av: &dyn Fn(usize, usize) -> f32,
    bv: &dyn Fn(usize, usize) -> f32,
    out: &mut [f32],
) -> (u64, u64) {
    let mut a_reg: Vec<Token> = vec![None; rows * cols];
    let mut b_reg: Vec<Token> = vec![None; rows * cols];
    let mut acc = vec![0.0f32; rows * cols];
    let stream_cycles = k + rows + cols - 2;
    let mut macs = 0u64;
    for cycle in 0..stream_cycles {
        let (old_a, old_b) = (a_reg.clone(), b_reg.clone());
        for row in 0..rows {
            for col in 0..cols {
                let i = row * cols + col;
                let a_in = if col == 0 {
                    cycle
                        .checked_sub(row)
                        .filter(|&kk| kk < k)
                        .map(|kk| (kk, if m0 + row < m { av(m0 + row, kk) } else { 0.0 }))
                } else {
                    old_a[i - 1]
                };
                let b_in = if row == 0 {
                    cycle
                        .checked_sub(col)
                        .filter(|&kk| kk < k)
                        .map(|kk| (kk, if n0 + col < n { bv(kk, n0 + col) } else { 0.0 }))
                } else {
                    old_b[i - cols]
                };
                a_reg[i] = a_in;
                b_reg[i] = b_in;
                if let (Some((ka, x)), Some((kb, y))) = (a_in, b_in) {
                    debug_assert_eq!(ka, kb);
                    if m0 + row < m && n0 + col < n {
                        acc[i] = x.mul_add(y, acc[i]);
                        macs += 1;
                    }
                }
            }
        }
    }
    for row in 0..rows.min(m - m0) {
        for col in 0..cols.min(n - n0) {
            out[(m0 + row) * n + n0 + col] = acc[row * cols + col];
        }
    }
    (stream_cycles as u64, macs)
}

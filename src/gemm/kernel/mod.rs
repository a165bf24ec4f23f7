//! Micro-kernels: one pass of the systolic array over a K-tile.
//!
//! A kernel computes an `MR × NR` block of partial sums `p`, each a chain of
//! fused multiply-adds from +0.0 over at most [`super::ARRAY_ROWS`] values of
//! k in increasing order, and then adds `p` into the f32 accumulator block:
//! `acc = acc + p`, one rounding. Inputs are packed panels: `a` holds, for each
//! k, `MR` values (one per row); `b` holds, for each k, `NR` values.

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;

use super::Epilogue;

/// A micro-kernel and the row epilogue compiled for the same instruction set.
pub(crate) trait Kernel {
    /// Rows of the register block.
    const MR: usize;
    /// Columns of the register block.
    const NR: usize;

    /// `acc[r * ld + c] += sum` for the `MR × NR` block, where `sum` is the
    /// contract's K-tile partial sum over the `kt` steps of `a` and `b`.
    fn tile(kt: usize, a: &[f32], b: &[f32], acc: &mut [f32], ld: usize);

    /// `out[j] = epilogue(acc[j], out[j], col0 + j)` for one row: `out` holds
    /// the old C values (as f32) when `beta != 0`.
    fn epilogue_row(epilogue: &Epilogue<'_>, acc: &[f32], out: &mut [f32], col0: usize);
}

/// Shared body of the row epilogue; each kernel module instantiates it under
/// its own target features so `mul_add` becomes one instruction.
#[inline(always)]
pub(crate) fn epilogue_row_body(
    epilogue: &Epilogue<'_>,
    acc: &[f32],
    out: &mut [f32],
    col0: usize,
) {
    for (j, (o, &s)) in out.iter_mut().zip(acc).enumerate() {
        *o = epilogue.apply(s, *o, col0 + j);
    }
}

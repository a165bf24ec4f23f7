//! Packing shared by the strategies: A's row panels and B's column panels,
//! widened to f32, with block scales folded in where the plan allows.

use super::workspace::grow;
use crate::convert::widen_dispatch;
use crate::dtype::{DType, FloatElement};
use crate::gemm::kernel::Kernel;
use crate::tensor::MatRef;

/// Steps of K per chunk when B's columns are packed from contiguous columns
/// (a multiple of every scaling block, so a chunk starts on a block).
const COLUMN_CHUNK: usize = 256;

/// Block scales to fold into packed values (see [`super::blocked::prescalable`]): line `l`
/// of the packed block, scaling block `blk` is multiplied by
/// `scales[blk · padded + l]` (as [`super::blocked::pack_scales`] lays them out).
#[derive(Clone, Copy)]
pub(super) struct FoldScales<'s> {
    pub(super) scales: &'s [f32],
    pub(super) padded: usize,
    pub(super) block: usize,
}

impl FoldScales<'_> {
    /// Line `line`'s values over all of K (a multiple of the block).
    fn line(&self, line: usize, values: &mut [f32]) {
        self.line_from(line, 0, values)
    }

    /// Line `line`'s values from step `k0` (a multiple of the block) on.
    fn line_from(&self, line: usize, k0: usize, values: &mut [f32]) {
        let blk0 = k0 / self.block;
        for (blk, run) in values.chunks_mut(self.block).enumerate() {
            let s = self.scales[(blk0 + blk) * self.padded + line];
            run.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// Step `kk`'s values of lines `0..values.len()`.
    fn step(&self, kk: usize, values: &mut [f32]) {
        let s = &self.scales[(kk / self.block) * self.padded..][..values.len()];
        values.iter_mut().zip(s).for_each(|(v, &s)| *v *= s);
    }
}

/// Packs rows `i0..i0 + mb` of A (all K) as MR-row micro-panels: panel `q`
/// holds, for each k, the MR values of rows `q*MR..`, zero-padded past `mb`;
/// with `fold`, each value times its block scale.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_a<T: FloatElement, K: Kernel>(
    a: &MatRef<'_, T>,
    i0: usize,
    mb: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    pack_a_rows(a, i0, mb, K::MR, dst, tmp, fold, simd)
}

/// A packed A times 2^8, in place, where that is exact for every value
/// (no finite value past `f32::MAX / 2^8`); true if so, else `packed` is
/// left as it was. For the kernels whose E4M3 widening gives `w · 2^-8`:
/// `fma(a · 2^8, w · 2^-8, p)` is `fma(a, w, p)` (the same real product,
/// one rounding), without a multiply per decoded weight.
pub(super) fn times_256_if_exact(packed: &mut [f32]) -> bool {
    scale_if_exact(packed, 256.0, times_256_exact)
}

/// `xs` times `factor`, in place, where `exact` holds for every value;
/// true if so, else `xs` is left as it was. The activations' prescaling
/// of the direct E4M3 kernels ([`times_256_if_exact`]) and of the packed
/// FP4 / int4 / FP8 rows.
pub(super) fn scale_if_exact(xs: &mut [f32], factor: f32, exact: impl Fn(f32) -> bool) -> bool {
    let all = all_exact(xs, exact);
    if all {
        xs.iter_mut().for_each(|x| *x *= factor);
    }
    all
}

/// True when `x · 2^8` is exact: `x` is not finite or at most
/// `f32::MAX / 2^8` in magnitude (a test on the bits, without branches).
pub(super) fn times_256_exact(x: f32) -> bool {
    let limit = (f32::MAX / 256.0).to_bits();
    let magnitude = x.to_bits() & 0x7FFF_FFFF;
    // Past the limit and finite (below the infinity's bits).
    !(magnitude > limit && magnitude < 0x7F80_0000)
}

/// True when `exact` holds for every value of `xs`. Branch-free over
/// chunks of 64 values (an early exit per value keeps the compiler from
/// vectorizing the test).
fn all_exact(xs: &[f32], exact: impl Fn(f32) -> bool) -> bool {
    xs.chunks(64)
        .all(|chunk| chunk.iter().fold(true, |ok, &x| ok & exact(x)))
}

/// [`pack_a`] for panels of `mr` rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_a_rows<T: FloatElement>(
    a: &MatRef<'_, T>,
    i0: usize,
    mb: usize,
    mr: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    let k = a.cols();
    let (rs, cs, data) = (a.row_stride(), a.col_stride(), a.as_slice());
    if k == 0 {
        return;
    }
    if rs == 1 && mb > 1 {
        // Columns are contiguous: each k gives MR consecutive values per panel.
        let col = grow(tmp, mb);
        for kk in 0..k {
            let start = i0 + kk * cs;
            widen_dispatch(&data[start..start + mb], col, simd);
            if let Some(f) = fold {
                f.step(kk, col);
            }
            for (q, panel) in dst.chunks_exact_mut(k * mr).enumerate() {
                let d = &mut panel[kk * mr..(kk + 1) * mr];
                let w = mr.min(mb.saturating_sub(q * mr));
                d[..w].copy_from_slice(&col[q * mr..q * mr + w]);
                d[w..].fill(0.0);
            }
        }
    } else {
        // Rows are contiguous (or strided): widen the panel's live rows,
        // then interleave them k by k.
        let rows = grow(tmp, mr * k);
        for (q, panel) in dst.chunks_exact_mut(k * mr).enumerate() {
            let live = mr.min(mb - q * mr);
            if T::DTYPE == DType::F32 && cs == 1 && fold.is_none() {
                // f32 rows: interleaved straight from A (no widening copy),
                // by register transposes, zeros past the live rows.
                let src: &[f32] = bytemuck::cast_slice(data);
                let first = (i0 + q * mr) * rs;
                crate::simd::transpose_to_steps(&src[first..], rs, live, k, panel, mr, simd);
                continue;
            }
            for r in 0..live {
                let row = &mut rows[r * k..(r + 1) * k];
                let start = (i0 + q * mr + r) * rs;
                if cs == 1 {
                    widen_dispatch(&data[start..start + k], row, simd);
                } else {
                    for (kk, v) in row.iter_mut().enumerate() {
                        *v = data[start + kk * cs].to_f32();
                    }
                }
                if let Some(f) = fold {
                    f.line(q * mr + r, row);
                }
            }
            // Interleaved by register transposes, zeros past the live rows.
            crate::simd::transpose_to_steps(rows, k, live, k, panel, mr, simd);
        }
    }
}

/// Packs columns `j0..j0 + nb` of B (all K) as NR-column micro-panels: panel
/// `p` holds, for each k, the NR values of columns `p*NR..`, zero-padded;
/// with `fold`, each value times its block scale.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b<T: FloatElement, K: Kernel>(
    b: &MatRef<'_, T>,
    j0: usize,
    nb: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    pack_b_nr(b, j0, nb, K::NR, dst, tmp, fold, simd)
}

/// B's panels (each `k · NR` values) for columns `j0..j0 + nb` of the f32
/// rows of `src` (row `kk` at `kk · rs`), one panel after another.
fn panels_from_rows<const NR: usize>(
    src: &[f32],
    rs: usize,
    j0: usize,
    nb: usize,
    k: usize,
    dst: &mut [f32],
) {
    for (p, panel) in dst.chunks_exact_mut(k * NR).enumerate() {
        let c0 = j0 + p * NR;
        let live = NR.min(nb.saturating_sub(p * NR));
        for (kk, step) in panel.chunks_exact_mut(NR).enumerate() {
            let row = &src[kk * rs + c0..];
            match (step.first_chunk_mut::<NR>(), row.first_chunk::<NR>()) {
                (Some(d), Some(s)) if live == NR => *d = *s,
                _ => {
                    step[..live].copy_from_slice(&row[..live]);
                    step[live..].fill(0.0);
                }
            }
        }
    }
}

/// Step `kk` of B's panels (each `k · NR` values) from one row of B.
fn cut_row<const NR: usize>(row: &[f32], dst: &mut [f32], k: usize, kk: usize) {
    let mut panels = dst.chunks_exact_mut(k * NR);
    let (chunks, rest) = row.as_chunks::<NR>();
    // `chunks` first: zip stops on it without consuming a panel.
    for (chunk, panel) in chunks.iter().zip(&mut panels) {
        // A constant-length copy (the source is an array).
        panel[kk * NR..(kk + 1) * NR].copy_from_slice(chunk);
    }
    if let Some(panel) = panels.next() {
        let d = &mut panel[kk * NR..(kk + 1) * NR];
        d[..rest.len()].copy_from_slice(rest);
        d[rest.len()..].fill(0.0);
    }
}

/// [`cut_row`] for any panel width.
fn cut_row_any(row: &[f32], dst: &mut [f32], nr: usize, k: usize, kk: usize) {
    let mut panels = dst.chunks_exact_mut(k * nr);
    let mut chunks = row.chunks_exact(nr);
    for (chunk, panel) in (&mut chunks).zip(&mut panels) {
        panel[kk * nr..(kk + 1) * nr].copy_from_slice(chunk);
    }
    let rest = chunks.remainder();
    if let Some(panel) = panels.next() {
        let d = &mut panel[kk * nr..(kk + 1) * nr];
        d[..rest.len()].copy_from_slice(rest);
        d[rest.len()..].fill(0.0);
    }
}

/// [`pack_b`] for panels of `nr` columns.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_b_nr<T: FloatElement>(
    b: &MatRef<'_, T>,
    j0: usize,
    nb: usize,
    nr: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
    fold: Option<FoldScales<'_>>,
    simd: bool,
) {
    let k = b.rows();
    let (rs, cs, data) = (b.row_stride(), b.col_stride(), b.as_slice());
    if k == 0 {
        return;
    }
    if T::DTYPE == DType::F32 && fold.is_none() && cs == 1 && nr == 16 {
        // f32 rows: each panel copied from B a step at a time, so that the
        // panel is written in order.
        let src: &[f32] = bytemuck::cast_slice(data);
        panels_from_rows::<16>(src, rs, j0, nb, k, dst);
    } else if cs == 1 || nb == 1 {
        // Rows are contiguous: widen a row segment (f32 is used as it is),
        // cut it into panels.
        for kk in 0..k {
            let start = kk * rs + j0 * cs;
            let row: &[f32] = if T::DTYPE == DType::F32 && fold.is_none() {
                bytemuck::cast_slice(&data[start..start + nb])
            } else {
                let row = grow(tmp, nb);
                widen_dispatch(&data[start..start + nb], row, simd);
                if let Some(f) = fold {
                    f.step(kk, row);
                }
                row
            };
            match nr {
                // The kernels' widths as constants: each step's copy is a
                // few vector moves instead of a call to memmove.
                16 => cut_row::<16>(row, dst, k, kk),
                8 => cut_row::<8>(row, dst, k, kk),
                _ => cut_row_any(row, dst, nr, k, kk),
            }
        }
    } else {
        // Columns are contiguous (B transposed) or strided: widen a panel's
        // columns a chunk of K at a time (the chunk stays in L1), then
        // interleave them step by step.
        let chunk = COLUMN_CHUNK.min(k);
        let cols = grow(tmp, nr * chunk);
        for (p, panel) in dst.chunks_exact_mut(k * nr).enumerate() {
            let live = nr.min(nb.saturating_sub(p * nr));
            for k0 in (0..k).step_by(chunk) {
                let kc = chunk.min(k - k0);
                let steps = &mut panel[k0 * nr..(k0 + kc) * nr];
                if T::DTYPE == DType::F32 && fold.is_none() && rs == 1 {
                    // f32 columns: transposed straight from B (no copy).
                    let src: &[f32] = bytemuck::cast_slice(data);
                    let first = (j0 + p * nr) * cs + k0;
                    crate::simd::transpose_to_steps(&src[first..], cs, live, kc, steps, nr, simd);
                    continue;
                }
                for r in 0..live {
                    let j = p * nr + r;
                    let col = &mut cols[r * chunk..r * chunk + kc];
                    let start = (j0 + j) * cs + k0 * rs;
                    if rs == 1 {
                        widen_dispatch(&data[start..start + kc], col, simd);
                    } else {
                        for (kk, v) in col.iter_mut().enumerate() {
                            *v = data[start + kk * rs].to_f32();
                        }
                    }
                    if let Some(f) = fold {
                        f.line_from(j, k0, col);
                    }
                }
                crate::simd::transpose_to_steps(cols, chunk, live, kc, steps, nr, simd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{all_exact, times_256_exact, times_256_if_exact};

    fn all_times_256_exact(xs: &[f32]) -> bool {
        all_exact(xs, times_256_exact)
    }

    /// The test agrees with `x · 2^8` being finite for finite `x`, at the
    /// limit and one ulp past it, both signs, anywhere in a long slice;
    /// non-finite values never fail it.
    #[test]
    fn times_256_exact_at_the_limit() {
        let limit = f32::MAX / 256.0;
        let past = f32::from_bits(limit.to_bits() + 1);
        assert!((limit * 256.0).is_finite() && (past * 256.0).is_infinite());
        for at in [0, 1, 63, 64, 65, 199] {
            let mut xs = vec![1.5f32; 200];
            xs[at] = -limit;
            assert!(all_times_256_exact(&xs), "{at}");
            for x in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                xs[at] = x;
                assert!(all_times_256_exact(&xs), "{at} {x}");
            }
            for x in [past, -past, f32::MAX, -f32::MAX] {
                xs[at] = x;
                assert!(!all_times_256_exact(&xs), "{at} {x}");
            }
        }
        assert!(all_times_256_exact(&[]));
    }

    /// Scaled where exact (every value, NaN and infinities as they were),
    /// untouched otherwise.
    #[test]
    fn times_256_if_exact_scales_all_or_nothing() {
        let mut xs = vec![
            1.5f32,
            -0.0,
            f32::from_bits(1),
            f32::NAN,
            f32::INFINITY,
            -3.0e30,
        ];
        assert!(times_256_if_exact(&mut xs));
        assert_eq!(xs[..3], [384.0, -0.0, f32::from_bits(1) * 256.0]);
        assert_eq!(xs[2].to_bits(), 256, "a subnormal scales exactly");
        assert!(xs[3].is_nan() && xs[4] == f32::INFINITY && xs[5] == -3.0e30 * 256.0);
        let mut ys = vec![1.5f32, f32::MAX];
        assert!(!times_256_if_exact(&mut ys));
        assert_eq!(ys, [1.5, f32::MAX]);
    }
}

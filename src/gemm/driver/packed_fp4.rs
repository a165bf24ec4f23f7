//! [`super::Strategy::PackedFp4`]: block-scaled products on FP4 weights
//! packed by [`PackedFp4`], by exact integer block sums.

use super::exact_small::IntegerRows;
use super::threads::{par_split, task_count};
use super::workspace::{grow, with_workspace, Workspace};
use super::write_back::write_block;
#[cfg(target_arch = "x86_64")]
use super::Avx2;
#[cfg(target_arch = "x86_64")]
use super::Avx512;
use super::{tier, with_kernel, Portable, ScaleGrid, Tier};
use crate::block_scaled::{PackedFp4, PACK_LINES};
use crate::dtype::FloatElement;
use crate::gemm::kernel::Kernel;
use crate::gemm::{Epilogue, Parallelism};
use crate::tensor::{MatMut, MatRef};

/// `c = epilogue(a · bᵀ)` under the block-scaled contract for FP4 weights
/// packed by [`PackedFp4`], with A in a format whose values are small
/// integers times a power of two (see [`super::exact_small::serial_exact_small`] for why the
/// integer block sums are the contract's). Threads split C's columns in
/// groups of 8 (or its rows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_packed_fp4<TA: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    grid_a: &ScaleGrid<'_>,
    b: &PackedFp4,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    with_kernel!(packed_fp4_tier(simd), K => {
        packed_fp4_with::<TA, O, K>(a, grid_a, b, c, epilogue, parallelism, simd)
    })
}

/// The tier of [`run_packed_fp4`]: its kernel is AVX2's on every SIMD CPU.
pub(crate) fn packed_fp4_tier(simd: bool) -> Tier {
    match tier(simd) {
        Tier::Portable => Tier::Portable,
        _ => Tier::Avx2,
    }
}

#[allow(clippy::too_many_arguments)]
fn packed_fp4_with<TA: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    grid_a: &ScaleGrid<'_>,
    b: &PackedFp4,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    let (m, n, k, block) = (a.rows(), b.lines(), b.k(), b.block());
    if m == 0 || n == 0 {
        return;
    }
    let blocks = k / block;
    let rows = IntegerRows::new(&a, grid_a, 0, block);
    let (codes, scales) = b.parts();
    let tasks = task_count(m, n, k, parallelism);
    par_split(
        c,
        (0, 0),
        tasks,
        (1, PACK_LINES),
        &|(r0, c0), mut c_part| {
            let (mp, np) = (c_part.rows(), c_part.cols());
            with_workspace(|ws| {
                let Workspace {
                    acc: acc_buf,
                    row: row_buf,
                    ..
                } = ws;
                let acc = grow(acc_buf, mp * np);
                // c0 is a multiple of 8: whole groups, the last one perhaps cut.
                for (gi, j0) in (0..np).step_by(PACK_LINES).enumerate() {
                    let g = c0 / PACK_LINES + gi;
                    let group_codes = &codes[g * k * 4..(g + 1) * k * 4];
                    let group_scales =
                        &scales[g * blocks * PACK_LINES..(g + 1) * blocks * PACK_LINES];
                    let live = PACK_LINES.min(np - j0);
                    for i in 0..mp {
                        let r = r0 + i;
                        let mut out = [0.0f32; PACK_LINES];
                        K::fp4_packed8(
                            group_codes,
                            group_scales,
                            block,
                            &rows.a_abs[r * k..(r + 1) * k],
                            &rows.a_int[r * k..(r + 1) * k],
                            &rows.sa[r * blocks..(r + 1) * blocks],
                            rows.g,
                            &mut out,
                        );
                        acc[i * np + j0..i * np + j0 + live].copy_from_slice(&out[..live]);
                    }
                }
                let row = grow(row_buf, np);
                write_block::<O, K>(
                    &mut c_part,
                    (0, 0),
                    acc,
                    np,
                    (mp, np),
                    row,
                    c0,
                    epilogue,
                    simd,
                );
            });
        },
    );
}

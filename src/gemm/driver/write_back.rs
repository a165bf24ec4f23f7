//! The epilogue write-back shared by every strategy.

use crate::convert::{narrow_dispatch, widen_dispatch};
use crate::dtype::format::Overflow;
use crate::dtype::{DType, FloatElement};
use crate::gemm::kernel::Kernel;
use crate::gemm::Epilogue;
use crate::tensor::MatMut;

/// Applies the epilogue to the `rows × cols` accumulator block (row stride
/// `ld_acc`) and stores it into C at rows `i0..`, columns `j0..`. An f32 C
/// with unit column stride is updated in place in one call; other outputs go
/// row by row through `row` (old values widened when `beta != 0`, results
/// narrowed with round-to-nearest-even).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_block<O: FloatElement, K: Kernel>(
    c: &mut MatMut<'_, O>,
    (i0, j0): (usize, usize),
    acc: &[f32],
    ld_acc: usize,
    (rows, cols): (usize, usize),
    row: &mut [f32],
    col0: usize,
    epilogue: &Epilogue<'_>,
    simd: bool,
) {
    let (rs, cs) = (c.row_stride(), c.col_stride());
    let contiguous = cs == 1 || cols == 1;
    let origin = i0 * rs + j0 * cs;
    if contiguous && O::DTYPE == DType::F32 && (rows == 1 || rs >= cols) {
        let span = (rows - 1) * rs + cols;
        let out: &mut [f32] =
            bytemuck::cast_slice_mut(&mut c.as_mut_slice()[origin..origin + span]);
        return K::epilogue_rows(epilogue, acc, ld_acc, out, rs, rows, cols, col0 + j0);
    }
    for i in 0..rows {
        let start = origin + i * rs;
        let data = c.as_mut_slice();
        if epilogue.beta != 0.0 {
            if contiguous {
                widen_dispatch(&data[start..start + cols], row, simd);
            } else {
                for (j, r) in row.iter_mut().enumerate() {
                    *r = data[start + j * cs].to_f32();
                }
            }
        }
        K::epilogue_rows(
            epilogue,
            &acc[i * ld_acc..],
            ld_acc,
            row,
            cols,
            1,
            cols,
            col0 + j0,
        );
        if contiguous {
            narrow_dispatch(row, &mut data[start..start + cols], Overflow::Ieee, simd);
        } else {
            for (j, &r) in row.iter().enumerate() {
                data[start + j * cs] = O::from_f32(r);
            }
        }
    }
}

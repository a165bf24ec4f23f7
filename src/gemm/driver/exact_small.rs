//! Block-scaled products of a few rows on FP4 weights
//! ([`super::Strategy::ExactSmallFp4`]): exact integer block sums straight
//! from the codes, B read in place.

use super::workspace::{grow, Workspace};
use super::write_back::write_block;
use super::{Part, ScaleGrid, Scaling};
use crate::dtype::{DType, FloatElement};
use crate::gemm::kernel::{Fp4Lines, Kernel, FP4_TIMES_2};
use crate::gemm::Epilogue;
use crate::tensor::{MatMut, MatRef};

/// True when the values of `T` are small integers times a power of two
/// (the activations of the exact FP4 paths).
pub(crate) fn has_integer_view<T: FloatElement>() -> bool {
    integer_view::<T>().is_some()
}

/// The factor that makes every value of `T` an integer, and the largest
/// such integer's magnitude, for the element types whose block sums the
/// small-M path computes exactly in integers (FP4 E2M1: 2·v ≤ 12; FP6
/// E2M3: 8·v ≤ 60; MXINT8: 64·v ≤ 128).
pub(super) fn integer_view<T: FloatElement>() -> Option<f32> {
    match T::DTYPE {
        DType::F4E2M1 => Some(2.0),
        DType::F6E2M3 => Some(8.0),
        DType::MxInt8 => Some(64.0),
        _ => None,
    }
}

/// [`serial`] for block-scaled products with few rows, FP4 weights (B's
/// columns contiguous in k: the `N × K` lines of `block_gemm`) and A in a
/// format whose values are small integers times a power of two (FP4, FP6
/// E2M3, MXINT8): each block's chain `p = fma(a, b, p)` from +0.0 is then
/// exact at every step (every partial sum is a multiple of g = 2^-(log₂ of
/// both factors) below 128 · 128 · 12 · g < 2^24 · g), so it equals the
/// integer dot product times g, which the kernel computes with byte
/// multiplies straight from the FP4 codes; the block accumulate
/// `acc = fma(p, fl(s_a · s_b), acc)` is the contract's. B is read once,
/// in place, one byte per weight.
#[allow(clippy::too_many_arguments)]
pub(super) fn serial_exact_small<TA: FloatElement, TB: FloatElement, O: FloatElement, K: Kernel>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    part: &Part<'_, '_>,
    s: &Scaling<'_>,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let ((r0, col0), block) = (part.origin, s.block);
    let blocks = k / block;
    let IntegerRows {
        a_int,
        a_abs,
        sa,
        g,
    } = IntegerRows::new(&a, &s.a, r0, block);
    let codes: &[u8] = bytemuck::cast_slice(b.as_slice());
    let ld = b.col_stride();
    let Workspace {
        acc: acc_buf,
        row: row_buf,
        ..
    } = ws;
    let acc = grow(acc_buf, m * n);
    let main = n / 8 * 8;
    for j0 in (0..main).step_by(8) {
        let lines = Fp4Lines {
            codes: &codes[j0 * ld..],
            ld,
            block,
            blocks,
            scales: s.b.scales,
            scale_start: std::array::from_fn(|j| s.b.start(col0 + j0 + j)),
        };
        for i in 0..m {
            let mut out = [0.0f32; 8];
            K::fp4_dots8(
                &lines,
                &a_abs[i * k..],
                &a_int[i * k..],
                &sa[i * blocks..],
                g,
                &mut out,
            );
            acc[i * n + j0..i * n + j0 + 8].copy_from_slice(&out);
        }
    }
    // The last few columns: the same integers and accumulate, in scalar.
    for j in main..n {
        let line = &codes[j * ld..j * ld + k];
        for i in 0..m {
            let mut sum = 0.0f32;
            for blk in 0..blocks {
                let d: i32 = (blk * block..(blk + 1) * block)
                    .map(|kk| {
                        i32::from(a_int[i * k + kk])
                            * i32::from(FP4_TIMES_2[usize::from(line[kk] & 0x0F)])
                    })
                    .sum();
                let p = d as f32 * g;
                sum = p.mul_add(sa[i * blocks + blk] * s.b.at(col0 + j, blk), sum);
            }
            acc[i * n + j] = sum;
        }
    }
    let row = grow(row_buf, n);
    write_block::<O, K>(&mut c, (0, 0), acc, n, (m, n), row, col0, epilogue, simd);
}

/// A's rows as exact integers for the FP4 paths: `a = v · fa` (|a| ≤ 128;
/// as i8 and as |a|), each row's block scales, and g = 1 / (fa · 2) (FP4's
/// factor is 2), a power of two, so `p = d · g` is exact.
pub(super) struct IntegerRows {
    pub(super) a_int: Vec<i8>,
    pub(super) a_abs: Vec<u8>,
    pub(super) sa: Vec<f32>,
    pub(super) g: f32,
}

impl IntegerRows {
    pub(super) fn new<TA: FloatElement>(
        a: &MatRef<'_, TA>,
        grid: &ScaleGrid<'_>,
        r0: usize,
        block: usize,
    ) -> Self {
        let (m, k) = (a.rows(), a.cols());
        let blocks = k / block;
        let fa = integer_view::<TA>().unwrap_or(1.0);
        let mut a_int = vec![0i8; m * k];
        let mut a_abs = vec![0u8; m * k];
        let mut sa = vec![0.0f32; m * blocks];
        for i in 0..m {
            for kk in 0..k {
                let v = (a.at(i, kk).to_f32() * fa) as i32; // exact, in -128..=128
                a_int[i * k + kk] = v.clamp(-128, 127) as i8;
                a_abs[i * k + kk] = v.unsigned_abs().min(255) as u8;
            }
            for (blk, x) in sa[i * blocks..(i + 1) * blocks].iter_mut().enumerate() {
                *x = grid.at(r0 + i, blk);
            }
        }
        Self {
            a_int,
            a_abs,
            sa,
            g: 1.0 / (fa * 2.0),
        }
    }
}

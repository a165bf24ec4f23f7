//! The systolic numerics contract as plain loops: the definition every fast
//! GEMM path must match bit for bit.

use super::Epilogue;
use crate::dtype::FloatElement;
use crate::tensor::{MatMut, MatRef};

/// `C = epilogue(A·B)`, computed exactly as the contract's loops say:
///
/// ```text
/// for every (m, n):
///     acc = +0.0f32
///     for each K-tile [k0, min(k0 + ARRAY_ROWS, K)), k0 increasing:
///         p = +0.0f32
///         for k in the tile, increasing:
///             p = fma(a[m,k] as f32, b[k,n] as f32, p)
///         acc = acc + p
///     c[m,n] = round(epilogue(acc, c[m,n]))
/// ```
///
/// with K-tiles of `tile_height` (the crate's engine: [`super::ARRAY_ROWS`]).
/// Inputs are checked by the public [`super::reference()`] before this runs.
pub(crate) fn run<TA: FloatElement, TB: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    tile_height: usize,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for k0 in (0..k).step_by(tile_height) {
                let mut p = 0.0f32;
                for kk in k0..(k0 + tile_height).min(k) {
                    p = a.at(i, kk).to_f32().mul_add(b.at(kk, j).to_f32(), p);
                }
                acc += p;
            }
            let old = if epilogue.beta != 0.0 {
                c.as_ref().at(i, j).to_f32()
            } else {
                0.0
            };
            c.set(i, j, O::from_f32(epilogue.apply(acc, old, j)));
        }
    }
}

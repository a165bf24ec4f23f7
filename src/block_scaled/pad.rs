//! Zero padding of K to a whole number of scaling blocks.

use crate::error::checked_len_of;
use crate::tensor::{MatRef, Tensor};
use crate::{Error, FloatElement};

/// K rounded up to a whole number of `block`s: the K of a padded operand.
///
/// # Errors
/// [`Error::InvalidParameter`] for a block of 0; [`Error::ShapeOverflow`]
/// when the padded K does not fit `usize`.
pub fn padded_k(k: usize, block: usize) -> Result<usize, Error> {
    if block == 0 {
        return Err(Error::InvalidParameter {
            name: "block",
            value: "0".into(),
            requirement: "at least 1 (the formats use 16, 32 or 128)",
        });
    }
    k.checked_next_multiple_of(block)
        .ok_or_else(|| Error::ShapeOverflow {
            shape: vec![k, block],
        })
}

/// `x` (`rows × k`) with each row padded with zeros to [`padded_k`]`(k,
/// block)` values, as a new row-major tensor `[rows, padded K]`: what a
/// block-scaled quantizer needs when K is not a multiple of its block
/// (MX: 32, NVFP4: 16, scaled FP8 blocks: 128). Both operands of a product
/// are padded alike: the zeros add nothing to any dot product (the block
/// contract's sums of exact zeros stay +0 or the other terms' value).
///
/// ```
/// use mixprec::block_scaled::{pad_k, padded_k, BlockScaled, MxScaleMode};
/// use mixprec::{MatRef, F4E2M1};
/// let w: Vec<f32> = (0..3 * 50).map(|i| (i % 7) as f32 - 3.0).collect(); // K = 50
/// let padded = pad_k(MatRef::from_row_major(&w, 3, 50)?, 32)?;
/// assert_eq!(padded.shape(), &[3, padded_k(50, 32)?]); // [3, 64]
/// let q = BlockScaled::<F4E2M1>::mx(padded.as_mat()?, MxScaleMode::Floor)?;
/// assert_eq!(q.k(), 64);
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// As [`padded_k`]; [`Error::ShapeOverflow`] when the padded matrix's
/// size does not fit memory's addressable range.
pub fn pad_k<T: FloatElement>(x: MatRef<'_, T>, block: usize) -> Result<Tensor<T>, Error> {
    let (rows, k) = (x.rows(), x.cols());
    let kp = padded_k(k, block)?;
    let len = checked_len_of::<T>(&[rows, kp])?;
    let mut out = vec![T::from_f32(0.0); len];
    for (i, row) in out.chunks_exact_mut(kp.max(1)).enumerate().take(rows) {
        for (j, v) in row[..k].iter_mut().enumerate() {
            *v = x.at(i, j);
        }
    }
    Tensor::from_vec(&[rows, kp], out)
}

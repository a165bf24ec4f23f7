//! Matrix and tensor strategies.

use crate::dtype::Element;
use crate::error::checked_numel;
use crate::gemm::ARRAY_ROWS;
use crate::tensor::{MatMut, MatRef, Tensor};
use crate::Error;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// GEMM shapes `(m, k, n)`: M and N up to `max_mn` (small ones and 0
/// included), K up to `max_tiles` K-tiles of [`ARRAY_ROWS`], drawn half the
/// time from the values next to a tile edge (`t·128 − 2 ..= t·128 + 2`,
/// where a kernel's tile bookkeeping is tested) and otherwise from
/// `0 ..= max_tiles·128 + 2`.
///
/// ```
/// use mixprec::testing::gemm_shapes;
/// use proptest::prelude::*;
/// proptest!(|((m, k, n) in gemm_shapes(8, 2))| {
///     prop_assert!(m <= 8 && n <= 8 && k <= 258);
/// });
/// ```
pub fn gemm_shapes(
    max_mn: usize,
    max_tiles: usize,
) -> impl Strategy<Value = (usize, usize, usize)> + Clone {
    let max_tiles = max_tiles.clamp(1, 1 << 16);
    let max_k = max_tiles * ARRAY_ROWS + 2;
    let edges: Vec<usize> = (1..=max_tiles)
        .flat_map(|t| t * ARRAY_ROWS - 2..=t * ARRAY_ROWS + 2)
        .collect();
    let k = prop_oneof![select(edges), 0..=max_k];
    let mn = move || prop_oneof![0..=max_mn.min(4), 0..=max_mn];
    (mn(), k, mn())
}

/// A matrix stored the way callers store them: row-major or column-major
/// (a transposed view), with 0–3 elements of padding after each row (or
/// column) and an offset of 0–2 elements before the first one. Padding and
/// offset hold values drawn from the same strategy, so a kernel that reads
/// or writes outside the view is caught by comparing [`Self::storage`].
#[derive(Clone, Debug, PartialEq)]
pub struct StridedMatrix<T> {
    storage: Vec<T>,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
    offset: usize,
}

impl<T: Copy> StridedMatrix<T> {
    /// The `rows × cols` view over the storage.
    pub fn view(&self) -> MatRef<'_, T> {
        match MatRef::new(
            &self.storage[self.offset..],
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        ) {
            Ok(v) => v,
            Err(e) => unreachable!("StridedMatrix layout checked when built: {e}"),
        }
    }

    /// The view, mutably (for GEMM outputs).
    pub fn view_mut(&mut self) -> MatMut<'_, T> {
        match MatMut::new(
            &mut self.storage[self.offset..],
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        ) {
            Ok(v) => v,
            Err(e) => unreachable!("StridedMatrix layout checked when built: {e}"),
        }
    }

    /// Rows of the view.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the view.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// True when the view is column-major (a transposed row-major matrix).
    pub fn is_transposed(&self) -> bool {
        self.row_stride < self.col_stride || (self.cols == 1 && self.rows > 1)
    }

    /// The whole storage, padding and offset included.
    pub fn storage(&self) -> &[T] {
        &self.storage
    }
}

/// [`StridedMatrix`] values of shape `rows × cols` with elements from
/// `elements`. Empty shapes are valid.
///
/// # Errors
/// [`Error::ShapeOverflow`] when the storage of the largest layout (3
/// elements of padding per line, offset 2) overflows `usize` or `isize`
/// bytes.
pub fn strided_matrix<T: Element>(
    rows: usize,
    cols: usize,
    elements: impl Strategy<Value = T> + Clone + 'static,
) -> Result<impl Strategy<Value = StridedMatrix<T>> + Clone, Error> {
    // Largest storage: (outer - 1)·(inner + 3) + inner + 2 elements.
    storage_len(rows, cols, 3, 2)
        .and_then(|len| len.checked_mul(std::mem::size_of::<T>()))
        .filter(|&bytes| bytes <= isize::MAX as usize)
        .ok_or_else(|| Error::ShapeOverflow {
            shape: vec![rows, cols],
        })?;
    Ok(
        (any::<bool>(), 0usize..=3, 0usize..=2).prop_flat_map(move |(transposed, pad, offset)| {
            let (outer, inner) = if transposed {
                (cols, rows)
            } else {
                (rows, cols)
            };
            let ld = (inner + pad).max(1);
            let (row_stride, col_stride) = if transposed { (1, ld) } else { (ld, 1) };
            // Checked above for the largest padding and offset.
            let len = storage_len(outer, inner, pad, offset).unwrap_or(0);
            vec(elements.clone(), len).prop_map(move |storage| StridedMatrix {
                storage,
                rows,
                cols,
                row_stride,
                col_stride,
                offset,
            })
        }),
    )
}

/// Elements of `offset` plus `outer` lines of `inner` elements, each line
/// but the last followed by `pad` elements; `None` on overflow.
fn storage_len(outer: usize, inner: usize, pad: usize, offset: usize) -> Option<usize> {
    if outer == 0 || inner == 0 {
        return Some(offset);
    }
    (outer - 1)
        .checked_mul(inner.checked_add(pad)?)?
        .checked_add(inner)?
        .checked_add(offset)
}

/// Tensor shapes of rank `0..=max_rank` with at most `max_numel` elements
/// (dimensions of 0 included), drawn without rejection: each dimension is
/// drawn within what the ones before it leave of the budget.
pub fn tensor_shapes(
    max_rank: usize,
    max_numel: usize,
) -> impl Strategy<Value = Vec<usize>> + Clone {
    let max_numel = max_numel.max(1);
    (0..=max_rank.min(16))
        .prop_flat_map(move |rank| vec(any::<usize>(), rank))
        .prop_map(move |raw| {
            let mut product = 1usize;
            raw.into_iter()
                .map(|r| {
                    let budget = max_numel / product.max(1);
                    let d = match budget.checked_add(1) {
                        Some(choices) => r % choices,
                        None => r,
                    };
                    product = product.saturating_mul(d.max(1));
                    d
                })
                .collect()
        })
}

/// Tensors with shapes from [`tensor_shapes`]`(max_rank, max_numel)` and
/// elements from `elements`.
pub fn tensor<T: Element>(
    max_rank: usize,
    max_numel: usize,
    elements: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = Tensor<T>> + Clone {
    // A Vec holds at most isize::MAX bytes.
    let max_numel = max_numel.min(isize::MAX as usize / std::mem::size_of::<T>().max(1));
    tensor_shapes(max_rank, max_numel).prop_flat_map(move |shape| {
        // The shapes strategy keeps the product within `max_numel`.
        let numel = checked_numel(&shape).unwrap_or(0);
        vec(elements.clone(), numel).prop_map(move |data| match Tensor::from_vec(&shape, data) {
            Ok(t) => t,
            Err(e) => unreachable!("tensor strategy: {e}"),
        })
    })
}

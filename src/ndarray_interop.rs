//! Conversions to and from `ndarray` (feature `ndarray`).
//!
//! * [`MatRef::from_ndarray`] / [`MatMut::from_ndarray`]: zero-copy views
//!   of an `ArrayView2` / `ArrayViewMut2` whose elements are contiguous in
//!   memory, in any order (row-major, column-major, a transpose), with
//!   non-negative strides.
//! * [`MatRef::to_ndarray`] / [`MatMut::into_ndarray`]: zero-copy
//!   `ndarray` views of any mixprec view (any strides, padding and
//!   transposes included; a mutable one needs distinct elements).
//! * [`Tensor::from_ndarray`] (a copy, in logical order, of any array or
//!   view of any rank and layout) and [`Tensor::into_ndarray`] (a move).
//!
//! Why not every `ndarray` view zero-copy: a [`MatRef`] borrows the slice
//! from its first to its last element. For a view with gaps (a block of a
//! larger array, every other column) that slice would include elements
//! outside the view, which `ndarray` may have lent mutably to someone else
//! (`multi_slice_mut`), so borrowing them would be unsound. Such views
//! convert with a copy: `MatRef::from_ndarray(v.as_standard_layout().view())`.
//!
//! ```
//! use mixprec::gemm::{matmul, Parallelism};
//! use mixprec::{MatRef, Tensor};
//! use ndarray::array;
//! let a = array![[1.0f32, 2.0], [3.0, 4.0]];
//! let at = MatRef::from_ndarray(a.t())?; // the transpose, no copy
//! let c = matmul(MatRef::from_ndarray(a.view())?, at, Parallelism::Serial)?; // A·Aᵀ
//! let c = c.into_ndarray();
//! assert_eq!(c, array![[5.0, 11.0], [11.0, 25.0]].into_dyn());
//! let back = Tensor::from_ndarray(&c)?;
//! assert_eq!(back.shape(), &[2, 2]);
//! # Ok::<(), mixprec::Error>(())
//! ```

use crate::dtype::Element;
use crate::tensor::{MatMut, MatRef, Tensor};
use crate::Error;
use ::ndarray::{
    ArrayBase, ArrayD, ArrayView2, ArrayViewMut2, Data, Dimension, IxDyn, ShapeBuilder,
};

/// The strides of a 2-D `ndarray` view as non-negative element counts.
fn strides(shape: &[usize], strides: &[isize]) -> Result<(usize, usize), Error> {
    match (usize::try_from(strides[0]), usize::try_from(strides[1])) {
        (Ok(rs), Ok(cs)) => Ok((rs, cs)),
        _ => Err(Error::InvalidParameter {
            name: "ndarray view strides",
            value: format!("{strides:?} for shape {shape:?}"),
            requirement: "non-negative (invert the axis with a copy first)",
        }),
    }
}

fn not_contiguous(shape: &[usize], strides: &[isize]) -> Error {
    Error::InvalidParameter {
        name: "ndarray view",
        value: format!("shape {shape:?}, strides {strides:?}"),
        requirement: "elements contiguous in memory (any order); copy other views with \
                      .as_standard_layout()",
    }
}

fn shape_error(e: ::ndarray::ShapeError, rows: usize, cols: usize, rs: usize, cs: usize) -> Error {
    Error::InvalidParameter {
        name: "ndarray view of a MatRef/MatMut",
        value: format!("{rows}×{cols} with strides ({rs}, {cs}): {e}"),
        requirement: "a layout ndarray accepts (distinct elements for a mutable view)",
    }
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A view of a 2-D `ndarray` view, without a copy; see the module
    /// [`crate::ndarray_interop`] for which views qualify.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for negative strides or elements that
    /// are not contiguous in memory.
    pub fn from_ndarray(view: ArrayView2<'a, T>) -> Result<Self, Error> {
        let (shape, st) = (view.shape().to_vec(), view.strides().to_vec());
        let (rs, cs) = strides(&shape, &st)?;
        let data = view
            .to_slice_memory_order()
            .ok_or_else(|| not_contiguous(&shape, &st))?;
        MatRef::new(data, shape[0], shape[1], rs, cs)
    }

    /// This view as an `ndarray` view of the same elements, without a copy
    /// (a stride of 0, a broadcast, stays one).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `ndarray` refuses the layout (not
    /// expected for a valid view; kept as an error rather than a panic).
    pub fn to_ndarray(&self) -> Result<ArrayView2<'a, T>, Error> {
        let (r, c, rs, cs) = (
            self.rows(),
            self.cols(),
            self.row_stride(),
            self.col_stride(),
        );
        if r == 0 || c == 0 {
            return ArrayView2::from_shape((r, c), self.as_slice())
                .map_err(|e| shape_error(e, r, c, rs, cs));
        }
        ArrayView2::from_shape((r, c).strides((rs, cs)), self.as_slice())
            .map_err(|e| shape_error(e, r, c, rs, cs))
    }
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// A mutable view of a 2-D `ndarray` view, without a copy, as
    /// [`MatRef::from_ndarray`].
    ///
    /// # Errors
    /// As [`MatRef::from_ndarray`].
    pub fn from_ndarray(view: ArrayViewMut2<'a, T>) -> Result<Self, Error> {
        let (shape, st) = (view.shape().to_vec(), view.strides().to_vec());
        let (rs, cs) = strides(&shape, &st)?;
        let data = view
            .into_slice_memory_order()
            .ok_or_else(|| not_contiguous(&shape, &st))?;
        MatMut::new(data, shape[0], shape[1], rs, cs)
    }

    /// This view as a mutable `ndarray` view, without a copy.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the strides make two indices share
    /// an element (a stride of 0 along a dimension longer than 1), which a
    /// mutable `ndarray` view does not allow.
    pub fn into_ndarray(self) -> Result<ArrayViewMut2<'a, T>, Error> {
        let (r, c, rs, cs) = (
            self.rows(),
            self.cols(),
            self.row_stride(),
            self.col_stride(),
        );
        let data = self.into_slice();
        if r == 0 || c == 0 {
            return ArrayViewMut2::from_shape((r, c), data)
                .map_err(|e| shape_error(e, r, c, rs, cs));
        }
        ArrayViewMut2::from_shape((r, c).strides((rs, cs)), data)
            .map_err(|e| shape_error(e, r, c, rs, cs))
    }
}

impl<T: Element> Tensor<T> {
    /// A copy of any `ndarray` array or view (any rank, any layout), in
    /// logical (row-major) order.
    ///
    /// # Errors
    /// None in practice (the shape of an existing array cannot overflow);
    /// the errors of [`Tensor::from_vec`] otherwise.
    pub fn from_ndarray<S: Data<Elem = T>, D: Dimension>(
        a: &ArrayBase<S, D>,
    ) -> Result<Self, Error> {
        Tensor::from_vec(a.shape(), a.iter().copied().collect())
    }

    /// The tensor as an `ndarray` array of dynamic rank, moving its buffer
    /// (no copy).
    pub fn into_ndarray(self) -> ArrayD<T> {
        let shape = self.shape().to_vec();
        match ArrayD::from_shape_vec(IxDyn(&shape), self.into_vec()) {
            Ok(a) => a,
            // A Tensor's buffer always holds the product of its shape.
            Err(e) => unreachable!("Tensor shape and buffer disagree: {e}"),
        }
    }
}

//! [`MatRef`] and [`MatMut`]: borrowed 2-D views with any non-negative
//! strides, their checks, splits and sub-views.

use super::Tensor;
use crate::dtype::Element;
use crate::error::checked_numel;
use crate::Error;
use std::ops::{Bound, Range, RangeBounds};

/// Checks that a `rows × cols` view with these strides stays inside `len`
/// elements, and returns the number of elements it spans.
fn check_view(rows: usize, cols: usize, rs: usize, cs: usize, len: usize) -> Result<usize, Error> {
    let err = || Error::ViewOutOfBounds {
        rows,
        cols,
        row_stride: rs,
        col_stride: cs,
        len,
    };
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
        .ok_or_else(err)?;
    if last < len {
        Ok(last + 1)
    } else {
        Err(err())
    }
}

/// A borrowed `rows × cols` matrix: element (i, j) is `data[i * row_stride + j * col_stride]`.
///
/// ```
/// use mixprec::MatRef;
/// let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let a = MatRef::from_row_major(&data, 2, 3)?;
/// let at = a.t(); // 3 × 2, no copy
/// assert_eq!((at.rows(), at.cols()), (3, 2));
/// assert_eq!(at.get(2, 1), Some(6.0));
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A view with explicit strides; an error if it reaches past `data`.
    ///
    /// # Errors
    /// [`Error::ViewOutOfBounds`] when the last element (or the index
    /// arithmetic reaching it) lies past `data`.
    pub fn new(
        data: &'a [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, Error> {
        let span = check_view(rows, cols, row_stride, col_stride, data.len())?;
        Ok(Self {
            data: &data[..span],
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A `rows × cols` view with strides 0 over one static zero: it stands
    /// for an operand whose data lives elsewhere (a packed B) when only its
    /// shape is checked. It borrows nothing a caller holds, so no output can
    /// alias it.
    pub(crate) fn shape_only(rows: usize, cols: usize) -> MatRef<'static, T>
    where
        T: bytemuck::Pod,
    {
        static ZERO: [u64; 1] = [0];
        let one: &'static [T] = &bytemuck::cast_slice::<u64, T>(&ZERO)[..1];
        MatRef {
            data: if rows == 0 || cols == 0 {
                &one[..0]
            } else {
                one
            },
            rows,
            cols,
            row_stride: 0,
            col_stride: 0,
        }
    }

    /// A contiguous row-major view; `data.len()` must be `rows * cols`.
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when `rows × cols` overflows;
    /// [`Error::LengthMismatch`] when `data.len()` is not `rows × cols`.
    pub fn from_row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self, Error> {
        let numel = checked_numel(&[rows, cols])?;
        if numel != data.len() {
            return Err(Error::LengthMismatch {
                what: "MatRef::from_row_major",
                expected: numel,
                actual: data.len(),
            });
        }
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows, in elements.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance between columns, in elements.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The elements the view spans (from (0, 0) to (rows-1, cols-1)).
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }

    /// Element (i, j), or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<T> {
        (i < self.rows && j < self.cols)
            .then(|| self.data[i * self.row_stride + j * self.col_stride])
    }

    /// Element (i, j) without the bounds check of [`Self::get`] on the
    /// indices (the slice index is still checked).
    #[inline]
    pub(crate) fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// A copy as a row-major rank-2 tensor.
    pub fn to_tensor(&self) -> Tensor<T>
    where
        T: Element,
    {
        Tensor {
            shape: vec![self.rows, self.cols],
            data: self.to_row_major(),
        }
    }

    /// The elements, row-major (rows copied whole where they are contiguous).
    pub(crate) fn to_row_major(self) -> Vec<T> {
        let mut data = Vec::with_capacity(self.rows * self.cols);
        // An empty view spans no elements (its slice may be empty).
        let rows = if self.cols == 0 { 0 } else { self.rows };
        for i in 0..rows {
            if self.col_stride == 1 {
                let start = i * self.row_stride;
                data.extend_from_slice(&self.data[start..start + self.cols]);
            } else {
                data.extend((0..self.cols).map(|j| self.at(i, j)));
            }
        }
        data
    }
}

/// A mutable borrowed `rows × cols` matrix with strides, like [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// A view with explicit strides; an error if it reaches past `data`.
    /// Strides that make two indices share an element are allowed here, but
    /// the GEMM rejects such an output.
    ///
    /// # Errors
    /// [`Error::ViewOutOfBounds`] when the last element (or the index
    /// arithmetic reaching it) lies past `data`.
    pub fn new(
        data: &'a mut [T],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self, Error> {
        let span = check_view(rows, cols, row_stride, col_stride, data.len())?;
        Ok(Self {
            data: &mut data[..span],
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A contiguous row-major view; `data.len()` must be `rows * cols`.
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when `rows × cols` overflows;
    /// [`Error::LengthMismatch`] when `data.len()` is not `rows × cols`.
    pub fn from_row_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self, Error> {
        let numel = checked_numel(&[rows, cols])?;
        if numel != data.len() {
            return Err(Error::LengthMismatch {
                what: "MatMut::from_row_major",
                expected: numel,
                actual: data.len(),
            });
        }
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// A shared view of the same elements.
    pub fn as_ref(&self) -> MatRef<'_, T> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// A shorter-lived mutable view of the same elements.
    pub fn reborrow(&mut self) -> MatMut<'_, T> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Distance between rows, in elements.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Distance between columns, in elements.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// Element (i, j), or `None` outside the view.
    pub fn get(&self, i: usize, j: usize) -> Option<T> {
        self.as_ref().get(i, j)
    }

    /// Sets element (i, j); returns false (and writes nothing) outside the view.
    pub fn set(&mut self, i: usize, j: usize, value: T) -> bool {
        if i < self.rows && j < self.cols {
            self.data[i * self.row_stride + j * self.col_stride] = value;
            true
        } else {
            false
        }
    }

    /// The elements the view spans, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        self.data
    }

    /// The elements the view spans, for the view's whole lifetime.
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn into_slice(self) -> &'a mut [T] {
        self.data
    }
}

/// `submatrix`, `row` and `col`: [`MatRef::slice`] / [`MatMut::slice`]
/// with a start and a length, for either view type (`$t` names it in errors).
macro_rules! sub_views {
    ($t:literal) => {
        /// The `rows × cols` sub-view whose top-left element is `(row0, col0)`:
        /// `slice` with start and length.
        ///
        /// # Errors
        /// [`Error::IndexOutOfRange`] when it does not fit inside the view.
        pub fn submatrix(
            self,
            row0: usize,
            col0: usize,
            rows: usize,
            cols: usize,
        ) -> Result<Self, Error> {
            let rows = span_range(concat!($t, "::submatrix rows"), row0, rows)?;
            let cols = span_range(concat!($t, "::submatrix columns"), col0, cols)?;
            self.slice(rows, cols)
        }

        /// Row `i` as a `1 × cols` view.
        ///
        /// # Errors
        /// [`Error::IndexOutOfRange`] when `i >= rows`.
        pub fn row(self, i: usize) -> Result<Self, Error> {
            self.slice(span_range(concat!($t, "::row"), i, 1)?, ..)
        }

        /// Column `j` as a `rows × 1` view.
        ///
        /// # Errors
        /// [`Error::IndexOutOfRange`] when `j >= cols`.
        pub fn col(self, j: usize) -> Result<Self, Error> {
            self.slice(.., span_range(concat!($t, "::col"), j, 1)?)
        }
    };
}

/// Resolves a range over a dimension of length `len`, or says which range
/// was asked for.
fn resolve(
    what: &'static str,
    range: impl RangeBounds<usize>,
    len: usize,
) -> Result<Range<usize>, Error> {
    let start = match range.start_bound() {
        Bound::Included(&s) => Some(s),
        Bound::Excluded(&s) => s.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => Some(len),
    };
    match (start, end) {
        (Some(start), Some(end)) if start <= end && end <= len => Ok(start..end),
        (start, end) => Err(Error::IndexOutOfRange {
            what,
            start: start.unwrap_or(usize::MAX),
            end: end.unwrap_or(usize::MAX),
            len,
        }),
    }
}

/// The layout of a sub-view: where it starts in the parent's elements and
/// how many elements it spans.
fn sub_layout(
    (rs, cs): (usize, usize),
    rows: &Range<usize>,
    cols: &Range<usize>,
) -> (usize, usize) {
    let (r, c) = (rows.len(), cols.len());
    if r == 0 || c == 0 {
        return (0, 0);
    }
    // Inside the parent view, so none of this overflows and it ends inside
    // the parent's slice.
    let start = rows.start * rs + cols.start * cs;
    (start, (r - 1) * rs + (c - 1) * cs + 1)
}

/// Whether rows `[0, at)` and `[at, rows)` of a view occupy disjoint,
/// consecutive element ranges for every `at`: each row's last element,
/// `(cols - 1)·cs` past its first, comes before the next row's first, `rs`
/// past it.
fn rows_separable(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows <= 1 || cols == 0 || rs > (cols - 1).saturating_mul(cs)
}

fn not_separable(what: &'static str, rows: usize, cols: usize, rs: usize, cs: usize) -> Error {
    Error::InvalidParameter {
        name: what,
        value: format!("a {rows}×{cols} mutable view with strides ({rs}, {cs})"),
        requirement: "parts that do not interleave in memory: split a mutable view \
                      along its outer dimension (rows of a row-major view, columns of a \
                      column-major one), or split a shared MatRef, which always works",
    }
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// The `rows × cols` sub-view starting at (r0, c0). The crate only asks
    /// for ranges inside the view (an internal invariant, asserted).
    pub(crate) fn sub(&self, r0: usize, rows: usize, c0: usize, cols: usize) -> Self {
        match self.slice(r0..r0 + rows, c0..c0 + cols) {
            Ok(v) => v,
            Err(e) => panic!("internal: {e}"),
        }
    }

    /// The sub-view of rows `rows` and columns `cols` (any ranges: `2..5`,
    /// `..`, `1..=3`), sharing the strides. No copy.
    ///
    /// ```
    /// use mixprec::MatRef;
    /// let data: Vec<f32> = (0..12).map(|x| x as f32).collect();
    /// let a = MatRef::from_row_major(&data, 3, 4)?;
    /// let s = a.slice(1..3, 2..)?; // rows 1-2, columns 2-3
    /// assert_eq!((s.rows(), s.cols()), (2, 2));
    /// assert_eq!(s.get(0, 0), Some(6.0));
    /// assert!(a.slice(0..4, ..).is_err());
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when a range reaches past the view or
    /// starts after it ends.
    pub fn slice(
        self,
        rows: impl RangeBounds<usize>,
        cols: impl RangeBounds<usize>,
    ) -> Result<Self, Error> {
        let rows = resolve("MatRef::slice rows", rows, self.rows)?;
        let cols = resolve("MatRef::slice columns", cols, self.cols)?;
        let (start, span) = sub_layout((self.row_stride, self.col_stride), &rows, &cols);
        Ok(Self {
            data: &self.data[start..start + span],
            rows: rows.len(),
            cols: cols.len(),
            ..self
        })
    }

    sub_views!("MatRef");

    /// Rows `[0, at)` and `[at, rows)`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when `at > rows`.
    pub fn split_at_row(self, at: usize) -> Result<(Self, Self), Error> {
        Ok((self.slice(..at, ..)?, self.slice(at.., ..)?))
    }

    /// Columns `[0, at)` and `[at, cols)`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when `at > cols`.
    pub fn split_at_col(self, at: usize) -> Result<(Self, Self), Error> {
        Ok((self.slice(.., ..at)?, self.slice(.., at..)?))
    }
}

/// `start..start + len`; an end past `usize::MAX` is out of any range.
fn span_range(what: &'static str, start: usize, len: usize) -> Result<Range<usize>, Error> {
    match start.checked_add(len) {
        Some(end) => Ok(start..end),
        None => Err(Error::IndexOutOfRange {
            what,
            start,
            end: usize::MAX,
            len: usize::MAX,
        }),
    }
}

impl<'a, T: Copy> MatMut<'a, T> {
    /// The sub-view of rows `rows` and columns `cols`, as [`MatRef::slice`].
    /// Consumes the view; call [`Self::reborrow`] first to keep it.
    ///
    /// ```
    /// use mixprec::MatMut;
    /// let mut data = vec![0.0f32; 6];
    /// let mut c = MatMut::from_row_major(&mut data, 2, 3)?;
    /// c.reborrow().slice(.., 1..)?.set(1, 1, 5.0);
    /// assert_eq!(c.get(1, 2), Some(5.0));
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when a range reaches past the view or
    /// starts after it ends.
    pub fn slice(
        self,
        rows: impl RangeBounds<usize>,
        cols: impl RangeBounds<usize>,
    ) -> Result<Self, Error> {
        let rows = resolve("MatMut::slice rows", rows, self.rows)?;
        let cols = resolve("MatMut::slice columns", cols, self.cols)?;
        let (start, span) = sub_layout((self.row_stride, self.col_stride), &rows, &cols);
        Ok(Self {
            data: &mut self.data[start..start + span],
            rows: rows.len(),
            cols: cols.len(),
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        })
    }

    sub_views!("MatMut");

    /// Rows `[0, at)` and `[at, rows)` as two mutable views, for example to
    /// hand each half to a thread.
    ///
    /// ```
    /// use mixprec::MatMut;
    /// let mut data = vec![0.0f32; 6];
    /// let c = MatMut::from_row_major(&mut data, 3, 2)?;
    /// let (mut top, mut bottom) = c.split_at_row(1)?;
    /// top.set(0, 0, 1.0);
    /// bottom.set(1, 1, 2.0);
    /// assert_eq!(data, [1.0, 0.0, 0.0, 0.0, 0.0, 2.0]);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when `at > rows`;
    /// [`Error::InvalidParameter`] when rows interleave in memory (a
    /// column-major view, whose row halves cannot be two disjoint slices:
    /// split its columns, or use [`MatRef::split_at_row`]).
    pub fn split_at_row(self, at: usize) -> Result<(Self, Self), Error> {
        let (rows, cols, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        resolve("MatMut::split_at_row", ..at, rows)?;
        if !rows_separable(rows, cols, rs, cs) {
            return Err(not_separable("MatMut::split_at_row", rows, cols, rs, cs));
        }
        let cut = if at == rows || cols == 0 {
            self.data.len()
        } else {
            at * rs
        };
        let (first, second) = self.data.split_at_mut(cut);
        // Each part borrows exactly the elements it spans.
        let part = |data: &'a mut [T], rows: usize| {
            let (_, span) = sub_layout((rs, cs), &(0..rows), &(0..cols));
            MatMut {
                data: &mut data[..span],
                rows,
                cols,
                row_stride: rs,
                col_stride: cs,
            }
        };
        Ok((part(first, at), part(second, rows - at)))
    }

    /// Columns `[0, at)` and `[at, cols)`, as [`Self::split_at_row`].
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] when `at > cols`;
    /// [`Error::InvalidParameter`] when columns interleave in memory (a
    /// row-major view with more than one row).
    pub fn split_at_col(self, at: usize) -> Result<(Self, Self), Error> {
        let (rows, cols, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        resolve("MatMut::split_at_col", ..at, cols)?;
        if !rows_separable(cols, rows, cs, rs) {
            return Err(not_separable("MatMut::split_at_col", rows, cols, rs, cs));
        }
        let (left, right) = self.t().split_at_row(at)?;
        Ok((left.t(), right.t()))
    }

    /// Splits into rows `[0, at)` and `[at, rows)` for the GEMM's thread
    /// split; gives the view back when it cannot.
    pub(crate) fn split_rows(self, at: usize) -> Result<(Self, Self), Self> {
        let (rows, cols, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        if at > rows || !rows_separable(rows, cols, rs, cs) {
            return Err(self);
        }
        match self.split_at_row(at) {
            Ok(halves) => Ok(halves),
            Err(_) => unreachable!("internal: split_at_row refused a checked split"),
        }
    }

    /// Copies `src` (row-major `rows × w`) into columns `c0..c0 + w`, for
    /// the GEMM's column split (the inverse of taking those columns with
    /// [`MatRef::to_row_major`]). The crate only asks for columns inside
    /// the view (an internal invariant, asserted by slice indexing).
    pub(crate) fn copy_cols_from(&mut self, c0: usize, src: &[T]) {
        let w = src.len() / self.rows.max(1);
        for (r, src_row) in src.chunks_exact(w.max(1)).enumerate() {
            let start = r * self.row_stride + c0 * self.col_stride;
            if self.col_stride == 1 {
                self.data[start..start + w].copy_from_slice(src_row);
            } else {
                for (j, &v) in src_row.iter().enumerate() {
                    self.data[start + j * self.col_stride] = v;
                }
            }
        }
    }

    /// Splits into columns `[0, at)` and `[at, cols)`, like [`Self::split_rows`].
    pub(crate) fn split_cols(self, at: usize) -> Result<(Self, Self), Self> {
        match self.t().split_rows(at) {
            Ok((left, right)) => Ok((left.t(), right.t())),
            Err(v) => Err(v.t()),
        }
    }
}

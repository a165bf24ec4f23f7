//! Owned tensors and borrowed strided matrix views.
//!
//! [`Tensor`] owns a contiguous row-major buffer of any rank. [`MatRef`] and
//! [`MatMut`] borrow a 2-D matrix with arbitrary (non-negative) strides, so a
//! transpose ([`MatRef::t`]) is a view, not a copy.

use crate::dtype::{Element, FloatElement};
use crate::error::checked_numel;
use crate::Error;

mod view;

pub use view::{MatMut, MatRef};

/// An owned, contiguous, row-major tensor of any rank.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Element> Tensor<T> {
    /// Wraps `data` (row-major) as a tensor of `shape`.
    ///
    /// ```
    /// use mixprec::{Error, Tensor};
    /// let t = Tensor::from_vec(&[2, 3], vec![0i8; 6])?;
    /// assert_eq!(t.shape(), &[2, 3]);
    /// assert!(matches!(Tensor::from_vec(&[2, 3], vec![0i8; 5]), Err(Error::LengthMismatch { .. })));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when the shape's element count overflows;
    /// [`Error::LengthMismatch`] when `data` does not hold exactly that many.
    pub fn from_vec(shape: &[usize], data: Vec<T>) -> Result<Self, Error> {
        let numel = checked_numel(shape)?;
        if numel != data.len() {
            return Err(Error::LengthMismatch {
                what: "Tensor::from_vec",
                expected: numel,
                actual: data.len(),
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }

    /// A tensor of `shape` filled with zero bits (0 for every format).
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when the element or byte count overflows.
    pub fn zeros(shape: &[usize]) -> Result<Self, Error> {
        let numel = checked_numel(shape)?;
        checked_bytes::<T>(shape, numel)?;
        Ok(Self {
            shape: shape.to_vec(),
            data: vec![T::zeroed(); numel],
        })
    }

    /// A tensor whose element at each multi-index is `f(index)`, filled in
    /// row-major order.
    ///
    /// ```
    /// use mixprec::Tensor;
    /// let t = Tensor::from_fn(&[2, 3], |ix| (10 * ix[0] + ix[1]) as i32)?;
    /// assert_eq!(t.as_slice(), &[0, 1, 2, 10, 11, 12]);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when the element or byte count overflows.
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(&[usize]) -> T) -> Result<Self, Error> {
        let numel = checked_numel(shape)?;
        checked_bytes::<T>(shape, numel)?;
        let mut data = Vec::with_capacity(numel);
        let mut index = vec![0usize; shape.len()];
        for _ in 0..numel {
            data.push(f(&index));
            for axis in (0..shape.len()).rev() {
                index[axis] += 1;
                if index[axis] < shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when some dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements, row-major.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The elements, row-major, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The buffer, giving up the shape.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// The elements as raw bytes (native endianness), without a copy.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    /// The elements as mutable raw bytes, without a copy.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.data)
    }

    /// A tensor of `shape` copied from raw bytes (native endianness), which
    /// need not be aligned.
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when the byte count overflows;
    /// [`Error::LengthMismatch`] when `bytes` is not exactly that long.
    pub fn from_bytes(shape: &[usize], bytes: &[u8]) -> Result<Self, Error> {
        let numel = checked_numel(shape)?;
        let expected = checked_bytes::<T>(shape, numel)?;
        if bytes.len() != expected {
            return Err(Error::LengthMismatch {
                what: "Tensor::from_bytes (bytes)",
                expected,
                actual: bytes.len(),
            });
        }
        let mut data = vec![T::zeroed(); numel];
        bytemuck::cast_slice_mut::<T, u8>(&mut data).copy_from_slice(bytes);
        Self::from_vec(shape, data)
    }

    /// The same elements under a new shape with the same element count.
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] or [`Error::LengthMismatch`] when the new shape
    /// does not hold the same number of elements.
    pub fn reshape(self, shape: &[usize]) -> Result<Self, Error> {
        let numel = checked_numel(shape)?;
        if numel != self.data.len() {
            return Err(Error::ShapeMismatch {
                what: "Tensor::reshape",
                left: self.shape,
                right: shape.to_vec(),
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            data: self.data,
        })
    }

    /// A borrowed view of a rank-2 tensor.
    ///
    /// # Errors
    /// [`Error::RankMismatch`] unless the tensor has rank 2.
    pub fn as_mat(&self) -> Result<MatRef<'_, T>, Error> {
        let (rows, cols) = self.dims2()?;
        MatRef::from_row_major(&self.data, rows, cols)
    }

    /// A mutable borrowed view of a rank-2 tensor.
    ///
    /// # Errors
    /// [`Error::RankMismatch`] unless the tensor has rank 2.
    pub fn as_mat_mut(&mut self) -> Result<MatMut<'_, T>, Error> {
        let (rows, cols) = self.dims2()?;
        MatMut::from_row_major(&mut self.data, rows, cols)
    }

    fn dims2(&self) -> Result<(usize, usize), Error> {
        match self.shape[..] {
            [rows, cols] => Ok((rows, cols)),
            _ => Err(Error::RankMismatch {
                expected: 2,
                actual: self.shape.len(),
            }),
        }
    }
}

impl<T: FloatElement> Tensor<T> {
    /// The tensor converted element-wise to `U`: exact when widening, round to
    /// nearest even when narrowing (see [`crate::convert`]); between two
    /// narrow formats the value goes through f32, which is exact, so it is
    /// rounded once.
    pub fn to_dtype<U: FloatElement>(&self) -> Tensor<U> {
        let out = crate::convert::cast_vec(&self.data);
        Tensor {
            shape: self.shape.clone(),
            data: out,
        }
    }
}

fn checked_bytes<T>(shape: &[usize], numel: usize) -> Result<usize, Error> {
    numel
        .checked_mul(std::mem::size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| Error::ShapeOverflow {
            shape: shape.to_vec(),
        })
}

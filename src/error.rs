//! The crate's one error type.

use std::fmt;

/// Everything a caller can get wrong, with the offending values in the message.
///
/// Functions that take shapes, slices or parameters from a caller return
/// `Result<_, Error>` and check their inputs before touching any data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's length does not match what the shape calls for.
    LengthMismatch {
        /// What was being built or converted.
        what: &'static str,
        /// Elements the shape needs.
        expected: usize,
        /// Elements that were passed.
        actual: usize,
    },
    /// Two shapes that must agree do not.
    ShapeMismatch {
        /// Which operation compared them.
        what: &'static str,
        /// The first shape.
        left: Vec<usize>,
        /// The second shape.
        right: Vec<usize>,
    },
    /// The product of a shape's dimensions (or a byte count) does not fit in `usize`.
    ShapeOverflow {
        /// The shape whose element count overflows.
        shape: Vec<usize>,
    },
    /// A dimension is zero where the operation needs at least one element.
    EmptyDimension {
        /// What was being built.
        what: &'static str,
        /// The shape with the empty dimension.
        shape: Vec<usize>,
    },
    /// A tensor of the wrong rank was passed.
    RankMismatch {
        /// What was expected.
        expected: usize,
        /// What was passed.
        actual: usize,
    },
    /// A strided view reaches past the end of its buffer.
    ViewOutOfBounds {
        /// Rows of the view.
        rows: usize,
        /// Columns of the view.
        cols: usize,
        /// Row stride, in elements.
        row_stride: usize,
        /// Column stride, in elements.
        col_stride: usize,
        /// Length of the buffer the view borrows.
        len: usize,
    },
    /// A parameter's value is outside its valid range (a non-finite scale, say).
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// Its value, as text.
        value: String,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// The output of an operation overlaps one of its inputs in memory.
    Aliasing {
        /// Which input the output overlaps.
        input: &'static str,
    },
    /// An index or range lies outside a view or tensor (or starts after it ends).
    IndexOutOfRange {
        /// What was indexed.
        what: &'static str,
        /// First index asked for.
        start: usize,
        /// One past the last index asked for.
        end: usize,
        /// Length of the dimension.
        len: usize,
    },
    /// A tensor has another element type than the one asked for.
    DTypeMismatch {
        /// Which tensor.
        what: String,
        /// The type asked for.
        expected: crate::DType,
        /// The type it has.
        actual: crate::DType,
    },
    /// A file (or byte buffer) is not a valid instance of its format.
    InvalidFile {
        /// The format, e.g. `"safetensors"`.
        format: &'static str,
        /// What is wrong, with the offending values.
        detail: String,
    },
    /// Reading or writing a file failed: the operating system's error, as
    /// distinct from a file that was read but is malformed
    /// ([`Error::InvalidFile`]).
    Io {
        /// The file, where the failing call knows it (empty from a bare
        /// `std::io::Error`).
        path: String,
        /// The error's kind (`NotFound`, `PermissionDenied`, …), to match on.
        kind: std::io::ErrorKind,
        /// The operating system's message.
        detail: String,
    },
    /// The reduction length K is past the limit below which an integer
    /// GEMM's i32 sums are exact.
    KTooLarge {
        /// Which operation.
        what: &'static str,
        /// The K that was passed.
        k: usize,
        /// The largest K that is exact for these operand types and zero points.
        max_k: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LengthMismatch {
                what,
                expected,
                actual,
            } => write!(
                f,
                "{what}: length mismatch: the shape needs {expected} elements, got {actual}"
            ),
            Error::ShapeMismatch { what, left, right } => {
                write!(f, "{what}: shapes do not agree: {left:?} vs {right:?}")
            }
            Error::IndexOutOfRange {
                what,
                start,
                end,
                len,
            } => write!(f, "{what}: range {start}..{end} is not inside 0..{len}"),
            Error::DTypeMismatch {
                what,
                expected,
                actual,
            } => write!(f, "{what}: element type is {actual}, expected {expected}"),
            Error::InvalidFile { format, detail } => write!(f, "invalid {format} data: {detail}"),
            Error::Io { path, detail, .. } if path.is_empty() => write!(f, "I/O error: {detail}"),
            Error::Io { path, detail, .. } => write!(f, "I/O error on {path}: {detail}"),
            Error::ShapeOverflow { shape } => {
                write!(f, "shape {shape:?}: element count overflows usize")
            }
            Error::EmptyDimension { what, shape } => {
                write!(f, "{what}: shape {shape:?} has an empty dimension")
            }
            Error::RankMismatch { expected, actual } => {
                write!(f, "expected a rank-{expected} tensor, got rank {actual}")
            }
            Error::ViewOutOfBounds {
                rows,
                cols,
                row_stride,
                col_stride,
                len,
            } => write!(
                f,
                "a {rows}x{cols} view with strides ({row_stride}, {col_stride}) \
                 reaches past a buffer of {len} elements"
            ),
            Error::InvalidParameter {
                name,
                value,
                requirement,
            } => write!(f, "invalid {name} = {value}: must be {requirement}"),
            Error::Aliasing { input } => {
                write!(f, "the output overlaps input {input} in memory")
            }
            Error::KTooLarge { what, k, max_k } => write!(
                f,
                "{what}: K = {k} is past the largest K ({max_k}) whose i32 sums are exact \
                 for these operand types and zero points"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Number of elements of `shape`, or [`Error::ShapeOverflow`].
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize, Error> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::ShapeOverflow {
            shape: shape.to_vec(),
        })
}

/// Number of elements of `shape` for a buffer of `T`: [`Error::ShapeOverflow`]
/// unless both the count and its byte size fit (`isize::MAX` bytes, Rust's
/// allocation limit).
pub(crate) fn checked_len_of<T>(shape: &[usize]) -> Result<usize, Error> {
    let numel = checked_numel(shape)?;
    numel
        .checked_mul(std::mem::size_of::<T>().max(1))
        .filter(|&b| b <= isize::MAX as usize)
        .map(|_| numel)
        .ok_or_else(|| Error::ShapeOverflow {
            shape: shape.to_vec(),
        })
}

impl From<std::io::Error> for Error {
    /// [`Error::Io`] without a path (the `std::io::Error` does not hold one).
    fn from(e: std::io::Error) -> Self {
        Error::Io {
            path: String::new(),
            kind: e.kind(),
            detail: e.to_string(),
        }
    }
}

impl Error {
    /// [`Error::Io`] for `e` on `path`.
    #[cfg_attr(not(feature = "safetensors"), allow(dead_code))]
    pub(crate) fn io(path: &std::path::Path, e: &std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            kind: e.kind(),
            detail: e.to_string(),
        }
    }
}

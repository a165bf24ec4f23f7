//! A safetensors file read tensor by tensor ([`SafetensorsFile`]): the
//! header is read and checked when the file is opened, each tensor's bytes
//! only when it is asked for.

use super::header::{header_len, parse_header, Entry};
use super::{from_st_dtype, stored_tensor, Stored};
use crate::dtype::{DType, Element};
use crate::tensor::Tensor;
use crate::Error;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// A safetensors file opened for reading one tensor at a time: [`open`]
/// reads and checks only the header (names, dtypes, shapes, offsets, the
/// metadata); [`tensor`] and [`raw_bytes`] read just the bytes of the
/// tensor asked for. How to take one layer out of a multi-gigabyte
/// checkpoint without reading the rest. Every dtype is listed, those the
/// crate has no type for (I64, F64, BOOL, …) too.
///
/// ```
/// use mixprec::safetensors::{Safetensors, SafetensorsFile};
/// use mixprec::Tensor;
/// let path = std::env::temp_dir().join(format!("mixprec-doc-{}.safetensors", std::process::id()));
/// let mut st = Safetensors::new();
/// st.insert("a", Tensor::from_vec(&[2], vec![1.0f32, 2.0])?)?;
/// st.insert("b", Tensor::from_vec(&[3], vec![1i8, 2, 3])?)?;
/// st.write(&path)?;
///
/// let mut file = SafetensorsFile::open(&path)?;
/// assert_eq!(file.names().collect::<Vec<_>>(), ["a", "b"]);
/// assert_eq!(file.tensor::<i8>("b")?.as_slice(), [1, 2, 3]); // reads 3 bytes
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// [`open`]: SafetensorsFile::open
/// [`tensor`]: SafetensorsFile::tensor
/// [`raw_bytes`]: SafetensorsFile::raw_bytes
#[derive(Debug)]
pub struct SafetensorsFile {
    file: std::fs::File,
    path: std::path::PathBuf,
    data_start: u64,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or read;
    /// [`Error::InvalidFile`] for a header that is truncated, too large,
    /// not JSON, or whose tensors' offsets are not contiguous from 0 to
    /// the end of the file, or do not match their dtype and shape (the
    /// checks [`super::Safetensors::from_bytes`] makes).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::io(path, &e);
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut prefix = [0u8; 8];
        file.read_exact(&mut prefix)
            .map_err(|_| invalid_len(path, file_len))?;
        let n = header_len(&prefix, file_len)?;
        let mut header = vec![0u8; n as usize]; // n ≤ 10^8
        file.read_exact(&mut header).map_err(io)?;
        let data_len = file_len - 8 - n; // n ≤ file_len − 8 (header_len)
        let (entries, metadata) = parse_header(&header, data_len)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            data_start: 8 + n,
            entries,
            metadata,
        })
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The metadata of the header.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The dtype as the file spells it (`"F32"`, `"I64"`, …) and the shape
    /// of tensor `name`, if present.
    pub fn dtype_and_shape(&self, name: &str) -> Option<(String, &[usize])> {
        self.entries
            .get(name)
            .map(|e| (format!("{:?}", e.dtype), &e.shape[..]))
    }

    /// The crate's element type for tensor `name`, if present and of a
    /// dtype the crate has a type for.
    pub fn element_type(&self, name: &str) -> Option<DType> {
        from_st_dtype(self.entries.get(name)?.dtype)
    }

    /// Tensor `name`'s bytes as the file stores them (little-endian; FP4
    /// and FP6 packed), read from the file now.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when there is no such tensor;
    /// [`Error::Io`] when the read fails.
    pub fn raw_bytes(&mut self, name: &str) -> Result<Vec<u8>, Error> {
        let e = self.entry(name)?.clone();
        let io = |err: std::io::Error| Error::io(&self.path, &err);
        // The offsets were checked against the file's length at `open`.
        let len = usize::try_from(e.end - e.start).map_err(|_| Error::ShapeOverflow {
            shape: e.shape.clone(),
        })?;
        let mut bytes = vec![0u8; len];
        self.file
            .seek(SeekFrom::Start(self.data_start + e.start))
            .map_err(io)?;
        self.file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// Tensor `name` as `Tensor<T>`, read from the file now (only its own
    /// bytes).
    ///
    /// # Errors
    /// As [`Self::raw_bytes`]; [`Error::DTypeMismatch`] when it is stored
    /// as another type, [`Error::InvalidParameter`] for a dtype the crate
    /// has no type for.
    pub fn tensor<T: Element>(&mut self, name: &str) -> Result<Tensor<T>, Error> {
        let bytes = self.raw_bytes(name)?;
        let e = self.entry(name)?;
        let stored = Stored {
            file_dtype: e.dtype,
            dtype: from_st_dtype(e.dtype),
            shape: e.shape.clone(),
            bytes,
        };
        stored_tensor(name, &stored)
    }

    fn entry(&self, name: &str) -> Result<&Entry, Error> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::InvalidParameter {
                name: "tensor name",
                value: name.to_string(),
                requirement: "a tensor of the file",
            })
    }
}

/// A file too short to hold the header's length.
fn invalid_len(path: &Path, file_len: u64) -> Error {
    super::invalid(format!(
        "{}: {file_len} bytes, shorter than 8",
        path.display()
    ))
}

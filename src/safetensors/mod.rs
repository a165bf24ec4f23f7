//! Reading and writing tensors in the [safetensors] format (feature
//! `safetensors`), through the `safetensors` crate.
//!
//! [`Safetensors`] is an in-memory file: named tensors of every [`DType`]
//! (F32, F16, BF16, F8_E4M3, F8_E5M2, F8_E8M0, I8, U8, I32, and F6_E2M3,
//! F6_E3M2, F4 packed as the format stores them: FP4 two per byte with
//! element 0 in the low nibble, FP6 as [`crate::dtype::pack_fp6`]) and
//! string metadata. Tensors of the dtypes the crate has no type for
//! (I64, F64, BOOL, U16, …, as `num_batches_tracked` or `position_ids` in
//! a PyTorch checkpoint) do not block a file: they are listed by
//! [`Safetensors::names`], read as bytes by [`Safetensors::raw`], kept
//! when the file is written back, and refused only when asked for as an
//! element type.
//! Loading checks the header (offsets, lengths, overflow: the
//! `safetensors` crate's validation), then each tensor's dtype, shape and
//! byte length, and returns typed errors: a malformed file is never a
//! panic.
//!
//! # Quantized tensors
//!
//! [`Safetensors::insert_quantized`] stores an integer tensor and its
//! [`QuantParams`] under this metadata key convention (all values text, so
//! any safetensors reader sees them):
//!
//! | key | value |
//! |---|---|
//! | `mixprec.quant.<name>.scales` | comma-separated f32, shortest round-trip decimal (exact) |
//! | `mixprec.quant.<name>.zero_points` | comma-separated integers |
//! | `mixprec.quant.<name>.axis` | channel axis, or `none` for per-tensor |
//! | `mixprec.quant.<name>.range` | `qmin,qmax` of the storage type |
//! | `mixprec.quant.<name>.scheme` | `symmetric` when every zero point is the storage type's symmetric one, else `affine` (informative) |
//!
//! ```
//! use mixprec::quant::{QuantParams, Scheme};
//! use mixprec::safetensors::Safetensors;
//! use mixprec::{bf16, Tensor};
//! let w = Tensor::from_vec(&[2, 2], vec![1.0f32, -0.5, 0.25, 2.0])?;
//! let q = Tensor::from_vec(&[2, 2], vec![64i8, -32, 16, 127])?;
//! let params = QuantParams::per_channel::<i8>(vec![1.0 / 64.0, 2.0 / 127.0], vec![0, 0], 0)?;
//!
//! let mut file = Safetensors::new();
//! file.insert("w", w.to_dtype::<bf16>())?;
//! file.insert_quantized("w_q", q.clone(), &params)?;
//! let bytes = file.to_bytes()?;
//!
//! let back = Safetensors::from_bytes(&bytes)?;
//! assert_eq!(back.tensor::<bf16>("w")?.to_dtype::<f32>(), w);
//! assert_eq!(back.quantized::<i8>("w_q")?, (q, params));
//! assert!(back.tensor::<f32>("w").is_err()); // stored as bf16
//! # Ok::<(), mixprec::Error>(())
//! ```
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use crate::dtype::{DType, Element};
use crate::quant::{QInt, QuantParams};
use crate::tensor::Tensor;
use crate::Error;
use ::safetensors::tensor::Dtype;
use std::borrow::Cow;
use std::collections::BTreeMap;

mod header;
mod lazy;
mod published;
pub use lazy::SafetensorsFile;

const FORMAT: &str = "safetensors";
const QUANT_PREFIX: &str = "mixprec.quant.";

fn invalid(detail: impl Into<String>) -> Error {
    Error::InvalidFile {
        format: FORMAT,
        detail: detail.into(),
    }
}

/// `s` as a JSON string literal (quotes and escapes).
fn json_string(s: &str) -> String {
    // A str always serializes; the fallback is never taken.
    serde_json::to_string(s).unwrap_or_default()
}

/// The safetensors dtype of a `DType`.
fn to_st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F8E4M3 => Dtype::F8_E4M3,
        DType::F8E5M2 => Dtype::F8_E5M2,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::I32 => Dtype::I32,
        DType::F8E8M0 => Dtype::F8_E8M0,
        DType::F6E2M3 => Dtype::F6_E2M3,
        DType::F6E3M2 => Dtype::F6_E3M2,
        DType::F4E2M1 => Dtype::F4,
        // No safetensors name: the bytes are the int8 k.
        DType::MxInt8 => Dtype::I8,
    }
}

/// Bits per element in a safetensors file (FP6 and FP4 are packed there).
fn file_bits(d: DType) -> usize {
    match d {
        DType::F6E2M3 | DType::F6E3M2 => 6,
        DType::F4E2M1 => 4,
        d => 8 * d.size_bytes(),
    }
}

fn from_st_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F8_E4M3 => DType::F8E4M3,
        Dtype::F8_E5M2 => DType::F8E5M2,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::I32 => DType::I32,
        Dtype::F8_E8M0 => DType::F8E8M0,
        Dtype::F6_E2M3 => DType::F6E2M3,
        Dtype::F6_E3M2 => DType::F6E3M2,
        Dtype::F4 => DType::F4E2M1,
        _ => return None,
    })
}

/// One stored tensor: its dtype in the file, the crate's element type for
/// it (`None` for I64, F64, BOOL and the other dtypes the crate has no
/// type for), shape and little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
struct Stored {
    file_dtype: Dtype,
    dtype: Option<DType>,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// A tensor as the file stores it: [`Safetensors::raw`] gives one for
/// every tensor, including those of dtypes the crate has no element type
/// for (I64, F64, BOOL, U16, …), which [`Safetensors::tensor`] refuses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RawTensor<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    bytes: &'a [u8],
}

impl<'a> RawTensor<'a> {
    /// The dtype's name as the file spells it (`"I64"`, `"F32"`, `"F8_E4M3"`, …).
    pub fn dtype_name(&self) -> String {
        format!("{:?}", self.dtype)
    }

    /// The crate's element type for this dtype, if it has one.
    pub fn element_type(&self) -> Option<DType> {
        from_st_dtype(self.dtype)
    }

    /// Bits per element in the file (4 and 6 for the packed FP4 and FP6).
    pub fn bits_per_element(&self) -> usize {
        self.dtype.bitsize()
    }

    /// The shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The data, little-endian, exactly as in the file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Native-endian element bytes to little-endian (safetensors' byte order),
/// or back: the same swap.
fn swap_to_le(bytes: &mut [u8], size: usize) {
    if cfg!(target_endian = "big") && size > 1 {
        for chunk in bytes.chunks_exact_mut(size) {
            chunk.reverse();
        }
    }
}

/// Named tensors and metadata: a safetensors file in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Safetensors {
    tensors: BTreeMap<String, Stored>,
    metadata: BTreeMap<String, String>,
}

impl Safetensors {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the tensor `name`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for the name `__metadata__`, which the
    /// format reserves, and for an FP4 tensor with an odd number of
    /// elements or an FP6 tensor whose count is not a multiple of 4
    /// (safetensors stores them packed in whole bytes: FP4 two per byte,
    /// element 0 in the low nibble as NVIDIA's `__nv_fp4x2_e2m1` and torchao
    /// do; FP6 four per three bytes as [`crate::dtype::pack_fp6`]).
    pub fn insert<T: Element>(
        &mut self,
        name: impl Into<String>,
        tensor: Tensor<T>,
    ) -> Result<(), Error> {
        let name = name.into();
        let bits = file_bits(T::DTYPE);
        let total_bits = tensor
            .len()
            .checked_mul(bits)
            .ok_or_else(|| Error::ShapeOverflow {
                shape: tensor.shape().to_vec(),
            })?;
        if !total_bits.is_multiple_of(8) {
            return Err(Error::InvalidParameter {
                name: "safetensors packed tensor",
                value: format!("{} elements of {} for {name:?}", tensor.len(), T::DTYPE),
                requirement:
                    "a whole number of bytes when packed (FP4: even count, FP6: multiple of 4)",
            });
        }
        if name == "__metadata__" {
            return Err(Error::InvalidParameter {
                name: "tensor name",
                value: name,
                requirement: "not __metadata__ (reserved by safetensors)",
            });
        }
        let shape = tensor.shape().to_vec();
        let mut bytes = tensor.as_bytes().to_vec();
        swap_to_le(&mut bytes, T::DTYPE.size_bytes());
        let bytes = match bits {
            4 => crate::dtype::pack_fp4(bytemuck::cast_slice(&bytes)),
            6 => crate::dtype::pack_fp6(&bytes),
            _ => bytes,
        };
        self.tensors.insert(
            name,
            Stored {
                file_dtype: to_st_dtype(T::DTYPE),
                dtype: Some(T::DTYPE),
                shape,
                bytes,
            },
        );
        Ok(())
    }

    /// Adds an integer tensor and its quantization parameters (see the
    /// module docs for the metadata keys).
    ///
    /// # Errors
    /// As [`Safetensors::insert`]; [`Error::InvalidParameter`] when the
    /// parameters are for another storage type than `Q`, or per channel on
    /// an axis the tensor lacks or with another channel count.
    pub fn insert_quantized<Q: QInt>(
        &mut self,
        name: impl Into<String>,
        tensor: Tensor<Q>,
        params: &QuantParams,
    ) -> Result<(), Error> {
        let name = name.into();
        check_params_fit(&name, tensor.shape(), params, (Q::QMIN, Q::QMAX))?;
        self.insert(name.clone(), tensor)?;
        let list = |v: Vec<String>| v.join(",");
        let key = |k: &str| format!("{QUANT_PREFIX}{name}.{k}");
        let sym = crate::quant::symmetric_zero_point(Q::QMIN, Q::QMAX);
        self.metadata.insert(
            key("scales"),
            list(params.scales().iter().map(|s| s.to_string()).collect()),
        );
        self.metadata.insert(
            key("zero_points"),
            list(params.zero_points().iter().map(|z| z.to_string()).collect()),
        );
        self.metadata.insert(
            key("axis"),
            params.axis().map_or("none".into(), |a| a.to_string()),
        );
        self.metadata
            .insert(key("range"), format!("{},{}", Q::QMIN, Q::QMAX));
        let scheme = if params.zero_points().iter().all(|&z| z == sym) {
            "symmetric"
        } else {
            "affine"
        };
        self.metadata.insert(key("scheme"), scheme.into());
        Ok(())
    }

    /// Sets a metadata entry.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// The metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The element type and shape of tensor `name`, if present and of a
    /// dtype the crate has a type for ([`Safetensors::raw`] describes
    /// every tensor).
    pub fn info(&self, name: &str) -> Option<(DType, &[usize])> {
        let s = self.tensors.get(name)?;
        Some((s.dtype?, &s.shape[..]))
    }

    /// Tensor `name` as the file stores it (dtype name, shape, bytes),
    /// whatever its dtype: how to read an I64 `position_ids` or an F64
    /// tensor beside the ones the crate converts.
    ///
    /// ```
    /// use mixprec::safetensors::Safetensors;
    /// // A file written elsewhere with one I64 tensor [2] = [7, -1].
    /// let header = br#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#;
    /// let mut file = (header.len() as u64).to_le_bytes().to_vec();
    /// file.extend_from_slice(header);
    /// file.extend(7i64.to_le_bytes().into_iter().chain((-1i64).to_le_bytes()));
    /// let st = Safetensors::from_bytes(&file)?;
    /// let raw = st.raw("ids").unwrap();
    /// assert_eq!((raw.dtype_name().as_str(), raw.shape()), ("I64", &[2usize][..]));
    /// let ids: Vec<i64> = raw.bytes().chunks_exact(8)
    ///     .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
    ///     .collect();
    /// assert_eq!(ids, [7, -1]);
    /// assert!(st.tensor::<f32>("ids").is_err()); // no element type for I64
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    pub fn raw(&self, name: &str) -> Option<RawTensor<'_>> {
        self.tensors.get(name).map(|s| RawTensor {
            dtype: s.file_dtype,
            shape: &s.shape,
            bytes: &s.bytes,
        })
    }

    /// A copy of tensor `name` as `Tensor<T>`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when there is no such tensor;
    /// [`Error::DTypeMismatch`] when it is stored as another type.
    pub fn tensor<T: Element>(&self, name: &str) -> Result<Tensor<T>, Error> {
        let stored = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::InvalidParameter {
                name: "tensor name",
                value: name.to_string(),
                requirement: "a tensor of the file",
            })?;
        stored_tensor(name, stored)
    }

    /// Integer tensor `name` and the parameters stored with it by
    /// [`Safetensors::insert_quantized`] (or by any writer following the
    /// key convention).
    ///
    /// # Errors
    /// As [`Safetensors::tensor`]; [`Error::InvalidFile`] when a metadata
    /// key is missing or does not parse; the errors of
    /// [`QuantParams::per_tensor`]/[`QuantParams::per_channel`] for
    /// parameters that break their rules, and [`Error::InvalidParameter`]
    /// when they do not fit the tensor or `Q`.
    pub fn quantized<Q: QInt>(&self, name: &str) -> Result<(Tensor<Q>, QuantParams), Error> {
        let tensor = self.tensor::<Q>(name)?;
        let get = |k: &str| {
            let key = format!("{QUANT_PREFIX}{name}.{k}");
            self.metadata
                .get(&key)
                .ok_or_else(|| invalid(format!("missing metadata key {key:?}")))
        };
        let parse_list = |k: &str| -> Result<Vec<String>, Error> {
            Ok(get(k)?.split(',').map(|t| t.trim().to_string()).collect())
        };
        let bad = |k: &str, v: &str| {
            invalid(format!(
                "metadata {QUANT_PREFIX}{name}.{k}: cannot parse {v:?}"
            ))
        };
        let scales = parse_list("scales")?
            .iter()
            .map(|t| t.parse::<f32>().map_err(|_| bad("scales", t)))
            .collect::<Result<Vec<_>, _>>()?;
        let zero_points = parse_list("zero_points")?
            .iter()
            .map(|t| t.parse::<i32>().map_err(|_| bad("zero_points", t)))
            .collect::<Result<Vec<_>, _>>()?;
        let axis = match get("axis")?.as_str() {
            "none" => None,
            t => Some(t.parse::<usize>().map_err(|_| bad("axis", t))?),
        };
        let range = format!("{},{}", Q::QMIN, Q::QMAX);
        let r = get("range")?;
        if r.replace(' ', "") != range {
            return Err(Error::InvalidParameter {
                name: "quantized tensor range",
                value: format!("{r} for {name:?}"),
                requirement: "the range of the storage type asked for",
            });
        }
        let params = match axis {
            None => {
                if scales.len() != 1 || zero_points.len() != 1 {
                    return Err(invalid(format!(
                        "{name:?}: per-tensor parameters need one scale and zero point, got {} and {}",
                        scales.len(),
                        zero_points.len()
                    )));
                }
                QuantParams::per_tensor::<Q>(scales[0], zero_points[0])?
            }
            Some(a) => QuantParams::per_channel::<Q>(scales, zero_points, a)?,
        };
        check_params_fit(name, tensor.shape(), &params, (Q::QMIN, Q::QMAX))?;
        Ok((tensor, params))
    }

    /// The file's bytes.
    ///
    /// # Errors
    /// [`Error::InvalidFile`] if the `safetensors` crate refuses to write
    /// it (its header would not fit).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        // Written here rather than by the `safetensors` crate, whose header
        // comes from a HashMap: the same tensors and metadata must give the
        // same bytes. Tensors go in order of element size (largest first,
        // so each starts aligned to its element) and then name; the header
        // keys are sorted, and padded with spaces to a multiple of 8 bytes.
        let mut order: Vec<(&String, &Stored)> = self.tensors.iter().collect();
        order.sort_by(|a, b| {
            (std::cmp::Reverse(a.1.file_dtype.bitsize()), a.0)
                .cmp(&(std::cmp::Reverse(b.1.file_dtype.bitsize()), b.0))
        });
        let mut entries: BTreeMap<&str, String> = BTreeMap::new();
        let mut offset = 0usize;
        for (name, t) in &order {
            let end = offset + t.bytes.len(); // the bytes are in memory
            let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
            entries.insert(
                name.as_str(),
                format!(
                    "{{\"dtype\":{},\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
                    json_string(&format!("{:?}", t.file_dtype)),
                    shape.join(",")
                ),
            );
            offset = end;
        }
        let mut header = String::from("{");
        if !self.metadata.is_empty() {
            let pairs: Vec<String> = self
                .metadata
                .iter()
                .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
                .collect();
            header.push_str(&format!("\"__metadata__\":{{{}}}", pairs.join(",")));
        }
        for (name, entry) in &entries {
            if header.len() > 1 {
                header.push(',');
            }
            header.push_str(&json_string(name));
            header.push(':');
            header.push_str(entry);
        }
        header.push('}');
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut out = Vec::with_capacity(8 + header.len() + offset);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        for (_, t) in &order {
            out.extend_from_slice(&t.bytes);
        }
        Ok(out)
    }

    /// Parses a file's bytes, copying the tensors out.
    ///
    /// # Errors
    /// [`Error::InvalidFile`] for a truncated or malformed header, offsets
    /// that overflow or overlap, a tensor whose byte length does not match
    /// its shape and dtype. Tensors of dtypes the crate has no element type
    /// for (I64, F64, BOOL, …) load too: [`Safetensors::raw`] reads them,
    /// and they are written back unchanged.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let file_len = bytes.len() as u64;
        let n = header::header_len(bytes, file_len)? as usize; // ≤ len − 8
        let (entries, metadata) = header::parse_header(&bytes[8..8 + n], file_len - 8 - n as u64)?;
        let data = &bytes[8 + n..];
        let mut out = Safetensors::new();
        out.metadata = metadata;
        for (name, e) in entries {
            // Offsets checked against the data's length by parse_header.
            let stored = Stored {
                file_dtype: e.dtype,
                dtype: from_st_dtype(e.dtype),
                shape: e.shape,
                bytes: data[e.start as usize..e.end as usize].to_vec(),
            };
            out.tensors.insert(name, stored);
        }
        Ok(out)
    }

    /// Reads a file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read (the path, the error's kind and
    /// the OS's message), and the errors of [`Safetensors::from_bytes`].
    pub fn read(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
        Self::from_bytes(&bytes)
    }

    /// Writes the file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be written (path and the OS's error).
    pub fn write(&self, path: impl AsRef<std::path::Path>) -> Result<(), Error> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()?).map_err(|e| Error::io(path, &e))
    }
}

/// `stored` (tensor `name`) as `Tensor<T>`: unpacked (FP4, FP6) and in
/// native byte order.
fn stored_tensor<T: Element>(name: &str, stored: &Stored) -> Result<Tensor<T>, Error> {
    let Some(dtype) = stored.dtype else {
        return Err(Error::InvalidParameter {
            name: "safetensors tensor",
            value: format!(
                "{name:?} of dtype {:?}, read as {}",
                stored.file_dtype,
                T::DTYPE
            ),
            requirement:
                "a dtype the crate has an element type for (read others with Safetensors::raw)",
        });
    };
    // MXINT8 is stored as I8 (same bytes), so I8 tensors read as it too.
    let same = dtype == T::DTYPE || (dtype == DType::I8 && T::DTYPE == DType::MxInt8);
    if !same {
        return Err(Error::DTypeMismatch {
            what: format!("safetensors tensor {name:?}"),
            expected: T::DTYPE,
            actual: dtype,
        });
    }
    let numel = crate::error::checked_numel(&stored.shape)?;
    // Unpacked or swapped into a buffer only where the file's bytes are not
    // already the tensor's (FP4/FP6 packing, a big-endian CPU).
    let size = T::DTYPE.size_bytes();
    let mut bytes = match file_bits(T::DTYPE) {
        4 => Cow::Owned(
            bytemuck::cast_slice(&crate::dtype::unpack_fp4(&stored.bytes, numel)?).to_vec(),
        ),
        6 => Cow::Owned(crate::dtype::unpack_fp6(&stored.bytes, numel)?),
        _ => Cow::Borrowed(&stored.bytes[..]),
    };
    if cfg!(target_endian = "big") && size > 1 {
        swap_to_le(bytes.to_mut(), size);
    }
    Tensor::from_bytes(&stored.shape, &bytes)
}

/// Checks that `params` (for storage range `range`) describe a tensor of `shape`.
fn check_params_fit(
    name: &str,
    shape: &[usize],
    params: &QuantParams,
    range: (i32, i32),
) -> Result<(), Error> {
    if params.range() != range {
        return Err(Error::InvalidParameter {
            name: "quantization parameters",
            value: format!("range {:?} for {name:?}", params.range()),
            requirement: "the range of the tensor's storage type",
        });
    }
    if let Some(axis) = params.axis() {
        if shape.get(axis) != Some(&params.scales().len()) {
            return Err(Error::InvalidParameter {
                name: "quantization parameters",
                value: format!(
                    "{} channels on axis {axis} of {name:?}, shape {shape:?}",
                    params.scales().len()
                ),
                requirement: "one scale per index along the axis",
            });
        }
    }
    Ok(())
}

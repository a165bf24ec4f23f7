//! The header of a safetensors file, parsed and checked once for both
//! readers ([`super::Safetensors::from_bytes`] and [`super::SafetensorsFile`]).

use super::invalid;
use crate::Error;
use ::safetensors::tensor::Dtype;
use std::collections::BTreeMap;

/// The largest header accepted (the `safetensors` crate's limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Where one tensor lies in the file.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    /// Offsets in the data section (after the header).
    pub(super) start: u64,
    pub(super) end: u64,
}

/// The header's length from a file's first 8 bytes (`prefix`), checked
/// against the file's length.
pub(super) fn header_len(prefix: &[u8], file_len: u64) -> Result<u64, Error> {
    let n = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| {
            invalid(format!(
                "{file_len} bytes: shorter than the 8-byte header length"
            ))
        })?;
    if n > MAX_HEADER_BYTES || n > file_len.saturating_sub(8) {
        return Err(invalid(format!(
            "header of {n} bytes in a file of {file_len}"
        )));
    }
    Ok(n)
}

/// The tensors and metadata of a header, checked as the format requires:
/// each tensor's bytes match its dtype and shape, and the tensors fill the
/// `data_len` data bytes contiguously from 0.
pub(super) type Header = (BTreeMap<String, Entry>, BTreeMap<String, String>);

pub(super) fn parse_header(header: &[u8], data_len: u64) -> Result<Header, Error> {
    use serde_json::Value;
    let map: serde_json::Map<String, Value> =
        serde_json::from_slice(header).map_err(|e| invalid(format!("header: {e}")))?;
    let mut entries = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, v) in map {
        if name == "__metadata__" {
            let m = v
                .as_object()
                .ok_or_else(|| invalid("__metadata__ is not an object"))?;
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| invalid(format!("metadata {k:?} is not a string")))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let bad = |what: &str| invalid(format!("tensor {name:?}: {what}"));
        let dtype: Dtype = v
            .get("dtype")
            .cloned()
            .and_then(|d| serde_json::from_value(d).ok())
            .ok_or_else(|| bad("missing or unknown dtype"))?;
        let shape: Vec<usize> = v
            .get("shape")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .ok_or_else(|| bad("missing or invalid shape"))?;
        let offsets: [u64; 2] = v
            .get("data_offsets")
            .cloned()
            .and_then(|o| serde_json::from_value(o).ok())
            .ok_or_else(|| bad("missing or invalid data_offsets"))?;
        let [start, end] = offsets;
        let numel = crate::error::checked_numel(&shape).map_err(|_| bad("shape overflows"))?;
        let bits = (numel as u64)
            .checked_mul(dtype.bitsize() as u64)
            .ok_or_else(|| bad("shape overflows"))?;
        if start > end || end > data_len || bits % 8 != 0 || end - start != bits / 8 {
            return Err(bad(&format!(
                "offsets {start}..{end} for {numel} elements of {dtype:?} in {data_len} data bytes"
            )));
        }
        entries.insert(
            name,
            Entry {
                dtype,
                shape,
                start,
                end,
            },
        );
    }
    // Contiguous from 0 to the end, as the format requires.
    let mut spans: Vec<(u64, u64)> = entries.values().map(|e| (e.start, e.end)).collect();
    spans.sort_unstable();
    let mut at = 0;
    for (start, end) in spans {
        if start != at {
            return Err(invalid(format!(
                "tensor data not contiguous: a tensor starts at {start}, expected {at}"
            )));
        }
        at = end;
    }
    if at != data_len {
        return Err(invalid(format!(
            "tensors end at {at} of {data_len} data bytes"
        )));
    }
    Ok((entries, metadata))
}

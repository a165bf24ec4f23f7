//! [`PackedInt4`]: group-wise int4 weights with a scale and a zero point
//! per group of K, packed two per byte (torchao's int4 weight-only layout
//! in values, GPTQ/AWQ's in meaning).

use super::packed::{nibble_at, pack_nibbles, param_index};
use super::PACK_LINES;
use crate::error::checked_len_of;
use crate::tensor::{MatRef, Tensor};
use crate::Error;

/// Group sizes along K that [`PackedInt4`] accepts.
pub const INT4_GROUP_SIZES: [usize; 3] = [32, 64, 128];

/// Group-wise int4 weights, `lines × k` (PyTorch's `[out, in]`): each
/// group of `group` consecutive values of a line has an f32 scale `s` and
/// a zero point `z` in 0..=15, and element `(line, kk)` stands for
/// `(q − z) · s` with `q` its 4-bit code in 0..=15, as GPTQ and AWQ
/// checkpoints define it (integer zero points). Stored two codes per byte,
/// in the layout of [`super::PackedFp4`], with the scales and zero points
/// of each group of 8 lines side by side: 4 bits per weight plus 40 bits
/// per group (4.3125 bits per weight at group 128).
///
/// Products: [`crate::gemm::weight_only_gemm_int4`], whose contract is the
/// block-scaled one with elements `q − z` (exact integers) and block
/// scales `s`.
///
/// ```
/// use mixprec::block_scaled::PackedInt4;
/// use mixprec::MatRef;
/// let w: Vec<f32> = (0..4 * 64).map(|i| (i % 16) as f32 * 0.25 - 1.0).collect();
/// let q = PackedInt4::quantize(MatRef::from_row_major(&w, 4, 64)?, 32)?;
/// // Each group spans -1 ..= 2.75: scale 3.75 / 15 = 0.25, zero point 4.
/// assert_eq!((q.scale(0, 0), q.zero_point(0, 0)), (Some(0.25), Some(4)));
/// assert_eq!(q.dequantize()?.as_slice(), &w[..]); // these values are exact
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PackedInt4 {
    lines: usize,
    k: usize,
    group: usize,
    codes: Vec<u8>,
    /// Per group of 8 lines, per block: the 8 lines' scales (padding: 1).
    scales: Vec<f32>,
    /// Laid out as `scales` (padding: 0).
    zeros: Vec<u8>,
}

impl PackedInt4 {
    /// Quantizes `w` (`lines × k`, f32) per group of `group` values along
    /// k with the asymmetric min/max rule of GPTQ's and AWQ's quantizers:
    /// `s = (max − min) / 15` (at least 1e-5 / 15, so a constant group
    /// keeps a finite scale), `z = round(−min / s)` clamped to 0..=15, and
    /// `q = clamp(round(x / s) + z, 0, 15)`, rounding half to even.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a group size other than 32, 64 or
    /// 128, a K that is not a multiple of it, or a NaN or infinite weight
    /// (named by line and column); [`Error::ShapeOverflow`].
    pub fn quantize(w: MatRef<'_, f32>, group: usize) -> Result<Self, Error> {
        let (lines, k) = (w.rows(), w.cols());
        let blocks = check_shape(lines, k, group)?;
        let mut q = vec![0u8; lines * k];
        let mut scales = vec![0.0f32; lines * blocks];
        let mut zeros = vec![0u8; lines * blocks];
        for line in 0..lines {
            for blk in 0..blocks {
                let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
                for kk in blk * group..(blk + 1) * group {
                    let x = w.at(line, kk);
                    if !x.is_finite() {
                        return Err(Error::InvalidParameter {
                            name: "PackedInt4::quantize weight",
                            value: format!("{x} at line {line}, column {kk}"),
                            requirement: "finite",
                        });
                    }
                    (lo, hi) = (lo.min(x), hi.max(x));
                }
                // (hi − lo) in f64: no overflow for any finite pair.
                let s = ((f64::from(hi) - f64::from(lo)).max(1e-5) / 15.0) as f32;
                let z = (-f64::from(lo) / f64::from(s))
                    .round_ties_even()
                    .clamp(0.0, 15.0) as u8;
                for kk in blk * group..(blk + 1) * group {
                    let v = (f64::from(w.at(line, kk)) / f64::from(s)).round_ties_even();
                    q[line * k + kk] = (v + f64::from(z)).clamp(0.0, 15.0) as u8;
                }
                scales[line * blocks + blk] = s;
                zeros[line * blocks + blk] = z;
            }
        }
        Self::from_parts(lines, k, group, &q, &scales, &zeros)
    }

    /// Weights quantized elsewhere (a checkpoint): `q` row-major `lines × k`
    /// codes in 0..=15 (one per byte), `scales` and `zeros` row-major
    /// `lines × (k / group)`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a group size other than 32, 64 or
    /// 128, a K that is not a multiple of it, a code or zero point above
    /// 15, or a scale that is not finite and > 0; [`Error::LengthMismatch`]
    /// for parts of the wrong length; [`Error::ShapeOverflow`].
    pub fn from_parts(
        lines: usize,
        k: usize,
        group: usize,
        q: &[u8],
        scales: &[f32],
        zeros: &[u8],
    ) -> Result<Self, Error> {
        let blocks = check_shape(lines, k, group)?;
        for (what, expected, actual) in [
            ("PackedInt4 codes (lines × k)", lines * k, q.len()),
            (
                "PackedInt4 scales (lines × k / group)",
                lines * blocks,
                scales.len(),
            ),
            (
                "PackedInt4 zero points (lines × k / group)",
                lines * blocks,
                zeros.len(),
            ),
        ] {
            if expected != actual {
                return Err(Error::LengthMismatch {
                    what,
                    expected,
                    actual,
                });
            }
        }
        let above_15 = |v: &[u8]| v.iter().position(|&x| x > 15);
        for (name, data) in [("PackedInt4 code", q), ("PackedInt4 zero point", zeros)] {
            if let Some(i) = above_15(data) {
                return Err(Error::InvalidParameter {
                    name,
                    value: format!("{} at {i}", data[i]),
                    requirement: "in 0..=15",
                });
            }
        }
        if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::InvalidParameter {
                name: "PackedInt4 scale",
                value: format!("{} at {i}", scales[i]),
                requirement: "finite and > 0",
            });
        }
        let padded = lines.div_ceil(PACK_LINES) * blocks * PACK_LINES;
        let (mut s, mut z) = (vec![1.0f32; padded], vec![0u8; padded]);
        for line in 0..lines {
            for blk in 0..blocks {
                let at = param_index(line, blk, blocks);
                s[at] = scales[line * blocks + blk];
                z[at] = zeros[line * blocks + blk];
            }
        }
        Ok(Self {
            lines,
            k,
            group,
            codes: pack_nibbles(lines, k, |line, kk| q[line * k + kk]),
            scales: s,
            zeros: z,
        })
    }

    /// Lines (outputs of the product).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Length of each line: the K of a GEMM.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Values of K per scale and zero point.
    pub fn group(&self) -> usize {
        self.group
    }

    /// The scale of `line`'s group `blk` (`None` out of range).
    pub fn scale(&self, line: usize, blk: usize) -> Option<f32> {
        let blocks = self.k / self.group;
        (line < self.lines && blk < blocks).then(|| self.scales[param_index(line, blk, blocks)])
    }

    /// The zero point of `line`'s group `blk` (`None` out of range).
    pub fn zero_point(&self, line: usize, blk: usize) -> Option<u8> {
        let blocks = self.k / self.group;
        (line < self.lines && blk < blocks).then(|| self.zeros[param_index(line, blk, blocks)])
    }

    /// The code `q` (0..=15) of element `(line, kk)` (`None` out of range).
    pub fn code(&self, line: usize, kk: usize) -> Option<u8> {
        (line < self.lines && kk < self.k).then(|| nibble_at(&self.codes, self.k, line, kk))
    }

    /// Bytes held: half a byte per weight, and per group of K a 4-byte scale
    /// and a 1-byte zero point.
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + 5 * self.scales.len()
    }

    /// `(q − z) · s` for every element (one rounding each), `lines × k`.
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] only if the shape cannot be allocated.
    pub fn dequantize(&self) -> Result<Tensor<f32>, Error> {
        let blocks = self.k / self.group;
        let mut out = vec![0.0f32; checked_len_of::<f32>(&[self.lines, self.k])?];
        for line in 0..self.lines {
            for kk in 0..self.k {
                let at = param_index(line, kk / self.group, blocks);
                let q = f32::from(nibble_at(&self.codes, self.k, line, kk));
                out[line * self.k + kk] = (q - f32::from(self.zeros[at])) * self.scales[at];
            }
        }
        Tensor::from_vec(&[self.lines, self.k], out)
    }

    /// The packed codes, scales and zero points, for the kernels.
    pub(crate) fn parts(&self) -> (&[u8], &[f32], &[u8]) {
        (&self.codes, &self.scales, &self.zeros)
    }
}

/// Group size and K checks; the number of groups per line.
fn check_shape(lines: usize, k: usize, group: usize) -> Result<usize, Error> {
    if !INT4_GROUP_SIZES.contains(&group) || !k.is_multiple_of(group) {
        return Err(Error::InvalidParameter {
            name: "PackedInt4 group size",
            value: format!("group {group}, k {k}"),
            requirement: "32, 64 or 128, dividing k (block_scaled::pad_k pads k)",
        });
    }
    checked_len_of::<f32>(&[lines, k])?;
    Ok(k / group)
}

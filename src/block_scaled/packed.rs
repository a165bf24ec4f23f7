//! [`PackedFp4`]: FP4 weights packed two codes a byte for the small-batch
//! block-scaled GEMM.

use super::{BlockScaled, ScaleKind};
use crate::dtype::F4E2M1;

/// Lines per group of a [`PackedFp4`] (one AVX2 register of i32 sums).
pub(crate) const PACK_LINES: usize = 8;

/// FP4 weights (a [`BlockScaled<F4E2M1>`], `lines × k`, as `block_gemm`'s
/// B) packed once for products with few rows
/// ([`crate::gemm::block_gemm_packed`], [`crate::gemm::weight_only_gemm_packed`]):
/// two codes per byte, in groups of eight lines interleaved four values of
/// k at a time, with each group's block scales side by side. The scales
/// keep their own encoding, one byte each: E8M0 for MX, E4M3 for NVFP4
/// (with a 256-entry table of the f32 values they stand for, `fl(s_t ·
/// e4m3)` with a tensor scale; E8M0 needs none), so that [`Self::size_bytes`] is 4.25 bits
/// per weight for MXFP4 and 4.5 (plus 1 KiB) for NVFP4; scales given as
/// plain f32s ([`BlockScaled::from_parts`]) stay f32 (5 bits per weight at
/// block 32). The layout is private; [`Self::to_block_scaled`] gives the
/// matrix back exactly.
///
/// ```
/// use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp4};
/// use mixprec::gemm::{block_gemm, block_gemm_packed, Epilogue, Parallelism};
/// use mixprec::{MatMut, MatRef, F4E2M1};
/// let w: Vec<f32> = (0..20 * 64).map(|i| ((i % 11) as f32 - 5.0) * 0.3).collect();
/// let x: Vec<f32> = (0..64).map(|i| (i % 5) as f32 - 2.0).collect();
/// let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 20, 64)?, MxScaleMode::Floor)?;
/// let a = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&x, 1, 64)?, MxScaleMode::Floor)?;
/// let packed = PackedFp4::new(&b);
/// let (mut y1, mut y2) = ([0.0f32; 20], [0.0f32; 20]);
/// block_gemm_packed(&a, &packed, MatMut::from_row_major(&mut y1, 1, 20)?, &Epilogue::new(), Parallelism::Serial)?;
/// block_gemm(&a, &b, MatMut::from_row_major(&mut y2, 1, 20)?, &Epilogue::new(), Parallelism::Serial)?;
/// assert_eq!(y1, y2); // the same bits
/// assert_eq!(packed.to_block_scaled(), b);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PackedFp4 {
    lines: usize,
    k: usize,
    block: usize,
    line_group: usize,
    /// Per group of 8 lines, per 8 values of k: 32 bytes; byte `4j + i`
    /// holds line j's code at k = 8q + i (low nibble) and 8q + 4 + i (high).
    codes: Vec<u8>,
    /// Per group, per block: the 8 lines' scales (padding lines: 1).
    scales: PackedScales,
    kind: ScaleKind,
}

/// The scales of a [`PackedFp4`], per group and block, the 8 lines' side
/// by side.
#[derive(Clone, Debug, PartialEq)]
enum PackedScales {
    /// E8M0 codes, one byte per scale: 2^(code − 127), NaN for 0xFF.
    /// `normal`: no code is 0 or 0xFF (every scale a normal power of two),
    /// so the kernels can decode them with a shift.
    E8M0 { codes: Vec<u8>, normal: bool },
    /// One byte per scale (an E4M3 code) and the f32 each code stands for.
    /// `e4m3_times`: the tensor scale s_t (1 without one) when every used
    /// code's value is `fl(e4m3 · s_t)` as [`e4m3_scale`] computes it, so
    /// that the kernels may decode the codes themselves.
    Codes {
        codes: Vec<u8>,
        table: Box<[f32; 256]>,
        e4m3_times: Option<f32>,
    },
    /// Plain f32 scales.
    F32(Vec<f32>),
}

/// `lines × k` 4-bit codes (`code(line, kk)`, low nibble) in the packed
/// layout: per group of [`PACK_LINES`] lines, per 8 values of k, 32 bytes;
/// byte `4j + i` holds line j's code at k = 8q + i (low nibble) and
/// 8q + 4 + i (high). Padding lines are code 0.
pub(super) fn pack_nibbles(lines: usize, k: usize, code: impl Fn(usize, usize) -> u8) -> Vec<u8> {
    // Fits: lines · k is a checked product of the caller's matrix, and
    // this is at most (lines + 7) · k / 2 bytes.
    let mut codes = vec![0u8; lines.div_ceil(PACK_LINES) * k / 8 * 32];
    for line in 0..lines {
        let (g, j) = (line / PACK_LINES, line % PACK_LINES);
        for kk in 0..k {
            let (q, r) = (kk / 8, kk % 8);
            let byte = &mut codes[(g * k / 8 + q) * 32 + 4 * j + r % 4];
            *byte |= (code(line, kk) & 0x0F) << (4 * (r / 4));
        }
    }
    codes
}

/// The code of `(line, kk)` in [`pack_nibbles`]'s layout.
pub(super) fn nibble_at(codes: &[u8], k: usize, line: usize, kk: usize) -> u8 {
    let (g, j) = (line / PACK_LINES, line % PACK_LINES);
    let (q, r) = (kk / 8, kk % 8);
    (codes[(g * k / 8 + q) * 32 + 4 * j + r % 4] >> (4 * (r / 4))) & 0x0F
}

/// Where the parameter (scale, zero point) of `(line, blk)` sits in the
/// packed layout: per group of lines, per block, the lines side by side.
pub(super) fn param_index(line: usize, blk: usize, blocks: usize) -> usize {
    ((line / PACK_LINES) * blocks + blk) * PACK_LINES + line % PACK_LINES
}

/// The one-byte code of each scale of `b` (E8M0 for MX, E4M3 for NVFP4),
/// index by index, or `None` for plain f32 scales.
fn scale_codes(b: &BlockScaled<F4E2M1>) -> Option<Vec<u8>> {
    match &b.kind {
        ScaleKind::E8M0 => b
            .e8m0_scales()
            .map(|s| s.iter().map(|c| c.to_bits()).collect()),
        ScaleKind::Nvfp4 { block_scales, .. } => {
            Some(block_scales.iter().map(|c| c.to_bits()).collect())
        }
        ScaleKind::F32 => None,
    }
}

/// The value of an E8M0 code as [`crate::F8E8M0::to_f32`] gives it, without
/// branches: 2^(c − 127) (2^-127 subnormal for 0), NaN for 0xFF.
#[inline]
fn e8m0_value(c: u8) -> f32 {
    let bits = u32::from(c) << 23;
    let bits = if c == 0 { 0x0040_0000 } else { bits };
    f32::from_bits(if c == 0xFF { f32::NAN.to_bits() } else { bits })
}

/// An E4M3 code's value times `t` as the dense kernel decodes it
/// (`x86_fp4_dense::e4m3_to_f32`): normal codes by moving the exponent and
/// mantissa into place, subnormal ones as `m · 2^-9`, 0x7F/0xFF as the
/// NaNs of [`crate::F8E4M3::to_f32`] (±0x7FF00000); then one f32 multiply
/// by `t`.
pub(crate) fn e4m3_scale(c: u8, t: f32) -> f32 {
    let mag = u32::from(c & 0x7F);
    let sign = u32::from(c & 0x80) << 24;
    let bits = if mag == 0x7F {
        0x7FF0_0000
    } else if mag < 8 {
        // m · 2^-9
        (mag as f32 * f32::from_bits(0x3B00_0000)).to_bits()
    } else {
        (mag << 20) + (120 << 23)
    };
    f32::from_bits(bits | sign) * t
}

/// The scales as codes and a table, when every code stands for one f32
/// (bit for bit) throughout `scales`; else `None`.
fn code_table(codes: &[u8], scales: &[f32]) -> Option<Box<[f32; 256]>> {
    let mut table = Box::new([1.0f32; 256]);
    let mut seen = [false; 256];
    for (&c, &s) in codes.iter().zip(scales) {
        let i = usize::from(c);
        if seen[i] && table[i].to_bits() != s.to_bits() {
            return None;
        }
        (seen[i], table[i]) = (true, s);
    }
    Some(table)
}

impl PackedFp4 {
    /// Packs `b` (any FP4 block-scaled matrix: MXFP4, NVFP4, or from parts).
    pub fn new(b: &BlockScaled<F4E2M1>) -> Self {
        let (lines, k, block) = (b.lines, b.k, b.block);
        let groups = lines.div_ceil(PACK_LINES);
        let blocks = k.checked_div(block).unwrap_or(0);
        // Fits: lines · k is a checked product and this is at most
        // (lines + 7) · k / 2 bytes.
        let codes = pack_nibbles(lines, k, |line, kk| b.data[line * k + kk].to_bits());
        let mut scales = vec![1.0f32; groups * blocks * PACK_LINES];
        let scale_bytes = scale_codes(b);
        let table = scale_bytes
            .as_deref()
            .and_then(|c| code_table(c, &b.scales));
        // Padding lines: code 127 (1 in E8M0; their outputs are never written).
        let mut packed_codes = vec![127u8; scales.len()];
        for line in 0..lines {
            for blk in 0..blocks {
                let at = param_index(line, blk, blocks);
                let from = b.scale_index(line, blk);
                scales[at] = b.scales[from];
                if let Some(c) = &scale_bytes {
                    packed_codes[at] = c[from];
                }
            }
        }
        let e8m0 = matches!(b.kind, ScaleKind::E8M0)
            && scale_bytes.as_ref().is_some_and(|c| {
                c.iter()
                    .zip(&b.scales)
                    .all(|(&c, s)| e8m0_value(c).to_bits() == s.to_bits())
            });
        let scales = match table {
            Some(_) if e8m0 => PackedScales::E8M0 {
                normal: !packed_codes.iter().any(|&c| c == 0 || c == 0xFF),
                codes: packed_codes,
            },
            // Padding lines read code 127, whatever it stands for: their
            // outputs are never written.
            Some(table) => {
                let e4m3_times = match b.nvfp4_scales() {
                    Some((_, t)) => Some(t.unwrap_or(1.0)).filter(|t| t.is_finite()),
                    None => None,
                }
                .filter(|&t| {
                    scale_bytes.as_ref().is_some_and(|c| {
                        c.iter()
                            .zip(&b.scales)
                            .all(|(&c, s)| e4m3_scale(c, t).to_bits() == s.to_bits())
                    })
                });
                PackedScales::Codes {
                    codes: packed_codes,
                    table,
                    e4m3_times,
                }
            }
            None => PackedScales::F32(scales),
        };
        Self {
            lines,
            k,
            block,
            line_group: b.line_group,
            codes,
            scales,
            kind: b.kind.clone(),
        }
    }

    /// Lines (outputs of the product).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Length of each line: the K of a GEMM.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Values of K per scale.
    pub fn block(&self) -> usize {
        self.block
    }

    /// Bytes held: the codes, the scales (one byte each for MX and NVFP4,
    /// four for plain f32 scales) and NVFP4's scale table (1 KiB).
    ///
    /// ```
    /// use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp4};
    /// use mixprec::{MatRef, F4E2M1};
    /// let w = vec![0.5f32; 256 * 1024];
    /// let b = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 256, 1024)?, MxScaleMode::Floor)?;
    /// let bytes = PackedFp4::new(&b).size_bytes();
    /// // 4.25 bits per weight.
    /// assert_eq!(bytes, 256 * 1024 * 17 / 32);
    /// # Ok::<(), mixprec::Error>(())
    /// ```
    pub fn size_bytes(&self) -> usize {
        self.codes.len()
            + match &self.scales {
                PackedScales::E8M0 { codes, .. } => codes.len(),
                PackedScales::Codes { codes, table, .. } => codes.len() + 4 * table.len(),
                PackedScales::F32(s) => 4 * s.len(),
            }
    }

    /// The packed matrix back as a [`BlockScaled<F4E2M1>`], exactly.
    pub fn to_block_scaled(&self) -> BlockScaled<F4E2M1> {
        let (k, block) = (self.k, self.block);
        let blocks = k.checked_div(block).unwrap_or(0);
        let mut data = vec![F4E2M1::ZERO; self.lines * k];
        let mut scales = vec![0.0f32; self.lines.div_ceil(self.line_group) * blocks];
        for line in 0..self.lines {
            for (kk, v) in data[line * k..(line + 1) * k].iter_mut().enumerate() {
                *v = F4E2M1::from_bits(nibble_at(&self.codes, k, line, kk));
            }
            for blk in 0..blocks {
                scales[(line / self.line_group) * blocks + blk] =
                    self.scale_at(param_index(line, blk, blocks));
            }
        }
        BlockScaled {
            lines: self.lines,
            k,
            block,
            line_group: self.line_group,
            data,
            scales,
            kind: self.kind.clone(),
        }
    }

    /// The packed scale at index `i` (group, block, line) as f32.
    fn scale_at(&self, i: usize) -> f32 {
        match &self.scales {
            PackedScales::E8M0 { codes, .. } => e8m0_value(codes[i]),
            PackedScales::Codes { codes, table, .. } => table[usize::from(codes[i])],
            PackedScales::F32(s) => s[i],
        }
    }

    /// The packed FP4 codes, for the kernels: group `g` at `g · 4k` bytes.
    pub(crate) fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The E4M3 scale codes of groups `g0..g0 + gs` and the tensor scale
    /// they are multiplied by, where every used code's value is
    /// [`e4m3_scale`]'s (NVFP4); else `None`.
    pub(crate) fn e4m3_scales(&self, g0: usize, gs: usize) -> Option<(&[u8], f32)> {
        let per_group = self.k.checked_div(self.block).unwrap_or(0) * PACK_LINES;
        match &self.scales {
            PackedScales::Codes {
                codes,
                e4m3_times: Some(t),
                ..
            } => Some((&codes[g0 * per_group..(g0 + gs) * per_group], *t)),
            _ => None,
        }
    }

    /// The scales of groups `g0..g0 + gs` for [`crate::gemm::kernel::Kernel::fp4_dense`]:
    /// E8M0 codes as stored when all are normal powers of two (decoded in
    /// the kernel by a shift), else f32 as [`Self::group_scales`] gives
    /// them ([`Self::e4m3_scales`] serves NVFP4's codes).
    pub(crate) fn dense_scales<'a>(
        &'a self,
        g0: usize,
        gs: usize,
        buf: &'a mut Vec<f32>,
    ) -> crate::gemm::kernel::GroupScales<'a> {
        let per_group = self.k.checked_div(self.block).unwrap_or(0) * PACK_LINES;
        match &self.scales {
            PackedScales::E8M0 {
                codes,
                normal: true,
            } => crate::gemm::kernel::GroupScales::E8M0(
                &codes[g0 * per_group..(g0 + gs) * per_group],
            ),
            _ => crate::gemm::kernel::GroupScales::F32(self.group_scales(g0, gs, buf)),
        }
    }

    /// The f32 scales of groups `g0..g0 + gs` (per group, per block, the 8
    /// lines' side by side), decoded into `buf` where they are stored as
    /// codes.
    pub(crate) fn group_scales<'a>(
        &'a self,
        g0: usize,
        gs: usize,
        buf: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        let per_group = self.k.checked_div(self.block).unwrap_or(0) * PACK_LINES;
        let range = g0 * per_group..(g0 + gs) * per_group;
        match &self.scales {
            PackedScales::E8M0 { codes, .. } => {
                buf.resize(range.len(), 0.0);
                // Branch-free, so that it vectorizes: one pass over 1/32 of
                // the weights' bytes.
                for (o, &c) in buf.iter_mut().zip(&codes[range]) {
                    *o = e8m0_value(c);
                }
                buf
            }
            PackedScales::Codes { codes, table, .. } => {
                buf.resize(range.len(), 0.0);
                for (o, &c) in buf.iter_mut().zip(&codes[range]) {
                    *o = table[usize::from(c)];
                }
                buf
            }
            PackedScales::F32(s) => &s[range],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{e4m3_scale, e8m0_value};
    use crate::{F8E4M3, F8E8M0};

    /// The decoders the kernels mirror give every code's value, bit for bit
    /// (all 256 codes of each format).
    #[test]
    fn scale_decoders_match_the_formats() {
        for c in 0..=255u8 {
            let want = F8E4M3::from_bits(c).to_f32().to_bits();
            assert_eq!(e4m3_scale(c, 1.0).to_bits(), want, "E4M3 {c:#04x}");
            let want = F8E8M0::from_bits(c).to_f32().to_bits();
            assert_eq!(e8m0_value(c).to_bits(), want, "E8M0 {c:#04x}");
        }
    }
}

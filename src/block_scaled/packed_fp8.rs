//! [`PackedFp8`]: E4M3 weights laid out for the small-batch weight-only
//! GEMM ([`crate::gemm::weight_only_gemm_fp8`]).

use super::packed::param_index;
use super::{BlockScaled, ScaleKind, PACK_LINES};
use crate::dtype::F8E4M3;

/// E4M3 weights (a [`BlockScaled<F8E4M3>`], `lines × k`: MXFP8, or scaled
/// FP8 such as DeepSeek-V3's 128 × 128 blocks) laid out once for products
/// with few rows of f32/bf16/f16 activations: in groups of eight lines,
/// for each value of k the eight lines' codes side by side (one load per
/// value), each group's block scales side by side as f32. A byte per
/// weight, plus 32 bits per block and line (9 bits per weight for MXFP8,
/// 8.25 for blocks of 128). The layout is private; [`Self::to_block_scaled`]
/// gives the matrix back exactly.
///
/// ```
/// use mixprec::block_scaled::{BlockScaled, MxScaleMode, PackedFp8};
/// use mixprec::gemm::{weight_only_gemm, weight_only_gemm_fp8, Epilogue, Parallelism};
/// use mixprec::{MatMut, MatRef, F8E4M3};
/// let w: Vec<f32> = (0..24 * 64).map(|i| ((i % 13) as f32 - 6.0) * 0.21).collect();
/// let x: Vec<f32> = (0..64).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
/// let b = BlockScaled::<F8E4M3>::mx(MatRef::from_row_major(&w, 24, 64)?, MxScaleMode::Floor)?;
/// let packed = PackedFp8::new(&b);
/// let a = MatRef::from_row_major(&x, 1, 64)?;
/// let (mut y1, mut y2) = ([0.0f32; 24], [0.0f32; 24]);
/// weight_only_gemm_fp8(a, &packed, MatMut::from_row_major(&mut y1, 1, 24)?, &Epilogue::new(), Parallelism::Serial)?;
/// weight_only_gemm(a, &b, MatMut::from_row_major(&mut y2, 1, 24)?, &Epilogue::new(), Parallelism::Serial)?;
/// assert_eq!(y1, y2); // the same bits
/// assert_eq!(packed.to_block_scaled(), b);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PackedFp8 {
    lines: usize,
    k: usize,
    block: usize,
    line_group: usize,
    /// The source matrix's scheme, for [`Self::to_block_scaled`].
    kind: ScaleKind,
    /// The source matrix's scales where lines share them (`line_group` >
    /// 1: 128 × 128 blocks); with one line per scale they are `scales`.
    group_scales: Option<Vec<f32>>,
    /// Per group of 8 lines, per value of k: the 8 lines' codes (padding
    /// lines 0).
    codes: Vec<u8>,
    /// Per group, per block: the 8 lines' scales (padding lines 1).
    scales: Vec<f32>,
    /// Some code is NaN (0x7F, 0xFF): the in-register decode does not
    /// apply, and products run on the matrix.
    nan_codes: bool,
}

impl PackedFp8 {
    /// Lays out `b` (any E4M3 block-scaled matrix).
    pub fn new(b: &BlockScaled<F8E4M3>) -> Self {
        let (lines, k) = (b.lines(), b.k());
        let blocks = k.checked_div(b.block()).unwrap_or(0);
        let groups = lines.div_ceil(PACK_LINES);
        // Fits: at most (lines + 7) · k bytes, lines · k a checked product.
        let mut codes = vec![0u8; groups * k * PACK_LINES];
        let mut scales = vec![1.0f32; groups * blocks * PACK_LINES];
        let data = b.data();
        for line in 0..lines {
            let (g, j) = (line / PACK_LINES, line % PACK_LINES);
            for (kk, v) in data[line * k..(line + 1) * k].iter().enumerate() {
                codes[(g * k + kk) * PACK_LINES + j] = v.to_bits();
            }
            for blk in 0..blocks {
                scales[param_index(line, blk, blocks)] = b.scales()[b.scale_index(line, blk)];
            }
        }
        Self {
            lines,
            k,
            block: b.block(),
            line_group: b.line_group,
            kind: b.kind.clone(),
            group_scales: (b.line_group > 1).then(|| b.scales.clone()),
            nan_codes: data.iter().any(|v| v.to_bits() & 0x7F == 0x7F),
            codes,
            scales,
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

    /// Bytes held: a byte per weight, four per block and line, and (for
    /// scales shared by several lines) the source matrix's scales.
    pub fn size_bytes(&self) -> usize {
        self.codes.len()
            + 4 * self.scales.len()
            + 4 * self.group_scales.as_ref().map_or(0, Vec::len)
    }

    /// The matrix back, exactly (the same scheme, scales and codes).
    pub fn to_block_scaled(&self) -> BlockScaled<F8E4M3> {
        let (lines, k) = (self.lines, self.k);
        let mut data = vec![F8E4M3::ZERO; lines * k];
        for (line, row) in data.chunks_exact_mut(k.max(1)).enumerate().take(lines) {
            let (g, j) = (line / PACK_LINES, line % PACK_LINES);
            for (kk, v) in row.iter_mut().enumerate() {
                *v = F8E4M3::from_bits(self.codes[(g * k + kk) * PACK_LINES + j]);
            }
        }
        let blocks = k.checked_div(self.block).unwrap_or(0);
        let scales = match &self.group_scales {
            Some(s) => s.clone(),
            None => (0..lines * blocks)
                .map(|i| self.scales[param_index(i / blocks.max(1), i % blocks.max(1), blocks)])
                .collect(),
        };
        BlockScaled {
            lines,
            k,
            block: self.block,
            line_group: self.line_group,
            data,
            scales,
            kind: self.kind.clone(),
        }
    }

    /// The packed codes and scales, for the kernels.
    pub(crate) fn parts(&self) -> (&[u8], &[f32]) {
        (&self.codes, &self.scales)
    }

    /// Whether the kernels may decode the codes in registers (no NaN code).
    pub(crate) fn streamable(&self) -> bool {
        !self.nan_codes
    }
}

//! [`PackedFp4`]: FP4 weights packed two codes a byte for the small-batch
//! block-scaled GEMM.

use super::{BlockScaled, ScaleKind};
use crate::dtype::F4E2M1;

/// Lines per group of a [`PackedFp4`] (one AVX2 register of i32 sums).
pub(crate) const PACK_LINES: usize = 8;

/// FP4 weights (a [`BlockScaled<F4E2M1>`], `lines × k`, as `block_gemm`'s
/// B) packed once for products with few rows
/// ([`crate::gemm::block_gemm_packed`]): two codes per byte, in groups of
/// eight lines interleaved four values of k at a time, with each group's
/// block scales side by side. Half the bytes of the unpacked matrix, read
/// in one sequential stream. The layout is private; [`Self::to_block_scaled`]
/// gives the matrix back exactly.
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
    scales: Vec<f32>,
    kind: ScaleKind,
}

impl PackedFp4 {
    /// Packs `b` (any FP4 block-scaled matrix: MXFP4, NVFP4, or from parts).
    pub fn new(b: &BlockScaled<F4E2M1>) -> Self {
        let (lines, k, block) = (b.lines, b.k, b.block);
        let groups = lines.div_ceil(PACK_LINES);
        let blocks = k.checked_div(block).unwrap_or(0);
        // Fits: lines · k is a checked product and this is at most
        // (lines + 7) · k / 2 bytes.
        let mut codes = vec![0u8; groups * k / 8 * 32];
        let mut scales = vec![1.0f32; groups * blocks * PACK_LINES];
        for line in 0..lines {
            let (g, j) = (line / PACK_LINES, line % PACK_LINES);
            let row = &b.data[line * k..(line + 1) * k];
            for (kk, v) in row.iter().enumerate() {
                let (q, r) = (kk / 8, kk % 8);
                let byte = &mut codes[(g * k / 8 + q) * 32 + 4 * j + r % 4];
                *byte |= (v.to_bits() & 0x0F) << (4 * (r / 4));
            }
            for blk in 0..blocks {
                scales[(g * blocks + blk) * PACK_LINES + j] = b.scales[b.scale_index(line, blk)];
            }
        }
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

    /// Bytes held (codes and scales).
    pub fn size_bytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len()
    }

    /// The packed matrix back as a [`BlockScaled<F4E2M1>`], exactly.
    pub fn to_block_scaled(&self) -> BlockScaled<F4E2M1> {
        let (k, block) = (self.k, self.block);
        let blocks = k.checked_div(block).unwrap_or(0);
        let mut data = vec![F4E2M1::ZERO; self.lines * k];
        let mut scales = vec![0.0f32; self.lines.div_ceil(self.line_group) * blocks];
        for line in 0..self.lines {
            let (g, j) = (line / PACK_LINES, line % PACK_LINES);
            for (kk, v) in data[line * k..(line + 1) * k].iter_mut().enumerate() {
                let (q, r) = (kk / 8, kk % 8);
                let byte = self.codes[(g * k / 8 + q) * 32 + 4 * j + r % 4];
                *v = F4E2M1::from_bits(byte >> (4 * (r / 4)));
            }
            for blk in 0..blocks {
                scales[(line / self.line_group) * blocks + blk] =
                    self.scales[(g * blocks + blk) * PACK_LINES + j];
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

    /// The packed codes and scales, for the kernels.
    pub(crate) fn parts(&self) -> (&[u8], &[f32]) {
        (&self.codes, &self.scales)
    }
}

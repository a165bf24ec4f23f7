//! What the [`Kernel`](super::Kernel) methods take besides packed panels:
//! the operand descriptions of the FP4, FP8, direct and block-scaled
//! `[out, in]` kernels, and the constants their contracts name.

use crate::dtype::{DType, FloatElement};

/// Eight lines of FP4 codes (one per byte, low nibble) for
/// [`Kernel::fp4_dots8`]: line `j` starts at `codes[j * ld]` and holds
/// `blocks · block` codes; its block `blk` has the scale
/// `scales[scale_start[j] + blk]`.
pub(crate) struct Fp4Lines<'a> {
    pub codes: &'a [u8],
    pub ld: usize,
    pub block: usize,
    pub blocks: usize,
    pub scales: &'a [f32],
    pub scale_start: [usize; 8],
}

/// Unsigned int4 codes 0..=15 → twice their value (the group-wise int4
/// weights of [`Kernel::fp4_dense`] with zero points).
pub(crate) const INT4_TIMES_2: [i8; 16] =
    [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];

/// FP4 E2M1 codes 0..=15 → twice their value, an exact small integer.
pub(crate) const FP4_TIMES_2: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Rows of A per [`Kernel::fp4_dense`] and [`Kernel::fp8_dense`] call on
/// the AVX2 tier (the ymm kernels, which the AVX-512 tier also runs on an
/// odd last group).
pub(crate) const FP4_DENSE_MR: usize = 4;
/// Rows of A per [`Kernel::fp4_dense`] and [`Kernel::fp8_dense`] call on
/// the AVX-512 tier (its [`Kernel::DENSE_ROWS`]): 16 chains at two pairs
/// of groups, each code decoded once for all 8 rows.
pub(crate) const DENSE_ROWS_WIDE: usize = 8;
/// Rows of A per [`Kernel::fp4_dense`] call on the AVX-512 tier (its
/// [`super::Kernel::fp4_dense_rows`], except where the core has two load
/// ports): 16 chains on one pair of groups, each code decoded once for 16
/// rows.
pub(crate) const FP4_DENSE_ROWS_WIDE: usize = 16;
/// Groups of 8 packed lines per [`Kernel::fp4_dense`] call.
pub(crate) const FP4_DENSE_GROUPS: usize = 8;

/// Up to [`FP4_DENSE_MR`] rows of f32 activations for
/// [`Kernel::fp4_dense`]: row `r` holds `a[r * k..][..k]` and its block
/// scales `sa[r * (k / block)..]`. With `prescaled`, the rows hold
/// a · [`FP4_DENSE_A_SCALE`], which the driver checked is exact (every
/// value 0, not finite, or at least [`FP4_DENSE_MIN_A`] in magnitude).
pub(crate) struct Fp4DenseRows<'a> {
    pub a: &'a [f32],
    pub sa: &'a [f32],
    pub rows: usize,
    pub k: usize,
    pub block: usize,
    pub prescaled: bool,
    /// Every block scale in `sa` is 1.0, so fl(sa · sb) is sb and the
    /// kernels may skip the product.
    pub unit_scales: bool,
    /// The same rows in panels of [`FP8_STAGED_PANEL`] (per step, the
    /// panel's 8 values side by side, zeros past the last row), or empty.
    /// The AVX-512 FP4 kernel reads its 16-row calls from here: two
    /// pointers for all rows, where 16 row pointers spilled.
    pub panels: &'a [f32],
}

impl<'a> Fp4DenseRows<'a> {
    /// These rows in parts of at most `most` (the first row of each part,
    /// and the part), for a kernel that takes fewer rows per call.
    pub(crate) fn parts(
        &self,
        most: usize,
    ) -> impl Iterator<Item = (usize, Fp4DenseRows<'a>)> + '_ {
        let blocks = self.k.checked_div(self.block).unwrap_or(0);
        (0..self.rows).step_by(most.max(1)).map(move |r0| {
            let part = Fp4DenseRows {
                a: &self.a[r0 * self.k..],
                sa: &self.sa[r0 * blocks..],
                rows: most.min(self.rows - r0),
                // A part's panels start at a panel boundary, or it has none.
                panels: match self.panels.get(r0 * self.k..) {
                    Some(p) if r0.is_multiple_of(FP8_STAGED_PANEL) => p,
                    _ => &[],
                },
                ..*self
            };
            (r0, part)
        })
    }
}

/// The scales of [`Kernel::fp4_dense`]'s groups (per group, per block, the
/// 8 lines' side by side): f32 values, or codes decoded in the kernel:
/// E8M0 codes in 1..=254 (normal powers of two, no NaN), or E4M3 codes
/// times a tensor scale.
#[derive(Clone, Copy)]
pub(crate) enum GroupScales<'a> {
    F32(&'a [f32]),
    E8M0(&'a [u8]),
    /// E4M3 codes and the tensor scale each value is multiplied by
    /// (NVFP4; `block_scaled::packed::e4m3_scale`).
    E4M3(&'a [u8], f32),
}

impl GroupScales<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            GroupScales::F32(s) => s.len(),
            GroupScales::E8M0(c) | GroupScales::E4M3(c, _) => c.len(),
        }
    }

    /// Scale `i` as f32 (E8M0 as [`crate::F8E8M0::to_f32`]).
    pub(crate) fn at(&self, i: usize) -> f32 {
        match self {
            GroupScales::F32(s) => s[i],
            GroupScales::E8M0(c) => crate::F8E8M0::from_bits(c[i]).to_f32(),
            GroupScales::E4M3(c, t) => crate::block_scaled::e4m3_scale(c[i], *t),
        }
    }
}

/// What [`Kernel::fp8_dense`]'s prescaled activations are multiplied by:
/// 2^8, so that the weights enter as the exact f32s `e4m3 · 2^-8` (the
/// codes read as f16).
pub(crate) const FP8_DENSE_A_SCALE: f32 = 256.0;
/// Rows one [`Kernel::fp8_staged`] call takes at most.
pub(crate) const FP8_STAGED_MAX_ROWS: usize = 32;
/// Rows per panel of [`Kernel::fp8_staged`]'s A.
pub(crate) const FP8_STAGED_PANEL: usize = 8;

/// What [`Kernel::fp4_dense`]'s prescaled activations are multiplied by:
/// 2^-25, so that the weights enter as the exact f32s 2·w · 2^24.
pub(crate) const FP4_DENSE_A_SCALE: f32 = 1.0 / (1u64 << 25) as f32;
/// The smallest magnitude of a non-zero activation whose product with
/// [`FP4_DENSE_A_SCALE`] is exact (a normal f32): 2^-101.
pub(crate) const FP4_DENSE_MIN_A: f32 = f32::MIN_POSITIVE * (1u64 << 25) as f32;

/// Rows of an A panel of the FP4 × FP4 integer tiles ([`Kernel::fp4_tile`]).
pub(crate) const FP4_MR: usize = 4;
/// Columns of a B panel of the FP4 × FP4 integer tiles.
pub(crate) const FP4_NR: usize = 16;
/// What A's FP4 integers are offset by, so that they are unsigned bytes
/// (2·a + 12 in 0..=24) for `vpmaddubsw`; the tile subtracts
/// `FP4_OFFSET · Σ 2·b` per block and column.
pub(crate) const FP4_OFFSET: i32 = 12;

/// One `FP4_MR × FP4_NR` tile of an FP4 × FP4 block-scaled product, the
/// operands as exact integers (`driver::serial_fp4_tiles` packs them).
pub(crate) struct Fp4Tile<'a> {
    /// Per k-quad, `FP4_MR` rows of 4 bytes: 2·a + [`FP4_OFFSET`].
    pub a: &'a [u8],
    /// Per k-quad, `FP4_NR` columns of 4 bytes: 2·b.
    pub b: &'a [i8],
    /// Per block, `FP4_NR` values: `FP4_OFFSET · Σ_block 2·b` per column.
    pub corr: &'a [i32],
    /// A's row scales: block `i` at `sa[i · sa_stride..][..FP4_MR]`.
    pub sa: (&'a [f32], usize),
    /// B's column scales: block `i` at `sb[i · sb_stride..][..FP4_NR]`.
    pub sb: (&'a [f32], usize),
}

/// The element type the direct kernels widen B from (exactly), and its
/// size in bytes; `None` for the types they do not read in place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirectLoad {
    F32,
    F16,
    BF16,
}

impl DirectLoad {
    pub(crate) fn of<T: FloatElement>() -> Option<Self> {
        match T::DTYPE {
            DType::F32 => Some(Self::F32),
            DType::F16 => Some(Self::F16),
            DType::BF16 => Some(Self::BF16),
            _ => None,
        }
    }

    pub(crate) const fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }
}

/// The element type the direct-B kernels ([`Kernel::tile_direct`]: rows
/// of B read in place) widen from, exactly: the dense types of
/// [`DirectLoad`], and the FP8 formats (E4M3 by its f16 pattern times
/// 2^8, E5M2 as the top byte of an f16). `None` for the types they do not
/// read in place.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowLoad {
    Dense(DirectLoad),
    E4M3,
    /// E4M3 as its f16 pattern alone, `w · 2^-8` (for A held times 2^8:
    /// [`DirectReads::a_times_256`]).
    E4M3Over256,
    E5M2,
}

impl RowLoad {
    pub(crate) fn of<T: FloatElement>() -> Option<Self> {
        match T::DTYPE {
            DType::F8E4M3 => Some(Self::E4M3),
            DType::F8E5M2 => Some(Self::E5M2),
            _ => DirectLoad::of::<T>().map(Self::Dense),
        }
    }

    /// The load of `T` for a call that `reads` so: E4M3 without its
    /// multiply where A holds each value times 2^8.
    pub(crate) fn read<T: FloatElement>(reads: DirectReads) -> Option<Self> {
        match Self::of::<T>() {
            Some(Self::E4M3) if reads.a_times_256 => Some(Self::E4M3Over256),
            load => {
                assert!(!reads.a_times_256, "A times 2^8 only for E4M3 weights");
                load
            }
        }
    }

    pub(crate) const fn size(self) -> usize {
        match self {
            Self::Dense(load) => load.size(),
            Self::E4M3 | Self::E4M3Over256 | Self::E5M2 => 1,
        }
    }
}

/// How a [`Kernel::tile_direct`](super::Kernel::tile_direct) call reads its operands (the
/// traversal and the widening; never the bits).
#[derive(Clone, Copy, Default)]
pub(crate) struct DirectReads {
    /// B's rows come from memory this once (a single A panel sweeps
    /// them): the kernel then streams fewer rows of B at a time, as many
    /// as the hardware prefetchers follow; otherwise (several panels read
    /// B from cache) it may take more per pass.
    pub(crate) from_memory: bool,
    /// A holds each value times 2^8 (exact: the driver checks), only
    /// where
    /// [`Kernel::direct_wants_a_times_256`](super::Kernel::direct_wants_a_times_256):
    /// the kernel then takes each E4M3 weight as its f16 pattern, `w · 2^-8`,
    /// and skips its multiply by 2^8 (the same products, the same bits).
    pub(crate) a_times_256: bool,
}

/// Lines of codes per group of a [`Kernel::blocks_t`] call.
pub(crate) const BLOCKS_T_LINES: usize = 16;
/// Groups of [`BLOCKS_T_LINES`] lines a [`Kernel::blocks_t`] call takes
/// at most.
pub(crate) const BLOCKS_T_GROUPS: usize = 2;

/// The rows of each A panel of a [`Kernel::blocks_t`] call of `rows` rows:
/// `rows` itself up to the kernel's `DIRECT_MR`, so that a product of a few
/// rows packs (and its kernel reads) no zero rows; 16 where the kernel
/// takes wide panels ([`super::Kernel::blocks_t_wide_panels`]) and `rows`
/// is a multiple of 16.
pub(crate) fn blocks_t_panel_rows<K: super::Kernel>(rows: usize) -> usize {
    if K::blocks_t_wide_panels() && rows.is_multiple_of(16) {
        16
    } else {
        rows.clamp(1, K::DIRECT_MR)
    }
}

/// The operands of [`Kernel::blocks_t`]: `rows` rows of A (at most
/// [`Kernel::blocks_t_max_rows`]) and `groups` groups of
/// [`BLOCKS_T_LINES`] lines. `a`, the packed A (panels of
/// [`blocks_t_panel_rows`] rows, each `k` steps of that many floats); `sa`, row `r`'s
/// block scales at `sa[r · k / block..]`; `lines`, the lines of `k` codes,
/// `ld` apart; `sb_start[j]`, where line `j`'s block scales start in `sb`;
/// `out`, row `r`, line `j` at `out[r · out_ld + j]`. `a_times_256`: `a`
/// holds each value times 2^8 (exact), only where
/// [`Kernel::blocks_t_wants_a_times_256`](super::Kernel::blocks_t_wants_a_times_256).
pub(crate) struct BlocksTile<'a, T> {
    pub(crate) rows: usize,
    pub(crate) groups: usize,
    pub(crate) k: usize,
    pub(crate) block: usize,
    pub(crate) a: &'a [f32],
    pub(crate) sa: &'a [f32],
    pub(crate) lines: &'a [T],
    pub(crate) ld: usize,
    pub(crate) sb: &'a [f32],
    pub(crate) sb_start: [usize; BLOCKS_T_LINES * BLOCKS_T_GROUPS],
    pub(crate) out: &'a mut [f32],
    pub(crate) out_ld: usize,
    pub(crate) a_times_256: bool,
}

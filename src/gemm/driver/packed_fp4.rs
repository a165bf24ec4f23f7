//! [`super::Strategy::PackedFp4`] and [`super::Strategy::PackedDense`]:
//! block-scaled products on 4-bit weights packed two per byte
//! ([`PackedFp4`], [`PackedInt4`]), by exact integer block sums (FP4
//! weights, activations with an integer view) or by f32 chains on codes
//! decoded in registers (any other activations: f32, bf16, f16, FP8, …;
//! and every product on int4 weights).

use super::exact_small::{has_integer_view, IntegerRows};
use super::pack::{scale_if_exact, times_256_exact};
use super::threads::{par_split, task_count};
use super::workspace::{grow, with_workspace, Workspace};
use super::write_back::write_block;
#[cfg(target_arch = "x86_64")]
use super::Avx2;
#[cfg(target_arch = "x86_64")]
use super::Avx512;
use super::{tier, with_kernel, Portable, ScaleGrid, Tier};
use crate::block_scaled::{PackedFp4, PackedFp8, PackedInt4, PACK_LINES};
use crate::dtype::FloatElement;
use crate::gemm::kernel::{
    Fp4DenseRows, GroupScales, Kernel, FP4_DENSE_A_SCALE, FP4_DENSE_GROUPS, FP4_DENSE_MIN_A,
    FP4_DENSE_ROWS_WIDE, FP8_DENSE_A_SCALE, FP8_STAGED_MAX_ROWS, FP8_STAGED_PANEL,
};
use crate::gemm::{Epilogue, Parallelism};
use crate::tensor::{MatMut, MatRef};

/// Weights packed two 4-bit codes per byte in groups of 8 lines
/// ([`crate::block_scaled::PackedFp4`]'s layout), as the streaming kernels
/// read them.
pub(crate) trait NibbleWeights: Sync {
    /// E4M3 codes a byte each ([`PackedFp8`]) rather than 4-bit codes.
    const FP8: bool = false;
    /// Bytes of codes per value of k and group of 8 lines.
    const CODE_BYTES: usize = 4;
    fn lines(&self) -> usize;
    fn k(&self) -> usize;
    /// Values of K per scale.
    fn block(&self) -> usize;
    /// The codes: group `g` at `g · 4k` bytes.
    fn codes(&self) -> &[u8];
    /// The f32 scales of groups `g0..g0 + gs` (decoded into `buf` if need be).
    fn group_scales<'a>(&'a self, g0: usize, gs: usize, buf: &'a mut Vec<f32>) -> &'a [f32];
    /// The scales of groups `g0..g0 + gs` for [`Kernel::fp4_dense`]: the
    /// f32 scales unless the weights keep them encoded.
    fn dense_scales<'a>(&'a self, g0: usize, gs: usize, buf: &'a mut Vec<f32>) -> GroupScales<'a> {
        GroupScales::F32(self.group_scales(g0, gs, buf))
    }
    /// The E4M3 scale codes of groups `g0..g0 + gs` and the tensor scale
    /// each value is multiplied by, where the weights keep NVFP4 scales
    /// that [`crate::block_scaled::e4m3_scale`] decodes; else `None`.
    fn e4m3_scales(&self, _g0: usize, _gs: usize) -> Option<(&[u8], f32)> {
        None
    }
    /// The zero points of groups `g0..g0 + gs` (int4 weights), laid out
    /// as the scales; `None` for FP4 and FP8 codes.
    fn zeros(&self, _g0: usize, _gs: usize) -> Option<&[u8]> {
        None
    }
}

impl NibbleWeights for PackedFp4 {
    fn lines(&self) -> usize {
        PackedFp4::lines(self)
    }
    fn k(&self) -> usize {
        PackedFp4::k(self)
    }
    fn block(&self) -> usize {
        PackedFp4::block(self)
    }
    fn codes(&self) -> &[u8] {
        PackedFp4::codes(self)
    }
    fn group_scales<'a>(&'a self, g0: usize, gs: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        PackedFp4::group_scales(self, g0, gs, buf)
    }
    fn dense_scales<'a>(&'a self, g0: usize, gs: usize, buf: &'a mut Vec<f32>) -> GroupScales<'a> {
        PackedFp4::dense_scales(self, g0, gs, buf)
    }
    fn e4m3_scales(&self, g0: usize, gs: usize) -> Option<(&[u8], f32)> {
        PackedFp4::e4m3_scales(self, g0, gs)
    }
}

/// Groups `g0..g0 + gs` of per-group parameters (scales, zero points) of
/// `w`: per group of lines, per block, the 8 lines' values side by side.
fn groups_of<'a, T, W: NibbleWeights>(v: &'a [T], w: &W, (g0, gs): (usize, usize)) -> &'a [T] {
    let per = w.k() / w.block() * PACK_LINES;
    &v[g0 * per..(g0 + gs) * per]
}

impl NibbleWeights for PackedInt4 {
    fn lines(&self) -> usize {
        PackedInt4::lines(self)
    }
    fn k(&self) -> usize {
        PackedInt4::k(self)
    }
    fn block(&self) -> usize {
        self.group()
    }
    fn codes(&self) -> &[u8] {
        self.parts().0
    }
    fn group_scales<'a>(&'a self, g0: usize, gs: usize, _: &'a mut Vec<f32>) -> &'a [f32] {
        groups_of(self.parts().1, self, (g0, gs))
    }
    fn zeros(&self, g0: usize, gs: usize) -> Option<&[u8]> {
        Some(groups_of(self.parts().2, self, (g0, gs)))
    }
}

impl NibbleWeights for PackedFp8 {
    const FP8: bool = true;
    const CODE_BYTES: usize = 8;
    fn lines(&self) -> usize {
        PackedFp8::lines(self)
    }
    fn k(&self) -> usize {
        PackedFp8::k(self)
    }
    fn block(&self) -> usize {
        PackedFp8::block(self)
    }
    fn codes(&self) -> &[u8] {
        self.parts().0
    }
    fn group_scales<'a>(&'a self, g0: usize, gs: usize, _: &'a mut Vec<f32>) -> &'a [f32] {
        groups_of(self.parts().1, self, (g0, gs))
    }
}

/// `c = epilogue(a · bᵀ)` under the block-scaled contract for weights
/// packed two codes per byte (or, [`PackedFp8`], a byte each). FP4 weights with A in a format whose values
/// are small integers times a power of two: by integer block sums (see
/// [`super::exact_small::serial_exact_small`] for why they are the
/// contract's); any other pair: by the contract's f32 chains
/// ([`Kernel::fp4_dense`]). Threads split C's columns in groups of 8 (or
/// its rows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_packed_fp4<TA: FloatElement, O: FloatElement, W: NibbleWeights>(
    a: MatRef<'_, TA>,
    grid_a: &ScaleGrid<'_>,
    b: &W,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    with_kernel!(packed_fp4_tier(simd), K => {
        packed_fp4_with::<TA, O, W, K>(a, grid_a, b, c, epilogue, parallelism, simd)
    })
}

/// The tier of [`run_packed_fp4`]: the float GEMM's (the AVX-512 tier
/// streams two groups of 8 lines per zmm register; its integer dots are
/// the AVX2 ones).
pub(crate) fn packed_fp4_tier(simd: bool) -> Tier {
    tier(simd)
}

#[allow(clippy::too_many_arguments)]
fn packed_fp4_with<TA: FloatElement, O: FloatElement, W: NibbleWeights, K: Kernel>(
    a: MatRef<'_, TA>,
    grid_a: &ScaleGrid<'_>,
    b: &W,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    let (m, n, k, block) = (a.rows(), b.lines(), b.k(), b.block());
    if m == 0 || n == 0 {
        return;
    }
    let rows = if has_integer_view::<TA>() && b.zeros(0, 0).is_none() && !W::FP8 {
        Rows::Integer(IntegerRows::new(&a, grid_a, 0, block))
    } else if W::FP8 {
        // a · 2^8 is exact unless it overflows.
        const { assert!(FP8_DENSE_A_SCALE == 256.0, "times_256_exact's factor") };
        let rows = DenseRows::new(&a, grid_a, block, (FP8_DENSE_A_SCALE, times_256_exact));
        Rows::Dense(if K::fp8_staged_runs() {
            rows.with_panels(k)
        } else {
            rows
        })
    } else {
        // A non-zero |x| < 2^-101 would round when scaled (a subnormal).
        let exact = |x: f32| x == 0.0 || x.is_nan() || x.abs() >= FP4_DENSE_MIN_A;
        let rows = DenseRows::new(&a, grid_a, block, (FP4_DENSE_A_SCALE, exact));
        // The wide calls read their rows from panels.
        let wide_rows = K::fp4_dense_rows();
        Rows::Dense(if wide_rows > K::DENSE_ROWS && m >= wide_rows {
            rows.with_panels(k)
        } else {
            rows
        })
    };
    let codes = b.codes();
    let tasks = task_count(m, n, k, parallelism);
    par_split(
        c,
        (0, 0),
        tasks,
        (1, PACK_LINES),
        &|(r0, c0), mut c_part| {
            let (mp, np) = (c_part.rows(), c_part.cols());
            with_workspace(|ws| {
                let Workspace {
                    acc: acc_buf,
                    row: row_buf,
                    tmp: scale_buf,
                    ..
                } = ws;
                let acc = grow(acc_buf, mp * np);
                // c0 is a multiple of 8: whole groups, the last one perhaps
                // cut; `per_call` groups at a time.
                let (groups, per_call) = (np.div_ceil(PACK_LINES), rows.groups_per_call());
                for g0 in (0..groups).step_by(per_call) {
                    let (g, gs) = (c0 / PACK_LINES + g0, per_call.min(groups - g0));
                    let group_codes = &codes[g * k * W::CODE_BYTES..(g + gs) * k * W::CODE_BYTES];
                    let j0 = g0 * PACK_LINES;
                    let live = (gs * PACK_LINES).min(np - j0);
                    let group = (group_codes, g, gs);
                    rows.groups::<K, W>(b, scale_buf, group, (r0, mp), (k, block), |i, out| {
                        acc[i * np + j0..i * np + j0 + live].copy_from_slice(&out[..live]);
                    });
                }
                let row = grow(row_buf, np);
                write_block::<O, K>(
                    &mut c_part,
                    (0, 0),
                    acc,
                    np,
                    (mp, np),
                    row,
                    c0,
                    epilogue,
                    simd,
                );
            });
        },
    );
}

/// Rows up to which [`Kernel::fp4_dense`] decodes NVFP4's E4M3 scales
/// itself.
const E4M3_IN_KERNEL_ROWS: usize = 2;

/// A's rows as [`run_packed_fp4`]'s kernels take them.
enum Rows {
    /// Exact integers ([`Kernel::fp4_packed8`]).
    Integer(IntegerRows),
    /// f32 values ([`Kernel::fp4_dense8`]).
    Dense(DenseRows),
}

impl Rows {
    /// Groups of 8 lines that [`Self::groups`] takes at once.
    fn groups_per_call(&self) -> usize {
        match self {
            Rows::Integer(_) => 1,
            Rows::Dense(_) => FP4_DENSE_GROUPS,
        }
    }

    /// `gs` (≤ [`Self::groups_per_call`]) groups of 8 packed lines (from
    /// group `g` of `b`, whose codes are `codes`) against
    /// rows `r0..r0 + mp`: `put(i, out)` receives row `r0 + i`'s `8 · gs` sums.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn groups<K: Kernel, W: NibbleWeights>(
        &self,
        b: &W,
        scale_buf: &mut Vec<f32>,
        (codes, g, gs): (&[u8], usize, usize),
        (r0, mp): (usize, usize),
        (k, block): (usize, usize),
        mut put: impl FnMut(usize, &[f32]),
    ) {
        let blocks = k / block;
        match self {
            Rows::Integer(rows) => {
                let scales = b.group_scales(g, gs, scale_buf);
                for i in 0..mp {
                    let r = r0 + i;
                    let mut out = [0.0f32; PACK_LINES];
                    K::fp4_packed8(
                        codes,
                        scales,
                        block,
                        &rows.a_abs[r * k..(r + 1) * k],
                        &rows.a_int[r * k..(r + 1) * k],
                        &rows.sa[r * blocks..(r + 1) * blocks],
                        rows.g,
                        &mut out,
                    );
                    put(i, &out);
                }
            }
            Rows::Dense(rows) => {
                // NVFP4 scales: decoded in the kernel for one or two rows
                // (measured on Zen 3: at M = 8 in-kernel decoding was 1.4×
                // slower), past them once into `scale_buf` for every row.
                let scales = match b.e4m3_scales(g, gs) {
                    Some((codes, t)) if mp <= E4M3_IN_KERNEL_ROWS => GroupScales::E4M3(codes, t),
                    Some((codes, t)) => {
                        scale_buf.resize(codes.len(), 0.0);
                        K::e4m3_scales(codes, t, scale_buf);
                        GroupScales::F32(scale_buf)
                    }
                    None => b.dense_scales(g, gs, scale_buf),
                };
                const STRIDE: usize = FP4_DENSE_GROUPS * PACK_LINES;
                if let (true, GroupScales::F32(s)) = (W::FP8, scales) {
                    if mp > K::DENSE_ROWS
                        && rows.staged(r0, mp, gs)
                        && Self::fp8_staged::<K>(rows, codes, s, gs, (r0, mp), (k, block), &mut put)
                    {
                        return;
                    }
                }
                // The FP4 kernel's wide calls need the rows in panels (r0 a
                // multiple of the panel, so every call's first row is).
                let wide = !W::FP8 && rows.in_panels(r0);
                let per_call = if wide {
                    K::fp4_dense_rows()
                } else {
                    K::DENSE_ROWS
                };
                for i0 in (0..mp).step_by(per_call) {
                    let (r, n_rows) = (r0 + i0, per_call.min(mp - i0));
                    let mut out = [0.0f32; FP4_DENSE_ROWS_WIDE * STRIDE];
                    let view = rows.view(r, n_rows, (k, block));
                    match (W::FP8, scales) {
                        (false, _) => {
                            K::fp4_dense(&view, codes, scales, b.zeros(g, gs), gs, &mut out, STRIDE)
                        }
                        (true, GroupScales::F32(s)) => {
                            K::fp8_dense(&view, codes, s, gs, &mut out, STRIDE)
                        }
                        (true, _) => unreachable!("PackedFp8's scales are f32"),
                    }
                    for q in 0..n_rows {
                        put(i0 + q, &out[q * STRIDE..(q + 1) * STRIDE]);
                    }
                }
            }
        }
    }
}

impl Rows {
    /// [`Kernel::fp8_staged`] on rows `r0..r0 + mp` (in calls of up to
    /// [`FP8_STAGED_MAX_ROWS`]) and `gs` groups: false where the kernel has
    /// no such form (nothing was put).
    #[allow(clippy::too_many_arguments)]
    fn fp8_staged<K: Kernel>(
        rows: &DenseRows,
        codes: &[u8],
        scales: &[f32],
        gs: usize,
        (r0, mp): (usize, usize),
        (k, block): (usize, usize),
        put: &mut impl FnMut(usize, &[f32]),
    ) -> bool {
        const STRIDE: usize = FP4_DENSE_GROUPS * PACK_LINES;
        for i0 in (0..mp).step_by(FP8_STAGED_MAX_ROWS) {
            let (r, n_rows) = (r0 + i0, FP8_STAGED_MAX_ROWS.min(mp - i0));
            let mut out = [0.0f32; FP8_STAGED_MAX_ROWS * STRIDE];
            let view = rows.view(r, n_rows, (k, block));
            // Panel r / 8 starts at r · k (r is a multiple of 8).
            if !K::fp8_staged(
                &view,
                &rows.panels[r * k..],
                codes,
                scales,
                gs,
                &mut out,
                STRIDE,
            ) {
                return false;
            }
            for q in 0..n_rows {
                put(i0 + q, &out[q * STRIDE..(q + 1) * STRIDE]);
            }
        }
        true
    }
}

/// A's rows widened to f32 (row-major, `m × k`) with their block scales
/// (`m × k / block`); with `prescaled`, each value is a · `factor` (2^-25
/// for the FP4/int4 kernel, 2^8 for the FP8 one), which `exact` found
/// exact for every row value, so the kernel can take the weights scaled
/// the other way (see [`Kernel::fp4_dense`], [`Kernel::fp8_dense`]).
struct DenseRows {
    a: Vec<f32>,
    sa: Vec<f32>,
    prescaled: bool,
    /// Every value of `sa` is 1.0 (activations without block scales).
    unit_scales: bool,
    /// `a` in panels of [`FP8_STAGED_PANEL`] rows (per step, the panel's
    /// values side by side, zeros past the last row) for
    /// [`Kernel::fp8_staged`] and the wide [`Kernel::fp4_dense`] calls
    /// ([`Kernel::fp4_dense_rows`]); empty where neither runs.
    panels: Vec<f32>,
}

impl DenseRows {
    fn new<TA: FloatElement>(
        a: &MatRef<'_, TA>,
        grid: &ScaleGrid<'_>,
        block: usize,
        (factor, exact): (f32, impl Fn(f32) -> bool),
    ) -> Self {
        let (m, k) = (a.rows(), a.cols());
        let blocks = k / block;
        let mut values = Vec::with_capacity(m * k);
        for i in 0..m {
            values.extend((0..k).map(|kk| a.at(i, kk).to_f32()));
        }
        let mut sa = vec![0.0f32; m * blocks];
        for i in 0..m {
            for (blk, x) in sa[i * blocks..(i + 1) * blocks].iter_mut().enumerate() {
                *x = grid.at(i, blk);
            }
        }
        let prescaled = scale_if_exact(&mut values, factor, exact);
        let unit_scales = sa.iter().all(|&s| s == 1.0);
        Self {
            a: values,
            sa,
            prescaled,
            unit_scales,
            panels: Vec::new(),
        }
    }

    /// Rows `r..r + n_rows` as the dense kernels take them.
    fn view(&self, r: usize, n_rows: usize, (k, block): (usize, usize)) -> Fp4DenseRows<'_> {
        let blocks = k / block;
        Fp4DenseRows {
            a: &self.a[r * k..(r + n_rows) * k],
            sa: &self.sa[r * blocks..(r + n_rows) * blocks],
            rows: n_rows,
            k,
            block,
            prescaled: self.prescaled,
            unit_scales: self.unit_scales,
            panels: match self.panels.get(r * k..) {
                Some(p) if r.is_multiple_of(FP8_STAGED_PANEL) => p,
                _ => &[],
            },
        }
    }

    /// With [`Self::panels`] filled in.
    fn with_panels(mut self, k: usize) -> Self {
        let m = self.a.len() / k.max(1);
        let p = FP8_STAGED_PANEL;
        let mut panels = vec![0.0f32; m.div_ceil(p) * p * k];
        for (i, row) in self.a.chunks_exact(k.max(1)).enumerate() {
            let (q, r) = (i / p, i % p);
            for (kk, &x) in row.iter().enumerate() {
                panels[(q * k + kk) * p + r] = x;
            }
        }
        self.panels = panels;
        self
    }

    /// Whether [`Rows::fp8_staged`] may take rows `r0..r0 + mp` and `gs`
    /// groups: whole A panels and pairs of groups. (The driver asks only
    /// past [`Kernel::DENSE_ROWS`] rows: on the Intel Xeon of
    /// BENCHMARKS.md, K = N = 4096, MXFP8 at M = 1 / 8 / 16 / 32 took
    /// 1.74 / 3.08 / 5.12 / 9.22 ms staged against 0.96 / 2.69 / 5.46 /
    /// 11.3 in the AVX-512 `fp8_dense` kernel, and 1.89 / 5.65 / – / 23.0
    /// in the AVX2 one.)
    fn staged(&self, r0: usize, mp: usize, gs: usize) -> bool {
        mp > 0 && gs.is_multiple_of(2) && self.in_panels(r0)
    }

    /// Whether rows from `r0` on are in [`Self::panels`], from a panel's
    /// first row.
    fn in_panels(&self, r0: usize) -> bool {
        r0.is_multiple_of(FP8_STAGED_PANEL) && !self.panels.is_empty()
    }
}

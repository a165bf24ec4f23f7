//! Block-scaled products of a few rows with the weights stored `[out, in]`
//! as a [`BlockScaled`](crate::block_scaled::BlockScaled) holds them
//! ([`super::Strategy::DirectTransposedBlocks`]): `weight_only_gemm` and
//! `block_gemm` at small batch. The kernel reads the codes in place,
//! sixteen lines at a time, and decodes them in registers
//! ([`crate::gemm::kernel::Kernel::blocks_t`]); nothing of B is packed or
//! widened per call. Lines the kernel does not take (the last `N mod 16`,
//! or a group holding a NaN or infinity code) run the contract's loops in
//! scalar code. The same bits either way.

use super::pack::{pack_a_rows, times_256_if_exact};
use super::workspace::{grow, round_up, Workspace};
use super::write_back::write_block;
use super::{Part, Scaling};
use crate::dtype::FloatElement;
use crate::gemm::kernel::{BlocksTile, Kernel, BLOCKS_T_GROUPS, BLOCKS_T_LINES};
use crate::gemm::Epilogue;
use crate::tensor::{MatMut, MatRef};

/// [`super::serial`] for a block-scaled product of at most
/// [`Kernel::blocks_t_max_rows`] rows whose B has contiguous columns (the
/// `N × K` lines of a `BlockScaled`), on a kernel that reads `TB`'s codes
/// ([`Kernel::reads_blocks_t`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn serial_direct_t_blocks<
    TA: FloatElement,
    TB: FloatElement,
    O: FloatElement,
    K: Kernel,
>(
    a: MatRef<'_, TA>,
    b: MatRef<'_, TB>,
    mut c: MatMut<'_, O>,
    part: &Part<'_, '_>,
    s: &Scaling<'_>,
    epilogue: &Epilogue<'_>,
    ws: &mut Workspace,
    simd: bool,
) {
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let ((r0, col0), block) = (part.origin, s.block);
    let mr = crate::gemm::kernel::blocks_t_panel_rows::<K>(m);
    let blocks = k / block;
    let Workspace {
        a: a_buf,
        b: sa_buf,
        acc: acc_buf,
        row: row_buf,
        tmp,
        ..
    } = ws;
    let packed_a = grow(a_buf, round_up(m, mr) * k);
    pack_a_rows(&a, 0, m, mr, packed_a, tmp, None, simd);
    // E4M3 on the AVX-512 tier: A times 2^8 where that is exact for every
    // value (no finite value past f32::MAX / 2^8), so the kernel skips its
    // multiply by 2^8 per decoded code (same products, same bits).
    let a_times_256 = K::blocks_t_wants_a_times_256::<TB>() && times_256_if_exact(packed_a);
    let sa = grow(sa_buf, m * blocks);
    for (i, row) in sa.chunks_exact_mut(blocks.max(1)).take(m).enumerate() {
        for (blk, x) in row.iter_mut().enumerate() {
            *x = s.a.at(r0 + i, blk);
        }
    }
    let acc = grow(acc_buf, round_up(m, mr) * n);
    let (lines, ld) = (b.as_slice(), b.col_stride());
    let main = n / BLOCKS_T_LINES * BLOCKS_T_LINES;
    let call = BLOCKS_T_LINES * BLOCKS_T_GROUPS;
    for j0 in (0..main).step_by(call) {
        let groups = (main - j0).min(call) / BLOCKS_T_LINES;
        let mut tile = BlocksTile {
            rows: m,
            groups,
            k,
            block,
            a: packed_a,
            sa,
            lines: &lines[j0 * ld..],
            ld,
            sb: s.b.scales,
            sb_start: std::array::from_fn(|j| s.b.start(col0 + (j0 + j).min(n - 1))),
            out: &mut acc[j0..],
            out_ld: n,
            a_times_256,
        };
        let done = K::blocks_t(&mut tile);
        for g in (0..groups).filter(|g| done & (1 << g) == 0) {
            let j = j0 + g * BLOCKS_T_LINES;
            contract_loops(&a, &b, s, (r0, col0), 0..m, j..j + BLOCKS_T_LINES, acc, n);
        }
    }
    contract_loops(&a, &b, s, (r0, col0), 0..m, main..n, acc, n);
    let row = grow(row_buf, n);
    write_block::<O, K>(&mut c, (0, 0), acc, n, (m, n), row, col0, epilogue, simd);
}

/// The contract's loops for rows `rows` and columns `cols` of the part
/// (whose origin in the whole product is `(r0, col0)`), into `acc`.
#[allow(clippy::too_many_arguments)]
fn contract_loops<TA: FloatElement, TB: FloatElement>(
    a: &MatRef<'_, TA>,
    b: &MatRef<'_, TB>,
    s: &Scaling<'_>,
    (r0, col0): (usize, usize),
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    acc: &mut [f32],
    ld: usize,
) {
    let (k, block) = (a.cols(), s.block);
    for i in rows {
        for j in cols.clone() {
            let mut sum = 0.0f32;
            for (blk, k0) in (0..k).step_by(block).enumerate() {
                let mut p = 0.0f32;
                for kk in k0..k0 + block {
                    p = a.at(i, kk).to_f32().mul_add(b.at(kk, j).to_f32(), p);
                }
                let scale = s.a.at(r0 + i, blk) * s.b.at(col0 + j, blk);
                sum = p.mul_add(scale, sum);
            }
            acc[i * ld + j] = sum;
        }
    }
}

//! The integer GEMM's blocked driver: K blocks sized for the caches, packed
//! panels, threads over M or N, the zero-point corrections and the
//! epilogue; one driver for every kernel.

use super::kernel::{IntKernel, PortableInt};
use super::{pick, QEpilogue, QOutput, RowCorrection};
use crate::gemm::driver::{par_split, task_count};
use crate::gemm::Parallelism;
use crate::quant::QInt;
use crate::tensor::{MatMut, MatRef};
use std::cell::RefCell;

pub(super) fn run<A: QInt, O: QOutput>(
    a: super::QMatRef<'_, A>,
    b: super::QMatRef<'_, i8>,
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) {
    let (za, zb) = (a.zero_points(), b.zero_points());
    let (a, b) = (a.values(), b.values());
    #[cfg(target_arch = "x86_64")]
    if super::direct::applies(a.rows(), &b, simd) {
        return super::direct::run(a, za, b, zb, c, epilogue, parallelism);
    }
    #[cfg(target_arch = "x86_64")]
    if simd && crate::cpu::has_avx512() {
        use super::kernel::x86_vnni::{VnniI8, VnniU8};
        return if A::QMIN == 0 {
            run_with::<A, O, VnniU8>(a, za, b, zb, c, epilogue, parallelism)
        } else {
            run_with::<A, O, VnniI8>(a, za, b, zb, c, epilogue, parallelism)
        };
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        if A::QMIN == 0 && fits_seven_bits(&a) {
            return run_with::<A, O, super::kernel::x86_avx2::Avx2U7>(
                a,
                za,
                b,
                zb,
                c,
                epilogue,
                parallelism,
            );
        }
        return run_with::<A, O, super::kernel::x86_avx2::Avx2Int>(
            a,
            za,
            b,
            zb,
            c,
            epilogue,
            parallelism,
        );
    }
    let _ = simd;
    run_with::<A, O, PortableInt>(a, za, b, zb, c, epilogue, parallelism)
}

/// True when every value of a u8 A is at most 127: then `vpmaddubsw` pair
/// sums (at most 2·127·128 = 32512) cannot saturate, so the faster u8×i8
/// kernel is exact. Dynamic quantization with a 7-bit range (PyTorch's
/// `reduce_range`) always gives such activations.
#[cfg(target_arch = "x86_64")]
pub(crate) fn fits_seven_bits<A: QInt>(a: &MatRef<'_, A>) -> bool {
    if a.rows() == 0 || a.cols() == 0 {
        return true;
    }
    if a.col_stride() == 1 || a.cols() == 1 {
        let data = a.as_slice();
        (0..a.rows()).all(|i| {
            data[i * a.row_stride()..][..a.cols()]
                .iter()
                .all(|v| v.to_i32() <= 127)
        })
    } else {
        (0..a.rows()).all(|i| (0..a.cols()).all(|kk| a.at(i, kk).to_i32() <= 127))
    }
}

const MC: usize = 96;
const NC: usize = 1024;
/// k values per micro-kernel call: a B micro-panel (16 columns × 512 k of
/// i16, 16 KiB) stays in L1 and the packed A block (96 × 512, 96 KiB) in
/// L2. Integer sums are exact, so unlike the float GEMM's 128-tiles this
/// blocking cannot change a bit; it is 4× the array height because each
/// call ends with a load-add-store of the accumulator block (at
/// n = 1024, 1.47× our f32 with 128, 1.6× with 512; issue 10).
const KC: usize = 512;

/// Packing buffers (one pair per packed type), the accumulator block and
/// the sums for zero-point corrections, kept per thread.
#[derive(Default)]
struct IntWorkspace {
    a16: Vec<i16>,
    b16: Vec<i16>,
    a8: Vec<u8>,
    b8: Vec<u8>,
    acc: Vec<i32>,
    row_sums: Vec<i32>,
    col_sums: Vec<i32>,
}

/// The buffers one packed type uses, borrowed from the workspace.
struct Buffers<'w, P> {
    a: &'w mut Vec<P>,
    b: &'w mut Vec<P>,
    acc: &'w mut Vec<i32>,
    row_sums: &'w mut Vec<i32>,
    col_sums: &'w mut Vec<i32>,
}

/// The packing buffers of one packed type.
trait PackBuffers<P> {
    fn buffers(&mut self) -> Buffers<'_, P>;
}

impl PackBuffers<i16> for IntWorkspace {
    fn buffers(&mut self) -> Buffers<'_, i16> {
        Buffers {
            a: &mut self.a16,
            b: &mut self.b16,
            acc: &mut self.acc,
            row_sums: &mut self.row_sums,
            col_sums: &mut self.col_sums,
        }
    }
}

impl PackBuffers<u8> for IntWorkspace {
    fn buffers(&mut self) -> Buffers<'_, u8> {
        Buffers {
            a: &mut self.a8,
            b: &mut self.b8,
            acc: &mut self.acc,
            row_sums: &mut self.row_sums,
            col_sums: &mut self.col_sums,
        }
    }
}

thread_local! {
    static INT_WORKSPACE: RefCell<IntWorkspace> = RefCell::new(IntWorkspace::default());
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

#[allow(clippy::too_many_arguments)]
fn run_with<A: QInt, O: QOutput, K: IntKernel>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: MatRef<'_, i8>,
    zb: &[i32],
    c: MatMut<'_, O>,
    epilogue: &QEpilogue<'_>,
    parallelism: Parallelism,
) where
    IntWorkspace: PackBuffers<K::Packed>,
{
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    if m == 0 || n == 0 {
        return;
    }
    let tasks = task_count(m, n, k, parallelism);
    par_split(c, (0, 0), tasks, (K::MR, K::NR), &|(r0, c0), part| {
        let (a, b) = (a.sub(r0, part.rows(), 0, k), b.sub(0, k, c0, part.cols()));
        INT_WORKSPACE.with(|ws| match ws.try_borrow_mut() {
            Ok(mut ws) => serial::<A, O, K>(a, za, b, zb, part, (r0, c0), epilogue, &mut ws),
            Err(_) => serial::<A, O, K>(
                a,
                za,
                b,
                zb,
                part,
                (r0, c0),
                epilogue,
                &mut IntWorkspace::default(),
            ),
        })
    });
}

#[allow(clippy::too_many_arguments)]
fn serial<A: QInt, O: QOutput, K: IntKernel>(
    a: MatRef<'_, A>,
    za: &[i32],
    b: MatRef<'_, i8>,
    zb: &[i32],
    mut c: MatMut<'_, O>,
    (row0, col0): (usize, usize),
    epilogue: &QEpilogue<'_>,
    ws: &mut IntWorkspace,
) where
    IntWorkspace: PackBuffers<K::Packed>,
{
    let (m, n, k) = (a.rows(), b.cols(), a.cols());
    let groups = k.div_ceil(K::GROUP);
    if groups == 0 {
        // K = 0: every sum is 0.
        for i in 0..m {
            for j in 0..n {
                c.set(i, j, O::from_acc(0, row0 + i, col0 + j, epilogue));
            }
        }
        return;
    }
    let Buffers {
        a: a_buf,
        b: b_buf,
        acc: acc_buf,
        row_sums: row_buf,
        col_sums: col_buf,
    } = <IntWorkspace as PackBuffers<K::Packed>>::buffers(ws);
    let block_groups = KC / K::GROUP;
    for jc in (0..n).step_by(NC) {
        let nb = NC.min(n - jc);
        let nb_pad = nb.div_ceil(K::NR) * K::NR;
        let packed_b = grow(b_buf, nb_pad * K::GROUP * groups);
        let col_sums = grow(col_buf, nb);
        let sums = (!K::SUBTRACTS_ZERO_POINTS).then_some(&mut col_sums[..]);
        pack::<i8, K>(
            &b.t(),
            zb,
            col0 + jc,
            jc,
            nb,
            K::NR,
            packed_b,
            K::pack_b,
            sums,
        );
        for ic in (0..m).step_by(MC) {
            let mb = MC.min(m - ic);
            let mb_pad = mb.div_ceil(K::MR) * K::MR;
            let packed_a = grow(a_buf, mb_pad * K::GROUP * groups);
            let row_sums = grow(row_buf, mb);
            let sums = (!K::SUBTRACTS_ZERO_POINTS).then_some(&mut row_sums[..]);
            pack::<A, K>(&a, za, row0 + ic, ic, mb, K::MR, packed_a, K::pack_a, sums);
            let acc = grow(acc_buf, mb_pad * nb_pad);
            // K blocks of KC (a multiple of every group size).
            for t0 in (0..groups).step_by(block_groups) {
                let tg = block_groups.min(groups - t0);
                for (p, b_panel) in packed_b.chunks_exact(K::GROUP * groups * K::NR).enumerate() {
                    let b_tile = &b_panel[K::GROUP * t0 * K::NR..K::GROUP * (t0 + tg) * K::NR];
                    for (q, a_panel) in packed_a.chunks_exact(K::GROUP * groups * K::MR).enumerate()
                    {
                        let a_tile = &a_panel[K::GROUP * t0 * K::MR..K::GROUP * (t0 + tg) * K::MR];
                        let at = q * K::MR * nb_pad + p * K::NR;
                        K::tile(tg, a_tile, b_tile, &mut acc[at..], nb_pad, t0 == 0);
                    }
                }
            }
            let (rs, cs) = (c.row_stride(), c.col_stride());
            let out = c.as_mut_slice();
            for i in 0..mb {
                let acc_row = &acc[i * nb_pad..i * nb_pad + nb];
                let start = (ic + i) * rs + jc * cs;
                let row = row0 + ic + i;
                let correction = RowCorrection::new(pick(za, row), row_sums[i], k, K::A_OFFSET);
                let sum = |j: usize, v: i32| {
                    if K::SUBTRACTS_ZERO_POINTS {
                        v
                    } else {
                        correction.apply(v, pick(zb, col0 + jc + j), col_sums[j])
                    }
                };
                if cs == 1 {
                    for (j, (d, &v)) in out[start..start + nb].iter_mut().zip(acc_row).enumerate() {
                        *d = O::from_acc(sum(j, v), row, col0 + jc + j, epilogue);
                    }
                } else {
                    for (j, &v) in acc_row.iter().enumerate() {
                        out[start + j * cs] = O::from_acc(sum(j, v), row, col0 + jc + j, epilogue);
                    }
                }
            }
        }
    }
}

/// Most rows a packed panel has (the largest MR or NR of the kernels).
const MAX_UNIT: usize = 16;
/// The largest GROUP of the kernels.
const MAX_GROUP: usize = 4;
/// k values of each row staged at a time while packing a row-major source
/// (a multiple of every kernel's GROUP).
const STAGE_K: usize = 64;

/// Packs `len` rows (from `i0`) of `src` into `unit`-row panels of
/// `K::GROUP`-long k-groups: `panel[(t·unit + r)·GROUP + g] =
/// f(src[i0 + q·unit + r, t·GROUP + g], z[row])`, zero past the edges. B is
/// packed through its transpose. Fast paths for either unit stride: a
/// row-major source is converted a chunk of k at a time per row (contiguous,
/// so it vectorizes) and then interleaved one k-group (4 bytes) at a time.
#[allow(clippy::too_many_arguments)]
fn pack<S: QInt, K: IntKernel>(
    src: &MatRef<'_, S>,
    zero_points: &[i32],
    global_i0: usize,
    i0: usize,
    len: usize,
    unit: usize,
    dst: &mut [K::Packed],
    f: impl Fn(i32, i32) -> K::Packed,
    mut sums: Option<&mut [i32]>,
) {
    let group = K::GROUP;
    let k = src.cols();
    let groups = k.div_ceil(group);
    let (rs, cs, data) = (src.row_stride(), src.col_stride(), src.as_slice());
    if let Some(s) = sums.as_deref_mut() {
        s.fill(0);
    }
    let panel_len = group * groups * unit;
    let panels = len.div_ceil(unit);
    // The fast paths write every slot of a full panel; a partial last
    // panel's missing rows (and the general path's gaps) stay zero.
    let by_columns = rs == 1 && len > 1;
    let by_rows = !by_columns && (cs == 1 || k == 1);
    let partial = !len.is_multiple_of(unit);
    if partial || !(by_columns || by_rows) {
        let from = if partial { (panels - 1) * panel_len } else { 0 };
        dst[from..].fill(K::Packed::default());
    }
    if by_columns {
        // Columns contiguous (B row-major, seen through its transpose): per
        // k-group, each of the group's source rows is converted into a
        // staging row (contiguous, so it vectorizes), then the group's
        // values interleaved per panel row.
        assert!(unit <= MAX_UNIT, "panel width {unit} > {MAX_UNIT}");
        let mut stage = [K::Packed::default(); MAX_UNIT * MAX_GROUP];
        let zs: Vec<i32> = (0..len).map(|i| pick(zero_points, global_i0 + i)).collect();
        for q in 0..panels {
            let rows = unit.min(len - q * unit);
            let zq = &zs[q * unit..q * unit + rows];
            let slots = dst[q * panel_len..(q + 1) * panel_len].chunks_exact_mut(unit * group);
            for (t, slot) in slots.enumerate() {
                let present = group.min(k - t * group);
                for g in 0..group {
                    let staged = &mut stage[g * MAX_UNIT..g * MAX_UNIT + rows];
                    if g >= present {
                        staged.fill(K::Packed::default());
                        continue;
                    }
                    let at = i0 + (t * group + g) * cs + q * unit;
                    let seg = &data[at..at + rows];
                    for ((d, &v), &z) in staged.iter_mut().zip(seg).zip(zq) {
                        *d = f(v.to_i32(), z);
                    }
                    if let Some(s) = sums.as_deref_mut() {
                        for (acc, &v) in s[q * unit..q * unit + rows].iter_mut().zip(seg) {
                            *acc = acc.wrapping_add(v.to_i32());
                        }
                    }
                }
                for (j, d) in slot.chunks_exact_mut(group).take(rows).enumerate() {
                    for (g, d) in d.iter_mut().enumerate() {
                        *d = stage[g * MAX_UNIT + j];
                    }
                }
            }
        }
        return;
    }
    if by_rows {
        assert!(unit <= MAX_UNIT, "panel height {unit} > {MAX_UNIT}");
        let mut stage = [K::Packed::default(); MAX_UNIT * STAGE_K];
        let padded_k = groups * group;
        for q in 0..panels {
            let rows = unit.min(len - q * unit);
            let panel = &mut dst[q * panel_len..(q + 1) * panel_len];
            for k0 in (0..padded_k).step_by(STAGE_K) {
                let kc = STAGE_K.min(padded_k - k0);
                let valid = kc.min(k - k0);
                for r in 0..rows {
                    let i = q * unit + r;
                    let z = pick(zero_points, global_i0 + i);
                    let row = &data[(i0 + i) * rs + k0..][..valid];
                    let staged = &mut stage[r * STAGE_K..r * STAGE_K + kc];
                    for (d, &v) in staged.iter_mut().zip(row) {
                        *d = f(v.to_i32(), z);
                    }
                    staged[valid..].fill(K::Packed::default());
                    if let Some(s) = sums.as_deref_mut() {
                        s[i] = row
                            .iter()
                            .fold(s[i], |acc, &v| acc.wrapping_add(v.to_i32()));
                    }
                }
                let slots = panel[k0 * unit..].chunks_exact_mut(unit * group);
                for (tc, slot) in slots.take(kc / group).enumerate() {
                    for (r, d) in slot.chunks_exact_mut(group).take(rows).enumerate() {
                        d.copy_from_slice(&stage[r * STAGE_K + tc * group..][..group]);
                    }
                }
            }
        }
        return;
    }
    for q in 0..panels {
        for r in 0..unit.min(len - q * unit) {
            let i = q * unit + r;
            let z = pick(zero_points, global_i0 + i);
            let start = (i0 + i) * rs;
            let mut sum = 0i32;
            // Slot t of this row starts at panel + (t·unit + r)·group.
            let slots =
                dst[q * panel_len + r * group..(q + 1) * panel_len].chunks_mut(unit * group);
            for (t, slot) in slots.enumerate().take(groups) {
                for (g, d) in slot.iter_mut().enumerate().take(group.min(k - t * group)) {
                    let v = data[start + (t * group + g) * cs].to_i32();
                    *d = f(v, z);
                    sum = sum.wrapping_add(v);
                }
            }
            if let Some(s) = sums.as_deref_mut() {
                s[i] = sum;
            }
        }
    }
}

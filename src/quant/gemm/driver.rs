//! The integer GEMM's blocked driver: K-tiles of the array height, packed
//! panels, threads over M or N, the zero-point corrections and the
//! epilogue; one driver for every kernel.

use super::kernel::{IntKernel, PortableInt};
use super::{pick, QEpilogue, QOutput};
use crate::gemm::driver::{par_split, task_count};
use crate::gemm::{Parallelism, ARRAY_ROWS};
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
const NC: usize = 512;

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
    let tile_groups = ARRAY_ROWS / K::GROUP;
    for jc in (0..n).step_by(NC) {
        let nb = NC.min(n - jc);
        let nb_pad = nb.div_ceil(K::NR) * K::NR;
        let packed_b = grow(b_buf, nb_pad * K::GROUP * groups);
        let col_sums = grow(col_buf, nb);
        let sums = (!K::SUBTRACTS_ZERO_POINTS).then_some(&mut col_sums[..]);
        pack::<i8, K::Packed>(
            &b.t(),
            zb,
            col0 + jc,
            jc,
            nb,
            K::NR,
            K::GROUP,
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
            pack::<A, K::Packed>(
                &a,
                za,
                row0 + ic,
                ic,
                mb,
                K::MR,
                K::GROUP,
                packed_a,
                K::pack_a,
                sums,
            );
            let acc = grow(acc_buf, mb_pad * nb_pad);
            // K-tiles of ARRAY_ROWS (a multiple of every group size).
            for t0 in (0..groups).step_by(tile_groups) {
                let tg = tile_groups.min(groups - t0);
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
                let z_a = pick(za, row0 + ic + i);
                for (j, &v) in acc_row.iter().enumerate() {
                    let v = if K::SUBTRACTS_ZERO_POINTS {
                        v
                    } else {
                        // Σ(a−za)(b−zb) = Σab − zb·Σa − za·Σb + K·za·zb, exact mod 2^32.
                        let z_b = pick(zb, col0 + jc + j);
                        v.wrapping_sub(z_b.wrapping_mul(row_sums[i]))
                            .wrapping_sub(z_a.wrapping_mul(col_sums[j]))
                            .wrapping_add((k as i32).wrapping_mul(z_a).wrapping_mul(z_b))
                    };
                    out[start + j * cs] = O::from_acc(v, row0 + ic + i, col0 + jc + j, epilogue);
                }
            }
        }
    }
}

/// Packs `len` rows (from `i0`) of `src` into `unit`-row panels of
/// `group`-long k-groups: `panel[(t·unit + r)·group + g] =
/// f(src[i0 + q·unit + r, t·group + g], z[row])`, zero past the edges. B is
/// packed through its transpose. Fast paths for either unit stride.
#[allow(clippy::too_many_arguments)]
fn pack<S: QInt, P: Copy + Default>(
    src: &MatRef<'_, S>,
    zero_points: &[i32],
    global_i0: usize,
    i0: usize,
    len: usize,
    unit: usize,
    group: usize,
    dst: &mut [P],
    f: impl Fn(i32, i32) -> P,
    mut sums: Option<&mut [i32]>,
) {
    let k = src.cols();
    let groups = k.div_ceil(group);
    let (rs, cs, data) = (src.row_stride(), src.col_stride(), src.as_slice());
    dst.fill(P::default());
    if let Some(s) = sums.as_deref_mut() {
        s.fill(0);
    }
    let panel_len = group * groups * unit;
    let panels = len.div_ceil(unit);
    if rs == 1 && len > 1 {
        // Columns contiguous (B row-major, seen through its transpose):
        // walk k outer, rows inner, no divisions in the loops.
        let zs: Vec<i32> = (0..len).map(|i| pick(zero_points, global_i0 + i)).collect();
        // Panel by panel, so the writes of one panel are contiguous.
        for q in 0..panels {
            let rows = unit.min(len - q * unit);
            let zq = &zs[q * unit..q * unit + rows];
            for t in 0..groups {
                let base = q * panel_len + t * unit * group;
                for g in 0..group.min(k - t * group) {
                    let kk = t * group + g;
                    let seg = &data[i0 + kk * cs + q * unit..i0 + kk * cs + q * unit + rows];
                    let targets = dst[base + g..].iter_mut().step_by(group);
                    for (d, (&v, &z)) in targets.zip(seg.iter().zip(zq)) {
                        *d = f(v.to_i32(), z);
                    }
                    if let Some(s) = sums.as_deref_mut() {
                        for (acc, &v) in s[q * unit..q * unit + rows].iter_mut().zip(seg) {
                            *acc = acc.wrapping_add(v.to_i32());
                        }
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
            if cs == 1 {
                for (slot, chunk) in slots.zip(data[start..start + k].chunks(group)) {
                    for (d, &v) in slot.iter_mut().zip(chunk) {
                        *d = f(v.to_i32(), z);
                        sum = sum.wrapping_add(v.to_i32());
                    }
                }
            } else {
                for (t, slot) in slots.enumerate().take(groups) {
                    for (g, d) in slot.iter_mut().enumerate().take(group.min(k - t * group)) {
                        let v = data[start + (t * group + g) * cs].to_i32();
                        *d = f(v, z);
                        sum = sum.wrapping_add(v);
                    }
                }
            }
            if let Some(s) = sums.as_deref_mut() {
                s[i] = sum;
            }
        }
    }
}

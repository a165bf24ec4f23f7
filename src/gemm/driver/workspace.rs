//! Packing and accumulator buffers, kept per thread and reused across
//! calls by every strategy.

use std::cell::RefCell;

/// Packing and accumulator buffers, kept per thread and reused across calls.
#[derive(Default)]
pub(super) struct Workspace {
    pub(super) a: Vec<f32>,
    pub(super) b: Vec<f32>,
    pub(super) acc: Vec<f32>,
    pub(super) row: Vec<f32>,
    pub(super) tmp: Vec<f32>,
    /// One K-tile of one B panel ([`super::direct_t`]).
    pub(super) panel: Vec<f32>,
    /// The FP4 × FP4 integer tiles' packed panels and block corrections.
    pub(super) fp4: Fp4Buffers,
}

/// Packed integer panels of [`serial_fp4_tiles`].
#[derive(Default)]
pub(super) struct Fp4Buffers {
    pub(super) a: Vec<u8>,
    pub(super) b: Vec<i8>,
    pub(super) corr: Vec<i32>,
    pub(super) stage_a: Vec<u8>,
    pub(super) stage_b: Vec<i8>,
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::default());
}

pub(super) fn with_workspace(f: impl FnOnce(&mut Workspace)) {
    WORKSPACE.with(|ws| match ws.try_borrow_mut() {
        Ok(mut ws) => f(&mut ws),
        Err(_) => f(&mut Workspace::default()),
    })
}

pub(super) fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

pub(super) fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to).saturating_mul(to)
}

/// `acc = acc + p` for one K-tile's partial sums of `rows` rows and `cols`
/// columns: row `r` of `p` (row length `p_ld`) into row `row0 + r` of `acc`
/// (row length `ld`) from column `col0`.
#[inline]
pub(super) fn add_tile_sums(
    acc: &mut [f32],
    ld: usize,
    (row0, col0): (usize, usize),
    p: &[f32],
    p_ld: usize,
    (rows, cols): (usize, usize),
) {
    for r in 0..rows {
        let at = (row0 + r) * ld + col0;
        for (s, &v) in acc[at..at + cols].iter_mut().zip(&p[r * p_ld..]) {
            *s += v;
        }
    }
}

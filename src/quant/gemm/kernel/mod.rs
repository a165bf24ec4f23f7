//! The integer GEMM's micro-kernels: one trait, a portable leaf, the AVX2
//! leaves and the AVX-512 VNNI leaves (chosen at run time by the driver;
//! `x86_vnni_direct` serves the direct path of few rows, B read in place).

mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2_direct;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_vnni;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_vnni_direct;

pub(crate) use portable::PortableInt;

/// The 4-value runs of k a packed-weights row kernel covers (`rows[0]`'s
/// length / 4), checked against the weights (32 bytes per run: 8 columns ×
/// 4 k) and every row of A: the bounds the SIMD row kernels rely on.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn packed_runs<T>(codes: &[i8], rows: &[&[T]]) -> usize {
    let runs = rows.first().map_or(0, |r| r.len() / 4);
    assert!(codes.len() >= runs * 32 && rows.iter().all(|r| r.len() >= runs * 4));
    runs
}

/// A leaf's safe entry to one of its packed-weight dot kernels
/// (`[[i32; 8]; R]` from a `PackedI8` group and R rows of A): the bounds
/// by [`packed_runs`], then the call of the leaf's `#[target_feature]`
/// function `$raw(codes, rows, runs)`, which needs the features the driver
/// checked before it chose this leaf.
macro_rules! checked_packed_dots {
    ($(#[$doc:meta])* $name:ident => $raw:ident, $row:ty) => {
        $(#[$doc])*
        pub(crate) fn $name<const R: usize>(codes: &[i8], rows: [&[$row]; R]) -> [[i32; 8]; R] {
            let runs = $crate::quant::gemm::kernel::packed_runs(codes, &rows);
            // SAFETY: the driver calls this only when the CPU has the leaf's
            // features; `packed_runs` bounds the codes and every row.
            unsafe { $raw(codes.as_ptr(), rows.map(<[$row]>::as_ptr), runs) }
        }
    };
}
pub(crate) use checked_packed_dots;

/// An integer micro-kernel: `acc (+)= Σ a·b` for an `MR × NR` block over
/// groups of `GROUP` consecutive k, operands packed as `Packed` values.
///
/// Packed layouts: A panel `[(t·MR + r)·GROUP + g] = pack_a(a[r, t·GROUP + g])`,
/// B panel `[(t·NR + j)·GROUP + g] = pack_b(b[t·GROUP + g, j])`, zero past
/// the edges.
pub(crate) trait IntKernel {
    const MR: usize;
    const NR: usize;
    /// Consecutive k values combined by one instruction (2 or 4).
    const GROUP: usize;
    /// True when the zero points are subtracted while packing; false when
    /// raw values are multiplied and row/column-sum corrections applied.
    const SUBTRACTS_ZERO_POINTS: bool;
    /// Added to A's values while packing (so that i8 values become the
    /// unsigned bytes `vpdpbusd` takes). The kernel then sums
    /// `(a + A_OFFSET)·b`, and the driver's corrections use
    /// `za + A_OFFSET` and `Σa + K·A_OFFSET`, which gives the same
    /// `Σ(a − za)(b − zb)`. Only with raw values
    /// (`!SUBTRACTS_ZERO_POINTS`).
    const A_OFFSET: i32 = 0;
    /// The packed element type.
    type Packed: Copy + Default;
    /// A value of A with its zero point `z`, packed.
    fn pack_a(v: i32, z: i32) -> Self::Packed;
    /// A value of B with its zero point `z`, packed.
    fn pack_b(v: i32, z: i32) -> Self::Packed;
    /// `groups` k-groups of both panels into the accumulator block (rows at
    /// stride `ld`); `first` stores instead of adding.
    fn tile(
        groups: usize,
        a: &[Self::Packed],
        b: &[Self::Packed],
        acc: &mut [i32],
        ld: usize,
        first: bool,
    );
}

/// Columns of a [`DirectKernel`] tile (both leaves).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const DIRECT_TILE: usize = 64;

/// `rows_k` rows of B (stride `ldb`, `cols` ≤ [`DIRECT_TILE`] values each)
/// copied into `out` as rows of [`DIRECT_TILE`] bytes, zero past `cols`:
/// the dense tile the direct kernels read when B's own rows would not do
/// (a short tile, or rows 4 KiB apart that share one L1 set).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn copy_tile(b: &[i8], ldb: usize, (rows_k, cols): (usize, usize), out: &mut [i8]) {
    for (r, row) in out.chunks_exact_mut(DIRECT_TILE).take(rows_k).enumerate() {
        if cols == DIRECT_TILE {
            row.copy_from_slice(&b[r * ldb..r * ldb + DIRECT_TILE]);
        } else {
            row[..cols].copy_from_slice(&b[r * ldb..r * ldb + cols]);
            row[cols..].fill(0);
        }
    }
}

/// Lines of W per [`DirectKernel::by_lines`] call.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const DIRECT_LINES: usize = 4;

/// The kernels of the direct path (`quant::gemm::direct`): a few rows of A
/// against an int8 B read in place, in either layout, no packed copy.
/// Integer sums, exact: any order gives the same bits.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) trait DirectKernel {
    /// A's values as the kernel takes them.
    type A: Copy + Default + Send + Sync;
    /// Values of k per instruction group: A's rows are zero-padded to a
    /// multiple of it.
    const STEP: usize;
    /// Columns of one `by_rows` tile.
    const TILE: usize;
    /// True when A enters raw (with an offset) and the corrections need
    /// B's column sums; false when A enters as `a − za`.
    const COLUMN_SUMS: bool;
    /// What a tile of B becomes in [`Self::pack_tile`].
    type Tile: Copy + Default + Send + Sync;
    /// Products of more rows than this pack each tile of B once
    /// ([`Self::pack_tile`]) and run every block of rows on it
    /// ([`Self::by_rows_packed`]) rather than reading B in place per block.
    const PACK_PAST_ROWS: usize;
    /// A value of A as the kernel takes it, from its row's zero point and
    /// the offset the driver applies (128 for i8 A with `COLUMN_SUMS`).
    fn convert(v: i32, za: i32, offset: i32) -> Self::A;
    /// Where a `by_rows` call puts column `j` of its tile.
    fn slot(j: usize) -> usize;
    /// `R` rows of A (stride `lda`, each holding `rows_k` rounded up to
    /// `STEP` values) against `rows_k` rows of B (stride `ldb`, `cols` ≤
    /// `TILE` columns): the sums added into `acc` (`R` rows of `TILE`, in
    /// [`Self::slot`] order; stored when `first`), and with `sums` (only
    /// with `COLUMN_SUMS`) B's column sums likewise.
    #[allow(clippy::too_many_arguments)]
    fn by_rows<const R: usize>(
        a: &[Self::A],
        lda: usize,
        b: &[i8],
        ldb: usize,
        shape: (usize, usize),
        acc: &mut [i32],
        sums: Option<&mut [i32]>,
        first: bool,
    );
    /// Elements of a tile of `rows_k` rows packed by [`Self::pack_tile`].
    fn tile_len(rows_k: usize) -> usize;
    /// `rows_k` rows of B (stride `ldb`, `cols` ≤ `TILE` columns) packed
    /// into `out` (at least [`Self::tile_len`]), zero past `cols`; with
    /// `sums` (only with `COLUMN_SUMS`) B's column sums added in, in
    /// [`Self::slot`] order (stored when `first`).
    fn pack_tile(
        b: &[i8],
        ldb: usize,
        shape: (usize, usize),
        out: &mut [Self::Tile],
        sums: Option<&mut [i32]>,
        first: bool,
    );
    /// [`Self::by_rows`] on a tile of `rows_k` rows packed by
    /// [`Self::pack_tile`] (its column sums were taken there).
    fn by_rows_packed<const R: usize>(
        a: &[Self::A],
        lda: usize,
        tile: &[Self::Tile],
        rows_k: usize,
        acc: &mut [i32],
        first: bool,
    );
    /// `R` rows of A against [`DIRECT_LINES`] lines of W (each `k` long):
    /// `out[r][l] = Σ_k a[r][k]·w[l][k]` (wrapping), and with `sums` (only
    /// with `COLUMN_SUMS`) `Σ_k w[l][k]`.
    fn by_lines<const R: usize>(
        a: &[Self::A],
        lda: usize,
        w: [&[i8]; DIRECT_LINES],
        k: usize,
        sums: Option<&mut [i32; DIRECT_LINES]>,
    ) -> [[i32; DIRECT_LINES]; R];
}

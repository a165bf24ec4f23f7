//! B packed once for the float GEMM ([`gemm_packed`]): weights that are
//! multiplied again and again (inference) skip the packing of every call.

use super::{driver, validate, Epilogue, Parallelism, Plan};
use crate::cpu::entry_and_portable_twin;
use crate::dtype::{DType, FloatElement};
use crate::error::checked_len_of;
use crate::tensor::{MatMut, MatRef};
use crate::Error;

/// A float B operand (`K × N`, any of the crate's float types) packed once
/// as the blocked engine's panels, widened exactly to f32. Reusable across
/// calls and threads; the layout is private. [`gemm_packed`] gives the
/// bits of [`super::gemm`] on the unpacked B.
///
/// It pays where packing B is a share of the work: measured on a Zen 3
/// core, 1.0–1.1× [`super::gemm`] at M = 256–1024 and 1.3× for f32 weights
/// at 32×4096×4096; at M = 1 with f32 weights 0.86×. The panels are f32, so
/// for f16/bf16 weights at batch ≤ 32 the unpacked [`super::gemm`], which
/// streams the 16-bit weights themselves (half the bytes), is faster.
///
/// ```
/// use mixprec::gemm::{gemm, gemm_packed, Epilogue, PackedB, Parallelism};
/// use mixprec::{bf16, MatMut, MatRef};
/// let w: Vec<bf16> = (0..64 * 40).map(|i| bf16::from_f32((i % 9) as f32 * 0.25 - 1.0)).collect();
/// let x: Vec<bf16> = (0..3 * 64).map(|i| bf16::from_f32((i % 5) as f32)).collect();
/// let b = MatRef::from_row_major(&w, 64, 40)?; // K × N
/// let packed = PackedB::new(b)?;
/// let (mut y1, mut y2) = (vec![0.0f32; 3 * 40], vec![0.0f32; 3 * 40]);
/// let a = MatRef::from_row_major(&x, 3, 64)?;
/// gemm_packed(a, &packed, MatMut::from_row_major(&mut y1, 3, 40)?, &Epilogue::new(), Parallelism::Serial)?;
/// gemm(a, b, MatMut::from_row_major(&mut y2, 3, 40)?, &Epilogue::new(), Parallelism::Serial)?;
/// assert_eq!(y1, y2);
/// # Ok::<(), mixprec::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PackedB {
    k: usize,
    n: usize,
    source: DType,
    /// Panels of [`driver::PREPACKED_NR`] columns, each `k × NR`.
    panels: Vec<f32>,
}

impl PackedB {
    /// Packs `b` (`K × N`, any strides).
    ///
    /// # Errors
    /// [`Error::ShapeOverflow`] when the padded panels cannot be sized.
    pub fn new<T: FloatElement>(b: MatRef<'_, T>) -> Result<Self, Error> {
        // Panel count × panel width × K f32s, in bytes within isize::MAX
        // (the allocator's limit), not only in count.
        let panels = b.cols().div_ceil(driver::PREPACKED_NR);
        checked_len_of::<f32>(&[panels, driver::PREPACKED_NR, b.rows()])?;
        Ok(Self {
            k: b.rows(),
            n: b.cols(),
            source: T::DTYPE,
            panels: driver::prepack_b(&b, crate::cpu::has_avx2_fma_f16c()),
        })
    }

    /// K (rows of B).
    pub fn k(&self) -> usize {
        self.k
    }

    /// N (columns of B).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The element type B was packed from.
    pub fn source_dtype(&self) -> DType {
        self.source
    }

    /// Bytes held (B widened to f32, padded to whole panels).
    pub fn size_bytes(&self) -> usize {
        4 * self.panels.len()
    }

    /// B's values (exactly, as f32), `K × N` row-major.
    pub fn to_row_major(&self) -> Vec<f32> {
        let nr = driver::PREPACKED_NR;
        let mut out = vec![0.0f32; self.k * self.n];
        for j in 0..self.n {
            let panel = &self.panels[(j / nr) * self.k * nr..];
            for kk in 0..self.k {
                out[kk * self.n + j] = panel[kk * nr + j % nr];
            }
        }
        out
    }
}

entry_and_portable_twin! {
    /// [`super::gemm`] with B packed once by [`PackedB`]: the same contract and
    /// bits, without packing B on each call (on a CPU whose kernel reads other
    /// panels than the AVX2 kernel's, B is unpacked and the plain path runs).
    ///
    /// # Errors
    /// As [`super::gemm`].
    pub fn gemm_packed / gemm_packed_portable<TA: FloatElement, O: FloatElement>(
        a: MatRef<'_, TA>,
        b: &PackedB,
        c: MatMut<'_, O>,
        epilogue: &Epilogue<'_>,
        parallelism: Parallelism,
    ) -> Result<(), Error> => packed_on
}

/// Which strategy and kernel tier [`gemm_packed`] runs for these operands
/// (see [`Plan`]).
///
/// # Errors
/// [`Error::ShapeMismatch`] when A's K is not B's.
pub fn gemm_packed_plan<TA: FloatElement>(
    a: MatRef<'_, TA>,
    b: &PackedB,
    parallelism: Parallelism,
) -> Result<Plan, Error> {
    let b_shape = MatRef::<f32>::shape_only(b.k, b.n);
    super::check_inner(&a, &b_shape)?;
    let simd = crate::cpu::has_avx2_fma_f16c();
    let packed = driver::prepacked_kernel_fits(simd);
    Ok(driver::plan(&a, &b_shape, None, packed, parallelism, simd))
}

fn packed_on<TA: FloatElement, O: FloatElement>(
    a: MatRef<'_, TA>,
    b: &PackedB,
    c: MatMut<'_, O>,
    epilogue: &Epilogue<'_>,
    parallelism: Parallelism,
    simd: bool,
) -> Result<(), Error> {
    let b_shape = MatRef::<f32>::shape_only(b.k, b.n);
    validate(&a, &b_shape, &c, epilogue, parallelism)?;
    if driver::prepacked_kernel_fits(simd) {
        driver::run_prepacked(a, &b.panels, b.n, c, epilogue, parallelism, simd);
    } else {
        let unpacked = b.to_row_major();
        let bm = MatRef::from_row_major(&unpacked, b.k, b.n)?;
        driver::run(a, bm, None, c, epilogue, parallelism, simd);
    }
    Ok(())
}

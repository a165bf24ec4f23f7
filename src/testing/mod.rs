//! Test support for crates that depend on mixprec (cargo feature `proptest`).
//!
//! * **Values** ([`any_bits`], [`finite`], [`normal`], [`normal_in`],
//!   [`subnormal`], [`near_rounding_boundary`], [`specials`], [`mixed`]):
//!   proptest strategies for every [`FloatElement`] format. None of them
//!   rejects samples: each maps uniformly drawn integers onto exactly the
//!   bit patterns it promises, so a narrow format never exhausts proptest's
//!   reject budget.
//! * **Matrices** ([`gemm_shapes`], [`strided_matrix`], [`tensor_shapes`],
//!   [`tensor`]): shapes whose K crosses multiples of the array height,
//!   padded and transposed storage behind [`MatRef`]/[`MatMut`] views, and
//!   tensors.
//! * **Bounds and checkers** ([`gamma`], [`unit_roundoff`],
//!   [`conversion_error_bound`], [`ulp_distance`], [`gemm_error_bound`],
//!   [`dot_reference`], [`dot_error_bound`], [`check_gemm_within_bound`],
//!   [`check_bits_eq`], [`check_slice_bits_eq`]): the contract's forward
//!   error bound, a plain dot product's bound in a chosen accumulator, the
//!   f64 reference with Σ|a·b|, and checkers that return a
//!   [`Report`] naming the first offending index, the values and the bound.
//!   A `Report` converts into proptest's `TestCaseError`, so `?` works in a
//!   `proptest!` body.
//!
//! # Example: a bf16 linear layer checked against the bound
//!
//! A dependent crate's property test: f32 activations times bf16 weights,
//! over shapes whose K crosses tile edges, with strided and transposed views.
//!
//! ```
//! use mixprec::gemm::{gemm_mixed, Epilogue, Parallelism};
//! use mixprec::testing::{check_gemm_within_bound, gemm_shapes, normal_in, strided_matrix};
//! use mixprec::{bf16, MatMut, MatRef};
//! use proptest::prelude::*;
//!
//! proptest!(|((x, w) in gemm_shapes(24, 3).prop_flat_map(|(m, k, n)| (
//!     strided_matrix(m, k, normal_in::<f32>(-1.0, 1.0).unwrap()).unwrap(),
//!     strided_matrix(k, n, normal_in::<bf16>(-2.0, 2.0).unwrap()).unwrap(),
//! )))| {
//!     let mut y = vec![0.0f32; x.rows() * w.cols()];
//!     let out = MatMut::from_row_major(&mut y, x.rows(), w.cols())?;
//!     gemm_mixed(x.view(), w.view(), out, &Epilogue::new(), Parallelism::Serial)?;
//!     check_gemm_within_bound(x.view(), w.view(), MatRef::from_row_major(&y, x.rows(), w.cols())?)?;
//! });
//! ```
//!
//! [`FloatElement`]: crate::FloatElement
//! [`MatRef`]: crate::MatRef
//! [`MatMut`]: crate::MatMut

mod bounds;
mod matrices;
mod values;

pub use bounds::{
    check_bits_eq, check_gemm_within_bound, check_slice_bits_eq, conversion_error_bound,
    dot_error_bound, dot_reference, gamma, gemm_error_bound, ulp_distance, unit_roundoff,
    DotReference, Report,
};
pub use matrices::{gemm_shapes, strided_matrix, tensor, tensor_shapes, StridedMatrix};
pub use values::{
    any_bits, finite, mixed, near_rounding_boundary, normal, normal_in, specials, subnormal,
};

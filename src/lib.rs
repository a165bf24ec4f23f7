//! # mixprec
//!
//! A TPU-style matrix unit's numerics on the CPU: bf16, f16 and OCP FP8 number
//! formats with fast, exactly specified conversions; tensors and strided matrix
//! views; a GEMM engine tiled like a 128×128 systolic array whose results are
//! specified to the bit; int8 quantization with an exact integer GEMM; a model
//! of the systolic array; and loss-scaled mixed-precision training.
//!
//! ```
//! use mixprec::{bf16, Tensor};
//! let x = Tensor::from_vec(&[2, 2], vec![1.0f32, 2.5, -0.1, 3.0e38])?;
//! let y = x.to_dtype::<bf16>();
//! assert_eq!(y.shape(), &[2, 2]);
//! assert_eq!(y.as_slice()[1].to_f32(), 2.5);
//! # Ok::<(), mixprec::Error>(())
//! ```
//!
//! Modules:
//! * [`dtype`]: the formats ([`f16`](struct@f16), [`bf16`], [`F8E4M3`], [`F8E5M2`]), [`DType`], [`Element`].
//! * [`convert`]: slice conversions, SIMD-accelerated, bit-identical to a scalar reference.
//! * [`tensor`]: [`Tensor`], [`MatRef`], [`MatMut`].
//! * [`gemm`]: the bit-exact, systolic-tiled GEMM and its reference loops.
//! * [`quant`]: quantization parameters, observers, the integer GEMM, requantization.
//! * [`systolic`]: cycle-stepped simulation and analytical model of the array.
//! * [`amp`]: loss scaling, f32 master weights, layers, optimizers, `train_step`.
//! * `testing` (feature `proptest`): proptest strategies for every format,
//!   matrices and tensors; the contract's error bounds; checkers with
//!   readable reports, for dependents' own property tests.
//!
//! Cargo features, all off by default (docs.rs shows them all):
//! * `proptest`: the `testing` module (see its example of a dependent's
//!   property test).
//! * `arbitrary`: `arbitrary::Arbitrary` for [`F8E4M3`], [`F8E5M2`] and
//!   [`DType`], for fuzzing (the `half` types have it upstream).
//! * `serde`: `Serialize`/`Deserialize` for the formats, [`DType`],
//!   `QuantParams`, `LossScaler`, the optimizers, `Mlp` and the RNG, with
//!   the constructors' checks on the way in (checkpoints resume
//!   bit-identically; see `examples/train_mnist.rs --checkpoint`).
//! * `safetensors`: the `safetensors` module (read and write every
//!   [`DType`], quantized tensors with their parameters).
//! * `ndarray`: the `ndarray_interop` module (zero-copy views both ways).

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod amp;
pub mod block_scaled;
pub mod convert;
mod cpu;
pub mod dtype;
mod error;
pub mod gemm;
#[cfg(feature = "ndarray")]
#[cfg_attr(docsrs, doc(cfg(feature = "ndarray")))]
pub mod ndarray_interop;
pub mod quant;
#[cfg(feature = "safetensors")]
#[cfg_attr(docsrs, doc(cfg(feature = "safetensors")))]
pub mod safetensors;
mod simd;
pub mod systolic;
pub mod tensor;
#[cfg(feature = "proptest")]
#[cfg_attr(docsrs, doc(cfg(feature = "proptest")))]
pub mod testing;

pub use cpu::active_isa;
pub use dtype::{
    bf16, f16, DType, Element, FloatElement, MxInt8, F4E2M1, F6E2M3, F6E3M2, F8E4M3, F8E5M2, F8E8M0,
};
pub use error::Error;
pub use tensor::{MatMut, MatRef, Tensor};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

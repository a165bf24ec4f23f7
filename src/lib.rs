//! # mixprec
//!
//! A TPU-style matrix unit's numerics on the CPU:
//! * **number formats**: bf16 and f16 (from `half`), OCP FP8 (E4M3, E5M2),
//!   the OCP Microscaling element types (FP6 E2M3/E3M2, FP4 E2M1, MXINT8)
//!   and the E8M0 scale, int8 and u8, with conversions exactly specified
//!   (round to nearest even, stated overflow and NaN rules, optional
//!   stochastic rounding) and SIMD-fast, bit-identical to a scalar
//!   reference;
//! * **block-scaled formats**: MXFP8, MXFP6, MXFP4, MXINT8, NVFP4 and
//!   scaled FP8 (1×128, 128×128, per tensor) as [`block_scaled`] matrices;
//! * **GEMMs specified to the bit**: tiled like a 128×128 weight-stationary
//!   systolic array, every path (AVX-512, AVX2, portable, any thread count,
//!   any strides) returns what one public plain loop returns;
//! * **int8 quantization** with an exact integer GEMM, observers and
//!   requantization as PyTorch and TFLite define them;
//! * a **model of the systolic array** (cycle-stepped and analytical);
//! * **mixed-precision training**: loss-scaled f16/bf16/FP8 with f32
//!   master weights.
//!
//! # Which function for which job
//!
//! | job | start here |
//! |---|---|
//! | convert a tensor or slice to bf16/f16/FP8 | [`Tensor::to_dtype`], [`convert::narrow`] |
//! | bf16 (or f16, FP8, mixed) linear layer `y = act(x·Wᵀ + b)` | [`gemm::gemm`], [`gemm::gemm_mixed`] with an [`gemm::Epilogue`] |
//! | the same weights many times at small batch | [`gemm::PackedB`] with [`gemm::gemm_packed`] |
//! | int8 dynamic-quantized linear layer | [`quant::DynamicQuantLinear`] |
//! | int8 GEMM with your own parameters | [`quant::qgemm`] (batch ≤ 32 reads int8 weights in place, `[out, in]` as `w.t()` fastest), [`quant::qgemm_packed`] (weights packed once) |
//! | weight-only quantized linear layer (FP4, int4, FP8 weights; f32/bf16 activations), any input rank | [`quant::WeightOnlyLinear`] |
//! | f32/bf16 activations × block-scaled or int4 weights, one call | [`gemm::weight_only_gemm`], [`gemm::weight_only_gemm_packed`] ([`block_scaled::PackedFp4`]), [`gemm::weight_only_gemm_fp8`] ([`block_scaled::PackedFp8`]), [`gemm::weight_only_gemm_int4`] ([`block_scaled::PackedInt4`]) |
//! | both operands in MXFP4/NVFP4/MXFP8/scaled FP8 | [`block_scaled::BlockScaled`], [`gemm::block_gemm`]; FP4 weights at small batch: [`block_scaled::PackedFp4`], [`gemm::block_gemm_packed`] |
//! | post-training quantization of an MLP | [`quant::ptq`] |
//! | an FP8 or f16/bf16 training step | [`amp::train_step`] with [`amp::Mlp`], [`amp::LossScaler`], `Linear::set_fp8` |
//! | tensors in and out of safetensors files | `safetensors::Safetensors`, `safetensors::SafetensorsFile` (one tensor at a time) (feature `safetensors`) |
//! | load a gpt-oss (MXFP4), ModelOpt (NVFP4) or DeepSeek-V3 (block FP8) checkpoint's weights | `Safetensors::gpt_oss_mxfp4`, `modelopt_nvfp4`, `deepseek_fp8` (and their `insert_*` savers), then [`quant::WeightOnlyLinear::from_packed_fp4`] / `from_fp8` |
//! | property-testing your own kernel | `testing` (feature `proptest`): strategies, [`gemm::reference`], `dot_reference`, `dot_error_bound`, `check_gemm_within_bound` |
//! | which code path a call takes | [`gemm::plan`], [`active_isa`] |
//!
//! # Quick start
//!
//! Formats, slices and views:
//!
//! ```
//! use mixprec::{bf16, convert, F8E4M3, Tensor};
//! assert_eq!(F8E4M3::from_f32(0.3).to_f32(), 0.3125);      // round to nearest even
//! assert!(F8E4M3::from_f32(1e4).is_nan());                  // E4M3 has no infinity
//! let x = vec![0.1f32; 1000];
//! let mut y = vec![bf16::ZERO; 1000];
//! convert::narrow(&x, &mut y)?;                             // SIMD, the same bits everywhere
//! let t = Tensor::from_vec(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])?;
//! assert_eq!(t.as_mat()?.t().get(2, 1), Some(6.0));         // a transposed view, no copy
//! # Ok::<(), mixprec::Error>(())
//! ```
//!
//! A linear layer, and its bits checked against the contract's plain loop:
//!
//! ```
//! use mixprec::gemm::{gemm, reference, Activation, Epilogue, Parallelism};
//! use mixprec::{bf16, MatMut, MatRef};
//! let (m, k, n) = (4, 300, 3);
//! let x: Vec<bf16> = (0..m * k).map(|i| bf16::from_f32((i % 7) as f32 * 0.25)).collect();
//! let w: Vec<bf16> = (0..k * n).map(|i| bf16::from_f32((i % 5) as f32 - 2.0)).collect();
//! let bias = [0.5f32, -1.0, 2.0];
//! let epilogue = Epilogue::new().bias(&bias).activation(Activation::Gelu);
//! // W stored k × n ([in, out]): the layout the kernels read fastest at small
//! // batch. PyTorch's [out, in] works too, as MatRef::from_row_major(&w, n, k)?.t():
//! // the same bits, on a path of its own (1.1-2.4x the time at M = 1-32 on Zen 3).
//! let (x, w) = (MatRef::from_row_major(&x, m, k)?, MatRef::from_row_major(&w, k, n)?);
//! let mut y = vec![0.0f32; m * n];
//! gemm(x, w, MatMut::from_row_major(&mut y, m, n)?, &epilogue, Parallelism::Threads(2))?;
//! let mut y_ref = vec![0.0f32; m * n];
//! reference(x, w, MatMut::from_row_major(&mut y_ref, m, n)?, &epilogue)?;
//! assert!(y.iter().zip(&y_ref).all(|(a, b)| a.to_bits() == b.to_bits()));
//! # Ok::<(), mixprec::Error>(())
//! ```
//!
//! An int8 dynamic-quantized linear layer (PyTorch's `quantize_dynamic`):
//!
//! ```
//! use mixprec::quant::DynamicQuantLinear;
//! use mixprec::{gemm::Parallelism, Tensor};
//! let w = Tensor::from_fn(&[3, 4], |ix| (ix[0] as f32 - 1.0) * 0.5 + ix[1] as f32 * 0.1)?; // [out, in]
//! let layer = DynamicQuantLinear::new(&w, None)?;
//! let y = layer.forward(&Tensor::from_vec(&[1, 4], vec![1.0, -2.0, 0.5, 3.0])?, Parallelism::Serial)?;
//! assert_eq!(y.shape(), &[1, 3]);
//! # Ok::<(), mixprec::Error>(())
//! ```
//!
//! MXFP4 weights (OCP Microscaling: blocks of 32 E2M1 with an E8M0 scale):
//!
//! ```
//! use mixprec::block_scaled::{BlockScaled, MxScaleMode};
//! use mixprec::{MatRef, F4E2M1};
//! let w: Vec<f32> = (0..2 * 64).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
//! let q = BlockScaled::<F4E2M1>::mx(MatRef::from_row_major(&w, 2, 64)?, MxScaleMode::Floor)?;
//! assert_eq!(q.scales().len(), 4); // one scale per 32 values
//! # Ok::<(), mixprec::Error>(())
//! ```
//!
//! The README has more: mixed operand types, safetensors, ndarray,
//! checkpoints, training and the systolic model.
//!
//! # Modules
//! * [`dtype`]: the formats ([`f16`](struct@f16), [`bf16`], [`F8E4M3`],
//!   [`F8E5M2`], [`F6E2M3`], [`F6E3M2`], [`F4E2M1`], [`MxInt8`],
//!   [`F8E8M0`]), [`DType`], [`Element`].
//! * [`convert`]: slice conversions, SIMD-accelerated, bit-identical to a scalar reference.
//! * [`tensor`]: [`Tensor`], [`MatRef`], [`MatMut`].
//! * [`block_scaled`]: MX, NVFP4 and scaled FP8 matrices and their quantizer.
//! * [`gemm`]: the bit-exact, systolic-tiled GEMM, its block-scaled form, and the reference loops.
//! * [`quant`]: quantization parameters, observers, the integer GEMM, requantization, PTQ.
//! * [`systolic`]: cycle-stepped simulation and analytical model of the array.
//! * [`amp`]: loss scaling, f32 master weights, FP8 scaling, layers, optimizers, `train_step`.
//! * `testing` (feature `proptest`): proptest strategies for every format,
//!   matrices and tensors; the contract's error bounds; checkers with
//!   readable reports, for dependents' own property tests.
//!
//! Cargo features, all off by default (docs.rs shows them all):
//! * `proptest`: the `testing` module (see its example of a dependent's
//!   property test).
//! * `arbitrary`: `arbitrary::Arbitrary` for the FP8 types and
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

//! The block quantizer's kernel leaves, one per instruction set (the
//! portable form is the scalar path of [`super::quantize`]).

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;

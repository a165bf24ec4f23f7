//! SIMD helpers shared by the conversions and the block quantizer, below
//! both: cache prefetch hints, streaming (non-temporal) copies and the
//! fence that orders such stores. Safe dispatch here; the x86-64 forms in
//! the leaf [`x86_64`].

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// `dst` = `src` (equal lengths); on x86-64 by non-temporal stores, which
/// skip reading `dst`'s lines into cache first and do not keep them there
/// (for data read back only after much else has passed through the
/// caches). Call [`store_fence`] before the data is read.
pub(crate) fn copy_streaming(dst: &mut [u32], src: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    x86_64::copy_streaming(dst, src);
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(&src[..dst.len()]);
}

/// Asks for `values` to be brought into cache (a hint: on other
/// architectures, nothing).
pub(crate) fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    x86_64::prefetch_lines(values, 0);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Orders the block quantizer's and [`copy_streaming`]'s non-temporal
/// stores before every later store: call it once after the last line,
/// before the output is handed back or read.
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    x86_64::store_fence();
}

//! SIMD helpers shared by the conversions, the block quantizer and the
//! GEMM's packing, below all three: cache prefetch hints, streaming
//! (non-temporal) copies and the fence that orders such stores, and the
//! transpose that packs a B stored with contiguous columns. Safe dispatch here; the x86-64 forms in
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

/// `dst[kk·nr + r] = src[r·ld + kk]` for rows `r < rows` and steps
/// `kk < kc`, and `dst[kk·nr + r] = 0` for `rows ≤ r < nr`: `rows` lines
/// of `kc` contiguous values each (a K-chunk of B's columns, which are the
/// rows of a weight stored `[out, in]`) interleaved into `kc` steps of `nr`
/// values, the layout of a packed B panel. Moves values only, so the bits
/// are the source's. With `simd` on a CPU with AVX2, whole 8 × 8 blocks by
/// register transposes; the rest value by value.
///
/// Does nothing when `rows > nr` or a length falls short (the callers pass
/// a panel's rows and buffers they sized).
pub(crate) fn transpose_to_steps(
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [f32],
    nr: usize,
    simd: bool,
) {
    let src_needed = if rows == 0 || kc == 0 {
        0
    } else {
        (rows - 1).saturating_mul(ld).saturating_add(kc)
    };
    if rows > nr || src.len() < src_needed || dst.len() < kc.saturating_mul(nr) {
        return;
    }
    if rows == 1 && nr == 1 {
        // One row into steps of one value: a copy.
        dst[..kc].copy_from_slice(&src[..kc]);
        return;
    }
    let (mut rows8, mut kc8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if simd && crate::cpu::has_avx2_fma_f16c() {
        (rows8, kc8) = (rows / 8 * 8, kc / 8 * 8);
        // SAFETY: AVX is present (checked with AVX2 just above); rows8
        // and kc8 are multiples of 8 with rows8 ≤ rows ≤ nr and kc8 ≤ kc,
        // so `src` holds (rows8 − 1)·ld + kc8 values and `dst` kc8·nr (the
        // lengths checked above).
        unsafe { x86_64::transpose_8x8_blocks(src, ld, rows8, kc8, dst, nr) };
    }
    let _ = simd;
    if rows8 == rows && kc8 == kc && rows == nr {
        return; // all in whole blocks
    }
    for kk in 0..kc {
        let step = &mut dst[kk * nr..(kk + 1) * nr];
        // Rows 0..rows8 of steps 0..kc8 are done.
        let from = if kk < kc8 { rows8 } else { 0 };
        for r in from..rows {
            step[r] = src[r * ld + kk];
        }
        step[rows..].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::transpose_to_steps;

    /// Every row count up to the panel width and step counts around the
    /// 8 × 8 blocks, with and without SIMD: `dst` holds `src` transposed,
    /// zeros past the rows, and nothing past `kc · nr` is touched.
    #[test]
    fn transpose_to_steps_moves_every_value() {
        let (nr, ld) = (16, 37);
        let src: Vec<f32> = (0..nr * ld).map(|i| i as f32 + 0.5).collect();
        for simd in [false, true] {
            for rows in 0..=nr {
                for kc in [0, 1, 7, 8, 9, 16, 23, 37] {
                    let mut dst = vec![-1.0f32; (kc + 1) * nr];
                    transpose_to_steps(&src, ld, rows, kc, &mut dst, nr, simd);
                    for kk in 0..kc {
                        for r in 0..nr {
                            let want = if r < rows { src[r * ld + kk] } else { 0.0 };
                            assert_eq!(dst[kk * nr + r], want, "{simd} {rows} {kc} {kk} {r}");
                        }
                    }
                    assert!(dst[kc * nr..].iter().all(|&v| v == -1.0));
                }
            }
        }
    }
}

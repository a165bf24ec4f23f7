//! The block quantizer: the passes over a matrix (amax passes, streaming
//! and chunk order) and the per-line dispatch to the [`super::kernel`]
//! leaves, with the scalar path every leaf must match bit for bit.

use super::kernel;
use super::scale::{to_amax, ScaleRule};
use super::{check_shape, BlockScaled, ScaleKind};
use crate::convert::{format_of, narrow_dispatch};
use crate::dtype::format::Overflow;
use crate::dtype::{FloatElement, F8E4M3};
use crate::simd::{copy_streaming, prefetch, store_fence};
use crate::tensor::MatRef;
use crate::Error;

/// Quantized outputs of at least this many bytes are written with
/// non-temporal stores (8 MiB: past any core's L2 and most of an L3 share).
const STREAM_MIN_BYTES: usize = 8 << 20;

/// Whether quantizing `lines × k` values into elements of `elem_bytes`
/// bytes streams its outputs (see [`STREAM_MIN_BYTES`]); the byte count
/// saturates, for views whose lines × k need not fit one.
pub(super) fn streams(lines: usize, k: usize, elem_bytes: usize) -> bool {
    lines.saturating_mul(k).saturating_mul(elem_bytes) >= STREAM_MIN_BYTES
}

/// Values rounded between prefetches of the next band in scaled FP8 by
/// 128 x 128 blocks (a multiple of 128; 2 KiB of source).
const PREFETCH_PIECE: usize = 512;

/// Source bytes per chunk of lines in a pass that finds maxima before a
/// second pass reads the source again (4 MiB, a fraction of an L3): the
/// first pass takes the chunks last first, so the second, first to last,
/// starts on the lines the first left in cache (and the first starts
/// where a caller that just wrote the source left off).
const REUSE_CHUNK_BYTES: usize = 4 << 20;

/// The lines `0..lines`, in chunks of about [`REUSE_CHUNK_BYTES`] of
/// source (`row_bytes` each): the last chunk first, each chunk in order.
fn lines_last_chunk_first(lines: usize, row_bytes: usize) -> impl Iterator<Item = usize> {
    let per = (REUSE_CHUNK_BYTES / row_bytes.max(1)).max(1);
    (0..lines.div_ceil(per))
        .rev()
        .flat_map(move |c| c * per..lines.min((c + 1) * per))
}

/// [`amax_or_nan`] of `x` (rows contiguous, `k` a positive multiple of
/// `block`), leaving each block's largest |x| bits, as an f32's bits, in
/// `scales` (resized to `n_scales`, one per block, in line order); lines
/// as [`lines_last_chunk_first`] orders them. With
/// `stream` the maxima go out by non-temporal stores: the rest of the
/// source evicts them before the second pass reads them anyway, and those
/// stores skip reading their lines first.
pub(super) fn block_amax_in_scales(
    x: MatRef<'_, f32>,
    block: usize,
    scales: &mut Vec<f32>,
    n_scales: usize,
    stream: bool,
) -> f32 {
    let simd = crate::cpu::has_avx2_fma_f16c();
    let (k, nb) = (x.cols(), x.cols() / block);
    // Every entry is written below: a reused buffer is only resized.
    scales.truncate(n_scales);
    scales.resize(n_scales, 0.0);
    let bits: &mut [u32] = bytemuck::cast_slice_mut(scales);
    // With `stream`, the maxima pass through here on their way out.
    let mut piece = [0u32; 256];
    let mut amax = 0u32;
    for l in lines_last_chunk_first(x.rows(), k.saturating_mul(4)) {
        let line = &mut bits[l * nb..][..nb];
        let row = &x.as_slice()[l * x.row_stride()..][..k];
        // 256 blocks at a time: their maxima are in L1, so their max is cheap.
        let pieces = row.chunks(block * piece.len());
        for (src, dst) in pieces.zip(line.chunks_mut(piece.len())) {
            let maxima = if stream {
                &mut piece[..dst.len()]
            } else {
                &mut *dst
            };
            block_amax_bits(src, block, maxima, simd);
            amax = amax.max(amax_bits(bytemuck::cast_slice(maxima), simd));
            if stream {
                copy_streaming(dst, &piece[..dst.len()]);
            }
        }
    }
    if stream {
        store_fence();
    }
    to_amax(amax)
}

/// The largest |x| of a matrix, or NaN when it holds a NaN or ±∞ (by the
/// bits of |x|, which order NaN and ±∞ last; an integer max), lines as
/// [`lines_last_chunk_first`] orders them.
pub(super) fn amax_or_nan(x: MatRef<'_, f32>) -> f32 {
    let simd = crate::cpu::has_avx2_fma_f16c();
    let mut bits = 0u32;
    for l in lines_last_chunk_first(x.rows(), x.cols().saturating_mul(4)) {
        bits = match x.row(l) {
            Ok(r) if r.col_stride() == 1 && r.cols() > 0 => {
                bits.max(amax_bits(&r.as_slice()[..r.cols()], simd))
            }
            Ok(r) => (0..r.cols()).fold(bits, |m, j| m.max(r.at(0, j).to_bits() & 0x7FFF_FFFF)),
            Err(_) => bits,
        };
    }
    to_amax(bits)
}

impl<T: FloatElement> BlockScaled<T> {
    /// Runs a quantizer on this matrix's buffers and takes its result; on
    /// an error the buffers (untouched: quantizers check before writing)
    /// go back.
    pub(super) fn reuse(
        &mut self,
        quantize: impl FnOnce(&mut Vec<T>, &mut Vec<f32>) -> Result<Self, Error>,
    ) -> Result<(), Error> {
        let (mut data, mut scales) = (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.scales),
        );
        match quantize(&mut data, &mut scales) {
            Ok(q) => {
                *self = q;
                Ok(())
            }
            Err(e) => {
                self.data = data;
                self.scales = scales;
                Err(e)
            }
        }
    }

    /// Quantizes `x` block by block: `rule` gives the block's f32 scale
    /// from the largest |value| of its region; elements are `x / scale`
    /// rounded to nearest even and saturated. `codes` (NVFP4) receives the
    /// rule's code per block (lines with their own scales only).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn quantize_with(
        x: MatRef<'_, f32>,
        block: usize,
        line_group: usize,
        kind: ScaleKind,
        rule: ScaleRule,
        data: &mut Vec<T>,
        scales: &mut Vec<f32>,
        codes: Option<&mut Vec<F8E4M3>>,
        amax_given: BlockAmax,
    ) -> Result<Self, Error> {
        let (lines, k) = (x.rows(), x.cols());
        let n_scales = check_shape::<T>(lines, k, block, line_group)?;
        // Block amaxes are only handed in for lines with their own scales,
        // one per block (see `nvfp4_in`).
        let amax_given = match amax_given {
            BlockAmax::InScales if line_group == 1 && scales.len() == n_scales => amax_given,
            _ => BlockAmax::FromSource,
        };
        let nb = k / block;
        // Lines as slices (copied only from a strided view).
        let contiguous = x.col_stride() == 1;
        let mut buf = Vec::new();
        // Grown a line at a time just before the line is written, so the
        // zeroing happens in cache rather than as a pass over memory (and
        // in the caller's buffers when it lends them).
        // A reused buffer keeps its length (every element is written), so
        // only its growth is zeroed; the same for the scales and codes
        // (every block's is written; with `InScales` they hold the amaxes).
        data.truncate(lines * k);
        data.reserve(lines * k - data.len());
        scales.truncate(n_scales);
        if k == 0 {
            return Ok(Self {
                lines,
                k,
                block,
                line_group,
                data: std::mem::take(data),
                scales: std::mem::take(scales),
                kind,
            });
        }
        macro_rules! row {
            ($l:expr) => {
                if contiguous {
                    &x.as_slice()[$l * x.row_stride()..][..k]
                } else {
                    buf.clear();
                    buf.extend((0..k).map(|kk| x.at($l, kk)));
                    &buf[..]
                }
            };
        }
        let simd = crate::cpu::has_avx2_fma_f16c();
        scales.resize(n_scales, 0.0);
        let mut scratch = Vec::new();
        // An output past what caches keep goes out by non-temporal stores
        // (as memcpy's do): no reads of its lines first.
        let stream = streams(lines, k, std::mem::size_of::<T>());
        if line_group == 1 {
            // Each line has its own scales: amax, scales and quotients while
            // the line is in cache.
            let mut no_codes = Vec::new();
            let codes = match codes {
                Some(c) => {
                    c.truncate(n_scales);
                    c.resize(n_scales, F8E4M3::default());
                    c
                }
                None => &mut no_codes,
            };
            for l in 0..lines {
                let row: &[f32] = row!(l);
                if data.len() < (l + 1) * k {
                    data.resize((l + 1) * k, T::default());
                }
                let srow = &mut scales[l * nb..(l + 1) * nb];
                let crow = codes.get_mut(l * nb..(l + 1) * nb).unwrap_or_default();
                let out = &mut data[l * k..];
                quantize_blocks(
                    row,
                    block,
                    srow,
                    bytemuck::cast_slice_mut(crow),
                    out,
                    &mut scratch,
                    simd,
                    &rule,
                    LinePass {
                        amax: amax_given,
                        stream,
                    },
                );
            }
            if stream {
                store_fence();
            }
        } else {
            // A band of `line_group` lines at a time (128 x 128 blocks; per
            // tensor, all the lines): its regions' maxima, their scales,
            // then its codes, so that the band's second read can find it
            // in cache. Per tensor, the one scale comes from the tensor's
            // amax (already found), which replaces the regions' maxima: no
            // pass for them.
            let per_tensor = matches!(
                rule,
                ScaleRule::Fp8 {
                    tensor_amax: Some(_),
                    ..
                }
            );
            if per_tensor {
                scales.fill(rule.scale(0).0);
            }
            let (mut amax, mut region) = (vec![0u32; nb], vec![0u32; nb]);
            let mut recips = vec![None; nb];
            for (band, srow) in scales.chunks_exact_mut(nb).enumerate() {
                let band_lines = band * line_group..lines.min((band + 1) * line_group);
                if !per_tensor {
                    region.fill(0);
                    for l in band_lines.clone() {
                        block_amax_bits(row!(l), block, &mut amax, simd);
                        for (a, &b) in region.iter_mut().zip(&amax) {
                            *a = (*a).max(b);
                        }
                    }
                    for (s, &b) in srow.iter_mut().zip(&region) {
                        *s = rule.scale(b).0;
                    }
                }
                // A power-of-two scale multiplies by its exact reciprocal.
                for (r, &s) in recips.iter_mut().zip(&*srow) {
                    *r = block_reciprocal(s);
                }
                for l in band_lines {
                    let row: &[f32] = row!(l);
                    if data.len() < (l + 1) * k {
                        data.resize((l + 1) * k, T::default());
                    }
                    // The same line of the next band, fetched while this
                    // one is rounded (the rounding is compute-bound): that
                    // band's two reads then find it in cache (per tensor
                    // the one band holds every line: there is none).
                    let next = (contiguous && l + line_group < lines)
                        .then(|| &x.as_slice()[(l + line_group) * x.row_stride()..][..k]);
                    let out = &mut data[l * k..];
                    for c in (0..k).step_by(PREFETCH_PIECE) {
                        let cols = c..k.min(c + PREFETCH_PIECE);
                        if let Some(next) = next {
                            prefetch(&next[cols.clone()]);
                        }
                        let (b0, b1) = (cols.start / block, cols.end / block);
                        narrow_scaled_blocks(
                            &row[cols.clone()],
                            block,
                            &srow[b0..b1],
                            &recips[b0..b1],
                            &mut out[cols],
                            &mut scratch,
                            simd,
                            stream,
                            true,
                        );
                    }
                }
            }
            if stream {
                store_fence();
            }
        }
        Ok(Self {
            lines,
            k,
            block,
            line_group,
            data: std::mem::take(data),
            scales: std::mem::take(scales),
            kind,
        })
    }
}

/// The largest |x| bits of each block of `block` values of `src` (NaN and
/// ±∞ have the largest bits), into `out` (one per whole block).
pub(crate) fn block_amax_bits(src: &[f32], block: usize, out: &mut [u32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd && block.is_multiple_of(8) {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C.
        unsafe { kernel::x86_avx2::block_amax_bits(src, block, out) };
        return;
    }
    let _ = simd;
    for (blk, o) in src.chunks_exact(block).zip(out.iter_mut()) {
        *o = abs_bits_max(blk, 0);
    }
}

/// The largest of `init` and the |x| bits of `x` (NaN and ±∞ largest).
fn abs_bits_max(x: &[f32], init: u32) -> u32 {
    x.iter().fold(init, |m, v| m.max(v.to_bits() & 0x7FFF_FFFF))
}

/// The largest |x| bits of a whole slice (NaN and ±∞ have the largest
/// bits; 0 for an empty slice): [`block_amax_bits`] over the body, the
/// tail in scalar code.
pub(crate) fn amax_bits(x: &[f32], simd: bool) -> u32 {
    let body = x.len() - x.len() % 8;
    let mut m = [0u32];
    if body > 0 {
        block_amax_bits(&x[..body], body, &mut m, simd);
    }
    abs_bits_max(&x[body..], m[0])
}

/// How a block's quotients `x / s` are formed: by the reciprocal when `s`
/// is a normal power of two whose reciprocal is normal (the same exact
/// quotient, so the same bits, and far cheaper), else by division.
#[inline]
pub(crate) fn block_reciprocal(s: f32) -> Option<f32> {
    // 2^(e − 127) with e in 1..=253 has the normal reciprocal 2^(127 − e):
    // exponent field 254 − e (no division needed).
    let bits = s.to_bits();
    let e = bits >> 23;
    (bits & 0x007F_FFFF == 0 && (1..=253).contains(&e)).then(|| f32::from_bits((254 - e) << 23))
}

/// `dst[i]` = `src[i] / scales[i / block]` (by `recips` where given, see
/// [`block_reciprocal`]), rounded to nearest even and saturated to `T`.
/// `scratch` holds the quotients on the portable path. `src.len()` is a
/// multiple of `block`. With `stream` the SIMD path stores the codes
/// non-temporally (then [`store_fence`] before the output is read). With
/// `amax_scales` every scale is a [`ScaleRule`]'s from an amax over values
/// that include its block's (so a finite positive scale means finite quotients, and
/// the SIMD path leaves out their NaN handling); a scale from elsewhere
/// (delayed scaling's history) needs `false`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn narrow_scaled_blocks<T: FloatElement>(
    src: &[f32],
    block: usize,
    scales: &[f32],
    recips: &[Option<f32>],
    dst: &mut [T],
    scratch: &mut Vec<f32>,
    simd: bool,
    stream: bool,
    amax_scales: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(fmt)) = (simd && fused_ok::<T>(block), format_of::<T>()) {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C;
        // `T` is one byte (checked by `fused_ok`).
        unsafe {
            kernel::x86_avx2::narrow_scaled_blocks(
                src,
                block,
                scales,
                recips,
                bytemuck::cast_slice_mut(dst),
                fmt,
                stream,
                amax_scales,
            )
        };
        return;
    }
    let _ = (stream, amax_scales);
    scratch.clear();
    for ((blk, &s), rec) in src.chunks_exact(block).zip(scales).zip(recips) {
        match rec {
            Some(r) => scratch.extend(blk.iter().map(|&v| v * r)),
            None => scratch.extend(blk.iter().map(|&v| v / s)),
        }
    }
    narrow_dispatch(scratch, &mut dst[..scratch.len()], Overflow::Saturate, simd);
}

/// Whether the fused block kernels take `T` (one-byte formats) and `block`.
fn fused_ok<T: FloatElement>(block: usize) -> bool {
    T::DTYPE.size_bytes() == 1
        && format_of::<T>().is_some()
        && (block == 16 || block.is_multiple_of(32))
}

/// How [`quantize_blocks`] runs over a line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct LinePass {
    /// Where each block's amax bits come from.
    pub(crate) amax: BlockAmax,
    /// Non-temporal stores for the codes where the SIMD tier has them
    /// (then [`store_fence`] before the output is handed back).
    pub(crate) stream: bool,
}

/// Where [`quantize_blocks`] finds each block's amax bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BlockAmax {
    /// In the source: the line's pass finds them.
    FromSource,
    /// Already in `scales` (each block's |x| bits as an f32's bits), from a
    /// pass before: the line's pass only reads them, then writes the scales
    /// over them.
    InScales,
}

/// One line of a block-scaled quantization: per block of `block` values,
/// `(scales[b], codes[b]) = rule.scale(amax bits)` (`codes` may be empty)
/// and `dst` = the block's quotients rounded to `T` (as
/// [`narrow_scaled_blocks`]); fused into one pass with SIMD, which also
/// evaluates MX and NVFP4 rules eight blocks at a time; `pass` says where
/// the blocks' amax bits come from and how the codes are stored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_blocks<T: FloatElement>(
    src: &[f32],
    block: usize,
    scales: &mut [f32],
    codes: &mut [u8],
    dst: &mut [T],
    scratch: &mut Vec<f32>,
    simd: bool,
    rule: &ScaleRule,
    pass: LinePass,
) {
    #[cfg(target_arch = "x86_64")]
    if simd && fused_ok::<T>(block) {
        // SAFETY: `simd` is only true when the CPU has AVX2, FMA and F16C;
        // `T` is one byte (checked by `fused_ok`).
        unsafe {
            kernel::x86_avx2::quantize_blocks::<T>(
                src,
                block,
                scales,
                codes,
                bytemuck::cast_slice_mut(dst),
                rule,
                pass,
            )
        };
        return;
    }
    let mut recips = Vec::with_capacity(scales.len());
    for (b, (s, blk)) in scales.iter_mut().zip(src.chunks_exact(block)).enumerate() {
        let bits = match pass.amax {
            BlockAmax::FromSource => abs_bits_max(blk, 0),
            BlockAmax::InScales => s.to_bits(),
        };
        let (scale, code) = rule.scale(bits);
        *s = scale;
        if let Some(c) = codes.get_mut(b) {
            *c = code;
        }
        recips.push(block_reciprocal(scale));
    }
    narrow_scaled_blocks(
        src, block, scales, &recips, dst, scratch, false, false, true,
    );
}

#[cfg(test)]
mod tests {
    use super::{lines_last_chunk_first, REUSE_CHUNK_BYTES};

    /// Every line once, chunks of `REUSE_CHUNK_BYTES / row_bytes` lines last
    /// first, each in order; a row past the chunk size is a chunk of its
    /// own, and no lines give nothing.
    #[test]
    fn lines_last_chunk_first_visits_every_line_once() {
        let order = |lines, row_bytes| lines_last_chunk_first(lines, row_bytes).collect::<Vec<_>>();
        let per = REUSE_CHUNK_BYTES / 4096;
        let got = order(2 * per + 3, 4096);
        let mut want: Vec<usize> = (2 * per..2 * per + 3).collect();
        want.extend(per..2 * per);
        want.extend(0..per);
        assert_eq!(got, want);
        assert_eq!(order(3, REUSE_CHUNK_BYTES * 2), vec![2, 1, 0]);
        // Zero-width rows: one chunk.
        assert_eq!(order(5, 0), (0..5).collect::<Vec<_>>());
        assert_eq!(order(0, 64), Vec::<usize>::new());
        assert_eq!(order(7, 64), (0..7).collect::<Vec<_>>());
    }
}

//! Stochastic rounding from a caller-seeded generator.

use super::{check_len, format_of};
use crate::dtype::format::{narrow_bits, Overflow, Rounding};
use crate::dtype::FloatElement;
use crate::Error;

/// A small, fast, seedable generator (SplitMix64, Steele, Lea & Flood 2014)
/// for stochastic rounding. The same seed gives the same stream on every
/// platform; rounding to bf16 consumes one 64-bit output per four elements
/// (16 bits each), the other formats one per element.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StochasticRng {
    pub(crate) state: u64,
}

impl StochasticRng {
    /// A generator whose stream is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The golden-ratio increment of the state per output.
    pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Rounds each f32 of `src` into `dst` stochastically: a value between two
/// neighbours `lo < |x| < hi` of the target format rounds to `hi` with
/// probability `(|x| - lo) / (hi - lo)`, so the expected result is `x`.
///
/// The probability is exact while the dropped bits number at most 63 (always
/// for bf16; for f16 down to 2^-64 of its smallest subnormal); below that the
/// value rounds toward zero, a bias under 2^-39 of a subnormal step. Values
/// exactly representable are unchanged. Above MAX the upper neighbour is
/// infinity (or NaN for E4M3), as with [`super::narrow`]; NaN and infinities
/// convert as there.
///
/// ```
/// use mixprec::{bf16, convert::{narrow_stochastic, StochasticRng}};
/// let x = vec![1.0f32 + 1.0 / 512.0; 10_000]; // a quarter of the way up a bf16 step
/// let mut y = vec![bf16::ZERO; x.len()];
/// narrow_stochastic(&x, &mut y, &mut StochasticRng::new(7))?;
/// let ups = y.iter().filter(|v| v.to_f32() > 1.0).count();
/// assert!((2300..2700).contains(&ups));
/// # Ok::<(), mixprec::Error>(())
/// ```
///
/// # Errors
/// [`Error::LengthMismatch`] when `src` and `dst` differ in length.
pub fn narrow_stochastic<T: FloatElement>(
    src: &[f32],
    dst: &mut [T],
    rng: &mut StochasticRng,
) -> Result<(), Error> {
    check_len("convert::narrow_stochastic", src.len(), dst.len())?;
    let Some(fmt) = format_of::<T>() else {
        let dst: &mut [f32] = bytemuck::cast_slice_mut(dst);
        dst.copy_from_slice(src);
        return Ok(());
    };
    let bits = |x: f32, rng: &mut StochasticRng| {
        narrow_bits(x, fmt, Rounding::Stochastic(rng.next_u64()), Overflow::Ieee)
    };
    if T::DTYPE == crate::DType::BF16 {
        // bf16 drops exactly 16 bits everywhere (its exponent range is
        // f32's), so 16 random bits per element give exact probabilities:
        // one 64-bit draw serves four elements. Same result as
        // `narrow_bits` with those 16 bits.
        let dst: &mut [u16] = bytemuck::cast_slice_mut(dst);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma_f16c() {
            // SAFETY: the CPU has AVX2 (checked above).
            done = unsafe { super::x86_avx2::stochastic_bf16(src, dst, &mut rng.state) };
        }
        // The rest (and everything on other CPUs): the same stream, scalar.
        for (d4, x4) in dst[done..].chunks_mut(4).zip(src[done..].chunks(4)) {
            let r = rng.next_u64();
            for (j, (d, &x)) in d4.iter_mut().zip(x4).enumerate() {
                let bits = x.to_bits();
                *d = if bits & 0x7FFF_FFFF > 0x7F80_0000 {
                    fmt.nan_bits(bits) as u16
                } else {
                    ((bits + ((r >> (16 * j)) as u32 & 0xFFFF)) >> 16) as u16
                };
            }
        }
    } else if T::DTYPE.size_bytes() == 1 {
        let dst: &mut [u8] = bytemuck::cast_slice_mut(dst);
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = bits(x, rng) as u8;
        }
    } else {
        let dst: &mut [u16] = bytemuck::cast_slice_mut(dst);
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = bits(x, rng) as u16;
        }
    }
    Ok(())
}

//! Converts one tensor to every narrow format and back, and prints the error
//! each format introduces beside its unit roundoff.
//!
//! `cargo run --release --example formats` (no flags but `--help`)

#[macro_use]
mod common;

use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
use mixprec::convert::{narrow_stochastic, StochasticRng};
use mixprec::{bf16, f16, FloatElement, MxInt8, Tensor, F4E2M1, F6E2M3, F6E3M2, F8E4M3, F8E5M2};

fn report<T: FloatElement>(x: &Tensor<f32>, unit_roundoff: f64) -> Result<(), mixprec::Error> {
    let back = x.to_dtype::<T>().to_dtype::<f32>();
    let (mut max_rel, mut sum_rel, mut nonfinite) = (0.0f64, 0.0f64, 0usize);
    for (&a, &b) in x.as_slice().iter().zip(back.as_slice()) {
        if !b.is_finite() {
            nonfinite += 1;
            continue;
        }
        let rel = ((a as f64) - (b as f64)).abs() / (a as f64).abs().max(f64::MIN_POSITIVE);
        max_rel = max_rel.max(rel);
        sum_rel += rel;
    }
    let n = x.len() - nonfinite;
    outln!(
        "{:<8} {:>8} {:>12.3e} {:>12.3e} {:>12.3e} {:>10}",
        T::DTYPE.name(),
        T::DTYPE.size_bytes(),
        unit_roundoff,
        max_rel,
        sum_rel / n.max(1) as f64,
        nonfinite
    );
    Ok(())
}

const HELP: &str = "formats [--help]\n\
    Converts 65,536 values spread log-uniformly over [2^-12, 2^12) to every narrow\n\
    format (f16, bf16, FP8, FP6, FP4, MX and NVFP4 blocks, scaled FP8) and back, and\n\
    prints each format's relative error beside its unit roundoff. Takes no other flags.";

fn main() -> Result<(), mixprec::Error> {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "-h" || arg == "--help" {
            outln!("{HELP}");
            return Ok(());
        }
        eprintln!("error: {}", common::unknown(&arg));
        std::process::exit(2);
    }
    // 64k values spread log-uniformly over [2^-12, 2^12), both signs: a
    // spread like a layer's activations and gradients.
    let mut rng = StochasticRng::new(2026);
    let x = Tensor::from_fn(&[256, 256], |_| {
        let r = rng.next_u64();
        let e = (r % 24) as i32 - 12;
        let m = 1.0 + ((r >> 8) & 0xFFFF) as f32 / 65536.0;
        let s = if r >> 63 == 1 { -1.0 } else { 1.0 };
        s * m * 2f32.powi(e)
    })?;
    outln!(
        "mixprec {} on {}: {} values in [2^-12, 2^12)",
        env!("CARGO_PKG_VERSION"),
        mixprec::active_isa(),
        x.len()
    );
    outln!(
        "{:<8} {:>8} {:>12} {:>12} {:>12} {:>10}",
        "format",
        "bytes",
        "u",
        "max rel",
        "mean rel",
        "non-finite"
    );
    report::<f32>(&x, 2f64.powi(-24))?;
    report::<f16>(&x, 2f64.powi(-11))?;
    report::<bf16>(&x, 2f64.powi(-8))?;
    report::<F8E4M3>(&x, 2f64.powi(-4))?;
    report::<F8E5M2>(&x, 2f64.powi(-3))?;
    report::<F6E2M3>(&x, 2f64.powi(-4))?;
    report::<F6E3M2>(&x, 2f64.powi(-3))?;
    report::<F4E2M1>(&x, 2f64.powi(-2))?;
    outln!("(f16 and E4M3 lose relative accuracy below their smallest normal, 2^-14 and 2^-6;");
    outln!(" max rel error above u there is subnormal precision loss, not a rounding bug. The MX");
    outln!(" FP6/FP4 formats span only 0.0625..28 at best and saturate: they need block scales.)");

    // Block scaling is for values of one magnitude per block, like a
    // layer's weights: an approximately normal tensor (a sum of four
    // uniforms), 256 × 256, scaled along its rows (K = 256).
    let x = Tensor::from_fn(&[256, 256], |_| {
        let u = |r: u64| (r >> 40) as f32 / 16_777_216.0;
        (0..4).map(|_| u(rng.next_u64())).sum::<f32>() - 2.0
    })?;
    outln!(
        "\n{:<22} {:>10} {:>12} {:>12}   (a normal-like tensor: |rel error| of every value,",
        "block-scaled",
        "bits/elem",
        "max rel",
        "mean rel"
    );
    outln!("{:>62}", "its smallest values included)");
    let m = x.as_mat()?;
    let scaled = |name: &str, bits: f64, back: Tensor<f32>| {
        let (mut max_rel, mut sum_rel) = (0.0f64, 0.0f64);
        for (&a, &b) in x.as_slice().iter().zip(back.as_slice()) {
            let rel = ((a as f64) - (b as f64)).abs() / (a as f64).abs();
            max_rel = max_rel.max(rel);
            sum_rel += rel;
        }
        outln!(
            "{name:<22} {bits:>10.2} {max_rel:>12.3e} {:>12.3e}",
            sum_rel / x.len() as f64
        );
    };
    let mx = MxScaleMode::Floor;
    scaled(
        "MXFP8 E4M3",
        8.25,
        BlockScaled::<F8E4M3>::mx(m, mx)?.dequantize()?,
    );
    scaled(
        "MXFP8 E5M2",
        8.25,
        BlockScaled::<F8E5M2>::mx(m, mx)?.dequantize()?,
    );
    scaled(
        "MXFP6 E2M3",
        6.25,
        BlockScaled::<F6E2M3>::mx(m, mx)?.dequantize()?,
    );
    scaled(
        "MXFP6 E3M2",
        6.25,
        BlockScaled::<F6E3M2>::mx(m, mx)?.dequantize()?,
    );
    scaled(
        "MXFP4",
        4.25,
        BlockScaled::<F4E2M1>::mx(m, mx)?.dequantize()?,
    );
    scaled(
        "MXINT8",
        8.25,
        BlockScaled::<MxInt8>::mx(m, mx)?.dequantize()?,
    );
    scaled(
        "NVFP4 (tensor scale)",
        4.5,
        BlockScaled::nvfp4(m, true)?.dequantize()?,
    );
    scaled(
        "FP8 E4M3 1x128",
        8.25,
        BlockScaled::<F8E4M3>::fp8(m, Fp8Granularity::Lines1x128, false)?.dequantize()?,
    );
    scaled(
        "FP8 E4M3 per tensor",
        8.0,
        BlockScaled::<F8E4M3>::fp8(m, Fp8Granularity::PerTensor, false)?.dequantize()?,
    );
    outln!("(max rel is 1 where a value near 0 shares its block's scale and rounds to 0;");
    outln!(" the mean is what the format costs.)");

    // Stochastic rounding keeps the mean: sum 10k copies of 1 + 2^-10 in bf16.
    let v = vec![1.0f32 + 2f32.powi(-10); 10_000];
    let mut nearest = vec![bf16::ZERO; v.len()];
    let mut stoch = vec![bf16::ZERO; v.len()];
    mixprec::convert::narrow(&v, &mut nearest)?;
    narrow_stochastic(&v, &mut stoch, &mut StochasticRng::new(1))?;
    let mean = |s: &[bf16]| s.iter().map(|b| b.to_f64()).sum::<f64>() / s.len() as f64;
    outln!(
        "\nmean of 10000 bf16 roundings of 1 + 2^-10 = {:.7}: nearest-even {:.7}, stochastic {:.7}",
        1.0 + 2f64.powi(-10),
        mean(&nearest),
        mean(&stoch)
    );
    Ok(())
}

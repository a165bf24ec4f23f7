//! Arbitrary floats and parameters through quantize, dequantize, parameter
//! derivation and requantization: never a panic, always a value or a typed
//! error; the SIMD path equals the scalar reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::quant::{self, requant, QuantParams, Scheme};

fn f32_at(d: &[u8], i: usize) -> f32 {
    let b = |j: usize| d.get(i + j).copied().unwrap_or(0);
    f32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn i32_at(d: &[u8], i: usize) -> i32 {
    f32_at(d, i).to_bits() as i32
}

fuzz_target!(|data: &[u8]| {
    let scale = f32_at(data, 0);
    let zp = i32_at(data, 4);
    let xs: Vec<f32> = data.get(8..).unwrap_or(&[]).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();

    let (mut a, mut b) = (vec![0i8; xs.len()], vec![0i8; xs.len()]);
    let fast = quant::quantize(&xs, &mut a, scale, zp);
    let slow = quant::reference::quantize(&xs, &mut b, scale, zp);
    assert_eq!(fast, slow);
    if fast.is_ok() {
        assert_eq!(a, b);
        let (mut fa, mut fb) = (vec![0.0f32; xs.len()], vec![0.0f32; xs.len()]);
        quant::dequantize(&a, &mut fa, scale, zp).unwrap();
        quant::reference::dequantize(&a, &mut fb, scale, zp).unwrap();
        assert_eq!(fa.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), fb.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
    let rule = quant::QuantRounding::MultiplyByReciprocal;
    let fast = quant::quantize_with(&xs, &mut a, scale, zp, rule);
    assert_eq!(fast, quant::reference::quantize_with(&xs, &mut b, scale, zp, rule));
    if fast.is_ok() {
        assert_eq!(a, b);
    }
    let (mut ua, mut ub) = (vec![0u8; xs.len()], vec![0u8; xs.len()]);
    let fast = quant::quantize(&xs, &mut ua, scale, zp);
    assert_eq!(fast, quant::reference::quantize(&xs, &mut ub, scale, zp));
    assert_eq!(ua, ub);

    let (lo, hi) = (f32_at(data, 8), f32_at(data, 12));
    for scheme in [Scheme::Affine, Scheme::Symmetric] {
        if let Ok(p) = QuantParams::from_range::<i8>(lo, hi, scheme) {
            let (s, z) = (p.scales()[0], p.zero_points()[0]);
            assert!(s.is_finite() && s > 0.0);
            assert!((-128..=127).contains(&z));
        }
        let _ = QuantParams::from_range::<u8>(lo, hi, scheme);
    }
    let _ = QuantParams::power_of_two::<i8>(lo, hi);

    let rounding = if zp & 1 == 0 {
        requant::RequantRounding::Double
    } else {
        requant::RequantRounding::Single
    };
    if let Ok((m, shift)) = requant::quantize_multiplier(f32_at(data, 16) as f64) {
        for &x in &xs {
            let v = requant::requantize(x.to_bits() as i32, m, shift, zp.clamp(-128, 127), (-128, 127), rounding)
                .expect("quantize_multiplier's output is always a valid multiplier and shift");
            assert!((-128..=127).contains(&v));
        }
    }
    // Any multiplier, shift and range: a value or a typed error, never a panic.
    let _ = requant::multiply_by_quantized_multiplier(zp, i32_at(data, 20), i32_at(data, 24), rounding);
    let _ = requant::requantize(zp, i32_at(data, 20), i32_at(data, 24), zp, (i32_at(data, 28), i32_at(data, 32)), rounding);
    let _ = requant::rounding_divide_by_pot(zp, i32_at(data, 24) as u32);
});

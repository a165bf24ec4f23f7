//! Arbitrary shapes, schemes and values (NaN and infinities included):
//! quantization returns a typed error or a block-scaled matrix whose
//! dequantized values are NaN where the scale is and otherwise the
//! element × scale rounded once; the scaled
//! GEMM equals `block_gemm_reference` bit for bit, and so does the
//! packed-FP4 GEMM where B is FP4.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode, PackedFp4};
use mixprec::gemm::{block_gemm, block_gemm_packed, block_gemm_reference, Epilogue, Parallelism};
use mixprec::{FloatElement, MatMut, MatRef, MxInt8, F4E2M1, F6E3M2, F8E4M3, F8E5M2};

fn gemm_matches<TA: FloatElement, TB: FloatElement>(a: &BlockScaled<TA>, b: &BlockScaled<TB>, threads: usize) {
    let (m, n) = (a.lines(), b.lines());
    let mut want = vec![0.0f32; m * n];
    let mut got = vec![0.0f32; m * n];
    let ep = Epilogue::new();
    let r = block_gemm_reference(a, b, MatMut::from_row_major(&mut want, m, n).unwrap(), &ep);
    let f = block_gemm(a, b, MatMut::from_row_major(&mut got, m, n).unwrap(), &ep, Parallelism::Threads(threads));
    assert_eq!(r.is_ok(), f.is_ok());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}

/// [`gemm_matches`] through `PackedFp4` / `block_gemm_packed`.
fn packed_matches<TA: FloatElement>(a: &BlockScaled<TA>, b: &BlockScaled<F4E2M1>, threads: usize) {
    let (m, n) = (a.lines(), b.lines());
    let mut want = vec![0.0f32; m * n];
    let mut got = vec![0.0f32; m * n];
    let ep = Epilogue::new();
    let packed = PackedFp4::new(b);
    let r = block_gemm_reference(a, b, MatMut::from_row_major(&mut want, m, n).unwrap(), &ep);
    let f = block_gemm_packed(a, &packed, MatMut::from_row_major(&mut got, m, n).unwrap(), &ep, Parallelism::Threads(threads));
    assert_eq!(r.is_ok(), f.is_ok());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(&want));
}

fn dequantizes<T: FloatElement>(q: &BlockScaled<T>) {
    let d = q.dequantize().unwrap();
    for (i, v) in d.as_slice().iter().enumerate() {
        let s = q.scale_at(i / q.k(), i % q.k()).unwrap();
        let exact = q.data()[i].to_f32() as f64 * s as f64;
        if s.is_nan() {
            assert!(v.is_nan());
        } else if exact.is_finite() && exact.abs() <= f32::MAX as f64 {
            // One rounding of the exact product (or its overflow).
            assert!(v.is_finite() || exact.abs() > (f32::MAX as f64) * (1.0 - 1e-8));
            assert_eq!(*v, exact as f32);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (m, n) = (data[0] as usize % 9, data[1] as usize % 9);
    let k = (data[2] as usize % 5) * 32 + (data[2] as usize >> 7); // sometimes not a multiple
    let scheme = data[3] % 6;
    let vals: Vec<f32> = data[4..]
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            f32::from_le_bytes(b)
        })
        .chain(std::iter::repeat(0.5))
        .take((m + n) * k)
        .collect();
    let (x, w) = vals.split_at(m * k);
    let (Ok(xm), Ok(wm)) = (MatRef::from_row_major(x, m, k), MatRef::from_row_major(w, n, k)) else {
        return;
    };
    match scheme {
        0 => {
            if let (Ok(a), Ok(b)) = (BlockScaled::<F8E4M3>::mx(xm, MxScaleMode::Floor), BlockScaled::<F8E5M2>::mx(wm, MxScaleMode::Ceil)) {
                dequantizes(&a);
                gemm_matches(&a, &b, 1 + data[0] as usize % 3);
            }
        }
        1 => {
            if let (Ok(a), Ok(b)) = (BlockScaled::<F4E2M1>::mx(xm, MxScaleMode::Ceil), BlockScaled::<F6E3M2>::mx(wm, MxScaleMode::Floor)) {
                dequantizes(&b);
                gemm_matches(&a, &b, 2);
            }
            // FP4 × FP4: the integer tiles past four rows.
            if let (Ok(a), Ok(b)) = (BlockScaled::<F4E2M1>::mx(xm, MxScaleMode::Floor), BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Ceil)) {
                gemm_matches(&a, &b, 1 + data[1] as usize % 2);
            }
        }
        2 => {
            if let (Ok(a), Ok(b)) = (BlockScaled::nvfp4(xm, true), BlockScaled::nvfp4(wm, false)) {
                dequantizes(&a);
                gemm_matches(&a, &b, 1);
                packed_matches(&a, &b, 2);
            }
        }
        5 => {
            if let (Ok(a), Ok(b)) = (BlockScaled::<MxInt8>::mx(xm, MxScaleMode::Floor), BlockScaled::<F8E4M3>::mx(wm, MxScaleMode::Ceil)) {
                dequantizes(&a);
                gemm_matches(&a, &b, 2);
            }
            if let (Ok(a), Ok(b)) = (BlockScaled::<MxInt8>::mx(xm, MxScaleMode::Ceil), BlockScaled::<F4E2M1>::mx(wm, MxScaleMode::Floor)) {
                packed_matches(&a, &b, 1);
            }
        }
        _ => {
            let g = if scheme == 3 { Fp8Granularity::Lines1x128 } else { Fp8Granularity::PerTensor };
            if let (Ok(a), Ok(b)) = (BlockScaled::<F8E4M3>::fp8(xm, g, true), BlockScaled::<F8E4M3>::fp8(wm, Fp8Granularity::Blocks128x128, false)) {
                dequantizes(&a);
                gemm_matches(&a, &b, 3);
            }
        }
    }
});

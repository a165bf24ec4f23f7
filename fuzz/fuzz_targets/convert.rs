//! Arbitrary bytes as f32 values through every conversion: the dispatched fast
//! path equals the scalar reference, and narrow → widen → narrow is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::convert::{self, reference};
use mixprec::{bf16, f16, FloatElement, F8E4M3, F8E5M2};

fn bits<T: FloatElement>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

fn check<T: FloatElement>(xs: &[f32]) {
    let n = xs.len();
    let (mut fast, mut slow) = (vec![T::zeroed(); n], vec![T::zeroed(); n]);
    convert::narrow(xs, &mut fast).unwrap();
    reference::narrow(xs, &mut slow).unwrap();
    assert_eq!(bits(&fast), bits(&slow), "narrow {:?}", T::DTYPE);
    convert::narrow_saturating(xs, &mut fast).unwrap();
    reference::narrow_saturating(xs, &mut slow).unwrap();
    assert_eq!(bits(&fast), bits(&slow), "narrow_saturating {:?}", T::DTYPE);
    assert!(fast.iter().all(|v| !v.to_f32().is_infinite()), "saturated to infinity");

    convert::narrow(xs, &mut slow).unwrap();
    let (mut wide, mut wide_ref) = (vec![0.0f32; n], vec![0.0f32; n]);
    convert::widen(&slow, &mut wide).unwrap();
    reference::widen(&slow, &mut wide_ref).unwrap();
    assert_eq!(bits(&wide), bits(&wide_ref), "widen {:?}", T::DTYPE);
    convert::narrow(&wide, &mut fast).unwrap();
    assert_eq!(bits(&fast), bits(&slow), "round trip {:?}", T::DTYPE);
}

fuzz_target!(|data: &[u8]| {
    let xs: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    check::<f16>(&xs);
    check::<bf16>(&xs);
    check::<F8E4M3>(&xs);
    check::<F8E5M2>(&xs);
});

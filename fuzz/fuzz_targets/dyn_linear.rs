//! `DynamicQuantLinear` on arbitrary weights, bias and activations (NaN,
//! infinities, empty shapes, any thread count): a typed error or an output
//! of the right shape, never a panic; non-finite inputs are always errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::gemm::Parallelism;
use mixprec::quant::DynamicQuantLinear;
use mixprec::Tensor;

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let Some((&threads, rest)) = rest.split_first() else { return };
    let (out_f, in_f) = ((head & 0x7) as usize, (head >> 3 & 0xF) as usize);
    let values = floats(rest);
    let w_len = out_f * in_f;
    let w: Vec<f32> = values.iter().copied().cycle().take(w_len).collect();
    if w.len() < w_len {
        return;
    }
    let Ok(wt) = Tensor::from_vec(&[out_f, in_f], w.clone()) else { return };
    let bias: Vec<f32> = values.iter().rev().copied().take(out_f).collect();
    let layer = DynamicQuantLinear::new(&wt, (bias.len() == out_f).then_some(&bias[..]));
    let bad_weights = w.iter().chain(&bias).any(|v| !v.is_finite());
    if out_f == 0 || in_f == 0 || (bad_weights && bias.len() == out_f) {
        assert!(layer.is_err());
        return;
    }
    let Ok(layer) = layer else { return };
    let batch = values.len().checked_div(in_f.max(1)).unwrap_or(0).min(9);
    let x: Vec<f32> = values.iter().skip(1).copied().cycle().take(batch * in_f).collect();
    let batch = x.len() / in_f;
    let xt = Tensor::from_vec(&[batch, in_f], x[..batch * in_f].to_vec()).unwrap();
    let par = match threads % 4 {
        0 => Parallelism::Threads(0),
        1 => Parallelism::Serial,
        2 => Parallelism::Threads(usize::MAX),
        _ => Parallelism::Threads(threads as usize),
    };
    match layer.forward(&xt, par) {
        Ok(y) => {
            assert_eq!(y.shape(), &[batch, out_f]);
            assert!(xt.as_slice().iter().all(|v| v.is_finite()));
        }
        Err(_) => {
            // Errors: Threads(0), a non-finite activation, or a row whose
            // range (max - min) overflows f32, which has no finite scale.
            let range_overflows = xt.as_slice().chunks(in_f).any(|r| {
                let (lo, hi) = r.iter().fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
                !(hi - lo).is_finite()
            });
            assert!(threads % 4 == 0 || range_overflows || xt.as_slice().iter().any(|v| !v.is_finite()))
        }
    }
});

//! Arbitrary shapes, strides, transposes, epilogues, thread counts and values:
//! the fast GEMM equals the reference loops bit for bit, or both return the
//! same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::gemm::{self, Activation, Epilogue, Parallelism};
use mixprec::{bf16, f16, FloatElement, MatMut, MatRef};

struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }
    fn f32(&mut self) -> f32 {
        f32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

fn view<T: FloatElement>(d: &[T], outer: usize, inner: usize, pad: usize, t: bool) -> MatRef<'_, T> {
    let v = MatRef::new(d, outer, inner, inner + pad, 1).unwrap();
    if t {
        v.t()
    } else {
        v
    }
}

fn view_mut<O: FloatElement>(d: &mut [O], outer: usize, inner: usize, pad: usize, t: bool) -> MatMut<'_, O> {
    let v = MatMut::new(d, outer, inner, inner + pad, 1).unwrap();
    if t {
        v.t()
    } else {
        v
    }
}

fn run<T: FloatElement, O: FloatElement>(inp: &mut Input<'_>) {
    let m = inp.byte() as usize % 40;
    let n = inp.byte() as usize % 40;
    let k = inp.byte() as usize % 300;
    let flags = inp.byte();
    let (ta, tb, tc) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
    let pad = (flags >> 3) as usize % 3;
    let threads = 1 + (flags >> 5) as usize % 4;
    let mut seed = inp.f32();
    let mut next = || {
        // Mostly values from the input; when it runs out, a cheap sequence.
        let v = inp.f32();
        seed = seed * 0.5 + 0.25;
        if inp.bytes.is_empty() { seed } else { v }
    };
    let mut mat = |rows: usize, cols: usize, t: bool| {
        let (outer, inner) = if t { (cols, rows) } else { (rows, cols) };
        let data: Vec<T> = (0..outer * (inner + pad)).map(|_| T::from_f32(next())).collect();
        (data, outer, inner)
    };
    let (da, oa, ia) = mat(m, k, ta);
    let (db, ob, ib) = mat(k, n, tb);

    let (oc, ic) = if tc { (n, m) } else { (m, n) };
    let c0: Vec<O> = (0..oc * (ic + pad)).map(|i| O::from_f32(i as f32 * 0.5 - 3.0)).collect();
    let bias: Vec<f32> = (0..n).map(|i| i as f32 - 1.5).collect();
    let epi = match flags % 3 {
        0 => Epilogue::new(),
        1 => Epilogue::new().alpha(1.5).beta(-0.5).bias(&bias),
        _ => Epilogue::new().bias(&bias).activation(if flags & 8 == 0 { Activation::Relu } else { Activation::Gelu }),
    };
    let mut c_fast = c0.clone();
    let mut c_ref = c0;

    let par = if threads == 1 { Parallelism::Serial } else { Parallelism::Threads(threads) };
    let fast = gemm::gemm(
        view(&da, oa, ia, pad, ta),
        view(&db, ob, ib, pad, tb),
        view_mut(&mut c_fast, oc, ic, pad, tc),
        &epi,
        par,
    );
    let reference = gemm::reference(
        view(&da, oa, ia, pad, ta),
        view(&db, ob, ib, pad, tb),
        view_mut(&mut c_ref, oc, ic, pad, tc),
        &epi,
    );
    assert_eq!(fast, reference);
    let bits = |v: &[O]| v.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&c_fast), bits(&c_ref), "m={m} n={n} k={k} flags={flags:#x}");
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { bytes: data };
    match inp.byte() % 4 {
        0 => run::<f32, f32>(&mut inp),
        1 => run::<f16, f32>(&mut inp),
        2 => run::<bf16, bf16>(&mut inp),
        _ => run::<f16, f16>(&mut inp),
    }
});

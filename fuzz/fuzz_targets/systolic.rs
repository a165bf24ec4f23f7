//! The systolic model on arbitrary array shapes, dataflows, GEMM sizes up to
//! `usize::MAX` and values (NaN included): `analyze` returns a report whose
//! counts are consistent or a typed error; `simulate` on small shapes
//! equals the analytical cycle count plus one and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::systolic::{analyze, simulate, ArrayConfig, Dataflow, Mode};
use mixprec::MatRef;

fn word(d: &[u8], i: usize) -> usize {
    let b = |j: usize| d.get(i + j).copied().unwrap_or(0);
    u64::from_le_bytes([b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7)]) as usize
}

fuzz_target!(|data: &[u8]| {
    let flow = [Dataflow::WeightStationary, Dataflow::OutputStationary, Dataflow::InputStationary]
        [word(data, 0) % 3];
    let mode = if word(data, 0) & 4 == 0 { Mode::ScaleSim } else { Mode::Tpu };
    // Big sizes: any usize, including 0 and usize::MAX.
    let (rows, cols) = (word(data, 8), word(data, 16));
    let (m, k, n) = (word(data, 24), word(data, 32), word(data, 40));
    if let Ok(cfg) = ArrayConfig::new(rows, cols, flow) {
        if let Ok(r) = analyze(&cfg, m, k, n, mode, [word(data, 48) as u64; 3]) {
            assert!(r.cycles > 0 && r.folds > 0);
            assert_eq!(r.macs as u128, m as u128 * k as u128 * n as u128);
        }
    } else {
        assert!(rows == 0 || cols == 0 || (rows as u128 * cols as u128) > u64::MAX as u128);
    }
    // Small sizes for the simulation, values from the remaining bytes.
    let small = |i: usize, max: usize| word(data, i) % max + 1;
    let (r, c, m, k, n) = (small(56, 5), small(64, 5), small(72, 6), small(80, 9), small(88, 6));
    let vals: Vec<f32> = data
        .iter()
        .map(|&b| if b == 0xFF { f32::NAN } else { b as f32 - 128.0 })
        .chain(std::iter::repeat(1.0))
        .take(m * k + k * n)
        .collect();
    let cfg = ArrayConfig::new(r, c, flow).unwrap();
    let a = MatRef::from_row_major(&vals[..m * k], m, k).unwrap();
    let b = MatRef::from_row_major(&vals[m * k..], k, n).unwrap();
    let sim = simulate(a, b, &cfg).unwrap();
    let model = analyze(&cfg, m, k, n, Mode::ScaleSim, [u64::MAX; 3]).unwrap();
    assert_eq!(sim.cycles, model.cycles + 1);
});

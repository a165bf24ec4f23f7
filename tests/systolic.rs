//! The systolic array model: simulation against the GEMM contract and
//! against the analytical model.

use mixprec::gemm::{self, Epilogue};
use mixprec::systolic::{analyze, simulate, ArrayConfig, Dataflow, Mode};
use mixprec::{MatMut, MatRef};
use proptest::prelude::*;

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut r = mixprec::convert::StochasticRng::new(seed);
    (0..len)
        .map(|_| ((r.next_u64() >> 40) as f32 / 16777216.0 - 0.5) * 3.0)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const FLOWS: [Dataflow; 3] = [
    Dataflow::WeightStationary,
    Dataflow::OutputStationary,
    Dataflow::InputStationary,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Weight-stationary outputs are the contract's bits with tile height R;
    /// every dataflow's cycle count is the model's (+1: SCALE-Sim reports
    /// the last cycle's index) and its MACs are M·K·N.
    #[test]
    fn simulation_matches_contract_and_model(m in 1usize..12, k in 1usize..40, n in 1usize..20, r in 1usize..9, c in 1usize..9, seed in any::<u64>()) {
        let (a, b) = (data(m * k, seed), data(k * n, seed ^ 7));
        let (av, bv) = (MatRef::from_row_major(&a, m, k).unwrap(), MatRef::from_row_major(&b, k, n).unwrap());
        for flow in FLOWS {
            let cfg = ArrayConfig::new(r, c, flow).unwrap();
            let sim = simulate(av, bv, &cfg).unwrap();
            let model = analyze(&cfg, m, k, n, Mode::ScaleSim, [u64::MAX; 3]).unwrap();
            prop_assert_eq!(sim.cycles, model.cycles + 1, "{:?} {}x{} array, M={} K={} N={}", flow, r, c, m, k, n);
            prop_assert_eq!(sim.macs, model.macs);
            let mut want = vec![0.0f32; m * n];
            let tile = if flow == Dataflow::OutputStationary { k } else { r };
            gemm::reference_with_tile_height(av, bv, MatMut::from_row_major(&mut want, m, n).unwrap(), &Epilogue::new(), tile).unwrap();
            prop_assert_eq!(bits(sim.output.as_slice()), bits(&want), "{:?}", flow);
        }
    }
}

#[test]
fn weight_stationary_128_is_the_gemm_contract() {
    // The crate's contract is the 128-row array's arithmetic, bit for bit.
    let (m, k, n) = (3, 300, 20);
    let (a, b) = (data(m * k, 1), data(k * n, 2));
    let (av, bv) = (
        MatRef::from_row_major(&a, m, k).unwrap(),
        MatRef::from_row_major(&b, k, n).unwrap(),
    );
    let sim = simulate(
        av,
        bv,
        &ArrayConfig::new(128, 16, Dataflow::WeightStationary).unwrap(),
    )
    .unwrap();
    let mut fast = vec![0.0f32; m * n];
    gemm::gemm(
        av,
        bv,
        MatMut::from_row_major(&mut fast, m, n).unwrap(),
        &Epilogue::new(),
        gemm::Parallelism::Serial,
    )
    .unwrap();
    assert_eq!(bits(sim.output.as_slice()), bits(&fast));
    // OS keeps one chain over all K: not the contract once K > 128.
    let os = simulate(
        av,
        bv,
        &ArrayConfig::new(128, 16, Dataflow::OutputStationary).unwrap(),
    )
    .unwrap();
    let mut chain = vec![0.0f32; m * n];
    gemm::reference_with_tile_height(
        av,
        bv,
        MatMut::from_row_major(&mut chain, m, n).unwrap(),
        &Epilogue::new(),
        k,
    )
    .unwrap();
    assert_eq!(bits(os.output.as_slice()), bits(&chain));
}

#[test]
fn worked_examples() {
    let tpu = ArrayConfig::tpu();
    let r = analyze(&tpu, 8, 1024, 1024, Mode::ScaleSim, [u64::MAX; 3]).unwrap();
    assert_eq!((r.folds, r.cycles), (64, 64 * 390 - 1));
    assert_eq!(r.mapping_efficiency_pct, 100.0);
    let r = analyze(&tpu, 1024, 1024, 1024, Mode::ScaleSim, [u64::MAX; 3]).unwrap();
    assert_eq!(r.cycles, 64 * 1406 - 1);
    // TPU mode: weight loads hidden behind streaming once M ≥ 128.
    let r = analyze(&tpu, 128, 1024, 1024, Mode::Tpu, [u64::MAX; 3]).unwrap();
    assert_eq!(r.cycles, 128 + 64 * 128 + 254);
    // A batch of 129 needs no more folds but wastes nothing; a layer of
    // width 129 needs a second, almost empty column fold.
    let ragged = analyze(&tpu, 256, 1024, 129, Mode::ScaleSim, [u64::MAX; 3]).unwrap();
    assert_eq!(ragged.folds, 16);
    assert!(ragged.mapping_efficiency_pct < 51.0);
    // Empty dimensions are errors; 0×N arrays too.
    assert!(analyze(&tpu, 0, 1, 1, Mode::Tpu, [u64::MAX; 3]).is_err());
    assert!(ArrayConfig::new(0, 4, Dataflow::WeightStationary).is_err());
}

#[test]
fn traffic_counts() {
    let cfg = ArrayConfig::new(4, 4, Dataflow::WeightStationary).unwrap();
    let r = analyze(&cfg, 5, 8, 12, Mode::ScaleSim, [u64::MAX; 3]).unwrap();
    // A streamed once per column fold (3), B once, C written once per K fold (2).
    assert_eq!(
        (r.buffer.a_reads, r.buffer.b_reads, r.buffer.c_writes),
        (3 * 40, 96, 2 * 60)
    );
    assert_eq!(r.offchip.a_reads, 40, "A fits: read once from off chip");
    let small = analyze(&cfg, 5, 8, 12, Mode::ScaleSim, [10, u64::MAX, 10]).unwrap();
    assert_eq!(
        small.offchip.a_reads,
        3 * 40,
        "A does not fit: re-read per column fold"
    );
    assert_eq!(small.offchip.c_reads, 60, "partial sums spill");
}

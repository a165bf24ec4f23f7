//! Thread scaling of the f32 GEMM, and a check that every thread count
//! returns the same bits.
//!
//! `cargo run --release --example gemm_scaling -- [n] [max_threads]`

use mixprec::gemm::{gemm, Epilogue, Parallelism};
use mixprec::{MatMut, MatRef};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(2048);
    let max_threads = args
        .get(1)
        .copied()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |p| p.get()));
    let mut rng = mixprec::convert::StochasticRng::new(1);
    let a: Vec<f32> = (0..n * n)
        .map(|_| (rng.next_u64() >> 40) as f32 / 16_777_216.0 - 0.5)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|_| (rng.next_u64() >> 40) as f32 / 16_777_216.0 - 0.5)
        .collect();
    let run = |threads: usize, c: &mut [f32]| {
        let par = if threads == 1 {
            Parallelism::Serial
        } else {
            Parallelism::Threads(threads)
        };
        let start = Instant::now();
        gemm(
            MatRef::from_row_major(&a, n, n).unwrap(),
            MatRef::from_row_major(&b, n, n).unwrap(),
            MatMut::from_row_major(c, n, n).unwrap(),
            &Epilogue::new(),
            par,
        )
        .unwrap();
        start.elapsed().as_secs_f64()
    };
    println!(
        "n = {n}, isa = {}, rayon threads = {}",
        mixprec::active_isa(),
        rayon::current_num_threads()
    );
    let mut reference = vec![0.0f32; n * n];
    run(1, &mut reference);
    let mut base = 0.0;
    let mut t = 1;
    while t <= max_threads {
        let mut c = vec![0.0f32; n * n];
        let best = (0..3).map(|_| run(t, &mut c)).fold(f64::INFINITY, f64::min);
        let gflops = 2.0 * (n as f64).powi(3) / best / 1e9;
        if t == 1 {
            base = gflops;
        }
        let same = c
            .iter()
            .zip(&reference)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        println!("threads {t:>3}: {gflops:>8.1} GFLOP/s  speed-up {:>5.2}x  bits equal to 1 thread: {same}", gflops / base);
        t *= 2;
    }
}

//! One timing of our single-thread f32 GEMM for `scripts/openblas_sgemm.py
//! --rounds`, which alternates it with numpy's OpenBLAS so that both see
//! the same machine state (criterion's runs and the script's used to be
//! minutes apart on a machine whose speed drifts by ±5 %).
//!
//! `cargo bench --bench sgemm_rounds -- N REPS` prints the best and the
//! median seconds of `REPS` calls of an N×N×N `gemm` (after one warm-up).

use mixprec::gemm::{gemm, Epilogue, Parallelism};
use mixprec::{MatMut, MatRef};
use std::process::ExitCode;
use std::time::Instant;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = mixprec::convert::StochasticRng::new(seed);
    (0..n)
        .map(|_| (r.next_u64() >> 40) as f32 / 16777216.0 - 0.5)
        .collect()
}

fn main() -> ExitCode {
    // cargo passes `--bench` to a bench target without a harness.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let parsed: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (n, reps) = match (parsed.as_slice(), args.len()) {
        (&[n, reps], 2) if n > 0 && reps > 0 && n <= 8192 => (n, reps),
        _ => {
            eprintln!("usage: sgemm_rounds N REPS (1 <= N <= 8192, REPS >= 1); got {args:?}");
            return ExitCode::FAILURE;
        }
    };
    let (a, b) = (values(n * n, 1), values(n * n, 2));
    let mut c = vec![0.0f32; n * n];
    let mut call = || {
        let t = Instant::now();
        gemm(
            MatRef::from_row_major(&a, n, n).unwrap(),
            MatRef::from_row_major(&b, n, n).unwrap(),
            MatMut::from_row_major(&mut c, n, n).unwrap(),
            &Epilogue::new(),
            Parallelism::Serial,
        )
        .unwrap();
        t.elapsed().as_secs_f64()
    };
    call();
    let mut times: Vec<f64> = (0..reps).map(|_| call()).collect();
    times.sort_by(f64::total_cmp);
    println!("{:.9} {:.9}", times[0], times[times.len() / 2]);
    ExitCode::SUCCESS
}

//! Thread scaling of the f32 GEMM, and a check that every thread count
//! returns the same bits.
//!
//! `cargo run --release --example gemm_scaling -- [n] [max_threads]`

#[macro_use]
mod common;

use mixprec::gemm::{gemm, Epilogue, Parallelism};
use mixprec::{MatMut, MatRef};
use std::time::Instant;

const USAGE: &str = "usage: gemm_scaling [N] [MAX_THREADS]\n\
    times an N×N×N f32 GEMM (default 2048) at 1, 2, 4 … MAX_THREADS threads\n\
    (default: the machine's parallelism) and checks every result's bits";

/// `[n, max_threads]` from the command line; an error for anything else.
fn parse() -> Result<(usize, usize), String> {
    let mut nums = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "-h" || a == "--help" {
            outln!("{USAGE}");
            std::process::exit(0);
        }
        let v: usize = a
            .parse()
            .map_err(|_| format!("unexpected argument {a:?}\n{USAGE}"))?;
        nums.push(v);
    }
    if nums.len() > 2 {
        return Err(format!("at most two numbers, got {}\n{USAGE}", nums.len()));
    }
    let n = nums.first().copied().unwrap_or(2048);
    let max_threads = nums
        .get(1)
        .copied()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |p| p.get()));
    if n == 0 || n > 32_768 || max_threads == 0 {
        return Err(format!(
            "N must be in 1..=32768 and MAX_THREADS at least 1 (got {n}, {max_threads})"
        ));
    }
    Ok((n, max_threads))
}

fn main() {
    let (n, max_threads) = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    };
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
    outln!(
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
        outln!("threads {t:>3}: {gflops:>8.1} GFLOP/s  speed-up {:>5.2}x  bits equal to 1 thread: {same}", gflops / base);
        t *= 2;
    }
}

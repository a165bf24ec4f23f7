//! Block quantization of 16M f32 (4096 × 4096) beside a copy of the same
//! bytes, timed round by round so that every case sees the same machine
//! state (criterion's groups run seconds to minutes apart on a host whose
//! memory bandwidth drifts by ±20 %).
//!
//! `cargo bench --bench quantize_rounds -- ROUNDS` runs ROUNDS rounds; in
//! each, every case is called 4 times back to back (the first call a
//! warm-up) and keeps its best. It prints each case's min and p25 over the
//! rounds in ms, and its ratio to the copy by the bytes `benches/convert.rs`
//! counts (8 per element for the copy, 5 for a quantization).
//!
//! A last case, `read`, only reads the source (an OR of its bits): the
//! floor of a pass over it. NVFP4 with the tensor scale and FP8 per tensor
//! read the source twice (the tensor's amax comes before any scale), so
//! they can be no faster than two of these plus their writes.

use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
use mixprec::{MatRef, F4E2M1, F8E4M3};
use std::process::ExitCode;
use std::time::Instant;

const N: usize = 1 << 24;

/// A named case: one call of the quantizer (or the copy).
type Case<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// The best of three timed calls of `f` after one warm-up, in ms.
fn best_of_three(f: &mut dyn FnMut()) -> f64 {
    f();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> ExitCode {
    // cargo passes `--bench` to a bench target without a harness.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rounds = match args.as_slice() {
        [r] => match r.parse::<usize>() {
            Ok(r) if (1..=1000).contains(&r) => r,
            _ => 0,
        },
        _ => 0,
    };
    if rounds == 0 {
        eprintln!("usage: quantize_rounds ROUNDS (1..=1000); got {args:?}");
        return ExitCode::FAILURE;
    }
    // The source of benches/convert.rs.
    let mut s = mixprec::convert::StochasticRng::new(9);
    let x: Vec<f32> = (0..N)
        .map(|_| ((s.next_u64() >> 40) as f32 - 8388608.0) * 1e-5)
        .collect();
    let m = MatRef::from_row_major(&x, 4096, N / 4096).unwrap();
    let mut y = vec![0.0f32; N];
    let mut q8 = BlockScaled::<F8E4M3>::mx(m, MxScaleMode::Floor).unwrap();
    let mut q4 = BlockScaled::<F4E2M1>::mx(m, MxScaleMode::Floor).unwrap();
    let mut nv = BlockScaled::nvfp4(m, true).unwrap();
    let mut nv1 = BlockScaled::nvfp4(m, false).unwrap();
    let fp8 = |g| BlockScaled::<F8E4M3>::fp8(m, g, false).unwrap();
    let (mut f_lines, mut f_tensor, mut f_blocks) = (
        fp8(Fp8Granularity::Lines1x128),
        fp8(Fp8Granularity::PerTensor),
        fp8(Fp8Granularity::Blocks128x128),
    );
    let mut cases: Vec<Case> = vec![
        (
            "copy",
            Box::new(|| y.copy_from_slice(std::hint::black_box(&x))),
        ),
        (
            "mxfp8_e4m3",
            Box::new(|| BlockScaled::<F8E4M3>::mx_into(m, MxScaleMode::Floor, &mut q8).unwrap()),
        ),
        (
            "mxfp4",
            Box::new(|| BlockScaled::<F4E2M1>::mx_into(m, MxScaleMode::Floor, &mut q4).unwrap()),
        ),
        (
            "nvfp4",
            Box::new(|| BlockScaled::nvfp4_into(m, true, &mut nv).unwrap()),
        ),
        (
            "nvfp4_block_scales_only",
            Box::new(|| BlockScaled::nvfp4_into(m, false, &mut nv1).unwrap()),
        ),
        (
            "fp8_1x128",
            Box::new(|| {
                BlockScaled::fp8_into(m, Fp8Granularity::Lines1x128, false, &mut f_lines).unwrap()
            }),
        ),
        (
            "fp8_per_tensor",
            Box::new(|| {
                BlockScaled::fp8_into(m, Fp8Granularity::PerTensor, false, &mut f_tensor).unwrap()
            }),
        ),
        (
            "fp8_128x128",
            Box::new(|| {
                BlockScaled::fp8_into(m, Fp8Granularity::Blocks128x128, false, &mut f_blocks)
                    .unwrap()
            }),
        ),
        (
            "read",
            Box::new(|| {
                let bits = x.iter().fold(0u32, |acc, v| acc | v.to_bits());
                std::hint::black_box(bits);
            }),
        ),
    ];
    let mut times = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (t, (_, f)) in times.iter_mut().zip(cases.iter_mut()) {
            t.push(best_of_three(f.as_mut()));
        }
    }
    let stats: Vec<(f64, f64)> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            (t[0], t[t.len() / 4])
        })
        .collect();
    let (copy_min, copy_p25) = stats[0];
    println!(
        "{:<26} {:>8} {:>8} {:>10} {:>10}",
        "case", "min ms", "p25 ms", "ratio min", "ratio p25"
    );
    for ((name, _), &(min, p25)) in cases.iter().zip(&stats) {
        // Bytes per second relative to the copy's: (5 / t) / (8 / t_copy).
        let bytes = match *name {
            "copy" => 8.0,
            "read" => 4.0,
            _ => 5.0,
        };
        println!(
            "{name:<26} {min:>8.2} {p25:>8.2} {:>10.2} {:>10.2}",
            bytes / 8.0 * copy_min / min,
            bytes / 8.0 * copy_p25 / p25
        );
    }
    ExitCode::SUCCESS
}

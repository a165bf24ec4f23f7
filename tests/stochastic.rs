//! Stochastic rounding: always a neighbour, deterministic per seed, unbiased.

use mixprec::convert::{narrow_stochastic, StochasticRng};
use mixprec::{bf16, f16, FloatElement};
use proptest::prelude::*;

/// The two values of `T` around `x` (toward zero, away from zero), found by
/// stepping bit patterns from the round-toward-zero neighbour.
fn neighbours<T: FloatElement>(x: f32) -> (f32, f32) {
    let near = T::from_f32(x).to_f32();
    let bits = |v: f32| -> u16 {
        // Step in the format's own bit space (both are 16-bit here).
        bytemuck::cast::<T, u16>(T::from_f32(v))
    };
    let step = |b: u16, up: bool| -> f32 {
        let b = if up { b + 1 } else { b - 1 };
        bytemuck::cast::<u16, T>(b).to_f32()
    };
    let b = bits(near);
    if near.abs() > x.abs() {
        (step(b, false), near)
    } else if near.abs() < x.abs() {
        (near, step(b, true))
    } else {
        (near, near)
    }
}

fn check_neighbours<T: FloatElement>(xs: &[f32], seed: u64) {
    let mut out = vec![T::zeroed(); xs.len()];
    narrow_stochastic(xs, &mut out, &mut StochasticRng::new(seed)).unwrap();
    for (&x, &y) in xs.iter().zip(&out) {
        let (lo, hi) = neighbours::<T>(x);
        let y = y.to_f32();
        assert!(
            y.to_bits() == lo.to_bits() || y.to_bits() == hi.to_bits(),
            "{:?}: {x:e} rounded to {y:e}, neighbours {lo:e}, {hi:e}",
            T::DTYPE
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn always_one_of_the_two_neighbours(
        xs in prop::collection::vec(
            prop_oneof![-60000.0f32..60000.0, -1e-4f32..1e-4, (-30.0f32..30.0).prop_map(f32::exp2)],
            1..100,
        ),
        seed in any::<u64>(),
    ) {
        check_neighbours::<bf16>(&xs, seed);
        check_neighbours::<f16>(&xs, seed);
    }
}

#[test]
fn deterministic_for_a_seed() {
    let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    let run = |seed| {
        let mut y = vec![bf16::ZERO; xs.len()];
        narrow_stochastic(&xs, &mut y, &mut StochasticRng::new(seed)).unwrap();
        y
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn representable_values_are_unchanged() {
    let xs = [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        65504.0,
        2f32.powi(-24),
        f32::INFINITY,
    ];
    let mut y = [f16::ZERO; 7];
    narrow_stochastic(&xs, &mut y, &mut StochasticRng::new(3)).unwrap();
    for (x, y) in xs.iter().zip(y) {
        assert_eq!(x.to_bits(), y.to_f32().to_bits());
    }
    let mut z = [f16::ZERO; 1];
    narrow_stochastic(&[f32::NAN], &mut z, &mut StochasticRng::new(3)).unwrap();
    assert!(z[0].is_nan());
}

/// The number of round-ups over N trials is Binomial(N, p) with p the dropped
/// fraction; the test allows 6 standard deviations (a false failure rate
/// below 1e-8 per value), so the sample mean must be within about
/// 6·sqrt(p(1-p)/N) steps of x.
fn check_unbiased<T: FloatElement>(x: f32, seed: u64) {
    const N: usize = 200_000;
    let (lo, hi) = neighbours::<T>(x);
    let p = ((x as f64).abs() - (lo as f64).abs()) / ((hi as f64).abs() - (lo as f64).abs());
    let xs = vec![x; N];
    let mut y = vec![T::zeroed(); N];
    narrow_stochastic(&xs, &mut y, &mut StochasticRng::new(seed)).unwrap();
    let ups = y.iter().filter(|v| v.to_f32() == hi).count() as f64;
    let sigma = (N as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (ups - N as f64 * p).abs() <= 6.0 * sigma + 1.0,
        "{:?} x = {x:e}: {ups} ups, expected {} ± {}",
        T::DTYPE,
        N as f64 * p,
        6.0 * sigma
    );
    let mean = y.iter().map(|v| v.to_f32() as f64).sum::<f64>() / N as f64;
    let step = (hi - lo).abs() as f64;
    assert!((mean - x as f64).abs() <= step * (6.0 * sigma + 1.0) / N as f64);
}

#[test]
fn unbiased_bf16() {
    for (i, x) in [1.0f32 + 2f32.powi(-9), -3.3, 0.1, 1e-39, 7.77e30]
        .into_iter()
        .enumerate()
    {
        check_unbiased::<bf16>(x, i as u64);
    }
}

#[test]
fn unbiased_f16() {
    // Normal range, and the subnormal range (steps of 2^-24), where more bits drop.
    for (i, x) in [
        1.0f32 + 2f32.powi(-12),
        -0.1,
        3e-7,
        2f32.powi(-24) * 0.3,
        60000.3,
    ]
    .into_iter()
    .enumerate()
    {
        check_unbiased::<f16>(x, 100 + i as u64);
    }
}

/// The bf16 stream, specified: SplitMix64 outputs in order, each giving four
/// consecutive elements 16 bits (low bits first); `(bits + r) >> 16`; NaN by
/// the NaN rule. The dispatched (SIMD) path must produce exactly this, for
/// every length (tails) and from any generator state.
#[test]
fn bf16_stream_is_the_documented_one() {
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    for len in [0usize, 1, 3, 4, 15, 16, 17, 33, 64, 1000] {
        for seed in [0u64, 1, u64::MAX, 0x1234_5678_9ABC_DEF0] {
            let xs: Vec<f32> = (0..len)
                .map(|i| match i % 7 {
                    0 => f32::NAN,
                    1 => -f32::from_bits(0x7F80_0001),
                    2 => f32::INFINITY,
                    _ => (i as f32 * 0.731).sin() * 1e3,
                })
                .collect();
            let mut rng = StochasticRng::new(seed);
            let mut got = vec![bf16::ZERO; len];
            narrow_stochastic(&xs, &mut got, &mut rng).unwrap();
            let mut state = seed;
            let mut want = Vec::with_capacity(len);
            for chunk in xs.chunks(4) {
                let r = splitmix(&mut state);
                for (j, x) in chunk.iter().enumerate() {
                    let bits = x.to_bits();
                    want.push(if bits & 0x7FFF_FFFF > 0x7F80_0000 {
                        ((bits >> 16) | 0x40) as u16
                    } else {
                        ((bits + ((r >> (16 * j)) as u32 & 0xFFFF)) >> 16) as u16
                    });
                }
            }
            let got: Vec<u16> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "len {len} seed {seed:#x}");
            // The generator continues where the stream left off.
            assert_eq!(rng.next_u64(), splitmix(&mut state), "len {len}");
        }
    }
}

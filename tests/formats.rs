//! Exhaustive and property tests of the number formats and their conversions.
//!
//! The independent oracle here (`Oracle`) knows each format only as a sorted
//! table of its values, computed in f64 from the bit fields, and rounds by
//! binary search: nothing is shared with the crate's integer rounding code.

use mixprec::convert::{self, reference};
use mixprec::testing::{any_bits, near_rounding_boundary, specials};
use mixprec::{bf16, f16, FloatElement, F8E4M3, F8E5M2};
use proptest::prelude::*;

/// A format described by its fields, with its positive finite values in f64.
struct Oracle {
    exp_bits: u32,
    man_bits: u32,
    ieee: bool,
    /// values[code] for codes 0..=max_code, plus one virtual code past MAX.
    values: Vec<f64>,
}

impl Oracle {
    fn new(exp_bits: u32, man_bits: u32, bias: i32, ieee: bool) -> Self {
        let max_code: u32 = if ieee {
            (((1 << exp_bits) - 1) << man_bits) - 1
        } else {
            (1 << (exp_bits + man_bits)) - 2
        };
        let value = |code: u32| -> f64 {
            let e = (code >> man_bits) as i32;
            let m = (code & ((1 << man_bits) - 1)) as f64;
            let frac = m / (1u64 << man_bits) as f64;
            if e == 0 {
                frac * 2f64.powi(1 - bias)
            } else {
                (1.0 + frac) * 2f64.powi(e - bias)
            }
        };
        let mut values: Vec<f64> = (0..=max_code).map(value).collect();
        let max = values[max_code as usize];
        let step = max - values[max_code as usize - 1];
        values.push(max + step);
        Self {
            exp_bits,
            man_bits,
            ieee,
            values,
        }
    }
    fn max_code(&self) -> u32 {
        self.values.len() as u32 - 2
    }
    fn sign(&self) -> u32 {
        1 << (self.exp_bits + self.man_bits)
    }
    fn overflow_code(&self, saturate: bool) -> u32 {
        if saturate {
            self.max_code()
        } else if self.ieee {
            ((1 << self.exp_bits) - 1) << self.man_bits
        } else {
            self.sign() - 1
        }
    }
    fn nan(&self, x: f32) -> u32 {
        let s = if x.is_sign_negative() { self.sign() } else { 0 };
        if self.ieee {
            let payload = (x.to_bits() & 0x7F_FFFF) >> (23 - self.man_bits);
            s | (((1 << self.exp_bits) - 1) << self.man_bits) | (1 << (self.man_bits - 1)) | payload
        } else {
            s | (self.sign() - 1)
        }
    }
    /// Round to nearest, ties to the even code.
    fn round(&self, x: f32, saturate: bool) -> u32 {
        if x.is_nan() {
            return self.nan(x);
        }
        let s = if x.is_sign_negative() { self.sign() } else { 0 };
        let a = (x as f64).abs();
        let code = if a.is_infinite() {
            self.max_code() + 1
        } else {
            // Largest code whose value is <= a.
            let lo = self.values.partition_point(|&v| v <= a) - 1;
            if lo + 1 == self.values.len() {
                self.max_code() + 1
            } else {
                let (vl, vh) = (self.values[lo], self.values[lo + 1]);
                let (dl, dh) = (a - vl, vh - a);
                if dl < dh || (dl == dh && lo % 2 == 0) {
                    lo as u32
                } else {
                    lo as u32 + 1
                }
            }
        };
        if code > self.max_code() {
            s | self.overflow_code(saturate)
        } else {
            s | code
        }
    }
    /// Every f32 within one ulp of a rounding boundary (a midpoint between two
    /// neighbours, including the overflow threshold) or of a value, both signs.
    fn boundary_points(&self) -> Vec<f32> {
        let mut pts = Vec::new();
        let mut push3 = |v: f64| {
            let f = v as f32;
            assert_eq!(f as f64, v, "boundary {v} not exact in f32");
            for b in [f.to_bits().saturating_sub(1), f.to_bits(), f.to_bits() + 1] {
                let g = f32::from_bits(b);
                pts.push(g);
                pts.push(-g);
            }
        };
        for w in self.values.windows(2) {
            push3(w[0]);
            push3((w[0] + w[1]) / 2.0);
        }
        pts
    }
}

fn oracle_of<T: FloatElement>() -> Oracle {
    match T::DTYPE {
        mixprec::DType::F16 => Oracle::new(5, 10, 15, true),
        mixprec::DType::BF16 => Oracle::new(8, 7, 127, true),
        mixprec::DType::F8E4M3 => Oracle::new(4, 3, 7, false),
        mixprec::DType::F8E5M2 => Oracle::new(5, 2, 15, true),
        d => panic!("no oracle for {d}"),
    }
}

fn bits_of<T: FloatElement>(x: T) -> u32 {
    match std::mem::size_of::<T>() {
        1 => bytemuck::cast::<T, u8>(x) as u32,
        2 => bytemuck::cast::<T, u16>(x) as u32,
        _ => unreachable!(),
    }
}

fn from_bits<T: FloatElement>(b: u32) -> T {
    match std::mem::size_of::<T>() {
        1 => bytemuck::cast::<u8, T>(b as u8),
        2 => bytemuck::cast::<u16, T>(b as u16),
        _ => unreachable!(),
    }
}

/// Checks `narrow` (dispatched SIMD), `reference::narrow` and the oracle agree
/// on every input, in both overflow modes.
fn check_narrow<T: FloatElement>(xs: &[f32]) {
    let oracle = oracle_of::<T>();
    let mut fast = vec![T::zeroed(); xs.len()];
    let mut slow = vec![T::zeroed(); xs.len()];
    for saturate in [false, true] {
        if saturate {
            convert::narrow_saturating(xs, &mut fast).unwrap();
            reference::narrow_saturating(xs, &mut slow).unwrap();
        } else {
            convert::narrow(xs, &mut fast).unwrap();
            reference::narrow(xs, &mut slow).unwrap();
        }
        for (i, &x) in xs.iter().enumerate() {
            let want = oracle.round(x, saturate);
            assert_eq!(
                bits_of(slow[i]),
                want,
                "{:?} reference, x = {x:e} ({:#010x}), saturate = {saturate}",
                T::DTYPE,
                x.to_bits()
            );
            assert_eq!(
                bits_of(fast[i]),
                want,
                "{:?} fast path, x = {x:e} ({:#010x}), saturate = {saturate}",
                T::DTYPE,
                x.to_bits()
            );
            if !saturate {
                assert_eq!(
                    bits_of(T::from_f32(x)),
                    want,
                    "{:?}::from_f32({x:e})",
                    T::DTYPE
                );
            }
        }
    }
}

/// Every bit pattern of `T` widens exactly (to the oracle's value), fast ==
/// reference, and narrows back to itself (NaNs: same bits, quiet bit set).
fn check_all_patterns<T: FloatElement>() {
    let oracle = oracle_of::<T>();
    let n = 1usize << (8 * std::mem::size_of::<T>());
    let all: Vec<T> = (0..n as u32).map(from_bits::<T>).collect();
    let mut fast = vec![0.0f32; n];
    let mut slow = vec![0.0f32; n];
    convert::widen(&all, &mut fast).unwrap();
    reference::widen(&all, &mut slow).unwrap();
    for (b, (&f, &s)) in fast.iter().zip(&slow).enumerate() {
        assert_eq!(f.to_bits(), s.to_bits(), "{:?} widen {b:#x}", T::DTYPE);
        assert_eq!(
            all[b].to_f32().to_bits(),
            s.to_bits(),
            "{:?} to_f32 {b:#x}",
            T::DTYPE
        );
        let b = b as u32;
        let abs = b & (oracle.sign() - 1);
        let negative = b & oracle.sign() != 0;
        assert_eq!(
            s.is_sign_negative(),
            negative,
            "{:?} sign of {b:#x}",
            T::DTYPE
        );
        if abs <= oracle.max_code() {
            assert_eq!(
                s.abs() as f64,
                oracle.values[abs as usize],
                "{:?} value of {b:#x}",
                T::DTYPE
            );
        } else if abs == oracle.overflow_code(false) && oracle.ieee {
            assert!(s.is_infinite(), "{:?} {b:#x} should be infinite", T::DTYPE);
        } else {
            assert!(s.is_nan(), "{:?} {b:#x} should be NaN", T::DTYPE);
            assert_ne!(s.to_bits() & 0x0040_0000, 0, "widened NaN must be quiet");
        }
    }
    let mut back = vec![T::zeroed(); n];
    convert::narrow(&fast, &mut back).unwrap();
    for (b, &r) in back.iter().enumerate() {
        let b = b as u32;
        let want = if fast[b as usize].is_nan() && oracle.ieee {
            b | (1 << (oracle.man_bits - 1))
        } else {
            b
        };
        assert_eq!(bits_of(r), want, "{:?} round trip of {b:#x}", T::DTYPE);
    }
}

#[test]
fn f16_all_65536_patterns_round_trip() {
    check_all_patterns::<f16>();
}

#[test]
fn bf16_all_65536_patterns_round_trip() {
    check_all_patterns::<bf16>();
}

#[test]
fn e4m3_all_256_patterns_round_trip() {
    check_all_patterns::<F8E4M3>();
}

#[test]
fn e5m2_all_256_patterns_round_trip() {
    check_all_patterns::<F8E5M2>();
}

#[test]
fn f16_every_rounding_boundary() {
    check_narrow::<f16>(&oracle_of::<f16>().boundary_points());
}

#[test]
fn bf16_every_rounding_boundary() {
    check_narrow::<bf16>(&oracle_of::<bf16>().boundary_points());
}

#[test]
fn e4m3_every_rounding_boundary() {
    check_narrow::<F8E4M3>(&oracle_of::<F8E4M3>().boundary_points());
}

#[test]
fn e5m2_every_rounding_boundary() {
    check_narrow::<F8E5M2>(&oracle_of::<F8E5M2>().boundary_points());
}

#[test]
fn specials_of_every_format() {
    let xs = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7F80_0001), // signalling NaN
        f32::from_bits(0xFFBF_FFFF),
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        -f32::from_bits(1),
        f32::MAX,
        f32::MIN,
    ];
    check_narrow::<f16>(&xs);
    check_narrow::<bf16>(&xs);
    check_narrow::<F8E4M3>(&xs);
    check_narrow::<F8E5M2>(&xs);
}

#[test]
fn documented_edge_values() {
    assert_eq!(F8E4M3::MAX.to_f32(), 448.0);
    assert_eq!(F8E5M2::MAX.to_f32(), 57344.0);
    assert_eq!(F8E4M3::MIN_POSITIVE_SUBNORMAL.to_f32(), 2f32.powi(-9));
    assert_eq!(F8E5M2::MIN_POSITIVE_SUBNORMAL.to_f32(), 2f32.powi(-16));
    assert_eq!(F8E4M3::MIN_POSITIVE.to_f32(), 2f32.powi(-6));
    assert_eq!(F8E4M3::EPSILON.to_f32(), 0.125);
    assert_eq!(F8E5M2::EPSILON.to_f32(), 0.25);
    assert_eq!(F8E4M3::ONE.to_f32(), 1.0);
    assert_eq!(F8E5M2::ONE.to_f32(), 1.0);
    assert_eq!(F8E4M3::MIN.to_f32(), -448.0);
    assert!(F8E4M3::NAN.is_nan() && F8E5M2::NAN.is_nan());
    assert!(F8E5M2::INFINITY.is_infinite());
    // E4M3: 464 is the tie between 448 and the (absent) 480: ties to even keeps 448.
    assert_eq!(F8E4M3::from_f32(464.0), F8E4M3::MAX);
    assert!(F8E4M3::from_f32(464.0001).is_nan());
    assert!(F8E4M3::from_f32(f32::INFINITY).is_nan());
    // E5M2: 61440 is the tie between 57344 and 65536 (infinity's slot): odd MAX rounds up.
    assert!(F8E5M2::from_f32(61440.0).is_infinite());
    assert_eq!(F8E5M2::from_f32(61439.0), F8E5M2::MAX);
    // IEEE comparisons.
    assert_eq!(F8E4M3::from_f32(0.0), F8E4M3::from_f32(-0.0));
    assert_ne!(F8E4M3::NAN, F8E4M3::NAN);
    assert!(F8E5M2::from_f32(1.0) < F8E5M2::from_f32(2.0));
    assert_eq!(F8E4M3::NAN.partial_cmp(&F8E4M3::ONE), None);
    assert_eq!(format!("{}", F8E4M3::from_f32(-1.5)), "-1.5");
}

#[test]
fn from_f64_rounds_once() {
    // 1 + 2^-4 + 2^-40 is just above the E4M3 tie between 1 and 1.125: it must
    // round up. Through f32 (RNE) it would become the tie and round down to 1.
    let x = 1.0 + 2f64.powi(-4) + 2f64.powi(-40);
    assert_eq!(F8E4M3::from_f64(x).to_f32(), 1.125);
    assert_eq!(F8E4M3::from_f32(x as f32).to_f32(), 1.0);
    let y = -(1.0 + 2f64.powi(-3) + 2f64.powi(-40));
    assert_eq!(F8E5M2::from_f64(y).to_f32(), -1.25);
}

/// Random f32 bit patterns, with extra weight on specials and on inputs
/// within 3 ulps of each format's rounding boundaries (ties, underflow,
/// overflow): the crate's own `testing` strategies.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => any_bits::<f32>(),
        1 => specials::<f32>(),
        1 => near_rounding_boundary::<f16>(3),
        1 => near_rounding_boundary::<bf16>(3),
        1 => near_rounding_boundary::<F8E4M3>(3),
        1 => near_rounding_boundary::<F8E5M2>(3),
        2 => (-20.0f32..20.0).prop_map(|e| e.exp2()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bits_match_oracle(xs in prop::collection::vec(any_f32(), 0..200)) {
        check_narrow::<f16>(&xs);
        check_narrow::<bf16>(&xs);
        check_narrow::<F8E4M3>(&xs);
        check_narrow::<F8E5M2>(&xs);
    }

    /// Fast == reference at every offset (alignment) and length (tails).
    #[test]
    fn every_alignment_and_tail(xs in prop::collection::vec(any_f32(), 0..80), offset in 0usize..9) {
        let xs = &xs[offset.min(xs.len())..];
        fn both<T: FloatElement>(xs: &[f32]) {
            let mut a = vec![T::zeroed(); xs.len() + 1];
            let mut b = vec![T::zeroed(); xs.len()];
            convert::narrow(xs, &mut a[1..]).unwrap();
            reference::narrow(xs, &mut b).unwrap();
            assert!(a[1..].iter().zip(&b).all(|(x, y)| bits_of(*x) == bits_of(*y)));
            let mut wa = vec![0.0f32; xs.len() + 3];
            let mut wb = vec![0.0f32; xs.len()];
            convert::widen(&b, &mut wa[3..]).unwrap();
            reference::widen(&b, &mut wb).unwrap();
            assert!(wa[3..].iter().zip(&wb).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        both::<f16>(xs);
        both::<bf16>(xs);
        both::<F8E4M3>(xs);
        both::<F8E5M2>(xs);
    }

    #[test]
    fn from_f64_matches_oracle(x in any::<u64>().prop_map(f64::from_bits)) {
        // The oracle rounds f64 values as well: feed it through a wide table lookup.
        prop_assume!(!x.is_nan());
        for (got, oracle) in [
            (F8E4M3::from_f64(x).to_bits() as u32, oracle_of::<F8E4M3>()),
            (F8E5M2::from_f64(x).to_bits() as u32, oracle_of::<F8E5M2>()),
        ] {
            let a = x.abs();
            let s = if x.is_sign_negative() { oracle.sign() } else { 0 };
            let lo = oracle.values.partition_point(|&v| v <= a).saturating_sub(1);
            let want = if lo + 1 >= oracle.values.len() {
                s | oracle.overflow_code(false)
            } else {
                let (dl, dh) = (a - oracle.values[lo], oracle.values[lo + 1] - a);
                let code = if dl < dh || (dl == dh && lo % 2 == 0) { lo as u32 } else { lo as u32 + 1 };
                if code > oracle.max_code() { s | oracle.overflow_code(false) } else { s | code }
            };
            prop_assert_eq!(got, want, "x = {:e}", x);
        }
    }
}

#[test]
fn length_mismatch_is_an_error() {
    let mut y = [f16::ZERO; 2];
    let err = convert::narrow(&[1.0f32; 3], &mut y).unwrap_err();
    assert_eq!(
        err.to_string(),
        "convert::narrow: length mismatch: the shape needs 3 elements, got 2"
    );
    let mut w = [0.0f32; 1];
    assert!(convert::widen(&y, &mut w).is_err());
}

/// The `half`-style traits on every sign-magnitude small float, over every
/// code: `Neg` flips the sign exactly as f32 negation does, `abs`,
/// `copysign` and `signum` agree with f32's, `total_cmp` orders the codes
/// as `f32::total_cmp` orders their values (NaN codes by sign only: their
/// f32 payloads are canonical), `From<f32>` is `from_f32`, `FromStr` of a
/// value's shortest decimal gives the code back, and `Bounded` is MIN/MAX.
macro_rules! sign_magnitude_traits_test {
    ($name:ident, $ty:ty, $codes:expr) => {
        #[test]
        fn $name() {
            use num_traits::Bounded;
            let all: Vec<$ty> = (0..$codes).map(|b| <$ty>::from_bits(b as u8)).collect();
            for &x in &all {
                let v = x.to_f32();
                let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
                assert!(same((-x).to_f32(), -v), "{:#x}", x.to_bits());
                assert_eq!((-x).to_f32().is_sign_negative(), !v.is_sign_negative());
                assert!(same(x.abs().to_f32(), v.abs()), "{:#x}", x.to_bits());
                assert!(!x.abs().to_f32().is_sign_negative());
                if !v.is_nan() {
                    assert_eq!(x.signum().to_f32(), v.signum(), "{:#x}", x.to_bits());
                    assert_eq!(<$ty>::from(v).to_bits(), x.to_bits());
                    let parsed: $ty = v.to_string().parse().unwrap();
                    assert_eq!(parsed.to_bits(), x.to_bits(), "{v}");
                } else {
                    assert!(x.signum().to_f32().is_nan());
                }
                for &y in &all {
                    let w = y.to_f32();
                    assert!(same(x.copysign(y).to_f32(), v.copysign(w)));
                    // NaN codes by sign: −NaN below everything, +NaN
                    // above, two NaNs of one sign by code.
                    let rank = |f: f32| match (f.is_nan(), f.is_sign_negative()) {
                        (true, true) => -1,
                        (true, false) => 1,
                        (false, _) => 0,
                    };
                    let expected = match (rank(v), rank(w)) {
                        (0, 0) => v.total_cmp(&w),
                        (rx, ry) if rx == ry => {
                            let (bx, by) = (x.to_bits(), y.to_bits());
                            if rx < 0 {
                                by.cmp(&bx)
                            } else {
                                bx.cmp(&by)
                            }
                        }
                        (rx, ry) => rx.cmp(&ry),
                    };
                    assert_eq!(x.total_cmp(&y), expected, "{v} vs {w}");
                }
            }
            assert_eq!(<$ty>::max_value().to_bits(), <$ty>::MAX.to_bits());
            assert_eq!(<$ty>::min_value().to_bits(), <$ty>::MIN.to_bits());
            assert_eq!((-<$ty>::MAX).to_bits(), <$ty>::MIN.to_bits());
        }
    };
}

sign_magnitude_traits_test!(traits_on_every_e4m3_code, F8E4M3, 256u32);
sign_magnitude_traits_test!(traits_on_every_e5m2_code, F8E5M2, 256u32);
sign_magnitude_traits_test!(traits_on_every_e2m3_code, mixprec::F6E2M3, 64u32);
sign_magnitude_traits_test!(traits_on_every_e3m2_code, mixprec::F6E3M2, 64u32);
sign_magnitude_traits_test!(traits_on_every_e2m1_code, mixprec::F4E2M1, 16u32);

/// MxInt8 and F8E8M0: `total_cmp` is the order of their values (F8E8M0's
/// NaN code last), `From<f32>`/`FromStr` round as `from_f32`, and
/// `Bounded` is the documented range, over every code.
#[test]
fn traits_on_every_mxint8_and_e8m0_code() {
    use mixprec::{MxInt8, F8E8M0};
    use num_traits::Bounded;
    for a in 0..=255u8 {
        let x = MxInt8::from_bits(a);
        let v = x.to_f32();
        // −128 · 2^-6 has no code of its own under rounding: it gives MIN.
        let expected = if a == 0x80 { 0x81 } else { a };
        assert_eq!(MxInt8::from(v).to_bits(), expected);
        for b in 0..=255u8 {
            let y = MxInt8::from_bits(b);
            assert_eq!(x.total_cmp(&y), v.total_cmp(&y.to_f32()));
            let (e, f) = (F8E8M0::from_bits(a), F8E8M0::from_bits(b));
            let expected = match (e.to_f32().is_nan(), f.to_f32().is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => e.to_f32().total_cmp(&f.to_f32()),
            };
            assert_eq!(e.total_cmp(&f), expected);
        }
        let e = F8E8M0::from_bits(a);
        if !e.to_f32().is_nan() {
            assert_eq!(F8E8M0::from(e.to_f32()).to_bits(), a);
            let parsed: F8E8M0 = e.to_f32().to_string().parse().unwrap();
            assert_eq!(parsed.to_bits(), a);
        }
    }
    assert_eq!(MxInt8::max_value().to_bits(), MxInt8::MAX.to_bits());
    assert_eq!(MxInt8::min_value().to_f32(), -127.0 / 64.0);
    assert_eq!(F8E8M0::min_value().to_f32(), 2f32.powi(-127));
    assert_eq!(F8E8M0::max_value().to_f32(), 2f32.powi(127));
}

//! The MX element formats (FP6 E2M3/E3M2, FP4 E2M1, the E8M0 scale)
//! against ml_dtypes 0.6, from the fixtures of scripts/make_mx_fixtures.py:
//! every element pattern widened, and f32 inputs at and around every
//! rounding midpoint narrowed, bit for bit. Then the SIMD paths against the
//! scalar reference, packing, and stochastic rounding.

use flate2::read::GzDecoder;
use mixprec::convert::{self, StochasticRng};
use mixprec::dtype::{pack_fp4, pack_fp6, unpack_fp4, unpack_fp6};
use mixprec::{FloatElement, MxInt8, F4E2M1, F6E2M3, F6E3M2, F8E8M0};
use std::io::Read;

struct Fixture {
    /// (element bits, f32 bits of its value)
    widen: Vec<(u8, u32)>,
    /// (f32 input bits, element bits)
    narrow: Vec<(u32, u8)>,
}

fn fixture(name: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/mx_{name}.bin.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&path).unwrap();
    let mut bytes = Vec::new();
    GzDecoder::new(&raw[..]).read_to_end(&mut bytes).unwrap();
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    let n = u32_at(0) as usize;
    let widen = (0..n)
        .map(|i| (bytes[4 + 5 * i], u32_at(5 + 5 * i)))
        .collect();
    let at = 4 + 5 * n;
    let m = u32_at(at) as usize;
    let narrow = (0..m)
        .map(|i| (u32_at(at + 4 + 5 * i), bytes[at + 8 + 5 * i]))
        .collect();
    Fixture { widen, narrow }
}

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A small float against its fixture: every pattern, every input; the
/// slice conversions (SIMD where available) and the scalar reference too.
fn check_small<T: FloatElement>(name: &str, patterns: usize) {
    let f = fixture(name);
    assert_eq!(f.widen.len(), patterns);
    for &(b, want) in &f.widen {
        let got = T::from_raw_bits(b.into()).to_f32();
        assert_eq!(got.to_bits(), want, "{name}: widen {b:#04x}");
    }
    let xs: Vec<f32> = f.narrow.iter().map(|&(x, _)| f32::from_bits(x)).collect();
    let want: Vec<u32> = f.narrow.iter().map(|&(_, y)| y.into()).collect();
    let scalar: Vec<u32> = xs.iter().map(|&x| T::from_f32(x).to_raw_bits()).collect();
    for ((x, w), s) in xs.iter().zip(&want).zip(&scalar) {
        assert_eq!(s, w, "{name}: narrow {x:e} ({:#010x})", x.to_bits());
    }
    // Slices: dispatched (SIMD) and reference, every offset for the tails.
    for offset in 0..9 {
        let src = &xs[offset..];
        let mut fast = vec![T::default(); src.len()];
        let mut slow = vec![T::default(); src.len()];
        convert::narrow(src, &mut fast).unwrap();
        convert::reference::narrow(src, &mut slow).unwrap();
        let bits = |v: &[T]| v.iter().map(|x| x.to_raw_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast), want[offset..], "{name}: SIMD narrow");
        assert_eq!(bits(&slow), want[offset..], "{name}: reference narrow");
        // Saturating is the same for formats without infinity.
        convert::narrow_saturating(src, &mut fast).unwrap();
        assert_eq!(bits(&fast), want[offset..], "{name}: narrow_saturating");
    }
    // Widening every pattern, with garbage in the unused high bits, which
    // is ignored.
    let all: Vec<T> = (0..256u32)
        .map(|b| bytemuck::cast::<u8, T>(b as u8))
        .collect();
    let mut fast = vec![0.0f32; all.len()];
    let mut slow = vec![0.0f32; all.len()];
    convert::widen(&all, &mut fast).unwrap();
    convert::reference::widen(&all, &mut slow).unwrap();
    for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
        assert!(same_f32(*a, *b), "{name}: widen {i:#04x}");
        let low = f.widen[i % patterns].1;
        assert_eq!(
            a.to_bits(),
            low,
            "{name}: high bits of {i:#04x} not ignored"
        );
    }
}

#[test]
fn fp6_e2m3_matches_ml_dtypes() {
    check_small::<F6E2M3>("e2m3", 64);
}

#[test]
fn fp6_e3m2_matches_ml_dtypes() {
    check_small::<F6E3M2>("e3m2", 64);
}

#[test]
fn fp4_e2m1_matches_ml_dtypes() {
    check_small::<F4E2M1>("e2m1", 16);
    let values: Vec<f32> = (0..16u8).map(|b| F4E2M1::from_bits(b).to_f32()).collect();
    assert_eq!(
        values,
        [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
    );
}

#[test]
fn e8m0_matches_ml_dtypes() {
    let f = fixture("e8m0");
    assert_eq!(f.widen.len(), 256);
    for &(b, want) in &f.widen {
        let got = F8E8M0::from_bits(b).to_f32();
        assert!(
            same_f32(got, f32::from_bits(want)),
            "widen {b:#04x}: {got:e}"
        );
    }
    assert!(f.narrow.len() > 9000);
    for &(x, want) in &f.narrow {
        let got = F8E8M0::from_f32(f32::from_bits(x)).to_bits();
        assert_eq!(got, want, "narrow {:e} ({x:#010x})", f32::from_bits(x));
    }
}

#[test]
fn constants_and_worked_values() {
    assert_eq!(
        (
            F6E2M3::MAX.to_f32(),
            F6E3M2::MAX.to_f32(),
            F4E2M1::MAX.to_f32()
        ),
        (7.5, 28.0, 6.0)
    );
    assert_eq!(
        (
            F6E2M3::MIN_POSITIVE_SUBNORMAL.to_f32(),
            F6E3M2::MIN_POSITIVE_SUBNORMAL.to_f32(),
            F4E2M1::MIN_POSITIVE_SUBNORMAL.to_f32()
        ),
        (0.125, 0.0625, 0.5)
    );
    assert_eq!(
        (
            F6E2M3::UNIT_ROUNDOFF,
            F6E3M2::UNIT_ROUNDOFF,
            F4E2M1::UNIT_ROUNDOFF
        ),
        (2f64.powi(-4), 2f64.powi(-3), 2f64.powi(-2))
    );
    assert!(F4E2M1::NAN.is_none() && !F4E2M1::HAS_INFINITY);
    // No NaN: ml_dtypes turns NaN into a zero of the opposite sign.
    assert_eq!(F4E2M1::from_f32(f32::NAN).to_bits(), 0x8);
    assert_eq!(F6E3M2::from_f32(-f32::NAN).to_bits(), 0x00);
    assert_eq!(F6E2M3::from_f32(f32::INFINITY), F6E2M3::MAX);
    assert_eq!(F8E8M0::from_f32(2f32.powi(-130)), F8E8M0::MIN_POSITIVE);
    assert!(F8E8M0::from_f32(-1.0).is_nan() && F8E8M0::from_f32(f32::MAX).is_nan());
    assert_eq!(F8E8M0::from_exponent(127), F8E8M0::MAX);
    assert!(F8E8M0::from_exponent(128).is_nan());
    assert_eq!(F8E8M0::from_f32(0.75).exponent(), Some(0)); // tie: up
}

#[test]
fn packing_round_trips() {
    let mut rng = StochasticRng::new(3);
    for n in 0..40usize {
        let v: Vec<F4E2M1> = (0..n)
            .map(|_| F4E2M1::from_bits(rng.next_u64() as u8))
            .collect();
        let p = pack_fp4(&v);
        assert_eq!(p.len(), n.div_ceil(2));
        let back = unpack_fp4(&p, n).unwrap();
        assert!(back.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()));
        let bits: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8 & 0x3F).collect();
        let p6 = pack_fp6(&bits);
        assert_eq!(p6.len(), (6 * n).div_ceil(8));
        assert_eq!(unpack_fp6(&p6, n).unwrap(), bits);
    }
    // The documented orders: FP4 low nibble first; FP6 little-endian 6-bit fields.
    assert_eq!(
        pack_fp4(&[F4E2M1::from_bits(0x1), F4E2M1::from_bits(0xA)]),
        [0xA1]
    );
    assert_eq!(pack_fp6(&[0x01, 0x02, 0x03, 0x3F]), [0x81, 0x30, 0xFC]);
    assert!(unpack_fp4(&[0], 3).is_err() && unpack_fp6(&[0, 0], 3).is_err());
    assert!(unpack_fp6(&[], usize::MAX).is_err());
}

#[test]
fn stochastic_rounding_picks_a_neighbour_without_bias() {
    fn check<T: FloatElement>(x: f32) {
        let src = vec![x; 40_000];
        let mut dst = vec![T::default(); src.len()];
        convert::narrow_stochastic(&src, &mut dst, &mut StochasticRng::new(9)).unwrap();
        let down = T::from_raw_bits(T::from_f32(x).to_raw_bits());
        let vals: Vec<f32> = dst.iter().map(|v| v.to_f32()).collect();
        let (lo, hi) = vals
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(
            hi - lo <= 2.0 * (down.to_f32().abs() * 0.5).max(1.0),
            "{lo} {hi}"
        );
        let mean = vals.iter().map(|&v| v as f64).sum::<f64>() / vals.len() as f64;
        // Binomial: the mean is within 5 standard deviations of x.
        let sd = ((hi - lo) as f64 / 2.0) / (vals.len() as f64).sqrt();
        assert!(
            (mean - x as f64).abs() <= 5.0 * sd + 1e-12,
            "{x}: mean {mean}"
        );
    }
    for x in [0.3f32, 2.6, 5.1, -0.7] {
        check::<F4E2M1>(x);
        check::<F6E2M3>(x);
        check::<F6E3M2>(x);
    }
    for x in [0.3f32, -0.7, 1.23, 0.001] {
        check::<MxInt8>(x);
    }
}

/// MXINT8 (ml_dtypes has no such type): against a direct transcription of
/// its definition — k · 2^-6 for the two's complement byte k; from f32,
/// k = round-half-even(x · 64) clamped to ±127, NaN → 0 — on every byte and
/// on f32 inputs at, next to and between every point of the grid, through
/// the scalar, SIMD and reference paths.
#[test]
fn mxint8_exhaustive_against_its_definition() {
    let all: Vec<MxInt8> = (0..=255u8).map(MxInt8::from_bits).collect();
    let want_widen: Vec<f32> = (0..=255u8).map(|b| f32::from(b as i8) / 64.0).collect();
    for (x, w) in all.iter().zip(&want_widen) {
        assert_eq!(x.to_f32().to_bits(), w.to_bits(), "{:#04x}", x.to_bits());
        assert_eq!(FloatElement::to_f32(*x), *w);
    }
    assert_eq!(MxInt8::from_bits(0x80).to_f32(), -2.0);
    for offset in 0..9 {
        let mut fast = vec![0.0f32; 256 - offset];
        let mut slow = vec![0.0f32; 256 - offset];
        convert::widen(&all[offset..], &mut fast).unwrap();
        convert::reference::widen(&all[offset..], &mut slow).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast), bits(&want_widen[offset..]));
        assert_eq!(bits(&slow), bits(&want_widen[offset..]));
    }
    // Inputs: every grid point k/64 and midpoint (k + 1/2)/64 for |k| <= 130,
    // each ±3 f32 ulps, plus the specials.
    let mut xs = vec![
        0.0f32,
        -0.0,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        1e-45,
        -1e-45,
        f32::MIN_POSITIVE,
        1e30,
    ];
    for k in -260i32..=260 {
        let base = k as f32 / 128.0; // grid points (even k) and midpoints (odd k)
        for d in -3i32..=3 {
            let b = base.to_bits() as i64 + i64::from(d);
            if base != 0.0 && (0..=0xFFFF_FFFF).contains(&b) {
                xs.push(f32::from_bits(b as u32));
            }
        }
    }
    let want: Vec<u8> = xs
        .iter()
        .map(|&x| {
            if x.is_nan() {
                0
            } else {
                (f64::from(x) * 64.0).round_ties_even().clamp(-127.0, 127.0) as i8 as u8
            }
        })
        .collect();
    for (&x, &w) in xs.iter().zip(&want) {
        assert_eq!(MxInt8::from_f32(x).to_bits(), w, "{x:e}");
        assert_eq!(MxInt8::from_f64(f64::from(x)).to_bits(), w, "{x:e} as f64");
    }
    for offset in 0..9 {
        let src = &xs[offset..];
        let mut fast = vec![MxInt8::ZERO; src.len()];
        let mut slow = vec![MxInt8::ZERO; src.len()];
        let mut sat = vec![MxInt8::ZERO; src.len()];
        convert::narrow(src, &mut fast).unwrap();
        convert::reference::narrow(src, &mut slow).unwrap();
        convert::narrow_saturating(src, &mut sat).unwrap();
        let bits = |v: &[MxInt8]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast), want[offset..], "SIMD narrow");
        assert_eq!(bits(&slow), want[offset..], "reference narrow");
        assert_eq!(bits(&sat), want[offset..], "narrow_saturating");
    }
    // f64 inputs round once: just above a midpoint rounds up.
    assert_eq!(MxInt8::from_f64((0.5 + 1e-12) / 64.0).to_i8(), 1);
    // The FloatElement view: a finite-only E1M6 with bias 1.
    assert_eq!(<MxInt8 as FloatElement>::MAX.to_f32(), 127.0 / 64.0);
    assert_eq!(<MxInt8 as FloatElement>::MIN_POSITIVE.to_f32(), 1.0);
    assert_eq!(
        <MxInt8 as FloatElement>::MIN_POSITIVE_SUBNORMAL.to_f32(),
        1.0 / 64.0
    );
    assert_eq!(<MxInt8 as FloatElement>::EPSILON.to_f32(), 1.0 / 64.0);
    assert_eq!(MxInt8::UNIT_ROUNDOFF, 2f64.powi(-7));
    assert!(MxInt8::NAN.is_none() && !MxInt8::HAS_INFINITY);
    assert_eq!(MxInt8::MIN.to_i8(), -127);
    assert_eq!(
        "mxint8".parse::<mixprec::DType>().unwrap(),
        mixprec::DType::MxInt8
    );
}

/// The encodings the OCP MX v1.0 spec tabulates for each element type
/// (§5.3: exponent bias, max normal, min normal, max subnormal, min
/// subnormal, with their bit patterns; §5.4: E8M0; §5.3.3: INT8 with its
/// implicit 2^-6), checked bit for bit in both directions.
#[test]
// The literals are grouped sign.exponent.mantissa, as the spec writes them.
#[allow(clippy::unusual_byte_groupings)]
fn ocp_mx_spec_tables() {
    fn row<T: FloatElement>(table: &[(u32, f32)]) {
        for &(bits, value) in table {
            assert_eq!(
                T::from_raw_bits(bits).to_f32(),
                value,
                "{:?} {bits:#b}",
                T::DTYPE
            );
            assert_eq!(
                T::from_f32(value).to_raw_bits(),
                bits,
                "{:?} {value}",
                T::DTYPE
            );
            // The sign bit gives the negative value.
            let neg = bits | 1 << (T::BITS - 1);
            assert_eq!(T::from_raw_bits(neg).to_f32(), -value);
        }
    }
    // FP8 E4M3: bias 7; max normal S.1111.110 = 448, min normal S.0001.000
    // = 2^-6, max subnormal S.0000.111 = 0.875 · 2^-6, min S.0000.001 = 2^-9.
    row::<mixprec::F8E4M3>(&[
        (0b0_1111_110, 448.0),
        (0b0_0001_000, 2f32.powi(-6)),
        (0b0_0000_111, 0.875 * 2f32.powi(-6)),
        (0b0_0000_001, 2f32.powi(-9)),
    ]);
    // FP8 E5M2: bias 15; max S.11110.11 = 57344, min normal 2^-14, max
    // subnormal 0.75 · 2^-14, min 2^-16.
    row::<mixprec::F8E5M2>(&[
        (0b0_11110_11, 57344.0),
        (0b0_00001_00, 2f32.powi(-14)),
        (0b0_00000_11, 0.75 * 2f32.powi(-14)),
        (0b0_00000_01, 2f32.powi(-16)),
    ]);
    // FP6 E2M3: bias 1; max S.11.111 = 7.5, min normal S.01.000 = 1, max
    // subnormal S.00.111 = 0.875, min S.00.001 = 0.125.
    row::<F6E2M3>(&[
        (0b0_11_111, 7.5),
        (0b0_01_000, 1.0),
        (0b0_00_111, 0.875),
        (0b0_00_001, 0.125),
    ]);
    // FP6 E3M2: bias 3; max S.111.11 = 28, min normal S.001.00 = 0.25, max
    // subnormal S.000.11 = 0.1875, min S.000.01 = 0.0625.
    row::<F6E3M2>(&[
        (0b0_111_11, 28.0),
        (0b0_001_00, 0.25),
        (0b0_000_11, 0.1875),
        (0b0_000_01, 0.0625),
    ]);
    // FP4 E2M1: bias 1; max S.11.1 = 6, min normal S.01.0 = 1, max (and
    // min) subnormal S.00.1 = 0.5.
    row::<F4E2M1>(&[(0b0_11_1, 6.0), (0b0_01_0, 1.0), (0b0_00_1, 0.5)]);
    // E8M0: bias 127; max 0b1111_1110 = 2^127, min 0b0000_0000 = 2^-127,
    // NaN 0b1111_1111; 1.0 is 0b0111_1111.
    assert_eq!(F8E8M0::from_bits(0b1111_1110).to_f32(), 2f32.powi(127));
    assert_eq!(F8E8M0::from_bits(0).to_f32(), 2f32.powi(-127));
    assert!(F8E8M0::from_bits(0xFF).is_nan());
    assert_eq!(F8E8M0::from_f32(1.0).to_bits(), 0b0111_1111);
    // INT8 (MXINT8 elements): two's complement with an implicit 2^-6; max
    // 0b0111_1111 = 1 63/64, min 0b1000_0000 = -2, smallest step 2^-6.
    assert_eq!(MxInt8::from_bits(0b0111_1111).to_f32(), 1.0 + 63.0 / 64.0);
    assert_eq!(MxInt8::from_bits(0b1000_0000).to_f32(), -2.0);
    assert_eq!(MxInt8::from_bits(1).to_f32(), 2f32.powi(-6));
    assert_eq!(MxInt8::from_bits(0xFF).to_f32(), -(2f32.powi(-6)));
}

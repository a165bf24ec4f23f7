//! safetensors (feature `safetensors`): every dtype round-trips bit for
//! bit, quantized tensors keep their parameters, a file written by the
//! Python `safetensors` package (scripts/make_safetensors_fixture.py) reads
//! with the values ml_dtypes gave it, and malformed files are typed errors.

use mixprec::quant::{QuantParams, Scheme};
use mixprec::safetensors::Safetensors;
use mixprec::testing::{any_bits, tensor};
use mixprec::{bf16, f16, DType, Element, Error, FloatElement, Tensor, F8E4M3, F8E5M2};
use proptest::prelude::*;

fn float_bits<T: FloatElement>(t: &Tensor<T>) -> Vec<u32> {
    t.as_slice().iter().map(|x| x.to_raw_bits()).collect()
}

fn round_trip_float<T: FloatElement>(t: Tensor<T>) -> Result<(), TestCaseError> {
    let mut file = Safetensors::new();
    file.insert("t", t.clone())?;
    let back = Safetensors::from_bytes(&file.to_bytes()?)?;
    prop_assert_eq!(back.info("t"), Some((T::DTYPE, t.shape())));
    let got = back.tensor::<T>("t")?;
    prop_assert_eq!(got.shape(), t.shape());
    prop_assert_eq!(float_bits(&got), float_bits(&t));
    Ok(())
}

fn round_trip_int<T: Element>(t: Tensor<T>) -> Result<(), TestCaseError> {
    let mut file = Safetensors::new();
    file.insert("t", t.clone())?;
    let back = Safetensors::from_bytes(&file.to_bytes()?)?;
    prop_assert_eq!(back.tensor::<T>("t")?, t);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every bit pattern (NaN payloads included) of every float dtype, any
    /// shape of rank 0–3 (empty dimensions included).
    #[test]
    fn every_dtype_round_trips(
        a in tensor(3, 40, any_bits::<f32>()),
        b in tensor(3, 40, any_bits::<f16>()),
        c in tensor(3, 40, any_bits::<bf16>()),
        d in tensor(3, 40, any_bits::<F8E4M3>()),
        e in tensor(3, 40, any_bits::<F8E5M2>()),
        f in tensor(3, 40, any::<i8>()),
        g in tensor(3, 40, any::<u8>()),
        h in tensor(3, 40, any::<i32>()),
    ) {
        round_trip_float(a)?;
        round_trip_float(b)?;
        round_trip_float(c)?;
        round_trip_float(d)?;
        round_trip_float(e)?;
        round_trip_int(f)?;
        round_trip_int(g)?;
        round_trip_int(h)?;
    }

    /// Per-tensor and per-channel parameters survive exactly (scales are
    /// written as shortest round-trip decimals).
    #[test]
    fn quantized_round_trips(scales in prop::collection::vec(1e-30f32..1e30, 1..5), zp in -128i32..128) {
        let c = scales.len();
        let q = Tensor::from_fn(&[3, c], |ix| (ix[0] * 7 + ix[1]) as i8).unwrap();
        let per_channel = QuantParams::per_channel::<i8>(scales.clone(), vec![zp; c], 1)?;
        let per_tensor = QuantParams::per_tensor::<u8>(scales[0], zp + 128)?;
        let qu = Tensor::from_fn(&[2, 2], |ix| (ix[0] * 100 + ix[1]) as u8).unwrap();
        let mut file = Safetensors::new();
        file.insert_quantized("a", q.clone(), &per_channel)?;
        file.insert_quantized("b", qu.clone(), &per_tensor)?;
        let back = Safetensors::from_bytes(&file.to_bytes()?)?;
        prop_assert_eq!(back.quantized::<i8>("a")?, (q, per_channel));
        prop_assert_eq!(back.quantized::<u8>("b")?, (qu, per_tensor));
    }
}

#[test]
fn reads_a_file_written_by_python_safetensors() {
    let file =
        Safetensors::from_bytes(include_bytes!("fixtures/python_written.safetensors")).unwrap();
    assert_eq!(
        file.metadata().get("format").map(String::as_str),
        Some("np")
    );
    let f32s = file.tensor::<f32>("f32").unwrap();
    assert_eq!(f32s.shape(), &[2, 3]);
    assert_eq!(f32s.as_slice(), &[-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
    // Rounded by ml_dtypes/numpy in Python, by mixprec here: the same bits.
    let check = |name: &str, dtype: DType, want: Vec<u32>, got: Vec<u32>| {
        assert_eq!(file.info(name).unwrap().0, dtype);
        assert_eq!(got, want, "{name}");
    };
    let bits = |v: &[f32], f: &dyn Fn(f32) -> u32| v.iter().map(|&x| f(x)).collect::<Vec<u32>>();
    let f16v = [0.1, -2.5, 65504.0, f32::INFINITY];
    check(
        "f16",
        DType::F16,
        bits(&f16v, &|x| f16::from_f32(x).to_bits() as u32),
        float_bits(&file.tensor::<f16>("f16").unwrap()),
    );
    let bf16v = [1.0, 0.1, -3.5, 2f32.powi(-130)];
    let bft = file.tensor::<bf16>("bf16").unwrap();
    assert_eq!(bft.shape(), &[2, 2]);
    check(
        "bf16",
        DType::BF16,
        bits(&bf16v, &|x| bf16::from_f32(x).to_bits() as u32),
        float_bits(&bft),
    );
    let e4 = [448.0, -(2f32.powi(-9)), 0.3, f32::NAN, 0.0];
    let e4t = float_bits(&file.tensor::<F8E4M3>("f8_e4m3").unwrap());
    // ml_dtypes writes NaN as 0x7F (S.1111.111), as mixprec does.
    check(
        "f8_e4m3",
        DType::F8E4M3,
        bits(&e4, &|x| F8E4M3::from_f32(x).to_bits() as u32),
        e4t,
    );
    let e5 = [57344.0, f32::INFINITY, -(2f32.powi(-16)), 0.3];
    check(
        "f8_e5m2",
        DType::F8E5M2,
        bits(&e5, &|x| F8E5M2::from_f32(x).to_bits() as u32),
        float_bits(&file.tensor::<F8E5M2>("f8_e5m2").unwrap()),
    );
    assert_eq!(file.tensor::<i8>("i8").unwrap().as_slice(), &[-128, 0, 127]);
    assert_eq!(file.tensor::<u8>("u8").unwrap().as_slice(), &[0, 128, 255]);
    assert_eq!(
        file.tensor::<i32>("i32").unwrap().as_slice(),
        &[i32::MIN, 0, i32::MAX]
    );
    let (q, p) = file.quantized::<i8>("q").unwrap();
    assert_eq!(q.as_slice(), &[2, -4, 127, -128, 0, 8]);
    assert_eq!(
        p,
        QuantParams::per_channel::<i8>(vec![0.5, 0.25], vec![0, 0], 0).unwrap()
    );
    // Asked for the wrong type: a typed error naming both.
    let e = file.tensor::<f32>("bf16").unwrap_err();
    assert_eq!(
        e,
        Error::DTypeMismatch {
            what: "safetensors tensor \"bf16\"".into(),
            expected: DType::F32,
            actual: DType::BF16
        }
    );
    assert!(file.quantized::<u8>("q").is_err());
    assert!(file.tensor::<f32>("missing").is_err());
}

/// A file from a JSON header and data bytes.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn invalid(bytes: &[u8]) -> String {
    match Safetensors::from_bytes(bytes) {
        Err(e @ Error::InvalidFile { .. }) => e.to_string(),
        other => panic!("expected InvalidFile, got {other:?}"),
    }
}

#[test]
fn malformed_files_are_typed_errors() {
    let good = raw(
        r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    Safetensors::from_bytes(&good).unwrap();
    // Truncated anywhere: header length, header, data.
    for cut in [0, 4, 8, 20, good.len() - 1] {
        invalid(&good[..cut]);
    }
    // A header length that overflows (u64::MAX) or points past the end.
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    invalid(&huge);
    let mut past = good.clone();
    past[..8].copy_from_slice(&1_000_000u64.to_le_bytes());
    invalid(&past);
    // Offsets that do not match shape × dtype, overflow, or overlap.
    invalid(&raw(
        r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    ));
    invalid(&raw(
        r#"{"x":{"dtype":"F32","shape":[18446744073709551615, 2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    ));
    invalid(&raw(
        r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}"#,
        &[0; 8],
    ));
    invalid(&raw(
        r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        &[0; 12],
    ));
    // Not JSON; an F64 tensor whose bytes do not fit its shape.
    invalid(&raw("{not json", &[]));
    invalid(&raw(
        r#"{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    ));
    // Quantization metadata that does not parse or breaks the rules.
    let q = |scales: &str, axis: &str| {
        let header = format!(
            r#"{{"__metadata__":{{"mixprec.quant.q.scales":"{scales}","mixprec.quant.q.zero_points":"0,0","mixprec.quant.q.axis":"{axis}","mixprec.quant.q.range":"-128,127"}},"q":{{"dtype":"I8","shape":[2,1],"data_offsets":[0,2]}}}}"#
        );
        Safetensors::from_bytes(&raw(&header, &[1, 2]))
            .unwrap()
            .quantized::<i8>("q")
    };
    q("0.5,0.25", "0").unwrap();
    assert!(matches!(q("0.5,zero", "0"), Err(Error::InvalidFile { .. })));
    assert!(matches!(
        q("0.5,-1", "0"),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        q("0.5,NaN", "0"),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(q("0.5,0.25", "1").is_err()); // 2 channels on an axis of length 1
    assert!(q("0.5,0.25", "none").is_err());
}

#[test]
fn parameters_must_fit_the_tensor() {
    let q = Tensor::from_vec(&[2, 3], vec![0i8; 6]).unwrap();
    let mut file = Safetensors::new();
    let three = QuantParams::per_channel::<i8>(vec![1.0; 3], vec![0; 3], 0).unwrap();
    assert!(file.insert_quantized("q", q.clone(), &three).is_err());
    let u8_params = QuantParams::from_range::<u8>(0.0, 1.0, Scheme::Affine).unwrap();
    assert!(file.insert_quantized("q", q.clone(), &u8_params).is_err());
    assert!(file.insert("__metadata__", q).is_err());
    assert_eq!(file.names().count(), 0);
}

/// The MX formats: E8M0 a byte each; FP4 and FP6 packed as the format
/// stores them (FP4 element 0 in the low nibble), every pattern round-trips.
#[test]
fn mx_formats_round_trip_packed() {
    use mixprec::{F4E2M1, F6E2M3, F6E3M2, F8E8M0};
    let fp4 = Tensor::from_fn(&[4, 8], |ix| F4E2M1::from_bits((ix[0] * 8 + ix[1]) as u8)).unwrap();
    let fp6 = Tensor::from_fn(&[16, 4], |ix| F6E2M3::from_bits((ix[0] * 4 + ix[1]) as u8)).unwrap();
    let fp6b = Tensor::from_fn(&[64], |ix| F6E3M2::from_bits(63 - ix[0] as u8)).unwrap();
    let e8 = Tensor::from_fn(&[256], |ix| F8E8M0::from_bits(ix[0] as u8)).unwrap();
    let mut file = Safetensors::new();
    file.insert("fp4", fp4.clone()).unwrap();
    file.insert("fp6", fp6.clone()).unwrap();
    file.insert("fp6b", fp6b.clone()).unwrap();
    file.insert("e8", e8.clone()).unwrap();
    let bytes = file.to_bytes().unwrap();
    let back = Safetensors::from_bytes(&bytes).unwrap();
    let b4 = back.tensor::<F4E2M1>("fp4").unwrap();
    assert!(b4
        .as_slice()
        .iter()
        .zip(fp4.as_slice())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let b6 = back.tensor::<F6E2M3>("fp6").unwrap();
    assert!(b6
        .as_slice()
        .iter()
        .zip(fp6.as_slice())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let b6b = back.tensor::<F6E3M2>("fp6b").unwrap();
    assert!(b6b
        .as_slice()
        .iter()
        .zip(fp6b.as_slice())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let be = back.tensor::<F8E8M0>("e8").unwrap();
    assert!(be
        .as_slice()
        .iter()
        .zip(e8.as_slice())
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    // MXINT8 is stored as I8 (the bytes k) and reads back either way.
    let mut f2 = Safetensors::new();
    let mxi = Tensor::from_fn(&[256], |ix| mixprec::MxInt8::from_bits(ix[0] as u8)).unwrap();
    f2.insert("mxint8", mxi.clone()).unwrap();
    let b2 = f2.to_bytes().unwrap();
    let st = ::safetensors::SafeTensors::deserialize(&b2).unwrap();
    assert_eq!(
        st.tensor("mxint8").unwrap().dtype(),
        ::safetensors::Dtype::I8
    );
    let back2 = Safetensors::from_bytes(&b2).unwrap();
    let as_mx = back2.tensor::<mixprec::MxInt8>("mxint8").unwrap();
    let as_i8 = back2.tensor::<i8>("mxint8").unwrap();
    for ((a, b), c) in as_mx
        .as_slice()
        .iter()
        .zip(mxi.as_slice())
        .zip(as_i8.as_slice())
    {
        assert_eq!((a.to_bits(), a.to_i8()), (b.to_bits(), *c));
    }
    // On disk: 32 FP4 values in 16 bytes, element 0 in the low nibble.
    let st = ::safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let raw = st.tensor("fp4").unwrap();
    assert_eq!(
        (raw.dtype(), raw.data().len()),
        (::safetensors::Dtype::F4, 16)
    );
    assert_eq!(raw.data()[0], 0x10);
    assert_eq!(st.tensor("fp6").unwrap().data().len(), 48);
    // Counts that do not fill whole bytes are refused.
    assert!(file
        .insert("odd", Tensor::from_vec(&[3], vec![F4E2M1::ONE; 3]).unwrap())
        .is_err());
    assert!(file
        .insert("six", Tensor::from_vec(&[6], vec![F6E2M3::ONE; 6]).unwrap())
        .is_err());
    let bad = raw_header(
        r#"{"x":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
        &[0, 0],
    );
    assert!(Safetensors::from_bytes(&bad).is_err());
}

fn raw_header(header: &str, data: &[u8]) -> Vec<u8> {
    raw(header, data)
}

/// A PyTorch-style file with I64, F64 and BOOL tensors beside an F32 one
/// loads whole: the F32 tensor reads as before, the others are listed and
/// readable as raw bytes, refused as an element type, and written back
/// unchanged (the same bytes for the same file).
#[test]
fn tensors_of_other_dtypes_do_not_block_the_file() {
    let mut data = Vec::new();
    data.extend(1.5f64.to_le_bytes()); // f64 [1], offsets 0..8
    data.extend(3i64.to_le_bytes()); // num_batches_tracked [], 8..16
    data.extend(
        0.25f32
            .to_le_bytes()
            .into_iter()
            .chain((-2.0f32).to_le_bytes()),
    ); // 16..24
    data.extend([1u8, 0]); // mask [2] BOOL, 24..26
    let header = r#"{"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"w":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[24,26]}}"#;
    let file = raw(header, &data);
    let st = Safetensors::from_bytes(&file).unwrap();
    assert_eq!(
        st.names().collect::<Vec<_>>(),
        ["bn.num_batches_tracked", "d", "mask", "w"]
    );
    assert_eq!(st.tensor::<f32>("w").unwrap().as_slice(), [0.25, -2.0]);
    let n = st.raw("bn.num_batches_tracked").unwrap();
    assert_eq!(
        (n.dtype_name().as_str(), n.shape(), n.bits_per_element()),
        ("I64", &[][..], 64)
    );
    assert_eq!(i64::from_le_bytes(n.bytes().try_into().unwrap()), 3);
    assert_eq!(n.element_type(), None);
    let d = st.raw("d").unwrap();
    assert_eq!(f64::from_le_bytes(d.bytes().try_into().unwrap()), 1.5);
    assert_eq!(st.raw("mask").unwrap().bytes(), [1, 0]);
    assert_eq!(st.raw("w").unwrap().element_type(), Some(DType::F32));
    assert_eq!(st.info("d"), None);
    assert_eq!(
        st.info("w").map(|(t, s)| (t, s.to_vec())),
        Some((DType::F32, vec![2]))
    );
    let err = st.tensor::<f32>("d").unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    assert!(err.to_string().contains("F64"), "{err}");
    // Written back: every tensor kept, bytes deterministic and stable.
    let bytes = st.to_bytes().unwrap();
    let again = Safetensors::from_bytes(&bytes).unwrap();
    assert_eq!(again, st);
    assert_eq!(again.to_bytes().unwrap(), bytes);
}

/// I/O failures are `Error::Io` with the path and the error's kind, not
/// `InvalidFile`.
#[test]
fn io_errors_are_their_own_variant() {
    let dir = std::env::temp_dir().join(format!("mixprec-io-{}", std::process::id()));
    let missing = dir.join("no/such/file.safetensors");
    match Safetensors::read(&missing) {
        Err(Error::Io { path, kind, .. }) => {
            assert_eq!(kind, std::io::ErrorKind::NotFound);
            assert!(path.contains("file.safetensors"), "{path}");
        }
        other => panic!("{other:?}"),
    }
    let err = Safetensors::new().write(&missing).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("I/O error on "), "{err}");
    let from: Error = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "nope").into();
    assert_eq!(from.to_string(), "I/O error: nope");
}

/// `SafetensorsFile` reads the header at `open` and each tensor only when
/// asked: every tensor of a mixed file (F32, BF16, FP4 packed, I8 with
/// quantization metadata, I64) reads the same as through the in-memory
/// `Safetensors`; malformed headers are `InvalidFile`, a missing file
/// `Io`, a missing name `InvalidParameter`.
#[test]
fn file_read_tensor_by_tensor_equals_the_whole_file() {
    use mixprec::safetensors::SafetensorsFile;
    let dir = std::env::temp_dir();
    let path = dir.join(format!("mixprec-lazy-{}.safetensors", std::process::id()));
    let mut st = Safetensors::new();
    st.insert(
        "w",
        Tensor::from_vec(&[2, 3], vec![1.0f32, -2.0, 3.5, 0.0, -0.0, 7.0]).unwrap(),
    )
    .unwrap();
    st.insert(
        "h",
        Tensor::from_vec(&[3], vec![bf16::from_f32(0.5); 3]).unwrap(),
    )
    .unwrap();
    st.insert(
        "fp4",
        Tensor::from_vec(&[2, 2], vec![mixprec::F4E2M1::from_f32(1.5); 4]).unwrap(),
    )
    .unwrap();
    let params = QuantParams::per_tensor::<i8>(0.25, 0).unwrap();
    st.insert_quantized("q", Tensor::from_vec(&[2], vec![3i8, -4]).unwrap(), &params)
        .unwrap();
    st.set_metadata("note", "lazy");
    // An I64 tensor beside them, as PyTorch writes num_batches_tracked.
    let bytes = st.to_bytes().unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end();
    let data_len = bytes.len() - 8 - n;
    let header = format!(
        r#"{},"steps":{{"dtype":"I64","shape":[],"data_offsets":[{data_len},{}]}}}}"#,
        &header[..header.len() - 1],
        data_len + 8
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&bytes[8 + n..]);
    file.extend_from_slice(&42i64.to_le_bytes());
    std::fs::write(&path, &file).unwrap();
    let whole = Safetensors::from_bytes(&file).unwrap();
    let mut lazy = SafetensorsFile::open(&path).unwrap();
    assert_eq!(
        lazy.names().collect::<Vec<_>>(),
        whole.names().collect::<Vec<_>>()
    );
    assert_eq!(lazy.metadata(), whole.metadata());
    assert_eq!(
        lazy.tensor::<f32>("w").unwrap(),
        whole.tensor::<f32>("w").unwrap()
    );
    assert_eq!(
        lazy.tensor::<bf16>("h").unwrap(),
        whole.tensor::<bf16>("h").unwrap()
    );
    assert_eq!(
        lazy.tensor::<mixprec::F4E2M1>("fp4").unwrap(),
        whole.tensor::<mixprec::F4E2M1>("fp4").unwrap()
    );
    assert_eq!(lazy.tensor::<i8>("q").unwrap().as_slice(), [3, -4]);
    assert_eq!(lazy.raw_bytes("steps").unwrap(), 42i64.to_le_bytes());
    assert_eq!(
        lazy.dtype_and_shape("steps").map(|(d, s)| (d, s.to_vec())),
        Some(("I64".to_string(), vec![]))
    );
    assert_eq!(lazy.element_type("steps"), None);
    assert_eq!(lazy.element_type("w"), Some(DType::F32));
    assert!(matches!(
        lazy.tensor::<f32>("steps"),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        lazy.tensor::<f32>("h"),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        lazy.tensor::<f32>("nope"),
        Err(Error::InvalidParameter { .. })
    ));
    // Malformed: a gap, a length that does not match, a truncated file.
    for (header, data) in [
        (
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            vec![0u8; 8],
        ),
        (
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            vec![0u8; 4],
        ),
        (
            r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            vec![0u8; 2],
        ),
        (
            r#"{"x":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#,
            vec![0u8; 4],
        ),
        (r#"{not json"#, vec![]),
    ] {
        std::fs::write(&path, raw(header, &data)).unwrap();
        assert!(
            matches!(SafetensorsFile::open(&path), Err(Error::InvalidFile { .. })),
            "{header}"
        );
    }
    std::fs::write(&path, [1u8, 2]).unwrap();
    assert!(matches!(
        SafetensorsFile::open(&path),
        Err(Error::InvalidFile { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        SafetensorsFile::open(&path),
        Err(Error::Io {
            kind: std::io::ErrorKind::NotFound,
            ..
        })
    ));
}

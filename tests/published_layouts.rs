//! The published checkpoint layouts (gpt-oss MXFP4, ModelOpt NVFP4,
//! DeepSeek-V3 block FP8) against a file written by
//! `scripts/make_published_fixtures.py` with the Python `safetensors`
//! package: the loaders give the values the publishers' own dequantization
//! gives (bits for gpt-oss and DeepSeek; within one f32 rounding for NVFP4,
//! whose scale product this crate rounds first), and the savers write the
//! same tensors back, byte for byte.

use mixprec::block_scaled::{BlockScaled, Fp8Granularity, MxScaleMode};
use mixprec::safetensors::Safetensors;
use mixprec::{Error, MatRef};

fn fixture() -> Safetensors {
    Safetensors::from_bytes(include_bytes!("fixtures/published_layouts.safetensors")).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The same tensor (dtype, shape, bytes) under `name` in both files.
fn same_tensor(a: &Safetensors, b: &Safetensors, name: &str) {
    let (x, y) = (a.raw(name).unwrap(), b.raw(name).unwrap());
    assert_eq!(
        (x.dtype_name(), x.shape(), x.bytes()),
        (y.dtype_name(), y.shape(), y.bytes()),
        "{name}"
    );
}

#[test]
fn gpt_oss_mxfp4_loads_and_saves() -> Result<(), Error> {
    let file = fixture();
    let name = "block.0.mlp.mlp1_weight";
    let (w, lines_shape) = file.gpt_oss_mxfp4(name)?;
    assert_eq!(lines_shape, [2, 12]);
    assert_eq!((w.lines(), w.k(), w.block()), (24, 96, 32));
    let expected = file.tensor::<f32>(&format!("{name}.expected"))?;
    assert_eq!(bits(w.dequantize()?.as_slice()), bits(expected.as_slice()));
    // The code-0 scale is 2^-127, a subnormal.
    assert_eq!(w.scales()[0], f32::from_bits(0x0040_0000));
    let mut out = Safetensors::new();
    out.insert_gpt_oss_mxfp4(name, &w, &lines_shape)?;
    same_tensor(&file, &out, &format!("{name}.blocks"));
    same_tensor(&file, &out, &format!("{name}.scales"));
    Ok(())
}

#[test]
fn modelopt_nvfp4_loads_and_saves() -> Result<(), Error> {
    let file = fixture();
    let prefix = "model.layers.0.mlp.down_proj";
    let (w, input_scale) = file.modelopt_nvfp4(prefix)?;
    assert_eq!(input_scale, Some(0.5));
    assert_eq!((w.lines(), w.k(), w.block()), (20, 96, 16));
    let expected = file.tensor::<f32>(&format!("{prefix}.expected"))?;
    // FP4 · fl(s2 · e4m3) here, (FP4 · e4m3) · s2 there: each one rounding
    // of the same real product except for fl(s2 · e4m3), so within 2u.
    for (got, want) in w.dequantize()?.as_slice().iter().zip(expected.as_slice()) {
        assert!(
            (got - want).abs() <= want.abs() * 2f32.powi(-23),
            "{got} vs {want}"
        );
    }
    let mut out = Safetensors::new();
    out.insert_modelopt_nvfp4(prefix, &w, input_scale)?;
    for t in ["weight", "weight_scale", "weight_scale_2", "input_scale"] {
        same_tensor(&file, &out, &format!("{prefix}.{t}"));
    }
    Ok(())
}

#[test]
fn deepseek_fp8_loads_and_saves() -> Result<(), Error> {
    let file = fixture();
    let prefix = "model.layers.0.self_attn.kv_a_proj_with_mqa";
    let w = file.deepseek_fp8(prefix)?;
    assert_eq!(
        (w.lines(), w.k(), w.block(), w.line_group()),
        (130, 256, 128, 128)
    );
    let expected = file.tensor::<f32>(&format!("{prefix}.expected"))?;
    assert_eq!(bits(w.dequantize()?.as_slice()), bits(expected.as_slice()));
    let mut out = Safetensors::new();
    out.insert_deepseek_fp8(prefix, &w)?;
    same_tensor(&file, &out, &format!("{prefix}.weight"));
    same_tensor(&file, &out, &format!("{prefix}.weight_scale_inv"));
    Ok(())
}

/// Our own quantizers' output written in each layout reads back equal.
#[test]
fn round_trips_through_the_layouts() -> Result<(), Error> {
    let x: Vec<f32> = (0..256 * 128)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03)
        .collect();
    let m = MatRef::from_row_major(&x, 256, 128)?;
    let mx = BlockScaled::mx(m, MxScaleMode::Floor)?;
    let nv = BlockScaled::nvfp4(m, true)?;
    let fp8 = BlockScaled::fp8(m, Fp8Granularity::Blocks128x128, false)?;
    let mut file = Safetensors::new();
    file.insert_gpt_oss_mxfp4("mx", &mx, &[4, 64])?;
    file.insert_modelopt_nvfp4("nv", &nv, None)?;
    file.insert_deepseek_fp8("fp8", &fp8)?;
    let back = Safetensors::from_bytes(&file.to_bytes()?)?;
    assert_eq!(back.gpt_oss_mxfp4("mx")?, (mx.clone(), vec![4, 64]));
    assert_eq!(back.modelopt_nvfp4("nv")?, (nv, None));
    assert_eq!(back.deepseek_fp8("fp8")?, fp8);
    // Wrong inputs are typed errors that name the tensor.
    let err = back.gpt_oss_mxfp4("nv").unwrap_err();
    assert!(err.to_string().contains("nv.blocks"), "{err}");
    let err = back.deepseek_fp8("mx").unwrap_err();
    assert!(err.to_string().contains("mx.weight"), "{err}");
    let err = file.insert_gpt_oss_mxfp4("bad", &mx, &[3, 64]).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    let err = file.insert_modelopt_nvfp4("bad", &mx, None).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    Ok(())
}

/// Empty tensors may claim any shape: K = 32 · groups or 2 · (in/2) past
/// usize is a typed error, never an overflow.
#[test]
fn huge_empty_shapes_are_typed_errors() -> Result<(), Error> {
    use mixprec::Tensor;
    let mut file = Safetensors::new();
    let huge = usize::MAX / 16;
    file.insert("g.blocks", Tensor::<u8>::from_vec(&[0, huge, 16], vec![])?)?;
    file.insert("g.scales", Tensor::<u8>::from_vec(&[0, huge], vec![])?)?;
    file.insert(
        "n.weight",
        Tensor::<u8>::from_vec(&[0, usize::MAX / 2 + 1], vec![])?,
    )?;
    let back = Safetensors::from_bytes(&file.to_bytes()?)?;
    assert!(back.gpt_oss_mxfp4("g").is_err());
    assert!(back.modelopt_nvfp4("n").is_err());
    Ok(())
}

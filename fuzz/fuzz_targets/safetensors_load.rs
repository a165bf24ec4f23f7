//! Arbitrary bytes as a safetensors file: loading returns a typed error or
//! a file whose every tensor reads back in its own dtype (and whose
//! quantized tensors, if any parse, fit their parameters), and whose
//! tensors of dtypes the crate has no type for read as raw bytes of the
//! right length and are refused as f32; never a panic. The published
//! layouts' loaders (gpt-oss MXFP4, ModelOpt NVFP4, DeepSeek FP8) return a
//! typed error or a weight that saves back under its names and loads
//! equal. Whatever loads writes out again and reloads equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixprec::safetensors::Safetensors;
use mixprec::{bf16, f16, DType, F4E2M1, F6E2M3, F6E3M2, F8E4M3, F8E5M2, F8E8M0};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = Safetensors::from_bytes(data) else {
        return;
    };
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for name in &names {
        let raw = file.raw(name).expect("every listed tensor has its bytes");
        let bits = raw.shape().iter().product::<usize>() * raw.bits_per_element();
        assert_eq!(raw.bytes().len() * 8, bits);
        let Some((dtype, shape)) = file.info(name) else {
            // A dtype the crate has no element type for (I64, F64, BOOL…).
            assert!(raw.element_type().is_none());
            assert!(file.tensor::<f32>(name).is_err());
            continue;
        };
        let shape = shape.to_vec();
        let len = match dtype {
            DType::F32 => file.tensor::<f32>(name).map(|t| t.len()),
            DType::F16 => file.tensor::<f16>(name).map(|t| t.len()),
            DType::BF16 => file.tensor::<bf16>(name).map(|t| t.len()),
            DType::F8E4M3 => file.tensor::<F8E4M3>(name).map(|t| t.len()),
            DType::F8E5M2 => file.tensor::<F8E5M2>(name).map(|t| t.len()),
            DType::I8 => file.tensor::<i8>(name).map(|t| t.len()),
            DType::U8 => file.tensor::<u8>(name).map(|t| t.len()),
            DType::I32 => file.tensor::<i32>(name).map(|t| t.len()),
            DType::F8E8M0 => file.tensor::<F8E8M0>(name).map(|t| t.len()),
            DType::F6E2M3 => file.tensor::<F6E2M3>(name).map(|t| t.len()),
            DType::F6E3M2 => file.tensor::<F6E3M2>(name).map(|t| t.len()),
            DType::F4E2M1 => file.tensor::<F4E2M1>(name).map(|t| t.len()),
            _ => return,
        }
        .expect("a loaded tensor reads in its own dtype");
        assert_eq!(len, shape.iter().product::<usize>());
        let _ = file.quantized::<i8>(name);
        let _ = file.quantized::<u8>(name);
        published_layouts(&file, name);
    }
    let bytes = file.to_bytes().expect("a loaded file writes");
    assert_eq!(Safetensors::from_bytes(&bytes).expect("and reloads"), file);
});

/// The published layouts' loaders on the prefix of `name` (the part before
/// its last `.`): an error, or a weight that round-trips through its saver.
fn published_layouts(file: &Safetensors, name: &str) {
    let Some((prefix, _)) = name.rsplit_once('.') else {
        return;
    };
    if let Ok((w, shape)) = file.gpt_oss_mxfp4(prefix) {
        let mut out = Safetensors::new();
        out.insert_gpt_oss_mxfp4(prefix, &w, &shape)
            .expect("a loaded gpt-oss weight saves");
        let back = out.gpt_oss_mxfp4(prefix).expect("and reloads");
        assert_eq!(format!("{back:?}"), format!("{:?}", (w, shape)));
    }
    if let Ok((w, input_scale)) = file.modelopt_nvfp4(prefix) {
        let mut out = Safetensors::new();
        out.insert_modelopt_nvfp4(prefix, &w, input_scale)
            .expect("a loaded NVFP4 weight saves");
        let back = out.modelopt_nvfp4(prefix).expect("and reloads");
        assert_eq!(format!("{back:?}"), format!("{:?}", (w, input_scale)));
    }
    if let Ok(w) = file.deepseek_fp8(prefix) {
        let mut out = Safetensors::new();
        out.insert_deepseek_fp8(prefix, &w)
            .expect("a loaded FP8 weight saves");
        let back = out.deepseek_fp8(prefix).expect("and reloads");
        assert_eq!(format!("{back:?}"), format!("{w:?}"));
    }
}

//! Arbitrary bytes as a safetensors file: loading returns a typed error or
//! a file whose every tensor reads back in its own dtype (and whose
//! quantized tensors, if any parse, fit their parameters), and whose
//! tensors of dtypes the crate has no type for read as raw bytes of the
//! right length and are refused as f32; never a panic. Whatever loads
//! writes out again and reloads equal.
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
    }
    let bytes = file.to_bytes().expect("a loaded file writes");
    assert_eq!(Safetensors::from_bytes(&bytes).expect("and reloads"), file);
});

#!/usr/bin/env python3
"""Writes tests/fixtures/published_layouts.safetensors: one weight in each
quantized layout that published checkpoints ship, with the values each
publisher's own dequantization gives, for tests/published_layouts.rs.

    python3 -m venv /tmp/st && /tmp/st/bin/pip install safetensors==0.8.0 numpy ml_dtypes==0.7.0
    /tmp/st/bin/python scripts/make_published_fixtures.py

Layouts and the dequantization rules used below (checked against the
publishers' code, cited in src/safetensors/published.rs):

* gpt-oss MXFP4 (openai/gpt-oss, gpt_oss/torch/weights.py): `<name>.blocks`
  U8 [..., rows, K/32, 16], two E2M1 codes per byte, the even element in
  the low nibble; `<name>.scales` U8 [..., rows, K/32], E8M0 biased by 127.
  value = FP4_VALUES[code] * 2^(scale - 127) (torch.ldexp).
* NVIDIA ModelOpt NVFP4: `<p>.weight` U8 [out, in/2] (even element in the
  low nibble), `<p>.weight_scale` F8_E4M3 [out, in/16], `<p>.weight_scale_2`
  F32 [] (per tensor), `<p>.input_scale` F32 [].
  value = e2m1 * f32(weight_scale) * weight_scale_2.
* DeepSeek-V3 block FP8 (deepseek-ai/DeepSeek-V3, inference/kernel.py
  weight_dequant): `<p>.weight` F8_E4M3 [out, in], `<p>.weight_scale_inv`
  F32 [ceil(out/128), ceil(in/128)]. value = f32(weight) * scale of its
  128 x 128 block.

Each `<...>.expected` tensor holds those values as F32, computed in float32.
"""
import pathlib

import ml_dtypes
import numpy as np
from safetensors.numpy import save

rng = np.random.default_rng(2026)
FP4_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)


def pack_low_first(codes):
    """[..., 2n] codes 0..15 -> [..., n] bytes, element 2i in the low nibble."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


tensors = {}

# gpt-oss MXFP4: 2 experts x 12 rows x K = 96 (3 blocks of 32).
experts, rows, k = 2, 12, 96
codes = rng.integers(0, 16, size=(experts, rows, k), dtype=np.uint8)
scales = rng.integers(110, 141, size=(experts, rows, k // 32), dtype=np.uint8)
scales[0, 0, 0] = 0  # 2^-127, an f32 subnormal scale
name = "block.0.mlp.mlp1_weight"
tensors[f"{name}.blocks"] = pack_low_first(codes).reshape(experts, rows, k // 32, 16)
tensors[f"{name}.scales"] = scales
values = FP4_VALUES[codes].reshape(experts, rows, k // 32, 32)
exponents = scales.astype(np.int32) - 127
tensors[f"{name}.expected"] = np.ldexp(values, exponents[..., None]).astype(np.float32).reshape(
    experts, rows, k
)

# ModelOpt NVFP4: [out 20, in 96], blocks of 16.
out, k = 20, 96
codes = rng.integers(0, 16, size=(out, k), dtype=np.uint8)
# Positive, finite E4M3 scale codes (0x08..0x7E: normal values up to 448).
scale_codes = rng.integers(0x08, 0x7F, size=(out, k // 16), dtype=np.uint8)
block_scales = scale_codes.view(ml_dtypes.float8_e4m3fn)
weight_scale_2 = np.float32(0.0123)
prefix = "model.layers.0.mlp.down_proj"
tensors[f"{prefix}.weight"] = pack_low_first(codes)
tensors[f"{prefix}.weight_scale"] = block_scales
tensors[f"{prefix}.weight_scale_2"] = np.array(weight_scale_2, dtype=np.float32)
tensors[f"{prefix}.input_scale"] = np.array(0.5, dtype=np.float32)
per_elem = np.repeat(block_scales.astype(np.float32), 16, axis=1)
tensors[f"{prefix}.expected"] = (FP4_VALUES[codes] * per_elem * weight_scale_2).astype(np.float32)

# DeepSeek-V3 block FP8: [out 130, in 256], 128 x 128 blocks (the last row
# block partial).
out, k = 130, 256
w = (rng.standard_normal((out, k)) * 100).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
s = (rng.random((2, 2)) * 0.01 + 0.001).astype(np.float32)
prefix = "model.layers.0.self_attn.kv_a_proj_with_mqa"
tensors[f"{prefix}.weight"] = w
tensors[f"{prefix}.weight_scale_inv"] = s
full = np.repeat(np.repeat(s, 128, axis=0), 128, axis=1)[:out, :k]
tensors[f"{prefix}.expected"] = (w.astype(np.float32) * full).astype(np.float32)

path = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/published_layouts.safetensors"
path.write_bytes(save(tensors, metadata={"format": "pt"}))
print(f"wrote {path} ({path.stat().st_size} bytes)")

#!/usr/bin/env python3
"""Writes tests/fixtures/python_written.safetensors with the Python
`safetensors` package (numpy API; bf16 and FP8 through ml_dtypes), for
tests/safetensors.rs: one tensor of every dtype mixprec has, and an int8
tensor with quantization parameters under mixprec's metadata convention.

    python3 -m venv /tmp/st && /tmp/st/bin/pip install safetensors==0.8.0 numpy ml_dtypes==0.6.0
    /tmp/st/bin/python scripts/make_safetensors_fixture.py

The values are chosen in tests/safetensors.rs too; ml_dtypes rounds the
float literals (ties to even), and the test checks that mixprec's
conversions give the same bits.
"""
import pathlib

import ml_dtypes
import numpy as np
from safetensors.numpy import save

tensors = {
    "f32": (np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.5) - np.float32(1.0)),
    "f16": np.array([0.1, -2.5, 65504.0, np.inf], dtype=np.float16),
    "bf16": np.array([[1.0, 0.1], [-3.5, 2.0**-130]], dtype=ml_dtypes.bfloat16),
    "f8_e4m3": np.array([448.0, -(2.0**-9), 0.3, np.nan, 0.0], dtype=ml_dtypes.float8_e4m3fn),
    "f8_e5m2": np.array([57344.0, np.inf, -(2.0**-16), 0.3], dtype=ml_dtypes.float8_e5m2),
    "i8": np.array([-128, 0, 127], dtype=np.int8),
    "u8": np.array([0, 128, 255], dtype=np.uint8),
    "i32": np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
    "q": np.array([[2, -4, 127], [-128, 0, 8]], dtype=np.int8),
}
metadata = {
    "format": "np",
    "mixprec.quant.q.scales": "0.5,0.25",
    "mixprec.quant.q.zero_points": "0,0",
    "mixprec.quant.q.axis": "0",
    "mixprec.quant.q.range": "-128,127",
    "mixprec.quant.q.scheme": "symmetric",
}
out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "python_written.safetensors"
out.write_bytes(save(tensors, metadata=metadata))
print(f"wrote {out} ({out.stat().st_size} bytes)")

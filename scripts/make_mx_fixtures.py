#!/usr/bin/env python3
"""Reference conversions for the MX element formats, from ml_dtypes 0.6:
float8_e8m0fnu, float6_e2m3fn, float6_e3m2fn, float4_e2m1fn.

For each format, tests/fixtures/mx_<name>.bin.gz holds two tables, little
endian:

    u32 n_widen;  n_widen × (u8 element bits, u32 f32 bits)     every element pattern
    u32 n_narrow; n_narrow × (u32 f32 bits, u8 element bits)    f32 inputs

The f32 inputs are every representable value and its neighbours, the
midpoint between every two adjacent values (and past the largest one) with
the 4 f32 values on each side of it, both signs, zeros, infinities, NaNs
with several payloads, and the extremes of f32.

    python3 -m venv /tmp/mx && /tmp/mx/bin/pip install numpy ml_dtypes==0.6.0
    /tmp/mx/bin/python scripts/make_mx_fixtures.py
"""
import gzip
import pathlib
import struct

import ml_dtypes
import numpy as np

assert ml_dtypes.__version__ == "0.6.0", ml_dtypes.__version__

FORMATS = {
    "e8m0": (ml_dtypes.float8_e8m0fnu, 8),
    "e2m3": (ml_dtypes.float6_e2m3fn, 6),
    "e3m2": (ml_dtypes.float6_e3m2fn, 6),
    "e2m1": (ml_dtypes.float4_e2m1fn, 4),
}

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def f32_bits(x):
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def from_bits(b):
    return np.array([b], dtype=np.uint32).view(np.float32)[0]


def neighbours(x, k):
    """x and the k f32 values on each side of it (finite, same sign side)."""
    b = f32_bits(x)
    out = []
    for d in range(-k, k + 1):
        nb = b + d
        if 0 <= nb < (1 << 32):
            out.append(nb)
    return out


for name, (dtype, bits) in FORMATS.items():
    patterns = np.arange(1 << bits, dtype=np.uint8)
    values = patterns.view(dtype).astype(np.float32)
    widen = [(int(p), f32_bits(v)) for p, v in zip(patterns, values)]

    finite = sorted({float(v) for v in values if np.isfinite(v) and v >= 0})
    inputs = set()
    for v in finite:
        for s in (1.0, -1.0):
            inputs.update(neighbours(np.float32(s * v), 4))
    # Midpoints between adjacent values, and past the largest.
    steps = list(zip(finite, finite[1:]))
    top = finite[-1] + (finite[-1] - finite[-2])
    steps.append((finite[-1], top))
    for lo, hi in steps:
        mid = np.float32((lo + hi) / 2)
        for s in (1.0, -1.0):
            inputs.update(neighbours(np.float32(s * mid), 4))
            inputs.update(neighbours(np.float32(s * hi), 4))
    # The E8M0 range spans f32's: powers of two and their midpoints everywhere.
    if name == "e8m0":
        for e in range(-149, 128):
            p = 2.0**e
            for x in (p, p * 1.5, p * 0.75):
                if 1.4e-45 <= x < 3.4e38:
                    for s in (1.0, -1.0):
                        inputs.update(neighbours(np.float32(s * x), 3))
    for x in (0.0, -0.0, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 1e-45, -1e-45):
        inputs.add(f32_bits(x))
    for nan in (0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000):
        inputs.add(nan)
    inputs = sorted(inputs)
    xs = np.array(inputs, dtype=np.uint32).view(np.float32)
    with np.errstate(all="ignore"):
        ys = xs.astype(dtype).view(np.uint8)
    narrow = list(zip(inputs, (int(y) for y in ys)))

    blob = struct.pack("<I", len(widen))
    blob += b"".join(struct.pack("<BI", p, v) for p, v in widen)
    blob += struct.pack("<I", len(narrow))
    blob += b"".join(struct.pack("<IB", x, y) for x, y in narrow)
    path = OUT / f"mx_{name}.bin.gz"
    path.write_bytes(gzip.compress(blob, mtime=0))
    print(f"{path.name}: {len(widen)} patterns, {len(narrow)} f32 inputs, {path.stat().st_size} bytes")

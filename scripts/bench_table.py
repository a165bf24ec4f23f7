#!/usr/bin/env python3
"""Turn `cargo bench` (criterion) output into the ratio tables of BENCHMARKS.md.

Usage:
    cargo bench -p mixprec-bench-peers --bench gemm    2>&1 | tee /tmp/gemm.txt
    cargo bench -p mixprec-bench-peers --bench convert 2>&1 | tee /tmp/convert.txt
    cargo bench -p mixprec-bench-peers --bench int8    2>&1 | tee /tmp/int8.txt
    python3 scripts/bench_table.py gemm /tmp/gemm.txt
    python3 scripts/bench_table.py convert /tmp/convert.txt
    python3 scripts/bench_table.py int8 /tmp/int8.txt

Criterion's median throughput is used. GEMM throughput is in GFLOP/s
(2·M·N·K per second); conversion throughput in GiB/s of bytes read + written;
the int8 small-batch table in GOP/s (2·M·N·K per second) with the ratio to
our f32 GEMM of the same shape and the share of the read-only memory limit
(one pass over the weight bytes, same run).
"""
import re
import sys


def parse(path):
    res, cur = {}, None
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^([A-Za-z_0-9]+/[A-Za-z_0-9]+(?:/[0-9x]+)?)\s*(time:.*)?$", line.rstrip())
        if m:
            cur = m.group(1)
            continue
        m = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if m and cur:
            v, unit = float(m.group(1)), m.group(2)
            scale = {"Gelem/s": 1.0, "Melem/s": 1e-3, "Kelem/s": 1e-6, "GiB/s": 1.0, "MiB/s": 1 / 1024}
            res[cur] = v * scale.get(unit, 1.0)
            cur = None
    return res


def gemm_table(res):
    peak = res.get("peak/fma_f32_one_core")
    if peak is None:
        print("(no peak measurement in this run: % of peak uses 117.0 GFLOP/s, this machine's)\n")
        peak = 117.0
    else:
        print(f"Measured single-core f32 FMA peak: **{peak:.1f} GFLOP/s**\n")
    shapes = []
    for key in res:
        parts = key.split("/")
        if len(parts) == 3 and parts[2] not in shapes:
            shapes.append(parts[2])
    print("| shape (MxNxK) | ours f32 | % peak | / matrixmultiply | / gemm | / gemmkit | ours f16 (/ours f32) | ours bf16 (/ours f32) | gemm f16 | gemmkit f16 | gemmkit bf16 | 2 threads (x 1 thread) | gemm 2 threads |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        get = lambda name: next((v for k, v in res.items() if k.endswith(f"/{name}/{shape}")), None)
        ours = get("mixprec_f32")
        if ours is None:
            continue
        f = lambda v: "–" if v is None else f"{v:.1f}"
        r = lambda v: "–" if v is None else f"{ours / v:.2f}"
        own = lambda v: "–" if v is None else f"{v:.1f} ({v / ours:.2f})"
        t2 = get("mixprec_f32_2threads")
        print(
            f"| {shape} | {ours:.1f} | {100 * ours / peak:.0f}% | {r(get('matrixmultiply_f32'))} | {r(get('gemm_f32'))} "
            f"| {r(get('gemmkit_f32'))} | {own(get('mixprec_f16'))} | {own(get('mixprec_bf16'))} | {f(get('gemm_f16'))} "
            f"| {f(get('gemmkit_f16'))} | {f(get('gemmkit_bf16'))} | {own(t2) if t2 else '–'} | {f(get('gemm_f32_2threads'))} |"
        )


def convert_table(res):
    sizes = sorted({k.split("/")[-1] for k in res if k.count("/") == 2}, key=int)
    for size in sizes:
        copy = res.get(f"memory_limit/copy_from_slice_f32_bytes/{size}")
        print(f"\n**{int(size):,} elements** (copy_from_slice of the f32 bytes: {copy:.1f} GiB/s)\n")
        print("| conversion | ours GiB/s | / copy | half GiB/s | ours / half |")
        print("|---|---|---|---|---|")
        for key, v in res.items():
            parts = key.split("/")
            if len(parts) != 3 or parts[2] != size or not parts[1].startswith("mixprec") or parts[0] == "memory_limit":
                continue
            name = parts[0] + ("" if parts[1] == "mixprec" else " (" + parts[1].removeprefix("mixprec_") + ")")
            half = res.get(f"{parts[0]}/half/{size}") if parts[1] == "mixprec" else None
            hs = "–" if half is None else f"{half:.1f}"
            hr = "–" if half is None else f"{v / half:.2f}"
            print(f"| {name} | {v:.1f} | {v / copy:.0%} | {hs} | {hr} |")


def int8_table(res):
    limit = res.get("int8_small_batch/read_weight_bytes")
    if limit:
        print(f"Read-only pass over the 16 MiB of int8 weights: {limit:.1f} GiB/s\n")
    shapes = []
    for key in res:
        parts = key.split("/")
        if parts[0] == "int8_small_batch" and len(parts) == 3 and parts[2] not in shapes:
            shapes.append(parts[2])
    print("| shape (MxKxN) | ours f32 | u7×i8 packed (/ f32) | u8×i8 packed (/ f32) | u8×i8 unpacked (/ f32) | u7 packed: % of memory limit |")
    print("|---|---|---|---|---|---|")
    for shape in shapes:
        get = lambda name: res.get(f"int8_small_batch/{name}/{shape}")
        ours = get("mixprec_f32")
        if ours is None:
            continue
        own = lambda v: "–" if v is None else f"{v:.1f} ({v / ours:.2f})"
        u7 = get("mixprec_u7xi8_packed")
        m, k, n = (int(x) for x in shape.split("x"))
        # GOP/s → seconds per call → GiB/s of weight bytes streamed.
        share = "–"
        if u7 and limit:
            secs = 2 * m * k * n / (u7 * 1e9)
            share = f"{(k * n / secs / 2**30) / limit:.0%}"
        print(f"| {shape} | {ours:.1f} | {own(u7)} | {own(get('mixprec_u8xi8_packed'))} | {own(get('mixprec_u8xi8_unpacked'))} | {share} |")
    layer = res.get("int8_small_batch/dynamic_quant_linear/1x4096x4096")
    f32 = res.get("int8_small_batch/mixprec_f32/1x4096x4096")
    if layer and f32:
        print(f"\nDynamicQuantLinear, batch 1, 4096 → 4096: {layer:.1f} GOP/s, {layer / f32:.2f}× our f32 GEMM of the layer.")


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    {"gemm": gemm_table, "convert": convert_table, "int8": int8_table}[kind](parse(path))

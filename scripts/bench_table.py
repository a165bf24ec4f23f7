#!/usr/bin/env python3
"""Turn `cargo bench` (criterion) output into the ratio tables of BENCHMARKS.md.

Usage:
    cargo bench --bench gemm    2>&1 | tee /tmp/gemm.txt
    cargo bench --bench convert 2>&1 | tee /tmp/convert.txt
    python3 scripts/bench_table.py gemm /tmp/gemm.txt
    python3 scripts/bench_table.py convert /tmp/convert.txt

Criterion's median throughput is used. GEMM throughput is in GFLOP/s
(2·M·N·K per second); conversion throughput in GiB/s of bytes read + written.
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


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    (gemm_table if kind == "gemm" else convert_table)(parse(path))

#!/usr/bin/env python3
"""numpy's OpenBLAS sgemm on this machine, one thread, for the ratio of our
f32 GEMM to it (run right after `cargo bench --bench gemm -- gemm_square`,
so both see the same machine state).

Usage:
    python3 -m venv /tmp/blas && /tmp/blas/bin/pip install numpy
    OPENBLAS_NUM_THREADS=1 /tmp/blas/bin/python scripts/openblas_sgemm.py [n ...]

Prints GFLOP/s (2·n³ per second, best of several runs) per size; with
`--ours FILE` (criterion output of the gemm bench) it also prints
ours / OpenBLAS for each size found there.
"""
import os
import re
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402


def best_gflops(n, reps):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # warm up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def ours_from(path):
    res, cur = {}, None
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^gemm_square/mixprec_f32/(\d+)x\d+x\d+", line)
        if m:
            cur = int(m.group(1))
            continue
        m = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) Gelem/s", line)
        if m and cur:
            res[cur] = float(m.group(1))
            cur = None
    return res


def main():
    args = sys.argv[1:]
    ours = {}
    if "--ours" in args:
        i = args.index("--ours")
        ours = ours_from(args[i + 1])
        del args[i : i + 2]
    sizes = [int(x) for x in args] or [512, 1024, 2048]
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    print("| n | OpenBLAS GFLOP/s | ours GFLOP/s | ours / OpenBLAS |")
    print("|---|---|---|---|")
    for n in sizes:
        g = best_gflops(n, 10 if n <= 1024 else 4)
        o = ours.get(n)
        print(f"| {n} | {g:.1f} | {'–' if o is None else f'{o:.1f}'} | {'–' if o is None else f'{o / g:.2f}'} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""numpy's OpenBLAS sgemm on this machine, one thread, for the ratio of our
f32 GEMM to it (run right after `cargo bench -p mixprec-bench-peers --bench gemm -- gemm_square`,
so both see the same machine state).

Usage:
    python3 -m venv /tmp/blas && /tmp/blas/bin/pip install numpy
    OPENBLAS_NUM_THREADS=1 /tmp/blas/bin/python scripts/openblas_sgemm.py [n ...]

Prints GFLOP/s (2·n³ per second, best and median of several runs) per
size; with `--ours FILE` (criterion output of the gemm bench) it also
prints ours / OpenBLAS for each size found there, against the median (as
criterion's figure is a mean estimate) and against the best run.

With `--rounds R` it times both itself, alternating: per size, R rounds of
our GEMM (the `sgemm_rounds` bench target, built here with `cargo bench
--no-run`) and then OpenBLAS, each the best of several calls, so that a
drift of the machine's speed hits both sides alike; it prints each side's
best over all rounds and the ratio per round.
"""
import json
import subprocess
import os
import re
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402


def gflops(n, reps):
    """(best, median) GFLOP/s over `reps` timed calls after a warm-up."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # warm up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t)
    times.sort()
    return 2 * n**3 / times[0] / 1e9, 2 * n**3 / times[len(times) // 2] / 1e9


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


def ours_binary():
    """Builds the `sgemm_rounds` bench target and returns its path."""
    out = subprocess.run(
        [
            "cargo", "bench", "-p", "mixprec-bench-peers", "--bench", "sgemm_rounds",
            "--no-run", "--message-format=json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "sgemm_rounds":
            if msg.get("executable"):
                return msg["executable"]
    sys.exit("sgemm_rounds was not built")


def rounds(sizes, count):
    binary = ours_binary()
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, {count} rounds")
    print("| n | ours GFLOP/s best | OpenBLAS GFLOP/s best | ours / OpenBLAS (best of all rounds) | per round |")
    print("|---|---|---|---|---|")
    for n in sizes:
        reps = 10 if n <= 1024 else 4
        per_round, ours_best, blas_best = [], 0.0, 0.0
        for _ in range(count):
            line = subprocess.run([binary, str(n), str(reps)], check=True, capture_output=True, text=True).stdout
            ours = 2 * n**3 / float(line.split()[0]) / 1e9
            blas, _ = gflops(n, reps)
            per_round.append(ours / blas)
            ours_best, blas_best = max(ours_best, ours), max(blas_best, blas)
        rs = " ".join(f"{r:.2f}" for r in per_round)
        print(f"| {n} | {ours_best:.1f} | {blas_best:.1f} | {ours_best / blas_best:.2f} | {rs} |")


def main():
    args = sys.argv[1:]
    if "--rounds" in args:
        i = args.index("--rounds")
        count = int(args[i + 1])
        del args[i : i + 2]
        return rounds([int(x) for x in args] or [512, 1024, 2048], count)
    ours = {}
    if "--ours" in args:
        i = args.index("--ours")
        ours = ours_from(args[i + 1])
        del args[i : i + 2]
    sizes = [int(x) for x in args] or [512, 1024, 2048]
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    # Criterion's figure is a mean estimate: compare it with OpenBLAS's
    # median (like with like); the best run is printed beside it.
    print("| n | OpenBLAS GFLOP/s best / median | ours GFLOP/s (criterion) | ours / OpenBLAS median | ours / OpenBLAS best |")
    print("|---|---|---|---|---|")
    for n in sizes:
        best, median = gflops(n, 10 if n <= 1024 else 5)
        o = ours.get(n)
        dash = "–"
        print(
            f"| {n} | {best:.1f} / {median:.1f} | {dash if o is None else f'{o:.1f}'} "
            f"| {dash if o is None else f'{o / median:.2f}'} | {dash if o is None else f'{o / best:.2f}'} |"
        )


if __name__ == "__main__":
    main()

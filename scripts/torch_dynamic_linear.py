#!/usr/bin/env python3
"""PyTorch's dynamically quantized Linear (fbgemm) at n = 1024, single thread,
for the side-by-side figure in BENCHMARKS.md (`cargo bench -p mixprec-bench-peers --bench int8`,
group dynamic_quant_linear).

Installs torch into a virtual environment (.venv-torch) on first use:

    python3 scripts/torch_dynamic_linear.py

Prints multiply-adds per second (n^3 per forward pass) for the quantized
layer and for the f32 nn.Linear, median of repeated runs.
"""
import os
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, "..", ".venv-torch")


def ensure_torch():
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        venv.create(VENV, with_pip=True)
        subprocess.check_call([py, "-m", "pip", "install", "--quiet", "torch", "numpy"])
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


def main():
    ensure_torch()
    import time
    import torch

    torch.set_num_threads(1)
    n = 1024
    torch.manual_seed(0)
    lin = torch.nn.Linear(n, n, bias=False)
    qlin = torch.ao.quantization.quantize_dynamic(lin, {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(n, n)
    print("backend:", torch.backends.quantized.engine)
    for name, model in [("dynamic_quant_linear (fbgemm)", qlin), ("f32 nn.Linear", lin)]:
        with torch.no_grad():
            for _ in range(3):
                model(x)
            times = []
            for _ in range(15):
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
        times.sort()
        med = times[len(times) // 2]
        print(f"{name}: {n**3 / med / 1e9:.1f} G multiply-adds/s ({2 * n**3 / med / 1e9:.1f} G ops/s)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Runs SCALE-Sim 3.0.0 (PyPI `scalesim`, needs numpy<2) on GEMM shapes and
prints its COMPUTE_REPORT rows, for tests/scalesim.rs.

    python3 scripts/scalesim_check.py ws 16 16 1x64x64 33x100x17 ...

Shapes are MxKxN. The configuration gives SCALE-Sim large SRAMs and a high
interface bandwidth, so no memory stalls enter its cycle counts (the
analytical model's compatible mode is the stall-free compute schedule).
Output: one CSV line per shape: M,K,N,total_cycles,stall_cycles,overall_util,mapping_eff,compute_util
"""
import contextlib
import csv
import io
import os
import sys
import tempfile

CFG = """[general]
run_name = mixprec

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:    65536
FilterSramSzkB:   65536
OfmapSramSzkB:    65536
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 100000
Dataflow : {dataflow}
MemoryBanks:   1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: USER
UseRamulatorTrace: False
"""


def main():
    from scalesim.scale_sim import scalesim

    dataflow, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    shapes = [tuple(int(x) for x in s.split("x")) for s in sys.argv[4:]]
    work = tempfile.mkdtemp(prefix="scalesim-")
    cfg = os.path.join(work, "arch.cfg")
    with open(cfg, "w") as f:
        f.write(CFG.format(rows=rows, cols=cols, dataflow=dataflow))
    topo = os.path.join(work, "gemm.csv")
    with open(topo, "w") as f:
        f.write("Layer, M, N, K,\n")  # SCALE-Sim's GEMM input: name, M, N, K
        for i, (m, k, n) in enumerate(shapes):
            f.write(f"layer{i}, {m}, {n}, {k},\n")
    layout = os.path.join(work, "layout.csv")
    with open(layout, "w") as f:
        f.write("Layer,\n")
    with contextlib.redirect_stdout(io.StringIO()):
        sim = scalesim(save_disk_space=True, verbose=False, config=cfg, topology=topo,
                       layout=layout, input_type_gemm=True)
        sim.run_scale(top_path=work)
    with open(os.path.join(work, "mixprec", "COMPUTE_REPORT.csv")) as f:
        rows_out = list(csv.reader(f))[1:]
    for (m, k, n), row in zip(shapes, rows_out):
        vals = [x.strip() for x in row]
        # LayerID, Total Cycles (incl. prefetch), Total Cycles, Stall Cycles, Overall Util %, Mapping Eff %, Compute Util %
        print(f"{m},{k},{n},{vals[2]},{vals[3]},{vals[4]},{vals[5]},{vals[6]}")


if __name__ == "__main__":
    main()

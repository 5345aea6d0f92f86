"""Registers, stack (spills), shared memory and MMA instructions of the linear GEMM with the requantizing epilogue
(``lowbit.kernels.intonly_gemm._linear_rq_kernel``) for sm_90 (H100), without a GPU: benchmarks/kernel_regs.py's
method (``triton.compile`` for a ``GPUTarget``, then the ``cuobjdump`` Triton ships) at BERT-base's shapes.

    PYTHONPATH=src .venv/bin/python benchmarks/gemm_regs.py            # the tiles of intonly_gemm.TILES
    PYTHONPATH=src .venv/bin/python benchmarks/gemm_regs.py --sweep    # every option intonly_gpu.py --sweep times

Each tile is compiled for the three epilogues the graph launches: Q/K/V (one term, int8 out), FC1 (one term, 16-bit
codes in int32) and O / FC2 (the residual sum, 16-bit). Integer arguments and pointers are marked divisible by 16,
as the JIT specializes them at BERT's shapes (M = batch x tokens, N and K multiples of 768): without that the int8
tile loads are not vectorized, every element keeps its own 64-bit address, and any tile reads 255 registers.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget

from lowbit.kernels import intonly_gemm as G

# (label, output pointer, LO, HI, TWO): the epilogues of the graph (bits 8 -> int8 out, 16 -> int32 out)
EPILOGUES = (("qkv: 1 term, int8", "*i8", 8, False), ("fc1: 1 term, 16-bit", "*i32", 16, False),
             ("o/fc2: residual, 16-bit", "*i32", 16, True))


def compile_sm90(bm: int, bn: int, bk: int, warps: int, stages: int, out_ptr: str, bits: int, two: bool) -> dict:
    fn = G._linear_rq_kernel
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    consts = dict(LO=lo, HI=hi, LO1=2 * lo, HI1=2 * hi + 1, HAS_BIAS=False, HAS_LIN_BIAS=True, TWO=two, BLOCK_M=bm,
                  BLOCK_N=bn, BLOCK_K=bk)
    ptrs = dict(x_ptr="*i8", w_ptr="*i8", z2_ptr="*i32", out_ptr=out_ptr)
    sig, cx, attrs = {}, {}, {}
    for i, (n, p) in enumerate(zip(fn.arg_names, fn.params)):
        if p.is_constexpr:
            sig[n], cx[(i,)] = "constexpr", consts[n]
        else:  # the other pointers are the int64 per-channel vectors; every integer is M, N, K or a row stride
            sig[n] = ptrs.get(n, "*i64" if n.endswith("_ptr") else "i32")
            attrs[(i,)] = [["tt.divisibility", 16]]
    ck = triton.compile(triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=cx, attrs=attrs),
                        target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    usage = dict(re.findall(r"(REG|STACK):(\d+)", res))
    return {"registers": int(usage["REG"]), "stack": int(usage["STACK"]), "shared": ck.metadata.shared,
            "mma": sorted(set(re.findall(r"\b(\w*MMA\.[\w.]+)", sass)))}


def configs(sweep: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(family, (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)) of intonly_gemm.TILES, or every --sweep option."""
    if not sweep:
        return list(G.TILES.items())
    spec = importlib.util.spec_from_file_location("intonly_gpu", Path(__file__).with_name("intonly_gpu.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return [(fam, opt) for fam, opts in bench.GEMM_SWEEP.items() for opt in opts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", action="store_true", help="every tile benchmarks/intonly_gpu.py --sweep times")
    a = ap.parse_args()
    for fam, (bm, bn, bk, warps, stages) in configs(a.sweep):
        for label, out_ptr, bits, two in EPILOGUES:
            r = compile_sm90(bm, bn, bk, warps, stages, out_ptr, bits, two)
            print(f"{fam:14s} {bm}x{bn}x{bk} warps {warps} stages {stages}  {label:24s} registers {r['registers']:3d}"
                  f"  stack {r['stack']:4d} B  shared {r['shared'] // 1024:3d} KiB  {','.join(r['mma'])}", flush=True)


if __name__ == "__main__":
    main()

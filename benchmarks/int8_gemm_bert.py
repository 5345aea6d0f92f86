"""Device script (issue 7): the integer graph's linears alone at BERT-base's shapes, against FP16 cuBLAS and
cuBLASLt int8 (``torch._int_mm``, INT32 out, no requantization), so that the forward's linear time can be split into
what the int8 main loop costs and what the requantizing epilogue adds.

    PYTHONPATH=src python3 benchmarks/int8_gemm_bert.py [--rows 4096,12288] [--tiles] [--persist 2,tma,tma+2]

Per BERT-base linear (Q/K/V fused 2304 x 768 with int8 out, O 768 x 768 and FC2 768 x 3072 with the residual term,
FC1 3072 x 768 with 16-bit out) at M = batch x tokens rows: µs per call (CUDA-graph replay, medians, operands
rotated past L2) and TOP/s. ``--tiles`` also times every linear_rq tile option of intonly_gpu.py's sweep;
``--persist`` launch variants (intonly_gpu.parse_launch: programs per SM, intonly_gemm.PERSIST; "ws" warp
specialization; "tma" the operands through tensor descriptors, intonly_gemm.TMA) with each linear's default tile,
each checked equal to the default launch's codes first.
Realistic multipliers: per-channel dyadics b in [2^30, 2^31), c in 38..46 (what calibrated BERT layers give).
"""
from __future__ import annotations

import argparse

import torch

from lowbit.bench.timing import time_calls
from lowbit.intonly.dyadic import Dyadic
from lowbit.kernels import intonly_gemm as G

from intonly_gpu import GEMM_SWEEP, parse_launch  # this folder: the forward's sweep options, the variant syntax

# (name, N, K, output bits, residual term)
LINEARS = (("qkv", 2304, 768, 8, False), ("o", 768, 768, 16, True), ("fc1", 3072, 768, 16, False),
           ("fc2", 768, 3072, 16, True))
COPIES = 4


def _dyadic(n: int, gen: torch.Generator) -> Dyadic:
    b = torch.randint(1 << 30, 1 << 31, (n,), generator=gen)
    c = torch.randint(38, 47, (n,), generator=gen)
    return Dyadic(b, c)


def calls(rows: int, n: int, k: int, bits: int, two: bool, gen: torch.Generator, dev: str = "cuda") -> dict:
    """Zero-argument callables per method, COPIES operand sets round-robin."""
    xs = [torch.randint(-128, 128, (rows, k), generator=gen).to(torch.int8).to(dev) for _ in range(COPIES)]
    ws = [torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8).to(dev) for _ in range(COPIES)]
    lin_b = torch.randint(-(1 << 20), 1 << 20, (n,), generator=gen).to(torch.int32).to(dev)
    m = _dyadic(n, gen).to(dev)
    term2 = None
    if two:
        z2 = torch.randint(-(1 << 15), 1 << 15, (rows, n), generator=gen).to(torch.int32).to(dev)
        term2 = (z2, _dyadic(n, gen).to(dev))
    xf = [x.half() for x in xs]
    wf = [w.half() for w in ws]
    wt = [w.t() for w in ws]
    return {"fp16 cuBLAS": [lambda x=x, w=w: torch.nn.functional.linear(x, w) for x, w in zip(xf, wf)],
            "_int_mm (int32 out)": [lambda x=x, w=w: torch._int_mm(x, w) for x, w in zip(xs, wt)],
            "linear_rq": [lambda x=x, w=w: G.linear_rq(x, w, lin_b, m, bits, None, term2) for x, w in zip(xs, ws)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="4096,12288", help="M values (BERT-base 32 x 128 = 4096, 32 x 384 = 12288)")
    p.add_argument("--tiles", action="store_true", help="also every linear_rq tile option of the sweep")
    p.add_argument("--persist", default="", help="comma list of launch variants, '+'-joined parts: programs per SM "
                                                 "(persistent), 'ws' (warp specialization), 'tma' (descriptor loads); "
                                                 "e.g. 2,tma,tma+2")
    a = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    for rows in (int(r) for r in a.rows.split(",")):
        total: dict[str, float] = {}
        for name, n, k, bits, two in LINEARS:
            ops = 2 * rows * n * k
            for method, fns in calls(rows, n, k, bits, two, gen).items():
                us = time_calls(fns, calls_per_replay=16, replays=10)[0]
                total[method] = total.get(method, 0.0) + us
                print(f"M={rows:6d} {name:4s} N={n:5d} K={k:5d}  {method:22s} {us:8.1f} µs  {ops / us / 1e6:7.1f} TOP/s",
                      flush=True)
            for opt in filter(None, a.persist.split(",")):
                fam = G._family(rows, n)
                fns = calls(rows, n, k, bits, two, torch.Generator().manual_seed(1))["linear_rq"]
                want = fns[0]()
                G.PERSIST[fam], G.TMA[fam], G.WARP_SPECIALIZE = parse_launch(opt)
                try:
                    got = fns[0]()
                    same = torch.equal(got, want)
                    us = time_calls(fns, calls_per_replay=16, replays=10)[0] if same else float("nan")
                    print(f"M={rows:6d} {name:4s}   linear_rq persist {opt:4s} equal={same}  {us:8.1f} µs  "
                          f"{ops / us / 1e6:7.1f} TOP/s", flush=True)
                except Exception as e:  # noqa: BLE001 - a variant that does not compile on this Triton: say so
                    print(f"M={rows:6d} {name:4s}   linear_rq persist {opt}: {type(e).__name__}: {str(e)[:300]}")
                finally:
                    G.PERSIST.pop(fam, None)
                    G.TMA.pop(fam, None)
                    G.WARP_SPECIALIZE = False
            if a.tiles:
                fam = G._family(rows, n)
                default = G.TILES[fam]
                for tile in GEMM_SWEEP.get(fam, ()):
                    G.TILES[fam] = tile
                    fns = calls(rows, n, k, bits, two, gen)["linear_rq"]
                    us = time_calls(fns, calls_per_replay=16, replays=10)[0]
                    print(f"M={rows:6d} {name:4s}   linear_rq tile {tile}  {us:8.1f} µs  {ops / us / 1e6:7.1f} TOP/s",
                          flush=True)
                G.TILES[fam] = default
        print(f"M={rows:6d} one layer's four linears: " + ", ".join(f"{k_} {v:.1f} µs" for k_, v in total.items()),
              flush=True)


if __name__ == "__main__":
    main()

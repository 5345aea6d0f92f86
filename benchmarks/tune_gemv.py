"""H100: correctness at real sizes and a config sweep of the decode GEMV (kernels/gemv.py), then whole-layer
QuantLinear timings (dispatch: act-quant + GEMV / dequant + cuBLAS) against bf16 cuBLAS in the same process.
Usage (device): PYTHONPATH=src python3 benchmarks/tune_gemv.py"""
import copy
import itertools
import time

import torch

import lowbit.kernels
from lowbit.bench.timing import copies_for, time_calls
from lowbit.kernels import _tl, gemv
from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import get_scheme

torch.manual_seed(0)
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]
KIND = {"w4a16": _tl.INT4, "w4a16-fp4": _tl.FP4}


def layer(preset, n, k):
    s = get_scheme(preset)
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    return QuantLinear.from_float(lin, s.weights, s.activations)


t0 = time.time()
# 1. correctness at real sizes, poisoned outputs
for preset, (n, k), m in itertools.product(["w4a16", "w4a16-fp4", "w4a8-int", "w4a8-fp"], SHAPES[:2], [1, 3, 16]):
    q = layer(preset, n, k)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ref = q.reference_forward(x).float()
    if q.act_spec is None:
        out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
        y = gemv.gemv_w4(x, None, _tl.A16, q.qweight, q.scale, None, None, KIND[preset], 128, n, k, torch.bfloat16,
                         out=out).float()
    else:
        y = lowbit.kernels.quant_linear_forward(q, x).float()
    err = ((y - ref).norm() / ref.norm()).item()
    print(f"check {preset} M={m} N={n} K={k}: rel err {err:.2e} nan={torch.isnan(y).any().item()}", flush=True)
    assert err < 8e-3 and not torch.isnan(y).any()
print(f"correctness ok ({time.time() - t0:.0f}s)", flush=True)

# 2. sweep (BN, GPS, warps, stages) at M = 1 for int4 weight-only
best = {}
for n, k in SHAPES:
    q = layer("w4a16", n, k)
    qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(n * k // 2) - 1)]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
    base = time_calls([lambda w=w: x @ w.t() for w in ws])[0]
    res = []
    for cfg in itertools.product([4, 8, 16, 32], [1, 2, 4], [1, 2, 4], [2, 4]):
        calls = [lambda c=c, cfg=cfg: gemv.gemv_w4(x, None, _tl.A16, c.qweight, c.scale, None, None, _tl.INT4, 128,
                                                    n, k, torch.bfloat16, config=cfg) for c in qs]
        try:
            res.append((time_calls(calls, replays=10)[0], cfg))
        except Exception as e:  # noqa: BLE001
            print("fail", cfg, str(e)[:200], flush=True)
    res.sort()
    best[(n, k)] = res[0][1]
    gb = n * k * (0.5 + 2 / 128) / 1e3
    print(f"sweep N={n} K={k}: bf16 {base:.1f} us; " + "; ".join(
        f"{us:.1f} us ({base / us:.2f}x, {gb / us:.0f} GB/s) cfg={c}" for us, c in res[:5]), flush=True)
print(f"sweep done ({time.time() - t0:.0f}s)", flush=True)

# 3. whole QuantLinear forward through dispatch with the best config per shape, vs bf16, same process
gemv.gemv_config = lambda n, k: best.get((n, k), (8, 2, 2, 3))
print("| preset | N x K | " + " | ".join(f"M={m}" for m in (1, 4, 16, 64, 2048)) + " |")
for (n, k), preset in itertools.product(SHAPES, ["bf16", "w4a16", "w4a16-fp4", "w4a8-int", "w4a8-fp"]):
    cells = []
    for m in (1, 4, 16, 64, 2048):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        if preset == "bf16":
            ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
            us = time_calls([lambda w=w: x @ w.t() for w in ws])[0]
            base_us = us
        else:
            q = layer(preset, n, k)
            qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(n * k // 2) - 1)]
            for c in qs:
                lowbit.kernels.prepare(c)
            us = time_calls([lambda c=c: c(x) for c in qs])[0]
        cells.append(f"{us:.1f}")
    print(f"| {preset} | {n}x{k} | " + " | ".join(cells) + " |", flush=True)
print(f"best configs: {best}")
print(f"total {time.time() - t0:.0f}s")

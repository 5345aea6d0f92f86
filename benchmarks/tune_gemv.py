"""H100: the decode GEMV (kernels/gemv.py) — correctness at real sizes, a config sweep per shape and token count,
then whole QuantLinear forwards (dispatch) against bf16 cuBLAS in the same process.

Usage (device): PYTHONPATH=src python3 benchmarks/tune_gemv.py [--quick] [--json OUT.json]
Prints one line per measurement; the best configs go to --json (paste into gemv.gemv_config)."""
import argparse
import copy
import itertools
import json
import time

import torch

import lowbit.kernels
from lowbit.bench.timing import copies_for, time_calls
from lowbit.kernels import _tl, gemv
from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import QuantSpec, get_scheme

ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--json", default=None)
ap.add_argument("--no-check", action="store_true", help="skip the correctness pass")
ap.add_argument("--final", action="store_true", help="time only the two configs gemv_config uses")
ap.add_argument("--ms", default="1,2,4,8,16", help="token counts to sweep")
args = ap.parse_args()

torch.manual_seed(0)
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (3072, 768), (768, 3072), (4096, 1024)]
WKIND = {"int4": _tl.INT4, "fp4_e2m1": _tl.FP4}


def layer(preset, n, k):
    s = get_scheme(preset)
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    return QuantLinear.from_float(lin, s.weights, s.activations)


def rel(y, ref):
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


t0 = time.time()
# 1. correctness at real sizes: poisoned outputs, every weight kind, fused activation quantization, split-K
cnt = torch.zeros(4096, dtype=torch.int32, device="cuda")
for preset, (n, k), m, cfg in itertools.product(["w4a16", "w4a16-fp4", "w4a8-int", "w4a8-fp", "uint4"],
                                                SHAPES[:3], [1, 3, 16], [(8, 32, 4, 3, 1), (16, 64, 4, 3, 4)]):
    if args.no_check:
        break
    if preset == "uint4":
        lin = torch.nn.Linear(k, n, bias=True, device="cuda", dtype=torch.bfloat16)
        q = QuantLinear.from_float(lin, QuantSpec("int4", "group", 128, symmetric=False), None)
        wk = _tl.UINT4
    else:
        q = layer(preset, n, k)
        wk = WKIND[q.weight_spec.format]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ref = q.reference_forward(x).float()
    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    aq = {None: 0, "int8": _tl.INT8, "fp8_e4m3": _tl.FP8}[q.act_spec.format if q.act_spec else None]
    y = gemv.gemv_w4(x, None, _tl.A16, q.qweight, q.scale, q.zero, q.bias, wk, 128, n, k, torch.bfloat16,
                     config=cfg, out=out, counters=cnt, quantize=aq)
    err = rel(y, ref)
    print(f"check {preset} M={m} N={n} K={k} cfg={cfg}: rel err {err:.2e} nan={torch.isnan(y).any().item()} "
          f"counters_zero={not cnt.any().item()}", flush=True)
    assert err < 1e-2 and not torch.isnan(y).any() and not cnt.any()
torch.cuda.synchronize()
print(f"correctness ok ({time.time() - t0:.0f}s)", flush=True)

# 2. sweep (BN, BK8, warps, stages, split) per shape and M for int4 weight-only
grid = list(itertools.product([2, 4, 8, 16], [64, 128, 256, 512], [4, 8], [1, 2], [1, 2, 4]))
if args.final:
    grid = [(8, 128, 4, 2, 1), (2, 512, 4, 1, 4)]  # the measured winners (a (BN, BK8, 8)-tile variant lost; removed)
if args.quick:
    grid = list(itertools.product([8, 16], [32, 64], [4], [3], [1, 2, 4]))
best = {}
for (n, k), m in itertools.product(SHAPES, [int(v) for v in args.ms.split(",")]):
    if m > 1 and (n, k) not in SHAPES[:3]:
        continue
    q = layer("w4a16", n, k)
    qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(n * k // 2) - 1)]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
    base = time_calls([lambda w=w: x @ w.t() for w in ws])[0]
    tc = time_calls([lambda c=c: c(x) for c in qs])[0] if m > 1 else float("nan")  # qgemm split-K path
    res = []
    g = grid if m == 1 else [c for c in grid if c[0] in (4, 8) and c[1] in (64, 128)]
    for cfg in g:
        if cfg[0] * cfg[1] * m > 8192 or cfg[1] > 2 * k // 8:  # accumulator tile too large for registers
            continue
        calls = [lambda c=c, cfg=cfg: gemv.gemv_w4(x, None, _tl.A16, c.qweight, c.scale, None, None, _tl.INT4, 128,
                                                    n, k, torch.bfloat16, config=cfg, counters=cnt) for c in qs]
        try:
            res.append((time_calls(calls, replays=10)[0], cfg))
        except Exception as e:  # noqa: BLE001
            print("fail", cfg, str(e)[:200], flush=True)
    res.sort()
    best[f"{n}x{k}xM{m}"] = res[0][1]
    gb = n * k * (0.5 + 2 / 128) / 1e3
    print(f"sweep M={m} N={n} K={k}: bf16 {base:.1f} us; tensor-core qgemm {tc:.1f} us; " + "; ".join(
        f"{us:.1f} us ({base / us:.2f}x, {gb / us:.0f} GB/s) cfg={c}" for us, c in res[:4]), flush=True)
print(f"sweep done ({time.time() - t0:.0f}s)", flush=True)
print("best configs: " + json.dumps(best), flush=True)
if args.json:
    with open(args.json, "w") as f:
        json.dump(best, f, indent=1)

# 3. whole QuantLinear forward through dispatch (M = 1: GEMV with the best config; fused act quant for W4A8)
gemv.gemv_config = lambda n, k: tuple(best.get(f"{n}x{k}xM1", (8, 128, 4, 2, 1)))
lowbit.kernels.enable()
print("| preset | N x K | M=1 | M=16 |")
for (n, k), preset in itertools.product(SHAPES, ["bf16", "w4a16", "w4a16-fp4", "w4a8-int", "w4a8-fp"]):
    cells = []
    for m in (1, 16):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        if preset == "bf16":
            ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
            us = time_calls([lambda w=w: x @ w.t() for w in ws])[0]
        else:
            q = layer(preset, n, k)
            qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(n * k // 2) - 1)]
            for c in qs:
                lowbit.kernels.prepare(c)
            us = time_calls([lambda c=c: c(x) for c in qs])[0]
        cells.append(f"{us:.1f}")
    print(f"| {preset} | {n}x{k} | " + " | ".join(cells) + " |", flush=True)
print(f"total {time.time() - t0:.0f}s")

"""H100: the permuted-layout M = 1 GEMV (gemv.gemv_w4_perm) against the stored-layout GEMV and bf16 cuBLAS, same
process: correctness at real sizes (poisoned outputs), then a config sweep per shape.
Usage (device): PYTHONPATH=src python3 benchmarks/tune_gemv_perm.py [--deep]
--deep: no checks, the three 4096-class shapes only, and deeper software pipelines (stages 2-5: the whole K loop's
loads in flight at K = 4096) instead of the wide grid."""
import copy
import itertools
import sys
import time

import torch

from lowbit.bench.timing import copies_for, time_calls
from lowbit.kernels import _tl, gemv
from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import QuantSpec, get_scheme

torch.manual_seed(0)
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (3072, 768), (768, 3072), (4096, 1024)]
t0 = time.time()
cnt = torch.zeros(8192, dtype=torch.int32, device="cuda")
DEEP = "--deep" in sys.argv
for name, (n, k) in itertools.product(["w4a16", "w4a16-fp4", "w4a8-int", "w4a8-fp", "uint4"],
                                      [] if DEEP else SHAPES[:3]):
    lin = torch.nn.Linear(k, n, bias=True, device="cuda", dtype=torch.bfloat16)
    if name == "uint4":
        q, wk = QuantLinear.from_float(lin, QuantSpec("int4", "group", 128, symmetric=False), None), _tl.UINT4
    else:
        s = get_scheme(name)
        q = QuantLinear.from_float(lin, s.weights, s.activations)
        wk = {"int4": _tl.INT4, "fp4_e2m1": _tl.FP4}[q.weight_spec.format]
    aq = {None: 0, "int8": _tl.INT8, "fp8_e4m3": _tl.FP8}[q.act_spec.format if q.act_spec else None]
    wp, sp, zp = gemv.permute_w4(q.qweight, q.scale, q.zero, 128)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ref = q.reference_forward(x).float()
    for cfg in [(8, 4, 2, 1), (16, 4, 2, 4)]:
        out = torch.full((1, n), float("nan"), device="cuda", dtype=torch.bfloat16)
        y = gemv.gemv_w4_perm(x, wp, sp, zp, q.bias, wk, 128, n, k, torch.bfloat16, counters=cnt, quantize=aq,
                              config=cfg, out=out).float()
        err = ((y - ref).norm() / ref.norm()).item()
        ok = err < 1e-2 and not torch.isnan(y).any().item() and not cnt.any().item()
        print(f"check {name} {n}x{k} cfg={cfg}: rel err {err:.2e} {'ok' if ok else 'FAIL'}", flush=True)
print(f"checks done ({time.time() - t0:.0f}s)", flush=True)
grid = list(itertools.product([4, 8, 16, 32], [2, 4, 8], [1, 2], [1, 2, 4]))
if DEEP:
    grid = list(itertools.product([8, 16, 32], [4, 8], [2, 3, 4, 5], [1, 2]))
for n, k in SHAPES[:3] if DEEP else SHAPES:
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    q = QuantLinear.from_float(lin, QuantSpec("int4", "group", 128), None)
    c = copies_for(n * k // 2)
    qs = [q] + [copy.deepcopy(q) for _ in range(c - 1)]
    ps = [gemv.permute_w4(m.qweight, m.scale, None, 128) for m in qs]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
    base = time_calls([lambda w=w: x @ w.t() for w in ws])[0]
    old = time_calls([lambda m=m: gemv.gemv_w4(x, None, _tl.A16, m.qweight, m.scale, None, None, _tl.INT4, 128, n, k,
                                               torch.bfloat16, counters=cnt) for m in qs])[0]
    res = []
    for cfg in grid:
        calls = [lambda p=p, cfg=cfg: gemv.gemv_w4_perm(x, p[0], p[1], None, None, _tl.INT4, 128, n, k, torch.bfloat16,
                                                         counters=cnt, config=cfg) for p in ps]
        try:
            res.append((time_calls(calls, replays=10)[0], cfg))
        except Exception as e:  # noqa: BLE001
            print("fail", cfg, str(e)[:150], flush=True)
    res.sort()
    gb = n * k * (0.5 + 2 / 128) / 1e3
    print(f"perm N={n} K={k}: bf16 {base:.1f} us; stored-layout GEMV {old:.1f} us ({base / old:.2f}x); permuted: " +
          "; ".join(f"{us:.1f} us ({base / us:.2f}x, {gb / us:.0f} GB/s) cfg={cf}" for us, cf in res[:3]), flush=True)
print(f"total {time.time() - t0:.0f}s")

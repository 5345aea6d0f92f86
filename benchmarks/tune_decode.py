"""Sweep decode (M <= 16) tile configs of the packed-weight GEMM on the GPU; prints µs per config.
Usage (device): PYTHONPATH=src python3 benchmarks/tune_decode.py"""
import itertools

import torch

import lowbit.kernels
from lowbit.bench.timing import copies_for, time_calls
from lowbit.kernels.qgemm import Config, qgemm
from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import get_scheme

for preset, (n, k), m in itertools.product(["w4a16", "w4a8-int"], [(4096, 4096), (11008, 4096)], [1, 16]):
    s = get_scheme(preset)
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    q = QuantLinear.from_float(lin, s.weights, s.activations)
    lowbit.kernels.prepare(q)
    p = q.__dict__["_lb_plan"]
    copies = copies_for(n * k // 2)
    qs = [q] + [__import__("copy").deepcopy(q) for _ in range(copies - 1)]
    for c in qs[1:]:
        lowbit.kernels.prepare(c)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    a, sa = (x, None) if p.a_fmt is None else lowbit.kernels.quantize_act(x, p.a_fmt)
    base = time_calls([lambda w=torch.randn(n, k, device="cuda", dtype=torch.bfloat16): x @ w.t()
                       for _ in range(max(2, copies // 4))])[0]
    res = []
    for bn, split, stages, warps in itertools.product([16, 32, 64], [1, 2, 4, 8], [3, 5], [2, 4]):
        cfg = Config(16, bn, 128, split, 1, warps, stages)
        calls = [lambda c=c: qgemm(a, sa, c.qweight, c._lb_sw, c._lb_aux, None, c._lb_cnt, p.a_kind, p.w_kind,
                                   p.mode, p.group, n, k, torch.bfloat16, config=cfg) for c in qs]
        try:
            res.append((time_calls(calls, replays=10)[0], cfg))
        except Exception as e:  # noqa: BLE001
            print("fail", cfg, e)
    res.sort(key=lambda r: r[0])
    print(f"{preset} M={m} N={n} K={k} bf16 {base:.1f} us; best: " +
          "; ".join(f"{us:.1f} bn={c.bn} split={c.split_k} st={c.num_stages} w={c.num_warps}" for us, c in res[:4]),
          flush=True)

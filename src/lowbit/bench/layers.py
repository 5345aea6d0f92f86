"""Per-layer benchmark: bf16 cuBLAS, cuBLAS FP8 / INT8, lowbit's kernels and the peers, side by side.

Every method is built for one (M, N, K) = (tokens, out_features, in_features) with its own rotating copies of
weights and inputs (more bytes than 2x L2), captured in one CUDA graph, and timed by replay medians.
`run_layers` returns rows; `to_markdown` / `to_csv` write them.
"""
from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass, field
from typing import Callable

import torch

from lowbit.bench.timing import copies_for, time_calls

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (3072, 768), (768, 3072), (4096, 1024)]
TOKENS = [1, 16, 64, 512, 2048, 8192]
OURS = ["w8a8-int8", "w8a8-fp8", "w4a16", "w4a16-fp4", "w4a8-int", "w4a8-fp", "w4a4-int", "w4a4-fp4"]
BASELINES = ["bf16", "cublas-fp8", "cublas-int8"]
PEERS = ["torchao-fp8-row", "torchao-int8-wo", "torchao-int8-dyn", "bnb-nf4", "bnb-int8", "gemlite-a16w4",
         "gemlite-a8w8-fp8", "gemlite-a8w8-int8", "gemlite-a8w4"]
# Measured H100 ceilings (shared/GPU.md): HBM copy, cuBLAS bf16 at 4096^3, cuBLASLt fp8, cuBLAS int8 at 8192^3.
PEAK = {"hbm": 3.0e12, "bf16": 735e12, "fp8": 1270e12, "int8": 922e12}


@dataclass
class Row:
    method: str
    m: int
    n: int
    k: int
    us: float | None
    graph: bool = True
    note: str = ""
    extra: dict = field(default_factory=dict)

    def tflops(self) -> float | None:
        return None if not self.us else 2 * self.m * self.n * self.k / self.us / 1e6


def method_bytes_and_peak(method: str, m: int, n: int, k: int) -> tuple[float, float]:
    """(fewest bytes moved, MMA peak) of a method: activations read once (bf16 in, codes if quantized
    outside the timed region), weights at their stored width plus group scales, bf16 output written once."""
    wbits = 16.0
    peak = PEAK["bf16"]
    if "w8" in method or method in ("cublas-fp8", "cublas-int8") or "a8w8" in method or "int8" in method:
        wbits = 8.0
    if "w4" in method or "nf4" in method or "a8w4" in method or "a16w4" in method:
        wbits = 4.0 + 16 / 128  # bf16 group scale per 128
    if "fp8" in method or "w4a8-fp" in method or "w4a4-fp4" in method:
        peak = PEAK["fp8"]
    elif ("int8" in method or "w4a8-int" in method or "w4a4-int" in method) and "wo" not in method:
        peak = PEAK["int8"]
    return 2 * m * k + wbits / 8 * n * k + 2 * m * n, peak


def roofline_us(method: str, m: int, n: int, k: int) -> float:
    nbytes, peak = method_bytes_and_peak(method, m, n, k)
    return max(nbytes / PEAK["hbm"], 2 * m * n * k / peak) * 1e6


# --- builders: each returns a list of zero-argument callables (one per rotating copy) ---------------------------
# Random data comes from a private generator per device, never torch's default CUDA generator: a peer whose CUDA-graph
# capture fails leaves the default generator in capture mode, and every later torch.randn on it raises ("Offset
# increment outside graph capture"; this failed all rows after bitsandbytes int8 on the H100, 2026-11-23).
_GENERATORS: dict[str, torch.Generator] = {}


def _gen(dev) -> torch.Generator:
    key = str(torch.device(dev))
    if key not in _GENERATORS:
        _GENERATORS[key] = torch.Generator(device=key).manual_seed(0)
    return _GENERATORS[key]


def _randn(*shape, device, dtype=torch.float32):
    return torch.randn(*shape, device=device, dtype=dtype, generator=_gen(device))


def _rand(*shape, device):
    return torch.rand(*shape, device=device, generator=_gen(device))


def _linear(n, k, dev, dtype=torch.bfloat16):
    # skip_init: nn.Linear's own initialisation draws from the default generator (see _gen)
    lin = torch.nn.utils.skip_init(torch.nn.Linear, k, n, bias=False, device=dev, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(_randn(n, k, device=dev, dtype=dtype) * k ** -0.5)
    return lin


def _bf16(m, n, k, dev, copies):
    ws = [_randn(n, k, device=dev, dtype=torch.bfloat16) * k ** -0.5 for _ in range(copies)]
    xs = [_randn(m, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
    return [lambda w=w, x=x: torch.nn.functional.linear(x, w) for w, x in zip(ws, xs)]


def _cublas_fp8(m, n, k, dev, copies):
    f8 = torch.float8_e4m3fn
    out = []
    for _ in range(copies):
        a = _randn(m, k, device=dev).to(f8)
        b = _randn(n, k, device=dev).to(f8)
        sa = _rand(m, 1, device=dev) + 0.5
        sb = _rand(1, n, device=dev) + 0.5
        out.append(lambda a=a, b=b, sa=sa, sb=sb: torch._scaled_mm(a, b.t(), sa, sb, out_dtype=torch.bfloat16))
    return out


def _cublas_int8(m, n, k, dev, copies):
    if m <= 16:
        raise RuntimeError("torch._int_mm needs M > 16")
    out = []
    for _ in range(copies):
        a = torch.randint(-127, 127, (m, k), device=dev, dtype=torch.int8)
        b = torch.randint(-127, 127, (n, k), device=dev, dtype=torch.int8)
        out.append(lambda a=a, b=b: torch._int_mm(a, b.t()))
    return out


def _ours(preset):
    def build(m, n, k, dev, copies):
        import lowbit.kernels
        from lowbit.nn.qlinear import QuantLinear
        from lowbit.scheme import get_scheme

        s = get_scheme(preset)
        q = QuantLinear.from_float(_linear(n, k, dev), s.weights, s.activations)
        plan = lowbit.kernels.prepare(q)
        if plan:
            raise RuntimeError(f"no kernel: {plan}")
        qs = [q] + [copy.deepcopy(q) for _ in range(copies - 1)]
        for c in qs[1:]:
            lowbit.kernels.prepare(c)
        xs = [_randn(m, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
        return [lambda q=q, x=x: q(x) for q, x in zip(qs, xs)]
    return build


def _torchao(kind):
    def build(m, n, k, dev, copies):
        from torchao.quantization import quantize_
        import torchao.quantization as tq

        cfg = {"fp8-row": lambda: tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow()),
               "int8-wo": lambda: tq.Int8WeightOnlyConfig(),
               "int8-dyn": lambda: tq.Int8DynamicActivationInt8WeightConfig()}[kind]
        mods = []
        for _ in range(copies):
            mod = torch.nn.Sequential(_linear(n, k, dev))
            quantize_(mod, cfg())
            mods.append(mod)
        xs = [_randn(m, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
        return [lambda f=f, x=x: f(x) for f, x in zip(mods, xs)]
    return build


def _bnb(kind):
    def build(m, n, k, dev, copies):
        import bitsandbytes as bnb

        mods = []
        for _ in range(copies):
            lin = _linear(n, k, "cpu")
            if kind == "nf4":
                q = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4")
            else:
                q = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False, threshold=6.0)
                q.weight = bnb.nn.Int8Params(lin.weight.data.half(), requires_grad=False, has_fp16_weights=False)
            mods.append(q.to(dev))
        xs = [_randn(m, k, device=dev, dtype=torch.bfloat16 if kind == "nf4" else torch.float16)
              for _ in range(copies)]
        return [lambda f=f, x=x: f(x) for f, x in zip(mods, xs)]
    return build


def _asym_int4_g128(weight: torch.Tensor, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gemlite's input format: uint4 codes (N, K) with per-128-group scales and zero points (N, K/128) in dt."""
    n, k = weight.shape
    w = weight.float().reshape(n, k // 128, 128)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    s = ((hi - lo) / 15).clamp(min=1e-8)
    z = torch.round(-lo / s)
    wq = torch.clamp(torch.round(w / s + z), 0, 15).to(torch.uint8).reshape(n, k)
    return wq, s.reshape(n, -1).to(dt), z.reshape(n, -1).to(dt)


def _gemlite(kind):
    def build(m, n, k, dev, copies):
        from gemlite import helper as gemlite  # gemlite 0.6 keeps its layer classes in gemlite.helper

        mods = []
        dt = torch.float16
        for _ in range(copies):
            lin = _linear(n, k, dev, dt)
            if kind == "a16w4":
                wq, sc, z = _asym_int4_g128(lin.weight.data, dt)
                mods.append(gemlite.A16Wn(device=dev, dtype=dt).from_weights(wq, sc, z, 4, 128))
            elif kind == "a8w4":
                wq, sc, z = _asym_int4_g128(lin.weight.data, dt)
                mods.append(gemlite.A8Wn_HQQ_INT_dynamic(device=dev, dtype=dt, W_nbits=4).from_weights(wq, sc, z))
            elif kind == "a8w8-fp8":
                mods.append(gemlite.A8W8_fp8_dynamic(device=dev, dtype=dt).from_linear(lin))
            else:
                mods.append(gemlite.A8W8_int8_dynamic(device=dev, dtype=dt).from_linear(lin))
        xs = [_randn(m, k, device=dev, dtype=dt) for _ in range(copies)]
        return [lambda f=f, x=x: f(x) for f, x in zip(mods, xs)]
    return build


BUILDERS: dict[str, Callable] = {"bf16": _bf16, "cublas-fp8": _cublas_fp8, "cublas-int8": _cublas_int8,
                                 **{p: _ours(p) for p in OURS},
                                 "torchao-fp8-row": _torchao("fp8-row"), "torchao-int8-wo": _torchao("int8-wo"),
                                 "torchao-int8-dyn": _torchao("int8-dyn"), "bnb-nf4": _bnb("nf4"),
                                 "bnb-int8": _bnb("int8"), "gemlite-a16w4": _gemlite("a16w4"),
                                 "gemlite-a8w8-fp8": _gemlite("a8w8-fp8"), "gemlite-a8w8-int8": _gemlite("a8w8-int8"),
                                 "gemlite-a8w4": _gemlite("a8w4")}
NOTES = {"cublas-fp8": "GEMM only (A pre-quantized)", "cublas-int8": "GEMM only (A pre-quantized, int32 out)"}
# Methods whose launch path cannot be captured in a CUDA graph (shared/GPU.md): timed eagerly without trying (a
# failed capture costs a capture attempt per row; see _gen for what it did to the default generator). The table
# marks these rows "eager". gemlite is not among them: its layers failed capture on the H100 only after
# bitsandbytes int8's failed capture had left the default generator in capture mode (nn.Linear's initialisation in
# _linear drew from it); a gemlite row whose capture still fails is timed eagerly and marked so.
EAGER = ("torchao-int8-dyn", "bnb-int8")


def bench_one(method: str, m: int, n: int, k: int, dev: str = "cuda") -> Row:
    nbytes, _ = method_bytes_and_peak(method, m, n, k)
    copies = copies_for(int(nbytes))
    try:
        calls = BUILDERS[method](m, n, k, dev, copies)
        us, captured = time_calls(calls, graph=not method.startswith(EAGER))
        return Row(method, m, n, k, us, captured, NOTES.get(method, ""))
    except Exception as e:  # report the failure in the table instead of dropping the row
        msg = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
        return Row(method, m, n, k, None, False, msg[:120])
    finally:
        torch.cuda.empty_cache()


def run_layers(methods: list[str], shapes=SHAPES, tokens=TOKENS, log=print) -> list[Row]:
    rows = []
    for n, k in shapes:
        for m in tokens:
            for meth in methods:
                r = bench_one(meth, m, n, k)
                rows.append(r)
                log(f"{meth:18s} M={m:5d} N={n:5d} K={k:5d} " +
                    (f"{r.us:9.1f} us{'' if r.graph else ' (eager)'}" if r.us else f"FAILED {r.note}"))
    return rows


def _baseline(rows: list[Row]) -> dict:
    return {(r.m, r.n, r.k): r.us for r in rows if r.method == "bf16" and r.us}


def to_csv(rows: list[Row], meta: dict) -> str:
    base = _baseline(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["gpu", "commit", "method", "M", "N", "K", "us", "tflops", "gbps", "pct_roofline", "speedup_vs_bf16",
                "graph", "note"])
    for r in rows:
        nbytes, _ = method_bytes_and_peak(r.method, r.m, r.n, r.k)
        b = base.get((r.m, r.n, r.k))
        w.writerow([meta.get("gpu", ""), meta.get("commit", ""), r.method, r.m, r.n, r.k,
                    f"{r.us:.2f}" if r.us else "", f"{r.tflops():.1f}" if r.us else "",
                    f"{nbytes / r.us / 1e3:.0f}" if r.us else "",
                    f"{100 * roofline_us(r.method, r.m, r.n, r.k) / r.us:.0f}" if r.us else "",
                    f"{b / r.us:.2f}" if r.us and b else "", r.graph, r.note])
    return buf.getvalue()


def to_markdown(rows: list[Row]) -> str:
    """One table per (N, K): rows are methods, columns M; cells 'µs (x bf16)'."""
    base = _baseline(rows)
    out = []
    for n, k in dict.fromkeys((r.n, r.k) for r in rows):
        ms = sorted({r.m for r in rows if (r.n, r.k) == (n, k)})
        out.append(f"\n**N={n}, K={k}** — µs per call (speed-up vs bf16 cuBLAS; % of roofline)\n")
        out.append("| method | " + " | ".join(f"M={m}" for m in ms) + " |")
        out.append("|---|" + "---|" * len(ms))
        for meth in dict.fromkeys(r.method for r in rows if (r.n, r.k) == (n, k)):
            cells = []
            for m in ms:
                r = next((r for r in rows if (r.method, r.m, r.n, r.k) == (meth, m, n, k)), None)
                if r is None or not r.us:
                    cells.append("fail" if r is not None else "")
                    continue
                b = base.get((m, n, k))
                pct = 100 * roofline_us(meth, m, n, k) / r.us
                cells.append(f"{r.us:.1f} ({b / r.us:.2f}x; {pct:.0f}%)" + ("" if r.graph else " eager")
                             if b else f"{r.us:.1f}")
            out.append(f"| {meth} | " + " | ".join(cells) + " |")
    return "\n".join(out)

"""`lowbit bench encoder`: BERT-family encoder latency/throughput, same process, same inputs.

Methods: (a) `hf-eager` transformers FP16 (SDPA attention), eager launches; (b) the best FP16 we build: `hf-graph`
(the HF model captured in one CUDA graph) and `fp16-engine` (lowbit's engine graph with cuBLAS FP16 linears,
concatenated QKV, SDPA, one CUDA graph per bucket); `best-fp16` is the faster of the two per row; then the engine
at each quantized scheme (default W8A8, W4A8, W4A4, all INT). Speed does not depend on weight values, so the
named shapes use random weights. Per-stage breakdown: the engine's ops tagged gemm / attention / norm (LayerNorm,
fused with the next quantize in the quantized engines) / quantize / other, each stage replayed alone in a CUDA
graph over the same buffers; the stages sum to about the whole forward.
"""
from __future__ import annotations

import copy
import traceback

import torch

from lowbit.bench.timing import time_calls

SHAPES = {"bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
          "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096)}
SCHEMES = ("w8a8-int8", "w4a8-int", "w4a4-int")


def build_model(name: str, dtype=torch.float16):
    """Random-weight BERT of a named shape, or a local / packaged HF encoder, on CUDA in `dtype`."""
    if name in SHAPES:
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        with torch.device("cuda"):
            return BertModel(BertConfig(**SHAPES[name], attn_implementation="sdpa")).to(dtype).eval()
    from lowbit.data import load_model

    model, _ = load_model(name)
    return model.to("cuda", dtype).eval()


def _engine_call(engine, b: int, s: int):
    g = engine._graph(b, s, False)
    return g["graph"].replay


def breakdown(engine, b: int, s: int) -> dict[str, float]:
    """µs per stage: each stage's ops (recorded from one eager forward) replayed alone in a CUDA graph."""
    from lowbit.engine.engine import STAGES

    ids = torch.randint(1000, 2000, (b, s), device="cuda")
    ones, zeros = torch.ones_like(ids), torch.zeros_like(ids)
    engine._tape = []
    with torch.inference_mode():
        engine.forward(ids, ones, zeros, False)
    tape, engine._tape = engine._tape, None
    out = {}
    for st in STAGES:
        ops = [(fn, a, kw) for stage, fn, a, kw in tape if stage == st]
        if ops:
            with torch.inference_mode():
                out[st] = time_calls([lambda ops=ops: [fn(*a, **kw) for fn, a, kw in ops]], calls_per_replay=1,
                                     replays=10)[0]
    return out


def run_encoder(model_name: str, batches, seqs, schemes=SCHEMES, log=print, stages: bool = True) -> list[dict]:
    import lowbit
    import lowbit.kernels  # noqa: F401  (registers the CUDA ops)
    from lowbit.engine import Engine

    base = build_model(model_name)
    engines = {}
    for name, make in [("fp16-engine", lambda: Engine.from_float(base, device="cuda"))] + \
            [(s, lambda s=s: Engine.from_quantized(_quantized(base, s), device="cuda")) for s in schemes]:
        try:
            engines[name] = make()
        except Exception:  # a scheme that fails to build is reported in its row, the others still run
            log(f"{name}: build failed\n{traceback.format_exc()}")
    rows = []
    for s in seqs:
        for b in batches:
            row = {"model": model_name, "batch": b, "seq": s}
            ids = torch.randint(1000, 2000, (b, s), device="cuda")
            with torch.inference_mode():
                step = lambda: base(input_ids=ids).last_hidden_state  # noqa: E731
                row["hf-eager"] = _try(lambda: time_calls([step], graph=False, calls_per_replay=4, replays=10)[0],
                                       log)
                row["hf-graph"] = _try(lambda: _graph_us(step), log)
            for name, eng in engines.items():
                row[name] = _try(lambda: time_calls([_engine_call(eng, b, s)], graph=False, calls_per_replay=4,
                                                    replays=10)[0], log)
                if stages:
                    row[f"{name}:stages"] = _try(lambda: breakdown(eng, b, s), log)
            _speedups(row, schemes)
            rows.append(row)
            log(row)
    return rows


def _quantized(base, scheme: str):
    import lowbit

    with torch.inference_mode(False):
        return lowbit.quantize(copy.deepcopy(base), scheme, progress=False)


def _graph_us(step) -> float:
    us, captured = time_calls([step], calls_per_replay=4, replays=10)
    if not captured:
        raise RuntimeError("the HF forward did not capture in a CUDA graph")
    return us


def _try(fn, log):
    try:
        return fn()
    except Exception:
        log(traceback.format_exc())
        return None


def _speedups(row: dict, schemes) -> None:
    fp = [row[k] for k in ("hf-graph", "fp16-engine") if row.get(k)]
    row["best-fp16"] = min(fp) if fp else None
    for s in schemes:
        if row.get(s):
            if row.get("hf-eager"):
                row[f"{s} x eager"] = row["hf-eager"] / row[s]
            if row["best-fp16"]:
                row[f"{s} x best"] = row["best-fp16"] / row[s]


def to_markdown(rows: list[dict], schemes=SCHEMES) -> str:
    f = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    x = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
    head = ["model", "batch x seq", "HF eager µs", "HF graph µs", "FP16 engine µs"] + [f"{s} µs" for s in schemes] + \
        [f"{s} vs eager / best FP16" for s in schemes]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['batch']} x {r['seq']}", f(r.get("hf-eager")), f(r.get("hf-graph")),
                 f(r.get("fp16-engine"))] + [f(r.get(s)) for s in schemes] + \
            [f"{x(r.get(f'{s} x eager'))} / {x(r.get(f'{s} x best'))}" for s in schemes]
        out.append("| " + " | ".join(cells) + " |")
    stage_rows = [(r, k[:-7]) for r in rows for k in r if k.endswith(":stages") and r[k]]
    if stage_rows:
        from lowbit.engine.engine import STAGES

        out += ["", "Per-stage breakdown (µs; each stage replayed alone):", "",
                "| model | batch x seq | method | " + " | ".join(STAGES) + " | sum |", "|" + "---|" * (len(STAGES) + 4)]
        for r, m in stage_rows:
            st = r[f"{m}:stages"]
            out.append(f"| {r['model']} | {r['batch']} x {r['seq']} | {m} | "
                       + " | ".join(f(st.get(k)) for k in STAGES) + f" | {f(sum(st.values()))} |")
    return "\n".join(out)

"""Checks beside the PTQ table of the self-trained decoder (BENCHMARKS.md, issue 6), same model, tokens and
calibration as `ptq_smollm2.py --model runs/decoder --group 128 --max-tokens 65536 --calib-samples 32`:

    # paired bootstrap over the 129 eval windows: each row's perplexity change with a 95% interval
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/ptq_decoder_checks.py bootstrap \
        "W8A8-INT8 (per-channel W, per-token A)|W8A8-FP8 (per-channel W, per-token A)|fptq-pct|fptq-pct-gptq"
    # LoRC: share of the FP4 weight-error energy in the top 8 singular values, this model vs SmolLM2
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/ptq_decoder_checks.py lorc-energy

Row names are the table's labels, or ``fptq-pct`` / ``fptq-pct-gptq``: W4A8-INT with FPTQ's percentile rule (p50 /
p90 of the layers' ranges as v0 / v1), without / with GPTQ, so that some layers fall in the LAE band.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ptq_smollm2 as P  # noqa: E402  (the table's rows and scheme helpers)

from lowbit import quantize  # noqa: E402
from lowbit.data import calibration_batches, load_model, load_texts  # noqa: E402
from lowbit.eval.perplexity import _window_nll, encode_texts, window_spans  # noqa: E402


@torch.no_grad()
def _per_window(model, ids, spans) -> torch.Tensor:
    return torch.tensor([_window_nll(model, ids[b:e], n) for b, e, n in spans], dtype=torch.float64)


def bootstrap(model_dir: str, labels: list[str], resamples: int = 2000) -> None:
    base, tok = load_model(model_dir)
    ids = encode_texts(tok, load_texts("wiki", split="eval"), 65536)
    calib = calibration_batches(load_texts("wiki", split="calib"), tok, 32, 512, batch_size=4)
    spans = window_spans(len(ids), 512, 512)
    rows = {r[0]: r for r in P.rows(128, "ref")}
    n = torch.tensor([s[2] for s in spans], dtype=torch.float64)
    ref = _per_window(base, ids, spans)
    for label in labels:
        if label.startswith("fptq-pct"):
            methods = ["fptq", "gptq"] if label.endswith("gptq") else ["fptq"]
            scheme = P.S(label, P.w("int4", g=128), P.I8, methods, fptq={"rule": "percentile"})
        elif label in rows:
            scheme = rows[label][1]
        else:
            raise SystemExit(f"unknown row {label!r}; rows: {sorted(rows)} or fptq-pct / fptq-pct-gptq")
        model = quantize(copy.deepcopy(base), scheme, calib, progress=False)
        d = _per_window(model, ids, spans)
        g = torch.Generator().manual_seed(0)
        boots = []
        for _ in range(resamples):  # paired: the same windows for the row and the reference
            i = torch.randint(0, len(n), (len(n),), generator=g)
            boots.append(math.exp((d[i].sum() - ref[i].sum()) / n[i].sum()) - 1)
        boots = torch.tensor(boots)
        rec = {"row": label, "ppl": math.exp(d.sum() / n.sum()), "ref": math.exp(ref.sum() / n.sum()),
               "rel": math.exp((d.sum() - ref.sum()) / n.sum()) - 1,
               "ci95": [boots.quantile(0.025).item(), boots.quantile(0.975).item()]}
        if "fptq" in scheme.methods:
            ex = model.lowbit_extras["fptq"]
            modes = [v["mode"] for v in ex["layers"].values()]
            rec["modes"] = {k: modes.count(k) for k in ("static", "lae+static", "dynamic")}
            rec["v0_v1"] = (ex["v0"], ex["v1"])
        print(json.dumps(rec), flush=True)


def lorc_energy(models: list[tuple[str, int]]) -> None:
    from lowbit.methods.lorc import quantize_weight

    for name, g in models:
        model, _ = load_model(name)
        for rule in ("absmax", "pow2", "pow2_row"):
            spec = P.w("fp4_e2m1", rule, g)
            share, rel = [], []
            for n, mod in model.named_modules():
                if isinstance(mod, torch.nn.Linear) and "lm_head" not in n:
                    w = mod.weight.detach().float()
                    e = w - quantize_weight(w, spec, n).dequantize()
                    s = torch.linalg.svdvals(e)
                    share.append((s[:8] ** 2).sum() / (s ** 2).sum())
                    rel.append(e.norm() / w.norm())
            print(f"{name} FP4 g{g} {rule}: rank-8 share of the weight-error energy "
                  f"{torch.stack(share).mean():.3f}, relative weight error {torch.stack(rel).mean():.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bootstrap")
    b.add_argument("rows", help="'|'-separated row labels")
    b.add_argument("--model", default="runs/decoder")
    sub.add_parser("lorc-energy")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if a.cmd == "bootstrap":
        bootstrap(a.model, a.rows.split("|"))
    else:
        lorc_energy([("runs/decoder", 128), ("smollm2", 64)])


if __name__ == "__main__":
    main()

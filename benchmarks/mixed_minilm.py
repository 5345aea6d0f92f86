"""HAWQ-V3 mixed precision on the packaged MiniLM: ILP plan vs uniform low-bit vs random plans at equal budget.

Candidates: W4 per-channel and W8 per-channel weight-only RTN (activations fp32), so that only the bit
allocation differs. Sensitivity loss: MSE between the model's mean-pooled sentence embeddings and the FP32
ones on 32 calibration sentences (its Hessian at the reference is 2 JᵀJ). Metrics on held-out SST sentences:
mean embedding cosine to FP32 and the accuracy of the FP32-fitted logistic probe.

    .venv/bin/python benchmarks/mixed_minilm.py --ratios 0.25,0.5 --probes 32
"""
import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F

from lowbit.api import quantize
from lowbit.data import load_labelled, load_model
from lowbit.eval import embedding_cosine, probe_accuracy, sentence_embeddings, train_probe
from lowbit.mixed.ilp import budget_limit, evaluate, random_plan, solve
from lowbit.mixed.plan import plan_mixed, to_scheme
from lowbit.scheme import QuantSpec, Scheme

W4 = Scheme("w4-channel", QuantSpec("int4", "channel"))
W8 = Scheme("w8-channel", QuantSpec("int8", "channel"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratios", default="0.25,0.5")
    ap.add_argument("--probes", type=int, default=32)
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--random-seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    fp, tok = load_model("minilm")
    cal, _ = load_labelled("sst", "calib")
    texts, labels = load_labelled("sst", "eval")
    texts, labels = texts[: args.n_eval], labels[: args.n_eval]
    batch = dict(tok(cal[:32], padding=True, return_tensors="pt"))
    mask = batch["attention_mask"][..., None].float()

    def pooled(m):
        h = m(**batch).last_hidden_state
        return F.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)

    with torch.no_grad():
        ref_cal = pooled(fp)
    loss = lambda m: (pooled(m) - ref_cal).pow(2).sum(-1).mean()
    probe = train_probe(fp, tok, progress=False)
    ref = sentence_embeddings(fp, tok, texts, progress=False)

    def score(scheme):
        m = quantize(copy.deepcopy(fp), scheme, progress=False)
        return {"cosine": embedding_cosine(m, ref, tok, texts, progress=False),
                "probe_acc": probe_accuracy(m, tok, probe, texts, labels, progress=False)}

    res = {"fp32": {"cosine": 1.0, "probe_acc": probe_accuracy(fp, tok, probe, texts, labels, progress=False)},
           "uniform_w4": score(W4), "uniform_w8": score(W8)}
    print(json.dumps(res), flush=True)
    first = None
    for r in [float(x) for x in args.ratios.split(",")]:
        if first is None:
            first = plan_mixed(fp, [W4, W8], {"size": r}, loss, n_probes=args.probes)
            print(first.table(), flush=True)
        lim = budget_limit(first.costs["size"], r)
        sol = solve(first.omega, first.costs, {"size": lim})
        row = {"ratio": r, "limit_bytes": lim, "ilp": {**score(to_scheme(first.names, first.schemes, sol.choice)),
                                                         "bytes": sol.costs["size"], "omega": sol.objective}}
        for s in range(args.random_seeds):
            ch = random_plan(first.costs, {"size": lim}, seed=s)
            ev = evaluate(ch, first.omega, first.costs)
            row[f"random{s}"] = {**score(to_scheme(first.names, first.schemes, ch)), "bytes": ev.costs["size"],
                                 "omega": ev.objective}
        res[f"size={r}"] = row
        print(json.dumps(row), f"{time.time() - t0:.0f}s", flush=True)
    res["wall_s"] = round(time.time() - t0)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""HAWQ-V3 mixed precision on the packaged MiniLM: ILP plan vs uniform low-bit vs random plans at equal budget.

Candidates: W4 per-channel and W8 per-channel weight-only RTN (activations fp32), so that only the bit
allocation differs. Sensitivity loss: MSE between the model's mean-pooled sentence embeddings and the FP32
ones on 32 calibration sentences (its Hessian at the reference is 2 JᵀJ). Metrics on held-out SST sentences:
mean embedding cosine to FP32 and the accuracy of the FP32-fitted logistic probe.

    .venv/bin/python benchmarks/mixed_minilm.py --ratios 0.1,0.25,0.5,0.75 --probes 16 --n-eval 500 \
        --random-seeds 2 --plot runs/mixed_pareto.png

Every budget ratio gives one ILP plan and `--random-seeds` random plans within the same bytes; the uniform W4
and W8 plans are the frontier's ends. Prints the table (lowbit.mixed.frontier) that BENCHMARKS.md shows.
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
from lowbit.mixed.frontier import frontier, frontier_table, parse_ratios, plot_frontier
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
    ap.add_argument("--plot", default=None, help="save the cosine-vs-size frontier plot here (e.g. runs/...png)")
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

    res = {"fp32": {"cosine": 1.0, "probe_acc": probe_accuracy(fp, tok, probe, texts, labels, progress=False)}}
    ratios = parse_ratios(args.ratios)
    plan = plan_mixed(fp, [W4, W8], {"size": ratios[0]}, loss, n_probes=args.probes)
    print(plan.table(), flush=True)
    points = frontier(plan.omega, plan.costs, "size", ratios, [W4.name, W8.name], random_seeds=args.random_seeds)
    for i, p in enumerate(points):
        points[i] = p.with_metrics(score(to_scheme(plan.names, plan.schemes, p.choice)))
        res[p.label] = {**points[i].metrics, **points[i].costs, "omega": p.objective, "ratio": p.ratio}
        print(p.label, json.dumps(res[p.label]), f"{time.time() - t0:.0f}s", flush=True)
    print(frontier_table(points, ["cosine", "probe_acc"]))
    if args.plot:
        print("plot:", plot_frontier(points, "size", "cosine", args.plot, "MiniLM: HAWQ-V3 ILP vs uniform / random "
                                     "(W4/W8 per-channel)"))
    res["wall_s"] = round(time.time() - t0)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""Integer-only MiniLM (packaged all-MiniLM-L6-v2, fp32) vs FP32 and vs the W8A8 fake-quant model.

Metrics on the 2000 held-out Pang & Lee sentences (``load_labelled("sst", "eval")``): mean cosine of the
sentence embeddings to FP32, and the accuracy of a logistic probe fitted on FP32 embeddings of the other half.
The integer graph is evaluated with its float64 twin (``backend="sim"``, ~8x faster on the CPU than int64
GEMMs); the first batch is also run on the integer-only backend and must be bit-identical, and the integer
backend is walked by the checker (no float op, no division).

    .venv/bin/python benchmarks/intonly_minilm.py --softmax shift --gelu shift
    .venv/bin/python benchmarks/intonly_minilm.py --smooth auto --score-bits 16 --n-eval 500   # the accurate one
"""
import argparse
import copy
import json
import time

import torch

from lowbit.api import quantize
from lowbit.data import load_labelled, load_model
from lowbit.eval import embedding_cosine, probe_accuracy, sentence_embeddings, train_probe
from lowbit.intonly.blocks import INTONLY_SCHEME, IntBertModel, IntConfig
from lowbit.intonly.checker import check_integer_only
from lowbit.intonly.dyadic import INT, SIM


class Sim(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, **kw):
        return self.m(**kw, backend="sim")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--softmax", default="shift")
    ap.add_argument("--gelu", default="shift")
    ap.add_argument("--score-bits", type=int, default=8)
    ap.add_argument("--gelu-in-bits", type=int, default=16)
    ap.add_argument("--smooth", default=None, help="IntConfig.smooth: a SmoothQuant alpha in [0, 1] or 'auto' "
                                                   "(the graph then quantizes the float weights itself)")
    ap.add_argument("--norm", choices=("deferred", "probs"), default="deferred",
                    help="IntConfig.deferred_norm: weights relative to the row maximum and one division of the context "
                         "(deferred) or normalised probabilities (probs, the papers)")
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    fp, tok = load_model("minilm")
    cal_texts, _ = load_labelled("sst", "calib")
    texts, labels = load_labelled("sst", "eval")
    texts, labels = texts[: args.n_eval], labels[: args.n_eval]
    calib = [dict(tok(cal_texts[i:i + 16], padding=True, truncation=True, max_length=128, return_tensors="pt"))
             for i in range(0, args.n_calib, 16)]
    fq = quantize(copy.deepcopy(fp), INTONLY_SCHEME, calib, progress=False)
    smooth = None if args.smooth is None else (args.smooth if args.smooth == "auto" else float(args.smooth))
    cfg = IntConfig(softmax=args.softmax, gelu=args.gelu, score_bits=args.score_bits, gelu_in_bits=args.gelu_in_bits,
                    smooth=smooth, deferred_norm=args.norm == "deferred")
    im = IntBertModel(fq if smooth is None else fp, cfg).calibrate(calib).eval()
    b = dict(tok(texts[:8], padding=True, return_tensors="pt"))
    ids, mask, tt = b["input_ids"], b["attention_mask"], b["token_type_ids"]
    exact = torch.equal(im.integer_forward(INT, ids, mask, tt)[0], im.integer_forward(SIM, ids, mask, tt)[0].long())
    report = check_integer_only(im.integer_forward, INT, ids, mask, tt)
    probe = train_probe(fp, tok, progress=False)
    ref = sentence_embeddings(fp, tok, texts, progress=False)
    res = {"config": cfg.__dict__, "int_equals_sim_first_batch": exact, "checker_ops": sum(report.ops.values()),
           "checker_violations": len(report.violations), "n_eval": len(texts)}
    for name, model in (("fp32", fp), ("w8a8_fakequant", fq), ("intonly", Sim(im))):
        res[f"{name}_cosine"] = 1.0 if name == "fp32" else embedding_cosine(model, ref, tok, texts, progress=False)
        res[f"{name}_probe_acc"] = probe_accuracy(model, tok, probe, texts, labels, progress=False)
        print(name, res[f"{name}_cosine"], res[f"{name}_probe_acc"], f"{time.time() - t0:.0f}s", flush=True)
    res["wall_s"] = round(time.time() - t0)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""Which integer op costs the integer-only MiniLM its accuracy: replace one op at a time by float (float64
simulation, ``IntBertModel.ablate``) or change one bit width / calibration knob, and report the embedding cosine
to FP32 on held-out Pang & Lee sentences.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/intonly_ablate.py --n-eval 200 \
        --variants base,softmax,gelu,layernorm,rq:x,rq:x2,rq:ctx,rq:x3,rq:qkv,rq:scores,rq:gelu.in,rq:res \
        --variants-cfg percentile=99.99,score_bits=12,prob_bits=8

Variants: "base"; a FLOAT_OPS name (one op in float); "all-rq" (every requantization in float); "fakequant"
(the W8A8 lowbit model the integer graph is built from); config variants "key=value" rebuild the graph.
"""
import argparse
import copy
import dataclasses
import json
import time

import torch

from lowbit.api import quantize
from lowbit.data import load_labelled, load_model
from lowbit.eval import embedding_cosine, sentence_embeddings
from lowbit.intonly.blocks import FLOAT_OPS, INTONLY_SCHEME, IntBertModel, IntConfig

from intonly_minilm import Sim  # noqa: E402  (benchmarks/ is on sys.path when a script there runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="base,softmax,gelu,layernorm," + ",".join(o for o in FLOAT_OPS if ":" in o))
    ap.add_argument("--variants-cfg", default="")
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--n-eval", type=int, default=200)
    ap.add_argument("--config", default="", help="base IntConfig overrides, key=value;key=value")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    fp, tok = load_model("minilm")
    cal_texts, _ = load_labelled("sst", "calib")
    texts, _ = load_labelled("sst", "eval")
    texts = texts[:: max(1, len(texts) // args.n_eval)][: args.n_eval]
    calib = [dict(tok(cal_texts[i:i + 16], padding=True, truncation=True, max_length=128, return_tensors="pt"))
             for i in range(0, args.n_calib, 16)]
    fq = quantize(copy.deepcopy(fp), INTONLY_SCHEME, calib, progress=False)
    ref = sentence_embeddings(fp, tok, texts, progress=False)
    base_cfg = IntConfig(**_kv(args.config))
    im = IntBertModel(fq if base_cfg.smooth is None else fp, base_cfg).calibrate(calib).eval()
    out = {}
    for v in [v for v in args.variants.split(",") if v]:
        if v == "fakequant":
            model = fq
        else:
            ops = [o for o in FLOAT_OPS if o.startswith("rq:")] if v == "all-rq" else ([] if v == "base" else [v])
            model = Sim(im.ablate(*ops))
        out[v] = embedding_cosine(model, ref, tok, texts, progress=False)
        print(f"{v:12s} cosine {out[v]:.4f}  {time.time() - t0:.0f}s", flush=True)
    im.ablate()
    for v in [v for v in args.variants_cfg.split(",") if v]:
        cfg = dataclasses.replace(base_cfg, **_kv(v))
        m = IntBertModel(fq if cfg.smooth is None else fp, cfg).calibrate(calib).eval()
        out[v] = embedding_cosine(Sim(m), ref, tok, texts, progress=False)
        print(f"{v:12s} cosine {out[v]:.4f}  {time.time() - t0:.0f}s", flush=True)
    print(json.dumps({"n_eval": len(texts), "config": base_cfg.__dict__, "cosine": out, "alphas": im.smooth_alpha}))


def _kv(text: str) -> dict:
    out = {}
    for item in [t for t in text.replace(";", ",").split(",") if t]:
        k, v = item.split("=")
        out[k] = v if k in ("softmax", "gelu") or v == "auto" else (float(v) if k in ("percentile", "smooth") else int(v))
    return out


if __name__ == "__main__":
    main()

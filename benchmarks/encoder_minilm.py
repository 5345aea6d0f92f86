"""MiniLM (packaged, real weights) through the engine on the CPU (reference ops = the kernels' numerics): sentence
embedding cosine vs the FP32 HF model + mean pooling, per scheme (RTN PTQ; the QAT W4A4 model when one is given).

    PYTHONPATH=src python benchmarks/encoder_minilm.py [--n 400] [--qat CKPT_DIR]
"""
import argparse
import copy
import json
import time

import torch

import lowbit
from lowbit.data import load_model
from lowbit.data.corpora import sst
from lowbit.engine import Engine
from lowbit.eval.embeddings import sentence_embeddings

p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=400)
p.add_argument("--qat", default=None, help="a lowbit checkpoint of the QAT W4A4 MiniLM")
args = p.parse_args()
torch.set_num_threads(2)
model, tok = load_model("minilm")
texts = sst()[: args.n]
ref = sentence_embeddings(model, tok, texts, progress=False)
rows = {}
for s in ("w8a8-int8", "w8a8-fp8", "w4a8-int", "w4a4-int", "w4a4-fp4"):
    t = time.time()
    q = lowbit.quantize(copy.deepcopy(model), s, progress=False)
    e = Engine.from_quantized(q, tok, device="cpu")
    emb = e.embed(texts, max_length=128)
    hf = sentence_embeddings(q, tok, texts, progress=False)  # the un-fused QuantLinear model
    rows[s] = dict(cos_fp32=float((emb * ref).sum(1).mean()), min_cos_fp32=float((emb * ref).sum(1).min()),
                   cos_unfused=float((emb * hf).sum(1).mean()), s=round(time.time() - t, 1))
    print(s, rows[s], flush=True)
if args.qat:
    e = Engine(args.qat, device="cpu")
    emb = e.embed(texts, max_length=128)
    rows["qat"] = dict(cos_fp32=float((emb * ref).sum(1).mean()))
    print("qat", rows["qat"], flush=True)
print(json.dumps(rows))

"""GPTQ wall time and peak GPU memory on a Llama-2-7B-shaped model (random weights, random-token calibration).

The model lives in CPU memory in bf16; `lowbit.methods.gptq` calibrates block by block with one block on the
GPU (lowbit.methods.sequential). Timed: the GPTQ method (capture + 32 blocks: Hessians, GPTQ, propagation)
and the conversion to packed QuantLinear layers, separately. Weights are random N(0, 0.02): speed does not
depend on the values.

    python3 benchmarks/ptq_gptq_7b.py                  # on the H100 (device tool)
    python benchmarks/ptq_gptq_7b.py --tiny --device cpu  # the same code path on a tiny config
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lowbit.data import random_token_batches
from lowbit.methods import MethodContext
from lowbit.methods.gptq import gptq
from lowbit.nn.convert import convert, plan
from lowbit.quant.calibrate import as_batches
from lowbit.scheme import get_scheme

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
TINY = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=1000, max_position_embeddings=512)


def random_model(shape: dict, device: str) -> LlamaForCausalLM:
    """bf16 Llama with N(0, 0.02) weights in CPU memory, drawn on `device` (fast) and copied over."""
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**shape, torch_dtype="bfloat16"))
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g, device=device, dtype=torch.bfloat16).mul_(0.02).cpu())
        model.model.rotary_emb.__init__(model.config)  # meta init left inv_freq empty
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--scheme", default="w4a16")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    shape = TINY if a.tiny else LLAMA2_7B
    t0 = time.time()
    model = random_model(shape, a.device)
    build_s = time.time() - t0
    batches = as_batches(random_token_batches(shape["vocab_size"], a.samples, a.seq_len, batch_size=a.batch_size))
    scheme = get_scheme(a.scheme).replace(methods=("gptq",), method_args=(("gptq", (("device", a.device),)),))
    report = plan(model, scheme)
    ctx = MethodContext(report, batches, progress=not a.tiny)
    cuda = a.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.time()
    gptq(model, scheme, ctx)
    if cuda:
        torch.cuda.synchronize()
    gptq_s = time.time() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    t0 = time.time()
    convert(model, report, {}, ctx.qweights)
    convert_s = time.time() - t0
    rec = {"model": "llama-2-7b-shaped (random)" if not a.tiny else "tiny", "scheme": scheme.weights.describe(),
           "calib": f"{a.samples} x {a.seq_len} random tokens", "layers": len(ctx.qweights),
           "fallbacks": len(ctx.extras.get("gptq_fallbacks", {})), "build_s": round(build_s, 1),
           "gptq_s": round(gptq_s, 1), "convert_s": round(convert_s, 1), "peak_gpu_gib": round(peak, 2),
           "gpu": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()}
    print(json.dumps(rec), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()

"""End-to-end: a Llama-2-7B-shaped decoder (random weights, transformers LlamaForCausalLM from a config).

Decode: one token per step at batch 1, CUDA-graph replay of the whole forward (`use_cache=False` with a
1-token sequence, so attention over the context is not in the number: it isolates the linear layers that the
schemes change). Prefill: one 2048-token forward, graph-replayed. tokens/s = 1e6 / µs (decode).
"""
from __future__ import annotations

import copy

import torch

from lowbit.bench.timing import time_calls

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)


def build_llama(layers: int | None = None, dev: str = "cuda"):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(LLAMA2_7B)
    if layers:
        cfg["num_hidden_layers"] = layers
    torch.manual_seed(0)
    with torch.device(dev):
        model = LlamaForCausalLM(LlamaConfig(**cfg, torch_dtype=torch.bfloat16)).to(torch.bfloat16).eval()
    return model


def time_forward(model, tokens: int, dev: str = "cuda") -> float:
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device=dev)

    @torch.inference_mode()
    def step():
        return model(input_ids=ids, use_cache=False).logits

    us, captured = time_calls([step], calls_per_replay=4 if tokens > 1 else 16, replays=10)
    if not captured:
        raise RuntimeError("the forward did not capture in a CUDA graph")
    return us


def run_e2e(schemes=("w4a16", "w4a8-int", "w4a8-fp", "w8a8-fp8"), layers: int | None = None,
            prefill_tokens: int = 2048, log=print) -> list[dict]:
    import lowbit.kernels
    from lowbit import quantize

    base = build_llama(layers)
    rows = [{"scheme": "bf16", "decode_us": time_forward(base, 1), "prefill_us": time_forward(base, prefill_tokens)}]
    log(rows[-1])
    for s in schemes:
        m = copy.deepcopy(base)
        with torch.inference_mode(False):
            quantize(m, s, progress=False)
        skipped = lowbit.kernels.prepare(m)
        row = {"scheme": s, "decode_us": time_forward(m, 1), "prefill_us": time_forward(m, prefill_tokens),
               "reference_path_layers": len(skipped)}
        rows.append(row)
        log(row)
        del m
        torch.cuda.empty_cache()
    b = rows[0]
    for r in rows:
        r["decode_tok_s"] = 1e6 / r["decode_us"]
        r["decode_x_bf16"] = b["decode_us"] / r["decode_us"]
        r["prefill_x_bf16"] = b["prefill_us"] / r["prefill_us"]
    return rows


def to_markdown(rows: list[dict], prefill_tokens: int = 2048) -> str:
    out = [f"| scheme | decode µs/token | tokens/s | decode x bf16 | prefill {prefill_tokens} µs | prefill x bf16 |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['scheme']} | {r['decode_us']:.0f} | {r['decode_tok_s']:.0f} | {r['decode_x_bf16']:.2f}x | "
                   f"{r['prefill_us']:.0f} | {r['prefill_x_bf16']:.2f}x |")
    return "\n".join(out)

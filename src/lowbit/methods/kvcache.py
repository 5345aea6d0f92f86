"""KV-cache quantization (FPTQ, PAPERS.md §3: "KV cache is also quantized, to save I/O"): keys and values
quantized per token and per head, symmetric, to INT8 or FP8.

Simulated numerics: the outputs of k_proj and v_proj are quantize-dequantized per (token, head) before
attention uses (and caches) them; for keys this is before RoPE, where a cache stores them after. The hooks
sit on the attention modules, which conversion keeps, so they survive `quantize`; a checkpoint records the
method in its scheme, and `enable_kv_quant(model, fmt)` re-applies it after `load`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowbit.errors import ModelError, SchemeError
from lowbit.methods import MethodContext, register_method
from lowbit.methods.gptq import method_args
from lowbit.models import blocks
from lowbit.quant.qtensor import quantize_activation
from lowbit.scheme import QuantSpec

KV_FORMATS = ("int8", "fp8_e4m3")


def quantize_kv(t: torch.Tensor, head_dim: int, spec: QuantSpec) -> torch.Tensor:
    """Quantize-dequantize a projection output (…, heads * head_dim) per token and per head."""
    shape = t.shape
    heads = t.reshape(*shape[:-1], shape[-1] // head_dim, head_dim)  # (…, H, d): one scale per (token, head)
    return quantize_activation(heads, spec).reshape(shape).to(t.dtype)


def enable_kv_quant(model: nn.Module, fmt: str = "int8") -> int:
    """Quantize keys and values of every attention block; returns the number of blocks hooked.

    Raises:
        SchemeError: a format other than int8 / fp8_e4m3.
        ModelError: a model whose blocks have no self_attn.k_proj / v_proj.
    """
    if fmt not in KV_FORMATS:
        raise SchemeError(f"kv-cache format {fmt!r} unknown; allowed: {', '.join(KV_FORMATS)}")
    spec = QuantSpec(fmt, "token", dynamic=True)
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    try:
        layers = blocks(model)
    except ValueError as e:
        raise ModelError(f"kv-cache quantization: {e}") from None
    count = 0
    for block in layers:
        attn = getattr(block, "self_attn", None)
        if attn is None or not hasattr(attn, "k_proj") or not hasattr(attn, "v_proj"):
            raise ModelError(f"{type(model).__name__}: kv-cache quantization needs self_attn.k_proj / v_proj")
        attn.register_forward_pre_hook(_hook_projections(spec, head_dim))
        count += 1
    return count


def _hook_projections(spec: QuantSpec, head_dim: int):
    def pre_hook(attn: nn.Module, args) -> None:
        # the projections may have been replaced by QuantLinear since: (re)attach the output hooks lazily
        for proj in (attn.k_proj, attn.v_proj):
            if not getattr(proj, "_lowbit_kv_hooked", False):
                proj.register_forward_hook(lambda m, a, out: quantize_kv(out, head_dim, spec))
                proj._lowbit_kv_hooked = True
    return pre_hook


@dataclass(frozen=True)
class KVArgs:
    format: str = "int8"


@register_method("kvcache")
def kvcache(model: nn.Module, scheme, ctx: MethodContext) -> None:
    """Quantize the KV cache (see the module docstring); its position in the methods does not matter."""
    args = method_args(scheme, "kvcache", KVArgs)
    ctx.extras["kvcache"] = {"format": args.format, "blocks": enable_kv_quant(model, args.format)}

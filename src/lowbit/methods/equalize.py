"""Activation equalization folded into the preceding norm: SmoothQuant (alpha migration) and FPTQ's
logarithmic activation equalization (LAE).

Both divide each input channel j of the layers that read a norm's output by s_j (X' = X diag(s)^-1) and
multiply the same input column of their weights (W' = W diag(s)); the norm's weight (and bias) absorb 1/s, so
the float model computes the same function. Only (norm -> linears) pairs where the norm output feeds nothing
else are folded: pre-norm decoders' attention and MLP inputs (PAPERS.md §3: "QKV and Up/Gate").

- SmoothQuant (Xiao et al. 2023, Eq. 4): s_j = max|X_j|^a / max|W_j|^(1-a), a = 0.5.
- LAE (FPTQ, PAPERS.md §3): s_j = max|X_j| / log2(2 + max|X_j|), no weight statistics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowbit.errors import CalibrationError, ModelError, SchemeError
from lowbit.methods import MethodContext, register_method
from lowbit.methods.gptq import method_args
from lowbit.methods.sequential import sequential_blocks
from lowbit.models import blocks, family_of
from lowbit.nn.qlinear import _linear_weight

_LLAMA = (("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
          ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))
# family -> (norm, linears reading only that norm's output) inside each block
NORM_GROUPS = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
               "gpt2": (("ln_1", ("attn.c_attn",)), ("ln_2", ("mlp.c_fc",)))}
MIN_SCALE = 1e-5


@dataclass(frozen=True)
class FoldGroup:
    norm: str
    linears: tuple[str, ...]


def fold_groups(model: nn.Module) -> list[FoldGroup]:
    """Every (norm, linears) pair of the model whose equalization scale can be folded into the norm.

    Raises:
        ModelError: a family without a known norm -> linear map.
    """
    fam = family_of(model)
    if fam is None or fam.name not in NORM_GROUPS:
        raise ModelError(f"{type(model).__name__}: equalization needs to know which norm feeds which linear "
                         f"layers; known for {', '.join(NORM_GROUPS)} (post-norm encoders such as BERT cannot "
                         "fold it: their norm output also feeds the residual)")
    name_of = {id(m): n for n, m in model.named_modules()}
    out = []
    for block in blocks(model):
        p = name_of[id(block)]
        out += [FoldGroup(f"{p}.{norm}", tuple(f"{p}.{lin}" for lin in lins)) for norm, lins in NORM_GROUPS[fam.name]]
    return out


# --- the maths ----------------------------------------------------------------------------------------------
def smoothquant_scales(x_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant Eq. 4: s_j = max|X_j|^alpha / max|W_j|^(1-alpha), per input channel j."""
    x = x_absmax.float().clamp(min=MIN_SCALE)
    w = w_absmax.float().clamp(min=MIN_SCALE)
    return (x.pow(alpha) / w.pow(1 - alpha)).clamp(min=MIN_SCALE)


def lae_scales(x_absmax: torch.Tensor) -> torch.Tensor:
    """FPTQ LAE: s_j = max|X_j| / log2(2 + max|X_j|); a channel that was always 0 keeps s_j = 1."""
    x = x_absmax.float()
    s = x / torch.log2(2 + x)
    return torch.where(x > 0, s, torch.ones_like(s)).clamp(min=MIN_SCALE)


def fold_scales(norm: nn.Module, linears: list[nn.Module], s: torch.Tensor) -> None:
    """X' = X / s through the norm's weight (and bias), W' = W * s on the linears' input columns."""
    with torch.no_grad():
        norm.weight.div_(s.to(norm.weight))
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(s.to(norm.bias))
        for lin in linears:
            w = _linear_weight(lin)  # (N, K)
            w.mul_(s.to(w))


# --- calibration --------------------------------------------------------------------------------------------
def channel_absmax(model: nn.Module, names: list[str], batches, device="cpu",
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """max |X_j| per input channel j of each named layer over the calibration batches (one pass, block by
    block).

    Raises:
        CalibrationError: no data, NaN/Inf inputs, or a named layer the data never reached.
    """
    if not batches:
        raise CalibrationError("activation equalization needs calibration data (real text or random tokens)")
    stats: dict[str, torch.Tensor] = {}

    def seen(name: str, x: torch.Tensor) -> None:
        if not torch.isfinite(x).all():
            raise CalibrationError(f"the input of {name} holds NaN or Inf; check the calibration data")
        m = x.detach().reshape(-1, x.shape[-1]).abs().amax(dim=0).float().cpu()
        stats[name] = m if name not in stats else torch.maximum(stats[name], m)

    wanted = set(names)
    name_of = {id(m): n for n, m in model.named_modules()}
    for _, block, run in sequential_blocks(model, batches, device, progress, "statistics", reuse_outputs=True):
        handles = [m.register_forward_pre_hook(lambda mod, a, n=n: seen(n, a[0]))
                   for n, m in block.named_modules(prefix=name_of[id(block)]) if n in wanted]
        try:
            run()
        finally:
            for h in handles:
                h.remove()
    missing = sorted(wanted - set(stats))
    if missing:
        raise CalibrationError(f"the calibration data never reached {missing[:3]}; cannot equalize them")
    return stats


def planned_groups(model: nn.Module, ctx: MethodContext) -> list[FoldGroup]:
    """Fold groups whose linears are all planned for quantization (a skipped layer keeps the float input)."""
    planned = {p.name for p in ctx.report.quantized}
    return [g for g in fold_groups(model) if all(n in planned for n in g.linears)]


def equalize(model: nn.Module, groups: list[FoldGroup], stats: dict[str, torch.Tensor], rule: str,
             alpha: float = 0.5) -> dict[str, torch.Tensor]:
    """Fold `rule` ('smoothquant' | 'lae') scales into each group; returns the scales by norm name."""
    done = {}
    for g in groups:
        lins = [model.get_submodule(n) for n in g.linears]
        x = stats[g.linears[0]]
        if rule == "smoothquant":
            w = torch.stack([_linear_weight(m).detach().abs().amax(dim=0).float().cpu() for m in lins]).amax(dim=0)
            s = smoothquant_scales(x, w, alpha)
        else:
            s = lae_scales(x)
        fold_scales(model.get_submodule(g.norm), lins, s)
        done[g.norm] = s
    return done


@dataclass(frozen=True)
class SmoothArgs:
    alpha: float = 0.5
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise SchemeError(f"smoothquant alpha must be in [0, 1], got {self.alpha}")


@dataclass(frozen=True)
class LAEArgs:
    device: str = "cpu"


def _run(model: nn.Module, ctx: MethodContext, rule: str, alpha: float, device: str) -> None:
    groups = planned_groups(model, ctx)
    stats = channel_absmax(model, [g.linears[0] for g in groups], ctx.calib_batches, device, ctx.progress)
    ctx.extras[f"{rule}_scales"] = equalize(model, groups, stats, rule, alpha)


@register_method("smoothquant")
def smoothquant(model: nn.Module, scheme, ctx: MethodContext) -> None:
    """SmoothQuant alpha migration into the preceding norms (function-preserving)."""
    a = method_args(scheme, "smoothquant", SmoothArgs)
    _run(model, ctx, "smoothquant", a.alpha, a.device)


@register_method("lae")
def lae(model: nn.Module, scheme, ctx: MethodContext) -> None:
    """FPTQ logarithmic activation equalization on every foldable layer (function-preserving); the "fptq"
    method applies it only where the layer-wise policy asks for it."""
    a = method_args(scheme, "lae", LAEArgs)
    _run(model, ctx, "lae", 0.5, a.device)

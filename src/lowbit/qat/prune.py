"""Pruning that composes with QAT: magnitude masks (unstructured, 2:4) and structured head / FFN-row removal.

Masks are pure functions of a weight; `apply_masks` zeroes the weights and stores each mask as the buffer
`weight_mask`, which the training loop uses to zero gradients and re-zero weights after every step, and
which `QATLinear` carries along. Zeroed weights quantize to code 0, so a 2:4 pattern survives conversion.

Structured pruning removes rows/columns physically (BERT-family encoders): attention heads by a weight-
magnitude importance (sum of squared Q, K, V rows and O columns of the head), FFN neurons by the product of
their in- and out-weight norms. The same count is removed in every layer so that shapes stay uniform.
`model.lowbit_head_map` records the kept heads of each layer, so distillation compares the matching teacher
heads.
"""
from __future__ import annotations

import fnmatch

import torch
from torch import nn

from lowbit.errors import ModelError, SchemeError, ShapeError
from lowbit.scheme import DEFAULT_SKIP

PATTERNS = ("unstructured", "2:4")


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask keeping the round((1 - sparsity)·numel) largest |w| of a tensor."""
    if not 0 <= sparsity < 1:
        raise SchemeError(f"sparsity must be in [0, 1), got {sparsity}")
    keep = int(round((1 - sparsity) * w.numel()))
    mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
    mask[w.detach().abs().flatten().topk(keep).indices] = True
    return mask.reshape(w.shape)


def two_four_mask(w: torch.Tensor) -> torch.Tensor:
    """Bool mask keeping the 2 largest |w| of every 4 consecutive inputs of each row (NVIDIA 2:4 sparsity)."""
    n, k = w.shape
    if k % 4:
        raise ShapeError(f"2:4 sparsity groups 4 consecutive inputs; in_features {k} is not a multiple of 4")
    groups = w.detach().abs().reshape(n, k // 4, 4)  # (N, K/4, 4)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, groups.topk(2, dim=2).indices, True)
    return mask.reshape(n, k)


def prunable(model: nn.Module, skip: tuple[str, ...] = DEFAULT_SKIP) -> dict[str, nn.Linear]:
    """The linear layers pruning touches: all but heads / classifiers (the same default skip as quantization)."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(fnmatch.fnmatchcase(n, p) for p in skip)}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights and keep each mask as the module buffer `weight_mask`."""
    for name, mask in masks.items():
        m = model.get_submodule(name)
        if mask.shape != m.weight.shape:
            raise ShapeError(f"{name}: mask {tuple(mask.shape)} does not match weight {tuple(m.weight.shape)}")
        m.weight.mul_(mask)
        m.register_buffer("weight_mask", mask.to(m.weight.device))


def prune_magnitude(model: nn.Module, sparsity: float = 0.5, pattern: str = "unstructured") -> dict[str, float]:
    """Magnitude-prune every prunable linear layer; returns the achieved sparsity per layer.

    Args:
        sparsity: share of weights removed per layer (unstructured only; 2:4 is always 50%).
        pattern: "unstructured" | "2:4".

    Raises:
        SchemeError: unknown pattern or sparsity outside [0, 1).
        ShapeError: 2:4 on a layer whose in_features is not a multiple of 4.
    """
    if pattern not in PATTERNS:
        raise SchemeError(f"unknown pruning pattern {pattern!r}; allowed: {', '.join(PATTERNS)}")
    layers = prunable(model)
    masks = {n: two_four_mask(m.weight) if pattern == "2:4" else magnitude_mask(m.weight, sparsity)
             for n, m in layers.items()}
    apply_masks(model, masks)
    return {n: 1 - mask.float().mean().item() for n, mask in masks.items()}


def mask_grads(model: nn.Module) -> None:
    """Zero the gradients of pruned weights (call after backward)."""
    for m in model.modules():
        mask = getattr(m, "weight_mask", None)
        if mask is not None and m.weight.grad is not None:
            m.weight.grad.mul_(mask)


@torch.no_grad()
def enforce_masks(model: nn.Module) -> None:
    """Re-zero pruned weights (call after each optimizer step: weight decay and momentum must not revive them)."""
    for m in model.modules():
        mask = getattr(m, "weight_mask", None)
        if mask is not None:
            m.weight.mul_(mask)


# --- structured (BERT family) -------------------------------------------------------------------------------
def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks of a BERT-family encoder."""
    for name in ("bert.encoder.layer", "encoder.layer", "roberta.encoder.layer", "model.encoder.layer"):
        try:
            layers = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ModelError(f"{type(model).__name__}: structured pruning and layer reduction support BERT-family "
                     "encoders (a ModuleList at encoder.layer); none found")


def head_importance(attn: nn.Module, n_heads: int) -> torch.Tensor:
    """(n_heads,) magnitude importance: Σ of squared Q, K, V rows and output columns of each head."""
    sa, out = attn.self, attn.output.dense
    d = sa.query.out_features // n_heads
    rows = sum(m.weight.detach().pow(2).reshape(n_heads, d, -1).sum(dim=(1, 2)) for m in (sa.query, sa.key, sa.value))
    return rows + out.weight.detach().pow(2).reshape(out.out_features, n_heads, d).sum(dim=(0, 2))


def _slice_linear(lin: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping output rows (dim 0) or input columns (dim 1) `keep`."""
    w = lin.weight.detach().index_select(dim, keep)
    new = nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias.detach() if dim == 1 else lin.bias.detach()[keep])
    return new


@torch.no_grad()
def prune_heads(model: nn.Module, fraction: float = 0.5) -> dict[int, torch.Tensor]:
    """Remove the `fraction` least important attention heads of every layer (physically). Returns and stores
    `model.lowbit_head_map` = {layer index: kept head indices, in the layer's original head numbering}."""
    if not 0 <= fraction < 1:
        raise SchemeError(f"head pruning fraction must be in [0, 1), got {fraction}")
    head_map = dict(getattr(model, "lowbit_head_map", {}))
    for i, layer in enumerate(encoder_layers(model)):
        sa = layer.attention.self
        n = sa.query.out_features // sa.attention_head_size
        n_keep = n - int(round(fraction * n))
        if n_keep < 1:
            raise SchemeError(f"pruning {fraction:.0%} of {n} heads leaves none in layer {i}")
        keep = head_importance(layer.attention, n).topk(n_keep).indices.sort().values
        cols = (keep[:, None] * sa.attention_head_size + torch.arange(sa.attention_head_size)).flatten()
        for attr in ("query", "key", "value"):
            setattr(sa, attr, _slice_linear(getattr(sa, attr), cols, 0))
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, cols, 1)
        sa.num_attention_heads, sa.all_head_size = n_keep, n_keep * sa.attention_head_size
        prev = head_map.get(i)
        head_map[i] = keep if prev is None else prev[keep]
    model.lowbit_head_map = head_map
    return head_map


@torch.no_grad()
def prune_ffn(model: nn.Module, fraction: float = 0.5) -> int:
    """Remove the `fraction` of FFN neurons with the smallest ‖w_in‖·‖w_out‖ in every layer; returns the kept
    intermediate size."""
    if not 0 <= fraction < 1:
        raise SchemeError(f"FFN pruning fraction must be in [0, 1), got {fraction}")
    kept = 0
    for layer in encoder_layers(model):
        up, down = layer.intermediate.dense, layer.output.dense
        score = up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0)  # (I,)
        kept = up.out_features - int(round(fraction * up.out_features))
        keep = score.topk(kept).indices.sort().values
        layer.intermediate.dense, layer.output.dense = _slice_linear(up, keep, 0), _slice_linear(down, keep, 1)
    return kept

"""Per-layer sensitivity (HAWQ-V3 §3.3, PAPERS.md §6): Ω_i(f) = (Tr(H_i) / n_i) · ‖Q_f(W_i) − W_i‖².

Tr(H_i), the trace of the loss Hessian's block for layer i's weight, is estimated by Hutchinson's method:
Tr(H) ≈ (1/m) Σ_j zⱼᵀ H zⱼ with Rademacher probes z, and H z by double backpropagation (the gradient of
g·z, where g was computed with create_graph=True). One probe covers every layer at once (block-diagonal
estimates are unbiased because the probes of different layers are independent).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lowbit.nn.qlinear import _linear_weight
from lowbit.quant.qtensor import quantize_weight
from lowbit.scheme import QuantSpec


def hutchinson_trace(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], n_probes: int = 64,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate Tr(H_p) for each parameter p of a scalar loss.

    Args:
        loss_fn: recomputes the loss (called once per probe, so each probe may use another batch).
        params: tensors with requires_grad=True.
        n_probes: Rademacher probes (HAWQ: 50-200).
        seed: probe generator seed.

    Returns:
        (mean, standard error) per parameter, float64 tensors of length len(params).

    Raises:
        ValueError: no parameters, a parameter without requires_grad, or n_probes < 1.
    """
    if not params or n_probes < 1:
        raise ValueError(f"hutchinson_trace needs parameters and n_probes >= 1 (got {len(params)}, {n_probes})")
    if not all(p.requires_grad for p in params):
        raise ValueError("every parameter must have requires_grad=True")
    gen = torch.Generator().manual_seed(seed)
    samples = torch.zeros(n_probes, len(params), dtype=torch.float64)
    for j in range(n_probes):
        grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
        zs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p) for p in params]
        hz = torch.autograd.grad(sum((g * z).sum() for g, z in zip(grads, zs)), params, allow_unused=True)
        samples[j] = torch.tensor([0.0 if h is None else float((h * z).sum()) for h, z in zip(hz, zs)])
    se = samples.std(0) / n_probes**0.5 if n_probes > 1 else torch.zeros(len(params), dtype=torch.float64)
    return samples.mean(0), se


def layer_traces(model: nn.Module, names: Sequence[str], loss_fn: Callable[[nn.Module], torch.Tensor],
                 n_probes: int = 64, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Hutchinson traces of the named linear layers' weight blocks: {name: (trace, standard error)}."""
    weights = [_linear_weight(model.get_submodule(n)) for n in names]
    saved = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    try:  # fused SDPA kernels have no double backward: the math path does
        with sdpa_kernel(SDPBackend.MATH):
            mean, se = hutchinson_trace(lambda: loss_fn(model), weights, n_probes, seed)
    finally:
        for p in model.parameters():
            p.requires_grad_(saved[id(p)])
    return {n: (float(m), float(s)) for n, m, s in zip(names, mean, se)}


def quant_error(w: torch.Tensor, spec: QuantSpec, name: str = "weight") -> float:
    """‖Q(W) − W‖² (squared Frobenius norm) of round-to-nearest quantization with the spec."""
    w = w.detach().float()
    return float((quantize_weight(w, spec, name).dequantize() - w).pow(2).sum())


def omega_table(model: nn.Module, traces: dict[str, tuple[float, float]], specs: Sequence[QuantSpec]
                ) -> torch.Tensor:
    """Ω (L, F): (Tr_i / n_i) · ‖Q_f(W_i) − W_i‖² for each traced layer i and candidate weight spec f.
    Negative trace estimates (noise on near-flat layers) are clamped to 0."""
    rows = []
    for name, (tr, _) in traces.items():
        w = _linear_weight(model.get_submodule(name))
        rows.append([max(tr, 0.0) / w.numel() * quant_error(w, s, name) for s in specs])
    return torch.tensor(rows, dtype=torch.float64)

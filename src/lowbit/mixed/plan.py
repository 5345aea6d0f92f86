"""Orchestration: sensitivity → costs → ILP → a per-module override `Scheme` the quantizer applies.

Example:
    >>> result = plan_mixed(model, ["w4a16", "w8a8-int8"], {"size": 0.5}, loss_fn)
    >>> quantize(model, result.scheme, calib)          # the plan travels in the checkpoint's scheme
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from lowbit.mixed.costs import Layer, cost_table
from lowbit.mixed.ilp import PlanError, Solution, budget_limit, solve
from lowbit.mixed.sensitivity import layer_traces, omega_table
from lowbit.nn.convert import plan as conversion_plan
from lowbit.scheme import Override, Scheme, get_scheme


@dataclass
class MixedResult:
    names: list[str]
    schemes: list[Scheme]
    traces: dict[str, tuple[float, float]]
    omega: torch.Tensor
    costs: dict[str, torch.Tensor]
    limits: dict[str, float]
    solution: Solution
    scheme: Scheme
    ties: list[list[int]] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| layer | trace ± se | " + " | ".join(f"Ω {s.name}" for s in self.schemes) + " | chosen |",
                 "|---|---|" + "---|" * len(self.schemes) + "---|"]
        for i, n in enumerate(self.names):
            tr, se = self.traces[n]
            om = " | ".join(f"{float(v):.3g}" for v in self.omega[i])
            lines.append(f"| {n} | {tr:.3g} ± {se:.2g} | {om} | {self.schemes[self.solution.choice[i]].name} |")
        return "\n".join(lines)


def to_scheme(names: list[str], schemes: list[Scheme], choice, name: str = "mixed") -> Scheme:
    """The plan as one Scheme: the first candidate is the base, every layer gets an exact-name override."""
    base = schemes[0]
    overrides = tuple(Override(pattern=f"re:^{re.escape(n)}$", weights=schemes[c].weights,
                               activations=schemes[c].activations, keep_activations_fp=schemes[c].activations is None)
                      for n, c in zip(names, choice))
    return Scheme(name, base.weights, base.activations, overrides=overrides, skip=base.skip)


def qkv_ties(names: list[str]) -> list[list[int]]:
    """Tie q/k/v of each attention block (one fused GEMM in the kernels reads one format)."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        m = re.match(r"(.*)\.(query|key|value|q_proj|k_proj|v_proj)$", n)
        if m:
            groups.setdefault(m.group(1), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def plan_mixed(model: nn.Module, formats: list[str | Scheme], budgets: dict[str, float], loss_fn, n_probes: int = 32,
               tokens: int = 4096, latency_table: dict | None = None, tie_qkv: bool = False,
               seed: int = 0) -> MixedResult:
    """Hessian-aware mixed precision for a full-precision model.

    Args:
        formats: candidate presets (or YAML paths), e.g. ["w4a8-fp", "w8a8-fp8"].
        budgets: {"size" | "bops" | "latency": ratio in [0, 1]} (see :func:`lowbit.mixed.ilp.budget_limit`).
        loss_fn: loss_fn(model) -> scalar loss whose Hessian measures sensitivity.
        n_probes: Hutchinson probes.
        tokens: M of the layer GEMMs for BOPs and latency.

    Raises:
        PlanError: fewer than two formats, unknown budget names, or infeasible budgets.
    """
    if len(formats) < 2:
        raise PlanError(f"mixed precision needs at least two candidate formats, got {formats}")
    schemes = [get_scheme(f) for f in formats]
    planned = conversion_plan(model, schemes[0]).quantized
    names = [p.name for p in planned]
    for s in schemes[1:]:  # every candidate must fit every layer (e.g. group sizes)
        conversion_plan(model, s.replace(skip=schemes[0].skip))
    layers = [Layer(p.name, p.out_features, p.in_features) for p in planned]
    costs = cost_table(layers, schemes, tokens, latency_table)
    unknown = sorted(set(budgets) - set(costs))
    if unknown:
        raise PlanError(f"unknown budget(s) {unknown}; choose from {', '.join(costs)}")
    limits = {k: budget_limit(costs[k], r) for k, r in budgets.items()}
    traces = layer_traces(model, names, loss_fn, n_probes, seed)
    omega = omega_table(model, traces, [s.weights for s in schemes])
    ties = qkv_ties(names) if tie_qkv else []
    sol = solve(omega, costs, limits, ties)
    tag = ",".join(f"{k}={v}" for k, v in budgets.items())
    return MixedResult(names, schemes, traces, omega, costs, limits, sol,
                       to_scheme(names, schemes, sol.choice, f"mixed[{'|'.join(s.name for s in schemes)}; {tag}]"), ties)

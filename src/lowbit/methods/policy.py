"""FPTQ's layer-wise activation policy (PAPERS.md §3): per linear layer, from its calibrated input range
r = max|X| over the calibration set,

    r <  v0          per-tensor static activations (the fastest kernel)
    v0 <= r < v1     LAE folded into the preceding norm, then per-tensor static (only where LAE can be folded:
                     QKV and up/gate; elsewhere per-token dynamic)
    r >= v1          per-token dynamic activations

v0 = 15, v1 = 150 are the paper's values for LLaMA-7B; they are model-dependent, so the "percentile" rule
takes them as percentiles (p0, p1) of the layers' ranges instead. The activation format (INT8 or FP8) is the
scheme's. Calibration may be real text or random tokens (the paper found random tokens often best).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from lowbit.errors import SchemeError
from lowbit.methods import MethodContext, register_method
from lowbit.methods.equalize import channel_absmax, equalize, planned_groups
from lowbit.methods.gptq import method_args
from lowbit.scheme import QuantSpec

RULES = ("fixed", "percentile")
MODES = ("static", "lae+static", "dynamic")


@dataclass(frozen=True)
class FPTQArgs:
    rule: str = "fixed"
    v0: float = 15.0
    v1: float = 150.0
    p0: float = 50.0
    p1: float = 90.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise SchemeError(f"fptq rule {self.rule!r} unknown; allowed: {', '.join(RULES)}")
        if not 0 <= self.v0 <= self.v1:
            raise SchemeError(f"fptq thresholds need 0 <= v0 <= v1, got v0={self.v0}, v1={self.v1}")
        if not 0 <= self.p0 <= self.p1 <= 100:
            raise SchemeError(f"fptq percentiles need 0 <= p0 <= p1 <= 100, got p0={self.p0}, p1={self.p1}")


def thresholds(ranges: dict[str, float], args: FPTQArgs) -> tuple[float, float]:
    """(v0, v1): fixed, or the p0-th / p1-th percentiles of the layers' ranges."""
    if args.rule == "fixed":
        return args.v0, args.v1
    r = torch.tensor(sorted(ranges.values()), dtype=torch.float64)
    return float(torch.quantile(r, args.p0 / 100)), float(torch.quantile(r, args.p1 / 100))


def layer_modes(ranges: dict[str, float], foldable: set[str], v0: float, v1: float) -> dict[str, str]:
    """The FPTQ decision per layer (see the module docstring)."""
    modes = {}
    for name, r in ranges.items():
        if r < v0:
            modes[name] = "static"
        elif r < v1 and name in foldable:
            modes[name] = "lae+static"
        else:
            modes[name] = "dynamic"
    return modes


def act_spec(base: QuantSpec, mode: str) -> QuantSpec:
    """The activation spec of a mode, in the scheme's activation format and observer."""
    if mode == "dynamic":
        return dataclasses.replace(base, granularity="token", dynamic=True)
    return dataclasses.replace(base, granularity="tensor", dynamic=False)


@register_method("fptq")
def fptq(model: nn.Module, scheme, ctx: MethodContext) -> None:
    """Apply the FPTQ policy: LAE on the groups that need it, and per-layer activation specs in the plan.

    The decisions (range, mode, thresholds) go to `ctx.extras["fptq"]`.

    Raises:
        SchemeError: the scheme has no activation quantization (the policy chooses how activations are
            quantized), or bad method_args.
    """
    args = method_args(scheme, "fptq", FPTQArgs)
    if scheme.activations is None:
        raise SchemeError("method 'fptq' picks each layer's activation quantization: use a scheme with "
                          "activations (e.g. w4a8-int), not a weight-only one")
    groups = planned_groups(model, ctx)
    planned = [p for p in ctx.report.quantized if p.act_spec is not None]
    stats = channel_absmax(model, [p.name for p in planned], ctx.calib_batches, args.device, ctx.progress)
    ranges = {n: float(s.max()) for n, s in stats.items()}
    v0, v1 = thresholds(ranges, args)
    group_of = {lin: g for g in groups for lin in g.linears}
    modes = layer_modes(ranges, set(group_of), v0, v1)
    # LAE is per input: a group is equalized when its (shared) input asks for it
    chosen = [g for g in groups if modes[g.linears[0]] == "lae+static"]
    equalize(model, chosen, stats, "lae")
    ctx.report.quantized = [dataclasses.replace(p, act_spec=act_spec(p.act_spec, modes[p.name]))
                            if p.act_spec is not None else p for p in ctx.report.quantized]
    ctx.extras["fptq"] = {"v0": v0, "v1": v1, "layers": {n: {"range": ranges[n], "mode": modes[n]} for n in ranges}}

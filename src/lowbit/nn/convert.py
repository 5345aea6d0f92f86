"""Model surgery: decide which modules are quantized (a plan, with reasons for every skip), then swap them."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lowbit.errors import ModelError
from lowbit.nn.qlinear import QuantLinear, is_linear
from lowbit.quant.qtensor import QTensor, empty_storage
from lowbit.scheme import QuantSpec, Scheme


@dataclass(frozen=True)
class PlannedModule:
    name: str
    weight_spec: QuantSpec
    act_spec: QuantSpec | None
    in_features: int
    out_features: int


@dataclass
class ConversionReport:
    """What `quantize` did: every quantized module and every skipped module with its reason."""

    scheme: str
    quantized: list[PlannedModule] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"scheme {self.scheme}: {len(self.quantized)} linear layers quantized, {len(self.skipped)} "
                 "modules kept in higher precision"]
        by_spec: dict[str, int] = {}
        for p in self.quantized:
            key = f"W {p.weight_spec.describe()} | A {p.act_spec.describe() if p.act_spec else 'bf16/fp32'}"
            by_spec[key] = by_spec.get(key, 0) + 1
        lines += [f"  quantized {n:4d} x {k}" for k, n in by_spec.items()]
        lines += [f"  skipped   {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


SKIPPED_TYPES = {nn.Embedding: "embedding: kept in higher precision by design",
                 nn.LayerNorm: "norm: kept in higher precision by design",
                 nn.Conv2d: "Conv2d (e.g. ViT patch embedding) is not a Linear layer; kept in full precision"}


def plan(model: nn.Module, scheme: Scheme) -> ConversionReport:
    """Which linear layers the scheme quantizes, with which specs; reasons for everything left alone.

    Raises:
        ModelError: the model has no linear layer the scheme would quantize.
        ShapeError: a layer's shape does not fit its spec (e.g. group size not dividing in_features).
    """
    report = ConversionReport(scheme.name)
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear):
            raise ModelError(f"{name} is already quantized; start from the full-precision model")
        if is_linear(mod):
            _plan_linear(report, scheme, name, mod)
        elif type(mod) in SKIPPED_TYPES or "RMSNorm" in type(mod).__name__:
            report.skipped.append((name, SKIPPED_TYPES.get(type(mod), "norm: kept in higher precision by design")))
    if not report.quantized:
        kinds = sorted({type(m).__name__ for m in model.modules()})[:12]
        raise ModelError(f"{type(model).__name__} has no linear layer to quantize with scheme {scheme.name!r} "
                         f"(module types seen: {', '.join(kinds)}); lowbit quantizes nn.Linear and GPT-2 Conv1D")
    return report


def _plan_linear(report: ConversionReport, scheme: Scheme, name: str, mod: nn.Module) -> None:
    resolved = scheme.resolve(name)
    if isinstance(resolved, str):
        report.skipped.append((name, resolved))
        return
    w_spec, a_spec = resolved
    n, k = (mod.out_features, mod.in_features) if isinstance(mod, nn.Linear) else (mod.nf, mod.weight.shape[0])
    empty_storage(w_spec, n, k, name)  # validates group size / packing against the shape, with a clear error
    report.quantized.append(PlannedModule(name, w_spec, a_spec, k, n))


def convert(model: nn.Module, report: ConversionReport,
            act_ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
            qweights: dict[str, QTensor] | None = None) -> nn.Module:
    """Replace each planned module by a QuantLinear (RTN unless `qweights` provides the quantized weight)."""
    act_ranges, qweights = act_ranges or {}, qweights or {}
    for p in report.quantized:
        parent, attr = _parent(model, p.name)
        old = getattr(parent, attr)
        new = QuantLinear.from_float(old, p.weight_spec, p.act_spec, p.name, act_ranges.get(p.name),
                                     qweights.get(p.name))
        setattr(parent, attr, new)
    return model


def build_shells(model: nn.Module, modules: list[PlannedModule]) -> nn.Module:
    """Put empty QuantLinear layers where a checkpoint says they are (its state dict fills them)."""
    for p in modules:
        parent, attr = _parent(model, p.name)
        old = getattr(parent, attr, None)
        if old is None or not is_linear(old):
            raise ModelError(f"checkpoint names module {p.name!r}, which is not a linear layer of this model")
        dtype = old.weight.dtype
        setattr(parent, attr, QuantLinear(p.in_features, p.out_features, p.weight_spec, p.act_spec,
                                          bias=old.bias is not None, dtype=dtype))
    return model


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr

"""QATLinear (a fake-quantized nn.Linear), `prepare` (model surgery in) and `convert` (to packed QuantLinear).

`prepare` uses the same `plan` as PTQ, so the same layers are quantized with the same specs and every skip
has its reason in the report; `convert` hands the learned scales to `quantize_weight` and the learned static
activation scales to `QuantLinear.from_float`, so the converted model computes what the QAT model computed.
"""
from __future__ import annotations

import torch
from torch import nn

from lowbit.errors import ModelError
from lowbit.nn.convert import ConversionReport, _parent, convert as convert_ptq, plan
from lowbit.qat.quantizers import ActQuantizer, WeightQuantizer
from lowbit.quant.qtensor import quantize_weight
from lowbit.scheme import QuantSpec, Scheme, get_scheme


class QATLinear(nn.Linear):
    """y = fakequant(x) @ fakequant(W).T + b, computed in float32 exactly as `QuantLinear.reference_forward`.

    Subclasses nn.Linear so the converter and pruning treat it as the linear layer it stands for. A pruning
    mask (buffer `weight_mask`, see `lowbit.qat.prune`) travels with the weight.
    """

    def __init__(self, in_features: int, out_features: int, weight_spec: QuantSpec, act_spec: QuantSpec | None,
                 weight: torch.Tensor, bias: torch.Tensor | None, grad: str = "lsq", name: str = "") -> None:
        super().__init__(in_features, out_features, bias=bias is not None, device=weight.device,
                         dtype=weight.dtype)
        with torch.no_grad():
            self.weight.copy_(weight)
            if bias is not None:
                self.bias.copy_(bias)
        self.weight_spec, self.act_spec, self.name, self.grad = weight_spec, act_spec, name, grad
        self.wq = WeightQuantizer(weight_spec, self.weight, grad, name)
        self.aq = ActQuantizer(act_spec, grad, name)

    @classmethod
    def from_linear(cls, module: nn.Linear, weight_spec: QuantSpec, act_spec: QuantSpec | None,
                    grad: str = "lsq", name: str = "") -> "QATLinear":
        if not isinstance(module, nn.Linear):
            raise ModelError(f"{name}: QAT wraps nn.Linear layers, got {type(module).__name__} (GPT-2 Conv1D "
                             "layers are not supported by QAT yet)")
        q = cls(module.in_features, module.out_features, weight_spec, act_spec, module.weight.detach(),
                None if module.bias is None else module.bias.detach(), grad, name)
        mask = getattr(module, "weight_mask", None)
        if mask is not None:
            q.register_buffer("weight_mask", mask.clone())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aq(x) @ self.wq(self.weight).t()  # (…, N) float32, as QuantLinear.reference_forward
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        a = self.act_spec.describe() if self.act_spec else "none"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weights={self.weight_spec.describe()}, activations={a}, scale_grad={self.grad}")


def prepare(model: nn.Module, scheme: str | Scheme, grad: str = "lsq") -> ConversionReport:
    """Replace every linear layer the scheme quantizes by a QATLinear (in place).

    Args:
        model: a full-precision model (pruned / layer-reduced already, if wanted).
        scheme: preset name, YAML path or Scheme; the same object PTQ uses.
        grad: scale gradient, "lsq" | "mkq" | "minmax" (see `lowbit.qat.quantizers`).

    Returns:
        The conversion plan (quantized layers and skipped modules with reasons); also `model.lowbit_report`.

    Raises:
        SchemeError, ShapeError, ModelError: unknown scheme or gradient, shapes that do not fit the specs.

    Example:
        >>> report = prepare(model, "w4a4-int", grad="lsq")   # then train, then convert(model)
    """
    scheme = get_scheme(scheme)
    if any(isinstance(m, QATLinear) for m in model.modules()):
        raise ModelError("the model is already prepared for QAT")
    report = plan(model, scheme)
    for p in report.quantized:
        parent, attr = _parent(model, p.name)
        setattr(parent, attr, QATLinear.from_linear(getattr(parent, attr), p.weight_spec, p.act_spec, grad, p.name))
    model.lowbit_report, model.lowbit_scheme = report, scheme
    return report


def qat_modules(model: nn.Module) -> dict[str, QATLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QATLinear)}


@torch.no_grad()
def convert(model: nn.Module) -> nn.Module:
    """Turn a trained QAT model into packed QuantLinear layers (in place), with the learned scales.

    Raises:
        ModelError: the model was not prepared with `prepare`.
    """
    mods = qat_modules(model)
    if not mods:
        raise ModelError("convert() takes a model prepared by lowbit.qat.prepare (it has no QATLinear layer)")
    qweights, act_ranges = {}, {}
    for name, m in mods.items():
        z = m.wq.zero
        qweights[name] = quantize_weight(m.weight.detach(), m.weight_spec, name, scale=m.wq.step(m.weight).detach(),
                                         zero=z)
        if m.aq.static:
            act_ranges[name] = (m.aq.step().detach().float(), torch.zeros(()))
    report = model.lowbit_report
    report.quantized = [p for p in report.quantized if p.name in mods]
    convert_ptq(model, report, act_ranges, qweights)
    model.lowbit_extras = {}
    return model


def fit_group_size(model: nn.Module, scheme: str | Scheme) -> tuple[Scheme, list[str]]:
    """The scheme with overrides for layers whose in_features the weight group size does not divide (e.g.
    attention outputs after head pruning: 6 heads x 32 = 192 inputs with g = 128): they get the largest power-
    of-two group size that divides (64 here). Returns the scheme and one line per override, to report."""
    import dataclasses

    from lowbit.scheme import Override

    scheme = get_scheme(scheme)
    extra, notes = [], []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        resolved = scheme.resolve(name)
        if isinstance(resolved, str) or resolved[0].granularity != "group":
            continue
        w, k = resolved[0], m.in_features
        if k % w.group_size == 0:
            continue
        g = max((d for d in range(2, w.group_size + 1) if k % d == 0 and d & (d - 1) == 0), default=None)
        new = dataclasses.replace(w, group_size=g) if g else dataclasses.replace(w, granularity="channel",
                                                                                 group_size=None)
        extra.append(Override(pattern=name, weights=new))
        notes.append(f"{name}: in_features {k} not divisible by group {w.group_size}; using {new.describe()}")
    return scheme.replace(overrides=tuple(extra) + scheme.overrides, name=scheme.name), notes

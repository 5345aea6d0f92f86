"""Accuracy-preserving methods, run by `quantize` in the order a scheme lists them.

A method is `fn(model, scheme, ctx) -> None` registered under a name. It may change the float model in place
(equalization, rotation: function-preserving rewrites) and/or fill `ctx.qweights[name]` with an already
quantized weight (GPTQ) that conversion then uses instead of round-to-nearest. Round-to-nearest ("rtn") is what
conversion does by default, so it needs no entry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lowbit.errors import SchemeError
from lowbit.nn.convert import ConversionReport
from lowbit.quant.qtensor import QTensor


@dataclass
class MethodContext:
    """What methods share: the plan, calibration batches, and results for conversion."""

    report: ConversionReport
    calib_batches: list[dict[str, torch.Tensor]] | None
    progress: bool = True
    qweights: dict[str, QTensor] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


Method = Callable[[nn.Module, Any, MethodContext], None]
METHODS: dict[str, Method] = {}


def register_method(name: str) -> Callable[[Method], Method]:
    def deco(fn: Method) -> Method:
        METHODS[name] = fn
        return fn
    return deco


def get_method(name: str) -> Method:
    _load_builtin()
    if name == "rtn":
        return lambda model, scheme, ctx: None
    try:
        return METHODS[name]
    except KeyError:
        raise SchemeError(f"unknown method {name!r}; known methods: rtn, {', '.join(sorted(METHODS))}") from None


def _load_builtin() -> None:
    """Import the modules that register methods (each registers itself on import)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")

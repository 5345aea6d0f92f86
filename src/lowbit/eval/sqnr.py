"""Per-layer signal-to-quantization-noise ratio between a quantized model and its full-precision twin.

Both models run the same batches; a forward hook on each same-named module collects
``||ref||^2`` and ``||ref - q||^2`` of its output, summed over batches, and
``SQNR = 10 log10(||ref||^2 / ||ref - q||^2)`` dB. The quantized model runs on its own activations, so a
layer's SQNR includes the error that earlier layers passed on to it: it is the damage seen at that point of
the network, which is what the task metric ends up seeing.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from lowbit.errors import CalibrationError, ModelError

_LINEAR_NAMES = ("Linear", "Conv1D", "QuantLinear")


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    """``10 log10(||ref||^2 / ||ref - test||^2)`` in dB; ``inf`` when equal."""
    ref, test = ref.double(), test.double()
    return _db(float(ref.square().sum()), float((ref - test).square().sum()))


def _db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def default_layer_names(model_q: torch.nn.Module, model_fp: torch.nn.Module) -> list[str]:
    """The modules to compare by default: those whose class differs between the models (the converted
    layers); if none does, every linear-like module (Linear, GPT-2 Conv1D, QuantLinear) in both."""
    fp_modules = dict(model_fp.named_modules())
    shared = [(name, module) for name, module in model_q.named_modules() if name and name in fp_modules]
    converted = [name for name, module in shared if type(module) is not type(fp_modules[name])]
    return converted or [name for name, module in shared if type(module).__name__ in _LINEAR_NAMES]


def _first_tensor(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


@torch.no_grad()
def layer_sqnr(model_q: torch.nn.Module, model_fp: torch.nn.Module, batches: Sequence[dict],
               names: Iterable[str] | None = None, progress: bool = True) -> dict[str, float]:
    """SQNR in dB of each named module's output, quantized vs full precision, over the batches.

    Args:
        model_q: the quantized model.
        model_fp: the full-precision model it was made from (same module names).
        batches: model keyword-argument dicts, e.g. from :func:`lowbit.data.calibration_batches`.
        names: modules to compare; default every linear-like module present in both models.
        progress: show a progress bar over batches.

    Returns:
        ``{module name: SQNR dB}`` in module order (``inf`` where the outputs are identical).

    Raises:
        CalibrationError: no batches.
        ModelError: no module to compare, a name missing from either model, or a module that ran in
            one model and not the other (the two do not share an architecture).

    Example:
        >>> worst = min(layer_sqnr(q, fp, batches).items(), key=lambda kv: kv[1])
    """
    if len(batches) == 0:
        raise CalibrationError("layer_sqnr needs at least one batch")
    names = list(names) if names is not None else default_layer_names(model_q, model_fp)
    known = set(dict(model_q.named_modules())) & set(dict(model_fp.named_modules()))
    missing = [n for n in names if n not in known]
    if not names or missing:
        raise ModelError(f"layer_sqnr has no modules to compare (missing in one model: {missing[:5]})")
    meter = _Meter(names)
    fp_modules, q_modules = dict(model_fp.named_modules()), dict(model_q.named_modules())
    handles = [fp_modules[n].register_forward_hook(meter.keep(n)) for n in names]
    handles += [q_modules[n].register_forward_hook(meter.compare(n)) for n in names]
    try:
        for batch in tqdm(batches, desc="layer SQNR", disable=not progress, leave=False):
            model_fp(**batch)
            model_q(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: _db(meter.signal[name], meter.noise[name]) for name in names}


class _Meter:
    """Hook factory: the fp model's outputs wait in ``reference`` until the quantized model's same-named
    module runs; they are compared then and dropped, so only one model's outputs are ever held."""

    def __init__(self, names: Sequence[str]):
        self.signal, self.noise = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        self.reference: dict[str, torch.Tensor] = {}

    def keep(self, name: str):
        def hook(_module, _inputs, output):
            self.reference[name] = _first_tensor(output).detach()
        return hook

    def compare(self, name: str):
        def hook(_module, _inputs, output):
            if name not in self.reference:
                raise ModelError(f"module {name!r} ran in the quantized model but not in the reference")
            ref, test = self.reference.pop(name).double(), _first_tensor(output).double()
            self.signal[name] += float(ref.square().sum())
            self.noise[name] += float((ref - test).square().sum())
        return hook

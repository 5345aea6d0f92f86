"""Calibration: run batches through the model with hooks on the planned layers' inputs.

Checks every activation for NaN/Inf (naming the layer and batch), and feeds static activation observers.
"""
from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from lowbit.errors import CalibrationError
from lowbit.quant.observers import choose_scale
from lowbit.scheme import QuantSpec

RESERVOIR = 1 << 16  # values kept per layer for percentile / MSE observers


class ActObserver:
    """Static per-tensor range of one layer's input over calibration batches."""

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec
        self.lo = torch.tensor(0.0)
        self.hi = torch.tensor(0.0)
        self.sample: torch.Tensor | None = None
        self.gen = torch.Generator().manual_seed(0)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1).cpu()
        self.lo, self.hi = torch.minimum(self.lo, x.min()), torch.maximum(self.hi, x.max())
        if self.spec.observer != "minmax":
            take = x[torch.randint(len(x), (min(len(x), RESERVOIR),), generator=self.gen)]
            self.sample = take if self.sample is None else torch.cat([self.sample, take])
            if len(self.sample) > 4 * RESERVOIR:
                keep = torch.randperm(len(self.sample), generator=self.gen)[:RESERVOIR]
                self.sample = self.sample[keep]

    def scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.observer == "minmax":
            data = torch.stack([self.lo, self.hi])[None]  # (1, 2): the range is all min-max needs
        else:
            data = self.sample[None]
        s, z = choose_scale(data, self.spec)
        return s.reshape(()), (torch.zeros(()) if z is None else z.reshape(()))


def as_batches(calib_data) -> list[dict[str, torch.Tensor]]:
    """Accept a list of model-kwarg dicts, or tensors of input_ids; raise on empty data."""
    if calib_data is None:
        raise CalibrationError("no calibration data given")
    batches = [b if isinstance(b, dict) else {"input_ids": b} for b in calib_data]
    if not batches or all(_numel(b) == 0 for b in batches):
        raise CalibrationError("the calibration data is empty: give at least one non-empty batch "
                               "(e.g. --calib wiki, a .txt or .jsonl file, or random tokens)")
    return batches


def _numel(batch: dict) -> int:
    return sum(v.numel() for v in batch.values() if isinstance(v, torch.Tensor))


@contextmanager
def input_hooks(model: nn.Module, names: Iterable[str], fn):
    """Call fn(name, input_tensor) on each named module's first positional input."""
    handles = [model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: fn(n, a[0])) for n in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_batches(model: nn.Module, batches: list[dict[str, torch.Tensor]], progress: bool = True,
                desc: str = "calibrating", on_batch=None) -> None:
    """Forward every batch (moved to the model's device) without gradients, with a progress bar."""
    device = next(model.parameters()).device
    with torch.no_grad():
        for i, b in enumerate(tqdm(batches, desc=desc, disable=not progress, leave=False)):
            if on_batch is not None:
                on_batch(i)
            model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()})


class _Watch:
    """The hook both calibration passes install: NaN/Inf check naming the layer (and batch, when known), the
    static-range observers, and which layers were reached."""

    def __init__(self, planned: dict[str, QuantSpec | None]):
        self.observers = {n: ActObserver(s) for n, s in planned.items() if s is not None and not s.dynamic}
        self.reached: set[str] = set()
        self.where = "calibration"

    def __call__(self, name: str, x: torch.Tensor) -> None:
        if not torch.isfinite(x).all():
            raise CalibrationError(f"{self.where}: the input of {name} holds NaN or Inf; check the calibration data "
                                   "and the model in full precision first")
        self.reached.add(name)
        if name in self.observers:
            self.observers[name].update(x)

    def scales(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {n: o.scale() for n, o in self.observers.items()}


def calibrate(model: nn.Module, planned: dict[str, QuantSpec | None], calib_data,
              progress: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Observe the inputs of the planned layers; return {name: (scale, zero)} for static activation specs.

    Args:
        planned: layer name -> its activation spec (None for weight-only layers, which are only checked).

    Raises:
        CalibrationError: empty data, or a NaN/Inf activation (the message names the layer and batch).
    """
    batches = as_batches(calib_data)
    watch = _Watch(planned)
    with input_hooks(model, planned, watch):
        run_batches(model, batches, progress, on_batch=lambda i: setattr(watch, "where", f"calibration batch {i}"))
    return watch.scales()


def calibrate_blockwise(model: nn.Module, planned: dict[str, QuantSpec | None], calib_data, device,
                        progress: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`calibrate`, one transformer block on `device` at a time (lowbit.methods.sequential), for models larger
    than the device's memory: same observers, same NaN/Inf checks, same result.

    Raises:
        CalibrationError: as `calibrate`; also when a planned layer lies outside the model's blocks (it would
            need the whole model on the device) or the data never reaches it.
    """
    from lowbit.methods.sequential import sequential_blocks  # lazy: lowbit.methods imports this module

    batches = as_batches(calib_data)
    watch = _Watch(planned)
    name_of = {id(m): n for n, m in model.named_modules()}
    for _, block, run in sequential_blocks(model, batches, device, progress, "calibrating", reuse_outputs=True):
        prefix = name_of[id(block)]
        inside = [n for n in planned if block is model or n == prefix or n.startswith(prefix + ".")]
        with input_hooks(model, inside, watch):
            run()
    missing = sorted(set(planned) - watch.reached)
    if missing:
        raise CalibrationError(f"block-by-block calibration never reached {missing[:3]} (outside the transformer "
                               "blocks, or unused by the data): keep such layers unquantized, or calibrate "
                               "without a block device")
    return watch.scales()

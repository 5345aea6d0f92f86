"""Block-by-block calibration: one transformer block on the compute device at a time (DESIGN.md, "Scaling
past one machine"; the GPTQ paper's sequential recipe).

The model stays where it is (usually CPU memory); only the modules outside the blocks (embeddings, rotary
tables, final norm, head: small) and the current block are moved to `device`. The calibration batches are run
once up to the first block, its inputs cached on `device`; then, block by block, a consumer observes the
block's layers (hooks + `run()`), may change the block's weights, and the block's outputs under those weights
become the next block's inputs. Peak device memory: one block + the cached hidden states of the calibration set
(+ what the consumer keeps, e.g. Hessians).

Models whose family `lowbit.models.blocks` does not know are run whole, as a single "block", on `device`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from lowbit.models import blocks as model_blocks
from lowbit.quant.calibrate import as_batches

Batch = dict[str, torch.Tensor]


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass at the first block."""


def _block_list(model: nn.Module) -> nn.ModuleList | None:
    try:
        return model_blocks(model)
    except ValueError:
        return None


def _move_outside(model: nn.Module, inside: nn.ModuleList, device: torch.device) -> None:
    """Move every parameter and buffer that is not inside `inside` to `device` (tied parameters stay tied:
    `.data` is replaced on the shared Parameter object)."""
    skip = {id(t) for t in [*inside.parameters(), *inside.buffers()]}
    for mod in model.modules():
        for p in mod._parameters.values():
            if p is not None and id(p) not in skip and p.device != device:
                p.data = p.data.to(device)
        for key, b in mod._buffers.items():
            if b is not None and id(b) not in skip and b.device != device:
                mod._buffers[key] = b.to(device)


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def capture_block_inputs(model: nn.Module, layers: nn.ModuleList, batches: list[Batch],
                         device: torch.device) -> tuple[list[tuple], list[dict]]:
    """Positional args and keyword args that the first block receives, one entry per batch, on `device`."""
    args_seen: list[tuple] = []
    kwargs_seen: list[dict] = []

    def hook(mod, args, kwargs):
        args_seen.append(args)
        kwargs_seen.append(kwargs)
        raise _Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for b in batches:
                try:
                    extra = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
                    model(**_to(b, device), **extra)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return args_seen, kwargs_seen


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def sequential_blocks(model: nn.Module, batches: list[Batch], device: str | torch.device = "cpu",
                      progress: bool = True, desc: str = "blocks", reuse_outputs: bool = False
                      ) -> Iterator[tuple[int, nn.Module, Callable[[], None]]]:
    """Yield `(index, block, run)` for each block in order, with the block on `device`.

    `run()` forwards every cached calibration input through the block (hooks the consumer registered fire).
    When the consumer resumes the iteration, the block's outputs under its current weights are computed and
    cached as the next block's inputs, and the block goes back to where it was. With `reuse_outputs` (for
    consumers that only observe), the outputs of the consumer's last `run()` are reused instead.

    Example:
        >>> for i, block, run in sequential_blocks(model, batches, "cuda"):
        ...     with input_hooks(block, names, observe):
        ...         run()
    """
    device = torch.device(device)
    batches = as_batches(batches)
    layers = _block_list(model)
    if layers is None:  # unknown family: the whole model is one block
        home = next(model.parameters()).device
        model.to(device)

        def run_whole() -> None:
            with torch.no_grad():
                for b in batches:
                    model(**_to(b, device))

        yield 0, model, run_whole
        model.to(home)
        return
    outside_home = next((p.device for n, p in model.named_parameters() if not _inside(model, layers, p)), device)
    _move_outside(model, layers, device)
    args, kwargs = capture_block_inputs(model, layers, batches, device)
    for i, block in enumerate(tqdm(layers, desc=desc, disable=not progress, leave=False)):
        home = next(block.parameters()).device
        block.to(device)

        last: list = []

        def run(block=block, last=last) -> list:
            with torch.no_grad():
                last[:] = [_first(block(*a, **kw)) for a, kw in zip(args, kwargs)]
            return last

        yield i, block, run
        outs = last if reuse_outputs and last else run()
        args = [(o, *a[1:]) for o, a in zip(outs, args)]
        block.to(home)
    del args, kwargs
    _move_outside(model, layers, outside_home)


def _inside(model: nn.Module, layers: nn.ModuleList, p: torch.Tensor) -> bool:
    return any(p is q for q in layers.parameters())

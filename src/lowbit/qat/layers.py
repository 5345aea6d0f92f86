"""Layer reduction: keep every k-th transformer block (initialised from the teacher), then distil.

As in the INT4 paper's composability study (PAPERS.md §1) and DeepSpeed's layer-reduction configs: the student
keeps blocks k-1, 2k-1, … (the last block is always kept), and `model.lowbit_layer_map[j]` names the teacher
block that student block j distils from.
"""
from __future__ import annotations

from torch import nn

from lowbit.errors import SchemeError
from lowbit.qat.prune import encoder_layers


def kept_layers(n_layers: int, k: int) -> list[int]:
    """Indices of the blocks kept when keeping every k-th of n (k-1, 2k-1, …)."""
    if not isinstance(k, int) or k < 1 or k > n_layers:
        raise SchemeError(f"keep-every must be an integer in [1, {n_layers}] for a {n_layers}-layer model, got {k!r}")
    return list(range(k - 1, n_layers, k))


def keep_every(model: nn.Module, k: int) -> list[int]:
    """Drop all but every k-th block of a BERT-family encoder (in place); returns and stores the layer map."""
    layers = encoder_layers(model)
    old_map = list(getattr(model, "lowbit_layer_map", range(len(layers))))
    keep = kept_layers(len(layers), k)
    kept = [layers[i] for i in keep]
    del layers[:]  # in place: the encoder holds this ModuleList
    layers.extend(kept)
    if hasattr(model, "config"):
        model.config.num_hidden_layers = len(keep)
    head_map = getattr(model, "lowbit_head_map", None)
    if head_map:
        model.lowbit_head_map = {j: head_map[i] for j, i in enumerate(keep) if i in head_map}
    model.lowbit_layer_map = [old_map[i] for i in keep]
    return model.lowbit_layer_map

"""One small adapter per model family: which family a model is, and its transformer blocks in order.

Conversion itself is generic (every nn.Linear / Conv1D, minus the scheme's skips); adapters give the block
structure that sequential methods (GPTQ, equalization, layer reduction) walk.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # encoder | decoder | vision
    blocks_path: tuple[str, ...]  # candidate attribute paths to the ModuleList of blocks


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("bert", "encoder", ("encoder.layer", "bert.encoder.layer")),
    Family("roberta", "encoder", ("encoder.layer", "roberta.encoder.layer")),
    Family("xlm-roberta", "encoder", ("encoder.layer", "roberta.encoder.layer")),
    Family("mpnet", "encoder", ("encoder.layer", "mpnet.encoder.layer")),
    Family("gpt2", "decoder", ("transformer.h", "h")),
    Family("llama", "decoder", ("model.layers", "layers")),
    Family("qwen2", "decoder", ("model.layers", "layers")),
    Family("qwen3", "decoder", ("model.layers", "layers")),
    Family("mistral", "decoder", ("model.layers", "layers")),
    Family("vit", "vision", ("encoder.layer", "vit.encoder.layer")),
)}


def family_of(model: nn.Module) -> Family | None:
    """The adapter for a transformers model, or None for an untested family (converted generically)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return FAMILIES.get(model_type)


def blocks(model: nn.Module) -> nn.ModuleList:
    """The model's transformer blocks, in order.

    Raises:
        ValueError: the family is unknown or its blocks cannot be found.
    """
    fam = family_of(model)
    if fam is None:
        raise ValueError(f"{type(model).__name__}: unknown model family; supported: {', '.join(FAMILIES)}")
    for path in fam.blocks_path:
        try:
            found = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, nn.ModuleList):
            return found
    raise ValueError(f"{type(model).__name__}: no block list at {fam.blocks_path}")

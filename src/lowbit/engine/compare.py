"""Layer-by-layer diagnostics of the encoder engine (issue 4; driven by benchmarks/encoder_h100.py).

`compare_layers` runs layer i of two engines over one model (the Triton kernel graph and its reference twin) on
the *same* input, the reference graph's input to layer i, so a kernel error shows in the layer and the stage where
it happens instead of being mixed with what earlier layers did. Each layer is compared three ways:

- free: both graphs run from the embeddings on their own (what `check()` measures after the last layer);
- alone: layer i alone from the reference's input; its stages each consume the layer's own previous stage;
- op: every stage alone, its input replaced by the reference's value of that input (one kernel against its twin).

`layer_states` is the per-layer trace both use; its `perturb` hook alters the first LayerNorm's input, which
measures how much the network itself amplifies a rounding-sized difference (`sensitivity` in the script).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from lowbit.kernels import reference
from lowbit.kernels.act_quant import HELD

STAGES = ("qkv", "attention", "o_in", "o", "ln1", "fc1", "fc2_in", "fc2", "ln2")


@dataclass(frozen=True)
class Batch:
    """One chunk padded to the engine's bucket, on its device; keep (B*S,) marks the real tokens."""

    ids: torch.Tensor
    mask: torch.Tensor
    token_type: torch.Tensor
    padded: bool
    keep: torch.Tensor


def prepare(engine, ids: torch.Tensor, mask: torch.Tensor) -> Batch:
    """Pad (ids, mask) (B, S) as the engine's `_run` does, so the kernels see the bucket's shapes."""
    I, M, T, padded = engine._pad(ids, mask, torch.zeros_like(ids))
    keep = torch.zeros_like(M, dtype=torch.bool)
    keep[: ids.shape[0], : ids.shape[1]] = mask.bool()
    d = engine.device
    return Batch(I.to(d), M.to(d), T.to(d), padded, keep.reshape(-1).to(d))


@torch.inference_mode()
def layer_states(engine, x: Batch, perturb: Callable | None = None) -> list[tuple]:
    """(h, codes, scales) entering each layer, then leaving the last: len(layers) + 1 triples (h (B*S, H)).

    perturb(e) -> e, when given, alters the embedding sum (B*S, H) before the first LayerNorm.
    """
    b, s = x.ids.shape
    e = engine._embed_tokens(x.ids, x.token_type, x.mask)
    e = perturb(e) if perturb is not None else e
    mask = engine._mask(x.mask, b, s, x.padded)
    states = [engine._ln(e, engine.emb_norm, engine.layers[0].qkv)]
    for i in range(len(engine.layers)):
        states.append(engine._layer_forward(i, *states[-1], mask, b, s))
    return states


def token_cos(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> tuple[float, float]:
    """(min, mean) over the real tokens of the per-token cosine of x and y (B*S, N), in float32."""
    c = F.cosine_similarity(x[keep].float(), y[keep].float(), dim=-1)
    return float(c.min()), float(c.mean())


def _fmts(engine, i: int) -> dict:
    """Format of the codes each code-producing stage of layer i writes (None: float, no codes): the engine holds
    4-bit codes one per byte as 8-bit codes (act_quant.HELD)."""
    L, last = engine.layers[i], i + 1 == len(engine.layers)
    fmts = {"o_in": L.o.a_fmt, "ln1": L.fc1.a_fmt, "fc2_in": L.fc2.a_fmt,
            "ln2": None if last else engine.layers[i + 1].qkv.a_fmt}
    return {k: HELD.get(f, f) if f else None for k, f in fmts.items()}


def _codes(c: torch.Tensor) -> torch.Tensor:
    return c.view(torch.uint8)  # fp8 codes may come as float8 or uint8


def _stage_stats(v, r, fmt: str | None, keep) -> dict:
    """cos (min, mean) of a stage's float output; for quantizing stages also of the decoded codes, and the share
    of codes that differ ("flips")."""
    if isinstance(v, torch.Tensor):
        return {"cos": token_cos(v, r, keep)}
    out = {}
    if len(v) == 3:  # LayerNorm: (y, codes, scales)
        out["cos"] = token_cos(v[0], r[0], keep)
        v, r = v[1:], r[1:]
    if fmt is None:
        return out
    out["codes cos"] = token_cos(reference.decode_act(v[0], v[1], fmt), reference.decode_act(r[0], r[1], fmt), keep)
    out["flips"] = float((_codes(v[0])[keep] != _codes(r[0])[keep]).float().mean())
    return out


def _recorder(taps: dict, feed: dict | None = None) -> Callable:
    """A `tap` for `Engine._layer_forward`: keeps each stage's output in taps, goes on with feed's when given."""
    def tap(stage: str, value):
        taps[stage] = value
        return value if feed is None else feed[stage]
    return tap


@torch.inference_mode()
def compare_layers(kern, ref, ids: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """Per layer i: kern against ref (free, alone, op; see the module docstring).

    Args:
        kern, ref: engines over the same model and dtype (typically backend "kernels" and "reference").
        ids, mask: (B, S) on the CPU; padded to the bucket as in `Engine.embed`.

    Returns:
        one dict per layer: {"i": i, "free": (min, mean) of the output h, "alone": {stage: stats},
        "op": {stage: stats}}, stats as {"cos": (min, mean), "codes cos": (min, mean), "flips": share}, the
        entries that apply to the stage.
    """
    x = prepare(ref, ids, mask)
    b, s = x.ids.shape
    att = ref._mask(x.mask, b, s, x.padded)
    rs, ks = layer_states(ref, x), layer_states(kern, x)
    rows = []
    for i in range(len(ref.layers)):
        taps_r, taps_a, taps_o = {}, {}, {}
        ref._layer_forward(i, *rs[i], att, b, s, tap=_recorder(taps_r))
        kern._layer_forward(i, *rs[i], att, b, s, tap=_recorder(taps_a))
        kern._layer_forward(i, *rs[i], att, b, s, tap=_recorder(taps_o, feed=taps_r))
        fm = _fmts(ref, i)
        stats = lambda taps: {n: _stage_stats(taps[n], taps_r[n], fm.get(n), x.keep) for n in STAGES}  # noqa: E731
        rows.append({"i": i, "free": token_cos(ks[i + 1][0], rs[i + 1][0], x.keep), "alone": stats(taps_a),
                     "op": stats(taps_o)})
    return rows

"""Distillation losses and schedules (TinyBERT / TernaryBERT style, as PAPERS.md §2 lists them).

    L = w_emb·MSE(E_s, E_t) + w_hid·Σ_l MSE(H_s^l, H_t^m(l)) + w_att·Σ_l MSE(A_s^l, A_t^m(l))
        + w_logit·T²·CE(softmax(z_t/T), softmax(z_s/T)) + w_label·CE(z_s, y)

m(l) maps a student block to its teacher block (layer reduction); attention maps compare only the kept heads
(head pruning). A are the attention *probabilities* HF's eager attention returns (TinyBERT uses the pre-softmax
scores, which HF does not expose without patching the attention function). All MSEs average over real (non-
padding) tokens only.

Schedules over a run of S steps:
- ``joint``: every term at every step;
- ``two-stage``: intermediate terms (embedding, hidden, attention) for the first `stage1` share of steps,
  then prediction terms (logits, labels);
- ``layerwise``: the first `stage1` share is split into one slice per student block; slice j distils blocks
  0..j (embedding included), then the prediction stage as in two-stage.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from lowbit.errors import SchemeError

SCHEDULES = ("joint", "two-stage", "layerwise")


@dataclass(frozen=True)
class KDWeights:
    """Weights of the loss terms; 0 turns a term off. `temperature` softens the logits."""

    logits: float = 1.0
    hidden: float = 1.0
    attention: float = 1.0
    embedding: float = 1.0
    label: float = 0.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        for k, v in vars(self).items():
            if not isinstance(v, (int, float)) or v < 0 or (k == "temperature" and v == 0):
                raise SchemeError(f"distillation weight {k}={v!r} must be a number >= 0 (temperature > 0)")


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T² · mean over rows of −Σ softmax(z_t/T) · log_softmax(z_s/T) (Hinton et al. 2015)."""
    t = temperature
    return -(F.softmax(teacher / t, dim=-1) * F.log_softmax(student / t, dim=-1)).sum(-1).mean() * t * t


def masked_mse(a: torch.Tensor, b: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the elements of real tokens; a, b (B, T, …), token_mask (B, T) of 0/1."""
    sq = (a.float() - b.float()).pow(2)
    if token_mask is None:
        return sq.mean()
    m = token_mask.to(sq.dtype).reshape(*token_mask.shape, *([1] * (sq.ndim - 2)))
    per_token = sq[0, 0].numel()
    return (sq * m).sum() / (m.sum() * per_token).clamp_min(1)


def hidden_loss(hs_s, hs_t, layer_map: list[int], mask, upto: int | None = None) -> torch.Tensor:
    """Σ_j MSE(student block j output, teacher block layer_map[j] output), j < upto."""
    js = range(len(layer_map) if upto is None else min(upto, len(layer_map)))
    return sum(masked_mse(hs_s[j + 1], hs_t[layer_map[j] + 1], mask) for j in js)


def attention_loss(att_s, att_t, layer_map: list[int], head_map: dict, mask, upto: int | None = None) -> torch.Tensor:
    """Σ_j MSE over query rows of real tokens of attention maps (B, heads, T, T), kept teacher heads only."""
    total = 0.0
    for j in range(len(layer_map) if upto is None else min(upto, len(layer_map))):
        t = att_t[layer_map[j]]
        if j in head_map:
            t = t.index_select(1, head_map[j].to(t.device))
        total = total + masked_mse(att_s[j].transpose(1, 2), t.transpose(1, 2), mask)  # (B, T, heads, T)
    return total


def stage_weights(w: KDWeights, schedule: str, step: int, steps: int, n_layers: int,
                  stage1: float = 0.5) -> tuple[KDWeights, int | None]:
    """The active loss weights at `step`, and how many student blocks the intermediate terms cover."""
    if schedule not in SCHEDULES:
        raise SchemeError(f"unknown distillation schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if schedule == "joint":
        return w, None
    first = int(stage1 * steps)
    if step >= first:
        return replace(w, hidden=0.0, attention=0.0, embedding=0.0), None
    if schedule == "two-stage":
        return replace(w, logits=0.0, label=0.0), None
    per = max(1, first // max(1, n_layers))
    return replace(w, logits=0.0, label=0.0), min(n_layers, step // per + 1)


def distill_loss(out_s, out_t, w: KDWeights, labels: torch.Tensor | None, token_mask: torch.Tensor | None,
                 layer_map: list[int], head_map: dict, upto: int | None = None) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts (floats) from HF outputs with hidden_states and attentions.

    `out_t` may be None (no teacher): only the label term counts then.
    """
    parts: dict[str, torch.Tensor] = {}
    if labels is not None and w.label > 0:
        parts["label"] = w.label * F.cross_entropy(out_s.logits.float(), labels)
    if out_t is not None:
        if w.logits > 0:
            parts["logits"] = w.logits * soft_cross_entropy(out_s.logits.float(), out_t.logits.float(), w.temperature)
        if w.embedding > 0:
            parts["embedding"] = w.embedding * masked_mse(out_s.hidden_states[0], out_t.hidden_states[0], token_mask)
        if w.hidden > 0:
            parts["hidden"] = w.hidden * hidden_loss(out_s.hidden_states, out_t.hidden_states, layer_map,
                                                     token_mask, upto)
        if w.attention > 0:
            parts["attention"] = w.attention * attention_loss(out_s.attentions, out_t.attentions, layer_map,
                                                              head_map, token_mask, upto)
    if not parts:
        raise SchemeError("every loss term is off: give a teacher (distillation) or a label weight > 0")
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}

"""The QAT / distillation training loop: plain PyTorch, CPU or CUDA, resumable.

Batches are a pure function of (seed, step) (one permutation per epoch), and a checkpoint holds the model,
optimizer, scheduler, RNG state, step and loss history; so a run interrupted after any checkpoint and resumed
ends bit-identical to an uninterrupted one (tested). Checkpoints are written to a temporary name and renamed.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lowbit.errors import CheckpointError, DataError, SchemeError
from lowbit.qat.distill import SCHEDULES, KDWeights, distill_loss, stage_weights
from lowbit.qat.prune import enforce_masks, mask_grads

STATE_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (stored in every checkpoint; a resume must use the same ones).

    Args:
        steps: optimizer steps.
        batch_size: sentences per step.
        lr: learning rate of weights (AdamW, linear warm-up then linear decay).
        scale_lr: learning rate of learned quantization scales (no weight decay).
        weight_decay: AdamW decay of weight matrices (not biases, norms or scales).
        warmup: share of steps with linear warm-up.
        schedule: distillation schedule, "joint" | "two-stage" | "layerwise" (lowbit.qat.distill); without a
            teacher every schedule trains on the labels at every step.
        stage1: share of steps in the intermediate-layer stage (two-stage / layerwise).
        kd: loss weights and temperature; without a teacher only the label term is used (weight 1).
        seed: initial RNG seed (dropout, batch order).
        checkpoint_every: steps between checkpoints (when a state path is given).
        grad_clip: global gradient-norm clip (0 = off).
        progress: show a progress bar.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-5
    scale_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    schedule: str = "joint"
    stage1: float = 0.5
    kd: KDWeights = field(default_factory=KDWeights)
    seed: int = 0
    checkpoint_every: int = 50
    grad_clip: float = 1.0
    progress: bool = True

    def __post_init__(self) -> None:
        for k in ("steps", "batch_size", "checkpoint_every"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SchemeError(f"{k} must be a positive integer, got {v!r}")
        for k in ("lr", "scale_lr"):
            if not getattr(self, k) > 0:
                raise SchemeError(f"{k} must be > 0, got {getattr(self, k)!r}")
        if not 0 <= self.warmup < 1 or not 0 <= self.stage1 < 1:
            raise SchemeError(f"warmup and stage1 are shares of the steps in [0, 1), got {self.warmup}, {self.stage1}")
        if self.schedule not in SCHEDULES:
            raise SchemeError(f"unknown distillation schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("progress")
        return d


@dataclass
class LabelledData:
    """Tokenized sentences (padded to one length) and integer labels."""

    input_ids: torch.Tensor  # (N, L)
    attention_mask: torch.Tensor  # (N, L)
    labels: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def encode(cls, tokenizer, texts: list[str], labels: list[int], max_len: int = 64) -> "LabelledData":
        """Tokenize texts (truncated to max_len tokens) with their labels.

        Raises:
            DataError: no texts, or texts and labels of different lengths.
        """
        if not texts:
            raise DataError("no training / evaluation sentences were given")
        if len(texts) != len(labels):
            raise DataError(f"{len(texts)} sentences but {len(labels)} labels")
        enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        return cls(enc["input_ids"], enc["attention_mask"], torch.tensor(labels, dtype=torch.long))

    def batch(self, idx: torch.Tensor, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Rows idx, trimmed to their longest sentence."""
        mask = self.attention_mask[idx]
        t = int(mask.sum(1).max())
        return {"input_ids": self.input_ids[idx, :t].to(device), "attention_mask": mask[:, :t].to(device),
                "labels": self.labels[idx].to(device)}


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> torch.Tensor:
    """Rows of the batch at `step`: epoch e uses permutation randperm(n, seed + e); a pure function."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    return perm[pos * batch_size:(pos + 1) * batch_size]


@dataclass
class TrainResult:
    losses: list[float]
    parts: list[dict]
    step: int
    resumed_from: int
    seconds: float
    finished: bool


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    scales, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(("wq.scale", "wq.log2_scale", "aq.scale", "aq.log2_scale")):
            scales.append(p)
        elif p.ndim >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
            {"params": scales, "lr": cfg.scale_lr, "weight_decay": 0.0}]


def _lr_lambda(cfg: TrainConfig):
    warm = int(cfg.warmup * cfg.steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))
    return f


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_state(path: Path, cfg: TrainConfig) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say which and how to start over
        raise CheckpointError(f"{path}: not a readable QAT state ({e}); delete it to start over") from e
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: QAT state version {state.get('version')!r}, expected {STATE_VERSION}")
    saved, now = state["config"], cfg.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise CheckpointError(f"{path} was written with other settings ({', '.join(diff)}); resume with the same "
                              "settings or delete it to start over")
    return state


def _forward(model, batch, need_internals: bool):
    kw = {"output_hidden_states": True, "output_attentions": True} if need_internals else {}
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kw)


def train(model: nn.Module, data: LabelledData, cfg: TrainConfig, teacher: nn.Module | None = None,
          state_path: str | Path | None = None, stop_after: int | None = None,
          device: str | torch.device = "cpu") -> TrainResult:
    """Train `model` (a QAT-prepared or plain classifier) on labelled data, distilling from `teacher` if given.

    Args:
        model: HF sequence classifier (outputs .logits; .hidden_states/.attentions when asked).
        data: training sentences and labels.
        cfg: the run's settings.
        teacher: full-precision model to distil from (put in eval mode; run without gradients, its parameters
            untouched); None trains on labels only.
        state_path: checkpoint file; if it exists the run resumes from it (same settings required).
        stop_after: stop (with a checkpoint) after this many steps of this call, as an interruption would.
        device: where to train.

    Returns:
        Loss history and where the run stands.

    Raises:
        CheckpointError: an unreadable checkpoint or one written with other settings.
        DataError: fewer sentences than one batch.

    Example:
        >>> prepare(student, "w4a4-int", grad="lsq")
        >>> train(student, data, TrainConfig(steps=300), teacher=teacher, state_path="runs/qat/state.pt")
    """
    if len(data) < cfg.batch_size:
        raise DataError(f"{len(data)} training sentences is fewer than one batch of {cfg.batch_size}")
    kd = cfg.kd if teacher is not None else KDWeights(0, 0, 0, 0, label=1.0)
    # Without a teacher there is no intermediate stage: a staged schedule would switch every term off.
    schedule = cfg.schedule if teacher is not None else "joint"
    layer_map = list(getattr(model, "lowbit_layer_map", range(getattr(model.config, "num_hidden_layers", 0))))
    head_map = getattr(model, "lowbit_head_map", {})
    model.to(device).train()
    if teacher is not None:
        # eval mode only: its forward runs under no_grad, and its requires_grad flags stay as they were (setting
        # them off here froze every student later deep-copied from the same teacher; measured in the benchmark)
        teacher.to(device).eval()
    opt = torch.optim.AdamW(_param_groups(model, cfg), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    start, losses, parts_log = 0, [], []
    path = Path(state_path) if state_path else None
    if path is not None and path.is_file():
        state = _load_state(path, cfg)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, losses, parts_log = state["step"], state["losses"], state["parts"]
    else:
        torch.manual_seed(cfg.seed)

    def checkpoint(step: int) -> None:
        if path is not None:
            _save_state(path, {"version": STATE_VERSION, "config": cfg.to_dict(), "step": step,
                               "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                               "losses": losses, "parts": parts_log})

    t0, step = time.perf_counter(), start
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.progress, desc="qat", leave=False)
    try:
        for step in range(start, end):
            w, upto = stage_weights(kd, schedule, step, cfg.steps, len(layer_map), cfg.stage1)
            batch = data.batch(batch_indices(len(data), step, cfg.batch_size, cfg.seed), device)
            internals = teacher is not None and (w.hidden > 0 or w.attention > 0 or w.embedding > 0)
            out_t = None
            if teacher is not None:
                with torch.no_grad():
                    out_t = _forward(teacher, batch, internals)
            out_s = _forward(model, batch, internals)
            loss, parts = distill_loss(out_s, out_t, w, batch["labels"], batch["attention_mask"], layer_map,
                                       head_map, upto)
            if not math.isfinite(loss.item()):
                raise DataError(f"the loss became {float(loss)} at step {step}; lower lr / scale_lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            mask_grads(model)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            enforce_masks(model)
            losses.append(loss.item())
            parts_log.append(parts)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
                checkpoint(step + 1)
        step = end
    finally:  # an interrupted run resumes from its last checkpoint (a half-done step is never saved)
        bar.close()
    return TrainResult(losses, parts_log, step, start, time.perf_counter() - t0, step >= cfg.steps)


@torch.no_grad()
def predict(model: nn.Module, data: LabelledData, batch_size: int = 128,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, classes) float32 logits, model in eval mode."""
    was = model.training
    model.to(device).eval()
    out = []
    for i in range(0, len(data), batch_size):
        b = data.batch(torch.arange(i, min(i + batch_size, len(data))), device)
        out.append(_forward(model, b, False).logits.float().cpu())
    model.train(was)
    return torch.cat(out)


def accuracy(model: nn.Module, data: LabelledData, batch_size: int = 128, device: str | torch.device = "cpu") -> float:
    """Share of sentences whose arg-max class is the label."""
    return float((predict(model, data, batch_size, device).argmax(-1) == data.labels).float().mean())

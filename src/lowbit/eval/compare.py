"""Quantize one full-precision model with several schemes and measure each against the baseline.

One row per scheme: bits per quantized weight, sizes, the task metric, recovery (% of the baseline metric)
and the worst per-layer SQNR. Causal LMs are measured by perplexity; encoders by the sentiment probe and the
cosine similarity of their sentence embeddings to the baseline's (one embedding pass gives both).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from lowbit.errors import SchemeError, ShapeError
from lowbit.eval.embeddings import sentence_embeddings
from lowbit.eval.perplexity import perplexity
from lowbit.eval.probe import LinearProbe
from lowbit.eval.sqnr import layer_sqnr


@dataclass
class Row:
    """One line of the compare table."""

    scheme: str
    bits_per_weight: float  # of the quantized linear weights, scales and zeros included
    linear_mb: float  # those weights' bytes (fp32 for the baseline)
    model_mb: float  # every parameter and buffer, tied ones once
    metrics: dict[str, float]
    recovery: float  # % of the baseline's primary metric
    worst_layer: str = ""
    worst_sqnr: float = math.nan
    seconds: float = 0.0


def is_causal_lm(model: torch.nn.Module) -> bool:
    """True for HF causal LMs (``*ForCausalLM``, GPT-2's ``*LMHeadModel``)."""
    return type(model).__name__.endswith(("ForCausalLM", "LMHeadModel"))


class PerplexityTask:
    """Perplexity of a causal LM on fixed token ids (lower is better)."""

    primary, higher_is_better = "ppl", False

    def __init__(self, ids: torch.Tensor, ctx: int = 512, stride: int = 256, progress: bool = True):
        self.ids, self.ctx, self.stride, self.progress = ids, ctx, stride, progress

    def measure(self, model) -> dict[str, float]:
        return {"ppl": perplexity(model, self.ids, ctx=self.ctx, stride=self.stride, progress=self.progress)}


class EncoderTask:
    """Sentiment-probe accuracy (%) and embedding cosine to the baseline, from one pass over test sentences.

    Without a probe (and labels) only the cosine is measured and it becomes the primary metric.

    Args:
        model_fp: the baseline encoder; its embeddings of ``texts`` are computed once here.
        tokenizer: the tokenizer.
        texts: held-out sentences.
        probe: fitted on the baseline's features (:func:`lowbit.eval.train_probe`), or None.
        labels: the sentences' labels (with a probe).
    """

    higher_is_better = True

    def __init__(self, model_fp, tokenizer, texts: Sequence[str], probe: LinearProbe | None = None,
                 labels: Sequence[int] | None = None, progress: bool = True):
        self.tokenizer, self.texts, self.probe, self.labels, self.progress = tokenizer, texts, probe, labels, progress
        self.primary = "probe acc %" if probe is not None else "cosine"
        self.model_fp = model_fp
        self.reference = sentence_embeddings(model_fp, tokenizer, texts, progress=progress)

    def measure(self, model) -> dict[str, float]:
        emb = self.reference if model is self.model_fp else sentence_embeddings(
            model, self.tokenizer, self.texts, progress=self.progress)
        metrics = {"cosine": float((emb * self.reference).sum(-1).mean())}  # unit rows: dot = cosine
        if self.probe is not None:
            metrics = {"probe acc %": 100 * self.probe.accuracy(emb, self.labels), **metrics}
        return metrics


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer, each storage counted once (tied embeddings)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.dtype, t.shape)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def fit_group_size(scheme, model):
    """The scheme, with its weight group size halved until it divides every layer it quantizes.

    SmolLM2's hidden size 576 is not a multiple of the presets' g128; g64 divides it (and, as MODELS.md
    asks for this GGUF-derived model, is not its native 32-block). The name says what changed.

    Raises:
        ShapeError: no group size >= 16 fits.
    """
    from lowbit.nn.convert import plan

    spec, name = scheme.weights, scheme.name
    while True:
        try:
            plan(model, scheme)
            return scheme
        except ShapeError:
            if spec.granularity != "group" or spec.group_size // 2 < 16:
                raise
        spec = dataclasses.replace(spec, group_size=spec.group_size // 2)
        scheme = scheme.replace(name=f"{name} (g{spec.group_size})", weights=spec)


def needs_calibration(scheme) -> bool:
    """Static activation scales or a calibrating method (GPTQ, SmoothQuant, …) need calibration batches."""
    act = scheme.activations
    return bool(scheme.methods) or (act is not None and not act.dynamic) or any(
        o.activations is not None and not o.activations.dynamic for o in scheme.overrides)


def _linear_stats(model) -> tuple[float, float]:
    """(bits per weight, MB) of the quantized linear weights."""
    from lowbit.export import linear_weight_bytes

    size = linear_weight_bytes(model)
    return 16 * size["quantized_bytes"] / size["bf16_bytes"], size["quantized_bytes"] / 1e6


def _planned_mb(model, scheme) -> float:
    """MB of the weights ``scheme`` would quantize, in the model's own dtype (the baseline's 'linear MB')."""
    from lowbit.nn.convert import plan

    size = next(model.parameters()).element_size()
    return sum(p.in_features * p.out_features for p in plan(model, scheme).quantized) * size / 1e6


def baseline_row(model_fp, task, label: str, scheme) -> Row:
    """The full-precision row: bits/weight from its dtype, linear MB over the layers ``scheme`` quantizes."""
    start = time.perf_counter()
    metrics = task.measure(model_fp)
    bits = 8 * next(model_fp.parameters()).element_size()
    return Row(label, bits, _planned_mb(model_fp, scheme), model_bytes(model_fp) / 1e6, metrics, 100.0,
               seconds=time.perf_counter() - start)


def recovery(task, metric: float, base: float) -> float:
    """% of the baseline kept: ``q / base`` when higher is better, ``base / q`` otherwise (e.g. perplexity)."""
    ratio = metric / base if task.higher_is_better else base / metric
    return 100.0 * ratio


def scheme_row(model_fp, scheme, task, base: Row, calib=None, sqnr_batches=None, progress: bool = True) -> Row:
    """Quantize a copy of ``model_fp`` with ``scheme`` and measure it.

    Raises:
        LowbitError: whatever ``quantize`` raises for this model and scheme.
    """
    from lowbit.api import quantize

    start = time.perf_counter()
    model_q = quantize(copy.deepcopy(model_fp), scheme, calib, progress=progress)
    metrics = task.measure(model_q)
    bits, linear_mb = _linear_stats(model_q)
    row = Row(scheme.name, bits, linear_mb, model_bytes(model_q) / 1e6, metrics,
              recovery(task, metrics[task.primary], base.metrics[task.primary]))
    if sqnr_batches:
        per_layer = layer_sqnr(model_q, model_fp, sqnr_batches, progress=progress)
        row.worst_layer, row.worst_sqnr = min(per_layer.items(), key=lambda kv: kv[1])
    row.seconds = time.perf_counter() - start
    return row


def compare(model_fp, schemes: Sequence, task, baseline_label: str = "fp32", calib=None, sqnr_batches=None,
            progress: bool = True, on_row=None) -> list[Row]:
    """The baseline row, then one row per scheme.

    Args:
        model_fp: the full-precision model (left untouched: each scheme quantizes a deep copy).
        schemes: preset names, YAML paths or Scheme objects; group sizes are fitted to the model.
        task: :class:`PerplexityTask` or :class:`EncoderTask`.
        baseline_label: the first row's name (e.g. "de-quantized GGUF reference").
        calib: calibration batches; None lets each scheme that needs them fail with a clear error.
        sqnr_batches: batches for the per-layer SQNR; None skips it.
        progress: progress bars.
        on_row: called with each finished row (to print progress).

    Returns:
        Rows, baseline first.

    Raises:
        SchemeError: an unknown scheme (before any model is quantized).
    """
    from lowbit.scheme import get_scheme

    resolved = [fit_group_size(get_scheme(s), model_fp) for s in schemes]
    if not resolved:
        raise SchemeError("compare needs at least one scheme")
    notify = on_row or (lambda row: None)
    rows = [baseline_row(model_fp, task, baseline_label, resolved[0])]
    notify(rows[0])
    for scheme in resolved:
        rows.append(scheme_row(model_fp, scheme, task, rows[0], calib, sqnr_batches, progress))
        notify(rows[-1])
    return rows


def console():
    """A rich Console at least 160 columns wide: the compare table has 11 columns, and piped output
    (``make demo | tee``) would otherwise be cut at 80."""
    from rich.console import Console

    return Console(width=max(Console().width, 160))


def table(rows: list[Row], title: str, caption: str = ""):
    """A rich Table of compare rows (metrics in the order of the first row)."""
    from rich.table import Table

    t = Table(title=title, caption=caption, caption_justify="left")
    metric_names = list(rows[0].metrics)
    for name in ["scheme", "bits/weight", "linear MB", "model MB", *metric_names, "recovery %",
                 "worst layer SQNR dB", "worst layer", "time s"]:
        t.add_column(name, justify="left" if name in ("scheme", "worst layer") else "right")
    for r in rows:
        sqnr = "" if math.isnan(r.worst_sqnr) else f"{r.worst_sqnr:.1f}"
        t.add_row(r.scheme, f"{r.bits_per_weight:.2f}", f"{r.linear_mb:.1f}", f"{r.model_mb:.1f}",
                  *[_fmt(r.metrics[m]) for m in metric_names], f"{r.recovery:.1f}", sqnr, r.worst_layer,
                  f"{r.seconds:.1f}")
    return t


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 2 else f"{value:.2f}"

"""`lowbit compare MODEL --schemes a,b,c --data SOURCE [--calib SOURCE]`: one table, one row per scheme."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from lowbit.errors import SchemeError


@dataclass(frozen=True)
class Budget:
    """How much data a comparison reads (CPU time grows with each)."""

    max_tokens: int | None = 2048  # perplexity tokens (causal LMs)
    ctx: int = 512
    stride: int = 256
    sentences: int | None = None  # encoder test sentences (None: the whole eval split)
    calib_samples: int = 32
    sqnr_samples: int = 2
    sqnr_len: int = 256


def register(sub) -> None:
    p = sub.add_parser("compare", help="quantize a model with several schemes and tabulate size and accuracy",
                       description="Quantize MODEL with each scheme and print scheme, bits/weight, size, the task "
                                   "metric, recovery % of the baseline and the worst per-layer SQNR.")
    p.add_argument("model", help="local HF model directory or packaged model (minilm, smollm2)")
    p.add_argument("--schemes", required=True, help="comma-separated preset names or .yaml files")
    p.add_argument("--data", default=None, help="evaluation data (its 'eval' split): .txt, .jsonl or wiki, lee, "
                                                "ptb, sst; default wiki for causal LMs, sst (probe) for encoders")
    p.add_argument("--calib", default=None, help="calibration data (its 'calib' split); default: the --data "
                                                 "source's calib split, used only by schemes that need it")
    p.add_argument("--max-tokens", type=int, default=2048, help="perplexity tokens (default 2048)")
    p.add_argument("--sentences", type=int, default=None, help="encoder test sentences (default: all)")
    p.add_argument("--calib-samples", type=int, default=32, help="calibration sequences (default 32)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lowbit.data import load_model
    from lowbit.eval.compare import console, table

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    _check_schemes(schemes)
    model, tok = load_model(args.model)
    budget = Budget(max_tokens=args.max_tokens, sentences=args.sentences, calib_samples=args.calib_samples)
    rows, caption = compare_model(model, tok, schemes, args.data, args.calib, budget, "fp32",
                                  progress=not args.no_progress)
    console().print(table(rows, f"lowbit compare: {args.model}", caption))
    return 0


def _check_schemes(schemes: list[str]) -> None:
    """Fail on an unknown scheme before loading any model."""
    from lowbit.scheme import get_scheme

    if not schemes:
        raise SchemeError("--schemes is empty; give comma-separated preset names (see `lowbit inspect --presets`)")
    for name in schemes:
        get_scheme(name)


def compare_model(model, tok, schemes, data: str | None, calib: str | None, budget: Budget,
                  baseline_label: str, progress: bool = True, on_row=None):
    """Build the task, calibration and SQNR batches for ``model`` and run :func:`lowbit.eval.compare`.

    Returns:
        (rows, caption): the table rows and a caption that says what was measured on which data.
    """
    from lowbit.eval.compare import compare, is_causal_lm

    causal = is_causal_lm(model)
    data = data or ("wiki" if causal else "sst")
    task, caption = (_causal_task if causal else _encoder_task)(model, tok, data, budget, progress)
    calib_batches = _calibration(model, tok, schemes, calib or data, calib is not None, budget, causal)
    sqnr = _windows(tok, data, "eval", budget.sqnr_samples, budget.sqnr_len, seed=1)
    rows = compare(model, schemes, task, baseline_label, calib_batches, sqnr, progress, on_row)
    caption += (f"; worst layer SQNR over {budget.sqnr_samples} x {budget.sqnr_len} tokens of {data!r} (eval), "
                "errors accumulated through the network; recovery % = share of the baseline metric kept")
    return rows, caption


def _causal_task(model, tok, data, budget, progress):
    from lowbit.data import load_texts
    from lowbit.eval.compare import PerplexityTask
    from lowbit.eval.perplexity import encode_texts

    ids = encode_texts(tok, load_texts(data, split="eval"), budget.max_tokens)
    caption = (f"perplexity on the first {len(ids)} tokens of {data!r} (eval split), "
               f"ctx {budget.ctx}, stride {budget.stride}")
    return PerplexityTask(ids, budget.ctx, budget.stride, progress), caption


def _encoder_task(model, tok, data, budget, progress):
    from lowbit.data import load_labelled, load_texts
    from lowbit.eval import train_probe
    from lowbit.eval.compare import EncoderTask

    if data != "sst":
        texts = spread(load_texts(data, split="eval"), budget.sentences)
        return EncoderTask(model, tok, texts, progress=progress), \
            f"cosine of mean-pooled embeddings to fp32 on {len(texts)} documents of {data!r} (eval split)"
    probe = train_probe(model, tok, progress=progress)
    texts, labels = load_labelled("sst", split="eval")
    texts, labels = spread(texts, budget.sentences), spread(labels, budget.sentences)
    caption = (f"sentiment probe (logistic regression on fp32 embeddings of 2000 'sst' calib sentences) scored "
               f"on {len(texts)} held-out sentences; cosine to fp32 embeddings of the same sentences")
    return EncoderTask(model, tok, texts, probe, labels, progress), caption


def spread(items: list, k: int | None) -> list:
    """``k`` items evenly spaced over ``items`` (all when k is None or larger): a subset of a sorted corpus
    (the sentiment file lists every positive sentence first) keeps its class balance."""
    if k is None or k >= len(items):
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def _calibration(model, tok, schemes, source: str, asked: bool, budget: Budget, causal: bool):
    """Calibration batches from the source's calib split, when asked for or when a scheme needs them."""
    from lowbit.eval.compare import needs_calibration
    from lowbit.scheme import get_scheme

    if not asked and not any(needs_calibration(get_scheme(s)) for s in schemes):
        return None
    seq_len = 512 if causal else 128
    return _windows(tok, source, "calib", budget.calib_samples, seq_len, seed=0)


def _windows(tok, source: str, split: str, n: int, seq_len: int, seed: int):
    from lowbit.data import calibration_batches, load_texts

    return calibration_batches(load_texts(source, split=split), tok, n_samples=n, seq_len=seq_len, seed=seed)

"""Perplexity of a causal LM with the strided sliding window of the Hugging Face guide
(https://huggingface.co/docs/transformers/perplexity): windows of ``ctx`` tokens advance by ``stride``;
each window scores only the tokens not scored before, conditioned on up to ``ctx - stride`` earlier ones.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lowbit.errors import DataError, ModelError


def encode_texts(tokenizer, texts: Sequence[str], max_tokens: int | None = None) -> torch.Tensor:
    """Token ids of the documents joined by blank lines, optionally cut to the first ``max_tokens``.

    Only as much text as ``max_tokens`` needs is tokenized (the Wikipedia set is 2.9 M characters).

    Args:
        tokenizer: a Hugging Face tokenizer (its BOS, if it adds one, starts the sequence).
        texts: documents.
        max_tokens: keep at most this many tokens; None keeps all.

    Returns:
        1-D LongTensor of ids.

    Raises:
        DataError: no text.
    """
    joined = "\n\n".join(t for t in texts if t.strip())
    if not joined:
        raise DataError("perplexity needs text, but every document given is empty")
    chars = len(joined) if max_tokens is None else 8 * max_tokens
    while True:  # English averages about 4 characters per token; double until enough.
        ids = tokenizer(joined[:chars], return_tensors="pt", verbose=False)["input_ids"][0]
        if max_tokens is None or len(ids) >= max_tokens or chars >= len(joined):
            return ids if max_tokens is None else ids[:max_tokens]
        chars *= 2


def _window_nll(model, window: torch.Tensor, n_scored: int) -> float:
    """Summed negative log-likelihood of the last ``n_scored`` targets of one window (B = 1)."""
    extra = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}
    out = model(input_ids=window[None], **extra)  # no KV cache: each window is scored once
    logits = getattr(out, "logits", None)
    if logits is None:
        raise ModelError(f"{type(model).__name__} returns no logits: perplexity needs a causal LM "
                         f"(load it with AutoModelForCausalLM)")
    logits = logits[0, -n_scored - 1:-1].float()  # (n_scored, vocab): position t predicts token t + 1
    return F.cross_entropy(logits, window[-n_scored:], reduction="sum").item()


def window_spans(n_tokens: int, ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n_scored)`` of each window; every token but the first is scored exactly once.

    Windows end at ``ctx, ctx + stride, ...`` and score the tokens after the previous end (HF's recipe).
    A stride of ``ctx`` (disjoint windows) would leave each window's first token without a prediction, so
    the step is capped at ``ctx - 1``.
    """
    step, end = min(stride, ctx - 1), min(ctx, n_tokens)
    spans = [(0, end, end - 1)]
    while end < n_tokens:
        prev_end, end = end, min(end + step, n_tokens)
        spans.append((max(0, end - ctx), end, end - prev_end))
    return spans


@torch.no_grad()
def perplexity(model, tokenizer_or_ids, texts: Sequence[str] | None = None, ctx: int = 512,
               stride: int = 256, max_tokens: int | None = None, progress: bool = True) -> float:
    """Sliding-window perplexity of a causal LM.

    Args:
        model: a causal LM returning ``.logits`` (HF ``*ForCausalLM``, quantized or not).
        tokenizer_or_ids: a tokenizer (then ``texts`` are encoded) or a 1-D sequence of token ids.
        texts: documents, e.g. ``load_texts("wiki", split="eval")``; ignored when ids are given.
        ctx: window length in tokens (at most the model's context).
        stride: tokens the window advances by (``ctx`` means ``ctx - 1``: each window keeps one token of
            context so that every token is scored).
        max_tokens: evaluate only the first ``max_tokens`` tokens (a budget for CPU runs).
        progress: show a progress bar over windows.

    Returns:
        ``exp(mean NLL)`` over every token but the first, as a float.

    Raises:
        DataError: no text, fewer than 2 tokens, ``ctx < 2`` or ``stride`` not in ``[1, ctx]``.
        ModelError: the model returns no logits.

    Example:
        >>> ppl = perplexity(model, tok, load_texts("wiki", "eval"), max_tokens=2048)
    """
    if ctx < 2 or not 1 <= stride <= ctx:
        raise DataError(f"need ctx >= 2 and stride in [1, ctx], got ctx={ctx}, stride={stride}")
    if isinstance(tokenizer_or_ids, (torch.Tensor, list, tuple)):
        ids = torch.as_tensor(tokenizer_or_ids, dtype=torch.long).flatten()[:max_tokens]
    else:
        if texts is None:
            raise DataError("perplexity got a tokenizer but no texts")
        ids = encode_texts(tokenizer_or_ids, texts, max_tokens)
    if len(ids) < 2:
        raise DataError(f"perplexity needs at least 2 tokens, got {len(ids)}")
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for begin, end, scored in tqdm(window_spans(len(ids), ctx, stride), desc="perplexity",
                                   disable=not progress, leave=False):
        nll += _window_nll(model, ids[begin:end].to(device), scored)
        count += scored
    return math.exp(nll / count)

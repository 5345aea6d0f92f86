"""Sentence embeddings of encoders (mean-pool + L2-normalise) and their cosine similarity to a reference."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lowbit.errors import DataError, ModelError


def _hidden_states(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        raise ModelError(f"{type(model).__name__} returns no last_hidden_state: sentence embeddings need "
                         f"an encoder loaded with AutoModel")
    return hidden


@torch.no_grad()
def sentence_embeddings(model, tokenizer, texts: Sequence[str], batch_size: int = 64, max_length: int = 128,
                        progress: bool = True) -> torch.Tensor:
    """Mean-pooled (padding excluded), L2-normalised last hidden states: the sentence-transformers embedding.

    Args:
        model: an encoder returning ``last_hidden_state`` (e.g. ``load_model("minilm")[0]``).
        tokenizer: its tokenizer.
        texts: sentences.
        batch_size: sentences per forward.
        max_length: truncate longer sentences to this many tokens.
        progress: show a progress bar.

    Returns:
        ``(len(texts), hidden)`` float32 tensor of unit rows.

    Raises:
        DataError: no texts.
        ModelError: the model returns no ``last_hidden_state``.
    """
    if len(texts) == 0:
        raise DataError("sentence_embeddings got no texts")
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
    rows = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embeddings", disable=not progress, leave=False):
        chunk = [texts[i] for i in order[start:start + batch_size]]
        batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt").to(device)
        hidden = _hidden_states(model, dict(batch)).float()  # (B, T, H)
        mask = batch["attention_mask"][..., None].float()  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, H)
        rows.append(F.normalize(pooled, dim=-1).cpu())
    embeddings = torch.empty(len(texts), rows[0].shape[-1])
    embeddings[torch.tensor(order)] = torch.cat(rows)
    return embeddings


def embedding_cosine(model_q, reference, tokenizer, texts: Sequence[str], batch_size: int = 64,
                     progress: bool = True) -> float:
    """Mean cosine similarity between a model's sentence embeddings and the reference ones.

    Args:
        model_q: the (quantized) encoder.
        reference: the full-precision encoder, or its :func:`sentence_embeddings` of ``texts`` (saves
            recomputing them when comparing many schemes).
        tokenizer: the shared tokenizer.
        texts: sentences.
        batch_size: sentences per forward.
        progress: show progress bars.

    Returns:
        Mean over sentences of ``cos(e_q, e_ref)``; 1.0 means identical directions.

    Raises:
        DataError: no texts, or precomputed reference embeddings of another length.
    """
    ref = reference if isinstance(reference, torch.Tensor) else sentence_embeddings(
        reference, tokenizer, texts, batch_size, progress=progress)
    if len(ref) != len(texts):
        raise DataError(f"reference has {len(ref)} embeddings for {len(texts)} texts")
    emb = sentence_embeddings(model_q, tokenizer, texts, batch_size, progress=progress)
    return float((emb * ref).sum(-1).mean())  # rows are unit vectors: the dot product is the cosine

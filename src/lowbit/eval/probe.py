"""A sentiment linear probe: how much quantization hurts what a downstream classifier sees.

A logistic regression is fitted once on the fp32 encoder's sentence embeddings of the probe's training
half (the ``calib`` split of the 4000 Pang & Lee sentences) and then scores any model's embeddings (fp32 or
quantized) of the held-out half (the ``eval`` split). The same probe for every model isolates the damage
quantization does to the features. Measured here: 76.0% for MiniLM fp32 (MODELS.md's 74.8% used
another probe set-up).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import minimize

from lowbit.data.texts import load_labelled
from lowbit.errors import DataError
from lowbit.eval.embeddings import sentence_embeddings


@dataclass(frozen=True)
class LinearProbe:
    """A binary logistic-regression probe (fitted by :func:`fit_probe`): ``P(1) = sigmoid(x @ weight + bias)``."""

    weight: np.ndarray  # (H,)
    bias: float

    def logits(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        return np.asarray(features, dtype=np.float64) @ self.weight + self.bias

    def accuracy(self, features: np.ndarray | torch.Tensor, labels: Sequence[int]) -> float:
        """Share of rows whose predicted class (logit > 0 means 1) equals the label."""
        return float(np.mean((self.logits(features) > 0) == (np.asarray(labels) == 1)))


def _loss_and_grad(params: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Mean logistic loss + (l2/2)|w|^2, and its gradient; ``params = [w, b]``."""
    w, b = params[:-1], params[-1]
    z = x @ w + b  # (N,)
    loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w
    residual = (1.0 / (1.0 + np.exp(-z)) - y) / len(y)  # d loss / d z
    return loss, np.concatenate([x.T @ residual + l2 * w, [residual.sum()]])


def fit_probe(features: np.ndarray | torch.Tensor, labels: Sequence[int], l2: float | None = None) -> LinearProbe:
    """Fit an L2-regularised logistic regression with L-BFGS (scipy) on the raw features.

    Args:
        features: ``(N, H)`` training features (unit-norm sentence embeddings need no scaling).
        labels: N labels in {0, 1}.
        l2: ridge strength on the mean loss; default ``1/N``, which is scikit-learn's default
            ``LogisticRegression(C=1.0)``. Measured on MiniLM fp32 (SST halves): 76.0% at 1/N, 75.2% at
            1e-2, 72.3% with standardised features; the default was not tuned further.

    Returns:
        The fitted :class:`LinearProbe`.

    Raises:
        DataError: shape mismatch, labels outside {0, 1}, or a single class.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"fit_probe needs (N, H) features and N labels, got {x.shape} and {len(y)}")
    if not np.isin(y, (0.0, 1.0)).all() or len(np.unique(y)) != 2:
        raise DataError("fit_probe needs labels in {0, 1} with both classes present")
    l2 = 1.0 / len(y) if l2 is None else l2
    result = minimize(_loss_and_grad, np.zeros(x.shape[1] + 1), args=(x, y, l2), jac=True,
                      method="L-BFGS-B", options={"maxiter": 1000})
    return LinearProbe(result.x[:-1], float(result.x[-1]))


def train_probe(model, tokenizer, texts: Sequence[str] | None = None, labels: Sequence[int] | None = None,
                batch_size: int = 64, progress: bool = True) -> LinearProbe:
    """Fit the probe on a (full-precision) encoder's sentence embeddings.

    Args:
        model: the fp32 encoder.
        tokenizer: its tokenizer.
        texts, labels: training sentences and 0/1 labels; default ``load_labelled("sst", "calib")``.
        batch_size: sentences per forward.
        progress: show a progress bar.

    Returns:
        The fitted :class:`LinearProbe`.

    Raises:
        DataError: as :func:`fit_probe`.
    """
    if texts is None or labels is None:
        texts, labels = load_labelled("sst", "calib")
    return fit_probe(sentence_embeddings(model, tokenizer, texts, batch_size, progress=progress), labels)


def probe_accuracy(model, tokenizer, probe: LinearProbe | None = None, texts: Sequence[str] | None = None,
                   labels: Sequence[int] | None = None, batch_size: int = 64, progress: bool = True) -> float:
    """Accuracy of a probe on a model's sentence embeddings of held-out sentences.

    Args:
        model: the encoder to score (quantized or not).
        tokenizer: its tokenizer.
        probe: a probe fitted on the fp32 model by :func:`train_probe`; None fits one on ``model`` itself
            (right for the fp32 baseline only).
        texts, labels: test sentences and labels; default ``load_labelled("sst", "eval")``.
        batch_size: sentences per forward.
        progress: show progress bars.

    Returns:
        Accuracy in [0, 1].

    Raises:
        DataError: texts and labels of different lengths, or bad labels.

    Example:
        >>> probe = train_probe(fp_model, tok)
        >>> probe_accuracy(quantized_model, tok, probe)
    """
    if probe is None:
        probe = train_probe(model, tokenizer, batch_size=batch_size, progress=progress)
    if texts is None or labels is None:
        texts, labels = load_labelled("sst", "eval")
    if len(texts) != len(labels):
        raise DataError(f"probe_accuracy got {len(texts)} texts but {len(labels)} labels")
    return probe.accuracy(sentence_embeddings(model, tokenizer, texts, batch_size, progress=progress), labels)

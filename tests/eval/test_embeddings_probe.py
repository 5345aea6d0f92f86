"""Sentence embeddings, cosine to a reference, and the logistic-regression probe."""
import copy

import numpy as np
import pytest
import torch
from scipy.optimize import check_grad

from tiny_models import tiny_bert, tiny_gpt2
from lowbit.data.testing import word_tokenizer
from lowbit.errors import DataError, ModelError
from lowbit.eval import embedding_cosine, fit_probe, probe_accuracy, sentence_embeddings, train_probe
from lowbit.eval.probe import _loss_and_grad

TEXTS = ["the film was good", "a bad movie", "the story was long and the music was great", "one", "war"]


def test_embeddings_are_unit_rows_in_input_order_and_ignore_padding():
    model, tok = tiny_bert(), word_tokenizer("bert")
    batched = sentence_embeddings(model, tok, TEXTS, batch_size=2, progress=False)
    alone = torch.cat([sentence_embeddings(model, tok, [t], progress=False) for t in TEXTS])
    assert batched.shape == (5, 128)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_cosine_is_one_for_the_same_model_and_drops_with_noise():
    model, tok = tiny_bert(), word_tokenizer("bert")
    assert embedding_cosine(model, model, tok, TEXTS, progress=False) == pytest.approx(1.0, abs=1e-6)
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for p in noisy.encoder.parameters():
            p.add_(0.5 * torch.randn_like(p))
    reference = sentence_embeddings(model, tok, TEXTS, progress=False)
    cos = embedding_cosine(noisy, reference, tok, TEXTS, progress=False)
    assert cos < 0.99 and cos == pytest.approx(embedding_cosine(noisy, model, tok, TEXTS, progress=False))


def test_embedding_errors():
    tok = word_tokenizer("bert")
    with pytest.raises(DataError, match="no texts"):
        sentence_embeddings(tiny_bert(), tok, [])
    with pytest.raises(DataError, match="2 embeddings for 5 texts"):
        embedding_cosine(tiny_bert(), torch.zeros(2, 128), tok, TEXTS, progress=False)
    with pytest.raises(ModelError, match="no last_hidden_state"):
        sentence_embeddings(tiny_gpt2(), word_tokenizer("gpt2"), TEXTS, progress=False)


def test_probe_gradient_and_separable_data():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 5)), rng.integers(0, 2, 200).astype(float)
    params = rng.normal(size=6)
    assert check_grad(lambda p: _loss_and_grad(p, x, y, 0.1)[0], lambda p: _loss_and_grad(p, x, y, 0.1)[1],
                      params) < 1e-5
    x[:, 0] += 4 * (2 * y - 1)  # separable along feature 0
    probe = fit_probe(x[:100], y[:100])
    assert probe.accuracy(x[100:], y[100:]) == 1.0
    assert probe.accuracy(x[100:], 1 - y[100:]) == 0.0


@pytest.mark.parametrize("features, labels, match", [
    (np.zeros((4, 2)), [0, 1, 0], "N labels"), (np.zeros(4), [0, 1, 0, 1], "N labels"),
    (np.zeros((4, 2)), [1, 1, 1, 1], "both classes"), (np.zeros((4, 2)), [0, 1, 2, 1], "labels in")])
def test_fit_probe_errors(features, labels, match):
    with pytest.raises(DataError, match=match):
        fit_probe(features, labels)


def test_probe_on_a_tiny_encoder():
    model, tok = tiny_bert(), word_tokenizer("bert")
    pos = [f"the {w} film was good" for w in ("new", "long", "short", "first", "last", "best")]
    neg = [f"the {w} film was bad" for w in ("new", "long", "short", "first", "last", "best")]
    texts, labels = pos + neg, [1] * 6 + [0] * 6
    probe = train_probe(model, tok, texts[::2], labels[::2], progress=False)
    assert probe_accuracy(model, tok, probe, texts[1::2], labels[1::2], progress=False) == 1.0
    with pytest.raises(DataError, match="6 texts but 5 labels"):
        probe_accuracy(model, tok, probe, texts[1::2], labels[1:-1:2], progress=False)

"""Sliding-window perplexity: exact on models with known likelihoods, and equal to one full pass."""
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tiny_models import tiny_bert, tiny_gpt2
from lowbit.data.testing import word_tokenizer
from lowbit.errors import DataError, ModelError
from lowbit.eval import perplexity
from lowbit.eval.perplexity import encode_texts, window_spans


class Uniform(torch.nn.Module):
    """A 'language model' that predicts every token with probability 1/vocab: perplexity = vocab exactly."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.config = vocab, SimpleNamespace(use_cache=None)
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


@given(n=st.integers(2, 300), ctx=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_but_the_first_once(n, ctx, data):
    stride = data.draw(st.integers(1, ctx))
    scored = []
    for begin, end, k in window_spans(n, ctx, stride):
        assert end - begin <= ctx and 1 <= k <= end - begin - 1
        scored += range(end - k, end)
    assert scored == list(range(1, n))


@pytest.mark.parametrize("ctx, stride", [(8, 8), (16, 4), (40, 40)])
def test_uniform_model_has_perplexity_vocab(ctx, stride):
    ids = torch.randint(0, 37, (33,))
    assert perplexity(Uniform(37), ids, ctx=ctx, stride=stride, progress=False) == pytest.approx(37)


def test_full_context_equals_the_models_own_loss():
    model, ids = tiny_gpt2(), torch.randint(0, 120, (40,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = math.exp(model(input_ids=ids[None], labels=ids[None]).loss.item())
    assert perplexity(model, ids, ctx=64, stride=64, progress=False) == pytest.approx(expected, rel=1e-5)
    strided = perplexity(model, ids, ctx=16, stride=4, progress=False)
    assert strided != pytest.approx(expected, rel=1e-5)  # shorter context really changes the conditioning


def test_texts_through_the_tokenizer_and_max_tokens():
    tok, model = word_tokenizer("gpt2"), tiny_gpt2()
    texts = ["the film was good", "the story was long and bad"]
    ids = encode_texts(tok, texts)
    assert ids.tolist() == tok("the film was good\n\nthe story was long and bad")["input_ids"]
    assert encode_texts(tok, texts * 50, max_tokens=7).tolist() == ids[:7].tolist()
    assert perplexity(model, tok, texts, ctx=8, stride=4, progress=False) == \
        pytest.approx(perplexity(model, ids, ctx=8, stride=4, progress=False))


def test_errors():
    tok = word_tokenizer("gpt2")
    with pytest.raises(DataError, match="stride in \\[1, ctx\\]"):
        perplexity(Uniform(5), [1, 2, 3], ctx=4, stride=5)
    with pytest.raises(DataError, match="at least 2 tokens"):
        perplexity(Uniform(5), [1], ctx=4, stride=2)
    with pytest.raises(DataError, match="no texts"):
        perplexity(Uniform(5), tok, None)
    with pytest.raises(DataError, match="every document given is empty"):
        perplexity(Uniform(5), tok, ["", " "])
    with pytest.raises(ModelError, match="no logits.*causal LM"):
        perplexity(tiny_bert(), [1, 2, 3], ctx=4, stride=2, progress=False)

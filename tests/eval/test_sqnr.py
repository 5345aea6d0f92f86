"""Per-layer SQNR: the dB formula, hooks on same-named modules, defaults and errors."""
import copy
import math

import pytest
import torch

from tiny_models import tiny_gpt2
from lowbit import quantize
from lowbit.data import random_token_batches
from lowbit.errors import CalibrationError, ModelError
from lowbit.eval import layer_sqnr, sqnr_db
from lowbit.eval.sqnr import default_layer_names


def test_sqnr_db_values():
    ref = torch.ones(100)
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0)  # noise power 1% of signal
    assert sqnr_db(ref, ref * 2) == pytest.approx(0.0)
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(torch.zeros(3), torch.ones(3)) == -math.inf


def test_identical_models_are_infinite_and_a_perturbed_layer_shows_up():
    model, batches = tiny_gpt2(), random_token_batches(120, n=2, seq_len=8, seed=0)
    names = ["transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj"]
    assert layer_sqnr(copy.deepcopy(model), model, batches, names, progress=False) == dict.fromkeys(names, math.inf)
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        noisy.transformer.h[1].mlp.c_proj.weight.mul_(1.1)
    result = layer_sqnr(noisy, model, batches, names, progress=False)
    assert result[names[0]] == math.inf  # upstream of the change
    assert 15 < result[names[1]] < 25  # a 10% weight error: about 20 dB (the bias lifts it a little)
    assert not any(m._forward_hooks for m in list(model.modules()) + list(noisy.modules()))


def test_default_names_are_the_converted_layers():
    model = tiny_gpt2()
    quantized = quantize(copy.deepcopy(model), "w8a8-int8", progress=False)
    names = default_layer_names(quantized, model)
    assert names and all(type(dict(quantized.named_modules())[n]).__name__ == "QuantLinear" for n in names)
    assert "lm_head" not in names
    result = layer_sqnr(quantized, model, random_token_batches(120, 2, 8), progress=False)
    assert list(result) == names and all(10 < db < 60 for db in result.values())
    assert "lm_head" in default_layer_names(model, copy.deepcopy(model))  # no converted layer: every linear


def test_errors():
    model = tiny_gpt2()
    with pytest.raises(CalibrationError, match="at least one batch"):
        layer_sqnr(model, model, [])
    with pytest.raises(ModelError, match="missing in one model: \\['nope'\\]"):
        layer_sqnr(model, model, random_token_batches(120, 1, 4), ["nope"], progress=False)

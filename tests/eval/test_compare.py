"""The compare engine on tiny models: rows, sizes, recovery, group-size fitting."""
import copy
import math

import pytest
import torch

from tiny_models import tiny_bert, tiny_gpt2
from lowbit.data import random_token_batches
from lowbit.data.testing import word_tokenizer
from lowbit.errors import SchemeError, ShapeError
from lowbit.eval import EncoderTask, PerplexityTask, compare
from lowbit.eval.compare import fit_group_size, model_bytes, needs_calibration, recovery, table
from lowbit.eval.probe import LinearProbe
from lowbit.scheme import QuantSpec, Scheme, get_scheme

TEXTS = ["the film was good", "a bad movie", "the story was long and the music was great", "one day"]


def tiny_llama(hidden):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=120, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=1, num_attention_heads=3, num_key_value_heads=1))


def test_fit_group_size_halves_until_it_divides():
    model = tiny_llama(192)  # like SmolLM2's 576: g128 does not divide it, g64 does
    fitted = fit_group_size(get_scheme("w4a16"), model)
    assert fitted.name == "w4a16 (g64)" and fitted.weights.group_size == 64
    assert fit_group_size(get_scheme("w8a8-int8"), model) is get_scheme("w8a8-int8")
    odd = Scheme("odd", QuantSpec("int4", "group", 128))
    with pytest.raises(ShapeError):
        fit_group_size(odd, tiny_llama(3 * 7 * 8))  # 168: no g >= 16 of the halving sequence divides it


def test_needs_calibration():
    assert not needs_calibration(get_scheme("w4a8-int"))  # dynamic per-token activations
    static = Scheme("s", QuantSpec("int8"), QuantSpec("int8", "tensor", dynamic=False))
    assert needs_calibration(static)
    assert needs_calibration(get_scheme("w4a16").replace(methods=("gptq",)))


def test_recovery_direction():
    assert recovery(PerplexityTask(torch.arange(4)), 20.0, 10.0) == pytest.approx(50.0)
    assert recovery(EncoderTask.__new__(EncoderTask), 70.0, 80.0) == pytest.approx(87.5)


def test_model_bytes_counts_tied_weights_once():
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    params = sum(p.numel() * 4 for p in model.parameters())  # parameters() already yields tied ones once
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert model_bytes(model) == params + buffers


def test_compare_causal_lm_rows():
    model = tiny_gpt2()
    before = copy.deepcopy(model.state_dict())
    ids = torch.randint(0, 120, (48,), generator=torch.Generator().manual_seed(0))
    rows = compare(model, ["w8a8-int8", "w4a16"], PerplexityTask(ids, ctx=16, stride=8, progress=False), "ref",
                   sqnr_batches=random_token_batches(120, 1, 16), progress=False)
    base, w8, w4 = rows
    assert [r.scheme for r in rows] == ["ref", "w8a8-int8", "w4a16"]
    assert base.bits_per_weight == 32 and base.recovery == 100.0 and math.isnan(base.worst_sqnr)
    assert 8 < w8.bits_per_weight < 8.5 and 4 < w4.bits_per_weight < 4.5
    assert w4.linear_mb < w8.linear_mb < base.linear_mb / 3.5 and w4.model_mb < w8.model_mb < base.model_mb
    assert w8.worst_sqnr > w4.worst_sqnr and w8.worst_layer.startswith("transformer.h.")
    assert w8.recovery == pytest.approx(100 * base.metrics["ppl"] / w8.metrics["ppl"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # baseline untouched
    rendered = table(rows, "t")
    assert [c.header for c in rendered.columns][:6] == ["scheme", "bits/weight", "linear MB", "model MB", "ppl",
                                                        "recovery %"]


def test_compare_encoder_with_and_without_probe():
    model, tok = tiny_bert(), word_tokenizer("bert")
    probe = LinearProbe(torch.ones(128).double().numpy(), 0.0)
    task = EncoderTask(model, tok, TEXTS, probe, [1, 0, 1, 0], progress=False)
    rows = compare(model, ["w8a8-int8"], task, progress=False)
    assert list(rows[0].metrics) == ["probe acc %", "cosine"] and rows[0].metrics["cosine"] == pytest.approx(1.0)
    assert 0.9 < rows[1].metrics["cosine"] < 1.0
    cosine_only = EncoderTask(model, tok, TEXTS, progress=False)
    assert cosine_only.primary == "cosine" and list(cosine_only.measure(model)) == ["cosine"]


def test_compare_rejects_unknown_and_empty_schemes():
    with pytest.raises(SchemeError, match="known presets"):
        compare(tiny_gpt2(), ["w3a3"], PerplexityTask(torch.arange(8)), progress=False)
    with pytest.raises(SchemeError, match="at least one scheme"):
        compare(tiny_gpt2(), [], PerplexityTask(torch.arange(8)), progress=False)

import copy

import pytest
import torch
from torch import nn

from tiny_models import MODELS, TINY, tiny_bert, tiny_gpt2, tiny_llama, tiny_vit
from lowbit import quantize
from lowbit.errors import CalibrationError, ModelError, ShapeError
from lowbit.nn import QuantLinear
from lowbit.nn.convert import plan
from lowbit.quant.qtensor import quantize_activation, quantize_weight
from lowbit.scheme import PRESETS, Override, QuantSpec, Scheme, get_scheme


@pytest.mark.parametrize("scheme", sorted(PRESETS))
def test_quantlinear_forward_is_quantized_input_times_dequantized_weight(scheme):
    s = PRESETS[scheme]
    lin = nn.Linear(256, 37)  # N not a multiple of anything
    x = torch.randn(3, 5, 256)
    q = QuantLinear.from_float(lin, s.weights, s.activations, "l")
    w = quantize_weight(lin.weight.detach(), s.weights).dequantize()
    xq = x if s.activations is None else quantize_activation(x, s.activations)
    assert torch.equal(q(x), xq @ w.t() + lin.bias.detach())
    err = (q(x) - lin(x)).pow(2).mean() / lin(x).pow(2).mean()
    assert err < (0.02 if "8" in scheme.split("-")[0] else 0.2)


def test_conv1d_is_transposed_correctly():
    from transformers.pytorch_utils import Conv1D
    conv = Conv1D(48, 128)  # nf=48 outputs, nx=128 inputs; weight (128, 48)
    nn.init.normal_(conv.weight)
    q = QuantLinear.from_float(conv, QuantSpec("int8"), None, "c")
    x = torch.randn(4, 128)
    assert q.out_features == 48 and q.in_features == 128
    assert (q(x) - conv(x)).abs().max() / conv(x).abs().max() < 0.02


@pytest.mark.parametrize("family", sorted(MODELS))
def test_quantize_families_replaces_linears_and_reports_skips(family, ids):
    model = MODELS[family]()
    ref = model(input_ids=ids)[0]
    quantize(model, "w8a8-int8", [ids], progress=False)
    rep = model.lowbit_report
    n_linear = sum(isinstance(m, QuantLinear) for m in model.modules())
    assert n_linear == len(rep.quantized) > 0
    assert not any(isinstance(m, nn.Linear) and n in {p.name for p in rep.quantized} for n, m in model.named_modules())
    skipped = dict(rep.skipped)
    assert any("embedding" in why for why in skipped.values())
    if family != "bert":
        assert "lm_head" in skipped and "head" in skipped["lm_head"]
        assert not isinstance(model.get_submodule("lm_head"), QuantLinear)
    cos = nn.functional.cosine_similarity(ref.flatten(), model(input_ids=ids)[0].flatten(), dim=0)
    assert cos > 0.99
    assert "quantized" in rep.summary() and "skipped" in rep.summary()


def test_vit_patch_conv_is_reported_and_linears_quantized():
    model = tiny_vit()
    px = torch.randn(2, 3, 32, 32)
    ref = model(pixel_values=px).logits
    quantize(model, "w4a8-int", [{"pixel_values": px}], progress=False)
    skipped = dict(model.lowbit_report.skipped)
    assert any("Conv2d" in why for why in skipped.values())
    assert "classifier" in skipped
    assert nn.functional.cosine_similarity(ref.flatten(), model(pixel_values=px).logits.flatten(), dim=0) > 0.9


def test_overrides_change_specs_and_skip():
    model = tiny_bert()
    s = Scheme("o", QuantSpec("int4", "group", 128), QuantSpec("int8", "token", dynamic=True),
               overrides=(Override("*.output.dense", weights=QuantSpec("int8")), Override("*.layer.0.*", skip=True)))
    quantize(model, s, progress=False)
    assert isinstance(model.encoder.layer[1].output.dense, QuantLinear)
    assert model.encoder.layer[1].output.dense.weight_spec == QuantSpec("int8")
    assert isinstance(model.encoder.layer[0].attention.self.query, nn.Linear)


def test_static_activation_scales_come_from_calibration(ids):
    model = tiny_gpt2()
    s = Scheme("static", QuantSpec("int8"), QuantSpec("int8", "tensor", observer="percentile", percentile=99.9))
    quantize(model, s, [ids], progress=False)
    layer = model.transformer.h[0].attn.c_attn
    assert layer.act_scale.item() > 0 and layer.act_scale.item() != 1.0


def test_static_scheme_without_calibration_is_an_error():
    s = Scheme("static", QuantSpec("int8"), QuantSpec("int8", "tensor"))
    with pytest.raises(CalibrationError, match="pass calibration data"):
        quantize(tiny_bert(), s)


def test_empty_calibration_is_an_error():
    with pytest.raises(CalibrationError, match="empty"):
        quantize(tiny_bert(), "w8a8-int8", [])
    with pytest.raises(CalibrationError, match="empty"):
        quantize(tiny_bert(), "w8a8-int8", [torch.zeros(1, 0, dtype=torch.long)])


def test_nan_activation_in_calibration_names_the_layer(ids):
    model = tiny_bert()
    with torch.no_grad():
        model.encoder.layer[1].intermediate.dense.weight[0, 0] = float("inf")
    with pytest.raises(CalibrationError, match=r"batch 0: the input of encoder\.layer\.1\.output\.dense"):
        quantize(model, "w8a8-int8", [ids], progress=False)


def test_model_without_linears_is_an_error():
    with pytest.raises(ModelError, match="no linear layer"):
        quantize(nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8)), "w8a8-int8")


def test_group_size_not_dividing_is_an_error_naming_the_layer():
    model = nn.Sequential(nn.Linear(200, 16))
    with pytest.raises(ShapeError, match=r"^0: group size 128 does not divide in_features 200"):
        quantize(model, "w4a16")


def test_quantizing_twice_is_an_error():
    model = tiny_bert()
    quantize(model, "w4a16", progress=False)
    with pytest.raises(ModelError, match="already quantized"):
        quantize(model, "w4a16")


def test_unknown_method_is_an_error():
    from lowbit.errors import SchemeError
    with pytest.raises(SchemeError, match="unknown method 'magic'"):
        quantize(tiny_bert(), get_scheme("w4a16").replace(methods=("magic",)))


@pytest.mark.parametrize("build", [tiny_llama, tiny_bert])
def test_blockwise_calibration_gives_the_same_static_scales(ids, build):
    """block_device: the final calibration pass one block at a time gives exactly the whole-model scales."""
    s = Scheme("static", QuantSpec("int8"), QuantSpec("int8", "tensor", observer="percentile", percentile=99.9))
    whole, blocks = build(), build()
    quantize(whole, s, [ids, ids[:, :5]], progress=False)
    quantize(blocks, s, [ids, ids[:, :5]], progress=False, block_device="cpu")
    scales = {n: m.act_scale for n, m in whole.named_modules() if isinstance(m, QuantLinear)}
    assert scales and all(torch.equal(scales[n], m.act_scale) for n, m in blocks.named_modules()
                          if isinstance(m, QuantLinear))
    assert set(scales) == {n for n, m in blocks.named_modules() if isinstance(m, QuantLinear)}


def test_blockwise_calibration_names_layers_outside_the_blocks(ids):
    s = Scheme("static", QuantSpec("int8"), QuantSpec("int8", "tensor"),
               overrides=(Override("lm_head", weights=QuantSpec("int8"), activations=QuantSpec("int8", "tensor")),))
    model = tiny_llama()
    assert "lm_head" in {p.name for p in plan(model, s).quantized}
    with pytest.raises(CalibrationError, match="never reached.*lm_head"):
        quantize(model, s, [ids], progress=False, block_device="cpu")

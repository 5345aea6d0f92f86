"""SmoothQuant / LAE folding and FPTQ's layer-wise activation policy."""
import pytest
import torch

from lowbit import quantize
from lowbit.errors import CalibrationError, ModelError, SchemeError
from lowbit.methods import equalize as E
from lowbit.methods import policy as P
from lowbit.scheme import QuantSpec, get_scheme
from tiny_models import tiny_bert, tiny_gpt2, tiny_llama

BATCHES = [torch.randint(0, 120, (2, 16)) for _ in range(2)]


def test_lae_scales_by_hand():
    s = E.lae_scales(torch.tensor([0.0, 2.0, 14.0, 254.0]))
    torch.testing.assert_close(s, torch.tensor([1.0, 1.0, 3.5, 254 / 8]))
    # the equalized channel max is log2(2 + max)
    torch.testing.assert_close(torch.tensor([2.0, 14.0, 254.0]) / s[1:], torch.tensor([2.0, 4.0, 8.0]))


def test_smoothquant_scales_by_hand():
    s = E.smoothquant_scales(torch.tensor([16.0, 1.0]), torch.tensor([4.0, 1.0]), alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 1.0]))
    s = E.smoothquant_scales(torch.tensor([8.0]), torch.tensor([2.0]), alpha=1.0)
    torch.testing.assert_close(s, torch.tensor([8.0]))


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
@pytest.mark.parametrize("rule", ["smoothquant", "lae"])
def test_folding_preserves_the_float_function(make, rule):
    m = make()
    ids = torch.randint(0, 120, (2, 16))
    with torch.no_grad():
        ref = m(input_ids=ids).logits
        groups = E.fold_groups(m)
        stats = E.channel_absmax(m, [g.linears[0] for g in groups], BATCHES, progress=False)
        stats = {k: v * torch.linspace(1, 50, v.numel()) for k, v in stats.items()}  # strong, uneven scales
        scales = E.equalize(m, groups, stats, rule)
        out = m(input_ids=ids).logits
    assert len(scales) == 2 * 2 and all((s != 1).any() for s in scales.values())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_channel_absmax_block_by_block_equals_a_full_forward():
    m = tiny_llama()
    name = "model.layers.1.mlp.down_proj"
    seen = []
    h = m.get_submodule(name).register_forward_pre_hook(lambda mod, a: seen.append(a[0].abs().amax(dim=(0, 1))))
    with torch.no_grad():
        for b in BATCHES:
            m(input_ids=b)
    h.remove()
    stats = E.channel_absmax(m, [name], BATCHES, progress=False)
    torch.testing.assert_close(stats[name], torch.stack(seen).amax(dim=0))


def test_equalization_needs_a_known_pre_norm_family():
    with pytest.raises(ModelError, match="post-norm encoders"):
        E.fold_groups(tiny_bert())


def test_equalization_needs_calibration_data():
    with pytest.raises(CalibrationError, match="needs calibration data"):
        quantize(tiny_llama(), get_scheme("w4a8-int").replace(methods=("lae",)), None, progress=False)


def test_smoothquant_alpha_is_checked():
    s = get_scheme("w4a8-int").replace(methods=("smoothquant",), method_args=(("smoothquant", (("alpha", 1.5),)),))
    with pytest.raises(SchemeError, match="alpha must be in"):
        quantize(tiny_llama(), s, BATCHES, progress=False)


def test_layer_modes_by_hand():
    ranges = {"a": 3.0, "b": 40.0, "c": 40.0, "d": 500.0, "e": 15.0, "f": 150.0}
    modes = P.layer_modes(ranges, foldable={"b", "d", "e", "f"}, v0=15, v1=150)
    assert modes == {"a": "static", "b": "lae+static", "c": "dynamic", "d": "dynamic", "e": "lae+static",
                     "f": "dynamic"}


def test_percentile_thresholds():
    ranges = {str(i): float(i) for i in range(101)}
    assert P.thresholds(ranges, P.FPTQArgs(rule="percentile", p0=50, p1=90)) == (50.0, 90.0)
    assert P.thresholds(ranges, P.FPTQArgs()) == (15.0, 150.0)


@pytest.mark.parametrize("bad, match", [({"rule": "median"}, "rule 'median' unknown"), ({"v0": 20.0, "v1": 10.0}, "v0 <= v1"),
                                        ({"p0": 95.0, "p1": 90.0}, "p0 <= p1")])
def test_fptq_arguments_are_checked(bad, match):
    with pytest.raises(SchemeError, match=match):
        P.FPTQArgs(**bad)


def test_fptq_needs_activation_quantization():
    with pytest.raises(SchemeError, match="use a scheme with activations"):
        quantize(tiny_llama(), get_scheme("w4a16").replace(methods=("fptq",)), BATCHES, progress=False)


def test_fptq_sets_per_layer_activation_specs_and_keeps_the_function():
    m = tiny_llama()
    ids = torch.randint(0, 120, (2, 16))
    scheme = get_scheme("w4a8-int").replace(methods=("fptq",), method_args=(("fptq", (("rule", "percentile"),)),))
    quantize(m, scheme, BATCHES, progress=False)
    info = m.lowbit_extras["fptq"]
    for name, d in info["layers"].items():
        q = m.get_submodule(name)
        want = {"static": ("tensor", False), "lae+static": ("tensor", False), "dynamic": ("token", True)}[d["mode"]]
        assert (q.act_spec.granularity, q.act_spec.dynamic) == want
        assert q.act_scale is not None if not want[1] else q.act_scale is None
    assert {d["mode"] for d in info["layers"].values()} >= {"static", "dynamic"}
    assert all(m.lowbit_report.quantized)  # the plan was rewritten, not dropped

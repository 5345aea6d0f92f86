import pytest

from lowbit.errors import SchemeError
from lowbit.scheme import PRESETS, Override, QuantSpec, Scheme, get_scheme

EXPECTED = {"w8a8-int8", "w8a8-fp8", "w4a16", "w4a16-fp4", "w4a8-int", "w4a8-fp", "w4a4-int", "w4a4-int-channel", "w4a4-fp4"}


def test_presets_are_the_documented_set():
    assert set(PRESETS) == EXPECTED
    assert get_scheme("w4a16").weights == QuantSpec("int4", "group", 128)
    assert get_scheme("w4a16").activations is None
    w4a8fp = get_scheme("w4a8-fp")
    assert (w4a8fp.weights.format, w4a8fp.weights.scale_rule) == ("fp4_e2m1", "pow2_row")
    assert (w4a8fp.activations.format, w4a8fp.activations.granularity) == ("fp8_e4m3", "token")


def test_unknown_preset_lists_known_ones():
    with pytest.raises(SchemeError, match="w8a8-int8.*w4a4-fp4"):
        get_scheme("w3a3")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_preset_round_trips_through_yaml(name):
    s = PRESETS[name]
    assert Scheme.from_yaml(s.to_yaml()) == s


def test_custom_scheme_with_overrides_round_trips(tmp_path):
    s = Scheme("mine", QuantSpec("int4", "group", 64, symmetric=False, observer="mse"),
               QuantSpec("int8", "tensor", observer="percentile", percentile=99.9),
               overrides=(Override("*.down_proj", weights=QuantSpec("int8")), Override("re:layers\\.0\\.", skip=True)),
               methods=("gptq",), method_args=(("gptq", (("damp", 0.01),)),))
    path = tmp_path / "s.yaml"
    path.write_text(s.to_yaml())
    back = get_scheme(str(path))
    assert back == s
    assert back.resolve("model.layers.3.mlp.down_proj") == (QuantSpec("int8"), s.activations)
    assert "override" in back.resolve("model.layers.0.self_attn.q_proj")
    assert "head" in back.resolve("lm_head")
    assert back.method_kwargs("gptq") == {"damp": 0.01}


@pytest.mark.parametrize("text,match", [
    ("weights: {format: int4, colour: red}", r"unknown key\(s\) \['colour'\]"),
    ("weights: {format: int4, group_size: '128', granularity: group}", "wrong type str"),
    ("weights: {format: int4, symmetric: 'yes'}", "wrong type str"),
    ("weights: {granularity: channel}", "missing required key 'format'"),
    ("activations: {format: int8}", "missing required key 'weights'"),
    ("weights: int4\nextra: 1", r"unknown key\(s\) \['extra'\]"),
    ("weights: int4\nversion: 99", "newer"),
    ("- a list", "mapping"),
    ("weights: [unclosed", "not valid YAML"),
    ("weights: {format: int9}", "unknown number format"),
])
def test_bad_yaml_is_named(text, match):
    with pytest.raises(SchemeError, match=match):
        Scheme.from_yaml(text)


@pytest.mark.parametrize("kw,match", [
    (dict(format="int4", granularity="group"), "group_size"),
    (dict(format="int4", granularity="channel", group_size=64), "drop group_size"),
    (dict(format="fp8_e4m3", symmetric=False), "float format"),
    (dict(format="uint4"), "signed"),
    (dict(format="int4", granularity="row"), "allowed: tensor, channel, group, token"),
    (dict(format="int4", scale_rule="pow2_row"), "needs granularity 'group'"),
    (dict(format="int4", observer="kl"), "minmax, percentile, mse"),
])
def test_invalid_specs(kw, match):
    with pytest.raises(SchemeError, match=match):
        QuantSpec(**kw)


def test_invalid_scheme_combinations():
    with pytest.raises(SchemeError, match="per-token"):
        Scheme("x", QuantSpec("int4"), QuantSpec("int8", "token", dynamic=False))
    with pytest.raises(SchemeError, match="weights are quantized once"):
        Scheme("x", QuantSpec("int4", "token", dynamic=True))
    with pytest.raises(SchemeError, match="not supported"):
        Scheme("x", QuantSpec("int4"), QuantSpec("int8", "channel"))


def test_missing_yaml_file():
    with pytest.raises(SchemeError, match="does not exist"):
        get_scheme("/nonexistent/scheme.yaml")


def test_schemes_are_frozen():
    with pytest.raises(Exception):
        PRESETS["w4a16"].name = "x"

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lowbit.api import quantize
from lowbit.intonly.blocks import INTONLY_SCHEME, IVIT_PAPER, IntBertModel, IntConfig, build_int_bert
from lowbit.intonly.checker import check_integer_only, walk
from lowbit.intonly.dyadic import INT, SIM, IntegerOnlyError
from lowbit.scheme import QuantSpec
from tiny_models import tiny_bert, tiny_gpt2


# min-max observers keep the tests fast; the MSE observer of INTONLY_SCHEME changes scales, not the graph
MINMAX = INTONLY_SCHEME.replace(activations=QuantSpec("int8", "tensor"))


@pytest.fixture(scope="module")
def built():
    fp = tiny_bert()
    g = torch.Generator().manual_seed(0)
    calib = [{"input_ids": torch.randint(0, 120, (4, 16), generator=g)} for _ in range(2)]
    im = build_int_bert(copy.deepcopy(fp), calib, IVIT_PAPER, scheme=MINMAX)
    ids = torch.randint(0, 120, (2, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return fp, im, (ids, mask, torch.zeros_like(ids)), calib


@pytest.mark.parametrize("softmax,gelu", [("shift", "shift"), ("poly", "poly")])
def test_integer_forward_equals_float64_simulation_exactly(built, softmax, gelu):
    fp, im, args, calib = built
    if (softmax, gelu) != ("shift", "shift"):
        im = IntBertModel(im_source(fp, calib), dataclasses.replace(IVIT_PAPER, softmax=softmax, gelu=gelu)).calibrate(calib)
    h_int, s_int = im.integer_forward(INT, *args)
    h_sim, s_sim = im.integer_forward(SIM, *args)
    assert h_int.dtype == torch.int64 and s_int == s_sim
    assert torch.equal(h_int, h_sim.long())


def im_source(fp, calib):
    return quantize(copy.deepcopy(fp), MINMAX, calib, progress=False)


def test_close_to_float_model(built):
    fp, im, (ids, mask, tt), _ = built
    out = im(ids, mask, tt).last_hidden_state
    ref = fp(input_ids=ids, attention_mask=mask).last_hidden_state
    cos = F.cosine_similarity(out, ref, dim=-1)[mask.bool()]
    assert cos.min() > 0.98


def test_checker_passes_the_integer_graph(built):
    _, im, args, _ = built
    report = check_integer_only(im.integer_forward, INT, *args)
    assert report.ops["mm"] + report.ops["bmm"] > 0 and not report.violations


def test_checker_fails_on_the_float_simulation(built):
    _, im, args, _ = built
    with pytest.raises(IntegerOnlyError, match="floating-point"):
        check_integer_only(im.integer_forward, SIM, *args)


class Planted:
    """An op that computes the original, then one planted extra step."""

    def __init__(self, op, extra):
        self.op, self.extra, self.out_scale = op, extra, op.out_scale

    def __call__(self, A, x, *args):
        return self.extra(self.op(A, x, *args))

    def __getattr__(self, name):
        return getattr(self.op, name)


def test_checker_fails_on_planted_float_op(built, monkeypatch):
    _, im, args, _ = built
    op = im.plan["layer0.softmax"]
    monkeypatch.setitem(im.plan, "layer0.softmax", Planted(op, lambda y: (y.float() * 1.0).long()))
    with pytest.raises(IntegerOnlyError, match="mul: float32"):
        check_integer_only(im.integer_forward, INT, *args)


def test_checker_fails_on_planted_integer_division(built, monkeypatch):
    _, im, args, _ = built
    op = im.plan["layer1.gelu"]
    monkeypatch.setitem(im.plan, "layer1.gelu", Planted(op, lambda y: y // 3))
    with pytest.raises(IntegerOnlyError, match="floor_divide.*division"):
        check_integer_only(im.integer_forward, INT, *args)


def test_checker_fails_when_nothing_ran():
    with pytest.raises(IntegerOnlyError, match="no tensor op"):
        check_integer_only(lambda: 3)
    _, report = walk(lambda: torch.arange(3) + 1)
    assert report.ops["add"] == 1 and not report.violations


def test_build_errors(built):
    fp, im, args, calib = built
    with pytest.raises(IntegerOnlyError, match="model_type 'bert'"):
        build_int_bert(tiny_gpt2(), calib)
    other = quantize(copy.deepcopy(fp), "w8a8-int8", progress=False)  # per-token dynamic activations
    with pytest.raises(IntegerOnlyError, match="per-tensor static"):
        IntBertModel(other, IVIT_PAPER)
    with pytest.raises(IntegerOnlyError, match="backend must be"):
        im(*args, backend="float")
    uncal = IntBertModel(im_source(fp, calib), IVIT_PAPER)
    with pytest.raises(IntegerOnlyError, match="calibrate the model first"):
        uncal.integer_forward(INT, *args)
    with pytest.raises(IntegerOnlyError, match="at least one batch"):
        uncal.calibrate([])


@pytest.fixture(scope="module")
def smoothed(built):
    fp, _, args, calib = built
    return IntBertModel(copy.deepcopy(fp), IntConfig()).calibrate(calib)  # the defaults: smooth='auto', 16-bit scores


def test_smoothed_graph_is_integer_only_bit_exact_and_accurate(built, smoothed):
    fp, _, (ids, mask, tt), _ = built
    h_int, _ = smoothed.integer_forward(INT, ids, mask, tt)
    assert torch.equal(h_int, smoothed.integer_forward(SIM, ids, mask, tt)[0].long())
    assert not check_integer_only(smoothed.integer_forward, INT, ids, mask, tt).violations
    assert set(smoothed.smooth_alpha) == {f"layer{i}.{n}" for i in range(2) for n in ("q", "o", "fc1", "fc2")}
    ref = fp(input_ids=ids, attention_mask=mask).last_hidden_state
    cos = F.cosine_similarity(smoothed(ids, mask, tt).last_hidden_state, ref, dim=-1)[mask.bool()]
    assert cos.min() > 0.98
    x = smoothed.scales["layer0.x"]  # per input channel: S * t_k
    assert x.shape == (128,) and (x > 0).all()


def test_float_linears_without_smoothing_get_per_tensor_scales(built):
    fp, _, (ids, mask, tt), calib = built
    im = IntBertModel(copy.deepcopy(fp), IVIT_PAPER).calibrate(calib)
    assert isinstance(im.scales["layer0.x3"], torch.Tensor) and im.scales["layer0.x3"].unique().numel() == 1
    assert set(im.smooth_alpha.values()) == {None}
    assert torch.equal(im.integer_forward(INT, ids, mask, tt)[0], im.integer_forward(SIM, ids, mask, tt)[0].long())


def test_smoothing_needs_float_linears(built):
    fp, _, _, calib = built
    with pytest.raises(IntegerOnlyError, match="pass the float model"):
        IntBertModel(im_source(fp, calib), IntConfig(smooth=0.5))
    with pytest.raises(IntegerOnlyError, match="IVIT_PAPER"):  # the defaults smooth too
        build_int_bert(im_source(fp, calib), calib)


def test_defaults_are_the_accurate_settings_and_the_paper_preset_is_kept():
    assert (IntConfig().smooth, IntConfig().score_bits) == ("auto", 16)
    assert (IVIT_PAPER.smooth, IVIT_PAPER.score_bits, IVIT_PAPER.softmax, IVIT_PAPER.gelu) == (None, 8, "shift", "shift")


def test_ablation_replaces_ops_in_the_simulation_only(built, smoothed):
    _, _, args, _ = built
    base = smoothed.integer_forward(SIM, *args)[0]
    try:
        for op in ("softmax", "gelu", "layernorm", "rq:x3"):
            out = smoothed.ablate(op).integer_forward(SIM, *args)[0]
            assert not torch.equal(out, base) and (out - base).abs().max() < 0.1 * base.abs().max(), op
        with pytest.raises(IntegerOnlyError, match="replaced by float"):
            smoothed(*args)
        with pytest.raises(IntegerOnlyError, match="known ops"):
            smoothed.ablate("exp")
    finally:
        smoothed.ablate()
    assert torch.equal(smoothed.integer_forward(SIM, *args)[0], base)


@pytest.mark.parametrize("bad", [dict(softmax="exp"), dict(gelu="tanh"), dict(score_bits=2), dict(prob_bits=9),
                                 dict(smooth=1.5), dict(smooth="max")])
def test_config_errors(bad):
    with pytest.raises(IntegerOnlyError):
        IntConfig(**bad)

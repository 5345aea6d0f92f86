import pytest
import torch
import torch.nn.functional as F

from lowbit.intonly.blocks import IVIT_PAPER, IntConfig
from lowbit.intonly.checker import check_integer_only
from lowbit.intonly.dyadic import INT, SIM, IntegerOnlyError
from lowbit.intonly.vit import IntViTModel, build_int_vit
from tiny_models import tiny_bert, tiny_vit


@pytest.fixture(scope="module")
def vit():
    m = tiny_vit()
    g = torch.Generator().manual_seed(0)
    calib, test = torch.randn(32, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    return m, calib, test


# (the I-BERT polynomial ops are shared with BERT and tested there)
@pytest.mark.parametrize("config", [IVIT_PAPER, IntConfig()])  # I-ViT paper settings, the accurate defaults
def test_vit_integer_graph_equals_float64_twin_and_is_integer_only(vit, config):
    m, calib, test = vit
    im = build_int_vit(m, calib, config)
    codes = im.quantize_pixels(test)
    assert codes.dtype == torch.int64 and codes.abs().max() <= 128
    z_int, s = im.integer_logits(INT, codes)
    z_sim, _ = im.integer_logits(SIM, codes)
    assert z_int.dtype == torch.int64 and torch.equal(z_int, z_sim.long())
    report = check_integer_only(im.integer_logits, INT, codes)
    assert report.ops["mm"] + report.ops["bmm"] > 0 and not report.violations
    logits = im(test).logits
    assert torch.allclose(logits, (z_int.double() * s).float())
    ref = m(pixel_values=test).logits  # a random head's logits are small: bound the error by their spread
    assert (logits - ref).abs().max() < 0.15 * ref.abs().max()


def test_vit_encoder_without_head_matches_float_hidden_states(vit):
    m, calib, test = vit
    im = build_int_vit(m.vit, calib, IntConfig(smooth="auto"))
    out = im(test).last_hidden_state  # after the final LayerNorm
    ref = m.vit(pixel_values=test).last_hidden_state
    assert out.shape == ref.shape == (3, 17, 128)
    assert F.cosine_similarity(out, ref, dim=-1).min() > 0.98
    h_int, _ = im.integer_forward(INT, im.quantize_pixels(test))
    assert torch.equal(h_int, im.integer_forward(SIM, im.quantize_pixels(test))[0].long())
    with pytest.raises(IntegerOnlyError, match="no classifier head"):
        im.integer_logits(INT, im.quantize_pixels(test))


def test_vit_errors(vit):
    m, calib, test = vit
    with pytest.raises(IntegerOnlyError, match="model_type 'vit'"):
        build_int_vit(tiny_bert(), calib)
    uncal = IntViTModel(m, IntConfig())
    with pytest.raises(IntegerOnlyError, match="calibrate the model first"):
        uncal(test)
    im = build_int_vit(m, calib)
    with pytest.raises(IntegerOnlyError, match=r"\(B, 3, 32, 32\)"):
        im(torch.zeros(2, 3, 16, 16))
    with pytest.raises(IntegerOnlyError, match="at least one image"):
        IntViTModel(m, IntConfig()).calibrate(torch.zeros(0, 3, 32, 32))

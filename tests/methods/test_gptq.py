"""GPTQ maths on hand-made inputs, its error paths, and the method on a tiny decoder."""
import pytest
import torch

from lowbit import quantize
from lowbit.errors import CalibrationError, SchemeError
from lowbit.methods import gptq as G
from lowbit.quant.observers import fake_quant
from lowbit.quant.qtensor import quantize_weight
from lowbit.scheme import QuantSpec, get_scheme
from tiny_models import tiny_llama


def _layer(k=64, n=32, t=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, k, generator=g) @ torch.randn(k, k, generator=g) * 0.3 + torch.randn(k, generator=g)
    return x, torch.randn(n, k, generator=g)


def _out_err(x, w, q):
    return ((x @ (q - w).T) ** 2).mean().item()


SPECS = [QuantSpec("int4", "group", 16), QuantSpec("fp4_e2m1", "group", 16), QuantSpec("int4", "channel"),
         QuantSpec("int4", "group", 16, symmetric=False), QuantSpec("fp4_e2m1", "group", 16, scale_rule="pow2_row"),
         QuantSpec("fp4_e2m1", "group", 16, scale_rule="pow2"), QuantSpec("int8", "tensor")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.describe()}-{s.scale_rule}")
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_and_lands_on_the_grid(spec, act_order):
    x, w = _layer()
    h, _ = G.accumulate_hessian(None, 0, x)
    q, s, z, d = G.gptq_quantize(w, h, spec, block_size=16, act_order=act_order)
    assert d == 0.01
    qt = quantize_weight(q, spec, scale=s, zero=z)
    assert torch.equal(qt.dequantize(), q)  # stored codes reproduce GPTQ's values exactly
    rtn = quantize_weight(w, spec).dequantize()
    assert _out_err(x, w, q) < 0.8 * _out_err(x, w, rtn)


def test_hessian_accumulates_as_one_batch():
    x = torch.randn(50, 8)
    h1, n1 = G.accumulate_hessian(None, 0, x)
    h2, n2 = G.accumulate_hessian(*G.accumulate_hessian(None, 0, x[:20]), x[20:])
    assert n1 == n2 == 50
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(h1, 2 / 50 * x.T @ x)


@pytest.mark.parametrize("spec", [QuantSpec("int4", "channel"), QuantSpec("int4", "channel", symmetric=False),
                                  QuantSpec("fp4_e2m1", "channel"), QuantSpec("fp8_e4m3", "channel")])
def test_column_fake_quant_matches_observers(spec):
    w = torch.randn(40) * 3
    s = torch.rand(40) + 0.1
    z = torch.randint(0, 15, (40,)).float() if not spec.symmetric else None
    torch.testing.assert_close(G.fake_quant_column(w, s, z, spec), fake_quant(w, s, z, spec), rtol=0, atol=0)


def test_dead_inputs_get_zero_weight():
    x, w = _layer(k=32)
    x[:, 3] = 0
    h, _ = G.accumulate_hessian(None, 0, x)
    q, *_ = G.gptq_quantize(w, h, QuantSpec("int4", "group", 16), block_size=8)
    assert torch.all(q[:, 3] == 0)


def test_non_positive_definite_hessian_raises_clear_error():
    h = -torch.eye(16)
    with pytest.raises(G.HessianError, match="not positive definite.*calibration tokens.*gptq.damp"):
        G.gptq_quantize(torch.randn(4, 16), h, QuantSpec("int4", "channel"))


def test_damping_escalates_before_giving_up():
    h = torch.diag(torch.tensor([1.0] * 15 + [-0.05 * 15]))  # mean diag 0.95; needs damp > ~0.8
    _, d = G.inverse_cholesky(h, 0.01)
    assert d == pytest.approx(1.0)


def test_non_finite_hessian_raises():
    h = torch.eye(8)
    h[0, 1] = float("nan")
    with pytest.raises(CalibrationError, match="NaN or Inf"):
        G.inverse_cholesky(h, 0.01)


@pytest.mark.parametrize("bad, match", [({"damp": 0.0}, "damp must be > 0"), ({"block_size": 0}, "block_size"),
                                        ({"blocksize": 3}, "unknown keys")])
def test_bad_arguments(bad, match):
    scheme = get_scheme("w4a16").replace(methods=("gptq",), method_args=(("gptq", tuple(bad.items())),))
    with pytest.raises(SchemeError, match=match):
        quantize(tiny_llama(), scheme, [torch.randint(0, 120, (1, 8))], progress=False)


def test_gptq_needs_calibration_data():
    with pytest.raises(CalibrationError, match="needs calibration data"):
        quantize(tiny_llama(), get_scheme("w4a16").replace(methods=("gptq",)), None, progress=False)


def _logit_err(scheme, batches, ids):
    m = tiny_llama()
    ref = m(input_ids=ids).logits
    quantize(m, scheme, batches, progress=False)
    return (m(input_ids=ids).logits - ref).pow(2).mean().item(), m


def test_gptq_method_on_a_decoder_beats_rtn_and_restores_float_weights():
    torch.manual_seed(1)
    batches = [torch.randint(0, 120, (2, 32)) for _ in range(4)]
    ids = torch.randint(0, 120, (2, 32))
    rtn, _ = _logit_err(get_scheme("w4a16"), batches, ids)
    err, m = _logit_err(get_scheme("w4a16").replace(methods=("gptq", "lorc")), batches, ids)
    assert err < 0.9 * rtn
    assert "gptq_fallbacks" not in m.lowbit_extras


def test_non_pd_hessian_falls_back_to_rtn_with_a_message(monkeypatch):
    def refuse(h, damp, name="weight"):
        raise G.HessianError(f"{name}: the GPTQ Hessian is not positive definite")

    monkeypatch.setattr(G, "inverse_cholesky", refuse)
    m = tiny_llama()
    with pytest.warns(UserWarning, match="round-to-nearest instead"):
        quantize(m, get_scheme("w4a16").replace(methods=("gptq",)), [torch.randint(0, 120, (1, 8))], progress=False)
    fallbacks = m.lowbit_extras["gptq_fallbacks"]
    assert "model.layers.0.self_attn.q_proj" in fallbacks and "not positive definite" in fallbacks[
        "model.layers.0.self_attn.q_proj"]
    rtn = quantize_weight(tiny_llama().model.layers[0].self_attn.q_proj.weight.detach(), get_scheme("w4a16").weights)
    assert torch.equal(m.model.layers[0].self_attn.q_proj.qweight, rtn.codes)

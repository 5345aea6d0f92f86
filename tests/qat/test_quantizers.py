"""Scale gradients against hand-computed values; fake-quant forward equals the PTQ functions bit for bit."""
import math

import pytest
import torch

from lowbit.errors import SchemeError
from lowbit.qat.quantizers import (ActQuantizer, WeightQuantizer, fake_quant_ste, local_scale_grad,
                                   lsq_grad_scale, round_bf16)
from lowbit.quant.qtensor import quantize_activation, quantize_weight
from lowbit.scheme import QuantSpec

INT4 = QuantSpec("int4", "tensor")


def test_lsq_local_gradient_int4_by_hand():
    # s = 0.5: x/s = [0.6, -0.4, 2, 10, -12]; grid [-8, 7]; round -> [1, -0, 2]; the last two clip.
    x = torch.tensor([0.3, -0.2, 1.0, 5.0, -6.0])
    ds, inside = local_scale_grad(x, torch.tensor(0.5), None, INT4)
    assert inside.tolist() == [True, True, True, False, False]
    torch.testing.assert_close(ds, torch.tensor([1 - 0.6, 0.4, 0.0, 7.0, -8.0]))


def test_lsq_local_gradient_asymmetric_by_hand():
    # uint4 [0, 15], z = 3, s = 0.5: x/s + z = [3.6, -1, 17] -> q = [4, 0, 15], q - z = [1, -3, 12].
    spec = QuantSpec("int4", "tensor", symmetric=False)
    ds, inside = local_scale_grad(torch.tensor([0.3, -2.0, 7.0]), torch.tensor(0.5), torch.tensor(3.0), spec)
    assert inside.tolist() == [True, False, False]
    torch.testing.assert_close(ds, torch.tensor([1 - 0.6, -3.0, 12.0]))


def test_lsq_local_gradient_fp4_by_hand():
    # e2m1 grid {0, .5, 1, 1.5, 2, 3, 4, 6}: 2.4 -> 2, 7 saturates to 6, -0.2 -> -0.
    spec = QuantSpec("fp4_e2m1", "tensor")
    ds, inside = local_scale_grad(torch.tensor([2.4, 7.0, -0.2]), torch.tensor(1.0), None, spec)
    assert inside.tolist() == [True, False, True]
    torch.testing.assert_close(ds, torch.tensor([2 - 2.4, 6.0, 0.2]))


def test_fake_quant_ste_backward_matches_hand_values():
    x = torch.tensor([0.3, -0.2, 1.0, 5.0, -6.0], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    c = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    g = lsq_grad_scale(5, INT4)
    assert g == pytest.approx(1 / math.sqrt(5 * 7))
    y = fake_quant_ste(x, s, None, INT4, g)
    torch.testing.assert_close(y, torch.tensor([0.5, -0.0, 1.0, 3.5, -4.0]))
    (y * c).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0]))  # STE inside, 0 where clipped
    expected = (0.4 * 1 + 0.4 * 2 + 0.0 * 3 + 7 * 4 - 8 * 5) * g
    assert s.grad.item() == pytest.approx(expected, rel=1e-6)


def test_mkq_slot_is_log_domain_chain_rule_of_lsq():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    lsq, mkq = WeightQuantizer(INT4, w, "lsq"), WeightQuantizer(INT4, w, "mkq")
    c = torch.randn(8, 16)
    (lsq(w) * c).sum().backward()
    (mkq(w) * c).sum().backward()
    s = lsq.step().detach()
    raw = lsq.scale.grad / lsq_grad_scale(w.numel(), INT4)  # LSQ's local gradient without g
    torch.testing.assert_close(mkq.log2_scale.grad, math.log(2) * s * raw)


@pytest.mark.parametrize("spec", [QuantSpec("int4", "group", 16), QuantSpec("int4", "channel"),
                                  QuantSpec("int8", "tensor"), QuantSpec("int4", "group", 16, symmetric=False),
                                  QuantSpec("fp4_e2m1", "group", 16)])
@pytest.mark.parametrize("grad", ["lsq", "mkq", "minmax"])
def test_weight_fake_quant_equals_quantize_weight(spec, grad):
    torch.manual_seed(1)
    w = torch.randn(12, 64)
    q = WeightQuantizer(spec, w, grad)
    if grad != "minmax":  # move learned scales off the observer's values, as training does
        with torch.no_grad():
            p = q.scale if grad == "lsq" else q.log2_scale
            p.mul_(1 + 0.05 * torch.rand_like(p))
    ref = quantize_weight(w, spec, scale=q.step(w).detach(), zero=q.zero).dequantize()
    assert torch.equal(q(w), ref)


def test_group_scales_are_bf16_in_forward():
    s = torch.tensor([0.1234567], requires_grad=True)
    r = round_bf16(s)
    assert r.item() == s.detach().to(torch.bfloat16).float().item() != s.item()
    r.sum().backward()
    assert s.grad.item() == 1.0


def test_dynamic_activation_is_exact_with_identity_gradient():
    spec = QuantSpec("int4", "token", dynamic=True)
    x = torch.randn(2, 5, 32, requires_grad=True)
    y = ActQuantizer(spec)(x)
    assert torch.equal(y, quantize_activation(x.detach(), spec))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("grad", ["lsq", "mkq", "minmax"])
def test_static_activation_learns_and_matches_ptq(grad):
    spec = QuantSpec("int8", "tensor", dynamic=False)
    q = ActQuantizer(spec, grad).train()
    x = torch.randn(4, 32)
    y = q(x)
    assert torch.equal(y, quantize_activation(x, spec, q.step().detach()))
    if grad != "minmax":
        y.pow(2).sum().backward()
        assert any(p.grad is not None and p.grad.abs().item() > 0 for p in q.parameters())


def test_quantizer_errors():
    with pytest.raises(SchemeError, match="unknown scale gradient"):
        WeightQuantizer(INT4, torch.randn(4, 4), "sgd")
    with pytest.raises(SchemeError, match="symmetric"):
        ActQuantizer(QuantSpec("int8", "tensor", symmetric=False), "lsq")
    with pytest.raises(SchemeError, match="never initialised"):
        ActQuantizer(QuantSpec("int8", "tensor"), "lsq").eval()(torch.randn(2, 4))

"""ZeroQuant-FP scale constraints M1 / M2 (PAPERS.md §4) as stated: powers of two, no clipping, and FP4 -> FP8
is an exponent shift."""
import torch

from lowbit.formats import FP4_E2M1, FP8_E4M3
from lowbit.quant.observers import constrain_scales
from lowbit.quant.qtensor import quantize_weight
from lowbit.scheme import QuantSpec


def _scales():
    return torch.rand(16, 9) * torch.logspace(-3, 1, 9)


def test_m1_scales_are_powers_of_two_and_never_smaller():
    s = _scales()
    c = constrain_scales(s, "pow2")
    assert torch.equal(torch.log2(c), torch.round(torch.log2(c)))
    assert torch.all(c >= s) and torch.all(c < 2 * s)


def test_m2_group_scales_are_the_row_scale_times_a_power_of_two():
    s = _scales()
    c = constrain_scales(s, "pow2_row")
    row = s.amax(dim=1, keepdim=True)
    k = -torch.log2(c / row)
    assert torch.equal(k, torch.round(k)) and k.min() >= 0 and k.max() <= 8
    assert torch.all(c >= s)


def test_fp4_values_shifted_by_m2_ratios_are_exact_in_fp8():
    v = FP4_E2M1.table.float()
    for k in range(9):
        shifted = v * 2.0 ** -k
        torch.testing.assert_close(FP8_E4M3.round(shifted), shifted, rtol=0, atol=0)


def test_m2_weight_dequantizes_through_fp8_exactly():
    w = torch.randn(8, 64) * torch.logspace(-2, 0, 64)
    qt = quantize_weight(w, QuantSpec("fp4_e2m1", "group", 16, scale_rule="pow2_row"))
    s = qt.scale.float()
    row = s.amax(dim=1, keepdim=True)
    ratio = (s / row).repeat_interleave(16, dim=1)  # (N, K) powers of two
    fp4 = FP4_E2M1.decode(qt.unpacked_codes())
    fp8 = FP8_E4M3.round(fp4 * ratio)  # the exponent-shifted FP8 operand
    torch.testing.assert_close(fp8 * row, qt.dequantize(), rtol=0, atol=0)

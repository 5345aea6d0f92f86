import pytest
import torch
from hypothesis import given, settings, strategies as st

from lowbit.errors import ShapeError
from lowbit.formats import FP4_E2M1, FP8_E4M3
from lowbit.quant.observers import choose_scale, constrain_scales
from lowbit.quant.qtensor import quantize_activation, quantize_weight
from lowbit.scheme import QuantSpec


def ref_int_sym(w, bits, g):
    """Independent reference: symmetric INT group quantization written out directly."""
    n, k = w.shape
    wg = w.reshape(n, k // g, g)
    qmax = 2 ** (bits - 1) - 1
    s = (wg.abs().amax(-1, keepdim=True) / qmax).to(torch.bfloat16).float()
    q = torch.clamp(torch.round(wg / s), -qmax - 1, qmax)
    return (q * s).reshape(n, k)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 9), groups=st.integers(1, 4), bits=st.sampled_from([2, 3, 4, 8]), seed=st.integers(0, 999))
def test_int_group_dequant_matches_reference(n, groups, bits, seed):
    w = torch.randn(n, 32 * groups, generator=torch.Generator().manual_seed(seed))
    qt = quantize_weight(w, QuantSpec(f"int{bits}", "group", 32))
    assert torch.equal(qt.dequantize(), ref_int_sym(w, bits, 32))
    assert qt.codes.dtype == (torch.uint8 if bits == 4 else torch.int8)
    assert qt.codes.shape == (n, 16 * groups if bits == 4 else 32 * groups)
    assert qt.scale.dtype == torch.bfloat16 and qt.scale.shape == (n, groups)


def test_asymmetric_int4_uses_zero_points_and_beats_symmetric_on_shifted_data():
    w = torch.rand(16, 128, generator=torch.Generator().manual_seed(0)) + 0.5  # all positive
    asym = quantize_weight(w, QuantSpec("int4", "group", 64, symmetric=False))
    sym = quantize_weight(w, QuantSpec("int4", "group", 64))
    assert asym.zero is not None and asym.zero.dtype == torch.uint8
    assert (asym.dequantize() - w).pow(2).mean() < 0.5 * (sym.dequantize() - w).pow(2).mean()
    codes = asym.unpacked_codes()
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15


def test_per_channel_and_per_tensor_fp8():
    # rows 10^5 apart: under one tensor scale the smallest row sits in e4m3's subnormals (or flushes to zero)
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-4, 1, 8)[:, None]
    ch = quantize_weight(w, QuantSpec("fp8_e4m3", "channel"))
    assert ch.scale.shape == (8, 1) and ch.scale.dtype == torch.float32
    expect = FP8_E4M3.decode(FP8_E4M3.encode(w, ch.scale), ch.scale)
    assert torch.equal(ch.dequantize(), expect)
    t = quantize_weight(w, QuantSpec("fp8_e4m3", "tensor"))
    assert t.scale.shape == (1, 1)
    # what per-channel scales buy FP8 (relative error of the smallest row; over 300 seeds: <= 0.031 vs >= 0.21).
    # The whole-tensor error norm is no test: the largest rows dominate it and have the same relative error either way
    # (it favoured per-tensor on 98 of 300 seeds, which made this test fail at random in CI).
    rel = lambda q: float((q.dequantize() - w)[0].norm() / w[0].norm())  # noqa: E731
    assert rel(ch) < 0.05 and rel(t) > 0.15


def test_fp4_group_codes_are_on_the_table():
    w = torch.randn(4, 256)
    qt = quantize_weight(w, QuantSpec("fp4_e2m1", "group", 128))
    vals = qt.dequantize() / qt.scale.float().repeat_interleave(128, dim=1)
    assert set(vals.unique().tolist()) <= set(FP4_E2M1.table.tolist())
    assert qt.codes.shape == (4, 128)


def test_group_size_must_divide_in_features():
    with pytest.raises(ShapeError, match="group size 128 does not divide in_features 200.*e.g. 8"):
        quantize_weight(torch.randn(4, 200), QuantSpec("int4", "group", 128), "layer.x")


def test_odd_in_features_cannot_pack_4bit():
    with pytest.raises(ShapeError, match="odd"):
        quantize_weight(torch.randn(4, 7), QuantSpec("int4", "channel"))


def test_nan_weight_is_rejected():
    w = torch.randn(4, 8)
    w[1, 2] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        quantize_weight(w, QuantSpec("int8"), "bad")


def test_pow2_scale_rules():
    s = torch.tensor([[0.3, 0.05, 0.0011, 0.3]])
    m1 = constrain_scales(s, "pow2")
    assert torch.equal(torch.log2(m1), torch.log2(m1).round()) and (m1 >= s).all()
    m2 = constrain_scales(s, "pow2_row")
    k = torch.log2(s.max() / m2)
    assert torch.equal(k, k.round()) and (m2 >= s).all() and k.max() <= 8
    assert m2[0, 2] == 0.3 * 2.0**-8  # the ratio 0.3/0.0011 needs k=8 (capped there)


def test_pow2_row_scales_survive_bf16_storage_exactly():
    w = torch.randn(8, 512) * torch.rand(1, 512) * 3
    qt = quantize_weight(w, QuantSpec("fp4_e2m1", "group", 128, scale_rule="pow2_row"))
    row = qt.scale.float().amax(1, keepdim=True)
    k = torch.log2(row / qt.scale.float())
    assert torch.equal(k, k.round())


def test_mse_and_percentile_observers_clip_outliers():
    x = torch.randn(4, 4096, generator=torch.Generator().manual_seed(0))
    x[:, 0] = 40.0  # one outlier per row
    err = {}
    for obs in ("minmax", "percentile", "mse"):
        spec = QuantSpec("int4", "channel", observer=obs, percentile=99.0)
        err[obs] = (quantize_weight(x, spec).dequantize() - x).pow(2).mean()
    assert err["mse"] < err["minmax"] and err["percentile"] < err["minmax"]


def test_per_token_activation_quant_matches_formula():
    x = torch.randn(3, 5, 64)
    out = quantize_activation(x, QuantSpec("int8", "token", dynamic=True))
    s = x.abs().amax(-1, keepdim=True) / 127
    assert torch.equal(out, torch.clamp(torch.round(x / s), -128, 127) * s)
    fp8 = quantize_activation(x, QuantSpec("fp8_e4m3", "token", dynamic=True))
    s8 = x.abs().amax(-1, keepdim=True) / 448
    assert torch.equal(fp8, (x / s8).to(torch.float8_e4m3fn).float() * s8)


def test_zero_rows_do_not_divide_by_zero():
    s, _ = choose_scale(torch.zeros(2, 8), QuantSpec("int8"))
    assert torch.equal(s, torch.ones(2))
    assert torch.equal(quantize_activation(torch.zeros(2, 8), QuantSpec("int8", "token", dynamic=True)),
                       torch.zeros(2, 8))


@pytest.mark.parametrize("fmt", ["int4", "fp4_e2m1"])
def test_4bit_storage_is_about_a_quarter_of_bf16(fmt):
    qt = quantize_weight(torch.randn(256, 1024), QuantSpec(fmt, "group", 128))
    ratio = qt.nbytes() / (2 * 256 * 1024)
    assert 0.25 < ratio <= 0.27  # 4 bits + one bf16 scale per 128 weights = 4.125 bits

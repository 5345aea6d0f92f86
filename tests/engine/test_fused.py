"""Each fused kernel (Triton interpreter, small awkward shapes) against its plain-torch twin."""
import pytest
import torch
from torch import nn

from lowbit.engine import fused
from lowbit.engine.engine import kernel_weights
from lowbit.kernels import _tl
from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import PRESETS

ACT_FMTS = ["int8", "fp8_e4m3", "int4", "fp4_e2m1"]


@pytest.mark.parametrize("fmt", ACT_FMTS + [None])
@pytest.mark.parametrize("m,h,dtype", [(1, 40, torch.float32), (7, 96, torch.float16), (3, 130, torch.float32)])
def test_ln_quant_matches_reference(interp, fmt, m, h, dtype):
    x = (torch.randn(m, h) * 3 + 0.5).to(dtype)
    x[0, 1] = 40.0  # an outlier sets the row scale
    w, b = torch.randn(h).to(dtype), torch.randn(h).to(dtype)
    y, q, s = fused.ln_quant(x, w, b, 1e-12, fmt)
    yr, qr, sr = fused.ln_quant_ref(x, w, b, 1e-12, fmt)
    # float32 summation order: 1 ulp of the output dtype at most (fp16: 2^-10 relative)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(y.float(), yr.float(), rtol=tol, atol=tol)
    if fmt is None:
        assert q is None and s is None
        return
    torch.testing.assert_close(s, sr, rtol=1e-6, atol=0)
    if dtype == torch.float32:  # same LN values up to 1e-7: codes agree except at exact rounding ties
        assert (q != qr).float().mean() < 0.01
    else:
        assert torch.equal(q, qr)


def test_ln_quant_static_scale(interp):
    x, w, b = torch.randn(5, 64), torch.ones(64), torch.zeros(64)
    st = torch.tensor([0.02])
    _, q, s = fused.ln_quant(x, w, b, 1e-5, "int8", st)
    _, qr, sr = fused.ln_quant_ref(x, w, b, 1e-5, "int8", st)
    assert torch.equal(s, torch.full((5,), 0.02)) and torch.equal(q, qr)
    assert q.abs().max() == 127  # LayerNorm output > 127 * 0.02 saturates


def _layer(scheme: str, k: int, n: int, bias: bool = True) -> QuantLinear:
    lin = nn.Linear(k, n, bias=bias)
    s = PRESETS[scheme]
    return QuantLinear.from_float(lin, s.weights, s.activations)


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8", "w4a8-int", "w4a8-fp", "w4a4-int", "w4a4-fp4"])
@pytest.mark.parametrize("m", [5, 37])  # 5: packed 4-bit weights in the GEMM; 37 >= UNPACK_M: unpacked 8-bit codes
def test_gemm_epilogues_match_reference(interp, scheme, m):
    k = 256 if scheme.startswith("w4") else 96  # 96: K tail (BK 128) on the per-channel path
    n = 72  # N tail against BN 64
    mod = _layer(scheme, k, n)
    wt = kernel_weights(["t"], [mod], mod.bias.detach())
    fmt = mod.act_spec.format
    x = torch.randn(m, k)
    from lowbit.kernels import reference
    a, sa = reference.quantize_act(x, fmt)
    res = torch.randn(m, n)
    for gelu, residual in [(False, None), (True, None), (False, res)]:
        out = torch.full((m, n), float("nan"))  # poisoned: every element must be written
        y = fused.gemm(a, sa, wt, torch.float32, gelu, residual, out=out)
        yr = fused.gemm_ref(a, sa, fmt, mod.qtensor, mod.bias.detach(), torch.float32, gelu, residual)
        # exact products, float32 sums in another order: relative 1e-5 of the row's magnitude
        scale = yr.abs().amax(1, keepdim=True) + 1
        assert ((y - yr).abs() / scale).max() < 1e-5, (gelu, residual is not None)


def test_gemm_fp16_rounds_like_the_unfused_model(interp):
    mod = _layer("w4a4-int", 128, 64)
    wt = kernel_weights(["t"], [mod], mod.bias.detach().half())
    from lowbit.kernels import reference
    a, sa = reference.quantize_act(torch.randn(20, 128), "int4")
    res = torch.randn(20, 64).half()
    y = fused.gemm(a, sa, wt, torch.float16, True, res)
    yr = fused.gemm_ref(a, sa, "int4", mod.qtensor, mod.bias.detach().half(), torch.float16, True, res)
    assert y.dtype == torch.float16
    # each of the three roundings (linear out, GELU, add) can differ by 1 ulp when the float32 sums differ
    torch.testing.assert_close(y.float(), yr.float(), rtol=3e-3, atol=3e-3)
    assert (y != yr).float().mean() < 0.05


def test_gemm_rejects_mismatched_residual(interp):
    mod = _layer("w8a8-int8", 64, 32)
    wt = kernel_weights(["t"], [mod], None)
    from lowbit.kernels import reference
    a, sa = reference.quantize_act(torch.randn(4, 64), "int8")
    with pytest.raises(ValueError, match="residual"):
        fused.gemm(a, sa, wt, torch.float32, residual=torch.zeros(4, 31))


@pytest.mark.parametrize("scheme,k", [("w4a4-int", 256), ("w4a4-fp4", 256), ("w4a4-int-channel", 96)])
@pytest.mark.parametrize("m", [1, 37])  # 1: packed 4-bit weights in the GEMM; 37 >= UNPACK_M: unpacked 8-bit codes
def test_gemm_on_held_codes_equals_packed(interp, scheme, k, m):
    """The engine's layout (4-bit codes held one per byte as 8-bit codes) runs the 8-bit A path and gives exactly
    what the packed codes give (same integer / fp8 products, same scales), and matches the reference."""
    from lowbit.kernels import reference

    n = 72  # N tail against BN 64; k 96: K tail against BK 128 on the per-channel path
    s = PRESETS[scheme]
    mod = QuantLinear.from_float(nn.Linear(k, n), s.weights, s.activations)
    wt = kernel_weights(["t"], [mod], mod.bias.detach())
    fmt = mod.act_spec.format
    x = torch.randn(m, k)
    held, sa = reference.quantize_act(x, fmt, packed=False)
    packed, _ = reference.quantize_act(x, fmt)
    assert held.shape == (m, k) and fused._a_kind(held, wt) in (_tl.INT8, _tl.FP8)
    res = torch.randn(m, n)
    y = fused.gemm(held, sa, wt, torch.float32, True, None, out=torch.full((m, n), float("nan")))
    assert torch.equal(y, fused.gemm(packed, sa, wt, torch.float32, True, None))
    yr = fused.gemm_ref(held, sa, fmt, mod.qtensor, mod.bias.detach(), torch.float32, True, None)
    assert torch.equal(yr, fused.gemm_ref(packed, sa, fmt, mod.qtensor, mod.bias.detach(), torch.float32, True))
    assert ((y - yr).abs() / (yr.abs().amax(1, keepdim=True) + 1)).max() < 1e-5
    y = fused.gemm(held, sa, wt, torch.float32, residual=res)
    yr = fused.gemm_ref(held, sa, fmt, mod.qtensor, mod.bias.detach(), torch.float32, residual=res)
    assert ((y - yr).abs() / (yr.abs().amax(1, keepdim=True) + 1)).max() < 1e-5


def test_gemm_rejects_codes_of_another_width(interp):
    mod = _layer("w4a4-int", 128, 32)
    wt = kernel_weights(["t"], [mod], None)
    with pytest.raises(ValueError, match="width 100"):
        fused.gemm(torch.zeros(4, 100, dtype=torch.int8), torch.ones(4), wt, torch.float32)


def test_w4a4_channel_option_runs_the_w8a8_gemm(interp):
    """w4a4-int-channel on held codes launches the W8A8-INT8 kernel: same A / W kinds and mode (no group loop)."""
    s, w8 = PRESETS["w4a4-int-channel"], PRESETS["w8a8-int8"]
    pc = kernel_weights(["t"], [QuantLinear.from_float(nn.Linear(96, 40), s.weights, s.activations)], None)
    ref = kernel_weights(["t"], [QuantLinear.from_float(nn.Linear(96, 40), w8.weights, w8.activations)], None)
    held = torch.zeros(20, 96, dtype=torch.int8)
    assert (fused._a_kind(held, pc), pc.w8_kind, pc.mode) == (fused._a_kind(held, ref), ref.w_kind, ref.mode) \
        == (_tl.INT8, _tl.INT8, _tl.PER_CHANNEL)

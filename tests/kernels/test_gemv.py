"""The decode GEMV and the weight dequantizer against the plain-torch reference (interpreter on CPU, or GPU)."""
import pytest
import torch

from lowbit.kernels import _tl, reference
from lowbit.kernels.gemv import dequant_w4, gemv_w4
from lowbit.quant.qtensor import quantize_weight
from lowbit.scheme import QuantSpec

W = {"int4": (QuantSpec("int4", "group", 64), _tl.INT4),
     "uint4": (QuantSpec("int4", "group", 64, symmetric=False), _tl.UINT4),
     "fp4": (QuantSpec("fp4_e2m1", "group", 64), _tl.FP4),
     "fp4-m2": (QuantSpec("fp4_e2m1", "group", 64, scale_rule="pow2_row"), _tl.FP4)}


def _case(dev, m, n, k, wname, bias=True):
    spec, kind = W[wname]
    qt = quantize_weight(torch.randn(n, k), spec)
    b = torch.randn(n) if bias else None
    x = torch.randn(m, k)
    return qt, kind, b, x


# (M, N, K) with (BN, BK8, warps, stages, split): K tails (320 = 2.5 steps of 16 words), one step, split-K with
# a ragged last share and with more programs than steps
CASES = [((1, 37, 192), (8, 8, 2, 2, 1)), ((3, 72, 320), (16, 16, 2, 2, 1)), ((1, 40, 320), (8, 8, 2, 2, 3)),
         ((16, 16, 64), (16, 4, 1, 1, 4)), ((2, 24, 128), (8, 8, 1, 1, 4))]


@pytest.mark.parametrize("shape,cfg", CASES)
@pytest.mark.parametrize("wname", sorted(W))
def test_gemv_w4a16_matches_reference(dev, shape, cfg, wname):
    m, n, k = shape
    qt, kind, b, x = _case(dev, m, n, k, wname)
    dt = torch.float16  # bf16 is unreliable under the interpreter; the GPU tests cover it
    xd = x.to(dt).to(dev)
    out = torch.full((m, n), float("nan"), dtype=dt, device=dev)  # poisoned: every element must be written
    cnt = torch.zeros(16, dtype=torch.int32, device=dev)
    y = gemv_w4(xd, None, _tl.A16, qt.codes.to(dev), qt.scale.to(dev), None if qt.zero is None else qt.zero.to(dev),
                b.to(dt).to(dev), kind, 64, n, k, dt, config=cfg, out=out, counters=cnt)
    assert not cnt.any(), "split-K counters must be left at zero for the next call"
    ref = reference.qgemm(xd.cpu(), None, None, qt, b.to(dt), torch.float32)
    # fp32 accumulation in another order, one rounding to fp16 at the end: |err| <= 2^-10 |y| + 1e-3 * scale
    torch.testing.assert_close(y.float().cpu(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


@pytest.mark.parametrize("afmt,akind", [("int8", _tl.INT8), ("fp8_e4m3", _tl.FP8)])
@pytest.mark.parametrize("wname", ["int4", "fp4-m2"])
def test_gemv_on_quantized_activations_matches_reference(dev, afmt, akind, wname):
    m, n, k = 2, 45, 256
    qt, kind, b, x = _case(dev, m, n, k, wname)
    a, sa = reference.quantize_act(x, afmt)
    y = gemv_w4(a.to(dev), sa.to(dev), akind, qt.codes.to(dev), qt.scale.to(dev), None, b.to(dev), kind, 64, n, k,
                torch.float32)
    ref = reference.qgemm(a, sa, afmt, qt, b, torch.float32)
    torch.testing.assert_close(y.cpu(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("afmt,akind", [("int8", _tl.INT8), ("fp8_e4m3", _tl.FP8)])
@pytest.mark.parametrize("wname", ["int4", "fp4-m2", "uint4"])
@pytest.mark.parametrize("static,m,cfg", [(False, 3, (16, 8, 2, 2, 1)), (True, 3, (16, 8, 2, 2, 1)),
                                          (False, 1, (8, 16, 2, 2, 2))])
def test_gemv_quantizes_activations_in_kernel_like_act_quant(dev, afmt, akind, wname, static, m, cfg):
    """W4A8 decode: float x quantized per token inside the GEMV gives the result of act_quant's codes."""
    n, k = 45, 320
    qt, kind, b, x = _case(dev, m, n, k, wname)
    x[-1, 5] = 300.0
    if m > 1:
        x[1] = 0.0  # an all-zero token takes scale 1, as in act_quant  # an outlier: most codes of that token round to zero or to subnormals
    st = torch.tensor([0.05]) if static else None
    a, sa = reference.quantize_act(x, afmt, static_scale=st)
    y = gemv_w4(x.to(dev), None, _tl.A16, qt.codes.to(dev), qt.scale.to(dev),
                None if qt.zero is None else qt.zero.to(dev), b.to(dev), kind, 64, n, k, torch.float32,
                config=cfg, quantize=akind, counters=torch.zeros(8, dtype=torch.int32, device=dev), static_scale=None if st is None else st.to(dev))
    ref = reference.qgemm(a, sa, afmt, qt, b, torch.float32)
    torch.testing.assert_close(y.cpu(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize("wname", sorted(W))
def test_dequant_w4_equals_qtensor_dequantize(dev, wname):
    qt, kind, _, _ = _case(dev, 0, 40, 128, wname, bias=False)
    out = dequant_w4(qt.codes.to(dev), qt.scale.to(dev), None if qt.zero is None else qt.zero.to(dev), kind, 64,
                     128, torch.float32)
    assert torch.equal(out.cpu(), qt.dequantize())


def test_gemv_rejects_large_m(dev):
    qt, kind, _, _ = _case(dev, 0, 8, 64, "int4")
    with pytest.raises(ValueError, match="M <= 16"):
        gemv_w4(torch.randn(17, 64), None, _tl.A16, qt.codes, qt.scale, None, None, kind, 64, 8, 64, torch.float32)


def test_gemv_rejects_unaligned_weights(dev):
    qt, kind, _, _ = _case(dev, 0, 8, 64, "int4")
    with pytest.raises(ValueError, match="packed uint8"):
        gemv_w4(torch.randn(1, 64), None, _tl.A16, qt.codes[:, :31], qt.scale, None, None, kind, 64, 8, 64,
                torch.float32)


def test_gemv_is_used_at_the_measured_token_counts():
    from lowbit.kernels.gemv import GEMV_TOKENS, use_gemv, use_perm_mma
    assert use_gemv(1, 4096) and use_gemv(GEMV_TOKENS, 11008) and not use_gemv(GEMV_TOKENS + 1, 11008)
    # one token of a layer with the permuted copy: the tensor-core kernel for W4A8 and for large W4A16 layers
    # (H100: 11008 x 4096 W4A16 17.0 vs 19.6 µs, W4A8 21.3 vs 36.3), the GEMV for smaller W4A16 (4096²: 8.8 vs 9.8)
    for n, k, wo, gemv in [(11008, 4096, True, False), (4096, 11008, True, False), (4096, 4096, True, True),
                           (4096, 4096, False, False), (768, 768, False, False)]:
        assert use_gemv(1, n, k, wo, permuted=True) == gemv and use_perm_mma(1, n, k, wo) == (not gemv)
        assert use_gemv(1, n, k, wo, permuted=False)  # no permuted copy: the GEMV on the stored layout


@pytest.mark.parametrize("preset,tokens,n", [("w4a16", 1, 40), ("w4a8-int", 1, 40), ("w4a8-fp", 1, 40),
                                             ("w4a16", 1, 24), ("w4a8-int", 3, 40), ("w4a16", 4, 40),
                                             ("w4a8-fp", 16, 40), ("w4a16", 4, 24), ("w4a16", 17, 40),
                                             ("w4a16", 70, 24), ("w4a8-fp", 70, 24)])
def test_dispatch_takes_the_gemv_and_dequant_paths(dev, preset, tokens, n, monkeypatch):
    from lowbit.kernels import dispatch, gemv
    from lowbit.nn.qlinear import QuantLinear
    from lowbit.scheme import PRESETS

    # stand-in for the H100 rule (GEMV at M = 1), restricted to N >= 32 so both branches are exercised
    monkeypatch.setattr(dispatch, "use_gemv", lambda m, n_out, *a, **kw: m == 1 and n_out >= 32)
    monkeypatch.setattr(dispatch, "PERM_MIN_N", 32)  # N = 40 gets the permuted decode copy, N = 24 does not
    called = []
    for fn in ("gemv_w4", "gemv_w4_perm", "mma_w4_perm", "dequant_w4"):
        orig = getattr(dispatch, fn)
        monkeypatch.setattr(dispatch, fn, lambda *a, _o=orig, _n=fn, **kw: (called.append(_n), _o(*a, **kw))[1])
    s = PRESETS[preset]
    lin = torch.nn.Linear(128, n).half()
    q = QuantLinear.from_float(lin, s.weights, s.activations).to(dev)
    x = torch.randn(tokens, 128, dtype=torch.float16, device=dev)
    y = dispatch.quant_linear_forward(q, x)
    ref = q.reference_forward(x).float()
    if tokens == 1 and n >= 32:
        assert called == ["gemv_w4_perm"]
        assert q._lb_wp is not None and "_lb_wp" not in q.state_dict()
    elif 2 <= tokens <= gemv.PERM_MMA_MAX_M and n >= 32:  # a few tokens: tensor cores on the permuted copy
        assert called == ["mma_w4_perm"]
    elif tokens >= gemv.DEQUANT_M and s.activations is None:
        assert called == ["dequant_w4"]
    else:
        assert called == []  # the tensor-core qgemm path
    assert ((y.float() - ref).norm() / ref.norm()) < 2e-3


@pytest.mark.parametrize("preset,least,want", [("w4a16", 40 * 256, "mma_w4_perm"),
                                              ("w4a16", 40 * 256 + 1, "gemv_w4_perm"),
                                              ("w4a8-int", 40 * 256 + 1, "mma_w4_perm"),
                                              ("w4a8-fp", 40 * 256 + 1, "mma_w4_perm")])
def test_one_token_takes_the_tensor_core_kernel_where_measured_faster(dev, preset, least, want, monkeypatch):
    """gemv.PERM_MMA_M1_MIN_WEIGHTS lowered around a 40 x 256 layer: W4A16 at M = 1 runs mma_w4_perm (the token
    padded to 16 rows) from that size on and the permuted GEMV below it, W4A8 always mma_w4_perm (after act_quant);
    all match the reference layer."""
    n = 40
    from lowbit.kernels import dispatch, gemv
    from lowbit.nn.qlinear import QuantLinear
    from lowbit.scheme import PRESETS

    monkeypatch.setattr(gemv, "PERM_MMA_M1_MIN_WEIGHTS", least)
    monkeypatch.setattr(gemv, "GEMV_TOKENS", 1)
    monkeypatch.setattr(dispatch, "PERM_MIN_N", 32)
    called = []
    for fn in ("gemv_w4", "gemv_w4_perm", "mma_w4_perm", "dequant_w4"):
        orig = getattr(dispatch, fn)
        monkeypatch.setattr(dispatch, fn, lambda *a, _o=orig, _n=fn, **kw: (called.append(_n), _o(*a, **kw))[1])
    s = PRESETS[preset]
    q = QuantLinear.from_float(torch.nn.Linear(256, n).half(), s.weights, s.activations).to(dev)
    x = torch.randn(1, 256, dtype=torch.float16, device=dev)
    y = dispatch.quant_linear_forward(q, x)
    ref = q.reference_forward(x).float()
    assert q._lb_wp is not None and called == [want]
    assert ((y.float() - ref).norm() / ref.norm()) < 2e-3


@pytest.mark.parametrize("wname", sorted(W))
@pytest.mark.parametrize("n,k,cfg", [(37, 448, (8, 2, 1, 1)), (40, 1024, (16, 2, 2, 2)), (24, 1600, (8, 1, 1, 4))])
def test_permuted_gemv_matches_reference(dev, wname, n, k, cfg):
    """The permuted layout: K padded to whole blocks of 8 groups (448, 1600 are not), split-K, every weight kind."""
    from lowbit.kernels.gemv import gemv_w4_perm, permute_w4
    qt, kind, b, x = _case(dev, 1, n, k, wname)
    wp, sp, zp = permute_w4(qt.codes, qt.scale, qt.zero, 64)
    assert wp.shape == (n, -(-k // 512) * 256)
    dt = torch.float16
    xd = x.to(dt).to(dev)
    out = torch.full((1, n), float("nan"), dtype=dt, device=dev)
    cnt = torch.zeros(8, dtype=torch.int32, device=dev)
    y = gemv_w4_perm(xd, wp.to(dev), sp.to(dev), None if zp is None else zp.to(dev), b.to(dt).to(dev), kind, 64,
                     n, k, dt, counters=cnt, config=cfg, out=out)
    assert not cnt.any()
    ref = reference.qgemm(xd.cpu(), None, None, qt, b.to(dt), torch.float32)
    torch.testing.assert_close(y.float().cpu(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


@pytest.mark.parametrize("afmt,akind", [("int8", _tl.INT8), ("fp8_e4m3", _tl.FP8)])
def test_permuted_gemv_quantizes_the_token_like_act_quant(dev, afmt, akind):
    from lowbit.kernels.gemv import gemv_w4_perm, permute_w4
    qt, kind, b, x = _case(dev, 1, 45, 320, "fp4-m2")
    x[0, 7] = 200.0
    a, sa = reference.quantize_act(x, afmt)
    wp, sp, zp = permute_w4(qt.codes, qt.scale, qt.zero, 64)
    y = gemv_w4_perm(x.to(dev), wp.to(dev), sp.to(dev), None, b.to(dev), kind, 64, 45, 320, torch.float32,
                     quantize=akind, config=(16, 2, 1, 1))
    ref = reference.qgemm(a, sa, afmt, qt, b, torch.float32)
    torch.testing.assert_close(y.cpu(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())

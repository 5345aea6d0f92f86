"""The mixed-format GEMM against its reference twin, for every preset, on awkward shapes.

Bound: kernel and reference multiply the same exactly-decoded codes (products of <=8-bit codes are exact in the
MMA); they differ only by float32 summation order and where the scales are applied, so float32 outputs agree to
~1e-6 relative (checked at 2e-5). On the GPU, Hopper's FP8 MMA adds in reduced precision (about 2^-14 of the
running sum, DeepSeek-V3 §3.3), so FP8 paths are held to 2e-4 there. 16-bit outputs add one rounding
(2^-9 bf16 / 2^-12 fp16 relative per element).
"""
import dataclasses

import pytest
import torch
from torch import nn

from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import PRESETS

PRESET_NAMES = list(PRESETS)


def _layer(name, n, k, dtype, dev, group=None):
    s = PRESETS[name]
    ws = s.weights
    if ws.granularity == "group" and group:
        ws = dataclasses.replace(ws, group_size=group)
    lin = nn.Linear(k, n).to(dtype)
    lin.weight.data *= torch.logspace(-2, 0, k)[None, :].to(dtype)  # groups of different scales (pow2 shifts)
    return QuantLinear.from_float(lin, ws, s.activations).to(dev)


def _run(q, x, out_dtype, config=None, **kw):
    """(kernel, reference) float outputs of layer q on x, through the launchers (out poisoned with NaN)."""
    from lowbit.kernels import reference
    from lowbit.kernels.act_quant import quantize_act
    from lowbit.kernels.dispatch import prepare
    from lowbit.kernels.qgemm import qgemm

    p = prepare(q)
    assert p is not None, q.__dict__["_lb_plan"]
    if p.a_fmt is None:
        a, sa = x, None
        ra, rsa = x.cpu(), None
    else:
        a, sa = quantize_act(x, p.a_fmt)
        ra, rsa = reference.quantize_act(x.cpu(), p.a_fmt)
    out = torch.full((x.shape[0], q.out_features), float("nan"), dtype=out_dtype, device=x.device)
    y = qgemm(a, sa, q.qweight, q._lb_sw, q._lb_aux, q.bias, q._lb_cnt, p.a_kind, p.w_kind, p.mode, p.group,
              q.out_features, q.in_features, out_dtype, config=config, out=out, **kw)
    r = reference.qgemm(ra, rsa, p.a_fmt, q.qtensor.__class__(q.qweight.cpu(), q.scale.cpu(),
                        None if q.zero is None else q.zero.cpu(), q.weight_spec, (q.out_features, q.in_features)),
                        None if q.bias is None else q.bias.cpu(), out_dtype)
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) outputs"
    return y.float().cpu(), r.float()


def _rel(y, r):
    return ((y - r).norm() / r.norm()).item()


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("m", [1, 3, 37])
def test_qgemm_matches_reference(dev, name, m):
    # N = 72 is not a multiple of any block; K = 160 = 5 groups of 32 (per-channel W8A8: a K tail of 32).
    q = _layer(name, 72, 160, torch.float16, dev, group=32)
    x = torch.randn(m, 160, device=dev, dtype=torch.float16)
    y, r = _run(q, x, torch.float32)
    assert _rel(y, r) < 2e-5


@pytest.mark.parametrize("name", [n for n in PRESET_NAMES if PRESETS[n].weights.bits == 4])
def test_qgemm_unpacked_prefill_path(dev, name):
    """Prefill path: 4-bit weights unpacked once to exact 8-bit codes, then the 8-bit GEMM."""
    q = _layer(name, 72, 160, torch.float16, dev, group=32)
    x = torch.randn(5, 160, device=dev, dtype=torch.float16)
    y, r = _run(q, x, torch.float32, unpack_m=1)
    assert _rel(y, r) < 2e-5


@pytest.mark.parametrize("name", ["w8a8-int8", "w4a16", "w4a8-fp", "w4a4-int"])
@pytest.mark.parametrize("split", [2, 3])
def test_qgemm_split_k(dev, name, split):
    """The split-K reduction (workspace + self-resetting tile counters) equals the one-program result."""
    from lowbit.kernels.qgemm import Config

    q = _layer(name, 40, 192, torch.float16, dev, group=32)
    x = torch.randn(3, 192, device=dev, dtype=torch.float16)
    cfg = Config(16, 32, 32, split, 1)
    for _ in range(2):  # a second call checks the counters were reset
        y, r = _run(q, x, torch.float16, config=cfg)
        assert _rel(y, r) < 2e-3
    assert int(q._lb_cnt.sum()) == 0


def test_qgemm_asymmetric_int4(dev):
    from lowbit.scheme import QuantSpec

    lin = nn.Linear(96, 40).half()
    for acts in (None, QuantSpec("int8", "token", dynamic=True)):
        q = QuantLinear.from_float(lin, QuantSpec("int4", "group", 32, symmetric=False), acts).to(dev)
        y, r = _run(q, torch.randn(5, 96, device=dev, dtype=torch.float16), torch.float32)
        assert _rel(y, r) < 2e-5


@pytest.mark.gpu
@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("m", [1, 16, 100, 2048])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_qgemm_gpu_real_sizes(dev, name, m, dtype):
    q = _layer(name, 4096 + 64 * 3, 4096, dtype, dev)  # N = 4288: not a multiple of 128 (or 256)
    x = torch.randn(m, 4096, device=dev, dtype=dtype)
    y, r = _run(q, x, torch.float32)
    fp8 = PRESETS[name].activations is not None and "fp" in PRESETS[name].activations.format
    assert _rel(y, r) < (1e-3 if fp8 else 2e-5)
    y16, r16 = _run(q, x, dtype)
    assert _rel(y16, r16) < (5e-3 if dtype == torch.bfloat16 else 2e-3)

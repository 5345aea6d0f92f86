"""The integer-only kernels (lowbit.kernels.intonly*) against the torch integer backend, bit for bit.

On the CPU they run under Triton's interpreter (TRITON_INTERPRET=1, small awkward shapes: rows not a multiple of
the block, odd lengths); `pytest -m gpu` runs the same checks on CUDA. Without either they are skipped.
"""
import ast
import inspect
import math

import pytest
import torch

from lowbit.intonly.dyadic import INT, dyadic, mantissa_bits
from lowbit.intonly.ops import IntSoftmax, LayerNormInt, ShiftGELU


def _ints(shape, bits, dev, dtype=torch.int32):
    return torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), shape, device=dev, dtype=dtype)


def _channel_dyadic(n, in_bits, lo=1e-3, hi=1.0):
    return dyadic(torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(lo), math.log(hi))),
                  mantissa_bits(in_bits))


@pytest.mark.parametrize("bits", [8, 16])
def test_embed_sum_bit_exact(dev, bits):
    from lowbit.intonly.dyadic import Dyadic
    from lowbit.kernels.intonly import embed_sum

    h, (b, t) = 45, (3, 37)
    terms = []
    for v in (101, 37, 2):  # word, position, token-type tables
        codes = _ints((v, h), 8, dev, torch.int8)
        m = _channel_dyadic(v, 8, 1e-2, 300.0)  # per table row; large ratios saturate the clamp
        terms.append((codes, Dyadic(m.b.to(dev), m.c.to(dev)), torch.randint(0, v, (b, t), device=dev)))
    terms[1] = (terms[1][0], terms[1][1], torch.arange(t, device=dev)[None].expand(b, t))  # a broadcast view
    out = embed_sum(terms, bits)
    assert out.shape == (b, t, h) and torch.equal(out.long().cpu(), INT.embed_sum(terms, bits).cpu())


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("shape", [(37, 45), (3, 5, 1100)])
def test_requant_bit_exact(dev, bits, shape):
    from lowbit.kernels.intonly import requant

    z = _ints(shape, 24, dev)
    m = _channel_dyadic(shape[-1], 24, 2.0**-20, 2.0**-10)
    bias = _ints(shape[-1:], 30, dev, torch.int64)
    for mm in (m, dyadic(2.0**-14, mantissa_bits(24))):  # per channel, per tensor
        assert torch.equal(requant(z, mm, bits).long(), INT.rq(z.long(), mm, None, bits))
    assert torch.equal(requant(z, m, bits, bias).long(), INT.rq(z.long(), m, bias, bits))


def test_requant_residual_sum_bit_exact(dev):
    from lowbit.kernels.intonly import requant

    z1, z2 = _ints((2, 19, 77), 26, dev), _ints((2, 19, 77), 16, dev)
    m1, m2 = _channel_dyadic(77, 26, 2.0**-12, 2.0**-8), dyadic(0.9, mantissa_bits(16))
    out = requant(z1, m1, 16, term2=(z2, m2))
    assert out.dtype == torch.int16
    assert torch.equal(out.long(), INT.rq_sum([(z1.long(), m1), (z2.long(), m2)], 16))


@pytest.mark.parametrize("score_bits", [8, 16])
def test_shiftmax_bit_exact(dev, score_bits):
    from lowbit.kernels.intonly import shiftmax

    z = _ints((2, 3, 5, 37), 17, dev)
    m = dyadic(2.0 ** (score_bits - 17), mantissa_bits(17))  # spans the score range, saturating a few
    op = IntSoftmax.build(12.0 / 2 ** (score_bits - 1), "shift", 7)
    mask = torch.ones(2, 1, 1, 37, dtype=torch.int64, device=dev)
    mask[1, ..., 20:] = 0
    for mk in (None, mask):
        out = shiftmax(z, m, score_bits, op, mk)
        assert out.dtype == torch.int8
        assert torch.equal(out.long(), INT.softmax(op, z.long(), m, score_bits, mk))


def test_shift_gelu_bit_exact(dev):
    from lowbit.kernels.intonly import shift_gelu

    x = _ints((29, 70), 16, dev)
    op = ShiftGELU.build(8.0 / 2**15)
    m = _channel_dyadic(70, op.out_bits + 16, 2.0**-16, 2.0**-12)
    out = shift_gelu(x, op, m, 8)
    assert out.dtype == torch.int8
    assert torch.equal(out.long(), INT.gelu_rq(op, x.long(), m, 8))


@pytest.mark.parametrize("scale,mode", [(2e-3, 2), (0.05, 2), (1e-3, 3), (3e-4, 3)])
def test_shift_gelu_every_input_on_the_estimated_quotient(dev, scale, mode):
    """The sigmoid's quotient estimated and corrected (_gelu_quot_newton; gelu_mode picks the one- or two-sided
    correction after checking every (m, q) on the host) over every 16-bit input whose sigmoid is not 0, against the
    torch integer ShiftGELU; and the host check's int32 emulation against the exact quotients."""
    import numpy as np

    from lowbit.kernels.intonly import gelu_consts, gelu_mode, gelu_newton_quotients, shift_gelu

    op = ShiftGELU.build(scale)
    x0, k = op.exp.x0, op.out_bits
    assert gelu_mode(x0, k) == mode and gelu_consts(op, dyadic(2.0**-14, 31), 8)[9] == mode
    reach = min(1 << 15, (k + 1) * -x0) // 64 * 64  # |x| beyond: q >= k - 1, sigmoid 0
    x = torch.arange(-reach, reach, device=dev, dtype=torch.int32).reshape(-1, 2 * reach // 64)
    m = _channel_dyadic(x.shape[1], op.out_bits + 16, 2.0**-16, 2.0**-12)
    assert torch.equal(shift_gelu(x, op, m, 8).long(), INT.gelu_rq(op, x.long(), m, 8))
    xs = np.arange(-x0 + 1, -2 * x0 + 1)[None, :]
    want = (xs << (k - 1)) // (xs + ((-2 * x0) << np.arange(k)[:, None]))
    assert np.array_equal(gelu_newton_quotients(-x0, k, mode == 3), want)
    if mode == 3:  # the one-sided correction is not enough here: the host check saw it
        assert not np.array_equal(gelu_newton_quotients(-x0, k, False), want)


@pytest.mark.parametrize("channels", [96, 200])
def test_layernorm_bit_exact(dev, channels):
    from lowbit.kernels.intonly import layernorm

    x = _ints((13, channels), 16, dev)
    x[0] = 5  # a constant row: variance 0
    x[1] = x[1] // 64 + 3000  # small spread, large mean
    ln = LayerNormInt(channels, 16)
    gamma, beta = torch.rand(channels, dtype=torch.float64) + 0.1, torch.randn(channels, dtype=torch.float64)
    m, bias = ln.affine(gamma, beta, 5.0 / 2**15, mantissa_bits(31))
    out = layernorm(x, ln, m, bias, 16)
    assert out.dtype == torch.int16
    assert torch.equal(out.long(), INT.layernorm(ln, x.long(), m, bias.to(dev), 16))


def test_bmm_bit_exact_on_strided_views(dev):
    from lowbit.kernels.intonly_gemm import bmm

    q = _ints((2, 37, 3, 24), 8, dev, torch.int8).transpose(1, 2)  # (B, H, T, d) view, as the graph's heads
    k = _ints((2, 37, 3, 24), 8, dev, torch.int8).transpose(1, 2)
    s = bmm(q, k.transpose(-1, -2))
    assert s.dtype == torch.int32 and torch.equal(s.long().cpu(), q.long().cpu() @ k.long().cpu().transpose(-1, -2))
    p = torch.randint(0, 128, (2, 3, 37, 37), dtype=torch.int8, device=dev)
    pv = bmm(p, q)  # q is a head view: the product comes back in the same (B, T, H, d) memory
    assert torch.equal(pv.long().cpu(), p.long().cpu() @ q.long().cpu()) and pv.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("m,k,n", [(1, 13, 11), (5, 64, 48), (37, 40, 24)])
def test_int_linear_pads_to_int_mm_shapes(dev, m, k, n):
    from lowbit.kernels.intonly_gemm import int_linear

    x, w = _ints((m, k), 8, dev, torch.int8), _ints((n, k), 8, dev, torch.int8)
    bias = _ints((n,), 24, dev, torch.int64)
    out = int_linear(x[None], w, bias)
    assert out.shape == (1, m, n) and out.dtype == torch.int32
    assert torch.equal(out[0].long().cpu(), x.long().cpu() @ w.long().cpu().t() + bias.cpu())  # int64 matmul: CPU


def test_kernels_have_no_float_or_division():
    """The checker's rule, applied to the kernel source: no float dtype, no division of any kind."""
    from lowbit.kernels import intonly, intonly_gemm

    for mod in (intonly, intonly_gemm):
        tree = ast.parse(inspect.getsource(mod))
        kernels = [f for f in tree.body if isinstance(f, ast.FunctionDef)
                   and any("jit" in ast.unparse(d) for d in f.decorator_list)]
        assert kernels
        for f in kernels:
            src = ast.unparse(f)
            assert "float" not in src and "fp" not in src.replace("fp_", ""), f.name
            bad = [n for n in ast.walk(f) if isinstance(n, (ast.Div, ast.FloorDiv, ast.Mod))]
            assert not bad, f"{f.name} divides"

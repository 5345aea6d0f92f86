"""The int8 GEMM with the requantization in its epilogue (lowbit.kernels.intonly_gemm.linear_rq) equals the torch
integer reference, INT.rq_linear(INT.linear(...)) / INT.rq_sum, bit for bit (CPU under TRITON_INTERPRET=1)."""
import os

import pytest
import torch

from lowbit.intonly.dyadic import INT, Dyadic, dyadic, mantissa_bits

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")


def _codes(g, *shape, lo=-128, hi=128):
    return torch.randint(lo, hi, shape, generator=g, dtype=torch.int8)


def _multiplier(g, n: int, per_channel: bool, scale: float, in_bits: int = 31) -> Dyadic:
    x = torch.rand(n if per_channel else 1, dtype=torch.float64, generator=g) + 0.5
    return dyadic(x * scale if per_channel else float(x) * scale, mantissa_bits(in_bits))


def _reference(x, w, lin_bias, m, bits, bias=None, term2=None):
    z = INT.linear(x.long(), w, None)
    if lin_bias is not None:
        z = z + lin_bias
    if term2 is not None:
        return INT.rq_sum([(z, m), (term2[0].long(), term2[1])], bits)
    return INT.rq(z, m, bias, bits)


@pytest.mark.parametrize("m_rows,k,n", [(1, 24, 5), (3, 200, 96), (37, 776, 130), (130, 200, 5)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_linear_rq_equals_the_integer_reference(m_rows, k, n, per_channel):
    from lowbit.kernels.intonly_gemm import linear_rq

    g = torch.Generator().manual_seed(m_rows * 1000 + k + n)
    x, w = _codes(g, m_rows, k), _codes(g, n, k)
    lin_bias = torch.randint(-2**20, 2**20, (n,), generator=g)
    # a scale that puts the product near the 8-bit range, so some outputs clamp and most do not
    m = _multiplier(g, n, per_channel, 2.0**-(bits_of(k) + 6), in_bits=bits_of(k) + 15)
    for bits in (8, 16):
        mb = Dyadic(m.b, m.c - (bits - 8))  # 2^(bits-8) times larger codes at 16 bits
        for lb in (None, lin_bias):
            out = linear_rq(x, w, lb, mb, bits)
            assert out.dtype == (torch.int8 if bits == 8 else torch.int16)
            assert torch.equal(out.long(), _reference(x, w, lb, mb, bits))
    bias = torch.randint(-2**40, 2**40, (n,), generator=g)  # at shift precision (c is about 30)
    assert torch.equal(linear_rq(x, w, lin_bias, m, 8, bias=bias).long(), _reference(x, w, lin_bias, m, 8, bias))


def bits_of(k: int) -> int:
    """Bits of |x @ wᵀ| for int8 codes and K = k."""
    return (k * 128 * 128).bit_length()


@pytest.mark.parametrize("m_rows,k,n", [(1, 24, 5), (37, 200, 96), (130, 776, 130)])
@pytest.mark.parametrize("bits", [8, 16])
def test_linear_rq_with_the_residual_term_equals_rq_sum(m_rows, k, n, bits):
    from lowbit.kernels.intonly_gemm import linear_rq

    g = torch.Generator().manual_seed(m_rows + k + n + bits)
    x, w = _codes(g, m_rows, k), _codes(g, n, k)
    lin_bias = torch.randint(-2**20, 2**20, (n,), generator=g)
    z2 = torch.randint(-2**(bits - 1), 2**(bits - 1), (m_rows, n), generator=g, dtype=torch.int32)
    m = _multiplier(g, n, True, 2.0**-(bits_of(k) + 7 - bits), in_bits=bits_of(k) + 1)
    m2 = _multiplier(g, n, m_rows % 2 == 0, 0.6, in_bits=bits)
    out = linear_rq(x, w, lin_bias, m, bits, term2=(z2, m2))
    assert torch.equal(out.long(), _reference(x, w, lin_bias, m, bits, term2=(z2, m2)))
    assert torch.equal(out.long(), INT.linear_rq_sum(x.long(), w, lin_bias, m, (z2.long(), m2), bits))


@pytest.mark.parametrize("code", [-128, 127])
def test_extreme_codes_saturate_like_the_reference(code):
    """All codes -128 or 127: |x @ wᵀ| = K 2^14 at its largest; every clamp (each term at bits + 1, the sum at
    bits) is reached from both sides."""
    from lowbit.kernels.intonly_gemm import linear_rq

    g = torch.Generator().manual_seed(code & 0xff)
    k, n, rows = 776, 130, 37
    x, w = torch.full((rows, k), code, dtype=torch.int8), torch.full((n, k), code, dtype=torch.int8)
    w[::2] = 127 if code == -128 else -128  # negative and positive products
    lin_bias = torch.zeros(n, dtype=torch.int64)
    lin_bias[::4], lin_bias[1::4] = 2**31 - 1, -2**31 + 1  # the largest INT32 biases
    m = _multiplier(g, n, True, 2.0**-16, in_bits=bits_of(k) + 1)
    z2 = torch.full((rows, n), -2**15, dtype=torch.int32)
    z2[:, 1::3] = 2**15 - 1
    for bits, term2 in ((8, None), (16, None), (16, (z2, _multiplier(g, n, False, 1.0, 16)))):
        out = linear_rq(x, w, lin_bias, m, bits, term2=term2)
        ref = _reference(x, w, lin_bias, m, bits, term2=term2)
        assert torch.equal(out.long(), ref)
        assert {ref.min().item(), ref.max().item()} == {-2**(bits - 1), 2**(bits - 1) - 1}


def test_leading_dims_and_the_default_composition():
    """(B, T, K) inputs keep their leading dims; IntArith.linear_rq (the spec) is linear + rq_linear."""
    from lowbit.kernels.intonly_gemm import linear_rq

    g = torch.Generator().manual_seed(1)
    x, w, lin_bias = _codes(g, 2, 7, 64), _codes(g, 48, 64), torch.randint(-999, 999, (48,), generator=g)
    m = _multiplier(g, 48, True, 2.0**-14, in_bits=bits_of(64) + 1)
    out = linear_rq(x, w, lin_bias, m, 8)
    assert out.shape == (2, 7, 48)
    assert torch.equal(out.long(), INT.linear_rq(x.long(), w, lin_bias, m, 8))
    assert torch.equal(out.long(), INT.rq_linear(INT.linear(x.long(), w, None), m, lin_bias, 8))


def test_operands_outside_the_kernel_return_none_or_raise():
    from lowbit.kernels.intonly_gemm import linear_rq

    g = torch.Generator().manual_seed(2)
    x, w = _codes(g, 5, 32), _codes(g, 16, 32)
    rows = Dyadic(torch.ones(5, 1, dtype=torch.int64), torch.full((5, 1), 4))  # per row: not per channel
    assert linear_rq(x, w, None, rows, 8) is None
    m = _multiplier(g, 16, True, 2.0**-10)
    assert linear_rq(x, w, None, m, 8, term2=(torch.zeros(5, 8, dtype=torch.int32), m)) is None  # z2 shape
    assert linear_rq(x, w, torch.zeros(8, dtype=torch.int64), m, 8) is None  # bias length
    with pytest.raises(ValueError, match="do not multiply"):
        linear_rq(x, w[:, :16], None, m, 8)


def test_bert_with_q_k_v_as_three_gemms_equals_the_integer_backend(monkeypatch):
    """Q, K and V whose inputs differ (a lowbit model with one input scale per linear; here the fused entry is
    removed) run as three linear_rq GEMMs; the kernel backend still equals the INT backend. (The fused Q/K/V GEMM
    and the residual sums are checked on the whole model by tests/intonly/test_backend.py.)"""
    from lowbit.intonly.backend import KernelArith
    from lowbit.intonly.blocks import IntBertModel, IntConfig
    from tiny_models import tiny_bert

    g = torch.Generator().manual_seed(0)
    im = IntBertModel(tiny_bert(), IntConfig()).calibrate([{"input_ids": torch.randint(0, 120, (2, 12), generator=g)}])
    for i in range(im.layers):
        monkeypatch.delitem(im.plan, f"layer{i}.qkv")
    calls = []
    linear_rq = KernelArith.linear_rq
    monkeypatch.setattr(KernelArith, "linear_rq", lambda self, *a: calls.append(a[1].shape) or linear_rq(self, *a))
    ids = torch.randint(0, 120, (2, 11), generator=g)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    h_k, _ = im.integer_forward(im._backend("kernel"), *args)
    assert len(calls) == 3 * im.layers  # q, k, v (fc1 runs with its GELU: linear_gelu_rq)
    assert torch.equal(h_k.long(), im.integer_forward(INT, *args)[0])


@pytest.mark.parametrize("m_rows,k,n", [(1, 24, 5), (37, 200, 96), (130, 776, 130), (300, 72, 70)])  # 300: linear.gelu
@pytest.mark.parametrize("scale", [2e-3, 8.0 / 2**15, 0.05])
@pytest.mark.parametrize("rq_bound", [True, False])
def test_linear_rq_with_the_gelu_equals_linear_then_gelu(m_rows, k, n, scale, rq_bound):
    """FC1 with ShiftGELU and FC2's input requantization in its epilogue (the graph's linear_gelu_rq) equals
    INT.gelu_rq of the reference codes; the output multiplier with its bound (32-bit requantization) and without
    (int64)."""
    from lowbit.intonly.ops import ShiftGELU
    from lowbit.kernels.intonly import gelu_i32
    from lowbit.kernels.intonly_gemm import linear_rq

    g = torch.Generator().manual_seed(m_rows + k + n)
    x, w = _codes(g, m_rows, k), _codes(g, n, k)
    lin_bias = torch.randint(-2**20, 2**20, (n,), generator=g)
    m = _multiplier(g, n, True, 2.0**-(bits_of(k) - 14), in_bits=bits_of(k) + 1)  # 16-bit codes, some clamped
    op = ShiftGELU.build(scale, 8, 23)
    assert gelu_i32(op) is not None
    m3 = _multiplier(g, n, True, 2.0**-11, in_bits=24)
    if rq_bound:
        m3 = Dyadic(m3.b, m3.c, z_bits=24)
    out = linear_rq(x, w, lin_bias, m, 16, gelu=(op, m3, 8))
    g_in = _reference(x, w, lin_bias, m, 16)
    assert out.dtype == torch.int8
    assert torch.equal(out.long(), INT.gelu_rq(op, g_in, m3, 8))
    assert out.unique().numel() > 1  # not a constant (e.g. all zero) output


@pytest.mark.parametrize("per_sm,tma", [(1, False), (3, False), (0, True), (3, True)])
def test_the_persistent_and_descriptor_launches_equal_the_reference(monkeypatch, per_sm, tma):
    """intonly_gemm.PERSIST: each program walks several M tiles of its column in one flattened loop (the interpreter
    counts as 2 SMs: 1 program per column at per_sm 1, tails of uneven tile counts at 3); intonly_gemm.TMA: the
    operands through tensor descriptors (K = 208 / 80: multiples of 16, with tails against BLOCK_K; K = 200 takes the
    pointer loads). Same codes as the reference for a plain, a residual and a GELU epilogue, tails in M and N."""
    from lowbit.intonly.ops import ShiftGELU
    from lowbit.kernels import intonly_gemm as G

    for fam in G.TILES:
        if fam.startswith("linear"):
            monkeypatch.setitem(G.PERSIST, fam, per_sm)
            monkeypatch.setitem(G.TMA, fam, tma)
    g = torch.Generator().manual_seed(per_sm)
    for m_rows, k, n in ((130, 208, 130), (300, 80, 70), (37, 200, 96)):
        x, w = _codes(g, m_rows, k), _codes(g, n, k)
        lin_bias = torch.randint(-2**20, 2**20, (n,), generator=g)
        m = _multiplier(g, n, True, 2.0**-(bits_of(k) + 6), in_bits=bits_of(k) + 15)
        assert torch.equal(G.linear_rq(x, w, lin_bias, m, 8).long(), _reference(x, w, lin_bias, m, 8))
        z2 = torch.randint(-2**15, 2**15, (m_rows, n), generator=g, dtype=torch.int32)
        m16 = _multiplier(g, n, True, 2.0**-(bits_of(k) - 9), in_bits=bits_of(k) + 1)
        m2 = _multiplier(g, n, True, 0.6, in_bits=16)
        out = G.linear_rq(x, w, lin_bias, m16, 16, term2=(z2, m2))
        assert torch.equal(out.long(), _reference(x, w, lin_bias, m16, 16, term2=(z2, m2)))
        op = ShiftGELU.build(8.0 / 2**15, 8, 23)
        m3 = _multiplier(g, n, True, 2.0**-11, in_bits=24)
        out = G.linear_rq(x, w, lin_bias, m16, 16, gelu=(op, m3, 8))
        assert torch.equal(out.long(), INT.gelu_rq(op, _reference(x, w, lin_bias, m16, 16), m3, 8))
        assert out.unique().numel() > 1


@pytest.mark.parametrize("tile", [(64, 64, 128, 4, 3), (0, 0, 0, 0, 0)])
def test_fc1_gelu_at_many_rows_fused_or_apart(monkeypatch, tile):
    """linear.gelu.large (M >= LARGE_M rows, lowered here): with a tile, FC1 + GELU in one GEMM equal to the
    reference; with (0, ...) linear_rq declines (None) and the kernel backend's linear_gelu_rq runs FC1 and the
    ShiftGELU kernel apart, with the same codes."""
    from lowbit.intonly.backend import KernelArith
    from lowbit.intonly.ops import ShiftGELU
    from lowbit.kernels import intonly_gemm as G

    monkeypatch.setattr(G, "LARGE_M", 300)
    monkeypatch.setitem(G.TILES, "linear.gelu.large", tile)
    g = torch.Generator().manual_seed(11)
    x, w = _codes(g, 300, 72), _codes(g, 70, 72)
    lin_bias = torch.randint(-2**20, 2**20, (70,), generator=g)
    m = _multiplier(g, 70, True, 2.0**-(bits_of(72) - 14), in_bits=bits_of(72) + 1)
    op = ShiftGELU.build(2e-3, 8, 23)
    m3 = _multiplier(g, 70, True, 2.0**-11, in_bits=24)
    m3 = Dyadic(m3.b, m3.c, z_bits=24)
    want = INT.gelu_rq(op, _reference(x, w, lin_bias, m, 16), m3, 8)
    out = G.linear_rq(x, w, lin_bias, m, 16, gelu=(op, m3, 8))
    assert (out is None) == (tile[0] == 0)
    if out is not None:
        assert torch.equal(out.long(), want)
    got = KernelArith().linear_gelu_rq(x, w, lin_bias, m, 16, op, m3, 8)
    assert torch.equal(got.long(), want) and want.unique().numel() > 1

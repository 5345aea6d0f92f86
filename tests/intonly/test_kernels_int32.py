"""The int32 paths of the ShiftGELU and Shiftmax kernels (lowbit.kernels.intonly) against the torch integer backend,
bit for bit: every 16-bit input, int32 extremes and the inputs where the exponent's quotient q changes, over
scales whose |X0| runs from 1 to past the int32 bounds (those take the int64 path, tested here too).

CPU tests need TRITON_INTERPRET=1 (as tests/intonly/test_kernels.py); `pytest -m gpu` runs them on CUDA.
"""
import os

import pytest
import torch

from lowbit.intonly.dyadic import INT, dyadic, mantissa_bits
from lowbit.intonly.ops import IntSoftmax, ShiftGELU


@pytest.fixture(params=[pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.gpu)])
def dev(request, monkeypatch):
    pytest.importorskip("triton")
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if request.param == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("kernel tests on the CPU need TRITON_INTERPRET=1")
    if request.param == "cpu":  # fewer, larger programs: the interpreter's cost is per program
        from lowbit.kernels import intonly
        monkeypatch.setitem(intonly.TILES, "gelu", (8192, 8))
        monkeypatch.setitem(intonly.TILES, "shiftmax", (4096, 2))
    torch.manual_seed(0)
    return request.param


def test_divc_magic_is_exact():
    from lowbit.kernels.intonly import divc_magic

    for d in list(range(1, 300)) + [2407, 65535, 65536, 4_000_037]:
        amax = 40 * d
        a = torch.arange(amax + 1, dtype=torch.int64) if d < 300 else \
            torch.cat([torch.arange(j * d - 2, j * d + 2) for j in range(1, 41)] + [torch.randint(0, amax + 1, (4096,))])
        a = a.clamp(0, amax)
        m, sh = divc_magic(d, amax)
        assert m < 2**31 and torch.equal((a * m) >> sh, a // d), d


# ShiftGELU input scales S (the exponential's is 1.702 S, X0 = floor(-1 / (1.702 S))): |X0| from 1 to 30900 take the
# int32 path (gelu_i32: |X0| (2^k + 2) 2^k <= 2^31), 34600 and up the int64 path
GELU_CASES = [(s, 8, 23, True) for s in (2.0, 0.3, 0.05, 8.0 / 2**15, 3e-4, 1.9e-5)] + [
    (s, 8, 23, False) for s in (1.7e-5, 1e-5, 1.5e-7, 1e-8)] + [
    (1e-3, 2, 23, True), (1e-3, 4, 23, True), (0.01, 12, 23, True), (2e-4, 12, 23, False),  # out_bits
    (1e-3, 8, 8, True), (1e-3, 8, 7, False), (1e-3, 1, 23, False)]  # 2 <= out_bits <= n


def _gelu_inputs(op, dev):
    """Every 16-bit value, int32 extremes, and +-x around each x where q = floor(-x' / |X0|) changes."""
    x0, k = -op.exp.x0, op.out_bits
    edges = torch.tensor([0, 1, -1, 2**29, -2**29, 2**30, -2**30, 2**31 - 1, -2**31, 2**31 - 2, -2**31 + 1])
    near = torch.cat([(j * x0 * 16) // 23 + torch.arange(-4, 5) for j in range(1, k + 2)])  # x' = 1.4375 x
    x = torch.cat([torch.arange(-2**15, 2**15), edges, near, -near]).clamp(-2**31, 2**31 - 1)
    pad = (-x.numel()) % 130
    return torch.cat([x, x[:pad]]).to(torch.int32).reshape(-1, 130).to(dev)  # 130 channels: a ragged tile


@pytest.mark.parametrize("scale,out_bits,n,fast", GELU_CASES)
def test_shift_gelu_int32_bit_exact(dev, scale, out_bits, n, fast):
    """The sigmoid in isolation: requantized by 1.0 to 32 bits, the output is x * sig itself."""
    from lowbit.kernels.intonly import gelu_i32, shift_gelu

    op = ShiftGELU.build(scale, out_bits, n)
    assert (gelu_i32(op) is not None) == fast, -op.exp.x0
    x = _gelu_inputs(op, dev)
    m = dyadic(1.0, 8)  # b = 2^7, c = 7: |x sig b| < 2^46
    out = shift_gelu(x, op, m, 32)
    assert out.dtype == torch.int32 and torch.equal(out.long(), INT.gelu_rq(op, x.long(), m, 32))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int64])
def test_shift_gelu_int32_input_dtypes(dev, dtype):
    from lowbit.kernels.intonly import shift_gelu

    op = ShiftGELU.build(0.02)
    lo, hi = (-2**40, 2**40) if dtype == torch.int64 else (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    x = torch.randint(lo, hi, (37, 5), dtype=dtype, device=dev)
    x[0], x[1] = lo, hi
    m = dyadic(1.0, 8)  # b = 2^7, c = 7: |x sig b| < 2^46
    assert torch.equal(shift_gelu(x, op, m, 32).long(), INT.gelu_rq(op, x.long(), m, 32))


def test_shift_gelu_int64_path_still_exact(dev, monkeypatch):
    """The int64 path (the fallback) on the same inputs, forced."""
    from lowbit.kernels import intonly

    monkeypatch.setattr(intonly, "gelu_i32", lambda op: None)
    op = ShiftGELU.build(8.0 / 2**15)
    x = _gelu_inputs(op, dev)
    m = dyadic(1.0, 8)  # b = 2^7, c = 7: |x sig b| < 2^46
    assert torch.equal(intonly.shift_gelu(x, op, m, 32).long(), INT.gelu_rq(op, x.long(), m, 32))


def _scores(b, h, tq, t, dev):
    z = torch.randint(-2**16, 2**16, (b, h, tq, t), dtype=torch.int32, device=dev)
    z[0, 0, 0] = 7  # a row of equal scores: p = round(2^k / T)
    z[0, 0, 1, 1:] = -2**16  # one key far above the others
    return z


def _mask(b, t, dev):
    mask = torch.ones(b, 1, 1, t, dtype=torch.int64, device=dev)
    mask[0, ..., 1::3] = 0
    mask[1] = 0  # a batch without keys: total = 0, every p = 2^k - 1 (as the torch path's division gives)
    mask[2, ..., 0] = 0
    return mask


# (score scale S, score_bits, n, path): |X0| = floor(1 / S) from 1 to past 2^16 (E0 = |X0| 2^15 >= 2^31: int64)
SOFTMAX_CASES = [(2.0, 16, 15, True), (0.9, 16, 15, True), (0.05, 16, 15, True), (12.0 / 2**15, 16, 15, True),
                 (3e-5, 16, 15, True), (1.0 / 65534.5, 16, 15, True), (1.0 / 65535.5, 16, 15, False),
                 (12.0 / 2**7, 8, 15, True), (2.0**-20, 30, 10, True), (2.0**-20, 31, 10, False),
                 (0.01, 16, 1, True), (0.01, 16, 20, True), (0.01, 16, 25, False)]


@pytest.mark.parametrize("scale,score_bits,n,fast", SOFTMAX_CASES)
@pytest.mark.parametrize("t", [1, 5, 37, 130])
def test_shiftmax_int32_bit_exact(dev, scale, score_bits, n, fast, t):
    from lowbit.kernels.intonly import shiftmax, shiftmax_i32

    b = 3
    op = IntSoftmax.build(scale, "shift", 7, n)
    assert (shiftmax_i32(op, score_bits, 256) is not None) == fast, (op.exp.x0, score_bits, n)
    z = _scores(b, 2, 3, t, dev)
    m = dyadic(2.0 ** (score_bits - 17), mantissa_bits(17))  # saturates a few scores
    for mk in (None, _mask(b, t, dev)):
        out = shiftmax(z, m, score_bits, op, mk)
        assert torch.equal(out.long(), INT.softmax(op, z.long(), m, score_bits, mk)), mk is not None


def test_shiftmax_int64_path_still_exact(dev, monkeypatch):
    from lowbit.kernels import intonly

    monkeypatch.setattr(intonly, "shiftmax_i32", lambda *a: None)
    op = IntSoftmax.build(12.0 / 2**15, "shift", 7)
    z = _scores(3, 2, 3, 37, dev)
    m = dyadic(2.0**-1, mantissa_bits(17))
    for mk in (None, _mask(3, 37, dev)):
        assert torch.equal(intonly.shiftmax(z, m, 16, op, mk).long(), INT.softmax(op, z.long(), m, 16, mk))


@pytest.mark.parametrize("scale", [12.0 / 2**15, 0.05, 2.0**-10])
def test_shiftmax_int32_exact_ties(dev, scale):
    """Rows whose quotient is exact, (e 2^(k+1) + total) / (2 total) = 1 (256 equal kept keys: p = round(1/2) = 1),
    where the reciprocal's estimate is one short unless |X0| is a power of two and only the correction's equality
    (a >= (q' + 1) d) gives the right answer."""
    from lowbit.kernels.intonly import shiftmax

    op = IntSoftmax.build(scale, "shift", 7)
    z = torch.full((2, 1, 2, 300), 5, dtype=torch.int32, device=dev)
    z[0, 0, 1, 256:] = -2**16  # 256 equal maxima, 44 keys far below
    mask = torch.ones(2, 1, 1, 300, dtype=torch.int64, device=dev)
    mask[1, ..., 256:] = 0  # 256 kept keys
    m = dyadic(1.0, mantissa_bits(17))
    for mk in (None, mask):
        out = shiftmax(z, m, 16, op, mk)
        assert torch.equal(out.long(), INT.softmax(op, z.long(), m, 16, mk))
    assert out[1, ..., :256].eq(1).all() and out[1, ..., 256:].eq(0).all()

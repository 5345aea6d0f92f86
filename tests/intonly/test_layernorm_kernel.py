"""The I-LayerNorm kernel (lowbit.kernels.intonly.layernorm) against the torch integer backend, bit for bit, on every
launch path: few rows (one row a program, the row in registers), rows per program > 1 with one chunk, column chunks
(pipelined or not); the mean's multiply and its long-division fallback; input widths from 4 to 16 bits; constant
rows (variance 0), variance 1, alternating min / max codes (the largest variance), C not a power of two. The int32
Newton chain (_ln_factor) alone against Python's integers over variances from 1 to the bound ln_chain_bits proves,
perfect squares and their neighbours (where integer Newton ends on s or oscillates between s and s + 1) included.

CPU tests need TRITON_INTERPRET=1 (as tests/intonly/test_kernels.py); `pytest -m gpu` runs them on CUDA.
"""
import math

import pytest
import torch

from lowbit.intonly.dyadic import INT, mantissa_bits, qrange
from lowbit.intonly.ops import LayerNormInt

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from lowbit.kernels.intonly import _ln_factor  # noqa: E402


@triton.jit
def _factor_kernel(var_ptr, out_ptr, n, QBITS: tl.constexpr, RBITS: tl.constexpr, ITERATIONS: tl.constexpr,
                   BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + i, _ln_factor(tl.load(var_ptr + i, mask=i < n, other=1), QBITS, RBITS, ITERATIONS), mask=i < n)


def _rows(n, c, bits, dev):
    """n rows of c codes of width bits: random, then (when there is room) a constant row, alternating min / max,
    all min, a small spread around a large mean, variance 1 (one code above the rest) and one max among min codes."""
    lo, hi = qrange(bits)
    x = torch.randint(lo, hi + 1, (n, c), dtype=torch.int32)
    special = [torch.full((c,), hi // 3), torch.where(torch.arange(c) % 2 == 0, lo, hi), torch.full((c,), lo),
               (x[-1] >> 6) + (hi >> 1) - (hi >> 4), (torch.arange(c) == c // 2).int() - 1,
               torch.where(torch.arange(c) == 0, hi, lo)]
    for i, row in enumerate(special[:n - 1]):
        x[i] = row
    return x.to(dev)


def _check(x, bits, iterations=10, out_bits=16):
    from lowbit.kernels.intonly import layernorm

    c = x.shape[-1]
    ln = LayerNormInt(c, bits, iterations)
    gamma, beta = torch.rand(c, dtype=torch.float64) + 0.1, torch.randn(c, dtype=torch.float64)
    m, bias = ln.affine(gamma, beta, 5.0 / 2**(out_bits - 1), mantissa_bits(31))
    out = layernorm(x, ln, m, bias, out_bits)
    assert out is not None and out.shape == x.shape
    assert torch.equal(out.long(), INT.layernorm(ln, x.long(), m, bias.to(x.device), out_bits))


@pytest.mark.parametrize("rows,c,bits", [(1, 768, 16), (2, 1024, 16), (3, 100, 16), (17, 768, 16), (37, 384, 16),
                                         (37, 1024, 16), (3, 768, 4), (5, 100, 8), (1, 32, 12)])
def test_layernorm_few_rows_bit_exact(dev, rows, c, bits):
    """Few rows: the launcher's own tile (one row a program below 132 programs, one chunk)."""
    from lowbit.kernels.intonly import ln_tile

    assert ln_tile(rows, c)[-1]
    _check(_rows(rows, c, bits, dev), bits)


@pytest.mark.parametrize("fill,rows,c,bits", [(1, 300, 768, 16), (1, 130, 384, 16), (1, 37, 100, 8),
                                              (8, 37, 32, 16), (1, 300, 32, 4), (1, 130, 32, 6), (1, 37, 1024, 16),
                                              (1, 2, 768, 16)])
def test_layernorm_many_rows_bit_exact(dev, monkeypatch, fill, rows, c, bits):
    """Many rows a program (the fill target lowered so small tests take the large-batch tiles): column chunks when a
    tile of whole rows would be too large, one chunk of several rows otherwise."""
    from lowbit.kernels import intonly

    monkeypatch.setattr(intonly, "LN_FILL_PROGRAMS", fill)
    bm, block, _, _, one = intonly.ln_tile(rows, c)
    assert bm > 1 and one == (block >= c)
    _check(_rows(rows, c, bits, dev), bits)


@pytest.mark.parametrize("tile", [(16, 64, 2, 3), (8, 32, 1, 2), (32, 256, 8, 1)])
def test_layernorm_sweep_tiles_bit_exact(dev, monkeypatch, tile):
    """Tiles of the on-device sweep's kind (benchmarks/intonly_gpu.py SWEEP): more rows a warp, pipelined column
    loops (stages only change the GPU schedule; the interpreter checks the indexing)."""
    from lowbit.kernels import intonly

    monkeypatch.setitem(intonly.TILES, "layernorm", tile)
    monkeypatch.setattr(intonly, "LN_FILL_PROGRAMS", 1)
    assert not intonly.ln_tile(37, 768)[-1]
    _check(_rows(37, 768, 16, dev), 16)


@pytest.mark.parametrize("fill,rows,c", [(132, 3, 100), (1, 37, 768), (1, 300, 32)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_layernorm_with_the_next_linears_input_bit_exact(dev, monkeypatch, fill, rows, c, per_channel):
    """layernorm(..., rq=m2): the codes and, from the same kernel, INT.rq(codes, m2, None, 8) (the next linear's
    int8 input; per channel as SmoothQuant makes it), on the one-row, one-chunk and column-chunk paths; keep=False
    stores only the int8 codes."""
    from lowbit.intonly.dyadic import dyadic
    from lowbit.kernels import intonly

    monkeypatch.setattr(intonly, "LN_FILL_PROGRAMS", fill)
    g = torch.Generator().manual_seed(rows + c)
    x = _rows(rows, c, 16, dev)
    ln = LayerNormInt(c, 16, 10)
    gamma, beta = torch.rand(c, dtype=torch.float64, generator=g) + 0.1, torch.randn(c, dtype=torch.float64,
                                                                                     generator=g)
    m, bias = ln.affine(gamma, beta, 5.0 / 2**15, mantissa_bits(31))
    ratio = (torch.rand(c, dtype=torch.float64, generator=g) + 0.5) if per_channel else 0.7
    m2 = dyadic(ratio * 2.0**-8 * 2.5, mantissa_bits(16))  # some codes clamp at +-127, most do not
    want = INT.layernorm(ln, x.long(), m, bias.to(x.device), 16)
    want8 = INT.rq(want, m2, None, 8)
    h, x8 = intonly.layernorm(x, ln, m, bias, 16, rq=m2)
    assert x8.dtype == torch.int8 and torch.equal(h.long(), want) and torch.equal(x8.long(), want8)
    assert x8.unique().numel() > 10 and ((x8 == 127) | (x8 == -128)).any()  # not constant; some clamp
    none, x8b = intonly.layernorm(x, ln, m, bias, 16, rq=m2, keep=False)
    assert none is None and torch.equal(x8b, x8)


def test_layernorm_mean_fallback_and_iterations(dev, monkeypatch):
    """The mean by long division (constants where the multiply could leave int64), one and twenty Newton steps (20
    halve a constant row's k to 0: the spec's quotient by 0 is all ones, the kernel's too)."""
    from lowbit.kernels import intonly

    monkeypatch.setattr(intonly, "LN_FILL_PROGRAMS", 1)
    x = _rows(9, 100, 16, dev)
    _check(x, 16, iterations=1)
    _check(x, 16, iterations=20)
    monkeypatch.setattr(intonly, "ln_mean_magic", lambda in_bits, c: (0, 0, 0))
    _check(x, 16)


def test_ln_tile_fills_the_gpu():
    """Rows per program halve until a launch has 132 programs (or one row a program); the swept tile bounds them."""
    from lowbit.kernels.intonly import TILES, ln_tile

    assert ln_tile(128, 768) == (1, 1024, 4, 1, True)  # BERT-base batch 1: one row a program, the row in registers
    assert ln_tile(197, 768)[:1] == (1,) and ln_tile(1024, 768) == (4, 1024, 8, 1, True)
    assert ln_tile(4096, 768) == (*TILES["layernorm"], False)  # 32 x 128: the swept tile
    bm, block, _, _, one = ln_tile(1, 8192)
    assert bm == 1 and not one and block < 8192


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("c", [1, 32, 100, 768, 1024])
def test_ln_mean_magic_is_exact(bits, c):
    """floor((a + 2C K) M / 2^SH) - K = floor(a / 2C) over the whole range of a = 2 total + C (every a for small
    ranges, else both ends, every multiple of 2C's neighbourhood near them and random values)."""
    from lowbit.kernels.intonly import ln_mean_magic

    m, sh, k = ln_mean_magic(bits, c)
    lo, hi = c - c * 2**bits, c + c * 2**bits
    if hi - lo < 1 << 20:
        a = torch.arange(lo, hi + 1)
    else:
        a = torch.cat([torch.arange(lo, lo + 4 * c), torch.arange(hi - 4 * c, hi + 1), torch.randint(lo, hi, (1 << 16,))])
    assert m > 0 and (hi + 2 * c * k) * m < 2**63
    assert torch.equal((((a + 2 * c * k) * m) >> sh) - k, torch.div(a, 2 * c, rounding_mode="floor"))
    assert math.floor((lo + 2 * c * k) / (2 * c)) >= 1


def _newton_factor(var: int, iterations: int) -> int:
    """LayerNormInt.core's factor in Python integers: Newton from 2^16 (var // 2^16 is the first step's shift),
    then floor((2^31 - 1) / k)."""
    k = 1 << 16
    for _ in range(iterations):
        k = (k + var // k) // 2
    return ((1 << 31) - 1) // max(k, 1)


def _variances(vmax: int) -> list[int]:
    """Variances in [1, vmax]: the bound and its neighbours, 1..199, powers of two +- 1, s^2 - 1, s^2 and
    s^2 + 2s (integer Newton oscillates between s and s + 1 there) for small s and s near isqrt(vmax), and 4096
    log-uniform draws."""
    s_max = math.isqrt(vmax)
    v = {vmax, vmax - 1, *range(1, 200)}
    v |= {2**e + d for e in range(vmax.bit_length()) for d in (-1, 0, 1)}
    roots = list(range(1, 1500)) + list(range(max(1, s_max - 64), s_max + 1))
    roots += torch.randint(1, s_max + 1, (1000,), generator=torch.Generator().manual_seed(1)).tolist()
    v |= {r * r + d for r in roots for d in (-1, 0, 2 * r)}
    logs = torch.rand(4096, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * math.log(vmax)
    v |= set(torch.exp(logs).long().tolist())
    return sorted(u for u in v if 1 <= u <= vmax)


@pytest.mark.parametrize("in_bits,c,iterations", [(16, 768, 10), (16, 1024, 10), (16, 768, 1), (16, 768, 5),
                                                  (16, 768, 16), (16, 768, 20), (8, 100, 10), (4, 32, 10),
                                                  (12, 37, 3)])
def test_ln_factor_matches_newton(dev, in_bits, c, iterations):
    """The int32 chain (QBITS-bit non-restoring quotients, RBITS-bit reciprocal) gives the spec's factor for every
    variance 1 <= var <= vmax it is given (var = 0 means y = 0: the factor is not used)."""
    from lowbit.kernels.intonly import ln_chain_bits

    vmax = c * ((2**in_bits - 1) ** 2 + 1) // 4
    var = torch.tensor(_variances(vmax), dtype=torch.int64, device=dev)
    out = torch.empty_like(var)
    _factor_kernel[(triton.cdiv(var.numel(), 1024),)](var, out, var.numel(), *ln_chain_bits(in_bits, c, iterations),
                                                        iterations, 1024)
    want = torch.tensor([_newton_factor(u, iterations) for u in var.tolist()])
    assert torch.equal(out.cpu(), want)


def test_ln_chain_bits():
    """The variance bound is reached (alternating min / max codes), the bits shrink to what it needs, and bounds that
    fail send the launch to the torch path."""
    from lowbit.kernels.intonly import layernorm, ln_chain_bits

    lo, hi = qrange(16)
    row = torch.where(torch.arange(768) % 2 == 0, lo, hi).long()
    mean = (2 * row.sum() + 768) // (2 * 768)
    assert int(((row - mean) ** 2).sum()) == 768 * ((2**16 - 1) ** 2 + 1) // 4
    assert ln_chain_bits(16, 768, 10) == (20, 25) and ln_chain_bits(16, 768, 1)[1] == 16
    assert ln_chain_bits(16, 768, 20)[1] == 31 and ln_chain_bits(4, 32, 10)[0] == 6
    assert ln_chain_bits(17, 2**16, 10) is None  # the int32 row sum could overflow
    assert ln_chain_bits(24, 768, 10) is None  # k would leave 2^29
    ln = LayerNormInt(768, 24)
    m, bias = ln.affine(torch.ones(768, dtype=torch.float64), torch.zeros(768, dtype=torch.float64), 1e-3)
    assert layernorm(torch.zeros(2, 768, dtype=torch.int32), ln, m, bias, 16) is None


@pytest.mark.parametrize("zero_gamma", [False, True])
def test_layernorm_narrow_and_int64_requant_paths(dev, monkeypatch, zero_gamma):
    """The affine requant on 32-bit products (every shift c >= 33, Dyadic.c_low, a host fact) and on int64 (a
    multiplier whose host facts do not say so), both bit-exact; a zero gamma gives that channel b = 0 with c = 1 and
    a bias at that shift, which the host fact c_low sees (int64 path)."""
    from dataclasses import replace

    from lowbit.kernels import intonly

    monkeypatch.setattr(intonly, "LN_FILL_PROGRAMS", 1)
    seen = []
    kernel = intonly._layernorm_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.append(args[kernel.arg_names.index("NARROW")])
                return kernel[grid](*args, **kw)
            return launch

    monkeypatch.setattr(intonly, "_layernorm_kernel", Spy())
    c = 768
    x = _rows(37, c, 16, dev)
    ln = LayerNormInt(c, 16, 10)
    g = torch.Generator().manual_seed(5)
    gamma, beta = torch.rand(c, dtype=torch.float64, generator=g) + 0.1, torch.randn(c, dtype=torch.float64,
                                                                                     generator=g)
    if zero_gamma:
        gamma[3] = 0.0
    m, bias = ln.affine(gamma, beta, 5.0 / 2**15, mantissa_bits(31))
    assert (m.c_low >= 33) != zero_gamma
    want = INT.layernorm(ln, x.long(), m, bias.to(x.device), 16)
    for mm in (m, replace(m, c_low=32)):
        out = intonly.layernorm(x, ln, mm, bias, 16)
        assert torch.equal(out.long(), want)
    assert seen == [not zero_gamma, False]

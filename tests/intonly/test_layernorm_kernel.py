"""The I-LayerNorm kernel (lowbit.kernels.intonly.layernorm) against the torch integer backend, bit for bit, on every
launch path: few rows (one row a program, the row in registers), rows per program > 1 with one chunk, column chunks;
the mean's multiply and its long-division fallback; input widths from 4 to 16 bits; constant rows (variance 0),
alternating min / max codes, C not a power of two.

CPU tests need TRITON_INTERPRET=1 (as tests/intonly/test_kernels.py); `pytest -m gpu` runs them on CUDA.
"""
import math

import pytest
import torch

from lowbit.intonly.dyadic import INT, mantissa_bits, qrange
from lowbit.intonly.ops import LayerNormInt


def _rows(n, c, bits, dev):
    """n rows of c codes of width bits: random, then (when there is room) a constant row, alternating min / max,
    all min, and a small spread around a large mean."""
    lo, hi = qrange(bits)
    x = torch.randint(lo, hi + 1, (n, c), dtype=torch.int32)
    special = [torch.full((c,), hi // 3), torch.where(torch.arange(c) % 2 == 0, lo, hi), torch.full((c,), lo),
               (x[-1] >> 6) + (hi >> 1) - (hi >> 4)]
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


@pytest.mark.parametrize("rows,c,bits", [(1, 768, 16), (3, 100, 16), (37, 384, 16), (3, 768, 4), (5, 100, 8),
                                         (1, 32, 12)])
def test_layernorm_few_rows_bit_exact(dev, rows, c, bits):
    """Few rows: the launcher's own tile (one row a program below 132 programs, one chunk)."""
    from lowbit.kernels.intonly import ln_tile

    assert ln_tile(rows, c)[3]
    _check(_rows(rows, c, bits, dev), bits)


@pytest.mark.parametrize("fill,rows,c,bits", [(1, 300, 768, 16), (1, 130, 384, 16), (1, 37, 100, 8),
                                              (8, 37, 32, 16), (1, 300, 32, 4), (1, 130, 32, 6)])
def test_layernorm_many_rows_bit_exact(dev, monkeypatch, fill, rows, c, bits):
    """Many rows a program (the fill target lowered so small tests take the large-batch tiles): column chunks when a
    tile of whole rows would be too large, one chunk of several rows otherwise."""
    from lowbit.kernels import intonly

    monkeypatch.setattr(intonly, "LN_FILL_PROGRAMS", fill)
    bm, block, _, one = intonly.ln_tile(rows, c)
    assert bm > 1 and one == (block >= c)
    _check(_rows(rows, c, bits, dev), bits)


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

    assert ln_tile(128, 768) == (1, 1024, 4, True)  # BERT-base batch 1: one row a program, the row in registers
    assert ln_tile(197, 768)[:1] == (1,) and ln_tile(1024, 768) == (4, 1024, 8, True)
    assert ln_tile(4096, 768) == (*TILES["layernorm"], False)  # 32 x 128: the swept tile
    bm, block, _, one = ln_tile(1, 8192)
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

"""ShiftGELU's sigmoid quotient without a long division (lowbit.kernels.intonly._gelu_quot_newton): the kernel
function itself over every (m, q), many of which no ShiftGELU input reaches, against the exact quotient.

CPU tests need TRITON_INTERPRET=1 (as tests/intonly/test_kernels.py); `pytest -m gpu` runs them on CUDA.
"""
import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from lowbit.kernels.intonly import _gelu_quot_newton, divc_magic, gelu_mode  # noqa: E402


@triton.jit
def _quot_kernel(m_ptr, q_ptr, out_ptr, n, X: tl.constexpr, K: tl.constexpr, DIV_M: tl.constexpr,
                 DIV_SH: tl.constexpr, MODE: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = tl.load(m_ptr + i, mask=i < n, other=X + 1)
    q = tl.load(q_ptr + i, mask=i < n, other=0)
    tl.store(out_ptr + i, _gelu_quot_newton(m, q, X, K, DIV_M, DIV_SH, MODE), mask=i < n)


@pytest.mark.parametrize("x,k", [(294, 8), (1959, 8), (12, 8), (128, 8), (70, 4), (3000, 6), (29378, 8)])
def test_gelu_quotient_on_every_m_and_q(dev, x, k):
    """Every m in [x + 1, 2x] and q in [0, k - 1], with the correction gelu_mode picked for this x and k, equals
    floor(m 2^(k-1) / (m + x 2^(q+1)))."""
    m = torch.arange(x + 1, 2 * x + 1, dtype=torch.int32).repeat(k)
    q = torch.arange(k, dtype=torch.int32).repeat_interleave(x)
    out = torch.empty(m.shape, dtype=torch.int32, device=dev)
    mode = gelu_mode(-x, k)
    assert mode in (2, 3)
    _quot_kernel[(triton.cdiv(m.numel(), 1024),)](m.to(dev), q.to(dev), out, m.numel(), x, k,
                                                  *divc_magic(x, (k - 1) * x), mode, 1024)
    want = (m.long() << (k - 1)) // (m.long() + ((2 * x) << q.long()))
    assert torch.equal(out.long().cpu(), want)
    assert want.unique().numel() > 1


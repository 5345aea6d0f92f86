"""FP4 e2m1 -> FP8 e4m3 by exponent shift (ZeroQuant-FP M2), exhaustively against torch's float8 encoding."""
import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from lowbit.formats import FP4_E2M1  # noqa: E402
from lowbit.kernels import _tl  # noqa: E402


@triton.jit
def _shift_kernel(out_ptr):
    n = tl.arange(0, 16)[None, :]
    k = tl.arange(0, 16)[:, None]
    tl.store(out_ptr + k * 16 + n, _tl.fp4_to_e4m3(n, k).to(tl.uint8))


@pytest.mark.parametrize("where", ["interp", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_fp4_to_e4m3_shift_exhaustive(dev, where):
    """All 16 FP4 codes times 2^-k, k = 0..8 (every value exact in e4m3, subnormals included)."""
    out = torch.zeros(16, 16, dtype=torch.uint8, device=dev)
    _shift_kernel[(1,)](out)
    vals = FP4_E2M1.table[None, :] * torch.exp2(-torch.arange(9.0))[:, None]  # (9, 16)
    assert torch.equal(out[:9].cpu(), vals.to(torch.float8_e4m3fn).view(torch.uint8))

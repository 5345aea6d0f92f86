"""INT8 x INT8 -> INT32 GEMMs of the integer-only graph (issue 7).

* :func:`int_linear` — the linears, through ``torch._int_mm`` (cuBLASLt int8 tensor cores). cuBLASLt wants
  M > 16 and K, N multiples of 8, so short or odd operands are zero-padded (zero rows / columns add nothing
  to an integer dot product, so the result is exact).
* :func:`bmm` — the attention GEMMs (Q·Kᵀ and P·V over batch x heads), a Triton ``tl.dot`` int8 kernel that
  reads the strided head views in place. Grid (M tiles, heads, batch), N looped inside: no index division.

Both are exact: int8 products summed in int32 cannot overflow for K < 2^17.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


def int_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) int8 codes @ w (N, K) int8 codes ᵀ (+ bias (N,)) -> (..., N) int32, via torch._int_mm."""
    lead, k, n = x.shape[:-1], x.shape[-1], w.shape[0]
    x2 = x.reshape(-1, k).to(torch.int8)
    m = x2.shape[0]
    pad_m, pad_k, pad_n = (32 - m if m <= 16 else 0), -k % 8, -n % 8
    if pad_m or pad_k:
        x2 = F.pad(x2, (0, pad_k, 0, pad_m))
    w = w.to(torch.int8)
    if pad_k or pad_n:
        w = F.pad(w, (0, pad_k, 0, pad_n))
    out = torch._int_mm(x2.contiguous(), w.t())[:m, :n]  # (M, N) INT32
    if bias is not None:
        out = out + bias.to(device=out.device, dtype=torch.int32)
    return out.reshape(*lead, n)


@triton.jit
def _bmm_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sa0, sa1, sam, sak, sb0, sb1, sbk, sbn, sc0, sc1, scm, scn,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    h, z = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    a_ptr += z * sa0 + h * sa1
    b_ptr += z * sb0 + h * sb1
    c_ptr += z * sc0 + h * sc1
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            a = tl.load(a_ptr + rm[:, None] * sam + rk[None, :] * sak, mask=(rm[:, None] < M) & (rk[None, :] < K),
                        other=0)
            b = tl.load(b_ptr + rk[:, None] * sbk + rn[None, :] * sbn, mask=(rk[:, None] < K) & (rn[None, :] < N),
                        other=0)
            acc += tl.dot(a, b, out_dtype=tl.int32)
        tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


def bmm(a: torch.Tensor, b: torch.Tensor, block_m: int = 64, block_n: int = 64, block_k: int = 32) -> torch.Tensor:
    """a (B, H, M, K) @ b (B, H, K, N) int8 (any strides) -> (B, H, M, N) int32. 3-d inputs are taken as H = 1.

    Raises:
        ValueError: operands that are not int8 or whose batch dims differ.
    """
    if a.dim() == 3:
        return bmm(a[:, None], b[:, None], block_m, block_n, block_k)[:, 0]
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise ValueError(f"intonly bmm needs int8 operands, got {a.dtype} and {b.dtype}")
    if a.dim() != 4 or a.shape[:2] != b.shape[:2] or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"intonly bmm: shapes {tuple(a.shape)} and {tuple(b.shape)} do not multiply")
    bb, h, m, k = a.shape
    n = b.shape[-1]
    if h > 1 and b.stride(-1) == 1 and b.stride(1) == n and b.stride(2) == h * n:
        # b is a head view (B, H, K, N) of (B, K, H, N) memory (P·V's values): write the product the same way, so
        # the graph's transpose(1, 2).reshape(B, M, H*N) that follows is a view, not a strided copy
        c = torch.empty((bb, m, h, n), dtype=torch.int32, device=a.device).transpose(1, 2)
    else:
        c = torch.empty((bb, h, m, n), dtype=torch.int32, device=a.device)
    grid = (triton.cdiv(m, block_m), h, bb)
    _bmm_kernel[grid](a, b, c, m, n, k, *a.stride(), *b.stride(), *c.stride(), block_m, block_n, block_k)
    return c

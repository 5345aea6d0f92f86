"""Decode-size GEMV for packed 4-bit group-wise weights (W4A16, and W4A8 on already quantized activations).

y (M, N) = (x * s_x) (M, K) @ (W codes * group scale).T + bias, for M <= 16 (dispatch: see use_gemv).

Why a separate kernel: at decode the layer is a weight stream (N*K/2 bytes); a tensor-core tile pads M to 16
and the split-K reduction adds a workspace round trip. Measured on the H100 it reaches only 515-740 GB/s (the
per-group reductions over reshaped tiles cost layout conversions), so dispatch uses it only where it won. Here each program owns BN output rows for the whole K,
reads GPS groups of packed bytes per step, decodes nibbles with a few integer ops, and reduces on CUDA cores
(FMA into float32), so the cost is the bytes. The stored bf16 group scales are used as they are (for
ZeroQuant-FP M2 weights they already equal row scale * 2^-k), so this kernel needs no prepared buffers.

`dequant_w4` writes the dequantized weight (N, K) in bf16/fp16 for the prefill path of weight-only layers,
where cuBLAS then runs the GEMM (one memory-bound pass of 2.5 bytes per weight, against re-decoding nibbles in
every M tile).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lowbit.kernels._tl import A16, FP4, FP8, INT4, INT8, UINT4

GEMV_MAX_M = 16
# Weight-only layers from this many tokens on: dequantize once + cuBLAS. H100 (BENCHMARKS.md, tune_gemv.py):
# 108 vs 273 us at M = 2048, 4096x4096 against decoding nibbles in every tensor-core tile.
DEQUANT_M = 64


def use_gemv(m: int, n: int) -> bool:
    """Where the GEMV beat the split-K tensor-core path on the H100 (tune_gemv.py, one run): M = 1 with
    N >= 8192 (11008x4096: W4A16 31.7 vs 35.7 us, W4A8-INT 34.2 vs 48.5 us). It lost at N = 4096 (16.9 vs 15.8 us;
    45.7 vs 34.6 us at K = 11008) and at M = 4, so everything else stays on qgemm."""
    return m == 1 and n >= 8192


@triton.jit
def _w_val(n, W_KIND: tl.constexpr):
    """Nibbles (int32 0..15) -> integer-valued float32: int4 -> -8..7; fp4 e2m1 -> 2 * value (-12..12);
    uint4 -> 0..15 (the zero point is subtracted by the caller)."""
    if W_KIND == 3:
        return (n - ((n & 8) << 1)).to(tl.float32)
    elif W_KIND == 4:
        e = (n >> 1) & 3
        m = n & 1
        v = tl.where(e > 0, (2 + m) << tl.maximum(e - 1, 0), m)  # 2 * |value|: 0,1,2,3,4,6,8,12
        return tl.where((n & 8) != 0, -v, v).to(tl.float32)
    else:
        return n.to(tl.float32)


@triton.jit
def _gemv_kernel(x_ptr, sx_ptr, w_ptr, sw_ptr, z_ptr, bias_ptr, out_ptr, M, N, K,
                 stride_xm, stride_wn, stride_sn, stride_zn, stride_om,
                 A_KIND: tl.constexpr, W_KIND: tl.constexpr, GROUP: tl.constexpr, GPS: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, HAS_SX: tl.constexpr, HAS_BIAS: tl.constexpr):
    HG: tl.constexpr = GROUP // 2  # packed bytes of one group
    BKH: tl.constexpr = HG * GPS  # packed bytes per row per step
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    rn = (offs_n % N).to(tl.int64)  # wrapped: loads stay in bounds, extra rows are not stored
    offs_m = tl.arange(0, BM)
    rm = (offs_m % M).to(tl.int64)
    jb = tl.arange(0, BKH)
    jx = tl.arange(0, 2 * BKH)
    jg = tl.arange(0, GPS)
    n_groups = K // GROUP
    acc = tl.zeros((BM, BN), tl.float32)
    for g0 in range(0, n_groups, GPS):
        gmask = (g0 + jg) < n_groups  # (GPS,)
        kb = g0 * HG + jb
        b = tl.load(w_ptr + rn[:, None] * stride_wn + kb[None, :], mask=kb[None, :] < K // 2, other=0)
        b = b.to(tl.int32)  # (BN, BKH)
        lo = _w_val(b & 0xF, W_KIND)
        hi = _w_val((b >> 4) & 0xF, W_KIND)
        kx = g0 * GROUP + jx
        xx = tl.load(x_ptr + rm[:, None] * stride_xm + kx[None, :], mask=kx[None, :] < K, other=0)
        if A_KIND == 2:
            xx = xx.to(tl.float8e4nv, bitcast=True)
        xe, xo = tl.split(tl.reshape(xx.to(tl.float32), (BM, BKH, 2)))  # columns 2j and 2j+1
        prod = xe[:, None, :] * lo[None, :, :] + xo[:, None, :] * hi[None, :, :]  # (BM, BN, BKH)
        part = tl.sum(tl.reshape(prod, (BM, BN, GPS, HG)), axis=3)  # (BM, BN, GPS) per-group dot products
        s = tl.load(sw_ptr + rn[:, None] * stride_sn + (g0 + jg)[None, :], mask=gmask[None, :], other=0.0)
        s = s.to(tl.float32)  # (BN, GPS)
        if W_KIND == 4:
            s = s * 0.5  # _w_val returns 2 * the fp4 value
        if W_KIND == 5:  # asymmetric: sum_k x_k (q_k - z) = sum_k x_k q_k - z * sum_k x_k
            z = tl.load(z_ptr + rn[:, None] * stride_zn + (g0 + jg)[None, :], mask=gmask[None, :], other=0)
            xs = tl.sum(tl.reshape(xe + xo, (BM, GPS, HG)), axis=2)  # (BM, GPS)
            part = part - z.to(tl.float32)[None, :, :] * xs[:, None, :]
        acc += tl.sum(part * s[None, :, :], axis=2)
    if HAS_SX:
        acc = acc * tl.load(sx_ptr + rm)[:, None]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask)


def gemv_config(n: int, k: int) -> tuple[int, int, int, int]:
    """(BN, GPS, num_warps, num_stages): the best of the H100 sweep at M = 1 (benchmarks/tune_gemv.py)."""
    return (8, 4, 1, 3) if n >= 8192 else (4, 4, 1, 3)


def gemv_w4(x: torch.Tensor, x_scale: torch.Tensor | None, a_kind: int, w: torch.Tensor, w_scale: torch.Tensor,
            zero: torch.Tensor | None, bias: torch.Tensor | None, w_kind: int, group: int, n: int, k: int,
            out_dtype: torch.dtype, config: tuple[int, int, int, int] | None = None,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """y = (x [* x_scale per row]) @ dequant(W).T + bias for M <= GEMV_MAX_M (16).

    Args:
        x: (M, K) float activations (a_kind A16), int8 codes (INT8) or fp8 e4m3 bit patterns as uint8 (FP8).
        x_scale: (M,) float32 per-token scales of coded activations, None for A16.
        w: (N, K/2) packed codes; w_scale: (N, K/group) group scales (bf16 as stored); zero: (N, K/group) uint8.
        config: (BN, GPS, num_warps, num_stages) override (tuning scripts).
        out: optional preallocated (M, N) output.
    """
    m = x.shape[0]
    if m > GEMV_MAX_M:
        raise ValueError(f"gemv_w4 handles M <= {GEMV_MAX_M}, got {m}")
    if k % group or group % 2:
        raise ValueError(f"gemv_w4: group {group} must be even and divide K={k}")
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    if m == 0:
        return out
    bn, gps, warps, stages = config or gemv_config(n, k)
    gps = min(gps, triton.next_power_of_2(k // group))
    bm = triton.next_power_of_2(m)
    if x.stride(1) != 1:
        x = x.contiguous()
    dummy = w_scale
    _gemv_kernel[(triton.cdiv(n, bn),)](
        x, x_scale if x_scale is not None else dummy, w, w_scale, zero if zero is not None else dummy,
        bias if bias is not None else dummy, out, m, n, k, x.stride(0), w.stride(0), w_scale.stride(0),
        zero.stride(0) if zero is not None else 0, out.stride(0), A_KIND=a_kind, W_KIND=w_kind, GROUP=group,
        GPS=gps, BM=bm, BN=bn, HAS_SX=x_scale is not None, HAS_BIAS=bias is not None, num_warps=warps,
        num_stages=stages)
    return out


@triton.jit
def _dequant_kernel(w_ptr, sw_ptr, z_ptr, out_ptr, N, K, stride_wn, stride_sn, stride_zn, stride_on,
                    W_KIND: tl.constexpr, GROUP: tl.constexpr, BN: tl.constexpr):
    """One group of BN rows per program: (BN, GROUP/2) packed bytes -> (BN, GROUP) values * scale."""
    HG: tl.constexpr = GROUP // 2
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    g = tl.program_id(1)
    rn = (offs_n % N).to(tl.int64)
    jb = tl.arange(0, HG)
    b = tl.load(w_ptr + rn[:, None] * stride_wn + g * HG + jb[None, :]).to(tl.int32)  # (BN, HG)
    s = tl.load(sw_ptr + rn * stride_sn + g).to(tl.float32)[:, None]
    if W_KIND == 4:
        s = s * 0.5
    lo = _w_val(b & 0xF, W_KIND)
    hi = _w_val((b >> 4) & 0xF, W_KIND)
    if W_KIND == 5:
        z = tl.load(z_ptr + rn * stride_zn + g).to(tl.float32)[:, None]
        lo, hi = lo - z, hi - z
    v = tl.reshape(tl.join(lo * s, hi * s), (BN, GROUP))  # element 2j = low nibble of byte j
    kk = g * GROUP + tl.arange(0, GROUP)
    mask = offs_n[:, None] < N
    tl.store(out_ptr + rn[:, None] * stride_on + kk[None, :], v.to(out_ptr.dtype.element_ty), mask=mask)


def dequant_w4(w: torch.Tensor, w_scale: torch.Tensor, zero: torch.Tensor | None, w_kind: int, group: int,
               k: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, K) dequantized weight in `dtype` (the fp32 product code * scale, rounded once to dtype)."""
    n = w.shape[0]
    out = torch.empty((n, k), dtype=dtype, device=w.device)
    bn = 32
    _dequant_kernel[(triton.cdiv(n, bn), k // group)](
        w, w_scale, zero if zero is not None else w_scale, out, n, k, w.stride(0), w_scale.stride(0),
        zero.stride(0) if zero is not None else 0, out.stride(0), W_KIND=w_kind, GROUP=group, BN=bn,
        num_warps=4)
    return out


KINDS_4BIT = (INT4, UINT4, FP4)
A_CODES = (A16, INT8, FP8)

"""Mixed-format GEMM (kernels 2-5): y = (A codes * a_scale) @ (W codes * w_scale).T + bias.

One templated Triton kernel covers every family; constexpr kinds pick the operand decoding:

| family          | A (M, K)                   | W (N, K)                      | tensor-core MMA | scales                    |
|-----------------|----------------------------|-------------------------------|-----------------|---------------------------|
| W8A8-INT8       | int8 codes                 | int8 per-channel              | int8 -> int32   | epilogue: s_a[m] * s_w[n] |
| W8A8-FP8        | fp8 e4m3 codes             | fp8 e4m3 per-channel          | fp8 -> fp32     | epilogue                  |
| W4A8-INT        | int8 codes                 | int4 g (sym / asym) unpacked  | int8 -> int32   | per group + epilogue s_a  |
| W4A8-FP         | fp8 e4m3 codes             | fp4 -> fp8 by exponent shift  | fp8 -> fp32     | epilogue: s_a * row scale |
| W4A4-INT / FP4  | packed int4 / fp4 codes    | int4 / fp4 as above           | int8 / fp8      | as above                  |
| W4A16           | bf16 / fp16                | int4 / fp4 g, exact in 16 bit | bf16 / fp16     | per group                 |

Per group (MODE 1): BLOCK_K == group, each K step's partial product (exact integers times codes) is scaled by
the group scale into the float32 accumulator, so the kernel equals the reference up to float32 summation order.
POW2_ROW (MODE 2, ZeroQuant-FP M2, PAPERS.md §4): group scale = row scale * 2^-k, the 2^-k goes into the FP4 -> FP8
exponent, the MMA accumulates across groups, and the row scale is applied once in the epilogue.

Small M (decode) splits K over programs; partial tiles go to a float32 workspace and the last program of a tile
(an atomic counter, reset by that program, so no memset and no host sync) reduces them and runs the epilogue.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from lowbit.kernels import _tl
from lowbit.kernels._tl import A16, FP4, FP8, INT4, INT8, PER_GROUP, POW2_ROW, UINT4


@triton.jit
def _a_tile(a_ptr, offs_m, k0, K, stride_am, A_KIND: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
            EVEN_K: tl.constexpr):
    """(BM, BK) activation tile in the MMA dtype."""
    if A_KIND == 3 or A_KIND == 4:  # packed 4-bit
        kb = k0 // 2 + tl.arange(0, BK // 2)
        ptrs = a_ptr + offs_m[:, None] * stride_am + kb[None, :]
        b = tl.load(ptrs) if EVEN_K else tl.load(ptrs, mask=kb[None, :] < K // 2, other=0)
        n = _tl.nibbles(b, BM, BK)
        if A_KIND == 3:
            x = _tl.int4_of(n).to(tl.int8)
        else:
            x = _tl.fp4_to_e4m3(n, 0).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
    else:
        kk = k0 + tl.arange(0, BK)
        ptrs = a_ptr + offs_m[:, None] * stride_am + kk[None, :]
        x = tl.load(ptrs) if EVEN_K else tl.load(ptrs, mask=kk[None, :] < K, other=0)
        if A_KIND == 2:
            x = x.to(tl.float8e4nv, bitcast=True)
    return x


@triton.jit
def _w_tile(w_ptr, aux_ptr, offs_n, k0, K, stride_wn, stride_auxn, A_KIND: tl.constexpr, W_KIND: tl.constexpr,
            MODE: tl.constexpr, GROUP: tl.constexpr, MMA_DT: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
            EVEN_K: tl.constexpr):
    """(BN, BK) weight tile converted exactly to the MMA dtype (no scale applied)."""
    if W_KIND == 3 or W_KIND == 4 or W_KIND == 5:  # packed 4-bit
        kb = k0 // 2 + tl.arange(0, BK // 2)
        ptrs = w_ptr + offs_n[:, None] * stride_wn + kb[None, :]
        b = tl.load(ptrs) if EVEN_K else tl.load(ptrs, mask=kb[None, :] < K // 2, other=0)
        n = _tl.nibbles(b, BN, BK)
        if W_KIND == 3:
            w = _tl.int4_of(n).to(MMA_DT)
        elif W_KIND == 5:
            z = tl.load(aux_ptr + offs_n * stride_auxn + k0 // GROUP).to(tl.int32)
            w = (n - z[:, None]).to(MMA_DT)
        else:
            if MODE == 2:
                shift = tl.load(aux_ptr + offs_n * stride_auxn + k0 // GROUP).to(tl.int32)[:, None]
            else:
                shift = tl.zeros((BN, 1), tl.int32)
            w = _tl.fp4_to_e4m3(n, shift).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
            if A_KIND == 0:
                w = w.to(MMA_DT)
    else:
        kk = k0 + tl.arange(0, BK)
        ptrs = w_ptr + offs_n[:, None] * stride_wn + kk[None, :]
        w = tl.load(ptrs) if EVEN_K else tl.load(ptrs, mask=kk[None, :] < K, other=0)
        if W_KIND == 2:
            w = w.to(tl.float8e4nv, bitcast=True)
        w = w.to(MMA_DT)
    return w


@triton.jit
def _a_pair(a_ptr, offs_m, k0, K, stride_am, A_KIND: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
            EVEN_K: tl.constexpr):
    """Activation columns k0 + 2j (lo) and k0 + 2j + 1 (hi), each (BM, BK // 2), in the MMA dtype.

    Splitting K into even and odd halves matches the nibble layout of packed weights, so neither operand is
    interleaved in registers: y = A_even @ W_lo^T + A_odd @ W_hi^T."""
    j = tl.arange(0, BK // 2)
    if A_KIND == 3 or A_KIND == 4:
        kb = k0 // 2 + j
        ptrs = a_ptr + offs_m[:, None] * stride_am + kb[None, :]
        b = tl.load(ptrs) if EVEN_K else tl.load(ptrs, mask=kb[None, :] < K // 2, other=0)
        b = b.to(tl.int32)
        if A_KIND == 3:
            lo = _tl.int4_of(b & 0xF).to(tl.int8)
            hi = _tl.int4_of((b >> 4) & 0xF).to(tl.int8)
        else:
            lo = _tl.fp4_to_e4m3(b & 0xF, 0).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
            hi = _tl.fp4_to_e4m3((b >> 4) & 0xF, 0).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
    else:
        kk = k0 + 2 * j
        ptrs = a_ptr + offs_m[:, None] * stride_am + kk[None, :]
        if EVEN_K:
            lo = tl.load(ptrs)
            hi = tl.load(ptrs + 1)
        else:
            lo = tl.load(ptrs, mask=kk[None, :] < K, other=0)
            hi = tl.load(ptrs + 1, mask=kk[None, :] + 1 < K, other=0)
        if A_KIND == 2:
            lo = lo.to(tl.float8e4nv, bitcast=True)
            hi = hi.to(tl.float8e4nv, bitcast=True)
    return lo, hi


@triton.jit
def _w_conv(n, z, shift, A_KIND: tl.constexpr, W_KIND: tl.constexpr, MMA_DT: tl.constexpr):
    """int32 nibbles -> MMA dtype codes (exact)."""
    if W_KIND == 3:
        w = _tl.int4_of(n).to(MMA_DT)
    elif W_KIND == 5:
        w = (n - z).to(MMA_DT)
    else:
        w = _tl.fp4_to_e4m3(n, shift).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
        if A_KIND == 0:
            w = w.to(MMA_DT)
    return w


@triton.jit
def _w_pair(w_ptr, aux_ptr, offs_n, k0, K, stride_wn, stride_auxn, A_KIND: tl.constexpr, W_KIND: tl.constexpr,
            MODE: tl.constexpr, GROUP: tl.constexpr, MMA_DT: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
            EVEN_K: tl.constexpr):
    """Packed weight tile as (low nibbles, high nibbles), each (BN, BK // 2), in the MMA dtype."""
    kb = k0 // 2 + tl.arange(0, BK // 2)
    ptrs = w_ptr + offs_n[:, None] * stride_wn + kb[None, :]
    b = tl.load(ptrs) if EVEN_K else tl.load(ptrs, mask=kb[None, :] < K // 2, other=0)
    b = b.to(tl.int32)
    if W_KIND == 5 or MODE == 2:
        aux = tl.load(aux_ptr + offs_n * stride_auxn + k0 // GROUP).to(tl.int32)[:, None]
    else:
        aux = tl.zeros((BN, 1), tl.int32)
    lo = _w_conv(b & 0xF, aux, aux, A_KIND, W_KIND, MMA_DT)
    hi = _w_conv((b >> 4) & 0xF, aux, aux, A_KIND, W_KIND, MMA_DT)
    return lo, hi


@triton.jit
def mma_step(acc, a_ptr, w_ptr, aux_ptr, sw_ptr, rm, rn, k0, K, stride_am, stride_wn, stride_auxn, stride_sn,
             A_KIND: tl.constexpr, W_KIND: tl.constexpr, MODE: tl.constexpr, GROUP: tl.constexpr,
             MMA_DT: tl.constexpr, IS_INT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
             EVEN_K: tl.constexpr):
    """One BK step of the main loop (shared with lowbit.engine.fused): load and convert both operands, MMA, and
    for MODE 1 scale the step's partial product by its group scale into the float32 accumulator."""
    PACKED_W: tl.constexpr = W_KIND == 3 or W_KIND == 4 or W_KIND == 5
    if PACKED_W:
        a_lo, a_hi = _a_pair(a_ptr, rm, k0, K, stride_am, A_KIND, BM, BK, EVEN_K)
        w_lo, w_hi = _w_pair(w_ptr, aux_ptr, rn, k0, K, stride_wn, stride_auxn, A_KIND, W_KIND, MODE, GROUP,
                             MMA_DT, BN, BK, EVEN_K)
        if MODE == 1:
            if IS_INT:
                part = tl.dot(a_lo, tl.trans(w_lo), out_dtype=tl.int32)
                part = tl.dot(a_hi, tl.trans(w_hi), part, out_dtype=tl.int32).to(tl.float32)
            else:
                part = tl.dot(a_hi, tl.trans(w_hi), tl.dot(a_lo, tl.trans(w_lo)))
            acc += part * tl.load(sw_ptr + rn * stride_sn + k0 // GROUP).to(tl.float32)[None, :]
        elif IS_INT:
            acc = tl.dot(a_lo, tl.trans(w_lo), acc, out_dtype=tl.int32)
            acc = tl.dot(a_hi, tl.trans(w_hi), acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a_hi, tl.trans(w_hi), tl.dot(a_lo, tl.trans(w_lo), acc))
    else:
        a = _a_tile(a_ptr, rm, k0, K, stride_am, A_KIND, BM, BK, EVEN_K)
        w = _w_tile(w_ptr, aux_ptr, rn, k0, K, stride_wn, stride_auxn, A_KIND, W_KIND, MODE, GROUP, MMA_DT,
                    BN, BK, EVEN_K)
        if MODE == 1:
            if IS_INT:
                part = tl.dot(a, tl.trans(w), out_dtype=tl.int32).to(tl.float32)
            else:
                part = tl.dot(a, tl.trans(w))
            acc += part * tl.load(sw_ptr + rn * stride_sn + k0 // GROUP).to(tl.float32)[None, :]
        elif IS_INT:
            acc = tl.dot(a, tl.trans(w), acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, tl.trans(w), acc)
    return acc


@triton.jit
def _qgemm_kernel(a_ptr, sa_ptr, w_ptr, sw_ptr, aux_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr,
                  M, N, K, stride_am, stride_wn, stride_sn, stride_auxn, stride_om,
                  A_KIND: tl.constexpr, W_KIND: tl.constexpr, MODE: tl.constexpr, GROUP: tl.constexpr,
                  HAS_SA: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT_K: tl.constexpr,
                  GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    width = GROUP_M * num_pid_n  # grouped launch order: GROUP_M row tiles share W tiles in L2
    first_m = (pid // width) * GROUP_M
    gsize = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % gsize
    pid_n = (pid % width) // gsize
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rm = (offs_m % M).to(tl.int64)  # wrapped rows/cols: loads stay in bounds, their results are not stored
    rn = (offs_n % N).to(tl.int64)

    IS_INT: tl.constexpr = A_KIND == 1 or A_KIND == 3
    if A_KIND == 0:
        MMA_DT: tl.constexpr = a_ptr.dtype.element_ty
    elif IS_INT:
        MMA_DT: tl.constexpr = tl.int8
    else:
        MMA_DT: tl.constexpr = tl.float8e4nv
    if MODE == 1:
        acc = tl.zeros((BM, BN), tl.float32)
    elif IS_INT:
        acc = tl.zeros((BM, BN), tl.int32)
    else:
        acc = tl.zeros((BM, BN), tl.float32)

    k_steps = tl.cdiv(K, BK)
    per = tl.cdiv(k_steps, SPLIT_K)
    k_lo = pid_k * per
    k_hi = tl.minimum(k_lo + per, k_steps)
    for ks in range(k_lo, k_hi):
        acc = mma_step(acc, a_ptr, w_ptr, aux_ptr, sw_ptr, rm, rn, ks * BK, K, stride_am, stride_wn, stride_auxn,
                       stride_sn, A_KIND, W_KIND, MODE, GROUP, MMA_DT, IS_INT, BM, BN, BK, EVEN_K)
    accf = acc.to(tl.float32)

    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K > 1:
        ws = ws_ptr + offs_m[:, None] * N + offs_n[None, :]
        tl.store(ws + pid_k * M * N, accf, mask=mask)
        tl.debug_barrier()  # every thread's partial is stored before the tile counter is bumped
        tile = cnt_ptr + pid_m * num_pid_n + pid_n
        if tl.atomic_add(tile, 1, sem="acq_rel") == SPLIT_K - 1:
            accf = tl.zeros((BM, BN), tl.float32)
            for s in range(SPLIT_K):
                accf += tl.load(ws + s * M * N, mask=mask, other=0.0, cache_modifier=".cg")
            _epilogue(accf, sa_ptr, sw_ptr, bias_ptr, out_ptr, offs_m, offs_n, rm, rn, mask, stride_om,
                      MODE, HAS_SA, HAS_BIAS)
            tl.atomic_xchg(tile, 0)  # leave the counter at zero for the next call
    else:
        _epilogue(accf, sa_ptr, sw_ptr, bias_ptr, out_ptr, offs_m, offs_n, rm, rn, mask, stride_om,
                  MODE, HAS_SA, HAS_BIAS)


@triton.jit
def _epilogue(accf, sa_ptr, sw_ptr, bias_ptr, out_ptr, offs_m, offs_n, rm, rn, mask, stride_om,
              MODE: tl.constexpr, HAS_SA: tl.constexpr, HAS_BIAS: tl.constexpr):
    if HAS_SA:
        accf = accf * tl.load(sa_ptr + rm)[:, None]
    if MODE != 1:
        accf = accf * tl.load(sw_ptr + rn)[None, :]
    if HAS_BIAS:
        accf = accf + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    ptrs = out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
    tl.store(ptrs, accf.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _unpack_w_kernel(w_ptr, aux_ptr, out_ptr, N, K, stride_wn, stride_auxn, stride_on,
                     W_KIND: tl.constexpr, MODE: tl.constexpr, GROUP: tl.constexpr, BN: tl.constexpr,
                     BK: tl.constexpr):
    """Packed 4-bit codes (N, K/2) -> 8-bit codes (N, K): int4 -> int8 (zero point subtracted), fp4 -> fp8 e4m3
    (M2 exponent shift applied). Exact, so the 8-bit GEMM computes the same function."""
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    k0 = tl.program_id(1) * BK
    kb = k0 // 2 + tl.arange(0, BK // 2)
    rn = (offs_n % N).to(tl.int64)
    b = tl.load(w_ptr + rn[:, None] * stride_wn + kb[None, :], mask=kb[None, :] < K // 2, other=0)
    n = _tl.nibbles(b, BN, BK)
    if W_KIND == 5 or MODE == 2:
        aux = tl.load(aux_ptr + rn * stride_auxn + k0 // GROUP).to(tl.int32)[:, None]
    else:
        aux = tl.zeros((BN, 1), tl.int32)
    if W_KIND == 4:
        c = _tl.fp4_to_e4m3(n, aux).to(tl.uint8)
    else:
        c = _w_conv(n, aux, aux, 1, W_KIND, tl.int8)
    kk = k0 + tl.arange(0, BK)
    mask = (offs_n[:, None] < N) & (kk[None, :] < K)
    tl.store(out_ptr + rn[:, None] * stride_on + kk[None, :], c, mask=mask)


def unpack_weight(w: torch.Tensor, aux: torch.Tensor | None, w_kind: int, mode: int, group: int,
                  k: int) -> torch.Tensor:
    """8-bit codes (N, K) of packed 4-bit weights: int8 for INT4/UINT4, uint8 fp8 e4m3 bits for FP4."""
    n = w.shape[0]
    out = torch.empty((n, k), dtype=torch.uint8 if w_kind == FP4 else torch.int8, device=w.device)
    bk = min(group, 128) if group else 128
    grid = (triton.cdiv(n, 32), triton.cdiv(k, bk))
    _unpack_w_kernel[grid](w, aux if aux is not None else w, out, n, k, w.stride(0),
                           aux.stride(0) if aux is not None else 0, out.stride(0), W_KIND=w_kind, MODE=mode,
                           GROUP=max(group, 1), BN=32, BK=bk, num_warps=4)
    return out


@dataclass(frozen=True)
class Config:
    bm: int
    bn: int
    bk: int
    split_k: int = 1
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3


UNPACK_M = 17  # H100: in-GEMM nibble conversion at M=64 ran 6x slower than unpack + 8-bit GEMM (BENCHMARKS.md)


def choose_config(m: int, n: int, k: int, a_kind: int, w_kind: int, mode: int, group: int,
                  sms: int = 132) -> Config:
    """Tile shapes by M: decode (M <= 16) splits K until ~4 programs per SM; prefill uses 128-wide tiles."""
    bk = group if mode != 0 else (128 if a_kind == A16 else 128)
    if m <= 64:
        bm = 16 if m <= 16 else (32 if m <= 32 else 64)
        bn = 64  # H100 sweep (benchmarks/tune_decode.py): bn 64, split 8, 3 stages, 4 warps was best at M=1, 16
        tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
        steps = triton.cdiv(k, bk)
        split = 1
        while tiles * split < 4 * sms and split * 4 <= steps and split < 8:
            split *= 2
        return Config(bm, bn, bk, split, 1, num_warps=4, num_stages=3)
    if m <= 256:
        return Config(64, 128, bk, 1, 8, num_warps=4, num_stages=4)
    return Config(128, 128, bk, 1, 8, num_warps=8, num_stages=3)


def qgemm(a: torch.Tensor, a_scale: torch.Tensor | None, w: torch.Tensor, w_scale: torch.Tensor,
          aux: torch.Tensor | None, bias: torch.Tensor | None, counters: torch.Tensor | None,
          a_kind: int, w_kind: int, mode: int, group: int, n: int, k: int, out_dtype: torch.dtype,
          config: Config | None = None, out: torch.Tensor | None = None,
          unpack_m: int = UNPACK_M) -> torch.Tensor:
    """Launch the GEMM. Shapes: a (M, K) or (M, K/2) packed; w (N, K) or (N, K/2); w_scale (N,) float32 for
    MODE 0 / 2 or (N, K/group) for MODE 1; aux: zero points (UINT4) or exponent shifts (MODE 2), (N, K/group) uint8;
    counters: int32 zeros with at least cdiv(M, bm) * cdiv(N, bn) entries (needed when the config splits K);
    out: optional preallocated (M, N) output (tests poison it to catch unwritten elements);
    unpack_m: from this many tokens on, packed weights are first unpacked to 8-bit codes (one memory-bound pass,
    N*K*1.5 bytes) and the 8-bit GEMM runs: converting nibbles inside the GEMM repeats the work M / BM times."""
    m = a.shape[0]
    if w_kind in (INT4, FP4, UINT4) and m >= unpack_m:
        w = unpack_weight(w, aux, w_kind, mode, group, k)
        w_kind, aux = (FP8 if w_kind == FP4 else INT8), None
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=a.device)
    if a.is_cuda and a_kind == FP8 and a.dtype == torch.uint8:
        a = a.view(torch.float8_e4m3fn)  # typed fp8 pointers let Triton pipeline the loads (cp.async)
    if w.is_cuda and w_kind == FP8 and w.dtype == torch.uint8:
        w = w.view(torch.float8_e4m3fn)
    if m == 0:
        return out
    cfg = config or choose_config(m, n, k, a_kind, w_kind, mode, group, _tl.sm_count(a.device))
    if cfg.split_k > 1 and (counters is None or counters.numel() < triton.cdiv(m, cfg.bm) * triton.cdiv(n, cfg.bn)):
        cfg = Config(cfg.bm, cfg.bn, cfg.bk, 1, cfg.group_m, cfg.num_warps, cfg.num_stages)
    ws = torch.empty((cfg.split_k, m, n), dtype=torch.float32, device=a.device) if cfg.split_k > 1 else out
    even_k = k % cfg.bk == 0
    grid = (triton.cdiv(m, cfg.bm) * triton.cdiv(n, cfg.bn), cfg.split_k)
    _qgemm_kernel[grid](
        a, a_scale if a_scale is not None else w_scale, w, w_scale, aux if aux is not None else w_scale,
        bias if bias is not None else w_scale, out, ws, counters if counters is not None else w_scale,
        m, n, k, a.stride(0), w.stride(0), w_scale.stride(0), aux.stride(0) if aux is not None else 0,
        out.stride(0), A_KIND=a_kind, W_KIND=w_kind, MODE=mode, GROUP=group, HAS_SA=a_scale is not None,
        HAS_BIAS=bias is not None, EVEN_K=even_k, BM=cfg.bm, BN=cfg.bn, BK=cfg.bk, SPLIT_K=cfg.split_k,
        GROUP_M=cfg.group_m, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out

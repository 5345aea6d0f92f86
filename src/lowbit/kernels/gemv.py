"""Decode-size GEMV for packed 4-bit group-wise weights (W4A16, and W4A8 with the token quantized in-kernel).

y (M, N) = (x * s_x) (M, K) @ (W codes * group scale).T + bias, on CUDA cores (no M padding to a tensor-core tile).

Two kernels. `gemv_w4_perm` (M = 1, the decode path of dispatch for N >= PERM_MIN_N) reads a GPU-side copy of the
weights re-packed by `permute_w4` so that, for each nibble position, a word-row of a step needs one contiguous
vector of activations and one scale per row (H100: 1.72-1.82x bf16 cuBLAS at 4096/11008-wide layers, ~1.2 TB/s).
`gemv_w4` reads the stored layout directly (any M <= 16; split-K for narrow layers). Both decode nibbles with
bit tricks (no int->float converts) and accumulate element-wise in float32 with one reduction at the end.
`mma_w4_perm` (2 <= M <= PERM_MMA_MAX_M tokens, same permuted copy) decodes each weight once per step into the
MMA dtype and shares it across the tokens through tl.dot, the group scale applied to each partial product.

`dequant_w4` writes the dequantized weight (N, K) in bf16/fp16 for the prefill path of weight-only layers,
where cuBLAS then runs the GEMM (one memory-bound pass of 2.5 bytes per weight, against re-decoding nibbles in
every M tile).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lowbit.kernels import _tl
from lowbit.kernels._tl import A16, FP4, FP8, INT4, INT8, UINT4

GEMV_MAX_M = 16
# Weight-only layers from this many tokens on: dequantize once + cuBLAS. H100 (BENCHMARKS.md, tune_gemv.py):
# 108 vs 273 us at M = 2048, 4096x4096 against decoding nibbles in every tensor-core tile.
DEQUANT_M = 64
GEMV_TOKENS = 1  # the GEMV runs up to this many tokens (tune_gemv.py); above, mma_w4_perm / qgemm (dispatch)


# One token on the permuted copy: the tensor-core kernel (the token padded to 16 rows) instead of the GEMV for
# W4A8 layers, and for W4A16 layers of at least this many weights. H100 (`lowbit bench layers --methods
# bf16,w4a16,w4a8-int,gemlite-a16w4 --tokens 1,2`, 2026-11-24, code 54f7a76; M = 2 runs the same padded kernel as
# M = 1 would): W4A16 4096 x 4096 GEMV 8.8-9.9 µs vs 9.8-10.0 (narrow layers keep the GEMV), 11008 x 4096 19.6 vs
# 16.3-17.0, 4096 x 11008 23.3 vs 18.4; W4A8-INT (act_quant + kernel against the GEMV that quantizes the token
# itself) 14.6 vs 13.8, 36.3 vs 21.3, 35.1 vs 29.5. gemlite's A16W4 GEMV in the same call: 8.2, 16.6, 16.5 µs.
PERM_MMA_M1_MIN_WEIGHTS = 1 << 25


def use_gemv(m: int, n: int, k: int = 0, weight_only: bool = True, permuted: bool = False) -> bool:
    """Tokens for which the CUDA-core GEMV runs instead of the tensor-core paths (H100, tune_gemv.py,
    PERM_MMA_M1_MIN_WEIGHTS); permuted: the layer has the permuted copy that mma_w4_perm reads."""
    if not 1 <= m <= GEMV_TOKENS:
        return False
    return not permuted or (weight_only and n * k < PERM_MMA_M1_MIN_WEIGHTS)


@triton.jit
def _nib_val(q, off, W_KIND: tl.constexpr):
    """Nibbles q (int32, 0..15, upper bits zero) -> float32 values, 3-4 integer/float ops per element.

    int4 / uint4: (q [^ 8] | 0x4B000000) read as float32 is exactly 2^23 + q' (q' = q + 8 for two's complement
    codes), so subtracting `off` (2^23 + 8, or 2^23 + zero point) gives the value without an int->float convert.
    fp4 e2m1: the 3 magnitude bits placed at bit 9 of a float16 (sign at bit 15) read as float16 are the value
    times 2^-14, e2m1's subnormal (m / 2) included; the caller folds 2^14 into the group scale.
    """
    if W_KIND == 4:
        h = (((q & 7) << 9) | ((q & 8) << 12)).to(tl.int16)
        return h.to(tl.float16, bitcast=True).to(tl.float32)
    elif W_KIND == 3:
        return ((q ^ 0x4B000008).to(tl.float32, bitcast=True)) - off
    else:
        return ((q | 0x4B000000).to(tl.float32, bitcast=True)) - off


@triton.jit
def _aq_values(v, AQ: tl.constexpr):
    """Float32 values of per-token codes of v (already divided by the token scale): int8 or fp8 e4m3, rounded as
    act_quant.py rounds them, so the fused GEMV sees the same activations as the act_quant kernel writes."""
    if AQ == 1:
        return tl.minimum(tl.maximum(_tl.rne(v), -128.0), 127.0)
    else:
        c = _tl.fp_code(v, 3, -6, 7, 448.0, 8)
        return c.to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)


@triton.jit
def _split_k_sum(y, mask, ws_ptr, cnt_ptr, offs_m, offs_n, M, N, pid_n, pid_k, SPLIT,
                 BM: tl.constexpr, BN: tl.constexpr):
    """Split-K: each of SPLIT programs of an N-tile stores its (BM, BN) fp32 partial in the workspace; the last to
    bump the tile's counter sums them and resets the counter for the next call. Returns (sum, is this program the
    one that writes the output)."""
    if SPLIT > 1:
        wsp = ws_ptr + offs_m[:, None] * N + offs_n[None, :]
        tl.store(wsp + pid_k * M * N, y, mask=mask)
        tl.debug_barrier()  # every thread's partial is stored before the counter is bumped
        tile = cnt_ptr + pid_n
        last = tl.atomic_add(tile, 1, sem="acq_rel") == SPLIT - 1
        if last:
            y = tl.zeros((BM, BN), tl.float32)
            for p in range(0, SPLIT):
                y += tl.load(wsp + p * M * N, mask=mask, other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(tile, 0)  # zero again for the next call
    else:
        last = pid_k == 0
    return y, last


@triton.jit
def _gemv_kernel(x_ptr, sx_ptr, w_ptr, sw_ptr, z_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, SPLIT,
                 stride_xm, stride_wn, stride_sn, stride_zn, stride_om,
                 A_KIND: tl.constexpr, AQ: tl.constexpr, AQ_MAX: tl.constexpr, STATIC: tl.constexpr,
                 W_KIND: tl.constexpr, GROUP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                 BK8: tl.constexpr, HAS_SX: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr):
    """y[m, n] = sum_k x[m, k] w[n, k] over one program's BN rows and its share of K (split-K: SPLIT programs
    per row block; the last one to finish, found by an atomic counter, reduces the partials and runs the
    epilogue, then resets the counter, so no memset and no host sync).

    w_ptr is the packed weight viewed as int32 words (8 nibbles, element 8j + t at bits 4t..4t+3). Products
    are accumulated element-wise in a (BM, BN, BK8) float32 tile (one scale multiply per word, one reduction at
    the end), so the loop is loads, shifts and FMAs: the cost is the weight bytes.
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rn = (offs_n % N).to(tl.int64)  # wrapped rows keep loads in bounds; they are not stored
    offs_m = tl.arange(0, BM)
    rm = (offs_m % M).to(tl.int64)
    K8 = K // 8
    steps = tl.cdiv(K8, BK8)
    per = tl.cdiv(steps, SPLIT)
    s_lo = pid_k * per
    s_hi = tl.minimum(s_lo + per, steps)
    j = tl.arange(0, BK8)
    x_rows = x_ptr + rm[:, None] * stride_xm  # (BM, 1)
    if AQ != 0:  # per-token scale of the float activations, computed by every program (x is a few KB)
        if STATIC:
            sq = tl.zeros((BM,), tl.float32) + tl.load(sx_ptr).to(tl.float32)
        else:
            amax = tl.zeros((BM, 8 * BK8), tl.float32)
            for k0 in range(0, K, 8 * BK8):
                kk = k0 + tl.arange(0, 8 * BK8)
                xa = tl.load(x_rows + kk[None, :], mask=kk[None, :] < K, other=0.0).to(tl.float32)
                amax = tl.maximum(amax, tl.abs(xa))
            sq = tl.math.div_rn(tl.max(amax, 1), AQ_MAX)
            sq = tl.where(sq > 1e-12, sq, 1.0)  # an all-zero token: scale 1, as act_quant
    w_rows = w_ptr + rn[:, None] * stride_wn  # (BN, 1) int32 words
    acc = tl.zeros((BM, BN, BK8), tl.float32)
    for s in range(s_lo, s_hi):
        c8 = s * BK8 + j  # word columns
        g = (c8 * 8) // GROUP
        if EVEN_K:
            wv = tl.load(w_rows + c8[None, :])
            sc = tl.load(sw_ptr + rn[:, None] * stride_sn + g[None, :]).to(tl.float32)
        else:
            wv = tl.load(w_rows + c8[None, :], mask=c8[None, :] < K8, other=0)
            sc = tl.load(sw_ptr + rn[:, None] * stride_sn + g[None, :], mask=c8[None, :] < K8,
                         other=0.0).to(tl.float32)
        if W_KIND == 5:
            if EVEN_K:
                zz = tl.load(z_ptr + rn[:, None] * stride_zn + g[None, :])
            else:
                zz = tl.load(z_ptr + rn[:, None] * stride_zn + g[None, :], mask=c8[None, :] < K8, other=0)
            off = zz.to(tl.float32) + 8388608.0
        elif W_KIND == 3:
            off = 8388616.0
        else:
            off = 8388608.0
        part = tl.zeros((BM, BN, BK8), tl.float32)
        for t in tl.static_range(8):
            v = _nib_val((wv >> (4 * t)) & 0xF, off, W_KIND)  # (BN, BK8)
            kx = c8 * 8 + t
            if EVEN_K:
                xt = tl.load(x_rows + kx[None, :])
            else:
                xt = tl.load(x_rows + kx[None, :], mask=kx[None, :] < K, other=0.0)
            if A_KIND == 2:
                xt = xt.to(tl.float8e4nv, bitcast=True)
            xt = xt.to(tl.float32)
            if AQ != 0:
                xt = _aq_values(tl.math.div_rn(xt, sq[:, None]), AQ)
            part += xt[:, None, :] * v[None, :, :]
        acc += part * sc[None, :, :]
    y = tl.sum(acc, axis=2)  # (BM, BN)
    if W_KIND == 4:
        y = y * 16384.0  # _nib_val returns fp4 values times 2^-14
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    y, last = _split_k_sum(y, mask, ws_ptr, cnt_ptr, offs_m, offs_n, M, N, pid_n, pid_k, SPLIT, BM, BN)
    if last:
        if HAS_SX:
            y = y * tl.load(sx_ptr + rm)[:, None]
        if AQ != 0:
            y = y * sq[:, None]
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        tl.store(out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :],
                 y.to(out_ptr.dtype.element_ty), mask=mask)


def gemv_config(n: int, k: int) -> tuple[int, int, int, int, int]:
    """(BN, BK8, num_warps, num_stages, split), from the H100 sweep at M = 1 (benchmarks/tune_gemv.py, 192
    configs per shape): 8 rows x 128 words (1024 weights) per step, 4 warps, no split won at every N >= 3072;
    a narrow layer (768 x 3072) needs split-K to fill the SMs: 2 rows x 512 words, split 4 (4.0 vs 7.4 us bf16)."""
    return (2, 512, 4, 1, 4) if n <= 1024 else (8, 128, 4, 2, 1)


AQ_KINDS = {INT8: 127.0, FP8: 448.0}


def gemv_w4(x: torch.Tensor, x_scale: torch.Tensor | None, a_kind: int, w: torch.Tensor, w_scale: torch.Tensor,
            zero: torch.Tensor | None, bias: torch.Tensor | None, w_kind: int, group: int, n: int, k: int,
            out_dtype: torch.dtype, config: tuple[int, int, int, int, int] | None = None,
            out: torch.Tensor | None = None, counters: torch.Tensor | None = None, quantize: int = 0,
            static_scale: torch.Tensor | None = None) -> torch.Tensor:
    """y = (x [* x_scale per row]) @ dequant(W).T + bias for M <= GEMV_MAX_M (16), on CUDA cores.

    Args:
        x: (M, K) float activations (a_kind A16), int8 codes (INT8) or fp8 e4m3 bit patterns as uint8 (FP8).
        x_scale: (M,) float32 per-token scales of coded activations, None for A16.
        w: (N, K/2) packed codes; w_scale: (N, K/group) group scales (bf16 as stored); zero: (N, K/group) uint8.
        config: (BN, BK8, num_warps, num_stages, split) override (tuning scripts).
        out: optional preallocated (M, N) output.
        counters: int32 zeros, >= cdiv(N, BN) entries, needed to split K (left at zero after every call).
        quantize: INT8 or FP8 to quantize float x per token inside the kernel (W4A8 decode: bit-identical to the
            act_quant kernel's codes, without its launch); static_scale: a calibrated per-tensor scale instead.
    """
    m = x.shape[0]
    if m > GEMV_MAX_M:
        raise ValueError(f"gemv_w4 handles M <= {GEMV_MAX_M}, got {m}")
    if k % group or group % 8:
        raise ValueError(f"gemv_w4: group {group} must be a multiple of 8 and divide K={k}")
    if w.shape != (n, k // 2) or w.dtype != torch.uint8 or w.stride(1) != 1 or w.stride(0) % 4:
        raise ValueError(f"gemv_w4: expected packed uint8 weights ({n}, {k // 2}) with 4-byte aligned rows, got "
                         f"{tuple(w.shape)} {w.dtype} strides {w.stride()}")
    if quantize and (a_kind != A16 or quantize not in AQ_KINDS):
        raise ValueError("gemv_w4: in-kernel quantization takes float activations and int8/fp8 codes")
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    if m == 0:
        return out
    bn, bk8, warps, stages, split = config or gemv_config(n, k)
    bk8 = min(bk8, triton.next_power_of_2(k // 8))
    steps = triton.cdiv(k // 8, bk8)
    split = max(1, min(split, steps))
    if counters is None or counters.numel() < triton.cdiv(n, bn):
        split = 1
    bm = triton.next_power_of_2(m)
    if x.stride(1) != 1:
        x = x.contiguous()
    ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else out
    sx = static_scale if static_scale is not None else x_scale
    dummy = w_scale
    _gemv_kernel[(triton.cdiv(n, bn), split)](
        x, sx if sx is not None else dummy, w.view(torch.int32), w_scale, zero if zero is not None else dummy,
        bias if bias is not None else dummy, out, ws, counters if counters is not None else dummy, m, n, k, split,
        x.stride(0), w.stride(0) // 4, w_scale.stride(0), zero.stride(0) if zero is not None else 0, out.stride(0),
        A_KIND=a_kind, AQ=quantize, AQ_MAX=AQ_KINDS.get(quantize, 1.0), STATIC=static_scale is not None,
        W_KIND=w_kind, GROUP=group, BM=bm, BN=bn, BK8=bk8, HAS_SX=x_scale is not None,
        HAS_BIAS=bias is not None, EVEN_K=(k // 8) % bk8 == 0, num_warps=warps, num_stages=stages)
    return out


# --- M = 1 on a GPU-side permuted copy of the weights ---------------------------------------------------------
# In the stored layout a word holds 8 consecutive weights, so the kernel above reads the 8 matching activations
# with 8 strided scalar loads per word. `permute_w4` re-packs each block of 8 groups of a row (8 * G weights) so
# that word j of the block holds weight t * G + j of the block in nibble t: for a fixed t the G words of a step
# need the G *consecutive* activations of group t (one vector load shared by all rows) and one scale per row.


def permute_w4(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, group: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(N, K/2) packed codes -> the permuted layout, K padded to a multiple of 8 * group with code 0 and scale 0
    (padding contributes exactly 0). Returns (packed (N, Kp/2) uint8, scales (N, Kp/group), zeros or None)."""
    from lowbit.formats.pack import pack_nibbles, unpack_nibbles

    n, k = codes.shape[0], codes.shape[1] * 2
    kp = -(-k // (8 * group)) * 8 * group
    nib = unpack_nibbles(codes, signed=False)  # (N, K) 0..15
    nib = torch.nn.functional.pad(nib, (0, kp - k))
    nib = nib.reshape(n, kp // (8 * group), 8, group).transpose(2, 3).reshape(n, kp)  # word j, nibble t
    g = k // group
    sp = torch.zeros((n, kp // group), dtype=scale.dtype, device=scale.device)
    sp[:, :g] = scale
    zp = None
    if zero is not None:
        zp = torch.zeros((n, kp // group), dtype=zero.dtype, device=zero.device)
        zp[:, :g] = zero
    return pack_nibbles(nib).contiguous(), sp, zp


@triton.jit
def _gemv_perm_kernel(x_ptr, sx_ptr, w_ptr, sw_ptr, z_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr, N, K, KP, SPLIT,
                      stride_wn, stride_sn, stride_zn,
                      AQ: tl.constexpr, AQ_MAX: tl.constexpr, STATIC: tl.constexpr, W_KIND: tl.constexpr,
                      G: tl.constexpr, BN: tl.constexpr, HAS_BIAS: tl.constexpr, XBLK: tl.constexpr):
    """One token: y[n] = sum_k x[k] w[n, k] on the permuted layout (see permute_w4); split-K as _gemv_kernel."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rn = (offs_n % N).to(tl.int64)
    steps = KP // (8 * G)
    per = tl.cdiv(steps, SPLIT)
    s_lo = pid_k * per
    s_hi = tl.minimum(s_lo + per, steps)
    j = tl.arange(0, G)
    if AQ != 0:
        if STATIC:
            sq = tl.load(sx_ptr).to(tl.float32)
        else:
            sq = _tl.token_scale(x_ptr, x_ptr, K, AQ_MAX, False, XBLK)
    w_rows = w_ptr + rn[:, None] * stride_wn
    acc = tl.zeros((BN, G), tl.float32)
    for s in range(s_lo, s_hi):
        wv = tl.load(w_rows + (s * G + j)[None, :])  # (BN, G) int32 words; the copy is padded: no mask
        for t in tl.static_range(8):
            grp = s * 8 + t
            st = tl.load(sw_ptr + rn * stride_sn + grp).to(tl.float32)  # (BN,)
            if W_KIND == 5:
                off = tl.load(z_ptr + rn * stride_zn + grp).to(tl.float32)[:, None] + 8388608.0
            elif W_KIND == 3:
                off = 8388616.0
            else:
                off = 8388608.0
            v = _nib_val((wv >> (4 * t)) & 0xF, off, W_KIND)
            kx = grp * G + j
            xt = tl.load(x_ptr + kx, mask=kx < K, other=0.0).to(tl.float32)  # (G,) one vector load
            if AQ != 0:
                xt = _aq_values(tl.math.div_rn(xt, sq), AQ)
            acc += (v * xt[None, :]) * st[:, None]
    y = tl.sum(acc, axis=1)  # (BN,)
    if W_KIND == 4:
        y = y * 16384.0
    mask = offs_n < N
    if SPLIT > 1:
        tl.store(ws_ptr + pid_k * N + offs_n, y, mask=mask)
        tl.debug_barrier()
        tile = cnt_ptr + pid_n
        last = tl.atomic_add(tile, 1, sem="acq_rel") == SPLIT - 1
        if last:
            y = tl.zeros((BN,), tl.float32)
            for p in range(0, SPLIT):
                y += tl.load(ws_ptr + p * N + offs_n, mask=mask, other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(tile, 0)
    else:
        last = pid_k == 0
    if last:
        if AQ != 0:
            y = y * sq
        if HAS_BIAS:
            y = y + tl.load(bias_ptr + rn).to(tl.float32)
        tl.store(out_ptr + offs_n, y.to(out_ptr.dtype.element_ty), mask=mask)


PERM_MIN_N = 1536  # below, the stored-layout GEMV with split-K won (768x3072: 4.0 vs 4.3 us)


def perm_config(n: int, k: int) -> tuple[int, int, int, int]:
    """(BN, num_warps, num_stages, split) of the permuted-layout GEMV, from the H100 sweep
    (benchmarks/tune_gemv_perm.py, 72 configs per shape): 8 warps, no split; more rows per program for wide layers."""
    if k < 1024:
        return (4, 2, 2, 1)
    return (32, 8, 2, 1) if n >= 8192 else (16, 8, 2, 1)


def gemv_w4_perm(x: torch.Tensor, wp: torch.Tensor, sp: torch.Tensor, zp: torch.Tensor | None,
                 bias: torch.Tensor | None, w_kind: int, group: int, n: int, k: int, out_dtype: torch.dtype,
                 counters: torch.Tensor | None = None, quantize: int = 0, static_scale: torch.Tensor | None = None,
                 config: tuple[int, int, int, int] | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """y (1, N) for one token x (1, K) float, on weights from `permute_w4` (quantize / static_scale as gemv_w4)."""
    if x.shape[0] != 1:
        raise ValueError(f"gemv_w4_perm handles one token, got {x.shape[0]}")
    kp = wp.shape[1] * 2
    if kp % (8 * group) or kp < k or wp.shape[0] != n or sp.shape != (n, kp // group):
        raise ValueError(f"gemv_w4_perm: weights {tuple(wp.shape)} / scales {tuple(sp.shape)} are not a permuted "
                         f"copy for N={n}, K={k}, group={group} (use permute_w4)")
    if quantize and quantize not in AQ_KINDS:
        raise ValueError("gemv_w4_perm: in-kernel quantization takes int8 or fp8 codes")
    if out is None:
        out = torch.empty((1, n), dtype=out_dtype, device=x.device)
    bn, warps, stages, split = config or perm_config(n, k)
    split = max(1, min(split, kp // (8 * group)))
    if counters is None or counters.numel() < triton.cdiv(n, bn):
        split = 1
    x = x.contiguous()
    ws = torch.empty((split, n), dtype=torch.float32, device=x.device) if split > 1 else out
    dummy = sp
    _gemv_perm_kernel[(triton.cdiv(n, bn), split)](
        x, static_scale if static_scale is not None else dummy, wp.view(torch.int32), sp,
        zp if zp is not None else dummy, bias if bias is not None else dummy, out, ws,
        counters if counters is not None else dummy, n, k, kp, split, wp.stride(0) // 4, sp.stride(0),
        zp.stride(0) if zp is not None else 0, AQ=quantize, AQ_MAX=AQ_KINDS.get(quantize, 1.0),
        STATIC=static_scale is not None, W_KIND=w_kind, G=group, BN=bn, HAS_BIAS=bias is not None,
        XBLK=min(triton.next_power_of_2(k), 2048), num_warps=warps, num_stages=stages)
    return out


# --- 2 <= M <= PERM_MMA_MAX_M on the same permuted copy, on tensor cores ---------------------------------------
# Nibble t of a (BN, BJ) word tile is a (BN, BJ) slice of group t of the block: one conversion per weight, shared
# by all BM token rows through tl.dot (mma), the group scale applied to the (BM, BN) partial product after the dot.

# H100 (tune_perm_mma.py --quick, second run): at M = 32 the default config above 16 tokens (64, 64, 4, 2, split)
# ran 1.22x / 1.39x / 1.40x bf16 for W4A16 at 4096², 11008x4096, 4096x11008 (qgemm: 0.55-0.61x) and W4A8-INT
# 0.95-1.25x (qgemm 0.53-0.57x); at M = 64 both paths lose to bf16 (0.55x), so dispatch stops at 32
PERM_MMA_MAX_M = 32
PERM_MMA_TUNED_MAX_M = 16  # PERM_MMA_TUNED holds configs measured at 2..16 tokens


def use_perm_mma(m: int, n: int = 0, k: int = 0, weight_only: bool = True) -> bool:
    """Tokens for which dispatch runs the small-M tensor-core kernel on the permuted copy (where one exists): above
    the GEMV's, and the GEMV's own where use_gemv gives them to it (PERM_MMA_M1_MIN_WEIGHTS)."""
    return GEMV_TOKENS < m <= PERM_MMA_MAX_M or (1 <= m <= GEMV_TOKENS
                                                 and not use_gemv(m, n, k, weight_only, permuted=True))


def _nib8_asm(magic: int, one: int, zero: bool) -> str:
    """PTX for _nib8: a pair of words ($8, $9) -> for t = 0..7 one bf16x2 / f16x2 register $t holding nibble t of
    each word as the 16-bit float (q [^ 8]) | magic of _nib_mma; for uint4 (zero) already minus 2^7 (2^10) + the
    zero point of group t, which comes in negated per element as $10 + 2t, $11 + 2t (an fma by 1). int4 leaves
    the constant subtraction to the caller (LLVM emits one HADD2 with an immediate per two weights).

    One prmt pairs the low (high) halves of the two words, so a nibble position costs a shift and one lop3 per
    two weights: ~1.5 SASS instructions per weight with the subtraction against ~2.8 for LLVM's code from the
    same Triton ops, which shifts each word separately (sm_90 main loop, benchmarks/tune_perm_mma.py --regs).
    Each output element depends on its own word and zero point only, as the elementwise contract of
    tl.inline_asm_elementwise asks, whichever elements Triton pairs."""
    lines = ["prmt.b32 l, $8, $9, 0x5410;", "prmt.b32 h, $8, $9, 0x7632;", "mov.b32 m, 0x000f000f;"]
    if zero:
        lines.append(f"mov.b32 o, {one:#010x};")
    fma = "fma.rn.f16x2" if one == 0x3C003C00 else "fma.rn.bf16x2"
    for t in range(8):
        src, sh = ("l" if t < 4 else "h"), 4 * (t % 4)
        lines.append(f"shr.b32 s, {src}, {sh};" if sh else f"mov.b32 s, {src};")
        if zero:
            lines.append(f"and.b32 s, s, m; xor.b32 s, s, {magic:#010x};")
            lines.append(f"prmt.b32 z, ${10 + 2 * t}, ${11 + 2 * t}, 0x5410; {fma} ${t}, s, o, z;")
        else:
            lines.append(f"and.b32 s, s, m; xor.b32 ${t}, s, {magic:#010x};")
    return "{ .reg .b32 l, h, s, m, o, z; " + " ".join(lines) + " }"


# int4: (q ^ 8) | 2^7 (2^10) bits, 136 (1032) subtracted by the caller; uint4: q | the same bits minus 128 + z
ASM_I4_BF16 = tl.constexpr(_nib8_asm(0x43084308, 0x3F803F80, False))
ASM_U4_BF16 = tl.constexpr(_nib8_asm(0x43004300, 0x3F803F80, True))
ASM_I4_F16 = tl.constexpr(_nib8_asm(0x64086408, 0x3C003C00, False))
ASM_U4_F16 = tl.constexpr(_nib8_asm(0x64006400, 0x3C003C00, True))
ASM_OUT = tl.constexpr("=r,=r,=r,=r,=r,=r,=r,=r,r,r")


def _fp4_fp8_asm() -> str:
    """PTX for W4A8-FP: four words ($8..$11) -> for t = 0..7 a register $t of four e4m3 bytes, byte j holding
    nibble t of word j as _nib_mma's fp8 code (magnitude bits at 2..4, sign at 7: the value * 2^-6, exact through
    e4m3's subnormals). Eight prmt transpose the words' bytes (R_i = byte i of each word); the low nibble of R_i
    then costs two shifts and two masks for four weights, the high one a shift and two masks. sm_90 main loop
    (--regs, triton 3.9, BN 32 x BJ 128, 4 warps): 122 warp-instructions per 1k weights and 101 registers, against
    223 and 128 for LLVM's code from the same Triton ops (_nib_mma, still the interpreter's path)."""
    lines = ["prmt.b32 p, $8, $9, 0x5140;", "prmt.b32 q, $10, $11, 0x5140;", "prmt.b32 r0, p, q, 0x5410;",
             "prmt.b32 r1, p, q, 0x7632;", "prmt.b32 p, $8, $9, 0x7362;", "prmt.b32 q, $10, $11, 0x7362;",
             "prmt.b32 r2, p, q, 0x5410;", "prmt.b32 r3, p, q, 0x7632;"]
    for i in range(4):
        lines.append(f"shl.b32 p, r{i}, 2; and.b32 p, p, 0x1c1c1c1c; shl.b32 q, r{i}, 4; and.b32 q, q, 0x80808080; "
                     f"or.b32 ${2 * i}, p, q;")
        lines.append(f"shr.b32 p, r{i}, 2; and.b32 p, p, 0x1c1c1c1c; and.b32 q, r{i}, 0x80808080; "
                     f"or.b32 ${2 * i + 1}, p, q;")
    return "{ .reg .b32 p, q, r0, r1, r2, r3; " + " ".join(lines) + " }"


ASM_FP4_FP8 = tl.constexpr(_fp4_fp8_asm())
ASM_OUT4 = tl.constexpr("=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r")


@triton.jit
def _zneg(zb, t: tl.constexpr, NEG: tl.constexpr):
    """(BN, 1) int32: the 16-bit float -(2^7 or 2^10 + zero point of group t), in the low half."""
    return (tl.load(zb + t).to(tl.int32) | NEG)[:, None]


@triton.jit
def _nib8(wv, z_ptr, stride_zn, rn, blk, W_KIND: tl.constexpr, DT: tl.constexpr):
    """The 8 nibbles of the int32 words wv (BN, BJ) of block blk as MMA values in DT (tuple of 8 tensors), as
    _nib_mma computes them (int4: before its constant subtraction; fp4: fp8 codes, W4A8-FP only); uint4 loads
    the block's 8 zero points (one (BN,) vector per group)."""
    NEG: tl.constexpr = 0xE400 if DT == tl.float16 else 0xC300  # sign and exponent bits of -(2^10 or 2^7)
    if W_KIND == 5:
        zb = z_ptr + rn * stride_zn + blk * 8  # (BN,) the block's 8 zero points
        zs = [wv, _zneg(zb, 0, NEG), _zneg(zb, 1, NEG), _zneg(zb, 2, NEG), _zneg(zb, 3, NEG), _zneg(zb, 4, NEG),
              _zneg(zb, 5, NEG), _zneg(zb, 6, NEG), _zneg(zb, 7, NEG)]
        c: tl.constexpr = ASM_OUT + ",r,r,r,r,r,r,r,r,r,r,r,r,r,r,r,r"
        if DT == tl.float16:
            w8 = tl.inline_asm_elementwise(ASM_U4_F16, c, zs, (tl.float16,) * 8, is_pure=True, pack=2)
        else:
            w8 = tl.inline_asm_elementwise(ASM_U4_BF16, c, zs, (tl.bfloat16,) * 8, is_pure=True, pack=2)
    elif W_KIND == 4:
        w8 = tl.inline_asm_elementwise(ASM_FP4_FP8, ASM_OUT4, [wv], (tl.float8e4nv,) * 8, is_pure=True, pack=4)
    elif DT == tl.float16:
        w8 = tl.inline_asm_elementwise(ASM_I4_F16, ASM_OUT, [wv], (tl.float16,) * 8, is_pure=True, pack=2)
    else:
        w8 = tl.inline_asm_elementwise(ASM_I4_BF16, ASM_OUT, [wv], (tl.bfloat16,) * 8, is_pure=True, pack=2)
    return w8


@triton.jit
def _nib_mma(wv, t: tl.constexpr, zt, A_KIND: tl.constexpr, W_KIND: tl.constexpr, DT: tl.constexpr):
    """Nibble t of int32 words wv (BN, BJ) as MMA operand codes in DT, exact, 2-4 integer ops per weight.

    16-bit floats: (q [^ 8]) | 0x4300 (bf16) or | 0x6400 (fp16) read as a float is 2^7 (2^10) + q' with unit
    spacing, so one 16-bit subtraction of that plus 8 (int4) or plus the zero point zt (uint4, the same bits
    built from z) leaves the code. fp4: _nib_val's fp16 bits (value * 2^-14), or for fp8 activations the 3
    magnitude bits at bit 2 of an e4m3 code (value * 2^-6, e4m3's subnormals give e2m1's m / 2); the caller
    multiplies the result by 2^14 or 2^6. int8 (W4A8-INT): the signed nibble by two shifts, uint4 minus zt.
    On the GPU _nib8's PTX replaces this for 16-bit floats with int4 / uint4 and for fp8 with fp4."""
    if A_KIND == 1:
        if W_KIND == 3:
            v = ((wv << (28 - 4 * t)) >> 28).to(tl.int8)
        else:
            v = (((wv >> (4 * t)) & 0xF) - zt).to(tl.int8)
    elif W_KIND == 4:
        q = (wv >> (4 * t)) & 0xF
        if A_KIND == 2:
            v = (((q & 7) << 2) | ((q & 8) << 4)).to(tl.uint8).to(tl.float8e4nv, bitcast=True)
        else:
            v = (((q & 7) << 9) | ((q & 8) << 12)).to(tl.int16).to(tl.float16, bitcast=True)
            if DT != tl.float16:
                v = v.to(tl.float32).to(DT)
    else:
        MAGIC: tl.constexpr = 0x6400 if DT == tl.float16 else 0x4300
        q = (wv >> (4 * t)) & 0xF
        if W_KIND == 3:
            q = q ^ 8
        v = (q | MAGIC).to(tl.int16).to(DT, bitcast=True) - zt
    return v


@triton.jit
def _perm_mma_kernel(x_ptr, sx_ptr, w_ptr, sw_ptr, z_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, KP, SPLIT,
                     stride_xm, stride_wn, stride_sn, stride_zn, stride_om,
                     A_KIND: tl.constexpr, W_KIND: tl.constexpr, G: tl.constexpr, BJ: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, HAS_SX: tl.constexpr, HAS_BIAS: tl.constexpr,
                     ASM: tl.constexpr):
    """y (M, N) = x @ W.T on the permuted layout: a step reads a (BN, BJ) word tile (BJ of the G words of a block)
    and, for each nibble t, runs tl.dot(x[:, group t columns] (BM, BJ), w_t^T (BJ, BN)); split-K as _gemv_kernel.
    x: float activations (A16), or int8 / fp8 codes with per-token scales sx (W4A8, HAS_SX)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rn = (offs_n % N).to(tl.int64)  # wrapped rows keep loads in bounds; they are not stored
    offs_m = tl.arange(0, BM)
    HS: tl.constexpr = G // BJ  # steps per block of 8 groups
    steps = (KP // (8 * G)) * HS
    per = tl.cdiv(steps, SPLIT)
    s_lo = pid_k * per
    s_hi = tl.minimum(s_lo + per, steps)
    j = tl.arange(0, BJ)
    if A_KIND == 0:
        DT: tl.constexpr = x_ptr.dtype.element_ty
    elif A_KIND == 1:
        DT: tl.constexpr = tl.int8
    else:
        DT: tl.constexpr = tl.float8e4nv
    # PTX decoders: int4 / uint4 into 16-bit floats, fp4 into fp8 (fp4 into 16-bit floats: plain Triton ops)
    USE_ASM: tl.constexpr = ASM and ((A_KIND == 0 and W_KIND != 4) or (A_KIND == 2 and W_KIND == 4))
    MAGIC: tl.constexpr = 0x6400 if DT == tl.float16 else 0x4300
    OFF3: tl.constexpr = 1032.0 if DT == tl.float16 else 136.0  # the magic value of int4 code 0 (q ^ 8 = 8)
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm  # (BM, 1)
    m_ok = offs_m[:, None] < M  # padded token rows load nothing
    w_rows = w_ptr + rn[:, None] * stride_wn  # (BN, 1)
    acc = tl.zeros((BM, BN), tl.float32)
    for s in range(s_lo, s_hi):
        blk = s // HS
        c0 = (s % HS) * BJ
        wv = tl.load(w_rows + (blk * G + c0 + j)[None, :])  # (BN, BJ) int32; the copy is padded: no mask
        if USE_ASM:
            w8 = _nib8(wv, z_ptr, stride_zn, rn, blk, W_KIND, DT)
        for t in tl.static_range(8):
            grp = blk * 8 + t
            kx = grp * G + c0 + j
            xt = tl.load(x_rows + kx[None, :], mask=m_ok & (kx[None, :] < K), other=0.0)  # (BM, BJ)
            if A_KIND == 2:
                xt = xt.to(tl.float8e4nv, bitcast=True)
            if USE_ASM and W_KIND == 5:
                zt = 0
            elif W_KIND == 5:
                z = tl.load(z_ptr + rn * stride_zn + grp).to(tl.int32)[:, None]  # (BN, 1)
                zt = z if A_KIND == 1 else (z | MAGIC).to(tl.int16).to(DT, bitcast=True)
            elif W_KIND == 3 and A_KIND == 0:
                zt = tl.full((1, 1), OFF3, tl.float32).to(DT)
            else:
                zt = 0
            if USE_ASM and W_KIND == 3:
                wt = w8[t] - zt  # int4: the decoder leaves the constant subtraction to here
            elif USE_ASM:
                wt = w8[t]
            else:
                wt = _nib_mma(wv, t, zt, A_KIND, W_KIND, DT)  # (BN, BJ)
            if A_KIND == 1:
                part = tl.dot(xt, tl.trans(wt), out_dtype=tl.int32).to(tl.float32)
            else:
                part = tl.dot(xt, tl.trans(wt))
            acc += part * tl.load(sw_ptr + rn * stride_sn + grp).to(tl.float32)[None, :]
    if W_KIND == 4:
        acc = acc * (64.0 if A_KIND == 2 else 16384.0)  # the fp4 codes above are value * 2^-6 / 2^-14
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    acc, last = _split_k_sum(acc, mask, ws_ptr, cnt_ptr, offs_m, offs_n, M, N, pid_n, pid_k, SPLIT, BM, BN)
    if last:
        if HAS_SX:
            acc = acc * tl.load(sx_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
        if HAS_BIAS:
            acc = acc + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        tl.store(out_ptr + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=mask)


# H100 (benchmarks/tune_perm_mma.py --quick, triton 3.6, W4A16 int4 g128): the best config per (N, K) at
# 2 <= M <= 16. 4096 x 4096: 9.6-9.7 us at M = 2..8, 10.0 us at M = 16 (1.60-1.70x bf16 cuBLAS) against
# 10.2-10.4 us for the pre-measurement default (32, 64, 4, 2, 1). 11008 x 4096 (second run): 16.2-16.4 us at
# M = 2..16 (2.14-2.19x) against 19.5-19.8 for the default; W4A8-INT there 20.5 us (1.69-1.72x) against 24.3-24.9.
# 4096 x 11008: the default (32, 64, 4, 2, 4) was as fast as the best (18.3-18.6 us, 1.96-1.97x).
PERM_MMA_TUNED = {(4096, 4096): (32, 128, 4, 2, 1), (11008, 4096): (32, 128, 4, 2, 1)}


def perm_mma_config(m: int, n: int, k: int, group: int = 128, sms: int = 132) -> tuple[int, int, int, int, int]:
    """(BN, BJ, num_warps, num_stages, split) of the small-M tensor-core kernel on the permuted copy.

    BN: weight rows (output features) per program; BJ: words of each row per K step (BJ <= group; a step covers
    BN x BJ x 8 weights, one nibble position per group of the block of 8); num_warps, num_stages: Triton's launch
    options (stages = software-pipelined load depth); split: programs sharing K (split-K, the last one reduces).

    Measured shapes (PERM_MMA_TUNED) up to PERM_MMA_MAX_M tokens; elsewhere, until timed, the pre-measurement
    heuristic from the sm_90 SASS (--regs): a 32 x 64-word step on 4 warps (96 registers, 124 warp-instructions
    per 1k int4 weights in the main loop), for N >= 8192 32 x 128 words on 4 warps (the 11008 x 4096 pick);
    K split until about 2 programs per SM with at least 2 steps each. Above 16 tokens (a 32 or 64-row x tile per
    stage) 64 x 64 words on 4 warps, 2 stages: 152 KB of shared memory at BM = 64 for sm_90, within the H100's 227 KB
    ((32, 128, 4, 2) needs 280 KB there and failed to launch on the device)."""
    if m <= PERM_MMA_TUNED_MAX_M and (n, k) in PERM_MMA_TUNED and PERM_MMA_TUNED[n, k][1] <= group:
        return PERM_MMA_TUNED[n, k]
    if m > PERM_MMA_TUNED_MAX_M:
        bn, bj, warps = 64, 64, 4
    else:  # N >= 8192: 11008 x 4096's measured pick at 1, 2 and 16 tokens ((64, 128, 8) ran 19.5-20.3 µs there at
        # M = 1 against 16.7), for the wide layers not timed yet
        bn, bj, warps = (32, 128, 4) if n >= 8192 else (32, 64, 4)
    bj = min(bj, group)
    steps = -(-k // (8 * group)) * (group // bj)
    tiles = -(-n // bn)
    split = 1
    while tiles * split < 2 * sms and steps >= 4 * split and split < 8:
        split *= 2
    return (bn, bj, warps, 2, split)


def mma_w4_perm(x: torch.Tensor, x_scale: torch.Tensor | None, a_kind: int, wp: torch.Tensor, sp: torch.Tensor,
                zp: torch.Tensor | None, bias: torch.Tensor | None, w_kind: int, group: int, n: int, k: int,
                out_dtype: torch.dtype, counters: torch.Tensor | None = None,
                config: tuple[int, int, int, int, int] | None = None, out: torch.Tensor | None = None
                ) -> torch.Tensor:
    """y (M, N) = (x [* x_scale per row]) @ dequant(W).T + bias for M <= 64 on weights from `permute_w4`.

    Args:
        x: (M, K) bf16 / fp16 activations (a_kind A16), or int8 codes (INT8) / fp8 e4m3 bits as uint8 (FP8)
            from act_quant, with their (M,) float32 scales x_scale.
        wp, sp, zp: the permuted copy (permute_w4); w_kind INT4 / UINT4 / FP4 (fp4 with A16 or FP8, int4 with
            A16 or INT8).
        counters: int32 zeros, >= cdiv(N, BN) entries, needed to split K (left at zero after every call).
        config: (BN, BJ, num_warps, num_stages, split) override (tuning scripts); out: preallocated (M, N).
    """
    m = x.shape[0]
    kp = wp.shape[1] * 2
    if not 1 <= m <= 64:
        raise ValueError(f"mma_w4_perm handles 1 <= M <= 64 tokens, got {m}")
    if kp % (8 * group) or kp < k or wp.shape[0] != n or sp.shape != (n, kp // group) or x.shape[1] != k:
        raise ValueError(f"mma_w4_perm: weights {tuple(wp.shape)} / scales {tuple(sp.shape)} / x {tuple(x.shape)} "
                         f"are not a permuted copy for N={n}, K={k}, group={group} (use permute_w4)")
    if (a_kind, w_kind) not in ((A16, INT4), (A16, UINT4), (A16, FP4), (INT8, INT4), (INT8, UINT4), (FP8, FP4)):
        raise ValueError(f"mma_w4_perm: no MMA for activation kind {a_kind} with weight kind {w_kind}")
    if (x_scale is None) != (a_kind == A16):
        raise ValueError("mma_w4_perm: coded activations need their per-token scales, float ones none")
    if a_kind == A16 and x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"mma_w4_perm: float activations must be float16 or bfloat16 (the MMA dtype), got {x.dtype}")
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    bn, bj, warps, stages, split = config or perm_mma_config(m, n, k, group)
    split = max(1, min(split, (kp // (8 * group)) * (group // bj)))
    if counters is None or counters.numel() < triton.cdiv(n, bn):
        split = 1
    if x.stride(1) != 1:
        x = x.contiguous()
    if x.is_cuda and a_kind == FP8 and x.dtype == torch.uint8:
        x = x.view(torch.float8_e4m3fn)  # typed fp8 pointers, as qgemm
    ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if split > 1 else out
    dummy = sp
    _perm_mma_kernel[(triton.cdiv(n, bn), split)](
        x, x_scale if x_scale is not None else dummy, wp.view(torch.int32), sp, zp if zp is not None else dummy,
        bias if bias is not None else dummy, out, ws, counters if counters is not None else dummy, m, n, k, kp,
        split, x.stride(0), wp.stride(0) // 4, sp.stride(0), zp.stride(0) if zp is not None else 0, out.stride(0),
        A_KIND=a_kind, W_KIND=w_kind, G=group, BJ=bj, BM=max(16, triton.next_power_of_2(m)), BN=bn,
        HAS_SX=x_scale is not None, HAS_BIAS=bias is not None, ASM=x.is_cuda, num_warps=warps, num_stages=stages)
    return out


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

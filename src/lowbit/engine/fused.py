"""Fused Triton kernels of the encoder engine, each beside its plain-torch twin (`*_ref`).

| kernel        | reads                                   | writes                                      | replaces (HF + QuantLinear)          |
|---------------|-----------------------------------------|---------------------------------------------|--------------------------------------|
| `ln_quant`    | h (M, H) in the model dtype             | LayerNorm(h) (M, H) and its codes + scales  | LayerNorm, then act_quant of the next GEMM's input |
| `gemm`        | activation codes + scales, weight codes | y = dequant(acc) + bias [GELU] [+ residual] | qgemm, then GELU / residual add      |

Codes are one per byte: 4-bit activation codes are held as the 8-bit codes of the same values (act_quant.HELD:
int4 -> int8 -8..7, fp4 -> fp8 e4m3), so `gemm` runs the 8-bit A path of qgemm's tile code. Packed codes read as
int8 cost a nibble interleave per tile in the K loop (BERT-base 128 x 128 on H100: W4A4 GEMMs 14.0 ms vs W4A8's
7.9 ms, BENCHMARKS.md); the bytes saved are activations', small next to the weights at these sizes.

Per-token dynamic scales need the amax of a whole row, and a GEMM tile sees BN of the N columns, so GELU ->
quantize cannot finish inside the FC1 epilogue without a grid-wide reduction: FC1's epilogue applies bias + GELU
and `act_quant` (kernels/act_quant.py) quantizes the (M, 4H) result in one more pass. LayerNorm does see whole
rows, so it quantizes its own output (the "LayerNorm -> quantize" producer of PAPERS.md §1).

The GEMM main loop step is `qgemm.mma_step` (shared with the layer kernels); this file adds
the epilogue. Rounding follows the un-fused model step by step: the GEMM result is rounded to the model dtype
(QuantLinear's output), GELU runs on that rounded value, the residual add is rounded again (HF's fp16 add), and
LayerNorm output is rounded before it is quantized, so fused == un-fused up to float32 summation order.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from lowbit.kernels import _tl, reference
from lowbit.kernels.act_quant import FORMATS, HELD, _codes, codes_dtype, store_codes
from lowbit.kernels.qgemm import Config, choose_config, mma_step


# --- LayerNorm -> quantize --------------------------------------------------------------------------------------
@triton.jit
def _ln_quant_kernel(x_ptr, w_ptr, b_ptr, y_ptr, q_ptr, s_ptr, static_ptr, H, eps, stride_xm, stride_ym, stride_qm,
                     QUANT: tl.constexpr, KIND: tl.constexpr, MAXABS: tl.constexpr, STATIC: tl.constexpr,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    inb = offs < H
    x = tl.load(x_ptr + row * stride_xm + offs, mask=inb, other=0.0).to(tl.float32)
    mean = tl.sum(x, 0) / H
    d = tl.where(inb, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, 0) / H + eps)
    y = d * rstd * tl.load(w_ptr + offs, mask=inb, other=0.0).to(tl.float32) \
        + tl.load(b_ptr + offs, mask=inb, other=0.0).to(tl.float32)
    y = y.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + row * stride_ym + offs, y, mask=inb)
    if QUANT:
        v = y.to(tl.float32)  # the rounded LayerNorm output is what the un-fused QuantLinear quantizes
        if STATIC:
            s = tl.load(static_ptr).to(tl.float32)
        else:
            s = tl.math.div_rn(tl.max(tl.abs(v), 0), MAXABS)
            s = tl.where(s > 1e-12, s, 1.0)  # an all-zero token: scale 1 (as act_quant)
        tl.store(s_ptr + row, s)
        store_codes(q_ptr + row * stride_qm, 0, _codes(tl.math.div_rn(v, s), KIND), H, KIND, False, BLOCK)


def ln_quant(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, fmt: str | None,
             static_scale: torch.Tensor | None = None, out: tuple | None = None):
    """LayerNorm over the last dim of x (M, H), and (fmt given) per-token codes of the result.

    Returns:
        (y, codes, scales): y (M, H) in x's dtype; codes (M, H) / scales (M,) as `act_quant.quantize_act` with
        packed=False (4-bit codes held one per byte), or None, None.
    """
    m, h = x.shape
    y, q, s = out if out is not None else (torch.empty_like(x), None, None)
    if fmt is not None and q is None:
        q = torch.empty((m, h), dtype=codes_dtype(fmt, packed=False), device=x.device)
        s = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m == 0:
        return y, q, s
    kind, _, maxabs = FORMATS[fmt] if fmt is not None else (0, 8, 1.0)
    block = triton.next_power_of_2(h)
    _ln_quant_kernel[(m,)](x, weight, bias, y, q if q is not None else y, s if s is not None else y,
                           static_scale if static_scale is not None else y, h, eps, x.stride(0), y.stride(0),
                           q.stride(0) if q is not None else 0, QUANT=fmt is not None, KIND=kind, MAXABS=maxabs,
                           STATIC=static_scale is not None, BLOCK=block,
                           num_warps=4 if block >= 1024 else 2)
    return y, q, s


def ln_quant_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, fmt: str | None,
                 static_scale: torch.Tensor | None = None):
    """Twin of `ln_quant`: torch LayerNorm, then `reference.quantize_act` (held 4-bit codes) of the rounded output."""
    y = torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    if fmt is None:
        return y, None, None
    q, s = reference.quantize_act(y, fmt, None, static_scale, packed=False)
    return y, q, s


# --- GEMM with the dequant + bias [+ GELU] [+ residual] epilogue -------------------------------------------------
@dataclass
class Weights:
    """One projection as the GEMM launcher needs it (several QuantLinears of one input may be concatenated).

    w, sw, aux, w_kind, mode, group: as `qgemm.qgemm` (after `dispatch.prepare`); w8 / w8_kind: the packed 4-bit
    weight unpacked once to 8-bit codes for M >= UNPACK_M (what qgemm would redo on every call), None otherwise.
    """

    a_fmt: str
    a_kind: int
    w: torch.Tensor
    sw: torch.Tensor
    aux: torch.Tensor | None
    w_kind: int
    mode: int
    group: int
    n: int
    k: int
    bias: torch.Tensor | None
    w8: torch.Tensor | None = None
    w8_kind: int | None = None


@triton.jit
def _gemm_kernel(a_ptr, sa_ptr, w_ptr, sw_ptr, aux_ptr, bias_ptr, res_ptr, out_ptr, M, N, K, stride_am, stride_wn,
                 stride_sn, stride_auxn, stride_om, A_KIND: tl.constexpr, W_KIND: tl.constexpr, MODE: tl.constexpr,
                 GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr, HAS_RES: tl.constexpr,
                 EVEN_K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                 GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BM)
    num_pid_n = tl.cdiv(N, BN)
    width = GROUP_M * num_pid_n
    first_m = (pid // width) * GROUP_M
    gsize = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % gsize
    pid_n = (pid % width) // gsize
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rm = (offs_m % M).to(tl.int64)
    rn = (offs_n % N).to(tl.int64)
    IS_INT: tl.constexpr = A_KIND == 1 or A_KIND == 3
    if IS_INT:
        MMA_DT: tl.constexpr = tl.int8
    else:
        MMA_DT: tl.constexpr = tl.float8e4nv
    if MODE == 1 or not IS_INT:
        acc = tl.zeros((BM, BN), tl.float32)
    else:
        acc = tl.zeros((BM, BN), tl.int32)
    for ks in range(0, tl.cdiv(K, BK)):
        acc = mma_step(acc, a_ptr, w_ptr, aux_ptr, sw_ptr, rm, rn, ks * BK, K, stride_am, stride_wn, stride_auxn,
                       stride_sn, A_KIND, W_KIND, MODE, GROUP, MMA_DT, IS_INT, BM, BN, BK, EVEN_K)
    y = acc.to(tl.float32) * tl.load(sa_ptr + rm)[:, None]
    if MODE != 1:
        y = y * tl.load(sw_ptr + rn)[None, :]
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + rn).to(tl.float32)[None, :]
    ODT: tl.constexpr = out_ptr.dtype.element_ty
    y = y.to(ODT).to(tl.float32)  # QuantLinear's output dtype
    if GELU:  # erf GELU, as HF's "gelu" (computed in float32 on the rounded input)
        y = (0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))).to(ODT).to(tl.float32)
    ptr_off = offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if HAS_RES:
        y = y + tl.load(res_ptr + ptr_off, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + ptr_off, y.to(ODT), mask=mask)


def gemm(a: torch.Tensor, sa: torch.Tensor, wt: Weights, out_dtype: torch.dtype, gelu: bool = False,
         residual: torch.Tensor | None = None, out: torch.Tensor | None = None,
         config: Config | None = None) -> torch.Tensor:
    """y = dequant(a codes) @ dequant(W).T + bias, then GELU and/or + residual, in out_dtype (M, N).

    a: (M, K) codes; 4-bit codes held one per byte (the engine's producers, act_quant.HELD), which run the 8-bit
    GEMM, or packed (M, K/2) as QuantLinear's act_quant writes them (same result, nibbles unpacked per tile).
    """
    from lowbit.kernels.qgemm import UNPACK_M

    m = a.shape[0]
    a_kind = _a_kind(a, wt)
    w, w_kind, aux = wt.w, wt.w_kind, wt.aux
    if wt.w8 is not None and m >= UNPACK_M:
        w, w_kind, aux = wt.w8, wt.w8_kind, None
    if a.is_cuda and a_kind == _tl.FP8 and a.dtype == torch.uint8:
        a = a.view(torch.float8_e4m3fn)
    if w.is_cuda and w_kind == _tl.FP8 and w.dtype == torch.uint8:
        w = w.view(torch.float8_e4m3fn)
    if out is None:
        out = torch.empty((m, wt.n), dtype=out_dtype, device=a.device)
    if residual is not None and (residual.shape != out.shape or residual.stride() != out.stride()):
        raise ValueError(f"gemm: residual {tuple(residual.shape)} must match the output {tuple(out.shape)}")
    if m == 0:
        return out
    cfg = config or choose_config(m, wt.n, wt.k, a_kind, w_kind, wt.mode, wt.group)
    grid = (triton.cdiv(m, cfg.bm) * triton.cdiv(wt.n, cfg.bn),)
    _gemm_kernel[grid](a, sa, w, wt.sw, aux if aux is not None else wt.sw,
                       wt.bias if wt.bias is not None else wt.sw, residual if residual is not None else out, out,
                       m, wt.n, wt.k, a.stride(0), w.stride(0), wt.sw.stride(0),
                       aux.stride(0) if aux is not None else 0, out.stride(0), A_KIND=a_kind, W_KIND=w_kind,
                       MODE=wt.mode, GROUP=wt.group, HAS_BIAS=wt.bias is not None, GELU=gelu,
                       HAS_RES=residual is not None, EVEN_K=wt.k % cfg.bk == 0, BM=cfg.bm, BN=cfg.bn, BK=cfg.bk,
                       GROUP_M=cfg.group_m, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out


def _a_kind(a: torch.Tensor, wt: Weights) -> int:
    """The kernel's A_KIND for codes a: held 4-bit codes (K bytes a row) are 8-bit codes; packed ones K/2 bytes."""
    if wt.a_kind not in (_tl.INT4, _tl.FP4) or a.shape[1] == wt.k // 2 != wt.k:
        return wt.a_kind
    if a.shape[1] == wt.k:
        return _tl.INT8 if wt.a_kind == _tl.INT4 else _tl.FP8
    raise ValueError(f"gemm: {wt.a_fmt} codes of width {a.shape[1]}; expected {wt.k} (one per byte) or "
                     f"{wt.k // 2} (packed) for K={wt.k}")


def gemm_ref(a: torch.Tensor, sa: torch.Tensor, a_fmt: str, qweight, bias: torch.Tensor | None,
             out_dtype: torch.dtype, gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """Twin of `gemm` in the un-fused order: reference qgemm (float32, cast), GELU, residual add in out_dtype.
    a: codes as `gemm` takes them (4-bit held one per byte or packed, told apart by the width as there)."""
    if a.shape[1] == qweight.shape[1]:
        a_fmt = HELD.get(a_fmt, a_fmt)
    y = reference.qgemm(a, sa, a_fmt, qweight, bias, out_dtype)
    if gelu:
        y = torch.nn.functional.gelu(y)
    if residual is not None:
        y = y + residual
    return y

"""INT8 x INT8 -> INT32 GEMMs of the integer-only graph (issue 7).

* :func:`linear_rq` — the linears with their requantization in the GEMM epilogue (a Triton ``tl.dot`` int8 kernel):
  ``clamp(round_half_up(((x @ wᵀ + lin_bias) * b + bias) / 2^c))`` per output channel, optionally plus the
  residual term (O / FC2), exactly :func:`lowbit.kernels.intonly.requant` applied to the product, so the INT32
  product never goes to memory. Why: at BERT-base batch 32 x 128 on the H100 the integer forward took 6.16 ms (FP16
  eager 4.8), of which 1.34 ms were the ``_int_mm`` linears writing INT32 and 1.45 ms the standalone requant /
  residual-add passes reading it back (4 bytes written and read per output instead of 1-2 written); at 32 x 384
  ``_int_mm`` alone (3.65 ms) was slower than FP16 cuBLAS (3.3 ms).
* :func:`int_linear` — a linear's INT32 product, through ``torch._int_mm`` (cuBLASLt int8 tensor cores), where the
  graph needs it (calibration-free paths: the ViT patch embedding and classifier head, and fallbacks). cuBLASLt
  wants M > 16 and K, N multiples of 8, so short or odd operands are zero-padded (zero rows / columns add nothing
  to an integer dot product, so the result is exact).
* :func:`bmm` — the attention GEMMs (Q·Kᵀ and P·V over batch x heads), a Triton ``tl.dot`` int8 kernel that
  reads the strided head views in place. Grid (M tiles, heads, batch), N looped inside: no index division.

All are exact: int8 products summed in int32 cannot overflow for K < 2^17.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

try:  # host-side tensor descriptors (TMA; recent Triton releases): without them the linears use pointer loads
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

from lowbit.intonly.dyadic import Dyadic, bits_for, qrange
from lowbit.kernels._tl import sm_count
from lowbit.intonly import ops
from lowbit.kernels.intonly import (_floordiv, _gelu_value, _hi_word_rq, _normalize_rows, _ratio_i32, _requant,
                                    _row_reciprocal, _rows, _rq_value, _shift_exp, _shift_exp_i32, _weights_i32,
                                    channel_dyadic, deferred_i32, gelu_consts, gelu_i32, hi_word_modes, out_dtype,
                                    shiftmax_i32)


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
    if h > 1 and b.stride(-1) == 1 and b.stride(1) == n and b.stride(2) >= h * n:
        # b is a head view (B, H, K, N) of (B, K, H, N) memory, or of (B, K, 3, H, N) (P·V's values, from separate
        # or fused Q/K/V linears): write the product as (B, M, H, N), so the graph's transpose(1, 2).reshape(B, M,
        # H*N) that follows is a view, not a strided copy
        c = torch.empty((bb, m, h, n), dtype=torch.int32, device=a.device).transpose(1, 2)
    else:
        c = torch.empty((bb, h, m, n), dtype=torch.int32, device=a.device)
    grid = (triton.cdiv(m, block_m), h, bb)
    _bmm_kernel[grid](a, b, c, m, n, k, *a.stride(), *b.stride(), *c.stride(), block_m, block_n, block_k)
    return c


# --- linears with the requantization in the epilogue -------------------------------------------------------------
@triton.jit
def _linear_rq_tile(pid_m, rn, x_ptr, w_ptr, lin_bias_ptr, b_ptr, c_ptr, bias_ptr, z2_ptr, b2_ptr, c2_ptr, b3_ptr,
                    c3_ptr, out_ptr, M, N, K, stride_x, stride_w, stride_z2, stride_out, LO: tl.constexpr,
                    HI: tl.constexpr, LO1: tl.constexpr, HI1: tl.constexpr, HAS_BIAS: tl.constexpr,
                    HAS_LIN_BIAS: tl.constexpr, TWO: tl.constexpr, HI_WORD: tl.constexpr, HI_WORD2: tl.constexpr,
                    GELU: tl.constexpr, G_LO: tl.constexpr, G_HI: tl.constexpr, X0: tl.constexpr, N_EXP: tl.constexpr,
                    EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr, E0: tl.constexpr, G_BITS: tl.constexpr,
                    DIV_ABITS: tl.constexpr, G_I32: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr,
                    G_RQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    TMA: tl.constexpr):
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    # rows / columns past M / N load the last one (no mask in the K loop but the K tail's); the store drops them
    if not TMA:
        x_ptrs = x_ptr + tl.minimum(rm, M - 1).to(tl.int64)[:, None] * stride_x + rk[None, :]  # (BLOCK_M, BLOCK_K)
        w_ptrs = w_ptr + tl.minimum(rn, N - 1).to(tl.int64)[None, :] * stride_w + rk[:, None]  # (BLOCK_K, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
    if TMA:  # x_ptr / w_ptr are tensor descriptors (the copy engine; it fills rows / K past the end with zeros)
        for k0 in range(0, K, BLOCK_K):
            a = x_ptr.load([pid_m * BLOCK_M, k0])
            b = w_ptr.load([tl.program_id(1) * BLOCK_N, k0])
            acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)
    else:
        for k0 in range(0, K, BLOCK_K):
            a = tl.load(x_ptrs, mask=rk[None, :] < K - k0, other=0)
            b = tl.load(w_ptrs, mask=rk[:, None] < K - k0, other=0)
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
    # the epilogue of lowbit.kernels.intonly._rq_kernel, on the accumulator instead of an INT32 tensor; with GELU
    # (FC1) then that of _shift_gelu_kernel (ShiftGELU and FC2's input requantization, (b3, c3)) on those codes, so
    # neither FC1's 16-bit output nor a GELU pass touches memory
    rows, cols = rm.to(tl.int64)[:, None], rn[None, :]
    cok = cols < N
    ok = (rows < M) & cok
    v = _rq_value(acc, rows, cols, ok, cok, lin_bias_ptr, b_ptr, c_ptr, bias_ptr, z2_ptr, b2_ptr, c2_ptr, stride_z2,
                  LO, HI, LO1, HI1, HAS_BIAS, HAS_LIN_BIAS, TWO, HI_WORD, HI_WORD2)
    if GELU:
        v = _gelu_value(v, cols, cok, b3_ptr, c3_ptr, G_LO, G_HI, X0, N_EXP, EXP_ABITS, EXP_QBITS, E0, G_BITS,
                        DIV_ABITS, G_I32, DIV_M, DIV_SH, G_RQ)
    tl.store(out_ptr + rows * stride_out + cols, v.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _linear_rq_kernel(x_ptr, w_ptr, lin_bias_ptr, b_ptr, c_ptr, bias_ptr, z2_ptr, b2_ptr, c2_ptr, b3_ptr, c3_ptr,
                      out_ptr, M, N, K, NUM_M, stride_x, stride_w, stride_z2, stride_out, LO: tl.constexpr,
                      HI: tl.constexpr, LO1: tl.constexpr, HI1: tl.constexpr, HAS_BIAS: tl.constexpr,
                      HAS_LIN_BIAS: tl.constexpr, TWO: tl.constexpr, HI_WORD: tl.constexpr, HI_WORD2: tl.constexpr,
                      GELU: tl.constexpr, G_LO: tl.constexpr, G_HI: tl.constexpr, X0: tl.constexpr,
                      N_EXP: tl.constexpr, EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr, E0: tl.constexpr,
                      G_BITS: tl.constexpr, DIV_ABITS: tl.constexpr, G_I32: tl.constexpr, DIV_M: tl.constexpr,
                      DIV_SH: tl.constexpr, G_RQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, PERSIST: tl.constexpr, WS: tl.constexpr, TMA: tl.constexpr):
    # grid (M tiles, N tiles), M fastest: a wave shares few weight tiles. No grouped (swizzled) order: it needs an
    # index division (the kernels have none, test_kernels), and BERT-base's operands at 32 x 128 (x 3-12 MB,
    # w <= 2.4 MB) fit the H100's 50 MB L2 anyway.
    # PERSIST: a grid of (G < NUM_M, N tiles) programs, each walking the M tiles pid, pid + G, ... of its column in
    # one flattened loop, so that the software pipeline loads the next tile's operands under this tile's epilogue
    # (the K loop is only 6 steps at K = 768); again no index division. WS: that loop warp-specialised.
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    if PERSIST:
        for pid_m in tl.range(tl.program_id(0), NUM_M, tl.num_programs(0), flatten=True, warp_specialize=WS):
            _linear_rq_tile(pid_m, rn, x_ptr, w_ptr, lin_bias_ptr, b_ptr, c_ptr, bias_ptr, z2_ptr, b2_ptr, c2_ptr,
                            b3_ptr, c3_ptr, out_ptr, M, N, K, stride_x, stride_w, stride_z2, stride_out, LO, HI, LO1,
                            HI1, HAS_BIAS, HAS_LIN_BIAS, TWO, HI_WORD, HI_WORD2, GELU, G_LO, G_HI, X0, N_EXP,
                            EXP_ABITS, EXP_QBITS, E0, G_BITS, DIV_ABITS, G_I32, DIV_M, DIV_SH, G_RQ, BLOCK_M,
                            BLOCK_N, BLOCK_K, TMA)
    else:
        _linear_rq_tile(tl.program_id(0), rn, x_ptr, w_ptr, lin_bias_ptr, b_ptr, c_ptr, bias_ptr, z2_ptr, b2_ptr,
                        c2_ptr, b3_ptr, c3_ptr, out_ptr, M, N, K, stride_x, stride_w, stride_z2, stride_out, LO, HI,
                        LO1, HI1, HAS_BIAS, HAS_LIN_BIAS, TWO, HI_WORD, HI_WORD2, GELU, G_LO, G_HI, X0, N_EXP,
                        EXP_ABITS, EXP_QBITS, E0, G_BITS, DIV_ABITS, G_I32, DIV_M, DIV_SH, G_RQ, BLOCK_M, BLOCK_N,
                        BLOCK_K, TMA)


# Launch tiles of linear_rq: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) by family (see _family); benchmarks/
# intonly_gpu.py --sweep picks among its GEMM_SWEEP options on the device. For sm_90 (benchmarks/gemm_regs.py):
# 128x128x128 / 8 warps 176 registers (int8 out) and 125 (16-bit out), wgmma (IGMMA); 128x64x128 / 4 warps 194 with
# the residual term (128x128x128 with it spills 40 B); 32x64x128 58-86 (mma.sync).
# attention (the fused kernel below): (BLOCK_M queries, BLOCK_N keys, warps, stages); sm_90 at head
# dim 64 with the mask: 64x64 / 4 warps 168 registers (int32 Shiftmax) and 216 (int64), no spills, wgmma; 64x128
# spills 1.8 KB on the int64 path, 128x128 / 8 warps spills on both.
# attention.one: (VALUES, warps) of the one-pass kernel, used where BLOCK_M = min(64, VALUES // T_PAD) >= 16 (T_PAD
# = keys rounded up to a power of two): it holds BLOCK_M x T_PAD scores, VALUES / (32 warps) a thread whatever T;
# 0 = always the three sweeps. sm_90, head dim 64,
# int32 Shiftmax, SASS a thread executes per score (benchmarks/gemm_regs.py --sweep --only attention): three sweeps
# 64x32 121 at T_PAD 128 / 108 at 512 (128 registers); one pass (4096, 4) 32x128 87 (86 registers), (8192, 4) 64x128
# 73 (230) and 16x512 81 (174), (8192, 8) 16x512 88 (122); no spills. On the int64 path (8192, 4) spills 0.6-1 KB.
# linear.gelu: FC1 with the GELU in its epilogue (beyond linear.small's rows). Its int32 sigmoid per value needs
# registers: sm_90, 16-bit codes -> GELU -> int8 (benchmarks/gemm_regs.py): 64x128x128 / 4 warps 255 registers and
# 64 B spilled, 128x64x128 / 8 warps 148, 64x64x128 / 4 warps 146, 64x32x128 64, no spills. The H100 still prefers
# 64x128 (sweep at 3fbf9a2, BERT-base 32 x 128 forward: 2.83 ms against 3.16 for 64x32 and 3.62 for 64x64).
# attention: 64 x 64 since the sweep at 32 x 384 (code of 289c49e, the host-known multiplier sign and int8 key mask:
# `intonly_gpu.py --sweep-at 32x384:attention`): BERT-base forward 7.576 ms against 7.754 for 64 x 32 and 7.585-9.03
# for the others (sm_90: 128 registers, 41.8 SASS a score at T_PAD 512). The sweep at 3fbf9a2 (32 x 128, where the
# one-pass kernel runs) had differed by noise only.
# attention.one.long: the same for T_PAD >= 512 (BERT's 384 tokens), swept apart (intonly_gpu.py --sweep-at).
# linear.gelu.large: FC1 + GELU at M >= LARGE_M rows; (0, ...) there or in linear.gelu: the GELU apart (FC1 writes
# its 16-bit codes, the ShiftGELU kernel reads them).
# linear.large (M >= LARGE_M rows, e.g. BERT-base 32 x 384) has its own entry so that a sweep at such a size picks
# its tile apart from the 32 x 128 picks (benchmarks/intonly_gpu.py --sweep-large).
# Defaults = the H100 sweep's picks (benchmarks/intonly_gpu.py --sweep --sweep-large 32x384, 2026-11-23, code of
# 788bfb4, the 32-bit requantization epilogue): BERT-base 32 x 128 forward 3.26 ms with 64 x 128 x 128 / 4 warps
# against 3.59-3.74 for 128-row tiles with 8 warps; narrow 128 x 64 x 128 / 3 stages 3.17 vs 3.30 (64 x 64); the
# one-pass attention (4096, 4) 3.02 vs 3.16 with the three sweeps (at 32 x 384, T_PAD 512, it leaves BLOCK_M 8 < 16:
# three sweeps there); linear.large at 32 x 384 11.84 ms with 64 x 128 x 128 / 4 warps, 12.3-13.8 otherwise.
TILES: dict[str, tuple[int, ...]] = {"linear": (64, 128, 128, 4, 4), "linear.narrow": (128, 64, 128, 4, 3),
                                     "linear.small": (16, 64, 128, 4, 3), "linear.large": (64, 128, 128, 4, 4),
                                     "linear.large.narrow": (64, 128, 128, 4, 4),
                                     "linear.gelu": (64, 128, 128, 4, 4), "linear.gelu.large": (64, 128, 128, 4, 4),
                                     "attention": (64, 64, 4, 3),
                                     "attention.one": (4096, 4), "attention.one.mid": (0, 4),
                                     "attention.one.long": (4096, 4)}
# attention.one.mid: the one-pass attention at T_PAD 256 (ViT-B's 197 tokens), off: with the deferred normalisation
# the two sweeps were faster there (benchmarks/intonly_gpu.py --models vit-b16 --sweep-vit attention.one, code
# d39f38f: ViT-B 32 x 197 forward 4.430 ms off, 4.440 at (2048, 4), 4.518-4.637 one-pass; attention 0.76 vs 0.88 ms)
# while BERT's 128 tokens keep it (32 x 128: 2.600-2.615 ms one-pass, 2.708 off).
LARGE_M = 8192
# Persistent launch by family: programs per SM (0 = one program per tile); see _linear_rq_kernel's PERSIST.
# Operand loads through tensor descriptors (Hopper's copy engine, TMA) by family, where K and the strides are
# multiples of 16 bytes; else pointer loads. Defaults = the H100 sweep's picks (benchmarks/intonly_gpu.py --sweep-at
# 32x128:launch:linear,launch:linear.narrow --sweep-at 32x384:launch:linear.large,launch:linear.large.narrow,
# launch:linear.gelu, 2026-11-23, code fd4c618): BERT-base forward 32 x 384 10.70 -> 10.40 ms with O / FC2 persistent
# (2 a SM) on descriptors, 10.40 -> 10.27 with FC1 + GELU on descriptors; at 32 x 128 Q/K/V on descriptors 2.83 ->
# 2.81 (noise level); the persistent launch of Q/K/V and of 32 x 128's narrow linears was slower (2.86-3.07 ms).
# Linears alone (benchmarks/int8_gemm_bert.py --persist tma,tma+2 at M = 12288, µs): Q/K/V 86.2 / 79.8 / 110.5,
# O 55.2 / 51.4 / 47.4, FC1 (no GELU) 112.4 / 103.3 / 93.6, FC2 107.7 / 105.8 / 85.8; pointer loads with the
# persistent launch were 1.3-2.4x slower everywhere (the flattened loop and its epilogue: 197-254 registers).
PERSIST: dict[str, int] = {"linear.large.narrow": 2}
WARP_SPECIALIZE = False  # warp-specialised persistent loop: no faster on Triton 3.6 / H100 (int8_gemm_bert.py)
TMA: dict[str, bool] = {"linear": True, "linear.large.narrow": True, "linear.gelu": True,
                        "linear.gelu.large": True}


def _family(m: int, n: int) -> str:
    """'linear.small': few rows (batch 1, a classifier head); 'linear.narrow': N <= 1024 (BERT-base's O / FC2 and
    Q / K / V apart), where 128 x 128 tiles leave most of a 132-SM H100 idle in the last wave; 'linear' otherwise."""
    if m <= 256:
        return "linear.small"
    if m >= LARGE_M:  # 'linear.large(.narrow)': many rows (BERT-base 32 x 384)
        return "linear.large.narrow" if n <= 1024 else "linear.large"
    return "linear.narrow" if n <= 1024 else "linear"


def linear_rq(x: torch.Tensor, w: torch.Tensor, lin_bias: torch.Tensor | None, m: Dyadic, bits: int,
              bias: torch.Tensor | None = None, term2: tuple[torch.Tensor, Dyadic] | None = None,
              gelu: tuple[object, Dyadic, int] | None = None) -> torch.Tensor | None:
    """``intonly.requant(x @ wᵀ, m, bits, bias, term2, lin_bias)`` as one GEMM whose epilogue requantizes: the INT32
    product never reaches memory.

    Args:
        x: (..., K) int8 codes (other integer dtypes are cast; values must be int8).
        w: (N, K) int8 weight codes.
        lin_bias: (N,) the linear's INT32 bias (|values| < 2^31), added to the product before the multiply, or None.
        m: the dyadic multiplier, per tensor or per output channel, with |b| < 2^31 (any mantissa of dyadic() up to
            31 bits; the kernel holds b as int32).
        bits: output code width (int8 out for bits <= 8, else int32).
        bias: (N,) added at shift precision, or None.
        term2: (z2 (..., N) integer codes, m2): the residual sum's second term (each term clamped to bits + 1,
            the sum to bits), or None; |b2| < 2^31 as for m.
        gelu: (op, m3, bits3): FC1 with the GELU fused, ``intonly.shift_gelu(<the codes above>, op, m3, bits3)``
            (ops.ShiftGELU op on its int32 path, gelu_i32), returned instead of the codes; None where it does not
            apply (the caller runs the GELU apart).

    Returns:
        (..., N) codes, or None when the operands are outside the kernel (multipliers not per tensor / per channel,
        z2 shaped unlike the output, K >= 2^17): the caller takes the unfused path.

    Raises:
        ValueError: x and w whose K differ.
    """
    n, k = w.shape
    lead = x.shape[:-1]
    if x.shape[-1] != k:
        raise ValueError(f"linear_rq: x (..., {x.shape[-1]}) and w {tuple(w.shape)} do not multiply")
    bc = channel_dyadic(m, n, x.device)
    bc2 = channel_dyadic(term2[1], n, x.device) if term2 is not None else bc
    if bc is None or bc2 is None or k >= 1 << 17 or (term2 is not None and term2[0].shape != (*lead, n)) \
            or any(t is not None and t.numel() != n for t in (bias, lin_bias)):
        return None
    g_consts, bc3 = (0,) * 13, bc
    if gelu is not None:
        op, m3, bits3 = gelu
        bc3 = channel_dyadic(m3, n, x.device)
        if bc3 is None or gelu_i32(op) is None:
            return None
        g_consts = gelu_consts(op, m3, bits3)
    x2 = _rows(x.to(torch.int8))
    w = w.to(torch.int8)
    w = w if w.stride(-1) == 1 else w.contiguous()
    z2 = _rows(term2[0]) if term2 is not None else x2
    rows = x2.shape[0]
    out = torch.empty((rows, n), dtype=out_dtype(bits if gelu is None else gelu[2]), device=x.device)
    if rows == 0:
        return out.reshape(*lead, n)
    bias_t, lin_t = (t.to(device=x.device, dtype=torch.int64).reshape(-1).contiguous() if t is not None else bc[0]
                     for t in (bias, lin_bias))
    lo, hi = qrange(bits)
    lo1, hi1 = qrange(bits + 1)
    family = ("linear.gelu.large" if rows >= LARGE_M else "linear.gelu") if gelu is not None and rows > 256 \
        else _family(rows, n)
    if TILES[family][0] == 0:  # (0, ...): no GELU in the epilogue at these sizes, the caller runs it apart
        return None
    bm, bn, bk, warps, stages = TILES[family]
    num_m, num_n = triton.cdiv(rows, bm), triton.cdiv(n, bn)
    per_sm = PERSIST.get(family, 0)  # (the interpreter's "device" counts as 2 SMs, so tests walk several tiles)
    g = min(num_m, -(-per_sm * (sm_count(x.device) if x.is_cuda else 2) // num_n)) if per_sm else num_m
    persist = g < num_m
    tma = TMA.get(family, False) and TensorDescriptor is not None and k % 16 == 0 and x2.stride(0) % 16 == 0 and w.stride(0) % 16 == 0 \
        and x2.data_ptr() % 16 == 0 and w.data_ptr() % 16 == 0  # the copy engine's alignment rules
    xa, wa = (TensorDescriptor.from_tensor(x2, [bm, bk]), TensorDescriptor.from_tensor(w, [bn, bk])) if tma else (x2, w)
    _linear_rq_kernel[(g, num_n)](xa, wa, lin_t, bc[0], bc[1], bias_t, z2, bc2[0], bc2[1], bc3[0], bc3[1], out, rows,
                                  n, k, num_m, x2.stride(0), w.stride(0), z2.stride(0), out.stride(0), lo, hi, lo1,
                                  hi1, bias is not None, lin_bias is not None, term2 is not None,
                                  *hi_word_modes(m, bias, term2), gelu is not None, *g_consts, bm, bn, bk, persist,
                                  persist and WARP_SPECIALIZE, tma, num_warps=warps, num_stages=stages)
    return out.reshape(*lead, n)


# --- attention: Q·Kᵀ, score requant, Shiftmax, P·V and the context requant in one kernel -------------------------
@triton.jit
def _score_block(q, k_ptr, mask_ptr, rn, rd, T, skt, HAS_MASK: tl.constexpr):
    """INT32 scores q·kᵀ of the key block rn (BLOCK_M, BLOCK_N) and which keys count (below T and kept by the mask);
    keys past T load as zero columns."""
    kt = tl.load(k_ptr + rn.to(tl.int64)[None, :] * skt + rd[:, None], mask=rn[None, :] < T, other=0)
    valid = rn[None, :] < T
    if HAS_MASK:
        valid = valid & (tl.load(mask_ptr + rn, mask=rn < T, other=0) > 0)[None, :]
    return tl.dot(q, kt, out_dtype=tl.int32), valid


@triton.jit
def _rq_scores(s, rq_b, rq_c, LO: tl.constexpr, HI: tl.constexpr, RQ: tl.constexpr):
    """INT32 scores requantized to score_bits and clamped (IntEncoder._rq): RQ = hi_word_modes of the multiplier
    (2: scores shifted left to a shift of 33 within their plan bound, then the 32-bit high-word rounding of
    intonly._hi_word_rq; 1: the shift is >= 33 already), 0: int64."""
    if RQ > 0:
        c = rq_c.to(tl.int32)
        if RQ == 2:
            s = s << tl.maximum(33 - c, 0)
        v = _hi_word_rq(s.to(tl.int64) * rq_b, tl.maximum(c, 33))
    else:
        v = _requant(s.to(tl.int64) * rq_b, rq_c)
    return tl.minimum(tl.maximum(v, LO), HI)


@triton.jit
def _exp_of(x, valid, mx, X0: tl.constexpr, N: tl.constexpr, EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr,
            I32: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr):
    """Requantized scores x minus the row maximum mx through the shift exponential (intonly._shiftmax_kernel's two
    paths); 0 for keys that do not count."""
    if I32:  # int32 (one return: the compiler wants a single return type)
        e = tl.where(valid, _shift_exp_i32(tl.minimum(x.to(tl.int32) - mx.to(tl.int32), 0), X0, N, DIV_M, DIV_SH), 0)
    else:  # int64
        e = tl.where(valid, _shift_exp(tl.where(valid, x.to(tl.int64) - mx, 0), X0, N, EXP_ABITS, EXP_QBITS), 0)
    return e


@triton.jit
def _exp_block(s, valid, mx, rq_b, rq_c, LO: tl.constexpr, HI: tl.constexpr, X0: tl.constexpr, N: tl.constexpr,
               EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr, I32: tl.constexpr, DIV_M: tl.constexpr,
               DIV_SH: tl.constexpr, RQ: tl.constexpr):
    """The exponentials of a block of INT32 scores s (_rq_scores, then _exp_of)."""
    return _exp_of(_rq_scores(s, rq_b, rq_c, LO, HI, RQ), valid, mx, X0, N, EXP_ABITS, EXP_QBITS, I32, DIV_M, DIV_SH)


@triton.jit
def _probs(e, total, r, OUT_BITS: tl.constexpr, DIV_ABITS: tl.constexpr, RS: tl.constexpr, I32: tl.constexpr):
    """int8 probabilities round(e 2^OUT_BITS / total) of a row's exponentials e (r: the row's reciprocal on the
    int32 path). Uncounted keys of a row with a counted one get 0 from the formula, a row without one 2^k - 1
    everywhere (as the reference); keys past T meet zero value rows."""
    if I32:
        p = _ratio_i32(e, total, r, OUT_BITS, RS)
    else:  # round(e 2^k / total)
        p = _floordiv((e << (OUT_BITS + 1)) + total, 2 * total, DIV_ABITS, OUT_BITS + 1)
    return tl.minimum(p, (1 << OUT_BITS) - 1).to(tl.int8)


@triton.jit
def _store_context(acc, b_ptr, c_ptr, out_ptr, z, h, rm, rd, T, sob, sot, HEAD_D: tl.constexpr):
    """The context acc (BLOCK_M, HEAD_D) requantized to the O linear's int8 input (channel h * HEAD_D + d), stored
    (B, T, H * HEAD_D)."""
    ch = h * HEAD_D + rd[None, :]
    v = _requant(acc.to(tl.int64) * tl.load(b_ptr + ch).to(tl.int32), tl.load(c_ptr + ch))
    v = tl.minimum(tl.maximum(v, -128), 127)
    tl.store(out_ptr + z * sob + rm.to(tl.int64)[:, None] * sot + ch, v.to(tl.int8), mask=rm[:, None] < T)


@triton.jit
def _deferred_weights(x, valid, mx, X0: tl.constexpr, K: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr,
                      DIV_WIDE: tl.constexpr, U_MUL: tl.constexpr, U_SH: tl.constexpr):
    """int32 weights (ops.IntSoftmax.weights) of a block of int32 requantized scores x against their rows' maxima mx;
    0 for keys that do not count."""
    return tl.where(valid, _weights_i32(tl.minimum(x - mx, 0), X0, K, DIV_M, DIV_SH, DIV_WIDE, U_MUL, U_SH), 0)


@triton.jit
def _deferred_sweep(q, k_ptr, v_ptr, mask_ptr, mx, rq_b, rq_c, b_ptr, c_ptr, out_ptr, z, h, rm, rd, T, skt, svt, sob,
                    sot, LO: tl.constexpr, HI: tl.constexpr, X0: tl.constexpr, K: tl.constexpr,
                    HAS_MASK: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr, DIV_WIDE: tl.constexpr,
                    U_MUL: tl.constexpr, U_SH: tl.constexpr, RQ: tl.constexpr, NORM_SH: tl.constexpr,
                    CTX_SH: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The deferred attention's one sweep over the keys after the row maximum: weights, their row total (int32: at
    most 127 T) and weights·V, then the context divided by the total (_normalize_rows), requantized and stored."""
    total = tl.zeros((q.shape[0],), tl.int32)
    acc = tl.zeros((q.shape[0], HEAD_D), tl.int32)
    for n0 in range(0, T, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        s, valid = _score_block(q, k_ptr, mask_ptr, rn, rd, T, skt, HAS_MASK)
        # on the 32-bit requant (RQ > 0, |x| < 2^29) no upper clamp: _deferred_weights takes min(x - mx, 0), and a
        # counted key above HI makes mx = HI, so a score above HI weighs as HI would (uncounted keys weigh 0)
        x = _rq_scores(s, rq_b, rq_c, LO, HI if RQ == 0 else 0x7FFFFFFF, RQ).to(tl.int32)
        u = _deferred_weights(x, valid, mx, X0, K, DIV_M, DIV_SH, DIV_WIDE, U_MUL, U_SH)
        total += tl.sum(u, 1)
        vb = tl.load(v_ptr + rn.to(tl.int64)[:, None] * svt + rd[None, :], mask=rn[:, None] < T, other=0)
        acc = tl.dot(u.to(tl.int8), vb, acc, out_dtype=tl.int32)
    _store_context(_normalize_rows(acc, total, K, NORM_SH, CTX_SH), b_ptr, c_ptr, out_ptr, z, h, rm,
                   rd, T, sob, sot, HEAD_D)


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, rq_ptr, b_ptr, c_ptr, out_ptr, T,
                      sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, stride_mask, sob, sot,
                      LO: tl.constexpr, HI: tl.constexpr, X0: tl.constexpr, N: tl.constexpr,
                      EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr, OUT_BITS: tl.constexpr,
                      DIV_ABITS: tl.constexpr, HAS_MASK: tl.constexpr, I32: tl.constexpr, DIV_M: tl.constexpr,
                      DIV_SH: tl.constexpr, RS: tl.constexpr, RBITS: tl.constexpr, SCORE_RQ: tl.constexpr,
                      DEFERRED: tl.constexpr, DIV_WIDE: tl.constexpr, U_MUL: tl.constexpr, U_SH: tl.constexpr,
                      NORM_SH: tl.constexpr, CTX_SH: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, NONNEG: tl.constexpr):
    # grid (query blocks, heads, batch): no index division. Three sweeps over the keys, each recomputing the score
    # block on the tensor cores (64 MACs per score at head dim 64, against ~30 integer ops per score for the
    # requant and exponential): 1) the row maximum and minimum of the raw INT32 scores (requant and clamp are
    # monotone in z: nondecreasing for b >= 0, nonincreasing for b < 0, so the maximum of the requantized scores is
    # the requantized raw maximum, or minimum when b < 0: no per-score requant in this sweep, and no host read of b),
    # 2) the exponentials' row total, 3) the probabilities and P·V. Scores and probabilities never reach memory.
    # DEFERRED (ops.IntSoftmax.deferred): one sweep after the first makes the weights relative to the row maximum,
    # their row total and their product with the values, and the context is divided by the total once at the end.
    h, z = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, HEAD_D)
    q = tl.load(q_ptr + z * sqb + h * sqh + rm.to(tl.int64)[:, None] * sqt + rd[None, :], mask=rm[:, None] < T,
                other=0)  # (BLOCK_M, HEAD_D) int8
    k_ptr += z * skb + h * skh
    v_ptr += z * svb + h * svh
    mask_ptr += z * stride_mask
    rq_b = tl.load(rq_ptr).to(tl.int32)  # |b| < 2^31 (dyadic()): 64 x 32-bit products
    rq_c = tl.load(rq_ptr + 1)
    rn0 = tl.arange(0, BLOCK_N)
    # 1) the row maximum over the counted keys (the INT32 minimum where none counts: then every exponential is 0)
    # (elementwise over the block, one reduction at the end; NONNEG: b >= 0 known on the host, no minimum)
    hi_run = tl.full((BLOCK_M, BLOCK_N), -0x7FFFFFFF - 1, tl.int32)
    lo_run = tl.full((BLOCK_M, BLOCK_N), 0x7FFFFFFF, tl.int32)
    for n0 in range(0, T, BLOCK_N):
        s, valid = _score_block(q, k_ptr, mask_ptr, n0 + rn0, rd, T, skt, HAS_MASK)
        hi_run = tl.maximum(hi_run, tl.where(valid, s, -0x7FFFFFFF - 1))
        if not NONNEG:
            lo_run = tl.minimum(lo_run, tl.where(valid, s, 0x7FFFFFFF))
    raw = tl.max(hi_run, 1)
    if not NONNEG:
        raw = tl.where(rq_b >= 0, raw, tl.min(lo_run, 1))
    mx = _rq_scores(raw, rq_b, rq_c, LO, HI, SCORE_RQ).to(tl.int64)[:, None]
    if DEFERRED:
        _deferred_sweep(q, k_ptr, v_ptr, mask_ptr, mx.to(tl.int32), rq_b, rq_c, b_ptr, c_ptr, out_ptr, z, h, rm, rd, T,
                        skt, svt, sob, sot, LO, HI, X0, OUT_BITS, HAS_MASK, DIV_M, DIV_SH, DIV_WIDE, U_MUL, U_SH,
                        SCORE_RQ, NORM_SH, CTX_SH, HEAD_D, BLOCK_N)
        return
    # 2) the row total (an exact integer sum: the order of the blocks does not matter)
    total = tl.zeros((BLOCK_M, 1), tl.int64)
    for n0 in range(0, T, BLOCK_N):
        s, valid = _score_block(q, k_ptr, mask_ptr, n0 + rn0, rd, T, skt, HAS_MASK)
        e = _exp_block(s, valid, mx, rq_b, rq_c, LO, HI, X0, N, EXP_ABITS, EXP_QBITS, I32, DIV_M, DIV_SH,
                       SCORE_RQ)
        total += tl.sum(e.to(tl.int64), 1)[:, None]
    r = total  # one reciprocal per row on the int32 path (intonly._ratio_i32); unused on the int64 one
    if I32:
        r = _row_reciprocal(total, RS, RBITS)
    # 3) probabilities (scale 2^-OUT_BITS) and their product with the values
    acc = tl.zeros((BLOCK_M, HEAD_D), tl.int32)
    for n0 in range(0, T, BLOCK_N):
        rn = n0 + rn0
        s, valid = _score_block(q, k_ptr, mask_ptr, rn, rd, T, skt, HAS_MASK)
        e = _exp_block(s, valid, mx, rq_b, rq_c, LO, HI, X0, N, EXP_ABITS, EXP_QBITS, I32, DIV_M, DIV_SH,
                       SCORE_RQ)
        p = _probs(e, total, r, OUT_BITS, DIV_ABITS, RS, I32)
        vb = tl.load(v_ptr + rn.to(tl.int64)[:, None] * svt + rd[None, :], mask=rn[:, None] < T, other=0)
        acc = tl.dot(p, vb, acc, out_dtype=tl.int32)
    _store_context(acc, b_ptr, c_ptr, out_ptr, z, h, rm, rd, T, sob, sot, HEAD_D)


@triton.jit
def _onepass_attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, rq_ptr, b_ptr, c_ptr, out_ptr, T,
                              sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, stride_mask, sob, sot,
                              LO: tl.constexpr, HI: tl.constexpr, X0: tl.constexpr, N: tl.constexpr,
                              EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr, OUT_BITS: tl.constexpr,
                              DIV_ABITS: tl.constexpr, HAS_MASK: tl.constexpr, I32: tl.constexpr,
                              DIV_M: tl.constexpr, DIV_SH: tl.constexpr, RS: tl.constexpr, RBITS: tl.constexpr,
                              SCORE_RQ: tl.constexpr, DEFERRED: tl.constexpr, DIV_WIDE: tl.constexpr,
                              U_MUL: tl.constexpr, U_SH: tl.constexpr, NORM_SH: tl.constexpr, CTX_SH: tl.constexpr,
                              HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, T_PAD: tl.constexpr):
    # _attention_kernel for rows whose T_PAD keys fit in registers: the scores of the query block against all keys
    # from one tl.dot, requantized and exponentiated once and held (int32 on the int32 path) for the total and the
    # probabilities, then one P·V. The three sweeps recompute q·kᵀ three times and the requant + exponential twice.
    # The row maximum is taken from the requantized scores (one reduction, no sign case for b).
    h, z = tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, HEAD_D)
    rn = tl.arange(0, T_PAD)
    q = tl.load(q_ptr + z * sqb + h * sqh + rm.to(tl.int64)[:, None] * sqt + rd[None, :], mask=rm[:, None] < T,
                other=0)  # (BLOCK_M, HEAD_D) int8
    rq_b = tl.load(rq_ptr).to(tl.int32)
    rq_c = tl.load(rq_ptr + 1)
    s, valid = _score_block(q, k_ptr + z * skb + h * skh, mask_ptr + z * stride_mask, rn, rd, T, skt,
                            HAS_MASK)  # (BLOCK_M, T_PAD) INT32
    vb = tl.load(v_ptr + z * svb + h * svh + rn.to(tl.int64)[:, None] * svt + rd[None, :], mask=rn[:, None] < T,
                 other=0)  # (T_PAD, HEAD_D) int8
    if DEFERRED:  # the scores requantized once, for the row maximum and the weights
        # (as _deferred_sweep, the upper clamp on the row maximum alone: the clamp is monotone)
        x = _rq_scores(s, rq_b, rq_c, LO, HI if SCORE_RQ == 0 else 0x7FFFFFFF, SCORE_RQ).to(tl.int32)
        mx = tl.minimum(tl.max(tl.where(valid, x, LO), 1), HI)[:, None]
        u = _deferred_weights(x, valid, mx, X0, OUT_BITS, DIV_M, DIV_SH, DIV_WIDE, U_MUL, U_SH)
        acc = tl.dot(u.to(tl.int8), vb, out_dtype=tl.int32)
        _store_context(_normalize_rows(acc, tl.sum(u, 1), OUT_BITS, NORM_SH, CTX_SH), b_ptr, c_ptr, out_ptr,
                       z, h, rm, rd, T, sob, sot, HEAD_D)
        return
    x = _rq_scores(s, rq_b, rq_c, LO, HI, SCORE_RQ)
    if I32:  # score_bits <= 30 (shiftmax_i32)
        x = x.to(tl.int32)
    mx = tl.max(tl.where(valid, x, LO), 1)[:, None]  # any value where no key counts: every exponential is 0 then
    e = _exp_of(x, valid, mx, X0, N, EXP_ABITS, EXP_QBITS, I32, DIV_M, DIV_SH)
    total = tl.sum(e.to(tl.int64), 1)[:, None]
    r = total  # the row's reciprocal on the int32 path, as in _attention_kernel
    if I32:
        r = _row_reciprocal(total, RS, RBITS)
    p = _probs(e, total, r, OUT_BITS, DIV_ABITS, RS, I32)
    acc = tl.dot(p, vb, out_dtype=tl.int32)
    _store_context(acc, b_ptr, c_ptr, out_ptr, z, h, rm, rd, T, sob, sot, HEAD_D)


def softmax_consts(op, score_bits: int, t_pad: int) -> dict | None:
    """The attention kernels' constexprs of the softmax ``op`` (an ops.IntSoftmax with a ShiftExp), by name: the
    shift exponential's, the int32 Shiftmax path's (shiftmax_i32; the int64 path where it is None) or the deferred
    weights' (intonly.deferred_i32) and ops.IntSoftmax.normalize's shifts. None: a deferred op without an int32
    kernel."""
    e = op.exp
    if op.deferred:
        dfr = deferred_i32(op, score_bits)
        if dfr is None:
            return None
        fast, deferred = (*dfr[:2], 0, 0), (True, *dfr[2:])
    else:
        fast, deferred = shiftmax_i32(op, score_bits, t_pad), (False, False, 1, 0)
    return dict(X0=e.x0, N=e.n, EXP_ABITS=bits_for(-e.n * e.x0), EXP_QBITS=bits_for(e.n), OUT_BITS=op.out_bits,
                DIV_ABITS=bits_for(e.bound()) + op.out_bits + 2, I32=fast is not None,
                **dict(zip(("DIV_M", "DIV_SH", "RS", "RBITS"), fast or (1, 0, 0, 0))),
                **dict(zip(("DEFERRED", "DIV_WIDE", "U_MUL", "U_SH"), deferred)),
                NORM_SH=ops.NORM_SHIFT, CTX_SH=ops.NORM_SHIFT - ops.CTX_BITS)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m_scores: Dyadic, op, score_bits: int,
              mask: torch.Tensor | None, m_ctx: Dyadic, bits: int) -> torch.Tensor | None:
    """``IntArith.attention`` as one kernel: scores q·kᵀ requantized by m_scores to score_bits, the Shiftmax ``op``
    (an ops.IntSoftmax with a ShiftExp) over the keys the mask keeps, probabilities times v, the context requantized
    by m_ctx (per tensor or per channel h * d + n) to int8. Scores and probabilities never reach memory.

    Args:
        q, k, v: (B, H, T, d) int8 codes, any strides with a unit last one (views of the fused QKV output).
        mask: None or (B, 1, 1, T) 0/1 keys.

    Returns:
        (B, T, H * d) int8 codes, or None outside the kernel (the caller composes the steps): d not a power of two
        in 32..128 (sm_90's int8 tl.dot wants K >= 32: d = 16 did not compile), bits != 8, prob bits > 7, a
        per-channel score multiplier, another mask shape, a deferred op without an int32 kernel
        (intonly.deferred_i32) or over 65536 keys. Nothing is read back from the device (the launch stays
        CUDA-graph capturable).
    """
    b, h, t, d = q.shape
    bc = channel_dyadic(m_ctx, h * d, q.device)
    if bc is None or bits != 8 or op.out_bits > 7 or d not in (32, 64, 128) or m_scores.b.numel() != 1 \
            or k.shape != q.shape or v.shape != q.shape \
            or any(x.dtype != torch.int8 or x.stride(-1) != 1 for x in (q, k, v)) \
            or (mask is not None and tuple(mask.shape) != (b, 1, 1, t)):
        return None
    rq = torch.stack([m_scores.b.reshape(()), m_scores.c.reshape(())]).to(device=q.device, dtype=torch.int64)
    keys = mask.reshape(b, t) if mask is not None else rq[None]
    out = torch.empty((b, t, h * d), dtype=torch.int8, device=q.device)
    lo, hi = qrange(score_bits)
    t_pad = max(32, triton.next_power_of_2(t))  # int8 tl.dot wants K >= 32 on sm_90 (P·V over T_PAD keys)
    consts = softmax_consts(op, score_bits, t_pad)
    if consts is None or (op.deferred and t > 1 << 16):  # deferred: int32 weight total and W·V (< 2^14 t)
        return None
    values, one_warps = TILES["attention.one.long" if t_pad >= 512 else "attention.one.mid" if t_pad == 256
                              else "attention.one"]
    one_m = min(64, values // t_pad)  # query rows of the one-pass kernel: BLOCK_M x T_PAD scores held
    args = (q, k, v, keys, rq, bc[0], bc[1], out, t, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
            k.stride(2), v.stride(0), v.stride(1), v.stride(2), keys.stride(0), out.stride(0), out.stride(1))
    consts |= dict(LO=lo, HI=hi, HAS_MASK=mask is not None, SCORE_RQ=hi_word_modes(m_scores, None, None)[0], HEAD_D=d)
    if one_m >= 16:  # tl.dot wants 16 rows at least
        _onepass_attention_kernel[(triton.cdiv(t, one_m), h, b)](*args, **consts, BLOCK_M=one_m, T_PAD=t_pad,
                                                                 num_warps=one_warps, num_stages=1)
    else:
        bm, bn, warps, stages = TILES["attention"]
        nonneg = m_scores.b_min is not None and m_scores.b_min >= 0  # a host fact: no device read
        _attention_kernel[(triton.cdiv(t, bm), h, b)](*args, **consts, BLOCK_M=bm, BLOCK_N=bn, NONNEG=nonneg,
                                                      num_warps=warps, num_stages=stages)
    return out

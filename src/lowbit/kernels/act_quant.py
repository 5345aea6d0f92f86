"""Per-token activation quantization (kernel 1): x (M, K) -> codes + one float32 scale per token.

Formats: int8, fp8 e4m3 (codes as uint8 bit patterns), int4 and fp4 e2m1 (two codes per byte, the shared
nibble layout; or, with packed=False, one code per byte held as the 8-bit code of the same value: `HELD`).
Optionally fused with a per-channel smoothing factor (x * smooth, SmoothQuant) and with a static per-tensor scale
instead of the dynamic one. Bit-exact with `reference.quantize_act` (tests/kernels).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from lowbit.kernels import _tl

# fmt code -> (is_float, bits, max_abs, man, emin, bias, qmin, qmax)
FORMATS = {
    "int8": (_tl.INT8, 8, 127.0),
    "fp8_e4m3": (_tl.FP8, 8, 448.0),
    "int4": (_tl.INT4, 4, 7.0),
    "fp4_e2m1": (_tl.FP4, 4, 6.0),
}

# 4-bit activations held one per byte (packed=False): the code of the same value in the 8-bit format the tensor
# cores read (int4 -> int8 -8..7, fp4 e2m1 -> fp8 e4m3, both exact). On Hopper 4-bit MMA goes through the 8-bit
# tensor cores anyway, so a GEMM on held codes is the 8-bit GEMM, without unpacking nibbles in its main loop.
HELD = {"int4": "int8", "fp4_e2m1": "fp8_e4m3"}


def codes_dtype(fmt: str, packed: bool = True) -> torch.dtype:
    """torch dtype of the codes `quantize_act` writes: int8 for int8 (and int4 held), uint8 otherwise."""
    kind = FORMATS[fmt][0]
    return torch.int8 if kind == _tl.INT8 or (kind == _tl.INT4 and not packed) else torch.uint8


@triton.jit
def _codes(v, KIND: tl.constexpr):
    if KIND == 1:  # int8
        return tl.minimum(tl.maximum(_tl.rne(v), -128.0), 127.0).to(tl.int32)
    elif KIND == 3:  # int4
        return tl.minimum(tl.maximum(_tl.rne(v), -8.0), 7.0).to(tl.int32) & 0xF
    elif KIND == 2:  # fp8 e4m3
        return _tl.fp_code(v, 3, -6, 7, 448.0, 8)
    else:  # fp4 e2m1
        return _tl.fp_code(v, 1, 0, 1, 6.0, 4)


@triton.jit
def store_codes(q_row, k0, c, K, KIND: tl.constexpr, PACKED: tl.constexpr, BLOCK: tl.constexpr):
    """Store `_codes` c (BLOCK,) of columns k0 .. k0 + BLOCK of one row: 4-bit packed two per byte (PACKED), 4-bit
    held as `HELD` 8-bit codes, 8-bit as they are. Shared with the engine's LayerNorm -> quantize producer."""
    if PACKED:
        lo, hi = tl.split(tl.reshape(c, (BLOCK // 2, 2)))
        ob = k0 // 2 + tl.arange(0, BLOCK // 2)
        tl.store(q_row + ob, (lo | (hi << 4)).to(tl.uint8), mask=ob < K // 2)
    else:
        if KIND == 3:
            c = _tl.int4_of(c)
        elif KIND == 4:
            c = _tl.fp4_to_e4m3(c, 0)
        offs = k0 + tl.arange(0, BLOCK)
        tl.store(q_row + offs, c.to(q_row.dtype.element_ty), mask=offs < K)


@triton.jit
def _act_quant_kernel(x_ptr, smooth_ptr, static_ptr, q_ptr, s_ptr, K, stride_xm, stride_qm,
                      KIND: tl.constexpr, MAXABS: tl.constexpr, PACKED: tl.constexpr,
                      HAS_SMOOTH: tl.constexpr, STATIC: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    if STATIC:
        s = tl.load(static_ptr).to(tl.float32)
    else:
        s = _tl.token_scale(x_row, smooth_ptr, K, MAXABS, HAS_SMOOTH, BLOCK_K)
    tl.store(s_ptr + row, s)
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            x = x * tl.load(smooth_ptr + offs, mask=offs < K, other=0.0).to(tl.float32)
        c = _codes(tl.math.div_rn(x, s), KIND)  # (BLOCK_K,) int32
        store_codes(q_ptr + row * stride_qm, k0, c, K, KIND, PACKED, BLOCK_K)


def quantize_act(x: torch.Tensor, fmt: str, smooth: torch.Tensor | None = None,
                 static_scale: torch.Tensor | None = None, out: torch.Tensor | None = None,
                 packed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize rows of x (M, K) per token.

    Args:
        x: (M, K) float16 / bfloat16 / float32, unit stride along K.
        fmt: int8 | fp8_e4m3 | int4 | fp4_e2m1.
        smooth: optional (K,) factor multiplied into x before quantization.
        static_scale: optional 1-element calibrated scale (per-tensor static) instead of per-token amax.
        out: optional preallocated codes tensor (tests poison it).
        packed: 4-bit codes two per byte (QuantLinear's layout); False: one per byte as `HELD` 8-bit codes (the
            encoder engine's layout). No effect on 8-bit formats.

    Returns:
        codes: int8 (M, K) for int8; uint8 (M, K) fp8 bit patterns; uint8 (M, K/2) packed for 4-bit; held 4-bit:
            int8 (M, K) values -8..7 for int4, uint8 (M, K) fp8 e4m3 bit patterns for fp4.
        scale: float32 (M,).
    """
    kind, bits, maxabs = FORMATS[fmt]
    m, k = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    packed = packed and bits == 4
    if packed and k % 2:
        raise ValueError(f"quantize_act: 4-bit codes pack two per byte; K={k} is odd")
    dtype = codes_dtype(fmt, packed)
    q = out if out is not None else torch.empty((m, k // 2 if packed else k), dtype=dtype, device=x.device)
    s = torch.empty((m,), dtype=torch.float32, device=x.device)
    if m == 0:
        return q, s
    block = min(triton.next_power_of_2(k), 2048)
    _act_quant_kernel[(m,)](x, smooth if smooth is not None else x, static_scale if static_scale is not None else s,
                            q, s, k, x.stride(0), q.stride(0), KIND=kind, MAXABS=maxabs, PACKED=packed,
                            HAS_SMOOTH=smooth is not None, STATIC=static_scale is not None, BLOCK_K=block,
                            num_warps=4 if block >= 1024 else 2)
    return q, s

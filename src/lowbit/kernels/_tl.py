"""Triton device helpers shared by the kernels: rounding, minifloat codes, nibble unpacking; and the launchers'
multiprocessor count (`sm_count`).

Everything here is integer or exactly-representable float arithmetic, so the same code is bit-exact on the GPU
and under Triton's interpreter (whose fp32 -> fp8 cast rounds some ties differently from torch's; measured on
triton 3.9: 0.75 * 2^-8 -> fp8 e4m3 gave a different code than `torch.Tensor.to(float8_e4m3fn)`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Kind codes shared by launchers and kernels (constexpr ints).
A16, INT8, FP8, INT4, FP4, UINT4 = 0, 1, 2, 3, 4, 5
PER_CHANNEL, PER_GROUP, POW2_ROW = 0, 1, 2
_SM_COUNT: dict[int, int] = {}


def sm_count(device: torch.device) -> int:
    """Multiprocessors of a CUDA device (cached); 132 (an H100's) for the CPU under Triton's interpreter."""
    if device.type != "cuda":
        return 132
    i = device.index if device.index is not None else torch.cuda.current_device()
    if i not in _SM_COUNT:
        _SM_COUNT[i] = torch.cuda.get_device_properties(i).multi_processor_count
    return _SM_COUNT[i]


@triton.jit
def rne(y):
    """Round half to even for |y| < 2^22: adding 1.5 * 2^23 leaves one unit in the last place."""
    return (y + 12582912.0) - 12582912.0


@triton.jit
def exp2i(e):
    """2^e as an exact float32 for integer tensors e in [-126, 127]."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def fp_code(v, MAN: tl.constexpr, EMIN: tl.constexpr, BIAS: tl.constexpr, MAXV: tl.constexpr,
            BITS: tl.constexpr):
    """Minifloat code (int32, low BITS bits) of float32 v: RNE, saturating at ±MAXV (as FPFormat.encode)."""
    a = tl.minimum(tl.abs(v), MAXV)
    e = ((a.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    step = tl.maximum(e, EMIN) - MAN
    r = tl.minimum(rne(a * exp2i(-step)) * exp2i(step), MAXV)  # exact multiples of 2^step
    rb = r.to(tl.int32, bitcast=True)
    re = ((rb >> 23) & 0xFF) - 127
    normal = ((re + BIAS) << MAN) | ((rb >> (23 - MAN)) & ((1 << MAN) - 1))
    sub = (r * exp2i(tl.full(r.shape, MAN - EMIN, tl.int32))).to(tl.int32)  # r / 2^(EMIN - MAN), exact
    code = tl.where(r >= exp2i(tl.full(r.shape, EMIN, tl.int32)), normal, sub)
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    return code | (sign << (BITS - 1))


@triton.jit
def token_scale(x_row, smooth_ptr, K, MAXABS: tl.constexpr, HAS_SMOOTH: tl.constexpr, BLOCK: tl.constexpr):
    """Per-token scale of one row: max|x (* smooth)| / MAXABS, correctly rounded; 1 for an all-zero row (as
    observers._nonzero). Shared by the activation quantizer and the GEMV that quantizes its token itself."""
    amax = tl.zeros((BLOCK,), tl.float32)
    for k0 in range(0, K, BLOCK):
        offs = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_row + offs, mask=offs < K, other=0.0).to(tl.float32)
        if HAS_SMOOTH:
            x = x * tl.load(smooth_ptr + offs, mask=offs < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    s = tl.math.div_rn(tl.max(amax, 0), MAXABS)
    return tl.where(s > 1e-12, s, 1.0)


@triton.jit
def nibbles(b, R: tl.constexpr, C: tl.constexpr):
    """uint8 (R, C // 2) packed bytes -> int32 (R, C) nibbles 0..15; element 2i = low nibble of byte i."""
    b = b.to(tl.int32)
    return tl.reshape(tl.join(b & 0xF, (b >> 4) & 0xF), (R, C))


@triton.jit
def int4_of(n):
    """Sign-extend a two's-complement nibble (int32 0..15) to -8..7."""
    return n - ((n & 8) << 1)


@triton.jit
def fp4_to_e4m3(n, k):
    """FP4 e2m1 nibble n (int32) times 2^-k (0 <= k <= 8) as an FP8 e4m3 code: an exponent shift, exact.

    e2m1 value: (2 + m) * 2^(e - 2) for e >= 1, m / 2 for e == 0. Shifted values below e4m3's smallest normal
    (2^-6) become e4m3 subnormals f * 2^-9; for k <= 8 every one is representable (ZeroQuant-FP M2).
    """
    e = (n >> 1) & 3
    m = n & 1
    E = tl.where(e > 0, e + 6, 6) - k  # e4m3 exponent field when normal
    normal = (E << 3) | tl.where(e > 0, m << 2, 0)
    sub = tl.where(e > 0, (2 + m) << tl.maximum(E + 1, 0), m << tl.maximum(E + 2, 0))
    bits = tl.where(E > 0, normal, sub)
    bits = tl.where((e == 0) & (m == 0), 0, bits)
    return bits | ((n & 8) << 4)

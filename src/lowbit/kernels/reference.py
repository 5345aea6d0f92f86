"""Plain-torch twins of every kernel, written with lowbit's own quantization functions so they compute exactly
what `QuantLinear.reference_forward` computes. They run on any device and are what the tests compare with.
"""
from __future__ import annotations

import torch

from lowbit.formats import get_format, pack_nibbles, unpack_nibbles
from lowbit.quant.observers import choose_scale, encode
from lowbit.scheme import QuantSpec


def quantize_act(x: torch.Tensor, fmt: str, smooth: torch.Tensor | None = None,
                 static_scale: torch.Tensor | None = None, packed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Twin of `act_quant.quantize_act`: per-token (or static) symmetric codes and float32 scales (M,); 4-bit codes
    packed two per byte, or (packed=False) held one per byte as 8-bit codes of the same value (`held_codes`)."""
    spec = QuantSpec(fmt, "token", dynamic=True)
    rows = x.float() if smooth is None else x.float() * smooth.float()  # (M, K)
    if static_scale is None:
        s, _ = choose_scale(rows, spec)
    else:
        s = static_scale.float().reshape(1).expand(rows.shape[0])
    codes = encode(rows, s[:, None], None, spec)
    if spec.bits == 4:
        codes = pack_nibbles(codes) if packed else held_codes(codes, fmt)
    return codes, s.contiguous()


def held_codes(codes: torch.Tensor, fmt: str) -> torch.Tensor:
    """4-bit codes (one per element) as the 8-bit codes of the same values (act_quant.HELD): int4 -> int8 -8..7,
    fp4 e2m1 -> fp8 e4m3 bit patterns (uint8). Exact: every 4-bit value is an 8-bit value."""
    if fmt == "int4":
        return codes.to(torch.int8)
    v = get_format(fmt).decode(codes, torch.tensor(1.0))
    return v.to(torch.float8_e4m3fn).view(torch.uint8)


def decode_act(codes: torch.Tensor, scale: torch.Tensor, fmt: str) -> torch.Tensor:
    """float32 (M, K) values of activation codes times their per-token scales (held 4-bit codes: pass the 8-bit
    format that holds them, act_quant.HELD[fmt])."""
    f = get_format(fmt)
    if f.bits == 4:
        codes = unpack_nibbles(codes, signed=fmt.startswith("int"))
    return f.decode(codes, scale.float()[:, None])


def qgemm(a: torch.Tensor, a_scale: torch.Tensor | None, a_fmt: str | None, qweight, bias: torch.Tensor | None,
          out_dtype: torch.dtype) -> torch.Tensor:
    """Twin of `qgemm.qgemm`: (decoded activations) @ dequantized(W).T + bias in float32, cast to out_dtype.

    Args:
        a: activation codes (a_fmt given) or float activations (a_fmt None, weight-only).
        qweight: a `QTensor`.
    """
    x = a.float() if a_fmt is None else decode_act(a, a_scale, a_fmt)  # (M, K)
    y = x @ qweight.dequantize().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)

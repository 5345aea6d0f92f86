"""Two 4-bit codes per byte.

Layout (shared by every kernel): along the last dimension, element 2i goes to the low nibble and element 2i+1
to the high nibble of byte i. Signed INT4 codes are stored as their two's-complement nibble.
"""
from __future__ import annotations

import torch

from lowbit.errors import ShapeError


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack int8/uint8 4-bit codes [..., K] (K even) into uint8 [..., K/2]."""
    if codes.shape[-1] % 2:
        raise ShapeError(f"pack_nibbles: the last dimension must be even to pack two 4-bit codes per byte, "
                         f"got shape {tuple(codes.shape)}")
    c = codes.to(torch.int16) & 0xF  # (…, K)
    return (c[..., 0::2] | (c[..., 1::2] << 4)).to(torch.uint8)  # (…, K/2)


def unpack_nibbles(packed: torch.Tensor, signed: bool) -> torch.Tensor:
    """Inverse of pack_nibbles: uint8 [..., K/2] -> int8 (sign-extended) or uint8 codes [..., K]."""
    p = packed.to(torch.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    out = torch.stack((lo, hi), dim=-1).flatten(-2)  # (…, K)
    if signed:
        out = torch.where(out >= 8, out - 16, out)
        return out.to(torch.int8)
    return out.to(torch.uint8)

"""INTn number formats, n = 2..8, signed (two's complement) or unsigned (asymmetric with a zero point).

Codes are held in int16 during arithmetic and returned as int8 (signed) or uint8 (unsigned); 4-bit codes are
packed two per byte by `lowbit.formats.pack`. Rounding is round-half-to-even (torch.round), as GPU cvt.rni does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lowbit.errors import SchemeError


@dataclass(frozen=True)
class IntFormat:
    """An n-bit integer grid.

    Args:
        bits: 2..8.
        signed: True for [-2^(n-1), 2^(n-1)-1] (symmetric quantization), False for [0, 2^n-1] (asymmetric).
        restricted: signed only; drop -2^(n-1) so the grid is symmetric around zero (HAWQ / I-ViT use the full
            range, so the default is False).
    """

    bits: int
    signed: bool = True
    restricted: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise SchemeError(f"integer formats have 2..8 bits, got {self.bits}")
        if self.restricted and not self.signed:
            raise SchemeError("a restricted range only applies to signed integer formats")

    @property
    def name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.restricted else 0)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def max_abs(self) -> float:
        """The largest magnitude a symmetric scale maps max|x| to (2^(n-1)-1 for signed)."""
        return float(self.qmax) if self.signed else float(self.qmax)

    @property
    def code_dtype(self) -> torch.dtype:
        return torch.int8 if self.signed else torch.uint8

    def encode(self, x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None) -> torch.Tensor:
        """q = clamp(round(x / scale) + zero, qmin, qmax); scale (and zero) broadcast against x."""
        q = torch.round(x.float() / scale.float())
        if zero is not None:
            q = q + zero.float()
        if torch.isnan(q).any():
            raise ValueError(f"{self.name}.encode: NaN in the input (or a zero scale); integer grids have no NaN")
        return q.clamp_(self.qmin, self.qmax).to(self.code_dtype)

    def decode(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None) -> torch.Tensor:
        """x̂ = (q - zero) * scale, in float32."""
        v = q.float()
        if zero is not None:
            v = v - zero.float()
        return v * scale.float()

"""Number formats by name: `get_format("int4")`, `get_format("fp8_e4m3")`, ...

INT formats: int2..int8 (signed) and uint2..uint8 (unsigned, for asymmetric quantization with a zero point).
Minifloats: fp8_e4m3 (e4m3fn), fp8_e5m2, fp6_e3m2, fp6_e2m3, fp4_e2m1.
"""
from __future__ import annotations

from lowbit.errors import SchemeError
from lowbit.formats.fp import FP4_E2M1, FP6_E2M3, FP6_E3M2, FP8_E4M3, FP8_E5M2, FPFormat
from lowbit.formats.int import IntFormat
from lowbit.formats.pack import pack_nibbles, unpack_nibbles

Format = IntFormat | FPFormat

FORMATS: dict[str, Format] = {f.name: f for f in (FP8_E4M3, FP8_E5M2, FP6_E3M2, FP6_E2M3, FP4_E2M1)}
FORMATS.update({f"int{b}": IntFormat(b, signed=True) for b in range(2, 9)})
FORMATS.update({f"uint{b}": IntFormat(b, signed=False) for b in range(2, 9)})


def get_format(name: str) -> Format:
    """Look a format up by name; an unknown name lists the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise SchemeError(f"unknown number format {name!r}; known formats: {', '.join(sorted(FORMATS))}") from None


def is_float(fmt: Format) -> bool:
    return isinstance(fmt, FPFormat)


__all__ = ["FORMATS", "FPFormat", "Format", "IntFormat", "get_format", "is_float", "pack_nibbles",
           "unpack_nibbles", "FP8_E4M3", "FP8_E5M2", "FP6_E3M2", "FP6_E2M3", "FP4_E2M1"]

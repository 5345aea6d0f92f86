"""QTensor: the saved truth of a quantized weight — packed codes, scales, zero points and the spec.

Storage:
    codes  uint8 (N, K/2) for 4-bit formats (two codes per byte, `lowbit.formats.pack`), else int8 / uint8 (N, K)
    scale  (N, G): float32 per tensor / per channel (G = 1); bfloat16 per group (G = K / g), which the kernels
           read directly (the codes are computed with the stored bf16 scale, so nothing drifts)
    zero   uint8 (N, G) for asymmetric INT, else absent
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lowbit.errors import ShapeError
from lowbit.formats import FPFormat, pack_nibbles, unpack_nibbles
from lowbit.quant.observers import choose_scale, constrain_scales, decode, encode, fake_quant
from lowbit.scheme import QuantSpec


@dataclass
class QTensor:
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    spec: QuantSpec
    shape: tuple[int, int]

    @property
    def packed(self) -> bool:
        return self.spec.bits == 4

    @property
    def group_size(self) -> int:
        """Elements of a row sharing one scale."""
        return self.shape[1] // self.scale.shape[1]

    def nbytes(self) -> int:
        """Bytes of codes + scales + zeros as stored."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero) if t is not None)

    def bits_per_weight(self) -> float:
        return 8 * self.nbytes() / (self.shape[0] * self.shape[1])

    def unpacked_codes(self) -> torch.Tensor:
        """Codes (N, K): int8 for signed INT, uint8 for unsigned INT and minifloats."""
        if not self.packed:
            return self.codes
        signed = not isinstance(self.spec.fmt, FPFormat) and self.spec.symmetric
        return unpack_nibbles(self.codes, signed)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, K) values: decode(codes) * scale (minus zero), per group."""
        n, k = self.shape
        g = self.group_size
        q = self.unpacked_codes().reshape(n, k // g, g)  # (N, G, g)
        s = self.scale.float()[..., None]  # (N|1, G, 1)
        z = None if self.zero is None else self.zero.float()[..., None]
        return decode(q, s, z, self.spec).reshape(n, k).to(dtype)

    def tensors(self) -> dict[str, torch.Tensor]:
        d = {"qweight": self.codes, "scale": self.scale}
        if self.zero is not None:
            d["zero"] = self.zero
        return d


def empty_storage(spec: QuantSpec, n: int, k: int, name: str = "weight") -> dict[str, torch.Tensor]:
    """Zero-filled storage tensors (qweight, scale[, zero]) of a (n, k) weight, without quantizing anything."""
    _check_shape(spec, n, k, name)
    g = {"tensor": (1, 1), "channel": (n, 1)}.get(spec.granularity) or (n, k // spec.group_size)
    fmt = spec.fmt
    code_dtype = torch.int8 if getattr(fmt, "signed", False) and spec.bits != 4 else torch.uint8
    d = {"qweight": torch.zeros(n, k // 2 if spec.bits == 4 else k, dtype=code_dtype),
         "scale": torch.ones(g, dtype=torch.bfloat16 if spec.granularity == "group" else torch.float32)}
    if not spec.symmetric:
        d["zero"] = torch.zeros(g, dtype=torch.uint8)
    return d


def _check_shape(spec: QuantSpec, n: int, k: int, name: str) -> None:
    if spec.bits == 4 and k % 2:
        raise ShapeError(f"{name}: 4-bit codes are packed two per byte along in_features, which is odd ({k})")
    if spec.granularity == "group" and k % spec.group_size:
        g = spec.group_size
        raise ShapeError(f"{name}: group size {g} does not divide in_features {k}; choose a group size that "
                         f"divides {k} (e.g. {_divisor_hint(k, g)}) or add an override for this module")


def group_view(w: torch.Tensor, spec: QuantSpec, name: str = "weight") -> torch.Tensor:
    """(N, K) -> (rows sharing a scale, elements per row) for the spec's granularity."""
    n, k = w.shape
    _check_shape(spec, n, k, name)
    if spec.granularity == "tensor":
        return w.reshape(1, n * k)
    if spec.granularity == "channel":
        return w
    return w.reshape(n * (k // spec.group_size), spec.group_size)


def _divisor_hint(k: int, g: int) -> int:
    return max((d for d in range(2, g + 1) if k % d == 0 and d & (d - 1) == 0), default=k)


def quantize_weight(w: torch.Tensor, spec: QuantSpec, name: str = "weight",
                    scale: torch.Tensor | None = None, zero: torch.Tensor | None = None) -> QTensor:
    """Round-to-nearest quantization of a (N, K) weight into a packed QTensor.

    Args:
        w: (out_features, in_features) float weight.
        spec: weight spec (granularity tensor | channel | group).
        name: module name for error messages.
        scale, zero: precomputed scales (e.g. by GPTQ) of shape (N, G); chosen by the spec's observer if None.

    Raises:
        ShapeError: the group size does not divide in_features, or 4-bit codes with an odd in_features.
    """
    if w.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D weight, got shape {tuple(w.shape)}")
    n, k = w.shape
    if not torch.isfinite(w).all():
        raise ShapeError(f"{name}: the weight holds NaN or Inf; the model is corrupt")
    rows = group_view(w.float(), spec, name)  # (R, g)
    if scale is None:
        s, z = choose_scale(rows, spec)
        groups = rows.shape[0] // (1 if spec.granularity == "tensor" else n)
        s = s.reshape(-1, groups)  # (N|1, G)
        z = None if z is None else z.reshape(-1, groups)
        s = constrain_scales(s, spec.scale_rule)
    else:
        s, z = scale.float(), zero
    if spec.granularity == "group":
        s = s.to(torch.bfloat16)
    codes = encode(rows, s.float().reshape(-1, 1), None if z is None else z.float().reshape(-1, 1), spec)
    codes = codes.reshape(n, k)
    if spec.bits == 4:
        codes = pack_nibbles(codes)
    return QTensor(codes, s.contiguous(), None if z is None else z.to(torch.uint8).contiguous(), spec, (n, k))


def quantize_activation(x: torch.Tensor, spec: QuantSpec, static_scale: torch.Tensor | None = None,
                        static_zero: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize activations (…, K) as the kernels do: per-token dynamic, per-tensor dynamic, or
    per-tensor static with a calibrated scale. Returns float32 values on the format's grid times the scale."""
    shape = x.shape
    rows = x.reshape(-1, shape[-1]).float()  # (T, K)
    if spec.granularity == "token":
        s, z = choose_scale(rows, spec)
        return fake_quant(rows, s[:, None], None if z is None else z[:, None], spec).reshape(shape)
    if spec.dynamic:
        s, z = choose_scale(rows.reshape(1, -1), spec)
    else:
        s, z = static_scale, static_zero
    return fake_quant(rows, s.reshape(1, 1), None if z is None else z.reshape(1, 1), spec).reshape(shape)


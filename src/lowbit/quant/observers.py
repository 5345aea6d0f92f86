"""Range observers and scale computation, as pure tensor functions.

Rows of `x` (shape (R, n)) are the units that share one scale: a weight group, a weight row, a token, or the
whole flattened tensor. `choose_scale` returns one scale (and zero point) per row.
"""
from __future__ import annotations

import torch

from lowbit.formats import FPFormat
from lowbit.scheme import QuantSpec

MSE_GRID = torch.linspace(0.50, 1.0, 21)  # clip ratios searched by the MSE observer (1.0 = plain min-max)
EPS = 1e-12


def row_range(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) per row by the spec's observer (min-max or percentile); lo <= 0 <= hi."""
    x = x.float()
    if spec.observer == "percentile" and spec.percentile < 100:
        q = spec.percentile / 100
        if spec.symmetric:
            hi = _quantile(x.abs(), q)
            return -hi, hi
        lo, hi = _quantile(x, 1 - q), _quantile(x, q)
    else:
        lo, hi = x.amin(dim=1), x.amax(dim=1)
    return lo.clamp(max=0), hi.clamp(min=0)


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    # torch.quantile has an input-size limit (2^24); kthvalue is exact and has none.
    k = max(1, min(x.shape[1], int(round(q * x.shape[1]))))
    return x.kthvalue(k, dim=1).values


def scale_from_range(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Symmetric: s = max(|lo|, hi) / max_abs. Asymmetric INT: s = (hi - lo) / (2^b - 1), z = round(-lo / s)."""
    fmt = spec.fmt
    if spec.symmetric:
        amax = torch.maximum(lo.abs(), hi)
        return _nonzero(_div(amax, fmt.max_abs)), None
    s = _nonzero(_div(hi - lo, fmt.qmax))
    z = torch.round(-lo / s).clamp(fmt.qmin, fmt.qmax)
    return s, z


def _div(t: torch.Tensor, c: float) -> torch.Tensor:
    """t / c correctly rounded on every device. PyTorch's CUDA kernel turns division by a Python scalar into a
    multiplication by its reciprocal (one ulp off for some t), which made the reference disagree with the
    kernels' IEEE division on the H100 and flip 4-bit activation codes at rounding ties."""
    return t / torch.full_like(t, c)


def _nonzero(s: torch.Tensor) -> torch.Tensor:
    # An all-zero row quantizes to code 0 with any scale; use 1 so nothing divides by zero.
    return torch.where(s > EPS, s, torch.ones_like(s))


def encode(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """Codes of x with broadcastable scale s (and zero point z for asymmetric INT)."""
    fmt = spec.fmt
    return fmt.encode(x, s) if isinstance(fmt, FPFormat) else fmt.encode(x, s, z)


def decode(q: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """float32 values of codes q with broadcastable scale s (and zero point z)."""
    fmt = spec.fmt
    return fmt.decode(q, s) if isinstance(fmt, FPFormat) else fmt.decode(q, s, z)


def fake_quant(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """Quantize-dequantize x with broadcastable scale s (and zero z), in float32."""
    return decode(encode(x, s, z, spec), s, z, spec)


def choose_scale(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point) for each row of x by the spec's observer; MSE searches clip ratios per row."""
    lo, hi = row_range(x, spec)
    if spec.observer != "mse":
        return scale_from_range(lo, hi, spec)
    x = x.float()
    best_err = torch.full((x.shape[0],), float("inf"))
    best_s, best_z = scale_from_range(lo, hi, spec)
    for r in MSE_GRID.tolist():
        s, z = scale_from_range(lo * r, hi * r, spec)
        err = (fake_quant(x, s[:, None], None if z is None else z[:, None], spec) - x).pow(2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        if z is not None:
            best_z = torch.where(better, z, best_z)
    return best_s, best_z


def constrain_scales(scale: torch.Tensor, rule: str, max_shift: int = 8) -> torch.Tensor:
    """ZeroQuant-FP scale constraints (PAPERS.md §4) on group scales of shape (N, G); never lowers a scale.

    pow2 (M1): S_g <- 2^ceil(log2 S_g).
    pow2_row (M2): r = max_g S_g per row; S_g <- r * 2^-k with k = min(floor(log2(r / S_g)), max_shift).
        FP4 e2m1 values times 2^-k stay exact in FP8 e4m3 for k <= 8, so FP4 -> FP8 is an exponent shift and
        r is applied once in the GEMM epilogue.
    """
    if rule == "absmax":
        return scale
    if rule == "pow2":
        return torch.exp2(torch.ceil(torch.log2(scale)))
    if rule == "pow2_row":
        row = scale.amax(dim=1, keepdim=True)
        k = torch.floor(torch.log2(row / scale)).clamp(0, max_shift)
        return torch.ldexp(row.expand_as(scale), -k)
    raise ValueError(f"unknown scale rule {rule!r}")

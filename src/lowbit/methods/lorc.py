"""LoRC: low-rank compensation of the weight quantization error (ZeroQuant-V2, arXiv 2303.08302; used by
ZeroQuant-FP, PAPERS.md §4).

    E = W - W_hat = U S V^T ;  U_hat = U_r S_r^(1/2),  V_hat = S_r^(1/2) V_r^T ;  W ~ W_hat + U_hat V_hat

with rank r = 8 by default; the factors are optionally stored as per-row symmetric INT8 (bits: 8, the default).
W_hat is the weight conversion will store: GPTQ's when "gptq" ran before, round-to-nearest otherwise. The
factors travel on the float module to conversion, are stored as QuantLinear buffers (and in checkpoints), and
QuantLinear adds (x_q V^T) U^T in its forward. Overhead: r (N + K) numbers per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowbit.errors import SchemeError
from lowbit.methods import MethodContext, register_method
from lowbit.methods.gptq import method_args
from lowbit.nn.qlinear import _linear_weight
from lowbit.quant.qtensor import quantize_weight

ALLOWED_AFTER = ("kvcache",)  # methods that may follow lorc: they do not change weights


def lorc_factors(err: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U_hat (N, r), V_hat (r, K)) with U_hat @ V_hat the best rank-r approximation of err (Eckart-Young)."""
    u, s, vh = torch.linalg.svd(err.float(), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    return u[:, :r] * root, root[:, None] * vh[:r]


def int8_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric INT8 codes and float32 scales (R, 1) of a 2-D tensor: s = max|row| / 127."""
    s = t.float().abs().amax(dim=1, keepdim=True) / 127
    s = torch.where(s > 0, s, torch.ones_like(s))
    return torch.clamp(torch.round(t.float() / s), -127, 127).to(torch.int8), s


@dataclass(frozen=True)
class LoRCArgs:
    rank: int = 8
    bits: int | None = 8

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise SchemeError(f"lorc rank must be an integer >= 1, got {self.rank!r}")
        if self.bits not in (None, 8):
            raise SchemeError(f"lorc bits must be 8 (INT8 factors) or null (float32 factors), got {self.bits!r}")


@register_method("lorc")
def lorc(model: nn.Module, scheme, ctx: MethodContext) -> None:
    """Attach rank-r compensation factors of every planned layer's quantization error.

    Raises:
        SchemeError: a weight-changing method runs after lorc (its error would no longer be the one
            compensated), or bad method_args.
    """
    args = method_args(scheme, "lorc", LoRCArgs)
    after = list(scheme.methods)[list(scheme.methods).index("lorc") + 1:] if "lorc" in scheme.methods else []
    bad = [m for m in after if m not in ALLOWED_AFTER]
    if bad:
        raise SchemeError(f"method 'lorc' compensates the final quantized weights, so it must come after "
                          f"{', '.join(bad)} in the scheme's methods")
    for p in ctx.report.quantized:
        mod = model.get_submodule(p.name)
        w = _linear_weight(mod).detach().float()
        qt = ctx.qweights.get(p.name) or quantize_weight(w, p.weight_spec, p.name)
        ctx.qweights[p.name] = qt  # conversion stores exactly the weight the factors compensate
        u, v = lorc_factors(w - qt.dequantize().to(w.device), args.rank)
        mod.lowbit_lorc = (u, v, args.bits)

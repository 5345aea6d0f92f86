"""Fake quantizers for quantization-aware training, sharing the PTQ formats and specs (STYLE.md §9).

The forward of every quantizer calls the same `encode`/`decode` as `quantize_weight` / `quantize_activation`,
so a trained model converts to `QuantLinear` layers whose outputs equal the fake-quant model's bit for bit
(tested). Only the backward differs from PTQ: straight-through for the input, and one of three scale rules:

- ``lsq``: LSQ (Esser et al., ICLR 2020), the scale is a parameter; with u = x̂/s the decoded code,
  ``∂x̂/∂s = u − x/s`` inside the clip range and ``u`` (= −Q_n or Q_p) outside; the scale's gradient is
  multiplied by ``g = 1/sqrt(n·Q_p)``, n = elements sharing the scale (PAPERS.md §2).
- ``mkq``: the slot for MKQ-BERT's scale gradient (arXiv 2203.13483). **Its formula could not be found**: the
  search over stored pages, docs, code and issues (June 2026, and again 2026-11-23: arXiv, PapersWithCode,
  emergentmind, bzpeer and arxivlens pages, plus every stored file naming "MKQ-BERT", which only cite it)
  returned only the abstract ("a novel way for computing the gradient of the quantization scale"), and no
  code exists (PapersWithCode: "no code"). We
  implement the closest documented alternative to LSQ's rule: TQT's log-domain scale gradient (Jain et al.,
  "Trained quantization thresholds", MLSys 2020): the parameter is θ = log2 s, so
  ``∂x̂/∂θ = ln2 · s · ∂x̂/∂s`` with the same local ``∂x̂/∂s`` and no ``g`` (Adam normalises it). Updates are
  relative (scale-invariant), which is the property the 4-bit BERT papers want from a better scale gradient.
  Replace `mkq_local` here once the paper's formula is read; results are labelled "MKQ slot (TQT log-scale)".
- ``minmax``: no learned scale; weights take the PTQ observer's scale of the current weights every step,
  static activations an EMA of the observed range (momentum 0.95, as I-ViT / HAWQ); plain straight-through.

Dynamic activation specs (per-token, as in the w4a4-int preset) compute their scale at run time exactly as
the kernels do, so they have nothing to learn: they pass gradients straight through.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from lowbit.errors import SchemeError
from lowbit.formats import FPFormat
from lowbit.quant.observers import EPS, choose_scale, constrain_scales, decode, encode, fake_quant
from lowbit.quant.qtensor import group_view, quantize_activation
from lowbit.scheme import QuantSpec

GRADIENTS = ("lsq", "mkq", "minmax")
EMA_MOMENTUM = 0.95


# --- pure maths ---------------------------------------------------------------------------------------------
def local_scale_grad(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None,
                     spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂x̂/∂s per element, inside-the-clip-range mask) of x̂ = s·decode(encode(x, s, z)) (LSQ, Esser et al.
    2020, eq. 3; with a fixed zero point z for asymmetric INT).

    Inside: u − x/s with u = x̂/s the decoded code (round(x/s) for INT); outside: u, the clipped end.
    """
    v = x.float() / s.float()  # unrounded position on the grid
    u = decode(encode(x, s, z, spec), torch.ones_like(s, dtype=torch.float32), z, spec)
    fmt = spec.fmt
    if isinstance(fmt, FPFormat):
        inside = v.abs() <= fmt.max_abs
    else:
        w = v if z is None else v + z.float()
        inside = (w >= fmt.qmin) & (w <= fmt.qmax)
    return torch.where(inside, u - v, u), inside


def lsq_grad_scale(n: int, spec: QuantSpec) -> float:
    """LSQ's gradient scale g = 1 / sqrt(n · Q_p); n = elements sharing one scale."""
    return 1.0 / math.sqrt(n * spec.fmt.max_abs)


class _FakeQuant(torch.autograd.Function):
    """x̂ = decode(encode(x, s, z)) with the LSQ backward (scaled by `grad_scale`) and a clipped STE for x."""

    @staticmethod
    def forward(ctx, x, s, z, spec, grad_scale):
        ctx.save_for_backward(x, s, z)
        ctx.spec, ctx.grad_scale = spec, grad_scale
        return fake_quant(x, s, z, spec)

    @staticmethod
    def backward(ctx, g):
        x, s, z = ctx.saved_tensors
        ds, inside = local_scale_grad(x, s, z, ctx.spec)
        gx = (g * inside).to(x.dtype) if ctx.needs_input_grad[0] else None
        gs = (g * ds).sum_to_size(s.shape) * ctx.grad_scale if ctx.needs_input_grad[1] else None
        return gx, gs, None, None, None


class _Passthrough(torch.autograd.Function):
    """Returns `value` (computed without autograd) in the forward; the gradient goes to `x` unchanged (STE)."""

    @staticmethod
    def forward(ctx, x, value):
        return value

    @staticmethod
    def backward(ctx, g):
        return g, None


def round_bf16(s: torch.Tensor) -> torch.Tensor:
    """s rounded to bfloat16 (as QTensor stores group scales), with an identity gradient."""
    return _Passthrough.apply(s, s.detach().to(torch.bfloat16).float())


def fake_quant_ste(x: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec,
                   grad_scale: float = 1.0) -> torch.Tensor:
    """Differentiable fake quantization: exact PTQ numerics forward, LSQ-rule gradients for x and s."""
    return _FakeQuant.apply(x, s, z, spec, grad_scale)


# --- modules ------------------------------------------------------------------------------------------------
def _check_grad(grad: str) -> None:
    if grad not in GRADIENTS:
        raise SchemeError(f"unknown scale gradient {grad!r}; allowed: {', '.join(GRADIENTS)}")


class WeightQuantizer(nn.Module):
    """Fake-quantizes a (N, K) weight with the spec's granularity; scales initialised by the PTQ observer.

    The scale tensor has QTensor's shape (N|1, G); group scales are rounded to bf16 in the forward so that
    `quantize_weight(w, spec, scale=self.step())` reproduces the forward exactly.
    """

    def __init__(self, spec: QuantSpec, weight: torch.Tensor, grad: str = "lsq", name: str = "weight") -> None:
        super().__init__()
        _check_grad(grad)
        self.spec, self.grad, self.name = spec, grad, name
        n, k = weight.shape
        s, z = self._observe(weight)
        self.shape3 = (s.shape[0], s.shape[1], -1)  # (N|1, G, elements per scale)
        self.n_per_scale = (n * k) // s.numel()
        self.register_buffer("zero", z)
        if grad == "lsq":
            self.scale = nn.Parameter(s)
        elif grad == "mkq":
            self.log2_scale = nn.Parameter(torch.log2(s))

    def _observe(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The PTQ scale (and zero) of w, exactly as `quantize_weight` chooses it."""
        n = w.shape[0]
        rows = group_view(w.detach().float(), self.spec, self.name)  # (R, g)
        s, z = choose_scale(rows, self.spec)
        groups = rows.shape[0] // (1 if self.spec.granularity == "tensor" else n)
        s = constrain_scales(s.reshape(-1, groups), self.spec.scale_rule)
        return s, None if z is None else z.reshape(-1, groups)

    def step(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The effective scale (N|1, G), positive, bf16-representable for group granularity."""
        if self.grad == "lsq":
            s = self.scale.clamp_min(EPS)
        elif self.grad == "mkq":
            s = torch.exp2(self.log2_scale)
        else:
            s = self._observe(w)[0]
        return round_bf16(s) if self.spec.granularity == "group" else s

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        s = self.step(w)
        z = None if self.zero is None else self.zero[..., None]
        g = lsq_grad_scale(self.n_per_scale, self.spec) if self.grad == "lsq" else 1.0
        x = w.float().reshape(self.shape3)  # (N|1, G, g)
        return fake_quant_ste(x, s[..., None], z, self.spec, g).reshape(w.shape)


class ActQuantizer(nn.Module):
    """Fake-quantizes a linear layer's input as `QuantLinear.quantize_input` does.

    dynamic specs: the run-time per-token / per-tensor scale, straight-through gradient.
    static per-tensor specs: a learned scale (lsq / mkq) or an EMA min-max range (minmax), initialised from
    the first training batch by the spec's observer. Symmetric only (a learned zero point is not built).
    """

    def __init__(self, spec: QuantSpec | None, grad: str = "lsq", name: str = "") -> None:
        super().__init__()
        _check_grad(grad)
        self.spec, self.grad, self.name = spec, grad, name
        self.static = spec is not None and not spec.dynamic
        if self.static and not spec.symmetric:
            raise SchemeError(f"{name}: QAT learns symmetric static activation scales only; set symmetric: true "
                              "or use a dynamic activation spec")
        self.register_buffer("initialised", torch.tensor(False))
        if self.static and grad == "lsq":
            self.scale = nn.Parameter(torch.ones(()))
        elif self.static and grad == "mkq":
            self.log2_scale = nn.Parameter(torch.zeros(()))
        elif self.static:
            self.register_buffer("ema_scale", torch.ones(()))

    def step(self) -> torch.Tensor:
        """The static scale (0-d), as QuantLinear's `act_scale` will hold it."""
        if self.grad == "lsq":
            return self.scale.clamp_min(EPS)
        if self.grad == "mkq":
            return torch.exp2(self.log2_scale)
        return self.ema_scale

    @torch.no_grad()
    def _init(self, x: torch.Tensor) -> None:
        s, _ = choose_scale(x.detach().float().reshape(1, -1), self.spec)
        s = s.reshape(())
        if self.grad == "lsq":
            self.scale.copy_(s)
        elif self.grad == "mkq":
            self.log2_scale.copy_(torch.log2(s))
        else:
            self.ema_scale.copy_(s)
        self.initialised.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec is None:
            return x.float()
        if not self.static:
            return _Passthrough.apply(x.float(), quantize_activation(x.detach(), self.spec))
        if not bool(self.initialised):
            if not self.training:
                raise SchemeError(f"{self.name}: the static activation scale was never initialised; run at "
                                  "least one training step before evaluating")
            self._init(x)
        if self.grad == "minmax" and self.training:
            with torch.no_grad():
                s, _ = choose_scale(x.detach().float().reshape(1, -1), self.spec)
                self.ema_scale.mul_(EMA_MOMENTUM).add_((1 - EMA_MOMENTUM) * s.reshape(()))
        n = x.numel()
        g = lsq_grad_scale(n, self.spec) if self.grad == "lsq" else 1.0
        return fake_quant_ste(x.float(), self.step(), None, self.spec, g)

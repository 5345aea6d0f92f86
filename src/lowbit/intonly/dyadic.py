"""Dyadic numbers and the two arithmetic backends every integer-only op is written against.

A dyadic number is ``b / 2^c`` with integers b, c (PAPERS.md §0): ``frexp(x) = (m, e)``, ``b = round_half_up(m *
2^bits)``, ``c = bits - e``. Requantization is ``y = floor((z * b + 2^(c-1)) / 2^c)`` = round-half-up of
``z * b / 2^c``: a multiply, an add and a shift (HAWQ-V3 §3, I-ViT ``fixedpoint_mul``).

Every op in :mod:`lowbit.intonly.ops` and :mod:`lowbit.intonly.blocks` is written once against an arithmetic
object ``A`` and runs on either backend:

* :data:`INT` — the integer-only path: int64 tensors, shifts, multiplies, adds, compares. Division (by a
  constant or at run time) is restoring long division — shift, compare, subtract — over the number of quotient
  bits the caller proves sufficient, so no division instruction is in the data path
  (:mod:`lowbit.intonly.checker` verifies this).
* :data:`SIM` — the float64 simulation of the same arithmetic, written the way I-ViT's PyTorch code writes it
  (``torch.floor(a / b)``, ``floor(x * 2^s)``, ``floor(z * b / 2^c + 0.5)``). Every intermediate is an integer
  below 2^52, so float64 holds it exactly and the two backends agree bit for bit (tests/intonly check this).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lowbit.errors import LowbitError

EXACT_BITS = 52  # integers below 2^52 survive float64 arithmetic (+, *, floor(a/b)) exactly


class IntegerOnlyError(LowbitError):
    """An integer-only graph that is not integer-only, or a quantity that does not fit its integer width."""


@dataclass(frozen=True)
class Dyadic:
    """``b / 2^c`` elementwise: b (int64, sign carried by b) and c (int64, >= 1) broadcast against the data."""

    b: torch.Tensor
    c: torch.Tensor
    # the smallest shift c among the nonzero multipliers (64 if all are zero), known on the host: computed where b
    # and c are CPU tensors, carried along by to(); None where unknown (built on a GPU). Kernels read it to choose
    # their 32-bit requantization (lowbit.kernels.intonly.hi_word_modes) without reading device memory
    # during a forward (CUDA-graph capture).
    c_min: int | None = field(default=None, compare=False)
    # |z| < 2^z_bits for every z the graph multiplies by this multiplier (its plan's bound, e.g. K 2^14 + max |bias|
    # for a linear's product plus its INT32 bias), or None: lets a kernel pre-shift z on 32 bits where c < 33
    z_bits: int | None = field(default=None, compare=False)
    # the smallest mantissa b, known on the host as c_min is (None where unknown): b_min >= 0 tells a kernel that
    # the multiplier is nondecreasing (the attention's score requant, lowbit.kernels.intonly_gemm.attention)
    b_min: int | None = field(default=None, compare=False)
    # the smallest shift c over all channels, zero multipliers included (I-LayerNorm's affine requant adds a bias at
    # shift precision, so a zero-b channel's c still matters there), known on the host as c_min is
    c_low: int | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.b.device.type == "cpu" and self.c.device.type == "cpu":
            if self.c_min is None:
                b, c = torch.broadcast_tensors(self.b, self.c)
                c = c[b != 0]
                object.__setattr__(self, "c_min", int(c.min()) if c.numel() else 64)
            if self.b_min is None:
                object.__setattr__(self, "b_min", int(self.b.min()) if self.b.numel() else 0)
            if self.c_low is None:
                object.__setattr__(self, "c_low", int(self.c.min()) if self.c.numel() else 64)

    def value(self) -> torch.Tensor:
        """float64 value (for reports and tests, never in the data path)."""
        return self.b.double() * torch.pow(2.0, -self.c.double())

    def to(self, device) -> "Dyadic":
        return replace(self, b=self.b.to(device), c=self.c.to(device))


def dyadic(x, bits: int = 31) -> Dyadic:
    """The dyadic approximation of x (scalar or tensor) with a ``bits``-bit mantissa.

    Args:
        x: real multiplier(s); zero gives b = 0.
        bits: mantissa bits (31 in HAWQ / I-ViT). Callers lower it with :func:`mantissa_bits` where the
            requantized integer is wide, so ``|z| * |b|`` stays below 2^52.

    Raises:
        IntegerOnlyError: a multiplier of magnitude >= 2^(bits-1) (the shift would be negative) or non-finite.
    """
    a = np.asarray(torch.as_tensor(x, dtype=torch.float64).cpu().numpy(), dtype=np.float64)
    if not np.isfinite(a).all():
        raise IntegerOnlyError(f"dyadic(): non-finite multiplier {a[~np.isfinite(a)][:3]}")
    m, e = np.frexp(np.abs(a))  # |a| = m * 2^e, m in [0.5, 1)
    b = np.floor(m * 2.0**bits + 0.5).astype(np.int64)  # round half up (HAWQ's ROUND_HALF_UP)
    c = (bits - e).astype(np.int64)
    carry = b == (1 << bits)  # m rounded up to 1.0
    b, c = np.where(carry, b >> 1, b), np.where(carry, c - 1, c)
    zero = b == 0
    b, c = np.where(zero, 0, b), np.where(zero, 1, c)
    if (c < 1).any():
        raise IntegerOnlyError(f"dyadic(): multiplier {np.abs(a).max():.3g} is too large for a {bits}-bit "
                               "mantissa with a right shift; rescale the producer or consumer")
    b = np.where(a < 0, -b, b)
    return Dyadic(torch.from_numpy(np.asarray(b)), torch.from_numpy(np.asarray(c)))


def mantissa_bits(in_bits: int) -> int:
    """Largest mantissa (<= 31) that keeps ``|z| * |b| < 2^52`` for ``|z| < 2^in_bits``."""
    bits = min(31, EXACT_BITS - in_bits)
    if bits < 8:
        raise IntegerOnlyError(f"an integer of {in_bits} bits cannot be requantized exactly (mantissa would "
                               f"have {bits} bits)")
    return bits


def qrange(bits: int, signed: bool = True) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def bits_for(bound: float) -> int:
    """Bits of magnitude needed for integers with |v| <= bound."""
    return max(1, math.ceil(math.log2(float(bound) + 1)))


class _Composite:
    """The composite steps of the integer graph, each written as its parts. A kernel backend
    (:class:`lowbit.intonly.backend.KernelArith`) runs each as one fused kernel with the same result."""

    # True: the graph hands linear outputs over without their INT32 bias, and the consumer's requantization
    # (rq_linear / rq_sum's bias0) adds it; the result is the same integer either way.
    fuses_bias = False

    def key_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The (B, 1, 1, T) 0/1 key mask as the backend's attention steps read it."""
        return self.tensor(mask)

    def rq(self, z: torch.Tensor, m: Dyadic, bias: torch.Tensor | None, bits: int) -> torch.Tensor:
        """requant, clamped to a signed bits-bit code."""
        lo, hi = qrange(bits)
        return torch.clamp(self.requant(z, m, bias), lo, hi)

    def rq_linear(self, z: torch.Tensor, m: Dyadic, bias: torch.Tensor, bits: int) -> torch.Tensor:
        """rq of a linear output z whose INT32 bias was not added yet: rq(z + bias)."""
        return self.rq(z + self.tensor(bias).to(z.device), m, None, bits)

    def rq_sum(self, terms: list[tuple[torch.Tensor, Dyadic]], bits: int,
               bias0: torch.Tensor | None = None) -> torch.Tensor:
        """Each term requantized to bits + 1, summed, clamped to bits (the residual add). bias0: the first term's
        INT32 linear bias when it was not added yet."""
        lo, hi = qrange(bits)
        if bias0 is not None:
            terms = [(terms[0][0] + self.tensor(bias0).to(terms[0][0].device), terms[0][1]), *terms[1:]]
        return torch.clamp(sum(self.rq(z, m, None, bits + 1) for z, m in terms), lo, hi)

    def linear_rq(self, x: torch.Tensor, codes: torch.Tensor, lin_bias: torch.Tensor, m: Dyadic, bits: int
                  ) -> torch.Tensor:
        """A linear requantized: rq_linear(x @ codesᵀ, m, lin_bias, bits). The kernel backend runs it as one GEMM
        whose epilogue requantizes (the INT32 product is never written)."""
        return self.rq_linear(self.linear(x, codes, None), m, lin_bias, bits)

    def linear_gelu_rq(self, x: torch.Tensor, codes: torch.Tensor, lin_bias: torch.Tensor, m: Dyadic, bits: int,
                       op, m3: Dyadic, bits3: int) -> torch.Tensor:
        """FC1 and its GELU: gelu_rq(op, linear_rq(x, codes, lin_bias, m, bits), m3, bits3). The kernel backend runs
        ShiftGELU in the GEMM's epilogue (neither the linear's codes nor a GELU pass go through memory)."""
        return self.gelu_rq(op, self.linear_rq(x, codes, lin_bias, m, bits), m3, bits3)

    def linear_rq_sum(self, x: torch.Tensor, codes: torch.Tensor, lin_bias: torch.Tensor, m: Dyadic,
                      term2: tuple[torch.Tensor, Dyadic], bits: int) -> torch.Tensor:
        """The residual sum whose first term is a linear: rq_sum([(x @ codesᵀ, m), term2], bits, bias0=lin_bias)."""
        return self.rq_sum([(self.linear(x, codes, None), m), term2], bits, lin_bias)

    def embed_sum(self, terms: list[tuple[torch.Tensor, Dyadic, torch.Tensor]], bits: int) -> torch.Tensor:
        """Sum of embedding lookups: for each (table codes (V, H), per-row multiplier m (V,), ids (B, T)), the rows
        codes[ids] requantized by m[ids] and clamped to bits; the sum clamped to bits."""
        lo, hi = qrange(bits)
        total = 0
        for codes, m, idx in terms:
            rq = self.requant(self.tensor(codes[idx]), Dyadic(m.b[idx][..., None], m.c[idx][..., None]))
            total = total + torch.clamp(rq, lo, hi)
        return torch.clamp(total, lo, hi)

    def linear(self, x: torch.Tensor, codes: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """int8 codes x (…, K) times weight codes (N, K)ᵀ plus INT32 bias (None: no bias)."""
        z = self.matmul(x, self.tensor(codes).t())
        return z if bias is None else z + self.tensor(bias)

    def softmax(self, op, z: torch.Tensor, m: Dyadic, bits: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Scores z requantized to bits, then the integer softmax ``op``."""
        return op(self, self.rq(z, m, None, bits), mask)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m_scores: Dyadic, op, score_bits: int,
                  mask: torch.Tensor | None, m_ctx: Dyadic, bits: int) -> torch.Tensor:
        """One attention of heads q, k, v (B, H, T, d): scores q·kᵀ requantized by m_scores to score_bits, the
        context ``op.context`` (probabilities times v, or with op.deferred the weights times v divided by their row
        total), the context (B, T, H * d) requantized by m_ctx to bits. The kernel backend runs it as one kernel
        (scores and probabilities never written)."""
        b, h, t, d = q.shape
        if op.deferred:
            x = self.rq(self.matmul(q, k.transpose(-1, -2)), m_scores, None, score_bits)  # (B, H, T, T)
            ctx = op.context(self, x, v, mask)
        else:
            probs = self.softmax(op, self.matmul(q, k.transpose(-1, -2)), m_scores, score_bits, mask)
            ctx = self.matmul(probs, v)  # INT32
        return self.rq(ctx.transpose(1, 2).reshape(b, t, h * d), m_ctx, None, bits)

    def gelu_rq(self, op, x: torch.Tensor, m: Dyadic, bits: int) -> torch.Tensor:
        """The integer GELU ``op`` of x, requantized to bits."""
        return self.rq(op(self, x), m, None, bits)

    def layernorm(self, ln, x: torch.Tensor, m: Dyadic, bias: torch.Tensor, bits: int) -> torch.Tensor:
        """I-LayerNorm's core and its affine requantization."""
        return self.rq(ln.core(self, x), m, self.tensor(bias), bits)

    def layernorm_rq(self, ln, x: torch.Tensor, m: Dyadic, bias: torch.Tensor, bits: int, m2: Dyadic,
                     keep: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(layernorm(...), rq(<it>, m2, None, 8)): the LayerNorm's codes and the int8 input of the linear that
        reads them. keep=False: the caller needs only the second (a backend may then not store the first)."""
        h = self.layernorm(ln, x, m, bias, bits)
        return h, self.rq(h, m2, None, 8)


class IntArith(_Composite):
    """Integer-only backend: int64 tensors; multiply, add, shift, compare. No division, no float."""

    name = "int"
    dtype = torch.int64

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.int64)

    def shift(self, v: torch.Tensor, s) -> torch.Tensor:
        """floor(v * 2^s); s an int or an int tensor (negative = arithmetic right shift, which floors)."""
        if isinstance(s, int):
            return v << s if s >= 0 else v >> -s
        return torch.where(s >= 0, v << s.clamp(min=0), v >> (-s).clamp(min=0))

    def floordiv(self, a: torch.Tensor, b, abits: int, signed: bool = False, qbits: int | None = None
                 ) -> torch.Tensor:
        """floor(a / b) for b >= 1 and |a| < 2^abits by restoring long division: per dividend bit, shift the
        remainder in, compare with b, subtract. The remainder stays below 2b, so nothing overflows.

        signed=True allows a < 0 (floor toward -inf: floor(a/b) = -floor((-a + b - 1) / b)).
        qbits: when the caller proves a < b * 2^qbits and b * 2^qbits < 2^62, only qbits quotient bits are
        produced (compare with b << i, subtract): fewer steps than abits when the quotient is short."""
        b = torch.as_tensor(b, dtype=torch.int64, device=a.device)
        if signed:
            neg = a < 0
            mag = torch.where(neg, b - 1 - a, a)
            q = self.floordiv(mag, b, abits + 1, qbits=qbits)
            return torch.where(neg, -q, q)
        if qbits is not None and qbits < abits:
            q, r = torch.zeros_like(a) + torch.zeros_like(b), a + torch.zeros_like(b)
            for i in range(qbits - 1, -1, -1):
                t = b << i
                ge = (r >= t).to(torch.int64)
                r = r - t * ge
                q = q | (ge << i)
            return q
        q = torch.zeros_like(a) + torch.zeros_like(b)
        r = q.clone()
        for i in range(abits - 1, -1, -1):
            r = (r << 1) | ((a >> i) & 1)
            ge = (r >= b).to(torch.int64)
            r = r - b * ge
            q = q | (ge << i)
        return q

    def requant(self, z: torch.Tensor, m: Dyadic, bias: torch.Tensor | None = None) -> torch.Tensor:
        """round_half_up((z * b + bias) / 2^c): multiply, add, shift."""
        acc = z * m.b.to(z.device) + (0 if bias is None else bias)
        c = m.c.to(z.device)
        return (acc + (torch.ones_like(c) << (c - 1))) >> c

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


class SimArith(_Composite):
    """float64 simulation of the same arithmetic with floor / true division (I-ViT's PyTorch formulation)."""

    name = "sim"
    dtype = torch.float64

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64)

    def shift(self, v: torch.Tensor, s) -> torch.Tensor:
        if isinstance(s, int):
            return torch.floor(v * 2.0**s)
        return torch.floor(v * torch.pow(2.0, s.to(torch.float64)))

    def floordiv(self, a: torch.Tensor, b, abits: int, signed: bool = False, qbits: int | None = None
                 ) -> torch.Tensor:
        return torch.floor(a / torch.as_tensor(b, dtype=torch.float64, device=a.device))

    def requant(self, z: torch.Tensor, m: Dyadic, bias: torch.Tensor | None = None) -> torch.Tensor:
        c = m.c.to(z.device).double()
        acc = z * m.b.to(z.device).double() + (0 if bias is None else bias.double())
        return torch.floor((acc + torch.pow(2.0, c - 1)) * torch.pow(2.0, -c))

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


INT = IntArith()
SIM = SimArith()

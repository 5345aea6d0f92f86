"""Integer-only nonlinearities: I-ViT's Shiftmax / ShiftGELU / I-LayerNorm and I-BERT's i-exp / i-GELU.

Each op is a frozen dataclass built once from the (float) scale of its integer input — that is where every
floating-point constant is turned into an integer — and applied with ``op(A, x)`` on an arithmetic backend
(:data:`lowbit.intonly.dyadic.INT` or ``SIM``). Inputs and outputs are integer codes; ``out_scale`` gives the
real value of one output unit.

Deviations from the papers' code, each because the paper's version divides or loses precision:

* Divisions are exact floor divisions done by restoring long division (``A.floordiv``), never a divide.
* Shiftmax / i-softmax normalise with one division, ``p = round(e * 2^k / sum(e))`` (k = output bits),
  instead of ``floor(e * floor((2^31 - 1) / sum) / 2^(32-k))``: the 31-bit reciprocal loses up to
  ``sum / 2^31`` relative precision, which is several percent when 128 keys share the row sum, and the floor
  drops half an output step per key on average, a bias of T/2^(k+1) of the row's mass (measured on MiniLM:
  rounding raised the integer-only embedding cosine from 0.9902 to 0.9940 on 200 held-out sentences).
* Attention may defer the normalisation (``IntSoftmax(deferred=True)``, lowbit's default through
  ``IntConfig.deferred_norm``): P·V runs on k-bit weights relative to the row maximum and the context is divided
  by their row total once, by one 32-bit reciprocal a row. The papers quantize normalised probabilities, which
  rounds every key of a flat row over more than 2^(k+1) keys to 0; the fused GPU kernel needs two sweeps over the
  keys instead of three (BERT-base 32 x 384 on an H100: attention 4.03 -> 2.20 ms). MiniLM accuracy is unchanged
  (BENCHMARKS.md).
* ShiftGELU evaluates the sigmoid on -|x| and reflects it (σ(t) = 1 - σ(-t)):
  ``s = floor(e(-|x|) * 2^(k-1) / (e(-|x|) + e(0)))``. I-ViT's form subtracts the row maximum and computes
  e(x - max) and e(-max); when the row spans more than n/(1.702 log2 e) ~ 9.4 below its maximum both
  exponentials saturate at the n*x0 clamp and the sigmoid comes out 1/2 for strongly negative x
  (measured: max |error| 2.8 against exact GELU at S = 0.1 with inputs in ±12.7).
* I-LayerNorm rounds the mean half up (I-ViT: half to even) and keeps the Newton square root exactly
  (k0 = 2^16, 10 iterations, PAPERS.md §5); γ and β are applied by the consumer's dyadic requantization
  (``LayerNormInt.affine``), not by ``β / γ`` (which blows up for small γ).
* i-GELU's overflow shift is ``max(0, bits(c_int) - 15)`` instead of I-BERT's fixed 14, which would zero
  every value for 8- or 16-bit inputs (I-BERT feeds it 32-bit accumulators).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowbit.intonly.dyadic import Dyadic, IntegerOnlyError, bits_for

LOG2E_SHIFT = "x + (x >> 1) - (x >> 4)"  # 1.4375 ~ log2(e) = 1.4427 (I-ViT Shiftmax step 2)
IBERT_EXP = (0.35815147, 0.96963238, 1.0)  # exp(p) ~ a p^2 + b p + c on (-ln2, 0] (I-BERT)
IBERT_ERF = (-0.2888, -1.769, 1.0)  # erf(t) ~ sgn(t) [a (min(|t|, -b) + b)^2 + 1] (I-BERT)
IBERT_LN2 = -0.6931
EXP_CAP_BITS = 44  # exponentials are kept below 2^44 so e * 2^8 stays below 2^52 (exact in float64)
# deferred normalisation (IntSoftmax(deferred=True)): the context sum(u v) / sum(u) is formed as
# round(acc * floor(2^NORM_SHIFT / total) / 2^(NORM_SHIFT - CTX_BITS)), in units of 2^-CTX_BITS of the value scale.
# |acc| <= 128 total, so |acc * R| <= 2^(NORM_SHIFT + 7) < 2^52 (exact in float64), and the context has
# CTX_BITS + 8 bits, which a 30-bit dyadic mantissa requantizes below 2^52. R's relative error is below
# total / 2^NORM_SHIFT <= 127 T / 2^32: 1.5e-5 at 512 keys.
NORM_SHIFT = 32
CTX_BITS = 14


def _check_scale(name: str, s: float) -> float:
    s = float(s)
    if not (s > 0 and math.isfinite(s)):
        raise IntegerOnlyError(f"{name}: the input scale must be a positive finite number, got {s}")
    return s


@dataclass(frozen=True)
class ShiftExp:
    """I-ViT's shift exponential: e(x) ~ 2^n * exp(x * S) / S for integer x <= 0 (scale S / 2^n)."""

    x0: int  # floor(-1 / S): the integer that represents -1 in base-2 exponent units
    n: int

    @classmethod
    def build(cls, scale: float, n: int) -> "ShiftExp":
        return cls(math.floor(-1.0 / _check_scale("ShiftExp", scale)), n)

    def __call__(self, A, x: torch.Tensor) -> torch.Tensor:
        x = x + A.shift(x, -1) - A.shift(x, -4)  # x * 1.4375: to base 2
        x = torch.clamp(x, min=self.n * self.x0)
        q = A.floordiv(-x, -self.x0, bits_for(-self.n * self.x0), qbits=bits_for(self.n))  # in [0, n]
        r = x - self.x0 * q  # r * S in (-1, 0]
        return torch.clamp(A.shift(r - 2 * self.x0, self.n - 1 - q), min=0)  # (r/2 - x0) * 2^(n-q)

    def bound(self) -> int:
        return -self.x0 * (1 << self.n)

    def weight_multiplier(self, k: int) -> tuple[int, int]:
        """(U, US) of :meth:`weights`: U = floor((2^k - 1) 2^US / (2 |x0|)) with US = 31 - k, so m U < 2^31 for
        every m <= 2 |x0| (a kernel multiplies on 32 bits) and U has ~30 - log2|x0| bits."""
        us = 31 - k
        return (((1 << k) - 1) << us) // (-2 * self.x0), us

    def weights(self, A, x: torch.Tensor, k: int) -> torch.Tensor:
        """k-bit weights relative to the row maximum for integer x <= 0 (x = 0 is the maximum): the shift
        exponential's base-2 split x * 1.4375 = q x0 + r (as __call__), then u = round_half_up(m U / 2^(US + q))
        with m = r - 2 x0 in (|x0|, 2 |x0|], i.e. u ~ (2^k - 1) 2^-q (1 + r S / 2) ~ (2^k - 1) exp(x S): 2^k - 1
        at the maximum, 0 from q = k + 1 on (so x is clamped at (k + 1) x0 rather than n x0). Rounded, not floored:
        a floor drops half a step from every weight, and measured worse on MiniLM (embedding cosine 0.9933 vs
        0.9941 for normalised probabilities, 500 held-out sentences)."""
        u_mul, us = self.weight_multiplier(k)
        x = x + A.shift(x, -1) - A.shift(x, -4)
        x = torch.clamp(x, min=(k + 1) * self.x0)
        q = A.floordiv(-x, -self.x0, bits_for(-(k + 1) * self.x0), qbits=bits_for(k + 1))  # in [0, k + 1]
        m = x - self.x0 * q - 2 * self.x0
        return A.shift(A.shift(m * u_mul, -(q + us - 1)) + 1, -1)  # floor((a + 2^(s-1)) / 2^s), nested


@dataclass(frozen=True)
class IExp:
    """I-BERT's i-exp: second-order polynomial on (-ln2, 0] and a shift by the number of ln2's."""

    x0: int  # floor(-ln2 / S)
    b: int  # floor((b/a) / S)
    c: int  # floor((c/a) / S^2)
    n: int  # output offset 2^n (I-BERT: 30; lowered so values stay below 2^EXP_CAP_BITS)
    clamp_n: int = 30  # inputs below clamp_n * x0 saturate (I-BERT's const = 30)

    @classmethod
    def build(cls, scale: float, n: int = 30) -> "IExp":
        s = _check_scale("IExp", scale)
        a, b, c = IBERT_EXP
        x0, b_int, c_int = math.floor(IBERT_LN2 / s), math.floor(b / a / s), math.floor(c / a / s**2)
        n = min(n, EXP_CAP_BITS - bits_for(c_int + b_int * b_int))
        if n < 4:
            raise IntegerOnlyError(f"i-exp: the input scale {s:.3g} is too fine for an exact 64-bit i-exp; "
                                   "requantize the scores to fewer bits first")
        return cls(x0, b_int, c_int, n)

    def __call__(self, A, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(x, min=self.clamp_n * self.x0)
        q = A.floordiv(-x, -self.x0, bits_for(-self.clamp_n * self.x0), qbits=bits_for(self.clamp_n))  # [0, 30]
        r = x - self.x0 * q  # (-ln2, 0] in units of S
        poly = (r + self.b) * r + self.c  # exp(r S) / (a S^2)
        return torch.clamp(A.shift(poly, self.n - q), min=0)

    def bound(self) -> int:
        return (self.c + self.b * self.b) << self.n

    def weights(self, A, x: torch.Tensor, k: int) -> torch.Tensor:
        """k-bit weights relative to the row maximum for x <= 0: floor((2^k - 1) e / (c 2^n)). c 2^n is i-exp at
        x = 0 and its largest value (on r in (x0, 0], r + b > 0 as b > ln2 / S, so (r + b) r + c <= c)."""
        top = self.c << self.n
        e = self(A, x)
        return A.floordiv(e * ((1 << k) - 1), top, bits_for(top) + k, qbits=k)


@dataclass(frozen=True)
class IntSoftmax:
    """Softmax over the last dim of integer scores (scale S): Shiftmax (I-ViT) or i-softmax (I-BERT).

    ``op(A, x, mask)``: probabilities, integers in [0, 2^out_bits - 1] with scale 2^-out_bits (7 bits fit int8 for
    the P·V GEMM). mask: optional 0/1 integer tensor broadcastable to the scores (0 = padded key, excluded).

    ``op.context(A, x, v, mask)``: the attention context sum_j p_j v_j, in units of ``ctx_scale`` times v's scale.
    With ``deferred=False`` (the papers) it is P·V of the probabilities above. With ``deferred=True`` (the lowbit
    default, FlashAttention's deferred normalisation) each key gets an out_bits-bit weight relative to the row
    maximum (``weights``), P·V runs on the weights, and the context is divided by the weights' row total once
    (``normalize``: one reciprocal a row). That is more accurate (the largest weight of a row is always 2^k - 1,
    where a normalised 7-bit probability rounds to 0 below 1/256: every key of a flat row over 128+ keys) and a
    fused kernel needs two sweeps over the keys instead of three (no row total before the P·V).
    """

    exp: ShiftExp | IExp
    out_bits: int = 7
    deferred: bool = False

    @classmethod
    def build(cls, scale: float, kind: str = "shift", out_bits: int = 7, n: int = 15,
              deferred: bool = False) -> "IntSoftmax":
        if kind == "shift":
            return cls(ShiftExp.build(scale, n), out_bits, deferred)
        if kind == "poly":
            return cls(IExp.build(scale), out_bits, deferred)
        raise IntegerOnlyError(f"unknown softmax kind {kind!r}; choose shift (I-ViT Shiftmax) or poly (I-BERT)")

    @property
    def ctx_scale(self) -> float:
        """The context's unit in units of v's scale."""
        return 2.0**-CTX_BITS if self.deferred else self.out_scale

    def ctx_bits(self, keys: int) -> int:
        """Bits of |context| for rows of at most ``keys`` keys."""
        return CTX_BITS + 8 if self.deferred else bits_for(keys * 2 ** (self.out_bits + 7))

    def weights(self, A, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, total): out_bits-bit weights relative to each row's maximum over the kept keys (0 for masked keys)
        and their row sums (0 only for a row without a kept key)."""
        x = A.tensor(x)  # the backend's wide type: 16-bit codes (the kernel backend's int16) would overflow
        if mask is not None:
            x = torch.where(mask > 0, x, torch.full_like(x, -(1 << 40)))
        u = self.exp.weights(A, x - torch.amax(x, dim=-1, keepdim=True), self.out_bits)
        if mask is not None:
            u = u * mask
        return u, torch.sum(u, dim=-1, keepdim=True)

    def normalize(self, A, acc: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """round(acc R / 2^(NORM_SHIFT - CTX_BITS)) with R = floor(2^NORM_SHIFT / max(total, 2^k - 1)) (one
        restoring division a row, NORM_SHIFT - k + 1 quotient bits): acc / total in units of 2^-CTX_BITS. A row's
        largest weight is 2^k - 1, so the clamp only meets rows without a kept key (total = acc = 0, context 0)."""
        top = (1 << self.out_bits) - 1
        r = A.floordiv(torch.full_like(total, 1 << NORM_SHIFT), torch.clamp(total, min=top), NORM_SHIFT + 1,
                       qbits=NORM_SHIFT - self.out_bits + 1)
        sh = NORM_SHIFT - CTX_BITS
        return A.shift(acc * r + (1 << (sh - 1)), -sh)

    def context(self, A, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The context of requantized scores x (…, Tq, T) and value codes v (…, T, d), unit ctx_scale."""
        if not self.deferred:
            return A.matmul(self(A, x, mask), v)
        u, total = self.weights(A, x, mask)
        return self.normalize(A, A.matmul(u, v), total)

    @property
    def out_scale(self) -> float:
        return 2.0**-self.out_bits

    def __call__(self, A, x: torch.Tensor, mask: torch.Tensor | None = None, max_keys: int = 4096) -> torch.Tensor:
        if mask is not None:
            x = torch.where(mask > 0, x, torch.full_like(x, -(1 << 40)))
        x = x - torch.amax(x, dim=-1, keepdim=True)
        e = self.exp(A, x)
        if mask is not None:
            e = e * mask
        total = torch.sum(e, dim=-1, keepdim=True)  # >= e(0) > 0: the row maximum is never masked
        # round(e * 2^k / total) = floor((e * 2^(k+1) + total) / (2 total)), at most 2^k (e <= total)
        abits = bits_for(self.exp.bound()) + self.out_bits + 2
        p = A.floordiv(A.shift(e, self.out_bits + 1) + total, 2 * total, abits, qbits=self.out_bits + 1)
        return torch.clamp(p, max=(1 << self.out_bits) - 1)


@dataclass(frozen=True)
class ShiftGELU:
    """I-ViT's ShiftGELU: x * sigmoid(1.702 x), the sigmoid from two shift exponentials (n = 23).

    Output scale: S * 2^-(out_bits - 1).
    """

    exp: ShiftExp
    scale: float
    out_bits: int = 8

    @classmethod
    def build(cls, scale: float, out_bits: int = 8, n: int = 23) -> "ShiftGELU":
        s = _check_scale("ShiftGELU", scale)
        return cls(ShiftExp.build(s * 1.702, n), s, out_bits)  # 1.702 folded into the constant x0

    @property
    def out_scale(self) -> float:
        return self.scale * 2.0 ** -(self.out_bits - 1)

    def __call__(self, A, x: torch.Tensor) -> torch.Tensor:
        e = self.exp(A, -torch.abs(x))  # exp(-1.702|x|) in units of exp(0) = -x0 * 2^n
        e0 = self.exp.bound()
        half = 1 << (self.out_bits - 1)
        # floored as in I-ViT: rounding it measured worse on MiniLM (embedding cosine 0.9908 vs 0.9940, 200
        # sentences), as did a 12-bit sigmoid (0.9910): the floor's downward bias offsets the upward bias of
        # the shift exponential (1 + u/2 >= 2^u)
        s = A.floordiv(A.shift(e, self.out_bits - 1), e + e0, bits_for(e0) + self.out_bits,
                       qbits=self.out_bits)  # sigmoid(-1.702|x|) * 2^(k-1), in [0, 2^(k-2)]
        sig = torch.where(x >= 0, half - s, s)
        return x * sig


@dataclass(frozen=True)
class IGELU:
    """I-BERT's i-GELU: x/2 * (1 + erf(x / sqrt 2)) with erf from a clipped second-order polynomial."""

    b: int
    c: int
    shift: int
    one: int  # floor(1 / erf_scale): the integer 1 in erf units
    out_scale: float

    @classmethod
    def build(cls, scale: float) -> "IGELU":
        s = _check_scale("IGELU", scale)
        a, b, c = IBERT_ERF
        s_sig = s / math.sqrt(2)
        b_int, c_int = math.floor(b / s_sig), math.floor(c / a / s_sig**2)
        shift = max(0, bits_for(abs(c_int)) - 15)
        erf_scale = s_sig**2 * a * 2**shift
        one = math.floor(1.0 / erf_scale)
        return cls(b_int, c_int, shift, one, s * erf_scale / 2)

    def __call__(self, A, x: torch.Tensor) -> torch.Tensor:
        sign = torch.sign(x)
        mag = torch.clamp(torch.abs(x), max=-self.b)
        erf = A.shift(sign * ((mag + self.b) * (mag + self.b) + self.c), -self.shift)
        return x * (erf + self.one)


def newton_bits(in_bits: int, channels: int) -> tuple[int, int]:
    """(vbits, qbits) of I-LayerNorm's integer square root: var = sum (x - mean)^2 < 2^vbits, and after the first
    Newton step every quotient floor(var / k) < 2^qbits. Integer Newton from above keeps
    k >= isqrt(var) =: s (floor((k + floor(v/k)) / 2) >= s for any k >= 1), and var <= s^2 + 2s, so
    var / k <= s + 2 < 2^ceil(vbits/2) + 2 <= 2^qbits. (var = 0 gives y = 0 and a zero output whatever k is.)"""
    vbits = 2 * (in_bits + 1) + bits_for(channels)
    return vbits, (vbits + 1) // 2 + 1


@dataclass(frozen=True)
class LayerNormInt:
    """I-LayerNorm (I-ViT): integer mean, integer Newton square root, normalisation by one reciprocal.

    ``core`` returns ``y`` with ``y * sqrt(C) / 2^30 = (x - mean) / std`` (unit variance); the affine
    ``gamma * . + beta`` is applied by the consumer's requantization (see ``affine``).
    """

    channels: int
    in_bits: int = 16  # |x| < 2^(in_bits-1)
    iterations: int = 10

    @property
    def unit_scale(self) -> float:
        return math.sqrt(self.channels) / 2**30

    def core(self, A, x: torch.Tensor) -> torch.Tensor:
        c = self.channels
        sbits = self.in_bits + bits_for(c)
        total = torch.sum(x, dim=-1, keepdim=True)
        mean = A.floordiv(2 * total + c, 2 * c, sbits + 2, signed=True)  # round(total / C), half up
        y = x - mean
        var = torch.sum(y * y, dim=-1, keepdim=True)
        vbits, qbits = newton_bits(self.in_bits, c)
        k = torch.full_like(var, 1 << 16)
        for i in range(self.iterations):  # Newton: k <- floor((k + floor(var / k)) / 2)
            # the first step divides by 2^16 (a shift); after it k >= isqrt(var), so var / k < 2^qbits
            k = A.shift(k + (A.shift(var, -16) if i == 0 else A.floordiv(var, k, vbits, qbits=qbits)), -1)
        k = torch.clamp(k, min=1)
        factor = A.floordiv(torch.full_like(k, (1 << 31) - 1), k, 31)
        return A.shift(y * factor, -1)

    def affine(self, gamma: torch.Tensor, beta: torch.Tensor, out_scale: float, bits: int = 31):
        """Per-channel dyadic multiplier and bias at shift precision so that
        ``A.requant(core, m, bias)`` = round((gamma * normalised + beta) / out_scale)."""
        from lowbit.intonly.dyadic import dyadic

        m = dyadic(gamma.double() * self.unit_scale / out_scale, bits)
        beta_units = beta.double() / out_scale
        # a tiny gamma gives a large shift c and with it a huge bias at shift precision: trade mantissa bits of
        # those channels for headroom so |bias| < 2^50 (exact in float64 and int64)
        need = torch.ceil(torch.log2(beta_units.abs() + 1)) + m.c.double() - 50
        k = need.clamp(min=0).clamp(max=(m.c - 1).double()).to(torch.int64)
        b = torch.floor(m.b.double() / torch.pow(2.0, k.double()) + 0.5).to(torch.int64)
        m = Dyadic(b, m.c - k)
        bias = torch.floor(beta_units * torch.pow(2.0, m.c.double()) + 0.5).to(torch.int64)
        if bias.abs().max() >= 2**51:
            raise IntegerOnlyError("I-LayerNorm: beta / out_scale is too large for an exact requantization")
        return m, bias

"""Integer-only kernels (issue 7): the dyadic requantization and I-ViT's nonlinearities, each fused with the
requantization around it.

Every kernel repeats the torch integer backend (:class:`lowbit.intonly.dyadic.IntArith` running
:mod:`lowbit.intonly.ops`) step for step — the same shifts, multiplies, adds, compares and the same restoring
long division (no divide instruction, no float) — so outputs are bit-exact with it (tests/intonly/test_kernels.py,
under TRITON_INTERPRET=1). Values are int64 inside the kernels (shift exponentials and the I-LayerNorm product
reach 2^52, as on the torch path); in memory they are int8 / int32. ShiftGELU and Shiftmax also have an int32 path
(constexpr I32, chosen on the host by gelu_i32 / shiftmax_i32 when their bounds hold) that reaches the same integers
with fewer and narrower steps: divisions by the constant |X0| as one multiply, ShiftGELU's sigmoid as a (k-1)-bit
division of int32 values, Shiftmax's rounding by one reciprocal per row (proofs beside each helper). I-LayerNorm's
per-row Newton chain is int32 non-restoring division, with quotient bits from a bound on the variance
(ln_chain_bits): the same quotients in fewer, narrower steps.

* :func:`requant` — ``clamp(round_half_up((z * b + bias) / 2^c))`` per output channel; optionally the sum of two
  such terms (the 16-bit residual add, ``IntEncoder._rq_sum``).
* :func:`shiftmax` — scores (INT32) -> requantized to score_bits -> Shiftmax -> int8 probabilities.
* :func:`shift_gelu` — ShiftGELU -> requantized (per channel) to the int8 input of FC2.
* :func:`layernorm` — I-LayerNorm (integer mean, Newton square root, one reciprocal) and its affine requant.
* :func:`embed_sum` — BERT's three embedding lookups, each requantized by its table row's multiplier, summed.
"""
from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np

import torch
import triton
import triton.language as tl

from lowbit.intonly.dyadic import Dyadic, bits_for, qrange


@triton.jit
def _floordiv(a, b, ABITS: tl.constexpr, QBITS: tl.constexpr):
    """floor(a / b) for 0 <= a < 2^ABITS, b >= 1 (int64) by restoring long division, one quotient bit per step
    (IntArith.floordiv's algorithm; the subtraction is a select, not a multiply by the 0/1 bit).
    QBITS < ABITS: the caller proved a < b * 2^QBITS, so only QBITS quotient bits are produced."""
    q = a * 0 + b * 0
    if QBITS < ABITS:
        r = a + b * 0
        for j in range(QBITS):
            t = b << (QBITS - 1 - j)
            ge = r >= t
            r = tl.where(ge, r - t, r)
            q = 2 * q + ge.to(tl.int64)
    else:
        r = q
        for j in range(ABITS):
            r = (r << 1) | ((a >> (ABITS - 1 - j)) & 1)
            ge = r >= b
            r = tl.where(ge, r - b, r)
            q = 2 * q + ge.to(tl.int64)
    return q


@triton.jit
def _shift(v, s):
    """floor(v * 2^s) for an integer tensor s (IntArith.shift)."""
    return tl.where(s >= 0, v << tl.maximum(s, 0), v >> tl.maximum(-s, 0))


@triton.jit
def _requant(acc, c):
    """round_half_up(acc / 2^c) = (acc + 2^(c-1)) >> c (IntArith.requant after the multiply-add)."""
    return (acc + ((c * 0 + 1) << (c - 1))) >> c


@triton.jit
def _shift_exp(x, X0: tl.constexpr, N: tl.constexpr, ABITS: tl.constexpr, QBITS: tl.constexpr):
    """I-ViT's shift exponential of x <= 0 (ops.ShiftExp.__call__)."""
    x = x + (x >> 1) - (x >> 4)  # x * 1.4375: to base 2
    x = tl.maximum(x, N * X0)
    q = _floordiv(-x, tl.full((), -X0, tl.int64), ABITS, QBITS)  # in [0, N]
    r = x - X0 * q
    return tl.maximum(_shift(r - 2 * X0, N - 1 - q), 0)


@triton.jit
def _divc(a, M: tl.constexpr, SH: tl.constexpr):
    """floor(a / d) for int32 0 <= a <= amax and a constant d by one widening multiply: (M, SH) = divc_magic(d, amax)."""
    return ((a.to(tl.int64) * M) >> SH).to(tl.int32)


@triton.jit
def _quot_steps(a, b, QBITS: tl.constexpr):
    """floor(a / b) for 0 <= a < b 2^QBITS with b 2^(QBITS+1) <= 2^63 (int64 operands) or <= 2^31 (int32): restoring
    division with the remainder and
    the quotient in one register, w = r 2^QBITS + (quotient bits so far, then the dividend bits left). w = a at the
    start (r = a >> QBITS < b); a step doubles w and, when the new remainder 2r + (next bit) >= b, i.e. 2w >= b 2^QBITS
    (the low part is below 2^QBITS), subtracts b 2^QBITS - 1 (r -= b and the freed low bit becomes 1). The compare
    reads w before the doubling (w >= b 2^(QBITS-1)), so a step is one select of two values computed from w."""
    d = b << QBITS
    half = b << (QBITS - 1)
    w = a + b * 0
    for _ in range(QBITS):
        w = tl.where(w >= half, w + (w - (d - 1)), w + w)
    return w & ((1 << QBITS) - 1)


@triton.jit
def _shift_exp_i32(x, X0: tl.constexpr, N: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr):
    """_shift_exp of int32 x <= 0 (x >= -2^30) in int32, bit-exact when |X0| 2^N < 2^31 (shiftmax_i32 checks).
    q = floor(a / |X0|) by _divc (a = -x' <= N |X0|); m = r - 2 X0 = |X0| (q + 2) - a in [|X0| + 1, 2 |X0|] > 0, so
    the clamp at 0 is void; m << (N-1) <= |X0| 2^N fits, and (m << (N-1)) >> q is m << (N-1-q) for q < N and
    m >> 1 for q = N: one right shift replaces the two-way variable shift."""
    a = -tl.maximum(x + (x >> 1) - (x >> 4), N * X0)
    q = _divc(a, DIV_M, DIV_SH)
    m = (q + 2) * -X0 - a
    return (m << (N - 1)) >> q


@triton.jit
def _weights_i32(x, X0: tl.constexpr, K: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr,
                 DIV_WIDE: tl.constexpr, U_MUL: tl.constexpr, U_SH: tl.constexpr):
    """ops.ShiftExp.weights (K-bit weights relative to the row maximum) of int32 x <= 0 (x >= -2^30) in int32, under
    deferred_i32's bounds: a = -x' <= (K + 1) |X0| (x' clamped at (K + 1) X0), q = floor(a / |X0|) by one multiply
    (on 32 bits where a DIV_M < 2^31, else widening), m = (q + 2) |X0| - a = r - 2 X0 in [|X0| + 1, 2 |X0|], and
    u = ((m U >> (US + q - 1)) + 1) >> 1 (rounded) with m U < 2^31 (U's construction)."""
    a = -tl.maximum(x + (x >> 1) - (x >> 4), (K + 1) * X0)
    if DIV_WIDE:
        q = _divc(a, DIV_M, DIV_SH)
    else:
        q = (a * DIV_M) >> DIV_SH
    m = (q + 2) * -X0 - a
    return (((m * U_MUL) >> (U_SH - 1 + q)) + 1) >> 1


@triton.jit
def _normalize_rows(acc, total, K: tl.constexpr, NS: tl.constexpr, SH: tl.constexpr):
    """ops.IntSoftmax.normalize of the int32 context acc (rows, d) by its rows' int32 weight totals (< 2^29): R =
    floor(2^NS / t), t = max(total, 2^K - 1), one a row, by _quot_nr: 2^NS = 2^(K-1) 2^(NS-K+1) with remainder
    2^(K-1) < t and NS - K + 1 (<= 31) zero bits below it; then (acc R + 2^(SH-1)) >> SH (int64)."""
    t = tl.maximum(total, (1 << K) - 1)
    r = _quot_nr(t * 0 + (1 << (K - 1)), t * 0, t, NS - K + 1)
    return (acc.to(tl.int64) * r[:, None] + (1 << (SH - 1))) >> SH


@triton.jit
def _gelu_sigmoid_i32(x, X0: tl.constexpr, K: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr,
                      MODE: tl.constexpr):
    """ShiftGELU's s = floor(e * 2^(K-1) / (e + E0)), e = ShiftExp(-|x|), E0 = |X0| 2^N, in int32 for any int32 or
    int64 x, bit-exact under gelu_i32's bounds (2 <= K <= N, |X0| (2^K + 2) 2^K <= 2^31). Proof, with x' the base-2
    exponent x + (x >> 1) - (x >> 4) of -|x| (nondecreasing in x), q = floor(-x' / |X0|), m = |X0| (q + 2) + x':
    * q <= N - 1: e = m 2^(N-1-q) and E0 = |X0| 2^(q+1) 2^(N-1-q), so s = floor(m 2^(K-1) / (m + |X0| 2^(q+1)))
      (floor(a t / (b t)) = floor(a / b));
    * q >= K - 1: s = 0, as m 2^(K-1) <= |X0| 2^K <= |X0| 2^(q+1) < m + |X0| 2^(q+1) (and for q = N, e = m >> 1 <=
      |X0|, e 2^(K-1) <= E0 < e + E0); so x' may be clamped at (K-1) X0 (and -|x| first at -2^29, whose x' is
      below it): then q <= K-1 and the q = K-1 case still gives 0;
    * then m 2^(K-1) / (m + |X0| 2^(q+1)) <= 2^(K-1) m / (m + 2 |X0|) <= 2^(K-2) (m <= 2 |X0|): K-1 quotient bits,
      and the denominator is at most |X0| (2^K + 2) (so _quot_steps on int32 needs |X0| (2^K + 2) 2^K <= 2^31)."""
    xn = tl.maximum(tl.where(x >= 0, -x, x), -(1 << 29)).to(tl.int32)
    a = -tl.maximum(xn + (xn >> 1) - (xn >> 4), (K - 1) * X0)  # in [0, (K-1) |X0|]
    q = _divc(a, DIV_M, DIV_SH)  # in [0, K-1]
    m = (q + 2) * -X0 - a
    if MODE >= 2:  # the quotient estimated, then corrected (gelu_mode checked every m and q of this X0 and K)
        return _gelu_quot_newton(m, q, -X0, K, DIV_M, DIV_SH, MODE)
    return _quot_steps(m << (K - 1), m + (-X0 << (q + 1)), K - 1)  # m < denominator


# _gelu_quot_newton's fixed point (written out in the kernel too; gelu_mode's exhaustive check runs these): F
# fraction bits; the reciprocal's linear start 1/(1 + e) ~ A0 - B0 e (the minimax line on [0, 1]: 16/17 - 8/17 e,
# relative error 1/17) in units of 2^-F
GELU_NEWTON = (14, 15420, 7710)


@triton.jit
def _gelu_quot_newton(m, q, X: tl.constexpr, K: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr,
                      MODE: tl.constexpr):
    """floor(m 2^(K-1) / (m + X 2^(q+1))) for int32 m in [X + 1, 2X], q in [0, K-1], without a long division:
    e = m / (X 2^(q+1)) in (0, 1] to F bits (m times DIV_M = ceil(2^DIV_SH / X), the magic of the division by X
    that gives q; widened to int64 where m DIV_M can reach 2^31), y = 1 / (1 + e) by the minimax line and one Newton step (y (2 - (1 + e) y)), the estimate s0 =
    2^(K-1) (1 - y), then the exact remainder r = m 2^(K-1) - s0 D corrects it: one step down where r < 0, with
    MODE 3 also one up where r >= D. Exact where s0 is within the correction's reach and no product leaves int32,
    which the host (gelu_mode) checks for every (m, q) of this X and K, else it keeps _quot_steps."""
    F: tl.constexpr = 14  # GELU_NEWTON
    A0: tl.constexpr = 15420
    B0: tl.constexpr = 7710
    if DIV_SH + 1 < F:  # a small X (or a power of two): the magic product is exact, scaled up
        e = ((m * DIV_M) << (F - 1 - DIV_SH)) >> q
    elif 2 * X * DIV_M < 2147483648:  # m DIV_M fits int32
        e = (m * DIV_M) >> (DIV_SH + 1 - F + q)
    else:  # a large X: one widening multiply
        e = ((m.to(tl.int64) * DIV_M) >> (DIV_SH + 1 - F + q)).to(tl.int32)
    y = ((A0 << F) - e * B0) >> F
    t = (((1 << F) + e) * y) >> F
    y = (y * ((2 << F) - t)) >> F
    s = ((1 << F) - y) >> (F - K + 1)
    d = m + ((2 * X) << q)
    r = (m << (K - 1)) - s * d
    s = s - (r < 0).to(tl.int32)
    if MODE == 3:
        s = s + (r >= d).to(tl.int32)
    return s


@triton.jit
def _row_reciprocal(total, RS: tl.constexpr, RBITS: tl.constexpr):
    """R = floor(2^RS / (2 total)) of int64 per-row totals (RBITS restoring steps, shiftmax_i32 sizes them)."""
    return _floordiv(tl.full(total.shape, 1 << RS, tl.int64), 2 * total, RS + 1, RBITS)


@triton.jit
def _ratio_i32(e, total, r, K: tl.constexpr, RS: tl.constexpr):
    """floor((e 2^(K+1) + total) / (2 total)) (Shiftmax's round(e 2^K / total)) for int32 0 <= e <= E0 and int64
    per-row totals in [E0, BLOCK_T E0] (2^(K+1) - 1 when total = 0, as _floordiv gives), with the row's reciprocal
    r = _row_reciprocal(total). With a the dividend and d = 2 total: a r / 2^RS <= a / d and
    a r / 2^RS > a / d - a / 2^RS >= a / d - 1 (2^RS / d - r < 1, a <= 2^RS), so q' = floor(a r / 2^RS) is
    floor(a / d) or one less, and one comparison, a >= (q' + 1) d, i.e. e 2^(K+1) >= (2 q' + 1) total, corrects
    it. a r = e (r << (K+1)) + total r: one widening multiply-add (r << (K+1) < 2^31, shiftmax_i32)."""
    e64 = e.to(tl.int64)
    q = ((e64 * (r << (K + 1)).to(tl.int32).to(tl.int64) + total * r) >> RS).to(tl.int32)
    q += ((e64 << (K + 1)) >= (2 * q + 1).to(tl.int64) * total).to(tl.int32)
    return tl.where(total > 0, q, (2 << K) - 1)


@triton.jit
def _tile(pid_m, pid_n, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_M, 1) row and (1, BLOCK_N) column indices of a tile and its in-bounds mask."""
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None]
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    return rows, cols, (rows < M) & (cols < N)


@triton.jit
def _hi_word_rq(p, c):
    """round_half_up(p / 2^c) for int64 p with |p| < 2^63 - 2^32 and c >= 33, on 32 bits: the high word h = floor(p /
    2^32) is a register of p (no shift), and floor((p + 2^(c-1)) / 2^c) = ((h >> (c - 33)) + 1) >> 1 (nested floors
    of divisions by powers of two; h >> (c-33) < 2^31 - 1 there, so the + 1 cannot wrap)."""
    h = (p >> 32).to(tl.int32)
    return ((h >> (c - 33)) + 1) >> 1


@triton.jit
def _hi_word_term(z, b, c_ptr, cols, cok, lin_bias_ptr, HAS_LIN_BIAS: tl.constexpr, MODE: tl.constexpr):
    """round_half_up((z + lin_bias) b / 2^c) of one term on the HI_WORD path (hi_word_modes). MODE 2: z + lin_bias
    is below 2^(31 - e) for e = 33 - c (the host's z_bits bound), so it is shifted left by e on 32 bits and the
    shift becomes 33; MODE 1: every c >= 33, and the linear bias joins as the per-column product lin_bias b. A
    column whose b is 0 may carry any c (dyadic() gives 1): its product is 0 whatever the shift."""
    c = tl.load(c_ptr + cols, mask=cok, other=33).to(tl.int32)
    if MODE == 2:
        z = z.to(tl.int32)
        if HAS_LIN_BIAS:
            z = z + tl.load(lin_bias_ptr + cols, mask=cok, other=0).to(tl.int32)
        p = (z << tl.maximum(33 - c, 0)).to(tl.int64) * b
    else:
        p = z.to(tl.int64) * b
        if HAS_LIN_BIAS:
            p = p + tl.load(lin_bias_ptr + cols, mask=cok, other=0).to(tl.int32).to(tl.int64) * b
    return _hi_word_rq(p, tl.maximum(c, 33))


@triton.jit
def _rq_value(z, rows, cols, ok, cok, lin_bias_ptr, b_ptr, c_ptr, bias_ptr, z2_ptr, b2_ptr, c2_ptr, stride_z2,
              LO: tl.constexpr, HI: tl.constexpr, LO1: tl.constexpr, HI1: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_LIN_BIAS: tl.constexpr, TWO: tl.constexpr, HI_WORD: tl.constexpr, HI_WORD2: tl.constexpr):
    """clamp(round_half_up(((z + lin_bias) * b + bias) / 2^c)) per column of the integer tile z; with TWO the
    residual sum: each term clamped to LO1..HI1 (bits + 1), the sum to LO..HI (IntArith.rq_linear / rq_sum).
    Shared by the requant kernel and the GEMM epilogue. b, c and the linear bias are narrowed to int32 (|b| < 2^31
    from dyadic(), INT32 biases, c < 64): the products are 64 x 32-bit, which in the GEMM epilogue fit Q/K/V apart
    (128x64 tile, int8 out) in 168 registers instead of 254 (benchmarks/gemm_regs.py).
    HI_WORD / HI_WORD2 > 0 (the modes hi_word_modes chose on the host for each term): each term is one 32 x 32 ->
    64-bit multiply whose high word is rounded and shifted on 32 bits (_hi_word_term), instead of 64-bit adds,
    variable 64-bit shifts and clamps; 0: that int64 arithmetic."""
    b = tl.load(b_ptr + cols, mask=cok, other=0).to(tl.int32)
    if HI_WORD > 0:
        v = _hi_word_term(z, b, c_ptr, cols, cok, lin_bias_ptr, HAS_LIN_BIAS, HI_WORD)
        if TWO:
            z2 = tl.load(z2_ptr + rows * stride_z2 + cols, mask=ok, other=0)
            b2 = tl.load(b2_ptr + cols, mask=cok, other=0).to(tl.int32)
            v2 = _hi_word_term(z2, b2, c2_ptr, cols, cok, lin_bias_ptr, False, HI_WORD2)
            v = tl.minimum(tl.maximum(v, LO1), HI1) + tl.minimum(tl.maximum(v2, LO1), HI1)
    else:
        z = z.to(tl.int64)
        if HAS_LIN_BIAS:  # the INT32 bias of the linear that produced z, added before the multiply
            z = z + tl.load(lin_bias_ptr + cols, mask=cok, other=0).to(tl.int32)
        z = z * b
        if HAS_BIAS:
            z = z + tl.load(bias_ptr + cols, mask=cok, other=0)
        v = _requant(z, tl.load(c_ptr + cols, mask=cok, other=1).to(tl.int32).to(tl.int64))
        if TWO:
            z2 = tl.load(z2_ptr + rows * stride_z2 + cols, mask=ok, other=0).to(tl.int64)
            b2 = tl.load(b2_ptr + cols, mask=cok, other=0).to(tl.int32)
            v2 = _requant(z2 * b2, tl.load(c2_ptr + cols, mask=cok, other=1).to(tl.int32).to(tl.int64))
            v = tl.minimum(tl.maximum(v, LO1), HI1) + tl.minimum(tl.maximum(v2, LO1), HI1)
    return tl.minimum(tl.maximum(v, LO), HI)


@triton.jit
def _rq_kernel(z_ptr, b_ptr, c_ptr, bias_ptr, lin_bias_ptr, z2_ptr, b2_ptr, c2_ptr, out_ptr, M, N, stride_z, stride_z2,
               stride_out, LO: tl.constexpr, HI: tl.constexpr, LO1: tl.constexpr, HI1: tl.constexpr,
               HAS_BIAS: tl.constexpr, HAS_LIN_BIAS: tl.constexpr, TWO: tl.constexpr, HI_WORD: tl.constexpr,
               HI_WORD2: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, ok = _tile(tl.program_id(0), tl.program_id(1), M, N, BLOCK_M, BLOCK_N)
    z = tl.load(z_ptr + rows * stride_z + cols, mask=ok, other=0)
    v = _rq_value(z, rows, cols, ok, cols < N, lin_bias_ptr, b_ptr, c_ptr, bias_ptr, z2_ptr, b2_ptr, c2_ptr, stride_z2,
                  LO, HI, LO1, HI1, HAS_BIAS, HAS_LIN_BIAS, TWO, HI_WORD, HI_WORD2)
    tl.store(out_ptr + rows * stride_out + cols, v.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _shiftmax_kernel(z_ptr, rq_ptr, mask_ptr, out_ptr, T, ROWS, stride_zb, stride_z, stride_mask, stride_ob,
                     stride_out, LO: tl.constexpr, HI: tl.constexpr, X0: tl.constexpr, N: tl.constexpr,
                     EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr, OUT_BITS: tl.constexpr,
                     DIV_ABITS: tl.constexpr, HAS_MASK: tl.constexpr, I32: tl.constexpr, DIV_M: tl.constexpr,
                     DIV_SH: tl.constexpr, RS: tl.constexpr, RBITS: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_T: tl.constexpr):
    # grid (row tiles, batch): rows of one batch share its key mask, and no index is divided
    batch = tl.program_id(1).to(tl.int64)
    rows, cols, ok = _tile(tl.program_id(0), 0, ROWS, T, BLOCK_M, BLOCK_T)
    z = tl.load(z_ptr + batch * stride_zb + rows * stride_z + cols, mask=ok, other=0).to(tl.int64)
    x = _requant(z * tl.load(rq_ptr), tl.load(rq_ptr + 1))  # scores -> score_bits (IntEncoder._rq)
    x = tl.minimum(tl.maximum(x, LO), HI)
    if HAS_MASK:
        keep = tl.load(mask_ptr + batch * stride_mask + cols, mask=cols < T, other=0).to(tl.int64)
    if I32:  # int32 exponential, per-row reciprocal (shiftmax_i32 holds the bounds)
        x = x.to(tl.int32)
        valid = cols < T
        if HAS_MASK:  # 0/1 keys: where(keep, ., 0) is e * keep
            valid = valid & (keep > 0)
        # LO - 1 stands for the -2^40 of masked keys: below every score, so the maximum of a row with a kept key
        # is the same; a row without one has total = 0 either way
        x = tl.minimum(x - tl.max(tl.where(valid, x, LO - 1), 1)[:, None], 0)
        e = tl.where(valid, _shift_exp_i32(x, X0, N, DIV_M, DIV_SH), 0)
        total = tl.sum(e.to(tl.int64), 1)[:, None]
        p = _ratio_i32(e, total, _row_reciprocal(total, RS, RBITS), OUT_BITS, RS)
    else:
        if HAS_MASK:
            x = tl.where(keep > 0, x, -(1 << 40))
        x = x - tl.max(tl.where(cols < T, x, -(1 << 62)), 1)[:, None]
        e = _shift_exp(x, X0, N, EXP_ABITS, EXP_QBITS)
        if HAS_MASK:
            e = e * keep
        e = tl.where(cols < T, e, 0)
        total = tl.sum(e, 1)[:, None]
        p = _floordiv((e << (OUT_BITS + 1)) + total, 2 * total, DIV_ABITS, OUT_BITS + 1)  # round(e 2^k / total)
    p = tl.minimum(p, (1 << OUT_BITS) - 1)
    tl.store(out_ptr + batch * stride_ob + rows * stride_out + cols, p.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _gelu_value(x, cols, cok, b_ptr, c_ptr, LO: tl.constexpr, HI: tl.constexpr, X0: tl.constexpr,
                N_EXP: tl.constexpr, EXP_ABITS: tl.constexpr, EXP_QBITS: tl.constexpr, E0: tl.constexpr,
                OUT_BITS: tl.constexpr, DIV_ABITS: tl.constexpr, I32: tl.constexpr, DIV_M: tl.constexpr,
                DIV_SH: tl.constexpr, RQ: tl.constexpr):
    """ShiftGELU of the integer tile x, requantized per column by (b, c) and clamped to LO..HI (IntArith.gelu_rq):
    shared by the GELU kernel and the FC1 GEMM epilogue. RQ > 0: the requantization on 32 bits (hi_word_modes of
    the multiplier, whose z_bits bound |x * factor|), else int64."""
    if I32:  # the sigmoid in int32 (gelu_i32 holds the bounds)
        if x.dtype != tl.int64:
            x = x.to(tl.int32)
        s = _gelu_sigmoid_i32(x, X0, OUT_BITS, DIV_M, DIV_SH, I32)
    else:
        x = x.to(tl.int64)
        e = _shift_exp(-tl.abs(x), X0, N_EXP, EXP_ABITS, EXP_QBITS)
        s = _floordiv(e << (OUT_BITS - 1), e + E0, DIV_ABITS, OUT_BITS)  # sigmoid(-1.702|x|) 2^(k-1)
    g = x.to(tl.int64) * tl.where(x >= 0, (1 << (OUT_BITS - 1)) - s, s).to(tl.int64)
    if RQ > 0:
        b = tl.load(b_ptr + cols, mask=cok, other=0).to(tl.int32)
        v = _hi_word_term(g, b, c_ptr, cols, cok, b_ptr, False, RQ)
    else:
        b = tl.load(b_ptr + cols, mask=cok, other=0)
        v = _requant(g * b, tl.load(c_ptr + cols, mask=cok, other=1))
    return tl.minimum(tl.maximum(v, LO), HI)


@triton.jit
def _shift_gelu_kernel(x_ptr, b_ptr, c_ptr, out_ptr, M, N, stride_x, stride_out, LO: tl.constexpr,
                       HI: tl.constexpr, X0: tl.constexpr, N_EXP: tl.constexpr, EXP_ABITS: tl.constexpr,
                       EXP_QBITS: tl.constexpr, E0: tl.constexpr, OUT_BITS: tl.constexpr, DIV_ABITS: tl.constexpr,
                       I32: tl.constexpr, DIV_M: tl.constexpr, DIV_SH: tl.constexpr, RQ: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows, cols, ok = _tile(tl.program_id(0), tl.program_id(1), M, N, BLOCK_M, BLOCK_N)
    x = tl.load(x_ptr + rows * stride_x + cols, mask=ok, other=0)
    v = _gelu_value(x, cols, cols < N, b_ptr, c_ptr, LO, HI, X0, N_EXP, EXP_ABITS, EXP_QBITS, E0, OUT_BITS, DIV_ABITS,
                    I32, DIV_M, DIV_SH, RQ)
    tl.store(out_ptr + rows * stride_out + cols, v.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _ln_mean(total, C, SBITS: tl.constexpr, MEAN_M: tl.constexpr, MEAN_SH: tl.constexpr, MEAN_K: tl.constexpr):
    """LayerNormInt's mean round(total / C) half up = floor((2 total + C) / 2C), signed. MEAN_M > 0: as
    floor((a + 2C K) / 2C) - K, with a + 2C K in [0, amax] (|x| < 2^(in_bits-1)) divided by one multiply,
    (MEAN_M, MEAN_SH, MEAN_K) = ln_mean_magic(...); else restoring long division of the magnitude."""
    a = 2 * total + C
    if MEAN_M > 0:
        return (((a + (total * 0 + C) * (2 * MEAN_K)) * MEAN_M) >> MEAN_SH) - MEAN_K
    two_c = total * 0 + 2 * C
    neg = a < 0
    q = _floordiv(tl.where(neg, two_c - 1 - a, a), two_c, SBITS + 3, SBITS + 3)
    return tl.where(neg, -q, q)


@triton.jit
def _quot_nr(r, t, k, STEPS: tl.constexpr):
    """floor(a / k) for a = r 2^STEPS + (t's top STEPS bits), int32 0 <= r < k < 2^29 (a < k 2^STEPS) and the low
    32 - STEPS bits of t zero, by non-restoring division: the remainder R stays in [-k, k) (2R + bit +- k fits
    int32) and the restoring remainder is R, or R + k where R < 0, so a step is one select (-k after R >= 0, +k
    after R < 0) and one add, with no compare of R against k, and quotient bit j is R_j >= 0. The dividend's bits
    leave t at the top as the inverted quotient bits enter at the bottom: sm_90 does a step in 4 SASS instructions
    (ISETP, SEL, LEA.HI, SHF.L.W) where _quot_steps' int64 step takes 6."""
    nk = -k
    for _ in tl.static_range(STEPS):
        r = tl.add(tl.sub(r << 1, t >> 31, False), tl.where(r >= 0, nk, k), False)
        t = tl.sub(t << 1, r >> 31, False)
    return ((1 << STEPS) - 1) - t


@triton.jit
def _ln_factor(var, QBITS: tl.constexpr, RBITS: tl.constexpr, ITERATIONS: tl.constexpr):
    """int32 floor((2^31 - 1) / k), k the integer Newton square root of the int64 var (LayerNormInt.core), in int32 under
    ln_chain_bits' bounds: from k = 2^16, the first step a shift, then ITERATIONS - 1 quotients floor(var / k) of
    QBITS bits, var split once into its bits above QBITS (< k) and below; the reciprocal has RBITS bits. var = 0
    (y = 0, so any factor gives the reference's output) may halve k to 0, where the quotient is all ones."""
    k = (((1 << 16) + (var >> 16)) >> 1).to(tl.int32)
    hi = (var >> QBITS).to(tl.int32)
    lo = (var << (32 - QBITS)).to(tl.int32)  # the low QBITS bits on top
    i = 1
    while i < ITERATIONS:  # a while loop pins the chain's layout (see _layernorm_kernel)
        k = (k + _quot_nr(hi, lo, k, QBITS)) >> 1
        i += 1
    one = k * 0 + 1  # 2^31 - 1: its bits above RBITS, then RBITS ones on top
    return _quot_nr(one * ((1 << (31 - RBITS)) - 1), one * -(1 << (32 - RBITS)), k, RBITS)


@triton.jit
def _ln_load(x_ptr, rows, rok, cols, C, stride_x):
    return tl.load(x_ptr + rows * stride_x + cols, mask=rok & (cols < C), other=0).to(tl.int32)


@triton.jit
def _ln_store(y, factor, rows, rok, cols, C, b_ptr, c_ptr, bias_ptr, out_ptr, stride_out, b2_ptr, c2_ptr, out2_ptr,
              stride_out2, LO: tl.constexpr, HI: tl.constexpr, KEEP: tl.constexpr, RQ: tl.constexpr,
              NARROW: tl.constexpr, RQ_MODE: tl.constexpr):
    """The affine requant of y = x - mean: ((y factor) >> 1) (unit variance times 2^30 / sqrt(C)) * b + bias,
    stored where KEEP; with RQ also those codes requantized by (b2, c2) per channel to int8 (IntArith.rq, the next
    linear's input) into out2, so that no pass reads the LayerNorm's output back for it.
    NARROW (every shift c >= 33, a host fact: ln_narrow): y and factor int32, and y factor fits int32, since
    |y| <= isqrt(var) <= k (var is a sum of squares that holds y^2; Newton from above keeps k >= isqrt(var)), so
    |y factor| <= k floor((2^31 - 1) / k); then core b + bias is one 32 x 32 -> 64-bit multiply-add (|core| < 2^30,
    |b| < 2^31, |bias| < 2^51) whose high word is rounded and shifted on 32 bits (_hi_word_rq). RQ_MODE > 0: the
    int8 requant of the 16-bit codes on 32 bits as well (hi_word_modes); 0: int64."""
    cok = cols < C
    if NARROW:
        core = (y * factor) >> 1
        b = tl.load(b_ptr + cols, mask=cok, other=0).to(tl.int32)
        acc = core.to(tl.int64) * b + tl.load(bias_ptr + cols, mask=cok, other=0)
        v = _hi_word_rq(acc, tl.load(c_ptr + cols, mask=cok, other=33).to(tl.int32))
    else:
        core = (y.to(tl.int64) * factor) >> 1
        acc = core * tl.load(b_ptr + cols, mask=cok, other=0) + tl.load(bias_ptr + cols, mask=cok, other=0)
        v = _requant(acc, tl.load(c_ptr + cols, mask=cok, other=1))
    v = tl.minimum(tl.maximum(v, LO), HI)
    if KEEP:
        tl.store(out_ptr + rows * stride_out + cols, v.to(out_ptr.dtype.element_ty), mask=rok & cok)
    if RQ:
        if RQ_MODE > 0:
            b2 = tl.load(b2_ptr + cols, mask=cok, other=0).to(tl.int32)
            v2 = _hi_word_term(v.to(tl.int32), b2, c2_ptr, cols, cok, b2_ptr, False, RQ_MODE)
        else:
            v2 = _requant(v.to(tl.int64) * tl.load(b2_ptr + cols, mask=cok, other=0),
                          tl.load(c2_ptr + cols, mask=cok, other=1))
        tl.store(out2_ptr + rows * stride_out2 + cols, tl.minimum(tl.maximum(v2, -128), 127).to(tl.int8),
                 mask=rok & cok)


@triton.jit
def _layernorm_kernel(x_ptr, b_ptr, c_ptr, bias_ptr, out_ptr, b2_ptr, c2_ptr, out2_ptr, M, C, stride_x, stride_out,
                      stride_out2, LO: tl.constexpr, HI: tl.constexpr, SBITS: tl.constexpr, QBITS: tl.constexpr,
                      RBITS: tl.constexpr, ITERATIONS: tl.constexpr, MEAN_M: tl.constexpr, MEAN_SH: tl.constexpr,
                      MEAN_K: tl.constexpr, ONE_CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
                      STAGES: tl.constexpr, KEEP: tl.constexpr, RQ: tl.constexpr, NARROW: tl.constexpr,
                      RQ_MODE: tl.constexpr):
    # BLOCK_M rows per program. ONE_CHUNK (C <= BLOCK_C): x is loaded once and kept in registers (int32); else the
    # columns go in chunks of BLOCK_C, twice: the sums, then the output. x is int32 (|x| < 2^(in_bits-1), the sum
    # < 2^31: ln_chain_bits); the variance is sum x^2 - m (2 sum x - C m) = sum (x - m)^2, both sums in one pass.
    # A chunk's loads are used at once, so a warp waits out the memory latency each chunk; STAGES > 1 has Triton
    # prefetch STAGES - 1 chunks through shared memory (LDGSTS on sm_90, 12-20% more SASS: kernel_regs.py --sweep).
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None]
    rok = rows < M
    if ONE_CHUNK:
        cols = tl.arange(0, BLOCK_C)[None, :]
        x = _ln_load(x_ptr, rows, rok, cols, C, stride_x)
        total, sq = tl.sum(x, 1), tl.sum(x.to(tl.int64) * x, 1)
    else:
        s1 = tl.zeros((BLOCK_M, BLOCK_C), tl.int32)
        s2 = tl.zeros((BLOCK_M, BLOCK_C), tl.int64)
        for c0 in tl.range(0, C, BLOCK_C, num_stages=STAGES):
            xc = _ln_load(x_ptr, rows, rok, c0 + tl.arange(0, BLOCK_C)[None, :], C, stride_x)
            s1 += xc
            s2 += xc.to(tl.int64) * xc
        total, sq = tl.sum(s1, 1), tl.sum(s2, 1)
    total = total.to(tl.int64)
    mean = _ln_mean(total, C, SBITS, MEAN_M, MEAN_SH, MEAN_K)  # (BLOCK_M,), rows as the reduction left them
    var = sq - mean * (2 * total - C * mean)
    # The reductions leave each row's sums in every thread that held part of the row (all 32 lanes of a warp at
    # 128 columns), and ops on them run in every one of those, one chain per row a thread holds. Gathered by an
    # identity index, var takes the index's 1-D layout, one row a lane, so the chain runs once a warp. Triton's
    # layout pass would move straight-line code back into the reduction's layout (it did with the Newton steps
    # unrolled); it never rematerializes a while loop (canBeRemat), so _ln_factor's Newton loop is one. kernel_regs.py
    # at (8, 128, 4), int32 chain: 75 -> 57 SASS executed per value; at 4 rows x 1024, 8 warps: 358 -> 136.
    factor = _ln_factor(tl.gather(var, tl.arange(0, BLOCK_M), 0), QBITS, RBITS, ITERATIONS)[:, None]
    if not NARROW:
        factor = factor.to(tl.int64)
    mean = mean.to(tl.int32)[:, None]
    if ONE_CHUNK:
        _ln_store(x - mean, factor, rows, rok, cols, C, b_ptr, c_ptr, bias_ptr, out_ptr, stride_out, b2_ptr, c2_ptr,
                  out2_ptr, stride_out2, LO, HI, KEEP, RQ, NARROW, RQ_MODE)
    else:
        for c0 in tl.range(0, C, BLOCK_C, num_stages=STAGES):
            cols = c0 + tl.arange(0, BLOCK_C)[None, :]
            y = _ln_load(x_ptr, rows, rok, cols, C, stride_x) - mean
            _ln_store(y, factor, rows, rok, cols, C, b_ptr, c_ptr, bias_ptr, out_ptr, stride_out, b2_ptr, c2_ptr,
                      out2_ptr, stride_out2, LO, HI, KEEP, RQ, NARROW, RQ_MODE)


@triton.jit
def _embed_term(ids_ptr, codes_ptr, b_ptr, c_ptr, stride_codes, rows, rok, cols, ok, LO: tl.constexpr,
                HI: tl.constexpr):
    idx = tl.load(ids_ptr + rows, mask=rok, other=0).to(tl.int64)
    code = tl.load(codes_ptr + idx * stride_codes + cols, mask=ok, other=0).to(tl.int64)
    v = _requant(code * tl.load(b_ptr + idx, mask=rok, other=0), tl.load(c_ptr + idx, mask=rok, other=1))
    return tl.minimum(tl.maximum(v, LO), HI)


@triton.jit
def _embed_kernel(i0, t0, b0, c0, i1, t1, b1, c1, i2, t2, b2, c2, out_ptr, R, H, s0, s1, s2, stride_out,
                  LO: tl.constexpr, HI: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr):
    # word + position + token-type rows, each requantized by its table row's multiplier (IntArith.embed_sum)
    rows, cols, ok = _tile(tl.program_id(0), tl.program_id(1), R, H, BLOCK_R, BLOCK_H)
    rok = rows < R
    v = _embed_term(i0, t0, b0, c0, s0, rows, rok, cols, ok, LO, HI)
    v += _embed_term(i1, t1, b1, c1, s1, rows, rok, cols, ok, LO, HI)
    v += _embed_term(i2, t2, b2, c2, s2, rows, rok, cols, ok, LO, HI)
    v = tl.minimum(tl.maximum(v, LO), HI)
    tl.store(out_ptr + rows * stride_out + cols, v.to(out_ptr.dtype.element_ty), mask=ok)


# --- launchers --------------------------------------------------------------------------------------------------
def out_dtype(bits: int) -> torch.dtype:
    """The narrowest signed integer dtype that holds bits-bit codes: int8 for codes that feed a GEMM, int16 for the
    16-bit residual stream and GELU inputs (half the bytes of int32 to write and read back), int32 above."""
    return torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32


def channel_dyadic(m: Dyadic, n: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(b, c) as contiguous int64 (n,) vectors, or None when m is not per-tensor or per-last-channel."""
    if m.b.dim() > 1 or m.b.numel() not in (1, n) or m.c.dim() > 1 or m.c.numel() not in (1, n):
        return None
    return tuple(t.to(device=device, dtype=torch.int64).reshape(-1).expand(n).contiguous() for t in (m.b, m.c))


# Launch tiles, measured on the H100 (benchmarks/intonly_gpu.py --sweep): values are int64 inside the kernels, so
# large tiles cost registers and occupancy (4096-value tiles needed 110-255 registers a thread).
# elementwise kernels: (values per program, warps); layernorm: (rows per program, column chunk, warps, software
# pipeline stages of the column loops, 1 = none); shiftmax: (values per program, warps), at least one whole row.
# Defaults = the sweep's picks at BERT-base batch 32 x 128 (H100, 2026-11-23, code of 3fbf9a2: the 32-bit GEMM
# requantization, the int32 I-LayerNorm chain once a warp, int16 16-bit codes, the GELU in FC1's epilogue;
# `benchmarks/intonly_gpu.py --sweep --sweep-large 32x384 --models bert-base,vit-b16 --batches 32 --seqs 128,384`);
# the whole forward moved 1-5% between options (the earlier run at 788bfb4 preferred (8, 64, 2, 3) for layernorm,
# within the same noise). layernorm since the sweep at 32 x 384 with the 32-bit affine requant (code of 289c49e,
# `intonly_gpu.py --sweep-at 32x384:layernorm`): (16, 128, 4, 1), forward 7.655 ms against 7.808 for (8, 128, 4, 1)
# and up to 11.08 (sm_90: 80 registers, 48 SASS executed a value, against 61).
TILES: dict[str, tuple[int, ...]] = {"requant": (1024, 8), "gelu": (1024, 8), "layernorm": (16, 128, 4, 1),
                                     "shiftmax": (1024, 4)}


def _block_m(block_n: int, values: int) -> int:
    """Rows per program so that a tile holds about ``values`` values (at least one row)."""
    return max(1, min(64, values // block_n))


_NARROW = (torch.int8, torch.uint8, torch.int16, torch.int32)


def hi_word_modes(m: Dyadic, bias: torch.Tensor | None, term2: tuple[torch.Tensor, Dyadic] | None,
                  z: torch.Tensor | None = None) -> tuple[int, int]:
    """(HI_WORD, HI_WORD2) of _rq_value for the first term (z, or a GEMM's int32 accumulator when z is None, times m)
    and the second (term2), from host-side facts only (no device read: the forward is captured in CUDA graphs):
    2 where the plan's bound z_bits leaves room to shift z + lin_bias left to a shift of 33 on 32 bits
    (z_bits + 33 - c_min <= 31), 1 where every shift of a nonzero multiplier is >= 33 already (Dyadic.c_min) and the
    term has at most 32 bits, and (0, 0) (the int64 path) when either term has neither or there is a bias at shift
    precision. Calibrated BERT-base: Q/K/V c = 37-38; FC1 (16-bit out), the residual sums' terms c = 29-32 with
    z_bits 16-26, so they take mode 2."""
    def mode(d: Dyadic, t: torch.Tensor | None) -> int:
        if d.c_min is None:
            return 0
        if d.z_bits is not None and d.z_bits + max(0, 33 - d.c_min) <= 31:
            return 2
        return 1 if d.c_min >= 33 and (t is None or t.dtype in _NARROW) else 0

    m1 = mode(m, z) if bias is None else 0
    m2 = mode(term2[1], term2[0]) if term2 is not None else 1
    return (m1, m2) if m1 and m2 else (0, 0)


def _rows(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1])
    return x if x.stride(-1) == 1 else x.contiguous()


def requant(z: torch.Tensor, m: Dyadic, bits: int, bias: torch.Tensor | None = None,
            term2: tuple[torch.Tensor, Dyadic] | None = None, lin_bias: torch.Tensor | None = None
            ) -> torch.Tensor | None:
    """clamp(round_half_up(((z + lin_bias) * b + bias) / 2^c), qrange(bits)) over the last dim of z (lin_bias: a
    linear's INT32 bias not yet added; bias: at shift precision); with ``term2 = (z2, m2)``,
    clamp(clamp(rq(z), bits+1) + clamp(rq(z2), bits+1), bits). None when the shapes are outside the kernel's
    (multipliers not per tensor / per last-dim channel, or z2 shaped unlike z): the caller takes the torch path."""
    n = z.shape[-1]
    bc = channel_dyadic(m, n, z.device)
    bc2 = channel_dyadic(term2[1], n, z.device) if term2 is not None else bc
    if bc is None or bc2 is None or (term2 is not None and term2[0].shape != z.shape) \
            or any(t is not None and t.numel() != n for t in (bias, lin_bias)):
        return None
    z2d = _rows(z)
    z2 = _rows(term2[0]) if term2 is not None else z2d
    out = torch.empty(z2d.shape, dtype=out_dtype(bits), device=z.device)
    bias_t, lin_t = (t.to(device=z.device, dtype=torch.int64).reshape(-1).contiguous() if t is not None else bc[0]
                     for t in (bias, lin_bias))
    lo, hi = qrange(bits)
    lo1, hi1 = qrange(bits + 1)
    values, warps = TILES["requant"]
    block = min(values, triton.next_power_of_2(n))
    bm, rows = _block_m(block, values), z2d.shape[0]
    grid = (triton.cdiv(rows, bm), triton.cdiv(n, block))
    modes = hi_word_modes(m, bias, term2, z)
    _rq_kernel[grid](z2d, bc[0], bc[1], bias_t, lin_t, z2, bc2[0], bc2[1], out, rows, n, z2d.stride(0), z2.stride(0),
                     out.stride(0), lo, hi, lo1, hi1, bias is not None, lin_bias is not None, term2 is not None,
                     *modes, bm, block, num_warps=warps)
    return out.reshape(z.shape)


def divc_magic(d: int, amax: int) -> tuple[int, int]:
    """(M, SH) with floor(a M / 2^SH) = floor(a / d) for integers 0 <= a <= amax (the multiply that replaces a
    division by a constant d; host arithmetic). M = ceil(2^SH / d) = (2^SH + eps) / d with 0 <= eps < d, so
    a M / 2^SH = a / d + a eps / (d 2^SH): below a / d + 1 / d once a eps < 2^SH, and a / d is at most 1 - 1/d
    below the next integer."""
    sh = 0
    while amax * (-(-(1 << sh) // d) * d - (1 << sh)) >= 1 << sh:
        sh += 1
    return -(-(1 << sh) // d), sh


def gelu_i32(op) -> tuple[int, int] | None:
    """(DIV_M, DIV_SH) of _gelu_sigmoid_i32 for ShiftGELU ``op``, or None when its int32 bounds fail (the kernel
    then takes the int64 path): 2 <= out_bits <= n, and _quot_steps' int32 register, below the denominator (at most
    |X0| (2^K + 2)) times 2^K, within 2^31: |X0| < 32520 at K = 8, i.e. input scale > 1.8e-5."""
    x0, k = -op.exp.x0, op.out_bits
    if not (2 <= k <= op.exp.n and x0 * ((1 << k) + 2) << k <= 2**31):
        return None
    m, sh = divc_magic(x0, (k - 1) * x0)
    return (m, sh) if m < 2**31 else None


def gelu_newton_quotients(x: int, k: int, two_sided: bool) -> np.ndarray:
    """_gelu_quot_newton's results for every (m, q), m in [x + 1, 2x] and q in [0, k - 1], shape (k, x), computed
    with the kernel's int32 operations on int64 numpy arrays (gelu_i32's magic for x); raises OverflowError where an
    intermediate leaves int32."""
    f, a0, b0 = GELU_NEWTON
    div_m, div_sh = divc_magic(x, (k - 1) * x)
    m = np.arange(x + 1, 2 * x + 1, dtype=np.int64)[None, :]
    q = np.arange(k, dtype=np.int64)[:, None]
    if div_sh + 1 < f:
        steps = [(m * div_m) << (f - 1 - div_sh)]
        e = steps[-1] >> q
    else:
        e = (m * div_m) >> (div_sh + 1 - f + q)  # int32 or widening (the kernel picks by 2 x div_m)
        steps = [e]
    steps.append((a0 << f) - e * b0)
    y = steps[-1] >> f
    steps.append(((1 << f) + e) * y)
    t = steps[-1] >> f
    steps.append(y * ((2 << f) - t))
    y = steps[-1] >> f
    s = ((1 << f) - y) >> (f - k + 1)
    d = m + ((2 * x) << q)
    steps.append(s * d)
    r = (m << (k - 1)) - steps[-1]
    s = s - (r < 0) + ((r >= d) if two_sided else 0)
    if any(np.abs(v).max() >= 2**31 for v in steps + [r, d]):
        raise OverflowError("gelu_newton_quotients: an intermediate leaves int32")
    return s


@functools.lru_cache(maxsize=None)
def gelu_mode(x0: int, k: int) -> int:
    """I32 of _gelu_value for a ShiftGELU with X0 = x0 and k output bits (gelu_i32's bounds hold): 2 or 3 where
    _gelu_quot_newton with the one- or two-sided correction equals the quotient floor(m 2^(k-1) / (m + |x0|
    2^(q+1))) for every m and q (checked here exhaustively, at most k 2^15 pairs), else 1 (_quot_steps)."""
    x = -x0
    m = np.arange(x + 1, 2 * x + 1, dtype=np.int64)[None, :]
    q = np.arange(k, dtype=np.int64)[:, None]
    want = (m << (k - 1)) // (m + ((2 * x) << q))
    for mode in (2, 3):
        try:
            if np.array_equal(gelu_newton_quotients(x, k, mode == 3), want):
                return mode
        except OverflowError:
            break
    return 1


def shiftmax_i32(op, score_bits: int, block_t: int) -> tuple[int, int, int, int] | None:
    """(DIV_M, DIV_SH, RS, RBITS) of the int32 Shiftmax path, or None when a bound fails (int64 path):
    scores of at most 30 bits (x - max and 1.4375 x fit int32), E0 = |X0| 2^n < 2^31 (the exponential fits int32:
    |X0| < 65536 at n = 15), RS + k + 1 <= 62 (_ratio_i32's products fit int64) and RBITS + k + 1 <= 31
    (R << (k+1) fits int32).
    RS: 2^RS > E0 (2^(k+1) + block_t) >= any dividend e 2^(k+1) + total of a row of at most block_t keys.
    RBITS: 2E0 2^RBITS > 2^RS, so floor(2^RS / (2 total)) has RBITS bits for every total >= E0."""
    x0, n, k = -op.exp.x0, op.exp.n, op.out_bits
    e0 = x0 << n
    if not (score_bits <= 30 and n >= 1 and e0 < 2**31):
        return None
    m, sh = divc_magic(x0, n * x0)
    rs = (e0 * ((2 << k) + block_t)).bit_length()
    rbits = next(r for r in range(rs + 1) if (2 * e0) << r > 1 << rs)
    return (m, sh, rs, rbits) if m < 2**31 and rs + k + 1 <= 62 and rbits + k + 1 <= 31 else None


def deferred_i32(op, score_bits: int) -> tuple[int, int, bool, int, int] | None:
    """(DIV_M, DIV_SH, DIV_WIDE, U_MUL, U_SH) of _weights_i32 for a deferred Shiftmax ``op``, or None when it has no
    int32 kernel (an i-exp op, scores over 30 bits, or |X0| (K + 3) >= 2^31). DIV_WIDE: a DIV_M reaches 2^31 for
    some a <= (K + 1) |X0| (fine score scales), so the quotient takes a widening multiply."""
    from lowbit.intonly.ops import ShiftExp

    if not isinstance(op.exp, ShiftExp) or score_bits > 30:
        return None
    x0, k = -op.exp.x0, op.out_bits
    u, us = op.exp.weight_multiplier(k)
    if u < 1 or (k + 3) * x0 >= 2**31:
        return None
    m, sh = divc_magic(x0, (k + 1) * x0)
    return (m, sh, (k + 1) * x0 * m >= 2**31, u, us) if m < 2**31 else None


def shiftmax(z: torch.Tensor, m: Dyadic, score_bits: int, op, mask: torch.Tensor | None) -> torch.Tensor | None:
    """Probabilities (int8, scale 2^-out_bits) of INT32 scores z (B, H, Tq, T): requantize with the per-tensor
    m to score_bits, then ``op`` (an ops.IntSoftmax with a ShiftExp). mask: None or (B, 1, 1, T) 0/1 keys.
    None when the multiplier is not per tensor or the mask has another shape (torch path)."""
    b, h, tq, t = z.shape
    if m.b.numel() != 1 or op.out_bits > 7 or (mask is not None and tuple(mask.shape) != (b, 1, 1, t)):
        return None
    rows = z.reshape(b, h * tq, t)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    rq = torch.stack([m.b.reshape(()), m.c.reshape(())]).to(device=z.device, dtype=torch.int64)
    keys = mask.reshape(b, t) if mask is not None else rq
    out = torch.empty((b, h * tq, t), dtype=torch.int8, device=z.device)
    e = op.exp
    lo, hi = qrange(score_bits)
    div_abits = bits_for(e.bound()) + op.out_bits + 2
    block_t = max(16, triton.next_power_of_2(t))
    values, warps = TILES["shiftmax"]
    bm = _block_m(block_t, values)
    fast = shiftmax_i32(op, score_bits, block_t)
    _shiftmax_kernel[(triton.cdiv(h * tq, bm), b)](
        rows, rq, keys, out, t, h * tq, rows.stride(0), rows.stride(1), keys.stride(0), out.stride(0), out.stride(1),
        lo, hi, e.x0, e.n, bits_for(-e.n * e.x0), bits_for(e.n), op.out_bits, div_abits, mask is not None,
        fast is not None, *(fast or (1, 0, 0, 0)), bm, block_t, num_warps=warps)
    return out.reshape(b, h, tq, t)


def shift_gelu(x: torch.Tensor, op, m: Dyadic, bits: int) -> torch.Tensor | None:
    """``op`` (ops.ShiftGELU) of x (..., N), requantized per channel by m to bits (the next linear's input)."""
    n = x.shape[-1]
    bc = channel_dyadic(m, n, x.device)
    if bc is None:
        return None
    x2d = _rows(x)
    out = torch.empty(x2d.shape, dtype=out_dtype(bits), device=x.device)
    values, warps = TILES["gelu"]
    block = min(values, triton.next_power_of_2(n))
    bm, rows = _block_m(block, values), x2d.shape[0]
    _shift_gelu_kernel[(triton.cdiv(rows, bm), triton.cdiv(n, block))](
        x2d, bc[0], bc[1], out, rows, n, x2d.stride(0), out.stride(0), *gelu_consts(op, m, bits), bm, block,
        num_warps=warps)
    return out.reshape(x.shape)


def gelu_consts(op, m: Dyadic, bits: int) -> tuple[int, ...]:
    """The constexprs of _gelu_value after (b_ptr, c_ptr): (LO, HI, X0, N_EXP, EXP_ABITS, EXP_QBITS, E0, OUT_BITS,
    DIV_ABITS, I32, DIV_M, DIV_SH, RQ) for ShiftGELU ``op`` requantized by m to bits. I32: 0 the int64 path, else
    gelu_mode's (1 the int32 long division, 2-3 the estimated and corrected quotient)."""
    e, e0 = op.exp, op.exp.bound()
    fast = gelu_i32(op)
    rq = hi_word_modes(m, None, None)[0]  # mode 1 would not bound |x * factor| (z_bits): int64 then
    mode = gelu_mode(e.x0, op.out_bits) if fast is not None else 0
    return (*qrange(bits), e.x0, e.n, bits_for(-e.n * e.x0), bits_for(e.n), e0, op.out_bits, bits_for(e0) + op.out_bits,
            mode, *(fast or (1, 0)), rq if rq == 2 else 0)


def ln_mean_magic(in_bits: int, c: int) -> tuple[int, int, int]:
    """(M, SH, K) of _ln_mean's multiply for |x| <= 2^(in_bits-1), or (0, 0, 0) (long division) when the product
    could leave int64. a = 2 total + C is in [C - C 2^in_bits, C + C 2^in_bits], so with K = 2^(in_bits-1) + 1,
    a + 2C K is in [3C, amax = C (2^(in_bits+1) + 3)], floor((a + 2C K) / 2C) = floor(a / 2C) + K, and
    divc_magic(2C, amax) is exact on [0, amax]."""
    k, amax = (1 << (in_bits - 1)) + 1, c * ((2 << in_bits) + 3)
    m, sh = divc_magic(2 * c, amax)
    return (m, sh, k) if amax * m < 1 << 63 else (0, 0, 0)


# rows per program shrink (halving) while a launch has fewer programs than the H100's 132 SMs (BERT-base batch 1:
# 128 rows, one a program); the swept tile stays the upper bound (it is swept at 4096 rows).
# A tile of at most LN_ONE_CHUNK values that holds whole rows loads x once (8-16 values a thread).
LN_FILL_PROGRAMS, LN_ONE_CHUNK = 132, 4096


def ln_tile(rows: int, c: int) -> tuple[int, int, int, int, bool]:
    """(rows per program, column chunk, warps, pipeline stages, one chunk) of the I-LayerNorm launch for rows x c."""
    bm0, block, warps, stages = TILES["layernorm"]
    bm = bm0
    while bm > 1 and triton.cdiv(rows, bm) < LN_FILL_PROGRAMS:
        bm //= 2
    full = triton.next_power_of_2(c)
    if bm * full <= LN_ONE_CHUNK:
        return bm, full, max(1, min(8, bm * full // 256)), 1, True
    return bm, min(full, max(block, bm0 * block // bm)), warps, stages, False  # the swept tile's values


def ln_chain_bits(in_bits: int, c: int, iterations: int) -> tuple[int, int] | None:
    """(QBITS, RBITS) of _ln_factor's int32 chain for rows of C = c codes in [-2^(in_bits-1), 2^(in_bits-1)), or None
    when a bound fails. var = sum (x - m)^2 = sum (x - mu)^2 + C (mu - m)^2 <= vmax = C ((2^in_bits - 1)^2 + 1) / 4
    (C values in a range R spread at most C R^2 / 4 around their mean mu, and the rounded mean m is within 1/2 of
    mu; half the codes at each end reach vmax). Newton from above keeps k >= s = isqrt(var) after its first step,
    so a quotient is at most var / s <= s + 2 (var <= s^2 + 2s): QBITS = bits(isqrt(vmax) + 2), 20 at 16 bits and
    C = 768 where ops.newton_bits' bound gives 23. k never exceeds the first step's k1 + 1 (it falls while above
    s + 1, then stays at s or s + 1), and k1 + 1 < 2^29 keeps every remainder in int32. A step never takes k below
    floor(k / 2), from k1 >= 2^15, so k >= 2^(16 - iterations) and the reciprocal floor((2^31 - 1) / k) has
    RBITS = 31 - max(0, 16 - iterations) bits (25 at 10 iterations). The row sum in int32 needs C 2^(in_bits-1)
    <= 2^31."""
    vmax = c * ((2**in_bits - 1) ** 2 + 1) // 4
    if c << (in_bits - 1) > 2**31 or ((1 << 16) + (vmax >> 16)) >> 1 >= 2**29 - 1:
        return None
    return (math.isqrt(vmax) + 2).bit_length(), 31 - max(0, 16 - iterations)


def layernorm(x: torch.Tensor, ln, m: Dyadic, bias: torch.Tensor, bits: int, rq: Dyadic | None = None,
              keep: bool = True):
    """I-LayerNorm ``ln`` (ops.LayerNormInt) of x (..., C) and its affine requantization (m, bias per channel);
    None (torch path) when the kernel's int32 bounds fail (ln_chain_bits).

    With ``rq`` (a per-tensor or per-channel multiplier): also ``INT.rq(<those codes>, rq, None, 8)``, the int8
    input of the linear that reads the LayerNorm's output, from the same kernel; returns (codes or None where not
    ``keep``, int8 codes), or None where the kernel does not cover the operands."""
    c = ln.channels
    bc = channel_dyadic(m, c, x.device)
    bc2 = channel_dyadic(rq, c, x.device) if rq is not None else bc
    if bc is None or bc2 is None or x.shape[-1] != c or bias.numel() != c:
        return None
    if ln.iterations < 1:
        raise ValueError(f"I-LayerNorm needs at least one Newton iteration, got {ln.iterations}")
    chain = ln_chain_bits(ln.in_bits, c, ln.iterations)
    if chain is None:
        return None
    x2d = _rows(x)
    keep = keep or rq is None
    out = torch.empty(x2d.shape if keep else (1, 1), dtype=out_dtype(bits), device=x.device)
    out2 = torch.empty(x2d.shape if rq is not None else (1, 1), dtype=torch.int8, device=x.device)
    lo, hi = qrange(bits)
    bias = bias.to(device=x.device, dtype=torch.int64).reshape(-1).contiguous()
    rows = x2d.shape[0]
    bm, block, warps, stages, one = ln_tile(rows, c)
    narrow = m.c_low is not None and m.c_low >= 33 and bias.numel() > 0  # host facts only (graph capture)
    rq_mode = hi_word_modes(replace(rq, z_bits=bits), None, None)[0] if rq is not None else 0  # |codes| <= 2^(bits-1)
    _layernorm_kernel[(triton.cdiv(rows, bm),)](x2d, bc[0], bc[1], bias, out, bc2[0], bc2[1], out2, rows, c,
                                                x2d.stride(0), out.stride(0), out2.stride(0), lo, hi,
                                                ln.in_bits + bits_for(c), *chain, ln.iterations,
                                                *ln_mean_magic(ln.in_bits, c), one, bm, block, stages, keep,
                                                rq is not None, narrow, rq_mode, num_warps=warps)
    if rq is None:
        return out.reshape(x.shape)
    return (out.reshape(x.shape) if keep else None), out2.reshape(x.shape)


def embed_sum(terms, bits: int) -> torch.Tensor | None:
    """IntArith.embed_sum for exactly three lookups (BERT's word, position and token-type tables) whose multipliers
    are per table row; None otherwise (torch path)."""
    if len(terms) != 3:
        return None
    shape, h = terms[0][2].shape, terms[0][0].shape[1]
    args = []
    for codes, m, idx in terms:
        v = codes.shape[0]
        if idx.shape != shape or codes.shape[1] != h or codes.stride(1) != 1 or m.b.shape != (v,) \
                or m.c.shape != (v,):
            return None
        args += [idx.reshape(-1).contiguous(), codes, m.b.to(torch.int64), m.c.to(torch.int64)]
    rows = args[0].numel()
    out = torch.empty((rows, h), dtype=out_dtype(bits), device=args[0].device)
    lo, hi = qrange(bits)
    values, warps = TILES["requant"]
    block = min(values, triton.next_power_of_2(h))
    br = _block_m(block, values)
    _embed_kernel[(triton.cdiv(rows, br), triton.cdiv(h, block))](
        *args, out, rows, h, *(t[0].stride(0) for t in terms), out.stride(0), lo, hi, br, block, num_warps=warps)
    return out.reshape(*shape, h)

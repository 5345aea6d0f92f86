"""The kernel backend of the integer graph: INT8 tensor-core GEMMs and fused integer nonlinearity kernels
(:mod:`lowbit.kernels.intonly`, :mod:`lowbit.kernels.intonly_gemm`), bit-exact with :data:`~lowbit.intonly.dyadic.INT`.

``IntEncoder`` picks it for a model on a CUDA device (``model.cuda()`` moves the integer constants); on the CPU
it runs only under Triton's interpreter (``TRITON_INTERPRET=1``, for tests) and must be asked for by name
(``backend="kernel"``). Steps the kernels do not cover (I-BERT's polynomial i-exp / i-GELU, per-row embedding
multipliers) run the torch integer code on int64, which also works on CUDA; integer *matmuls* have no torch CUDA
path, so every GEMM goes through the int8 kernels.
"""
from __future__ import annotations

import os

import torch

from lowbit.intonly.dyadic import INT, Dyadic, IntArith, IntegerOnlyError
from lowbit.intonly.ops import ShiftExp, ShiftGELU


class KernelArith(IntArith):
    """IntArith with the composite steps (``embed_sum``, ``rq``, ``rq_sum``, ``linear``, ``linear_rq``,
    ``linear_rq_sum``, ``softmax``, ``attention``, ``gelu_rq``, ``layernorm``, ``layernorm_rq``) and the attention
    matmuls run as kernels. Each kernel launcher returns None for a shape it does not cover, and the step then runs
    on :data:`INT` with int64 operands, or as its parts (same result; elementwise torch integer ops run on CUDA
    too)."""

    name = "kernel"
    # the linears' INT32 bias goes into the requantization that consumes the product, and a calibrated linear
    # followed by a requantization is one GEMM with the requantization in its epilogue (linear_rq, linear_rq_sum)
    fuses_bias = True

    def __init__(self) -> None:
        from lowbit.kernels import intonly, intonly_gemm

        self.k, self.gemm = intonly, intonly_gemm

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # the graph's matmul operands are int8 codes (q, k, v at 8 bits; probabilities at <= 7 bits)
        return self.gemm.bmm(a.to(torch.int8), b.to(torch.int8))

    def linear(self, x: torch.Tensor, codes: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.gemm.int_linear(x, codes, bias)

    def linear_rq(self, x: torch.Tensor, codes: torch.Tensor, lin_bias: torch.Tensor, m: Dyadic, bits: int
                  ) -> torch.Tensor:
        out = self.gemm.linear_rq(x, codes, lin_bias, m, bits)
        return out if out is not None else super().linear_rq(x, codes, lin_bias, m, bits)

    def linear_gelu_rq(self, x: torch.Tensor, codes: torch.Tensor, lin_bias: torch.Tensor, m: Dyadic, bits: int,
                       op, m3: Dyadic, bits3: int) -> torch.Tensor:
        out = self.gemm.linear_rq(x, codes, lin_bias, m, bits, gelu=(op, m3, bits3)) \
            if isinstance(op, ShiftGELU) else None
        return out if out is not None else super().linear_gelu_rq(x, codes, lin_bias, m, bits, op, m3, bits3)

    def linear_rq_sum(self, x: torch.Tensor, codes: torch.Tensor, lin_bias: torch.Tensor, m: Dyadic,
                      term2: tuple[torch.Tensor, Dyadic], bits: int) -> torch.Tensor:
        out = self.gemm.linear_rq(x, codes, lin_bias, m, bits, term2=term2)
        return out if out is not None else super().linear_rq_sum(x, codes, lin_bias, m, term2, bits)

    def embed_sum(self, terms, bits: int) -> torch.Tensor:
        out = self.k.embed_sum(terms, bits)
        return out if out is not None else INT.embed_sum(terms, bits)

    def rq(self, z: torch.Tensor, m: Dyadic, bias: torch.Tensor | None, bits: int) -> torch.Tensor:
        out = self.k.requant(z, m, bits, bias)
        return out if out is not None else INT.rq(z.long(), m, bias, bits)

    def rq_linear(self, z: torch.Tensor, m: Dyadic, bias: torch.Tensor, bits: int) -> torch.Tensor:
        out = self.k.requant(z, m, bits, lin_bias=bias)
        return out if out is not None else INT.rq_linear(z.long(), m, bias, bits)

    def rq_sum(self, terms: list[tuple[torch.Tensor, Dyadic]], bits: int,
               bias0: torch.Tensor | None = None) -> torch.Tensor:
        out = self.k.requant(*terms[0], bits, term2=terms[1], lin_bias=bias0) if len(terms) == 2 else None
        return out if out is not None else INT.rq_sum([(z.long(), m) for z, m in terms], bits, bias0)

    def key_mask(self, mask: torch.Tensor) -> torch.Tensor:
        # int8 (kept: > 0): the attention kernels test one byte a key instead of an int64 (two compares on sm_90)
        return (mask > 0).to(torch.int8)

    def softmax(self, op, z: torch.Tensor, m: Dyadic, bits: int, mask: torch.Tensor | None) -> torch.Tensor:
        out = self.k.shiftmax(z, m, bits, op, mask) if isinstance(op.exp, ShiftExp) and z.dim() == 4 else None
        return out if out is not None else INT.softmax(op, z.long(), m, bits, mask)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m_scores: Dyadic, op, score_bits: int,
                  mask: torch.Tensor | None, m_ctx: Dyadic, bits: int) -> torch.Tensor:
        out = None
        if isinstance(op.exp, ShiftExp) and q.dim() == 4:
            out = self.gemm.attention(*(x.to(torch.int8) for x in (q, k, v)), m_scores, op, score_bits, mask, m_ctx,
                                      bits)
        return out if out is not None else super().attention(q, k, v, m_scores, op, score_bits, mask, m_ctx, bits)

    def gelu_rq(self, op, x: torch.Tensor, m: Dyadic, bits: int) -> torch.Tensor:
        out = self.k.shift_gelu(x, op, m, bits) if isinstance(op, ShiftGELU) else None
        return out if out is not None else INT.gelu_rq(op, x.long(), m, bits)

    def layernorm(self, ln, x: torch.Tensor, m: Dyadic, bias: torch.Tensor, bits: int) -> torch.Tensor:
        out = self.k.layernorm(x, ln, m, bias, bits)
        return out if out is not None else INT.layernorm(ln, x.long(), m, bias, bits)

    def layernorm_rq(self, ln, x: torch.Tensor, m: Dyadic, bias: torch.Tensor, bits: int, m2: Dyadic,
                     keep: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        out = self.k.layernorm(x, ln, m, bias, bits, rq=m2, keep=keep)
        return out if out is not None else super().layernorm_rq(ln, x, m, bias, bits, m2, keep)


def kernel_arith(device: torch.device, prob_bits: int) -> KernelArith:
    """The kernel backend for a model on ``device``.

    Raises:
        IntegerOnlyError: Triton missing, a CPU device without TRITON_INTERPRET=1, or prob_bits = 8 (uint8
            probabilities do not fit the int8 P·V GEMM).
    """
    if prob_bits > 7:
        raise IntegerOnlyError(f"the kernel backend needs IntConfig.prob_bits <= 7 (int8 P·V GEMM), got {prob_bits}")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise IntegerOnlyError(f"the kernel backend runs on CUDA (or on the CPU under TRITON_INTERPRET=1); the model "
                               f"is on {device}: move it with .cuda() or use backend='int'")
    try:
        return KernelArith()
    except ImportError as e:
        raise IntegerOnlyError(f"the kernel backend needs Triton: {e}") from e

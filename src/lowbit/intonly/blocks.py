"""Integer-only BERT-family encoder (I-BERT / I-ViT dataflow, PAPERS.md §5-6) built from a lowbit or float model.

Dataflow of one (post-LN) BERT layer; ``rq`` is a dyadic requantization, ``[b]`` a b-bit integer:

    h[16] ─rq→ x[8] ─GEMM→ q,k,v[32] ─rq→ [8] ─QKᵀ→ [32] ─rq (1/√d folded)→ s[8|16] ─Shiftmax→ p[7]
      p·v[32] ─rq→ [8] ─GEMM(o)→ [32] ─rq→ [16] + rq(h)[16] ─I-LN→ h'[16] ─rq→ [8] ─GEMM(fc1)→ [32]
      ─rq→ [16] ─ShiftGELU→ ─rq→ [8] ─GEMM(fc2)→ [32] ─rq→ [16] + rq(h')[16] ─I-LN→ h''[16]

Embeddings: int8 tables with one scale per row; word + position + type are requantized (per-row dyadic,
gathered by id) to one 16-bit scale and added, then I-LN. GEMMs take int8 codes and INT32 bias
``round(b / (S_x S_w))``; weights and linear-input scales come from the lowbit model
(:data:`INTONLY_SCHEME`: int8 per-channel weights, int8 per-tensor static activations) or, for float
``nn.Linear`` layers, are set here (MSE input scale; with ``IntConfig.smooth`` a SmoothQuant factor per input
channel inside the requantization, the most accurate configuration: BENCHMARKS.md, issue-7 section). The other scales
(GEMM outputs, scores, residual sums, LayerNorm outputs) are calibrated here with the quantized graph in the
loop: one pass of the float64 simulation over the calibration tokens sets each scale from the values that
reach it (max |x|, or a percentile).

The same code runs on :data:`~lowbit.intonly.dyadic.INT` (integer-only) and ``SIM`` (its float64 twin), so
``integer_forward(INT)`` and ``integer_forward(SIM)`` return identical codes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from lowbit.intonly.dyadic import INT, SIM, Dyadic, IntegerOnlyError, bits_for, dyadic, mantissa_bits, qrange
from lowbit.intonly.ops import IGELU, IntSoftmax, LayerNormInt, ShiftGELU
from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import QuantSpec, Scheme

# MSE-clipped static activation ranges: measured on MiniLM (32 SST sentences, fake-quant only) embedding cosine
# 0.9827 vs 0.9802 with min-max; percentile 99.99 gave 0.9652.
INTONLY_SCHEME = Scheme("w8a8-int8-static", QuantSpec("int8", "channel"), QuantSpec("int8", "tensor", observer="mse"))

# Ops the float64 simulation can replace by float, one at a time, to find which integer op costs accuracy
# (benchmarks/intonly_ablate.py). "rq:<point>" skips the rounding and clamping of one family of
# requantization points (the value passes through at full precision); the others use the exact function.
# migration strengths tried per linear input by IntConfig(smooth="auto"); None = no smoothing (t = 1)
SMOOTH_GRID = (None, 0.25, 0.5, 0.75, 0.9, 1.0)

FLOAT_OPS = ("softmax", "gelu", "layernorm", "rq:x", "rq:x2", "rq:ctx", "rq:x3", "rq:qkv", "rq:scores",
             "rq:gelu.in", "rq:res")


@dataclass(frozen=True)
class IntConfig:
    """Bit widths and nonlinearity variants of the integer graph.

    Args:
        softmax: "shift" (I-ViT Shiftmax) or "poly" (I-BERT i-exp).
        deferred_norm: True: P·V runs on prob_bits-bit weights relative to each row's maximum and the context is
            divided by their row total once (ops.IntSoftmax, deferred); False: on normalised prob_bits-bit
            probabilities (the papers; IVIT_PAPER).
        gelu: "shift" (I-ViT ShiftGELU) or "poly" (I-BERT i-GELU).
        score_bits: attention scores entering the softmax.
        prob_bits: softmax output (7 keeps P in int8 for the P·V GEMM).
        gelu_in_bits: FC1 output entering the GELU.
        residual_bits: residual stream and LayerNorm outputs (I-ViT QuantAct16).
        percentile: calibrated scales cover this percentile of |x| (100 = max).
        smooth: SmoothQuant's migration strength alpha for the int8 linear inputs, folded into the integer
            graph (see ``IntEncoder._smooth``); None keeps one per-tensor scale per input (I-BERT / I-ViT):
            a lowbit-quantized model's, or the MSE-calibrated one for float linears. A number or "auto"
            needs float linears (the graph quantizes W·diag(t) itself).

    The defaults (smooth="auto", 16-bit scores) are the most accurate setting measured: MiniLM embedding cosine
    0.9941 vs 0.9789 with the I-ViT paper's per-tensor int8 inputs and 8-bit scores (:data:`IVIT_PAPER`), 500
    held-out sentences (BENCHMARKS.md, issue-7 section); with the deferred normalisation 0.9940 there, and 0.99394
    vs 0.99398 normalised on all 2000 (the GPU attention is then 1.8x faster at 384 tokens). They need a float
    model (the graph quantizes the weights); for a lowbit-quantized (e.g. QAT) model use ``IVIT_PAPER``.
    """

    softmax: str = "shift"
    deferred_norm: bool = True
    gelu: str = "shift"
    score_bits: int = 16
    prob_bits: int = 7
    gelu_in_bits: int = 16  # MiniLM embedding cosine 0.975 at 16 vs 0.960 at 8 (32 SST sentences)
    residual_bits: int = 16
    percentile: float = 100.0
    smooth: float | str | None = "auto"

    def __post_init__(self) -> None:
        if not (self.smooth is None or self.smooth == "auto"
                or (isinstance(self.smooth, (int, float)) and 0.0 <= self.smooth <= 1.0)):
            raise IntegerOnlyError(f"IntConfig.smooth must be None, 'auto' or a number in [0, 1], got {self.smooth!r}")
        for k in ("softmax", "gelu"):
            if getattr(self, k) not in ("shift", "poly"):
                raise IntegerOnlyError(f"IntConfig.{k} must be 'shift' or 'poly', got {getattr(self, k)!r}")
        for k in ("score_bits", "gelu_in_bits", "residual_bits"):
            if not 4 <= getattr(self, k) <= 16:
                raise IntegerOnlyError(f"IntConfig.{k} must be in 4..16, got {getattr(self, k)}")
        if not 4 <= self.prob_bits <= 8:
            raise IntegerOnlyError(f"IntConfig.prob_bits must be in 4..8, got {self.prob_bits}")


# I-ViT / I-BERT's configuration: one per-tensor int8 scale per linear input (a lowbit model's, or MSE), 8-bit
# scores. Accepts a lowbit-quantized model; less accurate than the defaults (see IntConfig).
IVIT_PAPER = IntConfig(smooth=None, score_bits=8, deferred_norm=False)


@dataclass
class IntLinear:
    """int8 codes (N, K), per-channel weight scale, input scale, INT32 bias; output scale S_x * S_w."""

    codes: torch.Tensor  # (N, K) int8
    w_scale: torch.Tensor  # (N,) float64
    in_scale: float
    bias: torch.Tensor  # (N,) int64

    @classmethod
    def from_quant(cls, name: str, q: nn.Module) -> "IntLinear":
        if not isinstance(q, QuantLinear):
            raise IntegerOnlyError(f"{name} is {type(q).__name__}, not a QuantLinear: quantize the model with "
                                   "lowbit.intonly.INTONLY_SCHEME first (build_int_bert does it for you)")
        w, a = q.weight_spec, q.act_spec
        if (w.format, w.granularity, w.symmetric) != ("int8", "channel", True) or a is None or a.dynamic \
                or (a.format, a.granularity, a.symmetric) != ("int8", "tensor", True):
            raise IntegerOnlyError(f"{name}: integer-only inference needs int8 per-channel symmetric weights and "
                                   f"int8 per-tensor static symmetric activations; got W {w.describe()}, "
                                   f"A {a.describe() if a else 'none'} (use INTONLY_SCHEME)")
        s_x = float(q.act_scale)
        s_w = q.scale.reshape(-1).double()
        b = q.bias.double() if q.bias is not None else torch.zeros(q.out_features, dtype=torch.float64)
        bias = torch.round(b / (s_x * s_w)).to(torch.int64)
        if bias.abs().max() >= 2**31:
            raise IntegerOnlyError(f"{name}: the bias does not fit INT32 at scale S_x*S_w")
        return cls(q.qweight.to(torch.int8), s_w, s_x, bias)

    @classmethod
    def from_float(cls, name: str, w: torch.Tensor, b: torch.Tensor | None, in_scale: float) -> "IntLinear":
        """int8 per-output-channel absmax codes of a float weight (N, K) for inputs of scale ``in_scale``."""
        w = w.detach().double()
        s_w = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        codes = torch.round(w / s_w[:, None]).clamp(-127, 127).to(torch.int8)
        b = b.detach().double() if b is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        bias = torch.round(b / (in_scale * s_w)).to(torch.int64)
        if bias.abs().max() >= 2**31:
            raise IntegerOnlyError(f"{name}: the bias does not fit INT32 at scale S_x*S_w")
        return cls(codes, s_w, float(in_scale), bias)

    def __post_init__(self) -> None:
        # build-time constants (computing them per call would put float ops in the checked graph)
        self.out_scale = self.in_scale * self.w_scale
        self.out_bits = bits_for(self.codes.shape[1] * 128 * 128 + int(self.bias.abs().max()))

    def __call__(self, A, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        return A.linear(x, self.codes, self.bias if with_bias else None)  # (…, N) INT32


class IntEncoder(nn.Module):
    """The machinery every integer-only encoder shares: requantization points calibrated with the quantized
    graph in the loop, int8 linear layers (from a lowbit model or from float weights), I-LayerNorm, the
    attention and FFN blocks. Subclasses (:class:`IntBertModel`, :class:`lowbit.intonly.vit.IntViTModel`) add
    the embedding and the order of the blocks, and set ``max_tokens`` (bounds the P·V accumulator).
    """

    def __init__(self, hf_config, config: IntConfig, max_tokens: int) -> None:
        super().__init__()
        self.cfg, self.config, self.max_tokens = hf_config, config, max_tokens
        self.heads, self.hidden = hf_config.num_attention_heads, hf_config.hidden_size
        self.head_dim = self.hidden // self.heads
        # an int Parameter so next(model.parameters()).device works for the evaluation helpers
        self.anchor = nn.Parameter(torch.zeros(1, dtype=torch.int64), requires_grad=False)
        self.ln: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.linears: dict[str, IntLinear] = {}
        self.float_linears: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.scales: dict[str, float] = {}  # calibrated output scales, by requantization point
        self.plan: dict[str, object] = {}  # integer constants built from the scales
        self.calibrating = False
        self.float_ops: frozenset[str] = frozenset()
        self.smooth_alpha: dict[str, float | None] = {}  # chosen migration strength by first linear name

    def _backend(self, backend: str):
        """'int': the integer graph — fused kernels on a CUDA model, the torch integer code on the CPU;
        'kernel': the kernels wherever the model is (CPU needs TRITON_INTERPRET=1); 'sim': the float64 twin."""
        if backend not in ("int", "kernel", "sim"):
            raise IntegerOnlyError(f"backend must be 'int' (integer-only), 'kernel' (integer-only, fused kernels) or "
                                   f"'sim' (float64 twin), got {backend!r}")
        if self.float_ops and backend != "sim":
            raise IntegerOnlyError(f"ops {sorted(self.float_ops)} are replaced by float (ablate()); run with "
                                   "backend='sim' or call ablate() with no ops")
        if backend == "sim":
            return SIM
        if backend == "kernel" or self.anchor.device.type == "cuda":
            from lowbit.intonly.backend import kernel_arith

            return kernel_arith(self.anchor.device, self.config.prob_bits)
        return INT

    def _apply(self, fn, recurse=True):
        """``.to(device)`` / ``.cuda()`` also move the integer constants of the graph (weight codes, INT32 biases,
        dyadic multipliers, embedding codes); float tensors are calibration-only and stay where they are."""
        super()._apply(fn, recurse)
        for lin in self.linears.values():
            lin.codes, lin.bias = fn(lin.codes), fn(lin.bias)
        self.plan = {k: _map_ints(v, fn) for k, v in self.plan.items()}
        if hasattr(self, "tables"):
            self.tables = {k: (fn(c), s) for k, (c, s) in self.tables.items()}
        return self

    @torch.no_grad()
    def _calibrate_with(self, graph, *inputs) -> None:
        """One pass of the float64 simulation of ``graph(A, *inputs)`` sets every scale and builds every
        integer constant."""
        self.scales.clear()
        self.smooth_alpha.clear()
        self.plan.clear()
        self.calibrating = True
        try:
            graph(SIM, *inputs)
        finally:
            self.calibrating = False


    def _add_linear(self, key: str, name: str, mod: nn.Module) -> None:
        """A lowbit QuantLinear keeps its codes and input scale; a float nn.Linear is quantized by the graph
        at calibration (int8 per-output-channel weights, input scale by MSE, optionally smoothed)."""
        if type(mod) is nn.Linear:
            self.float_linears[key] = (mod.weight.detach(), None if mod.bias is None else mod.bias.detach())
        elif self.config.smooth is not None and isinstance(mod, QuantLinear):
            raise IntegerOnlyError(f"{name} is a lowbit QuantLinear: IntConfig.smooth builds the int8 weights "
                                   "itself from float nn.Linear layers; pass the float model, or use "
                                   "config=IVIT_PAPER (smooth=None) to use a lowbit-quantized model's weights")
        else:
            self.linears[key] = IntLinear.from_quant(name, mod)

    def ablate(self, *ops: str) -> "IntBertModel":
        """Replace the named ops (see :data:`FLOAT_OPS`) by float in the ``SIM`` backend; an ablation tool,
        not an inference mode (the ``INT`` backend refuses to run while any op is replaced)."""
        bad = [o for o in ops if o not in FLOAT_OPS]
        if bad:
            raise IntegerOnlyError(f"cannot ablate {bad}; known ops: {', '.join(FLOAT_OPS)}")
        self.float_ops = frozenset(ops)
        return self

    # --- requantization points ----------------------------------------------------------------------------
    def _calibrate_scale(self, key: str, real: torch.Tensor, bits: int) -> None:
        if key not in self.scales:
            if not self.calibrating:
                raise IntegerOnlyError(f"requantization point {key!r} has no scale: calibrate the model first")
            self.scales[key] = _scale_of(real, bits, self.config.percentile)

    def _plan_rq(self, key: str, z: torch.Tensor, in_scale, in_bits: int, bits: int) -> Dyadic:
        """The dyadic multiplier of requantization point `key` (calibrated and built on first use)."""
        if key not in self.plan:
            self._calibrate_scale(key, z * _t(in_scale, z), bits)
            self.plan[key] = replace(dyadic(torch.as_tensor(in_scale, dtype=torch.float64) / self.scales[key],
                                            mantissa_bits(in_bits)), z_bits=in_bits)
        return self.plan[key]

    def _float_rq(self, key: str) -> bool:
        return bool(self.float_ops) and f"rq:{_rq_family(key)}" in self.float_ops

    def _rq(self, A, key: str, z: torch.Tensor, in_scale, in_bits: int, bits: int) -> torch.Tensor:
        """Requantize z (real value z * in_scale) to a bits-bit code at the calibrated scale of `key`."""
        m = self._plan_rq(key, z, in_scale, in_bits, bits)
        if self._float_rq(key):
            return z * _t(in_scale, z) / self.scales[key]
        return A.rq(z, m, None, bits)

    def _linear_rq(self, A, key: str, lin: "IntLinear", x: torch.Tensor, bits: int) -> torch.Tensor:
        """lin(x) requantized at `key`; a backend that fuses the bias gets it into the requantization instead of
        a pass over the INT32 output, and runs the two as one GEMM with a requantizing epilogue (same integers)."""
        if A.fuses_bias and key in self.plan and not self._float_rq(key):
            return A.linear_rq(x, lin.codes, lin.bias, self.plan[key], bits)
        return self._rq(A, key, lin(A, x), lin.out_scale, lin.out_bits, bits)

    def _linear_term(self, A, lin: "IntLinear", x: torch.Tensor) -> tuple:
        """A residual-sum term (z, scale, bits, pending bias) of lin(x). On a backend that fuses the bias, z stays
        pending too, as a :class:`_Pending` (x, lin): ``_rq_sum`` runs the linear with the sum in its epilogue, or
        computes z where it needs the value (calibration, a missing plan, ablation)."""
        if A.fuses_bias:
            return _Pending(x, lin), lin.out_scale, lin.out_bits, lin.bias
        return lin(A, x), lin.out_scale, lin.out_bits, None

    def _rq_sum(self, A, key: str, terms, bits: int) -> torch.Tensor:
        """Requantize each (z, in_scale, in_bits[, pending bias]) term to the scale of `key` and add (I-ViT
        QuantAct with identity); the sum is clamped to bits."""
        terms = [tuple(t) + (None,) * (4 - len(t)) for t in terms]
        fused = (terms[0][3] is not None and all(t[3] is None for t in terms[1:]) and key in self.scales
                 and all(f"{key}.{j}" in self.plan for j in range(len(terms))) and not self._float_rq(f"{key}.0"))
        if fused:
            ms = [self.plan[f"{key}.{j}"] for j in range(len(terms))]
            z0 = terms[0][0]
            if isinstance(z0, _Pending) and len(terms) == 2:  # the linear and the sum: one GEMM
                return A.linear_rq_sum(z0.x, z0.lin.codes, terms[0][3], ms[0], (terms[1][0], ms[1]), bits)
            terms = [(_value(A, z), s, zb, b) for z, s, zb, b in terms]
            return A.rq_sum([(z, m) for (z, _, _, _), m in zip(terms, ms)], bits, bias0=terms[0][3])
        terms = [(_value(A, z), s, zb, b) for z, s, zb, b in terms]
        terms = [(z if b is None else z + A.tensor(b).to(z.device), s, zb) for z, s, zb, b in terms]
        if key not in self.scales:
            self._calibrate_scale(key, sum(z * _t(s, z) for z, s, _ in terms), bits)
            for j in range(len(terms)):
                self.scales[f"{key}.{j}"] = self.scales[key]
        ms = [self._plan_rq(f"{key}.{j}", z, s, b, bits + 1) for j, (z, s, b) in enumerate(terms)]
        if self._float_rq(f"{key}.0"):
            lo, hi = qrange(bits)
            return torch.clamp(sum(self._rq(A, f"{key}.{j}", z, s, b, bits + 1) for j, (z, s, b) in enumerate(terms)),
                               lo, hi)
        return A.rq_sum([(z, m) for (z, _, _), m in zip(terms, ms)], bits)

    def _op(self, key: str, build):
        if key not in self.plan:
            if not self.calibrating:
                raise IntegerOnlyError(f"op {key!r} was not built: calibrate the model first")
            self.plan[key] = build()
        return self.plan[key]

    def _layernorm(self, A, key: str, x: torch.Tensor, in_bits: int, s_x: float) -> tuple[torch.Tensor, float]:
        bits = self.config.residual_bits
        gamma, beta = self.ln[key]
        if "layernorm" in self.float_ops:
            y = torch.nn.functional.layer_norm(x * s_x, (self.hidden,), gamma.double(), beta.double(),
                                               self.cfg.layer_norm_eps)
            return y / self.scales[key], self.scales[key]
        ln = LayerNormInt(self.hidden, in_bits)
        if key not in self.plan:
            y = ln.core(A, x)
            self._calibrate_scale(key, y * ln.unit_scale * gamma.double() + beta.double(), bits)
            self.plan[key] = ln.affine(gamma, beta, self.scales[key], mantissa_bits(31))
        m, bias = self.plan[key]
        return A.layernorm(ln, x, m, bias, bits), self.scales[key]

    def _layernorm_in(self, A, key: str, x: torch.Tensor, in_bits: int, s_x: float, in_key: str | None,
                      keep: bool = True) -> tuple[torch.Tensor | None, float, torch.Tensor | None]:
        """_layernorm, and on a calibrated model also the int8 input ``in_key`` of the linear(s) that read its
        output, from the same step (A.layernorm_rq: one kernel on the kernel backend instead of a requantization
        pass reading the codes back). Returns (codes, scale, int8 codes or None where not fused); codes are None
        where not ``keep`` and fused (the caller needs only the int8 ones)."""
        if in_key is None or self.calibrating or key not in self.plan or in_key not in self.plan \
                or "layernorm" in self.float_ops or self._float_rq(in_key):
            return (*self._layernorm(A, key, x, in_bits, s_x), None)
        m, bias = self.plan[key]
        h, x8 = A.layernorm_rq(LayerNormInt(self.hidden, in_bits), x, m, bias, self.config.residual_bits,
                               self.plan[in_key], keep=keep)
        return h, self.scales[key], x8

    def _qkv_keys(self, p: str) -> tuple[tuple[str, ...], dict[str, str]]:
        """Q, K, V's linear names and the requantization key of each one's int8 input."""
        qkv = tuple(p + n for n in ("q", "k", "v"))
        if qkv[0] not in self.float_linears:  # one key per lowbit input scale (q, k, v calibrated apart may differ)
            return qkv, {n: f"{p}x.{self.linears[n].in_scale!r}" for n in qkv}
        return qkv, dict.fromkeys(qkv, p + "x")  # one smoothing vector for the three (max over the shared weights)

    def _attention_in_key(self, p: str) -> str | None:
        """The one int8 input key of layer p's Q, K and V (None where they differ: one LayerNorm output, three
        requantizations)."""
        keys = set(self._qkv_keys(p)[1].values())
        return keys.pop() if len(keys) == 1 else None

    def _linear_in(self, A, key: str, names: tuple[str, ...], z: torch.Tensor, in_scale, in_bits: int
                   ) -> torch.Tensor:
        """Requantize z (real value z * in_scale) to the int8 input shared by the linears ``names``."""
        if key not in self.scales:
            if names[0] not in self.float_linears:
                self.scales[key] = self.linears[names[0]].in_scale  # from lowbit's calibration
            elif not self.calibrating:
                raise IntegerOnlyError(f"linear input {key!r} has no scale: calibrate the model first")
            else:
                self.scales[key] = self._smooth(names, z * _t(in_scale, z))
        return self._rq(A, key, z, in_scale, in_bits, 8)

    def _smooth(self, names: tuple[str, ...], real: torch.Tensor) -> torch.Tensor:
        """SmoothQuant (Xiao et al. 2023, Eq. 4) inside the integer graph: per input channel k,
        t_k = max|X_k|^a / max|W_k|^(1-a); the producer's dyadic requantization divides channel k by t_k
        (a per-channel multiplier, still multiply-add-shift) and the weight columns are multiplied by t_k
        before their int8 per-output-channel quantization. BERT cannot fold t into its post-LN LayerNorm
        (the LN output also feeds the residual), but the integer graph requantizes the 16-bit residual
        stream separately for each linear input, so the per-channel factor costs nothing at run time.
        The per-tensor scale of X / t is the MSE-optimal clip (lowbit's observer). With smooth="auto" the
        migration strength is searched per linear input over :data:`SMOOTH_GRID` (None = no smoothing) by the
        squared error of the quantized GEMM output on the calibration tokens. Returns S * t, shape (K,)."""
        from lowbit.methods.equalize import smoothquant_scales
        from lowbit.quant.observers import choose_scale

        x = real.detach().reshape(-1, real.shape[-1]).double()  # (tokens, K)
        if x.shape[0] > 8192:  # enough tokens to rank the candidates; keeps calibration fast
            x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:8192]]
        ws = [self.float_linears[n] for n in names]
        w = torch.cat([w.double() for w, _ in ws])  # (sum N, K)
        alphas = SMOOTH_GRID if self.config.smooth == "auto" else (self.config.smooth,)  # (None,): t = 1
        best = None
        for a in alphas:
            t = torch.ones(x.shape[1], dtype=torch.float64) if a is None else \
                smoothquant_scales(x.abs().amax(0), w.abs().amax(0), a).double()
            s = float(choose_scale((x / t).reshape(1, -1), QuantSpec("int8", "tensor", observer="mse"))[0])
            err = float((_fake_int8(x / t, s) @ _fake_int8_rows(w * t).t() - x @ w.t()).pow(2).sum())
            if best is None or err < best[0]:
                best = (err, s, t, a)
        _, s, t, self.smooth_alpha[names[0]] = best
        for n, (w, b) in zip(names, ws):
            self.linears[n] = IntLinear.from_float(n, w.double() * t, b, s)
        return s * t

    def _attention(self, A, p: str, h: torch.Tensor, s_h: float, mask: torch.Tensor,
                   x_in: torch.Tensor | None = None):
        """x_in: Q/K/V's int8 input already made by the LayerNorm (_layernorm_in); h then only gives the shape."""
        b, t, _ = h.shape
        nh, d, c = self.heads, self.head_dim, self.config
        qkv, keys = self._qkv_keys(p)
        x = {keys[qkv[0]]: x_in} if x_in is not None else {}
        for n in qkv:
            if keys[n] not in x:
                x[keys[n]] = self._linear_in(A, keys[n], tuple(m for m in qkv if keys[m] == keys[n]), h, s_h,
                                             self.config.residual_bits)
        if A.fuses_bias and p + "qkv" in self.plan and not self._float_rq(qkv[0] + ".out"):
            # one GEMM for the three (their shared input): N = 3 x hidden fills the GPU better than three launches
            codes, bias, m = self.plan[p + "qkv"]
            z = A.linear_rq(x[keys[qkv[0]]], codes, bias, m, 8).reshape(b, t, 3, nh, d)
            heads = {n: z[:, :, j].transpose(1, 2) for j, n in enumerate(("q", "k", "v"))}  # (B, nh, T, d) views
        else:
            heads = {}
            for n in qkv:
                z = self._linear_rq(A, f"{n}.out", self.linears[n], x[keys[n]], 8)
                heads[n[len(p):]] = z.reshape(b, t, nh, d).transpose(1, 2)  # (B, nh, T, d)
        if self.calibrating and len(set(keys.values())) == 1:
            self.plan[p + "qkv"] = _concat_linears([self.linears[n] for n in qkv],
                                                   [self.plan[f"{n}.out"] for n in qkv])
        s_q, s_k, s_v = (self.scales[f"{p}{n}.out"] for n in ("q", "k", "v"))
        if not self.calibrating and p + "ctx" in self.plan and p + "scores" in self.plan \
                and not (self._float_rq(p + "ctx") or self._float_rq(p + "scores") or "softmax" in self.float_ops):
            # calibrated: the whole attention as one step (one kernel on the kernel backend); calibration takes the
            # steps below, whose intermediate values set the scales
            ctx8 = A.attention(heads["q"], heads["k"], heads["v"], self.plan[p + "scores"], self.plan[p + "softmax"],
                               c.score_bits, mask, self.plan[p + "ctx"], 8)  # (B, T, nh * d)
            return self._linear_term(A, self.linears[p + "o"], ctx8)
        scores = A.matmul(heads["q"], heads["k"].transpose(-1, -2))  # (B, nh, T, T) INT32
        s_scores, score_in_bits = s_q * s_k / math.sqrt(d), bits_for(d * 2**14)
        m = self._plan_rq(p + "scores", scores, s_scores, score_in_bits, c.score_bits)
        softmax = self._op(p + "softmax", lambda: IntSoftmax.build(self.scales[p + "scores"], c.softmax, c.prob_bits,
                                                                   deferred=c.deferred_norm))
        ctx_scale, ctx_bits = softmax.ctx_scale, softmax.ctx_bits(self.max_tokens)
        if "softmax" in self.float_ops:  # ablation (SIM): float probabilities times v, in 2^-prob_bits units
            real = self._rq(A, p + "scores", scores, s_scores, score_in_bits, c.score_bits) * self.scales[p + "scores"]
            probs = torch.softmax(real if mask is None else real.masked_fill(mask == 0, -math.inf), -1)
            ctx = A.matmul(probs / softmax.out_scale, heads["v"])
            probs_op = replace(softmax, deferred=False)
            ctx_scale, ctx_bits = probs_op.ctx_scale, probs_op.ctx_bits(self.max_tokens)
        elif softmax.deferred or self._float_rq(p + "scores"):
            ctx = softmax.context(A, self._rq(A, p + "scores", scores, s_scores, score_in_bits, c.score_bits),
                                  heads["v"], mask)
        else:  # requantize to score_bits, then softmax: one kernel on the kernel backend
            probs = A.softmax(softmax, scores, m, c.score_bits, mask)  # (B, nh, T, T), scale 2^-prob_bits
            ctx = A.matmul(probs, heads["v"])  # INT32
        ctx = ctx.transpose(1, 2).reshape(b, t, nh * d)
        ctx8 = self._linear_in(A, p + "ctx", (p + "o",), ctx, ctx_scale * s_v, ctx_bits)
        lin = self.linears[p + "o"]
        return self._linear_term(A, lin, ctx8)

    def _ffn(self, A, p: str, h: torch.Tensor, s_h: float, x_in: torch.Tensor | None = None):
        """x_in: FC1's int8 input (key p + "x2") already made by the LayerNorm (_layernorm_in), or None."""
        c = self.config
        x = x_in if x_in is not None else self._linear_in(A, p + "x2", (p + "fc1",), h, s_h, c.residual_bits)
        fc1 = self.linears[p + "fc1"]
        fused = (A.fuses_bias and p + "gelu.in" in self.plan and p + "x3" in self.plan and p + "gelu" in self.plan
                 and not ("gelu" in self.float_ops or self._float_rq(p + "x3") or self._float_rq(p + "gelu.in")))
        if fused:  # FC1, its requantization, the GELU and FC2's input requantization: one GEMM
            x3 = A.linear_gelu_rq(x, fc1.codes, fc1.bias, self.plan[p + "gelu.in"], c.gelu_in_bits,
                                  self.plan[p + "gelu"], self.plan[p + "x3"], 8)
            return self._linear_term(A, self.linears[p + "fc2"], x3)
        g_in = self._linear_rq(A, p + "gelu.in", fc1, x, c.gelu_in_bits)
        s_g = self.scales[p + "gelu.in"]
        gelu = self._op(p + "gelu", lambda: ShiftGELU.build(s_g) if c.gelu == "shift" else IGELU.build(s_g))
        if p + "x3" in self.plan and not ("gelu" in self.float_ops or self._float_rq(p + "x3")):
            x3 = A.gelu_rq(gelu, g_in, self.plan[p + "x3"], 8)  # GELU and FC2's input requant: one kernel
        else:  # calibration (FC2's input scale needs the GELU output) and ablation
            if "gelu" in self.float_ops:
                g = torch.nn.functional.gelu(g_in * s_g) / gelu.out_scale
            else:
                g = gelu(A, g_in)
            g_bits = c.gelu_in_bits + gelu.out_bits if c.gelu == "shift" else \
                c.gelu_in_bits + bits_for(2 * abs(gelu.one) + 2**16)
            x3 = self._linear_in(A, p + "x3", (p + "fc2",), g, gelu.out_scale, g_bits)
        fc2 = self.linears[p + "fc2"]
        return self._linear_term(A, fc2, x3)


class IntBertModel(IntEncoder):
    """Integer-only BERT encoder. ``forward`` accepts the HF BertModel arguments and returns
    ``last_hidden_state`` dequantized at the boundary; :meth:`integer_forward` is the integer graph.

    Build with :func:`build_int_bert`.
    """

    def __init__(self, qmodel: nn.Module, config: IntConfig) -> None:
        super().__init__(qmodel.config, config, qmodel.config.max_position_embeddings)
        emb = qmodel.embeddings
        self.tables = {k: _row_quant(getattr(emb, f"{k}_embeddings").weight)
                       for k in ("word", "position", "token_type")}
        self.ln["emb"] = (emb.LayerNorm.weight.detach(), emb.LayerNorm.bias.detach())
        for i, layer in enumerate(qmodel.encoder.layer):
            att, p = layer.attention, f"layer{i}."
            for n, mod in (("q", att.self.query), ("k", att.self.key), ("v", att.self.value),
                           ("o", att.output.dense), ("fc1", layer.intermediate.dense), ("fc2", layer.output.dense)):
                self._add_linear(p + n, f"encoder.layer.{i}.{n}", mod)
            self.ln[p + "ln1"] = (att.output.LayerNorm.weight.detach(), att.output.LayerNorm.bias.detach())
            self.ln[p + "ln2"] = (layer.output.LayerNorm.weight.detach(), layer.output.LayerNorm.bias.detach())
        self.layers = len(qmodel.encoder.layer)

    # --- the graph ------------------------------------------------------------------------------------------
    def integer_forward(self, A, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        token_type_ids: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(B, T) integer inputs -> (B, T, H) residual-stream codes and their scale."""
        bits = self.config.residual_bits
        # each LayerNorm also makes the next linear's int8 input where it can (_layernorm_in: x_in)
        h, s_h, x_in = self._embed(A, input_ids, token_type_ids)
        mask = attention_mask[:, None, None, :].to(torch.int64)  # (B, 1, 1, T) keys
        mask = A.key_mask(mask)
        for i in range(self.layers):
            p = f"layer{i}."
            a = self._attention(A, p, h, s_h, mask, x_in)
            r = self._rq_sum(A, p + "res1", [a, (h, s_h, bits)], bits)
            h, s_h, x_in = self._layernorm_in(A, p + "ln1", r, bits, self.scales[p + "res1"], p + "x2")
            f = self._ffn(A, p, h, s_h, x_in)
            r = self._rq_sum(A, p + "res2", [f, (h, s_h, bits)], bits)
            nxt = self._attention_in_key(f"layer{i + 1}.") if i + 1 < self.layers else None
            h, s_h, x_in = self._layernorm_in(A, p + "ln2", r, bits, self.scales[p + "res2"], nxt)
        return h, s_h

    def _embed(self, A, ids: torch.Tensor, types: torch.Tensor) -> tuple[torch.Tensor, float, torch.Tensor | None]:
        bits = self.config.residual_bits
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)[None].expand_as(ids)
        terms = []
        for k, idx in (("word", ids), ("position", pos), ("token_type", types)):
            codes, scale = self.tables[k]
            terms.append((k, codes[idx], scale, idx))
        key = "emb.sum"
        if key not in self.scales:
            self._calibrate_scale(key, sum(A.tensor(c) * s[i][..., None] for _, c, s, i in terms), bits)
        ms = [self._op(f"emb.{k}", lambda s=s: dyadic(s / self.scales[key], mantissa_bits(8))) for k, _, s, _ in terms]
        total = A.embed_sum([(self.tables[k][0], m, idx) for (k, _, _, idx), m in zip(terms, ms)], bits)
        return self._layernorm_in(A, "emb", total, bits, self.scales[key],
                                  self._attention_in_key("layer0.") if self.layers else None)

    # --- HF-compatible boundary -----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, backend: str = "int", **_) -> BaseModelOutput:
        """Run the integer graph and dequantize its output (the only float op, outside the graph)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h, s_h = self.integer_forward(self._backend(backend), input_ids, attention_mask, token_type_ids)
        return BaseModelOutput(last_hidden_state=h.float() * s_h)

    @torch.no_grad()
    def calibrate(self, batches: list[dict[str, torch.Tensor]]) -> "IntBertModel":
        """Set every output scale with the float64 simulation over the calibration tokens (one padded batch)."""
        self._calibrate_with(self.integer_forward, *_stack_batches(batches))
        return self


@dataclass(frozen=True)
class _Pending:
    """lin(x) without its bias, not computed yet (a residual-sum term the kernel backend fuses into the GEMM)."""

    x: torch.Tensor
    lin: IntLinear


def _concat_linears(lins: list[IntLinear], ms: list[Dyadic]) -> tuple[torch.Tensor, torch.Tensor, Dyadic]:
    """Weight codes, INT32 biases and per-output-channel multipliers of linears that share their input, stacked
    along N (Q, K and V as one GEMM: each output channel keeps its own codes, bias and multiplier, so the codes
    are those of the three apart)."""
    ns = [lin.codes.shape[0] for lin in lins]
    b, c = (torch.cat([getattr(m, f).reshape(-1).expand(n) for m, n in zip(ms, ns)]) for f in ("b", "c"))
    c_min = None if any(m.c_min is None for m in ms) else min(m.c_min for m in ms)
    z_bits = None if any(m.z_bits is None for m in ms) else max(m.z_bits for m in ms)
    return torch.cat([lin.codes for lin in lins]), torch.cat([lin.bias for lin in lins]), Dyadic(b, c, c_min, z_bits)


def _value(A, z) -> torch.Tensor:
    """z, computing a pending linear (without its bias)."""
    return z.lin(A, z.x, with_bias=False) if isinstance(z, _Pending) else z


def _fake_int8(x: torch.Tensor, s: float) -> torch.Tensor:
    return torch.round(x / s).clamp(-128, 127) * s


def _fake_int8_rows(w: torch.Tensor) -> torch.Tensor:
    s = (w.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)
    return torch.round(w / s).clamp(-127, 127) * s


def _rq_family(key: str) -> str:
    """The family of a requantization point: 'layer3.x.0.0123' -> 'x', 'layer0.q.out' -> 'qkv', 'layer1.res2.0' -> 'res'."""
    name = key.split(".", 1)[1] if key.startswith("layer") else key
    if name.startswith("x."):
        return "x"
    if name in ("q.out", "k.out", "v.out"):
        return "qkv"
    if name.startswith("res"):
        return "res"
    return name


def _map_ints(v, fn):
    """fn over the integer tensors in a plan entry (tensor, Dyadic, or tuple of them); anything else as is."""
    if isinstance(v, torch.Tensor):
        return v if v.is_floating_point() else fn(v)
    if isinstance(v, Dyadic):
        return replace(v, b=fn(v.b), c=fn(v.c))
    if isinstance(v, tuple):
        return tuple(_map_ints(x, fn) for x in v)
    return v


def _t(scale, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(scale, dtype=torch.float64, device=like.device)


def _scale_of(real: torch.Tensor, bits: int, percentile: float) -> float:
    a = real.detach().abs().double().reshape(-1)
    if percentile < 100:
        if a.numel() > 1 << 24:
            a = a[torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))[: 1 << 24]]
        amax = float(torch.quantile(a.float(), percentile / 100))
    else:
        amax = float(a.max())
    return max(amax, 1e-8) / qrange(bits)[1]


def _row_quant(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes of an embedding table with one symmetric scale per row (HAWQ/I-ViT convention)."""
    w = w.detach().double()
    s = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    return torch.round(w / s[:, None]).clamp(-128, 127).to(torch.int8), s


def _stack_batches(batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = [b if isinstance(b, dict) else {"input_ids": b} for b in batches]
    if not rows:
        raise IntegerOnlyError("calibration needs at least one batch")
    t = max(r["input_ids"].shape[1] for r in rows)

    def pad(x, value=0):
        return torch.nn.functional.pad(x, (0, t - x.shape[1]), value=value)

    ids = torch.cat([pad(r["input_ids"]) for r in rows])
    mask = torch.cat([pad(r.get("attention_mask", torch.ones_like(r["input_ids"]))) for r in rows])
    types = torch.cat([pad(r.get("token_type_ids", torch.zeros_like(r["input_ids"]))) for r in rows])
    return ids, mask, types


def build_int_bert(model: nn.Module, calib_batches, config: IntConfig = IntConfig(),
                   scheme: Scheme = INTONLY_SCHEME, progress: bool = False) -> IntBertModel:
    """An integer-only encoder from a BERT-family model.

    Args:
        model: a float BertModel; with the default config the integer graph quantizes its weights itself
            (smoothed int8 inputs). With ``config=IVIT_PAPER`` (smooth=None) it may also be one lowbit already
            quantized with ``scheme`` (e.g. after QAT); a float model is then quantized here with ``scheme`` on
            ``calib_batches`` (in place).
        calib_batches: list of dicts with input_ids / attention_mask / token_type_ids.
        config: bit widths and nonlinearity variants.
        scheme: the lowbit scheme for a float model (int8 per-channel weights, int8 per-tensor static inputs;
            the observer may differ).

    Raises:
        IntegerOnlyError: a model that is not BERT-like, or quantized with another scheme.
    """
    from lowbit.api import quantize

    if getattr(getattr(model, "config", None), "model_type", None) != "bert":
        raise IntegerOnlyError(f"{type(model).__name__}: integer-only blocks support BertModel encoders "
                               "(model_type 'bert'); got model_type "
                               f"{getattr(getattr(model, 'config', None), 'model_type', None)!r}")
    if config.smooth is None and not any(isinstance(m, QuantLinear) for m in model.modules()):
        quantize(model, scheme, calib_batches, progress=progress)
    return IntBertModel(model, config).calibrate(calib_batches).eval()

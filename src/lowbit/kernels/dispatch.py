"""Pick a kernel for a QuantLinear by (weight format, activation format, M) and run it.

`prepare(module)` derives, once, what the GPU path needs beyond the saved QTensor (the truth is never changed):
the row scale and per-group exponent shifts of ZeroQuant-FP M2 weights, a per-channel scale vector, and the
split-K tile counters. They are registered as non-persistent buffers (`_lb_*`), so they follow `.to()` and never
reach a checkpoint. The launch path is two registered ops (`lowbit::act_quant`, `lowbit::qgemm`): no host sync,
no allocation besides outputs and the split-K workspace, so it captures in CUDA graphs and is opaque to
torch.compile.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowbit.kernels import _tl
from lowbit.kernels.act_quant import FORMATS as ACT_FORMATS
from lowbit.kernels.act_quant import quantize_act
from lowbit.kernels.gemv import (A_CODES, DEQUANT_M, KINDS_4BIT, PERM_MIN_N, dequant_w4, gemv_w4, gemv_w4_perm,
                                 mma_w4_perm, permute_w4, use_gemv, use_perm_mma)
from lowbit.kernels.qgemm import qgemm
from lowbit.nn import qlinear
from lowbit.nn.qlinear import QuantLinear

W_KINDS = {("int8", True): _tl.INT8, ("fp8_e4m3", True): _tl.FP8, ("int4", True): _tl.INT4,
           ("int4", False): _tl.UINT4, ("fp4_e2m1", True): _tl.FP4}
A_KINDS = {"int8": _tl.INT8, "fp8_e4m3": _tl.FP8, "int4": _tl.INT4, "fp4_e2m1": _tl.FP4}
INT_KINDS = (_tl.INT8, _tl.INT4, _tl.UINT4)
GROUPS = (32, 64, 128, 256)


@dataclass(frozen=True)
class Plan:
    """How a layer runs on the GPU; None fields mean 'not used'."""

    a_fmt: str | None  # activation format, None for weight-only (A16)
    a_kind: int
    w_kind: int
    mode: int
    group: int


def plan_for(module: QuantLinear) -> Plan | str:
    """The kernel plan of a layer, or the reason it stays on the reference path."""
    ws, acts = module.weight_spec, module.act_spec
    w_kind = W_KINDS.get((ws.format, ws.symmetric))
    if w_kind is None:
        return f"no kernel for {ws.describe()} weights"
    if acts is None:
        a_kind, a_fmt = _tl.A16, None
    else:
        if acts.format not in A_KINDS or not acts.symmetric or acts.granularity not in ("token", "tensor"):
            return f"no kernel for {acts.describe()} activations"
        if acts.granularity == "tensor" and acts.dynamic:
            return "per-tensor dynamic activation scales need a global reduction: reference path"
        a_kind, a_fmt = A_KINDS[acts.format], acts.format
        if (a_kind in INT_KINDS) != (w_kind in INT_KINDS):
            return f"{acts.format} activations with {ws.format} weights share no tensor-core MMA"
    if ws.granularity in ("channel", "tensor"):
        if w_kind == _tl.UINT4:
            return "asymmetric per-channel int4: reference path"
        return Plan(a_fmt, a_kind, w_kind, _tl.PER_CHANNEL, 0)
    if ws.group_size not in GROUPS:
        return f"group size {ws.group_size} not in {GROUPS}"
    pow2 = ws.scale_rule == "pow2_row" and w_kind == _tl.FP4 and a_kind in (_tl.FP8, _tl.FP4)
    return Plan(a_fmt, a_kind, w_kind, _tl.POW2_ROW if pow2 else _tl.PER_GROUP, ws.group_size)


def prepare(module: QuantLinear) -> Plan | None:
    """Derive and attach the GPU-side buffers of one layer (idempotent). Returns its plan or None."""
    p = module.__dict__.get("_lb_plan")
    if p is not None and module.__dict__.get("_lb_src") == module.qweight.data_ptr():
        return p if isinstance(p, Plan) else None
    p = plan_for(module)
    if isinstance(p, Plan):
        n = module.out_features
        scale = module.scale
        if p.mode == _tl.PER_CHANNEL:
            sw = scale.float().reshape(-1).expand(n).contiguous()  # (N,) also for a per-tensor scale
            aux = None
        elif p.mode == _tl.POW2_ROW:
            row = scale.float().amax(dim=1)  # (N,)
            k = torch.round(torch.log2(row[:, None] / scale.float())).clamp(0, 8)  # (N, G)
            if not torch.equal(torch.ldexp(row[:, None], -k), scale.float()):  # e.g. scales from GPTQ
                p = Plan(p.a_fmt, p.a_kind, p.w_kind, _tl.PER_GROUP, p.group)
                sw, aux = scale, None
            else:
                sw, aux = row.contiguous(), k.to(torch.uint8).contiguous()
        else:
            sw = scale.contiguous()
            aux = module.zero.contiguous() if p.w_kind == _tl.UINT4 else None
        if p.w_kind in KINDS_4BIT and p.mode != _tl.PER_CHANNEL and n >= PERM_MIN_N:
            # decode copy in the permuted layout (gemv.permute_w4): + 1/4 of bf16 bytes of GPU memory per layer
            wp, sp, zp = permute_w4(module.qweight, module.scale, module.zero, p.group)
        else:
            wp = sp = zp = None
        module.register_buffer("_lb_wp", wp, persistent=False)
        module.register_buffer("_lb_sp", sp, persistent=False)
        module.register_buffer("_lb_zp", zp, persistent=False)
        module.register_buffer("_lb_sw", sw, persistent=False)
        module.register_buffer("_lb_aux", aux, persistent=False)
        module.register_buffer("_lb_cnt", torch.zeros(4 * triton_cdiv(n, 16), dtype=torch.int32,
                                                      device=scale.device), persistent=False)
    module.__dict__["_lb_plan"] = p
    module.__dict__["_lb_src"] = module.qweight.data_ptr()
    return p if isinstance(p, Plan) else None


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def prepare_model(model: nn.Module) -> dict[str, str]:
    """prepare() every QuantLinear; returns {name: reason} for layers left on the reference path."""
    skipped = {}
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear):
            p = prepare(mod)
            if p is None:
                skipped[name] = mod.__dict__["_lb_plan"]
    return skipped


def quant_linear_forward(module: QuantLinear, x: torch.Tensor) -> torch.Tensor | None:
    """The CUDA hook installed into QuantLinear: run the layer's kernels, or None for the reference path."""
    if torch.compiler.is_compiling():
        # Under torch.compile the plan cached by prepare() is used as is: re-validating it (data_ptr, the exact
        # pow2 check of M2 scales) is data-dependent and breaks fullgraph tracing.
        p = module.__dict__.get("_lb_plan")
        if p is None:
            raise RuntimeError("lowbit: call lowbit.kernels.prepare(model) once before torch.compile(model), so each "
                               "QuantLinear's kernel plan and GPU buffers exist before tracing")
        p = p if isinstance(p, Plan) else None
    else:
        p = prepare(module)
    if p is None or (p.a_kind == _tl.A16 and x.dtype not in (torch.float16, torch.bfloat16)):
        return None
    x2 = x.reshape(-1, module.in_features)
    y = _w4_paths(module, p, x2)
    if y is not None:
        return y.reshape(*x.shape[:-1], module.out_features)
    a, sa = _input_codes(module, p, x2)
    y = torch.ops.lowbit.qgemm(a, sa, module.qweight, module._lb_sw, module._lb_aux, module.bias, module._lb_cnt,
                               p.a_kind, p.w_kind, p.mode, p.group, module.out_features, module.in_features,
                               x.dtype)
    return y.reshape(*x.shape[:-1], module.out_features)


def _input_codes(module: QuantLinear, p: Plan, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The GEMM's A operand: x2 itself for weight-only layers, else its act_quant codes and per-token scales (the
    calibrated per-tensor scale where the scheme has one)."""
    if p.a_fmt is None:
        return x2, None
    static = module.act_scale if module.act_spec.granularity == "tensor" else None
    return torch.ops.lowbit.act_quant(x2, None, static, p.a_fmt)


def _w4_paths(module: QuantLinear, p: Plan, x2: torch.Tensor) -> torch.Tensor | None:
    """Group-wise 4-bit weights: the CUDA-core GEMV where `use_gemv` says it won (one token of a smaller W4A16
    layer); a few tokens, or one of W4A8 or of a large W4A16 layer (`use_perm_mma`), on the permuted copy: the
    small-M tensor-core kernel (W4A8 after act_quant); weight-only layers from DEQUANT_M
    tokens on: the weight dequantized once to the activation dtype, then cuBLAS (decoding nibbles in every
    tensor-core tile ran at 0.37x bf16 at M = 2048, BENCHMARKS.md). None: the tensor-core qgemm path."""
    if p.w_kind not in KINDS_4BIT or p.mode == _tl.PER_CHANNEL:
        return None
    m = x2.shape[0]
    n, k, weight_only = module.out_features, module.in_features, p.a_kind == _tl.A16
    if use_gemv(m, n, k, weight_only, permuted=module._lb_wp is not None) and p.a_kind in A_CODES:
        # W4A8 decode: the GEMV quantizes the token itself (same codes as act_quant, one launch fewer)
        static = module.act_scale if p.a_fmt is not None and module.act_spec.granularity == "tensor" else None
        if m == 1 and module._lb_wp is not None:
            return torch.ops.lowbit.gemv_w4_perm(x2, module._lb_wp, module._lb_sp, module._lb_zp, module.bias,
                                                 module._lb_cnt, static, p.a_kind, p.w_kind, p.group,
                                                 module.out_features, module.in_features, x2.dtype)
        return torch.ops.lowbit.gemv_w4(x2, module.qweight, module.scale, module.zero, module.bias, module._lb_cnt,
                                        static, p.a_kind, p.w_kind, p.group, module.out_features,
                                        module.in_features, x2.dtype)
    if use_perm_mma(m, n, k, weight_only) and module._lb_wp is not None and p.a_kind in A_CODES:
        # small M: one conversion per weight shared by the tokens through tl.dot on the permuted copy
        a, sa = _input_codes(module, p, x2)
        return torch.ops.lowbit.mma_w4_perm(a, sa, module._lb_wp, module._lb_sp, module._lb_zp, module.bias,
                                            module._lb_cnt, p.a_kind, p.w_kind, p.group, module.out_features,
                                            module.in_features, x2.dtype)
    if weight_only and m >= DEQUANT_M:
        w = torch.ops.lowbit.dequant_w4(module.qweight, module.scale, module.zero, p.w_kind, p.group,
                                        module.in_features, x2.dtype)
        return torch.nn.functional.linear(x2, w, module.bias)
    return None


# --- registered ops (torch.compile sees them as opaque; CUDA graphs capture the launches) ----------------------
@torch.library.custom_op("lowbit::act_quant", mutates_args=())
def _act_quant_op(x: torch.Tensor, smooth: torch.Tensor | None, static_scale: torch.Tensor | None,
                  fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_act(x, fmt, smooth, static_scale)


@_act_quant_op.register_fake
def _(x, smooth, static_scale, fmt):
    m, k = x.shape
    bits = ACT_FORMATS[fmt][1]
    dtype = torch.int8 if fmt == "int8" else torch.uint8
    return x.new_empty((m, k // 2 if bits == 4 else k), dtype=dtype), x.new_empty((m,), dtype=torch.float32)


# The split-K counters are scratch that every call returns to zero, so the op is declared pure.
@torch.library.custom_op("lowbit::qgemm", mutates_args=())
def _qgemm_op(a: torch.Tensor, a_scale: torch.Tensor | None, w: torch.Tensor, w_scale: torch.Tensor,
              aux: torch.Tensor | None, bias: torch.Tensor | None, counters: torch.Tensor | None, a_kind: int,
              w_kind: int, mode: int, group: int, n: int, k: int, out_dtype: torch.dtype) -> torch.Tensor:
    return qgemm(a, a_scale, w, w_scale, aux, bias, counters, a_kind, w_kind, mode, group, n, k, out_dtype)


@_qgemm_op.register_fake
def _(a, a_scale, w, w_scale, aux, bias, counters, a_kind, w_kind, mode, group, n, k, out_dtype):
    return a.new_empty((a.shape[0], n), dtype=out_dtype)


# The split-K counters are scratch left at zero by every call (as for qgemm), so the op is declared pure.
@torch.library.custom_op("lowbit::gemv_w4", mutates_args=())
def _gemv_w4_op(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, zero: torch.Tensor | None,
                bias: torch.Tensor | None, counters: torch.Tensor | None, static_scale: torch.Tensor | None,
                a_kind: int, w_kind: int, group: int, n: int, k: int, out_dtype: torch.dtype) -> torch.Tensor:
    """Float activations x; a_kind INT8/FP8 quantizes them per token (or by static_scale) inside the GEMV."""
    return gemv_w4(x, None, _tl.A16, w, w_scale, zero, bias, w_kind, group, n, k, out_dtype, counters=counters,
                   quantize=a_kind, static_scale=static_scale)


@_gemv_w4_op.register_fake
def _(x, w, w_scale, zero, bias, counters, static_scale, a_kind, w_kind, group, n, k, out_dtype):
    return x.new_empty((x.shape[0], n), dtype=out_dtype)


@torch.library.custom_op("lowbit::gemv_w4_perm", mutates_args=())
def _gemv_w4_perm_op(x: torch.Tensor, wp: torch.Tensor, sp: torch.Tensor, zp: torch.Tensor | None,
                     bias: torch.Tensor | None, counters: torch.Tensor | None, static_scale: torch.Tensor | None,
                     a_kind: int, w_kind: int, group: int, n: int, k: int, out_dtype: torch.dtype) -> torch.Tensor:
    """One token on the permuted weight copy; a_kind INT8/FP8 quantizes it inside the GEMV."""
    return gemv_w4_perm(x, wp, sp, zp, bias, w_kind, group, n, k, out_dtype, counters=counters, quantize=a_kind,
                        static_scale=static_scale)


@_gemv_w4_perm_op.register_fake
def _(x, wp, sp, zp, bias, counters, static_scale, a_kind, w_kind, group, n, k, out_dtype):
    return x.new_empty((1, n), dtype=out_dtype)


@torch.library.custom_op("lowbit::mma_w4_perm", mutates_args=())
def _mma_w4_perm_op(x: torch.Tensor, x_scale: torch.Tensor | None, wp: torch.Tensor, sp: torch.Tensor,
                    zp: torch.Tensor | None, bias: torch.Tensor | None, counters: torch.Tensor | None, a_kind: int,
                    w_kind: int, group: int, n: int, k: int, out_dtype: torch.dtype) -> torch.Tensor:
    """A few tokens on the permuted copy (tensor cores): float x (A16) or act_quant codes with their scales."""
    return mma_w4_perm(x, x_scale, a_kind, wp, sp, zp, bias, w_kind, group, n, k, out_dtype, counters=counters)


@_mma_w4_perm_op.register_fake
def _(x, x_scale, wp, sp, zp, bias, counters, a_kind, w_kind, group, n, k, out_dtype):
    return x.new_empty((x.shape[0], n), dtype=out_dtype)


@torch.library.custom_op("lowbit::dequant_w4", mutates_args=())
def _dequant_w4_op(w: torch.Tensor, w_scale: torch.Tensor, zero: torch.Tensor | None, w_kind: int, group: int,
                   k: int, dtype: torch.dtype) -> torch.Tensor:
    return dequant_w4(w, w_scale, zero, w_kind, group, k, dtype)


@_dequant_w4_op.register_fake
def _(w, w_scale, zero, w_kind, group, k, dtype):
    return w.new_empty((w.shape[0], k), dtype=dtype)


def enable() -> None:
    """Route QuantLinear.forward on CUDA tensors through the kernels."""
    qlinear.set_cuda_forward(quant_linear_forward)


def disable() -> None:
    """Back to the reference path everywhere."""
    qlinear.set_cuda_forward(None)

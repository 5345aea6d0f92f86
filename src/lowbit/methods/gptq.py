"""GPTQ: Hessian-based rounding of weights, one column at a time, onto any lowbit grid (INT or FP).

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers" (2022),
Algorithm 1 (lazy block updates + Cholesky of H^-1), as used by ZeroQuant-FP (PAPERS.md §4, "PTQ algorithm")
and by the BF16-or-death recipes W8A8-INT / W4A16 (PAPERS.md §7). H = 2/n sum x x^T over the layer's
calibration inputs; the quantization error of column i is spread onto the not yet quantized columns by the
row i of the upper Cholesky factor of H^-1.

Knobs (scheme.method_args["gptq"]): block_size (128), damp (0.01 of mean diag H), act_order (False),
static_groups (False: group scales are chosen when GPTQ reaches a group, on the updated weights; True: from
the original weights before GPTQ; forced by act_order and by the M2 scale rule, whose row scale needs every
group), device ("auto": CUDA if present; the model stays in CPU memory, one block goes to the device).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from lowbit.device import resolve_device
from lowbit.errors import CalibrationError, SchemeError
from lowbit.formats import FPFormat
from lowbit.methods import MethodContext, register_method
from lowbit.methods.sequential import sequential_blocks
from lowbit.nn.qlinear import _linear_weight
from lowbit.quant.observers import choose_scale, constrain_scales
from lowbit.quant.qtensor import QTensor, group_view, quantize_weight
from lowbit.scheme import QuantSpec

DAMP_ESCALATION = (1.0, 10.0, 100.0)  # multiples of `damp` tried before giving up on a Hessian


class HessianError(CalibrationError):
    """The Hessian stayed non positive definite under every damping tried."""


@dataclass(frozen=True)
class GPTQArgs:
    block_size: int = 128
    damp: float = 0.01
    act_order: bool = False
    static_groups: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise SchemeError(f"gptq block_size must be >= 1, got {self.block_size}")
        if not self.damp > 0:
            raise SchemeError(f"gptq damp must be > 0 (a fraction of the mean Hessian diagonal), got {self.damp}")


def method_args(scheme, name: str, cls):
    """Typed arguments of a method from `scheme.method_args`, with the allowed keys in the error."""
    kwargs = scheme.method_kwargs(name)
    try:
        return cls(**kwargs)
    except TypeError:
        allowed = ", ".join(cls.__dataclass_fields__)
        raise SchemeError(f"method_args[{name!r}] has unknown keys {sorted(kwargs)}; allowed: {allowed}") from None


# --- the maths ----------------------------------------------------------------------------------------------
def accumulate_hessian(h: torch.Tensor | None, n: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Running H = 2/n sum_t x_t x_t^T over the rows of x (…, K); returns (H, n). float32."""
    x = x.reshape(-1, x.shape[-1]).float()  # (T, K)
    t = x.shape[0]
    if h is None:
        h = torch.zeros(x.shape[1], x.shape[1], device=x.device)
    h.mul_(n / (n + t))
    x = x * (2 / (n + t)) ** 0.5
    h.addmm_(x.t(), x)
    return h, n + t


def fake_quant_column(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, spec: QuantSpec) -> torch.Tensor:
    """decode(encode(w)) for one column (N,) with per-row scale s (N,): equal to `observers.fake_quant`, without
    its host synchronisation (GPTQ calls it once per column)."""
    fmt = spec.fmt
    if isinstance(fmt, FPFormat):
        return fmt.round(w / s) * s
    zz = 0 if z is None else z
    return (torch.clamp(torch.round(w / s) + zz, fmt.qmin, fmt.qmax) - zz) * s


def initial_scales(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N|1, G) scales (and zeros) of w as round-to-nearest would choose them; group scales rounded to the
    bf16 values the checkpoint stores."""
    n = w.shape[0]
    rows = group_view(w, spec)
    s, z = choose_scale(rows, spec)
    groups = rows.shape[0] // (1 if spec.granularity == "tensor" else n)
    s = constrain_scales(s.reshape(-1, groups), spec.scale_rule)
    if spec.granularity == "group":
        s = s.to(torch.bfloat16).float()
    return s, None if z is None else z.reshape(-1, groups)


def inverse_cholesky(h: torch.Tensor, damp: float, name: str = "weight") -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + d*mean(diag H)*I)^-1 and the d used, escalating d through
    DAMP_ESCALATION.

    Raises:
        CalibrationError: H holds NaN/Inf.
        HessianError: H + d*mean(diag)*I is not positive definite for every d tried.
    """
    if not torch.isfinite(h).all():
        raise CalibrationError(f"{name}: the GPTQ Hessian holds NaN or Inf; check the calibration inputs")
    mean_diag = torch.diag(h).mean().clamp(min=1e-8)
    eye = torch.eye(h.shape[0], device=h.device)
    for mult in DAMP_ESCALATION:
        d = damp * mult
        chol, info = torch.linalg.cholesky_ex(h + d * mean_diag * eye)
        if int(info) == 0:
            u, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
            if int(info) == 0 and torch.isfinite(u).all():
                return u, d
    raise HessianError(
        f"{name}: the GPTQ Hessian is not positive definite even with damping {damp * DAMP_ESCALATION[-1]:g} "
        "x its mean diagonal (too few or degenerate calibration inputs); give more calibration tokens, or raise "
        "method_args gptq.damp")


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, spec: QuantSpec, block_size: int = 128, damp: float = 0.01,
                  act_order: bool = False, static_groups: bool = False, name: str = "weight"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """GPTQ (Frantar et al. 2022, Alg. 1) of a (N, K) weight with Hessian H (K, K) onto the spec's grid.

    Returns:
        (q, scale, zero, damp_used): q (N, K) float32 values on the grid (scale * decoded codes), the scales
        (N|1, G) and zeros (or None) to store them with, and the damping that made H positive definite.

    Raises:
        CalibrationError / HessianError: see `inverse_cholesky`.
    """
    w = w.detach().float().clone()
    h = h.detach().float().clone()
    n, k = w.shape
    dead = torch.diag(h) == 0  # inputs that were always 0: any weight is exact there
    h[dead, dead] = 1
    w[:, dead] = 0
    g = {"tensor": k, "channel": k}.get(spec.granularity) or spec.group_size
    static = spec.granularity != "group" or static_groups or act_order or spec.scale_rule == "pow2_row"
    scale, zero = initial_scales(w, spec) if static else (torch.empty(n, k // g, device=w.device), None)
    if not spec.symmetric and not static:
        zero = torch.empty(n, k // g, device=w.device)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    hinv, d = inverse_cholesky(h, damp, name)
    q = torch.zeros_like(w)
    order = perm.tolist()  # host copy: indexing a CUDA tensor per column would synchronise every column
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1, err1 = w[:, i1:i2].clone(), torch.zeros(n, i2 - i1, device=w.device)
        for i in range(i2 - i1):
            col = order[i1 + i]
            if not static and col % g == 0:
                src = w1[:, i:i + g] if i + g <= i2 - i1 else w[:, i1 + i:i1 + i + g]
                s, z = initial_scales(src, QuantSpec(spec.format, "channel", None, spec.symmetric,
                                                     observer=spec.observer, percentile=spec.percentile,
                                                     scale_rule=spec.scale_rule))
                scale[:, col // g] = s[:, 0].to(torch.bfloat16).float()
                if z is not None:
                    zero[:, col // g] = z[:, 0]
            gi = 0 if scale.shape[1] == 1 else col // g
            s_col = scale[:, gi] if scale.shape[0] == n else scale[0, gi].expand(n)
            z_col = None if zero is None else (zero[:, gi] if zero.shape[0] == n else zero[0, gi].expand(n))
            qc = fake_quant_column(w1[:, i], s_col, z_col, spec)
            q[:, i1 + i] = qc
            e = (w1[:, i] - qc) / hinv[i1 + i, i1 + i]
            w1[:, i:] -= e[:, None] * hinv[i1 + i, i1 + i:i2][None]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    inv = torch.argsort(perm)
    return q[:, inv], scale, zero, d


# --- orchestration ------------------------------------------------------------------------------------------
class _Sites:
    """Hessians per input site: layers fed the same tensor (q/k/v, gate/up) share one Hessian."""

    def __init__(self) -> None:
        self.site_of: dict[str, str] = {}
        self.h: dict[str, torch.Tensor] = {}
        self.n: dict[str, int] = {}
        self._last: tuple[torch.Tensor, str] | None = None

    def observe(self, name: str, x: torch.Tensor) -> None:
        if name not in self.site_of:
            same = self._last is not None and self._last[0] is x
            self.site_of[name] = self.site_of[self._last[1]] if same else name
        self._last = (x, name)
        site = self.site_of[name]
        if site != name:
            return  # accumulated by the site's first layer
        if not torch.isfinite(x).all():
            raise CalibrationError(f"the input of {name} holds NaN or Inf during GPTQ calibration; check the "
                                   "calibration data and the model in full precision first")
        self.h[site], self.n[site] = accumulate_hessian(self.h.get(site), self.n.get(site, 0), x)


def _set_weight(module: nn.Module, q: torch.Tensor) -> None:
    w = _linear_weight(module)
    w.data.copy_(q.to(w.dtype))  # Conv1D: _linear_weight is a transposed view, so copy_ writes through


def _quantize_site(names: list[str], modules: dict[str, nn.Module], specs: dict[str, QuantSpec], h: torch.Tensor,
                   args: GPTQArgs, ctx: MethodContext, originals: dict[str, torch.Tensor]) -> None:
    """GPTQ of the layers sharing one Hessian and one spec, stacked by rows (GPTQ treats rows independently)."""
    ws = [_linear_weight(modules[n]).detach() for n in names]
    spec = specs[names[0]]
    w = torch.cat([x.float() for x in ws])  # (sum N, K)
    try:
        q, scale, zero, d = gptq_quantize(w, h, spec, args.block_size, args.damp, args.act_order,
                                          args.static_groups, name=names[0])
    except HessianError as e:
        msg = f"{e}. Layers {', '.join(names)} were quantized with round-to-nearest instead."
        warnings.warn(msg, stacklevel=2)
        ctx.extras.setdefault("gptq_fallbacks", {}).update({n: msg for n in names})
        return
    row = 0
    for n, x in zip(names, ws):
        rows = slice(row, row + x.shape[0])
        row += x.shape[0]
        s = scale if spec.granularity == "tensor" else scale[rows]
        z = None if zero is None else (zero if spec.granularity == "tensor" else zero[rows])
        originals[n] = x.cpu().clone()
        qt = quantize_weight(q[rows], spec, n, scale=s, zero=z)  # on the block's device, then to CPU memory
        ctx.qweights[n] = QTensor(*(None if t is None else t.cpu() for t in (qt.codes, qt.scale, qt.zero)),
                                  qt.spec, qt.shape)
        _set_weight(modules[n], q[rows])
        if d != args.damp:
            ctx.extras.setdefault("gptq_damp", {})[n] = d


def _groups(names: list[str], sites: _Sites, specs: dict[str, QuantSpec]) -> list[list[str]]:
    out: dict[tuple[str, QuantSpec], list[str]] = {}
    for n in names:
        if n in sites.site_of:  # per-tensor scales are per layer: those layers are not stacked
            key = n if specs[n].granularity == "tensor" else sites.site_of[n]
            out.setdefault((key, specs[n]), []).append(n)
    return list(out.values())


@register_method("gptq")
def gptq(model: nn.Module, scheme, ctx: MethodContext) -> None:
    """GPTQ every planned layer inside the model's blocks, block by block (see `sequential_blocks`).

    The float weights are restored afterwards (GPTQ is not function-preserving); the quantized weights go to
    `ctx.qweights` for conversion. Layers outside the blocks, or never reached by the calibration data, stay
    round-to-nearest and are listed in `ctx.extras["gptq_fallbacks"]`.

    Raises:
        CalibrationError: no calibration data, or NaN/Inf inputs.
    """
    args = method_args(scheme, "gptq", GPTQArgs)
    if not ctx.calib_batches:
        raise CalibrationError("method 'gptq' needs calibration data (real text or random tokens)")
    device = resolve_device(args.device)
    specs = {p.name: p.weight_spec for p in ctx.report.quantized}
    name_of = {id(m): n for n, m in model.named_modules()}
    done: set[str] = set()
    originals: dict[str, torch.Tensor] = {}
    for _, block, run in sequential_blocks(model, ctx.calib_batches, device, ctx.progress, "gptq"):
        prefix = name_of[id(block)]
        prefix = prefix + "." if prefix else ""
        names = [n for n in specs if n.startswith(prefix)]
        modules = {n: model.get_submodule(n) for n in names}
        sites = _Sites()
        handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: sites.observe(n, a[0])) for n in names]
        try:
            run()
        finally:
            for hnd in handles:
                hnd.remove()
        for group in _groups(names, sites, specs):
            _quantize_site(group, modules, specs, sites.h[sites.site_of[group[0]]], args, ctx, originals)
            done.update(group)
        del sites
    for n, w in originals.items():  # back to the float model: later methods (LoRC) need W itself
        _set_weight(model.get_submodule(n), w.to(_linear_weight(model.get_submodule(n)).device))
    missed = [n for n in specs if n not in done and n not in ctx.extras.get("gptq_fallbacks", {})]
    for n in missed:
        ctx.extras.setdefault("gptq_fallbacks", {})[n] = (f"{n}: not inside a transformer block or never reached "
                                                          "by the calibration data; quantized with round-to-nearest")

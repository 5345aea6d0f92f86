"""QuantLinear: a drop-in replacement for nn.Linear (and GPT-2's Conv1D) holding packed low-bit weights.

Buffers (what a checkpoint stores): `qweight` (packed codes), `scale`, optional `zero`, optional `act_scale` /
`act_zero` (static activation quantization), optional `bias` (kept in the model's dtype), optional LoRC factors
`lorc_u` (N, r) / `lorc_v` (r, K) (int8 with per-row `lorc_u_scale` / `lorc_v_scale`, or float): ZeroQuant-V2
low-rank compensation, y += (x_q @ V^T) @ U^T, see lowbit.methods.lorc. `input_transform` ("hadamard" or None)
rotates the input online before it is quantized (QuaRot's FFN rotation, lowbit.methods.rotation).

The reference forward (any device) computes what the GPU kernels compute: activations quantized per the scheme
(per-token dynamic, or per-tensor static) and dequantized, weights dequantized from the packed codes, then a
float32 matmul; the result is cast back to the input dtype. On CUDA, `lowbit.kernels` replaces the reference
with a fused kernel when one exists for the (weight format, activation format, shape).
"""
from __future__ import annotations

import torch
from torch import nn

from lowbit.quant.qtensor import QTensor, empty_storage, quantize_activation, quantize_weight
from lowbit.scheme import QuantSpec

# Set by lowbit.kernels when it registers CUDA kernels: fn(module, x) -> Tensor | None (None = no kernel).
_cuda_forward = None


def set_cuda_forward(fn) -> None:
    """Install the CUDA dispatch function (called by lowbit.kernels; None restores the reference path)."""
    global _cuda_forward
    _cuda_forward = fn


class QuantLinear(nn.Module):
    """y = quant(x) @ dequant(W).T + b with W held as packed codes.

    Args:
        in_features, out_features: as nn.Linear.
        weight_spec: how W is quantized.
        act_spec: how inputs are quantized (None: weight-only, inputs stay in their dtype).
        bias: whether the layer has a bias.
        dtype: dtype of the bias and of outputs the layer is built for.
    """

    def __init__(self, in_features: int, out_features: int, weight_spec: QuantSpec, act_spec: QuantSpec | None,
                 bias: bool = True, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_spec, self.act_spec = weight_spec, act_spec
        storage = empty_storage(weight_spec, out_features, in_features)
        self.register_buffer("qweight", storage["qweight"])
        self.register_buffer("scale", storage["scale"])
        self.register_buffer("zero", storage.get("zero"))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype), requires_grad=False) if bias else None
        static = act_spec is not None and not act_spec.dynamic
        self.register_buffer("act_scale", torch.ones(()) if static else None)
        self.register_buffer("act_zero", torch.zeros(()) if static and not act_spec.symmetric else None)
        for k in ("lorc_u", "lorc_v", "lorc_u_scale", "lorc_v_scale"):
            self.register_buffer(k, None)
        self.input_transform: str | None = None

    @classmethod
    def from_float(cls, module: nn.Module, weight_spec: QuantSpec, act_spec: QuantSpec | None, name: str = "",
                   act_range: tuple[torch.Tensor, torch.Tensor] | None = None,
                   qweight: QTensor | None = None) -> "QuantLinear":
        """Quantize an nn.Linear or transformers Conv1D (weight (in, out)).

        Args:
            act_range: (scale, zero) calibrated for static activation specs.
            qweight: an already quantized weight (e.g. from GPTQ); RTN of the module's weight otherwise.
        """
        w = _linear_weight(module)  # (N, K)
        b = module.bias
        q = cls(w.shape[1], w.shape[0], weight_spec, act_spec, bias=b is not None, dtype=w.dtype)
        q.load_qtensor(qweight if qweight is not None else quantize_weight(w.detach(), weight_spec, name))
        if b is not None:
            q.bias.data.copy_(b.detach())
        q.input_transform = getattr(module, "lowbit_input_transform", None)
        if getattr(module, "lowbit_lorc", None) is not None:
            q.set_lorc(*module.lowbit_lorc)
        if q.act_scale is not None:
            if act_range is None:
                raise ValueError(f"{name}: static activation quantization needs a calibrated range")
            q.act_scale.copy_(act_range[0].reshape(()))
            if q.act_zero is not None:
                q.act_zero.copy_(act_range[1].reshape(()))
        return q.to(w.device)

    def load_qtensor(self, qt: QTensor) -> None:
        if qt.shape != (self.out_features, self.in_features) or qt.spec != self.weight_spec:
            raise ValueError(f"QTensor {qt.shape} {qt.spec} does not fit this layer "
                             f"({self.out_features}, {self.in_features}) {self.weight_spec}")
        for k, t in qt.tensors().items():
            setattr(self, k, t.to(self.qweight.device))

    @property
    def qtensor(self) -> QTensor:
        return QTensor(self.qweight, self.scale, self.zero, self.weight_spec, (self.out_features, self.in_features))

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.qtensor.dequantize(dtype)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_spec is None:
            return x.float()
        return quantize_activation(x, self.act_spec, self.act_scale, self.act_zero)

    # --- LoRC factors and the online input transform (lowbit.methods.lorc / .rotation) -------------------
    @property
    def lorc_rank(self) -> int:
        return 0 if self.lorc_u is None else self.lorc_u.shape[1]

    def init_lorc(self, rank: int, bits: int | None) -> None:
        """Allocate (zero) LoRC buffers of rank `rank`, int8 with scales when bits == 8, else float32."""
        dt = torch.int8 if bits == 8 else torch.float32
        dev = self.qweight.device
        self.lorc_u = torch.zeros(self.out_features, rank, dtype=dt, device=dev)
        self.lorc_v = torch.zeros(rank, self.in_features, dtype=dt, device=dev)
        self.lorc_u_scale = torch.ones(self.out_features, 1, device=dev) if bits == 8 else None
        self.lorc_v_scale = torch.ones(rank, 1, device=dev) if bits == 8 else None

    def set_lorc(self, u: torch.Tensor, v: torch.Tensor, bits: int | None = None) -> None:
        """Store LoRC factors U (N, r), V (r, K), per-row symmetric int8 when bits == 8."""
        from lowbit.methods.lorc import int8_rows  # lazy: lowbit.methods imports this module

        self.init_lorc(u.shape[1], bits)
        if bits == 8:
            (self.lorc_u, self.lorc_u_scale), (self.lorc_v, self.lorc_v_scale) = int8_rows(u), int8_rows(v)
        else:
            self.lorc_u, self.lorc_v = u.float().contiguous(), v.float().contiguous()
        for k in ("lorc_u", "lorc_v", "lorc_u_scale", "lorc_v_scale"):
            if getattr(self, k) is not None:
                setattr(self, k, getattr(self, k).to(self.qweight.device))

    def lorc_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V) in float32."""
        u, v = self.lorc_u.float(), self.lorc_v.float()
        if self.lorc_u_scale is not None:
            u, v = u * self.lorc_u_scale, v * self.lorc_v_scale
        return u, v

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_transform is None:
            return x
        from lowbit.methods.rotation import online_transform  # lazy, as above

        return online_transform(x, self.input_transform)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = self.quantize_input(self.transform_input(x))
        y = xq @ self.dequantized_weight().t()  # (…, N) float32
        if self.lorc_u is not None:
            u, v = self.lorc_factors()
            y = y + (xq @ v.t()) @ u.t()  # side GEMM through rank r
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)

    def kernel_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """The installed kernel hook around the online input transform and LoRC, or None where no kernel applies.

        The input transform (Hadamard) runs first in torch; the kernels then quantize and multiply. LoRC is a
        side GEMM through rank r on the quantized input (the same `quantize_input` as the reference, so the same
        codes), added in float32 to the kernel output (which already holds the bias)."""
        if _cuda_forward is None:
            return None
        xt = self.transform_input(x)
        y = _cuda_forward(self, xt)
        if y is None or self.lorc_u is None:
            return y
        u, v = self.lorc_factors()
        side = (self.quantize_input(xt) @ v.t()) @ u.t()
        return (y.float() + side).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            y = self.kernel_forward(x)
            if y is not None:
                return y
        return self.reference_forward(x)

    def extra_repr(self) -> str:
        a = self.act_spec.describe() if self.act_spec else "none (weight-only)"
        extra = (f", lorc_rank={self.lorc_rank}" if self.lorc_u is not None else "") + \
            (f", input_transform={self.input_transform}" if self.input_transform else "")
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weights={self.weight_spec.describe()}, activations={a}, bias={self.bias is not None}{extra}")


def _linear_weight(module: nn.Module) -> torch.Tensor:
    """(out_features, in_features) weight of nn.Linear or transformers' Conv1D (which stores (in, out))."""
    if isinstance(module, nn.Linear):
        return module.weight
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.t()
    raise TypeError(f"{type(module).__name__} is not a linear layer")


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))

"""Integer-only ViT encoder (I-ViT dataflow, PAPERS.md §5) for Hugging Face ``ViTModel`` /
``ViTForImageClassification``.

Dataflow (pre-LayerNorm blocks; ``rq`` is a dyadic requantization, ``[b]`` a b-bit integer):

    pixels ─(boundary: round(x / S_pix), the one float op, outside the graph)→ p[8]
    p ─im2col (reshape only)→ [8] ─GEMM(patch)→ [32] ─rq→ [16] + (CLS, position)[16] → h[16]
    per block:  h ─I-LN→ [16] ─rq→ x[8] ─attention (as in BERT: Shiftmax, P·V)→ o[32] ─rq→ + rq(h) → h'[16]
                h' ─I-LN→ [16] ─rq→ [8] ─GEMM(fc1)→ ─rq→ [16] ─ShiftGELU→ ─rq→ [8] ─GEMM(fc2)→ ─rq→ + rq(h') → h''
    final I-LN → [16];  classifier: CLS row ─rq→ [8] ─GEMM→ INT32 logits (dequantized at the boundary)

The patch embedding Conv2d (kernel = stride = patch) is an integer GEMM after im2col: the image is cut into
non-overlapping patches by a reshape, so it needs no float op; only quantizing the input pixels to int8
happens at the boundary, as the BERT graph's boundary is the integer token ids. CLS token and position
embeddings are constants quantized at calibration to the 16-bit embedding scale. All linears (patch, blocks,
classifier) are quantized by the graph from the float weights: int8 per-output-channel weights, int8 inputs
with per-tensor MSE scales or SmoothQuant factors (``IntConfig.smooth``).
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, ImageClassifierOutput

from lowbit.intonly.blocks import IntConfig, IntEncoder, IntLinear, _scale_of, _t
from lowbit.intonly.dyadic import IntegerOnlyError, qrange


class IntViTModel(IntEncoder):
    """Integer-only ViT. ``forward(pixel_values)`` returns ``logits`` (with a classifier) or
    ``last_hidden_state``, dequantized at the boundary; :meth:`integer_forward` is the integer graph on int8
    pixel codes (:meth:`quantize_pixels`).

    Build with :func:`build_int_vit`.
    """

    def __init__(self, model: nn.Module, config: IntConfig) -> None:
        vit = getattr(model, "vit", model)
        cfg = vit.config
        emb = vit.embeddings
        super().__init__(cfg, config, (cfg.image_size // cfg.patch_size) ** 2 + 1)  # patches + CLS
        self.patch = cfg.patch_size
        conv = emb.patch_embeddings.projection
        self.float_linears["patch"] = (conv.weight.detach().reshape(conv.out_channels, -1), conv.bias.detach())
        self.cls_pos = (emb.cls_token.detach()[0, 0] + emb.position_embeddings.detach()[0, 0],  # (H,)
                        emb.position_embeddings.detach()[0, 1:])  # (N, H)
        for i, layer in enumerate(vit.layers):
            att, mlp, p = layer.attention, layer.mlp, f"layer{i}."
            for n, mod in (("q", att.q_proj), ("k", att.k_proj), ("v", att.v_proj), ("o", att.o_proj),
                           ("fc1", mlp.fc1), ("fc2", mlp.fc2)):
                self._add_linear(p + n, f"vit.layers.{i}.{n}", mod)
            self.ln[p + "ln1"] = (layer.layernorm_before.weight.detach(), layer.layernorm_before.bias.detach())
            self.ln[p + "ln2"] = (layer.layernorm_after.weight.detach(), layer.layernorm_after.bias.detach())
        self.ln["final"] = (vit.layernorm.weight.detach(), vit.layernorm.bias.detach())
        self.layers = len(vit.layers)
        head = getattr(model, "classifier", None)
        self.has_head = isinstance(head, nn.Linear)
        if self.has_head:
            self._add_linear("head", "classifier", head)
        self.pixel_scale: float | None = None

    # --- boundary -------------------------------------------------------------------------------------------
    def quantize_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """int8 codes of the (normalised) pixels at the calibrated scale: the graph's input."""
        if self.pixel_scale is None:
            raise IntegerOnlyError("the pixel scale is not set: calibrate the model first")
        c, size = self.cfg.num_channels, self.cfg.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (c, size, size):
            raise IntegerOnlyError(f"pixel_values must be (B, {c}, {size}, {size}), got {tuple(pixel_values.shape)}")
        return torch.round(pixel_values.double() / self.pixel_scale).clamp(-128, 127).to(torch.int64)

    def forward(self, pixel_values: torch.Tensor, backend: str = "int", **_):
        """Quantize the pixels, run the integer graph, dequantize its output (float only at the boundary)."""
        A = self._backend(backend)
        codes = self.quantize_pixels(pixel_values)
        if self.has_head:
            z, s = self.integer_logits(A, codes)
            return ImageClassifierOutput(logits=(z.double() * _t(s, z)).float())
        h, s_h = self.integer_forward(A, codes)
        return BaseModelOutput(last_hidden_state=h.float() * s_h)

    @torch.no_grad()
    def calibrate(self, pixel_values: torch.Tensor | list[torch.Tensor]) -> "IntViTModel":
        """Set the pixel scale (max |x|) and every other scale with the float64 simulation over the images."""
        x = torch.cat(list(pixel_values)) if isinstance(pixel_values, (list, tuple)) else pixel_values
        if x.numel() == 0:
            raise IntegerOnlyError("calibration needs at least one image")
        self.pixel_scale = _scale_of(x, 8, 100.0)
        w, b = self.float_linears["patch"]
        self.linears["patch"] = IntLinear.from_float("patch", w, b, self.pixel_scale)
        self._calibrate_with(self.integer_logits if self.has_head else self.integer_forward, self.quantize_pixels(x))
        return self

    # --- the graph ------------------------------------------------------------------------------------------
    def integer_forward(self, A, codes: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(B, C, H, W) int8 pixel codes -> (B, 1 + N, hidden) final-LayerNorm codes and their scale."""
        bits = self.config.residual_bits
        h, s_h = self._embed(A, codes)
        for i in range(self.layers):
            p = f"layer{i}."
            # pre-LN: a LayerNorm's output feeds only the next linear, so where the LayerNorm makes that int8 input
            # itself (_layernorm_in) its 16-bit codes are not stored (x is the int8 codes then, for the shape)
            x, s_x, x_in = self._layernorm_in(A, p + "ln1", h, bits, s_h, self._attention_in_key(p), keep=False)
            a = self._attention(A, p, x if x_in is None else x_in, s_x, None, x_in)
            h, s_h = self._rq_sum(A, p + "res1", [a, (h, s_h, bits)], bits), self.scales[p + "res1"]
            x, s_x, x_in = self._layernorm_in(A, p + "ln2", h, bits, s_h, p + "x2", keep=False)
            f = self._ffn(A, p, x, s_x, x_in)
            h, s_h = self._rq_sum(A, p + "res2", [f, (h, s_h, bits)], bits), self.scales[p + "res2"]
        return self._layernorm(A, "final", h, bits, s_h)

    def integer_logits(self, A, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """INT32 classifier logits of the CLS token and their per-class scale."""
        if not self.has_head:
            raise IntegerOnlyError("this ViT has no classifier head (build it from ViTForImageClassification)")
        h, s_h = self.integer_forward(A, codes)
        x = self._linear_in(A, "head.x", ("head",), h[:, 0], s_h, self.config.residual_bits)
        lin = self.linears["head"]
        return lin(A, x), lin.out_scale

    def _embed(self, A, codes: torch.Tensor) -> tuple[torch.Tensor, float]:
        b, c, hh, ww = codes.shape
        p, bits = self.patch, self.config.residual_bits
        patches = A.tensor(codes).reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, (hh // p) * (ww // p), c * p * p)  # im2col: (B, N, C·P·P), conv weight order
        lin = self.linears["patch"]
        z = lin(A, patches)  # (B, N, hidden) INT32
        cls_pos, pos = self.cls_pos
        key = "emb.sum"
        if key not in self.scales:
            real = torch.cat([cls_pos.double().expand(b, 1, -1), z * _t(lin.out_scale, z) + pos.double()], 1)
            self._calibrate_scale(key, real, bits)
            self.scales["emb.patch"] = self.scales[key]
        const = self._op("emb.const", lambda: torch.round(
            torch.cat([cls_pos[None], pos]).double() / self.scales[key]).clamp(*qrange(bits)).to(torch.int64))
        zp = self._rq(A, "emb.patch", z, lin.out_scale, lin.out_bits, bits + 1)  # (B, N, hidden)
        h = torch.cat([torch.zeros_like(zp[:, :1]), zp], 1) + A.tensor(const)
        return torch.clamp(h, *qrange(bits)), self.scales[key]


def build_int_vit(model: nn.Module, calib_pixels: torch.Tensor, config: IntConfig = IntConfig()) -> IntViTModel:
    """An integer-only ViT from a float HF ``ViTModel`` or ``ViTForImageClassification``.

    Args:
        model: the float model (not modified).
        calib_pixels: (B, C, H, W) calibration images, normalised as the model expects.
        config: bit widths, nonlinearity variants and smoothing.

    Raises:
        IntegerOnlyError: not a ViT, or images of the wrong shape.
    """
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt != "vit":
        raise IntegerOnlyError(f"{type(model).__name__}: build_int_vit supports HF ViTModel / "
                               f"ViTForImageClassification (model_type 'vit'); got model_type {mt!r}")
    return IntViTModel(model, config).calibrate(calib_pixels).eval()

"""`Engine`: BERT-family encoder inference with packed low-bit GEMMs, fused producers/epilogues and CUDA graphs.

One layer (post-LN BERT; RoBERTa, MiniLM and MPNet share it), codes flowing between kernels:

    h ─► [QKV GEMM, one launch for the concatenated q|k|v weights] ─► SDPA (fp16/bf16) ─► act_quant
      ─► [O GEMM: dequant + bias + residual h] ─► [LayerNorm -> quantize] ─► h1, codes
      ─► [FC1 GEMM: dequant + bias + GELU] ─► act_quant ─► [FC2 GEMM: dequant + bias + residual h1]
      ─► [LayerNorm -> quantize for the next layer's QKV] ─► h

Activation codes between kernels are one per byte: 4-bit codes are held as the int8 / fp8 e4m3 code of the same
value (act_quant.HELD), so on Hopper, where 4-bit MMA goes through the 8-bit tensor cores anyway, the W4A4 GEMMs
are the W4A8 / W8A8 kernels on the weights unpacked at build time, with no nibble unpacking in their main loop
(same integer products, same scales: the same outputs). Only the checkpoint's weights stay packed.

Variable lengths are bucketed: a batch is padded to the next (batch, seq) bucket and each bucket has its own
CUDA graph (one more per bucket for batches that need a padding mask; a full bucket runs SDPA without a mask,
so the flash backend applies). On the CPU, or with `backend="reference"`, the same graph runs with the kernels'
plain-torch twins (engine/fused.py, kernels/reference.py), which is how CI checks it.

    >>> eng = Engine.from_quantized(lowbit.quantize(model, "w4a4-int"), tokenizer)
    >>> e = eng.embed(["a sentence", "another one"])   # (2, H) unit rows, as HF + mean pooling
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.engine import fused
from lowbit.errors import ModelError
from lowbit.kernels import act_quant, reference
from lowbit.nn.qlinear import QuantLinear
from lowbit.quant.qtensor import QTensor

FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert", "mpnet")
SEQ_BUCKETS = (16, 32, 64, 128, 256, 384, 512)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STAGES = ("gemm", "attention", "norm", "quantize", "other")

# --- projections -------------------------------------------------------------------------------------------------
@dataclass
class Proj:
    """One GEMM of the layer: quantized (codes in, QuantLinear buffers) or float (the FP16 baseline)."""

    a_fmt: str | None  # activation format of its input codes; None: float input
    static: torch.Tensor | None  # static per-tensor activation scale
    qt: QTensor | None  # reference weights
    weight: torch.Tensor | None  # float weights (N, K)
    bias: torch.Tensor | None
    wt: fused.Weights | None = None  # GPU kernel weights


def _check_module(name: str, m: nn.Module) -> None:
    if not isinstance(m, QuantLinear):
        raise ModelError(f"{name} is {type(m).__name__}, not a QuantLinear: quantize the model with lowbit first "
                         "(or use Engine.from_float for the float baseline)")
    if m.act_spec is None:
        raise ModelError(f"{name} has weight-only quantization ({m.weight_spec.describe()}); the engine runs "
                         "activation-quantized schemes (w8a8-*, w4a8-*, w4a4-*)")
    if m.lorc_u is not None or m.input_transform is not None:
        raise ModelError(f"{name} has LoRC factors or an input rotation, which the engine's kernels do not apply")
    a = m.act_spec
    if not a.symmetric or not (a.granularity == "token" and a.dynamic or a.granularity == "tensor" and not a.dynamic):
        raise ModelError(f"{name}: activations {a.describe()} are not per-token dynamic or per-tensor static "
                         "symmetric, the two the engine's producers emit")


def quant_proj(names: Sequence[str], mods: Sequence[QuantLinear], dtype: torch.dtype, kernels: bool) -> Proj:
    """Concatenate QuantLinears that read one input (q, k, v) into one Proj; exact, scales are per output row."""
    for n, m in zip(names, mods):
        _check_module(n, m)
    m0 = mods[0]
    for n, m in zip(names[1:], mods[1:]):
        same_static = m0.act_scale is None or torch.equal(m.act_scale, m0.act_scale)
        if m.act_spec != m0.act_spec or m.weight_spec != m0.weight_spec or not same_static:
            raise ModelError(f"{n} is quantized differently from {names[0]} (specs or static scales), so they "
                             "cannot share one quantized input")
    cat = lambda ts: None if ts[0] is None else torch.cat(ts, 0)  # noqa: E731
    qt = QTensor(cat([m.qweight for m in mods]), cat([m.scale for m in mods]), cat([m.zero for m in mods]),
                 m0.weight_spec, (sum(m.out_features for m in mods), m0.in_features))
    bias = cat([m.bias.detach() if m.bias is not None else torch.zeros(m.out_features, device=m.qweight.device)
                for m in mods]) if any(m.bias is not None for m in mods) else None
    bias = bias.to(dtype) if bias is not None else None
    p = Proj(m0.act_spec.format, m0.act_scale.float().reshape(1) if m0.act_scale is not None else None, qt, None, bias)
    if kernels:
        p.wt = kernel_weights(names, mods, bias)
    return p


def kernel_weights(names: Sequence[str], mods: Sequence[QuantLinear], bias: torch.Tensor | None) -> fused.Weights:
    """The GEMM launcher's view of concatenated QuantLinears (dispatch.prepare derives the GPU buffers)."""
    from lowbit.kernels import _tl
    from lowbit.kernels.dispatch import prepare
    from lowbit.kernels.qgemm import unpack_weight

    plans = [prepare(m) for m in mods]
    for n, m, p in zip(names, mods, plans):
        if p is None:
            raise ModelError(f"{n}: no GPU kernel ({m.__dict__.get('_lb_plan')})")
    if len(set(plans)) > 1:
        raise ModelError(f"{', '.join(names)} got different kernel plans {set(plans)}; they cannot be concatenated")
    p = plans[0]
    cat = lambda ts: None if ts[0] is None else torch.cat(ts, 0).contiguous()  # noqa: E731
    w, sw, aux = cat([m.qweight for m in mods]), cat([m._lb_sw for m in mods]), cat([m._lb_aux for m in mods])
    n, k = w.shape[0], mods[0].in_features
    wt = fused.Weights(p.a_fmt, p.a_kind, w, sw, aux, p.w_kind, p.mode, p.group, n, k, bias)
    if p.w_kind in (_tl.INT4, _tl.FP4, _tl.UINT4):  # exact 8-bit codes for prefill-sized M (qgemm.UNPACK_M)
        wt.w8 = unpack_weight(w, aux, p.w_kind, p.mode, p.group, k)
        wt.w8_kind = _tl.FP8 if p.w_kind == _tl.FP4 else _tl.INT8
    return wt


def float_proj(mods: Sequence[nn.Linear], dtype: torch.dtype) -> Proj:
    w = torch.cat([m.weight.detach() for m in mods], 0).to(dtype).contiguous()
    b = torch.cat([m.bias.detach() for m in mods], 0).to(dtype) if mods[0].bias is not None else None
    return Proj(None, None, None, w, b)


# --- the model's pieces ------------------------------------------------------------------------------------------
@dataclass
class Norm:
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float


@dataclass
class Layer:
    qkv: Proj
    o: Proj
    fc1: Proj
    fc2: Proj
    ln1: Norm  # after attention
    ln2: Norm  # after the FFN


def _norm(ln: nn.LayerNorm, dtype) -> Norm:
    return Norm(ln.weight.detach().to(dtype), ln.bias.detach().to(dtype), ln.eps)


def _linears(family: str, layer: nn.Module):
    """(names, modules) of q, k, v, o, fc1, fc2 and the two LayerNorms of one encoder layer."""
    if family == "mpnet":
        a = layer.attention.attn
        lin = {"q": a.q, "k": a.k, "v": a.v, "o": a.o}
        ln1 = layer.attention.LayerNorm
    else:
        s = layer.attention.self
        lin = {"q": s.query, "k": s.key, "v": s.value, "o": layer.attention.output.dense}
        ln1 = layer.attention.output.LayerNorm
    lin.update(fc1=layer.intermediate.dense, fc2=layer.output.dense)
    return lin, ln1, layer.output.LayerNorm


class Engine:
    """Encoder inference for BERT, RoBERTa (XLM-R, CamemBERT), MiniLM and MPNet models quantized by lowbit.

    Args:
        checkpoint_dir: a directory written by `lowbit.save` (the model is loaded onto `device`).
        device: "cuda" (default when available) or "cpu".
        dtype: float dtype of hidden states and attention (fp16 on CUDA, float32 on the CPU by default).
        backend: "kernels" (Triton, CUDA only), "reference" (plain torch), or "auto" (kernels on CUDA).
        graphs: capture a CUDA graph per bucket (default: on for the kernels backend).
        seq_buckets, batch_buckets: padded shapes; a batch runs in the smallest bucket that holds it.

    Raises:
        ModelError: not a BERT-family encoder, a layer the engine cannot run (message names it and why).
    """

    def __init__(self, checkpoint_dir: str | Path, device: str | None = None, **kw) -> None:
        from lowbit.export.native import load

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tok = load(checkpoint_dir, device=device)
        self._setup(model, tok, quantized=True, device=device, **kw)

    @classmethod
    def from_quantized(cls, model: nn.Module, tokenizer=None, **kw) -> "Engine":
        """Engine over a model quantized in memory (`lowbit.quantize`); the model is moved to the device."""
        e = cls.__new__(cls)
        e._setup(model, tokenizer, quantized=True, **kw)
        return e

    @classmethod
    def from_float(cls, model: nn.Module, tokenizer=None, **kw) -> "Engine":
        """The same graph with float (cuBLAS) linears: the 'best FP16' baseline of `lowbit bench encoder`."""
        e = cls.__new__(cls)
        e._setup(model, tokenizer, quantized=False, **kw)
        return e

    # --- construction ---------------------------------------------------------------------------------------------
    def _setup(self, model, tokenizer, quantized: bool, device: str | None = None, dtype=None,
               backend: str = "auto", graphs: bool | None = None, seq_buckets=SEQ_BUCKETS,
               batch_buckets=BATCH_BUCKETS) -> None:
        if backend not in ("auto", "kernels", "reference"):
            raise ValueError(f"backend {backend!r}: expected auto, kernels or reference")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        interpret = os.environ.get("TRITON_INTERPRET") == "1"  # tests run the Triton kernels on the CPU
        if backend == "kernels" and self.device.type != "cuda" and not interpret:
            raise ModelError("the kernels backend needs CUDA (or TRITON_INTERPRET=1); use backend='reference'")
        self.kernels = quantized and backend != "reference" and (self.device.type == "cuda" or backend == "kernels")
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.graphs = (self.device.type == "cuda") if graphs is None else graphs
        self.seq_buckets, self.batch_buckets = tuple(sorted(seq_buckets)), tuple(sorted(batch_buckets))
        self.tokenizer, self.model = tokenizer, model.to(self.device).eval()
        base = getattr(model, "base_model", model)
        cfg = base.config
        self.family = cfg.model_type
        if self.family not in FAMILIES:
            raise ModelError(f"model type {self.family!r} is not a BERT-family encoder ({', '.join(FAMILIES)})")
        if cfg.hidden_act != "gelu":
            raise ModelError(f"hidden_act {cfg.hidden_act!r}: the FC1 epilogue implements erf GELU ('gelu') only")
        self.heads, self.hidden = cfg.num_attention_heads, cfg.hidden_size
        self.pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        emb = base.embeddings
        self.word = emb.word_embeddings.weight.detach().to(self.dtype)
        self.pos = emb.position_embeddings.weight.detach().to(self.dtype)
        tt = getattr(emb, "token_type_embeddings", None)
        self.tok_type = tt.weight.detach().to(self.dtype) if tt is not None else None
        self.emb_norm = _norm(emb.LayerNorm, self.dtype)
        self.pos_from_pad = self.family != "bert"  # RoBERTa/MPNet: positions count from padding_idx + 1
        self.pos_pad_idx = getattr(emb, "padding_idx", self.pad_id)
        self.rel_bias = base.encoder if self.family == "mpnet" else None
        self.layers = [self._layer(f"{i}", layer, quantized) for i, layer in enumerate(base.encoder.layer)]
        self._graphs: dict = {}
        self._tape: list | None = None

    def _layer(self, idx: str, layer: nn.Module, quantized: bool) -> Layer:
        lin, ln1, ln2 = _linears(self.family, layer)
        if quantized:
            mk = lambda keys: quant_proj([f"layer {idx} {k}" for k in keys], [lin[k] for k in keys],  # noqa: E731
                                         self.dtype, self.kernels)
        else:
            mk = lambda keys: float_proj([lin[k] for k in keys], self.dtype)  # noqa: E731
        return Layer(mk(("q", "k", "v")), mk(("o",)), mk(("fc1",)), mk(("fc2",)), _norm(ln1, self.dtype),
                     _norm(ln2, self.dtype))

    # --- ops (each tagged with its stage for the benchmark's breakdown) --------------------------------------------
    def _op(self, stage: str, fn: Callable, *args, **kw):
        if self._tape is not None:
            self._tape.append((stage, fn, args, kw))
        return fn(*args, **kw)

    def _ln(self, x, norm: Norm, nxt: Proj | None):
        fmt = nxt.a_fmt if nxt is not None else None
        static = nxt.static if nxt is not None else None
        if self.kernels:
            return self._op("norm", fused.ln_quant, x, norm.weight, norm.bias, norm.eps, fmt, static)
        if fmt is None:
            return self._op("norm", F.layer_norm, x, (x.shape[-1],), norm.weight, norm.bias, norm.eps), None, None
        return self._op("norm", fused.ln_quant_ref, x, norm.weight, norm.bias, norm.eps, fmt, static)

    def _quant(self, x, p: Proj):
        if p.a_fmt is None:
            return x, None
        if self.kernels:
            return self._op("quantize", act_quant.quantize_act, x, p.a_fmt, None, p.static, packed=False)
        return self._op("quantize", reference.quantize_act, x, p.a_fmt, None, p.static, packed=False)

    def _gemm(self, a, sa, p: Proj, gelu: bool = False, residual=None):
        if p.weight is not None:
            return self._op("gemm", _float_gemm, a, p.weight, p.bias, gelu, residual)
        if self.kernels:
            return self._op("gemm", fused.gemm, a, sa, p.wt, self.dtype, gelu, residual)
        return self._op("gemm", fused.gemm_ref, a, sa, p.a_fmt, p.qt, p.bias, self.dtype, gelu, residual)

    def _attention(self, qkv, mask, b: int, s: int):
        hd = self.hidden // self.heads
        q, k, v = qkv.view(b, s, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, S, hd) each
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return ctx.transpose(1, 2).reshape(b * s, self.hidden)

    def _mask(self, attention_mask, b: int, s: int, padded: bool):
        """SDPA mask: None (full bucket), bool (B, 1, 1, S), or MPNet's additive relative-position bias."""
        bias = None
        if self.rel_bias is not None:
            x = torch.empty(b, s, 1, device=self.device)
            bias = self.rel_bias.compute_position_bias(x).to(self.dtype)  # (B, nh, S, S)
        if not padded:
            return bias
        keep = attention_mask[:, None, None, :].bool()
        if bias is None:
            return keep
        return bias.masked_fill(~keep, torch.finfo(self.dtype).min)

    def _embed_tokens(self, ids, token_type, attention_mask):
        b, s = ids.shape
        if self.pos_from_pad:
            nz = ids.ne(self.pos_pad_idx).int()
            positions = torch.cumsum(nz, 1).type_as(nz) * nz + self.pos_pad_idx
        else:
            positions = torch.arange(s, device=ids.device)[None].expand(b, s)
        x = self.word[ids]
        if self.tok_type is not None:
            x = x + self.tok_type[token_type]
        return (x + self.pos[positions]).reshape(b * s, self.hidden)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor, token_type: torch.Tensor,
                padded: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (B, S, H) and mean-pooled, L2-normalised embeddings (B, H) float32."""
        b, s = ids.shape
        x = self._op("other", self._embed_tokens, ids, token_type, attention_mask)
        mask = self._op("other", self._mask, attention_mask, b, s, padded)
        first = self.layers[0].qkv if self.layers else None
        h, a, sa = self._ln(x, self.emb_norm, first)
        for i in range(len(self.layers)):
            h, a, sa = self._layer_forward(i, h, a, sa, mask, b, s)
        hidden = h.view(b, s, self.hidden)
        return hidden, self._op("other", _mean_pool, hidden, attention_mask)

    def _layer_forward(self, i: int, h, a, sa, mask, b: int, s: int, tap: Callable | None = None):
        """Encoder layer i: (h (B*S, H), its codes and scales for the QKV GEMM) -> the same for layer i + 1.

        `tap(stage, value) -> value` sees each stage's output and returns what the layer goes on with: the
        per-layer check of benchmarks/encoder_h100.py records the stages, or substitutes the reference's.
        """
        t = tap or (lambda _, v: v)
        L = self.layers[i]
        qkv = t("qkv", self._gemm(a if a is not None else h, sa, L.qkv))  # (B*S, 3H)
        ctx = t("attention", self._op("attention", self._attention, qkv, mask, b, s))  # (B*S, H)
        c, sc = t("o_in", self._quant(ctx, L.o))
        y = t("o", self._gemm(c, sc, L.o, residual=h))
        h1, a1, sa1 = t("ln1", self._ln(y, L.ln1, L.fc1))
        g = t("fc1", self._gemm(a1 if a1 is not None else h1, sa1, L.fc1, gelu=True))  # (B*S, 4H)
        gq, sg = t("fc2_in", self._quant(g, L.fc2))
        y = t("fc2", self._gemm(gq, sg, L.fc2, residual=h1))
        nxt = self.layers[i + 1].qkv if i + 1 < len(self.layers) else None
        return t("ln2", self._ln(y, L.ln2, nxt))

    # --- batching, buckets, graphs ----------------------------------------------------------------------------------
    def _bucket(self, b: int, s: int) -> tuple[int, int]:
        bb = next((x for x in self.batch_buckets if x >= b), b)
        sb = next((x for x in self.seq_buckets if x >= s), s)
        return bb, sb

    def _pad(self, ids, mask, token_type):
        """(ids, mask, token_type) padded on the CPU to their bucket (bb, sb), and whether SDPA needs the mask."""
        b, s = ids.shape
        bb, sb = self._bucket(b, s)
        full = lambda v: torch.full((bb, sb), v, dtype=torch.long)  # noqa: E731
        I, M, T = full(self.pad_id), full(0), full(0)
        I[:b, :s], M[:b, :s], T[:b, :s] = ids, mask, token_type
        M[b:, 0] = 1  # filler rows attend to one key, so no row of the batch is all-masked
        return I, M, T, bool((mask == 0).any()) or sb != s or bb != b

    def _run(self, ids, mask, token_type):
        """Forward one padded chunk on the device; returns (hidden (B, S, H), pooled (B, H)) for its real rows."""
        b, s = ids.shape
        I, M, T, padded = self._pad(ids, mask, token_type)
        bb, sb = I.shape
        if not self.graphs:
            h, p = self.forward(I.to(self.device), M.to(self.device), T.to(self.device), padded)
            return h[:b, :s], p[:b]
        g = self._graph(bb, sb, padded)
        g["ids"].copy_(I, non_blocking=True)
        g["mask"].copy_(M, non_blocking=True)
        g["tt"].copy_(T, non_blocking=True)
        g["graph"].replay()
        return g["hidden"][:b, :s], g["pooled"][:b]

    def _graph(self, b: int, s: int, padded: bool) -> dict:
        key = (b, s, padded)
        if key not in self._graphs:
            ids = torch.full((b, s), self.pad_id, dtype=torch.long, device=self.device)
            mask = torch.ones((b, s), dtype=torch.long, device=self.device)
            tt = torch.zeros((b, s), dtype=torch.long, device=self.device)
            st = torch.cuda.Stream()
            st.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(st), torch.inference_mode():
                for _ in range(2):  # compile the Triton kernels and pick SDPA's backend outside the capture
                    self.forward(ids, mask, tt, padded)
            torch.cuda.current_stream().wait_stream(st)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), torch.inference_mode():
                hidden, pooled = self.forward(ids, mask, tt, padded)
            self._graphs[key] = dict(graph=g, ids=ids, mask=mask, tt=tt, hidden=hidden, pooled=pooled)
        return self._graphs[key]

    def _batches(self, inputs, max_length: int | None):
        if isinstance(inputs, (list, tuple)) and (not inputs or isinstance(inputs[0], str)):
            if self.tokenizer is None:
                raise ModelError("this engine has no tokenizer: pass a tokenized batch (input_ids, attention_mask)")
            inputs = self.tokenizer(list(inputs), padding=True, truncation=True,
                                    max_length=max_length or self.seq_buckets[-1], return_tensors="pt")
        ids = inputs["input_ids"].cpu()
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.cpu()
        tt = inputs.get("token_type_ids")
        tt = torch.zeros_like(ids) if tt is None else tt.cpu()
        step = self.batch_buckets[-1]
        for i in range(0, ids.shape[0], step):
            m = mask[i:i + step]
            s = int(m.sum(1).max()) if m.numel() else 0
            if ids.shape[1] > s and bool((m[:, s:] == 0).all()):
                yield ids[i:i + step, :s], m[:, :s], tt[i:i + step, :s]  # drop columns that are padding only
            else:
                yield ids[i:i + step], m, tt[i:i + step]

    @torch.inference_mode()
    def embed(self, inputs, max_length: int | None = None) -> torch.Tensor:
        """Sentence embeddings: mean over non-padding tokens of the last hidden states, L2-normalised.

        Args:
            inputs: a list of strings (needs the tokenizer) or a tokenized batch (dict / BatchEncoding with
                input_ids and optionally attention_mask, token_type_ids).
            max_length: truncation when tokenizing (default: the largest sequence bucket).

        Returns:
            (N, H) float32 on the CPU.
        """
        return torch.cat([p.float().cpu() for _, p in (self._run(*c) for c in self._batches(inputs, max_length))])

    @torch.inference_mode()
    def hidden_states(self, inputs, max_length: int | None = None) -> list[torch.Tensor]:
        """Last hidden states per chunk ((B, S, H) each), padding positions included."""
        return [h.clone() for h, _ in (self._run(*c) for c in self._batches(inputs, max_length))]

    @torch.inference_mode()
    def classify(self, inputs, max_length: int | None = None) -> torch.Tensor:
        """Logits (N, num_labels) of a *ForSequenceClassification model's head on the engine's hidden states.

        Raises:
            ModelError: the model has no sequence-classification head.
        """
        head = _classifier(self.model, self.family)
        return torch.cat([head(h.to(self.dtype)).float().cpu()
                          for h, _ in (self._run(*c) for c in self._batches(inputs, max_length))])


def _float_gemm(x, w, b, gelu: bool, residual):
    y = F.linear(x, w, b)
    if gelu:
        y = F.gelu(y)
    return y if residual is None else y + residual


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask[..., None].float()  # (B, S, 1)
    pooled = (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)
    return F.normalize(pooled, dim=-1)


def _classifier(model: nn.Module, family: str) -> Callable:
    cls = getattr(model, "classifier", None)
    if cls is None or not type(model).__name__.endswith("ForSequenceClassification"):
        raise ModelError(f"{type(model).__name__} has no sequence-classification head; load a "
                         "*ForSequenceClassification checkpoint to classify, or use embed()")
    if family == "bert":
        return lambda h: cls(model.bert.pooler(h))
    return lambda h: cls(h)  # RoBERTa / MPNet heads read the first token themselves

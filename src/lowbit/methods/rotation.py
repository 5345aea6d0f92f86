"""Hadamard rotation of a pre-norm decoder (QuaRot, Ashkboos et al. 2024, §4; PAPERS.md §1 and the issue:
W4A4 decoders fail without it).

All rotations are orthogonal, so the float model computes the same function:
- norm fusion: each RMSNorm's weight is folded into the linears that read it (it becomes 1), so the norm
  commutes with a rotation of the residual stream;
- R1, residual stream: h -> h Q1 with Q1 = diag(random signs) H_n / sqrt(n): the embeddings and every writer
  (o_proj, down_proj) get Q1 on their output, every reader (q/k/v, gate/up, lm_head) Q1^T on its input. This
  spreads the residual stream's outlier channels over all channels;
- R2, per attention head: v_proj's output and o_proj's input rotated by H_d / sqrt(d) (offline);
- R4, FFN: down_proj's input rotated online by H / sqrt(n) (QuantLinear.input_transform = "hadamard"), its
  weight offline; the activation is quantized after the rotation.

H_n is a Hadamard matrix built as Sylvester H_{2^a} kron Paley-I H_{q+1} (q prime, q = 3 mod 4): e.g. 576 =
8 x 72 (q = 71), 1536 = 128 x 12 (q = 11). A tied lm_head is untied (its weights differ from the embedding's
after norm fusion).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from lowbit.errors import ModelError, SchemeError, ShapeError
from lowbit.methods import MethodContext, register_method
from lowbit.methods.gptq import method_args
from lowbit.models import blocks, family_of

LLAMA_LIKE = ("llama", "mistral", "qwen2")


# --- Hadamard matrices --------------------------------------------------------------------------------------
def _is_prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, math.isqrt(q) + 1))


def paley_hadamard(q: int) -> torch.Tensor:
    """Paley construction I: a Hadamard matrix of order q + 1 for a prime q = 3 (mod 4)."""
    if not (_is_prime(q) and q % 4 == 3):
        raise ValueError(f"Paley I needs a prime q = 3 mod 4, got {q}")
    residues = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0] + [1 if i in residues else -1 for i in range(1, q)], dtype=torch.float64)
    idx = torch.arange(q)
    jac = chi[(idx[None, :] - idx[:, None]) % q]  # Jacobsthal matrix Q[i, j] = chi(j - i)
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, jac
    return s + torch.eye(q + 1, dtype=torch.float64)


def hadamard_factors(n: int) -> tuple[int, int]:
    """(2^a, m) with n = 2^a * m and a Hadamard matrix of order m (1, 2, or q + 1 for Paley I).

    Raises:
        ShapeError: no such factorisation.
    """
    a = 0
    while n % (1 << (a + 1)) == 0:
        a += 1
    for k in range(a, -1, -1):
        m = n >> k
        if m in (1, 2) or (m % 4 == 0 and _is_prime(m - 1) and (m - 1) % 4 == 3):
            return 1 << k, m
    raise ShapeError(f"no Hadamard matrix of order {n} from Sylvester x Paley-I; rotation supports sizes 2^a * "
                     "(q + 1) with q a prime = 3 mod 4 (e.g. 576, 768, 1536, 4096)")


@functools.lru_cache(maxsize=16)
def _factor_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    p, m = hadamard_factors(n)
    hp = torch.ones(1, 1, dtype=torch.float64)
    while hp.shape[0] < p:
        hp = torch.cat([torch.cat([hp, hp], 1), torch.cat([hp, -hp], 1)], 0)
    hm = torch.ones(1, 1, dtype=torch.float64) if m == 1 else (
        torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) if m == 2 else paley_hadamard(m - 1))
    return hp / math.sqrt(p), hm / math.sqrt(m)


def hadamard_matrix(n: int) -> torch.Tensor:
    """Orthonormal H_n / sqrt(n) (float64)."""
    a, b = _factor_matrices(n)
    return torch.kron(a, b)


def hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """x @ (H_n / sqrt(n)) along the last dimension, through the Kronecker factors (no n x n matrix)."""
    n = x.shape[-1]
    a, b = (f.to(device=x.device, dtype=torch.float32) for f in _factor_matrices(n))
    t = x.float().reshape(*x.shape[:-1], a.shape[0], b.shape[0])  # (…, p, m)
    return torch.einsum("...kl,ki,lj->...ij", t, a, b).reshape(x.shape).to(x.dtype)


def online_transform(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The input transform a QuantLinear applies before quantizing its input."""
    if kind != "hadamard":
        raise ValueError(f"unknown input transform {kind!r}; known: hadamard")
    return hadamard_transform(x)


def random_hadamard(n: int, seed: int = 0) -> torch.Tensor:
    """Q = diag(random signs) H_n / sqrt(n) (float64, orthogonal)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n,), generator=g, dtype=torch.float64) * 2 - 1
    return signs[:, None] * hadamard_matrix(n)


# --- model rewriting ----------------------------------------------------------------------------------------
def _rot_in(lin: nn.Linear, q: torch.Tensor) -> None:
    """A reader of the rotated stream h Q: W <- W Q."""
    lin.weight.data = (lin.weight.data.double() @ q).to(lin.weight.dtype)


def _rot_out(lin: nn.Linear, q: torch.Tensor) -> None:
    """A writer into the rotated stream: W <- Q^T W, b <- b Q."""
    lin.weight.data = (q.t() @ lin.weight.data.double()).to(lin.weight.dtype)
    if lin.bias is not None:
        lin.bias.data = (lin.bias.data.double() @ q).to(lin.bias.dtype)


def _fuse_norm(norm: nn.Module, readers: list[nn.Linear]) -> None:
    """RMSNorm weight into the readers' input columns; the norm's weight becomes 1."""
    g = norm.weight.data.double()
    for lin in readers:
        lin.weight.data = (lin.weight.data.double() * g).to(lin.weight.dtype)
    norm.weight.data.fill_(1.0)


def _untie_head(model: nn.Module) -> nn.Linear:
    head = model.get_output_embeddings()
    if head.weight is model.get_input_embeddings().weight:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    return head


def _rotate_heads(attn: nn.Module, head_dim: int) -> None:
    """R2: v_proj output and o_proj input, per head, by H_d / sqrt(d)."""
    h = hadamard_matrix(head_dim)
    v, o = attn.v_proj, attn.o_proj
    wv = v.weight.data.double().reshape(-1, head_dim, v.in_features)  # (kv heads, d, hidden)
    v.weight.data = torch.einsum("dk,hdi->hki", h, wv).reshape(v.weight.shape).to(v.weight.dtype)
    if v.bias is not None:
        v.bias.data = (v.bias.data.double().reshape(-1, head_dim) @ h).reshape(-1).to(v.bias.dtype)
    wo = o.weight.data.double().reshape(o.out_features, -1, head_dim)  # (hidden, heads, d)
    o.weight.data = (wo @ h).reshape(o.weight.shape).to(o.weight.dtype)


def _hadamard_hook(module: nn.Module, args):
    return (hadamard_transform(args[0]), *args[1:])


def rotate_model(model: nn.Module, seed: int = 0, heads: bool = True, ffn: bool = True) -> None:
    """Apply norm fusion, R1, and optionally R2 (heads) and R4 (ffn) to a llama-like model, in place.

    Raises:
        ModelError: not a llama-like decoder.
        ShapeError: a size without a Hadamard matrix.
    """
    fam = family_of(model)
    if fam is None or fam.name not in LLAMA_LIKE:
        raise ModelError(f"rotation supports pre-RMSNorm decoders ({', '.join(LLAMA_LIKE)}), not "
                         f"{getattr(fam, 'name', type(model).__name__)}")
    cfg = model.config
    q1 = random_hadamard(cfg.hidden_size, seed)
    head = _untie_head(model)
    _fuse_norm(model.model.norm, [head])
    _rot_in(head, q1)
    emb = model.get_input_embeddings()
    emb.weight.data = (emb.weight.data.double() @ q1).to(emb.weight.dtype)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    for block in blocks(model):
        attn, mlp = block.self_attn, block.mlp
        _fuse_norm(block.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj])
        _fuse_norm(block.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj])
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            _rot_in(lin, q1)
        _rot_out(attn.o_proj, q1)
        _rot_out(mlp.down_proj, q1)
        if heads:
            _rotate_heads(attn, head_dim)
        if ffn:
            _rot_in(mlp.down_proj, hadamard_matrix(mlp.down_proj.in_features))
            mlp.down_proj.lowbit_input_transform = "hadamard"  # read by QuantLinear.from_float
            mlp.down_proj.register_forward_pre_hook(_hadamard_hook)  # the float model stays exact meanwhile


@dataclass(frozen=True)
class RotationArgs:
    seed: int = 0
    heads: bool = True
    ffn: bool = True


@register_method("rotation")
def rotation(model: nn.Module, scheme, ctx: MethodContext) -> None:
    """QuaRot-style rotation (function-preserving); run it before equalization / GPTQ / LoRC."""
    args = method_args(scheme, "rotation", RotationArgs)
    if "rotation" in scheme.methods and scheme.methods.index("rotation") != 0:
        raise SchemeError("method 'rotation' rewrites every weight: list it first in the scheme's methods")
    rotate_model(model, args.seed, args.heads, args.ffn)
    ctx.extras["rotation"] = {"seed": args.seed, "heads": args.heads, "ffn": args.ffn}

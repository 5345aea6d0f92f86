"""Error of each integer nonlinearity against float across input ranges and bit widths (CPU, seconds).

Inputs: Gaussian values of standard deviation `spread` (real units), quantized symmetrically to `bits` with the
scale that covers ±4 spread (what a max calibration of such a tensor gives). Softmax rows of 64 keys; errors in
probability units; attention contexts (softmax times N(0, 1) values) over 64 and 384 keys, both normalisations.
GELU errors in real output units. I-LayerNorm errors of the normalised output (unit variance).
Each op runs on the integer backend (and equals its float64 twin: tests/intonly).

    .venv/bin/python benchmarks/intonly_ops.py
"""
import torch
import torch.nn.functional as F

from lowbit.intonly.dyadic import INT
from lowbit.intonly.ops import IGELU, IntSoftmax, LayerNormInt, ShiftGELU


def codes(spread: float, bits: int, shape=(64, 64), seed: int = 0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread
    scale = 4 * spread / (2 ** (bits - 1) - 1)
    return torch.round(x / scale).clamp(-2 ** (bits - 1), 2 ** (bits - 1) - 1).long(), scale


def row(name, err):
    return f"| {name} | {float(err.abs().max()):.2e} | {float(err.abs().mean()):.2e} |"


def main() -> None:
    lines = ["| op | input | max abs error | mean abs error |", "|---|---|---|---|"]
    for bits in (8, 16):
        for spread in (1.0, 3.0):
            q, s = codes(spread, bits)
            ref = torch.softmax(q * s, -1)
            for kind, label in (("shift", "Shiftmax (I-ViT)"), ("poly", "i-exp softmax (I-BERT)")):
                op = IntSoftmax.build(s, kind)
                err = op(INT, q) * op.out_scale - ref
                lines.append(row(f"{label} | {bits}-bit scores, σ = {spread}, 64 keys, 7-bit P", err))
    # the attention context sum_j p_j v_j (v ~ N(0, 1), 32 channels) with normalised 7-bit probabilities (the papers)
    # and with deferred normalisation (7-bit weights relative to the row maximum, the context divided by their
    # total once; the integer graph's 2^-14 rounding of that quotient is left out here)
    for keys in (64, 384):
        for spread in (1.0, 3.0):
            q, s = codes(spread, 16, (64, keys))
            v = torch.randn(keys, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
            ref = torch.softmax(q.double() * s, -1) @ v
            for deferred in (False, True):
                op = IntSoftmax.build(s, "shift", deferred=deferred)
                if deferred:
                    u, total = op.weights(INT, q)
                    ctx = (u.double() @ v) / total.double()
                else:
                    ctx = (op(INT, q) * op.out_scale).double() @ v
                label = "Shiftmax, deferred normalisation" if deferred else "Shiftmax, normalised probabilities"
                lines.append(row(f"{label} | context, 16-bit scores, σ = {spread}, {keys} keys, 7-bit weights",
                                 ctx - ref))
    for bits in (8, 16):
        q, s = codes(1.5, bits)
        ref = F.gelu(q * s)
        for cls, label in ((ShiftGELU, "ShiftGELU (I-ViT)"), (IGELU, "i-GELU (I-BERT)")):
            op = cls.build(s)
            lines.append(row(f"{label} | {bits}-bit input, σ = 1.5", op(INT, q) * op.out_scale - ref))
    for spread in (30.0, 3000.0):
        x = torch.round(torch.randn(64, 384, generator=torch.Generator().manual_seed(1)) * spread).long()
        ln = LayerNormInt(384)
        err = ln.core(INT, x) * ln.unit_scale - F.layer_norm(x.double(), (384,))
        lines.append(row(f"I-LayerNorm | 16-bit input, σ = {spread:g} codes, 384 channels", err))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

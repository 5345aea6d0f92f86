"""Each nonlinearity: bit-exact INT vs SIM, and its error against float across input scales (bounds measured,
then loosened by ~1.5x; they fail if an approximation constant or a shift is wrong)."""
import pytest
import torch
import torch.nn.functional as F

from lowbit.intonly.dyadic import INT, SIM, IntegerOnlyError
from lowbit.intonly.ops import IGELU, IntSoftmax, LayerNormInt, ShiftGELU


def _codes(scale, bits=8, shape=(4, 8, 64), spread=3.0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * spread
    return torch.round(x / scale).clamp(-2 ** (bits - 1), 2 ** (bits - 1) - 1).long()


def _both(op, x, *extra):
    a, b = op(INT, x, *extra), op(SIM, x.double(), *extra)
    assert a.dtype == torch.int64 and torch.equal(a, b.long())
    return a


# max |p - softmax| (probabilities): measured 0.008-0.023 for shift, 0.008-0.013 for poly
@pytest.mark.parametrize("kind,bound", [("shift", 0.035), ("poly", 0.02)])
@pytest.mark.parametrize("scale", [0.01, 0.05, 0.1])
def test_softmax_error(kind, bound, scale):
    x = _codes(scale)
    op = IntSoftmax.build(scale, kind)
    p = _both(op, x)
    err = (p * op.out_scale - torch.softmax(x * scale, -1)).abs().max()
    assert err < bound


def test_softmax_mask_excludes_keys_and_rows_sum_to_one():
    x = _codes(0.05)
    mask = torch.ones(1, 1, 64, dtype=torch.int64)
    mask[..., 40:] = 0
    op = IntSoftmax.build(0.05, "shift")
    p = _both(op, x, mask)
    assert (p[..., 40:] == 0).all()
    assert ((p.sum(-1) * op.out_scale) - 1).abs().max() < 0.1  # rounded: no half-step loss per key
    ref = torch.softmax((x * 0.05)[..., :40], -1)
    assert (p[..., :40] * op.out_scale - ref).abs().max() < 0.035


# max |gelu_int - gelu| in units of the input range: measured 0.009-0.033 for both
@pytest.mark.parametrize("cls", [ShiftGELU, IGELU])
@pytest.mark.parametrize("scale,bits", [(0.01, 8), (0.05, 8), (0.1, 8), (4e-4, 16)])
def test_gelu_error(cls, scale, bits):
    x = _codes(scale, bits, spread=4.0 if bits == 8 else 6.0)
    op = cls.build(scale)
    y = _both(op, x)
    assert (y * op.out_scale - F.gelu(x * scale)).abs().max() < 0.05


def test_shiftgelu_strongly_negative_inputs_go_to_zero():
    # I-ViT's row-max form returns x/2 here (both exponentials saturate); the reflected form does not
    x = torch.tensor([[-127, -100, 0, 60, 127]])
    op = ShiftGELU.build(0.1)
    y = _both(op, x) * op.out_scale
    assert (y - F.gelu(x * 0.1)).abs().max() < 0.05


@pytest.mark.parametrize("spread", [30.0, 3000.0, 30000.0])
def test_layernorm_error(spread):
    x = torch.round(torch.randn(6, 384, generator=torch.Generator().manual_seed(2)) * spread)
    x = x.clamp(-32768, 32767).long()
    ln = LayerNormInt(384)
    y = _both(ln.core, x)
    ref = F.layer_norm(x.double(), (384,))
    # measured 2.5e-4 at spread 3000; coarse inputs (spread 30) carry the mean's rounding (< 1/30 of a unit)
    assert (y * ln.unit_scale - ref).abs().max() < (0.06 if spread == 30 else 1e-3)


def _layernorm_core_python(row: list[int], iterations: int = 10) -> list[int]:
    """I-LayerNorm's core in Python integers with exact // and every Newton step a full division."""
    c = len(row)
    mean = (2 * sum(row) + c) // (2 * c)
    y = [v - mean for v in row]
    var = sum(v * v for v in y)
    k = 1 << 16
    for _ in range(iterations):
        k = (k + var // k) // 2
    factor = ((1 << 31) - 1) // max(k, 1)
    return [(v * factor) >> 1 for v in y]


@pytest.mark.parametrize("spread", [0.0, 0.4, 30.0, 3000.0, 32767.0])
def test_layernorm_core_is_exact(spread):
    # rows spanning every variance scale, from constant rows (var 0) to saturated 16-bit inputs (var ~ 2^40):
    # the first Newton step as a shift and the short quotients after it (ops.newton_bits) change no bit
    g = torch.Generator().manual_seed(5)
    x = torch.round(torch.randn(8, 768, generator=g) * spread * torch.rand(8, 1, generator=g)).clamp(-32768, 32767)
    x[0] = 7  # constant row
    x[1, ::2], x[1, 1::2] = -32768, 32767  # the largest variance
    x = x.long()
    got = LayerNormInt(768).core(INT, x)
    want = torch.tensor([_layernorm_core_python(r) for r in x.tolist()])
    assert torch.equal(got, want)


def test_layernorm_affine_matches_float():
    x = torch.round(torch.randn(3, 64, generator=torch.Generator().manual_seed(3)) * 2000).long()
    ln = LayerNormInt(64)
    gamma, beta = torch.rand(64) + 1e-4, torch.randn(64)  # includes a near-zero gamma
    out_scale = 8 / 32767
    m, bias = ln.affine(gamma, beta, out_scale, 21)
    y = INT.requant(ln.core(INT, x), m, bias)
    ref = F.layer_norm(x.double(), (64,), gamma.double(), beta.double()) / out_scale
    assert (y - ref).abs().max() < 3


def test_op_errors():
    with pytest.raises(IntegerOnlyError, match="positive finite"):
        ShiftGELU.build(0.0)
    with pytest.raises(IntegerOnlyError, match="unknown softmax kind"):
        IntSoftmax.build(0.1, "taylor")
    with pytest.raises(IntegerOnlyError, match="too fine"):
        IntSoftmax.build(1e-7, "poly")

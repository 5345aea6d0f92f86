"""Per-token activation quantization: the Triton kernel is bit-exact with its reference twin (codes and scales)."""
import pytest
import torch

FMTS = ["int8", "fp8_e4m3", "int4", "fp4_e2m1"]


def _inputs(m, k, dev, dtype):
    x = torch.randn(m, k, device=dev) * torch.logspace(-3, 2, m, device=dev)[:, None]  # tokens of every magnitude
    x = x.to(dtype)
    x[0, : k // 3] = 0  # zeros quantize to code 0 (and -0.0 keeps its sign bit in FP codes)
    if m > 2:
        x[2] = 0  # an all-zero token gets scale 1
    return x


def _check(x, fmt, smooth=None, static=None, packed=True):
    from lowbit.kernels import reference
    from lowbit.kernels.act_quant import quantize_act

    qr, sr = reference.quantize_act(x.cpu(), fmt, None if smooth is None else smooth.cpu(),
                                    None if static is None else static.cpu(), packed=packed)
    poison = torch.full_like(qr, 0x55, device=x.device)  # every code must be written
    q, s = quantize_act(x, fmt, smooth, static, out=poison, packed=packed)
    assert torch.equal(s.cpu(), sr)
    assert torch.equal(q.cpu(), qr), f"{(q.cpu() != qr).sum().item()} codes differ"


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("m,k", [(1, 70), (3, 130), (37, 2050)])
def test_act_quant_bit_exact(dev, fmt, m, k):
    _check(_inputs(m, k, dev, torch.float16), fmt)


@pytest.mark.parametrize("fmt", FMTS)
def test_act_quant_smooth_and_static(dev, fmt):
    x = _inputs(3, 96, dev, torch.float16)
    _check(x, fmt, smooth=torch.rand(96, device=dev) + 0.5)
    _check(x, fmt, static=torch.tensor([0.05], device=dev))  # saturates the large tokens


@pytest.mark.parametrize("fmt", ["int4", "fp4_e2m1"])
@pytest.mark.parametrize("m,k", [(1, 70), (37, 2051)])  # held codes: any K, odd included
def test_act_quant_held_4bit_bit_exact(dev, fmt, m, k):
    _check(_inputs(m, k, dev, torch.float16), fmt, packed=False)
    _check(_inputs(3, 96, dev, torch.float16), fmt, static=torch.tensor([0.05], device=dev), packed=False)


@pytest.mark.parametrize("fmt", ["int4", "fp4_e2m1"])
def test_held_codes_are_the_packed_codes(dev, fmt):
    """Held 4-bit codes are the packed ones, one per byte, as 8-bit codes of the same value: int8 -8..7 for int4,
    fp8 e4m3 bits for fp4; decoding them as the 8-bit format gives the 4-bit values exactly."""
    from lowbit.formats import get_format, unpack_nibbles
    from lowbit.kernels import reference
    from lowbit.kernels.act_quant import HELD, codes_dtype, quantize_act

    x = _inputs(5, 64, dev, torch.float16)
    qp, sp = quantize_act(x, fmt)
    qh, sh = quantize_act(x, fmt, packed=False)
    assert qh.shape == x.shape and qh.dtype == codes_dtype(fmt, packed=False) and torch.equal(sh, sp)
    if fmt == "int4":
        assert qh.dtype == torch.int8 and int(qh.min()) >= -8 and int(qh.max()) <= 7
        assert torch.equal(qh.cpu(), unpack_nibbles(qp.cpu(), signed=True).to(torch.int8))
    assert torch.equal(reference.decode_act(qh.cpu(), sh.cpu(), HELD[fmt]),
                       reference.decode_act(qp.cpu(), sp.cpu(), fmt))
    # every value the quantizer emits, one code each (scale 1; fp4: ±0 included; int4: -8 is never emitted)
    vals = torch.arange(-7.0, 8.0) if fmt == "int4" else get_format(fmt).decode(torch.arange(16), torch.tensor(1.0))
    _check(vals[None].to(dev), fmt, packed=False)
    q, _ = quantize_act(vals[None].to(dev), fmt, packed=False)
    assert torch.equal(reference.decode_act(q.cpu(), torch.ones(1), HELD[fmt])[0], vals)


def test_act_quant_rounding_edges(dev):
    """Ties to even and saturation, one value at a time: amax 448 gives scale 1 for fp8, 127 for int8."""
    ties = torch.tensor([448.0, 2.5, -3.5, 0.5, 1.5, 17.0, 19.0, 0.0078125 * 1.5, -0.0, 240.0, 0.3, 1e-30])
    _check(ties[None].to(dev), "fp8_e4m3")
    _check((ties[None] * 127 / 448).to(dev), "int8")
    _check((ties[None] * 6 / 448).to(dev), "fp4_e2m1")


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_act_quant_bit_exact_gpu(dev, fmt, dtype):
    _check(_inputs(4096, 4096, dev, dtype), fmt)
    _check(_inputs(37, 11008, dev, dtype), fmt, smooth=torch.rand(11008, device=dev) + 0.5)

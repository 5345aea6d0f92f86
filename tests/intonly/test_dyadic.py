import math

import pytest
import torch

from lowbit.intonly.dyadic import INT, SIM, IntegerOnlyError, dyadic, mantissa_bits


@pytest.mark.parametrize("ratio", [1e-6, 3.7e-5, 0.001234, 0.2, 0.5, 0.999999, 1.5, 77.3])
def test_requant_within_one_lsb_of_float(ratio):
    # requantization targets are at most 16-bit, so |z * ratio| < 2^16 (the multiplier's relative error 2^-25
    # then moves the product by < 2^-9 LSB)
    hi = min(2**24, int(2**16 / ratio))
    z = torch.randint(-hi, hi, (4096,), generator=torch.Generator().manual_seed(0))
    m = dyadic(ratio, mantissa_bits(25))
    got = INT.requant(z, m)
    assert (got - torch.round(z.double() * ratio).long()).abs().max() <= 1
    assert torch.equal(got, SIM.requant(z.double(), m).long())  # the float64 twin is bit-exact


def test_dyadic_is_frexp_with_31_bit_mantissa():
    m = dyadic(0.3)
    mant, e = math.frexp(0.3)
    assert int(m.b) == math.floor(mant * 2**31 + 0.5) and int(m.c) == 31 - e
    assert abs(float(m.value()) - 0.3) <= 2**-32


def test_dyadic_carry_zero_and_sign():
    m = dyadic(torch.tensor([1 - 2**-40, 0.0, -0.25]))
    assert m.b.tolist()[0] == 2**30 and float(m.value()[0]) == 1.0  # mantissa rounded up to 1.0
    assert m.b.tolist()[1] == 0 and m.value().tolist()[2] == -0.25


def test_dyadic_errors():
    with pytest.raises(IntegerOnlyError, match="too large"):
        dyadic(2.0**40)
    with pytest.raises(IntegerOnlyError, match="non-finite"):
        dyadic(float("nan"))
    with pytest.raises(IntegerOnlyError, match="cannot be requantized"):
        mantissa_bits(48)


@pytest.mark.parametrize("signed", [False, True])
def test_restoring_division_is_exact_floor(signed):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-2**40 if signed else 0, 2**40, (2000,), generator=g)
    b = torch.randint(1, 2**20, (2000,), generator=g)
    want = torch.div(a, b, rounding_mode="floor")
    assert torch.equal(INT.floordiv(a, b, 41, signed=signed), want)
    assert torch.equal(SIM.floordiv(a.double(), b, 41, signed=signed).long(), want)
    small = torch.randint(0, 100, (500,), generator=g) * 7 + 3
    assert torch.equal(INT.floordiv(small, 7, 10, qbits=7), small // 7)  # the short-quotient path


def test_shift_floors_both_ways():
    v = torch.tensor([-7, -1, 0, 5, 9])
    s = torch.tensor([-1, -2, 3, 1, -3])
    want = torch.floor(v.double() * torch.pow(2.0, s.double())).long()
    assert torch.equal(INT.shift(v, s), want) and torch.equal(SIM.shift(v.double(), s).long(), want)

"""The 32-bit requantization path of the integer kernels (HI_WORD: the high word of a 32 x 32 -> 64-bit product,
rounded and shifted on 32 bits, lowbit.kernels.intonly._hi_word_term) equals the torch integer reference bit for bit
wherever the host selects it (lowbit.kernels.intonly.hi_word_modes), at the edges of its preconditions (CPU under
TRITON_INTERPRET=1)."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.intonly.dyadic import INT, Dyadic, dyadic
from test_gemm_epilogue import _reference  # the torch integer reference of linear_rq

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")


def _multipliers(g, n: int, c_lo: int, signed: bool = True) -> Dyadic:
    """31-bit mantissas (the largest, 2^31 - 1, in column 1), shifts c_lo .. c_lo + 11 (c_lo in column 1), and a zero
    multiplier with dyadic()'s c = 1 in column 0."""
    b = torch.randint(1 << 30, 1 << 31, (n,), generator=g)
    if signed:
        b = b * (torch.randint(0, 2, (n,), generator=g) * 2 - 1)
    c = torch.randint(c_lo, c_lo + 12, (n,), generator=g)
    b[0], c[0] = 0, 1
    if n > 1:
        b[1], c[1] = (1 << 31) - 1, c_lo
    return Dyadic(b, c)


def test_c_min_is_the_smallest_shift_of_a_nonzero_multiplier_and_travels_with_the_multiplier():
    m = Dyadic(torch.tensor([0, 5, -7, 9]), torch.tensor([1, 40, 35, 50]), z_bits=20)
    assert m.c_min == 35  # the zero multiplier's c = 1 does not count
    assert Dyadic(torch.zeros(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64)).c_min == 64
    assert (m.to("cpu").c_min, m.to("cpu").z_bits) == (35, 20)
    assert Dyadic(m.b, m.c, 12).c_min == 12  # given: kept
    assert dyadic(torch.tensor([2.0**-10, 2.0**-3])).c_min == dyadic(2.0**-3).c.item()


def test_hi_word_modes_follow_their_preconditions():
    from lowbit.kernels.intonly import hi_word_modes

    deep = Dyadic(torch.tensor([3 << 29]), torch.tensor([40]))
    shallow = Dyadic(torch.tensor([3 << 29]), torch.tensor([30]))
    bounded = Dyadic(shallow.b, shallow.c, z_bits=28)  # 28 + 33 - 30 = 31: room for the shift
    z16 = torch.zeros(2, 3, dtype=torch.int32)
    assert hi_word_modes(deep, None, None) == (1, 1)
    assert hi_word_modes(deep, None, (z16, deep)) == (1, 1)
    assert hi_word_modes(bounded, None, (z16, Dyadic(deep.b, deep.c, z_bits=16))) == (2, 2)
    assert hi_word_modes(shallow, None, None) == (0, 0)  # c = 30, no bound: the rounding bit is in the low word
    assert hi_word_modes(Dyadic(shallow.b, shallow.c, z_bits=29), None, None) == (0, 0)  # 29 + 3 > 31
    assert hi_word_modes(deep, torch.zeros(3, dtype=torch.int64), None) == (0, 0)  # a bias at shift precision
    assert hi_word_modes(deep, None, (z16, shallow)) == (0, 0)
    assert hi_word_modes(deep, None, (z16.long(), deep)) == (0, 0)  # a 64-bit second term without a bound
    assert hi_word_modes(deep, None, None, z16.long()) == (0, 0)  # a 64-bit first term (requant kernel)
    on_device = deep.b.to("meta"), deep.c.to("meta")  # off the CPU (a GPU in use): nothing read back
    assert Dyadic(*on_device).c_min is None and hi_word_modes(Dyadic(*on_device), None, None) == (0, 0)
    assert hi_word_modes(Dyadic(*on_device, deep.c_min), None, None) == (1, 1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 37), k=st.sampled_from([32, 96, 776]),
       n=st.integers(1, 70), c_lo=st.integers(26, 40), bits=st.sampled_from([8, 16]), two=st.booleans(),
       bounded=st.booleans())
def test_linear_rq_hi_word_path_equals_the_reference(seed, rows, k, n, c_lo, bits, two, bounded):
    """Shifts from 26 up (33 = mode 1's edge; below it mode 2 with the plan's bound z_bits), mantissas of both
    signs up to 2^31 - 1, INT32 biases up to their extremes where no bound is given, clamping at both ends."""
    from lowbit.kernels.intonly import hi_word_modes
    from lowbit.kernels.intonly_gemm import linear_rq

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (rows, k), generator=g, dtype=torch.int8)
    w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    m = _multipliers(g, n, c_lo)
    if bounded or c_lo < 33:  # the bound of |x @ wᵀ + lin_bias| a plan records, with room for the shift to 33
        z_bits = 31 - max(0, 33 - c_lo)
        lb_max = (1 << z_bits) - k * 128 * 128
        m = Dyadic(m.b, m.c, z_bits=z_bits)
    else:
        lb_max = 1 << 31
    lin_bias = torch.randint(-lb_max + 1, lb_max, (n,), generator=g)
    term2 = None
    if two:
        z2 = torch.randint(-2**15, 2**15, (rows, n), generator=g, dtype=torch.int32)
        m2 = _multipliers(g, n, c_lo + 2, signed=False)
        term2 = (z2, Dyadic(m2.b, m2.c, z_bits=16))
    modes = hi_word_modes(m, None, term2)
    assert all(modes) and (modes[0] == 2) == (m.z_bits is not None)
    out = linear_rq(x, w, lin_bias, m, bits, term2=term2)
    assert torch.equal(out.long(), _reference(x, w, lin_bias, m, bits, term2=term2))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 40), n=st.integers(1, 300), c_lo=st.integers(33, 45),
       two=st.booleans())
def test_requant_kernel_hi_word_path_equals_the_reference(seed, rows, n, c_lo, two):
    """The standalone requant kernel on int32 z of any magnitude (the full int32 range) with INT32 linear biases."""
    from lowbit.kernels.intonly import hi_word_modes, requant

    g = torch.Generator().manual_seed(seed)
    z = torch.randint(-2**31, 2**31, (rows, n), generator=g, dtype=torch.int64).to(torch.int32)
    lin_bias = torch.randint(-2**31, 2**31, (n,), generator=g)
    m = Dyadic(torch.randint(-(1 << 31) + 1, 1 << 31, (n,), generator=g), torch.randint(c_lo, 60, (n,), generator=g))
    term2 = (torch.randint(-2**31, 2**31, (rows, n), generator=g, dtype=torch.int64).to(torch.int32),
             Dyadic(torch.randint(1, 1 << 31, (1,), generator=g), torch.tensor([c_lo]))) if two else None
    assert hi_word_modes(m, None, term2, z) == (1, 1)
    out = requant(z, m, 16, term2=term2, lin_bias=lin_bias)
    zz = z.long() + lin_bias
    ref = INT.rq_sum([(zz, m), (term2[0].long(), term2[1])], 16) if two else INT.rq(zz, m, None, 16)
    assert torch.equal(out.long(), ref)

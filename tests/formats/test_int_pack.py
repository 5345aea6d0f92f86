import pytest
import torch
from hypothesis import given, settings, strategies as st

from lowbit.errors import SchemeError, ShapeError
from lowbit.formats import IntFormat, get_format, pack_nibbles, unpack_nibbles


@pytest.mark.parametrize("bits", range(2, 9))
def test_int_ranges(bits):
    s, u = IntFormat(bits), IntFormat(bits, signed=False)
    assert (s.qmin, s.qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert (u.qmin, u.qmax) == (0, 2**bits - 1)
    assert IntFormat(bits, restricted=True).qmin == -(2 ** (bits - 1)) + 1


def test_int_encode_rounds_half_to_even_and_saturates():
    f = IntFormat(4)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 7.4, 7.6, 100.0, -8.5, -100.0])
    assert f.encode(x, torch.tensor(1.0)).tolist() == [0, 2, 2, 0, -2, 7, 7, 7, -8, -8]


def test_asym_encode_decode_with_zero_point():
    f = IntFormat(4, signed=False)
    x = torch.tensor([-1.0, 0.0, 2.0, 3.5])
    scale, zero = torch.tensor(0.3), torch.tensor(3.0)
    q = f.encode(x, scale, zero)
    assert q.dtype == torch.uint8 and q.tolist() == [0, 3, 10, 15]
    assert torch.allclose(f.decode(q, scale, zero), (q.float() - 3) * 0.3)


def test_bad_bits_and_unknown_format():
    with pytest.raises(SchemeError, match="2..8"):
        IntFormat(9)
    with pytest.raises(SchemeError, match="known formats"):
        get_format("int17")


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 9), half=st.integers(1, 40), signed=st.booleans(), seed=st.integers(0, 1000))
def test_pack_round_trip_exact(rows, half, signed, seed):
    g = torch.Generator().manual_seed(seed)
    lo, hi = (-8, 8) if signed else (0, 16)
    codes = torch.randint(lo, hi, (rows, 2 * half), generator=g).to(torch.int8 if signed else torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.shape == (rows, half) and packed.dtype == torch.uint8
    assert torch.equal(unpack_nibbles(packed, signed), codes)


def test_pack_layout_low_nibble_first():
    assert pack_nibbles(torch.tensor([[1, 2, -1, 7]], dtype=torch.int8)).tolist() == [[0x21, 0x7F]]


def test_pack_odd_length_raises():
    with pytest.raises(ShapeError, match="even"):
        pack_nibbles(torch.zeros(3, 5, dtype=torch.int8))

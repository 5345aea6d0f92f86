import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from lowbit.formats import FP4_E2M1, FP6_E2M3, FP6_E3M2, FP8_E4M3, FP8_E5M2
from lowbit.formats.fp import FP4_E2M1_VALUES

TORCH_FP8 = [(FP8_E4M3, torch.float8_e4m3fn), (FP8_E5M2, torch.float8_e5m2)]


def torch_codes(x, fmt, dt):  # noqa: D103
    """Reference: torch's cast of the saturated input (our encode saturates finite overflow)."""
    return x.clamp(-fmt.max_abs, fmt.max_abs).to(dt).view(torch.uint8)


@pytest.mark.parametrize("fmt,dt", TORCH_FP8)
def test_fp8_decode_all_256_codes_matches_torch(fmt, dt):
    codes = torch.arange(256, dtype=torch.uint8)
    ours, ref = fmt.decode(codes), codes.view(dt).float()
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    fin = ~torch.isnan(ref)
    assert torch.equal(ours[fin], ref[fin])
    assert torch.equal(torch.signbit(ours[fin]), torch.signbit(ref[fin]))


@pytest.mark.parametrize("fmt,dt", TORCH_FP8)
def test_fp8_encode_every_finite_value_and_midpoints(fmt, dt):
    vals = fmt.table[~torch.isnan(fmt.table) & ~torch.isinf(fmt.table)].unique()
    mids = (vals[1:] + vals[:-1]) / 2  # exact ties: must round to the even mantissa
    x = torch.cat([vals, mids, mids.nextafter(torch.tensor(math.inf)), mids.nextafter(torch.tensor(-math.inf))])
    assert torch.equal(fmt.encode_generic(x), torch_codes(x, fmt, dt))


@pytest.mark.parametrize("fmt,dt", TORCH_FP8)
def test_fp8_encode_edges(fmt, dt):
    tiny = 2.0 ** (fmt.min_normal_exp - fmt.man_bits)  # smallest subnormal
    x = torch.tensor([0.0, -0.0, tiny, tiny / 2, tiny * 0.75, -tiny / 2, fmt.max_abs, -fmt.max_abs,
                      fmt.max_abs * 1.01, -fmt.max_abs * 1e3, 1e30, math.inf, -math.inf, 2.0**-40, math.nan])
    ours, ref = fmt.encode_generic(x), torch_codes(x, fmt, dt)
    assert torch.equal(ours[:-1], ref[:-1])
    assert torch.equal(fmt.encode(x), ours)
    assert torch.isnan(fmt.decode(ours[-1:])).all() and torch.isnan(ref[-1:].view(dt).float()).all()
    assert fmt.decode(fmt.encode(torch.tensor([1e30])))[0] == fmt.max_abs  # saturation, not inf/NaN


@pytest.mark.parametrize("fmt,dt", TORCH_FP8)
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), log_range=st.integers(-20, 18))
def test_fp8_encode_random_matches_torch(fmt, dt, seed, log_range):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, generator=g) * 2.0**log_range
    x = x.clamp(-fmt.max_abs, fmt.max_abs) if log_range > 14 else x
    ours = fmt.encode_generic(x)
    assert torch.equal(ours, torch_codes(x, fmt, dt))
    assert torch.equal(fmt.encode(x), ours)  # the fast path
    assert torch.equal(fmt.decode(ours), x.clamp(-fmt.max_abs, fmt.max_abs).to(dt).float())


def test_fp4_table_matches_written_values():
    assert FP4_E2M1.table.tolist() == list(FP4_E2M1_VALUES)
    assert FP4_E2M1.max_abs == 6.0


@pytest.mark.parametrize("x,code", [
    (0.25, 0b0000),   # tie between 0 and 0.5 -> even (0)
    (0.26, 0b0001),
    (0.75, 0b0010),   # tie 0.5 / 1.0 -> 1.0 (even mantissa)
    (1.25, 0b0010),   # tie 1.0 / 1.5 -> 1.0
    (1.75, 0b0100),   # tie 1.5 / 2 -> 2
    (2.5, 0b0100),    # tie 2 / 3 -> 2
    (3.5, 0b0110),    # tie 3 / 4 -> 4
    (5.0, 0b0110),    # tie 4 / 6 -> 4
    (5.01, 0b0111),
    (6.0, 0b0111),
    (100.0, 0b0111),  # saturates
    (-0.0, 0b1000),
    (-5.5, 0b1111),
])
def test_fp4_rounding_edges(x, code):
    assert FP4_E2M1.encode(torch.tensor([x])).item() == code


def test_fp4_encode_is_nearest_table_value():
    x = torch.linspace(-7, 7, 20001)
    dec = FP4_E2M1.decode(FP4_E2M1.encode(x))
    grid = FP4_E2M1.table.unique()
    best = (x[:, None] - grid[None, :]).abs().min(dim=1).values
    assert torch.equal((dec - x.clamp(-6, 6)).abs(), best.where(x.abs() <= 6, (dec - x.clamp(-6, 6)).abs()))


@pytest.mark.parametrize("fmt,maxv", [(FP6_E3M2, 28.0), (FP6_E2M3, 7.5), (FP8_E4M3, 448.0), (FP8_E5M2, 57344.0)])
def test_max_values(fmt, maxv):
    assert fmt.max_abs == maxv


@pytest.mark.parametrize("fmt", [FP4_E2M1, FP6_E3M2, FP6_E2M3, FP8_E4M3, FP8_E5M2])
def test_every_code_round_trips(fmt):
    codes = torch.arange(2**fmt.bits, dtype=torch.uint8)
    vals = fmt.decode(codes)
    ok = ~torch.isnan(vals) & ~torch.isinf(vals)
    assert torch.equal(fmt.encode(vals[ok]), codes[ok])


@pytest.mark.parametrize("fmt", [FP4_E2M1, FP6_E3M2])
def test_nan_into_format_without_nan_raises(fmt):
    with pytest.raises(ValueError, match="NaN"):
        fmt.encode(torch.tensor([1.0, math.nan]))

"""The small-M tensor-core kernel on the permuted weight copy (gemv.mma_w4_perm) against the plain-torch reference
(interpreter on CPU, or GPU), and its hand-written PTX nibble decoder against the plain bit trick."""
import itertools
import re

import numpy as np
import pytest
import torch

from lowbit.kernels import _tl, reference
from lowbit.kernels.gemv import mma_w4_perm, permute_w4
from lowbit.quant.qtensor import quantize_weight
from lowbit.scheme import QuantSpec

KINDS = {"int4": ({}, "int4", _tl.INT4), "uint4": ({"symmetric": False}, "int4", _tl.UINT4),
         "fp4": ({}, "fp4_e2m1", _tl.FP4), "fp4-m2": ({"scale_rule": "pow2_row"}, "fp4_e2m1", _tl.FP4)}


def _case(m, n, k, group, wname):
    kw, fmt, kind = KINDS[wname]
    qt = quantize_weight(torch.randn(n, k), QuantSpec(fmt, "group", group, **kw))
    wp, sp, zp = permute_w4(qt.codes, qt.scale, qt.zero, group)
    return qt, kind, (wp, sp, zp), torch.randn(n), torch.randn(m, k)


# (M, N, K, group, (BN, BJ, warps, stages, split)): N not a multiple of BN (37, 130), K with a padded tail (448 of
# 512, 1600 of 2048, 320 of 512), BJ < group (two steps per block), split-K with a ragged last share and with more
# programs than steps
CASES = [((2, 37, 448, 64), (16, 64, 1, 1, 1)), ((3, 130, 320, 32), (32, 16, 2, 2, 1)),
         ((7, 40, 1600, 64), (16, 32, 1, 1, 3)), ((16, 24, 1024, 128), (16, 64, 1, 1, 4)),
         ((5, 16, 256, 32), (16, 32, 1, 1, 4))]


@pytest.mark.parametrize("shape,cfg", CASES)
@pytest.mark.parametrize("wname", ["int4", "uint4", "fp4"])
def test_perm_mma_w4a16_matches_reference(dev, shape, cfg, wname):
    m, n, k, g = shape
    qt, kind, (wp, sp, zp), b, x = _case(m, n, k, g, wname)
    dt = torch.float16  # bf16 is unreliable under the interpreter; the GPU tests cover it
    xd, bd = x.to(dt).to(dev), b.to(dt).to(dev)
    out = torch.full((m, n), float("nan"), dtype=dt, device=dev)  # poisoned: every element must be written
    cnt = torch.zeros(16, dtype=torch.int32, device=dev)
    y = mma_w4_perm(xd, None, _tl.A16, wp.to(dev), sp.to(dev), None if zp is None else zp.to(dev), bd, kind, g, n, k,
                    dt, counters=cnt, config=cfg, out=out)
    assert y is out and not cnt.any()  # split-K leaves its counters at zero for the next call
    ref = reference.qgemm(xd.cpu(), None, None, qt, bd.cpu(), torch.float32)
    torch.testing.assert_close(y.float().cpu(), ref, rtol=2e-3, atol=2e-3 * ref.abs().max().item())


@pytest.mark.parametrize("afmt,akind,wname", [("int8", _tl.INT8, "int4"), ("int8", _tl.INT8, "uint4"),
                                              ("fp8_e4m3", _tl.FP8, "fp4-m2")])
@pytest.mark.parametrize("split", [1, 3])
def test_perm_mma_w4a8_matches_reference(dev, afmt, akind, wname, split):
    """W4A8: the act_quant codes and scales in, the same function as the reference of those codes."""
    m, n, k, g = 3, 45, 448, 64
    qt, kind, (wp, sp, zp), b, x = _case(m, n, k, g, wname)
    x[1, 7] = 200.0
    a, sa = reference.quantize_act(x, afmt)
    out = torch.full((m, n), float("nan"), dtype=torch.float32, device=dev)
    cnt = torch.zeros(8, dtype=torch.int32, device=dev)
    y = mma_w4_perm(a.to(dev), sa.to(dev), akind, wp.to(dev), sp.to(dev), None if zp is None else zp.to(dev),
                    b.to(dev), kind, g, n, k, torch.float32, counters=cnt, config=(16, 32, 1, 1, split), out=out)
    ref = reference.qgemm(a, sa, afmt, qt, b, torch.float32)
    torch.testing.assert_close(y.cpu(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_perm_mma_rejects_bad_inputs(dev):
    qt, kind, (wp, sp, zp), _, x = _case(2, 16, 512, 64, "int4")
    x = x.half()
    with pytest.raises(ValueError, match="1 <= M <= 64"):
        mma_w4_perm(torch.randn(65, 512).half(), None, _tl.A16, wp, sp, None, None, kind, 64, 16, 512, torch.half)
    with pytest.raises(ValueError, match="not a permuted copy"):
        mma_w4_perm(x, None, _tl.A16, wp[:, :128], sp, None, None, kind, 64, 16, 512, torch.float32)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        mma_w4_perm(x.float(), None, _tl.A16, wp, sp, None, None, kind, 64, 16, 512, torch.float32)
    with pytest.raises(ValueError, match="no MMA"):
        mma_w4_perm(x, torch.ones(2), _tl.FP8, wp, sp, None, None, kind, 64, 16, 512, torch.float32)
    with pytest.raises(ValueError, match="per-token scales"):
        mma_w4_perm(x, None, _tl.INT8, wp, sp, None, None, kind, 64, 16, 512, torch.float32)


# --- the PTX of _nib8 (GPU only in the kernel: the interpreter has no inline asm), run by a tiny PTX evaluator ---
def _run_ptx(asm: str, regs: dict[str, int]) -> dict[str, int]:
    """Execute the straight-line b32 PTX subset the nibble decoder uses on Python ints."""
    def val(o):
        o = o.strip()
        return int(o, 16) if o.startswith("0x") else int(o) if o.isdigit() else regs[o]

    for stmt in asm.strip("{} ").split(";"):
        stmt = stmt.strip()
        if not stmt or stmt.startswith(".reg"):
            continue
        op, args = stmt.split(None, 1)
        d, *src = [a.strip() for a in args.split(",")]
        v = [val(a) for a in src]
        if op == "prmt.b32":
            pool = (v[0] | v[1] << 32).to_bytes(8, "little")
            r = bytes(pool[(v[2] >> 4 * i) & 7] for i in range(4))
            regs[d] = int.from_bytes(r, "little")
        elif op == "mov.b32":
            regs[d] = v[0]
        elif op == "and.b32":
            regs[d] = v[0] & v[1]
        elif op == "xor.b32":
            regs[d] = v[0] ^ v[1]
        elif op == "or.b32":
            regs[d] = v[0] | v[1]
        elif op == "shr.b32":
            regs[d] = v[0] >> v[1]
        elif op == "shl.b32":
            regs[d] = (v[0] << v[1]) & 0xFFFFFFFF
        elif op in ("fma.rn.bf16x2", "fma.rn.f16x2"):
            dt = torch.bfloat16 if "bf16" in op else torch.float16
            h = [torch.tensor([x & 0xFFFF, x >> 16], dtype=torch.int32).to(torch.int16).view(dt).float() for x in v]
            r = (h[0] * h[1] + h[2]).to(dt).view(torch.int16).to(torch.int32) & 0xFFFF
            regs[d] = int(r[0]) | int(r[1]) << 16
        else:
            raise AssertionError(f"unexpected PTX {op}")
    return regs


@pytest.mark.parametrize("name", ["ASM_I4_BF16", "ASM_U4_BF16", "ASM_I4_F16", "ASM_U4_F16"])
def test_nib8_ptx_decodes_nibbles_like_the_plain_trick(name):
    """Every output half = the 16-bit float of nibble t of its own word, minus the zero point for uint4."""
    from lowbit.kernels import gemv

    asm = getattr(gemv, name).value
    dt = torch.bfloat16 if "BF16" in name else torch.float16
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = (int(w) for w in rng.integers(0, 2**32, 2, dtype=np.uint64))
        za, zb = rng.integers(0, 16, 8), rng.integers(0, 16, 8)
        regs = {"$8": a, "$9": b}
        neg = 0xE400 if dt == torch.float16 else 0xC300
        for t in range(8):
            regs[f"${10 + 2 * t}"], regs[f"${11 + 2 * t}"] = neg | int(za[t]), neg | int(zb[t])
        out = _run_ptx(re.sub(r"\$(\d+)", r"$\1", asm), regs)
        for t in range(8):
            got = torch.tensor([out[f"${t}"] & 0xFFFF, out[f"${t}"] >> 16], dtype=torch.int32).to(torch.int16)
            q = torch.tensor([(a >> 4 * t) & 0xF, (b >> 4 * t) & 0xF])
            if "I4" in name:  # 2^7 (2^10) + (q ^ 8): the caller subtracts 2^7 + 8 (2^10 + 8)
                want = (q ^ 8) + (1024 if dt == torch.float16 else 128)
            else:
                want = q - torch.tensor([za[t], zb[t]])
            assert torch.equal(got.view(dt).float(), want.float()), (name, t)


def test_fp4_fp8_ptx_decodes_nibbles_like_the_plain_trick():
    """W4A8-FP: byte j of output t = _nib_mma's e4m3 code of nibble t of word j (magnitude at bits 2..4, sign at 7),
    whose e4m3 value is the e2m1 value of the nibble times 2^-6, for all 16 codes in every position."""
    from lowbit.formats.fp import FP4_E2M1_VALUES as e2m1
    from lowbit.kernels import gemv

    rng = np.random.default_rng(1)
    words = [int(w) for w in rng.integers(0, 2**32, 4 * 200, dtype=np.uint64)]
    words[:4] = [0x76543210, 0xFEDCBA98, 0x89ABCDEF, 0x01234567]  # every code at every nibble position
    for i in range(0, len(words), 4):
        out = _run_ptx(gemv.ASM_FP4_FP8.value, {f"${8 + j}": words[i + j] for j in range(4)})
        for t, j in itertools.product(range(8), range(4)):
            q = (words[i + j] >> 4 * t) & 0xF
            code = (out[f"${t}"] >> 8 * j) & 0xFF
            assert code == ((q & 7) << 2) | ((q & 8) << 4), (t, j, q)
            val = torch.tensor([code], dtype=torch.uint8).view(torch.float8_e4m3fn).float().item()
            assert val * 64 == e2m1[q], (t, j, q)


def test_perm_mma_config_uses_the_measured_default_up_to_16_tokens():
    from lowbit.kernels.gemv import PERM_MMA_TUNED_MAX_M, perm_mma_config

    assert PERM_MMA_TUNED_MAX_M == 16
    assert all(perm_mma_config(m, n, 4096) == (32, 128, 4, 2, 1) for m in range(2, 17) for n in (4096, 11008))
    # above 16 tokens a (32, 128, 4, 2) step needs 280 KB of shared memory at BM = 64 (the H100 has 227 KB)
    assert perm_mma_config(64, 4096, 4096)[:4] == (64, 64, 4, 2)
    assert perm_mma_config(16, 4096, 4096, group=64)[1] <= 64  # BJ never above the group

"""The fused integer attention kernels (lowbit.kernels.intonly_gemm.attention: the three-sweep one and the one-pass one)
equal the composed steps of the torch integer backend, INT.attention (Q·Kᵀ, score requant, Shiftmax, P·V, context
requant), bit for bit; and the whole tiny BERT / ViT run them on the kernel backend with the INT result (CPU under
TRITON_INTERPRET=1)."""
import os

import pytest
import torch

from lowbit.intonly.dyadic import INT, Dyadic, dyadic, mantissa_bits
from lowbit.intonly.ops import IntSoftmax

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="the Triton kernels on the CPU need TRITON_INTERPRET=1")


# TILES["attention.one"] of the one-pass cases: BLOCK_M = 64 query rows up to T_PAD 128, 32 at 256, 16 at 512
ONEPASS = (8192, 4)


class _Launches:
    """Records which attention kernel each launch ran."""
    def __init__(self, monkeypatch):
        from lowbit.kernels import intonly_gemm

        self.names = []
        for name in ("_attention_kernel", "_onepass_attention_kernel"):
            monkeypatch.setattr(intonly_gemm, name, self._wrap(name, getattr(intonly_gemm, name)))

    def _wrap(self, name, kernel):
        names = self.names

        class Launch:
            def __getitem__(self, grid):
                names.append(name)
                return kernel[grid]
        return Launch()


@pytest.fixture(params=["sweeps", "onepass"])
def variant(request, monkeypatch):
    """Each case once with the three sweeps and once with the one-pass kernel (checked to have run)."""
    from lowbit.kernels import intonly_gemm

    for fam in ("attention.one", "attention.one.mid"):  # T_PAD <= 128 and 256
        monkeypatch.setitem(intonly_gemm.TILES, fam, ONEPASS if request.param == "onepass" else (0, 4))
    launches = _Launches(monkeypatch)
    yield request.param
    want = "_onepass_attention_kernel" if request.param == "onepass" else "_attention_kernel"
    assert launches.names and set(launches.names) == {want}, launches.names


def _heads(g, b, h, t, d, fused: bool):
    """q, k, v (B, H, T, d) int8: views of one (B, T, 3, H, d) tensor (the fused QKV GEMM's output) or contiguous."""
    if fused:
        z = torch.randint(-128, 128, (b, t, 3, h, d), generator=g, dtype=torch.int8)
        return tuple(z[:, :, j].transpose(1, 2) for j in range(3))
    return tuple(torch.randint(-128, 128, (b, h, t, d), generator=g, dtype=torch.int8) for _ in range(3))


def _ctx_multiplier(g, n: int, per_channel: bool, t: int, soft: IntSoftmax | None = None) -> Dyadic:
    # P·V of probabilities is at most t 127 128 in magnitude; typical contexts are ~2^13, so ~2^-6 keeps most codes
    # inside int8; a deferred context (unit 2^-14 of v) is ~2^20: ~2^-13
    unit = 2 * soft.ctx_scale if soft is not None else 2.0**-6
    bits = soft.ctx_bits(t) if soft is not None else (t * 2**14).bit_length()
    x = torch.rand(n if per_channel else 1, dtype=torch.float64, generator=g) + 0.5
    return dyadic(x * unit if per_channel else float(x) * unit, mantissa_bits(bits))


def _check(q, k, v, m_s, soft, score_bits, mask, m_ctx):
    from lowbit.kernels.intonly_gemm import attention

    out = attention(q, k, v, m_s, soft, score_bits, mask, m_ctx, 8)
    ref = INT.attention(q.long(), k.long(), v.long(), m_s, soft, score_bits, mask, m_ctx, 8)
    assert out is not None and out.dtype == torch.int8 and out.shape == ref.shape
    assert torch.equal(out.long(), ref)
    return ref


# (score multiplier, Shiftmax input scale): the int32 Shiftmax path (|X0| 2^15 < 2^31) and the int64 one (|X0| >=
# 65536: a fine score scale), and a coarse multiplier that saturates most scores at the score_bits limits
SCALES = {"i32": (2.0**-10, 0.05), "i64": (2.0**-2, 1e-5), "saturated": (2.0**2, 0.3)}


@pytest.mark.parametrize("b,h,t,d", [(1, 1, 1, 32), (2, 3, 5, 64), (1, 3, 37, 32), (2, 1, 130, 64)])
@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("deferred", [False, True], ids=["probs", "deferred"])
def test_attention_kernel_equals_the_composed_integer_steps(b, h, t, d, scale, deferred, variant):
    from lowbit.kernels.intonly import deferred_i32, shiftmax_i32

    g = torch.Generator().manual_seed(b * 1000 + h * 100 + t + d)
    q, k, v = _heads(g, b, h, t, d, fused=t % 2 == 1)
    m_s, s_in = SCALES[scale]
    score_bits = 16
    soft = IntSoftmax.build(s_in, "shift", 7, deferred=deferred)
    if deferred:  # the fine scale needs the widening quotient multiply
        assert deferred_i32(soft, score_bits)[2] == (scale == "i64")
    else:
        assert (shiftmax_i32(soft, score_bits, 256) is None) == (scale == "i64")
    m_s = dyadic(m_s, mantissa_bits((d * 2**14).bit_length()))
    mask = torch.ones(b, 1, 1, t, dtype=torch.int64)
    mask[-1, ..., t // 3:] = 0  # the last batch keeps only its first third (t = 1, 2: nothing)
    for per_channel in (False, True):
        m_ctx = _ctx_multiplier(g, h * d, per_channel, t, soft)
        for mk in (None, mask):
            ref = _check(q, k, v, m_s, soft, score_bits, mk, m_ctx)
            # a row without a kept key (t < 3 masks every key): uniform probabilities, or no weight (deferred)
            assert ref.abs().max() > 0 or (deferred and mk is not None and t < 3)
            if deferred and mk is not None and t < 3:
                assert torch.equal(ref, torch.zeros_like(ref))


@pytest.mark.parametrize("deferred", [False, True], ids=["probs", "deferred"])
def test_saturated_scores_and_rows_without_a_kept_key(deferred, variant):
    """Scores past the score_bits range clamp before the Shiftmax; a batch whose keys are all masked gets the
    reference's (uniform 2^k - 1) probabilities, or a zero context (deferred)."""
    g = torch.Generator().manual_seed(7)
    q, k, v = _heads(g, 2, 2, 21, 32, fused=True)
    soft = IntSoftmax.build(0.3, "shift", 7, deferred=deferred)
    mask = torch.zeros(2, 1, 1, 21, dtype=torch.int64)
    mask[0, ..., ::5] = 1
    for score_bits in (8, 12):
        ref = _check(q, k, v, dyadic(0.5, 31), soft, score_bits, mask, _ctx_multiplier(g, 64, True, 21, soft))
        assert ref[0].abs().max() > 0 and (ref[1].abs().max() > 0) != deferred


@pytest.mark.parametrize("deferred", [False, True], ids=["probs", "deferred"])
def test_negative_score_multiplier(deferred, variant):
    """b < 0 reverses the order of the requantized scores: the row maximum comes from the raw minimum (the launcher
    no longer reads b back from the device, so the kernel handles both signs)."""
    g = torch.Generator().manual_seed(11)
    q, k, v = _heads(g, 2, 2, 37, 32, fused=True)
    soft = IntSoftmax.build(0.05, "shift", 7, deferred=deferred)
    mask = torch.ones(2, 1, 1, 37, dtype=torch.int64)
    mask[1, ..., 20:] = 0
    for mk in (None, mask):
        ref = _check(q, k, v, dyadic(-2.0**-10, 31), soft, 16, mk, _ctx_multiplier(g, 64, True, 37, soft))
        assert ref.abs().max() > 0


@pytest.mark.parametrize("deferred", [False, True], ids=["probs", "deferred"])
@pytest.mark.parametrize("scale", ["i32", "i64"])
def test_onepass_kernel_at_500_keys(scale, deferred, monkeypatch):
    """T_PAD 512 (16 query rows a program, 32 programs with a tail), a mask keeping 300 keys, both Shiftmax paths."""
    from lowbit.kernels import intonly_gemm

    monkeypatch.setitem(intonly_gemm.TILES, "attention.one.long", ONEPASS)  # the T_PAD >= 512 entry
    launches = _Launches(monkeypatch)
    g = torch.Generator().manual_seed(500)
    q, k, v = _heads(g, 1, 1, 500, 32, fused=False)
    mask = torch.zeros(1, 1, 1, 500, dtype=torch.int64)
    mask[..., 100:400] = 1
    m_s, s_in = SCALES[scale]
    soft = IntSoftmax.build(s_in, "shift", 7, deferred=deferred)
    ref = _check(q, k, v, dyadic(m_s, 31), soft, 16, mask, _ctx_multiplier(g, 32, True, 500, soft))
    assert ref.abs().max() > 0 and launches.names == ["_onepass_attention_kernel"]


def test_default_kernel_by_key_count(monkeypatch):
    """With the default tiles: the one-pass kernel up to T_PAD 128 (BERT's 128 tokens), the sweeps at T_PAD 256
    (ViT-B's 197 tokens, attention.one.mid off) and at 512 (BERT's 384: 4096 values leave 8 < 16 rows)."""
    launches = _Launches(monkeypatch)
    g = torch.Generator().manual_seed(3)
    soft = IntSoftmax.build(0.05, "shift", 7, deferred=True)
    for t in (100, 197, 300):
        q, k, v = _heads(g, 1, 1, t, 32, fused=False)
        _check(q, k, v, dyadic(2.0**-10, 31), soft, 16, None, _ctx_multiplier(g, 32, True, t, soft))
    assert launches.names == ["_onepass_attention_kernel", "_attention_kernel", "_attention_kernel"]


def test_kernel_backend_without_the_fused_attention_equals_int(monkeypatch):
    """Where the fused kernel declines (it returns None), the kernel backend composes the deferred attention from
    its parts (the score requant kernel's int16 codes, the int8 batched GEMM) with INT's result."""
    from lowbit.intonly.blocks import IntBertModel, IntConfig
    from lowbit.kernels import intonly_gemm
    from tiny_models import tiny_bert

    g = torch.Generator().manual_seed(5)
    calib = [{"input_ids": torch.randint(0, 120, (4, 16), generator=g)}]
    ids = torch.randint(0, 120, (2, 21), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    im = IntBertModel(tiny_bert(), IntConfig()).calibrate(calib)
    ops = [op for key, op in im.plan.items() if key.endswith("softmax")]
    assert len(ops) == im.layers and all(op.deferred for op in ops)  # the default normalisation
    monkeypatch.setattr(intonly_gemm, "attention", lambda *a, **kw: None)
    args = (ids, mask, torch.zeros_like(ids))
    h_k, s_k = im.integer_forward(im._backend("kernel"), *args)
    h_int, s_int = im.integer_forward(INT, *args)
    assert s_k == s_int and torch.equal(h_k.long(), h_int)


def test_fallbacks():
    from lowbit.kernels.intonly_gemm import attention

    g = torch.Generator().manual_seed(1)
    q, k, v = _heads(g, 1, 2, 9, 32, fused=False)
    soft, m = IntSoftmax.build(0.05, "shift", 7), dyadic(2.0**-10, 31)
    m_ctx = _ctx_multiplier(g, 1, False, 9)
    assert attention(q, k, v, m, soft, 16, None, m_ctx, 16) is None  # 16-bit context
    assert attention(q[..., :24], k[..., :24], v[..., :24], m, soft, 16, None, m_ctx, 8) is None  # head dim 24
    assert attention(q[..., :16], k[..., :16], v[..., :16], m, soft, 16, None, m_ctx, 8) is None  # int8 dot K < 32
    rows = dyadic(torch.full((9, 1), 2.0**-6, dtype=torch.float64), 31)
    assert attention(q, k, v, m, soft, 16, None, rows, 8) is None  # a multiplier per token


def _count_fused(monkeypatch, calls: list | None = None) -> list:
    """Patches the attention launcher to record each call whose kernel ran (not None), and into ``calls`` its
    arguments and output."""
    from lowbit.kernels import intonly_gemm

    ran, launch = [], intonly_gemm.attention

    def count(*a, **kw):
        out = launch(*a, **kw)
        ran.append(out is not None)
        if calls is not None:
            calls.append((a, kw, out))
        return out
    monkeypatch.setattr(intonly_gemm, "attention", count)
    return ran


def test_tiny_bert_with_the_fused_attention_equals_int(monkeypatch):
    """Padding masks (rows of 5 and 30 keys among full ones), 37 tokens: kernel backend == INT, every layer's
    attention through the fused three-sweep kernel; the one-pass kernel on every layer's inputs gives the same
    context (so the same forward: a second kernel forward would double the test's 60 s)."""
    from lowbit.intonly.blocks import IntBertModel, IntConfig
    from lowbit.kernels import intonly_gemm
    from tiny_models import tiny_bert

    g = torch.Generator().manual_seed(0)
    calib = [{"input_ids": torch.randint(0, 120, (4, 16), generator=g)} for _ in range(2)]
    ids = torch.randint(0, 120, (3, 37), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 30:] = 0
    im = IntBertModel(tiny_bert(), IntConfig(smooth="auto", score_bits=16)).calibrate(calib)
    args = (ids, mask, torch.zeros_like(ids))
    monkeypatch.setitem(intonly_gemm.TILES, "attention.one", (0, 4))
    launch, calls = intonly_gemm.attention, []
    ran = _count_fused(monkeypatch, calls)
    h_k, s_k = im.integer_forward(im._backend("kernel"), *args)
    h_int, s_int = im.integer_forward(INT, *args)
    assert s_k == s_int and torch.equal(h_k.long(), h_int)
    assert ran == [True] * im.layers
    monkeypatch.setitem(intonly_gemm.TILES, "attention.one", ONEPASS)
    launches = _Launches(monkeypatch)
    for a, kw, out in calls:
        assert torch.equal(launch(*a, **kw), out)
    assert launches.names == ["_onepass_attention_kernel"] * im.layers


def test_tiny_vit_with_the_fused_attention_equals_int(monkeypatch):
    from lowbit.intonly.blocks import IntConfig
    from lowbit.intonly.vit import build_int_vit
    from tiny_models import tiny_vit

    g = torch.Generator().manual_seed(0)
    calib, test = torch.randn(16, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    im = build_int_vit(tiny_vit(), calib, IntConfig(smooth="auto", score_bits=16))
    codes = im.quantize_pixels(test)
    ran = _count_fused(monkeypatch)
    z_k, _ = im.integer_logits(im._backend("kernel"), codes)
    assert torch.equal(z_k.long(), im.integer_logits(INT, codes)[0])
    assert ran and all(ran), ran

"""The fused integer attention on CUDA (`pytest -m gpu`) equals the CPU torch integer steps (INT.attention) at
BERT / ViT sizes: 384 and 197 keys, 12 heads, padding masks, both normalisations, both kernels (three sweeps and
one pass), with the output poisoned first so an unwritten element shows."""
import pytest
import torch

from lowbit.intonly.dyadic import INT, dyadic, mantissa_bits
from lowbit.intonly.ops import IntSoftmax

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def cuda():
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


@pytest.mark.parametrize("b,h,t", [(2, 12, 384), (3, 12, 197), (1, 12, 130)])
@pytest.mark.parametrize("deferred", [False, True], ids=["probs", "deferred"])
@pytest.mark.parametrize("kernel", ["sweeps", "onepass"])
def test_attention_on_cuda_equals_int(b, h, t, deferred, kernel, monkeypatch):
    from lowbit.kernels import intonly_gemm

    one = (0, 4) if kernel == "sweeps" else (16384, 8)  # (0, 4): the one-pass kernel off
    for fam in ("attention.one", "attention.one.mid", "attention.one.long"):
        monkeypatch.setitem(intonly_gemm.TILES, fam, one)
    g = torch.Generator().manual_seed(t * 10 + h + b)
    z = torch.randint(-128, 128, (b, t, 3, h, 64), generator=g, dtype=torch.int8)  # the fused QKV output
    q, k, v = (z[:, :, j].transpose(1, 2) for j in range(3))
    soft = IntSoftmax.build(0.05, "shift", 7, deferred=deferred)
    m_s = dyadic(2.0**-10, mantissa_bits((64 * 2**14).bit_length()))
    m_ctx = dyadic((torch.rand(h * 64, dtype=torch.float64, generator=g) + 0.5) * 2 * soft.ctx_scale,
                   mantissa_bits(soft.ctx_bits(t)))
    mask = torch.ones(b, 1, 1, t, dtype=torch.int64)
    mask[-1, ..., t // 2:] = 0
    poisoned = []

    class PoisonedTorch:  # the launcher module's torch, whose empty() comes back filled with 77
        def __getattr__(self, name):
            return getattr(torch, name)

        def empty(self, *a, **kw):
            poisoned.append(torch.full(*a, 77, **kw))
            return poisoned[-1]

    monkeypatch.setattr(intonly_gemm, "torch", PoisonedTorch())
    out = intonly_gemm.attention(*(x.cuda() for x in (q, k, v)), m_s, soft, 16, mask.cuda(), m_ctx, 8)
    ref = INT.attention(q.long(), k.long(), v.long(), m_s, soft, 16, mask, m_ctx, 8)
    assert out is not None and poisoned and out.data_ptr() == poisoned[-1].data_ptr()
    assert torch.equal(out.cpu().long(), ref) and ref.abs().max() > 0

"""The whole integer encoder on the kernel backend equals the torch integer backend bit for bit (tiny random BERT and
ViT; CPU under TRITON_INTERPRET=1, or CUDA with `pytest -m gpu`), and the backend is chosen from the device."""
import os

import pytest
import torch

from lowbit.intonly.backend import kernel_arith
from lowbit.intonly.blocks import IntBertModel, IntConfig
from lowbit.intonly.checker import walk
from lowbit.intonly.dyadic import INT, IntegerOnlyError, dyadic, mantissa_bits
from lowbit.intonly.ops import IGELU, IntSoftmax
from lowbit.intonly.vit import build_int_vit
from tiny_models import tiny_bert, tiny_vit

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
needs_kernels = pytest.mark.skipif(not INTERPRET, reason="the kernel backend on the CPU needs TRITON_INTERPRET=1")


@pytest.fixture(scope="module")
def bert():
    g = torch.Generator().manual_seed(0)
    calib = [{"input_ids": torch.randint(0, 120, (4, 16), generator=g)} for _ in range(2)]
    ids = torch.randint(0, 120, (2, 13), generator=g)  # odd length
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    model = tiny_bert()
    with torch.no_grad():  # HF initialises linear biases to zero: give them values so bias handling is tested
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.normal_(0.0, 0.2, generator=g)
    return IntBertModel(model, IntConfig(smooth="auto", score_bits=16)).calibrate(calib), \
        (ids, mask, torch.zeros_like(ids))


@needs_kernels
def test_bert_kernel_backend_equals_torch_integer_backend(bert):
    pytest.importorskip("triton")
    im, args = bert
    h_int, s_int = im.integer_forward(INT, *args)
    (h_k, s_k), report = walk(im.integer_forward, im._backend("kernel"), *args)
    assert s_k == s_int and h_k.dtype == torch.int16  # 16-bit codes in int16 (out_dtype)
    assert torch.equal(h_k.long(), h_int)
    assert not report.violations  # the torch glue around the kernels is integer-only too


@needs_kernels
def test_kernel_backend_runs_each_linear_with_its_requantization_in_the_gemm_epilogue(bert, monkeypatch):
    """No linear writes its INT32 product: Q/K/V (one GEMM for the three) run as linear_rq, FC1 as linear_gelu_rq
    (ShiftGELU and FC2's input requantization in its epilogue too: no gelu_rq pass), O and FC2 as linear_rq_sum (the
    residual sum in the epilogue, the bias inside too); each attention is one fused kernel (no bmm, Shiftmax or
    context requant pass); every LayerNorm but the last also makes the next linear's int8 input (layernorm_rq: no
    rq pass); nothing falls back, and the codes stay those of the INT backend."""
    from lowbit.intonly.backend import KernelArith

    im, args = bert
    names = ("linear", "rq_linear", "rq_sum", "linear_rq", "linear_gelu_rq", "gelu_rq", "linear_rq_sum", "attention",
             "softmax", "matmul", "rq", "layernorm", "layernorm_rq")
    seen = dict.fromkeys(names, 0)
    for name in names:
        def count(self, *a, _name=name, _fn=getattr(KernelArith, name), **kw):
            seen[_name] += 1
            return _fn(self, *a, **kw)
        monkeypatch.setattr(KernelArith, name, count)
    h_k, _ = im.integer_forward(im._backend("kernel"), *args)
    layers = im.layers
    assert seen == {"linear": 0, "rq_linear": 0, "rq_sum": 0, "linear_rq": layers, "linear_gelu_rq": layers,
                    "gelu_rq": 0, "linear_rq_sum": 2 * layers, "attention": layers, "softmax": 0, "matmul": 0,
                    "rq": 0, "layernorm": 1, "layernorm_rq": 2 * layers}  # embedding LN, ln1, ln2 but the last
    assert torch.equal(h_k.long(), im.integer_forward(INT, *args)[0])


@needs_kernels
def test_steps_without_a_kernel_fall_back_to_the_torch_integer_code():
    """I-BERT's i-exp / i-GELU and per-row multipliers have no kernel: same result on int64."""
    k = kernel_arith(torch.device("cpu"), 7)
    z = torch.randint(-2**15, 2**15, (2, 3, 5, 11), dtype=torch.int32)
    m = dyadic(2.0**-8, mantissa_bits(17))
    soft = IntSoftmax.build(10.0 / 127, "poly", 7)
    assert torch.equal(k.softmax(soft, z, m, 8, None).long(), INT.softmax(soft, z.long(), m, 8, None))
    gelu, mg = IGELU.build(8.0 / 2**15), dyadic(torch.full((11,), 2.0**-20), mantissa_bits(40))
    assert torch.equal(k.gelu_rq(gelu, z, mg, 8).long(), INT.gelu_rq(gelu, z.long(), mg, 8))
    rows = dyadic(torch.rand(5, 1, dtype=torch.float64), mantissa_bits(17))  # one multiplier per row
    assert torch.equal(k.rq(z[0, 0], rows, None, 8).long(), INT.rq(z[0, 0].long(), rows, None, 8))


@needs_kernels
def test_vit_kernel_backend_equals_torch_integer_backend():
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(0)
    calib, test = torch.randn(16, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    im = build_int_vit(tiny_vit(), calib, IntConfig(smooth="auto", score_bits=16))
    codes = im.quantize_pixels(test)
    z_int, _ = im.integer_logits(INT, codes)
    k = im._backend("kernel")
    calls = []
    layernorm_rq = k.layernorm_rq
    k.layernorm_rq = lambda *a, keep=True: calls.append(keep) or layernorm_rq(*a, keep=keep)
    z_k, _ = im.integer_logits(k, codes)  # 3 rows: the head's GEMM is padded for _int_mm
    assert torch.equal(z_k.long(), z_int)
    # pre-LN: both LayerNorms of each block make their linear's int8 input and store nothing else
    assert calls == [False] * (2 * im.layers)


def test_backend_selection_and_errors(bert, monkeypatch):
    im, _ = bert
    assert im._backend("int") is INT  # a CPU model runs the torch integer code
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(IntegerOnlyError, match="runs on CUDA"):
        im._backend("kernel")
    with pytest.raises(IntegerOnlyError, match="'int'.*'kernel'.*'sim'"):
        im._backend("cuda")
    im8 = IntBertModel(tiny_bert(), IntConfig(prob_bits=8))
    with pytest.raises(IntegerOnlyError, match="prob_bits <= 7"):
        im8._backend("kernel")


def test_to_moves_the_integer_constants(bert):
    im, args = bert
    h = im.integer_forward(INT, *args)[0]
    seen = []
    im._apply(lambda t: seen.append(t.dtype) or t.clone())
    # the anchor parameter, then weight codes, biases, multipliers, embedding codes; no float tensor
    assert {torch.int8, torch.int64} <= set(seen) and not any(d.is_floating_point for d in seen)
    assert torch.equal(im.integer_forward(INT, *args)[0], h)


@needs_kernels
def test_kernel_forward_reads_nothing_back_from_the_device(bert, monkeypatch):
    """A CUDA graph cannot capture a host read of a device tensor (an int(b) in a launcher broke the H100 capture of
    the whole forward once): after calibration, no lowbit code on the kernel backend's forward converts a tensor to a
    Python number or bool. Checked on the CPU by failing any such conversion called from lowbit's own source."""
    import sys

    import lowbit

    root = os.path.dirname(lowbit.__file__)
    im, args = bert
    for name in ("item", "tolist", "__int__", "__index__", "__bool__", "__float__"):
        orig = getattr(torch.Tensor, name)

        def guarded(self, *a, _orig=orig, _name=name, **kw):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(root):
                raise AssertionError(f"host read Tensor.{_name} at {caller.f_code.co_filename}:{caller.f_lineno}")
            return _orig(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, guarded)
    h_k, _ = im.integer_forward(im._backend("kernel"), *args)
    monkeypatch.undo()
    assert torch.equal(h_k.long(), im.integer_forward(INT, *args)[0])


@needs_kernels
def test_calibrated_bert_linears_take_the_32_bit_requantization(bert, monkeypatch):
    """Every GEMM of a calibrated BERT's forward has its multipliers' shifts and operand bounds known on the host, so
    its epilogue runs the 32-bit HI_WORD requantization (the fast path is not dead code), and the codes stay the INT
    backend's."""
    from lowbit.kernels import intonly_gemm

    im, args = bert
    chosen = []
    orig = intonly_gemm.hi_word_modes

    def spy(*a, **kw):
        chosen.append(orig(*a, **kw))
        return chosen[-1]
    monkeypatch.setattr(intonly_gemm, "hi_word_modes", spy)
    h_k, _ = im.integer_forward(im._backend("kernel"), *args)
    assert chosen and all(all(modes) for modes in chosen), chosen
    assert torch.equal(h_k.long(), im.integer_forward(INT, *args)[0])

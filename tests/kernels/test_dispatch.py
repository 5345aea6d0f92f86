"""Dispatch from QuantLinear, the exponent-shift conversion, and the graph/compile contract."""
import pytest
import torch
from torch import nn

from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import PRESETS, QuantSpec


def test_import_lowbit_stays_light():
    import subprocess
    import sys

    code = "import sys, lowbit; lowbit.quantize; assert 'triton' not in sys.modules, 'triton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plan_reasons():
    from lowbit.kernels.dispatch import plan_for

    q = QuantLinear(64, 32, QuantSpec("int4", "group", 32), QuantSpec("fp8_e4m3", "token", dynamic=True))
    assert "share no tensor-core MMA" in plan_for(q)
    q = QuantLinear(64, 32, QuantSpec("int4", "group", 16), None)
    assert "group size 16" in plan_for(q)
    q = QuantLinear(64, 32, QuantSpec("int3", "channel"), None)
    assert "no kernel" in plan_for(q)


def test_hook_matches_reference_and_buffers_stay_out_of_checkpoints(dev):
    from lowbit.kernels.dispatch import quant_linear_forward

    lin = nn.Linear(96, 40).half()
    q = QuantLinear.from_float(lin, QuantSpec("fp4_e2m1", "group", 32, scale_rule="pow2_row"),
                               QuantSpec("fp8_e4m3", "token", dynamic=True)).to(dev)
    keys = set(q.state_dict())
    x = torch.randn(2, 5, 96, dtype=torch.float16, device=dev)
    y = quant_linear_forward(q, x)
    assert y.shape == (2, 5, 40) and y.dtype == torch.float16
    r = q.reference_forward(x)
    assert ((y.float() - r.float()).norm() / r.float().norm()) < 2e-3
    assert set(q.state_dict()) == keys  # derived _lb_* buffers are not persistent


@pytest.mark.gpu
# 1: the decode GEMV, 4 and 16: the small-M tensor-core kernel (both on the permuted copy of the 3072-wide layer)
@pytest.mark.parametrize("tokens", [16, 4, 1])
@pytest.mark.parametrize("name", list(PRESETS))
def test_quantlinear_cuda_graph_and_compile(dev, name, tokens):
    import lowbit.kernels  # noqa: F401  (installs the hook)

    s = PRESETS[name]
    lin = nn.Sequential(nn.Linear(1024, 3072).bfloat16(), nn.Linear(3072, 1024).bfloat16())
    model = nn.Sequential(*[QuantLinear.from_float(m, s.weights, s.activations) for m in lin]).cuda()
    lowbit.kernels.prepare(model)
    x = torch.randn(tokens, 1024, dtype=torch.bfloat16, device="cuda")
    h = model[0](x)  # layer by layer: chained 4-bit activations would amplify one-ulp differences
    for layer, inp, out in ((model[0], x, h), (model[1], h, model[1](h))):
        ref = layer.reference_forward(inp).float()
        assert ((out.float() - ref).norm() / ref.norm()) < 1e-2
    g = torch.cuda.CUDAGraph()
    static_x = x.clone()
    model(static_x)
    with torch.cuda.graph(g):
        static_y = model(static_x)
    static_x.copy_(torch.randn_like(x))
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_y, model(static_x))
    torch._dynamo.reset()  # the parametrizations compile the same forward code: stay under dynamo's recompile limit
    compiled = torch.compile(model, fullgraph=True)
    assert torch.equal(compiled(x), model(x))


@pytest.mark.parametrize("preset", ["w4a8-int", "w8a8-fp8", "w4a16"])
@pytest.mark.parametrize("lorc_bits", [None, 8])
def test_kernel_path_applies_input_transform_and_lorc(dev, preset, lorc_bits, monkeypatch):
    """Rotated, LoRC-compensated layers run on the kernels (the hook) and match the reference forward."""
    from lowbit.kernels.dispatch import quant_linear_forward
    from lowbit.nn import qlinear

    torch.manual_seed(0)
    s = PRESETS[preset]
    lin = nn.Linear(128, 40).half()
    q = QuantLinear.from_float(lin, s.weights, s.activations)
    q.input_transform = "hadamard"
    q.set_lorc(torch.randn(40, 8) * 0.05, torch.randn(8, 128) * 0.05, bits=lorc_bits)
    q = q.to(dev)
    monkeypatch.setattr(qlinear, "_cuda_forward", None)
    x = torch.randn(3, 128, dtype=torch.float16, device=dev)
    assert q.kernel_forward(x) is None  # no hook installed: the caller takes the reference path
    calls = []
    monkeypatch.setattr(qlinear, "_cuda_forward", lambda m, t: (calls.append(t), quant_linear_forward(m, t))[1])
    y = q.kernel_forward(x)
    ref = q.reference_forward(x).float()
    assert len(calls) == 1 and not torch.equal(calls[0], x)  # the kernels saw the rotated input
    # kernel output rounded to fp16 once, then the fp32 side GEMM added and rounded again: ~2 fp16 ulps
    assert ((y.float() - ref).norm() / ref.norm()) < 3e-3
    q.set_lorc(torch.zeros(40, 8), torch.zeros(8, 128))  # the side GEMM matters: without it the output moves
    q = q.to(dev)
    assert ((q.kernel_forward(x).float() - ref).norm() / ref.norm()) > 1e-2

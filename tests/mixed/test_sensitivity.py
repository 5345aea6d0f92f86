import copy

import pytest
import torch

from lowbit.mixed.sensitivity import hutchinson_trace, layer_traces, omega_table, quant_error
from lowbit.scheme import QuantSpec
from tiny_models import tiny_bert


def test_hutchinson_matches_exact_trace_of_quadratic():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=g, dtype=torch.float64)
    h1 = a @ a.T  # PSD Hessian of the first block
    h2 = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
    x1 = torch.randn(12, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(5, dtype=torch.float64, requires_grad=True)
    loss = lambda: 0.5 * x1 @ h1 @ x1 + 0.5 * x2 @ h2 @ x2 + (x1[:5] * x2).sum()  # cross term: off-block
    mean, se = hutchinson_trace(loss, [x1, x2], n_probes=400, seed=1)
    for i, exact in enumerate([float(torch.trace(h1)), 15.0]):  # the cross term averages out
        assert abs(float(mean[i]) - exact) < 4 * float(se[i])
        assert float(se[i]) < 0.1 * exact


def test_hutchinson_errors():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="requires_grad"):
        hutchinson_trace(lambda: x.sum(), [x])
    with pytest.raises(ValueError, match="n_probes"):
        hutchinson_trace(lambda: x.sum(), [], 4)


def test_layer_traces_on_tiny_bert_and_omega():
    m = tiny_bert()
    ids = torch.randint(0, 120, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(input_ids=ids).last_hidden_state
    names = ["encoder.layer.0.attention.self.value", "encoder.layer.1.output.dense"]
    tr = layer_traces(m, names, lambda mod: (mod(input_ids=ids).last_hidden_state - ref).pow(2).mean(), 4)
    assert all(t > 0 for t, _ in tr.values())  # Gauss-Newton at the reference: PSD
    assert all(p.requires_grad for p in m.parameters())  # requires_grad restored afterwards
    om = omega_table(m, tr, [QuantSpec("int4", "channel"), QuantSpec("int8", "channel")])
    assert om.shape == (2, 2) and (om[:, 0] > om[:, 1]).all()  # 4-bit hurts more than 8-bit
    w = m.get_submodule(names[0]).weight
    assert quant_error(w, QuantSpec("int8", "channel")) < quant_error(w, QuantSpec("int4", "channel"))

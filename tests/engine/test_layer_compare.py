"""The per-layer diagnostics (engine/compare.py) on a tiny random BERT: the trace is the forward, the kernel graph
matches its reference layer by layer and stage by stage, and an error is found in the layer and stage it is in."""
import copy

import pytest
import torch
from tiny_models import TINY, tiny_bert

import lowbit
from lowbit.engine import Engine, compare


def _batch():
    ids = torch.randint(4, TINY["vocab"], (2, 9))  # bucket (2, 16): 32 tokens, unpacked-weight GEMMs
    return ids, torch.tensor([[1] * 9, [1] * 5 + [0] * 4])


@pytest.fixture(scope="module")
def q():
    return lowbit.quantize(tiny_bert(), "w4a4-int", progress=False)


def _cos_all(row: dict):
    yield "free", row["free"]
    for mode in ("alone", "op"):
        for stage, st in row[mode].items():
            for key in ("cos", "codes cos"):
                if key in st:
                    yield f"{mode} {stage} {key}", st[key]


def test_layer_states_end_in_the_forward_output(q):
    e = Engine.from_quantized(q, device="cpu")
    ids, mask = _batch()
    h = compare.layer_states(e, compare.prepare(e, ids, mask))[-1][0].view(2, 16, -1)[:, :9]
    assert torch.equal(h, e.hidden_states({"input_ids": ids, "attention_mask": mask})[0])


def test_kernel_layers_match_reference_layers(interp, q):
    kern = Engine.from_quantized(q, device="cpu", backend="kernels")
    ref = Engine.from_quantized(q, device="cpu", backend="reference")
    rows = compare.compare_layers(kern, ref, *_batch())
    assert [r["i"] for r in rows] == list(range(TINY["layers"]))
    for r in rows:
        for name, (lo, mean) in _cos_all(r):
            assert lo > 0.9999, (r["i"], name, lo)  # fp32: sums in another order, a code moving at a rare tie
        assert all(st.get("flips", 0) < 0.01 for st in r["op"].values())
    assert set(rows[0]["op"]) == set(compare.STAGES) and "flips" in rows[0]["op"]["ln1"]
    assert "flips" not in rows[-1]["op"]["ln2"]  # the last LayerNorm feeds no quantized GEMM


def test_an_error_shows_in_its_layer_and_stage(q):
    ref = Engine.from_quantized(q, device="cpu", backend="reference")
    bad = Engine.from_quantized(copy.deepcopy(q), device="cpu", backend="reference")
    bad.layers[1].fc1.bias += 0.5  # a wrong FC1 epilogue in layer 1 only
    rows = compare.compare_layers(bad, ref, *_batch())
    assert all(lo > 0.99999 for _, (lo, _) in _cos_all(rows[0]))
    op = rows[1]["op"]
    assert all(op[s]["cos"][0] > 0.99999 for s in ("qkv", "attention", "o", "ln1", "fc2", "ln2"))
    assert op["fc1"]["cos"][1] < 0.999
    assert rows[1]["alone"]["ln2"]["cos"][1] < 0.9999 and rows[1]["free"][1] < 0.9999

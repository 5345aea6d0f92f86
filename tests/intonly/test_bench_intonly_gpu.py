"""The CPU-safe parts of benchmarks/intonly_gpu.py (the GPU timing itself is run on a device)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from lowbit.intonly.dyadic import INT

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "intonly_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("intonly_gpu", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments(bench):
    a = bench.parse_args([])
    assert a.models == ["bert-base", "vit-b16"] and a.batches == [1, 8, 32] and a.seqs == [128, 384]
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "gpt2"])


def test_full_size_configs_are_bert_base_and_vit_b16(bench):
    b, v = bench.hf_config("bert-base"), bench.hf_config("vit-b16")
    assert (b.hidden_size, b.num_hidden_layers, b.intermediate_size) == (768, 12, 3072)
    assert (v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size) == (768, 12, 224, 16)


@pytest.mark.parametrize("name", ["bert-base", "vit-b16"])
def test_tiny_build_runs_the_integer_graph(bench, name):
    _, im, inputs = bench.build(name, 8, tiny=True)
    h = bench._int_graph(im, INT, inputs(2, 8))
    assert h.dtype == torch.int64 and h.shape[0] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_refuses_to_run_without_cuda(bench):
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        bench.main(["--models", "bert-base"])


def test_markdown_table(bench):
    row = {"model": "bert-base", "batch": 32, "tokens": 128, "int8 eager ms": 2.0, "int8 graph ms": None,
           "int8 graph error": "capture failed", "fp16 eager ms": 3.0, "int8 best / fp16 eager": 1.5,
           "int8 stages ms": {"linears (_int_mm)": 1.0}, "fp16 stages ms": {"GEMMs": 2.0}}
    md = bench.to_markdown([row])
    assert "| bert-base | 32 | 128 | 2.000 | - | 3.000 | - | 1.500 | - |" in md
    assert "linears (_int_mm) 1.000 (100%)" in md and "capture failed" in md


@pytest.mark.parametrize("name", ["bert-base", "vit-b16"])
def test_sweep_runs_the_forward_of_either_model(bench, name, monkeypatch):
    """sweep_tiles times each option's whole integer forward (timing stubbed on the CPU: one forward, constant
    time) and keeps the first option of equal ones; the ViT sweep feeds pixels, not token ids."""
    from lowbit.kernels import intonly_gemm

    _, im, inputs = bench.build(name, 8, tiny=True)
    calls = []
    monkeypatch.setattr(bench, "time_ms", lambda fn, *a: calls.append(fn()) or 1.0)
    monkeypatch.setitem(intonly_gemm.TILES, "attention.one", intonly_gemm.TILES["attention.one"])
    log = bench.sweep_tiles(im, inputs(2, 8), ("attention.one",))
    options = bench.GEMM_SWEEP["attention.one"]
    assert len(calls) == len(options) and log["attention.one"]["best"] == str(options[0])

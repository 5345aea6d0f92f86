"""The encoder benchmark's table logic (the timing itself needs CUDA and runs on the device)."""
from lowbit.bench import encoder


def test_speedups_and_markdown():
    row = {"model": "bert-base", "batch": 1, "seq": 128, "hf-eager": 6000.0, "hf-graph": 1200.0,
           "fp16-engine": 1000.0, "w8a8-int8": 500.0, "w4a8-int": None, "w4a4-int": 400.0,
           "w4a4-int:stages": {"gemm": 200.0, "attention": 100.0, "norm": 50.0}}
    encoder._speedups(row, encoder.SCHEMES)
    assert row["best-fp16"] == 1000.0 and row["w4a4-int x eager"] == 15.0 and row["w4a4-int x best"] == 2.5
    assert "w4a8-int x best" not in row  # a failed method has no speed-up
    md = encoder.to_markdown([row])
    assert "| bert-base | 1 x 128 | 6000 | 1200 | 1000 | 500 | - | 400 |" in md
    assert "15.00x / 2.50x" in md and "| w4a4-int | 200 | 100 | 50 | - | - | 350 |" in md

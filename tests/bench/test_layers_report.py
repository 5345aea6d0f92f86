"""The benchmark's tables and CLI, without a GPU (rows are made up; timing itself runs only on the device)."""
import pytest
import torch

from lowbit.bench.layers import Row, roofline_us, to_csv, to_markdown


def _rows():
    return [Row("bf16", 1, 4096, 4096, 20.0), Row("w4a16", 1, 4096, 4096, 5.0),
            Row("w8a8-int8", 1, 4096, 4096, None, False, "RuntimeError: x")]


def test_markdown_and_csv_carry_speedup_and_failures():
    md = to_markdown(_rows())
    assert "| w4a16 | 5.0 (4.00x;" in md and "| w8a8-int8 | fail |" in md
    csv = to_csv(_rows(), {"gpu": "H100", "commit": "abc"})
    assert csv.splitlines()[2].startswith("H100,abc,w4a16,1,4096,4096,5.00,")
    assert ",4.00," in csv.splitlines()[2]


def test_roofline_uses_bytes_at_decode_and_flops_at_prefill():
    assert roofline_us("w4a16", 1, 4096, 4096) < roofline_us("bf16", 1, 4096, 4096) / 3.5  # 4-bit bytes
    assert roofline_us("w8a8-fp8", 8192, 4096, 4096) < roofline_us("bf16", 8192, 4096, 4096)  # fp8 peak


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cli_without_cuda_says_so(capsys):
    from lowbit.cli import main

    assert main(["bench", "layers", "--tokens", "1"]) == 2
    assert "no CUDA device" in capsys.readouterr().err

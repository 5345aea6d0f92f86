import re

import pytest

from tiny_models import tiny_bert, tiny_gpt2
from lowbit import load
from lowbit.cli import main


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "gpt2"
    tiny_gpt2().save_pretrained(d)
    return d


def test_quantize_then_inspect(model_dir, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["quantize", str(model_dir), "--scheme", "w4a8-int", "--calib", "random", "--n-samples", "2",
                 "--seq-len", "16", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "linear layers quantized" in printed and "lm_head" in printed and "x bf16" in printed
    model, _ = load(out)
    assert model.lowbit_scheme.name == "w4a8-int"
    assert main(["inspect", str(out), "--layers"]) == 0
    printed = capsys.readouterr().out
    ratio = float(printed.split(" = ")[1].split("x")[0])
    assert 0.25 < ratio <= 0.30
    assert "transformer.h.0.attn.c_attn" in printed


def test_group_size_option(model_dir, tmp_path, capsys):
    out = tmp_path / "g64"
    assert main(["quantize", str(model_dir), "--scheme", "w4a16", "--group-size", "64", "-o", str(out)]) == 0
    model, _ = load(out)
    assert model.lowbit_scheme.name == "w4a16-g64" and model.lowbit_scheme.weights.group_size == 64
    assert main(["quantize", str(model_dir), "--scheme", "w8a8-int8", "--group-size", "64", "-o", str(out)]) == 2
    assert "applies to group-wise weights" in capsys.readouterr().err


def test_inspect_presets(capsys):
    assert main(["inspect", "--presets"]) == 0
    assert "w4a8-fp" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["quantize", "{model}", "--scheme", "w5a5", "-o", "{out}"], "unknown scheme 'w5a5'; known presets: w8a8-int8"),
    (["quantize", "/no/such/model", "--scheme", "w4a16", "-o", "{out}"], "model path /no/such/model does not exist"),
    (["quantize", "{model}", "--scheme", "w4a16", "--device", "cuda", "-o", "{out}"], "no CUDA device"),
    (["quantize", "{model}", "--scheme", "w4a16", "--calib", "{txt}", "-o", "{out}"],
     "has no tokenizer|calibration texts hold 1 tokens, fewer than one window"),
    (["inspect", "{out}"], "does not exist"),
])
def test_cli_errors_are_clear_and_leave_nothing(argv, match, model_dir, tmp_path, capsys):
    (tmp_path / "c.txt").write_text("some text\n")
    out = tmp_path / "q"
    argv = [a.format(model=model_dir, out=out, txt=tmp_path / "c.txt") for a in argv]
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err.replace("\n", " "))
    assert not out.exists()


def test_block_device_option(model_dir, tmp_path, capsys):
    """--block-device cpu: block-by-block calibration; a CUDA request on a CPU-only machine fails before loading."""
    out = tmp_path / "blk"
    assert main(["quantize", str(model_dir), "--scheme", "w4a8-int", "--calib", "random", "--n-samples", "2",
                 "--seq-len", "16", "--block-device", "cpu", "-o", str(out)]) == 0
    model, _ = load(out)
    assert model.lowbit_scheme.name == "w4a8-int"
    import torch
    if not torch.cuda.is_available():
        assert main(["quantize", str(model_dir), "--scheme", "w4a8-int", "--calib", "random", "--block-device",
                     "cuda", "-o", str(tmp_path / "x")]) != 0
        assert "no CUDA" in capsys.readouterr().err

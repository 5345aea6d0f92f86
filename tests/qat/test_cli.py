"""`lowbit qat`: a tiny end-to-end run through the CLI, and its error paths."""
import json

import pytest
import torch

from qat_helpers import tiny_classifier
from lowbit.cli import main

WORDS = ["good", "great", "fine", "bad", "awful", "dull", "movie", "plot", "the", "a"]


@pytest.fixture
def model_dir(tmp_path):
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    d = tmp_path / "model"
    tiny_classifier(hidden=128, layers=1).save_pretrained(d)
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(d)
    return d


def _jsonl(path, n=24):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        pos = i % 2 == 0
        words = [WORDS[int(j)] for j in torch.randint(6, 10, (3,), generator=g)]
        words.append(WORDS[int(torch.randint(0, 3, (1,), generator=g)) + (0 if pos else 3)])
        rows.append(json.dumps({"text": " ".join(words), "label": int(pos)}))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cli_qat_end_to_end(model_dir, tmp_path, capsys):
    train, dev = _jsonl(tmp_path / "train.jsonl"), _jsonl(tmp_path / "dev.jsonl", 16)
    out = tmp_path / "out"
    rc = main(["qat", str(model_dir), "--data", str(train), "--eval", str(dev), "-o", str(out), "--steps", "3",
               "--batch-size", "8", "--max-len", "8", "--no-progress", "--schedule", "two-stage"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "linear layers quantized" in text and "trained 3 steps" in text
    assert "max |logit difference| from the fake-quant model 0.00e+00" in text
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "lowbit"
    assert (tmp_path / "out.qat-state.pt").is_file()
    from lowbit.export import load
    from lowbit.nn.qlinear import QuantLinear

    loaded, tok = load(out)  # the packed checkpoint reloads and runs
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == 6
    assert loaded(**tok(["good movie"], return_tensors="pt")).logits.shape == (1, 2)


@pytest.mark.parametrize("extra, message", [
    (["--data", "missing.jsonl"], "does not exist"),
    (["--data", "train.txt"], "give a .jsonl"),
    (["--data", "bad.jsonl"], "bad.jsonl:2"),
    (["--data", "train.jsonl", "--grad", "adam"], "unknown scale gradient"),
    (["--data", "train.jsonl", "--scheme", "w5a5"], "unknown scheme"),
    (["--data", "train.jsonl", "--steps", "0"], "steps must be a positive integer"),
])
def test_cli_qat_errors(model_dir, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    _jsonl(tmp_path / "train.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": "neg"}\n')
    rc = main(["qat", str(model_dir), "-o", str(tmp_path / "o"), "--no-progress"] + extra)
    assert rc == 2 and message in capsys.readouterr().err


def test_cli_qat_refuses_bad_model_and_existing_output(tmp_path, capsys):
    _jsonl(tmp_path / "train.jsonl")
    rc = main(["qat", str(tmp_path), "--data", str(tmp_path / "train.jsonl"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "not a Hugging Face model directory" in capsys.readouterr().err
    (tmp_path / "o").mkdir()
    rc = main(["qat", str(tmp_path), "--data", str(tmp_path / "train.jsonl"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "pass --force" in capsys.readouterr().err

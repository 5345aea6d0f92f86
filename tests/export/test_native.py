import json

import pytest
import torch

from tiny_models import MODELS, tiny_bert, tiny_llama
from lowbit import load, quantize, save
from lowbit.commands.inspect import checkpoint_sizes
from lowbit.errors import CheckpointError
from lowbit.export import linear_weight_bytes
from lowbit.export.native import FORMAT_VERSION


@pytest.mark.parametrize("family,scheme", [("bert", "w4a8-int"), ("gpt2", "w8a8-fp8"), ("llama", "w4a8-fp"),
                                           ("llama", "w4a16"), ("bert", "w4a4-fp4")])
def test_save_load_gives_identical_outputs(tmp_path, family, scheme, ids):
    model = MODELS[family]()
    quantize(model, scheme, [ids], progress=False)
    out = model(input_ids=ids)[0]
    save(model, tmp_path / "ckpt")
    loaded, tok = load(tmp_path / "ckpt")
    assert tok is None
    assert torch.equal(loaded(input_ids=ids)[0], out)
    assert loaded.lowbit_scheme == model.lowbit_scheme
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["quantization_config"]["format_version"] == FORMAT_VERSION
    assert len(cfg["quantization_config"]["modules"]) == len(model.lowbit_report.quantized)


def test_tied_embeddings_survive(tmp_path, ids):
    model = tiny_llama()
    quantize(model, "w4a16", progress=False)
    save(model, tmp_path / "c")
    loaded, _ = load(tmp_path / "c")
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


@pytest.mark.parametrize("scheme", ["w4a16", "w4a16-fp4", "w4a8-fp", "w4a4-int"])
def test_w4_linear_bytes_at_most_030_of_bf16_measured_on_disk(tmp_path, scheme):
    model = tiny_bert()
    quantize(model, scheme, progress=False)
    save(model, tmp_path / "c")
    info = checkpoint_sizes(tmp_path / "c")
    ratio = info["quantized_bytes"] / info["bf16_bytes"]
    assert ratio <= 0.30
    assert ratio == pytest.approx(linear_weight_bytes(model)["ratio"])


def _saved(tmp_path):
    model = tiny_bert()
    quantize(model, "w4a16", progress=False)
    return save(model, tmp_path / "c")


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nope")
    d = _saved(tmp_path)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        load(d)


def test_truncated_weights(tmp_path):
    d = _saved(tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load(d)


def test_bit_flip_is_caught_by_the_checksum(tmp_path):
    d = _saved(tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-100] ^= 0x10
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load(d)


def test_newer_format_version(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["format_version"] = FORMAT_VERSION + 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="newer lowbit"):
        load(d)


def test_not_a_lowbit_checkpoint(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["quantization_config"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a lowbit checkpoint"):
        load(d)


def test_failed_save_leaves_nothing_behind(tmp_path):
    model = tiny_bert()
    quantize(model, "w4a16", progress=False)

    class BadTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save(model, tmp_path / "c", BadTokenizer())
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, ids):
    d = _saved(tmp_path)
    before = (d / "model.safetensors").read_bytes()
    model = tiny_bert()
    quantize(model, "w8a8-int8", progress=False)

    class BadTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save(model, d, BadTokenizer())
    assert (d / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_save_needs_a_quantized_model(tmp_path):
    with pytest.raises(CheckpointError, match="quantized by lowbit"):
        save(tiny_bert(), tmp_path / "c")

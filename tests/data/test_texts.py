"""Text sources, held-out splits and calibration batches (no download: local files and in-memory tokenizers)."""
import json

import pytest
import torch

from lowbit.data import calibration_batches, load_texts, random_token_batches
from lowbit.data.testing import word_tokenizer
from lowbit.data.texts import read_txt, special_frame
from lowbit.errors import CalibrationError, DataError

DOCS = [f"the film {i} was good and the story was long" for i in range(10)]


@pytest.fixture
def txt(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(DOCS) + "\n")
    return path


def test_txt_paragraphs_are_documents(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first line\nstill first\n\n  \nsecond\n\n\nthird\n")
    assert read_txt(path) == ["first line\nstill first", "second", "third"]


def test_txt_without_blank_lines_is_one_document_per_line(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("one\ntwo\n\nthree")  # a blank line anywhere switches to paragraphs
    assert read_txt(path) == ["one\ntwo", "three"]
    path.write_text("one\ntwo\nthree\n")
    assert read_txt(path) == ["one", "two", "three"]


def test_jsonl_reads_text_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS[:3])) + "\n\n")
    assert load_texts(path) == DOCS[:3]


@pytest.mark.parametrize("line, message", [('{"txt": "x"}', "field 'text'"), ("[1, 2]", "field 'text'"),
                                           ('{"text": 3}', "field 'text'"), ("{not json", "not valid JSON")])
def test_jsonl_bad_line_is_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{message}"):
        load_texts(path)


def test_splits_are_disjoint_and_cover_the_source(txt):
    calib, evaluation = load_texts(txt, split="calib"), load_texts(txt, split="eval")
    assert not set(calib) & set(evaluation)
    assert sorted(calib + evaluation) == sorted(load_texts(txt)) == sorted(DOCS)
    assert evaluation[0] == DOCS[0] and calib[0] == DOCS[1]


def test_unknown_source_split_missing_file_and_empty_data(tmp_path, txt):
    with pytest.raises(DataError, match="unknown data source 'wikipedia'.*wiki"):
        load_texts("wikipedia")
    with pytest.raises(DataError, match="does not exist"):
        load_texts(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="unknown split 'train'"):
        load_texts(txt, split="train")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(DataError, match="no documents in split 'all'"):
        load_texts(tmp_path / "empty.txt")
    (tmp_path / "one.txt").write_text("a single document")
    with pytest.raises(DataError, match="no documents in split 'calib' \\(1 in all\\)"):
        load_texts(tmp_path / "one.txt", split="calib")


@pytest.mark.parametrize("style, frame", [("gpt2", ([], [])), ("bert", ([2], [3]))])
def test_special_frame(style, frame):
    assert special_frame(word_tokenizer(style)) == frame


def test_calibration_batches_shapes_frame_and_seed():
    tok = word_tokenizer("bert")
    batches = calibration_batches(DOCS, tok, n_samples=5, seq_len=12, seed=3, batch_size=2)
    assert [b["input_ids"].shape for b in batches] == [(2, 12), (2, 12), (1, 12)]
    ids = torch.cat([b["input_ids"] for b in batches])
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, -1] == tok.sep_token_id).all()
    assert all((b["attention_mask"] == 1).all() for b in batches)
    again = torch.cat([b["input_ids"] for b in calibration_batches(DOCS, tok, 5, 12, seed=3, batch_size=2)])
    other = torch.cat([b["input_ids"] for b in calibration_batches(DOCS, tok, 5, 12, seed=4, batch_size=2)])
    assert torch.equal(ids, again) and not torch.equal(ids, other)


def test_calibration_windows_come_from_the_text():
    tok = word_tokenizer("gpt2")
    stream = sum((tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for d in DOCS), [])
    text = " ".join(map(str, stream))
    for row in calibration_batches(DOCS, tok, n_samples=4, seq_len=7)[0]["input_ids"].tolist():
        assert " ".join(map(str, row)) in text


def test_calibration_errors():
    tok = word_tokenizer("bert")
    with pytest.raises(CalibrationError, match="0 tokens"):
        calibration_batches(["", "  "], tok, n_samples=2, seq_len=8)
    with pytest.raises(CalibrationError, match="fewer than one window"):
        calibration_batches(["the film"], tok, n_samples=2, seq_len=64)
    with pytest.raises(CalibrationError, match="no room"):
        calibration_batches(DOCS, tok, n_samples=2, seq_len=2)
    with pytest.raises(CalibrationError, match="n_samples and batch_size"):
        calibration_batches(DOCS, tok, n_samples=0, seq_len=8)


def test_random_token_batches():
    batches = random_token_batches(50, n=3, seq_len=6, seed=1, batch_size=2)
    ids = torch.cat([b["input_ids"] for b in batches])
    assert ids.shape == (3, 6) and ids.min() >= 0 and ids.max() < 50
    assert torch.equal(ids, torch.cat([b["input_ids"] for b in random_token_batches(50, 3, 6, seed=1)]))
    with pytest.raises(CalibrationError, match=">= 1"):
        random_token_batches(0, n=3, seq_len=6)

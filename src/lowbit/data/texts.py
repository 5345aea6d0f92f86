"""Text sources for calibration and evaluation, with explicit held-out splits, and calibration batches.

A *source* is a packaged corpus name (``wiki``, ``lee``, ``ptb``, ``sst``; see :mod:`lowbit.data.corpora`),
a ``.txt`` file or a ``.jsonl`` file. Every source is a list of documents, split the same way:

* ``split="eval"``: documents 0, 2, 4, ... (held out: evaluation data)
* ``split="calib"``: documents 1, 3, 5, ... (calibration data, the probe's training half)
* ``split="all"``: every document.

Interleaving (rather than first/second half) keeps both splits spread over the whole source (the sentiment
file lists its 2000 positive sentences before its 2000 negative ones), and means one source can serve
both calibration and evaluation without a document in common.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lowbit.data.corpora import CORPORA, sst_labelled
from lowbit.errors import CalibrationError, DataError

SPLITS = ("all", "calib", "eval")
Batch = dict[str, torch.Tensor]


def _select(docs: list, split: str, what: str) -> list:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {what}; choose one of {', '.join(SPLITS)}")
    chosen = docs if split == "all" else docs[(0 if split == "eval" else 1)::2]
    if not chosen:
        raise DataError(f"{what} has no documents in split {split!r} ({len(docs)} in all); "
                        f"give more documents or use split='all'")
    return chosen


def read_txt(path: Path) -> list[str]:
    """Documents of a text file: paragraphs separated by blank lines; with no blank line, one per line."""
    text = path.read_text(encoding="utf-8")
    docs = re.split(r"\n\s*\n", text) if re.search(r"\n\s*\n", text.strip()) else text.splitlines()
    return [doc.strip() for doc in docs if doc.strip()]


def read_jsonl_records(path: Path, fields: dict[str, type]) -> list[dict]:
    """The objects on the non-empty lines of a JSON-lines file, each checked to hold `fields` (name -> type;
    bool is not accepted where int is asked for).

    Raises:
        DataError: a line that is not JSON, not an object, or lacks a field of the right type (named by number).
    """
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not all(_has(record, k, t) for k, t in fields.items()):
            want = " and ".join(f"field {k!r} ({t.__name__})" for k, t in fields.items())
            raise DataError(f"{path}:{number}: expected an object with {want}")
        records.append(record)
    return records


def _has(record: dict, key: str, typ: type) -> bool:
    value = record.get(key)
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


def read_jsonl(path: Path) -> list[str]:
    """The ``text`` field of each non-empty line of a JSON-lines file (see `read_jsonl_records`)."""
    return [r["text"] for r in read_jsonl_records(path, {"text": str})]


def _read_source(source: str | Path) -> list[str]:
    if str(source) in CORPORA:
        return CORPORA[str(source)]()
    path = Path(source)
    if path.suffix not in (".txt", ".jsonl"):
        raise DataError(f"unknown data source {str(source)!r}: give a .txt or .jsonl file or one of the "
                        f"packaged corpora {', '.join(sorted(CORPORA))}")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    return read_jsonl(path) if path.suffix == ".jsonl" else read_txt(path)


def load_texts(source: str | Path, split: str = "all") -> list[str]:
    """The documents of a source, in source order, restricted to one split.

    Args:
        source: ``wiki``, ``lee``, ``ptb``, ``sst``, or a path to a ``.txt`` / ``.jsonl`` file.
        split: ``"all"``, ``"calib"`` (odd-numbered documents) or ``"eval"`` (even-numbered ones).

    Returns:
        Non-empty list of document strings.

    Raises:
        DataError: unknown source or split, missing file, malformed JSONL, or nothing in the split.

    Example:
        >>> calib = load_texts("wiki", split="calib")   # disjoint from load_texts("wiki", "eval")
    """
    docs = [doc for doc in _read_source(source) if doc.strip()]
    return _select(docs, split, f"data source {str(source)!r}")


def load_labelled(source: str = "sst", split: str = "all") -> tuple[list[str], list[int]]:
    """Sentences and 0/1 labels of a packaged classification corpus (only ``sst`` for now).

    Raises:
        DataError: unknown source or split.
    """
    if source != "sst":
        raise DataError(f"unknown labelled corpus {source!r}; known: sst")
    texts, labels = sst_labelled()
    pairs = _select(list(zip(texts, labels)), split, "labelled corpus 'sst'")
    return [t for t, _ in pairs], [y for _, y in pairs]


def _token_stream(texts: list[str], tokenizer) -> list[int]:
    """All documents tokenized without special tokens and joined by the EOS (or SEP) token."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    stream: list[int] = []
    if not texts:
        return stream
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        stream.extend(ids + ([sep] if sep is not None else []))
    return stream


def special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after one text (BERT: [CLS] / [SEP]; GPT-2: none).

    Read off by encoding one word with and without special tokens (transformers 5 tokenizers no longer
    expose ``build_inputs_with_special_tokens``).
    """
    with_special = tokenizer("a")["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(bare) + 1):
        if with_special[start:start + len(bare)] == bare:
            return with_special[:start], with_special[start + len(bare):]
    raise CalibrationError(f"cannot find where {type(tokenizer).__name__} puts its special tokens")


def _stack(rows: list[list[int]], batch_size: int) -> list[Batch]:
    ids = torch.tensor(rows, dtype=torch.long)  # (n_samples, seq_len)
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}
            for chunk in ids.split(batch_size)]


def calibration_batches(texts: list[str], tokenizer, n_samples: int = 128, seq_len: int = 512,
                        seed: int = 0, batch_size: int = 8) -> list[Batch]:
    """Random fixed-length windows of the tokenized texts, as model keyword-argument batches.

    The documents are tokenized, joined by EOS/SEP into one stream, and ``n_samples`` windows are drawn at
    seeded random offsets (GPTQ's recipe); the tokenizer's special tokens (BERT's CLS/SEP, a BOS) frame
    each window, so every sample is exactly ``seq_len`` tokens and no padding is needed.

    Args:
        texts: documents, e.g. ``load_texts("wiki", split="calib")``.
        tokenizer: a Hugging Face tokenizer.
        n_samples: number of windows.
        seq_len: tokens per window, special tokens included.
        seed: seeds the window offsets.
        batch_size: windows per returned dict.

    Returns:
        ``ceil(n_samples / batch_size)`` dicts with ``input_ids`` and ``attention_mask`` (``(B, seq_len)``).

    Raises:
        CalibrationError: no texts, bad sizes, or fewer tokens in all texts than one window needs.
    """
    if n_samples < 1 or batch_size < 1:
        raise CalibrationError(f"n_samples and batch_size must be >= 1, got {n_samples} and {batch_size}")
    prefix, suffix = special_frame(tokenizer)
    body = seq_len - len(prefix) - len(suffix)
    if body < 1:
        raise CalibrationError(f"seq_len={seq_len} leaves no room for text beside the special tokens")
    stream = _token_stream([t for t in texts if t.strip()], tokenizer)
    if len(stream) < body:
        raise CalibrationError(f"calibration texts hold {len(stream)} tokens, fewer than one window of "
                               f"{body}; give more text or lower seq_len")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(stream) - body + 1, (n_samples,), generator=generator).tolist()
    rows = [prefix + stream[s:s + body] + suffix for s in starts]
    return _stack(rows, batch_size)


def random_token_batches(vocab_size: int, n: int, seq_len: int, seed: int = 0,
                         batch_size: int = 8) -> list[Batch]:
    """Data-free calibration: uniformly random token ids.

    Args:
        vocab_size: ids are drawn from ``[0, vocab_size)``.
        n: number of sequences.
        seq_len: tokens per sequence.
        seed: seeds the draw.
        batch_size: sequences per returned dict.

    Returns:
        List of ``{"input_ids", "attention_mask"}`` dicts, each ``(B, seq_len)``.

    Raises:
        CalibrationError: a size below 1.
    """
    if min(vocab_size, n, seq_len, batch_size) < 1:
        raise CalibrationError(f"vocab_size, n, seq_len and batch_size must be >= 1, got "
                               f"{vocab_size}, {n}, {seq_len}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (n, seq_len), generator=generator)
    return _stack(ids.tolist(), batch_size)

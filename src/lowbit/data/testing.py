"""In-memory tokenizers for tests and examples: no download, vocabularies small enough for tiny models."""
from __future__ import annotations

import string

WORDS = tuple(
    "the a an of to and in is was it that for on with as by at from this be are were not but or have has "
    "film movie good bad great story time people year new world city state war music game team one two three "
    "news report says said first last film's best worst long short life work day night man woman".split()
)


def word_tokenizer(style: str = "gpt2", vocab_size: int = 120):
    """A whitespace word-level fast tokenizer of at most ``vocab_size`` ids.

    Args:
        style: ``"gpt2"`` (no special tokens added, EOS only) or ``"bert"`` ([CLS] text [SEP], [PAD]).
        vocab_size: the vocabulary is cut to this size (tiny test models use 120).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``; unknown words map to ``[UNK]``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(
        (specials + list(WORDS) + list(string.ascii_lowercase) + list(string.punctuation))[:vocab_size])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if style == "bert":
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]")
    if style != "gpt2":
        raise ValueError(f"style must be 'gpt2' or 'bert', got {style!r}")
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="<eos>")

"""Tiny QAT models and data shared by tests/qat (a module named conftest is ambiguous across directories)."""
import torch

from lowbit.scheme import QuantSpec, get_scheme

VOCAB = 60
W4A4 = get_scheme("w4a4-int").replace(name="w4a4-int-g32", weights=QuantSpec("int4", "group", 32))
W8A8 = get_scheme("w8a8-int8")


def tiny_classifier(seed: int = 0, layers: int = 2, dropout: float = 0.0, hidden: int = 64):
    """A 2-layer BERT classifier, hidden 64, heads of 32 (use W4A4, g32; hidden=128 fits the g128 presets)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 32,
                     intermediate_size=2 * hidden, num_labels=2, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, attn_implementation="eager")
    return BertForSequenceClassification(cfg).eval()


def tiny_data(n: int = 64, length: int = 10, seed: int = 0):
    """Sentences of random tokens with padding; label 1 when token 7 occurs (learnable)."""
    from lowbit.qat import LabelledData

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, VOCAB, (n, length), generator=g)
    ids[torch.rand(n, length, generator=g) < 0.1] = 7
    lengths = torch.randint(4, length + 1, (n,), generator=g)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = ids * mask
    labels = ((ids == 7).any(1)).long()
    return LabelledData(ids, mask, labels)

"""Evaluation: perplexity of causal LMs, sentence-embedding cosine and a sentiment probe for encoders,
and per-layer SQNR between a quantized model and its full-precision twin.

Example:
    >>> from lowbit.eval import perplexity, layer_sqnr
    >>> ppl = perplexity(model, tok, load_texts("wiki", split="eval"), max_tokens=2048)
"""
from lowbit.eval.compare import EncoderTask, PerplexityTask, Row, compare
from lowbit.eval.embeddings import embedding_cosine, sentence_embeddings
from lowbit.eval.perplexity import perplexity
from lowbit.eval.probe import LinearProbe, fit_probe, probe_accuracy, train_probe
from lowbit.eval.sqnr import layer_sqnr, sqnr_db

__all__ = [
    "EncoderTask", "LinearProbe", "PerplexityTask", "Row", "compare", "embedding_cosine", "fit_probe", "layer_sqnr", "perplexity", "probe_accuracy",
    "sentence_embeddings", "sqnr_db", "train_probe",
]

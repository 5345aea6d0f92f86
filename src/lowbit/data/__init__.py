"""Real data and models offline: packaged corpora and models (see ../shared/MODELS.md), local text files,
held-out splits and calibration batches.

Example:
    >>> from lowbit.data import load_model, load_texts, calibration_batches
    >>> model, tok = load_model("smollm2")
    >>> calib = calibration_batches(load_texts("wiki", split="calib"), tok, n_samples=32, seq_len=512)
"""
from lowbit.data.corpora import CORPORA
from lowbit.data.models import BASELINE_LABEL, PACKAGED, load_model, load_packaged, packaged_dir
from lowbit.data.packages import cache_dir, fetch
from lowbit.data.texts import SPLITS, calibration_batches, load_labelled, load_texts, random_token_batches

__all__ = [
    "BASELINE_LABEL", "CORPORA", "PACKAGED", "SPLITS", "cache_dir", "calibration_batches", "fetch",
    "load_labelled", "load_model", "load_packaged", "load_texts", "packaged_dir", "random_token_batches",
]

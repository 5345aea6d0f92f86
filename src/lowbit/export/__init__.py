"""Checkpoints: lowbit's native format (save / load); exports for serving engines live beside it."""
from lowbit.export.native import linear_weight_bytes, load, save

__all__ = ["save", "load", "linear_weight_bytes"]

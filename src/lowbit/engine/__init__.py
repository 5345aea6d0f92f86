"""Encoder inference engine: BERT-family models at W8A8 / W4A8 / W4A4 with fused kernels and CUDA graphs.

Importing `lowbit.engine` imports triton (the fused kernels are defined at import) but starts no CUDA work.
"""
from lowbit.engine.engine import Engine

__all__ = ["Engine"]

"""lowbit: 4- and 8-bit quantization of transformer models with packed storage and fast kernels.

Importing lowbit never initialises CUDA and never imports triton.

    >>> from lowbit import quantize, save, load
    >>> quantize(model, "w4a8-int", calib_batches)
    >>> save(model, "out/model-w4a8", tokenizer)
"""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: keep `import lowbit` light (no transformers import)
    if name == "quantize":
        from lowbit.api import quantize
        return quantize
    if name in ("save", "load"):
        from lowbit.export import native
        return getattr(native, name)
    raise AttributeError(name)

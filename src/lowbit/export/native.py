"""lowbit's native checkpoint: a Hugging Face-style directory.

    config.json          the model's config plus `quantization_config` = {quant_method: lowbit, format_version,
                         scheme (resolved), modules (every quantized layer and its specs), checksum}
    model.safetensors    every tensor of the model; quantized layers as packed codes + scales (+ zeros)
    tokenizer files      when a tokenizer is given

Saving is atomic: everything is written to a temporary sibling directory, then renamed into place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from lowbit.errors import CheckpointError
from lowbit.nn.convert import PlannedModule, build_shells
from lowbit.nn.qlinear import QuantLinear
from lowbit.scheme import QuantSpec, Scheme, spec_to_dict, spec_from_dict

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save(model: nn.Module, out_dir: str | Path, tokenizer=None) -> Path:
    """Write a quantized model (from `lowbit.quantize`) to `out_dir` atomically; returns the directory.

    Raises:
        CheckpointError: the model was not quantized by lowbit, or the directory cannot be written.
    """
    if not hasattr(model, "lowbit_scheme"):
        raise CheckpointError("save() takes a model quantized by lowbit.quantize (it has no lowbit_scheme)")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write(model, tmp, tokenizer)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(model: nn.Module, tmp: Path, tokenizer) -> None:
    from safetensors.torch import save_file

    save_file(_untied_state_dict(model), str(tmp / WEIGHTS), metadata={"format": "pt", "lowbit": str(FORMAT_VERSION)})
    config = model.config.to_dict() if hasattr(model, "config") else {}
    config["architectures"] = [type(model).__name__]  # the class load() rebuilds (None for from-config models)
    config["quantization_config"] = {
        "quant_method": "lowbit",
        "format_version": FORMAT_VERSION,
        "scheme": model.lowbit_scheme.to_dict(),
        "modules": {name: _module_entry(m) for name, m in model.named_modules() if isinstance(m, QuantLinear)},
        "sha256": _sha256(tmp / WEIGHTS),
    }
    (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))


def _untied_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor stored once, under its source name (the embedding, not the tied
    head): `tie_weights()` after loading copies source to target, so the source must be the one saved."""
    sd, seen = model.state_dict(), {}
    for k in sorted(sd, key=lambda k: _is_tied_target(model, k)):  # sources first
        ptr = (sd[k].data_ptr(), sd[k].shape, sd[k].stride())
        if sd[k].numel() and ptr in seen:
            continue
        seen[ptr] = k
    return {k: sd[k].contiguous() for k in seen.values()}


def _module_entry(m: QuantLinear) -> dict:
    e = {"in_features": m.in_features, "out_features": m.out_features, "weights": spec_to_dict(m.weight_spec),
         "activations": spec_to_dict(m.act_spec) if m.act_spec else None}
    if m.lorc_u is not None:  # lowbit.methods.lorc
        e["lorc"] = {"rank": m.lorc_rank, "bits": 8 if m.lorc_u_scale is not None else None}
    if m.input_transform is not None:  # lowbit.methods.rotation
        e["input_transform"] = m.input_transform
    return e


def _restore_extras(model: nn.Module, entries: dict) -> None:
    """Allocate the LoRC buffers and set the input transforms the module entries record (before loading)."""
    for name, e in entries.items():
        m = model.get_submodule(name)
        if e.get("lorc"):
            m.init_lorc(e["lorc"]["rank"], e["lorc"]["bits"])
        m.input_transform = e.get("input_transform")


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_quant_config(path: str | Path) -> tuple[dict, dict]:
    """(model config without quantization_config, quantization_config) of a checkpoint, validated.

    Raises:
        CheckpointError: missing directory/files, not a lowbit checkpoint, or a newer format version.
    """
    d = Path(path)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist")
    for f in (CONFIG, WEIGHTS):
        if not (d / f).is_file():
            raise CheckpointError(f"checkpoint {d} is missing {f}; re-run `lowbit quantize` to write it again")
    try:
        config = json.loads((d / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{d / CONFIG} is not valid JSON ({e}); the checkpoint is corrupt") from None
    qc = config.pop("quantization_config", None)
    if not isinstance(qc, dict) or qc.get("quant_method") != "lowbit":
        raise CheckpointError(f"{d} is not a lowbit checkpoint (config.json has no lowbit quantization_config)")
    version = qc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{d} was written by a newer lowbit (format version {version}; this lowbit reads "
                              f"up to {FORMAT_VERSION}); upgrade lowbit to load it")
    return config, qc


def load(path: str | Path, device: str | torch.device = "cpu", with_tokenizer: bool = True):
    """Rebuild a quantized model saved by `save`; returns (model, tokenizer or None).

    Raises:
        CheckpointError: missing files, corrupted or truncated weights (checksum and safetensors checks),
            a newer format version, or tensors that do not match the recorded modules.
    """
    d = Path(path)
    config, qc = read_quant_config(d)
    if _sha256(d / WEIGHTS) != qc.get("sha256"):
        raise CheckpointError(f"{d / WEIGHTS} does not match the checksum in config.json: the file is corrupted "
                              "or truncated; quantize again or restore it from a copy")
    scheme = Scheme.from_dict(qc["scheme"], source=f"{d / CONFIG}: scheme")
    model = _build_float_model(config, d)
    modules = [PlannedModule(n, spec_from_dict(e["weights"], n), spec_from_dict(e["activations"], n)
                             if e["activations"] else None, e["in_features"], e["out_features"])
               for n, e in qc["modules"].items()]
    build_shells(model, modules)
    _restore_extras(model, qc["modules"])
    _load_weights(model, d / WEIGHTS)
    model.lowbit_scheme = scheme
    model.eval()
    model.to(device)
    tok = _load_tokenizer(d) if with_tokenizer else None
    return model, tok


def _build_float_model(config: dict, d: Path) -> nn.Module:
    import transformers

    arch = (config.get("architectures") or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise CheckpointError(f"{d / CONFIG}: unknown architecture {arch!r} for this transformers version")
    try:
        cfg = transformers.AutoConfig.for_model(**config)
    except Exception as e:  # transformers raises several types for a bad config
        raise CheckpointError(f"{d / CONFIG}: cannot rebuild the model config ({e})") from None
    with _no_init():
        model = cls(cfg)
    return model


def _no_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def _load_weights(model: nn.Module, file: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        missing, unexpected = model.load_state_dict(load_file(str(file)), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{file} cannot be read ({e}); the file is corrupted or truncated") from None
    missing = [k for k in missing if not _is_tied_target(model, k)]
    if missing or unexpected:
        raise CheckpointError(f"{file} does not match the recorded modules: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def _is_tied_target(model: nn.Module, key: str) -> bool:
    """True for a parameter that transformers ties to another (e.g. lm_head.weight -> embed_tokens.weight)."""
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", True):
        return False
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return any(key == k or key.endswith("." + k) for k in tied)


def _load_tokenizer(d: Path):
    if not any((d / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(d))


def linear_weight_bytes(model: nn.Module) -> dict[str, float]:
    """Bytes of quantized linear weights (codes + scales + zeros) against the same weights in bf16."""
    q = bf16 = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            q += m.qtensor.nbytes()
            bf16 += 2 * m.in_features * m.out_features
    return {"quantized_bytes": q, "bf16_bytes": bf16, "ratio": q / bf16 if bf16 else float("nan")}

"""`lowbit quantize MODEL --scheme NAME|FILE.yaml --calib DATA -o OUT`."""
from __future__ import annotations

import argparse

from lowbit.errors import CheckpointError, DataError


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model and save a packed checkpoint",
                       description="Quantize a Hugging Face model (local dir or packaged name) and save it.")
    p.add_argument("model", help="local HF model directory, or a packaged model name (minilm, smollm2)")
    p.add_argument("--scheme", required=True, help="preset name (see `lowbit inspect --presets`) or a .yaml file")
    p.add_argument("--calib", default=None,
                   help="calibration data: .txt, .jsonl, a packaged corpus (wiki, lee, ptb, sst) or 'random'")
    p.add_argument("--group-size", type=int, default=None,
                   help="replace the scheme's weight group size (e.g. 64 for SmolLM2, whose hidden size 576 is "
                        "not a multiple of the presets' 128)")
    p.add_argument("--n-samples", type=int, default=128, help="calibration sequences (default 128)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per calibration sequence (default 512)")
    p.add_argument("-o", "--output", required=True, help="output checkpoint directory")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--block-device", default=None,
                   help="keep the model in CPU memory and run the calibration pass one transformer block at a time "
                        "on this device (cuda | cpu), for models larger than the GPU; methods such as GPTQ take "
                        "their own device option in the scheme. Replaces --device")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lowbit.api import quantize
    from lowbit.data import load_model
    from lowbit.device import resolve_device
    from lowbit.export import linear_weight_bytes, save
    from lowbit.scheme import get_scheme

    scheme = _with_group_size(get_scheme(args.scheme), args.group_size)  # validated before loading anything heavy
    device = resolve_device("cpu" if args.block_device else args.device)
    if args.block_device:
        resolve_device(args.block_device)  # fail before loading anything heavy
    if Path(args.output).exists() and not args.force:
        raise CheckpointError(f"{args.output} exists; pass --force to overwrite it")
    model, tok = load_model(args.model)
    model.to(device).eval()
    calib = _calibration(args, model, tok) if args.calib else None
    quantize(model, scheme, calib, block_device=args.block_device)
    print(model.lowbit_report.summary())
    out = save(model.cpu(), args.output, tok)
    size = linear_weight_bytes(model)
    print(f"saved {out}: linear weights {size['quantized_bytes'] / 2**20:.2f} MiB = {size['ratio']:.3f}x bf16")
    return 0


def _calibration(args: argparse.Namespace, model, tok):
    from lowbit.data import calibration_batches, load_texts, random_token_batches

    if args.calib == "random":
        return random_token_batches(model.config.vocab_size, args.n_samples, args.seq_len, seed=0)
    if tok is None:
        raise DataError(f"{args.model} has no tokenizer, so text calibration data cannot be tokenized; "
                        "add tokenizer files to the model directory or use --calib random")
    # the calib split never overlaps the eval split that `lowbit eval` reads from the same source
    return calibration_batches(load_texts(args.calib, split="calib"), tok, n_samples=args.n_samples,
                               seq_len=args.seq_len)


def _with_group_size(scheme, group_size: int | None):
    """The scheme with its weight group size replaced (an explicit user choice; never applied silently)."""
    import dataclasses

    from lowbit.errors import SchemeError
    from lowbit.scheme import QuantSpec

    if group_size is None:
        return scheme
    if scheme.weights.granularity != "group":
        raise SchemeError(f"--group-size applies to group-wise weights; {scheme.name} uses "
                          f"{scheme.weights.granularity} scales")
    weights = QuantSpec(**{**dataclasses.asdict(scheme.weights), "group_size": group_size})
    return scheme.replace(name=f"{scheme.name}-g{group_size}", weights=weights)

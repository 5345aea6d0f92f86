"""`lowbit eval CKPT --data SOURCE [--metric ppl|probe|cosine]`: score one model, quantized or not."""
from __future__ import annotations

import argparse

from lowbit.errors import DataError, ModelError

METRICS = ("ppl", "probe", "cosine")


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint or model (perplexity, probe accuracy, cosine)",
                       description="Evaluate a lowbit checkpoint, a local HF model directory or a packaged model "
                                   "on held-out data (the 'eval' split: even-numbered documents).")
    p.add_argument("checkpoint", help="lowbit checkpoint dir, HF model dir, or packaged model (minilm, smollm2)")
    p.add_argument("--data", default=None,
                   help="evaluation text: .txt, .jsonl or a packaged corpus (wiki, lee, ptb, sst); "
                        "default wiki for ppl, sst otherwise")
    p.add_argument("--metric", choices=METRICS, default=None,
                   help="ppl for causal LMs (default for them); probe or cosine for encoders (default probe)")
    p.add_argument("--reference", default=None,
                   help="the full-precision model (dir or packaged name): cosine compares against it and the "
                        "probe is trained on its features; without it the probe is trained on the model itself")
    p.add_argument("--split", default="eval", choices=("eval", "calib", "all"), help="document split (default eval)")
    p.add_argument("--max-tokens", type=int, default=None, help="ppl: evaluate only the first N tokens")
    p.add_argument("--ctx", type=int, default=512, help="ppl: window length (default 512)")
    p.add_argument("--stride", type=int, default=256, help="ppl: window stride (default 256)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def load_any(path: str):
    """(model, tokenizer) from a lowbit checkpoint, else from a HF directory or packaged name.

    Raises:
        ModelError / CheckpointError: unreadable model or checkpoint.
    """
    from lowbit.data import load_model

    if is_lowbit_checkpoint(path):
        from lowbit.export import load

        return load(path)
    return load_model(path)


def is_lowbit_checkpoint(path: str) -> bool:
    """True when ``path/config.json`` carries a lowbit ``quantization_config``."""
    import json
    from pathlib import Path

    config = Path(path) / "config.json"
    try:
        quant = json.loads(config.read_text()).get("quantization_config") if config.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False  # not JSON (or not an object): load_model reports it
    return isinstance(quant, dict) and quant.get("quant_method") == "lowbit"


def run(args: argparse.Namespace) -> int:
    from lowbit.eval.compare import is_causal_lm

    model, tok = load_any(args.checkpoint)
    if tok is None:
        raise ModelError(f"{args.checkpoint} has no tokenizer files; evaluation needs one beside the weights")
    metric = args.metric or ("ppl" if is_causal_lm(model) else "probe")
    if metric == "ppl" and not is_causal_lm(model):
        raise ModelError(f"{type(model).__name__} is not a causal LM: use --metric probe or cosine")
    value = {"ppl": _ppl, "probe": _probe, "cosine": _cosine}[metric](args, model, tok)
    print(f"{args.checkpoint}: {metric} = {value:.6f}")
    return 0


def _ppl(args, model, tok) -> float:
    from lowbit.data import load_texts
    from lowbit.eval import perplexity

    texts = load_texts(args.data or "wiki", split=args.split)
    return perplexity(model, tok, texts, ctx=args.ctx, stride=args.stride, max_tokens=args.max_tokens,
                      progress=not args.no_progress)


def _probe(args, model, tok) -> float:
    from lowbit.data import load_labelled
    from lowbit.eval import probe_accuracy, train_probe

    if (args.data or "sst") != "sst":
        raise DataError(f"the probe needs a labelled corpus; the packaged one is 'sst', not {args.data!r}")
    trainer = model if args.reference is None else _reference(args.reference)
    probe = train_probe(trainer, tok, progress=not args.no_progress)
    texts, labels = load_labelled("sst", split=args.split)
    return 100 * probe_accuracy(model, tok, probe, texts, labels, progress=not args.no_progress)


def _cosine(args, model, tok) -> float:
    from lowbit.data import load_texts
    from lowbit.eval import embedding_cosine

    if args.reference is None:
        raise DataError("--metric cosine compares against a full-precision model: pass --reference MODEL")
    texts = load_texts(args.data or "sst", split=args.split)
    return embedding_cosine(model, _reference(args.reference), tok, texts, progress=not args.no_progress)


def _reference(path: str):
    from lowbit.data import load_model

    return load_model(path)[0]

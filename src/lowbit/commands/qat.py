"""`lowbit qat MODEL --scheme w4a4-int --data TRAIN --eval DEV --teacher MODEL -o OUT`: quantization-aware
training with distillation, optional pruning / layer reduction, then a packed checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from lowbit.errors import CheckpointError, DataError, ModelError


def register(sub) -> None:
    p = sub.add_parser("qat", help="quantization-aware training (+ distillation, pruning, layer reduction)",
                       description="Train a sequence classifier with fake-quantized linear layers and learned "
                                   "scales, distilling from a full-precision teacher, then save it with packed "
                                   "low-bit weights. Resumes from --state if it exists.")
    p.add_argument("model", help="local HF sequence-classification model directory (the student starts from it)")
    p.add_argument("--data", required=True, help="training data: a .jsonl of {\"text\", \"label\"} or sst[:calib|eval|all]")
    p.add_argument("--eval", default=None, help="evaluation data, same forms as --data")
    p.add_argument("--teacher", default=None, help="full-precision teacher model directory (default: MODEL)")
    p.add_argument("--no-kd", action="store_true", help="train on labels only, no distillation")
    p.add_argument("-o", "--output", required=True, help="output checkpoint directory")
    p.add_argument("--scheme", default="w4a4-int", help="preset name or .yaml scheme (default w4a4-int)")
    p.add_argument("--grad", default="lsq", help="scale gradient: lsq | mkq | minmax (default lsq)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--scale-lr", type=float, default=1e-3)
    p.add_argument("--schedule", default="joint",
                   help="joint | two-stage | layerwise (default joint; on W4A4 MiniLM, 300 steps, two-stage and joint "
                        "were within the noise of each other over two seeds, BENCHMARKS.md issue 5)")
    p.add_argument("--max-len", type=int, default=64, help="tokens per sentence (default 64)")
    p.add_argument("--prune-heads", type=float, default=0.0, help="share of attention heads removed per layer")
    p.add_argument("--prune-ffn", type=float, default=0.0, help="share of FFN neurons removed per layer")
    p.add_argument("--sparsity", type=float, default=0.0, help="unstructured magnitude sparsity per layer")
    p.add_argument("--two-four", action="store_true", help="2:4 magnitude sparsity")
    p.add_argument("--keep-every", type=int, default=1, help="keep every k-th transformer block (layer reduction)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state", default=None, help="training checkpoint file (default OUTPUT.qat-state.pt)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def load_labelled_source(source: str) -> tuple[list[str], list[int]]:
    """Sentences and integer labels from `sst[:split]` or a .jsonl file of {"text": str, "label": int}.

    Raises:
        DataError: a missing file, a bad line (named by number), or an unknown source.
    """
    from lowbit.data import load_labelled
    from lowbit.data.texts import read_jsonl_records

    if source == "sst" or source.startswith("sst:"):
        return load_labelled("sst", source.partition(":")[2] or "all")
    path = Path(source)
    if path.suffix != ".jsonl":
        raise DataError(f"labelled data {source!r}: give a .jsonl file of {{\"text\", \"label\"}} or sst[:split]")
    if not path.is_file():
        raise DataError(f"labelled data file {path} does not exist")
    records = read_jsonl_records(path, {"text": str, "label": int})
    texts, labels = [r["text"] for r in records], [r["label"] for r in records]
    if not texts:
        raise DataError(f"{path} holds no examples")
    return texts, labels


def _load_classifier(path: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    p = Path(path)
    if not (p / "config.json").is_file():
        raise ModelError(f"{path} is not a Hugging Face model directory (no config.json); lowbit qat trains a "
                         "sequence classifier saved with save_pretrained")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(p, attn_implementation="eager")
        tok = AutoTokenizer.from_pretrained(p)
    except Exception as e:  # transformers raises many types; all mean "cannot load"
        raise ModelError(f"cannot load a sequence classifier and tokenizer from {path}: {e}") from e
    return model, tok


def _compose(model, args) -> list[str]:
    from lowbit.qat import keep_every, prune_ffn, prune_heads, prune_magnitude

    notes = []
    if args.keep_every > 1:
        notes.append(f"layers kept (teacher indices): {keep_every(model, args.keep_every)}")
    if args.prune_heads > 0:
        prune_heads(model, args.prune_heads)
        notes.append(f"{args.prune_heads:.0%} of heads removed per layer (head-pruned checkpoints do not reload "
                     "with lowbit.load yet: the config still names the original head count)")
    if args.prune_ffn > 0:
        notes.append(f"FFN width {prune_ffn(model, args.prune_ffn)} after pruning")
    if args.two_four or args.sparsity > 0:
        sp = prune_magnitude(model, args.sparsity, "2:4" if args.two_four else "unstructured")
        notes.append(f"magnitude sparsity {sum(sp.values()) / max(1, len(sp)):.0%} over {len(sp)} layers")
    return notes


def run(args: argparse.Namespace) -> int:
    import copy

    from lowbit.device import resolve_device
    from lowbit.export import save
    from lowbit.qat import KDWeights, LabelledData, TrainConfig, accuracy, convert, predict, prepare, train
    from lowbit.qat.qlinear import fit_group_size
    from lowbit.qat.quantizers import _check_grad
    from lowbit.scheme import get_scheme

    scheme = get_scheme(args.scheme)  # validate cheap things before loading anything heavy
    _check_grad(args.grad)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, scale_lr=args.scale_lr,
                      schedule=args.schedule, kd=KDWeights(), seed=args.seed, progress=not args.no_progress)
    if Path(args.output).exists() and not args.force:
        raise CheckpointError(f"{args.output} exists; pass --force to overwrite it")
    train_src = load_labelled_source(args.data)
    eval_src = load_labelled_source(args.eval) if args.eval else None
    device = resolve_device(args.device)
    student, tok = _load_classifier(args.model)
    teacher = None
    if not args.no_kd:
        teacher = _load_classifier(args.teacher)[0] if args.teacher else copy.deepcopy(student)
    data = LabelledData.encode(tok, *train_src, args.max_len)
    dev = LabelledData.encode(tok, *eval_src, args.max_len) if eval_src else None
    notes = _compose(student, args)
    scheme, fits = fit_group_size(student, scheme)
    report = prepare(student, scheme, args.grad)
    for line in notes + fits:
        print(f"  {line}")
    print(report.summary())
    state = args.state or f"{args.output.rstrip('/')}.qat-state.pt"
    r = train(student, data, cfg, teacher=teacher, state_path=state, device=device)
    if r.resumed_from:
        print(f"resumed from step {r.resumed_from} ({state})")
    k = min(10, len(r.losses))
    print(f"trained {r.step} steps: loss {sum(r.losses[:k]) / k:.4f} (first {k}) -> "
          f"{sum(r.losses[-k:]) / k:.4f} (last {k})")
    fake = predict(student, dev, device=device) if dev else None
    convert(student)
    if dev is not None:
        conv = predict(student, dev, device=device)
        acc = float((conv.argmax(-1) == dev.labels).float().mean())
        print(f"eval accuracy {100 * acc:.2f}% (packed model; max |logit difference| from the fake-quant model "
              f"{float((conv - fake).abs().max()):.2e})")
        if teacher is not None:
            print(f"teacher accuracy {100 * accuracy(teacher, dev, device=device):.2f}%")
    save(student.cpu(), args.output, tok)
    print(f"saved {args.output}")
    return 0

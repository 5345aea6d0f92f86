"""`lowbit bench encoder MODEL --batch 1,8,32,128 --seq 128,384` (parser and runner; no torch at import)."""
from __future__ import annotations

import argparse
from pathlib import Path


def encoder_parser(sub) -> None:
    p = sub.add_parser("encoder", help="BERT-family encoder: HF FP16 eager, best FP16, lowbit W8A8/W4A8/W4A4",
                       description="Latency per forward (µs) of a BERT-family encoder for each batch x seq, "
                                   "same process: transformers FP16 eager, the HF model in one CUDA graph, lowbit's "
                                   "FP16 engine graph, and the quantized engines; speed-ups and a per-stage "
                                   "breakdown (GEMMs, attention, norms, quantize).")
    p.add_argument("model", help="bert-base | bert-large (random weights), a packaged name (minilm) or an HF dir")
    p.add_argument("--batch", default="1,8,32,128", help="comma list of batch sizes")
    p.add_argument("--seq", default="128,384", help="comma list of sequence lengths")
    p.add_argument("--schemes", default="w8a8-int8,w4a8-int,w4a4-int", help="comma list of lowbit presets")
    p.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    p.add_argument("--out", default="bench-out", help="directory for encoder.md / encoder.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from lowbit.bench import encoder
    from lowbit.commands.bench import _meta, _need_cuda

    _need_cuda()
    schemes = tuple(s for s in args.schemes.split(",") if s)
    rows = encoder.run_encoder(args.model, [int(b) for b in args.batch.split(",")],
                               [int(s) for s in args.seq.split(",")], schemes, stages=not args.no_stages)
    meta = _meta()
    md = f"{meta}\n\n" + encoder.to_markdown(rows, schemes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"encoder-{Path(args.model).name}.md").write_text(md)
    (out / f"encoder-{Path(args.model).name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(md)
    return 0

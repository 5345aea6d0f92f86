"""`lowbit inspect CKPT`: what a checkpoint holds and how small its linear weights are (measured)."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("inspect", help="show a checkpoint's scheme, layers and measured size",
                       description="Print a lowbit checkpoint's scheme, per-format layer counts and the measured "
                                   "bytes of its quantized linear weights against bf16.")
    p.add_argument("checkpoint", nargs="?", help="checkpoint directory written by `lowbit quantize`")
    p.add_argument("--presets", action="store_true", help="list the named presets instead")
    p.add_argument("--layers", action="store_true", help="list every quantized layer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    import sys

    console = Console(width=None if sys.stdout.isatty() else 160)  # pipes and logs get whole layer names
    if args.presets:
        return _presets(console)
    if not args.checkpoint:
        raise SystemExit("lowbit inspect: give a checkpoint directory or --presets")
    return _checkpoint(console, args.checkpoint, args.layers, Table)


def _presets(console) -> int:
    from rich.table import Table

    from lowbit.scheme import PRESETS

    t = Table(title="lowbit presets")
    for c in ("name", "weights", "activations"):
        t.add_column(c)
    for name, s in PRESETS.items():
        t.add_row(name, s.weights.describe(), s.activations.describe() if s.activations else "bf16 (weight-only)")
    console.print(t)
    return 0


def checkpoint_sizes(path) -> dict:
    """Measured bytes per quantized layer straight from the safetensors file (no model is built)."""
    from safetensors import safe_open

    from lowbit.export.native import WEIGHTS, read_quant_config

    _, qc = read_quant_config(path)
    rows, total_q, total_bf16 = [], 0, 0
    with safe_open(f"{path}/{WEIGHTS}", framework="pt") as f:
        keys = set(f.keys())
        for name, e in qc["modules"].items():
            nbytes = 0
            for part in ("qweight", "scale", "zero"):
                k = f"{name}.{part}"
                if k in keys:
                    t = f.get_slice(k)
                    nbytes += _numel(t.get_shape()) * _itemsize(t.get_dtype())
            bf16 = 2 * e["in_features"] * e["out_features"]
            rows.append((name, e, nbytes, bf16))
            total_q, total_bf16 = total_q + nbytes, total_bf16 + bf16
    return {"scheme": qc["scheme"], "layers": rows, "quantized_bytes": total_q, "bf16_bytes": total_bf16}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _itemsize(dtype: str) -> int:
    return {"U8": 1, "I8": 1, "BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8, "F64": 8}[dtype]


def _checkpoint(console, path: str, layers: bool, Table) -> int:
    import os

    from lowbit.scheme import Scheme

    info = checkpoint_sizes(path)
    scheme = Scheme.from_dict(info["scheme"])
    counts: dict[str, int] = {}
    for _, e, _, _ in info["layers"]:
        key = f"W {e['weights']['format']} | A {(e['activations'] or {}).get('format', 'none')}"
        counts[key] = counts.get(key, 0) + 1
    q, b = info["quantized_bytes"], info["bf16_bytes"]
    file_mb = os.path.getsize(f"{path}/model.safetensors") / 2**20
    console.print(f"[bold]{path}[/]  scheme [cyan]{scheme.name}[/]: W {scheme.weights.describe()}, "
                  f"A {scheme.activations.describe() if scheme.activations else 'none (weight-only)'}")
    for k, n in counts.items():
        console.print(f"  {n} layers  {k}")
    console.print(f"  linear weights: {q / 2**20:.2f} MiB quantized (codes + scales + zeros) vs "
                  f"{b / 2**20:.2f} MiB in bf16 = [bold]{q / b:.3f}x[/] ({8 * q / (b / 2):.2f} bits/weight)")
    console.print(f"  model.safetensors: {file_mb:.2f} MiB (embeddings, norms and heads included)")
    if layers:
        t = Table()
        for c in ("layer", "shape (N x K)", "weights", "activations", "bytes", "x bf16"):
            t.add_column(c)
        for name, e, nbytes, bf16 in info["layers"]:
            t.add_row(name, f"{e['out_features']} x {e['in_features']}", e["weights"]["format"],
                      (e["activations"] or {}).get("format", "-"), str(nbytes), f"{nbytes / bf16:.3f}")
        console.print(t)
    return 0

"""`lowbit bench layers|...`: GPU benchmarks (needs CUDA). Subcommands are registered from SUBCOMMANDS."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path


def _layers_parser(sub) -> None:
    from lowbit.bench.layers import BASELINES, OURS, PEERS, SHAPES, TOKENS

    p = sub.add_parser("layers", help="per-linear-layer latency: bf16 cuBLAS, cuBLAS FP8/INT8, lowbit, peers",
                       description="Time each method per (M, N, K) with CUDA-graph replay over rotating buffers "
                                   "and print µs, TFLOP/s, GB/s, % of roofline and speed-up vs bf16.")
    p.add_argument("--methods", default=",".join(BASELINES + OURS),
                   help=f"comma list; known: {', '.join(BASELINES + OURS + PEERS)}; 'peers' adds all peers")
    p.add_argument("--tokens", default=",".join(map(str, TOKENS)), help="comma list of M (tokens)")
    p.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="comma list of NxK")
    p.add_argument("--out", default="bench-out", help="directory for layers.csv and layers.md")
    p.set_defaults(func=run_layers)


def _e2e_parser(sub) -> None:
    p = sub.add_parser("e2e", help="Llama-2-7B-shaped decoder: batch-1 decode and 2048-token prefill",
                       description="Random-weight LlamaForCausalLM from a config, bf16 vs lowbit schemes, "
                                   "CUDA-graph replay.")
    p.add_argument("--schemes", default="w4a16,w4a8-int,w4a8-fp,w8a8-fp8")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default 32, as Llama-2-7B)")
    p.add_argument("--out", default="bench-out")
    p.set_defaults(func=run_e2e)


# (name, parser builder): `encoder` and others append here.
from lowbit.bench.encoder_cli import encoder_parser as _encoder_parser  # noqa: E402  (the encoder engine's CLI)
SUBCOMMANDS = [("layers", _layers_parser), ("e2e", _e2e_parser), ("encoder", _encoder_parser)]


def register(sub) -> None:
    p = sub.add_parser("bench", help="GPU benchmarks (layers, e2e)", description="GPU benchmarks; needs CUDA.")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for _, build in SUBCOMMANDS:
        build(bsub)


def _meta() -> dict:
    import datetime

    import torch

    import os

    commit = os.environ.get("LOWBIT_COMMIT", "")  # the device copy of the tree has no .git
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True).stdout.strip()
        except OSError:
            commit = ""
    return {"gpu": torch.cuda.get_device_name(), "commit": commit, "torch": torch.__version__,
            "date": datetime.date.today().isoformat()}


def _need_cuda() -> None:
    import torch

    from lowbit.errors import DeviceError

    if not torch.cuda.is_available():
        raise DeviceError("lowbit bench measures GPU kernels and this machine has no CUDA device; run it on an "
                          "NVIDIA GPU (see BENCHMARKS.md for recorded H100 results)")


def run_layers(args: argparse.Namespace) -> int:
    _need_cuda()
    from lowbit.bench import layers as L

    methods = [m for m in args.methods.split(",") if m]
    if "peers" in methods:
        methods = [m for m in methods if m != "peers"] + L.PEERS
    unknown = [m for m in methods if m not in L.BUILDERS]
    if unknown:
        from lowbit.errors import LowbitError
        raise LowbitError(f"unknown method(s) {unknown}; known: {', '.join(L.BUILDERS)}")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    tokens = [int(t) for t in args.tokens.split(",")]
    if "bf16" not in methods:
        methods = ["bf16"] + methods
    rows = L.run_layers(methods, shapes, tokens)
    meta = _meta()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "layers.csv").write_text(L.to_csv(rows, meta))
    md = f"{meta}\n" + L.to_markdown(rows)
    (out / "layers.md").write_text(md)
    print(md)
    return 0


def run_e2e(args: argparse.Namespace) -> int:
    _need_cuda()
    from lowbit.bench import e2e

    rows = e2e.run_e2e(tuple(s for s in args.schemes.split(",") if s), args.layers)
    md = f"{_meta()}\n" + e2e.to_markdown(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.md").write_text(md)
    print(md)
    return 0

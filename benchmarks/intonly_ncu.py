"""Device script: one integer-only forward on the kernel backend, for Nsight Compute (issue 7).

    ncu --clock-control none -k regex:'_attention|_layernorm|_linear_rq' --launch-count 8 \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \\
        python3 benchmarks/intonly_ncu.py --model bert-base --batch 32 --seq 384

The model is benchmarks/intonly_gpu.py's (random weights from the config, calibrated on the CPU). The forward runs
once to compile the kernels and once more; with ``--launch-skip`` ncu can start at the second forward.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intonly_gpu import _int_graph, build  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bert-base", choices=("bert-base", "vit-b16"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=384)
    p.add_argument("--norm", default="deferred", choices=("deferred", "probs"))
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("intonly_ncu: needs a CUDA device")
    _, im, inputs = build(a.model, 64, deferred_norm=a.norm == "deferred")
    x = {k: v.cuda() for k, v in inputs(a.batch, a.seq).items()}
    im = im.cuda()
    A = im._backend("int")
    with torch.no_grad():
        for _ in range(2):
            _int_graph(im, A, x)
            torch.cuda.synchronize()
    print("intonly_ncu: two forwards done", flush=True)


if __name__ == "__main__":
    main()

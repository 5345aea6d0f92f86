"""Timing one callable the way the benchmarks do: CUDA-graph replay over rotating copies, median of replays."""
from __future__ import annotations

import statistics
from typing import Callable

import torch

L2_BYTES = 50 * 2**20  # H100 SXM; rotating sets together exceed twice this


def copies_for(bytes_per_copy: int, max_copies: int = 32) -> int:
    """How many independent input/weight sets make one pass through them larger than 2x L2."""
    return max(2, min(max_copies, -(-2 * L2_BYTES // max(bytes_per_copy, 1))))


def time_calls(calls: list[Callable[[], object]], graph: bool = True, calls_per_replay: int = 64,
               replays: int = 20, warmup: int = 3) -> tuple[float, bool]:
    """Median microseconds per call of `calls` run round-robin (each call has its own buffers).

    Returns (µs, captured): captured is False where CUDA-graph capture failed and eager launches were timed.
    """
    n = max(len(calls), calls_per_replay - calls_per_replay % len(calls))
    seq = [calls[i % len(calls)] for i in range(n)]
    for _ in range(warmup):
        for c in seq:
            c()
    torch.cuda.synchronize()
    run = lambda: [c() for c in seq]  # noqa: E731
    captured = False
    if graph:
        try:
            g = torch.cuda.CUDAGraph()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                run()
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(g):
                run()
            run = g.replay
            captured = True
        except Exception:  # a peer whose launch path syncs or allocates: time it eagerly, and say so
            torch.cuda.synchronize()
            captured = False
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / n)
    return statistics.median(times), captured

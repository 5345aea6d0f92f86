"""Per-layer, per-format costs for the bit-allocation ILP: size (bytes as stored), BOPs and latency.

Latency comes from a measured table (the CSV `lowbit bench layers` writes: method, M, N, K, us) when one is
given and covers the layer; otherwise from the analytic roofline of `lowbit.bench.layers.roofline_us` (H100
ceilings measured in shared/GPU.md), which is what a machine without a GPU has.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from lowbit.errors import DataError
from lowbit.quant.qtensor import empty_storage
from lowbit.scheme import Scheme

COSTS = ("size", "bops", "latency")


@dataclass(frozen=True)
class Layer:
    name: str
    out_features: int
    in_features: int


def size_bytes(layer: Layer, scheme: Scheme) -> float:
    """Bytes of codes + scales + zeros exactly as a lowbit checkpoint stores the weight."""
    st = empty_storage(scheme.weights, layer.out_features, layer.in_features, layer.name)
    return float(sum(t.numel() * t.element_size() for t in st.values()))


def bops(layer: Layer, scheme: Scheme, tokens: int = 1) -> float:
    """Bit operations per `tokens` tokens: MACs × weight bits × activation bits (16 when activations stay
    in bf16), HAWQ-V3's measure."""
    a_bits = scheme.activations.bits if scheme.activations is not None else 16
    return float(tokens * layer.out_features * layer.in_features * scheme.weights.bits * a_bits)


def load_latency_table(path: str | Path) -> dict[tuple[str, int, int, int], float]:
    """{(method, M, N, K): µs} from a `lowbit bench layers` CSV.

    Raises:
        DataError: missing file or missing columns.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"latency table {p} does not exist; write one with `lowbit bench layers --csv {p}`")
    with p.open() as f:
        rows = list(csv.DictReader(f))
    need = {"method", "M", "N", "K", "us"}
    if not rows or not need <= set(rows[0]):
        raise DataError(f"latency table {p} needs columns {sorted(need)}; got {sorted(rows[0]) if rows else 'none'}")
    return {(r["method"], int(r["M"]), int(r["N"]), int(r["K"])): float(r["us"]) for r in rows if r["us"]}


def latency_us(layer: Layer, scheme: Scheme, tokens: int, table: dict | None = None) -> float:
    key = (scheme.name, tokens, layer.out_features, layer.in_features)
    if table and key in table:
        return table[key]
    from lowbit.bench.layers import roofline_us

    return roofline_us(scheme.name, tokens, layer.out_features, layer.in_features)


def cost_table(layers: list[Layer], schemes: list[Scheme], tokens: int = 4096, table: dict | None = None
               ) -> dict[str, torch.Tensor]:
    """{cost name: (L, F) float64 tensor} for every layer and candidate scheme."""
    return {
        "size": torch.tensor([[size_bytes(l, s) for s in schemes] for l in layers], dtype=torch.float64),
        "bops": torch.tensor([[bops(l, s, tokens) for s in schemes] for l in layers], dtype=torch.float64),
        "latency": torch.tensor([[latency_us(l, s, tokens, table) for s in schemes] for l in layers],
                                dtype=torch.float64),
    }

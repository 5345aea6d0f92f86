"""The Pareto frontier of bit allocations (HAWQ-V3 §4, Fig. 1): ILP plans along one budget next to the uniform
plans (every layer in one candidate format) and, optionally, random plans of equal cost, with a measured
metric per plan; as a Markdown table and a matplotlib plot (cost on x, metric on y).

Example:
    >>> pts = frontier(res.omega, res.costs, "size", [0.25, 0.5, 0.75], [s.name for s in res.schemes])
    >>> pts = [p.with_metrics(measure(p.choice)) for p in pts]   # measure: choice -> {"cosine": ...}
    >>> print(frontier_table(pts, ["cosine"])); plot_frontier(pts, "size", "cosine", "runs/pareto.png")
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from lowbit.errors import LowbitError
from lowbit.mixed.ilp import PlanError, budget_limit, evaluate, random_plan, solve

COST_LABELS = {"size": "weight bytes (MB)", "bops": "BOPs (G)", "latency": "latency (µs, model)"}
COST_UNITS = {"size": 1e6, "bops": 1e9, "latency": 1.0}


@dataclass(frozen=True)
class FrontierPoint:
    """One plan: its kind ("ilp", "uniform", "random"), the budget ratio it was made for (None for uniform),
    its costs, its Σ Ω and the metrics measured on it."""

    kind: str
    label: str
    ratio: float | None
    choice: tuple[int, ...]
    costs: dict[str, float]
    objective: float
    metrics: dict[str, float] = field(default_factory=dict)

    def with_metrics(self, metrics: dict[str, float]) -> "FrontierPoint":
        return replace(self, metrics={**self.metrics, **metrics})


def parse_ratios(text: str) -> list[float]:
    """"0.25,0.5" -> [0.25, 0.5].

    Raises:
        PlanError: an empty list, a non-number or a ratio outside [0, 1].
    """
    try:
        ratios = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        ratios = []
    if not ratios or any(not 0 <= r <= 1 for r in ratios):
        raise PlanError(f"--pareto {text!r}: expected comma-separated budget ratios in [0, 1], e.g. 0.25,0.5,0.75")
    return sorted(set(ratios))


def frontier(omega: torch.Tensor, costs: dict[str, torch.Tensor], cost: str, ratios: Sequence[float],
             format_names: Sequence[str], ties=(), random_seeds: int = 0) -> list[FrontierPoint]:
    """Uniform plans, then for each ratio the ILP optimum under ``cost <= budget_limit(cost, ratio)`` and
    ``random_seeds`` random plans within the same limit.

    Raises:
        PlanError: an unknown cost, or format names that do not match omega's columns.
    """
    if cost not in costs:
        raise PlanError(f"frontier along unknown cost {cost!r}; costs: {', '.join(costs)}")
    n, f = omega.shape
    if len(format_names) != f:
        raise PlanError(f"{len(format_names)} format names for {f} candidate formats")
    pts = []
    for j, name in enumerate(format_names):
        s = evaluate((j,) * n, omega, costs)
        pts.append(FrontierPoint("uniform", f"uniform {name}", None, s.choice, s.costs, s.objective))
    for r in ratios:
        lim = budget_limit(costs[cost], r)
        s = solve(omega, costs, {cost: lim}, list(ties))
        pts.append(FrontierPoint("ilp", f"ILP {cost}≤{r:g}", r, s.choice, s.costs, s.objective))
        for seed in range(random_seeds):
            ev = evaluate(random_plan(costs, {cost: lim}, ties, seed=seed), omega, costs)
            pts.append(FrontierPoint("random", f"random {cost}≤{r:g} seed {seed}", r, ev.choice, ev.costs,
                                     ev.objective))
    return pts


def frontier_table(points: Sequence[FrontierPoint], metrics: Sequence[str] = (),
                   costs: Sequence[str] = ("size", "bops")) -> str:
    """Markdown: plan, ratio, costs (MB, GBOPs, µs), Σ Ω, share of layers per format, metrics."""
    head = ["plan", "budget ratio"] + [COST_LABELS[c] for c in costs] + ["Σ Ω", "layers per format"] + list(metrics)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n_formats = 1 + max(max(p.choice) for p in points)
    for p in points:
        counts = torch.bincount(torch.tensor(p.choice), minlength=n_formats).tolist()
        row = [p.label, "—" if p.ratio is None else f"{p.ratio:g}"]
        row += [f"{p.costs[c] / COST_UNITS[c]:.4g}" for c in costs]
        row += [f"{p.objective:.4g}", "/".join(str(c) for c in counts)]
        row += [f"{p.metrics[m]:.5g}" if m in p.metrics else "—" for m in metrics]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_frontier(points: Sequence[FrontierPoint], cost: str, metric: str, path: str | Path,
                  title: str = "", higher_is_better: bool = True) -> Path:
    """Save a PNG (or any matplotlib format, by suffix): ILP plans as a line, uniform and random plans as
    markers; x = the cost, y = the metric.

    Raises:
        LowbitError: matplotlib is not installed, or a point lacks the metric.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only; no display on our machines
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise LowbitError("plotting the frontier needs matplotlib: pip install 'lowbit[bench]'") from e
    missing = [p.label for p in points if metric not in p.metrics]
    if missing:
        raise LowbitError(f"plot_frontier: no {metric!r} measured for {missing[:3]}")
    unit = COST_UNITS[cost]
    fig, ax = plt.subplots(figsize=(6, 4))
    ilp = sorted((p for p in points if p.kind == "ilp"), key=lambda p: p.costs[cost])
    ax.plot([p.costs[cost] / unit for p in ilp], [p.metrics[metric] for p in ilp], "o-", label="ILP (Hessian-aware)")
    rnd = [p for p in points if p.kind == "random"]
    if rnd:
        ax.plot([p.costs[cost] / unit for p in rnd], [p.metrics[metric] for p in rnd], "x", color="gray",
                label="random plan, same budget")
    for p in (p for p in points if p.kind == "uniform"):
        ax.plot(p.costs[cost] / unit, p.metrics[metric], "s", markersize=8, label=p.label)
    ax.set_xlabel(COST_LABELS[cost])
    ax.set_ylabel(metric + ("" if higher_is_better else " (lower is better)"))
    ax.set_title(title or f"{metric} vs {cost}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

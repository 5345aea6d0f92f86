"""Bit allocation as an integer linear program (HAWQ-V3 §3.4, PAPERS.md §6), solved by scipy's HiGHS MILP.

Variables x[i, f] ∈ {0, 1}: layer i takes format f. Constraints: one format per layer; for each budget,
Σ cost[i, f] x[i, f] ≤ limit; tie groups (layers that must share a format) x[a, f] = x[b, f].
Objective: min Σ Ω[i, f] x[i, f].

A budget ratio r maps to limit = C_low + r (C_high − C_low), where C_low / C_high are the costs of the
cheapest / dearest uniform assignment (HAWQ-V3's L4 + ratio (L8 − L4)).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from lowbit.errors import LowbitError


class PlanError(LowbitError, ValueError):
    """An infeasible or malformed bit-allocation problem."""


@dataclass(frozen=True)
class Solution:
    choice: tuple[int, ...]  # format index per layer
    objective: float
    costs: dict[str, float]


def budget_limit(cost: torch.Tensor, ratio: float) -> float:
    """C_low + ratio (C_high − C_low) over per-layer min / max costs."""
    if not 0.0 <= ratio <= 1.0:
        raise PlanError(f"budget ratios are in [0, 1] (0 = cheapest format everywhere, 1 = dearest); got {ratio}")
    lo, hi = float(cost.min(1).values.sum()), float(cost.max(1).values.sum())
    return lo + ratio * (hi - lo)


def _check(omega: torch.Tensor, costs: dict[str, torch.Tensor], budgets: dict[str, float], ties) -> None:
    if omega.ndim != 2 or omega.shape[1] < 1:
        raise PlanError(f"omega must be (layers, formats), got {tuple(omega.shape)}")
    for k in budgets:
        if k not in costs:
            raise PlanError(f"budget on unknown cost {k!r}; costs: {', '.join(costs)}")
        if costs[k].shape != omega.shape:
            raise PlanError(f"cost {k!r} has shape {tuple(costs[k].shape)}, omega {tuple(omega.shape)}")
    for g in ties:
        if any(not 0 <= i < omega.shape[0] for i in g):
            raise PlanError(f"tie group {list(g)} names a layer outside 0..{omega.shape[0] - 1}")


def solve(omega: torch.Tensor, costs: dict[str, torch.Tensor], budgets: dict[str, float],
          ties: list[list[int]] = ()) -> Solution:
    """Minimise Σ Ω subject to Σ cost ≤ limit per budget (absolute limits, see :func:`budget_limit`).

    Raises:
        PlanError: malformed inputs, or no assignment meets the budgets (the message gives the cheapest).
    """
    _check(omega, costs, budgets, ties)
    n, f = omega.shape
    c = omega.double().numpy().reshape(-1)
    rows, lo, hi = [], [], []
    for i in range(n):  # one format per layer
        r = np.zeros(n * f)
        r[i * f:(i + 1) * f] = 1
        rows.append(r), lo.append(1), hi.append(1)
    for k, limit in budgets.items():
        rows.append(costs[k].double().numpy().reshape(-1)), lo.append(-np.inf), hi.append(limit)
    for g in ties:
        for a, b in zip(g, g[1:]):
            for j in range(f):
                r = np.zeros(n * f)
                r[a * f + j], r[b * f + j] = 1, -1
                rows.append(r), lo.append(0), hi.append(0)
    res = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(n * f),
               bounds=Bounds(0, 1))
    if res.status != 0 or res.x is None:
        cheapest = {k: float(costs[k].min(1).values.sum()) for k in budgets}
        raise PlanError(f"no format assignment meets the budgets {budgets} (solver: {res.message.strip()}); "
                        f"the cheapest assignment costs {cheapest}")
    choice = tuple(int(j) for j in np.round(res.x).reshape(n, f).argmax(1))
    return evaluate(choice, omega, costs)


def evaluate(choice, omega: torch.Tensor, costs: dict[str, torch.Tensor]) -> Solution:
    idx = torch.arange(len(choice))
    ch = torch.as_tensor(choice)
    return Solution(tuple(choice), float(omega[idx, ch].sum()),
                    {k: float(v[idx, ch].sum()) for k, v in costs.items()})


def brute_force(omega: torch.Tensor, costs: dict[str, torch.Tensor], budgets: dict[str, float],
                ties: list[list[int]] = ()) -> Solution | None:
    """Exhaustive search (tiny problems only; the test oracle for :func:`solve`)."""
    n, f = omega.shape
    best = None
    for choice in itertools.product(range(f), repeat=n):
        if any(len({choice[i] for i in g}) > 1 for g in ties):
            continue
        s = evaluate(choice, omega, costs)
        if all(s.costs[k] <= lim + 1e-9 for k, lim in budgets.items()) and (best is None or s.objective < best.objective):
            best = s
    return best


def random_plan(costs: dict[str, torch.Tensor], budgets: dict[str, float], ties=(), seed: int = 0,
                tries: int = 20000) -> tuple[int, ...]:
    """A random assignment within the budgets, as close to them as sampling finds (the baseline a plan
    must beat at equal budget): the feasible sample with the highest budget use among `tries`."""
    n, f = next(iter(costs.values())).shape
    gen = np.random.default_rng(seed)
    # vary the share of each format per sample so that samples reach the whole budget range
    mix = gen.dirichlet(np.ones(f), size=tries)  # (S, f)
    u = gen.random((tries, n))[..., None]
    choice = (u > np.cumsum(mix, 1)[:, None, :]).sum(-1).clip(max=f - 1)  # (S, n)
    for g in ties:
        choice[:, list(g)] = choice[:, [g[0]]]
    slack = np.full(tries, np.inf)
    for k, lim in budgets.items():
        c = costs[k].double().numpy()
        slack = np.minimum(slack, lim - c[np.arange(n), choice].sum(1))
    ok = np.flatnonzero(slack >= 0)
    if not len(ok):
        raise PlanError(f"no random assignment met the budgets {budgets} in {tries} samples")
    return tuple(int(c) for c in choice[ok[np.argmin(slack[ok])]])

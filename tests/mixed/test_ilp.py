import pytest
import torch

from lowbit.mixed.frontier import frontier
from lowbit.mixed.ilp import PlanError, brute_force, budget_limit, random_plan, solve


def _instance(seed, n=6, f=3):
    g = torch.Generator().manual_seed(seed)
    omega = torch.rand(n, f, generator=g, dtype=torch.float64)
    size = torch.rand(n, f, generator=g, dtype=torch.float64) * 10
    lat = torch.rand(n, f, generator=g, dtype=torch.float64)
    return omega, {"size": size, "latency": lat}


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_ilp_matches_brute_force(seed, ratio):
    omega, costs = _instance(seed)
    budgets = {"size": budget_limit(costs["size"], ratio), "latency": budget_limit(costs["latency"], 0.7)}
    ties = [[0, 3]] if seed % 2 else []
    want = brute_force(omega, costs, budgets, ties)
    if want is None:
        with pytest.raises(PlanError, match="no format assignment"):
            solve(omega, costs, budgets, ties)
        return
    got = solve(omega, costs, budgets, ties)
    assert got.objective == pytest.approx(want.objective, abs=1e-9)
    assert all(got.costs[k] <= lim + 1e-6 for k, lim in budgets.items())
    if ties:
        assert got.choice[0] == got.choice[3]


def test_budget_limit_and_pareto_are_monotone():
    omega, costs = _instance(0)
    assert budget_limit(costs["size"], 0) == pytest.approx(float(costs["size"].min(1).values.sum()))
    rows = [p for p in frontier(omega, costs, "size", (0, .25, .5, .75, 1), [str(j) for j in range(omega.shape[1])])
            if p.kind == "ilp"]
    objs = [r.objective for r in rows]
    assert objs == sorted(objs, reverse=True) and rows[-1].objective == pytest.approx(float(omega.min(1).values.sum()))


def test_random_plan_meets_budget():
    omega, costs = _instance(1, n=10, f=2)
    lim = budget_limit(costs["size"], 0.5)
    ch = random_plan(costs, {"size": lim}, seed=0)
    assert float(costs["size"][torch.arange(10), torch.tensor(ch)].sum()) <= lim


def test_errors():
    omega, costs = _instance(2)
    with pytest.raises(PlanError, match=r"in \[0, 1\]"):
        budget_limit(costs["size"], 1.5)
    with pytest.raises(PlanError, match="unknown cost"):
        solve(omega, costs, {"bops": 1.0})
    with pytest.raises(PlanError, match="shape"):
        solve(omega, {"size": costs["size"][:2]}, {"size": 1.0})
    with pytest.raises(PlanError, match="tie group"):
        solve(omega, costs, {"size": 100.0}, [[0, 99]])
    with pytest.raises(PlanError, match="omega must be"):
        solve(omega[0], costs, {})
    with pytest.raises(PlanError, match="no random assignment"):
        random_plan(costs, {"size": -1.0}, tries=50)

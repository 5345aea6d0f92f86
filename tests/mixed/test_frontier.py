import pytest
import torch

from lowbit.errors import LowbitError
from lowbit.mixed.frontier import frontier, frontier_table, parse_ratios, plot_frontier
from lowbit.mixed.ilp import PlanError, brute_force, budget_limit
from tiny_models import tiny_bert


def problem():
    g = torch.Generator().manual_seed(1)
    omega = torch.rand(6, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.1], dtype=torch.float64)
    size = torch.tensor([[1.0, 2.0]] * 6, dtype=torch.float64) * torch.arange(1, 7, dtype=torch.float64)[:, None]
    return omega, {"size": size, "bops": size * 3}


def test_frontier_points_are_ilp_optima_and_monotone():
    omega, costs = problem()
    pts = frontier(omega, costs, "size", [0.0, 0.3, 0.6, 1.0], ["w4", "w8"], random_seeds=2)
    uni = [p for p in pts if p.kind == "uniform"]
    assert [p.choice for p in uni] == [(0,) * 6, (1,) * 6] and uni[0].costs["size"] == 21 and uni[1].costs["size"] == 42
    ilp = [p for p in pts if p.kind == "ilp"]
    for p in ilp:  # each ILP point is the exhaustive optimum within its budget
        best = brute_force(omega, costs, {"size": budget_limit(costs["size"], p.ratio)})
        assert p.objective == pytest.approx(best.objective)
    objs = [p.objective for p in ilp]
    assert objs == sorted(objs, reverse=True)  # more budget never costs accuracy (Σ Ω)
    assert ilp[0].objective == uni[0].objective and ilp[-1].objective == uni[1].objective
    rnd = [p for p in pts if p.kind == "random"]
    assert len(rnd) == 8
    for p in rnd:  # random plans respect the same budget and are no better than the ILP at it
        lim = budget_limit(costs["size"], p.ratio)
        ilp_at = next(q for q in ilp if q.ratio == p.ratio)
        assert p.costs["size"] <= lim + 1e-9 and p.objective >= ilp_at.objective - 1e-12


def test_table_and_plot(tmp_path):
    omega, costs = problem()
    pts = frontier(omega, costs, "size", [0.5], ["w4", "w8"])
    pts = [p.with_metrics({"cosine": 1 - p.objective}) for p in pts]
    text = frontier_table(pts, ["cosine"])
    lines = text.splitlines()
    assert lines[0].startswith("| plan | budget ratio | weight bytes (MB) | BOPs (G) | Σ Ω")
    assert len(lines) == 2 + 3 and "| uniform w4 | — | 2.1e-05 |" in text and "6/0" in text
    out = plot_frontier(pts, "size", "cosine", tmp_path / "sub" / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(LowbitError, match="no 'probe'"):
        plot_frontier(pts, "size", "probe", tmp_path / "g.png")


def test_frontier_errors():
    omega, costs = problem()
    with pytest.raises(PlanError, match="unknown cost"):
        frontier(omega, costs, "latency", [0.5], ["w4", "w8"])
    with pytest.raises(PlanError, match="format names"):
        frontier(omega, costs, "size", [0.5], ["w4"])
    for bad in ["", "a,b", "0.5,1.5"]:
        with pytest.raises(PlanError, match="budget ratios"):
            parse_ratios(bad)
    assert parse_ratios("0.5, 0.25,0.5") == [0.25, 0.5]


def test_cli_frontier_with_measured_loss_and_plot(tmp_path, capsys):
    from lowbit.cli import main
    tiny_bert().save_pretrained(tmp_path / "m")
    plot = tmp_path / "runs" / "pareto.png"
    rc = main(["mixed", str(tmp_path / "m"), "--formats", "w4a16,w8a8-int8", "--budget", "size=0.5", "--calib",
               "random", "--n-samples", "2", "--seq-len", "8", "--probes", "2", "--pareto", "0.3,0.6",
               "--plot", str(plot)])
    out = capsys.readouterr().out
    assert rc == 0 and plot.is_file()
    rows = [l for l in out.splitlines() if l.startswith("| uniform") or l.startswith("| ILP")]
    assert len(rows) == 4
    loss = {r.split("|")[1].strip(): float(r.split("|")[-2]) for r in rows}
    assert loss["uniform w4a16"] > loss["uniform w8a8-int8"] > 0
    assert main(["mixed", str(tmp_path / "m"), "--formats", "w4a16,w8a8-int8", "--budget", "size=0.5",
                 "--pareto", "2"]) == 2
    assert "budget ratios" in capsys.readouterr().err

import copy

import pytest
import torch

from lowbit.api import quantize
from lowbit.commands.mixed import parse_budgets
from lowbit.export import load, save
from lowbit.mixed.costs import Layer, bops, cost_table, load_latency_table, size_bytes
from lowbit.mixed.ilp import PlanError
from lowbit.mixed.plan import plan_mixed, qkv_ties
from lowbit.errors import DataError
from lowbit.scheme import get_scheme
from tiny_models import tiny_bert


def test_costs():
    layer = Layer("x", 256, 128)
    w4, w8 = get_scheme("w4a16"), get_scheme("w8a8-int8")
    assert size_bytes(layer, w4) == 256 * 64 + 256 * 1 * 2  # packed nibbles + one bf16 scale per group
    assert size_bytes(layer, w8) == 256 * 128 + 256 * 4
    assert bops(layer, w4) == 256 * 128 * 4 * 16 and bops(layer, w8) == 256 * 128 * 64
    t = cost_table([layer], [w4, w8], tokens=16, table={("w4a16", 16, 256, 128): 3.5})
    assert float(t["latency"][0, 0]) == 3.5 and float(t["latency"][0, 1]) > 0


def test_latency_table_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("gpu,method,M,N,K,us\nh100,w4a16,16,256,128,2.5\nh100,bf16,16,256,128,\n")
    assert load_latency_table(p) == {("w4a16", 16, 256, 128): 2.5}
    with pytest.raises(DataError, match="does not exist"):
        load_latency_table(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="needs columns"):
        load_latency_table(tmp_path / "bad.csv")


def test_plan_is_applied_and_saved_in_the_checkpoint(tmp_path):
    m = tiny_bert()
    ids = torch.randint(0, 120, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(input_ids=ids).last_hidden_state
    loss = lambda mod: (mod(input_ids=ids).last_hidden_state - ref).pow(2).mean()
    res = plan_mixed(m, ["w4a16", get_scheme("w8a8-int8")], {"size": 0.5}, loss, n_probes=2, tie_qkv=True)
    assert res.scheme.name.startswith("mixed[w4a16|w8a8-int8; size=0.5")  # Scheme objects as well as names
    assert res.solution.costs["size"] <= res.limits["size"]
    assert 0 < sum(res.solution.choice) < len(res.names)  # a real mix
    for g in res.ties:
        assert len({res.solution.choice[i] for i in g}) == 1
    q = quantize(copy.deepcopy(m), res.scheme, progress=False)
    chosen = {p.name: p.weight_spec.bits for p in q.lowbit_report.quantized}
    assert chosen == {n: (4, 8)[c] for n, c in zip(res.names, res.solution.choice)}
    save(q, tmp_path / "ck")
    back, _ = load(tmp_path / "ck", with_tokenizer=False)
    assert {n: mod.weight_spec.bits for n, mod in back.named_modules() if hasattr(mod, "weight_spec")} == chosen
    assert len(back.lowbit_scheme.overrides) == len(res.names)
    with pytest.raises(PlanError, match="at least two"):
        plan_mixed(m, ["w4a16"], {"size": 0.5}, loss)
    with pytest.raises(PlanError, match="unknown budget"):
        plan_mixed(m, ["w4a16", "w8a8-int8"], {"speed": 0.5}, loss)


def test_qkv_ties():
    names = ["l.0.attention.self.query", "l.0.attention.self.key", "l.0.attention.self.value", "l.0.output.dense"]
    assert qkv_ties(names) == [[0, 1, 2]]


def test_parse_budgets():
    assert parse_budgets(["size=0.6", "latency=0.7|bops=0.5"]) == {"size": 0.6, "latency": 0.7, "bops": 0.5}
    for bad in ["size", "speed=0.5", "size=1.5", "size=abc"]:
        with pytest.raises(PlanError, match="COST=RATIO"):
            parse_budgets([bad])


def test_cli_rejects_bad_budget_before_loading(capsys):
    from lowbit.cli import main
    assert main(["mixed", "minilm", "--formats", "w4a16,w8a8-int8", "--budget", "size=2"]) == 2
    assert "COST=RATIO" in capsys.readouterr().err

"""`lowbit mixed MODEL --formats A,B --budget size=0.6 --calib DATA [-o OUT]`: HAWQ-V3 mixed precision.

Hessian traces (Hutchinson) of the loss between the model's output and its own full-precision output on the
calibration data, Ω per layer and format, the ILP under the budgets, a table of the plan and the Pareto
frontier along the first budget; with -o, the model quantized with the plan (a per-module override scheme
saved in the checkpoint).
"""
from __future__ import annotations

import argparse

from lowbit.errors import LowbitError


def register(sub) -> None:
    p = sub.add_parser("mixed", help="Hessian-aware mixed precision by integer linear programming (HAWQ-V3)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("model", help="local HF model directory, or a packaged model name (minilm, smollm2)")
    p.add_argument("--formats", required=True, help="comma-separated candidate presets, e.g. w4a8-fp,w8a8-fp8")
    p.add_argument("--budget", required=True, action="append",
                   help="COST=RATIO with COST in size|bops|latency and RATIO in [0,1] (0 = cheapest format "
                        "everywhere, 1 = dearest); repeat for several budgets")
    p.add_argument("--calib", default="wiki", help="calibration data (default wiki) or 'random'")
    p.add_argument("--n-samples", type=int, default=8, help="calibration sequences (default 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--probes", type=int, default=32, help="Hutchinson probes (default 32)")
    p.add_argument("--tokens", type=int, default=4096, help="GEMM M for BOPs / latency costs (default 4096)")
    p.add_argument("--latency-table", default=None, help="CSV from `lowbit bench layers` (else analytic roofline)")
    p.add_argument("--tie-qkv", action="store_true", help="q/k/v of a block share one format")
    p.add_argument("--pareto", default="0,0.25,0.5,0.75,1",
                   help="budget ratios of the Pareto frontier along the first budget (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--measure", action="store_true",
                   help="quantize every frontier plan (and the uniform ones) and measure its loss on the "
                        "calibration data, the distance to the full-precision output")
    p.add_argument("--plot", default=None, help="save the frontier as a plot here (PNG; implies --measure)")
    p.add_argument("-o", "--output", default=None, help="save the model quantized with the plan here")
    p.add_argument("--force", action="store_true", help="overwrite an existing output directory")
    p.set_defaults(func=run)


def parse_budgets(items: list[str]) -> dict[str, float]:
    """["size=0.6", "latency=0.7"] -> {"size": 0.6, "latency": 0.7}.

    Raises:
        PlanError: not COST=RATIO, an unknown cost, or a ratio outside [0, 1].
    """
    from lowbit.mixed.costs import COSTS
    from lowbit.mixed.ilp import PlanError

    out = {}
    for item in items:
        for part in item.split("|") if "|" in item else [item]:
            key, sep, val = part.strip().partition("=")
            try:
                ratio = float(val)
            except ValueError:
                ratio = None
            if not sep or key not in COSTS or ratio is None or not 0 <= ratio <= 1:
                raise PlanError(f"--budget {part!r}: expected COST=RATIO with COST in {'|'.join(COSTS)} and "
                                "RATIO in [0, 1], e.g. size=0.6")
            out[key] = ratio
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from lowbit.data import calibration_batches, load_model, load_texts, random_token_batches
    from lowbit.errors import CheckpointError
    from lowbit.mixed.costs import load_latency_table
    from lowbit.mixed.plan import plan_mixed
    from lowbit.mixed.frontier import parse_ratios
    from lowbit.scheme import get_scheme

    budgets = parse_budgets(args.budget)
    ratios = parse_ratios(args.pareto)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    for f in formats:
        get_scheme(f)  # validate before loading the model
    if args.output and Path(args.output).exists() and not args.force:
        raise CheckpointError(f"{args.output} exists; pass --force to overwrite it")
    table = load_latency_table(args.latency_table) if args.latency_table else None
    model, tok = load_model(args.model)
    model.eval()
    if args.calib == "random":
        batches = random_token_batches(model.config.vocab_size, args.n_samples, args.seq_len, seed=0)
    else:
        batches = calibration_batches(load_texts(args.calib), tok, n_samples=args.n_samples, seq_len=args.seq_len)
    with torch.no_grad():
        refs = [_output(model, b) for b in batches]
    state = {"i": 0}

    def loss_fn(m):  # distance to the model's own full-precision output: H = 2 JᵀJ at the reference
        i = state["i"] % len(batches)
        state["i"] += 1
        return (_output(m, batches[i]) - refs[i]).pow(2).mean()

    res = plan_mixed(model, formats, budgets, loss_fn, args.probes, args.tokens, table, args.tie_qkv)
    print(res.table())
    print(f"\nplan: objective {res.solution.objective:.4g}; " +
          "; ".join(f"{k} {v:.4g} (limit {res.limits.get(k, float('nan')):.4g})" for k, v in res.solution.costs.items()))
    first = next(iter(budgets))
    _frontier(res, first, ratios, args.measure or bool(args.plot), args.plot, batches, model, loss_fn)
    if args.output:
        from lowbit.api import quantize
        from lowbit.export import save

        quantize(model, res.scheme, batches if any(s.activations and not s.activations.dynamic
                                                   for s in res.schemes) else None)
        print(f"saved {save(model, args.output, tok)}")
    return 0


def _frontier(res, cost: str, ratios, measure: bool, plot, batches, model, loss_fn) -> None:
    """Print (and plot) the ILP frontier along `cost` next to the uniform plans."""
    import copy

    import torch

    from lowbit.api import quantize
    from lowbit.mixed.frontier import frontier, frontier_table, plot_frontier
    from lowbit.mixed.plan import to_scheme

    pts = frontier(res.omega, res.costs, cost, ratios, [s.name for s in res.schemes], res.ties)
    metrics = []
    if measure:
        static = any(s.activations and not s.activations.dynamic for s in res.schemes)
        for i, p in enumerate(pts):
            q = quantize(copy.deepcopy(model), to_scheme(res.names, res.schemes, p.choice),
                         batches if static else None, progress=False)
            with torch.no_grad():
                pts[i] = p.with_metrics({"loss": sum(float(loss_fn(q)) for _ in batches) / len(batches)})
        metrics = ["loss"]
    print(f"\nPareto frontier along {cost}" + (" (loss: mean squared distance to the full-precision output "
                                                "on the calibration data)" if measure else "") + ":")
    print(frontier_table(pts, metrics, ("size", "bops", "latency")))
    if plot:
        print(f"plot: {plot_frontier(pts, cost, 'loss', plot, higher_is_better=False)}")


def _output(model, batch):
    out = model(**batch)
    return (out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state).float()


__all__ = ["register", "run", "parse_budgets", "LowbitError"]

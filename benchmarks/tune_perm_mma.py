"""H100: the small-M tensor-core kernel on the permuted weight copy (gemv.mma_w4_perm) against bf16 cuBLAS and what
dispatch runs, same process, CUDA-graph replay, weights rotated past L2: correctness at real sizes first (poisoned
outputs, every weight / activation kind, through the hook), then per (kind, shape) a config sweep at M = 16 and its
best configs again at M = 2, 4, 8, 32, 64 (M = 1: the gemv_w4_perm decode GEMV against the grid padded to 16
rows). A config that does not compile or launch (out of shared memory at a larger BM) is recorded as failed;
results are rewritten after every shape, and no new shape starts past --budget seconds, so a run cut short keeps
what it timed.

Usage (device, ~3-4 minutes; .cache/ is git-ignored, so a warm machine reuses the compiled kernels):
    TRITON_CACHE_DIR=$PWD/.cache/triton PYTHONPATH=src python3 benchmarks/tune_perm_mma.py --quick --out "$OUT"
Offline, no GPU (registers / spills / main-loop SASS of the configs for sm_90):
    PYTHONPATH=src .venv/bin/python benchmarks/tune_perm_mma.py --regs
Writes perm_mma.csv (every timing, failures with their reason) and perm_mma.md (per shape and M: bf16, dispatch,
best perm-mma and its config) under --out."""
from __future__ import annotations

import argparse
import csv
import itertools
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import triton

from lowbit.bench.sass import compile_sm90 as compile_sm90_cubin
from lowbit.kernels import _tl, gemv

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (3072, 768)]
# (BN, BJ, warps, stages, split): 18 compiled variants x 4 splits; 16 rows fill 4 warps' n8 MMA tiles at most,
# 128 rows want 8 warps, a 128-word step (64 KB per stage at BN 128) gets 2 stages
GRID = [(bn, bj, w, st, sp) for bn, bj, w, st in itertools.product([16, 32, 64, 128], [64, 128], [4, 8], [2, 3])
        for sp in (1, 2, 4, 8) if (w == 4 or bn >= 32) and (w == 8 or bn <= 64) and (bj == 64 or st == 2)]
# --quick: compilation dominates (one variant per base config, BM and split == 1 or not; cached across shapes), so
# 5 base configs: the H100 best at M <= 16 (32, 128, 4, 2) and at M = 32 (64, 64, 4, 3) of the first run, the
# pre-measurement defaults and two neighbours, each without and with a 2-way split
QUICK_GRID = [(bn, bj, w, st, sp) for bn, bj, w, st in [(32, 128, 4, 2), (64, 64, 4, 3), (32, 64, 4, 2),
                                                         (64, 128, 8, 2), (16, 128, 4, 2)] for sp in (1, 2)]


# --- offline: sm_90 resources of the kernel (the idea of benchmarks/kernel_regs.py) ----------------------------
def compile_sm90(a_kind: int, w_kind: int, x_ty: str, bn: int, bj: int, warps: int, stages: int, group: int = 128,
                 bm: int = 16, asm: bool = True) -> dict:
    """Registers, stack and main-loop SASS of _perm_mma_kernel for sm_90, with the divisibility-by-16 hints a real
    launch at 4096-wide shapes gets (without them the activation loads do not vectorize and are not pipelined)."""
    fn = gemv._perm_mma_kernel
    sig = {"x_ptr": x_ty, "sx_ptr": "*fp32", "w_ptr": "*i32", "sw_ptr": "*bf16", "z_ptr": "*u8", "bias_ptr": "*bf16",
           "out_ptr": "*bf16", "ws_ptr": "*fp32", "cnt_ptr": "*i32"}
    sig |= {a: "i32" for a in ("M", "N", "K", "KP", "SPLIT", "stride_xm", "stride_wn", "stride_sn", "stride_zn",
                               "stride_om")}
    consts = dict(A_KIND=a_kind, W_KIND=w_kind, G=group, BJ=bj, BM=bm, BN=bn, HAS_SX=a_kind != 0, HAS_BIAS=True,
                  ASM=asm)
    divisible = {a for a, t in sig.items() if t[0] == "*"} | {"N", "K", "KP", "stride_xm", "stride_wn", "stride_om"}
    c = compile_sm90_cubin(fn, consts, sig, divisible, warps, stages)
    sass = c.sass
    loop = _main_loop(sass)
    return {"registers": c.registers, "stack": c.stack, "smem": c.shared,
            "loop": len(loop), "mma": sum("MMA" in line for line in loop),
            "per_1k_weights": 1000 * len(loop) * warps / (bn * bj * 8)}


def _main_loop(sass: str) -> list[str]:
    """SASS lines of the backward branch whose body holds the most MMA instructions (the K loop)."""
    lines = [ln for ln in sass.splitlines() if re.match(r"^\s+/\*[0-9a-f]{4,}\*/", ln)]
    addr = [int(re.match(r"^\s+/\*([0-9a-f]+)\*/", ln).group(1), 16) for ln in lines]
    best: list[str] = []
    for i, ln in enumerate(lines):
        m = re.search(r"BRA (0x[0-9a-f]+)", ln)
        if m and int(m.group(1), 16) < addr[i] and int(m.group(1), 16) in addr:
            body = lines[addr.index(int(m.group(1), 16)):i + 1]
            if sum("MMA" in b for b in body) > sum("MMA" in b for b in best):
                best = body
    return best


def regs_report() -> None:
    cases = [("W4A16 int4 bf16", 0, _tl.INT4, "*bf16"), ("W4A16 uint4 bf16", 0, _tl.UINT4, "*bf16"),
             ("W4A16 fp4 bf16", 0, _tl.FP4, "*bf16"), ("W4A8 int4 int8", 1, _tl.INT4, "*i8"),
             ("W4A8 fp4 fp8", 2, _tl.FP4, "*fp8e4nv")]
    cfgs = sorted({gemv.perm_mma_config(16, n, k)[:4] for n, k in SHAPES} | {(64, 128, 8, 2), (32, 64, 4, 2)})
    for (name, a, w, xt), (bn, bj, warps, st) in itertools.product(cases, cfgs):
        r = compile_sm90(a, w, xt, bn, bj, warps, st)
        print(f"{name:18s} BN {bn:3d} BJ {bj:3d} warps {warps} stages {st}: registers {r['registers']:3d}  stack "
              f"{r['stack']} B  smem {r['smem']:6d} B  main loop {r['loop']:4d} SASS ({r['mma']} MMA) = "
              f"{r['per_1k_weights']:.0f} warp-instructions per 1k weights", flush=True)


# --- device ---------------------------------------------------------------------------------------------------
KINDS = ["w4a16", "w4a16-fp4", "w4a16-uint4", "w4a8-int", "w4a8-fp"]
MS = [1, 2, 4, 8, 16, 32, 64]


def layer(name: str, n: int, k: int, bias: bool = False):
    from lowbit.kernels import dispatch
    from lowbit.nn.qlinear import QuantLinear
    from lowbit.scheme import QuantSpec, get_scheme

    lin = torch.nn.Linear(k, n, bias=bias, device="cuda", dtype=torch.bfloat16)
    if name == "w4a16-uint4":
        q = QuantLinear.from_float(lin, QuantSpec("int4", "group", 128, symmetric=False), None)
    else:
        s = get_scheme(name)
        q = QuantLinear.from_float(lin, s.weights, s.activations)
    plan = dispatch.prepare(q)
    assert q._lb_wp is not None, f"{name} {n}x{k}: no permuted copy"
    return q, plan


def check(kinds: list[str], shapes: list[tuple[int, int]], quick: bool) -> set[str]:
    """Every kind at the given shapes, outputs poisoned: M = 2 and 16 with the default config, a split-K config
    (at M = 16 only with --quick), and the hook at M = 4 through the registered op. Returns the kinds that
    failed (a wrong result, or an error such as a decoder that does not compile: printed, not raised)."""
    from lowbit.kernels import dispatch

    failed = set()
    cnt = torch.zeros(8192, dtype=torch.int32, device="cuda")
    cases = [(2, None), (16, None), (16, (32, 64, 4, 2, 4))] + ([] if quick else [(2, (32, 64, 4, 2, 4))])
    for name, (n, k) in itertools.product(kinds, shapes):
        q, p = layer(name, n, k, bias=True)
        for m, cfg in cases + [(4, "hook")]:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = q.reference_forward(x).float()
            try:
                if cfg == "hook":  # through the registered op, as QuantLinear runs it
                    y = dispatch.quant_linear_forward(q, x).float()
                else:
                    a, sa = (x, None) if p.a_fmt is None else torch.ops.lowbit.act_quant(x, None, None, p.a_fmt)
                    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
                    y = gemv.mma_w4_perm(a, sa, p.a_kind, q._lb_wp, q._lb_sp, q._lb_zp, q.bias, p.w_kind, p.group,
                                         n, k, torch.bfloat16, counters=cnt, config=cfg, out=out).float()
                err = ((y - ref).norm() / ref.norm()).item()
                ok = err < 1e-2 and not torch.isnan(y).any().item() and not cnt.any().item()
                why = f"rel err {err:.2e}"
            except Exception as e:  # noqa: BLE001  (reported; the kind is left out of the timing)
                torch.cuda.synchronize()
                ok, why = False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            if not ok:
                failed.add(name)
            print(f"check {name} M={m} {n}x{k} cfg={cfg}: {why} {'ok' if ok else 'FAIL'}", flush=True)
    return failed


def _try_time(calls) -> tuple[float | None, str]:
    """µs of the calls, or (None, why) where a config does not compile or launch (out of shared memory at a
    larger BM, registers, ...): recorded as failed, the sweep goes on."""
    from lowbit.bench.timing import time_calls

    try:
        return time_calls(calls, replays=10)[0], "ok"
    except Exception as e:  # noqa: BLE001  (OutOfResources, CompilationError, launch errors: reported per config)
        torch.cuda.synchronize()
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"


class Shape:
    """Timings of one (kind, N, K): the layer's rotated copies and the callables per path."""

    def __init__(self, kind: str, n: int, k: int):
        import copy

        from lowbit.bench.timing import copies_for
        from lowbit.kernels import dispatch

        self.kind, self.n, self.k = kind, n, k
        q, self.p = layer(kind, n, k)
        self.qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(n * k // 2) - 1)]
        for c in self.qs:
            dispatch.prepare(c)  # the copies' own buffers, before any capture
        self.ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
        self.cnt = torch.zeros(8192, dtype=torch.int32, device="cuda")

    def codes(self, x):
        """What the kernel reads: float x (W4A16), or act_quant's codes and scales (W4A8, timed with it)."""
        return (x, None) if self.p.a_fmt is None else torch.ops.lowbit.act_quant(x, None, None, self.p.a_fmt)

    def bf16(self, x):
        return _try_time([lambda w=w: x @ w.t() for w in self.ws])

    def dispatch(self, x):
        from lowbit.kernels import dispatch

        return _try_time([lambda c=c: dispatch.quant_linear_forward(c, x) for c in self.qs])

    def gemv(self, x):
        p, n, k = self.p, self.n, self.k
        return _try_time([lambda c=c: gemv.gemv_w4_perm(x, c._lb_wp, c._lb_sp, c._lb_zp, None, p.w_kind, p.group, n,
                                                        k, torch.bfloat16, counters=self.cnt, quantize=p.a_kind)
                          for c in self.qs])

    def perm(self, x, cfg):
        p, n, k = self.p, self.n, self.k

        def call(c):
            a, sa = self.codes(x)
            return gemv.mma_w4_perm(a, sa, p.a_kind, c._lb_wp, c._lb_sp, c._lb_zp, None, p.w_kind, p.group, n, k,
                                    torch.bfloat16, counters=self.cnt, config=cfg)
        return _try_time([lambda c=c: call(c) for c in self.qs])


def sweep_shape(kind: str, n: int, k: int, grid: list, ms: list[int], top: int, rows: list) -> list[str]:
    """The grid at M = 16 (plus the default config), the `top` best and the default at the other M; M = 1 times
    gemv_w4_perm (dispatch's M = 1 path) and the grid (and its 4-way splits) padded to 16 rows, the best of them in
    the perm-mma column. Returns the markdown table of the shape."""
    sh = Shape(kind, n, k)
    kb = n * k * (0.5 + 2 / 128) / 1e3  # weight + scale bytes / 1e3: kb / µs = GB/s
    md = [f"**{kind} {n} x {k}**", "",
          "| M | bf16 µs | dispatch µs | vs bf16 | perm-mma best µs | vs bf16 | GB/s | config (BN, BJ, warps, stages, "
          "split) |", "|---|---|---|---|---|---|---|---|"]
    best_cfgs: list = []
    table: dict[int, str] = {}

    def add(m, path, cfg, us, why):
        rows.append([kind, n, k, m, path, "" if cfg is None else str(cfg), "" if us is None else f"{us:.2f}", why])

    for m in sorted(ms, key=lambda m: (m != 16, m)):  # M = 16 first: its sweep picks the configs for the rest
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        bf, why_bf = sh.bf16(x)
        cur, why_cur = sh.dispatch(x)
        add(m, "bf16", None, bf, why_bf)
        add(m, "dispatch", None, cur, why_cur)
        default = gemv.perm_mma_config(m, n, k, sh.p.group)
        if m == 1:  # the GEMV dispatch runs, and (padded to 16 rows) the tensor-core kernel at the grid's configs
            m1 = [default] + grid + [c[:4] + (4,) for c in grid if c[4] == 2]
            res = [(*sh.gemv(x), "gemv_w4_perm")] + [(*sh.perm(x, c), c) for c in dict.fromkeys(m1)]
        else:  # the default config first, each distinct config once
            res = [(*sh.perm(x, c), c) for c in dict.fromkeys([default] + (grid if m == 16 else best_cfgs))]
        for us, why, c in res:
            add(m, "gemv_w4_perm" if c == "gemv_w4_perm" else "perm_mma", c, us, why)
            if why != "ok":
                print(f"{kind} {n}x{k} M={m} {c}: {why}", flush=True)
        ok = sorted((r for r in res if r[0] is not None), key=lambda r: r[0])
        if m == 16:
            best_cfgs = [c for _, _, c in ok][:top]
        f = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
        r = lambda v: "n/a" if v is None or bf is None else f"{bf / v:.2f}x"  # noqa: E731
        us, cfg = (ok[0][0], ok[0][2]) if ok else (None, "all failed")
        cfg = f"{cfg} (default)" if cfg == default else cfg
        table[m] = (f"| {m} | {f(bf)} | {f(cur)} | {r(cur)} | {f(us)} | {r(us)} | "
                    f"{'n/a' if us is None else f'{kb / us:.0f}'} | {cfg} |")
        print(f"{kind} {n}x{k} M={m}: bf16 {f(bf)} us, dispatch {f(cur)} us ({r(cur)}), perm-mma best {f(us)} us "
              f"({r(us)}) {cfg}", flush=True)
    return md + [table[m] for m in sorted(table)] + [""]


def sweep(out_dir: Path, kinds: list[str], shapes: list[tuple[int, int]], grid: list, ms: list[int], top: int,
          deadline: float) -> None:
    """Every (kind, shape) in turn; perm_mma.csv and perm_mma.md rewritten after each, so a run cut short keeps
    what it timed. Past the deadline the remaining shapes are listed as skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    head = [f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
            f"commit {_commit()}, {time.strftime('%Y-%m-%d')}; g128 weights, bf16 activations, CUDA-graph replay, "
            "weights rotated past L2; 'dispatch' = what QuantLinear runs now (M = 1 gemv_w4_perm, 2..16 perm-mma "
            "default config, 32 qgemm, 64 qgemm or dequant + cuBLAS for W4A16); W4A8 perm-mma timings include "
            "act_quant; M = 1's perm-mma column is the better of gemv_w4_perm and the tensor-core kernel", ""]
    rows: list = []
    md: list[str] = []
    for (n, k), kind in itertools.product(shapes, kinds):  # shape-major: a cut-short run has every kind of a shape
        if time.time() > deadline:
            md += [f"**{kind} {n} x {k}**: skipped (time budget, --budget)", ""]
        else:
            t = time.time()
            md += sweep_shape(kind, n, k, grid, ms, top, rows)
            print(f"{kind} {n}x{k} done in {time.time() - t:.0f}s", flush=True)
        with open(out_dir / "perm_mma.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["kind", "n", "k", "m", "path", "config(BN,BJ,warps,stages,split)", "us", "status"])
            w.writerows(rows)
        (out_dir / "perm_mma.md").write_text("\n".join(head + md) + "\n")
    print("\n".join(md), flush=True)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _shapes(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(b)) for a, b in (s.lower().split("x") for s in text.split(",") if s)]
    except ValueError:
        raise SystemExit(f"--shapes: expected NxK[,NxK...], e.g. 4096x4096,3072x768, got {text!r}") from None


def _kinds(text: str) -> list[str]:
    kinds = [s for s in text.split(",") if s]
    bad = [s for s in kinds if s not in KINDS]
    if bad:
        raise SystemExit(f"--kinds: unknown {bad}; known: {','.join(KINDS)}")
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--regs", action="store_true", help="offline: sm_90 registers / SASS of the configs, no GPU")
    ap.add_argument("--out", default="perm_mma_out", help="folder for perm_mma.csv and perm_mma.md")
    ap.add_argument("--quick", action="store_true",
                    help=f"{len(QUICK_GRID)} configs at M = 16 (not {len(GRID)}), the best 2 at the other M, "
                         "checks at the first shape only")
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="NxK list to time")
    ap.add_argument("--kinds", default="w4a16,w4a8-int", help=f"weight/activation kinds to time, of {KINDS}")
    ap.add_argument("--ms", default=",".join(map(str, MS)), help="token counts to time")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds from the start after which no new shape is begun (default 200 quick, 420 full)")
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args()
    if a.regs:
        regs_report()
        return
    shapes, kinds = _shapes(a.shapes), _kinds(a.kinds)
    t0 = time.time()
    torch.manual_seed(0)
    failed = set() if a.no_check else check(KINDS, shapes[:1] if a.quick else shapes, a.quick)
    print(f"checks done ({time.time() - t0:.0f}s){': FAILED ' + ','.join(sorted(failed)) if failed else ''}",
          flush=True)
    kinds = [kd for kd in kinds if kd not in failed]  # a wrong kernel is not timed
    deadline = t0 + (a.budget or (200 if a.quick else 420))
    sweep(Path(a.out), kinds, shapes, QUICK_GRID if a.quick else GRID, [int(m) for m in a.ms.split(",") if m],
          2 if a.quick else 4, deadline)
    print(f"total {time.time() - t0:.0f}s", flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""H100: the small-M tensor-core kernel on the permuted weight copy (gemv.mma_w4_perm) against bf16 cuBLAS and the
path it replaces at 2 <= M <= 16 (qgemm's split-K tiles on the stored layout), same process, CUDA-graph replay,
weights rotated past L2: correctness at real sizes first (poisoned outputs, every weight / activation kind), then
a config sweep at M = 16 per shape, the best configs again at M = 2, 4, 8 (and 32, 64 to place the M limit).

Usage (device, ~3 minutes):  PYTHONPATH=src python3 benchmarks/tune_perm_mma.py --out "$OUT"
Offline, no GPU (registers / spills / main-loop SASS of the configs for sm_90):
    PYTHONPATH=src .venv/bin/python benchmarks/tune_perm_mma.py --regs
Writes perm_mma.csv (every timing) and perm_mma_best.md (best config per shape and M) under --out."""
from __future__ import annotations

import argparse
import csv
import itertools
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import triton

from lowbit.kernels import _tl, gemv

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (3072, 768)]
# (BN, BJ, warps, stages, split): 18 compiled variants x 4 splits; 16 rows fill 4 warps' n8 MMA tiles at most,
# 128 rows want 8 warps, a 128-word step (64 KB per stage at BN 128) gets 2 stages
GRID = [(bn, bj, w, st, sp) for bn, bj, w, st in itertools.product([16, 32, 64, 128], [64, 128], [4, 8], [2, 3])
        for sp in (1, 2, 4, 8) if (w == 4 or bn >= 32) and (w == 8 or bn <= 64) and (bj == 64 or st == 2)]


# --- offline: sm_90 resources of the kernel (the idea of benchmarks/kernel_regs.py) ----------------------------
def compile_sm90(a_kind: int, w_kind: int, x_ty: str, bn: int, bj: int, warps: int, stages: int, group: int = 128,
                 bm: int = 16, asm: bool = True) -> dict:
    """Registers, stack and main-loop SASS of _perm_mma_kernel for sm_90, with the divisibility-by-16 hints a real
    launch at 4096-wide shapes gets (without them the activation loads do not vectorize and are not pipelined)."""
    from triton.backends.compiler import GPUTarget

    fn = gemv._perm_mma_kernel
    sig = {"x_ptr": x_ty, "sx_ptr": "*fp32", "w_ptr": "*i32", "sw_ptr": "*bf16", "z_ptr": "*u8", "bias_ptr": "*bf16",
           "out_ptr": "*bf16", "ws_ptr": "*fp32", "cnt_ptr": "*i32"}
    sig |= {a: "i32" for a in ("M", "N", "K", "KP", "SPLIT", "stride_xm", "stride_wn", "stride_sn", "stride_zn",
                               "stride_om")}
    consts = dict(A_KIND=a_kind, W_KIND=w_kind, G=group, BJ=bj, BM=bm, BN=bn, HAS_SX=a_kind != 0, HAS_BIAS=True,
                  ASM=asm)
    sig |= {c: "constexpr" for c in consts}
    div16 = {"N", "K", "KP", "stride_xm", "stride_wn", "stride_om"}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names) if sig[a][0] == "*" or a in div16}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        res = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    usage = dict(re.findall(r"(REG|STACK):(\d+)", res))
    loop = _main_loop(sass)
    return {"registers": int(usage["REG"]), "stack": int(usage["STACK"]), "smem": ck.metadata.shared,
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


def check() -> bool:
    """Every kind at the real shapes, M = 2 and 16, default config and a split-K one, outputs poisoned."""
    from lowbit.kernels import dispatch

    ok_all = True
    cnt = torch.zeros(8192, dtype=torch.int32, device="cuda")
    for name, (n, k) in itertools.product(["w4a16", "w4a16-fp4", "w4a16-uint4", "w4a8-int", "w4a8-fp"], SHAPES):
        q, p = layer(name, n, k, bias=True)
        for m, cfg in itertools.product([2, 16], [None, (32, 64, 4, 2, 4)]):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = q.reference_forward(x).float()
            a, sa = (x, None) if p.a_fmt is None else torch.ops.lowbit.act_quant(x, None, None, p.a_fmt)
            out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
            y = gemv.mma_w4_perm(a, sa, p.a_kind, q._lb_wp, q._lb_sp, q._lb_zp, q.bias, p.w_kind, p.group, n, k,
                                 torch.bfloat16, counters=cnt, config=cfg, out=out).float()
            err = ((y - ref).norm() / ref.norm()).item()
            ok = err < 1e-2 and not torch.isnan(y).any().item() and not cnt.any().item()
            ok_all &= ok
            print(f"check {name} {m}x{n}x{k} cfg={cfg}: rel err {err:.2e} {'ok' if ok else 'FAIL'}", flush=True)
        x = torch.randn(4, k, device="cuda", dtype=torch.bfloat16)
        y = dispatch.quant_linear_forward(q, x).float()  # the hook at M = 4, through the registered op
        ref = q.reference_forward(x).float()
        err = ((y - ref).norm() / ref.norm()).item()
        ok_all &= err < 1e-2
        print(f"check {name} hook M=4: rel err {err:.2e} {'ok' if err < 1e-2 else 'FAIL'}", flush=True)
    return ok_all


def sweep(out_dir: Path, grid: list, ms_more: list[int]) -> None:
    import copy

    from lowbit.bench.timing import copies_for, time_calls
    from lowbit.kernels.qgemm import qgemm

    cnt = torch.zeros(8192, dtype=torch.int32, device="cuda")
    rows = []
    best_md = ["| N x K | M | bf16 µs | current path µs | perm-mma µs | vs bf16 | vs current | GB/s | config |",
               "|---|---|---|---|---|---|---|---|---|"]
    for n, k in SHAPES:
        q, p = layer("w4a16", n, k)
        qs = [q] + [copy.deepcopy(q) for _ in range(copies_for(n * k // 2) - 1)]  # _lb_* buffers copied too
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
        kb = n * k * (0.5 + 2 / 128) / 1e3  # weight + scale bytes / 1e3: kb / µs = GB/s

        def t_perm(x, cfg):
            return time_calls([lambda c=c: gemv.mma_w4_perm(x, None, _tl.A16, c._lb_wp, c._lb_sp, None, None, _tl.INT4,
                                                            128, n, k, torch.bfloat16, counters=cnt, config=cfg)
                               for c in qs], replays=10)[0]

        def base_times(m):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            bf = time_calls([lambda w=w: x @ w.t() for w in ws], replays=10)[0]
            cur = time_calls([lambda c=c: qgemm(x, None, c.qweight, c._lb_sw, c._lb_aux, None, c._lb_cnt, _tl.A16,
                                                _tl.INT4, _tl.PER_GROUP, 128, n, k, torch.bfloat16) for c in qs],
                             replays=10)[0]
            return x, bf, cur

        def record(m, bf, cur, res):
            res.sort(key=lambda r: r[0])
            for us, cfg in res:
                rows.append([n, k, m, "perm_mma", str(cfg), f"{us:.2f}", f"{bf / us:.3f}", f"{kb / us:.0f}"])
            us, cfg = res[0]
            best_md.append(f"| {n} x {k} | {m} | {bf:.1f} | {cur:.1f} | {us:.1f} | {bf / us:.2f}x | {cur / us:.2f}x "
                           f"| {kb / us:.0f} | {cfg} |")
            print(f"N={n} K={k} M={m}: bf16 {bf:.1f} us, current {cur:.1f} us ({bf / cur:.2f}x); perm-mma default "
                  f"{dict((c, u) for u, c in res).get(None, float('nan')):.1f} us; best " +
                  "; ".join(f"{u:.1f} us ({bf / u:.2f}x) {c}" for u, c in res[:3]), flush=True)

        x, bf, cur = base_times(16)
        rows += [[n, k, 16, "bf16", "", f"{bf:.2f}", "1", ""],
                 [n, k, 16, "qgemm", "", f"{cur:.2f}", f"{bf / cur:.3f}", ""]]
        res = [(t_perm(x, None), None)]
        for cfg in grid:
            try:
                res.append((t_perm(x, cfg), cfg))
            except Exception as e:  # noqa: BLE001  (a config out of shared memory / registers: report, go on)
                print("fail", n, k, cfg, str(e)[:120], flush=True)
        record(16, bf, cur, res)
        top = [c for _, c in res[:6]]  # sorted by record
        for m in [2, 4, 8] + ms_more:
            x, bf, cur = base_times(m)
            rows += [[n, k, m, "bf16", "", f"{bf:.2f}", "1", ""],
                     [n, k, m, "qgemm", "", f"{cur:.2f}", f"{bf / cur:.3f}", ""]]
            record(m, bf, cur, [(t_perm(x, c), c) for c in dict.fromkeys(top + [None])])
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "perm_mma.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["n", "k", "m", "path", "config(BN,BJ,warps,stages,split)", "us", "x_bf16", "weight_GB/s"])
        w.writerows(rows)
    head = [f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
            f"commit {_commit()}, {time.strftime('%Y-%m-%d')}; W4A16 int4 g128, CUDA-graph replay, weights rotated "
            "past L2; 'current path' = qgemm split-K tiles on the stored layout (dispatch before perm-mma)", ""]
    (out_dir / "perm_mma_best.md").write_text("\n".join(head + best_md) + "\n")
    print("\n".join(best_md))


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--regs", action="store_true", help="offline: sm_90 registers / SASS of the configs, no GPU")
    ap.add_argument("--out", default="perm_mma_out", help="folder for perm_mma.csv and perm_mma_best.md")
    ap.add_argument("--quick", action="store_true", help="a quarter of the config grid")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--more-m", default="32,64", help="token counts above 16 to time with the best configs")
    a = ap.parse_args()
    if a.regs:
        regs_report()
        return
    t0 = time.time()
    torch.manual_seed(0)
    if not a.no_check and not check():
        print("correctness FAILED: not timing", flush=True)
        sys.exit(1)
    print(f"checks done ({time.time() - t0:.0f}s)", flush=True)
    grid = GRID[::4] if a.quick else GRID
    sweep(Path(a.out), grid, [int(m) for m in a.more_m.split(",") if m])
    print(f"total {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()

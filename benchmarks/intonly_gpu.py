"""Device script for issue 7: integer-only BERT-base and ViT-B/16 on the kernel backend (Triton int8 linears with the
requantization in the GEMM epilogue, torch._int_mm where a linear's product is needed as INT32, Triton int8
attention GEMMs, fused Shiftmax / ShiftGELU / I-LayerNorm / requant kernels) against Hugging Face FP16, eager and
replayed from CUDA graphs. Random weights from the configs (speed does not depend on them).

    PYTHONPATH=src python benchmarks/intonly_gpu.py                      # BERT-base and ViT-B/16, all sizes
    PYTHONPATH=src python benchmarks/intonly_gpu.py --models bert-base --batches 32 --seqs 128
    PYTHONPATH=src python benchmarks/intonly_gpu.py --models bert-base --batches 32 --seqs 128,384 --sweep

Before timing it checks, per model, that the CUDA integer graph is bit-exact with the CPU torch integer graph
and exits non-zero if the kernel backend cannot run or differs: it never falls back to another path. Prints a
markdown table (medians of --iters timed replays, CUDA events) and the per-stage split of one integer and one
FP16 forward (torch.profiler, device time by kernel family); writes both under $OUT (or --out) after every row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

MODELS = ("bert-base", "vit-b16")
# kernel-name fragments -> stage, first match wins (torch.profiler device kernels); "_linear_rq_kernel" before
# "_rq_kernel", which it contains
INT_STAGES = (("_linear_rq_kernel", "linears + requant epilogue"), ("_attention_kernel", "attention (fused integer)"),
              ("_bmm_kernel", "attention GEMMs (Triton int8)"),
              ("_shiftmax", "Shiftmax + score requant"), ("_shift_gelu", "ShiftGELU + requant"),
              ("_layernorm_kernel", "I-LayerNorm + requant"), ("_rq_kernel", "requant / residual add"),
              ("gemm", "linears (_int_mm)"), ("igemm", "linears (_int_mm)"), ("cutlass", "linears (_int_mm)"),
              ("", "other (embedding, pads, casts, bias)"))
FP16_STAGES = (("nvjet", "GEMMs"), ("flash", "attention (SDPA)"), ("fmha", "attention (SDPA)"),
               ("efficient_attention", "attention (SDPA)"),
               ("softmax", "softmax"), ("gemm", "GEMMs"), ("cutlass", "GEMMs"), ("layer_norm", "LayerNorm"),
               ("gelu", "GELU"), ("", "other"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--seqs", default="128,384", help="BERT sequence lengths (ViT: 224x224 images, 197 tokens)")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-graphs", action="store_true", help="time eager only")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"), help="HF FP16 attention implementation")
    p.add_argument("--calib-seq", type=int, default=64, help="calibration tokens per sequence (4 sequences)")
    p.add_argument("--norm", default="deferred", choices=("deferred", "probs"),
                   help="IntConfig.deferred_norm: the attention's weights relative to the row maximum and one "
                        "division of the context (deferred, the default) or normalised probabilities (probs)")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    p.add_argument("--sweep-large", type=lambda v: tuple(int(u) for u in v.split("x")), default=None,
                   metavar="BxT", help="with --sweep: also sweep the linear.large GEMM tile at this BERT size "
                   "(e.g. 32x384: M >= intonly_gemm.LARGE_M rows)")
    p.add_argument("--sweep-vit", metavar="FAMILIES",
                   help="comma list of tile families to sweep on ViT-B/16 at the first batch (e.g. attention.one.mid)")
    p.add_argument("--sweep", action="store_true",
                   help="first choose the integer kernels' launch tiles (lowbit.kernels.intonly.TILES and the linears' "
                        "lowbit.kernels.intonly_gemm.TILES) by timing the whole BERT-base forward at the first batch "
                        "and sequence length, one kernel family at a time")
    p.add_argument("--sweep-at", metavar="BxT:FAMILIES", action="append", default=[],
                   help="sweep these tile families on BERT-base at this size (repeatable), after --sweep if given, "
                        "e.g. 32x384:attention.one.long,launch:linear.large")
    p.add_argument("--persist", default="", metavar="FAM=N,...",
                   help="launch variants of the linears by tile family, '+'-joined parts: programs per SM "
                        "(lowbit.kernels.intonly_gemm.PERSIST), 'ws' (warp specialization), 'tma' (descriptor loads, "
                        "intonly_gemm.TMA); e.g. linear.large=tma,linear.gelu=tma+2; 'all=...' for every family")
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    bad = [m for m in a.models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {MODELS}")
    a.batches = [int(v) for v in a.batches.split(",")]
    a.seqs = [int(v) for v in a.seqs.split(",")]
    return a


def hf_config(name: str, tiny: bool = False):
    """BERT-base / ViT-B/16 configs (tiny=True: a 2-layer, 64-wide version for tests on the CPU)."""
    from transformers import BertConfig, ViTConfig

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else {}
    if name == "bert-base":
        return BertConfig(**small)  # defaults: 12 x 768, 12 heads, 3072, vocab 30522
    return ViTConfig(**small, **(dict(image_size=32, patch_size=8) if tiny else {}))  # defaults: ViT-B/16 at 224


def build(name: str, calib_seq: int, tiny: bool = False, deferred_norm: bool = True):
    """(FP32 HF model, integer-only model calibrated on the CPU with the default IntConfig (but deferred_norm),
    input maker)."""
    from transformers import BertModel, ViTModel

    from lowbit.intonly.blocks import IntBertModel, IntConfig
    from lowbit.intonly.vit import build_int_vit

    torch.manual_seed(0)
    cfg = hf_config(name, tiny)
    g = torch.Generator().manual_seed(0)
    if name == "bert-base":
        fp = BertModel(cfg).eval()
        calib = [{"input_ids": torch.randint(1000, cfg.vocab_size, (4, calib_seq), generator=g)}]
        im = IntBertModel(fp, IntConfig(deferred_norm=deferred_norm)).calibrate(calib).eval()

        def inputs(b, t):
            return {"input_ids": torch.randint(1000, cfg.vocab_size, (b, t), generator=g)}
    else:
        fp = ViTModel(cfg, add_pooling_layer=False).eval()
        size = cfg.image_size
        im = build_int_vit(fp, torch.randn(4, 3, size, size, generator=g), IntConfig(deferred_norm=deferred_norm))

        def inputs(b, t):
            return {"pixel_values": torch.randn(b, 3, size, size, generator=g)}
    return fp, im, inputs


def require_kernels(im, args: dict) -> None:
    """Exit non-zero unless the CUDA integer graph runs on the kernel backend and equals the CPU integer graph."""
    from lowbit.intonly.backend import KernelArith
    from lowbit.intonly.dyadic import INT

    if not torch.cuda.is_available():
        raise SystemExit("intonly_gpu: needs a CUDA device (the kernel backend is what this script measures)")
    ref = _int_graph(im.cpu(), INT, {k: v.cpu() for k, v in args.items()})
    A = im.cuda()._backend("int")  # raises if Triton / the kernels cannot load
    if not isinstance(A, KernelArith):
        raise SystemExit(f"intonly_gpu: a CUDA model got backend {type(A).__name__}, not the kernel backend")
    got = _int_graph(im, A, {k: v.cuda() for k, v in args.items()})
    if not torch.equal(got.long().cpu(), ref.long()):
        raise SystemExit("intonly_gpu: the CUDA kernel graph differs from the CPU integer graph: not timing it")


def _int_graph(im, A, args: dict) -> torch.Tensor:
    if "pixel_values" in args:
        return im.integer_forward(A, im.quantize_pixels(args["pixel_values"]))[0]
    ids = args["input_ids"]
    return im.integer_forward(A, ids, torch.ones_like(ids), torch.zeros_like(ids))[0]


def time_ms(fn, iters: int, warmup: int, graph: bool) -> float:
    """Median milliseconds of fn() (lowbit.bench.timing: CUDA events; with graph=True, replays of its CUDA graph).

    Raises:
        RuntimeError: graph=True and the capture failed (the row reports it instead of an eager number)."""
    from lowbit.bench.timing import time_calls
    us, captured = time_calls([fn], graph=graph, calls_per_replay=1, replays=iters, warmup=warmup)
    if graph and not captured:
        raise RuntimeError("CUDA-graph capture failed")
    return us / 1e3


def stage_split(fn, table) -> dict[str, float]:
    """Device milliseconds of one fn() by stage (kernel-name families of ``table``)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    out: dict[str, float] = {}
    other: list[tuple[float, str]] = []
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if us <= 0 or getattr(ev, "device_type", None) != torch.autograd.DeviceType.CUDA:  # kernels only
            continue
        frag, stage = next((f, s) for f, s in table if f in ev.key.lower())
        out[stage] = out.get(stage, 0.0) + us / 1000
        if not frag:
            other.append((us / 1000, ev.key[:60]))
    if other:  # what the catch-all holds, largest first
        print("  other:", "; ".join(f"{k} {v:.3f}" for v, k in sorted(other, reverse=True)[:6]), flush=True)
    return out


def run_size(name, fp16, im, x, args) -> dict:
    """One (model, batch, seq) row: int8 and FP16, eager and graph."""
    with torch.no_grad():
        if name == "bert-base":
            ids = x["input_ids"]
            mask, types = torch.ones_like(ids), torch.zeros_like(ids)
            A = im._backend("int")

            def int_fn():
                return im.integer_forward(A, ids, mask, types)

            def fp_fn():  # no mask (all ones): HF's mask checks would sync the host and break graph capture
                return fp16(input_ids=ids)
        else:
            codes, pix = im.quantize_pixels(x["pixel_values"]), x["pixel_values"].half()
            A = im._backend("int")

            def int_fn():
                return im.integer_forward(A, codes)

            def fp_fn():
                return fp16(pixel_values=pix)
        row = {"model": name, "batch": next(iter(x.values())).shape[0],
               "tokens": x["input_ids"].shape[1] if "input_ids" in x else im.max_tokens}
        for label, fn in (("int8", int_fn), ("fp16", fp_fn)):
            # HF FP16 eager is host-bound and its median moved 4.6-13 ms between runs at BERT-base 32 x 128: the
            # best of three medians is the FP16 number the ratios use (the one least favourable to the integer model)
            rounds = 3 if label == "fp16" else 1
            row[f"{label} eager ms"] = min(time_ms(fn, args.iters, args.warmup, False) for _ in range(rounds))
            if not args.no_graphs:
                try:
                    row[f"{label} graph ms"] = time_ms(fn, args.iters, args.warmup, True)
                except RuntimeError as e:  # reported in the row and the table, not hidden
                    row[f"{label} graph ms"] = None
                    row[f"{label} graph error"] = str(e).splitlines()[0][:120]
        best_int = min(v for k, v in row.items() if k.startswith("int8") and k.endswith("ms") and v)
        row["int8 best / fp16 eager"] = row["fp16 eager ms"] / best_int
        if row.get("fp16 graph ms"):
            row["int8 best / fp16 graph"] = row["fp16 graph ms"] / best_int
        row["int8 stages ms"] = stage_split(int_fn, INT_STAGES)
        row["fp16 stages ms"] = stage_split(fp_fn, FP16_STAGES)
    return row


# layernorm: (rows per program, column chunk, warps, stages): the per-row chain runs once a warp for up to 32 rows
# (lowbit.kernels.intonly._layernorm_kernel), so more rows a warp amortize it, and stages 3 pipeline the column
# loads; `kernel_regs.py --sweep` prints each one's SASS as launched (at 4096 rows, up to 16 rows a program stay)
SWEEP = {"layernorm": [(8, 128, 4, 1), (8, 128, 4, 3), (16, 64, 4, 1), (16, 64, 4, 3), (16, 64, 2, 3), (8, 64, 2, 3),
                       (16, 32, 2, 3), (16, 128, 8, 3), (16, 128, 4, 1), (32, 64, 4, 1), (32, 32, 4, 1),
                       (32, 128, 8, 1)],
         "requant": [(1024, 4), (512, 4), (2048, 8), (1024, 8), (512, 2)],
         "gelu": [(512, 4), (1024, 8), (256, 2), (1024, 4), (512, 8)],
         "shiftmax": [(2048, 4), (1024, 4), (4096, 8), (512, 2), (2048, 8)]}
# the linears (lowbit.kernels.intonly_gemm.TILES): (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages); registers and spills
# of each option for sm_90: benchmarks/gemm_regs.py --sweep
GEMM_SWEEP = {"linear": [(128, 128, 128, 8, 3), (128, 128, 128, 8, 4), (128, 128, 64, 8, 4), (128, 64, 128, 4, 4),
                         (64, 128, 128, 4, 4)],
              "linear.narrow": [(128, 64, 128, 4, 4), (128, 64, 128, 4, 3), (64, 64, 128, 4, 4), (128, 64, 64, 4, 4),
                                (128, 128, 64, 8, 4)],
              "linear.small": [(32, 64, 128, 4, 3), (16, 64, 128, 4, 3), (64, 64, 128, 4, 3), (32, 128, 128, 4, 4)],
              # M >= intonly_gemm.LARGE_M (swept at --sweep-large, not at the first size)
              "linear.large": [(128, 128, 128, 8, 3), (128, 128, 64, 8, 4), (128, 64, 128, 4, 4), (64, 128, 128, 4, 4),
                               (128, 256, 64, 8, 3)],
              "linear.large.narrow": [(128, 128, 128, 8, 3), (128, 64, 128, 4, 4), (64, 128, 128, 4, 4),
                                      (64, 64, 128, 4, 4)],
              # FC1 with the GELU in its epilogue (registers: lowbit.kernels.intonly_gemm's TILES comment)
              "linear.gelu": [(64, 64, 128, 4, 4), (64, 64, 128, 4, 3), (128, 64, 128, 8, 3), (64, 32, 128, 4, 4),
                              (64, 128, 128, 4, 4)],
              # the same at M >= LARGE_M (--sweep-at 32x384:linear.gelu.large); (0, 0, 0, 0, 0): GELU kernel apart
              "linear.gelu.large": [(64, 128, 128, 4, 4), (128, 64, 128, 8, 3), (64, 64, 128, 4, 4),
                                    (128, 128, 128, 8, 3), (0, 0, 0, 0, 0)],
              # the fused attention: (BLOCK_M queries, BLOCK_N keys, warps, stages)
              # (the three-sweep kernel runs only where the one-pass one does not: BERT at 384 tokens; sweep it there,
              # --sweep-at 32x384:attention)
              "attention": [(64, 64, 4, 2), (128, 64, 8, 2), (64, 128, 4, 2), (128, 32, 8, 2), (64, 32, 4, 3),
                            (64, 32, 4, 2), (64, 32, 4, 4), (32, 32, 4, 3), (32, 32, 2, 3), (128, 32, 8, 3),
                            (64, 64, 4, 3), (64, 32, 8, 3)],
              # its one-pass kernel, after "attention" (swept with it off): (VALUES, warps), BLOCK_M = min(64,
              # VALUES // T_PAD) query rows where >= 16 (at T_PAD 128 / 256 / 512: 2048 -> 16 / - / -, 4096 -> 32 /
              # 16 / -, 8192 -> 64 / 32 / 16); (0, 4) = off, the three sweeps everywhere
              "attention.one": [(0, 4), (2048, 4), (4096, 4), (4096, 8), (8192, 4), (8192, 8)],
              # the same at T_PAD 256 (ViT-B's 197 tokens; swept with --sweep-vit): 4096 -> 16 rows, 8192 -> 32
              "attention.one.mid": [(0, 4), (4096, 4), (4096, 8), (8192, 4), (8192, 8)],
              # the same at T_PAD >= 512 (BERT 384 tokens; swept with --sweep-at): 8192 -> 16 rows, 16384 -> 32
              "attention.one.long": [(0, 4), (8192, 4), (8192, 8), (16384, 8)]}
# launch variants of the linears, "launch:FAM" (swept only where named, e.g. in --sweep-at): (programs per SM of the
# persistent launch, intonly_gemm.PERSIST, 0 = a program per tile; operands through tensor descriptors,
# intonly_gemm.TMA)
LAUNCH_SWEEP = {f: [(0, False), (0, True), (1, True), (2, True)]
                for f in ("linear", "linear.narrow", "linear.large", "linear.large.narrow", "linear.gelu",
                          "linear.gelu.large")}


class _Launches:
    """A TILES-like table whose entries set intonly_gemm.PERSIST and intonly_gemm.TMA together."""

    def __setitem__(self, fam: str, opt: tuple[int, bool]) -> None:
        from lowbit.kernels import intonly_gemm

        intonly_gemm.PERSIST[fam], intonly_gemm.TMA[fam] = opt


def parse_launch(spec: str) -> tuple[int, bool, bool]:
    """A launch variant written as '+'-joined parts ("2", "tma", "tma+2", "2+ws"): (programs per SM of the
    persistent launch, 0 = a program per tile; descriptor (TMA) loads; warp specialization)."""
    parts = spec.split("+")
    return next((int(u) for u in parts if u.isdigit()), 0), "tma" in parts, "ws" in parts


def record_tiles(info: dict) -> None:
    """The kernels' launch tables as they stand (after a sweep or --persist) into the run's metadata."""
    from lowbit.kernels import intonly, intonly_gemm

    info["tiles"] = {k: list(v) for k, v in (intonly.TILES | intonly_gemm.TILES).items()}
    info["launch"] = {"persist": dict(intonly_gemm.PERSIST), "tma": dict(intonly_gemm.TMA),
                      "ws": intonly_gemm.WARP_SPECIALIZE}


def sweep_tiles(im, x: dict, families=None) -> dict:
    """Coordinate descent over TILES: per kernel family (all but linear.large, or only ``families``), the option
    with the fastest graph-replayed forward of BERT (x: input_ids) or ViT (x: pixel_values)."""
    from lowbit.kernels import intonly, intonly_gemm

    A = im._backend("int")
    if "pixel_values" in x:  # ViT: the integer graph from the quantized pixels
        codes = im.quantize_pixels(x["pixel_values"])

        def forward():
            return im.integer_forward(A, codes)
    else:
        ids = x["input_ids"]
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)

        def forward():
            return im.integer_forward(A, ids, mask, types)
    log = {}
    for tiles, fam, options in [(intonly.TILES, *kv) for kv in SWEEP.items()] + \
            [(intonly_gemm.TILES, *kv) for kv in GEMM_SWEEP.items()] + \
            [(_Launches(), "launch:" + f, o) for f, o in LAUNCH_SWEEP.items()]:
        if (fam not in families) if families else \
                fam in ("linear.large", "linear.large.narrow", "linear.gelu.large", "attention.one.mid",
                        "attention.one.long") \
                or ":" in fam:
            continue
        times = {}
        for opt in options:
            tiles[fam.split(":")[-1]] = opt
            try:
                with torch.no_grad():
                    times[opt] = time_ms(forward, 20, 3, True)
            except Exception as e:  # a tile that does not compile or capture is skipped, and said
                print(f"sweep {fam} {opt}: {type(e).__name__}: {str(e).splitlines()[0][:100]}", flush=True)
        best = min(times, key=times.get)
        tiles[fam.split(":")[-1]] = best
        log[fam] = {str(k): round(v, 3) for k, v in times.items()} | {"best": str(best)}
        print(f"sweep {fam}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()) + f" -> {best}", flush=True)
    return log


def to_markdown(rows: list[dict]) -> str:
    cols = ("model", "batch", "tokens", "int8 eager ms", "int8 graph ms", "fp16 eager ms", "fp16 graph ms",
            "int8 best / fp16 eager", "int8 best / fp16 graph")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    lines += ["", "Per-stage device time of one forward (ms, torch.profiler):", ""]
    for r in rows:
        for label in ("int8", "fp16"):
            st = r[f"{label} stages ms"]
            total = sum(st.values()) or 1.0
            parts = ", ".join(f"{k} {v:.3f} ({100 * v / total:.0f}%)" for k, v in sorted(st.items(), key=lambda kv: -kv[1]))
            lines.append(f"- {r['model']} b{r['batch']} t{r['tokens']} {label}: {parts}")
    errors = [f"- {r['model']} b{r['batch']} t{r['tokens']} {k}: {v}" for r in rows for k, v in r.items()
              if k.endswith("graph error")]
    return "\n".join(lines + (["", "CUDA-graph capture failures (eager timed instead):"] + errors if errors else []))


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def meta() -> dict:
    import triton

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "commit": os.environ.get("LOWBIT_COMMIT", commit), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv=None) -> None:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("intonly_gpu: needs a CUDA device (the kernel backend is what this script measures)")
    os.makedirs(args.out, exist_ok=True)
    info, rows = meta() | {"attention norm": args.norm}, []
    if args.persist:
        from lowbit.kernels import intonly_gemm

        for item in args.persist.split(","):
            fam, spec = item.split("=")
            per_sm, tma, ws = parse_launch(spec)
            for f in (intonly_gemm.TILES if fam == "all" else (fam,)):
                if f.startswith("linear"):
                    intonly_gemm.PERSIST[f], intonly_gemm.TMA[f] = per_sm, tma
            intonly_gemm.WARP_SPECIALIZE |= ws
        record_tiles(info)
    print(info, flush=True)
    for name in args.models:
        t = time.time()
        fp, im, inputs = build(name, args.calib_seq, deferred_norm=args.norm == "deferred")
        print(f"{name}: built and calibrated in {time.time() - t:.0f} s", flush=True)
        # 2 x 160 tokens: M = 320 > 256 takes the large-tile linears (intonly_gemm._family), not only the small ones
        require_kernels(im, inputs(2, 160 if name == "bert-base" else 0))
        if args.sweep and name == "bert-base":
            first = inputs(args.batches[0], args.seqs[0])
            info["tile sweep"] = sweep_tiles(im, {k: v.cuda() for k, v in first.items()})
            if args.sweep_large:
                b, t = args.sweep_large
                info["tile sweep"] |= sweep_tiles(im, {k: v.cuda() for k, v in inputs(b, t).items()},
                                                  ("linear.large", "linear.large.narrow"))
            record_tiles(info)
            require_kernels(im, inputs(3, 111))  # still bit-exact with the chosen tiles (several row blocks, a tail)
        for at in args.sweep_at if name == "bert-base" else ():
            size, fams = at.split(":", 1)
            b, t = (int(v) for v in size.split("x"))
            info["sweep at " + size] = sweep_tiles(im, {k: v.cuda() for k, v in inputs(b, t).items()},
                                                   tuple(fams.split(",")))
            record_tiles(info)
            require_kernels(im, inputs(2, 160))
        if args.sweep_vit and name == "vit-b16":  # its own sequence length (197): attention tiles differ from BERT's
            info["vit tile sweep"] = sweep_tiles(im, {k: v.cuda() for k, v in inputs(args.batches[0], 0).items()},
                                                 tuple(args.sweep_vit.split(",")))
            record_tiles(info)
            require_kernels(im, inputs(3, 0))
        if hasattr(fp.config, "_attn_implementation"):
            fp.config._attn_implementation = args.attn
        fp16 = fp.half().cuda()
        seqs = args.seqs if name == "bert-base" else [0]
        for b in args.batches:
            for t_ in seqs:
                x = {k: v.cuda() for k, v in inputs(b, t_).items()}
                rows.append(run_size(name, fp16, im, x, args))
                print(to_markdown(rows[-1:]).split("\n")[2], flush=True)
                with open(f"{args.out}/intonly_gpu.md", "w") as f:
                    f.write(f"{info}\n\n{to_markdown(rows)}\n")
                with open(f"{args.out}/intonly_gpu.json", "w") as f:
                    json.dump({"meta": info, "rows": rows}, f, indent=1)
        del fp16, im
        torch.cuda.empty_cache()
    print(f"\n{info}\n\n{to_markdown(rows)}")


if __name__ == "__main__":
    sys.exit(main())

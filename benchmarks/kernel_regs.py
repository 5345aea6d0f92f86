"""Registers, stack and SASS size of the integer-only kernels for sm_90 (H100), without a GPU.

Runs a one-layer BERT-base-width integer model on the kernel backend under Triton's interpreter to record each
kernel's launch arguments, then compiles every kernel for sm_90 at those constants (``triton.compile`` with a
``GPUTarget``) and reads the cubin with the ``cuobjdump`` Triton ships:

    PYTHONPATH=src .venv/bin/python benchmarks/kernel_regs.py                     # the launches as configured (TILES)
    PYTHONPATH=src .venv/bin/python benchmarks/kernel_regs.py --old-tiles         # the 4096-value tiles of 9d74dae
    PYTHONPATH=src .venv/bin/python benchmarks/kernel_regs.py --sweep             # I-LayerNorm: every sweep option

A thread has at most 255 registers, an SM 64 K: registers x threads per program bounds how many programs an SM runs.
I-LayerNorm's line also gives the SASS a thread executes per value of its rows, loops weighted by their trips.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton

import lowbit.kernels.intonly as K
from lowbit.bench.sass import compile_sm90 as compile_sm90_cubin

KERNELS = ("_rq_kernel", "_shiftmax_kernel", "_shift_gelu_kernel", "_layernorm_kernel", "_embed_kernel")
PTR = {torch.int64: "*i64", torch.int32: "*i32", torch.int16: "*i16", torch.int8: "*i8"}


def _Composed():
    """The kernel backend with the attention as its steps (Q·Kᵀ, the Shiftmax kernel, P·V, requant)."""
    from lowbit.intonly.backend import KernelArith
    from lowbit.intonly.dyadic import IntArith

    return type("Composed", (KernelArith,), {"attention": IntArith.attention})()


def record() -> dict:
    """{kernel: (num_warps, args)} of each kernel's first launch in a one-layer BERT-base-width integer forward
    (run under TRITON_INTERPRET=1; tensors are kept as their dtypes)."""
    from transformers import BertConfig, BertModel

    from lowbit.intonly.blocks import IntBertModel, IntConfig

    seen: dict = {}

    class Recorder:
        def __init__(self, name, fn):
            self.name, self.fn = name, fn

        def __getitem__(self, grid):
            def launch(*args, **kw):
                seen.setdefault(self.name, (kw.get("num_warps", 4),
                                            [a.dtype if isinstance(a, torch.Tensor) else a for a in args]))
                return self.fn[grid](*args, **kw)
            return launch

    originals = {n: getattr(K, n) for n in KERNELS}
    for n, fn in originals.items():
        setattr(K, n, Recorder(n, fn))
    try:
        torch.manual_seed(0)
        cfg = BertConfig(num_hidden_layers=1)
        g = torch.Generator().manual_seed(0)
        im = IntBertModel(BertModel(cfg).eval(), IntConfig()).calibrate(
            [{"input_ids": torch.randint(1000, cfg.vocab_size, (4, 64), generator=g)}]).eval()
        ids = torch.randint(1000, cfg.vocab_size, (1, 16), generator=g)
        im.integer_forward(im._backend("kernel"), ids, torch.ones_like(ids), torch.zeros_like(ids))
        # the calibrated graph runs each attention as one fused kernel (gemm_regs.py reports it); the Shiftmax
        # kernel runs where that one does not apply: record it from the composed steps
        im.integer_forward(_Composed(), ids, torch.ones_like(ids), torch.zeros_like(ids))
    finally:
        for n, fn in originals.items():
            setattr(K, n, fn)
    return seen


def compile_sm90(name: str, args, num_warps: int, tiles: dict | None = None) -> dict:
    """Compile kernel `name` for sm_90 with the recorded args (constexpr overrides in tiles); resource usage, and for
    I-LayerNorm the SASS a thread executes (ln_executed)."""
    fn = getattr(K, name)
    args = list(args)
    for key, v in (tiles or {}).items():
        args[fn.arg_names.index(key)] = v
    consts = {n: a for n, a, p in zip(fn.arg_names, args, fn.params) if p.is_constexpr}
    types = {n: PTR[a] if isinstance(a, torch.dtype) else "i32" for n, a, p in zip(fn.arg_names, args, fn.params)
             if not p.is_constexpr}
    ln = name == "_layernorm_kernel"
    # I-LayerNorm's arguments marked divisible by 16, as the JIT specializes them at BERT's shapes (rows, C = 768,
    # strides, pointers): its x loads are then 128-bit, as on the device
    c = compile_sm90_cubin(fn, consts, types, divisible=ln or (), num_warps=num_warps)
    r = {"registers": c.registers, "stack": c.stack, "sass": c.instructions()}
    if ln:
        r["executed"] = ln_executed(c, consts, args[fn.arg_names.index("C")])
    return r


def ln_executed(c, consts: dict, channels: int) -> int:
    """SASS instructions a thread of _layernorm_kernel executes (counted statically, loops weighted): its loops in
    program order are the column passes (cdiv(C, BLOCK_C) trips each) around the Newton while loop (ITERATIONS - 1),
    or that loop alone when the row is in registers (ONE_CHUNK)."""
    newton, chunks = [consts["ITERATIONS"] - 1], [triton.cdiv(channels, consts["BLOCK_C"])]
    trips = newton if consts["ONE_CHUNK"] else chunks + newton + chunks
    bodies = c.loop_bodies()
    assert len(bodies) == len(trips), f"_layernorm_kernel: loops {bodies}, expected {len(trips)}"
    return c.instructions() + sum((t - 1) * b for t, b in zip(trips, bodies))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-tiles", action="store_true",
                    help="4096-value tiles, 4 warps, as before the H100 timing (I-LayerNorm 4 rows x 1024)")
    ap.add_argument("--sweep", action="store_true",
                    help="I-LayerNorm at every option benchmarks/intonly_gpu.py --sweep times (launched at 32 x 128 "
                         "and 32 x 384) instead of TILES")
    ap.add_argument("--record", help=argparse.SUPPRESS)  # internal: the interpreter run writes its launches here
    a = ap.parse_args()
    if a.record:
        with open(a.record, "wb") as f:
            pickle.dump(record(), f)
        return
    with tempfile.NamedTemporaryFile(suffix=".pkl") as f:  # the kernels compile only outside the interpreter
        subprocess.run([sys.executable, __file__, "--record", f.name], check=True,
                       env=os.environ | {"TRITON_INTERPRET": "1"})
        launches = pickle.load(open(f.name, "rb"))
    old = {"_rq_kernel": {"BLOCK_M": 4, "BLOCK_N": 1024}, "_shift_gelu_kernel": {"BLOCK_M": 4, "BLOCK_N": 1024},
           "_layernorm_kernel": {"BLOCK_M": 4, "BLOCK_C": 1024}, "_shiftmax_kernel": {"BLOCK_M": 256, "BLOCK_T": 16}}
    for name, (warps, args) in launches.items():
        for label, over in variants(name, args, a.sweep):
            tiles = (old.get(name) if a.old_tiles else None) or {}
            tiles = tiles | over
            warps = tiles.pop("num_warps", warps)
            r = compile_sm90(name, args, 4 if a.old_tiles else warps, tiles)
            fn = getattr(K, name)
            shape = {k: args[fn.arg_names.index(k)] for k in fn.arg_names if k.startswith("BLOCK_")} | tiles
            shape = {k: v for k, v in shape.items() if k.startswith("BLOCK_")}
            threads = 32 * (4 if a.old_tiles else warps)
            if "executed" in r:  # I-LayerNorm: per value of the rows (C = 768 of a padded one-chunk tile)
                per = shape["BLOCK_M"] * args[fn.arg_names.index("C")] / threads
                note = (f"{r['executed'] / per:.0f} executed per value, {per:g} values a thread, "
                        f"stages {tiles['STAGES']}")
            else:
                per = shape_values(shape) // threads
                note = f"{r['sass'] / max(per, 1):.0f} per value, {per} values a thread"
            print(f"{name + label:28s} warps {4 if a.old_tiles else warps}  tile {shape}  registers "
                  f"{r['registers']:3d}  stack {r['stack']:4d} B  SASS instructions {r['sass']:5d} ({note})",
                  flush=True)


def shape_values(shape: dict) -> int:
    v = 1
    for n in shape.values():
        v *= n
    return v


def ln_launch(rows: int, option: tuple[int, ...] | None = None) -> dict:
    """The constexprs and warps of K.ln_tile at rows x 768, with TILES["layernorm"] = option if given."""
    saved = K.TILES["layernorm"]
    K.TILES["layernorm"] = option or saved
    try:
        return dict(zip(("BLOCK_M", "BLOCK_C", "num_warps", "STAGES", "ONE_CHUNK"), K.ln_tile(rows, 768)))
    finally:
        K.TILES["layernorm"] = saved


def ln_sweep() -> list[tuple[str, dict]]:
    """Every SWEEP["layernorm"] option of benchmarks/intonly_gpu.py as launched at 32 x 128 and 32 x 384."""
    spec = importlib.util.spec_from_file_location("intonly_gpu", Path(__file__).with_name("intonly_gpu.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return [(f" {opt} 32x{t}", ln_launch(rows, opt)) for opt in bench.SWEEP["layernorm"]
            for t, rows in ((128, 4096), (384, 12288))]


def variants(name: str, args, sweep: bool = False) -> list[tuple[str, dict]]:
    """(label, constexpr overrides) to compile: the launch as recorded, and for the kernels with an int32 path
    (I32) the int64 fallback too; Shiftmax also at the tiles of T = 128 and 384 (TILES["shiftmax"]); I-LayerNorm at
    the launcher's tiles for BERT-base batch 1, 8 and 32 x 128 and 32 x 384 (K.ln_tile) and with the mean by long
    division, or with ``sweep`` at every option of the on-device sweep."""
    fn = getattr(K, name)
    if name == "_layernorm_kernel":
        if sweep:
            return ln_sweep()
        return [(" 1x128", ln_launch(128)), (" 8x128", ln_launch(1024)), (" 32x128", ln_launch(4096)),
                (" 32x384", ln_launch(12288)),
                (" 32x128 mean div", ln_launch(4096) | {"MEAN_M": 0, "MEAN_SH": 0, "MEAN_K": 0})]
    if "I32" not in fn.arg_names:
        return [("", {})]
    get = lambda k: args[fn.arg_names.index(k)]  # noqa: E731
    out = [(" int32", {}), (" int64", {"I32": False})]
    if name == "_shiftmax_kernel" and get("I32"):
        from lowbit.intonly.ops import IntSoftmax, ShiftExp

        op = IntSoftmax(ShiftExp(get("X0"), get("N")), get("OUT_BITS"))
        values, _ = K.TILES["shiftmax"]
        for t in (128, 384):
            block_t = triton.next_power_of_2(t)
            m, sh, rs, rbits = K.shiftmax_i32(op, 16, block_t)
            tile = {"BLOCK_M": K._block_m(block_t, values), "BLOCK_T": block_t}
            out += [(f" int32 T={t}", tile | {"DIV_M": m, "DIV_SH": sh, "RS": rs, "RBITS": rbits}),
                    (f" int64 T={t}", tile | {"I32": False})]
    return out


if __name__ == "__main__":
    main()

"""Registers, stack (spills), shared memory and MMA instructions of the linear GEMM with the requantizing epilogue
(``lowbit.kernels.intonly_gemm._linear_rq_kernel``) and of the fused attention (``_attention_kernel``) for sm_90
(H100), without a GPU: benchmarks/kernel_regs.py's method (``triton.compile`` for a ``GPUTarget``, then the
``cuobjdump`` Triton ships) at BERT-base's shapes.

    PYTHONPATH=src .venv/bin/python benchmarks/gemm_regs.py            # the tiles of intonly_gemm.TILES
    PYTHONPATH=src .venv/bin/python benchmarks/gemm_regs.py --sweep    # every option intonly_gpu.py --sweep times
    PYTHONPATH=src .venv/bin/python benchmarks/gemm_regs.py --sweep --only attention  # both attention variants

Each tile is compiled for the three epilogues the graph launches: Q/K/V (one term, int8 out), FC1 (one term, 16-bit
codes in int32) and O / FC2 (the residual sum, 16-bit), with the 32-bit requantization calibrated BERT-base takes
(intonly.hi_word_modes' mode 2; ``--int64`` adds the int64 one beside it). Integer arguments and pointers are marked divisible by 16,
as the JIT specializes them at BERT's shapes (M = batch x tokens, N and K multiples of 768): without that the int8
tile loads are not vectorized, every element keeps its own 64-bit address, and any tile reads 255 registers.
The attention is compiled at head dim 64 with the key mask, for the int32 and the int64 Shiftmax paths, the
three-sweep kernel (``_attention_kernel``) and the one-pass one (``_onepass_attention_kernel``, at T_PAD 128 and 512);
for each, the SASS a thread executes per score it owns at T_PAD keys, counted statically: the instructions outside
the key loops once, those inside (bodies between a backward branch and its target) T_PAD / BLOCK_N times.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path


from lowbit.bench.sass import compile_sm90 as compile_sm90_cubin
from lowbit.kernels import intonly_gemm as G

# (label, output pointer, LO, HI, TWO): the epilogues of the graph (bits 8 -> int8 out, 16 -> int32 out)
EPILOGUES = (("qkv: 1 term, int8", "*i8", 8, False), ("fc1: 1 term, 16-bit", "*i32", 16, False),
             ("o/fc2: residual, 16-bit", "*i32", 16, True))


def compile_sm90(fn, consts: dict, ptrs: dict, warps: int, stages: int) -> dict:
    """Compile ``fn`` for sm_90 with ``consts`` for its constexprs and ``ptrs`` for pointer types (other pointers
    int64, other arguments int32); every runtime argument is marked divisible by 16."""
    c = compile_sm90_cubin(fn, consts, ptrs, True, warps, stages)
    return {"registers": c.registers, "stack": c.stack, "shared": c.shared, "mma": c.mma(),
            "instructions": c.instructions(), "looped": looped(c.sass)}


def looped(sass: str) -> int:
    """SASS instructions inside loops: the union of [target, branch] over backward branches."""
    body = set()
    for at, to in re.findall(r"^\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?BRA(?:\.\w+)* 0x([0-9a-f]+)", sass, re.M):
        if int(to, 16) < int(at, 16):
            body.update(range(int(to, 16), int(at, 16) + 16, 16))
    return len(body)


def per_score(r: dict, block_m: int, block_n: int, warps: int, t_pad: int) -> float:
    """SASS instructions a thread executes per score it owns, at t_pad keys (loops run t_pad / block_n times)."""
    return (r["instructions"] - r["looped"] + r["looped"] * t_pad // block_n) / (block_m * t_pad / (32 * warps))


def compile_linear(bm: int, bn: int, bk: int, warps: int, stages: int, out_ptr: str, bits: int, two: bool,
                   hi_word: int = 2, persist: bool = False) -> dict:
    """hi_word: the epilogue's requantization (intonly.hi_word_modes), 2 the 32-bit one calibrated BERT-base's GEMMs
    take, 0 the int64 one. persist: the persistent launch's flattened tile loop (intonly_gemm.PERSIST)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    consts = dict(LO=lo, HI=hi, LO1=2 * lo, HI1=2 * hi + 1, HAS_BIAS=False, HAS_LIN_BIAS=True, TWO=two,
                  HI_WORD=hi_word, HI_WORD2=hi_word or 1, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PERSIST=persist,
                  WS=False, GELU=False)
    consts.update(dict.fromkeys(("G_LO", "G_HI", "X0", "N_EXP", "EXP_ABITS", "EXP_QBITS", "E0", "G_BITS", "DIV_ABITS",
                                 "G_I32", "DIV_M", "DIV_SH", "G_RQ"), 0))  # no GELU in the epilogue
    return compile_sm90(G._linear_rq_kernel, consts, dict(x_ptr="*i8", w_ptr="*i8", z2_ptr="*i32", out_ptr=out_ptr),
                        warps, stages)


# the score requantization calibrated BERT-base takes (intonly.hi_word_modes: c 30-31 with 21-bit scores -> 2);
# --int64 compiles the int64 one (0) instead
SCORE_RQ = 2
# (label, Shiftmax input scale, deferred normalisation): 0.05 (|X0| = 20, int32), 1e-5 (|X0| = 100000, int64),
# and the deferred kernel (the default) at a BERT-like 16-bit score scale (|X0| = 333)
ATTENTION_PATHS = (("int32 Shiftmax", 0.05, False), ("int64 Shiftmax", 1e-5, False), ("deferred", 0.003, True))


def compile_attention(bm: int, bn: int, warps: int, stages: int, scale: float, t_pad: int, one: bool,
                      deferred: bool = False) -> dict:
    """The three-sweep kernel (bn keys a step), or with ``one`` the one-pass kernel (bm x t_pad scores held)."""
    from lowbit.intonly.ops import IntSoftmax

    op = IntSoftmax.build(scale, "shift", 7, deferred=deferred)
    consts = G.softmax_consts(op, 16, t_pad) | dict(LO=-(1 << 15), HI=(1 << 15) - 1, HAS_MASK=True,
                                                     SCORE_RQ=SCORE_RQ, HEAD_D=64, BLOCK_M=bm, BLOCK_N=bn, T_PAD=t_pad,
                                                     NONNEG=True)  # calibrated scores: b > 0, known on the host
    kernel = G._onepass_attention_kernel if one else G._attention_kernel
    return compile_sm90(kernel, consts, dict(q_ptr="*i8", k_ptr="*i8", v_ptr="*i8", out_ptr="*i8", mask_ptr="*i8"),
                        warps, stages)


def configs(sweep: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(family, tile) of intonly_gemm.TILES, or every --sweep option (GEMM_SWEEP of benchmarks/intonly_gpu.py)."""
    if not sweep:
        return list(G.TILES.items())
    spec = importlib.util.spec_from_file_location("intonly_gpu", Path(__file__).with_name("intonly_gpu.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return [(fam, opt) for fam, opts in bench.GEMM_SWEEP.items() for opt in opts]


def report(label: str, tile: str, r: dict, extra: str = "") -> None:
    print(f"{label:52s} {tile:30s} registers {r['registers']:3d}  stack {r['stack']:4d} B  "
          f"shared {r['shared'] // 1024:3d} KiB  {','.join(r['mma'])}{extra}", flush=True)


def report_attention(fam: str, tile: tuple[int, ...]) -> None:
    """The three-sweep tile (BLOCK_M, BLOCK_N, warps, stages) at T_PAD 128 and 512, or the one-pass (VALUES, warps)
    at each T_PAD where it runs (BLOCK_M = min(64, VALUES // T_PAD) >= 16, as the launcher picks)."""
    for label, scale, deferred in ATTENTION_PATHS:
        for t_pad in (128, 512):
            if fam == "attention":
                (bm, bn, warps, stages), name = tile, f"{tile[0]}x{tile[1]} warps {tile[2]} stages {tile[3]}"
            else:
                (bm, bn, warps, stages), name = (min(64, tile[0] // t_pad), t_pad, tile[1], 1), f"{tile} "
                if bm < 16:
                    continue
                name += f"{bm}x{t_pad} warps {warps}"
            r = compile_attention(bm, bn, warps, stages, scale, t_pad, fam != "attention", deferred)
            report(f"{fam} {label} T_PAD {t_pad}", name, r,
                   f"  SASS {r['instructions']} ({r['looped']} looped), "
                   f"{per_score(r, bm, bn, warps, t_pad):.1f} a score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", action="store_true", help="every tile benchmarks/intonly_gpu.py --sweep times")
    ap.add_argument("--only", choices=("linear", "attention"), help="only the linears or only the attention")
    ap.add_argument("--int64", action="store_true", help="the linears' int64 requantization epilogue too, and the "
                    "attention with its int64 score requantization")
    a = ap.parse_args()
    global SCORE_RQ
    SCORE_RQ = 0 if a.int64 else 2
    for fam, tile in configs(a.sweep):
        if fam.startswith("attention") and a.only != "linear":
            report_attention(fam, tile)
        elif not fam.startswith("attention") and a.only != "attention":
            bm, bn, bk, warps, stages = tile
            for label, out_ptr, bits, two in EPILOGUES:
                for hi_word in (2, 0) if a.int64 else (2,):
                    r = compile_linear(bm, bn, bk, warps, stages, out_ptr, bits, two, hi_word)
                    report(f"{fam} {label}{', int64 rq' if not hi_word else ''}",
                           f"{bm}x{bn}x{bk} warps {warps} stages {stages}", r, f"  SASS {r['instructions']}")


if __name__ == "__main__":
    main()

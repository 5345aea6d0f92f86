"""Device script for issue 4: check the engine's kernels against its reference graph on CUDA, then time
`lowbit bench encoder` shapes, writing results under $OUT after every row (a timeout still leaves them).

    PYTHONPATH=src python benchmarks/encoder_h100.py bert-base 1,128,8,32 128,384 [--check] [--no-stages]

Per-layer check (CUDA; < 90 s on an H100): layer i of the kernel graph and of the reference graph run on the
same input, the reference's input to layer i, for W8A8-INT8, W4A4-INT and W4A4-FP4 (lowbit.engine.compare says
what free / alone / op mean); the first batch and sequence length give the padded batch (row 1 is 60 % real):

    PYTHONPATH=src python benchmarks/encoder_h100.py bert-base 4 100 --check-layers --only-check

The same on the CPU under the Triton interpreter, on a tiny random BERT (fp32):

    TRITON_INTERPRET=1 PYTHONPATH=src python benchmarks/encoder_h100.py tiny 2 9 --check-layers --only-check --cpu

Sensitivity (CPU, no kernels): the reference graph of random BERT-base run twice, once with every element of the
first LayerNorm's input moved by one rounding step (fp32: x (1 ± 2^-11); --fp16: one fp16 ulp, random signs);
prints the per-token cosine of the two runs after each layer (and of the quantized graph against the float one):

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/encoder_h100.py bert-base 4 100 --sensitivity [--fp16]

Offline (no GPU): sm_90 registers, spills and SASS of the engine's GEMM (fused._gemm_kernel) per output tile at
M = batch x seq of the model's FC1 and FC2, for the W4A4 A layouts (packed codes as before, held int8 codes now)
and the per-channel option, with the tiles `qgemm.choose_config` picks:

    PYTHONPATH=src python benchmarks/encoder_h100.py bert-base 128 128 --regs --only-check
"""
import argparse
import json
import os
import time

import torch

import lowbit  # noqa: F401
import lowbit.kernels  # noqa: F401
from lowbit.bench import encoder
from lowbit.engine import Engine, compare

OUT = os.environ.get("OUT", "bench-out")
CHECK_SCHEMES = ("w8a8-int8", "w4a4-int", "w4a4-fp4")
SHAPES = {**encoder.SHAPES, "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=256)}


def _inputs(b: int = 4, s: int = 100, vocab: int = 30522) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (B, S) and a mask that pads row 1 after 60 % of its tokens."""
    ids = torch.randint(1000, 2000, (b, s)) if vocab > 2000 else torch.randint(4, vocab, (b, s))
    mask = torch.ones_like(ids)
    mask[min(1, b - 1), max(1, s * 3 // 5):] = 0
    return ids, mask


def _model(name: str, device: str, dtype):
    """The benchmark's model on CUDA (`encoder.build_model`); a random shape of SHAPES built on the CPU (other
    random values than on CUDA), and the tiny one anywhere."""
    if device == "cuda" and name in encoder.SHAPES or name not in SHAPES:
        return encoder.build_model(name, dtype)
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    vocab = dict(vocab_size=120) if name == "tiny" else {}
    return BertModel(BertConfig(**SHAPES[name], **vocab, attn_implementation="sdpa")).to(device, dtype).eval()


def check() -> None:
    """Kernel graph vs reference graph (same fp16 model, random BERT-base shape, padded batch): cosine per token."""
    base = encoder.build_model("bert-base")
    ids, mask = _inputs()
    b = {"input_ids": ids, "attention_mask": mask}
    ref_fp = Engine.from_float(base, device="cuda", graphs=False).hidden_states(b)[0].float()
    for s in CHECK_SCHEMES:
        q = encoder._quantized(base, s)
        k = Engine.from_quantized(q, device="cuda").hidden_states(b)[0].float()
        r = Engine.from_quantized(q, device="cuda", backend="reference", graphs=False).hidden_states(b)[0].float()
        keep = mask.bool().cuda()
        cos = torch.nn.functional.cosine_similarity(k[keep], r[keep], dim=-1)
        cos_fp = torch.nn.functional.cosine_similarity(k[keep], ref_fp[keep], dim=-1)
        print(f"check {s}: kernels vs reference graph cos min {cos.min():.6f} mean {cos.mean():.6f}; "
              f"vs fp16 (random weights) mean {cos_fp.mean():.4f}", flush=True)
        del q


def _cell(name: str, st: dict) -> str:
    out = name
    if "cos" in st:
        out += " {:.6f}/{:.6f}".format(*st["cos"])
    if "codes cos" in st:
        out += " codes {:.6f}/{:.6f} ({:.2%})".format(*st["codes cos"], st["flips"])
    return out


def check_layers(name: str, b: int, s: int, device: str = "cuda", schemes=CHECK_SCHEMES) -> dict:
    """Per layer and per stage: kernel engine vs reference engine on the reference's layer inputs (printed)."""
    dtype = torch.float16 if device == "cuda" else torch.float32
    base = _model(name, device, dtype)
    ids, mask = _inputs(b, s, base.config.vocab_size)
    print(f"check-layers {name} {b} x {s} on {device} {dtype}: per-token cosine min/mean over real tokens; "
          "codes: decoded activation codes (share of codes that differ)", flush=True)
    result = {}
    for sch in schemes:
        q = encoder._quantized(base, sch)
        kern = Engine.from_quantized(q, device=device, backend="kernels", graphs=False)
        ref = Engine.from_quantized(q, device=device, backend="reference", graphs=False)
        rows = result[sch] = compare.compare_layers(kern, ref, ids, mask)
        for r in rows:
            print(f"{sch} layer {r['i']:2d}  free {r['free'][0]:.6f}/{r['free'][1]:.6f}", flush=True)
            for mode in ("alone", "op"):
                print(f"    {mode:5s}  " + "  ".join(_cell(n, st) for n, st in r[mode].items()), flush=True)
        del q, kern, ref
    os.makedirs(OUT, exist_ok=True)
    with open(f"{OUT}/check-layers-{name}.json", "w") as f:
        json.dump(result, f, indent=1)
    return result


def _one_ulp(rel: float, frac: float = 1.0, seed: int = 1):
    """perturb(x): a random share `frac` of the elements moved by one rounding step with a random sign (fp16: one
    ulp; otherwise x (1 ± rel))."""
    def perturb(x):
        g = torch.Generator(device=x.device).manual_seed(seed)
        sign = (torch.randint(0, 2, x.shape, generator=g, device=x.device) * 2 - 1).to(x.dtype)
        sign = sign * (torch.rand(x.shape, generator=g, device=x.device) < frac).to(x.dtype)  # 0: unchanged
        if x.dtype == torch.float16:
            return torch.where(sign == 0, x, torch.nextafter(x, sign * float("inf")))  # 0 * inf: nan, masked out
        return x * (1 + rel * sign)
    return perturb


def sensitivity(name: str = "bert-base", b: int = 4, s: int = 100, dtype=torch.float32, rel: float = 2 ** -11,
                frac: float = 1.0, schemes=CHECK_SCHEMES) -> dict:
    """Reference graph (CPU) clean vs with a one-rounding-step change of the first LayerNorm's input, per layer."""
    base = _model(name, "cpu", torch.float32)
    ids, mask = _inputs(b, s, base.config.vocab_size)
    fp = Engine.from_float(base, device="cpu", dtype=dtype)
    x = compare.prepare(fp, ids, mask)
    fp_states = compare.layer_states(fp, x)
    print(f"sensitivity {name} {b} x {s} cpu {dtype}, {frac:.0%} of the inputs moved: per-token cosine min/mean over "
          "real tokens after each layer (L0: the first LayerNorm's output), perturbed vs clean; [quantized vs float, "
          "mean]", flush=True)
    result = {}
    for sch in ("float", *schemes):
        eng = fp if sch == "float" else Engine.from_quantized(encoder._quantized(base, sch), device="cpu",
                                                              backend="reference", dtype=dtype)
        clean, pert = compare.layer_states(eng, x), compare.layer_states(eng, x, _one_ulp(rel, frac))
        rows = result[sch] = [{"perturbed": compare.token_cos(p[0], c[0], x.keep),
                               "vs float": compare.token_cos(c[0], f[0], x.keep)}
                              for c, p, f in zip(clean, pert, fp_states)]
        print(f"{sch:10s} " + "  ".join("L{} {:.5f}/{:.5f} [{:.3f}]".format(i, *r["perturbed"], r["vs float"][1])
                                        for i, r in enumerate(rows)), flush=True)
    return result


# (label, A_KIND, GEMM weight kind, MODE, GROUP): the engine's W4A4 GEMM at prefill M (weights unpacked at build)
REGS_VARIANTS = (("w4a4-int, packed A (before)", 3, 1, 1, 128), ("w4a4-int, held int8 A (now)", 1, 1, 1, 128),
                 ("w4a4-int-channel, held A (= w8a8)", 1, 1, 0, 0))


def regs(name: str, b: int, s: int) -> list[dict]:
    """sm_90 compile of the engine GEMM for FC1 (GELU) and FC2 (residual) of `name` at M = b * s (printed)."""
    from lowbit.bench.sass import compile_sm90
    from lowbit.engine import fused
    from lowbit.kernels.qgemm import choose_config

    cfg_m = SHAPES[name]
    h, f, m = cfg_m["hidden_size"], cfg_m["intermediate_size"], b * s
    fn, rows = fused._gemm_kernel, []
    for gemm, n, k, gelu in (("fc1", f, h, True), ("fc2", h, f, False)):
        for label, a_kind, w_kind, mode, group in REGS_VARIANTS:
            c = choose_config(m, n, k, a_kind, w_kind, mode, group)
            cx = dict(A_KIND=a_kind, W_KIND=w_kind, MODE=mode, GROUP=group, HAS_BIAS=True, GELU=gelu,
                      HAS_RES=not gelu, EVEN_K=k % c.bk == 0, BM=c.bm, BN=c.bn, BK=c.bk, GROUP_M=c.group_m)
            ptrs = dict(a_ptr="*u8" if a_kind == 3 else "*i8", w_ptr="*i8", sa_ptr="*fp32", sw_ptr="*fp32",
                        aux_ptr="*fp32", bias_ptr="*fp16", res_ptr="*fp16", out_ptr="*fp16")
            cub = compile_sm90(fn, cx, ptrs, True, c.num_warps, c.num_stages)
            ops = cub.opcodes()
            r = dict(gemm=f"{gemm} {m}x{n}x{k}", variant=label, tile=f"{c.bm}x{c.bn}x{c.bk}/{c.num_warps}w/"
                     f"{c.num_stages}s", registers=cub.registers, stack=cub.stack, shared=cub.shared,
                     sass=cub.instructions(), **{op: ops[op] for op in ("PRMT", "LOP3", "SHF", "I2FP", "FFMA")})
            rows.append(r)
            print("  ".join(f"{k_}={v}" for k_, v in r.items()), flush=True)
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="bert-base, bert-large, a local/packaged encoder, or tiny (CPU checks)")
    p.add_argument("batches", type=lambda v: [int(x) for x in v.split(",")])
    p.add_argument("seqs", type=lambda v: [int(x) for x in v.split(",")])
    p.add_argument("--check", action="store_true", help="whole-graph kernels vs reference check (bert-base)")
    p.add_argument("--check-layers", action="store_true", help="per-layer, per-stage kernels vs reference")
    p.add_argument("--sensitivity", action="store_true", help="CPU: growth of a one-ulp input change per layer")
    p.add_argument("--fp16", action="store_true", help="--sensitivity in fp16 (default fp32)")
    p.add_argument("--frac", type=float, default=1.0, help="--sensitivity: share of the inputs moved")
    p.add_argument("--cpu", action="store_true", help="--check-layers on the CPU (needs TRITON_INTERPRET=1)")
    p.add_argument("--schemes", type=lambda v: v.split(","), default=list(CHECK_SCHEMES),
                   help="--check-layers / --sensitivity schemes (default %(default)s)")
    p.add_argument("--regs", action="store_true", help="offline sm_90 registers / SASS of the engine GEMM")
    p.add_argument("--only-check", action="store_true", help="skip the timing")
    p.add_argument("--no-stages", action="store_true", help="timing without the per-stage breakdown")
    p.add_argument("--time-schemes", type=lambda v: tuple(v.split(",")), default=encoder.SCHEMES,
                   help=f"schemes timed (default {','.join(encoder.SCHEMES)})")
    return p.parse_args(argv)


def main() -> None:
    a = parse_args()
    name, b0, s0 = a.name, a.batches[0], a.seqs[0]
    for flag, run in [("check", check),
                      ("check_layers", lambda: check_layers(name, b0, s0, "cpu" if a.cpu else "cuda", a.schemes)),
                      ("sensitivity", lambda: sensitivity(name, b0, s0, torch.float16 if a.fp16 else torch.float32,
                                                       frac=a.frac, schemes=a.schemes)),
                      ("regs", lambda: regs(name, b0, s0))]:
        if getattr(a, flag):
            t = time.time()
            run()
            print(f"{flag.replace('_', '-')} took {time.time() - t:.0f} s", flush=True)
    if a.only_check or a.sensitivity:
        return
    rows = []

    def log(r):
        print(r, flush=True)
        if isinstance(r, dict):
            rows.append(r)
            meta = {"gpu": torch.cuda.get_device_name(), "commit": os.environ.get("LOWBIT_COMMIT", ""),
                    "torch": torch.__version__}
            with open(f"{OUT}/encoder-{name}.md", "w") as f:
                f.write(f"{meta}\n\n" + encoder.to_markdown(rows, a.time_schemes))
            with open(f"{OUT}/encoder-{name}.json", "w") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)

    encoder.run_encoder(name, a.batches, a.seqs, a.time_schemes, log=log, stages=not a.no_stages)


if __name__ == "__main__":
    main()

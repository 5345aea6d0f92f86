"""Perplexity table of the post-training methods on a decoder: the packaged SmolLM2-135M or a local one (CPU).

Evaluation: the first --max-tokens tokens of the held-out Wikipedia split (`load_texts("wiki", "eval")`),
windows of 512 tokens, stride --stride. Calibration: --calib-samples windows of --calib-len tokens drawn from
the disjoint split (`load_texts("wiki", "calib")`), or random tokens where a row says so.

The default model is SmolLM2 as packaged: weights de-quantized from GGUF Q4_1 (4-bit blocks of 32), so
absolute "loss vs full precision" claims do not hold (MODELS.md); rankings between methods do. Group size 64
for it (128 does not divide the hidden size 576; 32 would sit on the GGUF blocks). Any local Hugging Face
decoder directory runs the same rows (`--model DIR --group 128 --ref-label ...`), e.g. the full-precision one
that benchmarks/train_decoder.py trains.

    .venv/bin/python benchmarks/ptq_smollm2.py --out runs/ptq_smollm2.jsonl
    .venv/bin/python benchmarks/ptq_smollm2.py --model runs/decoder --group 128 --max-tokens 65536 \
        --calib-samples 32 --calib-len 512 --ref-label "fp32 (bf16-trained, self-trained full-precision reference)" --out runs/ptq_decoder.jsonl
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from lowbit import quantize
from lowbit.data import calibration_batches, load_model, load_texts, random_token_batches
from lowbit.eval import perplexity
from lowbit.eval.perplexity import encode_texts
from lowbit.scheme import QuantSpec, Scheme

GGUF_REF = "fp32 (de-quantized GGUF reference)"


def w(fmt: str, rule: str = "absmax", g: int | None = None) -> QuantSpec:
    return QuantSpec(fmt, "group" if g else "channel", g, scale_rule=rule)


def tok_act(fmt: str) -> QuantSpec:
    return QuantSpec(fmt, "token", dynamic=True)


def static_act(fmt: str) -> QuantSpec:
    return QuantSpec(fmt, "tensor", dynamic=False)


def S(name: str, ws: QuantSpec, act: QuantSpec | None = None, methods=(), **args) -> Scheme:
    return Scheme(name, ws, act, methods=tuple(methods),
                  method_args=tuple((m, tuple(sorted(kv.items()))) for m, kv in args.items()))


FP = tok_act("fp8_e4m3")
I8 = tok_act("int8")


def rows(g: int, ref: str) -> list[tuple[str, Scheme | None, str]]:
    """(label, scheme or None for the reference, calibration data) per row; 4-bit weights in groups of g."""
    def wg(fmt: str, rule: str = "absmax") -> QuantSpec:
        return w(fmt, rule, g)

    return [
        (ref, None, "text"),
        ("W8A8-INT8 (per-channel W, per-token A)", S("w8a8-int8", w("int8"), I8), "text"),
        ("W8A8-FP8 (per-channel W, per-token A)", S("w8a8-fp8", w("fp8_e4m3"), FP), "text"),
        ("W8A16-FP8 (per-channel W, weight-only; where W8A8-FP8 loses)", S("w8a16-fp8", w("fp8_e4m3")), "text"),
        ("W8A8-FP8, MSE weight scales",
         S("w8a8-fp8-mse", QuantSpec("fp8_e4m3", "channel", observer="mse"), FP), "text"),
        ("W8A8-FP8 + GPTQ", S("w8a8-fp8-gptq", w("fp8_e4m3"), FP, ["gptq"]), "text"),
        ("W8A8-INT8, per-tensor static A", S("w8a8-int8-static", w("int8"), static_act("int8")), "text"),
        ("W8A8-FP8, per-tensor static A", S("w8a8-fp8-static", w("fp8_e4m3"), static_act("fp8_e4m3")), "text"),
        (f"W4A16 INT4 g{g} RTN", S("w4a16", wg("int4")), "text"),
        (f"W4A16 INT4 g{g} GPTQ", S("w4a16-gptq", wg("int4"), methods=["gptq"]), "text"),
        (f"W4A16 FP4 g{g} RTN", S("w4a16-fp4", wg("fp4_e2m1")), "text"),
        ("W4A8-INT RTN (per-token A)", S("w4a8-int", wg("int4"), I8), "text"),
        ("W4A8-INT RTN, per-tensor static A everywhere", S("w4a8-int-static", wg("int4"), static_act("int8")), "text"),
        ("W4A8-INT SmoothQuant a=0.5 (per-token A)", S("w4a8-int-sq", wg("int4"), I8, ["smoothquant"]), "text"),
        ("W4A8-INT FPTQ (LAE + policy v0=15, v1=150)", S("w4a8-int-fptq", wg("int4"), I8, ["fptq"]), "text"),
        ("W4A8-INT FPTQ, random-token calibration", S("w4a8-int-fptq-rand", wg("int4"), I8, ["fptq"]), "random"),
        ("W4A8-INT FPTQ + GPTQ", S("w4a8-int-fptq-gptq", wg("int4"), I8, ["fptq", "gptq"]), "text"),
        ("W4A8-FP RTN, unconstrained scales", S("w4a8-fp", wg("fp4_e2m1"), FP), "text"),
        ("W4A8-FP RTN, M1 (pow2 group scales)", S("w4a8-fp-m1", wg("fp4_e2m1", "pow2"), FP), "text"),
        ("W4A8-FP RTN, M2 (row scale x pow2 ratios)", S("w4a8-fp-m2", wg("fp4_e2m1", "pow2_row"), FP), "text"),
        ("W4A8-FP unconstrained + LoRC r8", S("w4a8-fp-lorc", wg("fp4_e2m1"), FP, ["lorc"]), "text"),
        ("W4A8-FP M1 + LoRC r8", S("w4a8-fp-m1-lorc", wg("fp4_e2m1", "pow2"), FP, ["lorc"]), "text"),
        ("W4A8-FP M2 + LoRC r8", S("w4a8-fp-m2-lorc", wg("fp4_e2m1", "pow2_row"), FP, ["lorc"]), "text"),
        ("W4A8-FP M2 + GPTQ", S("w4a8-fp-m2-gptq", wg("fp4_e2m1", "pow2_row"), FP, ["gptq"]), "text"),
        ("W4A4-INT RTN (per-token A)", S("w4a4", wg("int4"), tok_act("int4")), "text"),
        ("W4A4-INT rotation (RTN)", S("w4a4-rot", wg("int4"), tok_act("int4"), ["rotation"]), "text"),
        ("W4A4-INT rotation + GPTQ", S("w4a4-rot-gptq", wg("int4"), tok_act("int4"), ["rotation", "gptq"]), "text"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--stride", type=int, default=512)
    ap.add_argument("--calib-samples", type=int, default=4)
    ap.add_argument("--calib-len", type=int, default=128)
    ap.add_argument("--model", default="smollm2", help="packaged name or local Hugging Face decoder directory")
    ap.add_argument("--group", type=int, default=64, help="group size of the 4-bit weight rows")
    ap.add_argument("--ref-label", default=None,
                    help=f"label of the unquantized row (default: {GGUF_REF!r} for smollm2, else 'fp32 reference')")
    ap.add_argument("--only", default="", help="comma-separated substrings of row labels to run")
    ap.add_argument("--out", default="runs/ptq_smollm2.jsonl")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared 2-core machine more threads spin and run ~6x slower)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base, tok = load_model(a.model)
    base.eval()
    ids = encode_texts(tok, load_texts("wiki", split="eval"), a.max_tokens)
    calib = {"text": calibration_batches(load_texts("wiki", split="calib"), tok, a.calib_samples, a.calib_len,
                                         batch_size=4),
             "random": random_token_batches(base.config.vocab_size, a.calib_samples, a.calib_len, batch_size=4)}
    only = [s for s in a.only.split(",") if s]
    ref = a.ref_label or (GGUF_REF if a.model == "smollm2" else "fp32 reference")
    with open(a.out, "a") as f:
        for label, scheme, data in rows(a.group, ref):
            if only and not any(s in label for s in only):
                continue
            t0 = time.time()
            needs = False
            try:
                # rows without methods or static activations need no calibration pass (it only checks for NaN)
                needs = scheme is not None and (scheme.methods or not scheme.activations.dynamic
                                                if scheme.activations else scheme.methods)
                model = base if scheme is None else quantize(copy.deepcopy(base), scheme,
                                                             calib[data] if needs else None, progress=False)
                t1 = time.time()
                ppl = perplexity(model, ids, ctx=512, stride=a.stride, progress=False)
            except Exception as e:  # one failing row must not lose the others; it is reported, not hidden
                print(json.dumps({"row": label, "error": repr(e)}), flush=True)
                f.write(json.dumps({"row": label, "error": repr(e)}) + "\n")
                continue
            rec = {"row": label, "model": a.model, "scheme": scheme.to_dict() if scheme else None, "calib": data,
                   "ppl": ppl, "quantize_s": round(t1 - t0, 1), "eval_s": round(time.time() - t1, 1),
                   "max_tokens": a.max_tokens, "stride": a.stride,
                   "calib_tokens": a.calib_samples * a.calib_len,
                   "extras": {k: v for k, v in getattr(model, "lowbit_extras", {}).items()
                              if k in ("gptq_fallbacks", "rotation")}}
            rec["calib_tokens"] = rec["calib_tokens"] if needs else 0
            if scheme is not None and "fptq" in scheme.methods:
                modes = [v["mode"] for v in model.lowbit_extras["fptq"]["layers"].values()]
                rec["fptq_modes"] = {m: modes.count(m) for m in ("static", "lae+static", "dynamic")}
            print(json.dumps({k: rec[k] for k in ("row", "ppl", "quantize_s", "eval_s")} |
                             ({"fptq_modes": rec["fptq_modes"]} if "fptq_modes" in rec else {})), flush=True)
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()
            del model


if __name__ == "__main__":
    main()

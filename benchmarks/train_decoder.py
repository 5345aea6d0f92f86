"""Train a small full-precision Llama-architecture decoder on the packaged text, for the PTQ tables (issue 6).

No full-precision decoder LM ships offline (the packaged SmolLM2 was published as GGUF 4-bit, so its
"reference" already sits on a 4-bit grid; MODELS.md). This script makes one, self-trained and labelled so:

    # 1. CPU: a byte-level BPE tokenizer (vocab 8192) and token ids of the training text
    .venv/bin/python benchmarks/train_decoder.py prepare --dir .carry/decoder
    # 2. GPU (device tool, carry .carry): train, keep the best checkpoint on the validation text
    python3 benchmarks/train_decoder.py train --dir .carry/decoder --out $OUT/decoder
    # 3. CPU: copy the tokenizer beside the returned weights; load with lowbit.data.load_model(dir)
    .venv/bin/python benchmarks/train_decoder.py finish --dir .carry/decoder --model runs/decoder

Data: training text = the calibration half of the Wikipedia articles (`load_texts("wiki", "calib")`) + the
Lee news articles + the PTB and movie-review sentences; validation (early stopping) = every 10th Lee article, left out of
training; the PTQ tables evaluate on `load_texts("wiki", "eval")`, which training never sees. The tokenizer
is trained on the training text only. Architecture as SmolLM2 (RMSNorm, SwiGLU, GQA, RoPE, tied embeddings),
scaled down: hidden 384, 8 layers, 6 heads (2 KV heads), FFN 1024, so that group size 128 divides every
input width.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

CTX = 512
ARCH = dict(hidden_size=384, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=2,
            intermediate_size=1024, max_position_embeddings=CTX, rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=True, hidden_act="silu")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def texts() -> tuple[list[str], list[str]]:
    """(training documents, validation documents)."""
    from lowbit.data import load_texts

    lee = load_texts("lee")
    val = lee[::10]
    train = load_texts("wiki", split="calib") + [d for i, d in enumerate(lee) if i % 10] + load_texts("ptb") + load_texts("sst")
    return train, val


def prepare(d: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    train, val = texts()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(train, trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   model_max_length=CTX)
    d.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(d)
    eos = fast.eos_token_id
    for name, docs in (("train", train), ("val", val)):
        ids: list[int] = []
        for doc in docs:
            ids += fast(doc, add_special_tokens=False)["input_ids"] + [eos]
        torch.save(torch.tensor(ids, dtype=torch.int16), d / f"{name}.pt")
        print(f"{name}: {len(docs)} documents, {len(ids)} tokens")
    (d / "arch.json").write_text(json.dumps(ARCH | {"vocab_size": len(fast), "eos_token_id": eos,
                                                    "bos_token_id": eos}, indent=1))


def _batches(ids: torch.Tensor, batch: int, g: torch.Generator):
    starts = torch.randint(0, len(ids) - CTX - 1, (batch,), generator=g)
    return torch.stack([ids[s:s + CTX] for s in starts.tolist()])


@torch.no_grad()
def _val_loss(model, ids: torch.Tensor) -> float:
    model.eval()
    n = (len(ids) - 1) // CTX
    x = ids[: n * CTX].view(n, CTX)
    loss = 0.0
    for chunk in x.split(16):
        with torch.autocast(chunk.device.type, torch.bfloat16):
            loss += model(input_ids=chunk, labels=chunk).loss.item() * len(chunk)
    model.train()
    return loss / n


def train(d: Path, out: Path, steps: int, batch: int, lr: float, seed: int, every: int = 50) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only for a smoke test
    torch.manual_seed(seed)
    cfg = LlamaConfig(**json.loads((d / "arch.json").read_text()))
    model = LlamaForCausalLM(cfg).to(dev)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    tr = torch.load(d / "train.pt").long().to(dev)
    va = torch.load(d / "val.pt").long().to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), fused=dev == "cuda")
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    g = torch.Generator(device="cpu").manual_seed(seed)
    best, log, t0 = float("inf"), [], time.time()
    out.mkdir(parents=True, exist_ok=True)
    for step in range(1, steps + 1):
        x = _batches(tr, batch, g)
        with torch.autocast(dev, torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % every == 0 or step == steps:
            v = _val_loss(model, va)
            rec = {"step": step, "train_loss": round(loss.item(), 4), "val_loss": round(v, 4),
                   "val_ppl": round(math.exp(v), 2), "tokens": step * batch * CTX, "s": round(time.time() - t0, 1)}
            log.append(rec)
            print(json.dumps(rec), flush=True)
            if v < best:
                best = v
                rec["saved"] = True
                # bf16 copies of the weights in shards under 16 MiB (what the device tool brings back per file);
                # the fp32 training weights are left as they are
                model.save_pretrained(out, max_shard_size="14MB",
                                      state_dict={k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    (out / "train_log.json").write_text(json.dumps({"arch": cfg.to_dict(), "steps": steps, "batch": batch,
                                                    "lr": lr, "seed": seed, "ctx": CTX, "log": log}, indent=1))
    print(f"best validation loss {best:.4f} (ppl {math.exp(best):.2f}); saved in {out}")


def finish(d: Path, model_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        if (d / name).is_file():
            shutil.copy(d / name, model_dir / name)
    from lowbit.data import load_model

    model, tok = load_model(model_dir)
    print(type(model).__name__, sum(p.numel() for p in model.parameters()) / 1e6, "M;", tok("Hello world"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--vocab", type=int, default=8192)
    t = sub.add_parser("train")
    t.add_argument("--dir", type=Path, required=True)
    t.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs")) / "decoder")
    t.add_argument("--steps", type=int, default=800)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1.5e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--every", type=int, default=50, help="validate (and keep the best weights) every N steps")
    f = sub.add_parser("finish")
    f.add_argument("--dir", type=Path, required=True)
    f.add_argument("--model", type=Path, required=True)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.dir, a.vocab)
    elif a.cmd == "train":
        train(a.dir, a.out, a.steps, a.batch, a.lr, a.seed, a.every)
    else:
        finish(a.dir, a.model)


if __name__ == "__main__":
    main()

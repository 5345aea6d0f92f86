"""Device script for issue 4: check the engine's kernels against its reference graph on CUDA, then time
`lowbit bench encoder` shapes, writing results under $OUT after every row (a timeout still leaves them).

    PYTHONPATH=src python benchmarks/encoder_h100.py bert-base 1,128,8,32 128,384
"""
import json
import os
import sys
import time

import torch

import lowbit
import lowbit.kernels  # noqa: F401
from lowbit.bench import encoder
from lowbit.engine import Engine

OUT = os.environ.get("OUT", "bench-out")


def check() -> None:
    """Kernel graph vs reference graph (same fp16 model, random BERT-base shape, padded batch): cosine per token."""
    base = encoder.build_model("bert-base")
    ids = torch.randint(1000, 2000, (4, 100))
    mask = torch.ones_like(ids)
    mask[1, 60:] = 0
    b = {"input_ids": ids, "attention_mask": mask}
    ref_fp = Engine.from_float(base, device="cuda", graphs=False).hidden_states(b)[0].float()
    for s in ("w8a8-int8", "w4a4-int", "w4a4-fp4"):
        q = encoder._quantized(base, s)
        k = Engine.from_quantized(q, device="cuda").hidden_states(b)[0].float()
        r = Engine.from_quantized(q, device="cuda", backend="reference", graphs=False).hidden_states(b)[0].float()
        keep = mask.bool().cuda()
        cos = torch.nn.functional.cosine_similarity(k[keep], r[keep], dim=-1)
        cos_fp = torch.nn.functional.cosine_similarity(k[keep], ref_fp[keep], dim=-1)
        print(f"check {s}: kernels vs reference graph cos min {cos.min():.6f} mean {cos.mean():.6f}; "
              f"vs fp16 (random weights) mean {cos_fp.mean():.4f}", flush=True)
        del q


def main() -> None:
    name, batches, seqs = sys.argv[1], [int(v) for v in sys.argv[2].split(",")], [int(v) for v in sys.argv[3].split(",")]
    stages = "--no-stages" not in sys.argv
    if "--check" in sys.argv:
        t = time.time()
        check()
        print(f"check took {time.time() - t:.0f} s", flush=True)
    rows = []

    def log(r):
        print(r, flush=True)
        if isinstance(r, dict):
            rows.append(r)
            meta = {"gpu": torch.cuda.get_device_name(), "commit": os.environ.get("LOWBIT_COMMIT", ""),
                    "torch": torch.__version__}
            with open(f"{OUT}/encoder-{name}.md", "w") as f:
                f.write(f"{meta}\n\n" + encoder.to_markdown(rows))
            with open(f"{OUT}/encoder-{name}.json", "w") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)

    encoder.run_encoder(name, batches, seqs, log=log, stages=stages)


if __name__ == "__main__":
    main()

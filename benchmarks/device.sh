#!/usr/bin/env bash
# Runs on the H100 device machine from the repo root: `bash benchmarks/device.sh STAGE...` with stages
#   test   pytest -m gpu tests/kernels (real sizes, poisoned outputs)
#   ours   lowbit bench layers: bf16, cuBLAS FP8/INT8 and lowbit's kernels, all shapes
#   peers  the same shapes for the peers beside bf16 and our main kernels, one process (wheels from
#          ../shared/wheels carried in .whl/)
#   mma    the few-token (2..64) tensor-core W4 kernel on the permuted copy: checks, then a quick config sweep
#   e2e    Llama-2-7B-shaped decode / prefill
#   intonly  integer-only BERT-base / ViT-B vs HF FP16 (tiles swept first, the large GEMM tile at 32 x 384; issue 7)
#   engine   the encoder engine's per-layer / per-op kernel check, then its timing table (issue 4)
# Logs and tables go to $OUT (or ./bench-out).
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-bench-out}; mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
for stage in "$@"; do
  case $stage in
    test)  python3 -m pytest -m gpu tests/kernels -q -x -p no:cacheprovider 2>&1 | tee "$OUT/test.log" ;;
    ours)  python3 -m lowbit.cli bench layers --out "$OUT/ours" ${LAYER_ARGS:-} 2>&1 | tee "$OUT/ours.log" ;;
    peers) python3 -m lowbit.cli bench layers --methods bf16,cublas-fp8,w4a16,w4a8-int,w8a8-int8,w8a8-fp8,w4a4-int,peers --out "$OUT/peers" ${PEER_ARGS:---tokens 1,16,2048 --shapes 4096x4096,11008x4096} 2>&1 | tee "$OUT/peers.log" ;;
    mma)   python3 benchmarks/tune_perm_mma.py --quick --budget ${MMA_BUDGET:-170} --out "$OUT/mma" 2>&1 | tee "$OUT/mma.log" ;;
    e2e)   python3 -m lowbit.cli bench e2e --out "$OUT/e2e" ${E2E_ARGS:-} 2>&1 | tee "$OUT/e2e.log" ;;
    intonly) python3 benchmarks/intonly_gpu.py --sweep --sweep-large 32x384 --out "$OUT/intonly" ${INTONLY_ARGS:-} 2>&1 | tee "$OUT/intonly.log" ;;
    engine) mkdir -p "$OUT/engine"
            OUT=$OUT/engine python3 benchmarks/encoder_h100.py bert-base 4 100 --check-layers --only-check 2>&1 | tee "$OUT/engine-check.log"
            OUT=$OUT/engine python3 benchmarks/encoder_h100.py bert-base ${ENGINE_BATCHES:-1,128,8,32} ${ENGINE_SEQS:-128,384} ${ENGINE_ARGS:-} 2>&1 | tee "$OUT/engine.log" ;;
  esac
done

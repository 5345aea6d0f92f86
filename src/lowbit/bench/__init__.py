"""Benchmarks: per-layer kernels vs bf16 cuBLAS and peers (`layers`), and end-to-end decoders (`e2e`).

Both need CUDA; importing this package does not import triton or touch the GPU.
"""

"""Integer kernel tests run once on the CPU under Triton's interpreter (TRITON_INTERPRET=1) and once on CUDA as a
gpu-marked case (`pytest -m gpu`): the ``dev`` fixture yields each device and skips where it cannot run."""
import os

import pytest
import torch


@pytest.fixture(params=[pytest.param("cpu"), pytest.param("cuda", marks=pytest.mark.gpu)])
def dev(request):
    pytest.importorskip("triton")
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if request.param == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("kernel tests on the CPU need TRITON_INTERPRET=1")
    torch.manual_seed(0)
    return request.param

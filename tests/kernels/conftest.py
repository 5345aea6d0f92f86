"""Kernel tests run on the GPU (`pytest -m gpu`, real sizes) or on the CPU under Triton's interpreter
(TRITON_INTERPRET=1, small awkward shapes). Without either they are skipped."""
import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def dev(request):
    """'cuda' for gpu-marked tests, 'cpu' (interpreter) otherwise."""
    if not _has_triton():
        pytest.skip("triton is not installed")
    if request.node.get_closest_marker("gpu"):
        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")
        return "cuda"
    if not INTERPRET:
        pytest.skip("kernel tests on the CPU need TRITON_INTERPRET=1")
    return "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

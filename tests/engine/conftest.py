"""Engine tests: the CPU reference graph always; Triton kernels under TRITON_INTERPRET=1 (skipped otherwise)."""
import os

import pytest
import torch

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture
def interp():
    if not INTERPRET:
        pytest.skip("fused-kernel tests on the CPU need TRITON_INTERPRET=1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

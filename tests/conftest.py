import pytest
import torch

# Re-exported for tests that import the factories from here; prefer `from tiny_models import ...`.
from tiny_models import MODELS, TINY, tiny_bert, tiny_gpt2, tiny_llama, tiny_vit  # noqa: F401


@pytest.fixture
def ids():
    """A (2, 16) batch of token ids for the tiny models."""
    return torch.randint(0, TINY["vocab"], (2, 16), generator=torch.Generator().manual_seed(1))

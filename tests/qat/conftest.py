import pytest
import torch

from qat_helpers import VOCAB, W4A4, W8A8, tiny_classifier, tiny_data  # noqa: F401


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test worker: under `-n 2` on 2 cores, more threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def model():
    return tiny_classifier()


@pytest.fixture
def data():
    return tiny_data()

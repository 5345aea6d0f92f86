"""Device selection with a clear error where CUDA is asked for and absent."""
from __future__ import annotations

import torch

from lowbit.errors import DeviceError


def resolve_device(name: str | None) -> torch.device:
    """'auto' / None -> cuda if available else cpu; 'cuda[:i]' -> DeviceError if this machine has no CUDA.

    Raises:
        DeviceError: CUDA (and with it lowbit's GPU kernels) requested on a machine without CUDA.
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} was requested but this machine has no CUDA device (torch "
                          f"{torch.__version__}, cuda available: False); lowbit's GPU kernels need an NVIDIA "
                          "GPU — use --device cpu for the reference path")
    return dev

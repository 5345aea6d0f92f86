"""Typed errors raised at lowbit's boundaries. Each message names the thing at fault and the fix."""


class LowbitError(Exception):
    """Base class of every error lowbit raises on bad input."""


class SchemeError(LowbitError, ValueError):
    """An invalid or unknown quantization scheme, spec or preset."""


class ShapeError(LowbitError, ValueError):
    """A tensor shape that the requested quantization cannot handle (e.g. group size not dividing K)."""


class ModelError(LowbitError):
    """A model that cannot be loaded or has nothing lowbit can quantize."""


class CalibrationError(LowbitError):
    """Calibration data that is empty or produces non-finite activations."""


class CheckpointError(LowbitError):
    """A checkpoint directory that is missing files, corrupt, or from a newer format version."""


class DataError(LowbitError):
    """A dataset file or packaged corpus that is missing, empty or malformed."""


class DeviceError(LowbitError):
    """A request for a device or kernel this machine does not have (e.g. CUDA kernels without CUDA)."""

"""The one verb: `quantize(model, scheme, calib_data)`."""
from __future__ import annotations

from torch import nn

from lowbit.device import resolve_device
from lowbit.errors import CalibrationError
from lowbit.methods import MethodContext, get_method
from lowbit.nn.convert import ConversionReport, convert, plan
from lowbit.quant.calibrate import as_batches, calibrate, calibrate_blockwise
from lowbit.scheme import Scheme, get_scheme


def quantize(model: nn.Module, scheme: str | Scheme, calib_data=None, *, progress: bool = True,
             block_device: str | None = None) -> nn.Module:
    """Quantize a transformers model in place and return it.

    Linear layers (and GPT-2 Conv1D) become `QuantLinear` with packed weights; heads, embeddings and norms stay
    in higher precision by default. `model.lowbit_report` lists what was quantized and what was skipped, and why.

    Args:
        model: a transformers (or plain torch) model in full precision.
        scheme: a preset name (`lowbit.scheme.PRESETS`), a YAML path, or a `Scheme`.
        calib_data: list of model-kwarg dicts (or input_ids tensors). Required for static activation scales and
            for methods that calibrate (GPTQ, SmoothQuant, …); when given, every layer input is checked for
            NaN/Inf.
        progress: show progress bars.
        block_device: run the final calibration pass (static activation ranges, NaN checks) one transformer
            block at a time on this device ("cuda", "cpu"), the model staying where it is: for models larger than
            the device's memory (methods such as GPTQ take their own `device` option). None: the whole model
            where it is.

    Returns:
        The same model object, quantized.

    Raises:
        SchemeError, ModelError, ShapeError, CalibrationError: with a message naming the problem and the fix.

    Example:
        >>> model = quantize(model, "w4a8-int", calib_batches)
        >>> print(model.lowbit_report.summary())
    """
    scheme = get_scheme(scheme)
    methods = [(m, get_method(m)) for m in scheme.methods]
    report = plan(model, scheme)
    needs_static = [p.name for p in report.quantized if p.act_spec is not None and not p.act_spec.dynamic]
    if calib_data is None and needs_static:
        raise CalibrationError(f"scheme {scheme.name!r} uses static activation scales ({needs_static[0]} …): "
                               "pass calibration data")
    batches = None if calib_data is None else as_batches(calib_data)
    ctx = MethodContext(report, batches, progress)
    for _, fn in methods:
        fn(model, scheme, ctx)
    ranges = {}
    if batches is not None:
        planned = {p.name: p.act_spec for p in report.quantized}
        if block_device is None:
            ranges = calibrate(model, planned, batches, progress)
        else:
            ranges = calibrate_blockwise(model, planned, batches, resolve_device(block_device), progress)
    convert(model, report, ranges, ctx.qweights)
    model.lowbit_report = report
    model.lowbit_scheme = scheme
    model.lowbit_extras = ctx.extras
    return model


__all__ = ["quantize", "ConversionReport"]

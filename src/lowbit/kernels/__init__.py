"""Triton kernels for QuantLinear on CUDA (see kernels/qgemm.py for the table of families).

Importing this package imports triton and installs the CUDA dispatch hook into QuantLinear (`enable()`);
`import lowbit` alone never does. `disable()` restores the reference path.

    >>> import lowbit.kernels
    >>> lowbit.kernels.prepare(model)   # optional: derive GPU buffers before torch.compile / CUDA-graph capture
    >>> y = model(x.cuda())             # QuantLinear layers run act_quant + qgemm
"""
from lowbit.kernels.act_quant import quantize_act
from lowbit.kernels.dispatch import disable, enable, plan_for, prepare_model as prepare, quant_linear_forward
from lowbit.kernels.qgemm import qgemm

enable()

__all__ = ["disable", "enable", "plan_for", "prepare", "qgemm", "quant_linear_forward", "quantize_act"]

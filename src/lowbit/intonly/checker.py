"""Walk the graph an integer-only forward actually executes and fail on any float op or integer division.

The forward runs under a ``TorchDispatchMode``, so every aten op that touches data is seen — including ones
hidden in Python helpers — with its real input and output dtypes. An op violates integer-only inference if
any tensor it reads or writes is floating point or complex, or if it is a division (``div``,
``floor_divide``, ``remainder``, ``fmod``, ``reciprocal``), whatever the dtype.

Example:
    >>> report = check_integer_only(int_model.integer_forward, ids, mask)   # raises IntegerOnlyError
    >>> print(report.summary())
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from lowbit.intonly.dyadic import IntegerOnlyError

DIVISION_OPS = ("div", "floor_divide", "remainder", "fmod", "reciprocal", "true_divide")


@dataclass
class IntegerGraphReport:
    """Counts of the aten ops executed and every violation found (op name, dtypes, reason)."""

    ops: Counter = field(default_factory=Counter)
    violations: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{sum(self.ops.values())} aten ops executed ({len(self.ops)} kinds), "
                 f"{len(self.violations)} violations"]
        lines += [f"  {op}: {dtypes}: {why}" for op, dtypes, why in self.violations[:20]]
        return "\n".join(lines)


class _Walker(TorchDispatchMode):
    def __init__(self, report: IntegerGraphReport) -> None:
        super().__init__()
        self.report = report

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.report.ops[name] += 1
        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        dtypes = ",".join(sorted({str(t.dtype).replace("torch.", "") for t in tensors}))
        if name in DIVISION_OPS:
            self.report.violations.append((name, dtypes, "division in the data path"))
        elif any(t.is_floating_point() or t.is_complex() for t in tensors):
            self.report.violations.append((name, dtypes, "floating-point tensor in the data path"))
        return out


def walk(fn, *args, **kwargs) -> tuple[object, IntegerGraphReport]:
    """Run fn(*args, **kwargs) while recording every aten op; return (result, report) without raising."""
    report = IntegerGraphReport()
    with _Walker(report):
        result = fn(*args, **kwargs)
    return result, report


def check_integer_only(fn, *args, **kwargs) -> IntegerGraphReport:
    """Run an integer-only forward and raise if it executed any float op or division.

    Args:
        fn: the forward to check (its inputs must already be integer tensors).

    Returns:
        The report (op counts) when the graph is integer-only.

    Raises:
        IntegerOnlyError: naming each offending op and its dtypes.
    """
    _, report = walk(fn, *args, **kwargs)
    if report.violations:
        raise IntegerOnlyError("the forward is not integer-only:\n" + report.summary())
    if not report.ops:
        raise IntegerOnlyError("the forward executed no tensor op at all: nothing was checked")
    return report

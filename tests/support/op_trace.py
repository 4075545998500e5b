"""The aten operations a call runs, with the shapes, strides and dtypes of their tensors.

Two calls that run the same list run the same kernels on the same layouts, so their results are equal on
any CPU, whatever its instruction set; where the lists part, they name the layer and the kernel (e.g. `mm`
on a copy against `bmm` on a strided view). This checks "equal by construction" on a machine whose kernels
happen to round both ways alike.

The trace is taken under `torch.no_grad()`, not `inference_mode`: under inference mode a Python dispatch
mode receives `aten.linear` whole, and running it from there loses the weight's `requires_grad`, one of
the things that choose the kernel.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

Op = tuple[str, tuple[Any, ...]]


_PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.stride(), value.dtype
    return repr(value) if isinstance(value, _PLAIN) else type(value).__name__  # no addresses: they differ per run


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        self.ops.append((str(func), tuple(_describe(v) for v in flat)))
        return func(*args, **kwargs)


def aten_ops(call: Callable[[], Any]) -> list[Op]:
    """Run `call` under no_grad and return every aten operation it dispatched, in order."""
    recorder = _Recorder()
    with torch.no_grad(), recorder:
        call()
    return recorder.ops


def first_difference(ours: list[Op], theirs: list[Op]) -> str:
    """Where two traces part, for an assertion message ("" when they are equal)."""
    for index, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return f"op {index}: {a} vs {b}"
    if len(ours) != len(theirs):
        return f"{len(ours)} ops vs {len(theirs)}"
    return ""

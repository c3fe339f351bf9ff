"""The checks of the fused engine: what a tensor or a group value must be before a kernel sees it.

Each raises an exception that names the group, the parameter and the value; none changes anything.
"""

from __future__ import annotations

import math
import numbers
import weakref
from typing import TYPE_CHECKING, cast

import torch

from .. import _core
from .. import _validate as check
from ..schedules import Schedule

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

# The storage dtype codes of every kernel table (DType in cpp/include/clrfast/sgd_update.hpp).
DTYPE_CODES = {getattr(torch, name): code for name, code in _core.dtype_codes.items()}
_DEVICES = ("cpu", "cuda")


# --------------------------------------------------------------------------- tensors
def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


def is_dtensor(t) -> bool:
    if type(t) in (torch.Tensor, torch.nn.Parameter):
        return False
    dt = _dtensor_type()
    return dt is not None and isinstance(t, dt)


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose memory the kernel touches: a DTensor's local shard, else ``t``."""
    return cast("DTensor", t)._local_tensor if is_dtensor(t) else t


def one_run(t: torch.Tensor) -> bool:
    """True when ``t``'s elements fill one block of memory without gaps or overlap, in any dimension order."""
    size = 1
    for st, n in sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1):
        if st != size:
            return False
        size *= n
    return True


def dense_like(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``b`` lays its elements out in memory exactly as ``a`` and both are one dense run."""
    if a.shape != b.shape:
        return False
    if a.is_contiguous() and b.is_contiguous():
        return True
    for fmt in (torch.channels_last, torch.channels_last_3d):
        try:
            if a.is_contiguous(memory_format=fmt) and b.is_contiguous(memory_format=fmt) and a.stride() == b.stride():
                return True
        except RuntimeError:  # the format does not apply to this rank
            pass
    return False


def holds_values(t: torch.Tensor) -> bool:
    """True when ``t``'s memory holds its values as they read, as the kernels read it: no negative-view
    bit (the imaginary part of a conjugate view is one) and not a zero tensor without memory."""
    return not t.is_neg() and not t._is_zerotensor()


def extent(t: torch.Tensor) -> tuple[int, int]:
    """The byte range [start, end) that the elements of ``t`` span in memory."""
    if t.numel() == 0:
        return (0, 0)
    start = t.data_ptr()
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    low = sum((n - 1) * s for n, s in zip(t.shape, t.stride()) if s < 0)
    return (start + low * t.element_size(), start + (low + span) * t.element_size())


def check_no_overlap(named, read=()) -> None:
    """Raise when a tensor the step writes (``named``) shares memory with another tensor it touches.

    ``read`` lists tensors the step only reads (gradients): they may share memory with each
    other, not with a written one.
    """
    spans = sorted(
        [(*extent(t), name, True) for name, t in named if t.numel()]
        + [(*extent(t), name, False) for name, t in read if t.numel()]
    )
    end, owner, owner_writes = -1, None, False
    for a, b, name, writes in spans:
        if a < end and (writes or owner_writes):
            raise ValueError(
                f"{owner} and {name} share memory (tied weights, one tensor listed twice, or a gradient viewing "
                "memory the step writes); the fused step would touch that memory in an order torch does not "
                "use. Pass each shared parameter once, and give each parameter its own gradient."
            )
        if b > end or (b == end and writes):
            end, owner, owner_writes = b, name, writes


def where(gi: int, pi: int) -> str:
    return f"param_groups[{gi}] parameter {pi}"


def check_param(gi: int, pi: int, p, name: str) -> torch.Tensor:
    """Checks what a parameter must be whether or not it has a gradient; returns its local tensor."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(
            f"{where(gi, pi)}: optimizer can only optimize Tensors, but one of the params is {torch.typename(p)}"
        )
    lp = local(p)
    if lp.layout != torch.strided:
        raise ValueError(f"{where(gi, pi)}: {name} supports dense (strided) parameters, got layout {lp.layout}")
    if lp.device.type not in _DEVICES:
        raise ValueError(f"{where(gi, pi)}: {name} runs on CPU and CUDA tensors, got a parameter on {lp.device}")
    if lp.dtype not in DTYPE_CODES:
        raise TypeError(
            f"{where(gi, pi)}: {name} supports float32, float64, bfloat16 and float16 parameters, got {lp.dtype}"
        )
    if lp.device.type == "cuda" and not getattr(_core, "cuda_built", False):
        raise ValueError(f"{where(gi, pi)}: this clrfast build has no CUDA kernels; CUDA parameters need a CUDA build")
    if torch._debug_has_internal_overlap(lp) == 1:
        raise ValueError(f"{where(gi, pi)}: the parameter has overlapping elements (an expanded tensor)")
    return lp


def check_grad(gi: int, pi: int, p, lp: torch.Tensor, g) -> torch.Tensor:
    """Checks a gradient against its parameter; returns its local tensor."""
    if is_dtensor(p) != is_dtensor(g):
        raise ValueError(f"{where(gi, pi)}: a DTensor parameter needs a DTensor gradient and a plain one a plain one")
    lg = local(g)
    if lg.layout != torch.strided:
        raise ValueError(f"{where(gi, pi)}: sparse gradients are not supported (layout {lg.layout})")
    if lg.dtype != lp.dtype or lg.device != lp.device:
        raise ValueError(
            f"{where(gi, pi)}: gradient dtype/device ({lg.dtype}, {lg.device}) differs from the parameter's "
            f"({lp.dtype}, {lp.device})"
        )
    if lg.shape != lp.shape:
        raise ValueError(
            f"{where(gi, pi)}: gradient shape {tuple(lg.shape)} differs from the parameter's {tuple(lp.shape)}"
        )
    return lg


def check_state_tensor(gi: int, pi: int, key: str, p, value) -> None:
    """A state tensor loaded or found for parameter p must have p's shape and a floating dtype."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where(gi, pi)}: state[{key!r}] must be a tensor, got {type(value).__name__}")
    if value.layout != torch.strided or not value.is_floating_point():
        raise TypeError(f"{where(gi, pi)}: state[{key!r}] must be a dense floating tensor, got {value.dtype}")
    if value.shape != p.shape:
        raise ValueError(
            f"{where(gi, pi)}: state[{key!r}] has shape {tuple(value.shape)}, the parameter {tuple(p.shape)}"
        )


def as_real(gi: int, key: str, value) -> float:
    """A group hyperparameter as a float (0-d tensors, as DCP writes them, included)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"param_groups[{gi}][{key!r}] must be a real number, got {value!r}")
    return float(value)


def check_schedule(name: str, schedule) -> None:
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"{name} must be a clrfast schedule (clr.Cyclic, clr.OneCycle, ...), a float lr or None, got {schedule!r}"
        )


def real_or_tensor(name: str, value):
    """An lr as torch's optimizers take it: a real number or a one-element floating tensor.

    A tensor's value is checked as torch checks it (``ValueError("Invalid learning rate: ...")``
    for a negative or NaN one), and an infinite one is refused as an infinite float is.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point() or value.dtype not in DTYPE_CODES:
            raise TypeError(
                f"{name} must be a real number or a one-element float32, float64, bfloat16 or float16 "
                f"tensor, got {value!r}"
            )
        v = float(value)
        if not (math.isfinite(v) and v >= 0.0):
            raise ValueError(f"Invalid learning rate: {value} ({name} must be finite and >= 0)")
        return value
    return check.real(name, value, min=0.0)


def non_negative(name: str, value, invalid: str) -> float:
    """A finite real >= 0 as a float; a negative or NaN one is refused with torch's message (``"{invalid}: {value}"``).

    torch's check is ``not 0.0 <= value``, so NaN and -inf get its message too; +inf, which torch
    accepts, is refused here as every infinite hyperparameter is.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            below = not 0.0 <= float(value)
        except OverflowError:  # an int beyond a double: check.real says so
            below = value < 0
        if below:
            raise ValueError(f"{invalid}: {value} ({name} must be >= 0.0, got {value!r})")
    return check.real(name, value)


_F64 = DTYPE_CODES[torch.float64]


def step_lr(gi: int, value) -> tuple[float, int]:
    """The lr a step applies and the dtype code of the scalars torch derives from it.

    torch computes ``1 - lr * weight_decay`` and ``lr / bias_correction`` as 0-d tensor ops
    when lr is a tensor (in its dtype), and in double when it is a number.
    """
    name = f"param_groups[{gi}]['lr']"
    if isinstance(value, torch.Tensor):
        real_or_tensor(name, value)
        return float(value), DTYPE_CODES[value.dtype]
    return check.real(name, value, min=0.0), _F64


def step_real(gi: int, key: str, value, *, min: float | None = None) -> float:
    """A hyperparameter a step applies, as a finite float (0-d tensors included), at least ``min``."""
    v = as_real(gi, key, value)
    if not math.isfinite(v) or (min is not None and v < min):
        bound = "finite" if min is None else f"finite and >= {min}"
        raise ValueError(f"param_groups[{gi}][{key!r}] must be {bound}, got {value!r}")
    return v


def step_flag(gi: int, key: str, value) -> bool:
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise TypeError(f"param_groups[{gi}][{key!r}] must be a bool, got {value!r}")
    return bool(value)


def clock(name: str, value) -> int:
    """A group's step count: a whole number (an integral float such as ``np.float64(3)`` reads as 3) below 2**53."""
    step = check.whole(name, value, min=0)
    if step >= 2**53:
        raise ValueError(f"{name} must be < 2**53, got {step}")
    return step


def step_clock(gi: int, group) -> int:
    """The validated clock of a group about to step; its schedule (if any) is checked at that step too."""
    step = clock(f"param_groups[{gi}]['step']", group["step"])
    sched = group["schedule"]
    if sched is not None:
        check_schedule(f"param_groups[{gi}]['schedule']", sched)
        sched._check_max(step)  # torch-style ValueError before anything changes
    return step


class IdSet:
    """A set of tensors by identity that keeps none alive (a WeakSet compares tensors with ``==``)."""

    __slots__ = ("_refs",)

    def __init__(self):
        self._refs: dict = {}

    def add(self, t) -> None:
        self._refs[id(t)] = weakref.ref(t)

    def discard(self, t) -> None:
        ref = self._refs.get(id(t))
        if ref is not None and ref() is t:
            del self._refs[id(t)]

    def __contains__(self, t) -> bool:
        ref = self._refs.get(id(t))
        return t is not None and ref is not None and ref() is t

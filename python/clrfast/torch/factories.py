"""Drop-ins for transformers' schedule factories (``transformers/optimization.py``).

Each ``get_*`` function has the name, arguments and defaults of the transformers function
and returns a :class:`FactoryLR`: a :class:`~clrfast.torch.ScheduleLR` whose schedule for
group ``i`` is the clrfast value ``peak_lr * factor(t)`` with ``peak_lr`` the group's
``initial_lr``. The core computes ``factor`` with transformers' float operations in their
order, and multiplies as ``LambdaLR`` does (``initial_lr * factor(step)``), so every group's
lr is the same double at every step, past ``num_training_steps`` too.

Unlike a ``LambdaLR`` over a lambda, the schedules are data: the scheduler pickles, its
``state_dict()`` carries them, and ``clrfast.plot(scheduler.schedules[0], n)`` draws one.
A state dict saved by transformers' ``LambdaLR`` loads into it (the groups' saved
``base_lrs`` rescale the schedules), and its own state dict loads into a ``LambdaLR``.

A group whose initial lr is a tensor gets ``initial_lr * factor`` as a tensor product, as
``LambdaLR`` computes it (in the tensor's dtype), written with ``fill_``.

The one difference is additive: arguments are checked at construction (a ``ValueError`` or
``TypeError`` naming the argument) where transformers would fail at some later step or give
a negative, inf or jumping lr (a decay that ends before the warmup, ``min_lr`` above the lr).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from .. import _validate as check
from ..schedules import (
    Constant,
    CosineHardRestarts,
    InverseSqrt,
    PolynomialDecay,
    Warmup,
    WarmupCosine,
    WarmupLinear,
    WarmupStableDecay,
)
from .schedulers import ScheduleLR

__all__ = [
    "FactoryLR",
    "get_constant_schedule_with_warmup",
    "get_linear_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_inverse_sqrt_schedule",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_wsd_schedule",
]

_MAX = float(2**53)


class FactoryLR(ScheduleLR):
    """A :class:`ScheduleLR` built by a transformers-style factory: one ``peak_lr * factor`` per group.

    Its state dict also loads into transformers' ``LambdaLR`` (it carries an empty
    ``lr_lambdas``), and a ``LambdaLR`` state dict loads into it: the saved ``base_lrs``
    become the schedules' ``peak_lr``.
    """

    # With a tensor initial lr, LambdaLR multiplies in the tensor's dtype (tensor * factor):
    # that path repeats it in Python with the factor from the core (a schedule with
    # peak_lr = 1 gives 1.0 * factor == factor exactly). Floats take the one-call path.
    __slots__ = ("_units",)

    def _build_writer(self) -> None:
        super()._build_writer()
        self._set_units()

    def _set_units(self) -> None:
        bases = self.__dict__.get("base_lrs")
        if bases is None:  # before LRScheduler.__init__ records them
            bases = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        tensors = any(isinstance(b, Tensor) for b in bases)
        self._units = [_rescale(s, 1.0)._core for s in self.schedules] if tensors else None
        # float lrs: _write is ScheduleLR's, so writer.step() may take the step whole
        self._writer.fast = self._units is None and type(self)._write is FactoryLR._write

    def _load(self, state: dict) -> None:
        super()._load(state)
        self._set_units()

    def _lambda_lrs(self, t) -> list:
        bases = self.__dict__.get("base_lrs")
        if bases is None:
            bases = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        units = self._units
        assert units is not None  # a tensor lr made them
        return [base * unit.lr(float(t)) for base, unit in zip(bases, units)]

    def _write(self, t, groups) -> list:
        if self._units is None:
            return super()._write(t, groups)
        if len(groups) != len(self._units):
            raise ValueError(f"the optimizer has {len(groups)} param groups, the scheduler {len(self._units)}")
        values = self._lambda_lrs(t)
        for group, lr in zip(groups, values):
            current = group["lr"]
            if isinstance(current, Tensor):
                current.fill_(lr.squeeze() if isinstance(lr, Tensor) and lr.dim() != 0 else lr)
            else:
                group["lr"] = lr
        return [g["lr"].clone() if isinstance(g["lr"], Tensor) else g["lr"] for g in groups]

    def get_lr(self) -> list:
        if self._units is None:
            return super().get_lr()
        self._warn_get_lr()
        return self._lambda_lrs(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = [None] * len(self.schedules)  # what LambdaLR saves for functions
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        state.pop("lr_lambdas", None)
        if "schedules" not in state and "base_lrs" in state:  # a LambdaLR's state
            bases = state["base_lrs"]
            if not isinstance(bases, (list, tuple)) or len(bases) != len(self.schedules):
                raise ValueError(
                    f"state_dict['base_lrs'] must hold one lr per param group ({len(self.schedules)}), got {bases!r}"
                )
            state["schedules"] = [
                _rescale(s, check.real(f"state_dict['base_lrs'][{i}]", float(b), min=0.0))
                for i, (s, b) in enumerate(zip(self.schedules, bases))
            ]
        super().load_state_dict(state)


def _rescale(schedule, peak: float):
    if isinstance(schedule, Constant):
        return Constant(peak)
    if isinstance(schedule, Warmup):
        return dataclasses.replace(schedule, end_lr=peak)
    return dataclasses.replace(schedule, peak_lr=peak)


def _steps(name: str, value):
    return check.real(name, value, min=0.0, max=_MAX, keep_int=True)


def _optimizer(optimizer) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
    return optimizer


def _default_lr(optimizer) -> float:
    return check.real("optimizer.defaults['lr']", float(_optimizer(optimizer).defaults["lr"]), min=0.0)


def _base_lrs(optimizer: Optimizer, last_epoch: int) -> list[float]:
    """The groups' initial lrs, as LRScheduler.__init__ is about to record them."""
    _optimizer(optimizer)
    check.integer("last_epoch", last_epoch, min=-1)
    out = []
    for i, g in enumerate(optimizer.param_groups):
        if "initial_lr" in g:
            lr = g["initial_lr"]
        elif last_epoch == -1:
            lr = g["lr"]
        else:
            raise KeyError(
                f"param 'initial_lr' is not specified in param_groups[{i}] when resuming scheduler "
                "with last_epoch >= 0."
            )
        out.append(check.real(f"param_groups[{i}]['initial_lr']", float(lr), min=0.0))
    return out


def _build(optimizer: Optimizer, last_epoch: int, make) -> FactoryLR:
    schedules = [make(base) for base in _base_lrs(optimizer, last_epoch)]
    return FactoryLR(optimizer, schedules, last_epoch)


def _after_warmup(num_warmup_steps, num_training_steps) -> None:
    if num_training_steps < num_warmup_steps:
        raise ValueError(f"num_training_steps ({num_training_steps}) must be >= num_warmup_steps ({num_warmup_steps})")


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1):
    """lr rises linearly from 0 to the group's lr over ``num_warmup_steps``, then stays.

    ``lr * t/max(1, W)``, then ``lr``: :class:`clrfast.Warmup` ``(0, lr, W)``.
    """
    w = _steps("num_warmup_steps", num_warmup_steps)
    if w != int(w):
        raise ValueError(f"num_warmup_steps must be a whole number, got {num_warmup_steps!r}")
    if w == 0:  # no step is inside the warmup
        return _build(optimizer, last_epoch, Constant)
    return _build(optimizer, last_epoch, lambda lr: Warmup(0.0, lr, int(w)))


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    """Linear warmup from 0, then linear decay to 0 at ``num_training_steps``: :class:`clrfast.WarmupLinear`."""
    w = _steps("num_warmup_steps", num_warmup_steps)
    n = _steps("num_training_steps", num_training_steps)
    _after_warmup(w, n)
    return _build(optimizer, last_epoch, lambda lr: WarmupLinear(lr, w, n))


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5, last_epoch: int = -1
):
    """Linear warmup, then ``0.5*(1 + cos(pi*num_cycles*2*p))``: :class:`clrfast.WarmupCosine` with floor 0."""
    w = _steps("num_warmup_steps", num_warmup_steps)
    n = _steps("num_training_steps", num_training_steps)
    _after_warmup(w, n)
    return _build(optimizer, last_epoch, lambda lr: WarmupCosine(lr, w, n, num_cycles=num_cycles))


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1, last_epoch: int = -1
):
    """Linear warmup, then ``num_cycles`` cosines with hard restarts: :class:`clrfast.CosineHardRestarts`."""
    w = _steps("num_warmup_steps", num_warmup_steps)
    n = _steps("num_training_steps", num_training_steps)
    _after_warmup(w, n)
    return _build(optimizer, last_epoch, lambda lr: CosineHardRestarts(lr, w, n, num_cycles=num_cycles))


def get_polynomial_decay_schedule_with_warmup(
    optimizer, num_warmup_steps, num_training_steps, lr_end=1e-7, power=1.0, last_epoch=-1
):
    """Linear warmup, then polynomial decay from the optimizer's default lr to ``lr_end``.

    :class:`clrfast.PolynomialDecay` with ``lr_init = optimizer.defaults["lr"]``, as transformers
    measures the decay of every group against it.
    """
    w = _steps("num_warmup_steps", num_warmup_steps)
    n = _steps("num_training_steps", num_training_steps)
    if n <= w:  # transformers divides by num_training_steps - num_warmup_steps
        raise ValueError(f"num_training_steps ({n}) must be > num_warmup_steps ({w})")
    lr_end = check.real("lr_end", lr_end, min=0.0, keep_int=True)
    lr_init = _default_lr(optimizer)
    if not (lr_init > lr_end):
        raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
    return _build(
        optimizer, last_epoch, lambda lr: PolynomialDecay(lr, w, n, lr_end=lr_end, power=power, lr_init=lr_init)
    )


def get_inverse_sqrt_schedule(
    optimizer: Optimizer, num_warmup_steps: int, timescale: int | None = None, last_epoch: int = -1
):
    """Linear warmup, then ``1/sqrt((t + timescale - W)/timescale)``: :class:`clrfast.InverseSqrt`."""
    w = _steps("num_warmup_steps", num_warmup_steps)
    if timescale is None:
        timescale = w or 10_000
    return _build(optimizer, last_epoch, lambda lr: InverseSqrt(lr, w, timescale=timescale))


def get_cosine_with_min_lr_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
):
    """Linear warmup, then cosine to ``min_lr`` (or ``min_lr_rate`` times the lr): :class:`clrfast.WarmupCosine`.

    ``min_lr`` is relative to the optimizer's default lr (``min_lr_rate = min_lr / defaults["lr"]``),
    as in transformers.
    """
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Only one of min_lr or min_lr_rate should be set")
    elif min_lr is not None:
        min_lr = check.real("min_lr", min_lr, min=0.0)
        default = _default_lr(optimizer)
        if default == 0.0:
            raise ValueError("min_lr needs an optimizer lr > 0 (min_lr_rate = min_lr / lr), got lr 0.0")
        min_lr_rate = min_lr / default
    elif min_lr_rate is None:
        raise ValueError("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`")
    w = _steps("num_warmup_steps", num_warmup_steps)
    n = _steps("num_training_steps", num_training_steps)
    _after_warmup(w, n)
    if min_lr is not None and min_lr_rate > 1:
        raise ValueError(f"min_lr ({min_lr}) must be <= the optimizer's lr ({optimizer.defaults['lr']})")
    return _build(
        optimizer, last_epoch, lambda lr: WarmupCosine(lr, w, n, num_cycles=num_cycles, min_lr_rate=min_lr_rate)
    )


def get_wsd_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
):
    """Warmup, stable, decay: :class:`clrfast.WarmupStableDecay`.

    The stable phase is ``num_stable_steps``, or ``num_training_steps - num_warmup_steps -
    num_decay_steps`` when only the total is given (transformers warns when both are, and uses
    ``num_stable_steps``).
    """
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("Either num_training_steps or num_stable_steps must be specified.")
    if num_training_steps is not None and num_stable_steps is not None:
        warnings.warn(
            "Both num_training_steps and num_stable_steps are specified. num_stable_steps will be used.", stacklevel=2
        )
    if warmup_type not in ["linear", "cosine", "1-sqrt"]:
        raise ValueError(f"Unknown warmup type: {warmup_type}, expected 'linear', 'cosine' or '1-sqrt'")
    if decay_type not in ["linear", "cosine", "1-sqrt"]:
        raise ValueError(f"Unknown decay type: {decay_type}, expected 'linear', 'cosine' or '1-sqrt'")
    w = _steps("num_warmup_steps", num_warmup_steps)
    d = _steps("num_decay_steps", num_decay_steps)
    if num_stable_steps is None:
        n = _steps("num_training_steps", num_training_steps)
        num_stable_steps = n - w - d
        if num_stable_steps < 0:
            raise ValueError(f"num_training_steps ({n}) must be >= num_warmup_steps + num_decay_steps ({w + d})")
    s = _steps("num_stable_steps", num_stable_steps)
    return _build(
        optimizer,
        last_epoch,
        lambda lr: WarmupStableDecay(
            lr,
            w,
            s,
            d,
            warmup_type=warmup_type,
            decay_type=decay_type,
            min_lr_ratio=min_lr_ratio,
            num_cycles=num_cycles,
        ),
    )

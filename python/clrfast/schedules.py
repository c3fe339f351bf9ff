"""Learning-rate and momentum schedules as immutable values.

Every schedule is a small frozen dataclass (picklable, hashable, equal by
value, JSON-safe through ``to_dict``/``from_dict``) that compiles to a
``clrfast._core.Schedule``; all arithmetic happens in the C++ core
(``cpp/include/clrfast/schedule.hpp``), never in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Union

import numpy as np

from . import _core
from . import _validate as check
from .scales import ExpRange, Flat, Geometric, Halving, Scale

FORMAT_VERSION = 1

# Codes shared with the C++ enums in schedule.hpp.
_WINDOWS = {"triangular": 0, "welch": 1, "hann": 2}
_SCALE_MODES = {"cycle": 0, "iterations": 1}
_ANNEAL = {"cos": 0, "linear": 1}
_SWEEP = {"linear": 0, "exp": 1}
_LR, _MOMENTUM = 0, 1

Steps = Union[int, "np.ndarray", list]


class Schedule:
    """Base class: a pure function of the step number (steps count from 0).

    Subclasses define ``_compile()``; the compiled core object is cached.
    """

    # ---------------------------------------------------------------- values
    @property
    def _core(self):
        core = self.__dict__.get("_compiled")
        if core is None:
            core = self._compile()
            object.__setattr__(self, "_compiled", core)
        return core

    def _compile(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def max_step(self) -> int | None:
        """The last valid step, or None when the schedule goes on forever."""
        return None

    @property
    def has_momentum(self) -> bool:
        """True when the schedule defines a momentum for at least some steps."""
        return self._core.has_momentum

    def _check_step(self, step) -> int:
        t = check.integer("step", step, min=0)
        self._check_max(t)
        return t

    def _check_max(self, t: int) -> None:
        last = self.max_step
        if last is not None and t > last:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {last}")

    def lr(self, step: int) -> float:
        """Learning rate at ``step``."""
        return self._core.lr(self._check_step(step))

    def momentum(self, step: int) -> float | None:
        """Momentum at ``step``, or None where the schedule defines none."""
        m = self._core.momentum(self._check_step(step))
        return None if math.isnan(m) else m

    def __call__(self, step: int) -> float:
        return self.lr(step)

    def lr_table(self, steps: Steps, dtype=np.float64, out: np.ndarray | None = None) -> np.ndarray:
        """Learning rates at steps ``0..steps-1`` (an int) or at each step of an integer array.

        Computed in C++ with the GIL released, across threads for large tables.
        ``dtype`` is float64 or float32; ``out`` (C-contiguous, that dtype and
        shape) receives the values in place.
        """
        return self._table(_LR, steps, dtype, out)

    def momentum_table(self, steps: Steps, dtype=np.float64, out: np.ndarray | None = None):
        """Momentum at the given steps (as :meth:`lr_table`); NaN where undefined.

        Returns None when the schedule defines no momentum at all.
        """
        if not self.has_momentum:
            return None
        return self._table(_MOMENTUM, steps, dtype, out)

    def _table(self, quantity: int, steps, dtype, out):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise TypeError(f"dtype must be float64 or float32, got {dtype}")
        if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
            n = check.integer("steps", steps, min=0)
            if n > 0:
                self._check_max(n - 1)
            out = _prepare_out(out, (n,), dtype)
            self._core.table_range(quantity, 0, n, out)
            return out
        arr = np.asarray(steps)
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"steps must be an int count or an integer array, got dtype {arr.dtype}")
        flat = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
        if arr.dtype == np.uint64 and flat.size and (arr.reshape(-1) > np.iinfo(np.int64).max).any():
            raise ValueError("steps holds values too large for int64")
        if flat.size:
            lo = int(flat.min())
            if lo < 0:
                raise ValueError(f"steps must be >= 0, got {lo}")
            self._check_max(int(flat.max()))
        out = _prepare_out(out, arr.shape, dtype)
        self._core.table_steps(quantity, flat, out.reshape(-1))
        return out

    # ------------------------------------------------------------------ data
    def to_dict(self) -> dict:
        """A JSON-safe description, restored by :func:`from_dict`."""
        params = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Scale):
                v = v.to_dict()
            elif isinstance(v, tuple) and v and isinstance(v[0], Schedule):
                v = [s.to_dict() for s in v]
            elif isinstance(v, tuple):
                v = list(v)
            params[f.name] = v
        return {"clrfast_schedule": FORMAT_VERSION, "type": type(self).__name__, "params": params}

    @staticmethod
    def from_dict(d: dict) -> Schedule:
        return from_dict(d)

    def __reduce__(self):
        # Rebuild through __init__: validated, and the compiled core is not pickled.
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))


def _prepare_out(out, shape, dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype or out.shape != tuple(shape):
        raise ValueError(
            f"out must have dtype {dtype} and shape {tuple(shape)}, got {out.dtype} and {out.shape}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return out


def _momentum_pair(base_momentum, max_momentum):
    if (base_momentum is None) != (max_momentum is None):
        raise ValueError(
            "base_momentum and max_momentum must be given together, got "
            f"base_momentum={base_momentum!r}, max_momentum={max_momentum!r}"
        )
    if base_momentum is None:
        return None
    return (check.real("base_momentum", base_momentum, min=0.0), check.real("max_momentum", max_momentum, min=0.0))


@dataclass(frozen=True)
class Cyclic(Schedule):
    r"""Cyclical learning rate (Smith 2017), the values of ``torch.optim.lr_scheduler.CyclicLR``.

    With ``total = up + down``, ``cycle = floor(1 + t/total)`` and
    ``x = 1 + t/total - cycle``, the position in the cycle is
    ``s = x/ratio`` if ``x <= ratio`` else ``(x - 1)/(ratio - 1)`` (``ratio = up/total``),
    shaped by ``window``: triangular ``s``, welch ``1 - (1 - s)^2``, hann ``(1 - cos(pi s))/2``.
    Then ``lr = base_lr + (max_lr - base_lr) * s * scale`` and, when the momentum bounds are
    given, ``momentum = max_momentum - (max_momentum - base_momentum) * s * scale``.

    ``scale`` comes from ``mode``: triangular ``1``, triangular2 ``1/2**(cycle-1)``,
    exp_range ``gamma**t``; or from ``scale_fn``, a :mod:`clrfast.scales` value. It is
    evaluated at the cycle or the iteration per ``scale_mode`` (default: iterations for
    exp_range, else cycle, as torch).
    """

    base_lr: float
    max_lr: float
    step_size_up: float = 2000
    step_size_down: float | None = None
    mode: str = "triangular"
    gamma: float = 1.0
    scale_mode: str | None = None
    window: str = "triangular"
    base_momentum: float | None = None
    max_momentum: float | None = None
    scale_fn: Scale | None = None

    def __post_init__(self):
        check.real("base_lr", self.base_lr, min=0.0)
        check.real("max_lr", self.max_lr, min=0.0)
        check.real("step_size_up", self.step_size_up, min=0.0, min_open=True)
        if self.step_size_down is not None:
            check.real("step_size_down", self.step_size_down, min=0.0)
        check.choice("mode", self.mode, ("triangular", "triangular2", "exp_range"))
        check.real("gamma", self.gamma, min=0.0, min_open=True)
        if self.scale_mode is not None:
            check.choice("scale_mode", self.scale_mode, tuple(_SCALE_MODES))
        check.choice("window", self.window, tuple(_WINDOWS))
        _momentum_pair(self.base_momentum, self.max_momentum)
        if self.scale_fn is not None and not isinstance(self.scale_fn, Scale):
            raise TypeError(
                "scale_fn must be a clrfast.scales value (Flat, Halving, ExpRange, Geometric), "
                f"got {self.scale_fn!r}; plain callables work with clrfast.torch.CyclicLR"
            )

    @property
    def scale(self) -> Scale:
        """The amplitude scale in effect."""
        if self.scale_fn is not None:
            return self.scale_fn
        return {"triangular": Flat(), "triangular2": Halving(), "exp_range": ExpRange(self.gamma)}[self.mode]

    @property
    def resolved_scale_mode(self) -> str:
        if self.scale_mode is not None:
            return self.scale_mode
        if self.scale_fn is None and self.mode == "exp_range":
            return "iterations"
        return "cycle"

    def _compile(self):
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        mom = _momentum_pair(self.base_momentum, self.max_momentum)
        scale = self.scale
        return _core.cyclic(
            float(self.base_lr), float(self.max_lr), up, down, scale._kind, scale._gamma,
            _SCALE_MODES[self.resolved_scale_mode], _WINDOWS[self.window],
            mom is not None, *(mom or (0.0, 0.0)),
        )

    @classmethod
    def _from_params(cls, p: dict) -> Cyclic:
        p = dict(p)
        if p.get("scale_fn") is not None:
            p["scale_fn"] = Scale.from_dict(p["scale_fn"])
        return cls(**p)


@dataclass(frozen=True)
class OneCycle(Schedule):
    r"""One-cycle policy (Smith 2018), the values of ``torch.optim.lr_scheduler.OneCycleLR``.

    ``initial = max_lr/div_factor``, ``min = initial/final_div_factor``. Two phases end at
    steps ``pct_start*T - 1`` and ``T - 1`` (initial -> max -> min); three phases at
    ``pct_start*T - 1``, ``2*pct_start*T - 2``, ``T - 1`` (initial -> max -> initial -> min).
    Within a phase ``pct = (t - start)/(end - start)`` and ``cos`` anneals as
    ``end + (start - end)/2 * (cos(pi*pct) + 1)``, ``linear`` as ``start + (end - start)*pct``.
    Momentum runs the other way, max -> base -> max (held at max in the third phase).
    Steps ``0..total_steps`` are valid, as in torch.
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal: str = "cos"
    three_phase: bool = False
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    cycle_momentum: bool = True

    def __post_init__(self):
        check.real("max_lr", self.max_lr, min=0.0)
        check.integer("total_steps", self.total_steps, min=1)
        check.real("pct_start", self.pct_start, min=0.0, max=1.0)
        check.choice("anneal", self.anneal, tuple(_ANNEAL))
        check.real("div_factor", self.div_factor, min=0.0, min_open=True)
        check.real("final_div_factor", self.final_div_factor, min=0.0, min_open=True)
        if self.cycle_momentum:
            _momentum_pair(self.base_momentum, self.max_momentum)
        # A phase of zero length that a step falls into would divide 0 by 0.
        t = float(self.total_steps)
        p = float(self.pct_start)
        ends = [p * t - 1, 2 * p * t - 2, t - 1] if self.three_phase else [p * t - 1, t - 1]
        start = 0.0
        for end in ends:
            if end == start:
                raise ValueError(
                    f"pct_start={self.pct_start!r} with total_steps={self.total_steps!r} gives a phase of "
                    "zero length (its learning rate would be 0/0)"
                )
            start = end

    @property
    def max_step(self) -> int:
        return int(self.total_steps)

    def _compile(self):
        return _core.onecycle(
            float(self.max_lr), float(self.total_steps), float(self.pct_start), _ANNEAL[self.anneal],
            bool(self.three_phase), float(self.div_factor), float(self.final_div_factor),
            bool(self.cycle_momentum), float(self.base_momentum), float(self.max_momentum),
        )


@dataclass(frozen=True)
class CosineRestarts(Schedule):
    r"""Cosine annealing with warm restarts (SGDR), the values of ``CosineAnnealingWarmRestarts``.

    Cycle ``k`` lasts ``T_i = T_0 * T_mult**k`` steps; ``T_cur`` counts steps into it and
    ``lr = eta_min + (peak - eta_min) * (1 + cos(pi * T_cur/T_i))/2`` with
    ``peak = base_lr * peak_decay**k``. With ``warmup_steps = W > 0`` each cycle first rises
    linearly from ``eta_min`` to the peak, ``eta_min + (peak - eta_min) * T_cur/W``, then anneals
    over the remaining ``T_i - W`` steps. ``T_mult`` may be any real ``>= 1``.
    """

    base_lr: float
    T_0: int
    T_mult: float = 1
    eta_min: float = 0.0
    peak_decay: float = 1.0
    warmup_steps: int = 0

    def __post_init__(self):
        check.real("base_lr", self.base_lr, min=0.0)
        check.integer("T_0", self.T_0, min=1)
        check.real("T_mult", self.T_mult, min=1.0)
        check.real("eta_min", self.eta_min, min=0.0)
        check.real("peak_decay", self.peak_decay, min=0.0, min_open=True)
        w = check.integer("warmup_steps", self.warmup_steps, min=0)
        if w >= self.T_0:
            raise ValueError(f"warmup_steps must be < T_0={self.T_0}, got {self.warmup_steps!r}")

    def _compile(self):
        return _core.cosine_restarts(
            float(self.base_lr), float(self.eta_min), float(self.T_0), float(self.T_mult),
            float(self.peak_decay), float(self.warmup_steps),
        )


@dataclass(frozen=True)
class Warmup(Schedule):
    r"""Linear warmup: ``lr = start_lr + (end_lr - start_lr) * t/warmup_steps``, then ``end_lr``.

    Join it in front of another schedule:
    ``Join([Warmup(0.0, 0.1, 500), CosineRestarts(0.1, T_0=1000)], boundaries=[500])``.
    """

    start_lr: float
    end_lr: float
    warmup_steps: int

    def __post_init__(self):
        check.real("start_lr", self.start_lr, min=0.0)
        check.real("end_lr", self.end_lr, min=0.0)
        check.integer("warmup_steps", self.warmup_steps, min=1)

    def _compile(self):
        return _core.linear(float(self.start_lr), float(self.end_lr), float(self.warmup_steps))


@dataclass(frozen=True)
class Constant(Schedule):
    """``lr = lr`` at every step."""

    lr_value: float

    def __post_init__(self):
        check.real("lr", self.lr_value, min=0.0)

    def _compile(self):
        return _core.constant(float(self.lr_value))

    def __repr__(self) -> str:
        return f"Constant({self.lr_value!r})"


@dataclass(frozen=True)
class RangeSweep(Schedule):
    r"""LR range-test sweep from ``start_lr`` to ``end_lr`` over ``num_steps`` steps.

    With ``f = t/(num_steps - 1)``: exp ``lr = start_lr * (end_lr/start_lr)**f``,
    linear ``lr = start_lr + (end_lr - start_lr) * f``; ``end_lr`` from the last step on.
    """

    start_lr: float
    end_lr: float
    num_steps: int
    mode: str = "exp"

    def __post_init__(self):
        open_ = self.mode == "exp"
        check.choice("mode", self.mode, tuple(_SWEEP))
        check.real("start_lr", self.start_lr, min=0.0, min_open=open_)
        check.real("end_lr", self.end_lr, min=0.0, min_open=open_)
        check.integer("num_steps", self.num_steps, min=1)

    def _compile(self):
        return _core.sweep(float(self.start_lr), float(self.end_lr), float(self.num_steps), _SWEEP[self.mode])


@dataclass(frozen=True)
class Join(Schedule):
    """Schedules joined at step boundaries; each piece starts its own clock at 0.

    ``Join([a, b], boundaries=[5000])`` gives ``a(t)`` for ``t < 5000`` and ``b(t - 5000)``
    after (as optax's ``join_schedules``). Momentum is that of the active piece.
    """

    schedules: tuple
    boundaries: tuple

    def __post_init__(self):
        scheds = tuple(self.schedules)
        bounds = tuple(self.boundaries)
        object.__setattr__(self, "schedules", scheds)
        if not scheds:
            raise ValueError("schedules must not be empty")
        for i, s in enumerate(scheds):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedules[{i}] must be a clrfast schedule, got {s!r}")
        if len(bounds) != len(scheds) - 1:
            raise ValueError(
                f"boundaries must have len(schedules) - 1 = {len(scheds) - 1} entries, got {len(bounds)}"
            )
        bounds = tuple(check.integer(f"boundaries[{i}]", b, min=1) for i, b in enumerate(bounds))
        object.__setattr__(self, "boundaries", bounds)
        for i in range(1, len(bounds)):
            if bounds[i] <= bounds[i - 1]:
                raise ValueError(f"boundaries must increase, got {list(bounds)}")
        for i, s in enumerate(scheds[:-1]):
            span = bounds[i] - (bounds[i - 1] if i else 0)
            if s.max_step is not None and span - 1 > s.max_step:
                raise ValueError(
                    f"schedules[{i}] ends at step {s.max_step} but runs for {span} steps before the next "
                    "boundary"
                )

    @property
    def max_step(self) -> int | None:
        last = self.schedules[-1].max_step
        if last is None:
            return None
        return (self.boundaries[-1] if self.boundaries else 0) + last

    def _compile(self):
        return _core.join([s._core for s in self.schedules], [float(b) for b in self.boundaries])

    @classmethod
    def _from_params(cls, p: dict) -> Join:
        return cls([from_dict(d) for d in p["schedules"]], p["boundaries"])


_TYPES = {c.__name__: c for c in (Cyclic, OneCycle, CosineRestarts, Warmup, Constant, RangeSweep, Join)}


def from_dict(d: dict) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.to_dict` output."""
    if not isinstance(d, dict):
        raise TypeError(f"expected a dict from to_dict(), got {type(d).__name__}")
    version = d.get("clrfast_schedule")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported schedule format version {version!r} (this clrfast reads {FORMAT_VERSION})")
    cls = _TYPES.get(d.get("type"))
    if cls is None:
        raise ValueError(f"unknown schedule type {d.get('type')!r}; known: {', '.join(_TYPES)}")
    params = d.get("params", {})
    if hasattr(cls, "_from_params"):
        return cls._from_params(params)
    return cls(**params)


__all__ = [
    "Schedule", "Cyclic", "OneCycle", "CosineRestarts", "Warmup", "Constant", "RangeSweep", "Join",
    "from_dict", "FORMAT_VERSION", "Geometric",
]

"""timm's learning-rate schedules (``timm/scheduler/*.py``) as clrfast schedule values.

Each value is the ``_get_lr(t)`` of the timm scheduler of the same family for one param group
whose initial lr is ``base_lr``, without noise: the C++ core (``cpp/include/clrfast/timm_schedule.hpp``)
repeats timm's Python float operations in their order, so ``lr(t)`` is the double timm gives
at step ``t``. Like every clrfast schedule they run in the fused optimizers, in tables and in
the optax and Keras front ends. The drop-in schedulers with timm's names and protocol are in
:mod:`clrfast.torch.timm_schedulers`.

Steps are whole numbers, exact below ``2**53`` (timm's int arithmetic on them is too). The
values hold ``lr_min`` (or the last decayed lr) forever: ``max_step`` is None. Where timm has
no float value (a power that overflows, a complex number from a negative float to a fractional
power) the step is refused with an error; noise and a callable WSD ``decay_fn`` have no value
form and are refused here (the drop-ins apply noise as timm does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from . import _validate as check
from .schedules import Schedule, _finite_product

_MAX_COUNT = 2**53  # step counts are whole doubles below this

_ERRORS = {
    1: "a power overflows a double there (timm raises OverflowError)",
    2: "it divides by zero there (timm raises ZeroDivisionError)",
    3: "math.log, math.cos or math.floor is undefined there (timm raises ValueError)",
    4: "timm's lr is a complex number there (a negative float to a fractional power)",
    5: "timm's lr is inf or nan there",
}


def _count(name: str, value, *, positive: bool = False):
    return check.real(name, value, min=0.0, min_open=positive, max=float(_MAX_COUNT), keep_int=True)


def _lr(name: str, value):
    return check.real(name, value, min=0.0, keep_int=True)


def _refuse_noise(kwargs: dict) -> None:
    for key in ("noise_range_t", "noise_pct", "noise_std", "noise_seed", "noise_type"):
        if key in kwargs:
            raise TypeError(
                f"{key}: a schedule value has no noise (timm draws it per step from a seeded torch generator); "
                "use the drop-in scheduler in clrfast.torch for noise"
            )


class _Timm(Schedule):
    """Shared checks and messages of the timm schedule values (one single-leaf core schedule each)."""

    if TYPE_CHECKING:  # fields of the concrete dataclasses
        base_lr: Any
        warmup_t: Any
        warmup_lr_init: Any
        warmup_prefix: bool
        t_initial: Any
        lr_min: Any
        cycle_mul: Any
        cycle_decay: Any
        cycle_limit: int
        decay_rate: Any
        k_decay: Any

    def __new__(cls, *args, **kwargs):
        _refuse_noise(kwargs)
        return super().__new__(cls, *args, **kwargs)

    def _warmup(self, prefix_default: bool) -> None:
        self._set("base_lr", _lr("base_lr", self.base_lr))
        self._set("warmup_t", _count("warmup_t", self.warmup_t))
        if 0 < self.warmup_t < 1:
            # the warmup's slope (base_lr - warmup_lr_init) / warmup_t would overflow for a tiny one
            raise ValueError(f"warmup_t must be 0 or >= 1 (a count of steps), got {self.warmup_t!r}")
        self._set("warmup_lr_init", _lr("warmup_lr_init", self.warmup_lr_init))
        if hasattr(self, "warmup_prefix"):
            self._set("warmup_prefix", check.boolean("warmup_prefix", self.warmup_prefix))

    # Steps where timm has no float value can lie between two that it has (a cycle start
    # rounded a hair past the step makes t_curr negative, and t_curr ** k_decay complex), so
    # every step asked for is checked and a table is checked whole.
    _can_overflow = True
    _isolated_gaps = True

    def _table(self, quantity, steps, dtype, out):
        if not self._isolated_gaps:
            return super()._table(quantity, steps, dtype, out)
        values = super()._table(quantity, steps, np.float64, None)
        bad = np.flatnonzero(~np.isfinite(values.reshape(-1)))
        if bad.size:
            flat = np.arange(values.size) if isinstance(steps, (int, np.integer)) else np.asarray(steps).reshape(-1)
            t = int(flat[bad[0]])
            raise OverflowError(self._overflow_message(t, t))
        if out is None:
            return values.astype(dtype, copy=False) if np.dtype(dtype) != values.dtype else values
        from .schedules import _prepare_out

        out = _prepare_out(out, values.shape, np.dtype(dtype))
        out[...] = values
        return out

    def _overflow_message(self, lo: int, hi: int) -> str:
        ok = lambda t: self._core.status_between(float(t), float(t)) == _core.Status.ok  # noqa: E731
        bad = next((t for t in (lo, hi) if not ok(t)), None)
        if bad is None:  # a growing peak between lo and hi: the first step it overflows at
            good, bad = lo, hi
            while bad - good > 1:
                mid = (good + bad) // 2
                good, bad = (mid, bad) if ok(mid) else (good, mid)
        code = _core.timm_error(self._core, float(bad))
        why = _ERRORS.get(code, "the peak lr of its cycle, base_lr * cycle_decay ** i, overflows a double")
        return f"{self!r} has no finite value at step {bad}: {why} (asked for steps {lo}..{hi})"


class _TimmCycle(_Timm):
    _curve: Any = None

    def _cycle(self) -> None:
        self._warmup(False)
        self._set("t_initial", _count("t_initial", self.t_initial, positive=True))
        if self.t_initial < 1:
            raise ValueError(f"t_initial must be >= 1 (a count of steps), got {self.t_initial!r}")
        self._set("lr_min", _lr("lr_min", self.lr_min))
        cm = check.real("cycle_mul", self.cycle_mul, min=0.0, min_open=True, max=float(_MAX_COUNT), keep_int=True)
        if cm < 1:
            raise ValueError(
                f"cycle_mul must be >= 1 in a schedule value, got {self.cycle_mul!r}: with cycle_mul < 1 the cycles "
                f"end at t_initial / (1 - cycle_mul) steps, past which timm's cycle index is undefined "
                "(math.log of a negative number); the drop-in scheduler accepts it and raises there as timm does"
            )
        self._set("cycle_mul", cm)
        self._set("cycle_decay", check.real("cycle_decay", self.cycle_decay, min=0.0, keep_int=True))
        self._set("cycle_limit", check.integer("cycle_limit", self.cycle_limit, min=0, max=_MAX_COUNT))
        # The curve passes through (lr_max - lr_min) * 2 at most; a growing peak is checked per step.
        _finite_product(
            "2*max(base_lr, lr_min)",
            2.0 * max(float(self.base_lr), float(self.lr_min)),
            f"base_lr={self.base_lr!r}, lr_min={self.lr_min!r}",
        )

    def _check_k(self) -> None:
        k = check.real("k_decay", self.k_decay, min=0.0, min_open=True, keep_int=True)
        self._set("k_decay", k)
        # t_curr ** k / t_i ** k: the first cycle's t_i ** k must be a double for any value to exist
        try:
            ok = math.isfinite(float(self.t_initial) ** float(k))
        except OverflowError:
            ok = False
        if not ok:
            raise OverflowError(f"t_initial ** k_decay overflows a double: t_initial={self.t_initial!r}, k_decay={k!r}")

    @property
    def horizon(self) -> int | None:
        """The last step before the cycles end (timm's ``get_cycle_length() - 1``, rounded up).

        The cycles last ``t_initial * cycle_limit`` steps, or ``t_initial * (cycle_mul ** cycle_limit - 1)
        / (cycle_mul - 1)``, plus ``warmup_t`` for a warmup prefix; from there on the lr is ``lr_min``.
        """
        n, cm = int(self.cycle_limit), float(self.cycle_mul)
        try:
            length = float(self.t_initial) * (n if cm == 1 else (cm**n - 1) / (cm - 1))
        except OverflowError:
            return None
        end = max(length + (float(self.warmup_t) if self.warmup_prefix else 0.0), float(self.warmup_t))
        return math.ceil(end) - 1 if n > 0 and 1 <= end < 2.0**53 else None

    def _compile(self):
        return _core.timm_cycle(
            curve=self._curve,
            base=float(self.base_lr),
            lr_min=float(self.lr_min),
            t_initial=float(self.t_initial),
            cycle_mul=float(self.cycle_mul),
            cycle_decay=float(self.cycle_decay),
            cycle_limit=float(self.cycle_limit),
            k_decay=float(getattr(self, "k_decay", 1.0)),
            power=float(getattr(self, "power", 1.0)),
            lb=float(getattr(self, "lb", -7.0)),
            ub=float(getattr(self, "ub", 3.0)),
            warmup_t=float(self.warmup_t),
            warmup_lr_init=float(self.warmup_lr_init),
            warmup_step=math.nan,
            warmup_prefix=self.warmup_prefix,
        )


@dataclass(frozen=True)
class TimmCosine(_TimmCycle):
    r"""timm's ``CosineLRScheduler`` for one group of initial lr ``base_lr`` (no noise).

    For ``t < warmup_t``: ``warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t``. After it
    (``t -= warmup_t`` with ``warmup_prefix``), cycle ``i`` of length ``t_i`` with ``t_curr`` steps
    into it: ``cycle_mul == 1``: ``i = t // t_initial``, ``t_curr = t - t_initial * i``; else
    ``i = floor(log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))``, ``t_i = cycle_mul ** i * t_initial``,
    ``t_curr = t - (1 - cycle_mul ** i) / (1 - cycle_mul) * t_initial``. With
    ``lr_max = base_lr * cycle_decay ** i``, while ``i < cycle_limit``:
    ``lr = lr_min + 0.5 * (lr_max - lr_min) * (1 + cos(pi * t_curr ** k_decay / t_i ** k_decay))``;
    then ``lr_min``. ``cycle_mul`` must be >= 1 here (the drop-in takes any).
    """

    base_lr: float
    t_initial: float
    lr_min: float = 0.0
    cycle_mul: float = 1.0
    cycle_decay: float = 1.0
    cycle_limit: int = 1
    warmup_t: float = 0
    warmup_lr_init: float = 0.0
    warmup_prefix: bool = False
    k_decay: float = 1.0

    _curve = _core.TimmCurve.cosine

    def _validate(self):
        self._cycle()
        self._check_k()


@dataclass(frozen=True)
class TimmTanh(_TimmCycle):
    r"""timm's ``TanhLRScheduler`` for one group of initial lr ``base_lr`` (no noise).

    Cycles as :class:`TimmCosine`; with ``tr = t_curr / t_i``, while ``i < cycle_limit``:
    ``lr = lr_min + 0.5 * (lr_max - lr_min) * (1 - tanh(lb * (1. - tr) + ub * tr))``, then ``lr_min``.
    The warmup rises to ``base_lr`` with ``warmup_prefix``, else to the curve's own value at
    ``warmup_t`` (timm's ``_get_lr(warmup_t)``).
    """

    base_lr: float
    t_initial: float
    lb: float = -7.0
    ub: float = 3.0
    lr_min: float = 0.0
    cycle_mul: float = 1.0
    cycle_decay: float = 1.0
    cycle_limit: int = 1
    warmup_t: float = 0
    warmup_lr_init: float = 0.0
    warmup_prefix: bool = False

    _curve = _core.TimmCurve.tanh

    def _validate(self):
        self._cycle()
        self._set("lb", check.real("lb", self.lb, keep_int=True))
        self._set("ub", check.real("ub", self.ub, keep_int=True))
        if not self.lb < self.ub:
            raise ValueError(f"lb must be < ub, got lb={self.lb!r}, ub={self.ub!r}")
        _finite_product("ub - lb", float(self.ub) - float(self.lb), f"lb={self.lb!r}, ub={self.ub!r}")


@dataclass(frozen=True)
class TimmPoly(_TimmCycle):
    r"""timm's ``PolyLRScheduler`` for one group of initial lr ``base_lr`` (no noise).

    Cycles as :class:`TimmCosine`; while ``i < cycle_limit``:
    ``lr = lr_min + (lr_max - lr_min) * (1 - t_curr ** k_decay / t_i ** k_decay) ** power``, then ``lr_min``.
    """

    base_lr: float
    t_initial: float
    power: float = 0.5
    lr_min: float = 0.0
    cycle_mul: float = 1.0
    cycle_decay: float = 1.0
    cycle_limit: int = 1
    warmup_t: float = 0
    warmup_lr_init: float = 0.0
    warmup_prefix: bool = False
    k_decay: float = 1.0

    _curve = _core.TimmCurve.poly

    def _validate(self):
        self._cycle()
        self._set("power", check.real("power", self.power, min=0.0, keep_int=True))
        self._check_k()


class _TimmSteps(_Timm):
    def _steps(self) -> None:
        self._warmup(True)
        self._set("decay_rate", check.real("decay_rate", self.decay_rate, min=0.0, keep_int=True))

    @property
    def _can_overflow(self) -> bool:  # type: ignore[override]
        return self.decay_rate > 1

    @property
    def _isolated_gaps(self) -> bool:  # type: ignore[override]
        return False

    def _compile_steps(self, decay_t: float, milestones: list, multi: bool):
        return _core.timm_step(
            base=float(self.base_lr),
            decay_t=decay_t,
            decay_rate=float(self.decay_rate),
            milestones=milestones,
            multi=multi,
            warmup_t=float(self.warmup_t),
            warmup_lr_init=float(self.warmup_lr_init),
            warmup_step=math.nan,
            warmup_prefix=self.warmup_prefix,
        )


@dataclass(frozen=True)
class TimmStep(_TimmSteps):
    r"""timm's ``StepLRScheduler`` for one group of initial lr ``base_lr`` (no noise).

    Linear warmup as :class:`TimmCosine`; after it (``t -= warmup_t`` with ``warmup_prefix``,
    timm's default here) ``lr = base_lr * (decay_rate ** (t // decay_t))``, ``//`` Python's
    floor division (``decay_t`` may be a real).
    """

    base_lr: float
    decay_t: float
    decay_rate: float = 1.0
    warmup_t: float = 0
    warmup_lr_init: float = 0.0
    warmup_prefix: bool = True

    def _validate(self):
        self._steps()
        self._set("decay_t", _count("decay_t", self.decay_t, positive=True))

    def _compile(self):
        return self._compile_steps(float(self.decay_t), [], False)


@dataclass(frozen=True)
class TimmMultiStep(_TimmSteps):
    r"""timm's ``MultiStepLRScheduler`` for one group of initial lr ``base_lr`` (no noise).

    Linear warmup as :class:`TimmCosine`; after it (``t -= warmup_t`` with ``warmup_prefix``)
    ``lr = base_lr * (decay_rate ** bisect_right(decay_t, t + 1))``: milestone ``m`` applies from
    ``t = m - 1`` on (timm's convention). ``decay_t`` holds at most 16 non-decreasing milestones.
    """

    base_lr: float
    decay_t: tuple
    decay_rate: float = 1.0
    warmup_t: float = 0
    warmup_lr_init: float = 0.0
    warmup_prefix: bool = True

    def _validate(self):
        self._steps()
        ms = self.decay_t
        if isinstance(ms, (str, bytes, dict)) or not hasattr(ms, "__iter__"):
            raise TypeError(f"decay_t must be a list of milestones, got {ms!r}")
        ms = tuple(_count(f"decay_t[{i}]", m) for i, m in enumerate(ms))
        if len(ms) > 16:
            raise ValueError(f"decay_t holds at most 16 milestones, got {len(ms)}")
        if any(b < a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"decay_t must be sorted (timm bisects it), got {list(ms)}")
        self._set("decay_t", ms)

    def _compile(self):
        return self._compile_steps(0.0, [float(m) for m in self.decay_t], True)


_STABLE_FNS = ("constant", "rsqrt", "power")
_DECAY_FNS = {
    "linear": _core.TimmDecay.linear,
    "1-sqrt": _core.TimmDecay.one_minus_sqrt,
    "cosine": _core.TimmDecay.cosine,
    "power": _core.TimmDecay.power,
    "exp": _core.TimmDecay.exp,
}


@dataclass(frozen=True)
class TimmWSD(_Timm):
    r"""timm's ``WSDLRScheduler`` (warmup-stable-decay) for one group of initial lr ``base_lr`` (no noise).

    Linear warmup over ``warmup_t`` (always a prefix); then with ``t_s = t - warmup_t``,
    ``stable = max(base_lr * s(t_s), lr_min)`` with ``s`` 1 (constant) or
    ``(1. + t_s / stable_timescale) ** -p`` (``p`` 0.5 for rsqrt, ``stable_power`` for power),
    and from ``t_decay = t_s - (t_initial - decay_t) > 0`` on
    ``lr = lr_min + (stable - lr_min) * d(min(t_decay / decay_t, 1.))`` with ``d(f)``: linear
    ``1 - f``, 1-sqrt ``1 - sqrt(f)``, cosine ``0.5 * (1 + cos(pi * f))``, power ``1 - f ** decay_power``,
    exp ``(decay_ratio ** f - decay_ratio) / (1 - decay_ratio)``. A callable ``decay_fn`` is refused.
    """

    base_lr: float
    t_initial: float
    decay_t: float
    lr_min: float = 0.0
    stable_fn: str = "constant"
    stable_timescale: float | None = None
    stable_power: float = 0.5
    decay_fn: str = "1-sqrt"
    decay_power: float = 0.5
    decay_ratio: float = 0.1
    warmup_t: float = 0
    warmup_lr_init: float = 0.0

    def _validate(self):
        self._warmup(True)
        self._set("t_initial", _count("t_initial", self.t_initial, positive=True))
        self._set("decay_t", _count("decay_t", self.decay_t, positive=True))
        if not self.decay_t <= self.t_initial:
            raise ValueError(f"decay_t must be in (0, t_initial={self.t_initial!r}], got {self.decay_t!r}")
        self._set("lr_min", _lr("lr_min", self.lr_min))
        self._set("stable_fn", check.choice("stable_fn", self.stable_fn, _STABLE_FNS))
        if callable(self.decay_fn):
            raise TypeError(
                f"decay_fn must be one of {', '.join(map(repr, _DECAY_FNS))} in a schedule value, got the callable "
                f"{self.decay_fn!r}: a Python function has no compiled form"
            )
        self._set("decay_fn", check.choice("decay_fn", self.decay_fn, tuple(_DECAY_FNS)))
        self._set("decay_power", check.real("decay_power", self.decay_power, min=0.0, min_open=True, keep_int=True))
        self._set("stable_power", check.real("stable_power", self.stable_power, min=0.0, min_open=True, keep_int=True))
        r = check.real("decay_ratio", self.decay_ratio, keep_int=True)
        if not 0 < r < 1:
            raise ValueError(f"decay_ratio must be in (0, 1), got {self.decay_ratio!r}")
        self._set("decay_ratio", r)
        if self.stable_timescale is not None:
            self._set("stable_timescale", check.real("stable_timescale", self.stable_timescale, min=0.0, keep_int=True))
        if self.stable_fn != "constant" and not self.resolved_timescale > 0:
            raise ValueError(
                f"stable_fn={self.stable_fn!r} needs a positive stable_timescale; it defaults to warmup_t "
                f"({self.warmup_t!r}): give it when there is no warmup"
            )

    @property
    def resolved_timescale(self):
        """The timescale in effect: ``stable_timescale``, else ``warmup_t`` (timm's default)."""
        return self.warmup_t if self.stable_timescale is None else self.stable_timescale

    @property
    def horizon(self) -> int:
        """The last step before the decay ends (timm's ``get_cycle_length() - 1``: ``warmup_t + t_initial - 1``)."""
        return math.ceil(float(self.warmup_t) + float(self.t_initial)) - 1

    def _compile(self):
        return _core.timm_wsd(
            base=float(self.base_lr),
            t_initial=float(self.t_initial),
            decay_t=float(self.decay_t),
            lr_min=float(self.lr_min),
            stable_fn=_core.TimmStable.constant if self.stable_fn == "constant" else _core.TimmStable.power,
            stable_timescale=float(self.resolved_timescale),
            stable_power=0.5 if self.stable_fn == "rsqrt" else float(self.stable_power),
            decay_fn=_DECAY_FNS[self.decay_fn],
            decay_power=float(self.decay_power),
            decay_ratio=float(self.decay_ratio),
            warmup_t=float(self.warmup_t),
            warmup_lr_init=float(self.warmup_lr_init),
            warmup_step=math.nan,
        )


TYPES = (TimmCosine, TimmTanh, TimmPoly, TimmStep, TimmMultiStep, TimmWSD)

__all__ = ["TimmCosine", "TimmTanh", "TimmPoly", "TimmStep", "TimmMultiStep", "TimmWSD"]

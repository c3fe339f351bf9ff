"""Drop-ins for timm's schedulers (``timm.scheduler``) with timm's names, signatures and defaults.

They follow timm's ``Scheduler`` protocol: the training loop passes the count itself,
``step(epoch, metric)`` at the end of an epoch and ``step_update(num_updates, metric)`` after an
optimizer update (``t_in_epochs`` picks which one moves the lr), each group keeps its
``initial_lr`` (``base_values``) and gets ``value * lr_scale`` when it has an ``lr_scale`` key.
Each group's value comes from one compiled clrfast schedule (:mod:`clrfast.timm_schedules`,
rebuilt when the scheduler's parameters change), the same double as timm's ``_get_lr``; noise is
timm's own: a ``torch.Generator`` seeded with ``noise_seed + t`` per step, applied as
``v + v * noise``.

``state_dict()`` is the instance ``__dict__`` less the optimizer, as timm's, with the same keys
and plain values: a timm state dict loads into these schedulers and theirs into timm's.

Differences, all refusals: timm's argument ``assert``\\ s raise an error that is both a
``ValueError`` and an ``AssertionError``, naming the argument; a step where timm's Python
raises, or would give a complex, inf or nan lr, raises (``OverflowError``, ``ZeroDivisionError``
or ``ValueError``) and leaves the groups as they were; steps must be real numbers in
``0..2**53`` (timm's int arithmetic and the core's doubles agree there); a callable WSD
``decay_fn`` and more than 16 multistep milestones are refused. Integer-valued float
arguments compute as their floats (an int ``k_decay`` or ``decay_rate`` gives timm's exact
int powers, the same doubles while those stay below ``2**53``). ``PlateauLRScheduler`` is
timm's logic around torch's ``ReduceLROnPlateau`` (its lr follows the metric, not a
schedule) and does not emit timm's deprecation ``FutureWarning``.
"""

from __future__ import annotations

import bisect
import math
import numbers
import operator
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.optim import Optimizer

from .. import _core

__all__ = [
    "Scheduler",
    "CosineLRScheduler",
    "TanhLRScheduler",
    "PolyLRScheduler",
    "StepLRScheduler",
    "MultiStepLRScheduler",
    "WSDLRScheduler",
    "PlateauLRScheduler",
    "create_scheduler_v2",
]

_MAX_T = 2**53
_NAN = math.nan


class TimmArgumentError(ValueError, AssertionError):
    """A bad argument: a ``ValueError`` naming it, and the ``AssertionError`` timm's ``assert`` raises."""


def _real(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise TimmArgumentError(message)


class Scheduler:
    """timm's ``Scheduler`` base (``timm/scheduler/scheduler.py``) with values from the compiled core.

    Subclasses name the attributes their compiled schedules depend on (``_keys``) and build
    one schedule per group (``_build``); the schedules are rebuilt whenever one of those
    attributes (or ``base_values``, ``warmup_steps``) changes, as after ``load_state_dict``.
    """

    __slots__ = ("__dict__", "_compiled", "_compiled_key")
    _keys: tuple = ()
    _getter: Callable = operator.itemgetter("base_values", "warmup_steps")

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls._getter = operator.itemgetter(*cls._keys, "base_values", "warmup_steps")

    if TYPE_CHECKING:  # set by the subclasses, as timm's
        warmup_t: Any
        warmup_lr_init: Any
        warmup_prefix: Any
        t_initial: Any
        cycle_mul: Any
        cycle_limit: Any

    def __init__(
        self,
        optimizer: Optimizer,
        param_group_field: str,
        t_in_epochs: bool = True,
        noise_range_t: list | tuple | int | None = None,
        noise_type: str = "normal",
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int | None = None,
        initialize: bool = True,
    ) -> None:
        self._compiled: list = []
        self._compiled_key: Any = None
        self.optimizer = optimizer
        self.param_group_field = param_group_field
        self._initial_param_group_field = f"initial_{param_group_field}"
        if initialize:
            for i, group in enumerate(self.optimizer.param_groups):
                if param_group_field not in group:
                    raise KeyError(f"{param_group_field} missing from param_groups[{i}]")
                group.setdefault(self._initial_param_group_field, group[param_group_field])
        else:
            for i, group in enumerate(self.optimizer.param_groups):
                if self._initial_param_group_field not in group:
                    raise KeyError(f"{self._initial_param_group_field} missing from param_groups[{i}]")
        self.base_values = [group[self._initial_param_group_field] for group in self.optimizer.param_groups]
        for i, v in enumerate(self.base_values):
            _real(f"param_groups[{i}]['{self._initial_param_group_field}']", v)
        self.metric: float | None = None
        self.t_in_epochs = t_in_epochs
        self.noise_range_t = noise_range_t
        self.noise_pct = noise_pct
        self.noise_type = noise_type
        self.noise_std = noise_std
        self.noise_seed = noise_seed if noise_seed is not None else 42
        self.update_groups(self.base_values)

    # Pickled (and deep-copied) as timm's are, by the instance __dict__: the compiled schedules
    # are rebuilt from it on the first step.
    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._compiled = []
        self._compiled_key = None
        self.__dict__.update(state)

    def state_dict(self) -> dict[str, Any]:
        """The instance ``__dict__`` less the optimizer, as timm's (plain values, timm's keys)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Updates the attributes from ``state_dict`` (timm's or this scheduler's); schedules follow."""
        self.__dict__.update(state_dict)

    # ---------------------------------------------------------------- values
    def _build(self, base: float, warmup_step: float):  # pragma: no cover - abstract
        raise NotImplementedError

    def _schedules(self) -> list:
        # The attributes the schedules are built from, read in one C call and compared by value
        # (lists element by element) with a copy taken at the last build: an assignment, a
        # loaded state or an in-place change of base_values takes effect at the next step.
        key = self._getter(self.__dict__)
        if key != self._compiled_key:
            d = self.__dict__
            steps = d["warmup_steps"] or [1] * len(d["base_values"])
            self._compiled = [self._build(float(v), float(s)) for v, s in zip(d["base_values"], steps)]
            self._compiled_key = tuple(list(v) if isinstance(v, list) else v for v in key)
        return self._compiled

    def _get_lr(self, t) -> list[float]:
        """Each group's lr at ``t``, timm's ``_get_lr(t)``, computed by the core."""
        if type(t) is not int:
            _real("t", t)
        if not 0 <= t <= _MAX_T:
            raise ValueError(f"t must be in 0..2**53 (a count of epochs or updates), got {t!r}")
        return _core.timm_values(self._schedules(), float(t))

    def _get_values(self, t, on_epoch: bool = True) -> list[float] | None:
        proceed = (on_epoch and self.t_in_epochs) or (not on_epoch and not self.t_in_epochs)
        if not proceed:
            return None
        return self._get_lr(t)

    def step(self, epoch: int, metric: float | None = None) -> None:
        """End of epoch ``epoch``: the groups get the values of ``epoch`` when ``t_in_epochs``."""
        self.metric = metric
        values = self._get_values(epoch, on_epoch=True)
        if values is not None:
            values = self._add_noise(values, epoch)
            self.update_groups(values)

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        """After update ``num_updates``: the groups get its values unless ``t_in_epochs``."""
        self.metric = metric
        values = self._get_values(num_updates, on_epoch=False)
        if values is not None:
            values = self._add_noise(values, num_updates)
            self.update_groups(values)

    def update_groups(self, values) -> None:
        """``group[field] = value * group['lr_scale']`` (or ``value``), for each group."""
        if not isinstance(values, (list, tuple)):
            values = [values] * len(self.optimizer.param_groups)
        for param_group, value in zip(self.optimizer.param_groups, values):
            if "lr_scale" in param_group:
                param_group[self.param_group_field] = value * param_group["lr_scale"]
            else:
                param_group[self.param_group_field] = value

    # ---------------------------------------------------------------- noise, as timm
    def _add_noise(self, lrs: list[float], t) -> list[float]:
        if self._is_apply_noise(t):
            noise = self._calculate_noise(t)
            lrs = [v + v * noise for v in lrs]
        return lrs

    def _is_apply_noise(self, t) -> bool:
        apply_noise = False
        if self.noise_range_t is not None:
            if isinstance(self.noise_range_t, (list, tuple)):
                apply_noise = self.noise_range_t[0] <= t < self.noise_range_t[1]
            else:
                apply_noise = t >= self.noise_range_t
        return apply_noise

    def _calculate_noise(self, t) -> float:
        # timm's draw: a fresh generator seeded per step, so a resumed run gets the same noise.
        g = torch.Generator()
        g.manual_seed(self.noise_seed + t)
        if self.noise_type == "normal":
            while True:
                noise = torch.randn(1, generator=g).item() * self.noise_std
                if abs(noise) < self.noise_pct:
                    return noise
        else:
            noise = 2 * (torch.rand(1, generator=g).item() - 0.5) * self.noise_pct
        return noise

    def _warmup_steps(self, targets: list) -> None:
        if self.warmup_t:
            self.warmup_steps = [(v - self.warmup_lr_init) / self.warmup_t for v in targets]
            Scheduler.update_groups(self, self.warmup_lr_init)
        else:
            self.warmup_steps = [1 for _ in self.base_values]

    def _cycle_length(self, cycles=0):
        cycles = max(1, cycles or self.cycle_limit)
        if self.cycle_mul == 1.0:
            t = self.t_initial * cycles
        else:
            t = int(math.floor(-self.t_initial * (self.cycle_mul**cycles - 1) / (1 - self.cycle_mul)))
        return t + self.warmup_t if self.warmup_prefix else t


def _noise_args(noise_range_t, noise_pct, noise_std, noise_seed) -> dict:
    return dict(noise_range_t=noise_range_t, noise_pct=noise_pct, noise_std=noise_std, noise_seed=noise_seed)


class _CycleScheduler(Scheduler):
    _curve: Any = None
    _keys: tuple = (
        "t_initial",
        "lr_min",
        "cycle_mul",
        "cycle_decay",
        "cycle_limit",
        "warmup_t",
        "warmup_lr_init",
        "warmup_prefix",
    )

    def _check_cycle(self, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t, warmup_lr_init) -> None:
        for name, v in (
            ("t_initial", t_initial),
            ("lr_min", lr_min),
            ("cycle_mul", cycle_mul),
            ("cycle_decay", cycle_decay),
            ("cycle_limit", cycle_limit),
            ("warmup_t", warmup_t),
            ("warmup_lr_init", warmup_lr_init),
        ):
            _real(name, v)
        _require(t_initial > 0, f"t_initial must be > 0, got {t_initial!r}")
        _require(lr_min >= 0, f"lr_min must be >= 0, got {lr_min!r}")

    def _build(self, base: float, warmup_step: float):
        d = self.__dict__
        return _core.timm_cycle(
            curve=self._curve,
            base=base,
            lr_min=float(d["lr_min"]),
            t_initial=float(d["t_initial"]),
            cycle_mul=float(d["cycle_mul"]),
            cycle_decay=float(d["cycle_decay"]),
            cycle_limit=float(d["cycle_limit"]),
            k_decay=float(d.get("k_decay", 1.0)),
            power=float(d.get("power", 1.0)),
            lb=float(d.get("lb", -7.0)),
            ub=float(d.get("ub", 3.0)),
            warmup_t=float(d["warmup_t"]),
            warmup_lr_init=float(d["warmup_lr_init"]),
            warmup_step=warmup_step,
            warmup_prefix=bool(d["warmup_prefix"]),
        )

    def get_cycle_length(self, cycles=0):
        """Steps in ``cycles`` cycles (default ``cycle_limit``), plus the warmup with a prefix (timm's)."""
        return self._cycle_length(cycles)


class CosineLRScheduler(_CycleScheduler):
    r"""timm's ``CosineLRScheduler``: cosine decay with restarts, warmup, k-decay and noise.

    Each group's lr is :class:`clrfast.TimmCosine` of its ``initial_lr``:
    ``lr_min + 0.5 * (lr_max - lr_min) * (1 + cos(pi * t_curr ** k / t_i ** k))`` in cycle ``i``
    (``lr_max = base * cycle_decay ** i``) while ``i < cycle_limit``, then ``lr_min``.
    """

    _curve = _core.TimmCurve.cosine
    _keys = (*_CycleScheduler._keys, "k_decay")

    def __init__(
        self,
        optimizer: Optimizer,
        t_initial: int,
        lr_min: float = 0.0,
        cycle_mul: float = 1.0,
        cycle_decay: float = 1.0,
        cycle_limit: int = 1,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        warmup_prefix: bool = False,
        t_in_epochs: bool = True,
        noise_range_t: list | tuple | int | None = None,
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int = 42,
        k_decay: float = 1.0,
        initialize: bool = True,
    ) -> None:
        self._check_cycle(t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t, warmup_lr_init)
        _real("k_decay", k_decay)
        super().__init__(
            optimizer,
            param_group_field="lr",
            t_in_epochs=t_in_epochs,
            **_noise_args(noise_range_t, noise_pct, noise_std, noise_seed),
            initialize=initialize,
        )
        self.t_initial = t_initial
        self.lr_min = lr_min
        self.cycle_mul = cycle_mul
        self.cycle_decay = cycle_decay
        self.cycle_limit = cycle_limit
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        self.warmup_prefix = warmup_prefix
        self.k_decay = k_decay
        self._warmup_steps(self.base_values)


class PolyLRScheduler(_CycleScheduler):
    r"""timm's ``PolyLRScheduler``: polynomial decay with restarts, warmup, k-decay and noise.

    Each group's lr is :class:`clrfast.TimmPoly` of its ``initial_lr``:
    ``lr_min + (lr_max - lr_min) * (1 - t_curr ** k / t_i ** k) ** power`` while ``i < cycle_limit``.
    """

    _curve = _core.TimmCurve.poly
    _keys = (*_CycleScheduler._keys, "power", "k_decay")

    def __init__(
        self,
        optimizer: Optimizer,
        t_initial: int,
        power: float = 0.5,
        lr_min: float = 0.0,
        cycle_mul: float = 1.0,
        cycle_decay: float = 1.0,
        cycle_limit: int = 1,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        warmup_prefix: bool = False,
        t_in_epochs: bool = True,
        noise_range_t: list | tuple | int | None = None,
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int = 42,
        k_decay: float = 1.0,
        initialize: bool = True,
    ) -> None:
        self._check_cycle(t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t, warmup_lr_init)
        _real("power", power)
        _real("k_decay", k_decay)
        super().__init__(
            optimizer,
            param_group_field="lr",
            t_in_epochs=t_in_epochs,
            **_noise_args(noise_range_t, noise_pct, noise_std, noise_seed),
            initialize=initialize,
        )
        self.t_initial = t_initial
        self.power = power
        self.lr_min = lr_min
        self.cycle_mul = cycle_mul
        self.cycle_decay = cycle_decay
        self.cycle_limit = cycle_limit
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        self.warmup_prefix = warmup_prefix
        self.k_decay = k_decay
        self._warmup_steps(self.base_values)


class TanhLRScheduler(_CycleScheduler):
    r"""timm's ``TanhLRScheduler``: hyperbolic-tangent decay with restarts, warmup and noise.

    Each group's lr is :class:`clrfast.TimmTanh` of its ``initial_lr``:
    ``lr_min + 0.5 * (lr_max - lr_min) * (1 - tanh(lb * (1. - tr) + ub * tr))``, ``tr = t_curr / t_i``.
    Without ``warmup_prefix`` the warmup rises to the curve's value at ``warmup_t``, as timm's.
    """

    _curve = _core.TimmCurve.tanh
    _keys = (*_CycleScheduler._keys, "lb", "ub")

    def __init__(
        self,
        optimizer: Optimizer,
        t_initial: int,
        lb: float = -7.0,
        ub: float = 3.0,
        lr_min: float = 0.0,
        cycle_mul: float = 1.0,
        cycle_decay: float = 1.0,
        cycle_limit: int = 1,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        warmup_prefix: bool = False,
        t_in_epochs: bool = True,
        noise_range_t: list | tuple | int | None = None,
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int = 42,
        initialize: bool = True,
    ) -> None:
        self._check_cycle(t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t, warmup_lr_init)
        _real("lb", lb)
        _real("ub", ub)
        _require(lb < ub, f"lb must be < ub, got lb={lb!r}, ub={ub!r}")
        _require(cycle_limit >= 0, f"cycle_limit must be >= 0, got {cycle_limit!r}")
        _require(warmup_t >= 0, f"warmup_t must be >= 0, got {warmup_t!r}")
        _require(warmup_lr_init >= 0, f"warmup_lr_init must be >= 0, got {warmup_lr_init!r}")
        super().__init__(
            optimizer,
            param_group_field="lr",
            t_in_epochs=t_in_epochs,
            **_noise_args(noise_range_t, noise_pct, noise_std, noise_seed),
            initialize=initialize,
        )
        self.lb = lb
        self.ub = ub
        self.t_initial = t_initial
        self.lr_min = lr_min
        self.cycle_mul = cycle_mul
        self.cycle_decay = cycle_decay
        self.cycle_limit = cycle_limit
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        self.warmup_prefix = warmup_prefix
        if self.warmup_t and not self.warmup_prefix:
            # timm's target is self._get_lr(warmup_t): the curve at warmup_t, before any warmup exists.
            curve = [self._build_curve(float(v)) for v in self.base_values]
            targets = _core.timm_values(curve, float(self.warmup_t))
        else:
            targets = self.base_values
        self._warmup_steps(targets)

    def _build_curve(self, base: float):
        saved = self.__dict__["warmup_t"]
        self.__dict__["warmup_t"] = 0
        try:
            return self._build(base, 1.0)
        finally:
            self.__dict__["warmup_t"] = saved


class _StepScheduler(Scheduler):
    _multi = False
    _keys = ("decay_t", "decay_rate", "warmup_t", "warmup_lr_init", "warmup_prefix")

    def _init_steps(self, optimizer, decay_t, decay_rate, warmup_t, warmup_lr_init, warmup_prefix, t_in_epochs, noise,
                    initialize) -> None:  # fmt: skip
        _real("decay_rate", decay_rate)
        _real("warmup_t", warmup_t)
        _real("warmup_lr_init", warmup_lr_init)
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=t_in_epochs, **noise, initialize=initialize)
        self.decay_t = decay_t
        self.decay_rate = decay_rate
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        self.warmup_prefix = warmup_prefix
        self._warmup_steps(self.base_values)

    def _build(self, base: float, warmup_step: float):
        d = self.__dict__
        multi = self._multi
        return _core.timm_step(
            base=base,
            decay_t=0.0 if multi else float(d["decay_t"]),
            decay_rate=float(d["decay_rate"]),
            milestones=[float(m) for m in d["decay_t"]] if multi else [],
            multi=multi,
            warmup_t=float(d["warmup_t"]),
            warmup_lr_init=float(d["warmup_lr_init"]),
            warmup_step=warmup_step,
            warmup_prefix=bool(d["warmup_prefix"]),
        )


class StepLRScheduler(_StepScheduler):
    r"""timm's ``StepLRScheduler``: ``base * (decay_rate ** (t // decay_t))`` after a linear warmup.

    Each group's lr is :class:`clrfast.TimmStep` of its ``initial_lr`` (``//`` Python's floor division).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        decay_t: float,
        decay_rate: float = 1.0,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        warmup_prefix: bool = True,
        t_in_epochs: bool = True,
        noise_range_t: list | tuple | int | None = None,
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int = 42,
        initialize: bool = True,
    ) -> None:
        _real("decay_t", decay_t)
        noise = _noise_args(noise_range_t, noise_pct, noise_std, noise_seed)
        self._init_steps(
            optimizer, decay_t, decay_rate, warmup_t, warmup_lr_init, warmup_prefix, t_in_epochs, noise, initialize
        )


class MultiStepLRScheduler(_StepScheduler):
    r"""timm's ``MultiStepLRScheduler``: ``base * (decay_rate ** bisect_right(decay_t, t + 1))``.

    Each group's lr is :class:`clrfast.TimmMultiStep` of its ``initial_lr``: milestone ``m``
    applies from ``t = m - 1`` (timm's convention, unlike torch's ``MultiStepLR``). At most 16
    milestones; the core repeats ``bisect_right``'s loop, so an unsorted list gives what timm gives.
    """

    _multi = True

    def __init__(
        self,
        optimizer: Optimizer,
        decay_t: list[int],
        decay_rate: float = 1.0,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        warmup_prefix: bool = True,
        t_in_epochs: bool = True,
        noise_range_t: list | tuple | int | None = None,
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int = 42,
        initialize: bool = True,
    ) -> None:
        if isinstance(decay_t, (str, bytes, dict)) or not hasattr(decay_t, "__len__"):
            raise TypeError(f"decay_t must be a list of milestones, got {decay_t!r}")
        for i, m in enumerate(decay_t):
            _real(f"decay_t[{i}]", m)
        if len(decay_t) > 16:
            raise TimmArgumentError(f"decay_t holds at most 16 milestones here, got {len(decay_t)}")
        noise = _noise_args(noise_range_t, noise_pct, noise_std, noise_seed)
        self._init_steps(
            optimizer, decay_t, decay_rate, warmup_t, warmup_lr_init, warmup_prefix, t_in_epochs, noise, initialize
        )

    def get_curr_decay_steps(self, t):
        """The number of milestones passed at ``t``: ``bisect_right(decay_t, t + 1)`` (timm's)."""
        return bisect.bisect_right(self.decay_t, t + 1)


_STABLE_FNS = ("constant", "rsqrt", "power")
_DECAY_FNS = ("linear", "1-sqrt", "cosine", "power", "exp")
_DECAY_CODES = {
    "linear": _core.TimmDecay.linear,
    "1-sqrt": _core.TimmDecay.one_minus_sqrt,
    "cosine": _core.TimmDecay.cosine,
    "power": _core.TimmDecay.power,
    "exp": _core.TimmDecay.exp,
}


class WSDLRScheduler(Scheduler):
    r"""timm's ``WSDLRScheduler``: warmup, a stable phase, a decay to ``lr_min`` over the last ``decay_t`` steps.

    Each group's lr is :class:`clrfast.TimmWSD` of its ``initial_lr``:
    ``lr_min + (max(base * stable(t_s), lr_min) - lr_min) * decay(frac)``. timm's checks and
    messages; a callable ``decay_fn`` is refused (``TypeError``): it has no compiled form.
    """

    _keys = (
        "t_initial",
        "decay_t",
        "lr_min",
        "stable_fn",
        "stable_timescale",
        "stable_power",
        "decay_fn",
        "decay_power",
        "decay_ratio",
        "warmup_t",
        "warmup_lr_init",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        t_initial: int,
        decay_t: int,
        lr_min: float = 0.0,
        stable_fn: str = "constant",
        stable_timescale: float | None = None,
        stable_power: float = 0.5,
        decay_fn: str | Callable[[float], float] = "1-sqrt",
        decay_power: float = 0.5,
        decay_ratio: float = 0.1,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        t_in_epochs: bool = True,
        noise_range_t: list | tuple | int | None = None,
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int = 42,
        initialize: bool = True,
    ) -> None:
        if callable(decay_fn):
            raise TypeError(
                f"decay_fn must be one of {_DECAY_FNS}, got the callable {decay_fn!r}: clrfast computes the "
                "schedule in its compiled core, which cannot call Python (timm's WSDLRScheduler can)"
            )
        for name, v in (
            ("t_initial", t_initial),
            ("decay_t", decay_t),
            ("lr_min", lr_min),
            ("stable_power", stable_power),
            ("decay_power", decay_power),
            ("decay_ratio", decay_ratio),
            ("warmup_t", warmup_t),
            ("warmup_lr_init", warmup_lr_init),
        ):
            _real(name, v)
        super().__init__(
            optimizer,
            param_group_field="lr",
            t_in_epochs=t_in_epochs,
            **_noise_args(noise_range_t, noise_pct, noise_std, noise_seed),
            initialize=initialize,
        )
        # timm's checks, in its order and with its messages.
        if t_initial <= 0:
            raise ValueError(f"Invalid t_initial ({t_initial}), must be > 0.")
        if not 0 < decay_t <= t_initial:
            raise ValueError(f"Invalid decay_t ({decay_t}), must be in (0, t_initial] w/ t_initial={t_initial}.")
        if lr_min < 0:
            raise ValueError(f"Invalid lr_min ({lr_min}), must be >= 0.")
        if stable_fn not in _STABLE_FNS:
            raise ValueError(f"Invalid stable_fn ({stable_fn}), must be one of {_STABLE_FNS}.")
        if isinstance(decay_fn, str) and decay_fn not in _DECAY_FNS:
            raise ValueError(f"Invalid decay_fn ({decay_fn}), must be one of {_DECAY_FNS} or a callable.")
        if not 0.0 < decay_ratio < 1.0:
            raise ValueError(f"Invalid decay_ratio ({decay_ratio}), must be in (0, 1).")
        if decay_power <= 0:
            raise ValueError(f"Invalid decay_power ({decay_power}), must be > 0.")
        if stable_power <= 0:
            raise ValueError(f"Invalid stable_power ({stable_power}), must be > 0.")
        if stable_fn != "constant":
            if stable_timescale is None:
                stable_timescale = warmup_t
            _real("stable_timescale", stable_timescale)
            if stable_timescale <= 0:
                raise ValueError(
                    f"stable_fn={stable_fn} requires a positive stable_timescale, it defaults to warmup_t "
                    f"({warmup_t}), set it explicitly when there is no warmup."
                )
        self.t_initial = t_initial
        self.decay_t = decay_t
        self.lr_min = lr_min
        self.stable_fn = stable_fn
        self.stable_timescale = stable_timescale
        self.stable_power = stable_power
        self.decay_fn = decay_fn
        self.decay_power = decay_power
        self.decay_ratio = decay_ratio
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        self._warmup_steps(self.base_values)

    def _build(self, base: float, warmup_step: float):
        d = self.__dict__
        stable_fn = d["stable_fn"]
        if stable_fn not in _STABLE_FNS or d["decay_fn"] not in _DECAY_CODES:
            raise ValueError(f"stable_fn={stable_fn!r}, decay_fn={d['decay_fn']!r}: not a compiled WSD schedule")
        timescale = d["stable_timescale"]
        return _core.timm_wsd(
            base=base,
            t_initial=float(d["t_initial"]),
            decay_t=float(d["decay_t"]),
            lr_min=float(d["lr_min"]),
            stable_fn=_core.TimmStable.constant if stable_fn == "constant" else _core.TimmStable.power,
            stable_timescale=1.0 if timescale is None else float(timescale),
            stable_power=0.5 if stable_fn == "rsqrt" else float(d["stable_power"]),
            decay_fn=_DECAY_CODES[d["decay_fn"]],
            decay_power=float(d["decay_power"]),
            decay_ratio=float(d["decay_ratio"]),
            warmup_t=float(d["warmup_t"]),
            warmup_lr_init=float(d["warmup_lr_init"]),
            warmup_step=warmup_step,
        )

    def get_cycle_length(self, cycles=0):
        """``warmup_t + t_initial``: the length of the schedule (timm's)."""
        return self.warmup_t + self.t_initial


class PlateauLRScheduler(Scheduler):
    """timm's ``PlateauLRScheduler``: torch's ``ReduceLROnPlateau`` with a linear warmup and noise.

    The lr follows the metric, so it is timm's logic around torch's scheduler rather than a
    compiled schedule: warmup ``warmup_lr_init + epoch * step`` while ``epoch <= warmup_t``, then
    ``ReduceLROnPlateau.step(metric)``, with noise applied on top and undone before the next step.
    Its state dict is timm's ``{'best', 'last_epoch'}``. timm's deprecation warning is not emitted.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        decay_rate: float = 0.1,
        patience_t: int = 10,
        threshold: float = 1e-4,
        cooldown_t: int = 0,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        lr_min: float = 0.0,
        mode: str = "max",
        noise_range_t: list | tuple | int | None = None,
        noise_type: str = "normal",
        noise_pct: float = 0.67,
        noise_std: float = 1.0,
        noise_seed: int | None = None,
        initialize: bool = True,
    ) -> None:
        super().__init__(
            optimizer,
            "lr",
            noise_range_t=noise_range_t,
            noise_type=noise_type,
            noise_pct=noise_pct,
            noise_std=noise_std,
            noise_seed=noise_seed,
            initialize=initialize,
        )
        self.lr_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            patience=patience_t,
            factor=decay_rate,
            threshold=threshold,
            cooldown=cooldown_t,
            mode=mode,  # type: ignore[arg-type]
            min_lr=lr_min,
        )
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        if self.warmup_t:
            self.warmup_steps = [(v - warmup_lr_init) / self.warmup_t for v in self.base_values]
            Scheduler.update_groups(self, self.warmup_lr_init)
        else:
            self.warmup_steps = [1 for _ in self.base_values]
        self.restore_lr: list | None = None

    def state_dict(self) -> dict[str, Any]:
        """timm's ``{'best', 'last_epoch'}`` of the wrapped ``ReduceLROnPlateau``."""
        return {"best": self.lr_scheduler.best, "last_epoch": self.lr_scheduler.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores ``best`` (and ``last_epoch`` when present), as timm's."""
        self.lr_scheduler.best = state_dict["best"]
        if "last_epoch" in state_dict:
            self.lr_scheduler.last_epoch = state_dict["last_epoch"]

    def step(self, epoch: int, metric: float | None = None) -> None:
        """Warmup while ``epoch <= warmup_t``, else ``ReduceLROnPlateau.step(metric)`` (when given) and noise."""
        if epoch <= self.warmup_t:
            lrs = [self.warmup_lr_init + epoch * s for s in self.warmup_steps]
            Scheduler.update_groups(self, lrs)
        else:
            if self.restore_lr is not None:
                # the lr from before the last noise, so that torch's scheduler decays that one
                for i, param_group in enumerate(self.optimizer.param_groups):
                    param_group["lr"] = self.restore_lr[i]
                self.restore_lr = None
            if metric is not None:
                self.lr_scheduler.step(metric)
            if self._is_apply_noise(epoch):
                self._apply_noise(epoch)

    def step_update(self, num_updates: int, metric: float | None = None):
        """Does nothing: the plateau scheduler steps per epoch (timm's)."""
        return None

    def _apply_noise(self, epoch: int) -> None:
        noise = self._calculate_noise(epoch)
        restore_lr = []
        for param_group in self.optimizer.param_groups:
            old_lr = float(param_group["lr"])
            restore_lr.append(old_lr)
            param_group["lr"] = old_lr + old_lr * noise
        self.restore_lr = restore_lr

    def _get_lr(self, t) -> list[float]:
        raise AssertionError("should not be called as step is overridden")


def create_scheduler_v2(
    optimizer: Optimizer,
    sched: str = "cosine",
    num_epochs: int = 300,
    decay_epochs: float | None = None,
    decay_milestones: Any = (90, 180, 270),
    cooldown_epochs: int = 0,
    patience_epochs: int = 10,
    decay_rate: float = 0.1,
    min_lr: float = 0.0,
    warmup_lr: float = 1e-5,
    warmup_epochs: int = 0,
    warmup_prefix: bool = False,
    noise: float | list | None = None,
    noise_pct: float = 0.67,
    noise_std: float = 1.0,
    noise_seed: int = 42,
    cycle_mul: float = 1.0,
    cycle_decay: float = 0.1,
    cycle_limit: int = 1,
    k_decay: float = 1.0,
    decay_fn: str | None = None,
    stable_timescale: float | None = None,
    plateau_mode: str = "max",
    step_on_epochs: bool = True,
    updates_per_epoch: int = 0,
):
    """timm's ``create_scheduler_v2``: ``(scheduler, num_epochs)`` for ``sched`` with timm's defaults.

    ``sched`` is one of 'cosine', 'tanh', 'step', 'multistep', 'poly', 'wsd', 'rsqrt',
    'constant', 'plateau' or 'none' (no scheduler, None); ``num_epochs`` comes back as timm
    computes it (cycles, warmup prefix and cooldown included).
    """
    if decay_epochs is None:
        decay_epochs = 0.2 if sched in ("wsd", "rsqrt") else 90

    t_initial = num_epochs
    warmup_t = warmup_epochs
    decay_t = decay_epochs
    cooldown_t = cooldown_epochs
    timescale_t = stable_timescale

    if not step_on_epochs:
        assert updates_per_epoch > 0, "updates_per_epoch must be set to number of dataloader batches"
        t_initial = t_initial * updates_per_epoch
        warmup_t = warmup_t * updates_per_epoch
        decay_t = decay_t * updates_per_epoch
        decay_milestones = [d * updates_per_epoch for d in decay_milestones]
        cooldown_t = cooldown_t * updates_per_epoch
        if timescale_t is not None:
            timescale_t = timescale_t * updates_per_epoch

    warmup_args: dict[str, Any] = dict(warmup_lr_init=warmup_lr, warmup_t=warmup_t, warmup_prefix=warmup_prefix)

    noise_range: Any
    if noise is not None:
        if isinstance(noise, (list, tuple)):
            noise_range = [n * t_initial for n in noise]
            if len(noise_range) == 1:
                noise_range = noise_range[0]
        else:
            noise_range = noise * t_initial
    else:
        noise_range = None
    noise_args: dict[str, Any] = _noise_args(noise_range, noise_pct, noise_std, noise_seed)
    cycle_args: dict[str, Any] = dict(cycle_mul=cycle_mul, cycle_decay=cycle_decay, cycle_limit=cycle_limit)

    lr_scheduler: Any = None
    if sched == "cosine":
        lr_scheduler = CosineLRScheduler(
            optimizer,
            t_initial=t_initial,
            lr_min=min_lr,
            t_in_epochs=step_on_epochs,
            **cycle_args,
            **warmup_args,
            **noise_args,
            k_decay=k_decay,
        )
    elif sched == "tanh":
        lr_scheduler = TanhLRScheduler(
            optimizer,
            t_initial=t_initial,
            lr_min=min_lr,
            t_in_epochs=step_on_epochs,
            **cycle_args,
            **warmup_args,
            **noise_args,
        )
    elif sched == "step":
        lr_scheduler = StepLRScheduler(
            optimizer,
            decay_t=decay_t,
            decay_rate=decay_rate,
            t_in_epochs=step_on_epochs,
            **warmup_args,
            **noise_args,
        )
    elif sched == "constant":
        # a step schedule that never decays: unlike 'none' it applies the warmup and lr_scale
        lr_scheduler = StepLRScheduler(
            optimizer,
            decay_t=1,
            decay_rate=1.0,
            t_in_epochs=step_on_epochs,
            **warmup_args,
            **noise_args,
        )
    elif sched == "multistep":
        lr_scheduler = MultiStepLRScheduler(
            optimizer,
            decay_t=decay_milestones,
            decay_rate=decay_rate,
            t_in_epochs=step_on_epochs,
            **warmup_args,
            **noise_args,
        )
    elif sched == "plateau":
        assert step_on_epochs, "Plateau LR only supports step per epoch."
        warmup_args.pop("warmup_prefix", False)
        lr_scheduler = PlateauLRScheduler(
            optimizer,
            decay_rate=decay_rate,
            patience_t=patience_epochs,
            cooldown_t=0,
            **warmup_args,
            lr_min=min_lr,
            mode=plateau_mode,
            **noise_args,
        )
    elif sched == "poly":
        lr_scheduler = PolyLRScheduler(
            optimizer,
            power=decay_rate,  # timm overloads decay_rate as the polynomial power
            t_initial=t_initial,
            lr_min=min_lr,
            t_in_epochs=step_on_epochs,
            k_decay=k_decay,
            **cycle_args,
            **warmup_args,
            **noise_args,
        )
    elif sched in ("wsd", "rsqrt"):
        # the warmup is always a prefix here; without warmup_prefix the stable + decay phases fit in num_epochs
        t_sched = t_initial if warmup_prefix else t_initial - warmup_t
        if 0 < decay_epochs < 1:
            decay_t = decay_epochs * t_sched
        decay_t = int(round(decay_t))
        if not 0 < decay_t <= t_sched:
            raise ValueError(
                f"{sched} schedule requires 0 < decay_epochs <= epochs{'' if warmup_prefix else ' - warmup_epochs'}, "
                f"got decay {decay_t} and stable + decay length {t_sched}."
            )
        lr_scheduler = WSDLRScheduler(
            optimizer,
            t_initial=t_sched,
            decay_t=decay_t,
            lr_min=min_lr,
            stable_fn="rsqrt" if sched == "rsqrt" else "constant",
            stable_timescale=timescale_t,
            decay_fn=decay_fn or ("linear" if sched == "rsqrt" else "1-sqrt"),
            t_in_epochs=step_on_epochs,
            warmup_t=warmup_t,
            warmup_lr_init=warmup_lr,
            **noise_args,
        )
    elif sched != "none":
        raise ValueError(f"Unknown scheduler '{sched}'.")

    if hasattr(lr_scheduler, "get_cycle_length"):
        t_with_cycles_and_cooldown = lr_scheduler.get_cycle_length() + cooldown_t
        if step_on_epochs:
            num_epochs = t_with_cycles_and_cooldown
        else:
            num_epochs = t_with_cycles_and_cooldown // updates_per_epoch
    else:
        if warmup_prefix:
            num_epochs += warmup_epochs

    return lr_scheduler, num_epochs

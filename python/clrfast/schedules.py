"""Learning-rate and momentum schedules as immutable values.

Every schedule is a small frozen dataclass (picklable, hashable, equal by
value, JSON-safe through ``to_dict``/``from_dict``) that compiles to a
``clrfast._core.Schedule``; all arithmetic happens in the C++ core
(``cpp/include/clrfast/schedule.hpp``), never in Python.

Arguments are checked and stored as plain Python numbers when a schedule is
built, and it is compiled right away, so a schedule that exists can be
evaluated. A value that would overflow a double raises ``OverflowError``
instead of returning inf or NaN.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Union

import numpy as np

from . import _core
from . import _validate as check
from .scales import (
    ExpRange,
    Flat,
    Geometric,
    Halving,
    Scale,
    _build,
    _check_keys,
    _quote,
    _reduce,
    _refuse_state,
    _seal,
)

FORMAT_VERSION = 1

# The enum members of the core, by the names the Python API uses.
_WINDOWS = _core.Window.__members__
_SCALE_MODES = _core.ScaleMode.__members__
_ANNEAL = _core.Anneal.__members__
_SWEEP = _core.SweepMode.__members__
_MAX_STEP = 2**63 - 1  # tables index steps with int64

Steps = Union[int, "np.ndarray", list]


class Schedule:
    """Base class: a pure function of the step number (steps count from 0).

    Subclasses validate their fields in ``__post_init__`` and define ``_compile()``.
    """

    # Set by subclasses whose values can grow without bound with the step
    # (a cyclic scale, a growing restart peak): their steps are checked.
    _can_overflow: Any = False  # a class constant, or a property where it depends on the values
    if TYPE_CHECKING:  # every concrete schedule is a dataclass
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __new__(cls, *args, **kwargs):
        return _build(cls, args, kwargs)

    def __post_init__(self):
        _seal(self, self._construct)

    def _construct(self) -> None:
        self._validate()
        object.__setattr__(self, "_compiled", self._compile())
        # A finite schedule is checked over all its steps once; an endless one at step 0
        # here and at every step asked for later (when its values can grow).
        last = self.max_step
        self._check_range(0, 0 if last is None else last)

    def _validate(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compile(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    # ---------------------------------------------------------------- values
    @property
    def _core(self):
        """The compiled schedule (``clrfast._core.Schedule``)."""
        return self.__dict__["_compiled"]

    @property
    def max_step(self) -> int | None:
        """The last valid step, or None when the schedule goes on forever."""
        return None

    @property
    def horizon(self) -> int | None:
        """The last step of the schedule's shape, what :meth:`with_total_steps` moves; None if it has none.

        ``max_step`` for a finite schedule; ``total_steps - 1`` for one-cycle and the warmup-decay
        families that have a ``total_steps`` (the steps after it hold or extrapolate); the last
        decay step of a WSD; ``num_steps - 1`` for a range sweep; for a join, its last piece's,
        or where that is a hold (a cooldown's final lr), the step before it.
        """
        return self.max_step

    @property
    def has_momentum(self) -> bool:
        """True when the schedule defines a momentum for at least some steps."""
        return self._core.has_momentum

    def _check_step(self, step) -> float:
        t = check.integer("step", step, min=0)
        self._check_max(t)
        try:
            return float(t)  # exact below 2**53; steps past it are rounded, as torch's float arithmetic does
        except OverflowError:
            raise OverflowError(f"step is too large for a double, got {check._short(t)}") from None

    def _check_max(self, t: int, first: int | None = None) -> None:
        """Raise unless steps ``first..t`` (default just ``t``) all have finite values.

        Past ``max_step``: torch's ``ValueError``; where a value overflows a double:
        ``OverflowError``. Nothing is computed or changed either way.
        """
        last = self.max_step
        if last is not None and t > last:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {last}")
        if self._can_overflow:
            self._check_range(t if first is None else first, t)

    def _check_range(self, lo: int, hi: int) -> None:
        try:
            status = self._core.status_between(float(lo), float(hi))
        except OverflowError:
            raise OverflowError(f"step is too large for a double, got {check._short(hi)}") from None
        if status != _core.Status.ok:
            raise OverflowError(self._overflow_message(lo, hi))

    def _overflow_message(self, lo: int, hi: int) -> str:
        # Overflow is monotone in the step, so bisect for the first bad one.
        ok = lambda t: self._core.status_between(float(lo), float(t)) == _core.Status.ok  # noqa: E731
        if not ok(lo):
            bad = lo
        else:
            good, bad = lo, hi
            while bad - good > 1:
                mid = (good + bad) // 2
                good, bad = (mid, bad) if ok(mid) else (good, mid)
        return (
            f"{self!r} has no finite value at step {bad}: a scale, the cycle height or the "
            f"learning rate overflows a double there (asked for steps {lo}..{hi})"
        )

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
        shape) receives the values in place. Every step is checked before
        anything is written.
        """
        return self._table(_core.Quantity.lr, steps, dtype, out)

    def momentum_table(self, steps: Steps, dtype=np.float64, out: np.ndarray | None = None):
        """Momentum at the given steps (as :meth:`lr_table`); NaN where undefined.

        Returns None when the schedule defines no momentum at all.
        """
        if not self.has_momentum:
            return None
        return self._table(_core.Quantity.momentum, steps, dtype, out)

    def _table(self, quantity, steps, dtype, out):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise TypeError(f"dtype must be float64 or float32, got {dtype}")
        if isinstance(steps, (int, np.integer)) and not isinstance(steps, (bool, np.bool_)):
            n = check.integer("steps", steps, min=0, max=_MAX_STEP)
            if n > 0:
                self._check_max(n - 1, first=0)
            out = _prepare_out(out, (n,), dtype)
            self._core.table_range(quantity, 0, n, out)
            return out
        arr = np.asarray(steps)
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"steps must be an int count or an integer array, got dtype {arr.dtype}")
        if arr.dtype == np.uint64 and arr.size and (arr.reshape(-1) > np.iinfo(np.int64).max).any():
            raise ValueError("steps holds values too large for int64")
        flat = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
        if flat.size:
            lo = int(flat.min())
            if lo < 0:
                raise ValueError(f"steps must be >= 0, got {lo}")
            try:
                self._check_max(int(flat.max()), first=lo)
            except OverflowError:
                # Steps between the asked ones may overflow where the asked ones do not (a Join whose
                # growing piece ends before it does): then each asked step is checked, the first bad
                # one named.
                for t in np.unique(flat):
                    self._check_max(int(t))
        out = _prepare_out(out, arr.shape, dtype)
        self._core.table_steps(quantity, flat, out.reshape(-1))
        return out

    # ------------------------------------------------------------------ derived schedules
    def cooldown(self, at: int, steps: int, shape: str = "linear", final_lr: float = 0.0) -> Schedule:
        r"""This schedule up to step ``at``, then a decay from ``lr(at)`` to ``final_lr`` over ``steps`` steps.

        The decay is transformers' WSD decay (``get_wsd_schedule`` with no warmup and no stable
        phase): with ``L = lr(at)``, ``r = final_lr / L`` and ``p = (t - at) / steps``,
        ``lr(t) = L * max(0, h(p) * (1 - r) + r)`` for ``at <= t < at + steps``, ``h`` per
        ``shape``: linear ``1 - p``, cosine ``0.5 * (1 + cos(pi * p))``, 1-sqrt ``1 - sqrt(p)``;
        then ``final_lr``. Steps past ``at`` follow the new clock, so ``at`` may lie before the
        schedule's end (a run cut short) or at it. The cooldown defines no momentum: a fused
        optimizer's group keeps the one it last applied (``momentum(at - 1)`` of a one-cycle) or
        its constant one. The result is a
        :class:`Join`, so it is ``to_dict``-able and usable wherever a schedule is.
        """
        at = check.integer("at", at, min=0, max=_MAX_COUNT)
        steps = check.integer("steps", steps, min=1, max=_MAX_COUNT)
        shape = check.choice("shape", shape, tuple(_RAMPS))
        final_lr = check.real("final_lr", final_lr, min=0.0)
        last = self.max_step
        if last is not None and at > last:
            raise ValueError(f"at={at} lies past the schedule's last step {last}")
        start = self.lr(at)
        if final_lr > start:
            raise ValueError(
                f"final_lr={final_lr!r} is above lr(at)={start!r}: a cooldown decays; use Warmup or a Join to rise"
            )
        decay: Schedule = (
            Constant(0.0)
            if start == 0.0
            else WarmupStableDecay(start, 0, 0, steps, decay_type=shape, min_lr_ratio=final_lr / start)
        )
        head = [self] if at > 0 else []
        return Join(tuple(head + [decay, Constant(final_lr)]), tuple(([at] if at > 0 else []) + [at + steps]))

    def with_total_steps(self, total_steps: int, at: int) -> Schedule:
        r"""This schedule with its remaining part, from step ``at`` on, fitted to ``total_steps`` steps.

        With ``H = horizon``, step ``t >= at`` takes this schedule's value at time
        ``T = at + (t - at) * (H - at) / (total_steps - 1 - at)``: equal to it up to ``at``,
        continuous there, and step ``total_steps - 1`` has the value of step ``H`` (a cosine's
        last step, a WSD's last decay step); what follows ``H`` (a hold) follows, stretched the
        same way. Use it when a run is made longer or shorter mid-way
        (``group["schedule"] = s.with_total_steps(n, step)`` in a running fused optimizer takes
        over without a jump). Returns a :class:`Rehorizon`.
        """
        return Rehorizon(self, total_steps, at)

    def scaled(self, factor: float) -> Schedule:
        """This schedule with its lr times ``factor`` (momentum unchanged): a :class:`Scaled`."""
        return Scaled(self, factor)

    # ------------------------------------------------------------------ data
    def to_dict(self) -> dict:
        """A JSON-safe description, restored by :func:`from_dict`."""
        params = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (Scale, Schedule)):
                v = v.to_dict()
            elif isinstance(v, tuple) and v and isinstance(v[0], Schedule):
                v = [s.to_dict() for s in v]
            elif isinstance(v, tuple):
                v = list(v)
            params[f.name] = v
        return {"clrfast_schedule": FORMAT_VERSION, "type": type(self).__name__, "params": params}

    @staticmethod
    def from_dict(d: dict) -> Schedule:
        """Rebuild a schedule from :meth:`to_dict` output (as :func:`from_dict`)."""
        return from_dict(d)

    # Pickled as a constructor call (validated again when loaded; the compiled core is not
    # pickled), and a pickle that would set the state of one directly is refused.
    __reduce__ = _reduce
    __setstate__ = _refuse_state


def _prepare_out(out, shape, dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype or out.shape != tuple(shape):
        raise ValueError(f"out must have dtype {dtype} and shape {tuple(shape)}, got {out.dtype} and {out.shape}")
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
    return (
        check.real("base_momentum", base_momentum, min=0.0, keep_int=True),
        check.real("max_momentum", max_momentum, min=0.0, keep_int=True),
    )


def _finite_product(what: str, value: float, args: str) -> float:
    if not math.isfinite(value):
        raise OverflowError(f"{what} overflows a double: {args}")
    return value


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
    exp_range, else cycle, as torch). A step where the scale or the cycle height
    ``(max_lr - base_lr) * scale`` overflows a double raises ``OverflowError`` (torch's
    ``gamma**x`` raises there too). A scale that underflows is its limit, 0: triangular2
    gives ``base_lr`` from cycle 1025 on, where torch's ``2.0**(cycle - 1)`` raises.
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

    _can_overflow = True

    def _validate(self):
        self._set("base_lr", check.real("base_lr", self.base_lr, min=0.0, keep_int=True))
        self._set("max_lr", check.real("max_lr", self.max_lr, min=0.0, keep_int=True))
        self._set("step_size_up", check.real("step_size_up", self.step_size_up, min=0.0, min_open=True, keep_int=True))
        if self.step_size_down is not None:
            self._set("step_size_down", check.real("step_size_down", self.step_size_down, min=0.0, keep_int=True))
        self._set("mode", check.choice("mode", self.mode, ("triangular", "triangular2", "exp_range")))
        self._set("gamma", check.real("gamma", self.gamma, min=0.0, min_open=True, keep_int=True))
        if self.scale_mode is not None:
            self._set("scale_mode", check.choice("scale_mode", self.scale_mode, tuple(_SCALE_MODES)))
        self._set("window", check.choice("window", self.window, tuple(_WINDOWS)))
        mom = _momentum_pair(self.base_momentum, self.max_momentum)
        if mom is not None:
            self._set("base_momentum", mom[0])
            self._set("max_momentum", mom[1])
        if self.scale_fn is not None and not isinstance(self.scale_fn, Scale):
            raise TypeError(
                "scale_fn must be a clrfast.scales value (Flat, Halving, ExpRange, Geometric), "
                f"got {self.scale_fn!r}; plain callables work with clrfast.torch.CyclicLR"
            )
        total, ratio = self._geometry()
        sizes = f"step_size_up={self.step_size_up!r}, step_size_down={self.step_size_down!r}"
        _finite_product("step_size_up + step_size_down", total, sizes)
        if ratio == 0.0:
            raise ValueError(
                f"step_size_up is too small against step_size_down: {sizes} gives a rising "
                "half-cycle of length 0 (torch divides by zero there)"
            )

    def _geometry(self) -> tuple[float, float]:
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        return _core.cyclic_geometry(up, down)

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
        total, ratio = self._geometry()
        mom = _momentum_pair(self.base_momentum, self.max_momentum)
        scale = self.scale
        return _core.cyclic(
            base_lr=float(self.base_lr),
            max_lr=float(self.max_lr),
            total_size=total,
            step_ratio=ratio,
            scale=scale._kind,
            gamma=scale._gamma,
            scale_mode=_SCALE_MODES[self.resolved_scale_mode],
            window=_WINDOWS[self.window],
            cycle_momentum=mom is not None,
            base_momentum=float(mom[0]) if mom else 0.0,
            max_momentum=float(mom[1]) if mom else 0.0,
        )

    @classmethod
    def _from_params(cls, p: dict) -> Cyclic:
        p = dict(p)
        if p.get("scale_fn") is not None:
            try:
                p["scale_fn"] = Scale.from_dict(p["scale_fn"])
            except (TypeError, ValueError) as e:
                raise type(e)(f"scale_fn: {e}") from None
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

    def _validate(self):
        self._set("max_lr", check.real("max_lr", self.max_lr, min=0.0, keep_int=True))
        self._set("total_steps", check.integer("total_steps", self.total_steps, min=1, max=_MAX_STEP))
        self._set("pct_start", check.real("pct_start", self.pct_start, min=0.0, max=1.0, keep_int=True))
        self._set("anneal", check.choice("anneal", self.anneal, tuple(_ANNEAL)))
        self._set("three_phase", check.boolean("three_phase", self.three_phase))
        self._set("div_factor", check.real("div_factor", self.div_factor, min=0.0, min_open=True, keep_int=True))
        self._set(
            "final_div_factor",
            check.real("final_div_factor", self.final_div_factor, min=0.0, min_open=True, keep_int=True),
        )
        self._set("cycle_momentum", check.boolean("cycle_momentum", self.cycle_momentum))
        if self.cycle_momentum:
            b, m = _momentum_pair(self.base_momentum, self.max_momentum)
            self._set("base_momentum", b)
            self._set("max_momentum", m)
        initial = _finite_product(
            "max_lr/div_factor",
            self.max_lr / self.div_factor,
            f"max_lr={self.max_lr!r}, div_factor={self.div_factor!r}",
        )
        low = _finite_product(
            "max_lr/div_factor/final_div_factor",
            initial / self.final_div_factor,
            f"max_lr={self.max_lr!r}, div_factor={self.div_factor!r}, final_div_factor={self.final_div_factor!r}",
        )
        # A linear phase ends at start + (end - start)*1, which may round past the largest double
        # when both ends are near it; the step past the last phase (pct up to 2) doubles the span.
        # Everything stays finite while twice the largest of the values annealed between does.
        ends = [float(self.max_lr), initial, low]
        names = "max_lr, max_lr/div_factor, max_lr/div_factor/final_div_factor"
        if self.cycle_momentum:
            ends += [float(self.base_momentum), float(self.max_momentum)]
            names += ", base_momentum, max_momentum"
        _finite_product(
            f"2*max({names})",
            2.0 * max(ends),
            f"max_lr={self.max_lr!r}, div_factor={self.div_factor!r}, "
            f"final_div_factor={self.final_div_factor!r}"
            + (
                f", base_momentum={self.base_momentum!r}, max_momentum={self.max_momentum!r}"
                if self.cycle_momentum
                else ""
            ),
        )
        # A phase of zero length that a step falls into would divide 0 by 0.
        start = 0.0
        for end in _core.onecycle_phase_ends(float(self.total_steps), float(self.pct_start), self.three_phase):
            if end == start:
                raise ValueError(
                    f"pct_start={self.pct_start!r} with total_steps={self.total_steps!r} gives a phase of "
                    "zero length (its learning rate would be 0/0)"
                )
            start = end

    @property
    def max_step(self) -> int:
        return int(self.total_steps)

    @property
    def horizon(self) -> int:
        return int(self.total_steps) - 1

    def _compile(self):
        return _core.onecycle(
            max_lr=float(self.max_lr),
            total_steps=float(self.total_steps),
            pct_start=float(self.pct_start),
            anneal=_ANNEAL[self.anneal],
            three_phase=self.three_phase,
            div_factor=float(self.div_factor),
            final_div_factor=float(self.final_div_factor),
            cycle_momentum=self.cycle_momentum,
            base_momentum=float(self.base_momentum),
            max_momentum=float(self.max_momentum),
        )


@dataclass(frozen=True)
class CosineRestarts(Schedule):
    r"""Cosine annealing with warm restarts (SGDR), the values of ``CosineAnnealingWarmRestarts``.

    Cycle ``k`` lasts ``T_i = T_0 * T_mult**k`` steps; ``T_cur`` counts steps into it and
    ``lr = eta_min + (peak - eta_min) * (1 + cos(pi * T_cur/T_i))/2`` with
    ``peak = base_lr * peak_decay**k``. With ``warmup_steps = W > 0`` each cycle first rises
    linearly from ``eta_min`` to the peak, ``eta_min + (peak - eta_min) * T_cur/W``, then anneals
    over the remaining ``T_i - W`` steps. ``T_mult`` may be any real ``>= 1``; with
    ``peak_decay > 1`` a step where the peak overflows a double raises ``OverflowError``.
    """

    base_lr: float
    T_0: int
    T_mult: float = 1
    eta_min: float = 0.0
    peak_decay: float = 1.0
    warmup_steps: int = 0

    def _validate(self):
        self._set("base_lr", check.real("base_lr", self.base_lr, min=0.0, keep_int=True))
        self._set("T_0", check.integer("T_0", self.T_0, min=1, max=_MAX_STEP))
        self._set("T_mult", check.real("T_mult", self.T_mult, min=1.0, keep_int=True))
        self._set("eta_min", check.real("eta_min", self.eta_min, min=0.0, keep_int=True))
        self._set("peak_decay", check.real("peak_decay", self.peak_decay, min=0.0, min_open=True, keep_int=True))
        w = check.integer("warmup_steps", self.warmup_steps, min=0)
        if w >= self.T_0:
            raise ValueError(f"warmup_steps must be < T_0={self.T_0}, got {self.warmup_steps!r}")
        self._set("warmup_steps", w)
        # The cosine passes through (peak - eta_min) * 2. A peak in (0, base_lr] keeps that finite
        # when 2*max(base_lr, eta_min) is; a growing peak (peak_decay > 1) is checked per step.
        _finite_product(
            "2*max(base_lr, eta_min)",
            2.0 * max(float(self.base_lr), float(self.eta_min)),
            f"base_lr={self.base_lr!r}, eta_min={self.eta_min!r}",
        )

    @property
    def _can_overflow(self) -> bool:
        return self.peak_decay > 1

    def _compile(self):
        return _core.cosine_restarts(
            base_lr=float(self.base_lr),
            eta_min=float(self.eta_min),
            T_0=float(self.T_0),
            T_mult=float(self.T_mult),
            peak_decay=float(self.peak_decay),
            warmup_steps=float(self.warmup_steps),
        )


@dataclass(frozen=True)
class Warmup(Schedule):
    r"""Linear warmup: ``lr = start_lr + (end_lr - start_lr) * t/warmup_steps``, then ``end_lr``.

    ``Warmup(0.0, lr, W)`` is constant with warmup, the values of transformers'
    ``get_constant_schedule_with_warmup`` (``lr * t/W``, then ``lr``).
    Join it in front of another schedule:
    ``Join([Warmup(0.0, 0.1, 500), CosineRestarts(0.1, T_0=1000)], boundaries=[500])``.
    """

    start_lr: float
    end_lr: float
    warmup_steps: int

    def _validate(self):
        self._set("start_lr", check.real("start_lr", self.start_lr, min=0.0, keep_int=True))
        self._set("end_lr", check.real("end_lr", self.end_lr, min=0.0, keep_int=True))
        self._set("warmup_steps", check.integer("warmup_steps", self.warmup_steps, min=1, max=_MAX_STEP))

    def _compile(self):
        return _core.linear(start_lr=float(self.start_lr), end_lr=float(self.end_lr), steps=float(self.warmup_steps))


@dataclass(frozen=True)
class Constant(Schedule):
    """``lr = lr`` at every step."""

    lr_value: float

    def _validate(self):
        self._set("lr_value", check.real("lr", self.lr_value, min=0.0, keep_int=True))

    def _compile(self):
        return _core.constant(lr=float(self.lr_value))

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

    def _validate(self):
        self._set("mode", check.choice("mode", self.mode, tuple(_SWEEP)))
        open_ = self.mode == "exp"
        self._set("start_lr", check.real("start_lr", self.start_lr, min=0.0, min_open=open_, keep_int=True))
        self._set("end_lr", check.real("end_lr", self.end_lr, min=0.0, min_open=open_, keep_int=True))
        self._set("num_steps", check.integer("num_steps", self.num_steps, min=1, max=_MAX_STEP))
        if open_:
            lrs = f"start_lr={self.start_lr!r}, end_lr={self.end_lr!r}"
            _finite_product("end_lr/start_lr", self.end_lr / self.start_lr, lrs)
            # start_lr * ratio**f may round a few ulps past end_lr just before the last step.
            _finite_product("2*max(start_lr, end_lr)", 2.0 * max(float(self.start_lr), float(self.end_lr)), lrs)

    @property
    def horizon(self) -> int:
        return self.num_steps - 1

    def _compile(self):
        return _core.sweep(
            start_lr=float(self.start_lr),
            end_lr=float(self.end_lr),
            num_steps=float(self.num_steps),
            mode=_SWEEP[self.mode],
        )


# ----------------------------------------------------------------- warmup and decay
#
# Each of these is peak_lr * factor(t), where factor is the lambda behind the transformers
# factory of the same family, computed by the core with the same float operations in the
# same order: lr(t) is the double transformers' LambdaLR gives for a group whose initial lr
# is ``peak_lr``. All are endless (defined at every step, past the end of training too).
# Step counts are whole numbers in practice; reals are accepted and computed with, as
# transformers does with a float num_warmup_steps.

_RAMPS = {"linear": _core.Ramp.linear, "cosine": _core.Ramp.cosine, "1-sqrt": _core.Ramp.one_minus_sqrt}
_MAX_COUNT = 2**53  # step counts are whole doubles below this


def _count(name: str, value):
    # Whole numbers in practice; a real is accepted (and computed with) as transformers does.
    return check.real(name, value, min=0.0, max=float(_MAX_COUNT), keep_int=True)


def _peak(value) -> float:
    lr = check.real("peak_lr", value, min=0.0, keep_int=True)
    # A factor may round a few ulps above 1; peak_lr*2 finite keeps peak_lr*factor finite.
    _finite_product("peak_lr*2", lr * 2.0, f"peak_lr={lr!r} is within a factor 2 of the largest double")
    return lr


def _ratio(name: str, value) -> float:
    return check.real(name, value, min=0.0, max=1.0, keep_int=True)


def _cycles(value) -> float:
    # Bounded so that pi * num_cycles * 2 * progress stays finite at every step (progress <= 2**63).
    return check.real("num_cycles", value, min=0.0, max=float(_MAX_COUNT), keep_int=True)


def _total_after_warmup(warmup: int, total: int, strict: bool = False) -> None:
    if total < warmup or (strict and total == warmup):
        op = ">" if strict else ">="
        raise ValueError(f"total_steps must be {op} warmup_steps={warmup}, got {total}")


class _WarmupDecay(Schedule):
    """Shared compile step: peak_lr * factor(t), ``factor`` the transformers lambda of ``_kind``."""

    _kind: _core.Kind | None = None

    def _core_args(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compile(self):
        return _core.warmup_decay(kind=self._kind, peak=float(self.peak_lr), **self._core_args())

    @property
    def horizon(self) -> int | None:
        total = getattr(self, "total_steps", None)  # the families with a num_training_steps
        return None if total is None else total - 1


@dataclass(frozen=True)
class WarmupStableDecay(_WarmupDecay):
    r"""Warmup-stable-decay (WSD), the values of transformers' ``get_wsd_schedule``.

    With ``W, S, D`` the warmup, stable and decay step counts and ``r = min_lr_ratio``,
    ``lr(t) = P * f(t)`` (``P = peak_lr``):

    - warmup, ``t < W``: ``p = t/max(1, W)``, ``f = max(0, g(p)*(1 - r) + r)`` with ``g`` per
      ``warmup_type``: linear ``p``, cosine ``0.5*(1 - cos(pi*p))``, 1-sqrt ``1 - sqrt(1 - p)``;
    - stable, ``t < W + S``: ``f = 1``;
    - decay, ``t < W + S + D``: ``p = (t - W - S)/max(1, D)``, ``f = max(0, h(p)*(1 - r) + r)``
      with ``h`` per ``decay_type``: linear ``1 - p``,
      cosine ``0.5*(1 + cos(pi*num_cycles*2*p))``, 1-sqrt ``1 - sqrt(p)``;
    - after: ``f = r``.
    """

    peak_lr: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    warmup_type: str = "linear"
    decay_type: str = "cosine"
    min_lr_ratio: float = 0.0
    num_cycles: float = 0.5

    _kind = _core.Kind.warmup_stable_decay

    def _validate(self):
        self._set("peak_lr", _peak(self.peak_lr))
        self._set("warmup_steps", _count("warmup_steps", self.warmup_steps))
        self._set("stable_steps", _count("stable_steps", self.stable_steps))
        self._set("decay_steps", _count("decay_steps", self.decay_steps))
        if self.warmup_steps + self.stable_steps + self.decay_steps > _MAX_COUNT:
            raise ValueError(
                f"warmup_steps + stable_steps + decay_steps must be <= 2**53, got "
                f"{self.warmup_steps + self.stable_steps + self.decay_steps}"
            )
        self._set("warmup_type", check.choice("warmup_type", self.warmup_type, tuple(_RAMPS)))
        self._set("decay_type", check.choice("decay_type", self.decay_type, tuple(_RAMPS)))
        self._set("min_lr_ratio", _ratio("min_lr_ratio", self.min_lr_ratio))
        self._set("num_cycles", _cycles(self.num_cycles))

    @property
    def horizon(self) -> int | None:
        total = self.warmup_steps + self.stable_steps + self.decay_steps
        return total - 1 if total > 0 else None

    def _core_args(self) -> dict:
        return dict(
            warmup=float(self.warmup_steps),
            stable=float(self.stable_steps),
            decay=float(self.decay_steps),
            min_ratio=float(self.min_lr_ratio),
            num_cycles=float(self.num_cycles),
            warmup_shape=_RAMPS[self.warmup_type],
            decay_shape=_RAMPS[self.decay_type],
        )


@dataclass(frozen=True)
class WarmupLinear(_WarmupDecay):
    r"""Linear warmup, then linear decay to 0: transformers' ``get_linear_schedule_with_warmup``.

    ``lr(t) = P * t/max(1, W)`` for ``t < W``, else ``P * max(0, (N - t)/max(1, N - W))``
    (``P = peak_lr``, ``W = warmup_steps``, ``N = total_steps``); 0 from step ``N`` on.
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int

    _kind = _core.Kind.warmup_linear

    def _validate(self):
        self._set("peak_lr", _peak(self.peak_lr))
        self._set("warmup_steps", _count("warmup_steps", self.warmup_steps))
        self._set("total_steps", _count("total_steps", self.total_steps))
        _total_after_warmup(self.warmup_steps, self.total_steps)

    def _core_args(self) -> dict:
        return dict(warmup=float(self.warmup_steps), decay=float(self.total_steps))


@dataclass(frozen=True)
class WarmupCosine(_WarmupDecay):
    r"""Linear warmup, then cosine to a floor: transformers' ``get_cosine_schedule_with_warmup``
    (floor 0) and ``get_cosine_with_min_lr_schedule_with_warmup``.

    ``lr(t) = P * t/max(1, W)`` for ``t < W`` (``P = peak_lr``); after it, with ``p = (t - W)/max(1, N - W)``,
    ``f = 0.5*(1 + cos(pi*num_cycles*2*p))`` and ``lr(t) = P * max(0, f*(1 - r) + r)``.
    The floor ratio ``r`` is ``min_lr_rate``, or ``min_lr/P`` when ``min_lr`` is given (at
    most one of them; neither means 0). As in transformers the cosine goes on past
    ``total_steps`` (with ``num_cycles=0.5`` it rises again): stop training at ``N``, or
    ``Join`` a constant after it.
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int
    num_cycles: float = 0.5
    min_lr: float | None = None
    min_lr_rate: float | None = None

    _kind = _core.Kind.warmup_cosine

    def _validate(self):
        self._set("peak_lr", _peak(self.peak_lr))
        self._set("warmup_steps", _count("warmup_steps", self.warmup_steps))
        self._set("total_steps", _count("total_steps", self.total_steps))
        _total_after_warmup(self.warmup_steps, self.total_steps)
        self._set("num_cycles", _cycles(self.num_cycles))
        if self.min_lr is not None and self.min_lr_rate is not None:
            raise ValueError(
                f"give min_lr or min_lr_rate, not both: min_lr={self.min_lr!r}, min_lr_rate={self.min_lr_rate!r}"
            )
        if self.min_lr_rate is not None:
            self._set("min_lr_rate", _ratio("min_lr_rate", self.min_lr_rate))
        if self.min_lr is not None:
            self._set("min_lr", check.real("min_lr", self.min_lr, min=0.0, keep_int=True))
            if self.min_lr > self.peak_lr:
                raise ValueError(f"min_lr must be <= peak_lr={self.peak_lr!r}, got {self.min_lr!r}")

    @property
    def floor_ratio(self) -> float:
        """The floor as a fraction of ``peak_lr``: ``min_lr_rate``, ``min_lr/peak_lr`` or 0."""
        if self.min_lr is not None:
            return self.min_lr / self.peak_lr if self.peak_lr else 0.0
        return float(self.min_lr_rate or 0.0)

    def _core_args(self) -> dict:
        return dict(
            warmup=float(self.warmup_steps),
            decay=float(self.total_steps),
            num_cycles=float(self.num_cycles),
            min_ratio=float(self.floor_ratio),
        )


@dataclass(frozen=True)
class CosineHardRestarts(_WarmupDecay):
    r"""Linear warmup, then ``num_cycles`` cosines each falling to 0 and restarting at the peak:
    transformers' ``get_cosine_with_hard_restarts_schedule_with_warmup``.

    ``lr(t) = P * t/max(1, W)`` for ``t < W`` (``P = peak_lr``); after it, with ``p = (t - W)/max(1, N - W)``,
    ``lr(t) = P * max(0, 0.5*(1 + cos(pi*((num_cycles*p) % 1))))`` while ``p < 1``, then 0.
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int
    num_cycles: float = 1

    _kind = _core.Kind.warmup_hard_restarts

    def _validate(self):
        self._set("peak_lr", _peak(self.peak_lr))
        self._set("warmup_steps", _count("warmup_steps", self.warmup_steps))
        self._set("total_steps", _count("total_steps", self.total_steps))
        _total_after_warmup(self.warmup_steps, self.total_steps)
        self._set("num_cycles", _cycles(self.num_cycles))

    def _core_args(self) -> dict:
        return dict(warmup=float(self.warmup_steps), decay=float(self.total_steps), num_cycles=float(self.num_cycles))


@dataclass(frozen=True)
class PolynomialDecay(_WarmupDecay):
    r"""Linear warmup, then polynomial decay to ``lr_end``:
    transformers' ``get_polynomial_decay_schedule_with_warmup``.

    ``lr(t) = lr * t/max(1, W)`` for ``t < W``; up to ``t = N``, with
    ``q = 1 - (t - W)/(N - W)``, ``lr(t) = P * (((I - lr_end) * q**power + lr_end) / I)``;
    after it ``P * (lr_end/I)``. ``I = lr_init`` is the lr the decay is measured against:
    ``peak_lr`` by default (transformers uses the optimizer's default lr for every group).
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int
    lr_end: float = 1e-7
    power: float = 1.0
    lr_init: float | None = None

    _kind = _core.Kind.warmup_polynomial

    def _validate(self):
        self._set("peak_lr", _peak(self.peak_lr))
        self._set("warmup_steps", _count("warmup_steps", self.warmup_steps))
        self._set("total_steps", _count("total_steps", self.total_steps))
        _total_after_warmup(self.warmup_steps, self.total_steps, strict=True)
        self._set("lr_end", check.real("lr_end", self.lr_end, min=0.0, keep_int=True))
        self._set("power", check.real("power", self.power, min=0.0, keep_int=True))
        if self.lr_init is not None:
            self._set("lr_init", check.real("lr_init", self.lr_init, min=0.0, keep_int=True))
            # (lr_init - lr_end) * q**power + lr_end may round a few ulps past lr_init (at q = 1)
            _finite_product("lr_init*2", self.lr_init * 2.0, f"lr_init={self.lr_init!r}")
        init = self._init
        if not init > self.lr_end:
            name = "peak_lr" if self.lr_init is None else "lr_init"
            raise ValueError(f"lr_end ({self.lr_end!r}) must be smaller than {name} ({init!r})")

    @property
    def _init(self):
        return self.peak_lr if self.lr_init is None else self.lr_init

    def _core_args(self) -> dict:
        return dict(
            warmup=float(self.warmup_steps),
            decay=float(self.total_steps),
            lr_end=float(self.lr_end),
            power=float(self.power),
            lr_init=float(self._init),
        )


@dataclass(frozen=True)
class InverseSqrt(_WarmupDecay):
    r"""Linear warmup, then inverse square root: transformers' ``get_inverse_sqrt_schedule``.

    ``lr(t) = lr * t/max(1, W)`` for ``t < W``, else ``P / sqrt((t + T - W)/T)``, i.e. ``P`` at
    the end of the warmup, ``P*sqrt(T/(t - W + T))`` after. ``T = timescale`` defaults, as in
    transformers, to ``W``, or 10000 when there is no warmup.
    """

    peak_lr: float
    warmup_steps: int
    timescale: float | None = None

    _kind = _core.Kind.inverse_sqrt

    def _validate(self):
        self._set("peak_lr", _peak(self.peak_lr))
        self._set("warmup_steps", _count("warmup_steps", self.warmup_steps))
        if self.timescale is not None:
            self._set(
                "timescale",
                check.real("timescale", self.timescale, min=0.0, min_open=True, max=float(_MAX_COUNT), keep_int=True),
            )
        # The decay divides by sqrt((t + (T - W))/T), exactly 1 at t = W. A timescale T below
        # half an ulp of W is lost in T - W and makes it 0 there (lr = peak/0); the check is
        # the core's arithmetic at t = W, and later steps only make the quotient larger.
        w, ts = float(self.warmup_steps), float(self.resolved_timescale)
        q = (w + (ts - w)) / ts
        if not q >= 0.25:  # keeps the factor 1/sqrt(q) <= 2, and _peak keeps peak_lr*2 finite
            raise OverflowError(
                f"timescale={self.resolved_timescale!r} is too small against warmup_steps="
                f"{self.warmup_steps!r}: (warmup_steps + timescale - warmup_steps)/timescale "
                f"rounds to {q!r} instead of 1, and peak_lr/sqrt of it overflows"
            )

    @property
    def resolved_timescale(self):
        """The timescale in effect: ``timescale``, else ``warmup_steps or 10000``."""
        return self.timescale if self.timescale is not None else (self.warmup_steps or 10_000)

    def _core_args(self) -> dict:
        return dict(warmup=float(self.warmup_steps), timescale=float(self.resolved_timescale))


@dataclass(frozen=True)
class Join(Schedule):
    """Schedules joined at step boundaries; each piece starts its own clock at 0.

    ``Join([a, b], boundaries=[5000])`` gives ``a(t)`` for ``t < 5000`` and ``b(t - 5000)``
    after (as optax's ``join_schedules``). Momentum is that of the active piece. Nested
    joins are flattened; the result may hold at most 16 pieces.
    """

    schedules: tuple
    boundaries: tuple

    def _validate(self):
        if isinstance(self.schedules, (str, bytes, dict)) or not hasattr(self.schedules, "__iter__"):
            raise TypeError(f"schedules must be a list of clrfast schedules, got {self.schedules!r}")
        if isinstance(self.boundaries, (str, bytes, dict)) or not hasattr(self.boundaries, "__iter__"):
            raise TypeError(f"boundaries must be a list of integers, got {self.boundaries!r}")
        scheds = tuple(self.schedules)
        bounds = tuple(self.boundaries)
        self._set("schedules", scheds)
        if not scheds:
            raise ValueError("schedules must not be empty")
        for i, s in enumerate(scheds):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedules[{i}] must be a clrfast schedule, got {s!r}")
        if len(bounds) != len(scheds) - 1:
            raise ValueError(f"boundaries must have len(schedules) - 1 = {len(scheds) - 1} entries, got {len(bounds)}")
        bounds = tuple(check.integer(f"boundaries[{i}]", b, min=1, max=2**53) for i, b in enumerate(bounds))
        self._set("boundaries", bounds)
        for i in range(1, len(bounds)):
            if bounds[i] <= bounds[i - 1]:
                raise ValueError(f"boundaries must increase, got {list(bounds)}")
        for i, s in enumerate(scheds[:-1]):
            span = bounds[i] - (bounds[i - 1] if i else 0)
            if s.max_step is not None and span - 1 > s.max_step:
                raise ValueError(
                    f"schedules[{i}] ends at step {s.max_step} but runs for {span} steps before the next "
                    f"boundary, boundaries[{i}]={bounds[i]}"
                )

    @property
    def _can_overflow(self) -> bool:
        return any(s._can_overflow for s in self.schedules)

    @property
    def horizon(self) -> int | None:
        start = self.boundaries[-1] if self.boundaries else 0
        last = self.schedules[-1].horizon
        if last is not None:
            return start + last
        if len(self.schedules) > 1 and self.schedules[-2].horizon is not None:
            return start - 1  # a hold after a shape: the shape's end
        return None

    @property
    def max_step(self) -> int | None:
        last = self.schedules[-1].max_step
        if last is None:
            return None
        return (self.boundaries[-1] if self.boundaries else 0) + last

    def _compile(self):
        try:
            return _core.join(
                schedules=[s._core for s in self.schedules], boundaries=[float(b) for b in self.boundaries]
            )
        except ValueError as e:  # more than 16 pieces after flattening
            raise ValueError(f"{e}; got {self._leaf_count()} (nested joins count their pieces)") from None

    def _leaf_count(self) -> int:
        return sum(s._leaf_count() if isinstance(s, Join) else 1 for s in self.schedules)

    @classmethod
    def _from_params(cls, p: dict, depth: int) -> Join:
        if not isinstance(p["schedules"], list):
            raise TypeError(f"Join schedules must be a list of dicts, got {_quote.repr(p['schedules'])}")
        if depth >= _MAX_NESTING:
            raise ValueError(f"Join dicts are nested more than {_MAX_NESTING} deep")
        pieces = []
        for i, d in enumerate(p["schedules"]):
            try:
                pieces.append(_from_dict(d, depth + 1))
            except (TypeError, ValueError, OverflowError) as e:
                raise type(e)(f"schedules[{i}]: {e}") from None
        return cls(tuple(pieces), p["boundaries"])


def _inner_schedule(name: str, value) -> Schedule:
    if not isinstance(value, Schedule):
        raise TypeError(f"{name} must be a clrfast schedule, got {value!r}")
    return value


def _inner_from_params(cls, p: dict, depth: int):
    if depth >= _MAX_NESTING:
        raise ValueError(f"schedule dicts are nested more than {_MAX_NESTING} deep")
    try:
        inner = _from_dict(p["schedule"], depth + 1)
    except (TypeError, ValueError, OverflowError) as e:
        raise type(e)(f"schedule: {e}") from None
    return cls(inner, **{k: v for k, v in p.items() if k != "schedule"})


@dataclass(frozen=True)
class Rehorizon(Schedule):
    """``schedule`` up to step ``at``, its steps ``at..max_step`` stretched onto ``at..total_steps - 1``.

    Step ``t >= at`` is ``schedule`` at time ``T = at + (t - at) * (L - at) / (total_steps - 1 - at)``
    (``L = schedule.max_step``); in a :class:`Join`, the piece that ``T`` falls in (the one that
    starts at ``b <= T``) runs on the clock ``(at - b) + (t - at) * (L - at) / (total_steps - 1 - at)``.
    Both ends are exact: ``T(at) = at`` and ``T(total_steps - 1) = H``. Built by
    :meth:`Schedule.with_total_steps`.
    """

    schedule: Schedule
    total_steps: int
    at: int

    def _validate(self):
        inner = _inner_schedule("schedule", self.schedule)
        shape = inner.horizon
        if shape is None:
            raise ValueError(
                f"with_total_steps needs a schedule with a horizon (a last step of its shape); {inner!r} has "
                "none (cooldown() ends an endless one)"
            )
        # An endless schedule's tail follows its shape's end stretched; at the end itself nothing is left to stretch.
        at = check.integer("at", self.at, min=0, max=_MAX_COUNT)
        limit = shape if inner.max_step is not None else shape - 1
        if at > limit:
            raise ValueError(
                f"at must be <= {limit} (the horizon of {inner!r} is step {shape}"
                + (")" if limit == shape else "; at it, nothing would be left to stretch)")
                + f", got {at}"
            )
        total = check.integer("total_steps", self.total_steps, min=at + 2, max=_MAX_COUNT)
        self._set("at", at)
        self._set("total_steps", total)

    @property
    def _can_overflow(self) -> bool:
        return self.schedule._can_overflow

    @property
    def max_step(self) -> int | None:
        last, shape = self.schedule.max_step, self.schedule.horizon
        if last is None or shape is None:
            return None
        return self.total_steps - 1 + (last - shape)  # a one-cycle's step past its horizon stays one step

    @property
    def horizon(self) -> int:
        return self.total_steps - 1

    def _compile(self):
        return _core.rehorizon(
            schedule=self.schedule._core,
            at=float(self.at),
            last=float(self.schedule.horizon),
            new_last=float(self.total_steps - 1),
        )

    @classmethod
    def _from_params(cls, p: dict, depth: int) -> Rehorizon:
        return _inner_from_params(cls, p, depth)


# A plateau's reductions are evaluated one by one at every step (torch's rounding); this bounds the loop.
_MAX_TIMES = 100_000


@dataclass(frozen=True)
class Scaled(Schedule):
    """``schedule`` with its lr passed ``times`` times through ``lr -> max(lr * factor, floor)``.

    ``times=1, floor=0``: the lr times ``factor`` (a group's ``lr_scale``). ``factor < 1`` with
    ``floor = min_lr``: the lr after ``times`` reductions of torch's ``ReduceLROnPlateau``, each
    rounded as torch rounds the lr it reduces. The momentum is the schedule's.
    """

    schedule: Schedule
    factor: float
    floor: float = 0.0
    times: int = 1

    def _validate(self):
        _inner_schedule("schedule", self.schedule)
        self._set("factor", check.real("factor", self.factor, min=0.0, keep_int=True))
        self._set("floor", check.real("floor", self.floor, min=0.0, keep_int=True))
        self._set("times", check.integer("times", self.times, min=0, max=_MAX_TIMES))

    @property
    def _can_overflow(self) -> bool:
        return self.schedule._can_overflow or self.factor > 1

    @property
    def max_step(self) -> int | None:
        return self.schedule.max_step

    @property
    def horizon(self) -> int | None:
        return self.schedule.horizon

    def _compile(self):
        try:
            return _core.scale_lr(
                schedule=self.schedule._core, factor=float(self.factor), floor=float(self.floor), times=self.times
            )
        except ValueError as e:
            raise ValueError(f"{e}; got {self.schedule!r}") from None

    @classmethod
    def _from_params(cls, p: dict, depth: int) -> Scaled:
        return _inner_from_params(cls, p, depth)


_TYPES: dict[str, type[Schedule]] = {
    c.__name__: c
    for c in (
        Cyclic,
        OneCycle,
        CosineRestarts,
        Warmup,
        Constant,
        RangeSweep,
        Join,
        Rehorizon,
        Scaled,
        WarmupStableDecay,
        WarmupLinear,
        WarmupCosine,
        CosineHardRestarts,
        PolynomialDecay,
        InverseSqrt,
    )
}

# timm's families live in their own module, which builds on Schedule above.
from . import timm_schedules as _timm  # noqa: E402
from .timm_schedules import TimmCosine, TimmMultiStep, TimmPoly, TimmStep, TimmTanh, TimmWSD  # noqa: E402

_TYPES.update({c.__name__: c for c in _timm.TYPES})


def from_dict(d: dict) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.to_dict` output.

    A malformed dict raises ``ValueError`` or ``TypeError`` naming the key and the value
    (``OverflowError`` for a number too large for a double, as the constructors do).
    """
    return _from_dict(d, 0)


# How deep joins may nest in a dict: far deeper than 16 pieces need, and far less deep
# than Python's recursion limit.
_MAX_NESTING = 32


def _from_dict(d, depth: int) -> Schedule:
    if not isinstance(d, dict):
        raise TypeError(f"expected a dict from to_dict(), got {_quote.repr(d)} of type {type(d).__name__}")
    _check_keys("a schedule dict", d, ("clrfast_schedule", "type", "params"))
    version = d.get("clrfast_schedule")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ValueError(
            f"unsupported schedule format version {_quote.repr(version)} (key 'clrfast_schedule'; "
            f"this clrfast reads {FORMAT_VERSION})"
        )
    kind = d.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown schedule type {_quote.repr(kind)}; known: {', '.join(_TYPES)}")
    if "params" not in d:
        raise TypeError(f"a {kind} dict needs 'params', the dict of its arguments; got keys {sorted(d)}")
    params = d["params"]
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of {kind}'s arguments, got {_quote.repr(params)}")
    _check_keys(f"{kind} params", params, [f.name for f in fields(cls)])
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in params]
    if missing:
        raise TypeError(f"{kind} params need {', '.join(map(repr, missing))}; got keys {sorted(params)}")
    if cls in (Join, Rehorizon, Scaled):
        return cls._from_params(params, depth)
    if cls is Cyclic:
        return Cyclic._from_params(params)
    return cls(**params)


__all__ = [
    "Schedule",
    "Cyclic",
    "OneCycle",
    "CosineRestarts",
    "Warmup",
    "Constant",
    "RangeSweep",
    "Join",
    "Rehorizon",
    "Scaled",
    "WarmupStableDecay",
    "WarmupLinear",
    "WarmupCosine",
    "CosineHardRestarts",
    "PolynomialDecay",
    "InverseSqrt",
    "TimmCosine",
    "TimmTanh",
    "TimmPoly",
    "TimmStep",
    "TimmMultiStep",
    "TimmWSD",
    "from_dict",
    "FORMAT_VERSION",
    "Geometric",
]

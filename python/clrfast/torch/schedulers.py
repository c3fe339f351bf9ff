"""Drop-in replacements for torch's CyclicLR, OneCycleLR and CosineAnnealingWarmRestarts, and ScheduleLR.

Same constructor signatures, defaults, errors, attributes and ``state_dict`` keys as
``torch.optim.lr_scheduler``; they subclass ``LRScheduler`` so type checks accept them.

How it is split:

- the scheduler state is torch's, as plain data in ``__dict__`` (``last_epoch``,
  ``_step_count``, ``_last_lr``, ``T_cur``, ``total_size``, ``_schedule_phases``, ...), so
  ``state_dict()`` is interchangeable with torch's and two schedulers in the same state
  compare equal attribute by attribute;
- torch's step logic (counters, restarts, ``step(epoch)``) is the Python below (``_step``),
  except for the common call, ``step()`` without an epoch after the first: the writer
  (``_core.scheduler_step``) does it whole in C, the same integer counter updates, on the
  same ``__dict__`` entries;
- the values come from the C++ core, which repeats torch's arithmetic operation for
  operation, so the learning rates and momenta are the same doubles as torch's; one
  ``_core.GroupWriter`` call per step computes them for every param group and writes the
  groups. The writer is built from the state (at construction and on every load) and kept
  outside ``__dict__``.

A step that raises changes nothing: the writer checks every value before writing any,
and the counters are committed only afterwards. Differences from torch, all additive:

- a :mod:`clrfast.scales` value given as ``scale_fn`` is computed in C++ and is saved in
  ``state_dict()`` as data (torch drops lambdas and functions);
- non-finite bounds and non-positive step sizes raise ``ValueError`` at construction;
- a step whose value would be inf or NaN raises: ``OverflowError`` (where torch's
  ``gamma**x`` raises it too, or torch would write inf), ``ValueError`` for a NaN epoch;
- a state dict whose counters are not numbers is refused by ``load_state_dict``;
- group values (bounds, one-cycle endpoints) are read at construction and on
  ``load_state_dict``, not on every step.
"""

from __future__ import annotations

import math
import types
import warnings
import weakref
from functools import partial
from typing import Any, Callable

from torch import Tensor
from torch.optim import Optimizer
from torch.optim import lr_scheduler as _torch_schedulers
from torch.optim.lr_scheduler import LRScheduler

from .. import _core
from .. import _validate as check
from ..scales import Scale

__all__ = ["CyclicLR", "OneCycleLR", "CosineAnnealingWarmRestarts", "ScheduleLR"]

# The text torch uses; kept identical so log filters keep matching.
EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)

_KEY = _core.MomentumKey
_SCALE_MODES = _core.ScaleMode.__members__
_TorchCyclic = _torch_schedulers.CyclicLR
_TorchOneCycle = _torch_schedulers.OneCycleLR


def _format_param(name: str, optimizer: Optimizer, param) -> list:
    """One value per param group, as torch's scheduler helpers accept (a scalar or a list)."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has {len(optimizer.param_groups)}."
            )
    else:
        param = [param] * len(optimizer.param_groups)
    return [p.clone() if isinstance(p, Tensor) else p for p in param]


def _finite(name: str, values: list) -> list[float]:
    out = []
    for i, v in enumerate(values):
        label = name if len(values) == 1 else f"{name}[{i}]"
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"{label} must be a real number, got {v!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"{label} must be finite, got {v!r}")
        out.append(f)
    return out


def _epoch_value(epoch) -> float:
    """An epoch as the double the core computes with; torch's errors where it has them."""
    if isinstance(epoch, (bool, str, bytes)) or not hasattr(type(epoch), "__float__"):
        raise TypeError(f"epoch must be a real number, got {epoch!r} of type {type(epoch).__name__}")
    t = float(epoch)  # OverflowError for an int past a double, as torch's arithmetic raises
    if math.isnan(t):
        raise ValueError(f"epoch must be a number, got {epoch!r}")
    if math.isinf(t):
        raise OverflowError(f"epoch must be finite, got {epoch!r}")
    return t


def _scale_value(value, x) -> float:
    if isinstance(value, (bool, str, bytes)) or not hasattr(type(value), "__float__"):
        raise TypeError(f"scale_fn must return a real number, got {value!r} of type {type(value).__name__} for x={x!r}")
    return float(value)


def _set_group(group: dict, key: str, value) -> None:
    if isinstance(group[key], Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


def _warn_call_order(sched: LRScheduler) -> None:
    """torch's check that optimizer.step() ran before the scheduler's first step()."""
    if not hasattr(sched.optimizer.step, "_wrapped_by_lr_sched"):
        warnings.warn(
            "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
            "initialization. Please, make sure to call `optimizer.step()` before "
            "`lr_scheduler.step()`. See more details at "
            "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate",
            UserWarning,
            stacklevel=3,
        )
    elif not getattr(sched.optimizer, "_opt_called", False):
        warnings.warn(
            "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
            "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
            "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
            "will result in PyTorch skipping the first value of the learning rate schedule. "
            "See more details at "
            "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate",
            UserWarning,
            stacklevel=3,
        )


def _check_momentum_support(optimizer: Optimizer) -> None:
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")


def _set_initial_momentum(optimizer, use_beta1, max_momentums, base_momentums) -> None:
    for m_momentum, b_momentum, group in zip(max_momentums, base_momentums, optimizer.param_groups):
        if use_beta1:
            group["betas"] = (m_momentum, *group["betas"][1:])
        else:
            group["momentum"] = m_momentum
        group["max_momentum"] = m_momentum
        group["base_momentum"] = b_momentum


def _momentum_key(state) -> Any:
    if not state.get("cycle_momentum"):
        return _KEY.none
    return _KEY.betas if state.get("use_beta1") else _KEY.momentum


# Counters a loaded state may carry, and what they must be.
def _check_counter(key: str, value) -> None:
    if key == "_step_count":
        check.integer(f"state_dict[{key!r}]", value)
    elif key in ("last_epoch", "T_cur", "T_i", "T_0", "T_mult"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"state_dict[{key!r}] must be an int or a float, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"state_dict[{key!r}] must be finite, got {value!r}")


class _CoreScheduler(LRScheduler):
    """Shared machinery: torch's state as plain data, one compiled writer per scheduler."""

    # The compiled writer is derived from the state and rebuilt from it; a slot keeps it
    # out of __dict__ (and so out of state_dict() and attribute-by-attribute comparisons).
    __slots__ = ("_writer",)

    def _make_writer(self, state: dict):  # pragma: no cover - abstract
        raise NotImplementedError

    def _build_writer(self) -> None:
        self._writer = self._make_writer(self.__dict__)

    def _write(self, t, groups) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    # step(epoch=None): the common call (no argument) runs whole in the writer, in C; every
    # other call, and one the writer declines (see GroupWriter.fast), runs _step.
    # (an instancemethod object, which pybind11-stubgen leaves out of _core.pyi)
    step: Callable[..., None] = _core.scheduler_step  # type: ignore[attr-defined]

    def _step(self, epoch=None) -> None:
        """Advance one step (or jump to ``epoch``, deprecated as in torch) and write lr/momentum."""
        if epoch is None and self._step_count != 1:
            t = self.last_epoch + 1
            self._last_lr = self._write(t, self.optimizer.param_groups)
            self.last_epoch = t
            self._step_count += 1
            return
        if self._step_count == 1:
            _warn_call_order(self)
        if epoch is None:
            t = self.last_epoch + 1
        else:
            _epoch_value(epoch)  # NaN, inf and non-numbers are refused before anything happens
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
            t = epoch
        lrs = self._write(t, self.optimizer.param_groups)
        self.last_epoch = t
        self._step_count += 1
        self._last_lr = lrs

    def _warn_get_lr(self) -> None:
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                UserWarning,
                stacklevel=3,
            )

    def state_dict(self) -> dict[str, Any]:
        """Every entry of ``__dict__`` but the optimizer, as torch's ``LRScheduler``."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt a state saved by this class or by torch's; refused, changing nothing, if it is broken."""
        self._load(dict(state_dict))

    def _load(self, state: dict) -> None:
        for key, value in state.items():
            _check_counter(key, value)
        merged = {**self.__dict__, **state}
        writer = self._make_writer(merged)  # raises before anything is adopted
        self.__dict__.update(state)
        self._writer = writer

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build_writer()


class CyclicLR(_CoreScheduler):
    r"""Cyclical learning rate (Smith 2017): ``torch.optim.lr_scheduler.CyclicLR``, computed in C++.

    ``lr = base_lr + (max_lr - base_lr) * s * scale`` with ``s`` the triangular position in the
    cycle (see :class:`clrfast.Cyclic`); momentum mirrors it between ``max_momentum`` and
    ``base_momentum``. ``scale_fn`` may be any callable (called as torch calls it) or, faster
    and serialisable, a :mod:`clrfast.scales` value.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr,
        max_lr,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn=None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum=0.8,
        max_momentum=0.9,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        # Every check before the optimizer's groups are touched.
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        _finite("base_lr", base_lrs)
        _finite("max_lr", max_lrs)
        check.real("step_size_up", step_size_up, min=0.0, min_open=True)
        if step_size_down is not None:
            check.real("step_size_down", step_size_down, min=0.0)
        if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if scale_fn is not None and scale_mode not in _SCALE_MODES:
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn must be callable, got {scale_fn!r}")
        check.real("gamma", gamma)
        cycle_momentum = check.boolean("cycle_momentum", cycle_momentum)
        if cycle_momentum:
            _check_momentum_support(optimizer)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            _finite("base_momentum", base_momentums)
            _finite("max_momentum", max_momentums)

        self.optimizer = optimizer
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                _set_group(group, "lr", lr)
        self.max_lrs = max_lrs
        up = float(step_size_up)
        self.total_size, self.step_ratio = _core.cyclic_geometry(
            up, float(step_size_down) if step_size_down is not None else up
        )
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = "betas" in optimizer.defaults
            self.base_momentums = base_momentums
            self.max_momentums = max_momentums
            if last_epoch == -1:
                _set_initial_momentum(optimizer, self.use_beta1, max_momentums, base_momentums)
        # torch's first step (inside LRScheduler.__init__) reads base_lrs from the groups'
        # initial_lr; only afterwards are they replaced by the base_lr argument.
        self.base_lrs = [g["initial_lr"] if "initial_lr" in g else b for g, b in zip(optimizer.param_groups, base_lrs)]
        self._build_writer()
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs
        self._build_writer()

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        # torch's own scale functions: plain functions, dropped from state_dict().
        if self.mode == "triangular":
            self._scale_fn_ref = _TorchCyclic._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = _TorchCyclic._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(_TorchCyclic._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x) -> float:
        """The amplitude scale at cycle (or iteration) ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    @staticmethod
    def _core_scale(state) -> tuple:
        """(kind, gamma) of the scale the core computes; kind external for a Python callable."""
        fn = state.get("_scale_fn_custom")
        if fn is None:
            kind = _core.ScaleKind.__members__.get(state["mode"], _core.ScaleKind.triangular)
            return kind, float(state["gamma"])
        if isinstance(fn, Scale):
            return fn._kind, fn._gamma
        return _core.ScaleKind.external, 1.0

    def _make_writer(self, state: dict):
        kind, gamma = self._core_scale(state)
        key = _momentum_key(state)
        scheds = []
        for i, (base, top) in enumerate(
            zip(_finite("base_lrs", state["base_lrs"]), _finite("max_lrs", state["max_lrs"]))
        ):
            bm, mm = (
                (float(state["base_momentums"][i]), float(state["max_momentums"][i]))
                if key != _KEY.none
                else (0.0, 0.0)
            )
            scheds.append(
                _core.cyclic(
                    base_lr=base,
                    max_lr=top,
                    total_size=float(state["total_size"]),
                    step_ratio=float(state["step_ratio"]),
                    scale=kind,
                    gamma=gamma,
                    scale_mode=_SCALE_MODES[state["scale_mode"]],
                    window=_core.Window.triangular,
                    cycle_momentum=key != _KEY.none,
                    base_momentum=bm,
                    max_momentum=mm,
                )
            )
        writer = _core.GroupWriter(schedules=scheds, momentum_key=key)
        # writer.step() is this class's _write: not a Python scale_fn's (_write_scaled), nor a subclass's
        writer.fast = kind != _core.ScaleKind.external and type(self)._write is CyclicLR._write
        return writer

    def _write(self, t, groups) -> list:
        if self._scale_fn_custom is None or isinstance(self._scale_fn_custom, Scale):
            return self._writer.write(float(t), groups)
        return self._write_scaled(t, _epoch_value(t), groups)

    def _write_scaled(self, t, tf: float, groups) -> list:
        # torch calls scale_fn once per group for the lrs, then once per group for the momenta,
        # with the cycle (an int) or the iteration as it is.
        x = int(self._writer.cycle(tf)) if self.scale_mode == "cycle" else t
        n = len(groups)
        lr_scales = [_scale_value(self.scale_fn(x), x) for _ in range(n)]
        mom_scales = [_scale_value(self.scale_fn(x), x) for _ in range(n)] if self.cycle_momentum else []
        return self._writer.write_scaled(tf, lr_scales, mom_scales, groups)

    def get_lr(self) -> list:
        """Learning rates at ``last_epoch`` (use :meth:`get_last_lr` to read the current ones)."""
        self._warn_get_lr()
        t = self.last_epoch
        if self._scale_fn_custom is None or isinstance(self._scale_fn_custom, Scale):
            return self._writer.values(_epoch_value(t))
        copies = [dict(g) for g in self.optimizer.param_groups]
        return self._write_scaled(t, _epoch_value(t), copies)

    def state_dict(self) -> dict[str, Any]:
        """State as torch's CyclicLR saves it; a clrfast scale is kept as data."""
        state = super().state_dict()
        state.pop("_scale_fn_ref", None)  # a function (or bound method): not state
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None
        if isinstance(fn, Scale):
            state["_scale_fn_custom"] = {"clrfast_scale": fn.to_dict()}
        elif fn is not None and not isinstance(fn, types.FunctionType):
            state["_scale_fn_custom"] = fn.__dict__.copy()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        fn = state.pop("_scale_fn_custom", None)
        state.pop("_scale_fn_ref", None)
        custom = self._scale_fn_custom
        if isinstance(fn, dict) and "clrfast_scale" in fn:
            custom = Scale.from_dict(fn["clrfast_scale"])
        elif fn is not None and custom is not None and not isinstance(custom, Scale):
            custom.__dict__.update(fn)  # torch keeps a callable object's attributes
        elif isinstance(custom, Scale):
            custom = None  # a saved built-in mode replaces a clrfast scale
        state["_scale_fn_custom"] = custom
        self._load(state)
        self._init_scale_fn()


class OneCycleLR(_CoreScheduler):
    r"""One-cycle policy (Smith 2018): ``torch.optim.lr_scheduler.OneCycleLR``, computed in C++.

    Phases and annealing as :class:`clrfast.OneCycle`. The phase ends come from
    ``_schedule_phases`` and the per-group endpoints from the param groups (``initial_lr``,
    ``max_lr``, ``min_lr``, ``base_momentum``, ``max_momentum``), read when the scheduler is
    built or its state is loaded. Stepping past ``total_steps`` raises torch's ``ValueError``;
    a step in a phase of zero length torch's ``ZeroDivisionError``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum=0.85,
        max_momentum=0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if total_steps is not None:
            if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
        elif epochs is not None and steps_per_epoch is not None:
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        check.integer("total_steps", total_steps, max=2**63 - 1)
        if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        check.real("div_factor", div_factor, min=0.0, min_open=True)
        check.real("final_div_factor", final_div_factor, min=0.0, min_open=True)
        three_phase = check.boolean("three_phase", three_phase)
        cycle_momentum = check.boolean("cycle_momentum", cycle_momentum)
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        for i, m in enumerate(_finite("max_lr", max_lrs)):
            label = "max_lr" if len(max_lrs) == 1 else f"max_lr[{i}]"
            initial = m / float(div_factor)
            if not (math.isfinite(initial) and math.isfinite(initial / float(final_div_factor))):
                raise OverflowError(
                    f"{label}/div_factor/final_div_factor overflows a double: {label}={m!r}, "
                    f"div_factor={div_factor!r}, final_div_factor={final_div_factor!r}"
                )
        if cycle_momentum:
            _check_momentum_support(optimizer)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            _finite("base_momentum", base_momentums)
            _finite("max_momentum", max_momentums)

        self.optimizer = optimizer
        self.total_steps = total_steps
        self._schedule_phases = _phase_table(total_steps, pct_start, three_phase)
        self._anneal_func_type = anneal_strategy
        if last_epoch == -1:
            for idx, group in enumerate(optimizer.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                _set_initial_momentum(optimizer, self.use_beta1, max_momentums, base_momentums)
        self._build_writer()
        super().__init__(optimizer, last_epoch)

    def _make_writer(self, state: dict):
        key = _momentum_key(state)
        anneal = state.get("_anneal_func_type")
        if anneal is None:  # a state from before torch named the strategy: its function
            anneal = "linear" if state.get("anneal_func") is _TorchOneCycle._annealing_linear else "cos"
        phases = state["_schedule_phases"]
        scheds = []
        for g in self.optimizer.param_groups:
            rows = []
            for ph in phases:
                moms = (
                    (float(g[ph["start_momentum"]]), float(g[ph["end_momentum"]])) if key != _KEY.none else (0.0, 0.0)
                )
                rows.append((float(ph["end_step"]), float(g[ph["start_lr"]]), float(g[ph["end_lr"]]), *moms))
            scheds.append(
                _core.onecycle_phases(
                    phases=rows,
                    total_steps=float(state["total_steps"]),
                    anneal=_core.Anneal.__members__[anneal],
                    cycle_momentum=key != _KEY.none,
                )
            )
        writer = _core.GroupWriter(schedules=scheds, momentum_key=key)
        writer.max_step = float(state["total_steps"])  # past it, _write raises torch's error
        writer.fast = type(self)._write is OneCycleLR._write  # writer.step() is this _write, not a subclass's
        return writer

    def _write(self, t, groups) -> list:
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {self.total_steps}")
        return self._writer.write(float(t), groups)

    def get_lr(self) -> list:
        """Learning rates at ``last_epoch`` (use :meth:`get_last_lr` to read the current ones)."""
        self._warn_get_lr()
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {self.total_steps}")
        return self._writer.values(_epoch_value(t))


def _phase_table(total_steps: int, pct_start: float, three_phase: bool) -> list[dict]:
    """torch's ``_schedule_phases`` (kept in the state_dict for compatibility); ends from the core."""
    ends = _core.onecycle_phase_ends(float(total_steps), float(pct_start), three_phase)
    if three_phase:
        return [
            {
                "end_step": ends[0],
                "start_lr": "initial_lr",
                "end_lr": "max_lr",
                "start_momentum": "max_momentum",
                "end_momentum": "base_momentum",
            },
            {
                "end_step": ends[1],
                "start_lr": "max_lr",
                "end_lr": "initial_lr",
                "start_momentum": "base_momentum",
                "end_momentum": "max_momentum",
            },
            {
                "end_step": total_steps - 1,
                "start_lr": "initial_lr",
                "end_lr": "min_lr",
                "start_momentum": "max_momentum",
                "end_momentum": "max_momentum",
            },
        ]
    return [
        {
            "end_step": ends[0],
            "start_lr": "initial_lr",
            "end_lr": "max_lr",
            "start_momentum": "max_momentum",
            "end_momentum": "base_momentum",
        },
        {
            "end_step": total_steps - 1,
            "start_lr": "max_lr",
            "end_lr": "min_lr",
            "start_momentum": "base_momentum",
            "end_momentum": "max_momentum",
        },
    ]


class CosineAnnealingWarmRestarts(_CoreScheduler):
    r"""SGDR: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``, computed in C++.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``. ``step()`` advances
    ``T_cur`` and restarts with ``T_i *= T_mult``; ``step(epoch)`` accepts fractional epochs and
    uses torch's closed form (computed by the core, exact for epochs below 2**53). ``T_cur`` and
    ``T_i`` are Python numbers as in torch, so state dicts are interchangeable. As in torch,
    ``step()`` does not count ``_step_count`` and does not warn.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if isinstance(T_0, bool) or not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        check.real("eta_min", eta_min)
        check.real("T_0", T_0)  # OverflowError for a T_0 past a double, before anything changes
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        self.optimizer = optimizer
        # The values torch's LRScheduler.__init__ is about to store as base_lrs (it raises the
        # KeyError for a resume without initial_lr itself).
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self._build_writer()
        super().__init__(optimizer, last_epoch)
        self._build_writer()

    def _make_writer(self, state: dict):
        scheds = [
            _core.cosine_restarts(
                base_lr=b,
                eta_min=float(state["eta_min"]),
                T_0=float(state["T_0"]),
                T_mult=float(state["T_mult"]),
                peak_decay=1.0,
                warmup_steps=0.0,
            )
            for b in _finite("base_lrs", state["base_lrs"])
        ]
        writer = _core.GroupWriter(schedules=scheds, momentum_key=_KEY.none)
        writer.fast = writer.restarts = True  # the common step: torch's integer T_cur/T_i update
        return writer

    def get_lr(self) -> list:
        """Learning rates at the current ``T_cur``/``T_i``."""
        self._warn_get_lr()
        return self._writer.values_restarts(float(self.T_cur), float(self.T_i))

    def _step(self, epoch=None) -> None:
        """Advance one step, or jump to a (possibly fractional) ``epoch`` with torch's closed form."""
        if epoch is None and self.last_epoch >= 0:
            # torch's counter update in Python where T_cur or T_i became floats (a fractional epoch)
            T_cur = self.T_cur + 1
            T_i = self.T_i
            if T_cur >= T_i:
                T_cur = T_cur % T_i
                T_i = T_i * self.T_mult
                self._last_lr = self._writer.write_restarts(float(T_cur), float(T_i), self.optimizer.param_groups)
                self.T_i = T_i
            else:
                self._last_lr = self._writer.write_restarts(float(T_cur), float(T_i), self.optimizer.param_groups)
            self.T_cur = T_cur
            self.last_epoch += 1
            return
        if epoch is None:
            epoch = 0
        t = _epoch_value(epoch)
        if epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        pos: float = self.T_cur  # torch's T_cur and T_i at this epoch
        length: float = self.T_i
        if epoch >= self.T_0:
            cur, cycle = _core.restart_pos_torch_epoch(float(self.T_0), float(self.T_mult), t)
            if self.T_mult == 1:
                pos = int(cur) if isinstance(epoch, int) else cur  # torch's epoch % T_0 keeps the type
            else:
                pos, length = cur, int(cycle)
        else:
            length, pos = self.T_0, epoch
        last_epoch = math.floor(epoch)
        lrs = self._writer.write_restarts(float(pos), float(length), self.optimizer.param_groups)
        self.T_cur, self.T_i, self.last_epoch, self._last_lr = pos, length, last_epoch, lrs  # type: ignore[assignment]  # fractional epochs: floats, as torch stores them


def _group_schedules(optimizer: Optimizer, schedule) -> list:
    """One clrfast schedule per param group: the one given for all, or a list with one each."""
    from ..schedules import Schedule

    n = len(optimizer.param_groups)
    if isinstance(schedule, Schedule):
        return [schedule] * n
    if isinstance(schedule, (list, tuple)):
        if len(schedule) != n:
            raise ValueError(
                f"schedule must be one clrfast schedule or one per param group ({n}), got a list of {len(schedule)}"
            )
        for i, s in enumerate(schedule):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedule[{i}] must be a clrfast schedule, got {s!r}")
        return list(schedule)
    raise TypeError(f"schedule must be a clrfast schedule or a list of them (one per param group), got {schedule!r}")


def _last_step(schedules) -> float:
    ends = [s.max_step for s in schedules if s.max_step is not None]
    return min(ends) if ends else math.inf


_MOMENTUM_KEYS = {None: _KEY.none, "momentum": _KEY.momentum, "betas": _KEY.betas}


# The ScheduleLR last built on each optimizer, for clrfast.torch.ReduceLROnPlateau (given the optimizer, as
# torch's is) to find the schedules it reduces. Weak both ways: it keeps neither alive.
_drivers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def driver_of(optimizer) -> ScheduleLR | None:
    """The live ``ScheduleLR`` last built on ``optimizer``, or None."""
    ref = _drivers.get(optimizer)
    sched = None if ref is None else ref()
    return sched if sched is not None and sched.optimizer is optimizer else None


class ScheduleLR(_CoreScheduler):
    r"""Any clrfast schedule drives any torch optimizer, as a torch ``LRScheduler``.

    After ``k`` calls of ``step()`` (``last_epoch = k``, counting the one at construction as
    0), group ``i`` holds ``lr = schedule_i.lr(k)`` and, where the schedule defines a momentum
    at ``k``, ``momentum`` (SGD-like optimizers) or ``betas[0]`` (Adam-like) ``=
    schedule_i.momentum(k)``; at steps where it defines none (a piece of a ``Join`` without one)
    the group gets back the value it had when the scheduler was built. ``schedule`` is one
    schedule for every group or a list with one per group. A group with an ``lr_scale`` key
    (timm's, see :func:`layer_decay_groups`) gets ``lr = schedule_i.lr(k) * lr_scale``, the key
    read at every step.

    torch's conventions: the initial step at construction writes step 0, ``get_last_lr()``,
    ``last_epoch`` resume, a tensor ``lr`` updated in place with ``fill_``, ``state_dict()``
    with the schedules as data (``to_dict()``), so it pickles and loads without the code that
    built it. A step past a finite schedule's end raises torch's "Tried to step" ``ValueError``
    and changes nothing.
    """

    __slots__ = ("_max_step",)

    def __init__(self, optimizer: Optimizer, schedule, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        schedules = _group_schedules(optimizer, schedule)
        last_epoch = check.integer("last_epoch", last_epoch, min=-1)
        key = None
        if any(s.has_momentum for s in schedules):
            if "betas" in optimizer.defaults:
                key = "betas"
            elif "momentum" in optimizer.defaults:
                key = "momentum"
            else:
                raise ValueError(
                    f"the schedule defines a momentum but {type(optimizer).__name__} has neither "
                    "'momentum' nor 'betas'; use a schedule without momentum"
                )
        self.optimizer = optimizer
        self.schedules = schedules
        self.momentum_key = key
        self.base_momentums = None
        if key is not None:
            self.base_momentums = _finite(
                f"param_groups' {key}",
                [g["betas"][0] if key == "betas" else g["momentum"] for g in optimizer.param_groups],
            )
        self._build_writer()
        super().__init__(optimizer, last_epoch)
        _drivers[optimizer] = weakref.ref(self)

    def _make_writer(self, state: dict):
        key = _MOMENTUM_KEYS[state["momentum_key"]]
        fallback = [float(m) for m in state["base_momentums"]] if key != _KEY.none else []
        writer = _core.GroupWriter(
            schedules=[s._core for s in state["schedules"]],
            momentum_key=key,
            fallback_momentum=fallback,
            as_torch=False,
        )
        writer.max_step = _last_step(state["schedules"])  # past it, _write raises torch's error
        writer.fast = type(self)._write is ScheduleLR._write  # writer.step() is this _write, not a subclass's
        writer.group_scales = True  # timm's per-group lr_scale, read at every step
        return writer

    def _build_writer(self) -> None:
        super()._build_writer()
        self._max_step = _last_step(self.schedules)

    def _set_schedules(self, schedules: list) -> None:
        """Makes ``schedules`` (one per group) drive the groups, which show their values at ``last_epoch`` at once.

        As a torch scheduler's write: the next ``optimizer.step()`` applies them. Raises, changing
        nothing, if a schedule cannot be written at ``last_epoch``.
        """
        if len(schedules) != len(self.optimizer.param_groups):
            raise ValueError(f"{len(schedules)} schedules for {len(self.optimizer.param_groups)} param groups")
        writer = self._make_writer({**self.__dict__, "schedules": list(schedules)})
        t = self.last_epoch
        if t > _last_step(schedules):
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {_last_step(schedules)}")
        lrs = writer.write(t, self.optimizer.param_groups)
        self.schedules = list(schedules)
        self._writer = writer
        self._max_step = _last_step(self.schedules)
        self._last_lr = lrs

    def _write(self, t, groups) -> list:
        if t > self._max_step:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is {self._max_step}")
        return self._writer.write(t, groups)

    def _step(self, epoch=None) -> None:
        """Advance one step (or, deprecated as in torch, jump to the whole-number step ``epoch``)."""
        if epoch is not None:
            check.integer("epoch", epoch, min=0)
        super()._step(epoch)

    def get_lr(self) -> list:
        """Learning rates at ``last_epoch`` (use :meth:`get_last_lr` to read the current ones)."""
        self._warn_get_lr()
        if self.last_epoch > self._max_step:
            raise ValueError(
                f"Tried to step {self.last_epoch} times. The specified number of total steps is {self._max_step}"
            )
        return self._writer.values(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """torch's scheduler state, with each group's schedule as ``to_dict()`` data."""
        state = super().state_dict()
        state["schedules"] = [s.to_dict() for s in self.schedules]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopt a saved state (its schedules included); refused, changing nothing, if it is broken."""
        from ..schedules import Schedule, from_dict

        state = dict(state_dict)
        if "schedules" in state:
            saved = state["schedules"]
            if not isinstance(saved, (list, tuple)):
                raise TypeError(f"state_dict['schedules'] must be a list, got {saved!r}")
            state["schedules"] = [s if isinstance(s, Schedule) else from_dict(s) for s in saved]
            if len(state["schedules"]) != len(self.optimizer.param_groups):
                raise ValueError(
                    f"state_dict['schedules'] has {len(state['schedules'])} schedules, the optimizer "
                    f"{len(self.optimizer.param_groups)} param groups"
                )
        if state.get("momentum_key", self.momentum_key) not in _MOMENTUM_KEYS:
            raise ValueError(
                f"state_dict['momentum_key'] must be None, 'momentum' or 'betas', got {state['momentum_key']!r}"
            )
        self._load(state)
        self._max_step = _last_step(self.schedules)

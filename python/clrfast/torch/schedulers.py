"""Drop-in replacements for torch's CyclicLR, OneCycleLR and CosineAnnealingWarmRestarts.

Same constructor signatures, defaults, errors, attributes and ``state_dict`` keys as
``torch.optim.lr_scheduler``; they subclass ``LRScheduler`` so type checks accept them.
Every value comes from the C++ core, which repeats torch's arithmetic operation for
operation: the learning rates and momenta are the same doubles as torch's at every step.
A whole ``step()`` is one call into C++ that also writes the param groups, which is what
makes it several times cheaper than torch's.

Differences, all additive:
- a :mod:`clrfast.scales` value given as ``scale_fn`` is computed in C++ and is saved in
  ``state_dict()`` as data (torch drops lambdas and functions);
- non-finite bounds and non-positive step sizes raise ``ValueError`` at construction
  instead of producing NaNs or ``ZeroDivisionError`` later.
"""

from __future__ import annotations

import math
import types
import warnings
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .. import _core
from .. import _validate as check
from ..scales import ExpRange, Flat, Halving, Scale

__all__ = ["CyclicLR", "OneCycleLR", "CosineAnnealingWarmRestarts"]

# The text torch uses; kept identical so log filters keep matching.
EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)

_MOMENTUM_NONE, _MOMENTUM_KEY, _MOMENTUM_BETAS = 0, 1, 2
_SCALE_EXTERNAL = 4  # clrfast::ScaleKind::External
_SCALE_MODES = {"cycle": 0, "iterations": 1}


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


def _finite(name: str, values: list) -> list:
    out = []
    for i, v in enumerate(values):
        f = float(v)
        if not math.isfinite(f):
            label = name if len(values) == 1 else f"{name}[{i}]"
            raise ValueError(f"{label} must be finite, got {v!r}")
        out.append(f)
    return out


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


def _momentum_mode(optimizer: Optimizer, cycle_momentum: bool) -> int:
    if not cycle_momentum:
        return _MOMENTUM_NONE
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    return _MOMENTUM_BETAS if "betas" in optimizer.defaults else _MOMENTUM_KEY


def _momentum_bounds(optimizer: Optimizer, base_momentum, max_momentum) -> tuple[list, list]:
    """Per-group (base, max) momentum lists, checked finite."""
    base = _format_param("base_momentum", optimizer, base_momentum)
    top = _format_param("max_momentum", optimizer, max_momentum)
    _finite("base_momentum", base)
    _finite("max_momentum", top)
    return base, top


def _set_initial_momentum(optimizer, use_beta1, max_momentums, base_momentums) -> None:
    for m_momentum, b_momentum, group in zip(max_momentums, base_momentums, optimizer.param_groups):
        if use_beta1:
            group["betas"] = (m_momentum, *group["betas"][1:])
        else:
            group["momentum"] = m_momentum
        group["max_momentum"] = m_momentum
        group["base_momentum"] = b_momentum


def _engine_field(name: str, doc: str) -> property:
    def get(self):
        return getattr(self._engine, name)

    def set(self, value):
        setattr(self._engine, name, value)

    return property(get, set, doc=doc)


class _CoreScheduler(LRScheduler):
    """Shared machinery: the counters live in one compiled engine, so a step is one C++ call.

    The engine is rebuilt from the (torch-compatible) state on load and unpickling.
    """

    _engine: Any = None
    _RESTARTS = False
    # Counters kept by the engine; listed here so state_dict() and pickling include them.
    _ENGINE_STATE = ("last_epoch", "_step_count", "_last_lr")

    last_epoch = _engine_field("last_epoch", "Index of the last step taken.")
    _step_count = _engine_field("step_count", "Number of step() calls, as torch counts them.")
    _last_lr = _engine_field("last_lr", "Learning rates written by the last step().")

    def _make_engine(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _build_engine(self) -> None:
        state = {k: getattr(self, k) for k in self._ENGINE_STATE} if self._engine is not None else None
        engine = self._make_engine()
        self.__dict__["_engine"] = engine
        # The bound step, looked up once: attribute access on the compiled object is a
        # noticeable part of a ~0.4 us step.
        self.__dict__["_engine_step"] = engine.fast_step(self._RESTARTS)
        if state is not None:
            for k, v in state.items():
                setattr(self, k, v)

    def step(self, epoch=None) -> None:
        """Advance one step (or jump to ``epoch``, deprecated as in torch) and write lr/momentum."""
        if epoch is None:
            if self._engine_step(self.optimizer.param_groups):
                _warn_call_order(self)
            return
        if self._step_count == 1:
            _warn_call_order(self)
        self._step_count += 1
        warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        self._last_lr = self._engine.apply(self.last_epoch, self.optimizer.param_groups)

    def get_lr(self) -> list[float]:
        """Learning rates at ``last_epoch`` (use :meth:`get_last_lr` to read the current ones)."""
        self._warn_get_lr()
        return self._engine.values(self.last_epoch)

    def _warn_get_lr(self) -> None:
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                UserWarning,
                stacklevel=3,
            )

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_engine", "_engine_step")}
        state.update({k: getattr(self, k) for k in self._ENGINE_STATE})
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        state = dict(state)
        counters = {k: state.pop(k) for k in self._ENGINE_STATE if k in state}
        self.__dict__.update(state)
        self._build_engine()
        for k, v in counters.items():
            setattr(self, k, v)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore(state_dict)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_engine", None)
        state.pop("_engine_step", None)
        state.update({k: getattr(self, k) for k in self._ENGINE_STATE})
        return state

    def __setstate__(self, state):
        self.__dict__["_engine"] = None
        self._restore(state)


class CyclicLR(_CoreScheduler):
    r"""Cyclical learning rate (Smith 2017): ``torch.optim.lr_scheduler.CyclicLR``, computed in C++.

    ``lr = base_lr + (max_lr - base_lr) * s * scale`` with ``s`` the triangular position in the
    cycle (see :class:`clrfast.Cyclic`); momentum mirrors it between ``max_momentum`` and
    ``base_momentum``. ``scale_fn`` may be any callable (called from C++, as torch calls it) or,
    faster and serialisable, a :mod:`clrfast.scales` value.
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
        check.real("gamma", gamma)
        use_momentum = _momentum_mode(optimizer, cycle_momentum)
        if use_momentum:
            base_momentums, max_momentums = _momentum_bounds(optimizer, base_momentum, max_momentum)

        self.optimizer = optimizer
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                _set_group(group, "lr", lr)
        self.max_lrs = max_lrs
        self.total_size = float(step_size_up) + (
            float(step_size_down) if step_size_down is not None else float(step_size_up)
        )
        self.step_ratio = float(step_size_up) / self.total_size
        self._step_size_up = float(step_size_up)
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        self._momentum_key = use_momentum
        if use_momentum:
            self.use_beta1 = use_momentum == _MOMENTUM_BETAS
            self.base_momentums = base_momentums
            self.max_momentums = max_momentums
            if last_epoch == -1:
                _set_initial_momentum(optimizer, self.use_beta1, max_momentums, base_momentums)
        # torch's first step (inside LRScheduler.__init__) reads base_lrs from the groups'
        # initial_lr; only afterwards are they replaced by the base_lr argument.
        self.base_lrs = [
            g["initial_lr"] if "initial_lr" in g else b for g, b in zip(optimizer.param_groups, base_lrs)
        ]
        self._build_engine()
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs
        self._build_engine()

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def _scale(self) -> Scale | None:
        """The scale as clrfast data, or None for a plain Python callable."""
        fn = self._scale_fn_custom
        if fn is None:
            return {"triangular": Flat(), "triangular2": Halving()}.get(self.mode) or ExpRange(self.gamma)
        return fn if isinstance(fn, Scale) else None

    def scale_fn(self, x) -> float:
        """The amplitude scale at cycle (or iteration) ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale()(x)

    def _make_engine(self):
        scale = self._scale()
        kind, gamma = (scale._kind, scale._gamma) if scale is not None else (_SCALE_EXTERNAL, 1.0)
        momentum_key = getattr(self, "_momentum_key", _MOMENTUM_NONE) if self.cycle_momentum else 0
        if self.cycle_momentum and momentum_key == _MOMENTUM_NONE:  # state loaded from torch
            momentum_key = _MOMENTUM_BETAS if getattr(self, "use_beta1", False) else _MOMENTUM_KEY
        # The given step_size_up, exactly; a state saved by torch only has ratio and total.
        up = getattr(self, "_step_size_up", self.step_ratio * self.total_size)
        down = self.total_size - up
        scheds = []
        for i, (base, top) in enumerate(zip(self.base_lrs, self.max_lrs)):
            bm, mm = (
                (float(self.base_momentums[i]), float(self.max_momentums[i])) if momentum_key else (0.0, 0.0)
            )
            scheds.append(
                _core.cyclic(float(base), float(top), up, down, kind, gamma, _SCALE_MODES[self.scale_mode], 0,
                             bool(momentum_key), bm, mm)
            )
        return _core.GroupEngine(scheds, momentum_key, None if scale is not None else self._scale_fn_custom)

    def state_dict(self) -> dict[str, Any]:
        """State as torch's CyclicLR saves it; a clrfast scale is kept as data."""
        state = super().state_dict()
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None
        if isinstance(fn, Scale):
            state["_scale_fn_custom"] = {"clrfast_scale": fn.to_dict()}
        elif fn is not None and not isinstance(fn, types.FunctionType):
            state["_scale_fn_custom"] = fn.__dict__.copy()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        fn = state_dict.pop("_scale_fn_custom", None)
        state_dict.pop("_scale_fn_ref", None)
        if isinstance(fn, dict) and "clrfast_scale" in fn:
            state_dict["_scale_fn_custom"] = Scale.from_dict(fn["clrfast_scale"])
        elif fn is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(fn)
        self._restore(state_dict)
        self._init_scale_fn()
        self._build_engine()


class OneCycleLR(_CoreScheduler):
    r"""One-cycle policy (Smith 2018): ``torch.optim.lr_scheduler.OneCycleLR``, computed in C++.

    Phases and annealing as :class:`clrfast.OneCycle`; the per-group endpoints are read from the
    param groups (``initial_lr``, ``max_lr``, ``min_lr``, ``base_momentum``, ``max_momentum``)
    when the scheduler is built or its state is loaded. Stepping past ``total_steps`` raises
    torch's ``ValueError``.
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
        self.optimizer = optimizer
        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        self._schedule_phases = _phase_table(self.total_steps, pct_start, three_phase)
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy
        check.real("div_factor", div_factor, min=0.0, min_open=True)
        check.real("final_div_factor", final_div_factor, min=0.0, min_open=True)
        max_lrs = _format_param("max_lr", optimizer, max_lr)
        _finite("max_lr", max_lrs)
        self.cycle_momentum = cycle_momentum
        use_momentum = _momentum_mode(optimizer, cycle_momentum)
        if use_momentum:
            base_momentums, max_momentums = _momentum_bounds(optimizer, base_momentum, max_momentum)
        if last_epoch == -1:
            for idx, group in enumerate(optimizer.param_groups):
                group["initial_lr"] = max_lrs[idx] / div_factor
                group["max_lr"] = max_lrs[idx]
                group["min_lr"] = group["initial_lr"] / final_div_factor
        if use_momentum:
            self.use_beta1 = use_momentum == _MOMENTUM_BETAS
            if last_epoch == -1:
                _set_initial_momentum(optimizer, self.use_beta1, max_momentums, base_momentums)
        self._three_phase = bool(three_phase)
        self._pct_start = float(pct_start)
        self._build_engine()
        super().__init__(optimizer, last_epoch)

    def _make_engine(self):
        momentum_key = 0
        if self.cycle_momentum:
            momentum_key = _MOMENTUM_BETAS if getattr(self, "use_beta1", False) else _MOMENTUM_KEY
        three = len(self._schedule_phases) == 3
        pct = getattr(self, "_pct_start", None)
        if pct is None:  # state saved by torch: recover pct_start from the first phase end
            pct = (self._schedule_phases[0]["end_step"] + 1) / self.total_steps
        anneal = 0 if self._anneal_func_type == "cos" else 1
        scheds = []
        for g in self.optimizer.param_groups:
            bm, mm = (float(g["base_momentum"]), float(g["max_momentum"])) if momentum_key else (0.0, 0.0)
            scheds.append(
                _core.onecycle_groups(float(g["initial_lr"]), float(g["max_lr"]), float(g["min_lr"]),
                                      float(self.total_steps), float(pct), anneal, three, bool(momentum_key), bm, mm)
            )
        return _core.GroupEngine(scheds, momentum_key, None)


def _phase_table(total_steps: int, pct_start: float, three_phase: bool) -> list[dict]:
    """torch's ``_schedule_phases`` (kept in the state_dict for compatibility)."""
    if three_phase:
        return [
            {"end_step": float(pct_start * total_steps) - 1, "start_lr": "initial_lr", "end_lr": "max_lr",
             "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
            {"end_step": float(2 * pct_start * total_steps) - 2, "start_lr": "max_lr", "end_lr": "initial_lr",
             "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
            {"end_step": total_steps - 1, "start_lr": "initial_lr", "end_lr": "min_lr",
             "start_momentum": "max_momentum", "end_momentum": "max_momentum"},
        ]
    return [
        {"end_step": float(pct_start * total_steps) - 1, "start_lr": "initial_lr", "end_lr": "max_lr",
         "start_momentum": "max_momentum", "end_momentum": "base_momentum"},
        {"end_step": total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr",
         "start_momentum": "base_momentum", "end_momentum": "max_momentum"},
    ]


class CosineAnnealingWarmRestarts(_CoreScheduler):
    r"""SGDR: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``, computed in C++.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``. ``step()`` advances
    ``T_cur`` and restarts with ``T_i *= T_mult``; ``step(epoch)`` accepts fractional epochs and
    uses torch's closed form. ``T_cur`` and ``T_i`` are kept as torch keeps them, so state dicts
    are interchangeable.
    """

    _ENGINE_STATE = ("last_epoch", "_step_count", "_last_lr", "T_cur", "T_i")
    _RESTARTS = True
    T_cur = _engine_field("T_cur", "Steps since the last restart.")
    T_i = _engine_field("T_i", "Length of the current cycle.")

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        check.real("eta_min", eta_min)
        self.T_0 = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.optimizer = optimizer
        # The values torch's LRScheduler.__init__ is about to store as base_lrs (it raises the
        # KeyError for a resume without initial_lr itself).
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self._build_engine()
        self.T_i = T_0
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)
        self._build_engine()

    def _make_engine(self):
        scheds = [
            _core.cosine_restarts(float(b), float(self.eta_min), float(self.T_0), float(self.T_mult), 1.0, 0.0)
            for b in self.base_lrs
        ]
        engine = _core.GroupEngine(scheds, 0, None)
        engine.T_mult = self.T_mult
        return engine

    def get_lr(self) -> list[float]:
        """Learning rates at the current ``T_cur``/``T_i``."""
        self._warn_get_lr()
        return self._engine.values_restarts(float(self.T_cur), float(self.T_i))

    def step(self, epoch=None) -> None:
        """Advance one step, or jump to a (possibly fractional) ``epoch`` with torch's closed form."""
        if epoch is None and self._engine_step(self.optimizer.param_groups):
            return
        if epoch is None:
            epoch = 0
        if epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        if epoch >= self.T_0:
            if self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:
                T_cur, T_i = _core.restart_pos_torch_epoch(float(self.T_0), float(self.T_mult), float(epoch))
                self.T_cur = T_cur
                self.T_i = int(T_i)
        else:
            self.T_i = self.T_0
            self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        self._last_lr = self._engine.apply_restarts(float(self.T_cur), float(self.T_i), self.optimizer.param_groups)

"""``ReduceLROnPlateau`` whose reductions multiply whatever schedule drives each param group."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch
from torch.optim import Optimizer

from .. import _validate as check
from ..schedules import Scaled, Schedule, from_dict
from ._fused import FusedOptimizer
from .schedulers import EPOCH_DEPRECATION_WARNING, ScheduleLR, driver_of

__all__ = ["ReduceLROnPlateau"]

_TorchPlateau = torch.optim.lr_scheduler.ReduceLROnPlateau

# torch's state keys, and the two this class adds
_TORCH_KEYS = frozenset(
    (
        "factor",
        "default_min_lr",
        "min_lrs",
        "patience",
        "cooldown",
        "eps",
        "last_epoch",
        "_last_lr",
        "mode_worse",
        "mode",
        "threshold",
        "threshold_mode",
        "best",
        "cooldown_counter",
        "num_bad_epochs",
    )
)
_KEYS = _TORCH_KEYS | {"reductions", "base_schedules"}


def _param_groups_val_list(optimizer: Optimizer, key: str) -> list:
    """Each group's value, a tensor cloned (torch's helper, which torch before 2.6 lacks)."""
    return [g[key].clone() if isinstance(g[key], torch.Tensor) else g[key] for g in optimizer.param_groups]


def _update_param_group_val(group: dict, key: str, value: float) -> None:
    """Writes a value as torch's plateau does: a tensor is filled in place, not replaced."""
    if isinstance(group[key], torch.Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


def _reduced(base: Schedule, factor, min_lr, times: int) -> Schedule:
    return base if times == 0 else Scaled(base, factor, min_lr, times)


class ReduceLROnPlateau(_TorchPlateau):
    r"""torch's ``ReduceLROnPlateau`` (same arguments, counters and numbers) over any schedule.

    The metric logic is torch's: a step whose metric is no improvement on ``best`` (by
    ``threshold`` in ``threshold_mode``) is a bad epoch; ``patience + 1`` bad epochs in a row
    outside ``cooldown`` reduce every group once. What a reduction multiplies:

    - a group driven by a schedule (a fused optimizer's ``group["schedule"]``, or the
      ``ScheduleLR`` last built on a torch optimizer) counts its reductions ``n`` and is driven
      by ``Scaled(schedule, factor, min_lr, n)``: at step ``k`` its lr is
      ``f(f(...f(schedule.lr(k))))`` (``n`` times) with ``f(x) = max(x * factor, min_lr)``,
      torch's rounding of each reduction; the momentum is the schedule's. The group shows the
      reduced lr at once, so the next ``optimizer.step()`` applies it, as with torch. A
      reduction is skipped for a group where it lowers the current lr by ``eps`` or less
      (torch's rule, checked at the group's current step). With ``min_lr > 0`` the reduced lr
      is floored at ``min_lr`` at every later step, also where the schedule itself goes below it.
    - a group with a plain lr (``schedule=None``, a torch optimizer without ``ScheduleLR``) gets
      torch's ``lr = max(lr * factor, min_lr)``, written into the group.

    With a constant schedule the lrs are torch's, double for double. Pass the optimizer (a
    ``ScheduleLR`` is accepted too and stands for its optimizer). A schedule swapped in later
    (``group["schedule"] = s2``, a new ``ScheduleLR``) is noticed at the next ``step(metric)``
    (or ``state_dict()``) and becomes the group's base, the count kept: from then on the group
    runs ``Scaled(s2, factor, min_lr, n)``. ``state_dict()`` is torch's keys plus
    ``reductions`` (the counts) and ``base_schedules`` (``to_dict()`` data, None for a plain
    group): plain data, loadable with ``torch.load(weights_only=True)``; ``load_state_dict``
    checks it all, then drives each scheduled group by its saved base and count. torch's own
    state dict loads too (the counts are kept). A ``step`` or a load that raises changes nothing.
    """

    # The engine's refusal of torch's ReduceLROnPlateau over a schedule does not apply to this class.
    _multiplies_schedules = True
    # The optimizer lives in a slot, out of __dict__: the engine takes a dict that holds an optimizer
    # and ReduceLROnPlateau's counters for torch's plateau; and the schedules last written per group.
    __slots__ = ("_optimizer", "_written")

    reductions: list[int]
    base_schedules: list[Schedule | None]

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if isinstance(optimizer, ScheduleLR):
            optimizer = optimizer.optimizer
        factor = check.real("factor", factor, min=0.0, keep_int=True)
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            min_lrs = [check.real(f"min_lr[{i}]", m, min=0.0, keep_int=True) for i, m in enumerate(min_lr)]
            default = None
        else:
            default = check.real("min_lr", min_lr, min=0.0, keep_int=True)
            min_lrs = [default] * n
        _check_modes(mode, threshold_mode, "")
        patience = check.integer("patience", patience, min=0)
        threshold = check.real("threshold", threshold, keep_int=True)
        cooldown = check.integer("cooldown", cooldown, min=0)
        eps = check.real("eps", eps, min=0.0, keep_int=True)
        self._optimizer = optimizer
        self.factor = factor
        self.default_min_lr = default
        self.min_lrs = min_lrs
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _param_groups_val_list(optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()
        drivers = self._drivers()
        self.reductions = [0] * n
        self.base_schedules = list(drivers)
        self._written = list(drivers)

    @property  # type: ignore[override]
    def optimizer(self) -> Optimizer:
        return self._optimizer

    @optimizer.setter
    def optimizer(self, value: Optimizer) -> None:
        self._optimizer = value

    # ------------------------------------------------------------------ who drives each group
    def _schedule_lr(self) -> ScheduleLR | None:
        """The ScheduleLR driving the groups, or None (a fused optimizer's schedules, or plain lrs).

        A fused optimizer with a scheduled group refuses any torch scheduler, so a group is driven
        either by its own schedule or, all of them, by a ScheduleLR.
        """
        opt = self.optimizer
        if isinstance(opt, FusedOptimizer) and any(g["schedule"] is not None for g in opt.param_groups):
            return None
        return driver_of(opt)

    def _drivers(self) -> list:
        """Each group's schedule as it is now (None for a plain lr)."""
        groups = self.optimizer.param_groups
        sched = self._schedule_lr()
        if sched is not None:
            return list(sched.schedules)
        if isinstance(self.optimizer, FusedOptimizer):
            return [g["schedule"] for g in groups]
        return [None] * len(groups)

    def _clock(self, gi: int) -> int:
        """The step whose values group ``gi`` shows (the one its next update applies)."""
        sched = self._schedule_lr()
        if sched is not None:
            return int(sched.last_epoch)
        opt = self.optimizer
        assert isinstance(opt, FusedOptimizer)
        return opt._clock_of(gi)

    def _bases(self) -> tuple[list, list, list]:
        """(bases, counts, targets) with swapped schedules taken as new bases; groups added since are new."""
        drivers = self._drivers()
        n = len(drivers)
        bases = list(self.base_schedules[:n]) + [None] * (n - len(self.base_schedules))
        counts = list(self.reductions[:n]) + [0] * (n - len(self.reductions))
        written = list(self._written[:n]) + [None] * (n - len(self._written))
        targets = list(drivers)
        for i, now in enumerate(drivers):
            if now is None:
                bases[i] = None
            elif not (now is written[i] or now == written[i]):
                bases[i] = now  # swapped by other code: the reductions multiply the new schedule
                targets[i] = self._scaled(now, i, counts[i])
            else:
                targets[i] = now
        return bases, counts, targets

    def _scaled(self, base: Schedule, gi: int, times: int) -> Schedule:
        return _reduced(base, self.factor, self.min_lrs[gi] if gi < len(self.min_lrs) else 0.0, times)

    # ------------------------------------------------------------------ the step
    def step(self, metrics, epoch=None) -> None:  # type: ignore[override]
        """torch's step: one metric (converted with ``float``), a reduction after ``patience + 1`` bad epochs."""
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        best, bad, cool = self.best, self.num_bad_epochs, self.cooldown_counter
        if self._is_better(current, best):
            best, bad = current, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0  # torch ignores the bad epochs in cooldown
        bases, counts, targets = self._bases()
        plain: dict[int, float] = {}
        min_lrs = self.min_lrs
        if bad > self.patience:
            min_lrs = self._min_lrs_now()
            self._reduce(bases, counts, targets, plain, min_lrs)
            cool, bad = self.cooldown, 0
        self._apply(targets, plain)
        self.min_lrs = min_lrs
        self.base_schedules, self.reductions = bases, counts
        self.last_epoch = epoch
        self.best, self.num_bad_epochs, self.cooldown_counter = best, bad, cool
        self._last_lr = _param_groups_val_list(self.optimizer, "lr")

    def _min_lrs_now(self) -> list:
        """torch's: a min_lr per group, the default one for groups added since; a list given must still fit."""
        n = len(self.optimizer.param_groups)
        if len(self.min_lrs) == n:
            return self.min_lrs
        if self.default_min_lr is None:
            raise RuntimeError(
                f"The number of param groups in the `optimizer` ({n}) differs from when `ReduceLROnPlateau` was "
                f"initialized ({len(self.min_lrs)}), usually due to a new param group being added to the optimizer. "
                "Please modify the `min_lrs` field to match the length of the `optimizer` param groups."
            )
        return [self.default_min_lr] * n

    def _reduce(self, bases, counts, targets, plain, min_lrs) -> None:
        """One reduction of every group (into ``counts``, ``targets``, ``plain``), each kept only where it lowers
        the group's current lr by more than ``eps``."""
        for i, group in enumerate(self.optimizer.param_groups):
            base = bases[i]
            if base is None:
                old = float(group["lr"])
                new = max(old * self.factor, min_lrs[i])
                if old - new > self.eps:
                    plain[i] = new
                    counts[i] += 1
                continue
            t = self._clock(i)
            if base.max_step is not None:
                t = min(t, base.max_step)  # a finished schedule: its last value decides
            reduced = _reduced(base, self.factor, min_lrs[i], counts[i] + 1)
            if targets[i].lr(t) - reduced.lr(t) > self.eps:
                targets[i] = reduced
                counts[i] += 1

    def _apply(self, targets: list, plain: dict) -> None:
        """Writes the changed schedules (shown at once) and the plain groups' lrs."""
        opt = self.optimizer
        drivers = self._drivers()
        sched = self._schedule_lr()
        if sched is not None:
            if any(t is not d for t, d in zip(targets, drivers)):
                sched._set_schedules(targets)
        elif isinstance(opt, FusedOptimizer):
            for i, (t, d) in enumerate(zip(targets, drivers)):
                if t is not d and t is not None:
                    opt._set_schedule(i, t)
        for i, lr in plain.items():
            _update_param_group_val(opt.param_groups[i], "lr", lr)
        self._written = list(targets)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """torch's keys, plus ``reductions`` and ``base_schedules`` (``to_dict()`` data): no objects."""
        bases, counts, _ = self._bases()
        state = dict(self.__dict__)
        state["reductions"] = list(counts)
        state["base_schedules"] = [None if b is None else b.to_dict() for b in bases]
        state["min_lrs"] = list(self.min_lrs)
        if isinstance(state.get("_last_lr"), list):
            state["_last_lr"] = list(state["_last_lr"])
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adopts a state saved by this class or by torch's, checked in full before anything changes.

        Keys missing keep their values (as torch's load); each scheduled group is then driven by
        its saved base schedule reduced its saved number of times.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        unknown = sorted(map(repr, set(state_dict) - _KEYS))
        if unknown:
            raise ValueError(f"state_dict has keys ReduceLROnPlateau does not keep: {', '.join(unknown)}")
        state = {**self.__dict__, **state_dict}
        groups = self.optimizer.param_groups
        n = len(groups)
        factor = check.real("state_dict['factor']", state["factor"], min=0.0, keep_int=True)
        if factor >= 1.0:
            raise ValueError(f"state_dict['factor']: Factor should be < 1.0, got {factor!r}")
        _check_modes(state["mode"], state["threshold_mode"], "state_dict")
        default = state["default_min_lr"]
        if default is not None:
            default = check.real("state_dict['default_min_lr']", default, min=0.0, keep_int=True)
        min_lrs = state["min_lrs"]
        if not isinstance(min_lrs, (list, tuple)) or len(min_lrs) != n:
            raise ValueError(
                f"state_dict['min_lrs'] must be a list of {n} values (one per param group), got {min_lrs!r}"
            )
        min_lrs = [check.real(f"state_dict['min_lrs'][{i}]", m, min=0.0, keep_int=True) for i, m in enumerate(min_lrs)]
        fields = {
            "factor": factor,
            "default_min_lr": default,
            "min_lrs": min_lrs,
            "patience": check.integer("state_dict['patience']", state["patience"], min=0),
            "cooldown": check.integer("state_dict['cooldown']", state["cooldown"], min=0),
            "eps": check.real("state_dict['eps']", state["eps"], min=0.0, keep_int=True),
            "threshold": check.real("state_dict['threshold']", state["threshold"], keep_int=True),
            "last_epoch": _number("state_dict['last_epoch']", state["last_epoch"]),
            "best": _number("state_dict['best']", state["best"]),
            "num_bad_epochs": check.integer("state_dict['num_bad_epochs']", state["num_bad_epochs"], min=0),
            "cooldown_counter": check.integer("state_dict['cooldown_counter']", state["cooldown_counter"], min=0),
        }
        last = state["_last_lr"]
        if not isinstance(last, list):
            raise TypeError(f"state_dict['_last_lr'] must be a list, got {last!r}")
        bases, counts, targets = self._bases()
        drivers = self._drivers()
        if "reductions" in state_dict:
            counts = state_dict["reductions"]
            if not isinstance(counts, (list, tuple)) or len(counts) != n:
                raise ValueError(
                    f"state_dict['reductions'] must be a list of {n} counts (one per param group), got {counts!r}"
                )
            counts = [check.integer(f"state_dict['reductions'][{i}]", c, min=0) for i, c in enumerate(counts)]
        if "base_schedules" in state_dict:
            saved = state_dict["base_schedules"]
            if not isinstance(saved, (list, tuple)) or len(saved) != n:
                raise ValueError(
                    f"state_dict['base_schedules'] must be a list of {n} (one per param group), got {saved!r}"
                )
            bases = []
            for i, s in enumerate(saved):
                label = f"state_dict['base_schedules'][{i}]"
                if (s is None) != (drivers[i] is None):
                    raise ValueError(
                        f"{label} is {'None (a plain lr)' if s is None else 'a schedule'}, but param_groups[{i}] "
                        f"{'follows a schedule' if s is None else 'has a plain lr'}"
                    )
                if s is None or isinstance(s, Schedule):
                    bases.append(s)
                    continue
                try:
                    bases.append(from_dict(s))
                except (TypeError, ValueError, OverflowError) as e:
                    raise type(e)(f"{label}: {e}") from None
        for i, base in enumerate(bases):
            if base is not None:
                reduced = _reduced(base, factor, min_lrs[i], counts[i])
                targets[i] = drivers[i] if reduced == drivers[i] else reduced
        self._apply(targets, {})
        self.__dict__.update({k: v for k, v in state_dict.items() if k in _TORCH_KEYS})
        self.__dict__.update(fields)
        self._last_lr = list(last)
        self.base_schedules, self.reductions = list(bases), list(counts)
        self._init_is_better(mode=state["mode"], threshold=fields["threshold"], threshold_mode=state["threshold_mode"])

    def __getstate__(self):
        return {**self.__dict__, "_optimizer": self._optimizer, "_written": self._written}

    def __setstate__(self, state) -> None:
        state = dict(state)
        self._optimizer = state.pop("_optimizer")
        self._written = state.pop("_written")
        self.__dict__.update(state)


def _check_modes(mode, threshold_mode, where: str) -> None:
    """torch's errors for an unknown mode or threshold mode."""
    prefix = f"{where}: " if where else ""
    if not isinstance(mode, str) or mode not in ("min", "max"):
        raise ValueError(f"{prefix}mode {mode if isinstance(mode, str) else repr(mode)} is unknown!")
    if not isinstance(threshold_mode, str) or threshold_mode not in ("rel", "abs"):
        shown = threshold_mode if isinstance(threshold_mode, str) else repr(threshold_mode)
        raise ValueError(f"{prefix}threshold mode {shown} is unknown!")


def _number(name: str, value):
    """A counter or a best metric: a real number (inf allowed, as torch's best starts), kept as given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if math.isnan(float(value)):
        raise ValueError(f"{name} must not be NaN")
    return value

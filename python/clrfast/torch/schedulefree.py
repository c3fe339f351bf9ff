"""``CLRScheduleFreeAdamW`` and ``CLRScheduleFreeSGD``: the schedulefree package's optimizers on the fused engine."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import ClassVar

import torch

from .. import _validate as check
from ._checks import check_schedule, check_state_tensor, clock, step_flag, step_real, where
from .rule import Hyper, RuleOptimizer

__all__ = ["CLRScheduleFreeAdamW", "CLRScheduleFreeSGD"]


def _exact(gi: int, key: str, value, *, min: float | None = None):
    """A power the step raises to, checked; an int stays an int, as the package's Python uses it."""
    v = step_real(gi, key, value, min=min)
    return value if isinstance(value, numbers.Integral) and not isinstance(value, bool) else v


class _ScheduleFree(RuleOptimizer):
    """What both schedule-free rules share: the group bookkeeping, the modes, the schedule."""

    _beta_key: ClassVar[tuple] = ("betas", 0)  # where beta1 (SGD: momentum) lives in a group
    _default_lr: ClassVar[float] = 0.0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls._cuda_rule = False  # ckp1 and the lr's running sums are the host's, each step
        cls._published_keys = ("lr",)  # beta1 is the interpolation weight: no schedule moves it

    def _setup_sf(self, params, lr, schedule, hyper: dict, *, flat, threads, match_torch=True) -> None:
        if schedule is not None:
            check_schedule("schedule", schedule)
            if not (isinstance(lr, numbers.Real) and not isinstance(lr, bool) and lr == self._default_lr):
                raise ValueError(f"lr={lr!r} and a schedule were both given; the schedule sets the lr")
            lr = None
        hyper = dict(
            hyper, k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0
        )  # the package's group keys
        self._setup(params, schedule, lr, hyper, flat=flat, threads=threads, match_torch=match_torch)

    # ------------------------------------------------------------------ hyperparameters
    def _beta1(self, group):
        key, index = self._beta_key
        return group[key] if index is None else group[key][index]

    def _check_hyper(self, label: str, group: dict) -> None:
        super()._check_hyper(label, group)
        group["r"] = check.real(f"{label}['r']", group["r"], keep_int=True)
        group["weight_lr_power"] = check.real(
            f"{label}['weight_lr_power']", group["weight_lr_power"], min=0.0, keep_int=True
        )
        group["warmup_steps"] = check.whole(f"{label}['warmup_steps']", group["warmup_steps"], min=0)
        group["k"] = clock(f"{label}['k']", group["k"])
        if group["k"] != group["step"]:
            raise ValueError(
                f"{label}['k'] is {group['k']} and {label}['step'] {group['step']}: both count the group's updates"
            )
        group["weight_sum"] = check.real(f"{label}['weight_sum']", group["weight_sum"], min=0.0)
        group["lr_max"] = check.real(f"{label}['lr_max']", group["lr_max"])
        group["scheduled_lr"] = check.real(f"{label}['scheduled_lr']", group["scheduled_lr"])
        if group.get("foreach") not in (None, False, True):
            raise TypeError(f"{label}['foreach'] must be a bool or None, got {group['foreach']!r}")
        self._check_schedule_free(label, group["schedule"], group["warmup_steps"])

    @staticmethod
    def _check_schedule_free(label: str, schedule, warmup_steps) -> None:
        if schedule is None:
            return
        if warmup_steps:
            raise ValueError(
                f"{label} has warmup_steps={warmup_steps} and a schedule: the schedule's lr(t) replaces the "
                "built-in warmup; put the warmup in the schedule (e.g. clr.WarmupCosine) and leave warmup_steps=0"
            )
        if schedule.has_momentum:
            raise ValueError(
                f"{label}['schedule'] {schedule!r} defines a momentum; schedule-free's beta1 (SGD: momentum) "
                "is the interpolation weight that train() and eval() invert, so no schedule may move it. Use "
                "a schedule without one (clr.OneCycle(..., cycle_momentum=False), clr.Cyclic without "
                "base_momentum/max_momentum)"
            )

    def _held_momentum(self, group) -> float:
        return 0.0  # no schedule moves beta1 here (see _check_schedule_free)

    def _publish_values(self, group, lr: float, momentum: float) -> None:
        group["lr"] = lr

    def _loaded_group(self, gi: int, saved: dict, current: dict) -> dict:
        # 'k' is the clock a group resumes at: the package advances only 'k' (and carries the 'step'
        # of a clrfast dict it loaded unchanged)
        if "k" in saved:
            saved["step"] = saved["k"]
        return super()._loaded_group(gi, saved, current)

    def _step_hyper(self, gi: int, group) -> dict:
        """The package's per-group scalars of this update, in double as its Python computes them."""
        h = super()._step_hyper(gi, group)
        k = clock(f"param_groups[{gi}]['k']", group["k"])
        if k != h["step"]:
            raise ValueError(
                f"param_groups[{gi}]['k'] is {k} and param_groups[{gi}]['step'] {h['step']}: both count the "
                "group's updates; set both"
            )
        try:
            warmup_steps = check.whole(f"param_groups[{gi}]['warmup_steps']", group["warmup_steps"], min=0)
        except TypeError as e:
            raise ValueError(str(e)) from None
        schedule = group["schedule"]
        self._check_schedule_free(f"param_groups[{gi}]", schedule, warmup_steps)
        r = _exact(gi, "r", group["r"])
        weight_lr_power = _exact(gi, "weight_lr_power", group["weight_lr_power"], min=0.0)
        lr_max = step_real(gi, "lr_max", group["lr_max"])
        weight_sum = step_real(gi, "weight_sum", group["weight_sum"], min=0.0)
        self._check_betas(f"param_groups[{gi}]", h)
        # the package's step, line for line
        if k < warmup_steps:
            sched = (k + 1) / warmup_steps
        else:
            sched = 1.0
        if "beta2" in h:
            h["bias_correction2"] = 1 - h["beta2"] ** (k + 1)
        lr = h["lr"] * sched
        lr_max = max(lr, lr_max)
        weight = ((k + 1) ** r) * (lr_max**weight_lr_power)
        weight_sum = weight_sum + weight
        try:
            ckp1 = weight / weight_sum
        except ZeroDivisionError:
            ckp1 = 0
        h.update(k=k, lr=lr, lr_max=lr_max, weight_sum=weight_sum, ckp1=ckp1)
        h["to_train"] = None if h["train_mode"] else self._mode_move(gi, group, True)
        return h

    def _check_betas(self, label: str, h: dict) -> None:
        """Raises unless the values the step read lie in the rule's range (beyond ``Hyper``'s checks)."""

    # ------------------------------------------------------------------ train and eval
    def _mode_move(self, gi: int, group, to_train: bool) -> tuple:
        """The checked lerp that puts a group's parameters in train mode (y) or eval mode (x)."""
        beta1 = step_real(gi, self._beta_key[0], self._beta1(group), min=0.0)
        if not to_train and beta1 == 0.0:
            raise ValueError(f"param_groups[{gi}]: eval() needs beta1 > 0 (x = y + (1 - 1/beta1) (z - y))")
        pairs = []
        for pi, p in enumerate(group["params"]):
            st = self.state.get(p)
            z = None if st is None else st.get("z")
            if z is None:
                continue  # no update yet: y = x = z
            check_state_tensor(gi, pi, "z", p, z)
            if z.dtype != p.dtype:
                raise TypeError(f"{where(gi, pi)}: state['z'] is {z.dtype}, the parameter {p.dtype}")
            pairs.append((p, z))
        return (1 - beta1 if to_train else 1 - 1 / beta1), pairs

    @staticmethod
    def _apply_move(group, move, to_train: bool) -> None:
        weight, pairs = move
        for p, z in pairs:
            p.lerp_(end=z.to(p.device), weight=weight)
        group["train_mode"] = to_train

    @torch.no_grad()
    def _switch(self, to_train: bool) -> None:
        moves = []
        for gi, group in enumerate(self.param_groups):
            if step_flag(gi, "train_mode", group["train_mode"]) != to_train:
                moves.append((group, self._mode_move(gi, group, to_train)))
        for group, move in moves:  # every group checked first: all switch, or none
            self._apply_move(group, move, to_train)

    def train(self) -> None:
        """Puts the parameters at y, where gradients are taken (the package's ``train()``, bit for bit)."""
        self._switch(True)

    def eval(self) -> None:
        """Puts the parameters at the average x, where the model is evaluated (the package's ``eval()``)."""
        self._switch(False)

    @contextlib.contextmanager
    def averaged(self) -> Iterator[_ScheduleFree]:
        """``with opt.averaged():`` the parameters are at x inside, back in train mode after (if they were)."""
        was_training = any(g["train_mode"] for g in self.param_groups)
        self.eval()
        try:
            yield self
        finally:
            if was_training:
                self.train()

    # ------------------------------------------------------------------ the update
    def _commit(self, gi: int, group, hyper, plan, inv_scale, grad_scale, found_inf) -> None:
        if hyper["to_train"] is not None:  # a step in eval mode: train() first, as part of the step
            self._apply_move(group, hyper["to_train"], True)
        super()._commit(gi, group, hyper, plan, inv_scale, grad_scale, found_inf)
        group["k"] = hyper["k"] + 1
        group["scheduled_lr"] = hyper["lr"]
        group["lr_max"] = hyper["lr_max"]
        group["weight_sum"] = hyper["weight_sum"]

    def _checked_state(self, gi: int, pi: int, p, lp) -> tuple:
        # the package's lerp_ refuses a z of another dtype mid-step: refused here before anything changes
        # (a loaded state is cast to the parameter's dtype by torch's load_state_dict)
        checked = super()._checked_state(gi, pi, p, lp)
        for k, v in checked[0].items():
            if v.dtype != lp.dtype:
                raise TypeError(
                    f"{where(gi, pi)}: state[{k!r}] is {v.dtype}, the parameter {p.dtype}; convert the state with "
                    "the parameter (schedule-free interpolates the parameter with z)"
                )
        return checked

    def _new_state(self, p, keys) -> dict:
        """The package's initial state: z a copy of the parameter, exp_avg_sq zeros."""
        return {
            k: (torch.clone if k == "z" else torch.zeros_like)(p, memory_format=torch.preserve_format) for k in keys
        }


class CLRScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al. 2024), the ``schedulefree`` package's ``AdamWScheduleFree``, fused.

    The parameters hold y, where gradients are taken; the state holds z (the base sequence)
    and ``exp_avg_sq``; the average x, where the model is evaluated, is reached with
    :meth:`eval` and left with :meth:`train`, exactly as the package does. Per element::

        v = beta2 * v + (1 - beta2) * g * g
        g = g / (sqrt(v / (1 - beta2**(k+1))) + eps) + weight_decay * y
        y = y.lerp(z, ckp1) + lr * (beta1 * (1 - ckp1) - 1) * g
        z = z - lr * g

    with ``lr = lr * min(1, (k+1) / warmup_steps)`` and ``ckp1 = weight / weight_sum``,
    ``weight = (k+1)**r * lr_max**weight_lr_power``, ``lr_max`` the largest lr so far.
    float32 and float64 trajectories, ``p.grad`` after the step (normalised in place, as the
    package leaves it), the state and the group keys (``k``, ``weight_sum``, ``lr_max``,
    ``scheduled_lr``, ``train_mode``) are bit-identical to the package's for-loop and foreach
    paths (torch's MKL square root, as :class:`~clrfast.torch.CLRAdamW`; ``match_torch=False``
    takes the IEEE root), so state dicts load both ways; ``k`` is the clock a loaded group
    resumes at. ``schedule=`` replaces the built-in warmup: ``lr = schedule.lr(k)`` (``lr`` and
    ``warmup_steps`` are then not given, and the schedule must define no momentum), and
    ``lr_max`` and the averaging weight follow that lr by the same formulas: the weight grows
    while lr(k) reaches new maxima and is flat (times ``(k+1)**r``) after. A step in eval mode
    first makes the switch :meth:`train` makes, as part of the step (a refused or skipped step
    leaves the mode alone). :meth:`averaged` is ``eval()`` ... ``train()`` as a context manager.
    A tensor lr is applied as its value; bfloat16/float16 parameters are updated in float32 and
    rounded once. ``foreach`` is kept in the groups for the package; the fused step has one
    path. ``flat``, ``threads``, GradScaler and the all-or-nothing checks are those of
    :class:`~clrfast.torch.CLRSGD`.
    """

    _rule = "CLRScheduleFreeAdamW"
    _core_rule = "schedulefree_adamw"
    _default_lr = 0.0025
    _hypers = (
        Hyper("betas", "betas"),
        Hyper("eps", invalid="Invalid epsilon value"),
        Hyper("weight_decay", invalid="Invalid weight_decay value"),
        Hyper("train_mode", "flag"),
    )

    def __init__(
        self,
        params,
        lr: float = 0.0025,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = True,
        *,
        schedule=None,
        flat: bool = False,
        match_torch: bool = True,
        threads: int | None = None,
    ):
        hyper = dict(
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            r=r,
            weight_lr_power=weight_lr_power,
            foreach=foreach,
        )
        self._setup_sf(params, lr, schedule, hyper, flat=flat, threads=threads, match_torch=match_torch)

    def _check_hyper(self, label: str, group: dict) -> None:
        super()._check_hyper(label, group)
        self._check_betas(label, dict(zip(("beta1", "beta2"), group["betas"])))

    def _check_betas(self, label: str, h: dict) -> None:
        if not h["beta1"] > 0.0:
            raise ValueError(
                f"Invalid beta parameter at index 0: {h['beta1']} ({label}['betas'][0] must be > 0: eval() "
                "divides by it)"
            )
        if not h["beta2"] < 1.0:
            raise ValueError(
                f"Invalid beta parameter at index 1: {h['beta2']} ({label}['betas'][1] must be < 1: the bias "
                "correction 1 - beta2**(k+1) would be 0)"
            )

    def _torch_update(self, params, grads, states, h) -> None:
        # the package's for-loop path, op for op
        lr, beta1, beta2, eps, decay, ckp1 = (h[k] for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "ckp1"))
        for y, grad, st in zip(params, grads, states):
            z, exp_avg_sq = st["z"], st["exp_avg_sq"]
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = exp_avg_sq.div(h["bias_correction2"]).sqrt_().add_(eps)
            grad_normalized = grad.div_(denom)
            if decay != 0:
                grad_normalized.add_(y, alpha=decay)
            y.lerp_(end=z, weight=ckp1)
            y.add_(grad_normalized, alpha=lr * (beta1 * (1 - ckp1) - 1))
            z.sub_(grad_normalized, alpha=lr)


class CLRScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-free SGD, the ``schedulefree`` package's ``SGDScheduleFree``, fused.

    As :class:`CLRScheduleFreeAdamW` without the second moment (``momentum`` is beta1), per
    element::

        g = g + weight_decay * y
        y = y.lerp(z, ckp1) + lr * (momentum * (1 - ckp1) - 1) * g
        z = z - lr * g

    The state is ``z``; ``p.grad`` holds the decayed gradient after a step, as the package
    leaves it. float32/float64 trajectories, state and group keys are bit-identical to the
    package's for-loop and foreach paths; modes, ``schedule=`` and checkpoints as for AdamW.
    """

    _rule = "CLRScheduleFreeSGD"
    _core_rule = "schedulefree_sgd"
    _default_lr = 1.0
    _beta_key = ("momentum", None)
    _hypers = (
        Hyper("weight_decay", invalid="Invalid weight_decay value"),
        Hyper("momentum", invalid="Momentum must be between 0 and 1 exclusive"),
        Hyper("train_mode", "flag"),
    )

    def __init__(
        self,
        params,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = True,
        *,
        schedule=None,
        flat: bool = False,
        threads: int | None = None,
    ):
        hyper = dict(
            momentum=momentum,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            r=r,
            weight_lr_power=weight_lr_power,
            foreach=foreach,
        )
        self._setup_sf(params, lr, schedule, hyper, flat=flat, threads=threads)

    def _check_hyper(self, label: str, group: dict) -> None:
        super()._check_hyper(label, group)
        self._check_betas(label, group)

    def _check_betas(self, label: str, h: dict) -> None:
        m = h["momentum"]
        if not 0.0 < m < 1.0:
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {m} ({label}['momentum'])")

    def _torch_update(self, params, grads, states, h) -> None:
        # the package's for-loop path, op for op
        lr, momentum, decay, ckp1 = (h[k] for k in ("lr", "momentum", "weight_decay", "ckp1"))
        for y, grad, st in zip(params, grads, states):
            z = st["z"]
            if decay != 0:
                grad.add_(y, alpha=decay)
            y.lerp_(end=z, weight=ckp1)
            y.add_(grad, alpha=lr * (momentum * (1 - ckp1) - 1))
            z.sub_(grad, alpha=lr)

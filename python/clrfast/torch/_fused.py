"""The fused-optimizer engine shared by clrfast's optimizers.

A rule (SGD, the Adam family) supplies its hyperparameters, its per-parameter state,
the kernel row of a parameter and its kernel; the engine owns everything around them,
so every rule gets the same guarantees:

- **Nothing reaches the kernel unchecked.** A *plan* per param group lists, for every
  parameter with a gradient, the raw pointers the kernel will touch. It is built only
  after every tensor was checked (device, dtype, layout, element counts of parameter,
  gradient and state, memory overlap). Each later step revalidates it exactly in C++
  (``_core.StepCheck``: each gradient's dtype, device, shape, layout and overlap, the
  addresses, layouts and view bits of the parameters and state tensors), with one call to
  torch's C++ tensor guard over all of them where this torch has one, else a few attribute
  reads per tensor; a gradient that passes (autograd's new one after ``zero_grad()``
  included) goes straight into the table, anything else takes the full check again. Tensors the kernel
  cannot walk as one flat run (transposed parameters, a state buffer left in another
  dtype by ``model.to()``) take torch's own single-tensor code, so they still match torch.
- **All or nothing.** ``step`` validates every group before it mutates anything, and the
  constructor, ``add_param_group`` and ``load_state_dict`` validate all input first. A step
  checks every value it reads (clock, schedule, hyperparameters, flags, state) whoever put it
  there: a value written to a group after construction fails the step with an error naming
  it (``param_groups[0]['step']``) and leaves parameters, gradients, state and clock as they
  were. A clock that comes back as an integral float (``3.0``, ``np.float64(3)``, from JSON or
  NumPy) counts as that integer and is an ``int`` again after the step; ``2.5`` is refused.
- **torch's conventions.** After k applied updates a group shows the lr and momentum of
  update k (as after ``scheduler.step()``). A group without a schedule applies what it
  holds, as torch's optimizers do. A group with one is never silently overridden: a torch
  ``LRScheduler`` attached to the optimizer (torch's ``ReduceLROnPlateau`` included) is refused at
  the next step (``_check_followed``); ``scheduler()`` is the scheduler object to hand to trainers,
  ``clrfast.torch.ReduceLROnPlateau`` the plateau (it swaps schedules with ``_set_schedule``).
- **torch.compile.** A compiled step is one custom op whose inputs are the parameters with
  a gradient, their gradients and a handle tensor; it honours functionalization by writing
  the updated values into the tensors it was handed (see the op below).
- **The clock** (``group["step"]``) counts applied updates; a step skipped by GradScaler
  does not advance it.
"""

from __future__ import annotations

import numbers
import warnings

import torch

from .. import _core
from .. import _validate as check
from ..schedules import Scaled, Schedule
from ._checkpoint import Checkpoints
from ._checks import (
    IdSet,
    check_no_overlap,
    check_param,
    check_schedule,
    clock,
    local,
    non_negative,
    real_or_tensor,
    step_real,
    where,
)
from ._follow import Following
from ._plan import Plan, Planning


class FusedOptimizer(Following, Checkpoints, Planning):
    """Base of clrfast's fused optimizers: the constructor, the groups and the step, in call order.

    The rule's declaration and hooks are :class:`EngineBase`'s; see the module docstring for the
    guarantees.
    """

    _all_params: list  # every parameter, in group order: what a compiled step sees

    def __init__(self, params, defaults: dict, *, threads: int | None = None):
        if threads is not None:
            threads = check.integer("threads", threads, min=1)
        self._threads = threads
        self._plans: dict = {}
        self._flat: dict = {}
        self._published: list = []
        self._fresh = IdSet()
        groups = self._normalise(params)
        # Every group is checked before torch's constructor adds (and flattens) the first.
        checked = []
        for gi, g in enumerate(groups):
            checked.append(self._checked_group(gi, g, defaults))
            self._check_joins(gi, checked[gi], checked[:gi])
        check_no_overlap(
            [(where(gi, pi), local(p)) for gi, g in enumerate(checked) for pi, p in enumerate(g["params"])]
        )
        self._constructing = True
        self._register()
        try:
            super().__init__(checked, defaults)
        finally:
            self._constructing = False

    # ------------------------------------------------------------------ hyperparameters
    def _lr_source(self, schedule, lr) -> tuple:
        """The (schedule, lr) a constructor was given; a number as the schedule is the lr (schedule=None)."""
        if schedule is not None and not isinstance(schedule, Schedule):
            if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
                if lr is not None:
                    raise TypeError(f"give the lr once: schedule={schedule!r} and lr={lr!r}")
                schedule, lr = None, schedule
            else:
                check_schedule("schedule", schedule)
        if schedule is None and lr is None:
            raise TypeError(
                f"{self._rule} needs a schedule (clr.Cyclic, clr.OneCycle, ...) or, with schedule=None, an lr"
            )
        if schedule is not None and lr is not None:
            raise ValueError(f"lr={lr!r} and a schedule were both given; the schedule sets the lr")
        return schedule, lr

    @staticmethod
    def _check_lr(label: str, group: dict) -> None:
        """A group's schedule, or (schedule=None) its lr, and its ``lr_scale``, normalised in place."""
        if "lr_scale" in group:
            group["lr_scale"] = check.real(f"{label}['lr_scale']", group["lr_scale"], min=0.0, keep_int=True)
        if group["schedule"] is not None:
            check_schedule(f"{label}['schedule']", group["schedule"])
        else:
            lr = group["lr"]
            if not isinstance(lr, torch.Tensor):
                group["lr"] = non_negative(f"{label}['lr']", lr, "Invalid learning rate")
                return
            if lr.numel() != 1:  # torch's constructor check, before its value is read
                raise ValueError(f"Tensor lr must be 1-element ({label}['lr'] has {lr.numel()} elements)")
            group["lr"] = real_or_tensor(f"{label}['lr']", lr)

    @staticmethod
    def _check_weight_decay(label: str, group: dict) -> None:
        """A group's ``weight_decay``: a real >= 0 (torch's check), or a schedule of it, normalised in place."""
        wd = group["weight_decay"]
        if isinstance(wd, Schedule):
            return
        group["weight_decay"] = non_negative(f"{label}['weight_decay']", wd, "Invalid weight_decay value")

    @staticmethod
    def _step_weight_decay(gi: int, group, step: int) -> float:
        """The weight decay update ``step`` applies: the number, or ``wd(step)``, a schedule's lr channel.

        Past a finite schedule's last step its last value holds.
        """
        wd = group["weight_decay"]
        if isinstance(wd, Schedule):
            last = wd.max_step
            try:
                wd = wd.lr(step if last is None else min(step, last))
            except (OverflowError, ZeroDivisionError, ValueError) as e:
                raise ValueError(f"param_groups[{gi}]['weight_decay'] at step {step}: {e}") from None
        return step_real(gi, "weight_decay", wd, min=0.0)

    @staticmethod
    def _check_flags_and_clock(label: str, group: dict, flags) -> None:
        """A group's boolean hyperparameters and its step clock, normalised in place."""
        for key in flags:
            if not isinstance(group[key], (bool, int)) or group[key] not in (0, 1):
                raise TypeError(f"{label}['{key}'] must be a bool, got {group[key]!r}")
            group[key] = bool(group[key])
        group["step"] = clock(f"{label}['step']", group["step"])

    # ------------------------------------------------------------------ groups
    @staticmethod
    def _normalise(params) -> list:
        if isinstance(params, torch.Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, but "
                f"got {torch.typename(params)}"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        return groups

    def _checked_group(self, gi: int, group, defaults: dict) -> dict:
        """The group as it will be stored, defaults filled in; raises on anything invalid.

        As torch's ``add_param_group``: ``(name, tensor)`` pairs give the group ``param_names``,
        and a tensor listed twice is kept once, with torch's warning.
        """
        if not isinstance(group, dict):
            raise TypeError(f"param_groups[{gi}]: param_group must be a dict, but got {type(group)}")
        given = set(group)
        group = dict(group)
        params = group.get("params")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering "
                "of tensors in sets will change between runs. Please use a list instead."
            )
        elif params is None:
            raise ValueError(f"param_groups[{gi}] has no 'params'")
        else:
            params = list(params)
        pairs = [pi for pi, p in enumerate(params) if isinstance(p, tuple)]
        if pairs:
            if len(pairs) != len(params):
                raise ValueError(
                    "all optimizer params should be with/without names. Some param names are missing "
                    f"(param_groups[{gi}] parameter {min(set(range(len(params))) - set(pairs))})"
                )
            for pi, p in enumerate(params):
                if len(p) != 2:
                    raise TypeError(
                        f"{where(gi, pi)}: a named parameter is a (name, tensor) pair, got a tuple of {len(p)}"
                    )
            group["param_names"] = [name for name, _ in params]
            params = [p for _, p in params]
        group["params"] = params
        for k, v in defaults.items():
            group.setdefault(k, v)
        if group.get("schedule") is not None and "lr" in given:
            raise ValueError(
                f"param_groups[{gi}] sets lr={group['lr']!r} but follows a schedule, which sets the lr; give the "
                "group its own schedule (e.g. 'schedule': clr.Constant(lr)) or 'schedule': None"
            )
        if group.get("schedule") is None and "lr" not in given and defaults.get("schedule") is not None:
            raise ValueError(f"param_groups[{gi}] has 'schedule': None and needs its own 'lr'")
        self._check_hyper(f"param_groups[{gi}]", group)
        for pi, p in enumerate(params):
            check_param(gi, pi, p, self._rule)
            if not p.is_leaf:
                raise ValueError(f"{where(gi, pi)}: can't optimize a non-leaf Tensor")
        first: dict[int, int] = {}
        for pi, p in enumerate(params):
            first.setdefault(id(p), pi)
        if len(first) != len(params):
            # torch warns and keeps both, so the step would update the tensor twice: the
            # kernel refuses memory written twice, and one update per step is what was meant
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, this will "
                "cause an error; see github.com/pytorch/pytorch/issues/40967 for more information "
                f"({self._rule} keeps the first of each in param_groups[{gi}], updated once per step)",
                UserWarning,
                stacklevel=3,
            )
            keep = sorted(first.values())
            names = group.get("param_names")
            if isinstance(names, list) and len(names) == len(params):
                group["param_names"] = [names[i] for i in keep]
            group["params"] = params = [params[i] for i in keep]
        if group["flat"]:
            self._check_flattenable(gi, params)
        return group

    @staticmethod
    def _check_joins(gi: int, group: dict, before) -> None:
        """torch's checks of a group against the groups before it: names in all or none, no parameter in two."""
        named = "param_names" in group
        if any(("param_names" in g) != named for g in before):
            raise ValueError(
                "all optimizer param groups should be with/without names. cannot add param group "
                f"{'with' if named else 'without'} names to the optimizer (param_groups[{gi}])"
            )
        seen = {id(p): where(gj, pj) for gj, g in enumerate(before) for pj, p in enumerate(g["params"])}
        for pi, p in enumerate(group["params"]):
            if id(p) in seen:
                raise ValueError(
                    f"some parameters appear in more than one parameter group ({where(gi, pi)} is {seen[id(p)]})"
                )

    def add_param_group(self, param_group: dict) -> None:
        """As torch's; the group is checked in full (and flattened when ``flat``) before it is added."""
        gi = len(self.param_groups)
        if self._constructing:
            group = param_group  # __init__ checked every group already
        else:
            group = self._checked_group(gi, param_group, self.defaults)
            self._check_joins(gi, group, self.param_groups)
            named = [
                (where(gj, pi), local(p)) for gj, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])
            ]
            check_no_overlap(named + [(where(gi, pi), local(p)) for pi, p in enumerate(group["params"])])
        super().add_param_group(group)
        group = self.param_groups[-1]
        self._all_params = self._all_params + list(group["params"])
        if group["schedule"] is not None:
            self._publish_schedule(group)
        self._published.append(self._current(group))
        if group["flat"]:
            self._flatten(gi, group)

    # ------------------------------------------------------------------ zero_grad
    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch's. A flat group zeroes its bound gradients in one call."""
        if torch.compiler.is_compiling():
            # The traced form touches no param_groups (see the custom op above).
            for p in self._all_params:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.zero_()
            return
        for gi, group in enumerate(self.param_groups):
            flat = self._flat.get(gi)
            if flat is not None and not set_to_none:
                flat.grad.zero_()
            for pi, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                elif flat is None or not flat.bound(pi, g):
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    g.zero_()

    # ------------------------------------------------------------------ the step
    def step(self, closure=None):
        """One update of every group; returns the closure's loss when one is given.

        Under ``torch.compile`` the update is one opaque call (``clrfast::fused_step``), so a
        moving schedule never recompiles the graph around it.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():
            params = self._stepped_params()
            torch.ops.clrfast.fused_step(params, [p.grad for p in params], self._handle)
        else:
            self._eager_step()
        return loss

    def _stepped_params(self) -> list:
        """The parameters a step reads, in group order: those with a gradient (a compiled step's inputs)."""
        return [p for p in self._all_params if p.grad is not None]

    @torch.no_grad()
    def _eager_step(self) -> None:
        if self._is_state_init_step():
            self._init_state_only()
            return
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and found_inf.device.type == "cpu" and float(found_inf) != 0.0:
            return
        # Validate every group, then mutate: nothing after the plans raises on input.
        try:
            for gi, g in enumerate(self.param_groups):
                self._check_followed(gi, g)
                if "lr_scale" in g:
                    step_real(gi, "lr_scale", g["lr_scale"], min=0.0)
            hypers = [self._step_hyper(gi, self._host_view(gi, g)) for gi, g in enumerate(self.param_groups)]
            # GradScaler's fused path writes the unscaled gradients back, and so do rules that leave
            # their final gradient in p.grad: then they are written memory
            written = grad_scale is not None or self._writes_grads
            plans = [self._plan(gi, g, h, written) for gi, (g, h) in enumerate(zip(self.param_groups, hypers))]
            for gi, (group, plan) in enumerate(zip(self.param_groups, plans)):
                if plan is not None and self._device_step(plan):
                    self._check_cuda_group(gi, group)
                    if plan.slow:
                        pi = plan.slow[0][0]
                        raise ValueError(
                            f"{where(gi, pi)} is a CUDA tensor the kernel cannot walk as one dense run (transposed, "
                            "or a state tensor of another dtype or layout); the CUDA step has no per-tensor "
                            "fallback: make it contiguous (p.data = p.data.contiguous()) before the step"
                        )
            for hyper, plan in zip(hypers, plans):
                if plan is not None and plan.slow:
                    self._rehearse(plan.slow, hyper)
        except Exception:
            self._forget_plans()  # plans built for this step carry changes it never made
            raise
        inv_scale = None
        if grad_scale is not None and any(p is not None and p.device.type == "cpu" for p in plans):
            inv_scale = float(grad_scale.double().reciprocal().float())
            for hyper in hypers:
                hyper["grad_scale"] = grad_scale  # for rules that divide by it (_divides_scale)
        try:
            for gi, (group, hyper, plan) in enumerate(zip(self.param_groups, hypers, plans)):
                self._commit(gi, group, hyper, plan, inv_scale, grad_scale, found_inf)
        finally:
            for plan in plans:
                if plan is not None and plan.check is not None:
                    plan.check.release()  # this step's gradients are the caller's again

    def _commit(self, gi: int, group, hyper, plan: Plan | None, inv_scale, grad_scale, found_inf) -> None:
        """Applies one validated group's update and advances its clock."""
        group["step"] = hyper["step"]  # the validated count: a clock read back as 3.0 advances as 3
        if plan is None:
            self._advance(gi, group)
            return
        for action in plan.deferred:
            action()
        plan.deferred = []
        if self._device_step(plan):
            self._cuda_step(gi, group, plan, hyper, grad_scale, found_inf)
            if plan.check is None and plan.cacheable:
                self._arm(plan)
            return
        values = None
        if len(plan.table):
            values = self._kernel(plan.table, hyper, inv_scale, self._next_values(group, hyper["step"] + 1))
        if plan.slow:
            self._reference(plan.slow, hyper, inv_scale)
        if self._required(hyper):
            self._initialised(plan)
        if plan.check is None and plan.cacheable:
            self._arm(plan)
        self._advance(gi, group, values)

    def _reference(self, slow: list, hyper: dict, inv_scale) -> None:
        """The rule's reference update of the ``(index, parameter)`` pairs the kernel cannot take."""
        params = [p for _, p in slow]
        grads = [p.grad for p in params]
        if inv_scale is not None and not self._divides_scale(hyper):
            for g in grads:
                g.mul_(inv_scale)  # GradScaler's fused contract: the optimizer unscales, in place
        self._torch_update(params, grads, [self.state[p] for p in params], hyper)

    def _divides_scale(self, hyper: dict) -> bool:
        """Whether the update unscales GradScaler's gradients by dividing by the scale, as torch's fused
        kernels do (``hyper['grad_scale']``; its ``_torch_update`` then unscales too), rather than
        multiplying by the reciprocal, as torch's ``unscale_`` does before a for-loop step."""
        return False

    def _rehearse(self, slow: list, hyper: dict) -> None:
        """Runs the reference update on copies of the slow parameters whose state mixes dtypes or devices.

        torch's code may refuse such a mix (Adam's ``lerp_`` takes no float32 state beside a float64
        parameter, as after ``model.double()``) once it updated the parameters before it. Raised
        here, on copies, the error leaves the step all or nothing; the copies cost one more update
        of those parameters only.
        """
        mixed = []
        for _, p in slow:
            st = self.state.get(p) or {}
            values = [st.get(k) for k in self._state_keys]
            if any(isinstance(v, torch.Tensor) and (v.dtype != p.dtype or v.device != p.device) for v in values):
                mixed.append(p)
        if not mixed:
            return
        required = self._required(hyper)
        states = []
        for p in mixed:
            st = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self.state[p].items()}
            st.update(self._new_state(p, [k for k in required if st.get(k) is None]))
            states.append(st)
        self._torch_update([p.detach().clone() for p in mixed], [p.grad.clone() for p in mixed], states, hyper)

    # ------------------------------------------------------------------ after an update
    def _external(self, gi: int, group) -> bool:
        """True when other code wrote a published hyperparameter since this optimizer did."""
        return any(a is not b for a, b in zip(self._current(group), self._published[gi]))

    def _advance(self, gi: int, group, values: tuple | None = None) -> None:
        """After an applied update: the clock moves and the group shows the next update's values.

        ``values``: the next update's (lr, momentum), when the kernel call computed them.
        """
        group["step"] += 1
        if values is not None:
            self._publish_values(group, *values)
        elif self._next_values(group, group["step"]) is not None:
            self._publish_schedule(group)
        self._published[gi] = self._current(group)

    def _next_values(self, group, step: int) -> tuple | None:
        """What a kernel call needs to compute the values a scheduled group shows at ``step``, or None."""
        sched = group["schedule"]
        if sched is None or (sched.max_step is not None and step > sched.max_step):
            return None
        return (self._driving(group)._core, step, self._held_momentum(group))

    def _clock_of(self, gi: int) -> int:
        """The number of updates group ``gi`` applied: the step whose values it shows.

        The device owns a CUDA group's clock; it is read (one sync, as ``state_dict`` reads it).
        """
        group = self.param_groups[gi]
        st = group.get("_cuda")
        if st is not None and not self._external(gi, group):
            return st.read()[0]
        return clock(f"param_groups[{gi}]['step']", group["step"])

    def _set_schedule(self, gi: int, schedule: Schedule) -> None:
        """Makes ``schedule`` drive group ``gi`` from its next update on, as a torch scheduler's write does.

        The group shows ``schedule``'s lr and momentum at its clock at once (so the next update
        applies them, and this optimizer's own write is no external one); later updates follow
        ``schedule``. A plain ``group["schedule"] = s`` waits one update, applying the values the
        group already shows. Raises, changing nothing, unless the group has a schedule and
        ``schedule`` is valid.
        """
        label = f"param_groups[{gi}]"
        check_schedule(f"{label}['schedule']", schedule)
        group = self.param_groups[gi]
        if group["schedule"] is None:
            raise ValueError(f"{label} has no schedule (schedule=None): its lr is the group's own")
        st = group.get("_cuda")
        device = st is not None and not self._external(gi, group)
        step = self._clock_of(gi)
        held = self._held_momentum(self._host_view(gi, group))
        values = None
        if schedule.max_step is None or step <= schedule.max_step:
            values = _core.sgd_hyper(
                self._driving(group, schedule)._core, step, held
            )  # past the end the next step raises
        group["schedule"] = schedule
        group["step"] = step
        if values is None:
            return
        lr, momentum = values
        if st is not None and device:
            # The kernels take the step's values from the schedule on the device; the group shows
            # the device's 0-d views, which are set here so that they read the new values.
            st.values.copy_(torch.tensor([lr, momentum], dtype=torch.float64))
            st.host_lr, st.host_momentum = lr, momentum
            self._publish_values(group, st.lr, st.momentum if schedule.has_momentum else held)
        else:
            self._publish_values(group, lr, momentum)
        self._published[gi] = self._current(group)

    def _publish_schedule(self, group) -> None:
        """Writes the scheduled values (lr, momentum or betas) of the group's next update into it."""
        self._publish_values(
            group, *_core.sgd_hyper(self._driving(group)._core, group["step"], self._held_momentum(group))
        )

    def _driving(self, group, sched: Schedule | None = None) -> Schedule:
        """The schedule a scheduled group's values come from: its schedule (or ``sched``), times its ``lr_scale``.

        ``lr = schedule.lr(t) * lr_scale`` (timm's per-group key, one rounding, as timm's
        schedulers write it); the momentum is the schedule's. The scaled value is kept per group
        while neither changes, so a CUDA group's device copy is made once.
        """
        sched = group["schedule"] if sched is None else sched
        scale = group.get("lr_scale", 1.0)
        if scale == 1.0:
            return sched
        cache = self.__dict__.setdefault("_scaled", {})
        kept = cache.get(id(group))
        if kept is None or kept[0] is not group or kept[1] is not sched or kept[2] != scale:
            kept = cache[id(group)] = (group, sched, scale, Scaled(sched, float(scale)))
        return kept[3]

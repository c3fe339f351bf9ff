"""Declared update rules: a fused optimizer from a short declaration.

A rule's C++ side (its header under ``cpp/include/clrfast/`` and its line in
``cpp/src/rules.hpp``) declares its state slots and per-group scalars; the binding
exports them as ``_core.rules[name]``: slot names (torch's state keys), scalar order, the
table's columns, whether it keeps torch's ``step`` counter and takes a square root. The
Python side of a rule is a :class:`RuleOptimizer` subclass that names the C++ rule and
declares its hyperparameters (:class:`Hyper`), where a schedule's momentum goes, which
slots an update needs, and torch's (or the reference package's) update for tensors the
kernel cannot take. Everything else (plans, checks, flat mode, GradScaler, state dicts,
copies, DCP, the compile op, external writes) is :class:`FusedOptimizer`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.optim.optimizer import _get_scalar_dtype

from .. import _core
from .. import _validate as check
from ..schedules import Schedule
from ._checks import DTYPE_CODES, holds_values, local, non_negative, step_clock, step_flag, step_lr, step_real, where
from ._cuda import DeviceClock, DeviceTable, Launcher
from ._fused import FusedOptimizer
from ._sqrt import torch_sqrt_routines

__all__ = ["Hyper", "RuleOptimizer", "StepCounters"]

_STEP_DTYPES = {torch.float32: 0, torch.float64: 1}


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a rule, checked as torch checks it.

    ``kind``: ``"real"`` (a number >= ``min`` when ``min`` is not None; ``invalid`` is torch's
    message, e.g. ``"Invalid alpha value"``), ``"flag"`` (a bool) or ``"betas"`` (a pair in
    ``[0, beta_max]``, sent to the kernel as ``beta1``, ``beta2``).
    """

    name: str
    kind: str = "real"
    min: float | None = 0.0
    invalid: str = ""
    beta_max: float = 1.0


class StepCounters:
    """torch's per-parameter 0-d ``state['step']``, as the Adam family and RMSprop keep it.

    Each parameter needs a counter of its own: torch adds one per parameter to a counter two
    parameters share, so neither would see the count of its own updates; such a state (from
    hand-made or converted checkpoints, never from torch) is refused at ``load_state_dict``
    and, for a direct write, at the next step. A counter must hold a whole number >= 0.
    """

    state: Any
    param_groups: list

    def _check_step_state(self, gi: int, pi: int, st: dict) -> None:
        step = st.get("step")
        if step is None:
            return
        if not (isinstance(step, torch.Tensor) and step.numel() == 1 and step.is_floating_point()):
            raise TypeError(
                f"param_groups[{gi}] parameter {pi}: state['step'] must be a one-element floating tensor, got {step!r}"
            )
        # A negative, fractional or infinite count comes from a corrupt state: a bias correction
        # of 0 (an infinite step), or of no step torch takes.
        v = float(local(step))
        if not (v >= 0.0 and float.is_integer(v)):
            raise ValueError(
                f"param_groups[{gi}] parameter {pi}: state['step'] must hold a whole number >= 0, got {step!r}"
            )

    @staticmethod
    def _step_key(step) -> tuple:
        """Identifies a step tensor's memory: two tensor objects may view one counter."""
        t = local(step)
        ptr = t.data_ptr()
        return (t.device, ptr) if ptr else (None, id(step))

    def _refuse_shared_steps(self, steps, label) -> None:
        seen: dict = {}
        for name, step in steps:
            if not isinstance(step, torch.Tensor) or step.numel() != 1:
                continue  # reported by _check_step_state with its parameter
            key = self._step_key(step)
            if key in seen:
                raise ValueError(
                    f"{label(seen[key])} and {label(name)} share one state['step'] tensor; torch would add one "
                    "to it for each parameter that shares it, so no parameter's update would follow its own count. "
                    "Give each parameter its own counter (state[p]['step'] = state[p]['step'].clone())"
                )
            seen[key] = name

    def _refuse_shared_saved_steps(self, state_dict) -> None:
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state"), dict):
            self._refuse_shared_steps(
                ((k, v.get("step")) for k, v in state_dict["state"].items() if isinstance(v, dict)),
                lambda k: f"state_dict['state'][{k!r}]",
            )

    def _refuse_shared_live_steps(self) -> None:
        # A counter shared by a direct write (state[q]['step'] = state[p]['step']) shows up when
        # a plan is built: the per-step check sends a replaced state tensor to a new plan.
        self._refuse_shared_steps(
            (
                ((gj, pi), self.state[p].get("step") if p in self.state else None)
                for gj, g in enumerate(self.param_groups)
                for pi, p in enumerate(g["params"])
            ),
            lambda at: where(*at),
        )

    @staticmethod
    def _new_step(p) -> torch.Tensor:
        """torch's initial counter: a CPU scalar of the default dtype (on the device with capturable)."""
        if p.device.type == "cpu":
            return torch.tensor(0.0, dtype=_get_scalar_dtype())
        return torch.zeros((), dtype=_get_scalar_dtype(), device=p.device)


class RuleOptimizer(StepCounters, FusedOptimizer):
    """A fused optimizer whose kernel, row layout and scalars come from a C++ rule declaration.

    A subclass sets ``_core_rule`` (the key of ``_core.rules``), ``_hypers`` (in torch's check
    order), ``_momentum_key`` (``("momentum", None)``, or ``("betas", 0)`` for beta1) and
    implements ``_needs`` (the slots an update reads) and ``_torch_update`` (the reference
    update of the tensors the kernel cannot take), and calls ``_setup`` from its constructor.
    """

    _core_rule: ClassVar[str] = ""
    _hypers: ClassVar[tuple] = ()
    _momentum_key: ClassVar[tuple] = ("momentum", None)
    _layout: ClassVar[dict] = {}
    _momentum_scalar: ClassVar[str] = "momentum"  # the kernel scalar a schedule's momentum replaces

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls._core_rule:
            return
        layout = cls._layout = _core.rules[cls._core_rule]
        cols = layout["cols"]
        cls._state_keys = tuple(layout["slots"])
        cls._scalar_keys = ("step",) if layout["step"] else ()
        cls._cols = layout["width"]
        cls._ptr_cols = (cols["p"], cols["g"], *(cols[k] for k in cls._state_keys))
        cls._n_col, cls._grad_col = cols["n"], cols["g"]
        cls._merge_runs = not layout["step"]  # a row per counter
        cls._writes_grads = layout["grad_out"]
        cls._first_col = cols["fresh"] if layout["fresh"] else None  # the kernel initialises a fresh row's state
        cls._published_keys = ("lr", cls._momentum_key[0])
        cls._momentum_scalar = "beta1" if cls._momentum_key[0] == "betas" else cls._momentum_key[0]

    def _setup(self, params, schedule, lr, hyper: dict, *, flat: bool, threads, match_torch: bool = True) -> None:
        schedule, lr = self._lr_source(schedule, lr)
        defaults = dict(schedule=schedule, lr=lr if lr is not None else 0.0, **hyper, step=0, flat=flat)
        if self._layout["root"]:
            defaults["match_torch"] = match_torch
        self._check_hyper(self._rule, defaults)
        FusedOptimizer.__init__(self, params, defaults, threads=threads)

    # ------------------------------------------------------------------ hyperparameters
    def _flags(self) -> tuple:
        flags = tuple(h.name for h in self._hypers if h.kind == "flag") + ("flat",)
        return flags + ("match_torch",) if self._layout["root"] else flags

    def _check_hyper(self, label: str, group: dict) -> None:
        """Checks (and normalises in place) a group's hyperparameters, in torch's order and with its messages."""
        self._check_lr(label, group)
        for h in self._hypers:
            name = f"{label}['{h.name}']"
            if h.name == "weight_decay":
                self._check_weight_decay(label, group)
            elif h.kind == "real":
                group[h.name] = (
                    check.real(name, group[h.name]) if h.min is None else non_negative(name, group[h.name], h.invalid)
                )
            elif h.kind == "betas":
                betas = group[h.name]
                if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                    raise TypeError(f"{name} must be a pair of floats, got {betas!r}")
                group[h.name] = tuple(check.real(f"{name}[{i}]", b) for i, b in enumerate(betas))
                for i, b in enumerate(group[h.name]):
                    if not 0.0 <= b <= h.beta_max:
                        raise ValueError(
                            f"Invalid beta parameter at index {i}: {b} ({name} must lie in "
                            f"[0, {h.beta_max:g}], got {betas!r})"
                        )
        if self._layout["root"]:
            group.setdefault("match_torch", True)  # absent from torch's groups
        self._check_flags_and_clock(label, group, self._flags())

    def _held_momentum(self, group) -> float:
        key, index = self._momentum_key
        return group[key] if index is None else group[key][index]

    def _publish_values(self, group, lr: float, momentum: float) -> None:
        key, index = self._momentum_key
        group["lr"] = lr
        if index is None:
            group[key] = momentum
        else:
            group[key] = tuple(momentum if i == index else v for i, v in enumerate(group[key]))

    def _step_hyper(self, gi: int, group) -> dict:
        """Every value the step reads, checked; raises before anything changes.

        A tensor lr is applied as its value: torch's RMSprop reads it with ``.item()``.
        """
        h: dict = dict(step=step_clock(gi, group), lr=step_lr(gi, group["lr"])[0])
        for hp in self._hypers:
            value = group[hp.name]
            if hp.kind == "flag":
                h[hp.name] = step_flag(gi, hp.name, value)
            elif hp.name == "weight_decay":
                h[hp.name] = self._step_weight_decay(gi, group, h["step"])
            elif hp.kind == "real":
                h[hp.name] = step_real(gi, hp.name, value, min=hp.min)
            else:
                if not isinstance(value, (tuple, list)) or len(value) != 2:
                    raise TypeError(f"param_groups[{gi}]['{hp.name}'] must be a pair of floats, got {value!r}")
                h["beta1"], h["beta2"] = (step_real(gi, hp.name, b, min=0.0) for b in value)
                if max(h["beta1"], h["beta2"]) > hp.beta_max:
                    raise ValueError(f"param_groups[{gi}]['{hp.name}'] must lie in [0, {hp.beta_max:g}], got {value!r}")
        if self._layout["root"]:
            h["match_torch"] = step_flag(gi, "match_torch", group.get("match_torch", True))
        return h

    # ------------------------------------------------------------------ state
    def _needs(self, hyper: dict) -> tuple:
        """The state slots an update with these values reads and writes."""
        return self._state_keys

    def _required(self, hyper) -> tuple:
        return self._scalar_keys + tuple(self._needs(hyper))

    def _new_state(self, p, keys) -> dict:
        """torch's initial state: a 0-d step counter and zeros."""
        return {
            k: self._new_step(p) if k == "step" else torch.zeros_like(p, memory_format=torch.preserve_format)
            for k in keys
        }

    def _check_state(self, gi: int, pi: int, p, st: dict) -> None:
        self._check_step_state(gi, pi, st)

    def load_state_dict(self, state_dict) -> None:
        """As :meth:`FusedOptimizer.load_state_dict`; a state whose parameters share one ``step`` is refused."""
        if self._scalar_keys:
            self._refuse_shared_saved_steps(state_dict)
        super().load_state_dict(state_dict)
        # torch keeps a CUDA parameter's counter on the CPU (unless fused or capturable); the
        # CUDA step advances it on the device, as torch's fused step does
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                step = None if st is None else st.get("step")
                if isinstance(step, torch.Tensor) and local(p).device.type == "cuda" and step.device != local(p).device:
                    st["step"] = step.to(local(p).device)

    def _build_plan(self, gi: int, group, required, grads_written: bool = False):
        if self._scalar_keys:
            self._refuse_shared_live_steps()
        return super()._build_plan(gi, group, required, grads_written)

    def _row(self, p, lp, lg, locs, first) -> list | None:
        row = [0] * self._cols
        cols = self._layout["cols"]
        if self._scalar_keys:
            step = self._state_of(p, "step")
            if step is not None:
                if step.device != lp.device or step.dtype not in _STEP_DTYPES or not holds_values(step):
                    return None  # torch's code handles counters kept elsewhere (or read through a view bit)
                row[cols["step"]], row[cols["step_dtype"]] = step.data_ptr(), _STEP_DTYPES[step.dtype]
        row[cols["p"]], row[cols["g"]] = lp.data_ptr(), lg.data_ptr()
        for k in self._state_keys:
            if locs.get(k) is not None:
                row[cols[k]] = locs[k].data_ptr()
        row[cols["n"]], row[cols["dtype"]] = lp.numel(), DTYPE_CODES[lp.dtype]
        if self._first_col is not None:
            row[self._first_col] = first
        return row

    # ------------------------------------------------------------------ the update
    def _roots(self, h) -> tuple:
        """The kernel's square roots: torch's (MKL's) where the group matches torch's for-loop, else IEEE (0)."""
        return torch_sqrt_routines() if self._layout["root"] and h["match_torch"] else (0, 0, 0)

    def _kernel(self, table, h, inv_scale, publish):
        scalars = [float(h[k]) for k in self._layout["scalars"]]
        divide = inv_scale is not None and self._divides_scale(h)
        return getattr(_core, f"{self._core_rule}_step")(
            table,
            scalars,
            float(h["grad_scale"]) if divide else 1.0 if inv_scale is None else inv_scale,
            inv_scale is not None,
            self._num_threads(),
            *self._roots(h),
            *(publish or (None, 0, 0.0)),
            divide_scale=divide,
        )

    # ------------------------------------------------------------------ CUDA (_cuda.py)
    _cuda_launcher: ClassVar[Any] = Launcher()
    _cuda_rule: ClassVar[bool] = True  # False: a rule whose scalars the host derives each step

    def _host_view(self, gi: int, group):
        """The group as the host knows it: where the device owns lr and momentum, their last host values.

        Reading the device's 0-d values would synchronise every step; the kernels replace them anyway.
        """
        st = group.get("_cuda")
        if st is None or self._external(gi, group):
            return group
        view = dict(group)
        mom = st.host_momentum if group["schedule"].has_momentum else self._held_momentum(group)
        self._publish_values(view, st.host_lr, mom)
        return view

    def _check_cuda_group(self, gi: int, group) -> None:
        if not self._cuda_rule:
            raise ValueError(
                f"param_groups[{gi}] is on CUDA: {self._rule} derives its scalars on the host from each step's lr, "
                "which would synchronise every step; use the reference implementation on GPUs"
            )
        if isinstance(group.get("weight_decay"), Schedule):
            raise ValueError(
                f"param_groups[{gi}] is on CUDA with a weight-decay schedule, which the CPU step evaluates on the "
                "host; the CUDA step does not evaluate one on the device yet: give the group a number"
            )
        if group["schedule"] is None or self._external(gi, group):
            raise ValueError(
                f"param_groups[{gi}] is on CUDA, where {self._rule} computes lr and momentum on the device from its "
                "schedule; a value written to the group (or schedule=None) would need a host sync each step. "
                "Give the group a schedule and leave its lr and momentum to it."
            )

    def _cuda_step(self, gi: int, group, plan, hyper, grad_scale, found_inf) -> None:
        """Enqueues the group's step on the current stream: no host sync, the device owns the clock."""
        sched = group["schedule"]
        st = group.get("_cuda")
        if st is None or st.device != plan.device:
            mom = self._held_momentum(self._host_view(gi, group))
            st = group["_cuda"] = DeviceClock(plan.device, hyper["step"], hyper["lr"], float(mom))
        st.use(self._driving(group))
        names = self._layout["scalars"]
        st.set_scalars(tuple(float(hyper[k]) for k in names))
        table = plan.cuda
        if table is None or not table.compatible(plan.table, self._n_col, self._ptr_cols[0]):
            table = plan.cuda = DeviceTable(self._core_rule, plan.table, self._n_col, plan.device)
        elif not table.matches(plan.table):
            table.refresh(plan.table, self._first_col)
        self._cuda_launcher.step(
            self._core_rule,
            table,
            st,
            lr_index=names.index("lr"),
            momentum_index=names.index(self._momentum_scalar),
            grad_scale=grad_scale,
            found_inf=found_inf,
            store_grad=grad_scale is not None,
        )
        # The device clears its rows' first-update flags; the host template follows, so a table
        # uploaded again does not initialise the state twice.
        self._initialised(plan)
        mom = st.momentum if sched.has_momentum else self._held_momentum(group)
        self._publish_values(group, st.lr, mom)
        self._published[gi] = self._current(group)

    def _sync_cuda(self) -> None:
        for gi, group in enumerate(self.param_groups):
            st = group.get("_cuda")
            if st is None or self._external(gi, group):
                continue
            group["step"], lr, mom = st.read()
            self._publish_values(group, lr, mom if group["schedule"].has_momentum else self._held_momentum(group))
            self._published[gi] = self._current(group)

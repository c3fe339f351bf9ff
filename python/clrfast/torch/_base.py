"""What the engine's parts share: a rule's declaration, the hooks a rule implements, and state access."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch

from .. import _core
from ._checks import IdSet
from ._compiled import register

if TYPE_CHECKING:
    from ._plan import Plan


def _plateau_refs() -> int:
    """The references to ReduceLROnPlateau and its subclasses: each live scheduler holds one to its class.

    clrfast's own (``clrfast.torch.ReduceLROnPlateau``) and its subclasses are not counted: their
    reductions multiply the group's schedule, so the schedule never overrides them.
    """
    todo, n = [torch.optim.lr_scheduler.ReduceLROnPlateau], 0
    while todo:
        cls = todo.pop()
        if cls.__dict__.get("_multiplies_schedules"):
            continue
        n += sys.getrefcount(cls)
        todo += cls.__subclasses__()
    return n


class EngineBase(torch.optim.Optimizer):
    """What a fused optimizer's parts share (see ``_fused`` for the guarantees).

    A rule declares its per-element state tensors (``_state_keys``, in table order), its
    table width (``_cols``), the column of the "state holds no history yet" flag
    (``_first_col``, SGD's first-step momentum; None when new state is simply zeros) and
    whether adjacent flat rows may merge (``_merge_runs``). It implements
    ``_check_hyper`` (group validation), ``_publish_schedule`` (the scheduled
    hyperparameters of an update), ``_step_hyper`` (the values one update applies),
    ``_required`` (the state keys an update needs), ``_new_state`` (fresh state of a
    parameter), ``_row`` (the kernel row of a parameter), ``_kernel`` and ``_torch_update``
    (torch's single-tensor code, for tensors the kernel cannot walk).
    """

    _rule = "optimizer"
    _state_keys: tuple[str, ...] = ()
    _all_params: list  # every parameter, in group order: what a compiled step sees
    _cols = 0
    _first_col: int | None = None
    _merge_runs = False
    _scalar_keys: tuple = ()  # per-parameter state that is not per element (the Adam family's step)
    _ptr_cols: tuple = ()  # columns holding addresses (for merging flat runs)
    _n_col = 0  # the column of the element count
    _grad_col = 1  # the column of the gradient's address
    _writes_grads = False  # the kernel stores into the gradients (not only GradScaler's unscaling)
    # With fused_unscale, torch.amp.GradScaler hands the step its scale and inf flag and the kernel
    # unscales as it reads (one pass less over the gradients). Off by default: trainers refuse
    # gradient clipping with an optimizer that unscales internally (Lightning's precision
    # plugins ask ``_step_supports_amp_scaling``), and GradScaler's own unscale_ then skips
    # the step on inf, which leaves the clock alone all the same.
    fused_unscale = False
    # Whether a step checked for a ReduceLROnPlateau holding this optimizer (see _check_followed)
    _plateau_looked = False

    # Set by the engine (FusedOptimizer.__init__, __setstate__).
    _threads: int | None
    _plans: dict  # {group index: Plan}
    _flat: dict  # {group index: Flat}
    _published: list  # per group: the published values (_published_keys) as this optimizer wrote them
    _fresh: IdSet  # the first state tensors of parameters whose state holds no history yet
    _handle: torch.Tensor
    _plateaus_at: int
    _constructing: bool

    @property
    def _step_supports_amp_scaling(self) -> bool:
        return bool(self.fused_unscale)

    def _register(self) -> None:
        """Makes the optimizer findable by its compiled step (at construction and after unpickling)."""
        self._handle = register(self)  # a graph input under torch.compile
        self._all_params = []
        self._plateaus_at = _plateau_refs()  # a ReduceLROnPlateau made after this adds one

    # ------------------------------------------------------------------ what the groups show
    _published_keys: tuple[str, ...] = ("lr",)
    # Flags older torch versions did not save; torch's __setstate__ reads a missing one as False.
    _later_flags: tuple = ()

    def _current(self, group) -> tuple:
        return tuple(group.get(k) for k in self._published_keys)

    def _num_threads(self) -> int:
        n = self._threads if self._threads is not None else torch.get_num_threads()
        # torch's pool sleeps while this call runs; never ask for more than the cores.
        return max(1, min(n, _core.hardware_threads()))

    # ------------------------------------------------------------------ the rule's hooks
    # What every rule implements (RuleOptimizer implements them from a declaration).
    def _check_hyper(self, label: str, group: dict) -> None:
        """Checks (and normalises in place) a group's hyperparameters; ``label`` names the group in errors."""
        raise NotImplementedError

    def _held_momentum(self, group) -> float:
        """The group's constant momentum (or beta1), which it keeps where its schedule defines none."""
        raise NotImplementedError

    def _publish_values(self, group, lr: float, momentum: float) -> None:
        """Writes the values of the group's next update (lr, momentum or beta1) into it."""
        raise NotImplementedError

    def _step_hyper(self, gi: int, group) -> dict:
        """Every value one update of the group applies, checked; raises before anything changes."""
        raise NotImplementedError

    def _required(self, hyper: dict) -> tuple:
        """The state keys an update with these values reads and writes."""
        raise NotImplementedError

    def _new_state(self, p, keys) -> dict:
        """The fresh state of parameter ``p`` for ``keys`` (torch's initial values)."""
        raise NotImplementedError

    def _row(self, p, lp, lg, locs: dict, first: int) -> list | None:
        """The kernel row of a parameter (local tensors ``lp``, ``lg``, state ``locs``); None: torch's code."""
        raise NotImplementedError

    def _kernel(self, table, hyper: dict, inv_scale, publish: tuple | None) -> tuple | None:
        """Runs the CPU kernel over ``table`` (``inv_scale``: GradScaler's, None without it).

        ``publish`` (from ``_next_values``): the same call returns the values of the next update.
        """
        raise NotImplementedError

    def _torch_update(self, params: list, grads: list, states: list, hyper: dict) -> None:
        """The reference implementation's update (torch's single-tensor code, or the reference package's) of
        parameters the kernel cannot walk as one dense run; ``states`` holds their state dicts."""
        raise NotImplementedError

    def _check_cuda_group(self, gi: int, group) -> None:
        """Raises unless this rule can step the CUDA group ``gi``."""
        raise ValueError(f"param_groups[{gi}] is on CUDA: {self._rule} has no CUDA step")

    def _cuda_step(self, gi: int, group, plan: Plan, hyper: dict, grad_scale, found_inf) -> None:
        raise NotImplementedError  # only rules whose _check_cuda_group lets a CUDA group through

    @staticmethod
    def _device_step(plan: Plan) -> bool:
        """Whether the plan's step runs on the device (the CUDA kernels) rather than the CPU kernel."""
        return plan.device.type == "cuda"

    def _host_view(self, gi: int, group):
        """The group with host values where the device holds them (the step reads no device value)."""
        return group

    # ------------------------------------------------------------------ state
    def _check_state(self, gi: int, pi: int, p, st: dict) -> None:
        """Checks a parameter's state beyond its per-element tensors (a rule's scalars); raises when invalid."""

    def _state_of(self, p, key: str):
        st = self.state.get(p)
        return None if st is None else st.get(key)

    def _is_fresh(self, p) -> bool:
        return self._first_col is not None and self._state_of(p, self._state_keys[0]) in self._fresh

    def _missing(self, p, required) -> list:
        st = self.state.get(p)
        return [k for k in required if st is None or st.get(k) is None]

    def _create_state(self, p, keys, views=None) -> None:
        """Gives ``p`` its missing state (flat groups: views of the flat storage, zeroed)."""
        new = self._new_state(p, keys)
        if views is not None:
            for k in self._state_keys:
                if k in new:
                    views[k].copy_(new[k])  # the rule's initial values (zeros, or a copy of p)
                    new[k] = views[k]
        self.state[p].update(new)

    # ------------------------------------------------------------------ CUDA (subclass hooks)
    def _sync_cuda(self) -> None:
        pass

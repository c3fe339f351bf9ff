"""State dicts, copies, pickling and torch.distributed.checkpoint's initialising step.

Everything loaded is checked before anything changes; what torch saves loads here, and what
clrfast saves loads into torch.
"""

from __future__ import annotations

import numbers
import sys
import types
from collections import OrderedDict

import torch
from torch.optim.optimizer import _get_scalar_dtype

from ..schedules import Schedule, from_dict
from ._checks import IdSet, check_state_tensor, clock, local
from ._flat import FlatLayout

_FRESH = "fresh_state"  # state-dict key: indices of a group's parameters whose state holds no history yet


def _called_from_dcp_init(depth: int = 12) -> bool:
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_name == "_init_optim_state" and frame.f_globals.get("__name__", "").startswith(
            "torch.distributed.checkpoint"
        ):
            return True
        frame = frame.f_back
    return False


class Checkpoints(FlatLayout):
    """torch's state-dict, copy and pickle protocols, and DCP's state-initialising step."""

    # ------------------------------------------------------------------ DCP's initialisation step
    def _is_state_init_step(self) -> bool:
        """torch.distributed.checkpoint's ``_init_optim_state`` is calling.

        On an optimizer without state it gives every parameter a zero gradient, sets every
        group's lr to 0 and calls ``step()`` to make the state exist, expecting no weight to
        move. Recognised by that caller on the stack (a warm-up from lr 0 on an all-zero first
        batch looks the same otherwise, and must be torch's first update), the call creates the
        state, marked as holding no history, and changes nothing else.
        """
        if self.state or not self.param_groups or not _called_from_dcp_init():
            return False
        for gi, group in enumerate(self.param_groups):
            lr = group.get("lr")
            if lr is self._published[gi][0] or not isinstance(lr, (float, int, torch.Tensor)) or float(lr) != 0.0:
                return False
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.requires_grad]
        return all(g is not None and not local(g).any() for g in grads)

    def _init_state_only(self) -> None:
        for gi, group in enumerate(self.param_groups):
            required = self._required(self._step_hyper(gi, self._host_view(gi, group)))
            flat = self._flat.get(gi)
            for pi, p in enumerate(group["params"]):
                if p.grad is None or not required:
                    continue
                views = flat.state_views(pi, p) if flat is not None else None
                self._create_state(p, self._missing(p, required), views)
                if self._first_col is not None:
                    self._fresh.add(self._state_of(p, self._state_keys[0]))
        self._plans.clear()

    # ------------------------------------------------------------------ state dict
    def _torch_call(self, hooks, method, *args):
        """Calls one of torch's methods with this optimizer's ``hooks`` set aside: clrfast runs them around
        its own work, so that they see (and may replace) what the caller gets, as with torch."""
        names = [f"_optimizer_{kind}_hooks" for kind in hooks]
        saved = [getattr(self, name) for name in names]
        for name in names:
            setattr(self, name, OrderedDict())
        try:
            return method(*args)
        finally:
            for name, value in zip(names, saved):
                setattr(self, name, value)

    def state_dict(self):
        """torch's layout; schedules are stored as dicts (JSON-safe), so torch and clrfast can load it.

        The state-dict hooks run as torch runs them: the pre-hooks first, the post-hooks on the
        finished dict (what one returns is what the caller gets).
        """
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        self._sync_cuda()
        sd = self._torch_call(("state_dict_pre", "state_dict_post"), super().state_dict)
        for g, live in zip(sd["param_groups"], self.param_groups):
            g.pop("_cuda", None)
            for key in ("schedule", "weight_decay"):
                if isinstance(g.get(key), Schedule):
                    g[key] = g[key].to_dict()
            if self._first_col is not None:
                # Buffers made by a state-initialising step hold no history; saved with the state so a
                # resume from such a checkpoint still makes the first update torch's first update.
                g[_FRESH] = [pi for pi, p in enumerate(live["params"]) if self._is_fresh(p)]
            self._save_group(g)
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, sd)
            if result is not None:
                sd = result
        return sd

    def load_state_dict(self, state_dict) -> None:
        """Loads clrfast's or torch's state dicts, all checked before anything changes.

        Keys a torch group lacks (``schedule``, ``step``) keep their current values; flags an
        older torch did not save (``maximize``, ...) read as False, as torch reads them. The saved
        lr (and momentum or betas) is what the next update applies, as with torch; a schedule
        takes over from the update after.

        The load hooks run as torch runs them: the pre-hooks on a shallow copy of the dict (what
        one returns is what is checked and loaded), the post-hooks once everything is in place.
        A per-parameter scalar saved as a number (older torch saved Adam's ``step`` so) becomes
        the tensor torch's ``__setstate__`` makes of it.
        """
        if not isinstance(state_dict, dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        state_dict = state_dict.copy()
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)):
            raise ValueError(f"state_dict['param_groups'] must be a list of groups, got {type(saved_groups).__name__}")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has a different number of parameter groups ({len(saved_groups)} "
                f"saved, {len(self.param_groups)} in the optimizer)"
            )
        groups: list = []
        id_map: dict = {}
        for gi, (saved, current) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"state_dict['param_groups'][{gi}] must be a dict with 'params'")
            if len(saved["params"]) != len(current["params"]):
                raise ValueError(
                    f"loaded state dict contains a parameter group that doesn't match the size of optimizer's group "
                    f"(group {gi}: {len(saved['params'])} vs {len(current['params'])} parameters)"
                )
            groups.append(self._loaded_group(gi, dict(saved), current))
            id_map.update(zip(saved["params"], current["params"]))
        state = state_dict["state"]
        if not isinstance(state, dict):
            raise ValueError("state_dict['state'] must be a dict")
        state = {k: self._upgraded(v) for k, v in state.items()}
        for k, v in state.items():
            if k not in id_map:
                raise ValueError(f"state_dict['state'] has an entry for unknown parameter id {k!r}")
            p = id_map[k]
            gi, pi = next(
                (gi, pi) for gi, g in enumerate(self.param_groups) for pi, q in enumerate(g["params"]) if q is p
            )
            if not isinstance(v, dict):
                raise ValueError(f"state_dict['state'][{k!r}] must be a dict, got {type(v).__name__}")
            self._check_state(gi, pi, p, v)
            for key in self._state_keys:
                if v.get(key) is not None:
                    check_state_tensor(gi, pi, key, p, v[key])
        self._sync_cuda()
        sd = dict(state_dict)
        sd["param_groups"] = groups
        sd["state"] = state
        self._torch_call(("load_state_dict_pre", "load_state_dict_post"), super().load_state_dict, sd)
        self._plans.clear()
        self._fresh = IdSet()
        for gi, group in enumerate(self.param_groups):
            group.pop("_cuda", None)
            fresh = group.pop(_FRESH, [])
            flat = self._flat.get(gi)
            if flat is not None:
                for key in self._state_keys:  # loaded state goes back into the flat storage
                    for pi, (p, view) in enumerate(zip(group["params"], flat.views[key])):
                        value = self._state_of(p, key)
                        if (
                            isinstance(value, torch.Tensor)
                            and value is not view
                            and flat.owns(pi, p)
                            and value.dtype == view.dtype
                            and value.shape == view.shape
                        ):
                            view.copy_(value)
                            self.state[p][key] = view
            for pi in fresh:
                value = self._state_of(group["params"][pi], self._state_keys[0])
                if value is not None:
                    self._fresh.add(value)
        # The saved lr/momentum are what the next update uses (a value written before saving
        # included), as torch's load keeps them; the schedule takes over after that update.
        self._published = [self._current(g) for g in self.param_groups]
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _upgraded(self, saved):
        """A parameter's saved state, each scalar saved as a number made the tensor torch's Adam makes of it."""
        if not isinstance(saved, dict):
            return saved
        old = [
            k
            for k in self._scalar_keys
            if isinstance(saved.get(k), numbers.Real) and not isinstance(saved.get(k), bool)
        ]
        if not old:
            return saved
        saved = dict(saved)  # the caller's dict stays as it was
        for k in old:
            saved[k] = torch.tensor(float(saved[k]), dtype=_get_scalar_dtype())
        return saved

    def _loaded_group(self, gi: int, saved: dict, current: dict) -> dict:
        """A saved group as it will be stored, checked; keys it lacks (torch's groups) keep their values."""
        saved.pop("_cuda", None)
        # clrfast 0.1 saved a group's constant momentum as 'base_momentum' beside its schedule; torch's
        # CyclicLR and OneCycleLR save 'base_momentum' with 'max_momentum' as their own bookkeeping
        legacy = saved.pop("base_momentum", None) if "schedule" in saved and "max_momentum" not in saved else None
        self._upgrade_saved_group(gi, saved)
        for key in self._later_flags:
            saved.setdefault(key, False)
        for key, value in current.items():
            if key != "params":
                saved.setdefault(key, value)
        saved["flat"] = current["flat"]  # a storage layout of this optimizer, not state
        fresh = saved.get(_FRESH, [])
        if not isinstance(fresh, (list, tuple)) or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(current["params"]) for i in fresh
        ):
            raise ValueError(f"state_dict['param_groups'][{gi}][{_FRESH!r}] must list parameter indices, got {fresh!r}")
        saved[_FRESH] = list(fresh)
        for key in ("schedule", "weight_decay"):
            if isinstance(saved.get(key), dict):
                try:
                    saved[key] = from_dict(saved[key])
                except (TypeError, ValueError, KeyError) as e:
                    raise ValueError(f"state_dict['param_groups'][{gi}][{key!r}]: {e}") from None
        if saved["schedule"] is not None and "initial_lr" not in current:
            # a torch scheduler's bookkeeping from the saving optimizer: the schedule sets the lr here
            saved.pop("initial_lr", None)
        if legacy is not None and saved["schedule"] is not None and not saved["schedule"].has_momentum:
            saved["momentum"] = legacy
        saved["step"] = clock(f"state_dict['param_groups'][{gi}]['step']", saved["step"])
        self._check_hyper(f"state_dict['param_groups'][{gi}]", saved)
        return saved

    def _save_group(self, saved: dict) -> None:
        """Adds to a group of the state dict what the reference optimizer needs to resume it (nothing by default)."""

    def _upgrade_saved_group(self, gi: int, saved: dict) -> None:
        """Maps, in place, the keys an earlier clrfast or the reference optimizer saved in a group (none by default)."""

    # ------------------------------------------------------------------ copy and pickle
    def __getstate__(self):
        self._sync_cuda()
        state = super().__getstate__()
        state["_threads"] = self._threads  # torch keeps only defaults, state and param_groups
        state["_fused_unscale"] = self.fused_unscale
        state["_flat_groups"] = sorted(self._flat)
        state["_fresh_ids"] = [
            (gi, pi) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"]) if self._is_fresh(p)
        ]
        return state

    def __setstate__(self, state):
        if "defaults" not in state:
            # torch's load_state_dict hands over the new state and param_groups only: the layout
            # (flat storage, threads, handle) stays this optimizer's
            super().__setstate__(state)
            return
        flat = state.pop("_flat_groups", [])
        fresh = state.pop("_fresh_ids", [])
        self._threads = state.pop("_threads", None)
        if state.pop("_fused_unscale", False):
            self.fused_unscale = True
        self._constructing = False
        super().__setstate__(state)
        self._register()
        self._all_params = [p for g in self.param_groups for p in g["params"]]
        self._plans = {}
        self._flat = {}
        self._fresh = IdSet()
        # A copied Parameter owns a copy of its values, not a view of the copied flat storage:
        # lay the group out again (values, gradients and state move with it).
        for gi in flat:
            self._flatten(gi, self.param_groups[gi])
        for gi, pi in fresh:
            p = self.param_groups[gi]["params"][pi]
            self._fresh.add(self.state[p][self._state_keys[0]])
        for group in self.param_groups:
            group.pop("_cuda", None)
        self._published = [self._current(g) for g in self.param_groups]

"""Plans and their per-step check: every tensor a kernel row touches, checked once and revalidated in C++."""

from __future__ import annotations

import numpy as np
import torch

from .. import _core
from ._base import EngineBase
from ._checks import (
    check_grad,
    check_no_overlap,
    check_param,
    check_state_tensor,
    dense_like,
    extent,
    holds_values,
    is_dtensor,
    local,
    where,
)


def _data_ptr_fn() -> int:
    """torch's C function returning a tensor's data address (exported for inductor), or 0."""
    try:
        from torch._C._dynamo import guards
    except ImportError:
        return 0
    return int(getattr(guards, "_torchinductor_pyobject_tensor_data_ptr", 0) or 0)


_core.set_tensor_api(torch.Tensor, _data_ptr_fn())


def _guards_type():
    """torch's TensorGuards (dynamo's C++ tensor check) when it tells apart what the step check must, else None.

    ``TensorGuards(*ts, dynamic_dims_sizes=None, dynamic_dims_strides=None).check(*us)`` is True
    only when each ``us[i]`` has the exact type, dtype, device, dispatch keys (the negative-view
    bit among them), requires_grad, sizes and strides of ``ts[i]``. It is torch's internal API:
    it is used only after this probe saw it refuse each change the step check must catch.
    """
    try:
        from torch._C._dynamo.guards import TensorGuards
    except ImportError:
        return None
    try:
        with torch.no_grad():
            a = torch.zeros(2, 3).requires_grad_()
            b = torch.zeros(6, dtype=torch.float64)
            check = TensorGuards(a, b, dynamic_dims_sizes=None, dynamic_dims_strides=None).check
            same = check(torch.ones(2, 3).requires_grad_(), torch.ones(6, dtype=torch.float64))
            changed = [
                check(torch.zeros(3, 2).t().requires_grad_(), b),  # strides
                check(torch.zeros(3, 2).requires_grad_(), b),  # sizes
                check(a, torch.zeros(6)),  # dtype
                check(a, torch.zeros(6, 1, dtype=torch.float64)),  # rank
                check(a, torch.zeros(6, dtype=torch.float64, device="meta")),  # device
                check(a, torch.zeros(6, dtype=torch.float64).to_sparse()),  # layout
                check(a, torch._neg_view(b)),  # the negative-view bit
                check(a, torch.nn.Parameter(b)),  # type
            ]
    except Exception:
        return None
    return TensorGuards if same is True and all(c is False for c in changed) else None


_TENSOR_GUARDS = _guards_type()


def tensor_guard(*tensors):
    """A guard over ``tensors`` for the step check: ``guard(*others)`` is True only while each of
    ``others`` matches its tensor as ``_guards_type`` says; None where torch has no such check."""
    if _TENSOR_GUARDS is None:
        return None
    try:
        return _TENSOR_GUARDS(*tensors, dynamic_dims_sizes=None, dynamic_dims_strides=None).check
    except Exception:  # a tensor it cannot describe: the step check reads each one
        return None


# --------------------------------------------------------------------------- plans
class Plan:
    """What one step of one param group touches, every tensor already checked.

    ``template`` has a kernel row per parameter the kernel updates (``owners[r]`` is the
    parameter of row r); ``table`` is what the kernel gets this step: the template on the
    step that built the plan, then the rows ``check`` yields (parameters without a gradient
    left out, adjacent runs merged). ``slow`` lists parameters that take torch's
    single-tensor code. ``deferred`` holds the state changes this step makes before the
    kernel runs: they run only once every group is validated. ``check`` (a
    ``_core.StepCheck``, made when the plan's first step has committed) revalidates the plan
    at each later step. No address in a table outlives its tensor: ``keep`` and ``grads`` hold
    the first step's tensors until the check exists; the check holds the parameters and state
    tensors, and each step's gradients from its refresh until ``release()`` after the kernel.
    """

    __slots__ = (
        "params",
        "grads",
        "template",
        "table",
        "owners",
        "slow",
        "deferred",
        "fresh",
        "missing",
        "cacheable",
        "device",
        "cuda",
        "check",
        "keep",
    )

    def __init__(self, device):
        self.params = self.grads = self.template = self.table = self.check = None
        self.owners: list = []
        self.slow: list = []  # (param index, param) for torch's reference code
        self.deferred: list = []
        self.fresh: list = []  # template rows whose state holds no history yet (the kernel initialises it)
        self.missing: set = set()  # state keys some row lacks (a step without momentum makes no buffer)
        self.cacheable = True
        self.device = device
        self.cuda = None  # device-side copy of the table (CUDA)
        self.keep: list = []


class Planning(EngineBase):
    """Builds, caches and revalidates each group's plan."""

    # ------------------------------------------------------------------ plans
    def _plan(self, gi: int, group, hyper, grads_written: bool = False) -> Plan | None:
        """The checked plan of this step: the cached one when its check passes, else a new one."""
        required = self._required(hyper)
        params = group["params"]
        plan = self._plans.get(gi)
        if plan is not None and plan.check is not None and not plan.missing.intersection(required):
            n = plan.check.refresh(self.state, params, grads_written)
            if n >= 0 and not self._device_step(plan):
                plan.table = plan.check.out[:n]
                return plan
            if n >= 0 and plan.cuda is not None:
                plan.table = plan.check.out[:n]  # the CUDA step uploads what changed (_cuda.DeviceTable)
                return plan
        plan = self._build_plan(gi, group, required, grads_written)
        self._plans[gi] = plan
        return plan

    def _checked_state(self, gi: int, pi: int, p, lp) -> tuple[dict, bool, list]:
        """The local state tensors of p (checked), whether the kernel can take them, and their names."""
        st = self.state.get(p) or {}
        self._check_state(gi, pi, p, st)
        locs, named, fused = {}, [], True
        for k in self._state_keys:
            v = st.get(k)
            if v is None:
                continue
            check_state_tensor(gi, pi, k, p, v)
            lv = local(v)
            locs[k] = lv
            named.append((f"state[{k!r}] of {where(gi, pi)}", lv))
            fused = fused and dense_like(lp, lv) and holds_values(lv)
            fused = fused and lv.dtype == lp.dtype and lv.device == lp.device
        return locs, fused, named

    def _build_plan(self, gi: int, group, required, grads_written: bool = False) -> Plan | None:
        """Checks every tensor of the group and lays out the kernel rows (the full check)."""
        params = group["params"]
        grads: list = []
        rows: list = []
        owners: list = []
        slow: list = []
        named: list = []
        read: list = []
        keep: list = []
        missing: list = []
        devices = set()
        cacheable = True
        key = self._state_keys[0]
        for pi, p in enumerate(params):
            g = p.grad
            grads.append(g)
            if g is None:
                continue
            lp = check_param(gi, pi, p, self._rule)
            lg = check_grad(gi, pi, p, lp, g)
            if grads_written and lg._is_zerotensor():
                raise ValueError(
                    f"the gradient of {where(gi, pi)} is a zero tensor without memory, and this step writes its "
                    "gradients back (GradScaler's unscaling, or a rule that leaves its gradient in p.grad); give "
                    "the parameter a materialised gradient (p.grad = p.grad.clone())"
                )
            cacheable = cacheable and not is_dtensor(p)  # FSDP2 hands over new gradient objects each step anyway
            devices.add(lp.device)
            named.append((where(gi, pi), lp))
            read.append((f"the gradient of {where(gi, pi)}", lg))
            locs, fused, named_state = self._checked_state(gi, pi, p, lp)
            named += named_state
            first = self._state_of(p, key)
            fused = fused and dense_like(lp, lg) and holds_values(lp) and holds_values(lg)
            row = self._row(p, lp, lg, locs, int(first is None or self._is_fresh(p))) if fused else None
            need = self._missing(p, required)
            if need:
                missing.append((None if row is None else len(rows), pi, p, lp, lg, need))
            if row is None:
                slow.append((pi, p))
                continue
            rows.append(row)
            owners.append(p)
            keep += [lp, lg, *locs.values()]
        if not rows and not slow:
            return None
        if len(devices) > 1:
            raise ValueError(
                f"param_groups[{gi}]: a {self._rule} param group must live on one device, got "
                f"{sorted(map(str, devices))}"
            )
        # gradients are only read, so two parameters may share one, unless the step writes them back
        if grads_written:
            named, read = named + read, []
        check_no_overlap(named, read)
        plan = Plan(next(iter(devices)))
        plan.params, plan.grads, plan.owners, plan.slow, plan.keep = params, grads, owners, slow, keep
        plan.template = np.array(rows, dtype=np.int64).reshape(-1, self._cols)
        plan.table = plan.template
        plan.cacheable = cacheable
        if self._first_col is not None:
            plan.fresh = [r for r, row in enumerate(rows) if row[self._first_col]]
        plan.missing = self._lacking(owners)
        if missing:
            plan.deferred.append(lambda: self._make_missing(gi, plan, missing))
        return plan

    def _make_missing(self, gi: int, plan: Plan, missing) -> None:
        """Creates the state the rows lack and points their rows at it (runs when the step commits)."""
        flat = self._flat.get(gi)
        for row, pi, p, lp, lg, keys in missing:
            views = flat.state_views(pi, p) if flat is not None and row is not None else None
            self._create_state(p, keys, views)
            if row is None:  # torch's code updates it: mark a first-update buffer as holding no history
                if self._first_col is not None:
                    self._fresh.add(self._state_of(p, self._state_keys[0]))
                continue
            locs = {k: local(v) for k, v in self.state[p].items() if k in self._state_keys}
            plan.template[row] = self._row(
                p, lp, lg, locs, int(plan.template[row, self._first_col]) if (self._first_col is not None) else 0
            )
            plan.keep += list(locs.values())
        plan.missing = self._lacking(plan.owners)

    def _lacking(self, owners) -> set:
        """The state keys that some parameter of the rows lacks."""
        keys = self._state_keys + self._scalar_keys
        return {k for p in owners for k in self._missing(p, keys)}

    def _arm(self, plan: Plan) -> None:
        """Gives a plan whose first step committed its per-step check (``_core.StepCheck``).

        Everything the check compares is read here, after the step: the state the step
        made, the gradients it used, the parameters' addresses and layouts.
        """
        keys = self._state_keys + self._scalar_keys
        row_of = {id(p): r for r, p in enumerate(plan.owners)}
        slow = {id(p) for _, p in plan.slow}
        spec = _core.StepCheckSpec(
            plan.template,
            keys,
            slots=len(self._state_keys),
            grad_col=self._grad_col,
            n_col=self._n_col,
            ptr_cols=list(self._ptr_cols),
            merge=self._merge_runs,
            device_index=plan.device.index if plan.device.type == "cuda" else -1,
        )
        for p, g in zip(plan.params, plan.grads):
            st = self.state.get(p)
            if g is None:
                spec.add_without_grad(p, st)
                continue
            if id(p) in slow:
                spec.add_slow(p, local(g), st)
            else:
                spec.add_row(p, row_of[id(p)], local(g), st)
            for t in [p, *(st.get(k) for k in keys)] if st is not None else [p]:
                if isinstance(t, torch.Tensor):
                    spec.add_written(*extent(t))
        spec.set_guard(tensor_guard)
        plan.check = _core.StepCheck(spec)
        plan.keep, plan.grads = [], None  # the check holds what it needs, and no gradient

    def _initialised(self, plan: Plan) -> None:
        """The kernel wrote the state of the rows that had none: they hold history from now on."""
        if not plan.fresh:
            return
        ran = plan.fresh if plan.check is None else [r for r in plan.fresh if plan.check.emitted[r]]
        for r in ran:
            plan.template[r, self._first_col] = 0
            if plan.check is not None:
                plan.check.set(r, self._first_col, 0)
            self._fresh.discard(self._state_of(plan.owners[r], self._state_keys[0]))
        plan.fresh = [r for r in plan.fresh if r not in set(ran)]

    def _forget_plans(self) -> None:
        self._plans.clear()

"""``CLRSGD``: SGD with a clrfast schedule, applied by one fused C++ (or CUDA) call per step."""

from __future__ import annotations

import torch
from torch.optim.sgd import sgd as _torch_sgd

from .. import _core
from .. import _validate as check
from ..schedules import Schedule
from ._fused import DTYPE_CODES, FusedOptimizer, non_negative, step_clock, step_flag, step_lr, step_real

__all__ = ["CLRSGD"]

_COL = _core.sgd_segment_layout


class CLRSGD(FusedOptimizer):
    r"""SGD whose learning rate (and momentum) follow a clrfast schedule, fused into one step.

    Replaces ``torch.optim.SGD`` + a scheduler. After k applied updates a group shows
    ``lr = schedule.lr(k)`` and ``momentum = schedule.momentum(k)`` (when the schedule
    defines one; else its constant ``momentum``): the values update k uses, as torch's
    groups show after ``scheduler.step()``. The schedule is never silently overridden: a
    torch scheduler attached to the optimizer or an lr written over the schedule's is
    refused at the next step (hand trainers ``opt.scheduler()`` instead). ``schedule=None``
    (or a float: ``CLRSGD(params, 0.1, momentum=0.9)``) gives plain fused SGD that applies
    ``group['lr']`` as ``torch.optim.SGD`` does, for your own scheduler.

    Per element, with torch's order of operations::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        buf = g (first update)  or  buf = momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g

    Numerics: float32 and float64 trajectories are bit-identical to
    ``torch.optim.SGD(foreach=False)`` (torch's CPU default) and ``foreach=True``, which
    compute each ``a + alpha*b`` as one fused multiply-add. ``fused=True`` differs from
    those two in the last bit of the momentum buffer on each tensor's scalar tail, so it is
    not the reference. bfloat16 and float16 parameters are loaded to float32, updated in
    float32 and rounded once on store (the precision rule of torch's fused kernel).
    Tensors the kernel cannot walk as one dense run (a transposed parameter, a momentum
    buffer left in another dtype by ``model.to()``) are updated by torch's own
    single-tensor SGD, so they match torch too. Parameters that share memory (tied
    weights as two Parameters) are refused with an error; a parameter listed twice in a
    group is kept once, with torch's warning, and updated once per step.

    ``flat=True`` copies each group's parameters, gradients and momentum buffers into
    three contiguous buffers (parameters become views), so adjacent parameters run as one
    kernel segment. It pays off with ``zero_grad(set_to_none=False)``: gradients stay in
    the buffer and backward accumulates into it. With ``set_to_none=True`` (the default,
    as torch's) backward makes new gradients, which the step reads where they are, and
    parameters that get no gradient are skipped, as torch skips them. A parameter moved
    out of the buffer (``model.double()`` after construction) is followed where it lives.

    A tensor lr (of any floating dtype) is applied as torch's ``alpha=-lr``: its value,
    exactly. ``nesterov=True`` needs a momentum at construction, as torch's; a momentum that
    later reaches 0 (a scheduled momentum's trough, from a clrfast schedule, a torch
    ``CyclicLR`` or a loaded state) gives torch's plain-SGD step there, the momentum buffer
    neither read nor written until the momentum returns.

    FSDP2 (DTensor) parameters are updated shard by shard. The step clock advances only
    when an update is applied, so a step skipped by ``torch.amp.GradScaler`` does not
    shift the schedule. ``threads`` defaults to ``torch.get_num_threads()``.
    """

    _rule = "CLRSGD"
    _state_keys = ("momentum_buffer",)
    _cols = _core.sgd_segment_cols  # the columns: _core.sgd_segment_layout
    _first_col = _COL["first"]  # torch's first update copies the gradient into the buffer
    _merge_runs = True
    _ptr_cols = (_COL["p"], _COL["g"], _COL["momentum_buffer"])
    _n_col = _COL["n"]
    _grad_col = _COL["g"]
    _published_keys = ("lr", "momentum")
    _later_flags = ("nesterov", "maximize")

    def __init__(
        self,
        params,
        schedule: Schedule | float | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
        *,
        lr: float | None = None,
        flat: bool = False,
        threads: int | None = None,
    ):
        schedule, lr = self._lr_source(schedule, lr)
        defaults = dict(
            schedule=schedule,
            lr=lr if lr is not None else 0.0,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            step=0,
            flat=flat,
        )
        self._check_hyper("CLRSGD", defaults)
        super().__init__(params, defaults, threads=threads)

    # ------------------------------------------------------------------ hyperparameters
    def _check_hyper(self, label: str, group: dict) -> None:
        """Checks (and normalises in place) a group's hyperparameters."""
        sched = group["schedule"]
        self._check_lr(label, group)
        group["momentum"] = non_negative(f"{label}['momentum']", group["momentum"], "Invalid momentum value")
        group["dampening"] = check.real(f"{label}['dampening']", group["dampening"])
        group["weight_decay"] = non_negative(
            f"{label}['weight_decay']", group["weight_decay"], "Invalid weight_decay value"
        )
        self._check_flags_and_clock(label, group, ("nesterov", "maximize", "flat"))
        # A saved group may hold momentum 0 from a scheduler's trough: torch loads it (its momentum
        # requirement is a constructor check) and steps it as plain SGD, and so does the step here.
        loading = label.startswith("state_dict")
        no_momentum = group["momentum"] <= 0 and not (sched is not None and sched.has_momentum) and not loading
        if group["nesterov"] and (no_momentum or group["dampening"] != 0):
            raise ValueError(f"{label}: Nesterov momentum requires a momentum and zero dampening")

    def _publish_schedule(self, group) -> None:
        lr, mom = _core.sgd_hyper(group["schedule"]._core, group["step"], group["momentum"])
        group["lr"] = lr
        group["momentum"] = mom

    def _step_hyper(self, gi: int, group) -> dict:
        """Every value the step reads, checked; raises before anything changes.

        Nesterov at momentum 0 (a scheduled momentum at its trough) is plain SGD, as in
        torch, whose momentum requirement is a constructor check only.
        """
        h = dict(
            step=step_clock(gi, group),
            lr=step_lr(gi, group["lr"])[0],  # the kernel takes -lr as torch's alpha=-lr does, whatever its dtype
            momentum=step_real(gi, "momentum", group["momentum"], min=0.0),
            dampening=step_real(gi, "dampening", group["dampening"]),
            weight_decay=step_real(gi, "weight_decay", group["weight_decay"], min=0.0),
            nesterov=step_flag(gi, "nesterov", group["nesterov"]),
            maximize=step_flag(gi, "maximize", group["maximize"]),
        )
        if h["nesterov"] and h["dampening"] != 0:
            raise ValueError(f"param_groups[{gi}]: Nesterov momentum requires a momentum and zero dampening")
        return h

    @staticmethod
    def _required(hyper) -> tuple:
        return ("momentum_buffer",) if hyper["momentum"] != 0.0 else ()

    @staticmethod
    def _new_state(p, keys) -> dict:
        # zeros, not empty: a step the device skips (GradScaler) leaves no garbage in the state
        return {k: torch.zeros_like(p, memory_format=torch.preserve_format) for k in keys}

    def _row(self, p, lp, lg, locs, first) -> list:
        buf = locs.get("momentum_buffer")
        row = [0] * self._cols
        row[_COL["p"]], row[_COL["g"]], row[_COL["n"]] = lp.data_ptr(), lg.data_ptr(), lp.numel()
        row[_COL["momentum_buffer"]] = buf.data_ptr() if buf is not None else 0
        row[_COL["dtype"]], row[_COL["first"]] = DTYPE_CODES[lp.dtype], first
        return row

    # ------------------------------------------------------------------ CPU
    def _kernel(self, table, h, inv_scale) -> None:
        _core.sgd_step(
            table,
            h["lr"],
            h["momentum"],
            h["dampening"],
            h["weight_decay"],
            h["nesterov"],
            h["maximize"],
            1.0 if inv_scale is None else inv_scale,
            inv_scale is not None,
            self._num_threads(),
        )

    def _reference(self, group, slow, h, inv_scale) -> None:
        """torch's single-tensor SGD, for tensors the kernel cannot walk as one dense run."""
        params, grads, bufs = [], [], []
        for _, p in slow:
            g = p.grad
            if inv_scale is not None:
                g.mul_(inv_scale)  # GradScaler's fused contract: the optimizer unscales, in place
            params.append(p)
            grads.append(g)
            buf = self._state_of(p, "momentum_buffer") if h["momentum"] != 0 else None
            bufs.append(None if buf in self._fresh else buf)  # a fresh buffer holds no history
        _torch_sgd(
            params,
            grads,
            bufs,
            weight_decay=h["weight_decay"],
            momentum=h["momentum"],
            lr=h["lr"],
            dampening=h["dampening"],
            nesterov=h["nesterov"],
            maximize=h["maximize"],
            foreach=False,
            has_sparse_grad=False,
        )
        if h["momentum"] != 0:
            for p, buf in zip(params, bufs):
                self.state[p]["momentum_buffer"] = buf
                self._fresh.discard(buf)

    # ------------------------------------------------------------------ CUDA
    def _check_cuda_group(self, gi: int, group) -> None:
        if group["schedule"] is None or self._external(gi, group):
            raise ValueError(
                f"param_groups[{gi}] is on CUDA, where CLRSGD computes lr and momentum on the device from its "
                "schedule; a value written to the group (or schedule=None) would need a host sync each step. "
                "Give the group a schedule and leave its lr and momentum to it."
            )

    def _cuda_step(self, gi, group, plan, grad_scale, found_inf) -> None:
        device = plan.device
        st = group.get("_cuda")
        if st is None or st["device"] != device:
            sched_bytes = _core.schedule_bytes(group["schedule"]._core)
            st = {
                "device": device,
                "schedule": torch.frombuffer(bytearray(sched_bytes), dtype=torch.uint8).to(device),
                "step": torch.tensor([group["step"]], dtype=torch.int64, device=device),
                "lrmom": torch.tensor([group["lr"], group["momentum"]], dtype=torch.float64, device=device),
            }
            group["_cuda"] = st
        if plan.cuda is None:
            plan.cuda = torch.from_numpy(plan.table).to(device)
        _core.sgd_step_cuda(
            st["schedule"].data_ptr(),
            st["step"].data_ptr(),
            plan.cuda.data_ptr(),
            plan.table.shape[0],
            int(plan.table[:, _COL["n"]].max()),
            group["momentum"] if not group["schedule"].has_momentum else 0.0,
            group["dampening"],
            group["weight_decay"],
            group["nesterov"],
            group["maximize"],
            grad_scale.data_ptr() if grad_scale is not None else 0,
            found_inf.data_ptr() if found_inf is not None else 0,
            st["lrmom"].data_ptr(),
            torch.cuda.current_stream(device).cuda_stream,
        )
        # The device owns the clock (a found_inf skip is decided there) and the first-step
        # flags; the host copies are refreshed lazily, without a synchronisation here.
        plan.fresh = []
        group["lr"] = st["lrmom"][0]
        group["momentum"] = st["lrmom"][1]
        self._published[gi] = self._current(group)

    def _sync_cuda(self) -> None:
        for gi, group in enumerate(self.param_groups):
            st = group.get("_cuda")
            if st is not None:
                group["step"] = int(st["step"].item())
                group["lr"] = float(st["lrmom"][0])
                group["momentum"] = float(st["lrmom"][1])
                self._published[gi] = self._current(group)

"""``CLRSGD``: SGD with a clrfast schedule, applied by one fused C++ (or CUDA) call per step."""

from __future__ import annotations

from torch.optim.sgd import sgd as _torch_sgd

from ..schedules import Schedule
from .rule import Hyper, RuleOptimizer

__all__ = ["CLRSGD"]


class CLRSGD(RuleOptimizer):
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
    _core_rule = "sgd"
    _hypers = (
        Hyper("momentum", invalid="Invalid momentum value"),
        Hyper("dampening", min=None),
        Hyper("weight_decay", invalid="Invalid weight_decay value"),
        Hyper("nesterov", "flag"),
        Hyper("maximize", "flag"),
    )
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
        self._setup(
            params,
            schedule,
            lr,
            dict(
                momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize
            ),
            flat=flat,
            threads=threads,
        )

    # ------------------------------------------------------------------ hyperparameters
    def _check_hyper(self, label: str, group: dict) -> None:
        super()._check_hyper(label, group)
        # A saved group may hold momentum 0 from a scheduler's trough: torch loads it (its momentum
        # requirement is a constructor check) and steps it as plain SGD, and so does the step here.
        sched = group["schedule"]
        loading = label.startswith("state_dict")
        no_momentum = group["momentum"] <= 0 and not (sched is not None and sched.has_momentum) and not loading
        if group["nesterov"] and (no_momentum or group["dampening"] != 0):
            raise ValueError(f"{label}: Nesterov momentum requires a momentum and zero dampening")

    def _step_hyper(self, gi: int, group) -> dict:
        """Every value the step reads, checked; raises before anything changes.

        Nesterov at momentum 0 (a scheduled momentum at its trough) is plain SGD, as in
        torch, whose momentum requirement is a constructor check only. A tensor lr is
        applied as torch's ``alpha=-lr``: its value, whatever its dtype.
        """
        h = super()._step_hyper(gi, group)
        if h["nesterov"] and h["dampening"] != 0:
            raise ValueError(f"param_groups[{gi}]: Nesterov momentum requires a momentum and zero dampening")
        return h

    def _needs(self, h) -> tuple:
        return ("momentum_buffer",) if h["momentum"] != 0.0 else ()

    def _torch_update(self, params, grads, states, h) -> None:
        """torch's single-tensor SGD, for tensors the kernel cannot walk as one dense run."""
        momentum = h["momentum"] != 0
        bufs = []
        for st in states:
            buf = st.get("momentum_buffer") if momentum else None
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
        if momentum:
            for st, buf in zip(states, bufs):
                st["momentum_buffer"] = buf
                self._fresh.discard(buf)

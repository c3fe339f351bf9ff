"""``CLRRMSprop``: torch's RMSprop with lr and momentum from a clrfast schedule, in one fused call per step."""

from __future__ import annotations

from torch.optim.rmsprop import rmsprop as _torch_rmsprop

from ..schedules import Schedule
from .rule import Hyper, RuleOptimizer

__all__ = ["CLRRMSprop"]


class CLRRMSprop(RuleOptimizer):
    r"""RMSprop whose lr (and momentum) follow a clrfast schedule, fused into one step.

    Replaces ``torch.optim.RMSprop`` + a scheduler (``CyclicLR``/``OneCycleLR`` cycle its
    ``momentum``): after k applied updates a group shows ``lr = schedule.lr(k)`` and
    ``momentum = schedule.momentum(k)`` when the schedule defines one. Per element, in
    torch's order of operations::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        ga = ga.lerp(g, 1 - alpha)                          (centered)
        avg = sqrt(sq - ga * ga if centered else sq) + eps
        buf = momentum * buf + g / avg;  p = p - lr * buf  (momentum > 0)
        p = p - lr * g / avg                                (momentum == 0)

    float32 and float64 trajectories are bit-identical to ``torch.optim.RMSprop`` with
    ``foreach=False`` and ``foreach=True`` (torch's CPU sqrt is MKL's where torch has MKL,
    and the kernel calls it; ``match_torch=False`` takes the IEEE root). State keys are
    torch's (``step``, ``square_avg``, ``momentum_buffer``, ``grad_avg``), so state dicts
    load both ways. A tensor lr is applied as its value, as torch's RMSprop reads it.
    bfloat16/float16 parameters are updated in float32 and rounded once on store.
    ``flat``, ``threads``, GradScaler, written values and the all-or-nothing checks are
    those of :class:`~clrfast.torch.CLRSGD`.
    """

    _rule = "CLRRMSprop"
    _core_rule = "rmsprop"
    _hypers = (
        Hyper("eps", invalid="Invalid epsilon value"),  # torch's order of checks
        Hyper("momentum", invalid="Invalid momentum value"),
        Hyper("weight_decay", invalid="Invalid weight_decay value"),
        Hyper("alpha", invalid="Invalid alpha value"),
        Hyper("centered", "flag"),
        Hyper("maximize", "flag"),
    )
    _later_flags = ("centered", "maximize")

    def __init__(
        self,
        params,
        schedule: Schedule | float | None = None,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        maximize: bool = False,
        *,
        lr: float | None = None,
        flat: bool = False,
        match_torch: bool = True,
        threads: int | None = None,
    ):
        self._setup(
            params,
            schedule,
            lr,
            dict(
                alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered, maximize=maximize
            ),
            flat=flat,
            threads=threads,
            match_torch=match_torch,
        )

    def _needs(self, h) -> tuple:
        return (
            ("square_avg",)
            + (("momentum_buffer",) if h["momentum"] > 0 else ())
            + (("grad_avg",) if h["centered"] else ())
        )

    def _torch_update(self, params, grads, states, h) -> None:
        _torch_rmsprop(
            params,
            grads,
            [s["square_avg"] for s in states],
            [s["grad_avg"] for s in states] if h["centered"] else [],
            [s["momentum_buffer"] for s in states] if h["momentum"] > 0 else [],
            [s["step"] for s in states],
            foreach=False,
            lr=h["lr"],
            alpha=h["alpha"],
            eps=h["eps"],
            weight_decay=h["weight_decay"],
            momentum=h["momentum"],
            centered=h["centered"],
            maximize=h["maximize"],
        )
